// What can be done to a message: edit and delete for everyone (your own,
// within 48 hours), delete for me (any), copy.

import { choose, toast, toastError } from './ui.js';

/** How long after sending a message may be edited or deleted for everyone (protocol limit). */
const EDIT_WINDOW_MS = 48 * 3600 * 1000;

export class MessageActions {
  constructor(view) {
    this.view = view;
  }

  async open(message) {
    const { store, session } = this.view;
    const mine = message.sender_id === store.me;
    const editable = mine && Date.now() - message.sent_at < EDIT_WINDOW_MS;
    const actions = [];
    if (editable) actions.push({ value: 'edit', label: 'Edit', icon: 'edit' });
    if (navigator.clipboard) actions.push({ value: 'copy', label: 'Copy text' });
    if (editable) actions.push({ value: 'everyone', label: 'Delete for everyone', icon: 'trash', danger: true });
    actions.push({ value: 'me', label: 'Delete for me', icon: 'trash', danger: !editable });
    const choice = await choose({ title: 'Message', text: preview(message.body), actions });
    try {
      switch (choice) {
        case 'edit':
          this.view.startEditing(message);
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

function preview(text) {
  return text.length > 120 ? text.slice(0, 117) + '…' : text;
}
