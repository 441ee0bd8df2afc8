// Picking friends for a group: a filter box and a checkbox per friend
// (with their presence), used to create a group and to add members.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { dotFor, presenceLabel } from '../presence.js';
import { avatar } from './ui.js';

/** Every friend of the user (all pages of `GET /friends`), by name. */
export async function loadFriends(api) {
  const friends = [];
  let after;
  for (let page = 0; page < 20; page += 1) {
    const result = await api.relationPage('friends', { after, limit: 100 });
    friends.push(...result.users.map((entry) => entry.user));
    if (!result.next_after) break;
    after = result.next_after;
  }
  return friends.sort((a, b) => a.display_name.localeCompare(b.display_name));
}

/**
 * A friend picker. `people`: UserViews; `onChange(ids)`: after each tick.
 * Returns `{ el, selected() }`.
 */
export function peoplePicker({ store, people, onChange = () => {}, emptyText = 'No friends to add yet.' }) {
  const chosen = new Set();
  const filterId = `pick-filter-${Math.random().toString(36).slice(2, 8)}`;
  const filter = h('input', { type: 'search', id: filterId, placeholder: 'Search friends', autocomplete: 'off', spellcheck: 'false' });
  const list = h('ul', { class: 'people picker', 'aria-label': 'Friends' });
  const empty = h('p', { class: 'muted empty-line', hidden: true }, emptyText);

  const rows = people.map((user) => {
    const id = `pick-${user.id}-${Math.random().toString(36).slice(2, 6)}`;
    const box = h('input', { type: 'checkbox', id, value: user.id, class: 'pick-box' });
    box.addEventListener('change', () => {
      if (box.checked) chosen.add(user.id);
      else chosen.delete(user.id);
      onChange([...chosen]);
    });
    const presence = store.presenceOf(user.id);
    const li = h(
      'li',
      { class: 'person pick', dataset: { userId: user.id } },
      h(
        'label',
        { for: id, class: 'pick-label' },
        box,
        avatar(user, { size: 40, presence: dotFor(presence) }),
        h(
          'span',
          { class: 'person-text' },
          h('span', { class: 'person-name' }, user.display_name),
          h('span', { class: 'person-handle' }, '@' + user.username + (presence && presence.status !== 'offline' ? ` · ${presenceLabel(presence, { text: false })}` : '')),
        ),
        h('span', { class: 'pick-check', 'aria-hidden': 'true' }, icon('check', { size: 16 })),
      ),
    );
    return { user, li };
  });
  list.append(...rows.map((row) => row.li));

  const applyFilter = () => {
    const q = filter.value.trim().toLowerCase();
    let shown = 0;
    for (const { user, li } of rows) {
      const match = !q || user.display_name.toLowerCase().includes(q) || user.username.includes(q);
      li.hidden = !match;
      if (match) shown += 1;
    }
    list.hidden = shown === 0;
    empty.hidden = shown > 0;
    empty.textContent = people.length ? `No friends match “${filter.value.trim()}”.` : emptyText;
  };
  filter.addEventListener('input', applyFilter);
  applyFilter();

  const el = h(
    'div',
    { class: 'picker-wrap' },
    people.length
      ? h('div', { class: 'search-box', role: 'search' }, h('label', { for: filterId, class: 'visually-hidden' }, 'Search friends'), icon('search'), filter)
      : null,
    list,
    empty,
  );
  return { el, selected: () => [...chosen] };
}
