// Group events: the changes to a group that its history records as event
// messages (`message.event`, body empty, `sender_id` made the change),
// worded as the system lines and previews the views show.

/** The user IDs an event names (its sender included), to load their names. */
export function eventUsers(message) {
  const event = message.event ?? {};
  const ids = [message.sender_id, ...(event.members ?? [])];
  if (event.user_id) ids.push(event.user_id);
  return [...new Set(ids)];
}

/** An event message as a sentence: "Alice added Bob and Carol", "You renamed the group to “Hikes”". */
export function eventText(store, message) {
  const event = message.event ?? {};
  const me = store.me;
  const name = (id, { object = false } = {}) => (id === me ? (object ? 'you' : 'You') : store.user(id).display_name);
  const actor = name(message.sender_id);
  const list = (ids) => {
    const names = ids.map((id) => name(id, { object: true }));
    if (names.length <= 1) return names.join('');
    return `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
  };
  switch (event.type) {
    case 'created':
      return `${actor} created the group “${event.name}”`;
    case 'renamed':
      return `${actor} renamed the group to “${event.name}”`;
    case 'avatar_changed':
      return event.avatar ? `${actor} changed the group photo` : `${actor} removed the group photo`;
    case 'members_added':
      return `${actor} added ${list(event.members ?? [])}`;
    case 'member_removed':
      return `${actor} removed ${name(event.user_id, { object: true })}`;
    case 'member_left':
      return `${actor} left the group`;
    case 'role_changed':
      return event.role === 'admin'
        ? `${actor} made ${name(event.user_id, { object: true })} an admin`
        : `${actor} removed ${name(event.user_id, { object: true })} as admin`;
    case 'owner_changed':
      return `${actor} made ${name(event.user_id, { object: true })} the owner`;
    default:
      return `${actor} changed the group`;
  }
}
