//! Chats, members, messages and update logs in SQLite.

use super::*;

/// Columns a message is read from, in [`message_at`]'s order.
const MESSAGE_COLUMNS: &str =
    "chat_id, id, sender_id, client_msg_id, body, sent_at_ms, edited_at_ms, edit_count, deleted_at_ms, event";

/// Columns a new message is written to.
const NEW_MESSAGE_COLUMNS: &str = "chat_id, id, sender_id, client_msg_id, body, sent_at_ms, event";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    message_at(row, 0)
}

/// Reads the [`MESSAGE_COLUMNS`] starting at column `first`.
fn message_at(row: &Row<'_>, first: usize) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        chat_id: row.get(first)?,
        id: row.get(first + 1)?,
        sender_id: row.get(first + 2)?,
        client_msg_id: row.get(first + 3)?,
        body: row.get(first + 4)?,
        sent_at_ms: row.get(first + 5)?,
        edited_at_ms: row.get(first + 6)?,
        edit_count: row.get(first + 7)?,
        deleted_at_ms: row.get(first + 8)?,
        event: row.get(first + 9)?,
    })
}

/// The message as stored, or [`StorageError::NotFound`].
fn load_message(conn: &Connection, chat_id: i64, message_id: i64) -> StorageResult<MessageRecord> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = ?1 AND id = ?2");
    conn.prepare_cached(&sql)?
        .query_row([chat_id, message_id], message_from_row)
        .optional()?
        .ok_or_else(|| StorageError::NotFound(format!("message {message_id} in chat {chat_id}")))
}

/// A member's watermarks, or `None` for a non-member.
fn load_receipt(conn: &Connection, chat_id: i64, user_id: i64) -> StorageResult<Option<ReceiptRecord>> {
    Ok(conn
        .prepare_cached("SELECT delivered_up_to, seen_up_to FROM chat_members WHERE chat_id = ?1 AND user_id = ?2")?
        .query_row([chat_id, user_id], |row| {
            Ok(ReceiptRecord { user_id, delivered_up_to: row.get(0)?, seen_up_to: row.get(1)? })
        })
        .optional()?)
}

/// Appends an entry of `kind` naming the message to each user's log.
fn log_message_event(
    conn: &Connection,
    kind: &str,
    chat_id: i64,
    message_id: i64,
    users: &[i64],
) -> StorageResult<Vec<(i64, u64)>> {
    log_message_run(conn, kind, chat_id, message_id, 1, users)
}

/// Appends one entry to the log of each of `users` standing for the last
/// `run` messages of the chat up to `message_id` (appended in one step, so
/// consecutive in the chat), at `run` consecutive seqs of each user; returns
/// each user's first seq of the run. One row per user whatever the run's
/// length: a batch of group messages costs a row per member, not a row per
/// member and message.
fn log_message_run(
    conn: &Connection,
    kind: &str,
    chat_id: i64,
    message_id: i64,
    run: u64,
    users: &[i64],
) -> StorageResult<Vec<(i64, u64)>> {
    let run = run.max(1);
    let mut log = conn.prepare_cached(
        "INSERT INTO user_updates (user_id, seq, kind, chat_id, message_id, run) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let run_column = (run > 1).then_some(run as i64);
    let mut seqs = Vec::with_capacity(users.len());
    for &user_id in users {
        let last = reserve_seqs(conn, user_id, run)?;
        log.execute(params![user_id, last as i64, kind, chat_id, message_id, run_column])?;
        seqs.push((user_id, last + 1 - run));
    }
    Ok(seqs)
}

/// Logs messages just appended (in increasing ID order) to `users`: each
/// run of consecutive messages of one chat as one entry per user. Returns
/// each message's seq per user.
fn log_appended(conn: &Connection, appended: &[MessageRecord], users: &[i64]) -> StorageResult<Vec<Vec<(i64, u64)>>> {
    let mut seqs = Vec::with_capacity(appended.len());
    for run in appended.chunk_by(|a, b| a.chat_id == b.chat_id) {
        let Some(last) = run.last() else { continue };
        let len = run.len() as u64;
        let first_seqs = log_message_run(conn, UPDATE_MESSAGE, last.chat_id, last.id, len, users)?;
        for offset in 0..len {
            seqs.push(first_seqs.iter().map(|&(user_id, first)| (user_id, first + offset)).collect());
        }
    }
    Ok(seqs)
}

/// The `run` messages of `last`'s chat up to `last`, oldest first: the
/// messages an update-log entry with that run stands for.
fn message_run(conn: &Connection, last: &MessageRecord, run: u64) -> StorageResult<Vec<MessageRecord>> {
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = ?1 AND id <= ?2 ORDER BY id DESC LIMIT ?3");
    let mut messages = conn
        .prepare_cached(&sql)?
        .query_map(params![last.chat_id, last.id, run as i64], message_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if messages.len() as u64 != run {
        return Err(backend(format!(
            "a log entry names {run} messages up to message {} of chat {}",
            last.id, last.chat_id
        )));
    }
    messages.reverse();
    Ok(messages)
}

/// Like [`message_at`], for a LEFT JOIN that may have found no message.
fn optional_message_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Option<MessageRecord>> {
    match row.get::<_, Option<i64>>(first + 1)? {
        Some(_) => message_at(row, first).map(Some),
        None => Ok(None),
    }
}

fn chat_kind(kind: &str) -> StorageResult<ChatKind> {
    match kind {
        KIND_DIRECT => Ok(ChatKind::Direct),
        KIND_GROUP => Ok(ChatKind::Group),
        other => Err(backend(format!("unknown chat kind {other:?} in sqlite store"))),
    }
}

fn parse_role(role: &str) -> StorageResult<Role> {
    match role {
        ROLE_OWNER => Ok(Role::Owner),
        ROLE_ADMIN => Ok(Role::Admin),
        ROLE_MEMBER => Ok(Role::Member),
        other => Err(backend(format!("unknown member role {other:?} in sqlite store"))),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => ROLE_OWNER,
        Role::Admin => ROLE_ADMIN,
        Role::Member => ROLE_MEMBER,
    }
}

const ROLE_OWNER: &str = "owner";
const ROLE_ADMIN: &str = "admin";
const ROLE_MEMBER: &str = "member";

/// The chat with its members, if it exists.
fn load_chat(conn: &Connection, chat_id: i64) -> StorageResult<Option<ChatRecord>> {
    let chat = conn
        .prepare_cached(
            "SELECT c.kind, c.created_at_ms, g.name, g.avatar, g.member_count
             FROM chats c LEFT JOIN groups g ON g.chat_id = c.id WHERE c.id = ?1",
        )?
        .query_row([chat_id], |row| {
            let group: Option<String> = row.get(2)?;
            let group = match group {
                Some(name) => Some((name, row.get::<_, Option<String>>(3)?, row.get::<_, u32>(4)?)),
                None => None,
            };
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, group))
        })
        .optional()?;
    let Some((kind, created_at_ms, group)) = chat else {
        return Ok(None);
    };
    let mut members = Vec::new();
    let mut owner = 0;
    let mut admins = Vec::new();
    let mut stmt = conn.prepare_cached("SELECT user_id, role FROM chat_members WHERE chat_id = ?1 ORDER BY user_id")?;
    let mut rows = stmt.query([chat_id])?;
    while let Some(row) = rows.next()? {
        let user_id: i64 = row.get(0)?;
        match parse_role(&row.get::<_, String>(1)?)? {
            Role::Owner => owner = user_id,
            Role::Admin => admins.push(user_id),
            Role::Member => {}
        }
        members.push(user_id);
    }
    let group = group.map(|(name, avatar, member_count)| GroupRecord { name, avatar, owner, admins, member_count });
    Ok(Some(ChatRecord { id: chat_id, kind: chat_kind(&kind)?, members, created_at_ms, group }))
}

/// How many groups the user is a member of.
fn groups_of(conn: &Connection, user_id: i64) -> StorageResult<u32> {
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*) FROM chat_members m JOIN chats c ON c.id = m.chat_id
             WHERE m.user_id = ?1 AND c.kind = 'group'",
        )?
        .query_row([user_id], |row| row.get(0))?)
}

/// The first of `users` who is in `max` groups already, if any.
fn over_group_limit(conn: &Connection, users: &[i64], max: u32) -> StorageResult<Option<GroupRefusal>> {
    for &user_id in users {
        if groups_of(conn, user_id)? >= max {
            return Ok(Some(GroupRefusal::TooManyGroups { user_id }));
        }
    }
    Ok(None)
}

/// Inserts a message and moves the chat's newest-message pointer.
/// [`StorageError::NotFound`] for an unknown chat.
fn insert_message(conn: &Connection, message: NewMessage) -> StorageResult<MessageRecord> {
    let chats = conn
        .prepare_cached("UPDATE chats SET last_message_id = MAX(COALESCE(last_message_id, ?2), ?2) WHERE id = ?1")?
        .execute([message.chat_id, message.id])?;
    if chats == 0 {
        return Err(StorageError::NotFound(format!("chat {}", message.chat_id)));
    }
    let sql = format!("INSERT INTO messages ({NEW_MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    conn.prepare_cached(&sql)?.execute(params![
        message.chat_id,
        message.id,
        message.sender_id,
        message.client_msg_id,
        message.body,
        message.sent_at_ms,
        message.event
    ])?;
    Ok(message.into_record())
}

/// Adds a member who sees the chat's messages from now on.
fn add_member(conn: &Connection, chat_id: i64, user_id: i64, role: Role, now_ms: i64) -> StorageResult<()> {
    conn.prepare_cached(
        "INSERT INTO chat_members (chat_id, user_id, role, joined_at_ms, history_from)
         SELECT ?1, ?2, ?3, ?4, COALESCE(last_message_id, 0) FROM chats WHERE id = ?1",
    )?
    .execute(params![chat_id, user_id, role_name(role), now_ms])?;
    Ok(())
}

/// Sets a member's role; [`StorageError::NotFound`] for a non-member.
fn set_role(conn: &Connection, chat_id: i64, user_id: i64, role: Role) -> StorageResult<()> {
    let changed = conn
        .prepare_cached("UPDATE chat_members SET role = ?3 WHERE chat_id = ?1 AND user_id = ?2")?
        .execute(params![chat_id, user_id, role_name(role)])?;
    if changed == 0 {
        return Err(StorageError::NotFound(format!("member {user_id} of chat {chat_id}")));
    }
    Ok(())
}

/// Applies one group change inside the caller's transaction.
fn apply_group_change(
    conn: &Connection,
    chat: &ChatRecord,
    change: GroupChange,
    now_ms: i64,
) -> StorageResult<Result<Option<String>, GroupRefusal>> {
    let chat_id = chat.id;
    let mut previous_avatar = None;
    match change {
        GroupChange::Rename(name) => {
            conn.prepare_cached("UPDATE groups SET name = ?2 WHERE chat_id = ?1")?.execute(params![chat_id, name])?;
        }
        GroupChange::SetAvatar(avatar) => {
            previous_avatar = chat.group.as_ref().and_then(|group| group.avatar.clone());
            conn.prepare_cached("UPDATE groups SET avatar = ?2 WHERE chat_id = ?1")?
                .execute(params![chat_id, avatar])?;
        }
        GroupChange::AddMembers { users, max_groups_per_user } => {
            if let Some(refusal) = over_group_limit(conn, &users, max_groups_per_user)? {
                return Ok(Err(refusal));
            }
            for &user_id in &users {
                add_member(conn, chat_id, user_id, Role::Member, now_ms)?;
            }
            conn.prepare_cached("UPDATE groups SET member_count = member_count + ?2 WHERE chat_id = ?1")?
                .execute(params![chat_id, users.len() as i64])?;
        }
        GroupChange::RemoveMember(user_id) => {
            let removed = conn
                .prepare_cached("DELETE FROM chat_members WHERE chat_id = ?1 AND user_id = ?2")?
                .execute([chat_id, user_id])?;
            if removed == 0 {
                return Err(StorageError::NotFound(format!("member {user_id} of chat {chat_id}")));
            }
            conn.prepare_cached("UPDATE groups SET member_count = member_count - 1 WHERE chat_id = ?1")?
                .execute([chat_id])?;
        }
        GroupChange::SetRole { user_id, role } => set_role(conn, chat_id, user_id, role)?,
        GroupChange::TransferOwnership(user_id) => {
            if let Some(owner) = chat.group.as_ref().map(|group| group.owner) {
                set_role(conn, chat_id, owner, Role::Admin)?;
            }
            set_role(conn, chat_id, user_id, Role::Owner)?;
        }
    }
    Ok(Ok(previous_avatar))
}

/// Stores a group's event message and logs it to `before`'s and the
/// chat's current members.
fn record_group_event(
    conn: &Connection,
    chat_id: i64,
    before: &[i64],
    event: NewMessage,
    previous_avatar: Option<String>,
) -> StorageResult<GroupChanged> {
    let message = insert_message(conn, event)?;
    let chat = load_chat(conn, chat_id)?.ok_or_else(|| StorageError::NotFound(format!("chat {chat_id}")))?;
    let mut audience: Vec<i64> = before.iter().chain(&chat.members).copied().collect();
    audience.sort_unstable();
    audience.dedup();
    let seqs = log_message_event(conn, UPDATE_MESSAGE, chat_id, message.id, &audience)?;
    Ok(GroupChanged { chat, message, seqs, previous_avatar })
}

/// The 1:1 chat of the ordered pair `lo <= hi`, if it exists.
fn load_direct_chat(conn: &Connection, lo: i64, hi: i64) -> StorageResult<Option<ChatRecord>> {
    let chat_id: Option<i64> = conn
        .prepare_cached("SELECT chat_id FROM direct_chats WHERE user_lo = ?1 AND user_hi = ?2")?
        .query_row([lo, hi], |row| row.get(0))
        .optional()?;
    match chat_id {
        Some(chat_id) => load_chat(conn, chat_id),
        None => Ok(None),
    }
}

#[async_trait]
impl ChatStore for SqliteStore {
    async fn direct_chat(&self, a: i64, b: i64, new_id: i64, now_ms: i64) -> StorageResult<ChatRecord> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        // Most calls find the chat: answer those from a reader.
        if let Some(chat) = self.read(move |tx| load_direct_chat(tx, lo, hi)).await? {
            return Ok(chat);
        }
        self.write(move |tx| {
            if let Some(chat) = load_direct_chat(tx, lo, hi)? {
                return Ok(chat);
            }
            tx.prepare_cached("INSERT INTO chats (id, kind, created_at_ms) VALUES (?1, ?2, ?3)")?.execute(params![
                new_id,
                KIND_DIRECT,
                now_ms
            ])?;
            tx.prepare_cached("INSERT INTO direct_chats (user_lo, user_hi, chat_id) VALUES (?1, ?2, ?3)")?
                .execute(params![lo, hi, new_id])?;
            // A user's chat with themselves has one member.
            let members = if lo == hi { vec![lo] } else { vec![lo, hi] };
            for &user_id in &members {
                add_member(tx, new_id, user_id, Role::Member, now_ms)?;
            }
            Ok(ChatRecord { id: new_id, kind: ChatKind::Direct, members, created_at_ms: now_ms, group: None })
        })
        .await
    }

    async fn chat(&self, chat_id: i64) -> StorageResult<Option<ChatRecord>> {
        self.read(move |tx| load_chat(tx, chat_id)).await
    }

    async fn chats_of_user(&self, user_id: i64) -> StorageResult<Vec<ChatOverview>> {
        self.read(move |tx| {
            // A fixed number of queries for any number of chats: the members
            // of the user's 1:1 chats (and the user's own row in groups),
            // the groups' staff, unread counts, then the chats with their
            // newest message. A group's other members are not read.
            let mut members: HashMap<i64, Vec<ReceiptRecord>> = HashMap::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT other.chat_id, other.user_id, other.delivered_up_to, other.seen_up_to
                     FROM chat_members mine
                     JOIN chats c ON c.id = mine.chat_id
                     JOIN chat_members other ON other.chat_id = mine.chat_id
                     WHERE mine.user_id = ?1 AND (c.kind = 'direct' OR other.user_id = ?1)
                     ORDER BY other.chat_id, other.user_id",
                )?;
                let mut rows = stmt.query([user_id])?;
                while let Some(row) = rows.next()? {
                    let receipt =
                        ReceiptRecord { user_id: row.get(1)?, delivered_up_to: row.get(2)?, seen_up_to: row.get(3)? };
                    members.entry(row.get(0)?).or_default().push(receipt);
                }
            }
            let mut staff: HashMap<i64, (i64, Vec<i64>)> = HashMap::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT staff.chat_id, staff.user_id, staff.role
                     FROM chat_members mine
                     JOIN chat_members staff ON staff.chat_id = mine.chat_id AND staff.role <> 'member'
                     WHERE mine.user_id = ?1
                     ORDER BY staff.chat_id, staff.user_id",
                )?;
                let mut rows = stmt.query([user_id])?;
                while let Some(row) = rows.next()? {
                    let entry = staff.entry(row.get(0)?).or_default();
                    match parse_role(&row.get::<_, String>(2)?)? {
                        Role::Owner => entry.0 = row.get(1)?,
                        _ => entry.1.push(row.get(1)?),
                    }
                }
            }
            // Unread: others' messages after the user's seen watermark.
            let unread: HashMap<i64, u32> = tx
                .prepare_cached(
                    "SELECT mine.chat_id, COUNT(m.id)
                     FROM chat_members mine
                     JOIN messages m ON m.chat_id = mine.chat_id AND m.id > mine.seen_up_to
                                    AND m.id > mine.history_from
                     WHERE mine.user_id = ?1 AND m.sender_id <> ?1 AND m.deleted_at_ms IS NULL
                       AND m.event IS NULL
                       AND NOT EXISTS (SELECT 1 FROM hidden_messages h
                                       WHERE h.user_id = ?1 AND h.chat_id = m.chat_id AND h.message_id = m.id)
                     GROUP BY mine.chat_id",
                )?
                .query_map([user_id], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;

            // Last activity: the newest message's time, or the chat's
            // creation for a chat without messages; IDs break ties.
            let sql = format!(
                "SELECT c.id, c.kind, c.created_at_ms, g.name, g.avatar, g.member_count, {}
                 FROM chat_members mine
                 JOIN chats c ON c.id = mine.chat_id
                 LEFT JOIN groups g ON g.chat_id = c.id
                 LEFT JOIN messages m ON m.chat_id = c.id AND m.id = c.last_message_id
                 WHERE mine.user_id = ?1
                 ORDER BY COALESCE(m.sent_at_ms, c.created_at_ms) DESC, COALESCE(m.id, c.id) DESC",
                prefixed("m", MESSAGE_COLUMNS)
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query([user_id])?;
            let mut chats = Vec::new();
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let kind: String = row.get(1)?;
                let receipts = members.remove(&id).unwrap_or_default();
                let group = match row.get::<_, Option<String>>(3)? {
                    Some(name) => {
                        let (owner, admins) = staff.remove(&id).unwrap_or_default();
                        Some(GroupRecord { name, avatar: row.get(4)?, owner, admins, member_count: row.get(5)? })
                    }
                    None => None,
                };
                chats.push(ChatOverview {
                    chat: ChatRecord {
                        id,
                        kind: chat_kind(&kind)?,
                        members: receipts.iter().map(|r| r.user_id).collect(),
                        created_at_ms: row.get(2)?,
                        group,
                    },
                    last_message: optional_message_at(row, 6)?,
                    unread: unread.get(&id).copied().unwrap_or(0),
                    receipts,
                });
            }
            Ok(chats)
        })
        .await
    }

    async fn append_messages(&self, messages: Vec<NewMessage>, audience: &[i64]) -> StorageResult<Vec<AppendOutcome>> {
        // One update per user, even if the caller names someone twice;
        // seqs come back in the audience's order.
        let mut named = std::collections::HashSet::with_capacity(audience.len());
        let recipients: Vec<i64> = audience.iter().copied().filter(|user| named.insert(*user)).collect();
        self.write(move |tx| {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ?1 AND client_msg_id = ?2");
            // `None` stands for an appended message, logged below.
            let mut outcomes = Vec::with_capacity(messages.len());
            let mut appended = Vec::with_capacity(messages.len());
            for message in messages {
                let stored = tx
                    .prepare_cached(&sql)?
                    .query_row(params![message.sender_id, message.client_msg_id], message_from_row)
                    .optional()?;
                match stored {
                    Some(stored) => outcomes.push(Some(AppendOutcome::Duplicate { message: stored })),
                    None => {
                        appended.push(insert_message(tx, message)?);
                        outcomes.push(None);
                    }
                }
            }
            let logged = log_appended(tx, &appended, &recipients)?;
            let mut appended = appended.into_iter().zip(logged);
            outcomes
                .into_iter()
                .map(|outcome| match outcome {
                    Some(duplicate) => Ok(duplicate),
                    None => appended
                        .next()
                        .map(|(message, seqs)| AppendOutcome::Appended { message, seqs })
                        .ok_or_else(|| backend("an appended message was not logged")),
                })
                .collect()
        })
        .await
    }

    async fn messages_before(
        &self,
        chat_id: i64,
        viewer: i64,
        before: Option<i64>,
        limit: u32,
    ) -> StorageResult<Vec<MessageRecord>> {
        let before = before.unwrap_or(i64::MAX);
        self.read(move |tx| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m
                 WHERE chat_id = ?1 AND id < ?2
                   AND id > (SELECT history_from FROM chat_members WHERE chat_id = ?1 AND user_id = ?3)
                   AND NOT EXISTS (SELECT 1 FROM hidden_messages h
                                   WHERE h.user_id = ?3 AND h.chat_id = m.chat_id AND h.message_id = m.id)
                 ORDER BY id DESC LIMIT ?4"
            );
            Ok(tx
                .prepare_cached(&sql)?
                .query_map(params![chat_id, before, viewer, limit], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn message(&self, chat_id: i64, message_id: i64) -> StorageResult<Option<MessageRecord>> {
        self.read(move |tx| match load_message(tx, chat_id, message_id) {
            Ok(message) => Ok(Some(message)),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        })
        .await
    }

    async fn edit_message(
        &self,
        chat_id: i64,
        message_id: i64,
        body: String,
        now_ms: i64,
        audience: &[i64],
    ) -> StorageResult<(MessageRecord, Vec<(i64, u64)>)> {
        let audience = audience.to_vec();
        self.write(move |tx| {
            load_message(tx, chat_id, message_id)?;
            tx.prepare_cached(
                "UPDATE messages SET body = ?3, edited_at_ms = ?4, edit_count = edit_count + 1
                 WHERE chat_id = ?1 AND id = ?2",
            )?
            .execute(params![chat_id, message_id, body, now_ms])?;
            let seqs = log_message_event(tx, UPDATE_EDIT, chat_id, message_id, &audience)?;
            Ok((load_message(tx, chat_id, message_id)?, seqs))
        })
        .await
    }

    async fn delete_message(
        &self,
        chat_id: i64,
        message_id: i64,
        now_ms: i64,
        audience: &[i64],
    ) -> StorageResult<Vec<(i64, u64)>> {
        let audience = audience.to_vec();
        self.write(move |tx| {
            load_message(tx, chat_id, message_id)?;
            tx.prepare_cached("UPDATE messages SET body = '', deleted_at_ms = ?3 WHERE chat_id = ?1 AND id = ?2")?
                .execute(params![chat_id, message_id, now_ms])?;
            log_message_event(tx, UPDATE_DELETE, chat_id, message_id, &audience)
        })
        .await
    }

    async fn hide_message(&self, user_id: i64, chat_id: i64, message_id: i64) -> StorageResult<Option<u64>> {
        self.write(move |tx| {
            load_message(tx, chat_id, message_id)?;
            let hidden = tx
                .prepare_cached(
                    "INSERT INTO hidden_messages (user_id, chat_id, message_id) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )?
                .execute([user_id, chat_id, message_id])?;
            if hidden == 0 {
                return Ok(None);
            }
            let seqs = log_message_event(tx, UPDATE_HIDE, chat_id, message_id, &[user_id])?;
            Ok(seqs.first().map(|(_, seq)| *seq))
        })
        .await
    }

    async fn updates_after(&self, user_id: i64, after: u64, limit: u32) -> StorageResult<Vec<UpdateRecord>> {
        // Seqs are stored as i64; nothing lies beyond i64::MAX.
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.read(move |tx| {
            let sql = format!(
                "SELECT u.seq, u.kind, u.other_id, u.relation, u.chat_id,
                        COALESCE(r.delivered_up_to, 0), COALESCE(r.seen_up_to, 0), COALESCE(u.run, 1), {}
                 FROM user_updates u
                 LEFT JOIN messages m ON m.chat_id = u.chat_id AND m.id = u.message_id
                 LEFT JOIN chat_members r ON u.kind = 'receipt' AND r.chat_id = u.chat_id AND r.user_id = u.other_id
                 WHERE u.user_id = ?1 AND u.seq > ?2
                 ORDER BY u.seq
                 LIMIT ?3",
                prefixed("m", MESSAGE_COLUMNS)
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![user_id, after, limit])?;
            let mut updates = Vec::new();
            while let Some(row) = rows.next()? {
                let seq: u64 = row.get(0)?;
                let kind: String = row.get(1)?;
                let run: u64 = row.get(7)?;
                let kind = match (kind.as_str(), optional_message_at(row, 8)?) {
                    (UPDATE_MESSAGE, Some(message)) if run > 1 => {
                        let messages = message_run(tx, &message, run)?;
                        let first = seq + 1 - run;
                        let entries = (first..).zip(messages).filter(|(seq, _)| *seq > after as u64);
                        updates.extend(
                            entries.map(|(seq, message)| UpdateRecord { seq, kind: UpdateKind::Message(message) }),
                        );
                        continue;
                    }
                    (UPDATE_MESSAGE, Some(message)) => UpdateKind::Message(message),
                    (UPDATE_EDIT, Some(message)) => UpdateKind::Edited(message),
                    (UPDATE_DELETE | UPDATE_HIDE, Some(message)) => UpdateKind::Deleted {
                        chat_id: message.chat_id,
                        message_id: message.id,
                        for_everyone: kind == UPDATE_DELETE,
                    },
                    (UPDATE_RECEIPT, _) => UpdateKind::Receipt {
                        chat_id: row.get(4)?,
                        receipt: ReceiptRecord {
                            user_id: row.get(2)?,
                            delivered_up_to: row.get(5)?,
                            seen_up_to: row.get(6)?,
                        },
                    },
                    (UPDATE_RELATION, _) => UpdateKind::Relation {
                        other: row.get(2)?,
                        relation: super::relations::parse_relation(&row.get::<_, String>(3)?)?,
                    },
                    (UPDATE_MESSAGE | UPDATE_EDIT | UPDATE_DELETE | UPDATE_HIDE, None) => {
                        return Err(backend(format!("update {seq} of user {user_id} names a missing message")));
                    }
                    (other, _) => {
                        return Err(backend(format!("unknown update kind {other:?} in sqlite store")));
                    }
                };
                updates.push(UpdateRecord { seq, kind });
            }
            // A run may have taken the batch past the limit.
            updates.truncate(limit as usize);
            Ok(updates)
        })
        .await
    }

    async fn latest_seq(&self, user_id: i64) -> StorageResult<u64> {
        self.quick_read(move |tx| {
            // The last entry's seq (a log is append-only); none yet: 0.
            let seq: Option<u64> = tx
                .prepare_cached("SELECT MAX(seq) FROM user_updates WHERE user_id = ?1")?
                .query_row([user_id], |row| row.get(0))?;
            Ok(seq.unwrap_or(0))
        })
        .await
    }

    async fn mark_read(
        &self,
        chat_id: i64,
        user_id: i64,
        up_to: i64,
        seen: bool,
    ) -> StorageResult<Option<ReceiptChange>> {
        self.write(move |tx| {
            let before = load_receipt(tx, chat_id, user_id)?
                .ok_or_else(|| StorageError::NotFound(format!("user {user_id} in chat {chat_id}")))?;
            tx.prepare_cached(
                "UPDATE chat_members
                 SET delivered_up_to = MAX(delivered_up_to, MIN(?3, COALESCE(c.last_message_id, 0))),
                     seen_up_to = CASE WHEN ?4 THEN MAX(seen_up_to, MIN(?3, COALESCE(c.last_message_id, 0)))
                                       ELSE seen_up_to END
                 FROM (SELECT last_message_id FROM chats WHERE id = ?1) AS c
                 WHERE chat_id = ?1 AND user_id = ?2",
            )?
            .execute(params![chat_id, user_id, up_to, seen])?;
            let receipt = load_receipt(tx, chat_id, user_id)?.unwrap_or(before);
            if receipt == before {
                return Ok(None);
            }
            let members = receipt_audience(tx, chat_id, before, receipt)?;
            let mut log = tx.prepare_cached(
                "INSERT INTO user_updates (user_id, seq, kind, chat_id, other_id) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut seqs = Vec::with_capacity(members.len());
            for member in members {
                let seq = next_seq(tx, member)?;
                log.execute(params![member, seq as i64, UPDATE_RECEIPT, chat_id, user_id])?;
                seqs.push((member, seq));
            }
            Ok(Some(ReceiptChange { receipt, seqs }))
        })
        .await
    }

    async fn receipts(&self, chat_id: i64) -> StorageResult<Vec<ReceiptRecord>> {
        self.read(move |tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT user_id, delivered_up_to, seen_up_to FROM chat_members
                     WHERE chat_id = ?1 ORDER BY user_id",
                )?
                .query_map([chat_id], |row| {
                    Ok(ReceiptRecord { user_id: row.get(0)?, delivered_up_to: row.get(1)?, seen_up_to: row.get(2)? })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn members(&self, chat_id: i64) -> StorageResult<Vec<MemberRecord>> {
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT user_id, role, joined_at_ms FROM chat_members WHERE chat_id = ?1 ORDER BY user_id",
            )?;
            let mut rows = stmt.query([chat_id])?;
            let mut members = Vec::new();
            while let Some(row) = rows.next()? {
                let role = parse_role(&row.get::<_, String>(1)?)?;
                members.push(MemberRecord { user_id: row.get(0)?, role, joined_at_ms: row.get(2)? });
            }
            Ok(members)
        })
        .await
    }

    async fn create_group(
        &self,
        group: NewGroup,
        event: NewMessage,
    ) -> StorageResult<Result<GroupChanged, GroupRefusal>> {
        self.write(move |tx| {
            if let Some(refusal) = over_group_limit(tx, &group.members, group.max_groups_per_user)? {
                return Ok(Err(refusal));
            }
            tx.prepare_cached("INSERT INTO chats (id, kind, created_at_ms) VALUES (?1, ?2, ?3)")?.execute(params![
                group.id,
                KIND_GROUP,
                group.created_at_ms
            ])?;
            tx.prepare_cached("INSERT INTO groups (chat_id, name, member_count) VALUES (?1, ?2, ?3)")?
                .execute(params![group.id, group.name, group.members.len() as i64])?;
            for &user_id in &group.members {
                let role = if user_id == group.owner { Role::Owner } else { Role::Member };
                add_member(tx, group.id, user_id, role, group.created_at_ms)?;
            }
            Ok(Ok(record_group_event(tx, group.id, &[], event, None)?))
        })
        .await
    }

    async fn change_group(
        &self,
        chat_id: i64,
        change: GroupChange,
        event: NewMessage,
    ) -> StorageResult<Result<GroupChanged, GroupRefusal>> {
        self.write(move |tx| {
            let before = load_chat(tx, chat_id)?
                .filter(|chat| chat.kind == ChatKind::Group)
                .ok_or_else(|| StorageError::NotFound(format!("group {chat_id}")))?;
            let previous_avatar = match apply_group_change(tx, &before, change, event.sent_at_ms)? {
                Ok(previous_avatar) => previous_avatar,
                Err(refusal) => return Ok(Err(refusal)),
            };
            Ok(Ok(record_group_event(tx, chat_id, &before.members, event, previous_avatar)?))
        })
        .await
    }
}

/// Who hears of a reader's watermarks moving from `before` to `after`: in
/// a 1:1 chat both members; in a group the reader and the current members
/// who sent a message in the range the move covers.
fn receipt_audience(
    conn: &Connection,
    chat_id: i64,
    before: ReceiptRecord,
    after: ReceiptRecord,
) -> StorageResult<Vec<i64>> {
    let kind: String =
        conn.prepare_cached("SELECT kind FROM chats WHERE id = ?1")?.query_row([chat_id], |row| row.get(0))?;
    let mut audience = if chat_kind(&kind)? == ChatKind::Group {
        // The covered range: from the lowest watermark that moved to the highest.
        let moved = [(before.delivered_up_to, after.delivered_up_to), (before.seen_up_to, after.seen_up_to)];
        let moved = moved.iter().filter(|(old, new)| old != new);
        let low = moved.clone().map(|(old, _)| *old).min().unwrap_or(0);
        let high = moved.map(|(_, new)| *new).max().unwrap_or(0);
        conn.prepare_cached(
            "SELECT DISTINCT m.sender_id FROM messages m
             JOIN chat_members c ON c.chat_id = m.chat_id AND c.user_id = m.sender_id
             WHERE m.chat_id = ?1 AND m.id > ?2 AND m.id <= ?3",
        )?
        .query_map([chat_id, low, high], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?
    } else {
        conn.prepare_cached("SELECT user_id FROM chat_members WHERE chat_id = ?1")?
            .query_map([chat_id], |row| row.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?
    };
    audience.push(after.user_id);
    audience.sort_unstable();
    audience.dedup();
    Ok(audience)
}

/// `"a, b"` with `prefix` `t` becomes `"t.a, t.b"`.
fn prefixed(prefix: &str, columns: &str) -> String {
    columns.split(", ").map(|column| format!("{prefix}.{column}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes_columns() {
        assert_eq!(super::prefixed("m", "a, b, c"), "m.a, m.b, m.c");
    }
}
