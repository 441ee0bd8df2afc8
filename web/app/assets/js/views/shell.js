// The signed-in layout: navigation (a rail on wide screens, a tab bar on
// phones), the chat list beside the current screen, and the connection
// banner. Phones show one pane at a time.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { ChatList } from './chat-list.js';
import { ChatView } from './chat-view.js';
import { FriendsView } from './friends-view.js';
import { GroupCreateView } from './group-create.js';
import { ProfileView } from './profile-view.js';

const TABS = [
  ['chats', '/', 'Chats', 'chats'],
  ['friends', '/friends', 'Friends', 'friends'],
  ['profile', '/profile', 'Profile', 'profile'],
];

export class Shell {
  constructor({ root, store, session, api, auth, router }) {
    this.ctx = { store, session, api, auth, router };
    this.current = null;
    this.nav = h(
      'nav',
      { class: 'tabs', 'aria-label': 'Main' },
      h('img', { class: 'tabs-logo', src: '/assets/icons/icon.svg', alt: 'Parley', width: 36, height: 36 }),
      TABS.map(([name, href, label, glyph]) =>
        h('a', { href, 'data-link': '', class: 'tab', dataset: { tab: name } }, icon(glyph, { size: 22 }), h('span', {}, label)),
      ),
    );
    this.list = new ChatList(this.ctx);
    this.main = h('main', { class: 'pane main-pane', id: 'main', tabindex: '-1' });
    this.el = h('div', { class: 'shell' }, this.nav, h('aside', { class: 'pane list-pane', 'aria-label': 'Chats' }, this.list.el), this.main);
    root.replaceChildren(this.el);
    this.banner = document.getElementById('banner');
    this.unsubscribe = store.on('connection', () => this.#showConnection());
    this.#showConnection();
  }

  /** Shows the screen for `route`. */
  show(route) {
    // A chat and its info panel are one screen.
    const screen = route.name === 'chat-info' ? 'chat' : route.name;
    const key = screen + ':' + (route.params.chatId ?? '');
    this.el.dataset.screen = screen;
    for (const tab of this.nav.querySelectorAll('.tab')) {
      const active = tab.dataset.tab === (screen === 'chat' || screen === 'group-new' ? 'chats' : screen);
      if (active) tab.setAttribute('aria-current', 'page');
      else tab.removeAttribute('aria-current');
    }
    this.list.select(route.params.chatId ?? null);
    if (this.currentKey === key) {
      this.current?.setInfo?.(route.name === 'chat-info');
      return;
    }
    this.currentKey = key;
    this.current?.destroy?.();
    switch (screen) {
      case 'chat':
        this.current = new ChatView(this.ctx, route.params.chatId);
        this.current.setInfo(route.name === 'chat-info');
        break;
      case 'group-new':
        this.current = new GroupCreateView(this.ctx);
        break;
      case 'friends':
        this.current = new FriendsView(this.ctx);
        break;
      case 'profile':
        this.current = new ProfileView(this.ctx);
        break;
      default:
        this.current = { el: emptyState(), destroy() {} };
    }
    this.main.replaceChildren(this.current.el);
    this.current.mounted?.();
  }

  #showConnection() {
    const state = this.ctx.store.connection;
    this.el.dataset.connection = state;
    const text = { offline: 'Offline — reconnecting…', connecting: 'Connecting…' }[state];
    // "Connecting" flashes by on every start; only a lasting problem is worth a banner.
    clearTimeout(this.bannerTimer);
    if (!text) {
      this.banner.hidden = true;
      return;
    }
    this.bannerTimer = setTimeout(() => {
      this.banner.replaceChildren(icon('offline', { size: 16 }), text);
      this.banner.hidden = false;
    }, state === 'offline' ? 0 : 1500);
  }

  destroy() {
    this.current?.destroy?.();
    this.list.destroy();
    this.unsubscribe();
    clearTimeout(this.bannerTimer);
    this.banner.hidden = true;
  }
}

function emptyState() {
  return h(
    'section',
    { class: 'empty-state' },
    h('img', { src: '/assets/icons/icon.svg', alt: '', width: 72, height: 72 }),
    h('h2', {}, 'Pick a chat'),
    h('p', { class: 'muted' }, 'Choose a conversation, or find friends to start one.'),
    h('a', { href: '/friends', 'data-link': '', class: 'btn primary' }, icon('friends'), 'Find friends'),
  );
}
