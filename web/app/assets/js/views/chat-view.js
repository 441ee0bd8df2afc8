// One conversation: history that loads older pages as you scroll up, each
// message with its state (sending, sent, delivered, seen, failed), the
// typing indicator, message actions and the composer.

import { h, reconcile } from '../dom.js';
import { clock, dayLabel, sameDay, utf8Bytes } from '../format.js';
import { icon } from '../icons.js';
import { MessageActions } from './message-actions.js';
import { avatar, screenHeader, toast, toastError } from './ui.js';

/** Within this many pixels of the bottom, new messages keep the view pinned to the bottom. */
const STICK_PX = 80;

const STATUS_LABEL = {
  sending: 'Sending',
  sent: 'Sent',
  delivered: 'Delivered',
  seen: 'Seen',
  failed: 'Not sent',
};
const STATUS_ICON = { sending: 'clock', sent: 'check', delivered: 'checks', seen: 'checks', failed: 'alert' };

export class ChatView {
  constructor(ctx, chatId) {
    this.ctx = ctx;
    this.store = ctx.store;
    this.session = ctx.session;
    this.chatId = chatId;
    this.editing = null;
    this.loadingOlder = false;
    this.loadedLatest = false;
    this.actions = new MessageActions(this);

    this.header = h('div', { class: 'chat-header-slot' });
    this.list = h('ol', { class: 'message-list' });
    this.sentinel = h('div', { class: 'history-edge', 'aria-hidden': 'true' });
    this.scroller = h(
      'div',
      { class: 'messages', role: 'log', 'aria-label': 'Messages', 'aria-live': 'polite', tabindex: '0' },
      this.sentinel,
      this.list,
    );
    this.typingRow = h('div', { class: 'typing-row', 'aria-live': 'polite' });
    this.input = h('textarea', {
      class: 'composer-input',
      rows: 1,
      'aria-label': 'Message',
      placeholder: 'Message',
      enterkeyhint: 'send',
      autocomplete: 'off',
    });
    this.editBar = h('div', { class: 'edit-bar', hidden: true });
    this.sendButton = h('button', { type: 'submit', class: 'send-btn', 'aria-label': 'Send' }, icon('send', { size: 22 }));
    this.composer = h(
      'form',
      { class: 'composer', 'aria-label': 'Write a message' },
      this.editBar,
      h('div', { class: 'composer-row' }, this.input, this.sendButton),
    );
    this.el = h('section', { class: 'chat' }, this.header, this.scroller, this.typingRow, this.composer);

    this.composer.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#submit();
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.#submit();
      } else if (event.key === 'Escape' && this.editing) {
        this.stopEditing();
      }
    });
    this.input.addEventListener('input', () => {
      this.#autosize();
      if (this.input.value.trim() && !this.editing) this.session.typing(this.chatId);
    });

    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.#loadOlder();
    }, { root: this.scroller, rootMargin: '200px 0px 0px 0px' });

    this.onVisible = () => this.#markSeen();
    document.addEventListener('visibilitychange', this.onVisible);
    this.unsubscribe = [
      this.store.on('chat:' + chatId, () => this.render()),
      this.store.on('chats', () => this.#ensureLoaded()),
      this.store.on('typing:' + chatId, () => this.#renderTyping()),
      this.store.on('connection', () => this.#ensureLoaded()),
    ];
  }

  mounted() {
    this.render();
    this.#ensureLoaded();
    this.observer.observe(this.sentinel);
    if (matchMedia('(pointer: fine)').matches) this.input.focus({ preventScroll: true });
  }

  get chat() {
    return this.store.chats.get(this.chatId);
  }

  #ensureLoaded() {
    if (this.loadedLatest || !this.chat || this.store.connection === 'offline') return;
    this.loadedLatest = true;
    this.session.loadLatest(this.chatId).catch((error) => {
      this.loadedLatest = false;
      if (error?.code !== 'network') toastError(error);
    });
  }

  render() {
    const chat = this.chat;
    if (!chat) {
      this.#renderMissing();
      return;
    }
    this.composer.hidden = false;
    this.#renderHeader(chat);
    const nearBottom = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < STICK_PX;
    const firstPaint = !this.list.firstChild;
    const heightBefore = this.scroller.scrollHeight;
    const topBefore = this.scroller.scrollTop;
    const firstKeyBefore = this.list.querySelector('.msg')?.dataset.key;

    reconcile(this.list, this.#items(chat), {
      key: (item) => item.key,
      version: (item) => item.version,
      render: (item) => item.render(),
    });
    this.sentinel.textContent = chat.cursor === null ? 'This is the start of your conversation.' : '';
    this.sentinel.classList.toggle('start', chat.cursor === null);

    if (firstPaint || nearBottom) {
      this.scroller.scrollTop = this.scroller.scrollHeight;
    } else if (this.list.querySelector('.msg')?.dataset.key !== firstKeyBefore) {
      // Older messages were added above: keep what the reader was looking at in place.
      this.scroller.scrollTop = topBefore + (this.scroller.scrollHeight - heightBefore);
    }
    this.#markSeen();
  }

  #items(chat) {
    const store = this.store;
    const items = [];
    let previous = null;
    const push = (time, item) => {
      if (!previous || !sameDay(previous, time)) {
        const label = dayLabel(time);
        items.push({ key: 'day:' + new Date(time).toDateString(), version: label, render: () => h('li', { class: 'day' }, h('span', {}, label)) });
      }
      previous = time;
      items.push(item);
    };
    for (const message of store.messagesOf(chat.id)) {
      const mine = message.sender_id === store.me;
      const status = mine && !message.deleted ? store.statusOf(chat, message) : null;
      push(message.sent_at, {
        key: message.id,
        version: [message.body, message.edited_at, message.deleted, status].join('|'),
        render: () => this.#message({ message, mine, status }),
      });
    }
    for (const pending of store.pendingOf(chat.id)) {
      push(pending.created_at, {
        key: 'c:' + pending.client_msg_id,
        version: [pending.state, pending.error].join('|'),
        render: () => this.#message({ message: { ...pending, id: null, sent_at: pending.created_at }, mine: true, status: pending.state, pending }),
      });
    }
    return items;
  }

  #message({ message, mine, status, pending = null }) {
    const meta = h(
      'span',
      { class: 'msg-meta' },
      message.edited_at && !message.deleted ? h('span', { class: 'edited' }, 'edited') : null,
      h('time', { datetime: new Date(message.sent_at).toISOString() }, clock(message.sent_at)),
      status
        ? h('span', { class: ['status', status], role: 'img', 'aria-label': STATUS_LABEL[status], title: STATUS_LABEL[status] }, icon(STATUS_ICON[status], { size: 16 }))
        : null,
    );
    const body = message.deleted
      ? h('p', { class: 'msg-body deleted' }, 'This message was deleted')
      : h('p', { class: 'msg-body' }, message.body);
    const failed = pending?.state === 'failed';
    const sender = mine ? 'You' : this.store.user(message.sender_id).display_name;
    return h(
      'li',
      {
        class: ['msg', mine ? 'mine' : 'theirs', message.deleted && 'is-deleted', failed && 'failed'],
        dataset: { status: status ?? '', id: message.id ?? '' },
        'aria-label': `${sender}, ${clock(message.sent_at)}${status ? ', ' + STATUS_LABEL[status] : ''}`,
      },
      h(
        'div',
        { class: 'msg-main' },
        h('div', { class: 'bubble' }, body, meta),
        failed
          ? h(
              'div',
              { class: 'msg-failed' },
              h('span', {}, pending.error ?? 'Not sent.'),
              pending.autoRetry ? h('button', { type: 'button', class: 'link-btn', on: { click: () => this.session.retry(pending.client_msg_id) } }, icon('retry', { size: 14 }), 'Retry') : null,
              h('button', { type: 'button', class: 'link-btn', on: { click: () => this.session.discard(pending.client_msg_id) } }, 'Discard'),
            )
          : null,
      ),
      !message.deleted && !pending
        ? h('button', { type: 'button', class: 'icon-btn msg-more', 'aria-label': 'Message actions', 'aria-haspopup': 'dialog', on: { click: () => this.actions.open(message) } }, icon('more', { size: 18 }))
        : null,
    );
  }

  #renderHeader(chat) {
    const store = this.store;
    const peer = store.peersOf(chat)[0];
    const typing = store.typingIn(chat.id);
    const subtitle = typing.length
      ? h('p', { class: 'subtitle typing-text' }, 'typing…')
      : h('p', { class: 'subtitle' }, peer ? '@' + peer.username : '');
    const key = [store.titleOf(chat), peer?.username, JSON.stringify(peer?.avatar ?? null), typing.length].join('|');
    if (this.headerKey === key) return;
    this.headerKey = key;
    this.header.replaceChildren(
      screenHeader({ title: store.titleOf(chat), back: '/', lead: avatar(peer ?? { id: chat.id, display_name: store.titleOf(chat) }, { size: 40 }), subtitle }),
    );
  }

  #renderTyping() {
    const names = this.store.typingIn(this.chatId).map((u) => u.display_name);
    this.typingRow.replaceChildren(
      names.length ? [h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…`] : [],
    );
    if (this.chat) this.#renderHeader(this.chat);
  }

  #renderMissing() {
    this.composer.hidden = true;
    this.header.replaceChildren(screenHeader({ title: this.store.chatsLoaded ? 'Chat not found' : 'Loading…', back: '/' }));
  }

  async #loadOlder() {
    const chat = this.chat;
    if (!chat || this.loadingOlder || chat.cursor === null || !this.loadedLatest) return;
    this.loadingOlder = true;
    this.sentinel.classList.add('loading');
    try {
      await this.session.loadOlder(this.chatId);
    } catch (error) {
      if (error?.code !== 'network') toastError(error);
      return;
    } finally {
      this.loadingOlder = false;
      this.sentinel.classList.remove('loading');
    }
    // Still at the top (a short page): keep going.
    const edge = this.sentinel.getBoundingClientRect();
    const view = this.scroller.getBoundingClientRect();
    if (edge.bottom > view.top - 200) this.#loadOlder();
  }

  #markSeen() {
    if (document.visibilityState === 'visible' && this.chat) this.session.markSeen(this.chatId);
  }

  #submit() {
    const body = this.input.value.trim();
    if (!body) return;
    if (utf8Bytes(body) > this.session.limits.max_body_bytes) {
      toast(`That message is too long (at most ${Math.floor(this.session.limits.max_body_bytes / 1024)} KB).`, { kind: 'error' });
      return;
    }
    if (this.editing) {
      const { id } = this.editing;
      if (body === this.editing.body) {
        this.stopEditing();
        return;
      }
      this.session.edit(this.chatId, id, body).then(() => this.stopEditing(), toastError);
      return;
    }
    this.session.send(this.chatId, body);
    this.input.value = '';
    this.#autosize();
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  /** Puts a message's text in the composer for editing. */
  startEditing(message) {
    this.editing = message;
    this.editBar.replaceChildren(
      icon('edit', { size: 16 }),
      h('span', {}, 'Editing message'),
      h('button', { type: 'button', class: 'icon-btn', 'aria-label': 'Cancel editing', on: { click: () => this.stopEditing() } }, icon('close', { size: 18 })),
    );
    this.editBar.hidden = false;
    this.input.value = message.body;
    this.#autosize();
    this.input.focus();
    this.sendButton.setAttribute('aria-label', 'Save edit');
  }

  stopEditing() {
    this.editing = null;
    this.editBar.hidden = true;
    this.input.value = '';
    this.#autosize();
    this.sendButton.setAttribute('aria-label', 'Send');
  }

  #autosize() {
    this.input.style.height = 'auto';
    this.input.style.height = Math.min(this.input.scrollHeight, 160) + 'px';
  }

  destroy() {
    for (const off of this.unsubscribe) off();
    this.observer.disconnect();
    document.removeEventListener('visibilitychange', this.onVisible);
  }
}
