// Login state: the access token lives in memory only; the refresh token in
// localStorage, so a reload stays logged in. Refreshes rotate the refresh
// token, run one at a time across tabs (Web Locks), and happen silently a
// minute before the access token expires.

import { ApiError, call } from './api.js';

const REFRESH_KEY = 'parley.refresh_token';
const USER_KEY = 'parley.user_id';
/** Why the last login here ended, so other tabs can tell the user the same. */
const REASON_KEY = 'parley.ended';
/** Renew this long before the access token expires. */
const RENEW_BEFORE_MS = 60_000;
/** Treat a token this close to expiry as expired. */
const EXPIRY_MARGIN_MS = 5_000;
/** Wait before retrying a silent renewal that could not reach the server. */
const RENEW_RETRY_MS = 15_000;

/**
 * Dispatches `login` and `logout` (detail: `{ reason, userId }`) events. Reasons:
 * `logout` (this tab), `revoked` (logged out from another device),
 * `expired` (the server refused the refresh token), `reused` (a refresh
 * token was replayed), `elsewhere` (another tab logged out).
 */
export class Auth extends EventTarget {
  #access = null;
  #expiresAt = 0;
  #timer = 0;
  #refreshing = null;

  constructor() {
    super();
    // Another tab's login ended: follow it, for the same reason.
    window.addEventListener('storage', (event) => {
      if (event.key === REFRESH_KEY && !event.newValue && this.#access) this.end(endedElsewhere());
    });
  }

  /** The logged-in user's ID, or null. */
  get userId() {
    return localStorage.getItem(REFRESH_KEY) ? localStorage.getItem(USER_KEY) : null;
  }

  async register({ username, password, displayName }) {
    await call('/auth/register', { method: 'POST', body: { username, password, display_name: displayName } });
    await this.login({ username, password });
  }

  async login({ username, password }) {
    this.#accept(await call('/auth/login', { method: 'POST', body: { username, password } }));
    this.dispatchEvent(new CustomEvent('login'));
  }

  /** A valid access token, renewed first if it is missing or about to expire. */
  async accessToken() {
    if (!this.#access || Date.now() > this.#expiresAt - EXPIRY_MARGIN_MS) await this.refresh();
    return this.#access;
  }

  /** Rotates the refresh token for a new pair. One at a time, in this tab and across tabs. */
  refresh() {
    this.#refreshing ??= this.#locked(() => this.#rotate()).finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  async #locked(fn) {
    if (navigator.locks) return navigator.locks.request('parley-refresh', fn);
    return fn();
  }

  async #rotate() {
    // Read inside the lock: another tab may have just rotated it.
    const refreshToken = localStorage.getItem(REFRESH_KEY);
    if (!refreshToken) {
      this.end(endedElsewhere());
      throw new ApiError({ status: 401, code: 'refresh_token_invalid' });
    }
    try {
      this.#accept(await call('/auth/refresh', { method: 'POST', body: { refresh_token: refreshToken } }));
    } catch (error) {
      // The login is over (revoked from another device, expired, or replayed).
      if (error instanceof ApiError && error.status === 401) this.end(error.code === 'refresh_token_reused' ? 'reused' : 'expired');
      throw error;
    }
  }

  /** Ends this login on the server (best effort) and here. */
  async logout() {
    const refreshToken = localStorage.getItem(REFRESH_KEY);
    this.end('logout');
    if (refreshToken) {
      await call('/auth/logout', { method: 'POST', body: { refresh_token: refreshToken } }).catch(() => {});
    }
  }

  #accept(tokens) {
    this.#access = tokens.access_token;
    this.#expiresAt = Date.now() + tokens.expires_in * 1000;
    localStorage.setItem(REFRESH_KEY, tokens.refresh_token);
    localStorage.setItem(USER_KEY, tokens.user_id);
    localStorage.removeItem(REASON_KEY);
    this.#schedule(Math.max(EXPIRY_MARGIN_MS, tokens.expires_in * 1000 - RENEW_BEFORE_MS));
  }

  #schedule(delay) {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.refresh().catch((error) => {
        if (error instanceof ApiError && error.code === 'network') this.#schedule(RENEW_RETRY_MS);
      });
    }, delay);
  }

  /**
   * Forgets the login on this device (tokens; listeners drop the cached
   * chats), for `reason` (see the class comment). The server has ended it
   * already, or `logout` tells it. The one way every login here ends.
   */
  end(reason) {
    const wasLoggedIn = Boolean(this.#access || localStorage.getItem(REFRESH_KEY));
    const userId = localStorage.getItem(USER_KEY);
    clearTimeout(this.#timer);
    this.#access = null;
    this.#expiresAt = 0;
    if (localStorage.getItem(REFRESH_KEY)) localStorage.setItem(REASON_KEY, reason);
    localStorage.removeItem(REFRESH_KEY);
    if (wasLoggedIn) this.dispatchEvent(new CustomEvent('logout', { detail: { reason, userId } }));
  }
}

/** Why another tab's login ended (it says so before it removes the token). */
function endedElsewhere() {
  const reason = localStorage.getItem(REASON_KEY);
  return !reason || reason === 'logout' ? 'elsewhere' : reason;
}
