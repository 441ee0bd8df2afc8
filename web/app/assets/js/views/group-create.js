// A new group: its name and the friends to start it with. The creator
// becomes its owner.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { loadFriends, peoplePicker } from './people-picker.js';
import { busy, field, formError, screenHeader, toastError } from './ui.js';

/** Longest group name the server takes (characters). */
const MAX_NAME = 100;

export class GroupCreateView {
  constructor(ctx) {
    this.ctx = ctx;
    this.picked = [];
    this.error = formError();
    this.count = h('span', { class: 'count', 'aria-live': 'polite' }, '0 selected');
    this.pickerSlot = h('div', { class: 'picker-slot' }, h('p', { class: 'muted empty-line' }, 'Loading friends…'));
    this.create = h('button', { type: 'submit', class: 'btn primary' }, icon('group', { size: 18 }), 'Create group');
    this.form = h(
      'form',
      { class: 'card group-form', 'aria-label': 'New group' },
      field({ label: 'Group name', name: 'name', maxlength: MAX_NAME, required: true, autocomplete: 'off', hint: `Up to ${MAX_NAME} characters. Everyone in the group sees it.` }),
      h('div', { class: 'picker-head' }, h('h2', { class: 'card-title' }, 'Add friends'), this.count),
      this.pickerSlot,
      this.error.el,
      h('div', { class: 'row end' }, h('a', { href: '/', 'data-link': '', class: 'btn ghost' }, 'Cancel'), this.create),
    );
    this.el = h('section', { class: 'group-new screen' }, screenHeader({ title: 'New group', back: '/' }), h('div', { class: 'screen-body' }, this.form));
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#submit();
    });
  }

  async mounted() {
    this.form.querySelector('input[name="name"]').focus({ preventScroll: true });
    try {
      const friends = await loadFriends(this.ctx.api);
      const picker = peoplePicker({
        store: this.ctx.store,
        people: friends,
        emptyText: 'No friends yet. You can still create the group and add people later.',
        onChange: (ids) => {
          this.picked = ids;
          this.count.textContent = `${ids.length} selected`;
        },
      });
      this.pickerSlot.replaceChildren(picker.el);
    } catch (error) {
      this.pickerSlot.replaceChildren(h('p', { class: 'muted empty-line' }, 'Could not load your friends.'));
      toastError(error);
    }
  }

  #submit() {
    this.error.clear();
    const name = String(new FormData(this.form).get('name') ?? '').trim();
    if (!name) {
      this.error.show('Give the group a name.');
      return;
    }
    busy(
      this.create,
      async () => {
        const summary = await this.ctx.api.createGroup(name, this.picked);
        this.ctx.store.applyChatSummary(summary);
        this.ctx.router.go(`/chats/${summary.id}`);
      },
      (error) => this.error.show(error),
    );
  }

  destroy() {}
}
