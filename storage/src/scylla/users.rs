//! Users, username claims and the prefix table for user search in Scylla.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;

use super::rows::{self, SearchKeys, UserRow, choice_name};
use super::statements::*;
use super::{SEARCH_CANDIDATES, SEARCH_PREFIX_CHARS, ScyllaStore, Writes, micros};
use crate::*;

/// The `user_search` partitions a user is found under: prefixes of the
/// username key, and of the display-name key from each word on.
pub(super) fn search_prefixes(username_key: &str, display_name_key: &str) -> BTreeSet<String> {
    let word_starts = display_name_key
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || display_name_key[..i].ends_with(' ')))
        .map(|(i, _)| &display_name_key[i..]);
    std::iter::once(username_key)
        .chain(word_starts)
        .flat_map(|text| {
            text.char_indices()
                .skip(1)
                .map(|(end, _)| &text[..end])
                .chain(std::iter::once(text))
                .take(SEARCH_PREFIX_CHARS)
        })
        .map(str::trim_end)
        .filter(|prefix| !prefix.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The partition a query's key is looked up in.
fn search_partition(key: &str) -> &str {
    key.char_indices().nth(SEARCH_PREFIX_CHARS).map_or(key, |(end, _)| &key[..end]).trim_end()
}

/// How well a user matches `key`: 0 exact, 1 prefix (of a name or of a
/// word of the display name), 2 substring; `None` for no match.
fn rank(key: &str, username_key: &str, display_name_key: &str) -> Option<u8> {
    if username_key == key || display_name_key == key {
        Some(0)
    } else if username_key.starts_with(key)
        || display_name_key.starts_with(key)
        || display_name_key.contains(&format!(" {key}"))
    {
        Some(1)
    } else if username_key.contains(key) || display_name_key.contains(key) {
        Some(2)
    } else {
        None
    }
}

impl ScyllaStore {
    /// The user and its display-name key, if it exists.
    pub(super) async fn load_user(&self, user_id: i64) -> StorageResult<Option<(UserRecord, SearchKeys)>> {
        self.row::<1, UserRow>(USER_SELECT, (user_id,)).await?.map(rows::user_record).transpose()
    }

    /// The user, or [`StorageError::NotFound`].
    pub(super) async fn existing_user(&self, user_id: i64) -> StorageResult<UserRecord> {
        self.load_user(user_id)
            .await?
            .map(|(user, _)| user)
            .ok_or_else(|| StorageError::NotFound(format!("user {user_id}")))
    }

    /// [`StorageError::NotFound`] unless every one of `users` exists.
    pub(super) async fn require_users(&self, users: &[i64]) -> StorageResult<()> {
        self.for_each(users.iter().copied(), |user| self.existing_user(user)).await.map(drop)
    }
}

#[async_trait]
impl UserStore for ScyllaStore {
    async fn create_user(&self, user: NewUser) -> StorageResult<UserRecord> {
        let claim = self.lwt(USERNAME_CLAIM, (user.username_key.clone(), user.id)).await?;
        // A claim for the same ID is a retry of this call after a failure.
        if !claim.applied && claim.bigint("user_id") != Some(user.id) {
            return Err(StorageError::Conflict(format!("username {:?} is taken", user.username_key)));
        }
        let display_name_key = search_key(&user.display_name);
        let mut writes = Writes::default();
        writes.push(
            USER_INSERT,
            (
                user.id,
                user.username.clone(),
                user.username_key.clone(),
                user.display_name.clone(),
                display_name_key.clone(),
                user.password_hash.clone(),
                i64::from(user.pepper_version),
                user.created_at_ms,
                String::new(),
                choice_name(PresenceChoice::default()),
                String::new(),
            ),
        );
        for prefix in search_prefixes(&user.username_key, &display_name_key) {
            writes.push(SEARCH_INSERT, (prefix, user.id));
        }
        self.write(writes).await?;
        Ok(user.into_record())
    }

    async fn user_by_username(&self, username_key: &str) -> StorageResult<Option<UserRecord>> {
        match self.row::<1, (i64,)>(USERNAME_SELECT, (username_key.to_owned(),)).await? {
            Some((user_id,)) => Ok(self.load_user(user_id).await?.map(|(user, _)| user)),
            None => Ok(None),
        }
    }

    async fn user_by_id(&self, id: i64) -> StorageResult<Option<UserRecord>> {
        Ok(self.load_user(id).await?.map(|(user, _)| user))
    }

    async fn users_by_ids(&self, ids: &[i64]) -> StorageResult<Vec<UserRecord>> {
        let ids: BTreeSet<i64> = ids.iter().copied().collect();
        let found = self.for_each(ids, |id| self.load_user(id)).await?;
        Ok(found.into_iter().flatten().map(|(user, _)| user).collect())
    }

    async fn set_password_hash(&self, user_id: i64, password_hash: String, pepper_version: u32) -> StorageResult<()> {
        // Users are never deleted: once read, the row stays.
        self.existing_user(user_id).await?;
        self.execute(USER_SET_PASSWORD, (password_hash, i64::from(pepper_version), user_id)).await.map(drop)
    }

    async fn update_profile(&self, user_id: i64, update: ProfileUpdate) -> StorageResult<UserRecord> {
        let (_, keys) =
            self.load_user(user_id).await?.ok_or_else(|| StorageError::NotFound(format!("user {user_id}")))?;
        let mut writes = Writes::default();
        if let Some(display_name) = &update.display_name {
            let new_key = search_key(display_name);
            writes.push(USER_SET_DISPLAY_NAME, (display_name.clone(), new_key.clone(), user_id));
            let old = search_prefixes(&keys.username, &keys.display_name);
            let new = search_prefixes(&keys.username, &new_key);
            for gone in old.difference(&new) {
                writes.push(SEARCH_DELETE, (gone.clone(), user_id));
            }
            for added in new.difference(&old) {
                writes.push(SEARCH_INSERT, (added.clone(), user_id));
            }
        }
        if let Some(bio) = &update.bio {
            writes.push(USER_SET_BIO, (bio.clone(), user_id));
        }
        self.write(writes).await?;
        self.existing_user(user_id).await
    }

    async fn set_presence(&self, user_id: i64, choice: PresenceChoice, status_text: String) -> StorageResult<()> {
        self.existing_user(user_id).await?;
        self.execute(USER_SET_PRESENCE, (choice_name(choice), status_text, user_id)).await.map(drop)
    }

    async fn set_last_seen(&self, user_id: i64, last_seen_ms: i64) -> StorageResult<()> {
        // An unknown user is ignored, as with SQLite; an UPDATE would create a row.
        if self.load_user(user_id).await?.is_some() {
            self.execute(USER_SET_LAST_SEEN, (micros(last_seen_ms), last_seen_ms, user_id)).await?;
        }
        Ok(())
    }

    async fn set_avatar(&self, user_id: i64, avatar: Option<String>) -> StorageResult<Option<String>> {
        let previous = self.existing_user(user_id).await?.avatar;
        self.execute(USER_SET_AVATAR, (avatar, user_id)).await?;
        Ok(previous)
    }

    async fn search_users(&self, search: UserSearch) -> StorageResult<Vec<UserRecord>> {
        if search.key.is_empty() || search.limit == 0 {
            return Ok(Vec::new());
        }
        let mut candidates = Vec::new();
        self.scan::<1, (i64,)>(SEARCH_SELECT, (search_partition(&search.key).to_owned(),), |(user_id,)| {
            candidates.push(user_id);
            Ok(candidates.len() < SEARCH_CANDIDATES)
        })
        .await?;
        candidates.retain(|&id| id != search.searcher);
        let users = self.for_each(candidates, |id| self.load_user(id)).await?;
        let mut ranked: Vec<(u8, String, UserRecord)> = users
            .into_iter()
            .flatten()
            .filter_map(|(user, keys)| {
                rank(&search.key, &keys.username, &keys.display_name).map(|rank| (rank, keys.username, user))
            })
            .collect();
        ranked.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let ids: Vec<i64> = ranked.iter().map(|(_, _, user)| user.id).collect();
        let views = self.for_each(ids, |id| self.view(search.searcher, id)).await?;
        let blocked_by: HashMap<i64, bool> =
            ranked.iter().zip(views).map(|((_, _, user), view)| (user.id, view.blocked_by)).collect();
        Ok(ranked
            .into_iter()
            .map(|(_, _, user)| user)
            .filter(|user| !blocked_by.get(&user.id).copied().unwrap_or(false))
            .skip(search.offset as usize)
            .take(search.limit as usize)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_the_username_and_each_word_of_the_display_name() {
        let prefixes = search_prefixes("bob", "ann lee");
        let expected = ["a", "an", "ann", "ann l", "ann le", "ann lee", "b", "bo", "bob", "l", "le", "lee"];
        assert_eq!(prefixes, expected.iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn prefixes_stop_at_the_indexed_length_and_count_characters() {
        let long = "é".repeat(SEARCH_PREFIX_CHARS + 5);
        let prefixes = search_prefixes(&long, "");
        assert_eq!(prefixes.len(), SEARCH_PREFIX_CHARS);
        assert!(prefixes.iter().all(|p| p.chars().count() <= SEARCH_PREFIX_CHARS));
        assert_eq!(search_partition(&long).chars().count(), SEARCH_PREFIX_CHARS);
        assert_eq!(search_partition("al"), "al");
    }

    #[test]
    fn ranking_is_exact_then_prefix_then_substring() {
        assert_eq!(rank("ann", "ann", "x"), Some(0));
        assert_eq!(rank("ann", "annie", "x"), Some(1));
        assert_eq!(rank("lee", "bob", "ann lee"), Some(1));
        assert_eq!(rank("nn", "ann", "x"), Some(2));
        assert_eq!(rank("zed", "ann", "x"), None);
    }
}
