//! ScyllaDB / Cassandra backend (`scylla` driver): the cluster-mode stores.
//!
//! # Connection
//!
//! One [`Session`] per store: token-aware and, with
//! [`ScyllaConfig::local_dc`], DC-aware load balancing (no failover to
//! other data centres); every request at `LOCAL_QUORUM`, lightweight
//! transactions (LWT) at `LOCAL_SERIAL`. [`ScyllaStore::open`] creates the
//! keyspace and tables from `cql/schema.cql` if they are missing and
//! prepares every statement of `statements.rs` once. Multi-row reads are
//! paged ([`PAGE_SIZE`] rows a page).
//!
//! Needs ScyllaDB 6.0 or later with a vnode keyspace (the schema disables
//! tablets: ScyllaDB runs no LWT in tablet keyspaces), or Apache Cassandra
//! 4.0 or later without that line of the schema.
//!
//! # What each call guarantees, and how
//!
//! Scylla has no multi-partition transactions. Where SQLite runs one
//! transaction, this backend picks one *linearization point* (an LWT on one
//! row, the truth) and writes what follows from it afterwards; logged
//! batches make several plain writes all-or-nothing (eventually). The
//! engine serialises appends and group changes per chat (one chat actor),
//! which the read-modify-write steps below rely on, as the trait docs allow.
//! Reads use `LOCAL_QUORUM`, which sees every committed LWT; a read that
//! raced one only makes the compare-and-set after it fail and retry.
//!
//! - **Update-log `seq`** (every logged call): an entry is inserted with
//!   `INSERT … IF NOT EXISTS` at `latest + 1`; losing the race retries at
//!   the next seq ([`CAS_ATTEMPTS`] times). A seq exists only together with
//!   its entry, so a log never has gaps, whoever crashes when.
//! - **`create_user`**: the username key is claimed with an LWT on
//!   `users_by_username` (uniqueness), then the user row and search rows are
//!   written. A claim for the same user ID (a retry after a crash) is taken
//!   as ours. A claim whose user row was never written keeps the username
//!   taken.
//! - **`append_messages`**: per message, `(sender, client_msg_id)` is
//!   claimed with an LWT on `messages_by_client`; the message row and the
//!   chat's newest-message pointer are written in one logged batch; one log
//!   entry per audience member (concurrently, each an LWT as above); then
//!   the claim is marked `logged`. A claim that is `logged` makes a retry a
//!   [`AppendOutcome::Duplicate`](crate::AppendOutcome::Duplicate). A claim that is not (the writer died
//!   midway) is completed by the retry: the message row is written if
//!   missing and the message is logged to the audience again, so a member
//!   may find it twice in their log (same message ID; clients drop
//!   duplicates by ID). Not one atomic step: a failure midway leaves the
//!   earlier messages of a batch written and the failing one completed by a
//!   retry. Every chat of the batch and every audience user is checked to
//!   exist before anything is written, so those failures write nothing.
//!   Cost: about `N + 2` LWTs for an audience of `N`.
//! - **`direct_chat`**: the chat and member rows are written under the new
//!   ID, then the pair is claimed with an LWT on `direct_chats`; the loser
//!   returns the winner's chat (written before the winner's claim) and its
//!   own rows stay unreachable. The chat appears in `chats_of_user` once
//!   `chats_by_user` is written, right after the claim.
//! - **`edit_message`, `delete_message`**: read, update the row, log to the
//!   audience. `edit_count` is read-modify-write (callers serialise per chat).
//! - **`hide_message`**: an LWT insert into `hidden_messages` decides
//!   "first time"; only then is the entry logged.
//! - **`mark_read`**: the reader's two watermarks move with one LWT
//!   (`IF delivered_up_to = ? AND seen_up_to = ?`), retried on contention,
//!   so they never go down; then receipt entries are logged.
//! - **`create_group`, `change_group`**: the limit checks read
//!   `chats_by_user`; member rows are written in logged batches of at most
//!   [`BATCH_LIMIT`] statements, the chat row last (a chat without its row
//!   is skipped by `chats_of_user`); then the event message is stored and
//!   logged like an append. Not atomic as a whole: a crash midway leaves a
//!   partly applied change without its event.
//! - **`RelationStore::apply`**: the pair's state lives in one
//!   `relation_pairs` row with a `version`; [`relation::transition`](crate::relation::transition) runs
//!   on it and the result is written with a compare-and-set on the version
//!   (retried on contention): legal transitions are decided exactly as
//!   with SQLite. The per-user lists (`relations_by_kind`, `blocks_by_user`)
//!   follow in one logged batch and the log entries after; a crash between
//!   the CAS and the batch leaves those lists stale for that pair (the
//!   `relation` and `relations_with` reads use the pair row and stay right).
//! - **`TokenStore::rotate`**: the token is consumed with
//!   `UPDATE … IF used_at_ms = null`: exactly one of two concurrent
//!   rotations wins; the loser sees the token used and revokes the family
//!   (reuse detection). A family revoked concurrently with a rotation may
//!   still get the rotated token, which then fails as revoked.
//! - **`ContactStore::confirm`**: the address is claimed with an LWT on
//!   `contacts_by_value` (uniqueness per channel); the challenge is deleted
//!   with `IF code_hash = ?` (a code works once), then the user row is set
//!   and the previous address released. Wrong codes are counted with
//!   `IF attempts = ? AND code_hash = ?`.
//! - **`MetaStore::set_clock_high_water`**: compare-and-set on the mark,
//!   so it never goes down.
//! - **`set_last_seen`**: written `USING TIMESTAMP` of the value itself, so
//!   the highest value wins.
//! - **Other user changes** (password, profile, presence, avatar): the user
//!   is read ([`StorageError::NotFound`]), then written; users are never
//!   deleted, so the write cannot bring one back. A display-name change
//!   rewrites the user's search rows in the same logged batch.
//!
//! # User search
//!
//! No trigram index: `user_search` holds every prefix (up to
//! [`SEARCH_PREFIX_CHARS`] characters) of the username key and of the
//! display-name key from each word on. A query reads the partition of its
//! first [`SEARCH_PREFIX_CHARS`] characters (at most [`SEARCH_CANDIDATES`]
//! rows), then filters and ranks like SQLite. Limits: a query matches only
//! at the start of the username or of a word of the display name ("lic"
//! does not find "alice"), and a very common prefix ranks only the first
//! [`SEARCH_CANDIDATES`] users of its partition.
//!
//! # Tests
//!
//! `tests/conformance.rs` runs the whole storage contract against a real
//! cluster when `PARLEY_TEST_SCYLLA=host:port` is set (a fresh keyspace per
//! test, dropped after); without it each of those tests prints why and
//! passes without running. The unit tests here run offline: every statement
//! checked against the parsed schema, the row mapping, search prefixes and
//! ranking, watermark arithmetic, the config.

mod chats;
mod contacts;
mod meta;
mod relations;
mod rows;
mod schema;
#[cfg(test)]
mod schema_check;
mod statements;
mod tokens;
mod users;

use std::fmt;

use futures_util::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use serde::{Deserialize, Serialize};

use crate::{StorageError, StorageResult};
use statements::{Binds, Statement};

pub use schema::SCHEMA;

/// Rows per page of a multi-row read.
pub const PAGE_SIZE: i32 = 1_000;

/// Statements per logged batch; longer write sets go in several batches.
pub const BATCH_LIMIT: usize = 100;

/// How often a compare-and-set (a seq, a watermark, a pair's version, the
/// clock) is retried after losing a race before the call fails.
pub const CAS_ATTEMPTS: usize = 100;

/// Log entries (each an LWT) written at once for one message.
pub const LOG_CONCURRENCY: usize = 32;

/// Prefix length (in characters) indexed for user search.
pub const SEARCH_PREFIX_CHARS: usize = 12;

/// Rows of one search prefix read at most per query.
pub const SEARCH_CANDIDATES: usize = 1_000;

/// Where the cluster is and how to use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points as `host:port`, e.g. `"scylla-1:9042"`; the driver
    /// discovers the rest of the cluster. Default: `["127.0.0.1:9042"]`.
    pub nodes: Vec<String>,
    /// Keyspace holding Parley's tables (letters, digits, `_`; starting
    /// with a letter; at most 48 characters). Default: `"parley"`.
    pub keyspace: String,
    /// This node's data centre: requests go to its replicas only (with
    /// `LOCAL_QUORUM`). Default: none (every data centre is local).
    pub local_dc: Option<String>,
    /// Replicas per data centre when the keyspace is created
    /// (`NetworkTopologyStrategy`); an existing keyspace is left as it is.
    /// Default: 3.
    pub replication_factor: u32,
    /// User for password authentication. Default: none (no authentication).
    pub username: Option<String>,
    /// Password of `username`; never printed by `Debug`. Default: none.
    pub password: Option<Password>,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "parley".into(),
            local_dc: None,
            replication_factor: 3,
            username: None,
            password: None,
        }
    }
}

/// A password that `Debug` prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }

    /// The password itself, for the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Every store on one Scylla session.
pub struct ScyllaStore {
    session: Session,
    /// [`statements::ALL`], prepared, in the same order.
    prepared: Vec<PreparedStatement>,
}

impl fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaStore").field("statements", &self.prepared.len()).finish_non_exhaustive()
    }
}

/// Maps any driver error to [`StorageError::Backend`].
trait OrBackend<T> {
    fn or_backend(self) -> StorageResult<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> OrBackend<T> for Result<T, E> {
    fn or_backend(self) -> StorageResult<T> {
        self.map_err(|error| StorageError::Backend(Box::new(error)))
    }
}

/// A [`StorageError::Backend`] with a message.
fn backend(message: String) -> StorageError {
    StorageError::Backend(message.into())
}

/// The result of a lightweight transaction: whether it applied, and the
/// row's current columns when it did not.
#[derive(Debug)]
struct Lwt {
    applied: bool,
    columns: Vec<(String, Option<CqlValue>)>,
}

impl Lwt {
    /// Reads an LWT's result row: `[applied]` first, then the row's
    /// current columns (all of them on ScyllaDB, the conditions' on Cassandra).
    fn from_row(names: Vec<String>, row: Row) -> Self {
        let applied = matches!(row.columns.first(), Some(Some(CqlValue::Boolean(true))));
        Lwt { applied, columns: names.into_iter().zip(row.columns).collect() }
    }

    fn column(&self, name: &str) -> Option<&CqlValue> {
        self.columns.iter().find(|(column, _)| column == name).and_then(|(_, value)| value.as_ref())
    }

    /// A `bigint` column of the current row.
    fn bigint(&self, name: &str) -> Option<i64> {
        match self.column(name) {
            Some(CqlValue::BigInt(value)) => Some(*value),
            _ => None,
        }
    }

    /// A `boolean` column of the current row.
    fn boolean(&self, name: &str) -> Option<bool> {
        match self.column(name) {
            Some(CqlValue::Boolean(value)) => Some(*value),
            _ => None,
        }
    }
}

/// Writes to send as logged batches ([`ScyllaStore::write`]).
#[derive(Default)]
struct Writes {
    statements: Vec<(statements::Id, Box<dyn SerializeRow + Send + Sync>)>,
}

impl Writes {
    fn push<const N: usize>(&mut self, statement: Statement<N>, values: impl Binds<N> + 'static) {
        self.statements.push((statement.id, Box::new(values)));
    }
}

impl ScyllaStore {
    /// Connects, creates the keyspace and tables if missing, and prepares
    /// every statement.
    pub async fn open(config: &ScyllaConfig) -> StorageResult<Self> {
        schema::check_keyspace_name(&config.keyspace)?;
        let mut policy = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = &config.local_dc {
            policy = policy.prefer_datacenter(dc.clone()).permit_dc_failover(false);
        }
        let profile = ExecutionProfile::builder()
            .consistency(Consistency::LocalQuorum)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .load_balancing_policy(policy.build())
            .build();
        let mut builder =
            SessionBuilder::new().known_nodes(&config.nodes).default_execution_profile_handle(profile.into_handle());
        if let Some(username) = &config.username {
            let password = config.password.as_ref().map(Password::expose).unwrap_or_default();
            builder = builder.user(username, password);
        }
        let session = builder.build().await.or_backend()?;
        for statement in schema::statements(&config.keyspace, config.replication_factor) {
            session.query_unpaged(statement, ()).await.or_backend()?;
        }
        session.await_schema_agreement().await.or_backend()?;
        session.use_keyspace(&config.keyspace, false).await.or_backend()?;
        let mut prepared = Vec::with_capacity(statements::ALL.len());
        for entry in statements::ALL {
            let mut statement = session.prepare(entry.cql).await.or_backend()?;
            let markers = statement.get_variable_col_specs().len();
            if markers != entry.binds {
                return Err(backend(format!("{}: {markers} bind markers, {} declared", entry.name, entry.binds)));
            }
            statement.set_page_size(PAGE_SIZE);
            prepared.push(statement);
        }
        tracing::info!(keyspace = %config.keyspace, statements = prepared.len(), "scylla store open");
        Ok(ScyllaStore { session, prepared })
    }

    fn prepared(&self, id: statements::Id) -> &PreparedStatement {
        // `prepared` holds one entry per `Id`, in order (see `open`).
        &self.prepared[id as usize]
    }

    async fn execute<const N: usize>(
        &self,
        statement: Statement<N>,
        values: impl Binds<N>,
    ) -> StorageResult<QueryResult> {
        self.session.execute_unpaged(self.prepared(statement.id), values).await.or_backend()
    }

    /// Every row of a read that is bounded by its `LIMIT` or key.
    async fn rows<const N: usize, R>(&self, statement: Statement<N>, values: impl Binds<N>) -> StorageResult<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.execute(statement, values).await?.into_rows_result().or_backend()?;
        result.rows::<R>().or_backend()?.collect::<Result<Vec<R>, _>>().or_backend()
    }

    /// The one row a key names, if any.
    async fn row<const N: usize, R>(&self, statement: Statement<N>, values: impl Binds<N>) -> StorageResult<Option<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        Ok(self.rows(statement, values).await?.into_iter().next())
    }

    /// Reads page by page, handing each row to `visit` until it returns false.
    async fn scan<const N: usize, R>(
        &self,
        statement: Statement<N>,
        values: impl Binds<N>,
        mut visit: impl FnMut(R) -> StorageResult<bool> + Send,
    ) -> StorageResult<()>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + Send + 'static,
    {
        let pager = self.session.execute_iter(self.prepared(statement.id).clone(), values).await.or_backend()?;
        let mut rows = pager.rows_stream::<R>().or_backend()?;
        while let Some(row) = rows.try_next().await.or_backend()? {
            if !visit(row)? {
                break;
            }
        }
        Ok(())
    }

    /// Every row of a paged read.
    async fn all<const N: usize, R>(&self, statement: Statement<N>, values: impl Binds<N>) -> StorageResult<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + Send + 'static,
    {
        let mut all = Vec::new();
        self.scan(statement, values, |row| {
            all.push(row);
            Ok(true)
        })
        .await?;
        Ok(all)
    }

    /// Runs a lightweight transaction.
    async fn lwt<const N: usize>(&self, statement: Statement<N>, values: impl Binds<N>) -> StorageResult<Lwt> {
        let result = self.execute(statement, values).await?.into_rows_result().or_backend()?;
        let names: Vec<String> = result.column_specs().iter().map(|spec| spec.name().to_owned()).collect();
        let row = result.maybe_first_row::<Row>().or_backend()?;
        let row = row.ok_or_else(|| backend("lwt returned no row".into()))?;
        Ok(Lwt::from_row(names, row))
    }

    /// Sends `writes` as logged batches of at most [`BATCH_LIMIT`]
    /// statements, in order; each batch applies entirely or not at all.
    async fn write(&self, writes: Writes) -> StorageResult<()> {
        let mut statements = writes.statements.into_iter().peekable();
        while statements.peek().is_some() {
            let mut batch = Batch::new(BatchType::Logged);
            let mut values = Vec::with_capacity(BATCH_LIMIT);
            for (id, row) in statements.by_ref().take(BATCH_LIMIT) {
                batch.append_statement(self.prepared(id).clone());
                values.push(row);
            }
            self.session.batch(&batch, values).await.or_backend()?;
        }
        Ok(())
    }

    /// Runs `each` for every item, [`LOG_CONCURRENCY`] at a time, and
    /// returns the results in the items' order.
    async fn for_each<T, R, F>(
        &self,
        items: impl IntoIterator<Item = T>,
        each: impl Fn(T) -> F,
    ) -> StorageResult<Vec<R>>
    where
        F: Future<Output = StorageResult<R>>,
    {
        futures_util::stream::iter(items.into_iter().map(each)).buffered(LOG_CONCURRENCY).try_collect().await
    }
}

/// Microseconds for `USING TIMESTAMP` from milliseconds.
fn micros(ms: i64) -> i64 {
    ms.saturating_mul(1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_fill_what_is_left_out() -> Result<(), serde_json::Error> {
        let config: ScyllaConfig = serde_json::from_str(r#"{"nodes": ["scylla-1:9042", "scylla-2:9042"]}"#)?;
        assert_eq!(config.nodes, ["scylla-1:9042", "scylla-2:9042"]);
        assert_eq!((config.keyspace.as_str(), config.replication_factor), ("parley", 3));
        assert_eq!((config.local_dc, config.username, config.password), (None, None, None));
        assert_eq!(serde_json::from_str::<ScyllaConfig>("{}")?, ScyllaConfig::default());
        Ok(())
    }

    #[test]
    fn unknown_config_fields_are_refused() {
        assert!(serde_json::from_str::<ScyllaConfig>(r#"{"replication": 3}"#).is_err());
    }

    #[test]
    fn debug_never_prints_the_password() -> Result<(), serde_json::Error> {
        let config: ScyllaConfig = serde_json::from_str(r#"{"username": "parley", "password": "hunter2"}"#)?;
        assert_eq!(config.password.as_ref().map(Password::expose), Some("hunter2"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2") && printed.contains("<redacted>"), "{printed}");
        Ok(())
    }

    #[test]
    fn lwt_results_are_read_by_column_name() {
        let names = ["[applied]", "user_id", "logged", "relation"].map(String::from).to_vec();
        let columns =
            vec![Some(CqlValue::Boolean(false)), Some(CqlValue::BigInt(7)), Some(CqlValue::Boolean(true)), None];
        let lwt = Lwt::from_row(names.clone(), Row { columns });
        assert!(!lwt.applied);
        assert_eq!((lwt.bigint("user_id"), lwt.boolean("logged")), (Some(7), Some(true)));
        assert_eq!((lwt.bigint("logged"), lwt.bigint("relation"), lwt.bigint("nope")), (None, None, None));
        let applied = Lwt::from_row(names, Row { columns: vec![Some(CqlValue::Boolean(true))] });
        assert!(applied.applied);
    }
}
