// A group's info panel: its picture, name and size; the members with
// their roles and presence; and what the user's role allows: admins
// rename, change the picture, add friends and remove plain members; the
// owner also removes admins, promotes and demotes, and hands over
// ownership. Everyone may leave (the owner after handing over).

import { h, reconcile, replaceChildren } from '../dom.js';
import { icon } from '../icons.js';
import { dotFor, presenceLabel } from '../presence.js';
import { loadFriends, peoplePicker } from './people-picker.js';
import { avatar, busy, choose, field, formError, sheet, toast } from './ui.js';

const ROLE_LABEL = { owner: 'Owner', admin: 'Admin', member: 'Member' };
const MAX_IMAGE_BYTES = 5 * 1024 * 1024;

export class GroupView {
  constructor(ctx, chatId) {
    this.ctx = ctx;
    this.store = ctx.store;
    this.chatId = chatId;
    this.renaming = false;
    this.error = formError();
    this.identity = h('div', { class: 'group-identity' });
    this.membersHead = h('div', { class: 'members-head' });
    this.membersEl = h('ul', { class: 'people members', 'aria-label': 'Members' });
    this.footer = h('div', { class: 'group-footer' });
    this.el = h(
      'aside',
      { class: 'group-panel', 'aria-labelledby': `group-info-${chatId}` },
      h(
        'header',
        { class: 'panel-header' },
        h('h2', { id: `group-info-${chatId}`, tabindex: '-1' }, 'Group info'),
        h('a', { class: 'icon-btn', href: `/chats/${chatId}`, 'data-link': '', 'aria-label': 'Close group info' }, icon('close')),
      ),
      h('div', { class: 'panel-body' }, this.identity, this.error.el, h('section', { class: 'members-section', 'aria-label': 'Members' }, this.membersHead, this.membersEl), this.footer),
    );
    // Escape closes the panel (unless a dialog of its own is open).
    this.el.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && !this.renaming && !event.defaultPrevented) ctx.router.go(`/chats/${chatId}`);
    });
    const render = () => this.render();
    this.unsubscribe = [
      this.store.on('chat:' + chatId, render),
      this.store.on('members:' + chatId, render),
      this.store.on('presence', render),
      this.store.on('users', render),
      this.store.on('connection', render),
    ];
  }

  get chat() {
    return this.store.chats.get(this.chatId);
  }

  mounted({ focus = false } = {}) {
    this.render();
    this.reload();
    // Opened by the user: move there, so keyboard and screen reader users land in it.
    if (focus) this.el.querySelector('h2')?.focus({ preventScroll: true });
  }

  reload() {
    if (!this.chat || this.chat.removed) return;
    this.ctx.session.loadMembers(this.chatId).catch((error) => {
      if (error?.code !== 'network' && error?.code !== 'chat_not_found') this.error.show(error);
    });
  }

  render() {
    const chat = this.chat;
    if (!chat?.group) return;
    const role = this.store.myRole(chat);
    if (!this.renaming) this.#renderIdentity(chat, role);
    this.#renderMembers(chat, role);
    this.footer.replaceChildren(
      chat.removed
        ? h('p', { class: 'muted' }, 'You are no longer a member of this group.')
        : this.#button('Leave group', () => this.#leave(), { className: 'btn danger wide', iconName: 'logout' }),
    );
  }

  #renderIdentity(chat, role) {
    const group = chat.group;
    const admin = role === 'admin' || role === 'owner';
    const controls = [];
    if (admin) {
      controls.push(this.#button('Rename', () => this.#startRename(), { className: 'btn small ghost', iconName: 'edit' }));
      const fileId = `group-avatar-${this.chatId}`;
      const file = h('input', { type: 'file', id: fileId, accept: 'image/png,image/jpeg,image/webp,image/gif', class: 'visually-hidden' });
      const change = h('label', { for: fileId, class: 'btn small ghost', role: 'button', tabindex: '0' }, icon('camera', { size: 18 }), group.avatar ? 'Change photo' : 'Add photo');
      change.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          file.click();
        }
      });
      file.addEventListener('change', () => this.#upload(file.files?.[0]));
      controls.push(change, file);
      if (group.avatar) {
        controls.push(this.#button('Remove photo', () => this.#run(async () => this.store.applyChatSummary(await this.ctx.api.deleteGroupAvatar(this.chatId))), { className: 'btn small ghost' }));
      }
    }
    replaceChildren(this.identity,
      avatar({ id: chat.id, display_name: group.name, avatar: group.avatar }, { size: 96, group: true }),
      h('h3', { class: 'group-name' }, group.name),
      h('p', { class: 'muted' }, `Group · ${group.member_count} ${group.member_count === 1 ? 'member' : 'members'}`),
      controls.length ? h('div', { class: 'row center' }, controls) : null,
    );
  }

  #startRename() {
    const chat = this.chat;
    if (!chat?.group) return;
    this.renaming = true;
    const error = formError();
    const save = h('button', { type: 'submit', class: 'btn small primary' }, 'Save');
    const cancel = h('button', { type: 'button', class: 'btn small ghost' }, 'Cancel');
    const form = h(
      'form',
      { class: 'rename-form', 'aria-label': 'Rename group' },
      field({ label: 'Group name', name: 'name', value: chat.group.name, maxlength: 100, required: true, autocomplete: 'off' }),
      error.el,
      h('div', { class: 'row end' }, cancel, save),
    );
    const input = form.querySelector('input');
    const stop = () => {
      this.renaming = false;
      this.render();
    };
    cancel.addEventListener('click', stop);
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') stop();
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const name = input.value.trim();
      if (!name) {
        error.show('Give the group a name.');
        return;
      }
      busy(
        save,
        async () => {
          if (name !== chat.group.name) this.store.applyChatSummary(await this.ctx.api.renameGroup(this.chatId, name));
          stop();
        },
        (e) => error.show(e),
      );
    });
    this.identity.replaceChildren(avatar({ id: chat.id, display_name: chat.group.name, avatar: chat.group.avatar }, { size: 96, group: true }), form);
    input.focus();
    input.select();
  }

  #renderMembers(chat, role) {
    const members = this.store.membersOf(this.chatId);
    const admin = !chat.removed && (role === 'admin' || role === 'owner');
    replaceChildren(this.membersHead,
      h('h3', { class: 'section-title' }, 'Members', h('span', { class: 'count' }, String(members?.length ?? chat.group.member_count))),
      admin ? this.#button('Add members', () => this.#add(), { className: 'btn small primary', iconName: 'user-plus' }) : null,
    );
    if (!members) {
      this.membersEl.replaceChildren(h('li', { class: 'muted empty-line' }, chat.removed ? 'You can no longer see who is in this group.' : 'Loading members…'));
      return;
    }
    reconcile(this.membersEl, members, {
      key: (member) => member.user.id,
      version: (member) => {
        const presence = this.store.presenceOf(member.user.id);
        return [member.role, role, chat.removed, member.user.display_name, member.user.username, JSON.stringify(member.user.avatar ?? null), JSON.stringify(presence)].join('|');
      },
      render: (member) => this.#member(member, role, chat),
    });
    // Placeholder rows (loading) have no key: drop them.
    for (const child of [...this.membersEl.children]) if (!child.dataset.key) child.remove();
  }

  #member(member, role, chat) {
    const store = this.store;
    const { user } = member;
    const me = user.id === store.me;
    const presence = store.presenceOf(user.id);
    const label = presenceLabel(presence);
    const actions = chat.removed || me ? [] : this.#memberActions(member, role);
    const name = me ? `${user.display_name} (you)` : user.display_name;
    return h(
      'li',
      { class: 'person member', dataset: { userId: user.id, role: member.role }, 'aria-label': `${name}, ${ROLE_LABEL[member.role]}${label ? ', ' + label : ''}` },
      avatar(user, { size: 40, presence: dotFor(presence) }),
      h(
        'div',
        { class: 'person-text' },
        h('span', { class: 'person-name' }, name),
        h('span', { class: ['person-handle', presence && presence.status !== 'offline' && 'present'] }, label ?? '@' + user.username),
      ),
      member.role !== 'member' ? h('span', { class: ['role-badge', member.role] }, ROLE_LABEL[member.role]) : null,
      actions.length
        ? h('button', { type: 'button', class: 'icon-btn', 'aria-label': `More actions for ${user.display_name}`, 'aria-haspopup': 'dialog', on: { click: () => this.#memberMenu(member, actions) } }, icon('more', { size: 18 }))
        : null,
    );
  }

  /** What my role allows me to do to this member. */
  #memberActions(member, role) {
    const actions = [];
    const target = member.role;
    if (role === 'owner') {
      if (target === 'member') actions.push({ value: 'admin', label: 'Make admin' });
      if (target === 'admin') actions.push({ value: 'member', label: 'Remove admin role' });
      actions.push({ value: 'owner', label: 'Make owner' });
      actions.push({ value: 'remove', label: 'Remove from group', icon: 'trash', danger: true });
    } else if (role === 'admin' && target === 'member') {
      actions.push({ value: 'remove', label: 'Remove from group', icon: 'trash', danger: true });
    }
    return actions;
  }

  async #memberMenu(member, actions) {
    const { user } = member;
    const name = user.display_name;
    const choice = await choose({ title: name, text: `@${user.username} · ${ROLE_LABEL[member.role]}`, actions });
    const api = this.ctx.api;
    switch (choice) {
      case 'admin':
      case 'member':
        await this.#run(async () => {
          this.store.applyChatSummary(await api.setRole(this.chatId, user.id, choice));
          await this.ctx.session.loadMembers(this.chatId);
        });
        break;
      case 'owner': {
        const sure = await choose({
          title: `Make ${name} the owner?`,
          text: 'They will be able to manage admins and the group. You will become an admin.',
          actions: [{ value: 'yes', label: 'Make owner', primary: true }],
        });
        if (sure !== 'yes') return;
        await this.#run(async () => {
          this.store.applyChatSummary(await api.transferOwnership(this.chatId, user.id));
          await this.ctx.session.loadMembers(this.chatId);
          toast(`${name} now owns the group.`);
        });
        break;
      }
      case 'remove': {
        const sure = await choose({
          title: `Remove ${name}?`,
          text: 'They will stop receiving the group’s messages. Their earlier messages stay.',
          actions: [{ value: 'yes', label: 'Remove', icon: 'trash', danger: true }],
        });
        if (sure !== 'yes') return;
        await this.#run(async () => {
          await api.removeMember(this.chatId, user.id);
          await this.ctx.session.loadMembers(this.chatId);
          this.ctx.session.refreshChat(this.chatId);
        });
        break;
      }
      default:
        break;
    }
  }

  async #add() {
    const members = this.store.members.get(this.chatId);
    let friends;
    try {
      friends = await loadFriends(this.ctx.api);
    } catch (error) {
      this.error.show(error);
      return;
    }
    const candidates = friends.filter((user) => !members?.has(user.id));
    await sheet({
      title: 'Add members',
      className: 'wide',
      build: (close) => {
        const error = formError();
        const add = h('button', { type: 'button', class: 'btn primary', disabled: true }, 'Add');
        const picker = peoplePicker({
          store: this.store,
          people: candidates,
          emptyText: 'Every friend of yours is in the group already.',
          onChange: (ids) => {
            add.disabled = ids.length === 0;
            add.textContent = ids.length ? `Add ${ids.length}` : 'Add';
          },
        });
        add.addEventListener('click', () =>
          busy(
            add,
            async () => {
              this.store.applyChatSummary(await this.ctx.api.addMembers(this.chatId, picker.selected()));
              await this.ctx.session.loadMembers(this.chatId);
              close(true);
            },
            (e) => error.show(e),
          ),
        );
        return [
          h('p', { class: 'sheet-text' }, 'Only your friends can be added. They see the group’s messages from now on.'),
          picker.el,
          error.el,
          h('div', { class: 'row end sheet-row' }, h('button', { type: 'button', class: 'btn ghost', on: { click: () => close(null) } }, 'Cancel'), add),
        ];
      },
    });
  }

  async #upload(file) {
    if (!file) return;
    if (file.size > MAX_IMAGE_BYTES) {
      this.error.show('That picture is larger than 5 MB.');
      return;
    }
    await this.#run(async () => {
      this.store.applyChatSummary(await this.ctx.api.putGroupAvatar(this.chatId, file));
      toast('Group photo updated.');
    });
  }

  async #leave() {
    const chat = this.chat;
    const sure = await choose({
      title: `Leave “${chat.group.name}”?`,
      text: 'You will stop receiving its messages, and it leaves your chat list.',
      actions: [{ value: 'yes', label: 'Leave group', icon: 'logout', danger: true }],
    });
    if (sure !== 'yes') return;
    await this.#run(async () => {
      await this.ctx.api.removeMember(this.chatId, this.store.me);
      this.store.dropChat(this.chatId);
      this.ctx.router.go('/');
      toast(`You left “${chat.group.name}”.`);
    });
  }

  /** Runs an action; its error shows in the panel (and is announced). */
  async #run(task) {
    this.error.clear();
    try {
      await task();
    } catch (error) {
      this.error.show(error);
    }
  }

  #button(label, task, { className, iconName = null }) {
    const button = h('button', { type: 'button', class: className }, iconName ? icon(iconName, { size: 18 }) : null, label);
    button.addEventListener('click', () => busy(button, task, (error) => this.error.show(error)));
    return button;
  }

  destroy() {
    for (const off of this.unsubscribe) off();
  }
}
