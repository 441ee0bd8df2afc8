// The REST client: JSON over fetch, RFC 9457 problems as `ApiError`s, and
// the bearer token from `Auth` (renewed and retried once on a 401).

export const API = '/api/v1';

/** A failed request: the server's problem (`code`, `detail`) or a network failure (`code: 'network'`). */
export class ApiError extends Error {
  constructor({ status = 0, code = 'network', title = '', detail = null, retryAfter = null } = {}) {
    super(detail || title || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.title = title;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }

  /** A sentence to show the user. */
  get userMessage() {
    return describe(this);
  }
}

const MESSAGES = {
  network: "Can't reach the server. Check your connection.",
  invalid_credentials: 'Wrong username or password.',
  username_taken: 'That username is taken. Try another one.',
  refresh_token_invalid: 'Your session has ended. Please log in again.',
  refresh_token_reused: 'Your session was ended for safety. Please log in again.',
  internal: 'The server had a problem. Please try again.',
  forbidden: "You don't have permission to do that.",
  chat_not_found: 'This chat no longer exists, or you are no longer in it.',
  not_a_friend: 'Only your friends can be added to a group.',
  already_member: 'That person is already in the group.',
  not_a_member: 'That person is no longer in the group.',
  group_full: 'The group is full.',
  too_many_groups: 'Someone you picked is in as many groups as allowed.',
  owner_must_transfer: 'You own this group: make another member the owner before leaving.',
};

function describe(error) {
  if (error.code === 'rate_limited') {
    return `Too many attempts. Try again in ${error.retryAfter ?? 'a few'} seconds.`;
  }
  const known = MESSAGES[error.code];
  if (known) return known;
  if (error.detail) return capitalize(error.detail) + (/[.!?]$/.test(error.detail) ? '' : '.');
  return error.title || 'Something went wrong.';
}

function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/**
 * One request. `body`: an object (sent as JSON) or a Blob (sent raw).
 * Resolves to the decoded JSON (null for an empty body); rejects with `ApiError`.
 */
export async function call(path, { method = 'GET', body, token, signal } = {}) {
  const headers = {};
  let payload;
  if (body instanceof Blob) {
    payload = body;
    headers['content-type'] = body.type || 'application/octet-stream';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(API + path, { method, headers, body: payload, signal, cache: 'no-store' });
  } catch (cause) {
    if (cause?.name === 'AbortError') throw cause;
    throw new ApiError({ code: 'network' });
  }
  const text = await response.text().catch(() => '');
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!response.ok) {
    throw new ApiError({
      status: response.status,
      code: json?.code ?? (response.status >= 500 ? 'internal' : 'http_' + response.status),
      title: json?.title ?? response.statusText,
      detail: json?.detail ?? null,
      retryAfter: json?.retry_after ?? (Number(response.headers.get('retry-after')) || null),
    });
  }
  return json;
}

/** The authenticated API: every endpoint of `/api/v1` the client uses. */
export class Api {
  constructor(auth) {
    this.auth = auth;
  }

  /** A bearer request; on `401 unauthorized` renews the token once and retries. */
  async authed(path, options = {}) {
    const token = await this.auth.accessToken();
    try {
      return await call(path, { ...options, token });
    } catch (error) {
      if (!(error instanceof ApiError) || error.code !== 'unauthorized') throw error;
      await this.auth.refresh();
      return call(path, { ...options, token: await this.auth.accessToken() });
    }
  }

  /** Ends every other login of this user at once: `{ sessions_ended }`. */
  logoutOthers() {
    return this.authed('/auth/logout-others', { method: 'POST' });
  }

  wsTicket() {
    return this.authed('/auth/ws-ticket', { method: 'POST' });
  }

  me() {
    return this.authed('/me');
  }
  updateMe(patch) {
    return this.authed('/me', { method: 'PATCH', body: patch });
  }
  putAvatar(blob) {
    return this.authed('/me/avatar', { method: 'PUT', body: blob });
  }
  deleteAvatar() {
    return this.authed('/me/avatar', { method: 'DELETE' });
  }
  /** `channel`: `email` or `phone`. */
  requestContact(channel, value) {
    return this.authed(`/me/${channel}`, { method: 'POST', body: { [channel]: value } });
  }
  confirmContact(channel, code) {
    return this.authed(`/me/${channel}/confirm`, { method: 'POST', body: { code } });
  }
  removeContact(channel) {
    return this.authed(`/me/${channel}`, { method: 'DELETE' });
  }

  user(userId) {
    return this.authed(`/users/${userId}`);
  }
  searchUsers(q, { limit = 20 } = {}) {
    return this.authed(`/users/search?${new URLSearchParams({ q, limit })}`);
  }

  /** `list`: `friends`, `incoming`, `outgoing` or `blocks`. */
  relationPage(list, { after, limit = 100 } = {}) {
    const path = { friends: '/friends', incoming: '/friends/requests/incoming', outgoing: '/friends/requests/outgoing', blocks: '/blocks' }[list];
    const query = new URLSearchParams({ limit });
    if (after) query.set('after', after);
    return this.authed(`${path}?${query}`);
  }
  requestFriend(userId) {
    return this.authed('/friends/requests', { method: 'POST', body: { user_id: userId } });
  }
  cancelRequest(userId) {
    return this.authed(`/friends/requests/${userId}`, { method: 'DELETE' });
  }
  acceptRequest(userId) {
    return this.authed(`/friends/requests/${userId}/accept`, { method: 'POST' });
  }
  declineRequest(userId) {
    return this.authed(`/friends/requests/${userId}/decline`, { method: 'POST' });
  }
  removeFriend(userId) {
    return this.authed(`/friends/${userId}`, { method: 'DELETE' });
  }
  block(userId) {
    return this.authed(`/blocks/${userId}`, { method: 'PUT' });
  }
  unblock(userId) {
    return this.authed(`/blocks/${userId}`, { method: 'DELETE' });
  }

  chats() {
    return this.authed('/chats');
  }
  openDirectChat(userId) {
    return this.authed('/chats/direct', { method: 'POST', body: { user_id: userId } });
  }
  chat(chatId) {
    return this.authed(`/chats/${chatId}`);
  }
  history(chatId, { before, limit = 50 } = {}) {
    const query = new URLSearchParams({ limit });
    if (before) query.set('before', before);
    return this.authed(`/chats/${chatId}/messages?${query}`);
  }

  // ---- groups

  createGroup(name, members) {
    return this.authed('/chats/groups', { method: 'POST', body: { name, members } });
  }
  renameGroup(chatId, name) {
    return this.authed(`/chats/${chatId}`, { method: 'PATCH', body: { name } });
  }
  putGroupAvatar(chatId, blob) {
    return this.authed(`/chats/${chatId}/avatar`, { method: 'PUT', body: blob });
  }
  deleteGroupAvatar(chatId) {
    return this.authed(`/chats/${chatId}/avatar`, { method: 'DELETE' });
  }
  members(chatId) {
    return this.authed(`/chats/${chatId}/members`);
  }
  addMembers(chatId, members) {
    return this.authed(`/chats/${chatId}/members`, { method: 'POST', body: { members } });
  }
  /** Removes a member; naming yourself leaves the group. */
  removeMember(chatId, userId) {
    return this.authed(`/chats/${chatId}/members/${userId}`, { method: 'DELETE' });
  }
  /** `role`: `admin` or `member`. */
  setRole(chatId, userId, role) {
    return this.authed(`/chats/${chatId}/members/${userId}/role`, { method: 'PUT', body: { role } });
  }
  transferOwnership(chatId, userId) {
    return this.authed(`/chats/${chatId}/owner`, { method: 'POST', body: { user_id: userId } });
  }
  /** Who has received and read a message: `{ delivered: [ids], seen: [ids] }`. */
  messageReceipts(chatId, messageId) {
    return this.authed(`/chats/${chatId}/messages/${messageId}/receipts`);
  }

  // ---- presence

  /** `status`: `auto`, `away`, `busy` or `invisible`; `status_text` at most 100 characters. */
  setPresence(status, statusText) {
    return this.authed('/me/presence', { method: 'PUT', body: { status, status_text: statusText } });
  }
}
