//! Snowflake IDs from a monotonic clock that never goes backwards, also across restarts.
//!
//! Layout (63 bits, always positive): 41 bits of milliseconds since
//! [`EPOCH_MS`], [`GENERATOR_BITS`] bits of generator ID, [`SEQUENCE_BITS`]
//! bits of per-millisecond sequence. Every ID this generator returns is
//! larger than every ID it returned before, including before a restart:
//! the clock persists a high-water mark [`RESERVATION_MS`] ahead of the time
//! it hands out, and restarts from that mark. The next mark is written in
//! the background once the IDs come within [`RENEW_AHEAD_MS`] of the
//! current one, so under steady load no ID waits for that write; an ID
//! waits only if it would reach a mark that is not yet durable.
//!
//! The generator ID comes from a [`GeneratorLease`]: fixed and permanent on
//! one node, leased from Redis in a cluster (`crate::cluster::LeaseKeeper`).
//! No ID is handed out while the lease is not valid, and whenever the lease
//! is granted anew (first grant, or a new claim after it was lost) the
//! generator restarts above the persisted high-water mark of the granted
//! ID, so it never repeats an ID an earlier holder of that ID handed out.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use storage::{MetaStore, StorageError};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// The ID epoch: 2025-01-01T00:00:00Z, in Unix milliseconds. 41 bits of
/// milliseconds last about 69 years from it.
pub const EPOCH_MS: u64 = 1_735_689_600_000;
/// Bits for the generator ID: up to 1,024 live generators.
pub const GENERATOR_BITS: u32 = 10;
/// Bits for the sequence: up to 4,096 IDs per millisecond per generator.
pub const SEQUENCE_BITS: u32 = 12;
/// Largest generator ID.
pub const MAX_GENERATOR: u16 = (1 << GENERATOR_BITS) - 1;
const MAX_SEQUENCE: u64 = (1 << SEQUENCE_BITS) - 1;
const MAX_TIMESTAMP: u64 = (1 << 41) - 1;
/// How far ahead of the clock the persisted high-water mark is set. Under
/// steady load one durable write per `RESERVATION_MS - RENEW_AHEAD_MS` of
/// IDs; after a crash the clock skips at most this much.
pub const RESERVATION_MS: u64 = 10_000;
/// How close to the persisted mark the IDs come before the next mark is
/// written, in the background: half a reservation, so the write has about
/// five seconds to land before an ID would have to wait for it.
pub const RENEW_AHEAD_MS: u64 = RESERVATION_MS / 2;

/// A wall-clock time source in Unix milliseconds. Injectable for tests.
pub trait Clock: Send + Sync + 'static {
    fn now_unix_ms(&self) -> u64;
}

/// The system clock made monotonic: wall time at start plus a monotonic
/// elapsed time, so adjustments of the system clock while running do not
/// move it backwards.
#[derive(Debug)]
pub struct SystemClock {
    start_unix_ms: u64,
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        let start_unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(EPOCH_MS);
        SystemClock { start_unix_ms, start: Instant::now() }
    }
}

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        self.start_unix_ms + self.start.elapsed().as_millis() as u64
    }
}

/// The parts of a snowflake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnowflakeParts {
    /// Unix milliseconds.
    pub unix_ms: u64,
    pub generator: u16,
    pub sequence: u16,
}

/// Splits an ID into its parts.
pub fn decompose(id: i64) -> SnowflakeParts {
    let id = id as u64;
    SnowflakeParts {
        unix_ms: (id >> (GENERATOR_BITS + SEQUENCE_BITS)) + EPOCH_MS,
        generator: ((id >> SEQUENCE_BITS) & u64::from(MAX_GENERATOR)) as u16,
        sequence: (id & MAX_SEQUENCE) as u16,
    }
}

/// A grant of one generator ID: which, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub generator: u16,
    /// Changes each time the ID is granted anew (not when it is extended):
    /// the generator then re-reads the high-water mark.
    pub epoch: u64,
    /// IDs may be handed out before this instant; `None`: forever.
    pub valid_until: Option<Instant>,
}

/// The right to hand out IDs under one generator ID, shared between the
/// [`IdGenerator`] that checks it and whoever keeps it (a lease keeper).
/// Cheap to clone; clones see the same state.
#[derive(Clone, Debug)]
pub struct GeneratorLease {
    grant: Arc<RwLock<Option<LeaseGrant>>>,
}

impl GeneratorLease {
    /// A lease that grants nothing yet.
    pub fn vacant() -> Self {
        GeneratorLease { grant: Arc::new(RwLock::new(None)) }
    }

    /// The grant in force at `now`, if any.
    pub fn valid_at(&self, now: Instant) -> Option<LeaseGrant> {
        self.get().filter(|grant| grant.valid_until.is_none_or(|until| now < until))
    }

    /// The last grant, valid or not.
    pub fn get(&self) -> Option<LeaseGrant> {
        // Nothing panics while holding the lock; a poisoned one holds a whole value.
        *self.grant.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the grant; `None` stops the generator at once.
    pub fn set(&self, grant: Option<LeaseGrant>) {
        *self.grant.write().unwrap_or_else(PoisonError::into_inner) = grant;
    }
}

/// Errors of [`IdGenerator`].
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("generator id {0} is above {MAX_GENERATOR}")]
    BadGenerator(u16),
    /// The node holds no valid generator lease (Redis unreachable, or the
    /// ID was lost to another node): it hands out no IDs until it has one.
    #[error("this node holds no valid generator lease")]
    NoLease,
    #[error("the 41-bit timestamp is exhausted")]
    Exhausted,
    #[error("persisting the clock high-water mark failed")]
    Storage(#[from] StorageError),
}

#[derive(Default)]
struct State {
    /// The grant the state below was set up for (generator, epoch).
    granted: Option<(u16, u64)>,
    /// Milliseconds since the ID epoch of the last ID handed out.
    last_ms: u64,
    sequence: u64,
    /// Persisted high-water mark; no ID may use a timestamp at or above it.
    reserved_until: u64,
    /// The write of the next mark for the current grant, running in the
    /// background (a new grant drops it).
    renewal: Option<Renewal>,
}

/// A background write of a higher mark; it counts once it has landed and
/// the lease still holds.
struct Renewal {
    mark: u64,
    write: JoinHandle<Result<(), StorageError>>,
}

/// Hands out snowflake IDs under the generator ID its lease grants.
pub struct IdGenerator {
    lease: GeneratorLease,
    clock: Arc<dyn Clock>,
    meta: Arc<dyn MetaStore>,
    state: Mutex<State>,
}

impl IdGenerator {
    /// Starts handing out IDs under `lease`; if it grants an ID already,
    /// loads that ID's persisted high-water mark now.
    pub async fn start(
        lease: GeneratorLease,
        clock: Arc<dyn Clock>,
        meta: Arc<dyn MetaStore>,
    ) -> Result<Self, IdError> {
        let ids = IdGenerator { lease, clock, meta, state: Mutex::new(State::default()) };
        if let Some(grant) = ids.lease.valid_at(Instant::now()) {
            ids.follow(&mut *ids.state.lock().await, grant).await?;
        }
        Ok(ids)
    }

    /// The grant in force; on a new grant, restarts above its generator
    /// ID's persisted high-water mark (and above every ID handed out here).
    async fn valid_grant(&self, state: &mut State) -> Result<LeaseGrant, IdError> {
        let grant = self.lease.valid_at(Instant::now()).ok_or(IdError::NoLease)?;
        if state.granted != Some((grant.generator, grant.epoch)) {
            self.follow(state, grant).await?;
        }
        Ok(grant)
    }

    async fn follow(&self, state: &mut State, grant: LeaseGrant) -> Result<(), IdError> {
        let high_water = self.meta.clock_high_water(grant.generator).await?.unwrap_or(0);
        // A later millisecond than any ID before, whatever the generator ID.
        let first_ms = if state.granted.is_some() { state.last_ms + 1 } else { 0 };
        *state = State {
            granted: Some((grant.generator, grant.epoch)),
            last_ms: first_ms.max(high_water),
            sequence: 0,
            reserved_until: high_water,
            renewal: None,
        };
        Ok(())
    }

    /// Returns the next ID, strictly greater than every earlier one, or
    /// [`IdError::NoLease`] while the lease is not valid.
    pub async fn next_id(&self) -> Result<i64, IdError> {
        let mut state = self.state.lock().await;
        let generator = self.valid_grant(&mut state).await?.generator;
        let (ms, sequence) = loop {
            let now = self.clock.now_unix_ms().saturating_sub(EPOCH_MS);
            if now > state.last_ms {
                break (now, 0);
            }
            if state.sequence < MAX_SEQUENCE {
                // Same millisecond, or the clock is behind the last ID
                // (stepped back, or restarted behind the high-water mark):
                // stay on the last millisecond.
                break (state.last_ms, state.sequence + 1);
            }
            if now < state.last_ms {
                // Sequence exhausted with the clock behind the last ID:
                // continue on the next millisecond. Waiting for the clock
                // would hold every ID, and so every send of the node, until
                // it caught up: up to `RESERVATION_MS` after a restart,
                // which starts at the high-water mark.
                break (state.last_ms + 1, 0);
            }
            // Sequence exhausted in the current millisecond: wait for the
            // next one, so IDs never run ahead of the clock under load.
            tokio::time::sleep(Duration::from_micros(250)).await;
        };
        if ms > MAX_TIMESTAMP {
            return Err(IdError::Exhausted);
        }
        if state.renewal.as_ref().is_some_and(|renewal| renewal.write.is_finished()) {
            self.finish_renewal(&mut state, generator).await?;
        }
        if ms >= state.reserved_until {
            self.reserve(&mut state, generator, ms).await?;
        } else if ms + RENEW_AHEAD_MS >= state.reserved_until && state.renewal.is_none() {
            let (meta, mark) = (self.meta.clone(), ms + RESERVATION_MS);
            let write = tokio::spawn(async move { meta.set_clock_high_water(generator, mark).await });
            state.renewal = Some(Renewal { mark, write });
        }
        state.last_ms = ms;
        state.sequence = sequence;
        let id = (ms << (GENERATOR_BITS + SEQUENCE_BITS)) | (u64::from(generator) << SEQUENCE_BITS) | sequence;
        Ok(id as i64)
    }

    /// Makes `ms` usable: waits for the background renewal if it covers
    /// `ms`, else writes a mark [`RESERVATION_MS`] past it and waits.
    async fn reserve(&self, state: &mut State, generator: u16, ms: u64) -> Result<(), IdError> {
        if state.renewal.as_ref().is_some_and(|renewal| renewal.mark > ms) {
            self.finish_renewal(state, generator).await?;
            if ms < state.reserved_until {
                return Ok(());
            }
        }
        let mark = ms + RESERVATION_MS;
        self.meta.set_clock_high_water(generator, mark).await?;
        self.raise(state, generator, mark)
    }

    /// Waits for the background renewal and counts its mark if it landed.
    /// A failed renewal is dropped: the mark is written again, and waited
    /// for, when an ID reaches the current one. Cancel-safe: the renewal
    /// stays in `state` until its write has finished.
    async fn finish_renewal(&self, state: &mut State, generator: u16) -> Result<(), IdError> {
        let Some(renewal) = state.renewal.as_mut() else { return Ok(()) };
        let written = (&mut renewal.write).await;
        let Some(Renewal { mark, .. }) = state.renewal.take() else { return Ok(()) };
        match written {
            Ok(Ok(())) => self.raise(state, generator, mark),
            Ok(Err(error)) => {
                tracing::warn!(%error, generator, "renewing the ID clock's high-water mark failed; retrying when it is reached");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, generator, "the ID clock's high-water mark renewal did not finish");
                Ok(())
            }
        }
    }

    /// Counts a mark that has been written. The write took time: the lease
    /// must still hold, or a new holder may have read the mark before this
    /// write raised it.
    fn raise(&self, state: &mut State, generator: u16, mark: u64) -> Result<(), IdError> {
        self.lease.valid_at(Instant::now()).filter(|grant| grant.generator == generator).ok_or(IdError::NoLease)?;
        state.reserved_until = state.reserved_until.max(mark);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A clock the test moves by hand.
    struct ManualClock(AtomicU64);

    impl Clock for ManualClock {
        fn now_unix_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn meta(dir: &tempfile::TempDir) -> Arc<dyn MetaStore> {
        let stores = storage::open(&storage::StorageConfig::default(), dir.path()).expect("store opens");
        stores.meta
    }

    /// A lease of `generator` from `epoch` on, forever.
    fn forever(generator: u16, epoch: u64) -> GeneratorLease {
        let lease = GeneratorLease::vacant();
        lease.set(Some(LeaseGrant { generator, epoch, valid_until: None }));
        lease
    }

    async fn generator(clock: &Arc<ManualClock>, meta: &Arc<dyn MetaStore>) -> IdGenerator {
        IdGenerator::start(forever(7, 1), clock.clone(), meta.clone()).await.expect("generator starts")
    }

    #[actix_rt::test]
    async fn ids_carry_time_generator_and_sequence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock(AtomicU64::new(EPOCH_MS + 5_000)));
        let ids = generator(&clock, &meta(&dir)).await;
        let first = ids.next_id().await.expect("id");
        let second = ids.next_id().await.expect("id");
        assert_eq!(decompose(first), SnowflakeParts { unix_ms: EPOCH_MS + 5_000, generator: 7, sequence: 0 });
        assert_eq!(decompose(second).sequence, 1);
        assert!(second > first);
    }

    #[actix_rt::test]
    async fn a_clock_that_steps_back_never_yields_smaller_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock(AtomicU64::new(EPOCH_MS + 50_000)));
        let ids = generator(&clock, &meta(&dir)).await;
        let before = ids.next_id().await.expect("id");
        clock.0.store(EPOCH_MS + 20_000, Ordering::SeqCst);
        let after = ids.next_id().await.expect("id");
        assert!(after > before, "{after} <= {before}");
    }

    #[actix_rt::test]
    async fn sequence_overflow_waits_for_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock(AtomicU64::new(EPOCH_MS + 1_000)));
        let ids = generator(&clock, &meta(&dir)).await;
        let mut last = 0;
        for _ in 0..=MAX_SEQUENCE {
            last = ids.next_id().await.expect("id");
        }
        assert_eq!(decompose(last).sequence as u64, MAX_SEQUENCE);
        // The millisecond is used up: the next ID waits until the clock moves.
        let ticker = clock.clone();
        actix_rt::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            ticker.0.store(EPOCH_MS + 1_001, Ordering::SeqCst);
        });
        let next = ids.next_id().await.expect("id");
        assert!(next > last);
        assert_eq!(decompose(next), SnowflakeParts { unix_ms: EPOCH_MS + 1_001, generator: 7, sequence: 0 });
    }

    #[actix_rt::test]
    async fn sequence_overflow_with_a_clock_far_behind_continues_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock(AtomicU64::new(EPOCH_MS + 100_000)));
        let ids = generator(&clock, &meta(&dir)).await;
        ids.next_id().await.expect("id");
        clock.0.store(EPOCH_MS + 100_000 - 3_600_000, Ordering::SeqCst);
        let mut last = 0;
        for _ in 0..=MAX_SEQUENCE + 10 {
            let id = ids.next_id().await.expect("id");
            assert!(id > last);
            last = id;
        }
        assert_eq!(decompose(last).unix_ms, EPOCH_MS + 100_001);
    }

    #[actix_rt::test]
    async fn after_a_restart_a_used_up_millisecond_does_not_wait_for_the_clock_to_catch_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = meta(&dir);
        let clock = Arc::new(ManualClock(AtomicU64::new(EPOCH_MS + 100_000)));
        generator(&clock, &meta).await.next_id().await.expect("id");
        // Restarted 9.5 s later: IDs start at the high-water mark, which the
        // clock is half a second behind, and the clock does not move meanwhile.
        clock.0.store(EPOCH_MS + 100_000 + RESERVATION_MS - 500, Ordering::SeqCst);
        let ids = generator(&clock, &meta).await;
        let mut last = 0;
        for _ in 0..=MAX_SEQUENCE + 10 {
            let id = tokio::time::timeout(Duration::from_secs(5), ids.next_id())
                .await
                .expect("an ID waited for the clock")
                .expect("id");
            assert!(id > last);
            last = id;
        }
        assert_eq!(decompose(last).unix_ms, EPOCH_MS + 100_000 + RESERVATION_MS + 1);
    }

    /// The real store, with a gate the test closes to hold the mark's writes.
    struct GatedMeta {
        inner: Arc<dyn MetaStore>,
        gate: tokio::sync::RwLock<()>,
    }

    #[async_trait::async_trait]
    impl MetaStore for GatedMeta {
        async fn clock_high_water(&self, generator: u16) -> storage::StorageResult<Option<u64>> {
            self.inner.clock_high_water(generator).await
        }
        async fn set_clock_high_water(&self, generator: u16, ms: u64) -> storage::StorageResult<()> {
            let _open = self.gate.read().await;
            self.inner.set_clock_high_water(generator, ms).await
        }
        async fn ping(&self) -> storage::StorageResult<()> {
            self.inner.ping().await
        }
    }

    #[actix_rt::test]
    async fn the_next_mark_is_written_in_the_background_and_no_id_passes_a_mark_not_yet_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = meta(&dir);
        let gated = Arc::new(GatedMeta { inner: store.clone(), gate: tokio::sync::RwLock::new(()) });
        let start = 100_000;
        let clock = Arc::new(ManualClock(AtomicU64::new(EPOCH_MS + start)));
        let meta: Arc<dyn MetaStore> = gated.clone();
        let ids = generator(&clock, &meta).await;
        let id_at = |ms: u64| {
            clock.0.store(EPOCH_MS + ms, Ordering::SeqCst);
            tokio::time::timeout(Duration::from_millis(500), ids.next_id())
        };
        let mark = |store: Arc<dyn MetaStore>| async move { store.clock_high_water(7).await.expect("mark") };
        id_at(start).await.expect("the first ID").expect("id");
        let first_mark = start + RESERVATION_MS;
        assert_eq!(mark(store.clone()).await, Some(first_mark));

        // Within RENEW_AHEAD_MS of the mark, the next one is written in the
        // background: once it has landed, an ID at the old mark does not
        // wait for the store, even a stalled one.
        id_at(first_mark - RENEW_AHEAD_MS).await.expect("an ID in the window").expect("id");
        let second_mark = first_mark - RENEW_AHEAD_MS + RESERVATION_MS;
        eventually(|| async { mark(store.clone()).await == Some(second_mark) }).await;
        let stalled = gated.gate.write().await;
        let id = id_at(first_mark).await.expect("an ID at the old mark waited for the store").expect("id");
        assert_eq!(decompose(id).unix_ms, EPOCH_MS + first_mark);

        // That ID started the write of the third mark, which the stalled
        // store holds: no ID reaches the second mark until it has landed.
        assert!(id_at(second_mark).await.is_err(), "an ID passed a mark that was not written");
        assert_eq!(mark(store.clone()).await, Some(second_mark));
        drop(stalled);
        let id = id_at(second_mark).await.expect("the ID once the mark is written").expect("id");
        assert_eq!(decompose(id).unix_ms, EPOCH_MS + second_mark);
        assert_eq!(mark(store).await, Some(first_mark + RESERVATION_MS));
    }

    /// Polls `check` every 10 ms, for at most five seconds.
    async fn eventually<F: std::future::Future<Output = bool>>(check: impl Fn() -> F) {
        for _ in 0..500 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within five seconds");
    }

    #[actix_rt::test]
    async fn restart_behind_the_old_clock_continues_above_every_issued_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = meta(&dir);
        let clock = Arc::new(ManualClock(AtomicU64::new(EPOCH_MS + 100_000)));
        let issued = {
            let ids = generator(&clock, &meta).await;
            let mut last = 0;
            for _ in 0..100 {
                last = ids.next_id().await.expect("id");
            }
            last
        };
        // The machine comes back with its clock an hour behind.
        clock.0.store(EPOCH_MS + 100_000 - 3_600_000, Ordering::SeqCst);
        let ids = generator(&clock, &meta).await;
        assert!(ids.next_id().await.expect("id") > issued);
    }

    #[actix_rt::test]
    async fn no_ids_without_a_valid_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock(AtomicU64::new(EPOCH_MS + 5_000)));
        let lease = GeneratorLease::vacant();
        let ids = IdGenerator::start(lease.clone(), clock.clone(), meta(&dir)).await.expect("starts");
        assert!(matches!(ids.next_id().await, Err(IdError::NoLease)));
        let until = Instant::now() + Duration::from_secs(60);
        lease.set(Some(LeaseGrant { generator: 3, epoch: 1, valid_until: Some(until) }));
        assert_eq!(decompose(ids.next_id().await.expect("id")).generator, 3);
        // Expired: refused again.
        lease.set(Some(LeaseGrant { generator: 3, epoch: 1, valid_until: Some(Instant::now()) }));
        assert!(matches!(ids.next_id().await, Err(IdError::NoLease)));
    }

    #[actix_rt::test]
    async fn a_new_grant_continues_above_the_previous_holders_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = meta(&dir);
        let clock = Arc::new(ManualClock(AtomicU64::new(EPOCH_MS + 100_000)));
        // Another node held generator 5 and handed out IDs with a clock ahead of ours.
        let other_clock = Arc::new(ManualClock(AtomicU64::new(EPOCH_MS + 160_000)));
        let other = IdGenerator::start(forever(5, 1), other_clock, meta.clone()).await.expect("starts");
        let theirs = other.next_id().await.expect("id");
        // This node moves from generator 2 to generator 5.
        let lease = forever(2, 1);
        let ids = IdGenerator::start(lease.clone(), clock.clone(), meta).await.expect("starts");
        let before = ids.next_id().await.expect("id");
        lease.set(Some(LeaseGrant { generator: 5, epoch: 2, valid_until: None }));
        let after = ids.next_id().await.expect("id");
        assert_eq!(decompose(after).generator, 5);
        assert!(after > theirs && after > before, "{after} vs {theirs}, {before}");
    }
}
