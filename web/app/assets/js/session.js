// The protocol session (`parley.v1`) on top of the socket: hello and gap
// detection with `sync` (the per-user `seq`), the outbox of sends resent
// with the same client_msg_id until acknowledged, edits and deletions,
// typing, delivered/seen receipts, group events (the chat and its members
// refetched), presence frames and this device's idle reports.

import { ApiError } from './api.js';
import { eventUsers } from './events.js';
import { compareIds, newClientId } from './format.js';
import { IdleReporter } from './presence.js';
import { Socket } from './socket.js';

/** A send not acknowledged within this long shows as failed (and is resent on reconnect). */
const ACK_TIMEOUT_MS = 10_000;
/** An edit or delete not answered within this long fails. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Send `typing` at most this often per chat while the user types. */
const TYPING_EVERY_MS = 3_000;

/**
 * How a failed send can be recovered (`entry.recovery`):
 * - `auto`: a transient failure (no ack in time, `internal`, a code newer
 *   than this client): resent by itself after reconnecting; Retry sends now.
 * - `retry`: the server refused it for now (`forbidden` across a block,
 *   `chat_not_found`): only the user's Retry sends it again, once the
 *   condition may have changed (unblocked, added back).
 * - `edit`: this text can never be sent as it is (`invalid_field`,
 *   `frame_too_large`, ...): Edit puts it back in the composer.
 */
const RECOVERY = {
  forbidden: 'retry',
  chat_not_found: 'retry',
  invalid_field: 'edit',
  frame_too_large: 'edit',
  bad_frame: 'edit',
  client_msg_id_conflict: 'edit',
};

const SEND_ERRORS = {
  chat_not_found: 'This chat no longer exists, or you are no longer in it.',
  invalid_field: 'This message cannot be sent. Edit it and try again.',
  frame_too_large: 'This message is too long. Edit it and try again.',
};

export class Session extends EventTarget {
  #syncing = false;
  #gapWhileSyncing = false;
  #requests = new Map();
  #ackTimers = new Map();
  #typingSent = new Map();
  #reported = new Map();
  #chatsTimer = 0;
  #chatTimers = new Map();
  #membersLoading = new Map();
  #usersLoading = new Set();

  constructor({ store, api, auth }) {
    super();
    this.store = store;
    this.api = api;
    this.limits = { max_body_bytes: 16384 };
    this.socket = new Socket({
      ticket: () => api.wsTicket(),
      isFatal: (error) => error instanceof ApiError && error.status === 401 && error.code !== 'unauthorized',
    });
    this.socket.addEventListener('state', (e) => store.setConnection(e.detail.state));
    this.socket.addEventListener('frame', (e) => this.#onFrame(e.detail));
    this.socket.addEventListener('tokenexpired', () => auth.refresh().catch(() => {}));
    // Logged out from another device: the login is over here too (`main.js` shows the login screen).
    this.socket.addEventListener('revoked', () => auth.end('revoked'));
    this.idle = new IdleReporter({ send: (idle) => this.socket.send({ type: 'activity', idle }) });
  }

  start() {
    this.idle.start();
    this.socket.start();
  }

  stop() {
    this.idle.stop();
    this.socket.stop();
    for (const timer of this.#chatTimers.values()) clearTimeout(timer);
    for (const timer of this.#ackTimers.values()) clearTimeout(timer);
    for (const { reject, timer } of this.#requests.values()) {
      clearTimeout(timer);
      reject(new Error('logged out'));
    }
  }

  // ---- incoming frames

  #onFrame(frame) {
    switch (frame.type) {
      case 'hello':
        return this.#onHello(frame);
      case 'update':
        return this.#onUpdate(frame);
      case 'synced':
        return this.#onSynced(frame);
      case 'ack':
        return this.#onAck(frame);
      case 'error':
        return this.#onError(frame);
      case 'done':
        return this.#settle(frame.request_id, null);
      case 'typing':
        return this.store.setTyping(frame.chat_id, frame.user_id, frame.expires_in_ms);
      case 'presence':
        return this.store.applyPresence(frame.users);
      default:
        return undefined; // `pong` and frames newer than this client.
    }
  }

  #onHello(hello) {
    this.limits = hello.limits ?? this.limits;
    this.#syncing = false;
    this.#gapWhileSyncing = false;
    this.#reported.clear();
    const store = this.store;
    if (store.last === null || hello.seq < store.last) {
      // A new device (or a log that is not the one we cached): start from
      // now; the chat list and history come over REST.
      if (store.last !== null) store.chats.clear();
      store.last = hello.seq;
    } else if (hello.seq > store.last) {
      this.#sync(store.last);
    }
    this.loadChats();
    this.idle.connected();
    for (const entry of store.outbox.values()) {
      if (entry.state === 'sending' || entry.recovery === 'auto') this.#transmit(entry);
    }
  }

  #onUpdate({ seq, update }) {
    const store = this.store;
    if (seq <= store.last) return;
    if (seq !== store.last + 1) {
      if (this.#syncing) this.#gapWhileSyncing = true;
      else this.#sync(store.last);
      return;
    }
    this.#apply(update);
    store.last = seq;
  }

  #onSynced({ seq, has_more }) {
    this.#syncing = false;
    if (has_more) this.#sync(seq);
    else if (this.#gapWhileSyncing) this.#sync(this.store.last);
    this.#gapWhileSyncing = false;
  }

  #sync(afterSeq) {
    this.#syncing = this.socket.send({ type: 'sync', after_seq: afterSeq });
  }

  #apply(update) {
    const store = this.store;
    let known = true;
    switch (update.kind) {
      case 'message':
        known = store.addMessages(update.message.chat_id, [update.message], { live: true });
        if (update.message.event) known = this.#onEvent(update.message, known);
        if (known) this.#afterNewMessages(update.message.chat_id);
        break;
      case 'edited':
        known = store.applyEdited(update.message);
        break;
      case 'deleted':
        known = store.applyDeleted(update);
        break;
      case 'receipt':
        known = store.applyReceipt(update);
        break;
      case 'relation':
        store.applyRelation(update);
        break;
      default:
        break; // A kind newer than this client: skipped, its seq still counts.
    }
    // An update for a chat we do not know means a new chat: load the list.
    if (!known) this.loadChats();
  }

  /**
   * A change to a group (an event message): the chat and, if loaded, its
   * members are fetched again. Being removed is the last thing a member
   * hears of a group; leaving (from any device) drops it here.
   */
  #onEvent(message, known) {
    const store = this.store;
    const { chat_id: chatId, event } = message;
    this.resolveUsers(eventUsers(message));
    if (event.type === 'member_removed' && event.user_id === store.me) {
      store.markRemoved(chatId, { by: message.sender_id });
      return true;
    }
    if (event.type === 'member_left' && message.sender_id === store.me) {
      store.dropChat(chatId);
      return true;
    }
    const joined = event.type === 'created' || (event.type === 'members_added' && event.members?.includes(store.me));
    if (joined) store.clearRemoved(chatId);
    if (!known) return false;
    this.refreshChat(chatId);
    if (store.members.has(chatId)) this.loadMembers(chatId).catch(() => {});
    return true;
  }

  #onAck({ client_msg_id, message }) {
    clearTimeout(this.#ackTimers.get(client_msg_id));
    this.#ackTimers.delete(client_msg_id);
    this.store.addMessages(message.chat_id, [message]);
  }

  #onError(error) {
    if (error.client_msg_id) return this.#sendFailed(error);
    if (error.request_id) return this.#settle(error.request_id, error);
    if (error.code === 'chat_not_found') this.loadChats();
    return undefined;
  }

  #sendFailed(error) {
    const id = error.client_msg_id;
    clearTimeout(this.#ackTimers.get(id));
    this.#ackTimers.delete(id);
    const entry = this.store.outbox.get(id);
    if (!entry) return;
    if (error.code === 'rate_limited') {
      setTimeout(() => this.#transmit(entry), error.retry_after_ms ?? 1000);
      return;
    }
    const recovery = RECOVERY[error.code] ?? 'auto';
    this.store.updatePending(id, {
      state: 'failed',
      recovery,
      error: SEND_ERRORS[error.code] ?? (recovery === 'auto' ? 'Not sent: the server had a problem.' : sentence(error, 'This message was not sent.')),
    });
  }

  // ---- chats over REST

  /** Reloads the chat list (coalesced). */
  loadChats() {
    clearTimeout(this.#chatsTimer);
    this.#chatsTimer = setTimeout(async () => {
      try {
        this.store.applyChatList(await this.api.chats());
        for (const chat of this.store.chats.values()) this.#afterNewMessages(chat.id);
        // Group previews name the sender (or the people an event names).
        const ids = [];
        for (const chat of this.store.chats.values()) {
          if (chat.group && chat.lastMessage) ids.push(...eventUsers(chat.lastMessage));
        }
        this.resolveUsers(ids);
      } catch (error) {
        this.dispatchEvent(new CustomEvent('error', { detail: error }));
      }
    }, 50);
  }

  /** Fetches one chat's summary again (coalesced per chat); a 404 means the user is no longer in it. */
  refreshChat(chatId) {
    clearTimeout(this.#chatTimers.get(chatId));
    this.#chatTimers.set(
      chatId,
      setTimeout(async () => {
        this.#chatTimers.delete(chatId);
        try {
          const summary = await this.api.chat(chatId);
          if (!this.store.chats.get(chatId)?.removed) this.store.applyChatSummary(summary);
        } catch (error) {
          if (error?.code === 'chat_not_found') this.store.markRemoved(chatId);
        }
      }, 50),
    );
  }

  /** Loads a group's members and roles (one request at a time per chat). */
  loadMembers(chatId) {
    const running = this.#membersLoading.get(chatId);
    if (running) {
      running.again = true;
      return running.promise;
    }
    const entry = { again: false, promise: null };
    entry.promise = (async () => {
      try {
        do {
          entry.again = false;
          const list = await this.api.members(chatId);
          if (this.store.chats.get(chatId)?.removed) return;
          this.store.setMembers(chatId, list.members);
        } while (entry.again);
      } catch (error) {
        if (error?.code === 'chat_not_found') this.store.markRemoved(chatId);
        throw error;
      } finally {
        this.#membersLoading.delete(chatId);
      }
    })();
    this.#membersLoading.set(chatId, entry);
    return entry.promise;
  }

  /** Loads the names of users this device has not met (former members, people named by events). */
  resolveUsers(ids) {
    const unknown = [...new Set(ids)].filter((id) => id && !this.store.users.has(id) && !this.#usersLoading.has(id));
    if (!unknown.length) return;
    for (const id of unknown) this.#usersLoading.add(id);
    Promise.allSettled(unknown.map((id) => this.api.user(id))).then((results) => {
      for (const result of results) if (result.status === 'fulfilled') this.store.setUser(result.value);
      for (const id of unknown) this.#usersLoading.delete(id);
      if (results.some((r) => r.status === 'fulfilled')) {
        this.store.emit('users');
        this.store.emit('chats');
      }
    });
  }

  /** Who has received and read one of my group messages; also raises the members' known watermarks. */
  async messageReceipts(chatId, messageId) {
    const receipts = await this.api.messageReceipts(chatId, messageId);
    this.store.applyMessageReceipts(chatId, messageId, receipts);
    this.resolveUsers([...receipts.delivered, ...receipts.seen]);
    return receipts;
  }

  /** Loads the newest page of a chat (merged with what is cached). */
  async loadLatest(chatId) {
    let page;
    try {
      page = await this.api.history(chatId);
    } catch (error) {
      if (error?.code === 'chat_not_found' && this.store.chats.get(chatId)?.group) {
        this.store.markRemoved(chatId);
        return;
      }
      throw error;
    }
    const chat = this.store.chats.get(chatId);
    if (!chat) return;
    if (chat.cursor === undefined) chat.cursor = page.next_before;
    this.store.addMessages(chatId, page.messages);
    this.#afterNewMessages(chatId);
    if (chat.group) this.#afterGroupPage(chatId, page.messages);
  }

  /**
   * A group page: names for its senders and events, and, since a group's
   * summary carries only my own receipts, who has read my newest message.
   */
  #afterGroupPage(chatId, messages) {
    this.resolveUsers(messages.flatMap((m) => (m.event ? eventUsers(m) : [m.sender_id])));
    const mine = messages.filter((m) => m.sender_id === this.store.me && !m.event && !m.deleted);
    const newest = mine.reduce((a, b) => (!a || compareIds(b.id, a.id) > 0 ? b : a), null);
    if (newest) this.messageReceipts(chatId, newest.id).catch(() => {});
  }

  /** Loads the next older page; false when the start of the chat is reached. */
  async loadOlder(chatId) {
    const chat = this.store.chats.get(chatId);
    if (!chat || chat.cursor === null) return false;
    const oldest = this.store.messagesOf(chatId)[0]?.id;
    const before = chat.cursor ?? oldest;
    const page = await this.api.history(chatId, { before });
    chat.cursor = page.next_before;
    this.store.addMessages(chatId, page.messages);
    if (chat.group) this.resolveUsers(page.messages.flatMap((m) => (m.event ? eventUsers(m) : [m.sender_id])));
    return chat.cursor !== null;
  }

  // ---- sending

  /** Sends a message: shown at once, resent with the same ID until acknowledged. */
  send(chatId, body) {
    const entry = {
      client_msg_id: newClientId(),
      chat_id: chatId,
      body,
      sender_id: this.store.me,
      created_at: Date.now(),
      state: 'sending',
      recovery: 'auto',
      error: null,
    };
    this.store.enqueue(entry);
    this.#transmit(entry);
    this.#typingSent.delete(chatId);
  }

  /** Retries a failed send with its original client_msg_id (reconnecting now if offline). */
  retry(clientMsgId) {
    const entry = this.store.outbox.get(clientMsgId);
    if (!entry) return;
    this.store.updatePending(clientMsgId, { recovery: 'auto' });
    this.#transmit(entry);
    if (!this.socket.isOpen) this.socket.reconnectNow();
  }

  /** Gives up on a failed send. */
  discard(clientMsgId) {
    const entry = this.store.outbox.get(clientMsgId);
    if (!entry) return;
    this.store.outbox.delete(clientMsgId);
    this.store.emit('chat:' + entry.chat_id);
  }

  #transmit(entry) {
    if (!this.store.outbox.has(entry.client_msg_id)) return;
    this.store.updatePending(entry.client_msg_id, { state: 'sending', error: null });
    this.socket.send({ type: 'send', client_msg_id: entry.client_msg_id, chat_id: entry.chat_id, body: entry.body });
    clearTimeout(this.#ackTimers.get(entry.client_msg_id));
    this.#ackTimers.set(
      entry.client_msg_id,
      setTimeout(() => {
        this.#ackTimers.delete(entry.client_msg_id);
        this.store.updatePending(entry.client_msg_id, {
          state: 'failed',
          recovery: 'auto',
          error: this.socket.isOpen ? 'Not sent yet: no answer from the server.' : 'Not sent yet: no connection.',
        });
      }, ACK_TIMEOUT_MS),
    );
  }

  edit(chatId, messageId, body) {
    return this.#request({ type: 'edit', chat_id: chatId, message_id: messageId, body });
  }

  delete(chatId, messageId, forEveryone) {
    return this.#request({ type: 'delete', chat_id: chatId, message_id: messageId, for_everyone: forEveryone });
  }

  #request(frame) {
    const request_id = newClientId();
    return new Promise((resolve, reject) => {
      if (!this.socket.send({ ...frame, request_id })) {
        reject(new Error("You're offline. Try again when connected."));
        return;
      }
      const timer = setTimeout(() => this.#settle(request_id, { message: 'No answer from the server. Try again.' }), REQUEST_TIMEOUT_MS);
      this.#requests.set(request_id, { resolve, reject, timer });
    });
  }

  #settle(requestId, error) {
    const pending = this.#requests.get(requestId);
    if (!pending) return;
    this.#requests.delete(requestId);
    clearTimeout(pending.timer);
    if (error) pending.reject(new Error(requestError(error)));
    else pending.resolve();
  }

  /** Call on every keystroke in a chat's composer; sends `typing` every ~3 s. */
  typing(chatId) {
    const now = Date.now();
    if (now - (this.#typingSent.get(chatId) ?? 0) < TYPING_EVERY_MS) return;
    if (this.socket.send({ type: 'typing', chat_id: chatId })) this.#typingSent.set(chatId, now);
  }

  // ---- receipts

  /** Reports that this device has a chat's newest message (delivered). */
  #afterNewMessages(chatId) {
    const newest = this.#newestFromOthers(chatId);
    if (newest) this.#report('received', chatId, newest, this.store.myReceipt(chatId).delivered);
    this.dispatchEvent(new CustomEvent('messages', { detail: { chatId } }));
  }

  /** Reports that the user has read a chat up to its newest message. */
  markSeen(chatId) {
    const newest = this.#newestFromOthers(chatId);
    if (newest) this.#report('seen', chatId, newest, this.store.myReceipt(chatId).seen);
  }

  #newestFromOthers(chatId) {
    const chat = this.store.chats.get(chatId);
    const last = chat?.lastMessage;
    return last && last.sender_id !== this.store.me ? last.id : this.store.messagesOf(chatId).filter((m) => m.sender_id !== this.store.me).at(-1)?.id;
  }

  #report(type, chatId, messageId, known) {
    if (this.store.chats.get(chatId)?.removed) return;
    const key = type + ':' + chatId;
    if (compareIds(messageId, known) <= 0 || compareIds(messageId, this.#reported.get(key) ?? '0') <= 0) return;
    if (this.socket.send({ type, chat_id: chatId, message_id: messageId })) this.#reported.set(key, messageId);
  }
}

/** An error frame's message as a sentence, without the code it repeats ("forbidden: this user …" → "This user …."). */
function sentence({ code = '', message = '' }, fallback) {
  const prefix = code.replace(/_/g, ' ') + ': ';
  const text = message.toLowerCase().startsWith(prefix) ? message.slice(prefix.length) : message;
  return text ? text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? '' : '.') : fallback;
}

function requestError(error) {
  switch (error.code) {
    case 'edit_closed':
      return 'This message can no longer be changed.';
    case 'message_not_found':
      return 'This message no longer exists.';
    case 'forbidden':
      return "You can't do that in this chat.";
    default:
      return sentence(error, 'That did not work.');
  }
}
