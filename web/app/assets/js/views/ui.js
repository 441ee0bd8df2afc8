// Shared pieces of the interface: avatars, toasts, confirmation dialogs,
// buttons that show progress, and form errors from the server's problems.

import { ApiError } from '../api.js';
import { h } from '../dom.js';
import { initials } from '../format.js';
import { icon } from '../icons.js';
import { dotFor } from '../presence.js';

/**
 * A round avatar: the user's picture, or their initials on a colour derived
 * from their ID; `presence` (`online`, `away`, `busy`) adds a dot; `group`
 * makes it a rounded square.
 */
export function avatar(user, { size = 40, presence = null, group = false } = {}) {
  const hue = [...String(user?.id ?? '0')].reduce((sum, c) => (sum * 31 + c.charCodeAt(0)) % 360, 7);
  const picture = user?.avatar?.[size > 64 ? 'large' : 'small'];
  return h(
    'span',
    { class: ['avatar', group && 'group'], style: { '--size': `${size}px`, '--hue': String(hue) }, 'aria-hidden': 'true' },
    picture ? h('img', { src: picture, alt: '', width: size, height: size, loading: 'lazy', decoding: 'async' }) : initials(user?.display_name),
    presence ? h('span', { class: ['presence', presence], dataset: { presence } }) : null,
  );
}

/** A chat's picture: the group's, or the peer's with their presence dot. */
export function chatAvatar(store, chat, { size = 40 } = {}) {
  if (chat.group || chat.kind === 'group') {
    return avatar({ id: chat.id, display_name: store.titleOf(chat), avatar: chat.group?.avatar ?? null }, { size, group: true });
  }
  const peer = store.peersOf(chat)[0];
  return avatar(peer ?? { id: chat.id, display_name: store.titleOf(chat) }, { size, presence: peer ? dotFor(store.presenceOf(peer.id)) : null });
}

/**
 * A modal sheet with a title and content built by `build(close)`; resolves
 * with the value passed to `close` (null if dismissed).
 */
export function sheet({ title, build, className = null }) {
  return new Promise((resolve) => {
    let result = null;
    const titleId = `sheet-${Math.random().toString(36).slice(2, 8)}`;
    const dialog = h('dialog', { class: ['sheet', className], 'aria-labelledby': titleId });
    const close = (value = null) => {
      result = value;
      dialog.close();
    };
    dialog.append(h('h2', { id: titleId, class: 'sheet-title' }, title), ...[build(close)].flat().filter(Boolean));
    dialog.addEventListener('click', (event) => {
      if (event.target === dialog) dialog.close();
    });
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** A short message at the bottom of the screen. `kind`: `info` or `error`. */
export function toast(text, { kind = 'info', timeout = 4000 } = {}) {
  const host = document.getElementById('toasts');
  const el = h('div', { class: ['toast', kind], role: kind === 'error' ? 'alert' : 'status' }, text);
  host.append(el);
  setTimeout(() => {
    el.classList.add('leaving');
    setTimeout(() => el.remove(), 300);
  }, timeout);
}

/** Shows an error from the API or elsewhere as a toast. */
export function toastError(error) {
  toast(error instanceof ApiError ? error.userMessage : error?.message || 'Something went wrong.', { kind: 'error' });
}

/**
 * A modal dialog with a title, optional text and buttons; resolves with the
 * chosen action's `value` (or null if dismissed).
 */
export function choose({ title, text = null, actions }) {
  return new Promise((resolve) => {
    const dialog = h(
      'dialog',
      { class: 'sheet', 'aria-labelledby': 'sheet-title' },
      h('h2', { id: 'sheet-title', class: 'sheet-title' }, title),
      text ? h('p', { class: 'sheet-text' }, text) : null,
      h(
        'div',
        { class: 'sheet-actions' },
        actions.map((action) =>
          h(
            'button',
            {
              type: 'button',
              class: ['btn', action.danger ? 'danger' : action.primary ? 'primary' : 'ghost'],
              on: { click: () => dialog.close(action.value) },
            },
            action.icon ? icon(action.icon) : null,
            action.label,
          ),
        ),
        h('button', { type: 'button', class: 'btn ghost', on: { click: () => dialog.close('') } }, 'Cancel'),
      ),
    );
    dialog.addEventListener('click', (event) => {
      if (event.target === dialog) dialog.close('');
    });
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue || null);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Runs `task` with `button` disabled and marked busy; errors go to `onError` (a toast by default). */
export async function busy(button, task, onError = toastError) {
  if (button.disabled) return undefined;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await task();
  } catch (error) {
    onError(error);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/** An error line for a form, announced to screen readers. */
export function formError() {
  const el = h('p', { class: 'form-error', role: 'alert', hidden: true });
  return {
    el,
    show(error) {
      el.textContent = error instanceof ApiError ? error.userMessage : error?.message || String(error);
      el.hidden = false;
    },
    clear() {
      el.textContent = '';
      el.hidden = true;
    },
  };
}

/** A labelled text field. */
export function field({ label, name, type = 'text', value = '', hint = null, ...attrs }) {
  const id = `f-${name}-${Math.random().toString(36).slice(2, 8)}`;
  const input = h(type === 'textarea' ? 'textarea' : 'input', {
    id,
    name,
    ...(type === 'textarea' ? {} : { type }),
    '.value': value,
    'aria-describedby': hint ? id + '-hint' : null,
    ...attrs,
  });
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    input,
    hint ? h('p', { class: 'hint', id: id + '-hint' }, hint) : null,
  );
}

/** A screen header with an optional back link (mobile) and actions. */
export function screenHeader({ title, back = null, actions = [], subtitle = null, lead = null }) {
  return h(
    'header',
    { class: 'screen-header' },
    back ? h('a', { class: 'icon-btn back', href: back, 'data-link': '', 'aria-label': 'Back' }, icon('back')) : null,
    lead,
    h('div', { class: 'screen-title' }, h('h1', {}, title), subtitle),
    h('div', { class: 'screen-actions' }, actions),
  );
}
