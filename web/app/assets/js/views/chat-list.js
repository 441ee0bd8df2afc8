// The chat list: every chat with its picture, name, last message (or who is
// typing), time and unread count, most recent first.

import { h, reconcile } from '../dom.js';
import { shortWhen } from '../format.js';
import { icon } from '../icons.js';
import { avatar, screenHeader } from './ui.js';

export class ChatList {
  constructor({ store }) {
    this.store = store;
    this.selected = null;
    this.items = h('ul', { class: 'chat-list', 'aria-label': 'Conversations' });
    this.empty = h(
      'div',
      { class: 'list-empty', hidden: true },
      h('p', {}, 'No chats yet.'),
      h('a', { href: '/friends', 'data-link': '', class: 'btn primary' }, icon('friends'), 'Find friends'),
    );
    this.el = h(
      'div',
      { class: 'chat-list-wrap' },
      screenHeader({
        title: 'Chats',
        actions: [h('a', { href: '/friends', 'data-link': '', class: 'icon-btn', 'aria-label': 'New chat' }, icon('plus'))],
      }),
      this.items,
      this.empty,
    );
    this.unsubscribe = [store.on('chats', () => this.render()), store.on('typing', () => this.render())];
    this.render();
  }

  select(chatId) {
    this.selected = chatId;
    this.render();
  }

  render() {
    const store = this.store;
    const chats = store.chatList();
    this.empty.hidden = chats.length > 0 || !store.chatsLoaded;
    reconcile(this.items, chats, {
      key: (chat) => chat.id,
      version: (chat) =>
        [
          chat.id === this.selected,
          chat.unread,
          chat.lastMessage?.id,
          chat.lastMessage?.edited_at,
          chat.lastMessage?.deleted,
          store.titleOf(chat),
          store.typingIn(chat.id).length,
          JSON.stringify(store.peersOf(chat)[0]?.avatar ?? null),
        ].join('|'),
      render: (chat) => this.#item(chat),
    });
  }

  #item(chat) {
    const store = this.store;
    const title = store.titleOf(chat);
    const peer = store.peersOf(chat)[0];
    const last = chat.lastMessage;
    const typing = store.typingIn(chat.id);
    let preview;
    if (typing.length) preview = h('span', { class: 'typing-text' }, 'typing…');
    else if (!last) preview = h('span', { class: 'muted' }, 'No messages yet');
    else if (last.deleted) preview = h('em', { class: 'muted' }, 'Message deleted');
    else preview = [last.sender_id === store.me ? h('span', { class: 'muted' }, 'You: ') : null, last.body];
    const unread = chat.unread > 0;
    return h(
      'li',
      {},
      h(
        'a',
        {
          href: `/chats/${chat.id}`,
          'data-link': '',
          class: ['chat-item', unread && 'unread'],
          'aria-current': chat.id === this.selected ? 'page' : null,
          'aria-label': `${title}${unread ? `, ${chat.unread} unread` : ''}`,
        },
        avatar(peer ?? { id: chat.id, display_name: title }, { size: 48 }),
        h(
          'span',
          { class: 'chat-item-text' },
          h('span', { class: 'chat-item-top' }, h('span', { class: 'chat-item-name' }, title), last ? h('time', { class: 'chat-item-time' }, shortWhen(last.sent_at)) : null),
          h(
            'span',
            { class: 'chat-item-bottom' },
            h('span', { class: 'chat-item-preview' }, preview),
            unread ? h('span', { class: 'badge', 'aria-hidden': 'true' }, chat.unread > 99 ? '99+' : String(chat.unread)) : null,
          ),
        ),
      ),
    );
  }

  destroy() {
    for (const off of this.unsubscribe) off();
  }
}
