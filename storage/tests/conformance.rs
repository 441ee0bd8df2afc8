//! The storage contract, written once and run against every backend.
//!
//! Each behaviour is an async function in [`suite`]; [`backend_tests!`]
//! turns the whole list into `#[tokio::test]`s for one backend. A new
//! backend adds a [`Harness`] and one `backend_tests!` line.
//!
//! The Scylla instantiation needs a cluster: set `PARLEY_TEST_SCYLLA` to a
//! node's `host:port` when building the tests. Without it (no CQL server
//! can run on our machines) `build.rs` leaves those tests out, so none
//! passes without running; the harness is still compiled.

use storage::{StorageConfig, StorageResult, Stores};

type Error = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), Error>;

/// A place where a backend keeps its data. Each test gets a fresh one;
/// opening it again (after dropping the stores) sees the same data.
trait Harness: Sized + Send + Sync + 'static {
    async fn new() -> StorageResult<Self>;
    async fn open(&self) -> StorageResult<Stores>;
    /// Removes the data (after the stores are dropped).
    async fn cleanup(self) -> StorageResult<()> {
        Ok(())
    }
}

/// SQLite in a temporary data directory.
struct SqliteHarness {
    dir: tempfile::TempDir,
}

impl Harness for SqliteHarness {
    async fn new() -> StorageResult<Self> {
        let dir = tempfile::tempdir().map_err(|e| storage::StorageError::Backend(Box::new(e)))?;
        Ok(SqliteHarness { dir })
    }

    async fn open(&self) -> StorageResult<Stores> {
        storage::open(&StorageConfig::default(), self.dir.path())
    }
}

/// Environment variable naming a Scylla node (`host:port`) to test against.
#[cfg_attr(not(parley_test_scylla), allow(dead_code))]
const SCYLLA_ENV: &str = "PARLEY_TEST_SCYLLA";

/// A fresh keyspace per test on the cluster `PARLEY_TEST_SCYLLA` names,
/// dropped afterwards; media in a temporary data directory.
#[cfg_attr(not(parley_test_scylla), allow(dead_code))]
struct ScyllaHarness {
    config: storage::scylla::ScyllaConfig,
    dir: tempfile::TempDir,
}

#[cfg_attr(not(parley_test_scylla), allow(dead_code))]
impl Harness for ScyllaHarness {
    async fn new() -> StorageResult<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let node = std::env::var(SCYLLA_ENV).map_err(|e| storage::StorageError::Backend(Box::new(e)))?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = storage::scylla::ScyllaConfig {
            nodes: vec![node],
            keyspace: format!("parley_test_{}_{n}_{nanos}", std::process::id()),
            replication_factor: 1,
            ..Default::default()
        };
        let dir = tempfile::tempdir().map_err(|e| storage::StorageError::Backend(Box::new(e)))?;
        Ok(ScyllaHarness { config, dir })
    }

    async fn open(&self) -> StorageResult<Stores> {
        storage::open_scylla(&self.config, self.dir.path()).await
    }

    async fn cleanup(self) -> StorageResult<()> {
        let backend = |e: Box<dyn std::error::Error + Send + Sync>| storage::StorageError::Backend(e);
        let session = ::scylla::client::session_builder::SessionBuilder::new()
            .known_nodes(&self.config.nodes)
            .build()
            .await
            .map_err(|e| backend(Box::new(e)))?;
        let drop = format!("DROP KEYSPACE IF EXISTS {}", self.config.keyspace);
        session.query_unpaged(drop, ()).await.map_err(|e| backend(Box::new(e)))?;
        Ok(())
    }
}

/// Instantiates every behaviour of [`suite`] for one backend, as module
/// `$backend`.
macro_rules! backend_tests {
    ($backend:ident, $harness:ty) => {
        mod $backend {
            use super::*;

            with_stores!($harness;
                users_are_created_and_looked_up,
                username_conflict_writes_nothing,
                users_by_ids_returns_those_that_exist,
                password_hashes_are_replaced,
                rotation_consumes_the_token_and_stores_the_next,
                reuse_revokes_the_family,
                expired_token_changes_nothing,
                unknown_token_changes_nothing,
                logout_revokes_the_family,
                logging_out_other_devices_keeps_only_this_one,
                revoked_families_are_listed_by_the_time_of_their_first_revocation,
                direct_chat_is_idempotent_and_symmetric,
                concurrent_direct_chats_agree,
                append_assigns_consecutive_seqs_per_user,
                duplicate_append_returns_the_original_and_writes_nothing,
                a_batch_of_appends_is_one_step_in_order,
                a_batch_replays_one_update_per_message_from_any_seq,
                append_to_unknown_chat_is_not_found,
                messages_page_newest_first_without_gaps,
                updates_come_in_seq_order_with_limit,
                chats_are_listed_by_last_activity,
                receipts_are_monotonic_capped_and_logged_for_every_member,
                relations_with_many_users_in_one_read,
                unread_counts_follow_the_seen_watermark,
                edits_replace_the_text_and_reach_every_log,
                deletion_for_everyone_leaves_a_tombstone,
                hiding_is_for_one_user_only,
                clock_high_water_never_lowers,
                ping_answers,
                contact_change_takes_effect_on_confirm_and_only_once,
                wrong_codes_count_until_the_challenge_locks,
                expired_challenges_are_deleted,
                confirmed_contacts_are_unique_per_channel,
                contacts_are_cleared_and_unknown_users_refused,
                groups_are_created_with_roles_and_an_event_for_everyone,
                group_changes_log_to_members_before_and_after,
                new_members_see_history_from_their_join,
                group_limits_refuse_and_write_nothing,
                group_receipts_reach_the_reader_and_the_senders_they_cover,
                group_overviews_carry_the_group_without_every_member,
                presence_settings_and_last_seen_are_kept,
                presence_peers_are_friends_and_group_members_without_blocks,
            );
            with_harness!($harness;
                data_survives_reopen,
                clock_high_water_survives_reopen,
            );
        }
    };
}

/// Tests that need one open set of stores.
macro_rules! with_stores {
    ($harness:ty; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() -> TestResult {
            let harness = <$harness as Harness>::new().await?;
            let stores = harness.open().await?;
            let outcome = suite::$name(&stores).await;
            drop(stores);
            harness.cleanup().await?;
            outcome
        }
    )*};
}

/// Tests that open the backend's data more than once.
macro_rules! with_harness {
    ($harness:ty; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() -> TestResult {
            let harness = <$harness as Harness>::new().await?;
            let outcome = suite::$name(&harness).await;
            harness.cleanup().await?;
            outcome
        }
    )*};
}

backend_tests!(sqlite, SqliteHarness);
#[cfg(parley_test_scylla)]
backend_tests!(scylla, ScyllaHarness);

/// The behaviours every backend must show.
mod suite {
    use storage::{
        AppendOutcome, ChatKind, ChatRecord, EndedFamily, GroupChange, GroupChanged, GroupRefusal, MessageRecord,
        NewGroup, NewMessage, NewRefreshToken, NewTokenFamily, NewUser, PresenceChoice, PresencePeer, ReceiptRecord,
        Relation, RelationAction, RevokedFamily, Role, RotateOutcome, StorageError, StorageResult, Stores, TokenHash,
        UpdateKind, UserRecord,
    };

    use super::{Error, Harness, TestResult};

    // ------------------------------------------------------------ fixtures

    fn new_user(id: i64, username: &str) -> NewUser {
        NewUser {
            id,
            username: username.to_owned(),
            username_key: username.to_lowercase(),
            display_name: format!("{username} (display)"),
            password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt{id}$hash{id}"),
            pepper_version: 3,
            created_at_ms: 1_000 + id,
        }
    }

    fn record(user: &NewUser) -> UserRecord {
        UserRecord {
            id: user.id,
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            password_hash: user.password_hash.clone(),
            pepper_version: user.pepper_version,
            created_at_ms: user.created_at_ms,
            bio: String::new(),
            avatar: None,
            email: None,
            phone: None,
            presence: PresenceChoice::default(),
            status_text: String::new(),
            last_seen_ms: None,
        }
    }

    /// Creates users `user1`, `user2`, … for the given IDs.
    async fn users(stores: &Stores, ids: &[i64]) -> StorageResult<()> {
        for &id in ids {
            stores.users.create_user(new_user(id, &format!("user{id}"))).await?;
        }
        Ok(())
    }

    fn hash(n: u8) -> TokenHash {
        [n; 32]
    }

    fn token(n: u8, expires_at_ms: i64) -> NewRefreshToken {
        NewRefreshToken { hash: hash(n), expires_at_ms, created_at_ms: 0 }
    }

    async fn family(stores: &Stores, id: i64, user_id: i64, first: u8) -> StorageResult<()> {
        stores.tokens.create_family(NewTokenFamily { id, user_id, created_at_ms: 0 }, token(first, 10_000)).await
    }

    fn message(id: i64, chat_id: i64, sender_id: i64, client_msg_id: &str) -> NewMessage {
        NewMessage {
            id,
            chat_id,
            sender_id,
            client_msg_id: client_msg_id.to_owned(),
            body: format!("body of {id}"),
            sent_at_ms: id,
            event: None,
        }
    }

    fn stored(message: &NewMessage) -> MessageRecord {
        MessageRecord {
            id: message.id,
            chat_id: message.chat_id,
            sender_id: message.sender_id,
            client_msg_id: message.client_msg_id.clone(),
            body: message.body.clone(),
            sent_at_ms: message.sent_at_ms,
            edited_at_ms: None,
            edit_count: 0,
            deleted_at_ms: None,
            event: message.event.clone(),
        }
    }

    /// Appends a message that must be new; returns its update seqs.
    async fn append(stores: &Stores, message: NewMessage, audience: &[i64]) -> Result<Vec<(i64, u64)>, Error> {
        match stores.chats.append_message(message, audience).await? {
            AppendOutcome::Appended { seqs, .. } => Ok(seqs),
            AppendOutcome::Duplicate { message } => Err(format!("unexpected duplicate of {}", message.id).into()),
        }
    }

    fn ids(messages: &[MessageRecord]) -> Vec<i64> {
        messages.iter().map(|m| m.id).collect()
    }

    // --------------------------------------------------------------- users

    pub async fn users_are_created_and_looked_up(stores: &Stores) -> TestResult {
        let alice = new_user(1, "Alice");
        let created = stores.users.create_user(alice.clone()).await?;
        assert_eq!(created, record(&alice));

        assert_eq!(stores.users.user_by_id(1).await?, Some(record(&alice)));
        assert_eq!(stores.users.user_by_username("alice").await?, Some(record(&alice)));
        assert_eq!(stores.users.user_by_username("Alice").await?, None, "lookups use the case-folded key");
        assert_eq!(stores.users.user_by_username("bob").await?, None);
        assert_eq!(stores.users.user_by_id(2).await?, None);
        Ok(())
    }

    pub async fn username_conflict_writes_nothing(stores: &Stores) -> TestResult {
        let alice = new_user(1, "alice");
        stores.users.create_user(alice.clone()).await?;

        let mut impostor = new_user(2, "ALICE");
        impostor.username_key = "alice".to_owned();
        let result = stores.users.create_user(impostor).await;
        assert!(matches!(result, Err(StorageError::Conflict(_))), "{result:?}");

        assert_eq!(stores.users.user_by_id(2).await?, None);
        assert_eq!(stores.users.user_by_username("alice").await?, Some(record(&alice)));
        // The key is free for nobody else, but other keys still work.
        stores.users.create_user(new_user(2, "bob")).await?;
        Ok(())
    }

    pub async fn password_hashes_are_replaced(stores: &Stores) -> TestResult {
        let alice = new_user(1, "alice");
        stores.users.create_user(alice.clone()).await?;
        stores.users.set_password_hash(1, "$argon2id$new".into(), 2).await?;
        let stored = stores.users.user_by_id(1).await?.ok_or("alice vanished")?;
        assert_eq!((stored.password_hash.as_str(), stored.pepper_version), ("$argon2id$new", 2));
        assert_eq!(stored.username, alice.username, "nothing else changes");
        let missing = stores.users.set_password_hash(9, "$argon2id$x".into(), 2).await;
        assert!(matches!(missing, Err(StorageError::NotFound(_))), "{missing:?}");
        Ok(())
    }

    pub async fn users_by_ids_returns_those_that_exist(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;
        let mut found = stores.users.users_by_ids(&[3, 99, 1]).await?;
        found.sort_by_key(|u| u.id);
        assert_eq!(found.iter().map(|u| u.id).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(found[0], record(&new_user(1, "user1")));
        assert!(stores.users.users_by_ids(&[]).await?.is_empty());
        assert!(stores.users.users_by_ids(&[42]).await?.is_empty());
        Ok(())
    }

    // -------------------------------------------------------------- tokens

    pub async fn rotation_consumes_the_token_and_stores_the_next(stores: &Stores) -> TestResult {
        users(stores, &[1]).await?;
        family(stores, 10, 1, 1).await?;

        let rotated = stores.tokens.rotate(&hash(1), token(2, 10_000), 100).await?;
        assert_eq!(rotated, RotateOutcome::Rotated { user_id: 1, family_id: 10 });
        let rotated = stores.tokens.rotate(&hash(2), token(3, 10_000), 200).await?;
        assert_eq!(rotated, RotateOutcome::Rotated { user_id: 1, family_id: 10 }, "the next token is live");
        Ok(())
    }

    pub async fn reuse_revokes_the_family(stores: &Stores) -> TestResult {
        users(stores, &[1]).await?;
        family(stores, 10, 1, 1).await?;
        family(stores, 11, 1, 50).await?;

        // The legitimate client rotates 1 → 2.
        let rotated = stores.tokens.rotate(&hash(1), token(2, 10_000), 100).await?;
        assert_eq!(rotated, RotateOutcome::Rotated { user_id: 1, family_id: 10 });

        // A thief presents the consumed token 1.
        let reused = stores.tokens.rotate(&hash(1), token(9, 10_000), 200).await?;
        assert_eq!(reused, RotateOutcome::Reused { user_id: 1, family_id: 10 });

        // The whole family is dead, including the legitimate client's token…
        assert_eq!(stores.tokens.rotate(&hash(2), token(3, 10_000), 300).await?, RotateOutcome::Revoked);
        assert_eq!(stores.tokens.rotate(&hash(1), token(4, 10_000), 300).await?, RotateOutcome::Revoked);
        // …the thief's next token was never stored…
        assert_eq!(stores.tokens.rotate(&hash(9), token(5, 10_000), 300).await?, RotateOutcome::Unknown);
        // …and the user's other logins are untouched.
        let other = stores.tokens.rotate(&hash(50), token(51, 10_000), 300).await?;
        assert_eq!(other, RotateOutcome::Rotated { user_id: 1, family_id: 11 });
        Ok(())
    }

    pub async fn expired_token_changes_nothing(stores: &Stores) -> TestResult {
        users(stores, &[1]).await?;
        stores.tokens.create_family(NewTokenFamily { id: 10, user_id: 1, created_at_ms: 0 }, token(1, 1_000)).await?;

        assert_eq!(stores.tokens.rotate(&hash(1), token(2, 10_000), 5_000).await?, RotateOutcome::Expired);
        assert_eq!(stores.tokens.rotate(&hash(2), token(3, 10_000), 5_000).await?, RotateOutcome::Unknown);
        // The expired token was not consumed: seen from before its expiry it still rotates.
        let rotated = stores.tokens.rotate(&hash(1), token(4, 10_000), 500).await?;
        assert_eq!(rotated, RotateOutcome::Rotated { user_id: 1, family_id: 10 });
        Ok(())
    }

    pub async fn unknown_token_changes_nothing(stores: &Stores) -> TestResult {
        users(stores, &[1]).await?;
        family(stores, 10, 1, 1).await?;

        assert_eq!(stores.tokens.rotate(&hash(7), token(8, 10_000), 100).await?, RotateOutcome::Unknown);
        assert_eq!(stores.tokens.rotate(&hash(8), token(9, 10_000), 100).await?, RotateOutcome::Unknown);
        assert_eq!(stores.tokens.revoke_family_of(&hash(7), 100).await?, None);
        let rotated = stores.tokens.rotate(&hash(1), token(2, 10_000), 100).await?;
        assert_eq!(rotated, RotateOutcome::Rotated { user_id: 1, family_id: 10 });
        Ok(())
    }

    pub async fn logout_revokes_the_family(stores: &Stores) -> TestResult {
        users(stores, &[1]).await?;
        family(stores, 10, 1, 1).await?;
        family(stores, 11, 1, 50).await?;
        stores.tokens.rotate(&hash(1), token(2, 10_000), 100).await?;

        // Logging out with the current token revokes the family.
        let ended = Some(EndedFamily { user_id: 1, family_id: 10 });
        assert_eq!(stores.tokens.revoke_family_of(&hash(2), 200).await?, ended);
        assert_eq!(stores.tokens.rotate(&hash(2), token(3, 10_000), 300).await?, RotateOutcome::Revoked);
        assert_eq!(stores.tokens.rotate(&hash(3), token(4, 10_000), 300).await?, RotateOutcome::Unknown);
        // Revoking again is harmless; other families stay live.
        assert_eq!(stores.tokens.revoke_family_of(&hash(1), 400).await?, ended);
        let other = stores.tokens.rotate(&hash(50), token(51, 10_000), 300).await?;
        assert_eq!(other, RotateOutcome::Rotated { user_id: 1, family_id: 11 });
        Ok(())
    }

    // --------------------------------------------------------------- chats

    pub async fn logging_out_other_devices_keeps_only_this_one(stores: &Stores) -> TestResult {
        users(stores, &[1, 2]).await?;
        family(stores, 10, 1, 1).await?;
        family(stores, 11, 1, 2).await?;
        family(stores, 12, 1, 3).await?;
        family(stores, 20, 2, 4).await?;
        stores.tokens.revoke_family_of(&hash(3), 5).await?;
        assert_eq!(stores.tokens.revoke_other_families(1, 10, 6).await?, [11], "12 was revoked already");
        let kept = stores.tokens.rotate(&hash(1), token(5, 10_000), 7).await?;
        assert!(matches!(kept, RotateOutcome::Rotated { family_id: 10, .. }), "{kept:?}");
        let ended = stores.tokens.rotate(&hash(2), token(6, 10_000), 7).await?;
        assert_eq!(ended, RotateOutcome::Revoked);
        let other_user = stores.tokens.rotate(&hash(4), token(7, 10_000), 7).await?;
        assert!(matches!(other_user, RotateOutcome::Rotated { family_id: 20, .. }), "other users keep theirs");
        Ok(())
    }

    pub async fn revoked_families_are_listed_by_the_time_of_their_first_revocation(stores: &Stores) -> TestResult {
        const HOUR: i64 = 3_600_000;
        let t = 1_800_000_000_000; // 2027, so that a 30-day window is all after 1970
        users(stores, &[1, 2]).await?;
        for (id, user, first) in [(10, 1, 1), (11, 1, 2), (12, 1, 3), (20, 2, 4), (21, 2, 5)] {
            family(stores, id, user, first).await?;
        }
        stores.tokens.revoke_family_of(&hash(1), t - 2 * HOUR).await?;
        stores.tokens.revoke_family_of(&hash(2), t - HOUR / 2).await?;
        // Revoking again keeps the first time.
        stores.tokens.revoke_family_of(&hash(2), t - HOUR / 4).await?;
        stores.tokens.revoke_other_families(2, 21, t - 1).await?;
        let listed = |since_ms, now_ms| async move {
            let mut found = stores.tokens.families_revoked_since(since_ms, now_ms).await?;
            found.sort_by_key(|family| family.family_id);
            Ok::<_, StorageError>(found)
        };
        let at = |family_id, revoked_at_ms| RevokedFamily { family_id, revoked_at_ms };
        assert_eq!(listed(t - HOUR, t).await?, [at(11, t - HOUR / 2), at(20, t - 1)], "12 and 21 are live");
        assert_eq!(listed(t - 3 * HOUR, t).await?, [at(10, t - 2 * HOUR), at(11, t - HOUR / 2), at(20, t - 1)]);
        assert_eq!(listed(t - HOUR / 2, t - HOUR / 2).await?, [at(11, t - HOUR / 2)], "both ends count");
        assert_eq!(listed(t, t + HOUR).await?, [], "nothing revoked since");
        Ok(())
    }

    pub async fn direct_chat_is_idempotent_and_symmetric(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;

        let chat = stores.chats.direct_chat(2, 1, 100, 5_000).await?;
        let expected =
            ChatRecord { id: 100, kind: ChatKind::Direct, members: vec![1, 2], created_at_ms: 5_000, group: None };
        assert_eq!(chat, expected);
        assert_eq!(stores.chats.direct_chat(1, 2, 101, 6_000).await?, expected, "the pair's chat, not a new one");
        assert_eq!(stores.chats.direct_chat(2, 1, 102, 7_000).await?, expected);
        assert_eq!(stores.chats.chat(100).await?, Some(expected));
        assert_eq!(stores.chats.chat(101).await?, None, "the unused ID stays free");

        let other = stores.chats.direct_chat(1, 3, 103, 8_000).await?;
        assert_eq!(other.id, 103);
        assert_eq!(other.members, [1, 3]);
        Ok(())
    }

    pub async fn concurrent_direct_chats_agree(stores: &Stores) -> TestResult {
        users(stores, &[1, 2]).await?;

        let calls: Vec<_> = (0..16_i64)
            .map(|i| {
                let stores = stores.clone();
                let (a, b) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
                tokio::spawn(async move { stores.chats.direct_chat(a, b, 100 + i, 5_000 + i).await })
            })
            .collect();
        let mut chats = Vec::new();
        for call in calls {
            chats.push(call.await??);
        }
        let first = chats[0].clone();
        assert!(chats.iter().all(|chat| *chat == first), "{chats:?}");
        assert_eq!(first.members, [1, 2]);
        assert_eq!(stores.chats.chats_of_user(1).await?.len(), 1);
        assert_eq!(stores.chats.chats_of_user(2).await?.len(), 1);
        Ok(())
    }

    pub async fn append_assigns_consecutive_seqs_per_user(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;
        let ab = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        let ac = stores.chats.direct_chat(1, 3, 101, 0).await?.id;

        assert_eq!(append(stores, message(1_000, ab, 1, "c1"), &[1, 2]).await?, [(1, 1), (2, 1)]);
        assert_eq!(append(stores, message(1_001, ac, 1, "c2"), &[1, 3]).await?, [(1, 2), (3, 1)]);
        // Seqs come back in audience order.
        assert_eq!(append(stores, message(1_002, ab, 2, "c1"), &[2, 1]).await?, [(2, 2), (1, 3)]);

        assert_eq!(stores.chats.latest_seq(1).await?, 3);
        assert_eq!(stores.chats.latest_seq(2).await?, 2);
        assert_eq!(stores.chats.latest_seq(3).await?, 1);
        assert_eq!(stores.chats.latest_seq(99).await?, 0, "unknown user");

        let log = stores.chats.updates_after(1, 0, 10).await?;
        assert_eq!(log.iter().map(|u| u.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let named: Vec<i64> = log
            .iter()
            .filter_map(|u| match &u.kind {
                UpdateKind::Message(m) => Some(m.id),
                _ => None,
            })
            .collect();
        assert_eq!(named, [1_000, 1_001, 1_002]);
        Ok(())
    }

    pub async fn duplicate_append_returns_the_original_and_writes_nothing(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;
        let ab = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        let ac = stores.chats.direct_chat(1, 3, 101, 0).await?.id;
        let original = message(1_000, ab, 1, "retry-me");
        append(stores, original.clone(), &[1, 2]).await?;

        // A retry with a new server ID, another body, even another chat.
        let mut retry = message(1_001, ac, 1, "retry-me");
        retry.body = "changed".to_owned();
        let outcome = stores.chats.append_message(retry, &[1, 3]).await?;
        assert_eq!(outcome, AppendOutcome::Duplicate { message: stored(&original) });

        assert_eq!(stores.chats.latest_seq(1).await?, 1);
        assert_eq!(stores.chats.latest_seq(2).await?, 1);
        assert_eq!(stores.chats.latest_seq(3).await?, 0);
        assert_eq!(stores.chats.messages_before(ab, 1, None, 10).await?, [stored(&original)]);
        assert!(stores.chats.messages_before(ac, 1, None, 10).await?.is_empty());
        let listed = stores.chats.chats_of_user(3).await?;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_message, None);

        // The same client ID from another sender is a different message.
        assert_eq!(append(stores, message(1_002, ab, 2, "retry-me"), &[1, 2]).await?, [(1, 2), (2, 2)]);
        Ok(())
    }

    pub async fn a_batch_of_appends_is_one_step_in_order(stores: &Stores) -> TestResult {
        users(stores, &[1, 2]).await?;
        let chat = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        let batch = vec![message(1_001, chat, 1, "a"), message(1_002, chat, 2, "b"), message(1_003, chat, 1, "a")];
        let outcomes = stores.chats.append_messages(batch, &[1, 2]).await?;
        let seqs: Vec<_> = outcomes
            .iter()
            .map(|outcome| match outcome {
                AppendOutcome::Appended { seqs, .. } => Some(seqs.clone()),
                AppendOutcome::Duplicate { .. } => None,
            })
            .collect();
        assert_eq!(seqs, [Some(vec![(1, 1), (2, 1)]), Some(vec![(1, 2), (2, 2)]), None], "the repeat is a duplicate");
        assert!(matches!(&outcomes[2], AppendOutcome::Duplicate { message } if message.id == 1_001));

        // A failing batch writes nothing, not even its good messages.
        let failing = vec![message(1_004, chat, 1, "c"), message(1_005, 404, 1, "d")];
        let failed = stores.chats.append_messages(failing, &[1, 2]).await;
        assert!(matches!(failed, Err(StorageError::NotFound(_))), "{failed:?}");
        assert_eq!(ids(&stores.chats.messages_before(chat, 1, None, 10).await?), [1_002, 1_001]);
        assert_eq!(stores.chats.latest_seq(1).await?, 2);
        Ok(())
    }

    pub async fn a_batch_replays_one_update_per_message_from_any_seq(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;
        let chat = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        append(stores, message(1_001, chat, 1, "before"), &[1, 2]).await?;
        // A batch with a retry of an earlier send in its middle, then one more message.
        let batch = vec![
            message(1_002, chat, 1, "a"),
            message(1_003, chat, 1, "before"),
            message(1_004, chat, 2, "b"),
            message(1_005, chat, 1, "c"),
        ];
        let outcomes = stores.chats.append_messages(batch, &[1, 2]).await?;
        let appended: Vec<_> = outcomes
            .iter()
            .map(|outcome| match outcome {
                AppendOutcome::Appended { message, seqs } => Some((message.id, seqs.clone())),
                AppendOutcome::Duplicate { .. } => None,
            })
            .collect();
        assert_eq!(
            appended,
            [
                Some((1_002, vec![(1, 2), (2, 2)])),
                None,
                Some((1_004, vec![(1, 3), (2, 3)])),
                Some((1_005, vec![(1, 4), (2, 4)]))
            ]
        );
        append(stores, message(1_006, chat, 2, "after"), &[1, 2]).await?;
        stores.chats.edit_message(chat, 1_004, "b, edited".into(), 7, &[1, 2]).await?;
        assert_eq!(stores.chats.latest_seq(2).await?, 6);

        // Every entry once, in seq order, from any point and in pages of any size.
        let expected = [(1, 1_001), (2, 1_002), (3, 1_004), (4, 1_005), (5, 1_006), (6, 1_004)];
        let entry = |update: &storage::UpdateRecord| match &update.kind {
            UpdateKind::Message(m) | UpdateKind::Edited(m) => (update.seq, m.id),
            other => panic!("unexpected update {other:?}"),
        };
        for after in 0..=6u64 {
            for limit in 1..=7u32 {
                let mut replayed = Vec::new();
                let mut from = after;
                loop {
                    let page = stores.chats.updates_after(2, from, limit).await?;
                    assert!(page.len() <= limit as usize, "a page of {} with limit {limit}", page.len());
                    replayed.extend(page.iter().map(entry));
                    match page.last() {
                        Some(last) if page.len() == limit as usize => from = last.seq,
                        _ => break,
                    }
                }
                let want: Vec<_> = expected.iter().copied().filter(|(seq, _)| *seq > after).collect();
                assert_eq!(replayed, want, "after {after}, limit {limit}");
            }
        }
        // Entries of a run show their message's current state.
        let log = stores.chats.updates_after(2, 2, 1).await?;
        assert!(matches!(&log[0].kind, UpdateKind::Message(m) if m.body == "b, edited" && m.edit_count == 1));
        assert!(stores.chats.updates_after(3, 0, 10).await?.is_empty());
        Ok(())
    }

    pub async fn append_to_unknown_chat_is_not_found(stores: &Stores) -> TestResult {
        users(stores, &[1, 2]).await?;
        let result = stores.chats.append_message(message(1_000, 404, 1, "c1"), &[1, 2]).await;
        assert!(matches!(result, Err(StorageError::NotFound(_))), "{result:?}");
        assert_eq!(stores.chats.latest_seq(1).await?, 0);
        assert!(stores.chats.messages_before(404, 1, None, 10).await?.is_empty());
        Ok(())
    }

    pub async fn messages_page_newest_first_without_gaps(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;
        let ab = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        let ac = stores.chats.direct_chat(1, 3, 101, 0).await?.id;
        for i in 0..25 {
            append(stores, message(1_000 + 2 * i, ab, 1, &format!("ab{i}")), &[1, 2]).await?;
            append(stores, message(1_001 + 2 * i, ac, 1, &format!("ac{i}")), &[1, 3]).await?;
        }

        let mut seen = Vec::new();
        let mut before = None;
        let mut pages = Vec::new();
        loop {
            let page = stores.chats.messages_before(ab, 1, before, 10).await?;
            if page.is_empty() {
                break;
            }
            assert!(page.iter().all(|m| m.chat_id == ab));
            pages.push(page.len());
            before = page.last().map(|m| m.id);
            seen.extend(ids(&page));
        }
        assert_eq!(pages, [10, 10, 5]);
        let expected: Vec<i64> = (0..25).rev().map(|i| 1_000 + 2 * i).collect();
        assert_eq!(seen, expected, "newest first, no gaps, no duplicates");

        // `before` is exclusive and need not be a stored ID.
        assert_eq!(ids(&stores.chats.messages_before(ab, 1, Some(1_010), 2).await?), [1_008, 1_006]);
        assert_eq!(ids(&stores.chats.messages_before(ab, 1, Some(1_011), 2).await?), [1_010, 1_008]);
        assert!(stores.chats.messages_before(ab, 1, Some(1_000), 10).await?.is_empty());
        assert!(stores.chats.messages_before(ab, 1, None, 0).await?.is_empty());
        let newest = stores.chats.messages_before(ab, 1, None, 1).await?;
        assert_eq!(newest, [stored(&message(1_048, ab, 1, "ab24"))]);
        Ok(())
    }

    pub async fn updates_come_in_seq_order_with_limit(stores: &Stores) -> TestResult {
        users(stores, &[1, 2]).await?;
        let ab = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        let sent: Vec<NewMessage> = (0..5).map(|i| message(1_000 + i, ab, 1, &format!("c{i}"))).collect();
        for m in &sent {
            append(stores, m.clone(), &[1, 2]).await?;
        }

        let first = stores.chats.updates_after(2, 0, 2).await?;
        assert_eq!(first.iter().map(|u| u.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(first[0].kind, UpdateKind::Message(stored(&sent[0])));
        assert_eq!(first[1].kind, UpdateKind::Message(stored(&sent[1])));

        let rest = stores.chats.updates_after(2, 2, 100).await?;
        assert_eq!(rest.iter().map(|u| u.seq).collect::<Vec<_>>(), [3, 4, 5]);
        let bodies: Vec<MessageRecord> = rest
            .into_iter()
            .filter_map(|u| match u.kind {
                UpdateKind::Message(m) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(bodies, sent[2..].iter().map(stored).collect::<Vec<_>>());

        assert!(stores.chats.updates_after(2, 5, 100).await?.is_empty());
        assert!(stores.chats.updates_after(2, 0, 0).await?.is_empty());
        assert!(stores.chats.updates_after(99, 0, 100).await?.is_empty());
        assert!(stores.chats.updates_after(2, u64::MAX, 100).await?.is_empty());
        Ok(())
    }

    pub async fn chats_are_listed_by_last_activity(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3, 4, 5]).await?;
        // IDs and times both grow, as snowflakes do.
        let a = stores.chats.direct_chat(1, 2, 100, 100).await?.id;
        let b = stores.chats.direct_chat(3, 1, 200, 200).await?.id;
        let c = stores.chats.direct_chat(1, 4, 300, 300).await?.id;
        let order = |list: &[storage::ChatOverview]| list.iter().map(|o| o.chat.id).collect::<Vec<_>>();

        let listed = stores.chats.chats_of_user(1).await?;
        assert_eq!(order(&listed), [c, b, a], "empty chats by creation");
        assert!(listed.iter().all(|o| o.last_message.is_none()));
        assert_eq!(listed[1].chat.members, [1, 3], "members ascending");

        append(stores, message(400, a, 2, "a1"), &[1, 2]).await?;
        assert_eq!(order(&stores.chats.chats_of_user(1).await?), [a, c, b]);

        append(stores, message(500, b, 1, "b1"), &[1, 3]).await?;
        append(stores, message(600, a, 1, "a2"), &[1, 2]).await?;
        append(stores, message(700, b, 3, "b2"), &[1, 3]).await?;
        let listed = stores.chats.chats_of_user(1).await?;
        assert_eq!(order(&listed), [b, a, c]);
        assert_eq!(listed[0].last_message, Some(stored(&message(700, b, 3, "b2"))));
        assert_eq!(listed[1].last_message, Some(stored(&message(600, a, 1, "a2"))));
        assert_eq!(listed[2].last_message, None);
        assert_eq!(
            listed[0].chat,
            ChatRecord { id: b, kind: ChatKind::Direct, members: vec![1, 3], created_at_ms: 200, group: None }
        );

        let of_two = stores.chats.chats_of_user(2).await?;
        assert_eq!(order(&of_two), [a]);
        assert_eq!(of_two[0].chat.members, [1, 2]);
        assert!(stores.chats.chats_of_user(5).await?.is_empty());
        Ok(())
    }

    pub async fn receipts_are_monotonic_capped_and_logged_for_every_member(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;
        let ab = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        assert_eq!(stores.chats.mark_read(ab, 2, 1_050, false).await?, None, "nothing to receive in an empty chat");
        append(stores, message(1_100, ab, 1, "newest"), &[1, 2]).await?;
        let receipt = |delivered, seen| ReceiptRecord { user_id: 2, delivered_up_to: delivered, seen_up_to: seen };

        let change = stores.chats.mark_read(ab, 2, 1_050, false).await?.ok_or("delivered did not move")?;
        assert_eq!(change.receipt, receipt(1_050, 0));
        assert_eq!(change.seqs, [(1, 2), (2, 2)], "every member's log, the reader's too");
        assert_eq!(stores.chats.mark_read(ab, 2, 1_030, false).await?, None, "never lowered, nothing logged");
        let seen = stores.chats.mark_read(ab, 2, 9_999, true).await?.ok_or("seen did not move")?;
        assert_eq!(seen.receipt, receipt(1_100, 1_100), "capped at the newest message; seen implies delivered");
        assert_eq!(stores.chats.mark_read(ab, 2, 1_100, true).await?, None);

        // The log resolves to the current watermarks.
        let log = stores.chats.updates_after(1, 1, 10).await?;
        assert_eq!(log.len(), 2);
        assert!(log.iter().all(|u| u.kind == UpdateKind::Receipt { chat_id: ab, receipt: receipt(1_100, 1_100) }));

        let outsider = stores.chats.mark_read(ab, 3, 1_000, true).await;
        assert!(matches!(outsider, Err(StorageError::NotFound(_))), "{outsider:?}");
        let no_chat = stores.chats.mark_read(404, 1, 1_000, false).await;
        assert!(matches!(no_chat, Err(StorageError::NotFound(_))), "{no_chat:?}");
        Ok(())
    }

    fn group(id: i64, owner: i64, members: &[i64]) -> NewGroup {
        NewGroup {
            id,
            name: format!("group {id}"),
            owner,
            members: members.to_vec(),
            created_at_ms: id,
            max_groups_per_user: 10,
        }
    }

    fn event(id: i64, chat_id: i64, sender_id: i64, json: &str) -> NewMessage {
        NewMessage {
            body: String::new(),
            event: Some(json.to_owned()),
            ..message(id, chat_id, sender_id, &format!("event:{id}"))
        }
    }

    async fn create_group(stores: &Stores, group: NewGroup) -> Result<GroupChanged, Error> {
        let event = event(group.id + 1, group.id, group.owner, r#"{"type":"created"}"#);
        Ok(stores.chats.create_group(group, event).await??)
    }

    async fn change(
        stores: &Stores,
        chat_id: i64,
        id: i64,
        by: i64,
        change: GroupChange,
    ) -> Result<GroupChanged, Error> {
        Ok(stores.chats.change_group(chat_id, change, event(id, chat_id, by, r#"{"type":"x"}"#)).await??)
    }

    pub async fn groups_are_created_with_roles_and_an_event_for_everyone(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;
        let created = create_group(stores, group(100, 2, &[2, 1, 3])).await?;
        let chat = stores.chats.chat(100).await?.ok_or("group missing")?;
        assert_eq!(created.chat, chat);
        assert_eq!(chat.kind, ChatKind::Group);
        assert_eq!(chat.members, [1, 2, 3]);
        let info = chat.group.as_ref().ok_or("no group record")?;
        assert_eq!((info.name.as_str(), info.owner, info.member_count), ("group 100", 2, 3));
        assert_eq!(chat.role_of(2), Some(Role::Owner));
        assert_eq!(chat.role_of(1), Some(Role::Member));
        assert_eq!(chat.role_of(9), None);
        assert_eq!(created.message.event.as_deref(), Some(r#"{"type":"created"}"#));
        assert_eq!(created.seqs, [(1, 1), (2, 1), (3, 1)]);
        assert_eq!(stores.chats.updates_after(3, 0, 10).await?[0].kind, UpdateKind::Message(created.message));
        let members = stores.chats.members(100).await?;
        assert_eq!(
            members.iter().map(|m| (m.user_id, m.role)).collect::<Vec<_>>(),
            [(1, Role::Member), (2, Role::Owner), (3, Role::Member)]
        );
        let unknown = stores.chats.create_group(group(200, 1, &[1, 404]), event(201, 200, 1, "{}")).await;
        assert!(matches!(unknown, Err(StorageError::NotFound(_))), "{unknown:?}");
        assert_eq!(stores.chats.chat(200).await?, None, "nothing of a failed creation is kept");
        Ok(())
    }

    pub async fn group_changes_log_to_members_before_and_after(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3, 4]).await?;
        create_group(stores, group(100, 1, &[1, 2])).await?;
        let added =
            change(stores, 100, 110, 1, GroupChange::AddMembers { users: vec![3, 4], max_groups_per_user: 10 }).await?;
        assert_eq!(added.chat.members, [1, 2, 3, 4]);
        assert_eq!(added.chat.group.as_ref().map(|g| g.member_count), Some(4));
        assert_eq!(added.seqs.iter().map(|(user, _)| *user).collect::<Vec<_>>(), [1, 2, 3, 4]);

        let renamed = change(stores, 100, 120, 2, GroupChange::Rename("New name".into())).await?;
        assert_eq!(renamed.chat.group.as_ref().map(|g| g.name.as_str()), Some("New name"));
        let avatar = change(stores, 100, 125, 1, GroupChange::SetAvatar(Some("a1".into()))).await?;
        assert_eq!(avatar.previous_avatar, None);
        let avatar = change(stores, 100, 126, 1, GroupChange::SetAvatar(None)).await?;
        assert_eq!(avatar.previous_avatar.as_deref(), Some("a1"));

        let promoted = change(stores, 100, 130, 1, GroupChange::SetRole { user_id: 3, role: Role::Admin }).await?;
        assert_eq!(promoted.chat.role_of(3), Some(Role::Admin));
        let transferred = change(stores, 100, 140, 1, GroupChange::TransferOwnership(2)).await?;
        assert_eq!(transferred.chat.role_of(2), Some(Role::Owner));
        assert_eq!(transferred.chat.role_of(1), Some(Role::Admin), "the old owner becomes an admin");

        let removed = change(stores, 100, 150, 2, GroupChange::RemoveMember(4)).await?;
        assert_eq!(removed.chat.members, [1, 2, 3]);
        assert!(removed.seqs.iter().any(|(user, _)| *user == 4), "the removed member hears of the removal");
        let after = append(stores, message(160, 100, 1, "after"), &removed.chat.members).await?;
        assert!(after.iter().all(|(user, _)| *user != 4));

        let gone = stores.chats.change_group(100, GroupChange::RemoveMember(4), event(170, 100, 2, "{}")).await;
        assert!(matches!(gone, Err(StorageError::NotFound(_))), "{gone:?}");
        let not_group = stores.chats.direct_chat(1, 2, 300, 0).await?;
        let direct =
            stores.chats.change_group(not_group.id, GroupChange::Rename("x".into()), event(301, 300, 1, "{}")).await;
        assert!(matches!(direct, Err(StorageError::NotFound(_))), "{direct:?}");
        assert_eq!(stores.chats.messages_before(100, 1, None, 50).await?.len(), 9, "failed changes store no event");
        Ok(())
    }

    pub async fn new_members_see_history_from_their_join(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;
        create_group(stores, group(100, 1, &[1, 2])).await?;
        append(stores, message(110, 100, 2, "before"), &[1, 2]).await?;
        change(stores, 100, 120, 1, GroupChange::AddMembers { users: vec![3], max_groups_per_user: 10 }).await?;
        append(stores, message(130, 100, 2, "after"), &[1, 2, 3]).await?;
        assert_eq!(ids(&stores.chats.messages_before(100, 3, None, 50).await?), [130, 120]);
        assert_eq!(ids(&stores.chats.messages_before(100, 1, None, 50).await?), [130, 120, 110, 101]);
        let overview = stores.chats.chats_of_user(3).await?;
        assert_eq!(overview[0].unread, 1, "only messages since joining, events not counted");
        Ok(())
    }

    pub async fn group_limits_refuse_and_write_nothing(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;
        create_group(stores, NewGroup { max_groups_per_user: 2, ..group(100, 1, &[1, 2]) }).await?;
        create_group(stores, NewGroup { max_groups_per_user: 2, ..group(200, 1, &[1, 3]) }).await?;
        let third = stores
            .chats
            .create_group(NewGroup { max_groups_per_user: 2, ..group(300, 2, &[2, 1]) }, event(301, 300, 2, "{}"))
            .await?;
        assert_eq!(third, Err(GroupRefusal::TooManyGroups { user_id: 1 }));
        assert_eq!(stores.chats.chat(300).await?, None);
        let add = stores
            .chats
            .change_group(
                200,
                GroupChange::AddMembers { users: vec![2], max_groups_per_user: 1 },
                event(210, 200, 1, "{}"),
            )
            .await?;
        assert_eq!(add, Err(GroupRefusal::TooManyGroups { user_id: 2 }));
        assert_eq!(stores.chats.chat(200).await?.map(|c| c.members), Some(vec![1, 3]));
        assert_eq!(stores.chats.latest_seq(2).await?, 1, "only the first group's creation was logged");
        Ok(())
    }

    pub async fn group_receipts_reach_the_reader_and_the_senders_they_cover(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3, 4]).await?;
        create_group(stores, group(100, 1, &[1, 2, 3, 4])).await?;
        append(stores, message(110, 100, 2, "from 2"), &[1, 2, 3, 4]).await?;
        append(stores, message(120, 100, 3, "from 3"), &[1, 2, 3, 4]).await?;
        let change = stores.chats.mark_read(100, 4, 115, true).await?.ok_or("nothing moved")?;
        let told: Vec<i64> = change.seqs.iter().map(|(user, _)| *user).collect();
        assert_eq!(told, [1, 2, 4], "the reader, the sender of 110 and of the creation event");
        let change = stores.chats.mark_read(100, 4, 120, false).await?.ok_or("delivered did not move")?;
        let told: Vec<i64> = change.seqs.iter().map(|(user, _)| *user).collect();
        assert_eq!(told, [3, 4], "only the sender of the newly delivered message, and the reader");
        Ok(())
    }

    pub async fn group_overviews_carry_the_group_without_every_member(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3]).await?;
        create_group(stores, group(100, 1, &[1, 2, 3])).await?;
        change(stores, 100, 110, 1, GroupChange::SetRole { user_id: 3, role: Role::Admin }).await?;
        stores.chats.mark_read(100, 2, 110, true).await?;
        let overview = stores.chats.chats_of_user(2).await?.pop().ok_or("no chat")?;
        assert_eq!(overview.chat.members, [2], "a group's overview holds only the viewer");
        let info = overview.chat.group.ok_or("no group")?;
        assert_eq!((info.owner, info.admins.as_slice(), info.member_count), (1, &[3][..], 3));
        assert_eq!(overview.receipts.len(), 1);
        assert_eq!(overview.receipts[0].user_id, 2);
        assert_eq!(stores.chats.receipts(100).await?.len(), 3);
        Ok(())
    }

    pub async fn presence_settings_and_last_seen_are_kept(stores: &Stores) -> TestResult {
        users(stores, &[1]).await?;
        stores.users.set_presence(1, PresenceChoice::Busy, "in a meeting".into()).await?;
        stores.users.set_last_seen(1, 5_000).await?;
        stores.users.set_last_seen(1, 4_000).await?;
        let user = stores.users.user_by_id(1).await?.ok_or("user missing")?;
        assert_eq!((user.presence, user.status_text.as_str()), (PresenceChoice::Busy, "in a meeting"));
        assert_eq!(user.last_seen_ms, Some(5_000), "last seen never moves back");
        let unknown = stores.users.set_presence(404, PresenceChoice::Away, String::new()).await;
        assert!(matches!(unknown, Err(StorageError::NotFound(_))), "{unknown:?}");
        Ok(())
    }

    pub async fn presence_peers_are_friends_and_group_members_without_blocks(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3, 4, 5, 6]).await?;
        let relate = |a, b, action| stores.relations.apply(a, b, action, 10);
        relate(1, 2, RelationAction::Request).await??;
        relate(2, 1, RelationAction::Accept).await??;
        relate(1, 6, RelationAction::Request).await??; // a pending request is not enough
        create_group(stores, group(100, 3, &[3, 1, 4, 5])).await?;
        relate(5, 1, RelationAction::Block).await??; // 5 blocks 1: no presence either way
        stores.users.set_last_seen(4, 77).await?;
        let peers = stores.relations.presence_peers(1, None).await?;
        assert_eq!(peers.iter().map(|p| p.user_id).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(peers[2], PresencePeer { user_id: 4, last_seen_ms: Some(77), status_text: String::new() });
        let among = stores.relations.presence_peers(1, Some(vec![4, 5, 6])).await?;
        assert_eq!(among.iter().map(|p| p.user_id).collect::<Vec<_>>(), [4]);
        assert!(stores.relations.presence_peers(5, Some(vec![1])).await?.is_empty(), "the blocker sees nothing of 1");
        // What a connection reads to attach: the same peers, with the user.
        let (me, together) = stores.relations.user_and_presence_peers(1).await?.ok_or("user 1 not found")?;
        assert_eq!((me.id, together), (1, peers));
        assert!(stores.relations.user_and_presence_peers(99).await?.is_none(), "an unknown user is None");
        Ok(())
    }

    pub async fn relations_with_many_users_in_one_read(stores: &Stores) -> TestResult {
        users(stores, &[1, 2, 3, 4]).await?;
        stores.relations.apply(1, 2, RelationAction::Request, 10).await??;
        stores.relations.apply(3, 1, RelationAction::Request, 11).await??;
        stores.relations.apply(1, 3, RelationAction::Accept, 12).await??;
        let mut found = stores.relations.relations_with(1, &[2, 3, 4, 99]).await?;
        found.sort_by_key(|(other, _)| *other);
        assert_eq!(found, [(2, Relation::RequestSent), (3, Relation::Friends)], "strangers are left out");
        assert!(stores.relations.relations_with(1, &[]).await?.is_empty());
        Ok(())
    }

    pub async fn unread_counts_follow_the_seen_watermark(stores: &Stores) -> TestResult {
        users(stores, &[1, 2]).await?;
        let ab = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        for (i, sender) in [1, 1, 2, 1, 1].into_iter().enumerate() {
            append(stores, message(1_000 + i as i64, ab, sender, &format!("m{i}")), &[1, 2]).await?;
        }
        let unread = |user| async move {
            let chats = stores.chats.chats_of_user(user).await?;
            Ok::<_, Error>(chats[0].unread)
        };
        assert_eq!(unread(2).await?, 4, "others' messages only");
        assert_eq!(unread(1).await?, 1);
        stores.chats.mark_read(ab, 2, 1_001, true).await?;
        assert_eq!(unread(2).await?, 2);
        stores.chats.delete_message(ab, 1_004, 5_000, &[1, 2]).await?;
        stores.chats.hide_message(2, ab, 1_003).await?;
        assert_eq!(unread(2).await?, 0, "deleted and hidden messages do not count");
        let overview = &stores.chats.chats_of_user(1).await?[0];
        let seen: Vec<i64> = overview.receipts.iter().map(|r| r.seen_up_to).collect();
        assert_eq!(seen, [0, 1_001], "every member's watermarks, by user");
        Ok(())
    }

    pub async fn edits_replace_the_text_and_reach_every_log(stores: &Stores) -> TestResult {
        users(stores, &[1, 2]).await?;
        let ab = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        append(stores, message(1_000, ab, 1, "m1"), &[1, 2]).await?;
        let (edited, seqs) = stores.chats.edit_message(ab, 1_000, "fixed typo".into(), 5_000, &[1, 2]).await?;
        assert_eq!((edited.body.as_str(), edited.edited_at_ms, edited.edit_count), ("fixed typo", Some(5_000), 1));
        assert_eq!(seqs, [(1, 2), (2, 2)]);
        stores.chats.edit_message(ab, 1_000, "again".into(), 6_000, &[1, 2]).await?;
        assert_eq!(stores.chats.message(ab, 1_000).await?.map(|m| (m.body, m.edit_count)), Some(("again".into(), 2)));
        assert_eq!(
            stores.chats.messages_before(ab, 2, None, 10).await?[0].body,
            "again",
            "history has the current text"
        );
        // A device that was away replays both edits, each resolved to the current text.
        let log = stores.chats.updates_after(2, 1, 10).await?;
        assert_eq!(log.len(), 2);
        assert!(log.iter().all(|u| matches!(&u.kind, UpdateKind::Edited(m) if m.body == "again")));
        let missing = stores.chats.edit_message(ab, 9_999, "x".into(), 7_000, &[1, 2]).await;
        assert!(matches!(missing, Err(StorageError::NotFound(_))), "{missing:?}");
        Ok(())
    }

    pub async fn deletion_for_everyone_leaves_a_tombstone(stores: &Stores) -> TestResult {
        users(stores, &[1, 2]).await?;
        let ab = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        append(stores, message(1_000, ab, 1, "secret"), &[1, 2]).await?;
        let seqs = stores.chats.delete_message(ab, 1_000, 9_000, &[1, 2]).await?;
        assert_eq!(seqs, [(1, 2), (2, 2)]);
        let tombstone = stores.chats.message(ab, 1_000).await?.ok_or("tombstone gone")?;
        assert_eq!(
            (tombstone.body.as_str(), tombstone.deleted_at_ms),
            ("", Some(9_000)),
            "the text is gone from storage"
        );
        assert_eq!(stores.chats.messages_before(ab, 2, None, 10).await?.len(), 1, "both see the tombstone");
        let log = stores.chats.updates_after(2, 0, 10).await?;
        assert!(matches!(log[0].kind, UpdateKind::Message(ref m) if m.body.is_empty()), "replay never shows the text");
        assert_eq!(log[1].kind, UpdateKind::Deleted { chat_id: ab, message_id: 1_000, for_everyone: true });
        Ok(())
    }

    pub async fn hiding_is_for_one_user_only(stores: &Stores) -> TestResult {
        users(stores, &[1, 2]).await?;
        let ab = stores.chats.direct_chat(1, 2, 100, 0).await?.id;
        append(stores, message(1_000, ab, 1, "m1"), &[1, 2]).await?;
        append(stores, message(1_001, ab, 2, "m2"), &[1, 2]).await?;
        assert_eq!(stores.chats.hide_message(2, ab, 1_000).await?, Some(3));
        assert_eq!(stores.chats.hide_message(2, ab, 1_000).await?, None, "hiding twice logs nothing");
        assert_eq!(ids(&stores.chats.messages_before(ab, 2, None, 10).await?), [1_001]);
        assert_eq!(
            ids(&stores.chats.messages_before(ab, 1, None, 10).await?),
            [1_001, 1_000],
            "the other still sees it"
        );
        assert_eq!(stores.chats.latest_seq(1).await?, 2, "nothing logged for the other");
        let log = stores.chats.updates_after(2, 2, 10).await?;
        assert_eq!(log[0].kind, UpdateKind::Deleted { chat_id: ab, message_id: 1_000, for_everyone: false });
        Ok(())
    }

    // ---------------------------------------------------------------- meta

    pub async fn clock_high_water_never_lowers(stores: &Stores) -> TestResult {
        assert_eq!(stores.meta.clock_high_water(1).await?, None);
        stores.meta.set_clock_high_water(1, 1_000).await?;
        assert_eq!(stores.meta.clock_high_water(1).await?, Some(1_000));
        stores.meta.set_clock_high_water(1, 500).await?;
        assert_eq!(stores.meta.clock_high_water(1).await?, Some(1_000), "never lowered");
        stores.meta.set_clock_high_water(1, 2_000).await?;
        assert_eq!(stores.meta.clock_high_water(1).await?, Some(2_000));

        assert_eq!(stores.meta.clock_high_water(2).await?, None, "per generator");
        stores.meta.set_clock_high_water(u16::MAX, 7).await?;
        assert_eq!(stores.meta.clock_high_water(u16::MAX).await?, Some(7));
        assert_eq!(stores.meta.clock_high_water(1).await?, Some(2_000));
        Ok(())
    }

    pub async fn ping_answers(stores: &Stores) -> TestResult {
        stores.meta.ping().await?;
        Ok(())
    }

    // -------------------------------------------------------------- reopen

    pub async fn data_survives_reopen<H: Harness>(harness: &H) -> TestResult {
        let sent = message(1_000, 100, 1, "c1");
        {
            let stores = harness.open().await?;
            users(&stores, &[1, 2]).await?;
            family(&stores, 10, 1, 1).await?;
            stores.chats.direct_chat(1, 2, 100, 50).await?;
            append(&stores, sent.clone(), &[1, 2]).await?;
            stores.chats.mark_read(100, 2, 1_000, true).await?;
        }

        let stores = harness.open().await?;
        assert_eq!(stores.users.user_by_username("user1").await?, Some(record(&new_user(1, "user1"))));
        let chat = ChatRecord { id: 100, kind: ChatKind::Direct, members: vec![1, 2], created_at_ms: 50, group: None };
        assert_eq!(stores.chats.direct_chat(2, 1, 999, 60).await?, chat);
        assert_eq!(stores.chats.messages_before(100, 1, None, 10).await?, [stored(&sent)]);
        assert_eq!(stores.chats.latest_seq(2).await?, 2, "the message and the receipt");
        assert_eq!(append(&stores, message(1_001, 100, 2, "c1"), &[1, 2]).await?, [(1, 3), (2, 3)]);
        assert_eq!(stores.chats.mark_read(100, 2, 900, true).await?, None, "watermarks survived");
        let rotated = stores.tokens.rotate(&hash(1), token(2, 10_000), 100).await?;
        assert_eq!(rotated, RotateOutcome::Rotated { user_id: 1, family_id: 10 });
        Ok(())
    }

    pub async fn clock_high_water_survives_reopen<H: Harness>(harness: &H) -> TestResult {
        {
            let stores = harness.open().await?;
            stores.meta.set_clock_high_water(3, 123_456).await?;
        }
        let stores = harness.open().await?;
        assert_eq!(stores.meta.clock_high_water(3).await?, Some(123_456));
        stores.meta.set_clock_high_water(3, 100).await?;
        assert_eq!(stores.meta.clock_high_water(3).await?, Some(123_456), "still never lowered");
        Ok(())
    }

    // ------------------------------------------------------------ contacts

    use storage::{ChallengeRecord, CodeHash, ConfirmOutcome, ContactChannel, NewChallenge};

    fn challenge(user_id: i64, channel: ContactChannel, value: &str, code: u8, expires_at_ms: i64) -> NewChallenge {
        NewChallenge {
            user_id,
            channel,
            value: value.to_owned(),
            code_hash: code_hash(code),
            expires_at_ms,
            created_at_ms: 100,
        }
    }

    fn code_hash(n: u8) -> CodeHash {
        [n; 32]
    }

    async fn email_of(stores: &Stores, user_id: i64) -> Result<Option<String>, Error> {
        Ok(stores.users.user_by_id(user_id).await?.ok_or("user missing")?.email)
    }

    pub async fn contact_change_takes_effect_on_confirm_and_only_once(stores: &Stores) -> TestResult {
        users(stores, &[1]).await?;
        let contacts = &stores.contacts;
        contacts.put_challenge(challenge(1, ContactChannel::Email, "old@example.com", 1, 10_000)).await?;
        let confirmed = contacts.confirm(1, ContactChannel::Email, &code_hash(1), 5, 200).await?;
        assert_eq!(confirmed, ConfirmOutcome::Confirmed { value: "old@example.com".into() });

        contacts.put_challenge(challenge(1, ContactChannel::Email, "new@example.com", 2, 10_000)).await?;
        assert_eq!(
            contacts.challenge(1, ContactChannel::Email).await?,
            Some(ChallengeRecord {
                user_id: 1,
                channel: ContactChannel::Email,
                value: "new@example.com".into(),
                attempts: 0,
                expires_at_ms: 10_000,
                created_at_ms: 100,
            })
        );
        assert_eq!(email_of(stores, 1).await?.as_deref(), Some("old@example.com"), "old address until confirmed");
        assert_eq!(contacts.challenge(1, ContactChannel::Phone).await?, None, "channels are separate");

        let confirmed = contacts.confirm(1, ContactChannel::Email, &code_hash(2), 5, 300).await?;
        assert_eq!(confirmed, ConfirmOutcome::Confirmed { value: "new@example.com".into() });
        assert_eq!(email_of(stores, 1).await?.as_deref(), Some("new@example.com"));
        assert_eq!(contacts.challenge(1, ContactChannel::Email).await?, None);
        let again = contacts.confirm(1, ContactChannel::Email, &code_hash(2), 5, 300).await?;
        assert_eq!(again, ConfirmOutcome::NoChallenge, "a code works once");

        contacts.put_challenge(challenge(1, ContactChannel::Phone, "+15550001111", 3, 10_000)).await?;
        contacts.confirm(1, ContactChannel::Phone, &code_hash(3), 5, 300).await?;
        let user = stores.users.user_by_id(1).await?.ok_or("user missing")?;
        assert_eq!((user.email.as_deref(), user.phone.as_deref()), (Some("new@example.com"), Some("+15550001111")));
        Ok(())
    }

    pub async fn wrong_codes_count_until_the_challenge_locks(stores: &Stores) -> TestResult {
        users(stores, &[1]).await?;
        let contacts = &stores.contacts;
        contacts.put_challenge(challenge(1, ContactChannel::Phone, "+15550001111", 7, 10_000)).await?;
        for left in [2, 1, 0] {
            let outcome = contacts.confirm(1, ContactChannel::Phone, &code_hash(8), 3, 200).await?;
            assert_eq!(outcome, ConfirmOutcome::WrongCode { attempts_left: left });
        }
        let locked = contacts.confirm(1, ContactChannel::Phone, &code_hash(7), 3, 200).await?;
        assert_eq!(locked, ConfirmOutcome::TooManyAttempts, "even the right code is refused once locked");
        assert_eq!(contacts.challenge(1, ContactChannel::Phone).await?.map(|c| c.attempts), Some(3));
        assert_eq!(stores.users.user_by_id(1).await?.ok_or("user missing")?.phone, None);

        // A new challenge replaces the locked one and starts from zero attempts.
        contacts.put_challenge(challenge(1, ContactChannel::Phone, "+15550002222", 9, 10_000)).await?;
        let stale = contacts.confirm(1, ContactChannel::Phone, &code_hash(7), 3, 200).await?;
        assert_eq!(stale, ConfirmOutcome::WrongCode { attempts_left: 2 }, "the replaced code no longer works");
        let confirmed = contacts.confirm(1, ContactChannel::Phone, &code_hash(9), 3, 200).await?;
        assert_eq!(confirmed, ConfirmOutcome::Confirmed { value: "+15550002222".into() });
        Ok(())
    }

    pub async fn expired_challenges_are_deleted(stores: &Stores) -> TestResult {
        users(stores, &[1]).await?;
        let contacts = &stores.contacts;
        contacts.put_challenge(challenge(1, ContactChannel::Email, "a@example.com", 1, 1_000)).await?;
        let early = contacts.confirm(1, ContactChannel::Email, &code_hash(2), 5, 999).await?;
        assert_eq!(early, ConfirmOutcome::WrongCode { attempts_left: 4 });
        let late = contacts.confirm(1, ContactChannel::Email, &code_hash(1), 5, 1_000).await?;
        assert_eq!(late, ConfirmOutcome::Expired, "expiry is checked before the code");
        assert_eq!(contacts.challenge(1, ContactChannel::Email).await?, None);
        assert_eq!(
            contacts.confirm(1, ContactChannel::Email, &code_hash(1), 5, 1_000).await?,
            ConfirmOutcome::NoChallenge
        );
        assert_eq!(email_of(stores, 1).await?, None);
        Ok(())
    }

    pub async fn confirmed_contacts_are_unique_per_channel(stores: &Stores) -> TestResult {
        users(stores, &[1, 2]).await?;
        let contacts = &stores.contacts;
        contacts.put_challenge(challenge(1, ContactChannel::Email, "shared@example.com", 1, 10_000)).await?;
        // Asking for a code does not reveal that someone else has the address.
        contacts.put_challenge(challenge(2, ContactChannel::Email, "Shared@Example.com", 2, 10_000)).await?;
        contacts.confirm(1, ContactChannel::Email, &code_hash(1), 5, 200).await?;

        let taken = contacts.confirm(2, ContactChannel::Email, &code_hash(2), 5, 200).await;
        assert!(matches!(taken, Err(StorageError::Conflict(_))), "{taken:?}");
        assert_eq!(email_of(stores, 2).await?, None, "nothing changed");
        assert!(contacts.challenge(2, ContactChannel::Email).await?.is_some());

        // Once the first user lets go of it, the second may confirm it.
        assert!(contacts.clear_contact(1, ContactChannel::Email).await?);
        let confirmed = contacts.confirm(2, ContactChannel::Email, &code_hash(2), 5, 200).await?;
        assert_eq!(confirmed, ConfirmOutcome::Confirmed { value: "Shared@Example.com".into() });
        Ok(())
    }

    pub async fn contacts_are_cleared_and_unknown_users_refused(stores: &Stores) -> TestResult {
        users(stores, &[1]).await?;
        let contacts = &stores.contacts;
        contacts.put_challenge(challenge(1, ContactChannel::Email, "a@example.com", 1, 10_000)).await?;
        contacts.confirm(1, ContactChannel::Email, &code_hash(1), 5, 200).await?;
        contacts.put_challenge(challenge(1, ContactChannel::Email, "b@example.com", 2, 10_000)).await?;

        assert!(contacts.clear_contact(1, ContactChannel::Email).await?);
        assert_eq!(email_of(stores, 1).await?, None);
        assert!(!contacts.clear_contact(1, ContactChannel::Email).await?, "nothing left to clear");
        assert!(contacts.challenge(1, ContactChannel::Email).await?.is_some(), "the pending change stays");

        let unknown = contacts.put_challenge(challenge(9, ContactChannel::Email, "c@example.com", 3, 10_000)).await;
        assert!(matches!(unknown, Err(StorageError::NotFound(_))), "{unknown:?}");
        let unknown = contacts.clear_contact(9, ContactChannel::Phone).await;
        assert!(matches!(unknown, Err(StorageError::NotFound(_))), "{unknown:?}");
        assert_eq!(contacts.confirm(9, ContactChannel::Phone, &code_hash(3), 5, 0).await?, ConfirmOutcome::NoChallenge);
        Ok(())
    }
}
