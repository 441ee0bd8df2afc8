//! Chats, members, messages and update logs in SQLite.

use super::*;

/// Columns a message is read from, in [`message_at`]'s order.
const MESSAGE_COLUMNS: &str =
    "chat_id, id, sender_id, client_msg_id, body, sent_at_ms, edited_at_ms, edit_count, deleted_at_ms";

/// Columns a new message is written to.
const NEW_MESSAGE_COLUMNS: &str = "chat_id, id, sender_id, client_msg_id, body, sent_at_ms";

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
    let mut log = conn.prepare_cached(
        "INSERT INTO user_updates (user_id, seq, kind, chat_id, message_id) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut seqs = Vec::with_capacity(users.len());
    for &user_id in users {
        let seq = next_seq(conn, user_id)?;
        log.execute(params![user_id, seq as i64, kind, chat_id, message_id])?;
        seqs.push((user_id, seq));
    }
    Ok(seqs)
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
        other => Err(backend(format!("unknown chat kind {other:?} in sqlite store"))),
    }
}

/// The chat with its members, if it exists.
fn load_chat(conn: &Connection, chat_id: i64) -> StorageResult<Option<ChatRecord>> {
    let chat = conn
        .prepare_cached("SELECT kind, created_at_ms FROM chats WHERE id = ?1")?
        .query_row([chat_id], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
        .optional()?;
    let Some((kind, created_at_ms)) = chat else {
        return Ok(None);
    };
    let members = conn
        .prepare_cached("SELECT user_id FROM chat_members WHERE chat_id = ?1 ORDER BY user_id")?
        .query_map([chat_id], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(Some(ChatRecord { id: chat_id, kind: chat_kind(&kind)?, members, created_at_ms }))
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
            let mut add_member = tx.prepare_cached("INSERT INTO chat_members (chat_id, user_id) VALUES (?1, ?2)")?;
            for &user_id in &members {
                add_member.execute([new_id, user_id])?;
            }
            Ok(ChatRecord { id: new_id, kind: ChatKind::Direct, members, created_at_ms: now_ms })
        })
        .await
    }

    async fn chat(&self, chat_id: i64) -> StorageResult<Option<ChatRecord>> {
        self.read(move |tx| load_chat(tx, chat_id)).await
    }

    async fn chats_of_user(&self, user_id: i64) -> StorageResult<Vec<ChatOverview>> {
        self.read(move |tx| {
            // Two queries for any number of chats: every member of the
            // user's chats, then the chats with their newest message.
            let mut members: HashMap<i64, Vec<ReceiptRecord>> = HashMap::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT other.chat_id, other.user_id, other.delivered_up_to, other.seen_up_to
                     FROM chat_members mine JOIN chat_members other ON other.chat_id = mine.chat_id
                     WHERE mine.user_id = ?1
                     ORDER BY other.chat_id, other.user_id",
                )?;
                let mut rows = stmt.query([user_id])?;
                while let Some(row) = rows.next()? {
                    let receipt =
                        ReceiptRecord { user_id: row.get(1)?, delivered_up_to: row.get(2)?, seen_up_to: row.get(3)? };
                    members.entry(row.get(0)?).or_default().push(receipt);
                }
            }
            // Unread: others' messages after the user's seen watermark.
            let unread: HashMap<i64, u32> = tx
                .prepare_cached(
                    "SELECT mine.chat_id, COUNT(m.id)
                     FROM chat_members mine
                     JOIN messages m ON m.chat_id = mine.chat_id AND m.id > mine.seen_up_to
                     WHERE mine.user_id = ?1 AND m.sender_id <> ?1 AND m.deleted_at_ms IS NULL
                       AND NOT EXISTS (SELECT 1 FROM hidden_messages h
                                       WHERE h.user_id = ?1 AND h.chat_id = m.chat_id AND h.message_id = m.id)
                     GROUP BY mine.chat_id",
                )?
                .query_map([user_id], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;

            // Last activity: the newest message's time, or the chat's
            // creation for a chat without messages; IDs break ties.
            let sql = format!(
                "SELECT c.id, c.kind, c.created_at_ms, {}
                 FROM chat_members mine
                 JOIN chats c ON c.id = mine.chat_id
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
                chats.push(ChatOverview {
                    chat: ChatRecord {
                        id,
                        kind: chat_kind(&kind)?,
                        members: receipts.iter().map(|r| r.user_id).collect(),
                        created_at_ms: row.get(2)?,
                    },
                    last_message: optional_message_at(row, 3)?,
                    unread: unread.get(&id).copied().unwrap_or(0),
                    receipts,
                });
            }
            Ok(chats)
        })
        .await
    }

    async fn append_message(&self, message: NewMessage, audience: &[i64]) -> StorageResult<AppendOutcome> {
        // One update per user, even if the caller names someone twice.
        let mut recipients: Vec<i64> = Vec::with_capacity(audience.len());
        for &user_id in audience {
            if !recipients.contains(&user_id) {
                recipients.push(user_id);
            }
        }
        self.write(move |tx| {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ?1 AND client_msg_id = ?2");
            let stored = tx
                .prepare_cached(&sql)?
                .query_row(params![message.sender_id, message.client_msg_id], message_from_row)
                .optional()?;
            if let Some(stored) = stored {
                return Ok(AppendOutcome::Duplicate { message: stored });
            }

            let chats = tx
                .prepare_cached(
                    "UPDATE chats SET last_message_id = MAX(COALESCE(last_message_id, ?2), ?2) WHERE id = ?1",
                )?
                .execute([message.chat_id, message.id])?;
            if chats == 0 {
                return Err(StorageError::NotFound(format!("chat {}", message.chat_id)));
            }
            let sql = format!("INSERT INTO messages ({NEW_MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
            tx.prepare_cached(&sql)?.execute(params![
                message.chat_id,
                message.id,
                message.sender_id,
                message.client_msg_id,
                message.body,
                message.sent_at_ms
            ])?;

            let seqs = log_message_event(tx, UPDATE_MESSAGE, message.chat_id, message.id, &recipients)?;
            let message = MessageRecord {
                id: message.id,
                chat_id: message.chat_id,
                sender_id: message.sender_id,
                client_msg_id: message.client_msg_id,
                body: message.body,
                sent_at_ms: message.sent_at_ms,
                edited_at_ms: None,
                edit_count: 0,
                deleted_at_ms: None,
            };
            Ok(AppendOutcome::Appended { message, seqs })
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
                        COALESCE(r.delivered_up_to, 0), COALESCE(r.seen_up_to, 0), {}
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
                let kind = match (kind.as_str(), optional_message_at(row, 7)?) {
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
            Ok(updates)
        })
        .await
    }

    async fn latest_seq(&self, user_id: i64) -> StorageResult<u64> {
        self.read(move |tx| {
            let seq: Option<u64> = tx
                .prepare_cached("SELECT update_seq FROM users WHERE id = ?1")?
                .query_row([user_id], |row| row.get(0))
                .optional()?;
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
            let members = tx
                .prepare_cached("SELECT user_id FROM chat_members WHERE chat_id = ?1 ORDER BY user_id")?
                .query_map([chat_id], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
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
