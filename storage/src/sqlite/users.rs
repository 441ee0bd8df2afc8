//! Users and their credentials in SQLite.

use super::*;

const USER_COLUMNS: &str = "id, username, display_name, password_hash, pepper_version, created_at_ms";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        username: row.get(1)?,
        display_name: row.get(2)?,
        password_hash: row.get(3)?,
        pepper_version: row.get(4)?,
        created_at_ms: row.get(5)?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StorageResult<UserRecord> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO users (id, username, username_key, display_name, password_hash, pepper_version, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                user.id,
                user.username,
                user.username_key,
                user.display_name,
                user.password_hash,
                user.pepper_version,
                user.created_at_ms
            ])?;
            Ok(UserRecord {
                id: user.id,
                username: user.username,
                display_name: user.display_name,
                password_hash: user.password_hash,
                pepper_version: user.pepper_version,
                created_at_ms: user.created_at_ms,
            })
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
}
