// Formatting and comparison helpers shared by the views and the store.

/** Compares two snowflake IDs (decimal strings) numerically. */
export function compareIds(a, b) {
  if (a === b) return 0;
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : 1;
}

/** The larger of two IDs; `"0"` stands for none. */
export function maxId(a, b) {
  return compareIds(a ?? '0', b ?? '0') >= 0 ? a ?? '0' : b;
}

/** A new client message ID (UUID v4). */
export function newClientId() {
  return crypto.randomUUID();
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const dateFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const longDayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long' });

/** `14:05` for a time of day. */
export function clock(ms) {
  return timeFormat.format(ms);
}

/** A short label for the chat list: the time today, the weekday this week, else the date. */
export function shortWhen(ms, now = Date.now()) {
  const day = 24 * 3600 * 1000;
  if (sameDay(ms, now)) return timeFormat.format(ms);
  if (now - ms < 6 * day) return dayFormat.format(ms);
  return dateFormat.format(ms);
}

/** `Today`, `Yesterday`, or a long date, for separators in a conversation. */
export function dayLabel(ms, now = Date.now()) {
  if (sameDay(ms, now)) return 'Today';
  if (sameDay(ms, now - 24 * 3600 * 1000)) return 'Yesterday';
  return longDayFormat.format(ms);
}

export function sameDay(a, b) {
  const x = new Date(a);
  const y = new Date(b);
  return x.getFullYear() === y.getFullYear() && x.getMonth() === y.getMonth() && x.getDate() === y.getDate();
}

/** Up to two initials of a name, for avatars without a picture. */
export function initials(name) {
  const words = String(name ?? '?').trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : [words[0] ?? '?'];
  return letters.map((w) => [...w][0]?.toUpperCase() ?? '').join('') || '?';
}

/** The UTF-8 size of a string, as the server counts message bodies. */
export function utf8Bytes(text) {
  return new TextEncoder().encode(text).length;
}

/** `last seen just now`, `… 5 min ago`, `… today at 14:05`, `… yesterday at 09:10`, `… 3 Mar`. */
export function lastSeen(ms, now = Date.now()) {
  const minutes = Math.floor((now - ms) / 60_000);
  if (minutes < 1) return 'last seen just now';
  if (minutes < 60) return `last seen ${minutes} min ago`;
  if (sameDay(ms, now)) return `last seen today at ${timeFormat.format(ms)}`;
  if (sameDay(ms, now - 24 * 3600 * 1000)) return `last seen yesterday at ${timeFormat.format(ms)}`;
  return `last seen ${dateFormat.format(ms)}`;
}
