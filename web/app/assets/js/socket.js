// The WebSocket transport: one connection at a time, authenticated with a
// one-time ticket, kept alive with application pings, and re-opened after
// any drop with exponential backoff and jitter. It knows nothing of the
// protocol's meaning; `session.js` does.

const SUBPROTOCOL = 'parley.v1';
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** Send an application ping after this much silence (the server's idle timeout is 60 s). */
const PING_AFTER_MS = 25_000;
/** Give up on a connection that stays silent this long after a ping. */
const PONG_TIMEOUT_MS = 10_000;
/** Close codes after which reconnecting at once would only repeat the failure. */
const SLOW_RETRY_CODES = new Set([1002, 4029]);
const TOKEN_EXPIRED = 4001;
/** This login was ended from another device: never reconnect. */
const SESSION_REVOKED = 4003;
/** Cluster: the user's shard is served by (or moved to) another node; a fresh ticket names it. */
const MOVED = 4010;

/**
 * Events: `state` (detail: `{ state, retryInMs }`, state is `connecting`,
 * `online`, `offline` or `stopped`), `frame` (detail: the parsed server
 * frame), `tokenexpired`, `revoked` (the login was ended elsewhere; it
 * stops), `fatal` (detail: the error that stops it).
 */
export class Socket extends EventTarget {
  #ws = null;
  #connecting = false;
  #running = false;
  #attempt = 0;
  #retryTimer = 0;
  #watchdog = 0;
  #lastHeard = 0;
  #pingSent = 0;

  /**
   * `ticket`: async () => a fresh `{ ticket, url }` from `POST /auth/ws-ticket`
   * (`url`, in a cluster, is the node to connect to; absent: this origin);
   * `isFatal(error)`: stop instead of retrying.
   */
  constructor({ ticket, isFatal = () => false }) {
    super();
    this.ticket = ticket;
    this.isFatal = isFatal;
    window.addEventListener('online', () => this.reconnectNow());
    // The device lost its network: the socket is dead even if no close has come yet.
    window.addEventListener('offline', () => {
      if (!this.#running || !this.#ws) return;
      this.#drop(4000, 'offline');
      this.#retryLater();
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.reconnectNow();
    });
  }

  get isOpen() {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  start() {
    if (this.#running) return;
    this.#running = true;
    this.#connect();
  }

  /** Closes for good (logout): code 1000, no reconnect. */
  stop() {
    this.#running = false;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#watchdog);
    this.#drop(1000, 'logout');
    this.#state('stopped');
  }

  /** Sends a frame; false if the socket is not open (the caller keeps it for later). */
  send(frame) {
    if (!this.isOpen) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  /** Skips the backoff wait (the network came back, the app became visible). */
  reconnectNow() {
    if (!this.#running || this.#ws || this.#connecting) return;
    clearTimeout(this.#retryTimer);
    this.#attempt = 0;
    this.#connect();
  }

  async #connect() {
    clearTimeout(this.#retryTimer);
    this.#state('connecting');
    this.#connecting = true;
    let ticket;
    try {
      ticket = await this.ticket();
    } catch (error) {
      this.#connecting = false;
      if (this.isFatal(error)) {
        this.#running = false;
        this.#state('stopped');
        this.dispatchEvent(new CustomEvent('fatal', { detail: error }));
      } else {
        this.#retryLater();
      }
      return;
    }
    this.#connecting = false;
    if (!this.#running) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const endpoint = ticket.url || `${scheme}//${location.host}/api/v1/ws`;
    const ws = new WebSocket(`${endpoint}?ticket=${encodeURIComponent(ticket.ticket)}`, SUBPROTOCOL);
    this.#ws = ws;
    ws.onopen = () => {
      if (ws.protocol !== SUBPROTOCOL) {
        this.#drop(1002, 'subprotocol');
        this.#retryLater(BACKOFF_MAX_MS);
        return;
      }
      this.#heard();
      this.#startWatchdog();
    };
    ws.onmessage = (event) => {
      this.#heard();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === 'hello') {
        this.#attempt = 0;
        this.#state('online');
      }
      this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    };
    ws.onclose = (event) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      clearInterval(this.#watchdog);
      if (!this.#running) return;
      if (event.code === SESSION_REVOKED) {
        this.#running = false;
        clearTimeout(this.#retryTimer);
        this.#state('stopped');
        this.dispatchEvent(new CustomEvent('revoked'));
      } else if (event.code === TOKEN_EXPIRED) {
        this.dispatchEvent(new CustomEvent('tokenexpired'));
        this.#attempt = 0;
        this.#connect();
      } else if (event.code === MOVED && this.#attempt === 0) {
        // Sent to another node: follow at once (a new ticket names it); a
        // second move in a row (a rebalance in progress) backs off.
        this.#attempt = 1;
        this.#connect();
      } else {
        this.#retryLater(SLOW_RETRY_CODES.has(event.code) ? BACKOFF_MAX_MS : undefined);
      }
    };
  }

  #heard() {
    this.#lastHeard = Date.now();
    this.#pingSent = 0;
  }

  #startWatchdog() {
    clearInterval(this.#watchdog);
    this.#watchdog = setInterval(() => {
      const now = Date.now();
      if (this.#pingSent && now - this.#pingSent > PONG_TIMEOUT_MS) {
        // Nothing came back: the connection is dead even if the browser has not noticed.
        this.#drop(4000, 'no pong');
        this.#retryLater();
      } else if (!this.#pingSent && now - this.#lastHeard > PING_AFTER_MS) {
        this.#pingSent = now;
        this.send({ type: 'ping' });
      }
    }, 1_000);
  }

  /** Forgets the current socket without waiting for its close handshake. */
  #drop(code, reason) {
    const ws = this.#ws;
    this.#ws = null;
    clearInterval(this.#watchdog);
    if (ws) {
      ws.onclose = ws.onmessage = ws.onopen = null;
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
  }

  #retryLater(minimum = 0) {
    if (!this.#running) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.#attempt);
    // "Equal jitter": half fixed, half random, so clients spread out but still back off.
    const delay = Math.max(minimum, ceiling / 2 + Math.random() * (ceiling / 2));
    this.#attempt += 1;
    this.#state('offline', delay);
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #state(state, retryInMs = 0) {
    this.dispatchEvent(new CustomEvent('state', { detail: { state, retryInMs } }));
  }
}
