// The client's state: users, chats with their messages and receipts,
// groups' members and roles, presence, relations, typing, the outbox of
// unacknowledged sends, and `last` (the highest update `seq` processed). Views subscribe to topics; a snapshot is
// kept in localStorage per user so the app opens offline with cached chats.

import { compareIds, maxId } from './format.js';
import { PresenceBook } from './presence.js';

const CACHE_PREFIX = 'parley.cache.';
const CACHE_VERSION = 1;
/** Messages per chat kept in the offline cache. */
const CACHED_MESSAGES = 100;
const SAVE_DELAY_MS = 400;

/** A member's receipt watermarks; "0" means none. */
const NO_RECEIPT = Object.freeze({ delivered: '0', seen: '0' });

export class Store {
  #listeners = new Map();
  #saveTimer = 0;
  #closed = false;

  constructor(me) {
    this.me = me;
    this.profile = null;
    /** @type {Map<string, object>} UserView by ID. */
    this.users = new Map();
    /** @type {Map<string, object>} chats by ID. */
    this.chats = new Map();
    /** @type {Map<string, string>} relation by user ID, from live updates. */
    this.relations = new Map();
    /** @type {Map<string, Map<string, number>>} typing users' expiry by chat. */
    this.typing = new Map();
    /** @type {Map<string, Map<string, object>>} a group's members (`{ role, joined_at }` by user ID), once loaded. */
    this.members = new Map();
    /** Presence of friends and fellow members (ephemeral: never cached). */
    this.presence = new PresenceBook();
    /** @type {Map<string, object>} unacknowledged sends by client_msg_id. */
    this.outbox = new Map();
    /** Highest update seq processed; null before the first `hello`. */
    this.last = null;
    /** `connecting`, `online`, `offline` or `stopped`. */
    this.connection = 'connecting';
    this.chatsLoaded = false;
  }

  // ---- subscriptions

  /** Calls `fn` whenever `topic` changes; returns the unsubscribe function. */
  on(topic, fn) {
    if (!this.#listeners.has(topic)) this.#listeners.set(topic, new Set());
    this.#listeners.get(topic).add(fn);
    return () => this.#listeners.get(topic)?.delete(fn);
  }

  emit(topic) {
    for (const fn of this.#listeners.get(topic) ?? []) fn();
    if (topic !== 'connection' && topic !== 'presence' && !topic.startsWith('typing')) this.#scheduleSave();
  }

  // ---- persistence

  static load(me) {
    const store = new Store(me);
    try {
      const raw = localStorage.getItem(CACHE_PREFIX + me);
      const data = raw && JSON.parse(raw);
      if (data?.v === CACHE_VERSION) store.#restore(data);
    } catch {
      localStorage.removeItem(CACHE_PREFIX + me);
    }
    return store;
  }

  #restore(data) {
    this.last = data.last ?? null;
    this.profile = data.profile ?? null;
    for (const user of data.users ?? []) this.users.set(user.id, user);
    for (const chat of data.chats ?? []) {
      this.chats.set(chat.id, {
        ...chat,
        receipts: new Map(chat.receipts ?? []),
        messages: new Map((chat.messages ?? []).map((m) => [m.id, m])),
      });
    }
    for (const entry of data.outbox ?? []) this.outbox.set(entry.client_msg_id, { ...entry, state: 'sending' });
    this.chatsLoaded = this.chats.size > 0;
  }

  #scheduleSave() {
    clearTimeout(this.#saveTimer);
    this.#saveTimer = setTimeout(() => this.save(), SAVE_DELAY_MS);
  }

  /** Writes the snapshot now (also called when the page is hidden). */
  save() {
    clearTimeout(this.#saveTimer);
    if (!this.me || this.#closed) return;
    const chats = [...this.chats.values()].map((chat) => ({
      ...chat,
      receipts: [...chat.receipts],
      messages: this.messagesOf(chat.id).slice(-CACHED_MESSAGES),
      // Older pages than the cached ones are fetched again from the newest cached.
      cursor: chat.messages.size > CACHED_MESSAGES ? undefined : chat.cursor,
    }));
    const data = {
      v: CACHE_VERSION,
      last: this.last,
      profile: this.profile,
      users: [...this.users.values()],
      chats,
      outbox: [...this.outbox.values()],
    };
    try {
      localStorage.setItem(CACHE_PREFIX + this.me, JSON.stringify(data));
    } catch {
      // Storage full or unavailable: the cache is an optimisation only.
    }
  }

  /** Stops writing the snapshot (the login ended; the caller forgets it). */
  close() {
    this.#closed = true;
    clearTimeout(this.#saveTimer);
  }

  /** Forgets everything (logout, or the server's log is not ours). */
  static forget(me) {
    if (me) localStorage.removeItem(CACHE_PREFIX + me);
  }

  // ---- users and profile

  setUser(user) {
    if (user?.id) this.users.set(user.id, { ...this.users.get(user.id), ...user });
  }

  user(id) {
    return this.users.get(id) ?? { id, username: '', display_name: 'Unknown user', bio: '', avatar: null };
  }

  setProfile(profile) {
    this.profile = profile;
    this.setUser(profile);
    this.emit('profile');
    this.emit('chats');
    // My own presence shows my choice.
    this.emit('presence');
  }

  // ---- chats

  /** Merges `GET /chats` (authoritative list, unread counts and receipts). */
  applyChatList(list) {
    const seen = new Set();
    for (const summary of list.chats) {
      this.clearRemoved(summary.id);
      this.applyChatSummary(summary, { quiet: true });
      seen.add(summary.id);
    }
    // A group the user was removed from stays, read-only, until they drop it.
    for (const [id, chat] of [...this.chats]) if (!seen.has(id) && !chat.removed) this.chats.delete(id);
    this.chatsLoaded = true;
    this.emit('chats');
    for (const id of seen) this.emit('chat:' + id);
  }

  applyChatSummary(summary, { quiet = false } = {}) {
    for (const member of summary.members) this.setUser(member);
    const chat = this.chats.get(summary.id) ?? {
      id: summary.id,
      messages: new Map(),
      receipts: new Map(),
      cursor: undefined,
    };
    chat.kind = summary.kind;
    if (summary.group) {
      // A group's summary lists no members: they come from the member list.
      chat.group = { ...summary.group };
      chat.name = summary.group.name;
      const members = this.members.get(summary.id);
      chat.memberIds = members ? [...members.keys()] : chat.memberIds ?? [];
    } else {
      chat.group = null;
      chat.name = null;
      chat.memberIds = summary.members.map((m) => m.id);
    }
    chat.unread = summary.unread ?? 0;
    for (const r of summary.receipts ?? []) {
      chat.receipts.set(r.user_id, { delivered: r.delivered_up_to, seen: r.seen_up_to });
    }
    if (summary.last_message) this.#noteLast(chat, summary.last_message);
    this.chats.set(chat.id, chat);
    if (!quiet) {
      this.emit('chats');
      this.emit('chat:' + chat.id);
    }
    return chat;
  }

  /** Chats, most recently active first. */
  chatList() {
    const activity = (chat) => chat.lastMessage?.id ?? '0';
    return [...this.chats.values()].sort((a, b) => compareIds(activity(b), activity(a)));
  }

  /** The other members of a chat (for a direct chat: the peer). */
  peersOf(chat) {
    return (chat.memberIds ?? []).filter((id) => id !== this.me).map((id) => this.user(id));
  }

  /** The name to show for a chat. */
  titleOf(chat) {
    if (chat.group?.name) return chat.group.name;
    if (chat.name) return chat.name;
    const peers = this.peersOf(chat);
    return peers.map((p) => p.display_name).join(', ') || 'Chat';
  }

  /** The direct chat with `userId`, if loaded. */
  directChatWith(userId) {
    return [...this.chats.values()].find((c) => c.kind === 'direct' && c.memberIds?.includes(userId));
  }

  // ---- messages

  /** A chat's stored messages in order (oldest first). */
  messagesOf(chatId) {
    const chat = this.chats.get(chatId);
    if (!chat) return [];
    return [...chat.messages.values()].sort((a, b) => compareIds(a.id, b.id));
  }

  /** Unacknowledged sends of a chat, oldest first. */
  pendingOf(chatId) {
    return [...this.outbox.values()].filter((p) => p.chat_id === chatId).sort((a, b) => a.created_at - b.created_at);
  }

  /**
   * Adds or refreshes messages. Returns false if the chat is unknown (the
   * caller loads the chat list). Counts unread for live messages of others.
   */
  addMessages(chatId, messages, { live = false } = {}) {
    // A message ends its sender's typing indicator, even in a chat not loaded yet.
    for (const message of messages) this.clearTyping(chatId, message.sender_id);
    const chat = this.chats.get(chatId);
    if (!chat) return false;
    for (const message of messages) {
      const fresh = !chat.messages.has(message.id);
      chat.messages.set(message.id, message);
      if (message.sender_id === this.me) this.outbox.delete(message.client_msg_id);
      const mySeen = chat.receipts.get(this.me)?.seen ?? '0';
      if (live && fresh && message.sender_id !== this.me && compareIds(message.id, mySeen) > 0) chat.unread += 1;
      this.#noteLast(chat, message);
    }
    this.emit('chat:' + chatId);
    this.emit('chats');
    return true;
  }

  #noteLast(chat, message) {
    if (!chat.lastMessage || compareIds(message.id, chat.lastMessage.id) >= 0) chat.lastMessage = message;
  }

  applyEdited(message) {
    const chat = this.chats.get(message.chat_id);
    if (!chat) return false;
    if (chat.messages.has(message.id)) chat.messages.set(message.id, message);
    if (chat.lastMessage?.id === message.id) chat.lastMessage = message;
    this.emit('chat:' + chat.id);
    this.emit('chats');
    return true;
  }

  applyDeleted({ chat_id, message_id, for_everyone }) {
    const chat = this.chats.get(chat_id);
    if (!chat) return false;
    const message = chat.messages.get(message_id);
    if (for_everyone) {
      if (message) chat.messages.set(message_id, { ...message, body: '', deleted: true });
      if (chat.lastMessage?.id === message_id) chat.lastMessage = { ...chat.lastMessage, body: '', deleted: true };
    } else {
      chat.messages.delete(message_id);
      if (chat.lastMessage?.id === message_id) chat.lastMessage = this.messagesOf(chat_id).at(-1) ?? null;
    }
    this.emit('chat:' + chat_id);
    this.emit('chats');
    return true;
  }

  applyReceipt({ chat_id, user_id, delivered_up_to, seen_up_to }) {
    const chat = this.chats.get(chat_id);
    if (!chat) return false;
    const before = chat.receipts.get(user_id) ?? NO_RECEIPT;
    chat.receipts.set(user_id, {
      delivered: maxId(before.delivered, delivered_up_to),
      seen: maxId(before.seen, seen_up_to),
    });
    if (user_id === this.me) chat.unread = this.#countUnread(chat);
    this.emit('chat:' + chat_id);
    this.emit('chats');
    return true;
  }

  #countUnread(chat) {
    const seen = chat.receipts.get(this.me)?.seen ?? '0';
    if (!chat.lastMessage || compareIds(chat.lastMessage.id, seen) <= 0) return 0;
    const newer = [...chat.messages.values()].filter(
      (m) => m.sender_id !== this.me && !m.deleted && compareIds(m.id, seen) > 0,
    ).length;
    return chat.messages.size > 0 ? newer : chat.unread;
  }

  /** My own receipts in a chat. */
  myReceipt(chatId) {
    return this.chats.get(chatId)?.receipts.get(this.me) ?? NO_RECEIPT;
  }

  /**
   * The state of my message: `sent`, `delivered` or `seen` (by every other
   * member; in a group, by all of them).
   */
  statusOf(chat, message) {
    if (chat.kind === 'group') {
      const others = Math.max(0, (chat.group?.member_count ?? 1) - 1);
      if (others === 0) return 'sent';
      const { seen, delivered } = this.readersOf(chat, message.id);
      if (seen >= others) return 'seen';
      if (delivered >= others) return 'delivered';
      return 'sent';
    }
    const others = (chat.memberIds ?? []).filter((id) => id !== this.me);
    if (others.length === 0) return 'sent';
    const all = (field) => others.every((id) => compareIds((chat.receipts.get(id) ?? NO_RECEIPT)[field], message.id) >= 0);
    if (all('seen')) return 'seen';
    if (all('delivered')) return 'delivered';
    return 'sent';
  }

  /**
   * How many other members are known to have a message (`delivered`) and
   * to have read it (`seen`), from their watermarks. In a group these come
   * from `receipt` updates about my messages and from message receipts
   * fetched over REST, so they are a lower bound.
   */
  readersOf(chat, messageId) {
    const members = this.members.get(chat.id);
    let seen = 0;
    let delivered = 0;
    for (const [userId, receipt] of chat.receipts) {
      if (userId === this.me || (members && !members.has(userId))) continue;
      if (compareIds(receipt.seen, messageId) >= 0) seen += 1;
      if (compareIds(receipt.delivered, messageId) >= 0 || compareIds(receipt.seen, messageId) >= 0) delivered += 1;
    }
    return { seen, delivered };
  }

  /** Folds a message's receipts (`{ delivered: [ids], seen: [ids] }`) into the members' watermarks. */
  applyMessageReceipts(chatId, messageId, { delivered = [], seen = [] }) {
    const chat = this.chats.get(chatId);
    if (!chat) return;
    const raise = (userId, field) => {
      const before = chat.receipts.get(userId) ?? NO_RECEIPT;
      chat.receipts.set(userId, { ...before, [field]: maxId(before[field], messageId) });
    };
    for (const id of delivered) raise(id, 'delivered');
    for (const id of seen) {
      raise(id, 'delivered');
      raise(id, 'seen');
    }
    this.emit('chat:' + chatId);
  }

  // ---- groups

  /** Records a group's member list (`GET /chats/{id}/members`). */
  setMembers(chatId, list) {
    const members = new Map();
    for (const member of list) {
      this.setUser(member.user);
      members.set(member.user.id, { role: member.role, joined_at: member.joined_at });
    }
    this.members.set(chatId, members);
    const chat = this.chats.get(chatId);
    if (chat) {
      chat.memberIds = [...members.keys()];
      if (chat.group) chat.group.member_count = members.size;
    }
    this.emit('members:' + chatId);
    this.emit('chat:' + chatId);
    this.emit('chats');
  }

  /** A group's members with their users, owner first, then admins, then by name; null until loaded. */
  membersOf(chatId) {
    const members = this.members.get(chatId);
    if (!members) return null;
    const rank = { owner: 0, admin: 1, member: 2 };
    return [...members]
      .map(([id, member]) => ({ ...member, user: this.user(id) }))
      .sort((a, b) => rank[a.role] - rank[b.role] || a.user.display_name.localeCompare(b.user.display_name));
  }

  /** My role in a group (`owner`, `admin`, `member`), or null. */
  myRole(chat) {
    return chat?.group && !chat.removed ? chat.group.role : null;
  }

  /** Back in a group the user had been removed from (added again). */
  clearRemoved(chatId) {
    const chat = this.chats.get(chatId);
    if (chat?.removed) chat.removed = null;
  }

  /** The user was removed from a group: it stays, read-only, until they drop it. */
  markRemoved(chatId, { by = null } = {}) {
    const chat = this.chats.get(chatId);
    if (!chat || chat.removed) return;
    chat.removed = { by };
    this.members.delete(chatId);
    this.typing.delete(chatId);
    this.emit('chat:' + chatId);
    this.emit('chats');
  }

  /** Forgets a chat on this device (the user left it, or dropped a group they were removed from). */
  dropChat(chatId) {
    if (!this.chats.delete(chatId)) return;
    this.members.delete(chatId);
    for (const [id, entry] of [...this.outbox]) if (entry.chat_id === chatId) this.outbox.delete(id);
    this.emit('chat:' + chatId);
    this.emit('chats');
  }

  // ---- presence

  /** Applies a `presence` frame's views. */
  applyPresence(users) {
    if (this.presence.apply(users)) this.emit('presence');
  }

  /**
   * A user's presence `{ status, status_text, last_seen }`, or null if
   * unknown. Mine follows my own choice while this device is connected.
   */
  presenceOf(userId) {
    if (userId === this.me) {
      const setting = this.profile?.presence ?? { status: 'auto', status_text: '' };
      const online = this.connection === 'online';
      const status = !online || setting.status === 'invisible' ? 'offline' : setting.status === 'auto' ? 'online' : setting.status;
      return { status, status_text: setting.status_text ?? '', last_seen: null };
    }
    return this.presence.get(userId);
  }

  // ---- outbox

  enqueue(entry) {
    this.outbox.set(entry.client_msg_id, entry);
    this.emit('chat:' + entry.chat_id);
  }

  updatePending(clientMsgId, patch) {
    const entry = this.outbox.get(clientMsgId);
    if (!entry) return;
    Object.assign(entry, patch);
    this.emit('chat:' + entry.chat_id);
  }

  // ---- relations

  applyRelation({ user_id, relation }) {
    this.relations.set(user_id, relation);
    this.emit('relations');
  }

  // ---- typing

  setTyping(chatId, userId, expiresInMs) {
    if (!this.typing.has(chatId)) this.typing.set(chatId, new Map());
    const until = Date.now() + expiresInMs;
    this.typing.get(chatId).set(userId, until);
    setTimeout(() => {
      if (this.typing.get(chatId)?.get(userId) === until) this.clearTyping(chatId, userId);
    }, expiresInMs);
    this.emit('typing:' + chatId);
    this.emit('typing');
  }

  clearTyping(chatId, userId) {
    if (this.typing.get(chatId)?.delete(userId)) {
      this.emit('typing:' + chatId);
      this.emit('typing');
    }
  }

  /** Users typing in a chat now. */
  typingIn(chatId) {
    const now = Date.now();
    return [...(this.typing.get(chatId) ?? new Map())].filter(([, until]) => until > now).map(([id]) => this.user(id));
  }

  // ---- connection

  setConnection(state) {
    if (this.connection === state) return;
    this.connection = state;
    // What the server said of others' presence holds only while this
    // device is connected: offline, nobody is shown online any more (the
    // snapshot after the next hello shows them again).
    if (state === 'offline' || state === 'stopped') {
      this.presence.clear();
      this.emit('presence');
    }
    this.emit('connection');
  }
}
