// One conversation: history that loads older pages as you scroll up, each
// message with its state (sending, sent, delivered, seen, failed), the
// typing indicator, message actions and the composer. In a group: sender
// names, group events as system lines, "seen by N" on my messages, the
// info panel (`group-view.js`) and a read-only view once removed.

import { h, reconcile } from '../dom.js';
import { eventText } from '../events.js';
import { clock, dayLabel, sameDay, utf8Bytes } from '../format.js';
import { icon } from '../icons.js';
import { presenceLabel } from '../presence.js';
import { GroupView } from './group-view.js';
import { MessageActions, showMessageInfo } from './message-actions.js';
import { avatar, chatAvatar, screenHeader, toast, toastError } from './ui.js';

/** Within this many pixels of the bottom, new messages keep the view pinned to the bottom. */
const STICK_PX = 80;
/** Messages of one sender closer than this form a run under one name. */
const RUN_GAP_MS = 5 * 60 * 1000;
/** A chat's newest page that failed to load is asked for again after 1 s, 2 s, … up to 30 s. */
const LOAD_RETRY_FIRST_MS = 1000;
const LOAD_RETRY_MAX_MS = 30_000;

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
    this.removedBar = h('div', { class: 'removed-bar', role: 'status', hidden: true });
    this.chatEl = h('section', { class: 'chat', 'aria-label': 'Conversation' }, this.header, this.scroller, this.typingRow, this.composer, this.removedBar);
    this.panelSlot = h('div', { class: 'panel-slot' });
    this.panel = null;
    this.infoWanted = false;
    this.el = h('div', { class: 'chat-wrap' }, this.chatEl, this.panelSlot);

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
    // "last seen 5 min ago" ages: look again every minute.
    this.clock = setInterval(() => this.#renderHeaderIfShown(), 60_000);
    document.addEventListener('visibilitychange', this.onVisible);
    this.unsubscribe = [
      this.store.on('chat:' + chatId, () => this.render()),
      this.store.on('chats', () => this.#ensureLoaded()),
      this.store.on('typing:' + chatId, () => this.#renderTyping()),
      // Back online: load what is missing, and report as read what was
      // shown while the socket was down (a report that could not be sent
      // then is not tried again by anything else).
      this.store.on('connection', () => {
        this.#ensureLoaded();
        this.#markSeen();
      }),
      this.store.on('presence', () => this.#renderHeaderIfShown()),
      this.store.on('members:' + chatId, () => this.render()),
      this.store.on('users', () => this.render()),
    ];
  }

  /** Opens or closes the group info panel (the `/chats/{id}/info` route). */
  setInfo(open) {
    const hadFocus = Boolean(this.panel?.el.contains(document.activeElement));
    this.infoWanted = open;
    this.#syncPanel();
    this.#renderHeaderIfShown();
    if (!open && hadFocus) this.header.querySelector('a[aria-label="Group info"]')?.focus({ preventScroll: true });
  }

  #syncPanel() {
    const want = this.infoWanted && Boolean(this.chat?.group);
    if (want && !this.panel) {
      this.panel = new GroupView(this.ctx, this.chatId);
      this.panelSlot.replaceChildren(this.panel.el);
      this.el.classList.add('with-panel');
      this.panel.mounted({ focus: this.el.isConnected });
    } else if (!want && this.panel) {
      this.panel.destroy();
      this.panel = null;
      this.panelSlot.replaceChildren();
      this.el.classList.remove('with-panel');
    }
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
    if (this.loadedLatest || !this.chat || this.chat.removed || this.store.connection === 'offline') return;
    this.loadedLatest = true;
    // A group's members give its senders their names and the header its count.
    if (this.chat.group) this.session.loadMembers(this.chatId).catch(() => {});
    this.session.loadLatest(this.chatId).then(() => {
      this.loadRetries = 0;
    }, (error) => {
      this.loadedLatest = false;
      if (error?.code !== 'network') return toastError(error);
      // The socket may stay up while a request fails: try again by itself,
      // backing off, as well as on the next reconnect or chat-list change.
      clearTimeout(this.loadTimer);
      const delay = Math.min(LOAD_RETRY_MAX_MS, LOAD_RETRY_FIRST_MS * 2 ** (this.loadRetries ?? 0));
      this.loadRetries = (this.loadRetries ?? 0) + 1;
      this.loadTimer = setTimeout(() => this.#ensureLoaded(), delay);
    });
  }

  render() {
    const chat = this.chat;
    if (!chat) {
      this.#renderMissing();
      return;
    }
    this.#renderRemoved(chat);
    this.#renderHeader(chat);
    this.#syncPanel();
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
    const group = Boolean(chat.group);
    let runOf = null;
    for (const message of store.messagesOf(chat.id)) {
      if (message.event) {
        const text = eventText(store, message);
        push(message.sent_at, {
          key: message.id,
          version: 'event|' + text,
          render: () => h('li', { class: 'msg-system', dataset: { id: message.id, event: message.event.type } }, h('span', {}, text, h('time', { datetime: new Date(message.sent_at).toISOString() }, ' · ' + clock(message.sent_at)))),
        });
        runOf = null;
        continue;
      }
      const mine = message.sender_id === store.me;
      const status = mine && !message.deleted ? store.statusOf(chat, message) : null;
      // In a group, a run of messages from one person starts with their name and picture.
      const startsRun = group && !mine && (!runOf || runOf.sender !== message.sender_id || message.sent_at - runOf.at > RUN_GAP_MS || !sameDay(runOf.at, message.sent_at));
      runOf = { sender: message.sender_id, at: message.sent_at };
      const sender = group && !mine ? store.user(message.sender_id) : null;
      const seenBy = group && mine && !message.deleted ? store.readersOf(chat, message.id).seen : null;
      push(message.sent_at, {
        key: message.id,
        version: [message.body, message.edited_at, message.deleted, status, seenBy, startsRun, sender?.display_name, JSON.stringify(sender?.avatar ?? null), this.store.myRole(chat)].join('|'),
        render: () => this.#message({ message, mine, status, group, sender, startsRun, seenBy }),
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

  #message({ message, mine, status, pending = null, group = false, sender = null, startsRun = false, seenBy = null }) {
    let statusEl = null;
    if (status && group && !pending) {
      // In a group my message tells how many have read it, and opens who.
      const label = seenBy > 0 ? `Seen by ${seenBy}` : STATUS_LABEL[status];
      statusEl = h(
        'button',
        { type: 'button', class: ['status', 'seen-by', status], 'aria-label': `${label}. Message info`, title: 'Message info', on: { click: () => showMessageInfo(this, message) } },
        icon(STATUS_ICON[status], { size: 16 }),
        seenBy > 0 ? h('span', {}, label) : null,
      );
    } else if (status) {
      statusEl = h('span', { class: ['status', status], role: 'img', 'aria-label': STATUS_LABEL[status], title: STATUS_LABEL[status] }, icon(STATUS_ICON[status], { size: 16 }));
    }
    const meta = h(
      'span',
      { class: 'msg-meta' },
      message.edited_at && !message.deleted ? h('span', { class: 'edited' }, 'edited') : null,
      h('time', { datetime: new Date(message.sent_at).toISOString() }, clock(message.sent_at)),
      statusEl,
    );
    const body = message.deleted
      ? h('p', { class: 'msg-body deleted' }, 'This message was deleted')
      : h('p', { class: 'msg-body' }, message.body);
    const failed = pending?.state === 'failed';
    const senderName = mine ? 'You' : this.store.user(message.sender_id).display_name;
    const hue = [...String(message.sender_id)].reduce((sum, c) => (sum * 31 + c.charCodeAt(0)) % 360, 7);
    const chat = this.chat;
    const removed = Boolean(chat?.removed);
    return h(
      'li',
      {
        class: ['msg', mine ? 'mine' : 'theirs', message.deleted && 'is-deleted', failed && 'failed', group && !mine && 'in-group', startsRun && 'run-start'],
        dataset: { status: status ?? '', id: message.id ?? '' },
        'aria-label': `${senderName}, ${clock(message.sent_at)}${status ? ', ' + STATUS_LABEL[status] : ''}`,
      },
      group && !mine ? (startsRun ? avatar(sender, { size: 32 }) : h('span', { class: 'avatar-gap', 'aria-hidden': 'true' })) : null,
      h(
        'div',
        { class: 'msg-main' },
        h(
          'div',
          { class: 'bubble' },
          startsRun ? h('span', { class: 'msg-sender', style: { '--hue': String(hue) } }, sender?.display_name ?? senderName) : null,
          body,
          meta,
        ),
        failed
          ? h(
              'div',
              { class: 'msg-failed' },
              h('span', { role: 'alert' }, pending.error ?? 'Not sent.'),
              pending.recovery === 'edit'
                ? h('button', { type: 'button', class: 'link-btn', on: { click: () => this.#editFailed(pending) } }, icon('edit', { size: 14 }), 'Edit')
                : h('button', { type: 'button', class: 'link-btn', on: { click: () => this.session.retry(pending.client_msg_id) } }, icon('retry', { size: 14 }), 'Retry'),
              h('button', { type: 'button', class: 'link-btn', on: { click: () => this.session.discard(pending.client_msg_id) } }, 'Discard'),
            )
          : null,
      ),
      !message.deleted && !pending && !removed
        ? h('button', { type: 'button', class: 'icon-btn msg-more', 'aria-label': 'Message actions', 'aria-haspopup': 'dialog', on: { click: () => this.actions.open(message) } }, icon('more', { size: 18 }))
        : null,
    );
  }

  #renderHeaderIfShown() {
    if (this.chat) this.#renderHeader(this.chat);
  }

  #renderHeader(chat) {
    const store = this.store;
    const typing = store.typingIn(chat.id);
    let line;
    let actions = [];
    if (chat.group) {
      const count = chat.group.member_count;
      const members = store.membersOf(chat.id);
      const online = members ? members.filter((m) => m.user.id !== store.me && ['online', 'busy', 'away'].includes(store.presenceOf(m.user.id)?.status)).length : 0;
      line = chat.removed ? 'You are no longer a member' : `${count} ${count === 1 ? 'member' : 'members'}${online ? `, ${online} online` : ''}`;
      if (typing.length) line = `${typing.map((u) => u.display_name).join(', ')} ${typing.length > 1 ? 'are' : 'is'} typing…`;
      actions = [
        h('a', { class: 'icon-btn', href: this.infoWanted ? `/chats/${chat.id}` : `/chats/${chat.id}/info`, 'data-link': '', 'aria-label': 'Group info', 'aria-expanded': String(this.infoWanted) }, icon('info', { size: 22 })),
      ];
    } else {
      const peer = store.peersOf(chat)[0];
      const presence = peer ? store.presenceOf(peer.id) : null;
      line = typing.length ? 'typing…' : presenceLabel(presence) ?? (peer ? '@' + peer.username : '');
    }
    const subtitle = h('p', { class: ['subtitle', typing.length && 'typing-text'], dataset: { presence: chat.group ? '' : store.presenceOf(store.peersOf(chat)[0]?.id)?.status ?? '' } }, line);
    const lead = chatAvatar(store, chat, { size: 40 });
    const key = [store.titleOf(chat), line, lead.outerHTML, this.infoWanted].join('|');
    if (this.headerKey === key) return;
    this.headerKey = key;
    this.header.replaceChildren(screenHeader({ title: store.titleOf(chat), back: '/', lead, subtitle, actions }));
  }

  #renderRemoved(chat) {
    if (!chat.removed) {
      this.composer.hidden = false;
      this.removedBar.hidden = true;
      return;
    }
    this.composer.hidden = true;
    this.removedBar.hidden = false;
    if (this.removedBar.dataset.by === String(chat.removed.by)) return;
    this.removedBar.dataset.by = String(chat.removed.by);
    const by = chat.removed.by ? this.store.user(chat.removed.by).display_name : null;
    const drop = h('button', { type: 'button', class: 'btn small ghost' }, icon('trash', { size: 16 }), 'Delete chat');
    drop.addEventListener('click', () => {
      this.store.dropChat(this.chatId);
      this.ctx.router.go('/');
    });
    this.removedBar.replaceChildren(h('p', {}, by ? `${by} removed you from this group.` : 'You are no longer a member of this group.'), drop);
  }

  #renderTyping() {
    if (this.chat?.removed) return;
    const names = this.store.typingIn(this.chatId).map((u) => u.display_name);
    this.typingRow.replaceChildren(
      ...(names.length ? [h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…`] : []),
    );
    if (this.chat) this.#renderHeader(this.chat);
  }

  #renderMissing() {
    this.composer.hidden = true;
    this.#syncPanel();
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
    if (document.visibilityState === 'visible' && this.chat && !this.chat.removed) this.session.markSeen(this.chatId);
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

  /** A message the server cannot take as it is: its text goes back to the composer to be fixed and sent anew. */
  #editFailed(pending) {
    if (this.editing) this.stopEditing();
    this.session.discard(pending.client_msg_id);
    const draft = this.input.value.trim();
    this.input.value = draft ? `${pending.body}\n${draft}` : pending.body;
    this.#autosize();
    this.input.focus();
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
    clearInterval(this.clock);
    clearTimeout(this.loadTimer);
    this.panel?.destroy();
    for (const off of this.unsubscribe) off();
    this.observer.disconnect();
    document.removeEventListener('visibilitychange', this.onVisible);
  }
}
