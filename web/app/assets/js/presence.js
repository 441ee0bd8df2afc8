// Presence: who is online, away, busy or offline (with last seen), as the
// server reports it in `presence` frames (a snapshot after connecting, then
// changes; ephemeral, the newest frame about a user wins), how to word it,
// and this device's idle reports (`activity` frames).

import { lastSeen } from './format.js';

/** No input for this long makes this device idle (the user shows as away once every device is). */
export const IDLE_AFTER_MS = 3 * 60 * 1000;
/** How often the idle timer looks at the time of the last input. */
const CHECK_EVERY_MS = 15_000;
/** Input events that count as the user being there. */
const INPUT_EVENTS = ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'focus'];

/** The statuses a user can show; `offline` also stands for "unknown". */
export const STATUSES = ['online', 'away', 'busy', 'offline'];

/** What the server last said about each user: `{ status, status_text, last_seen }` by user ID. */
export class PresenceBook {
  #views = new Map();

  /** Records a frame's views; returns true if anything shown changed. */
  apply(users) {
    let changed = false;
    for (const view of users ?? []) {
      if (!view?.user_id) continue;
      const before = this.#views.get(view.user_id);
      const next = {
        status: STATUSES.includes(view.status) ? view.status : 'offline',
        status_text: view.status_text ?? '',
        last_seen: view.last_seen ?? null,
      };
      if (!before || before.status !== next.status || before.status_text !== next.status_text || before.last_seen !== next.last_seen) {
        this.#views.set(view.user_id, next);
        changed = true;
      }
    }
    return changed;
  }

  /** The view of a user, or null if the server said nothing about them. */
  get(userId) {
    return this.#views.get(userId) ?? null;
  }

  clear() {
    this.#views.clear();
  }
}

/**
 * A few words for a presence: `online`, `away`, `busy`, `last seen today
 * at 14:05`, or `offline`; null when unknown. With `text`, the status text
 * follows after a middle dot.
 */
export function presenceLabel(view, { text = true } = {}) {
  if (!view) return null;
  let label;
  if (view.status === 'offline') label = view.last_seen ? lastSeen(view.last_seen) : 'offline';
  else label = view.status;
  return text && view.status_text ? `${label} · ${view.status_text}` : label;
}

/** Whether a presence is worth a dot on an avatar (someone is there). */
export function dotFor(view) {
  return view && view.status !== 'offline' ? view.status : null;
}

/**
 * Reports this device idle after `idleAfterMs` without input or as soon
 * as the page is hidden, and active again on input or when shown.
 * `send(idle)` delivers the report (false when it could not be sent).
 */
export class IdleReporter {
  #lastInput = Date.now();
  #timer = 0;
  #lastMove = 0;

  constructor({ send, idleAfterMs = IDLE_AFTER_MS }) {
    this.send = send;
    this.idleAfterMs = idleAfterMs;
    this.idle = false;
    this.onInput = (event) => {
      // Pointer moves come in floods: one a second is plenty.
      if (event.type === 'pointermove') {
        const now = Date.now();
        if (now - this.#lastMove < 1000) return;
        this.#lastMove = now;
      }
      this.#lastInput = Date.now();
      if (this.idle && document.visibilityState === 'visible') this.#set(false);
    };
    this.onVisibility = () => {
      if (document.visibilityState === 'hidden') {
        this.#set(true);
      } else {
        this.#lastInput = Date.now();
        this.#set(false);
      }
    };
  }

  start() {
    for (const type of INPUT_EVENTS) window.addEventListener(type, this.onInput, { passive: true, capture: true });
    document.addEventListener('visibilitychange', this.onVisibility);
    this.#timer = setInterval(() => {
      if (!this.idle && Date.now() - this.#lastInput >= this.idleAfterMs) this.#set(true);
    }, Math.min(CHECK_EVERY_MS, this.idleAfterMs));
    this.idle = document.visibilityState === 'hidden';
  }

  stop() {
    for (const type of INPUT_EVENTS) window.removeEventListener(type, this.onInput, { capture: true });
    document.removeEventListener('visibilitychange', this.onVisibility);
    clearInterval(this.#timer);
  }

  /** After (re)connecting: a new connection counts as active, so an idle device says so again. */
  connected() {
    if (this.idle) this.send(true);
  }

  #set(idle) {
    if (this.idle === idle) return;
    this.idle = idle;
    this.send(idle);
  }
}
