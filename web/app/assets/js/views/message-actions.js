// What can be done to a message: edit and delete for everyone (your own,
// within 48 hours; in a group, admins and the owner delete anyone's), delete
// for me (any), copy, and for my own group messages who has read them.

import { h, replaceChildren } from '../dom.js';
import { dotFor } from '../presence.js';
import { avatar, choose, formError, sheet, toast, toastError } from './ui.js';

/** How long after sending a message may be edited or deleted for everyone (protocol limit). */
const EDIT_WINDOW_MS = 48 * 3600 * 1000;

export class MessageActions {
  constructor(view) {
    this.view = view;
  }

  async open(message) {
    const { store, session } = this.view;
    const chat = this.view.chat;
    const mine = message.sender_id === store.me;
    const editable = mine && Date.now() - message.sent_at < EDIT_WINDOW_MS;
    const role = store.myRole(chat);
    const moderator = !mine && (role === 'admin' || role === 'owner');
    const actions = [];
    if (editable) actions.push({ value: 'edit', label: 'Edit', icon: 'edit' });
    if (mine && chat?.group) actions.push({ value: 'info', label: 'Message info', icon: 'info' });
    if (navigator.clipboard) actions.push({ value: 'copy', label: 'Copy text' });
    if (editable || moderator) actions.push({ value: 'everyone', label: 'Delete for everyone', icon: 'trash', danger: true });
    actions.push({ value: 'me', label: 'Delete for me', icon: 'trash', danger: !editable && !moderator });
    const choice = await choose({ title: 'Message', text: preview(message.body), actions });
    try {
      switch (choice) {
        case 'edit':
          this.view.startEditing(message);
          break;
        case 'info':
          await showMessageInfo(this.view, message);
          break;
        case 'copy':
          await navigator.clipboard.writeText(message.body);
          toast('Copied.');
          break;
        case 'everyone':
          await session.delete(message.chat_id, message.id, true);
          break;
        case 'me':
          await session.delete(message.chat_id, message.id, false);
          break;
        default:
          break;
      }
    } catch (error) {
      toastError(error);
    }
  }
}

/** Who has read and who has received one of my group messages (fetched fresh). */
export function showMessageInfo(view, message) {
  const { store, session } = view;
  return sheet({
    title: 'Message info',
    className: 'message-info',
    build: (close) => {
      const body = h('div', { class: 'receipts', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading…'));
      const error = formError();
      const person = (id) => {
        const user = store.user(id);
        return h('li', { class: 'person' }, avatar(user, { size: 32, presence: dotFor(store.presenceOf(id)) }), h('span', { class: 'person-name' }, user.display_name));
      };
      const section = (title, ids, empty) =>
        h(
          'section',
          { 'aria-label': title },
          h('h3', { class: 'section-title' }, title, h('span', { class: 'count' }, String(ids.length))),
          ids.length ? h('ul', { class: 'people compact' }, ids.map(person)) : h('p', { class: 'muted empty-line' }, empty),
        );
      session.messageReceipts(message.chat_id, message.id).then(
        (receipts) => {
          const seen = receipts.seen;
          const delivered = receipts.delivered.filter((id) => !seen.includes(id));
          const others = Math.max(0, (view.chat?.group?.member_count ?? 1) - 1);
          const waiting = Math.max(0, others - seen.length - delivered.length);
          replaceChildren(body,
            h('p', { class: 'sheet-text' }, preview(message.body)),
            section('Seen by', seen, 'Nobody yet.'),
            section('Delivered to', delivered, seen.length ? 'Everyone else has read it.' : 'Nobody yet.'),
            waiting ? h('p', { class: 'muted' }, `Not yet delivered to ${waiting} ${waiting === 1 ? 'member' : 'members'}.`) : null,
          );
        },
        (e) => {
          body.replaceChildren();
          error.show(e);
        },
      );
      return [body, error.el, h('div', { class: 'row end sheet-row' }, h('button', { type: 'button', class: 'btn ghost', on: { click: () => close(null) } }, 'Close'))];
    },
  });
}

function preview(text) {
  return text.length > 120 ? text.slice(0, 117) + '…' : text;
}
