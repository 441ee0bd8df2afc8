//! Every CQL statement the Scylla backend prepares, in one place, each with
//! its number of bind markers.
//!
//! [`ScyllaStore`](super::ScyllaStore) prepares [`ALL`] once at open and
//! executes a [`Statement<N>`] only with a tuple of exactly `N` values
//! ([`Binds<N>`], checked by the compiler). The unit tests in
//! `schema_check.rs` check every statement against `cql/schema.cql`: tables
//! and columns exist, `WHERE` clauses name a whole partition key and only
//! clustering columns in order, inserts name the whole primary key, and
//! `N` is the number of `?` markers.

use scylla::serialize::row::SerializeRow;

/// A statement with `BINDS` bind markers; [`Id`] finds its prepared form.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Statement<const BINDS: usize> {
    pub(crate) id: Id,
}

/// One entry of [`ALL`], for preparing and for the schema check.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) name: &'static str,
    pub(crate) cql: &'static str,
    pub(crate) binds: usize,
}

/// Values for a statement with `N` bind markers: tuples of `N` values.
pub(crate) trait Binds<const N: usize>: SerializeRow + Send + Sync {}

macro_rules! binds {
    ($n:literal; $($t:ident),*) => {
        impl<$($t: scylla::serialize::value::SerializeValue + Send + Sync),*> Binds<$n> for ($($t,)*) {}
    };
}
binds!(1; A);
binds!(2; A, B);
binds!(3; A, B, C);
binds!(4; A, B, C, D);
binds!(5; A, B, C, D, E);
binds!(6; A, B, C, D, E, F);
binds!(7; A, B, C, D, E, F, G);
binds!(8; A, B, C, D, E, F, G, H);
binds!(11; A, B, C, D, E, F, G, H, I, J, K);

macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident($binds:literal) = $cql:expr;)*) => {
        /// Index of a statement in [`ALL`] (and in the store's prepared list).
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Id { $($name),* }
        $($(#[$doc])* pub(crate) const $name: Statement<$binds> = Statement { id: Id::$name };)*
        /// Every statement, in [`Id`] order.
        pub(crate) const ALL: &[Entry] = &[$(Entry { name: stringify!($name), cql: $cql, binds: $binds }),*];
    };
}

/// The columns of a user, in `rows::UserRow`'s order.
macro_rules! user_columns {
    () => {
        "id, username, display_name, password_hash, pepper_version, created_at_ms, bio, avatar, email, phone, \
         presence, status_text, last_seen_ms, username_key, display_name_key"
    };
}

/// The columns of a message, in `rows::MessageRow`'s order.
macro_rules! message_columns {
    () => {
        "chat_id, id, sender_id, client_msg_id, body, sent_at_ms, edited_at_ms, edit_count, deleted_at_ms, event"
    };
}

statements! {
    // ------------------------------------------------------------ users
    /// A new user (the username is claimed first).
    USER_INSERT(11) = "INSERT INTO users (id, username, username_key, display_name, display_name_key, \
        password_hash, pepper_version, created_at_ms, bio, presence, status_text) \
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    USER_SELECT(1) = concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?");
    /// LWT: claims a username key for a user ID.
    USERNAME_CLAIM(2) = "INSERT INTO users_by_username (username_key, user_id) VALUES (?, ?) IF NOT EXISTS";
    USERNAME_SELECT(1) = "SELECT user_id FROM users_by_username WHERE username_key = ?";
    USER_SET_PASSWORD(3) = "UPDATE users SET password_hash = ?, pepper_version = ? WHERE id = ?";
    USER_SET_DISPLAY_NAME(3) = "UPDATE users SET display_name = ?, display_name_key = ? WHERE id = ?";
    USER_SET_BIO(2) = "UPDATE users SET bio = ? WHERE id = ?";
    USER_SET_PRESENCE(3) = "UPDATE users SET presence = ?, status_text = ? WHERE id = ?";
    /// The write timestamp is the value (in microseconds), so the highest
    /// value wins and a late, lower write never lowers it.
    USER_SET_LAST_SEEN(3) = "UPDATE users USING TIMESTAMP ? SET last_seen_ms = ? WHERE id = ?";
    USER_SET_AVATAR(2) = "UPDATE users SET avatar = ? WHERE id = ?";
    USER_SET_EMAIL(2) = "UPDATE users SET email = ? WHERE id = ?";
    USER_SET_PHONE(2) = "UPDATE users SET phone = ? WHERE id = ?";
    SEARCH_INSERT(2) = "INSERT INTO user_search (prefix, user_id) VALUES (?, ?)";
    SEARCH_DELETE(2) = "DELETE FROM user_search WHERE prefix = ? AND user_id = ?";
    /// Paged.
    SEARCH_SELECT(1) = "SELECT user_id FROM user_search WHERE prefix = ?";

    // ------------------------------------------------------------ update logs
    LOG_LATEST(1) = "SELECT seq FROM user_updates WHERE user_id = ? ORDER BY seq DESC LIMIT 1";
    /// LWT: an entry at a seq nobody holds yet.
    LOG_INSERT(7) = "INSERT INTO user_updates (user_id, seq, kind, chat_id, message_id, other_id, relation) \
        VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    LOG_AFTER(3) = "SELECT seq, kind, chat_id, message_id, other_id, relation FROM user_updates \
        WHERE user_id = ? AND seq > ? LIMIT ?";

    // ------------------------------------------------------------ chats
    CHAT_INSERT(3) = "INSERT INTO chats (id, kind, created_at_ms) VALUES (?, ?, ?)";
    GROUP_INSERT(6) = "INSERT INTO chats (id, kind, created_at_ms, name, owner, member_count) \
        VALUES (?, ?, ?, ?, ?, ?)";
    CHAT_SELECT(1) = "SELECT kind, created_at_ms, last_message_id, name, avatar, owner, admins, member_count \
        FROM chats WHERE id = ?";
    CHAT_SET_LAST_MESSAGE(2) = "UPDATE chats SET last_message_id = ? WHERE id = ?";
    CHAT_SET_NAME(2) = "UPDATE chats SET name = ? WHERE id = ?";
    CHAT_SET_AVATAR(2) = "UPDATE chats SET avatar = ? WHERE id = ?";
    CHAT_SET_OWNER(2) = "UPDATE chats SET owner = ? WHERE id = ?";
    CHAT_ADD_ADMINS(2) = "UPDATE chats SET admins = admins + ? WHERE id = ?";
    CHAT_REMOVE_ADMINS(2) = "UPDATE chats SET admins = admins - ? WHERE id = ?";
    CHAT_SET_MEMBER_COUNT(2) = "UPDATE chats SET member_count = ? WHERE id = ?";
    /// LWT: the 1:1 chat of an ordered pair.
    DIRECT_CLAIM(3) = "INSERT INTO direct_chats (user_lo, user_hi, chat_id) VALUES (?, ?, ?) IF NOT EXISTS";
    DIRECT_SELECT(2) = "SELECT chat_id FROM direct_chats WHERE user_lo = ? AND user_hi = ?";
    MEMBER_INSERT(7) = "INSERT INTO chat_members (chat_id, user_id, role, joined_at_ms, history_from, \
        delivered_up_to, seen_up_to) VALUES (?, ?, ?, ?, ?, ?, ?)";
    MEMBER_DELETE(2) = "DELETE FROM chat_members WHERE chat_id = ? AND user_id = ?";
    MEMBER_SET_ROLE(3) = "UPDATE chat_members SET role = ? WHERE chat_id = ? AND user_id = ?";
    MEMBER_SELECT(2) = "SELECT user_id, role, joined_at_ms, history_from, delivered_up_to, seen_up_to \
        FROM chat_members WHERE chat_id = ? AND user_id = ?";
    /// Paged, by user ID ascending.
    MEMBERS_SELECT(1) = "SELECT user_id, role, joined_at_ms, history_from, delivered_up_to, seen_up_to \
        FROM chat_members WHERE chat_id = ?";
    /// LWT: moves both watermarks if neither moved meanwhile.
    MEMBER_MARK(6) = "UPDATE chat_members SET delivered_up_to = ?, seen_up_to = ? WHERE chat_id = ? AND user_id = ? \
        IF delivered_up_to = ? AND seen_up_to = ?";
    CHAT_OF_USER_INSERT(3) = "INSERT INTO chats_by_user (user_id, chat_id, kind) VALUES (?, ?, ?)";
    CHAT_OF_USER_DELETE(2) = "DELETE FROM chats_by_user WHERE user_id = ? AND chat_id = ?";
    /// Paged.
    CHATS_OF_USER(1) = "SELECT chat_id, kind FROM chats_by_user WHERE user_id = ?";

    // ------------------------------------------------------------ messages
    MESSAGE_INSERT(8) = "INSERT INTO messages (chat_id, id, sender_id, client_msg_id, body, sent_at_ms, edit_count, \
        event) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
    MESSAGE_SELECT(2) = concat!("SELECT ", message_columns!(), " FROM messages WHERE chat_id = ? AND id = ?");
    /// Paged, newest first: `id < ?` and `id > ?`.
    MESSAGES_BETWEEN(3) = concat!("SELECT ", message_columns!(), " FROM messages WHERE chat_id = ? AND id < ? AND id > ?");
    MESSAGE_EDIT(5) = "UPDATE messages SET body = ?, edited_at_ms = ?, edit_count = ? WHERE chat_id = ? AND id = ?";
    MESSAGE_DELETE(4) = "UPDATE messages SET body = ?, deleted_at_ms = ? WHERE chat_id = ? AND id = ?";
    /// LWT: the idempotency claim of `(sender, client message ID)`.
    CLIENT_CLAIM(4) = "INSERT INTO messages_by_client (sender_id, client_msg_id, chat_id, message_id) \
        VALUES (?, ?, ?, ?) IF NOT EXISTS";
    /// LWT: marks a claim's message as logged to its whole audience.
    CLIENT_LOGGED(2) = "UPDATE messages_by_client SET logged = true WHERE sender_id = ? AND client_msg_id = ? IF EXISTS";
    /// LWT: hides a message for one user, once.
    HIDE_INSERT(3) = "INSERT INTO hidden_messages (user_id, chat_id, message_id) VALUES (?, ?, ?) IF NOT EXISTS";
    /// Paged: `message_id < ?` and `message_id > ?`.
    HIDDEN_BETWEEN(4) = "SELECT message_id FROM hidden_messages WHERE user_id = ? AND chat_id = ? \
        AND message_id < ? AND message_id > ?";

    // ------------------------------------------------------------ relations
    PAIR_SELECT(2) = "SELECT relation, since_ms, lo_blocks_since, hi_blocks_since, version FROM relation_pairs \
        WHERE user_lo = ? AND user_hi = ?";
    /// LWT: the first state of a pair.
    PAIR_INSERT(7) = "INSERT INTO relation_pairs (user_lo, user_hi, relation, since_ms, lo_blocks_since, \
        hi_blocks_since, version) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    /// LWT: the next state of a pair, if nobody changed it meanwhile.
    PAIR_UPDATE(8) = "UPDATE relation_pairs SET relation = ?, since_ms = ?, lo_blocks_since = ?, hi_blocks_since = ?, \
        version = ? WHERE user_lo = ? AND user_hi = ? IF version = ?";
    KIND_INSERT(4) = "INSERT INTO relations_by_kind (user_id, relation, since_ms, other_id) VALUES (?, ?, ?, ?)";
    KIND_DELETE(4) = "DELETE FROM relations_by_kind WHERE user_id = ? AND relation = ? AND since_ms = ? \
        AND other_id = ?";
    KIND_PAGE(5) = "SELECT other_id, since_ms FROM relations_by_kind WHERE user_id = ? AND relation = ? \
        AND (since_ms, other_id) < (?, ?) LIMIT ?";
    /// Paged.
    KIND_ALL(2) = "SELECT other_id FROM relations_by_kind WHERE user_id = ? AND relation = ?";
    BLOCK_INSERT(3) = "INSERT INTO blocks_by_user (blocker_id, since_ms, blocked_id) VALUES (?, ?, ?)";
    BLOCK_DELETE(3) = "DELETE FROM blocks_by_user WHERE blocker_id = ? AND since_ms = ? AND blocked_id = ?";
    BLOCK_PAGE(4) = "SELECT blocked_id, since_ms FROM blocks_by_user WHERE blocker_id = ? \
        AND (since_ms, blocked_id) < (?, ?) LIMIT ?";

    // ------------------------------------------------------------ tokens
    FAMILY_INSERT(3) = "INSERT INTO token_families (id, user_id, created_at_ms) VALUES (?, ?, ?)";
    FAMILY_SELECT(1) = "SELECT user_id, revoked_at_ms FROM token_families WHERE id = ?";
    FAMILY_REVOKE(2) = "UPDATE token_families SET revoked_at_ms = ? WHERE id = ?";
    /// The TTL is [`crate::REVOKED_FAMILIES_KEPT_MS`] in seconds.
    REVOKED_FAMILY_INSERT(4) = "INSERT INTO revoked_families_by_hour (hour, revoked_at_ms, family_id) \
        VALUES (?, ?, ?) USING TTL ?";
    /// Paged.
    REVOKED_FAMILIES_SINCE(3) = "SELECT family_id, revoked_at_ms FROM revoked_families_by_hour WHERE hour = ? \
        AND revoked_at_ms >= ? AND revoked_at_ms <= ?";
    FAMILY_OF_USER_INSERT(2) = "INSERT INTO families_by_user (user_id, family_id) VALUES (?, ?)";
    /// Paged.
    FAMILIES_OF_USER(1) = "SELECT family_id FROM families_by_user WHERE user_id = ?";
    TOKEN_INSERT(4) = "INSERT INTO refresh_tokens (hash, family_id, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?)";
    TOKEN_SELECT(1) = "SELECT family_id, expires_at_ms, used_at_ms FROM refresh_tokens WHERE hash = ?";
    /// LWT: consumes a token exactly once.
    TOKEN_USE(2) = "UPDATE refresh_tokens SET used_at_ms = ? WHERE hash = ? IF used_at_ms = null";

    // ------------------------------------------------------------ contacts
    /// LWT: a challenge where none is pending.
    CHALLENGE_INSERT(7) = "INSERT INTO contact_challenges (user_id, channel, value, code_hash, attempts, \
        expires_at_ms, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    /// LWT: replaces a pending challenge.
    CHALLENGE_REPLACE(7) = "UPDATE contact_challenges SET value = ?, code_hash = ?, attempts = ?, expires_at_ms = ?, \
        created_at_ms = ? WHERE user_id = ? AND channel = ? IF EXISTS";
    CHALLENGE_SELECT(2) = "SELECT value, code_hash, attempts, expires_at_ms, created_at_ms FROM contact_challenges \
        WHERE user_id = ? AND channel = ?";
    /// LWT: counts a wrong code against the challenge that was checked.
    CHALLENGE_COUNT_WRONG(5) = "UPDATE contact_challenges SET attempts = ? WHERE user_id = ? AND channel = ? \
        IF attempts = ? AND code_hash = ?";
    /// LWT: deletes the challenge that was checked.
    CHALLENGE_DELETE(3) = "DELETE FROM contact_challenges WHERE user_id = ? AND channel = ? IF code_hash = ?";
    /// LWT: claims a confirmed address for a user.
    CONTACT_CLAIM(3) = "INSERT INTO contacts_by_value (channel, value_key, user_id) VALUES (?, ?, ?) IF NOT EXISTS";
    /// LWT: releases a user's claim on an address.
    CONTACT_RELEASE(3) = "DELETE FROM contacts_by_value WHERE channel = ? AND value_key = ? IF user_id = ?";

    // ------------------------------------------------------------ meta
    CLOCK_SELECT(1) = "SELECT high_water_ms FROM meta_clock WHERE generator = ?";
    /// LWT: the first high-water mark of a generator.
    CLOCK_INSERT(2) = "INSERT INTO meta_clock (generator, high_water_ms) VALUES (?, ?) IF NOT EXISTS";
    /// LWT: raises the mark if nobody moved it meanwhile.
    CLOCK_RAISE(3) = "UPDATE meta_clock SET high_water_ms = ? WHERE generator = ? IF high_water_ms = ?";
}
