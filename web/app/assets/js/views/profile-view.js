// Your profile: display name, bio, avatar; your status (automatic, away,
// busy or invisible, with a status text); email and phone changes
// confirmed with a code; logging out, here or on every other device.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { dotFor } from '../presence.js';
import { avatar, busy, choose, field, formError, screenHeader, toast, toastError } from './ui.js';

const CHOICES = [
  ['auto', 'Automatic', 'Online while you use Parley, away when idle.'],
  ['away', 'Away', 'Shown as away.'],
  ['busy', 'Busy', 'Shown as busy.'],
  ['invisible', 'Invisible', 'Shown as offline; your last seen time stays put.'],
];
/** Longest status text the server takes (characters). */
const MAX_STATUS_TEXT = 100;

const CHANNELS = {
  email: { title: 'Email', type: 'email', autocomplete: 'email', placeholder: 'you@example.com', inputmode: 'email' },
  phone: { title: 'Phone', type: 'tel', autocomplete: 'tel', placeholder: '+15551234567', inputmode: 'tel' },
};

export class ProfileView {
  constructor(ctx) {
    this.ctx = ctx;
    this.pending = { email: null, phone: null };
    /** What "Log out other devices" did: a live region kept across renders, so the result is announced. */
    this.othersStatus = h('div', { class: 'card-status', role: 'status' });
    this.body = h('div', { class: 'screen-body' });
    this.el = h('section', { class: 'profile screen' }, screenHeader({ title: 'Profile', back: '/' }), this.body);
    this.unsubscribe = ctx.store.on('profile', () => this.render());
  }

  async mounted() {
    this.render();
    try {
      this.ctx.store.setProfile(await this.ctx.api.me());
    } catch (error) {
      if (error?.code !== 'network') toastError(error);
    }
  }

  render() {
    const profile = this.ctx.store.profile;
    if (!profile) {
      this.body.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
      return;
    }
    // Keep what is being typed if the profile changes underneath.
    if (this.body.contains(document.activeElement) && document.activeElement.matches('input, textarea')) return;
    this.body.replaceChildren(this.#identity(profile), this.#status(profile), this.#details(profile), this.#contact('email', profile), this.#contact('phone', profile), this.#account());
  }

  #identity(profile) {
    const file = h('input', { type: 'file', accept: 'image/png,image/jpeg,image/webp,image/gif', class: 'visually-hidden', id: 'avatar-file' });
    const change = h('label', { for: 'avatar-file', class: 'btn small ghost', role: 'button', tabindex: '0' }, icon('camera', { size: 18 }), profile.avatar ? 'Change photo' : 'Add photo');
    change.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        file.click();
      }
    });
    file.addEventListener('change', async () => {
      const picked = file.files?.[0];
      if (!picked) return;
      if (picked.size > 5 * 1024 * 1024) {
        toast('That picture is larger than 5 MB.', { kind: 'error' });
        return;
      }
      try {
        await this.ctx.api.putAvatar(picked);
        this.ctx.store.setProfile(await this.ctx.api.me());
        toast('Photo updated.');
      } catch (error) {
        toastError(error);
      }
    });
    const remove = profile.avatar
      ? h('button', { type: 'button', class: 'btn small ghost' }, 'Remove')
      : null;
    remove?.addEventListener('click', () =>
      busy(remove, async () => {
        await this.ctx.api.deleteAvatar();
        this.ctx.store.setProfile(await this.ctx.api.me());
      }),
    );
    return h(
      'div',
      { class: 'identity card' },
      avatar(profile, { size: 96, presence: dotFor(this.ctx.store.presenceOf(profile.id)) }),
      h('div', { class: 'identity-text' }, h('h2', {}, profile.display_name), h('p', { class: 'muted' }, '@' + profile.username), h('div', { class: 'row' }, change, remove, file)),
    );
  }

  #status(profile) {
    const setting = profile.presence ?? { status: 'auto', status_text: '' };
    const error = formError();
    const save = h('button', { type: 'submit', class: 'btn primary' }, 'Set status');
    const options = CHOICES.map(([value, label, hint]) => {
      const id = `presence-${value}`;
      return h(
        'label',
        { class: 'choice', for: id },
        h('input', { type: 'radio', name: 'status', id, value, '.checked': setting.status === value }),
        h('span', { class: ['choice-dot', value] , 'aria-hidden': 'true' }),
        h('span', { class: 'choice-text' }, h('span', { class: 'choice-label' }, label), h('span', { class: 'hint' }, hint)),
      );
    });
    const form = h(
      'form',
      { class: 'card status-card', 'aria-label': 'Status' },
      h('h2', { class: 'card-title' }, 'Status'),
      h('fieldset', { class: 'choices' }, h('legend', { class: 'visually-hidden' }, 'Show me as'), options),
      field({ label: 'Status message', name: 'status_text', value: setting.status_text ?? '', maxlength: MAX_STATUS_TEXT, placeholder: 'What are you up to?', autocomplete: 'off', hint: `Up to ${MAX_STATUS_TEXT} characters. Friends and group members see it.` }),
      error.el,
      h('div', { class: 'row end' }, save),
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      error.clear();
      const data = new FormData(form);
      const status = String(data.get('status') ?? 'auto');
      const text = String(data.get('status_text') ?? '').trim();
      if ([...text].length > MAX_STATUS_TEXT) {
        error.show(`A status message has at most ${MAX_STATUS_TEXT} characters.`);
        return;
      }
      busy(
        save,
        async () => {
          const presence = await this.ctx.api.setPresence(status, text);
          document.activeElement?.blur();
          this.ctx.store.setProfile({ ...this.ctx.store.profile, presence });
          toast('Status saved.');
        },
        (e) => error.show(e),
      );
    });
    return form;
  }

  #details(profile) {
    const error = formError();
    const save = h('button', { type: 'submit', class: 'btn primary' }, 'Save');
    const form = h(
      'form',
      { class: 'card', 'aria-label': 'Profile details' },
      h('h2', { class: 'card-title' }, 'About you'),
      field({ label: 'Display name', name: 'display_name', value: profile.display_name, maxlength: 64, required: true, autocomplete: 'name' }),
      field({ label: 'Bio', name: 'bio', type: 'textarea', value: profile.bio ?? '', maxlength: 280, rows: 3, hint: 'Up to 280 characters. Visible to other people.' }),
      error.el,
      h('div', { class: 'row end' }, save),
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      error.clear();
      const data = new FormData(form);
      const displayName = String(data.get('display_name')).trim();
      if (!displayName) {
        error.show('Enter a display name.');
        return;
      }
      busy(
        save,
        async () => {
          document.activeElement?.blur();
          this.ctx.store.setProfile(await this.ctx.api.updateMe({ display_name: displayName, bio: String(data.get('bio')) }));
          toast('Profile saved.');
        },
        (e) => error.show(e),
      );
    });
    return form;
  }

  #contact(channel, profile) {
    const spec = CHANNELS[channel];
    const current = profile[channel];
    const pending = this.pending[channel];
    const error = formError();
    const card = h('form', { class: 'card contact', 'aria-label': spec.title, dataset: { channel } }, h('h2', { class: 'card-title' }, spec.title));
    card.append(h('p', { class: current ? '' : 'muted' }, current ?? `No ${spec.title.toLowerCase()} yet.`));
    if (pending) {
      const submit = h('button', { type: 'submit', class: 'btn primary' }, 'Confirm');
      const again = h('button', { type: 'button', class: 'btn ghost' }, 'Change address');
      card.append(
        h('p', { class: 'notice' }, `We sent a 6-digit code to ${pending}.`),
        field({ label: 'Code', name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: 6, pattern: '[0-9]{6}', required: true }),
        error.el,
        h('div', { class: 'row end' }, again, submit),
      );
      again.addEventListener('click', () => {
        this.pending[channel] = null;
        this.render();
      });
      card.addEventListener('submit', (event) => {
        event.preventDefault();
        error.clear();
        const code = String(new FormData(card).get('code')).trim();
        if (!/^[0-9]{6}$/.test(code)) {
          error.show('Enter the 6 digits from the message.');
          return;
        }
        busy(
          submit,
          async () => {
            await this.ctx.api.confirmContact(channel, code);
            this.pending[channel] = null;
            document.activeElement?.blur();
            this.ctx.store.setProfile(await this.ctx.api.me());
            toast(`${spec.title} confirmed.`);
          },
          (e) => error.show(e),
        );
      });
      return card;
    }
    const submit = h('button', { type: 'submit', class: 'btn primary' }, 'Send code');
    card.append(
      field({ label: current ? `New ${spec.title.toLowerCase()}` : spec.title, name: 'value', type: spec.type, autocomplete: spec.autocomplete, placeholder: spec.placeholder, inputmode: spec.inputmode, required: true }),
      error.el,
    );
    const remove = current ? h('button', { type: 'button', class: 'btn ghost danger-text' }, 'Remove') : null;
    remove?.addEventListener('click', () =>
      busy(remove, async () => {
        await this.ctx.api.removeContact(channel);
        this.ctx.store.setProfile(await this.ctx.api.me());
      }),
    );
    card.append(h('div', { class: 'row end' }, remove, submit));
    card.addEventListener('submit', (event) => {
      event.preventDefault();
      error.clear();
      const value = String(new FormData(card).get('value')).trim();
      if (!value) {
        error.show(`Enter ${channel === 'email' ? 'an email address' : 'a phone number'}.`);
        return;
      }
      busy(
        submit,
        async () => {
          const change = await this.ctx.api.requestContact(channel, value);
          this.pending[channel] = change.pending;
          document.activeElement?.blur();
          this.render();
          this.body.querySelector(`[data-channel="${channel}"] input`)?.focus();
        },
        (e) => error.show(e),
      );
    });
    return card;
  }

  #account() {
    const logout = h('button', { type: 'button', class: 'btn danger' }, icon('logout', { size: 18 }), 'Log out');
    logout.addEventListener('click', () => busy(logout, () => this.ctx.auth.logout()));
    const others = h('button', { type: 'button', class: 'btn ghost danger-text' }, icon('logout', { size: 18 }), 'Log out other devices');
    others.addEventListener('click', async () => {
      const sure = await choose({
        title: 'Log out other devices?',
        text: 'Every other phone, browser and computer where you are logged in will have to log in again. This device stays logged in.',
        actions: [{ label: 'Log out other devices', value: 'others', danger: true, icon: 'logout' }],
      });
      if (sure !== 'others') return;
      await busy(others, async () => {
        this.othersStatus.replaceChildren();
        const { sessions_ended: ended } = await this.ctx.api.logoutOthers();
        const text = ended === 0 ? 'No other devices were logged in.' : `Logged out ${ended} other ${ended === 1 ? 'device' : 'devices'}.`;
        this.othersStatus.replaceChildren(h('p', { class: 'notice' }, text));
        this.othersStatus.scrollIntoView({ block: 'nearest' });
      });
    });
    return h(
      'section',
      { class: 'card', 'aria-label': 'Account' },
      h('h2', { class: 'card-title' }, 'Account'),
      h('p', { class: 'muted' }, 'Logging out ends this session on this device and clears its cached chats.'),
      h('div', { class: 'row' }, logout),
      h('p', { class: 'muted' }, 'Lost a phone, or logged in on a computer that is not yours? End every other session at once.'),
      h('div', { class: 'row' }, others),
      this.othersStatus,
    );
  }

  destroy() {
    this.unsubscribe();
  }
}
