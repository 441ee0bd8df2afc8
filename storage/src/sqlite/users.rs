//! Users and their credentials in SQLite.

use super::*;

pub(super) const USER_COLUMNS: &str = "id, username, display_name, password_hash, pepper_version, created_at_ms, \
     bio, avatar, email, phone, presence_choice, status_text, last_seen_ms";

pub(super) fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        username: row.get(1)?,
        display_name: row.get(2)?,
        password_hash: row.get(3)?,
        pepper_version: row.get(4)?,
        created_at_ms: row.get(5)?,
        bio: row.get(6)?,
        avatar: row.get(7)?,
        email: row.get(8)?,
        phone: row.get(9)?,
        presence: parse_choice(&row.get::<_, String>(10)?)?,
        status_text: row.get(11)?,
        last_seen_ms: row.get(12)?,
    })
}

fn parse_choice(choice: &str) -> rusqlite::Result<PresenceChoice> {
    match choice {
        "auto" => Ok(PresenceChoice::Auto),
        "away" => Ok(PresenceChoice::Away),
        "busy" => Ok(PresenceChoice::Busy),
        "invisible" => Ok(PresenceChoice::Invisible),
        other => {
            Err(rusqlite::Error::InvalidColumnType(10, format!("presence {other:?}"), rusqlite::types::Type::Text))
        }
    }
}

fn choice_name(choice: PresenceChoice) -> &'static str {
    match choice {
        PresenceChoice::Auto => "auto",
        PresenceChoice::Away => "away",
        PresenceChoice::Busy => "busy",
        PresenceChoice::Invisible => "invisible",
    }
}

/// The user as stored, or [`StorageError::NotFound`].
pub(super) fn load_user(conn: &Connection, user_id: i64) -> StorageResult<UserRecord> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([user_id], user_from_row)
        .optional()?
        .ok_or_else(|| StorageError::NotFound(format!("user {user_id}")))
}

/// Ranked search: candidates from the trigram index (queries of three or
/// more characters) or from the key indexes by prefix (shorter queries),
/// then ordered exact > prefix > substring.
const SEARCH_SQL: &str = "
WITH candidates (id) AS (
    SELECT rowid FROM user_search WHERE ?5 AND user_search MATCH ?2
    UNION
    SELECT id FROM users WHERE NOT ?5 AND username_key >= ?1 AND username_key < ?1 || char(1114111)
    UNION
    SELECT id FROM users WHERE NOT ?5 AND display_name_key >= ?1 AND display_name_key < ?1 || char(1114111)
)
SELECT u.id, u.username, u.display_name, u.password_hash, u.pepper_version, u.created_at_ms,
       u.bio, u.avatar, u.email, u.phone, u.presence_choice, u.status_text, u.last_seen_ms,
       CASE
           WHEN u.username_key = ?1 OR u.display_name_key = ?1 THEN 0
           WHEN substr(u.username_key, 1, length(?1)) = ?1 OR substr(u.display_name_key, 1, length(?1)) = ?1
                OR instr(u.display_name_key, ' ' || ?1) > 0 THEN 1
           ELSE 2
       END AS rank
FROM candidates c JOIN users u ON u.id = c.id
WHERE u.id <> ?3
  AND (instr(u.username_key, ?1) > 0 OR instr(u.display_name_key, ?1) > 0)
  AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocked_id = ?3 AND b.blocker_id = u.id)
ORDER BY rank, u.username_key
LIMIT ?4 OFFSET ?6";

/// Queries shorter than this (in characters) match prefixes only: the
/// trigram index needs three characters.
const TRIGRAM_MIN_CHARS: usize = 3;

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StorageResult<UserRecord> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO users (id, username, username_key, display_name, password_hash, pepper_version,
                                    created_at_ms, display_name_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                user.id,
                user.username,
                user.username_key,
                user.display_name,
                user.password_hash,
                user.pepper_version,
                user.created_at_ms,
                search_key(&user.display_name)
            ])?;
            Ok(user.into_record())
        })
        .await
    }

    async fn user_by_username(&self, username_key: &str) -> StorageResult<Option<UserRecord>> {
        let key = username_key.to_owned();
        self.read(move |tx| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = ?1");
            Ok(tx.prepare_cached(&sql)?.query_row([key], user_from_row).optional()?)
        })
        .await
    }

    async fn user_by_id(&self, id: i64) -> StorageResult<Option<UserRecord>> {
        self.read(move |tx| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
            Ok(tx.prepare_cached(&sql)?.query_row([id], user_from_row).optional()?)
        })
        .await
    }

    async fn users_by_ids(&self, ids: &[i64]) -> StorageResult<Vec<UserRecord>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Point lookups on one prepared statement in one snapshot: cheap in
        // an embedded database, and no limit on the number of IDs.
        self.read(move |tx| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut users = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(user) = stmt.query_row([id], user_from_row).optional()? {
                    users.push(user);
                }
            }
            Ok(users)
        })
        .await
    }

    async fn set_password_hash(&self, user_id: i64, password_hash: String, pepper_version: u32) -> StorageResult<()> {
        self.write(move |tx| {
            let changed = tx
                .prepare_cached("UPDATE users SET password_hash = ?2, pepper_version = ?3 WHERE id = ?1")?
                .execute(params![user_id, password_hash, pepper_version])?;
            if changed == 0 {
                return Err(StorageError::NotFound(format!("user {user_id}")));
            }
            Ok(())
        })
        .await
    }

    async fn update_profile(&self, user_id: i64, update: ProfileUpdate) -> StorageResult<UserRecord> {
        self.write(move |tx| {
            if let Some(display_name) = &update.display_name {
                tx.prepare_cached("UPDATE users SET display_name = ?2, display_name_key = ?3 WHERE id = ?1")?
                    .execute(params![user_id, display_name, search_key(display_name)])?;
            }
            if let Some(bio) = &update.bio {
                tx.prepare_cached("UPDATE users SET bio = ?2 WHERE id = ?1")?.execute(params![user_id, bio])?;
            }
            load_user(tx, user_id)
        })
        .await
    }

    async fn set_avatar(&self, user_id: i64, avatar: Option<String>) -> StorageResult<Option<String>> {
        self.write(move |tx| {
            let previous = load_user(tx, user_id)?.avatar;
            tx.prepare_cached("UPDATE users SET avatar = ?2 WHERE id = ?1")?.execute(params![user_id, avatar])?;
            Ok(previous)
        })
        .await
    }

    async fn set_presence(&self, user_id: i64, choice: PresenceChoice, status_text: String) -> StorageResult<()> {
        self.write(move |tx| {
            let changed = tx
                .prepare_cached("UPDATE users SET presence_choice = ?2, status_text = ?3 WHERE id = ?1")?
                .execute(params![user_id, choice_name(choice), status_text])?;
            if changed == 0 {
                return Err(StorageError::NotFound(format!("user {user_id}")));
            }
            Ok(())
        })
        .await
    }

    async fn set_last_seen(&self, user_id: i64, last_seen_ms: i64) -> StorageResult<()> {
        self.write(move |tx| {
            tx.prepare_cached("UPDATE users SET last_seen_ms = MAX(COALESCE(last_seen_ms, ?2), ?2) WHERE id = ?1")?
                .execute([user_id, last_seen_ms])?;
            Ok(())
        })
        .await
    }

    async fn search_users(&self, search: UserSearch) -> StorageResult<Vec<UserRecord>> {
        self.read(move |tx| {
            if search.key.is_empty() || search.limit == 0 {
                return Ok(Vec::new());
            }
            let use_index = search.key.chars().count() >= TRIGRAM_MIN_CHARS;
            // An FTS5 string literal: the whole key as one phrase.
            let phrase = format!("\"{}\"", search.key.replace('"', "\"\""));
            let rows = tx
                .prepare_cached(SEARCH_SQL)?
                .query_map(
                    params![search.key, phrase, search.searcher, search.limit, use_index, search.offset],
                    user_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}
