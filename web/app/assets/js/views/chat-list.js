// The chat list: every chat with its picture (a peer's with a presence
// dot), name, last message (or who is typing, or a group event), time and
// unread count, most recent first.

import { eventText } from '../events.js';
import { h, reconcile } from '../dom.js';
import { shortWhen } from '../format.js';
import { icon } from '../icons.js';
import { presenceLabel } from '../presence.js';
import { chatAvatar, screenHeader } from './ui.js';

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
        actions: [
          h('a', { href: '/groups/new', 'data-link': '', class: 'icon-btn', 'aria-label': 'New group', title: 'New group' }, icon('group')),
          h('a', { href: '/friends', 'data-link': '', class: 'icon-btn', 'aria-label': 'New chat', title: 'New chat' }, icon('plus')),
        ],
      }),
      this.items,
      this.empty,
    );
    const render = () => this.render();
    this.unsubscribe = [store.on('chats', render), store.on('typing', render), store.on('presence', render), store.on('users', render), store.on('connection', render)];
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
          JSON.stringify(chat.group?.avatar ?? store.peersOf(chat)[0]?.avatar ?? null),
          JSON.stringify(chat.group ? null : store.presenceOf(store.peersOf(chat)[0]?.id)),
          chat.lastMessage ? this.#previewText(chat, chat.lastMessage) : '',
          Boolean(chat.removed),
        ].join('|'),
      render: (chat) => this.#item(chat),
    });
  }

  /** The sender's name before a group message ("Bob: "), or an event as a sentence. */
  #previewText(chat, message) {
    if (message.event) return eventText(this.store, message);
    if (chat.group && message.sender_id !== this.store.me) return this.store.user(message.sender_id).display_name;
    return '';
  }

  #item(chat) {
    const store = this.store;
    const title = store.titleOf(chat);
    const peer = chat.group ? null : store.peersOf(chat)[0];
    const last = chat.lastMessage;
    const typing = chat.removed ? [] : store.typingIn(chat.id);
    let preview;
    if (chat.removed) preview = h('em', { class: 'muted' }, 'You are no longer a member');
    else if (typing.length) preview = h('span', { class: 'typing-text' }, chat.group ? `${typing[0].display_name} is typing…` : 'typing…');
    else if (!last) preview = h('span', { class: 'muted' }, 'No messages yet');
    else if (last.event) preview = h('span', { class: 'muted event-preview' }, eventText(store, last));
    else if (last.deleted) preview = h('em', { class: 'muted' }, 'Message deleted');
    else if (last.sender_id === store.me) preview = [h('span', { class: 'muted' }, 'You: '), last.body];
    else if (chat.group) preview = [h('span', { class: 'muted' }, store.user(last.sender_id).display_name + ': '), last.body];
    else preview = last.body;
    const unread = chat.unread > 0;
    const presence = peer ? presenceLabel(store.presenceOf(peer.id), { text: false }) : null;
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
          'aria-label': `${title}${chat.group ? ', group' : ''}${presence ? `, ${presence}` : ''}${unread ? `, ${chat.unread} unread` : ''}`,
        },
        chatAvatar(store, chat, { size: 48 }),
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
