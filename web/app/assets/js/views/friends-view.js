// Friends: find people, send, accept, decline and cancel requests, open a
// chat with a friend, remove friends, block and unblock; friends show
// their presence.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { dotFor, presenceLabel } from '../presence.js';
import { avatar, busy, choose, screenHeader, toast, toastError } from './ui.js';

const SEARCH_DELAY_MS = 250;
const LISTS = ['incoming', 'outgoing', 'friends', 'blocks'];

export class FriendsView {
  constructor(ctx) {
    this.ctx = ctx;
    this.lists = { incoming: [], outgoing: [], friends: [], blocks: [] };
    this.results = null;
    this.query = '';
    this.loaded = false;

    this.search = h('input', {
      type: 'search',
      id: 'people-search',
      placeholder: 'Search by name or username',
      autocomplete: 'off',
      autocapitalize: 'none',
      spellcheck: 'false',
      enterkeyhint: 'search',
    });
    this.resultsEl = h('div', { class: 'search-results', 'aria-live': 'polite' });
    this.sectionsEl = h('div', { class: 'friend-sections' });
    this.el = h(
      'section',
      { class: 'friends screen' },
      screenHeader({ title: 'Friends', back: '/' }),
      h(
        'div',
        { class: 'screen-body' },
        h(
          'div',
          { class: 'search-box', role: 'search' },
          h('label', { for: 'people-search', class: 'visually-hidden' }, 'Find people'),
          icon('search'),
          this.search,
        ),
        this.resultsEl,
        this.sectionsEl,
      ),
    );
    this.search.addEventListener('input', () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.#runSearch(), SEARCH_DELAY_MS);
    });
    const offRelations = ctx.store.on('relations', () => {
      clearTimeout(this.refreshTimer);
      this.refreshTimer = setTimeout(() => this.refresh(), 100);
    });
    const offPresence = ctx.store.on('presence', () => this.#refreshPresence());
    this.unsubscribe = () => {
      offRelations();
      offPresence();
    };
  }

  mounted() {
    this.render();
    this.refresh();
  }

  async refresh() {
    try {
      const pages = await Promise.all(LISTS.map((list) => this.ctx.api.relationPage(list)));
      LISTS.forEach((list, i) => (this.lists[list] = pages[i].users));
      this.loaded = true;
      if (this.query) await this.#runSearch();
      this.render();
    } catch (error) {
      toastError(error);
    }
  }

  async #runSearch() {
    const q = this.search.value.trim();
    this.query = q;
    if (!q) {
      this.results = null;
      this.render();
      return;
    }
    try {
      const { users } = await this.ctx.api.searchUsers(q);
      if (this.query === q) {
        this.results = users.filter((hit) => hit.user.id !== this.ctx.store.me);
        this.render();
      }
    } catch (error) {
      toastError(error);
    }
  }

  render() {
    const { lists } = this;
    if (this.results) {
      this.resultsEl.replaceChildren(
        h('h2', { class: 'section-title' }, 'People'),
        this.results.length
          ? h('ul', { class: 'people' }, this.results.map((hit) => this.#row(hit.user, this.#relationOf(hit.user.id, hit.relation))))
          : h('p', { class: 'muted empty-line' }, `Nobody found for “${this.query}”.`),
      );
    } else {
      this.resultsEl.replaceChildren();
    }
    const section = (title, entries, relation, emptyText = null) => {
      if (!entries.length && !emptyText) return null;
      return h(
        'section',
        { 'aria-label': title },
        h('h2', { class: 'section-title' }, title, entries.length ? h('span', { class: 'count' }, String(entries.length)) : null),
        entries.length
          ? h('ul', { class: 'people' }, entries.map((entry) => this.#row(entry.user, relation)))
          : h('p', { class: 'muted empty-line' }, emptyText),
      );
    };
    this.sectionsEl.replaceChildren(
      ...[
        section('Friend requests', lists.incoming, 'request_received'),
        section('Sent requests', lists.outgoing, 'request_sent'),
        section('Friends', lists.friends, 'friends', this.loaded ? 'No friends yet. Search for people above to add them.' : 'Loading…'),
        section('Blocked', lists.blocks, 'blocked'),
      ].filter(Boolean),
    );
  }

  /** The current relation with a user: blocked, then the lists, then what search said. */
  #relationOf(userId, fallback) {
    const has = (list) => this.lists[list].some((entry) => entry.user.id === userId);
    if (has('blocks')) return 'blocked';
    if (has('friends')) return 'friends';
    if (has('incoming')) return 'request_received';
    if (has('outgoing')) return 'request_sent';
    return fallback;
  }

  #row(user, relation) {
    const api = this.ctx.api;
    const act = (label, task, { primary = false, danger = false, done = null } = {}) => {
      const button = h('button', { type: 'button', class: ['btn', 'small', primary ? 'primary' : danger ? 'danger' : 'ghost'] }, label);
      button.addEventListener('click', () =>
        busy(button, async () => {
          await task();
          if (done) toast(done);
          await this.refresh();
        }),
      );
      return button;
    };
    const name = user.display_name;
    const buttons = [];
    switch (relation) {
      case 'friends':
        buttons.push(h('button', { type: 'button', class: 'btn small primary', on: { click: (e) => this.#openChat(user, e.currentTarget) } }, 'Message'));
        break;
      case 'request_received':
        buttons.push(act('Accept', () => api.acceptRequest(user.id), { primary: true, done: `You and ${name} are now friends.` }));
        buttons.push(act('Decline', () => api.declineRequest(user.id)));
        break;
      case 'request_sent':
        buttons.push(act('Cancel request', () => api.cancelRequest(user.id)));
        break;
      case 'blocked':
        buttons.push(act('Unblock', () => api.unblock(user.id), { done: `${name} is unblocked.` }));
        break;
      default:
        buttons.push(act('Add friend', () => api.requestFriend(user.id), { primary: true, done: `Friend request sent to ${name}.` }));
    }
    if (relation !== 'blocked') {
      buttons.push(
        h('button', { type: 'button', class: 'icon-btn', 'aria-label': `More actions for ${name}`, on: { click: () => this.#more(user, relation) } }, icon('more', { size: 18 })),
      );
    }
    const row = h(
      'li',
      { class: 'person', dataset: { userId: user.id, relation } },
      avatar(user, { size: 44 }),
      h(
        'div',
        { class: 'person-text' },
        h('span', { class: 'person-name' }, name),
        h('span', { class: 'person-handle' }, '@' + user.username, h('span', { class: 'person-presence' })),
      ),
      h('div', { class: 'person-actions' }, buttons),
    );
    row.user = user;
    this.#showPresence(row);
    return row;
  }

  /** Puts a friend's presence on their row: a dot on the avatar and a few words. */
  #showPresence(row) {
    if (row.dataset.relation !== 'friends') return;
    const presence = this.ctx.store.presenceOf(row.dataset.userId);
    const dot = dotFor(presence);
    row.dataset.presence = presence?.status ?? '';
    row.querySelector('.avatar').replaceWith(avatar(row.user, { size: 44, presence: dot }));
    const label = presenceLabel(presence);
    row.querySelector('.person-presence').textContent = label ? ` · ${label}` : '';
  }

  #refreshPresence() {
    for (const row of this.el.querySelectorAll('.person[data-relation="friends"]')) this.#showPresence(row);
  }

  async #more(user, relation) {
    const name = user.display_name;
    const actions = [];
    if (relation === 'friends') actions.push({ value: 'remove', label: 'Remove friend', danger: true });
    actions.push({ value: 'block', label: `Block ${name}`, danger: true });
    const choice = await choose({
      title: name,
      text: 'Blocking ends any friendship or request. They are not told, and cannot message you or send requests.',
      actions,
    });
    try {
      if (choice === 'remove') {
        await this.ctx.api.removeFriend(user.id);
        toast(`${name} is no longer your friend.`);
      } else if (choice === 'block') {
        await this.ctx.api.block(user.id);
        toast(`${name} is blocked.`);
      } else {
        return;
      }
      await this.refresh();
    } catch (error) {
      toastError(error);
    }
  }

  async #openChat(user, button) {
    await busy(button, async () => {
      const existing = this.ctx.store.directChatWith(user.id);
      const chat = existing ?? this.ctx.store.applyChatSummary(await this.ctx.api.openDirectChat(user.id));
      this.ctx.router.go(`/chats/${chat.id}`);
    });
  }

  destroy() {
    this.unsubscribe();
    clearTimeout(this.searchTimer);
    clearTimeout(this.refreshTimer);
  }
}
