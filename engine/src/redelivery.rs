//! Deliveries the bus refused for a while ([`BusError::Unavailable`]):
//! updates and presence bookkeeping, published again in the background
//! until the bus takes them.
//!
//! An update is durable before it is published, so a failed publish loses
//! nothing. But a recipient who stays connected would not see the update
//! until a later one showed them the gap, or they reconnected: the last
//! message of a conversation could wait for hours. Lost bookkeeping (who
//! watches whom) would leave a watcher blind to a friend's presence until
//! they reconnected. [`Redelivery`] keeps such deliveries and publishes
//! them again every [`RETRY_PAUSE`] until they go through, for at most
//! [`GIVE_UP_AFTER`] and at most [`MAX_PENDING`] at a time; past either
//! bound a delivery is dropped and counted; what is pending when the node
//! stops is dropped too (recipients see those updates at their next
//! `sync`). A redelivered update can arrive after later ones, or twice:
//! clients order and deduplicate by `seq` (docs/protocol.md). Bookkeeping
//! is a set of who watches whom, and a late `Watch` sends the presence
//! current when it arrives. Typing indicators and presence views are not
//! kept: they would be stale.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Metrics;
use crate::bus::{Bus, BusError, Delivery};

/// How long between two attempts to publish what is pending.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long a delivery is retried after its first publish failed.
const GIVE_UP_AFTER: Duration = Duration::from_secs(300);
/// How many deliveries wait at most; more are dropped.
const MAX_PENDING: usize = 10_000;
/// How many deliveries one attempt publishes at once.
const ROUND: usize = 1_024;

/// The queue of deliveries to publish again; cheap to clone.
#[derive(Clone)]
pub(crate) struct Redelivery {
    tx: mpsc::Sender<Pending>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Pending {
    delivery: Delivery,
    /// When its first publish failed.
    since: Instant,
}

impl Redelivery {
    /// Starts the task that publishes the queued deliveries on `bus`; it
    /// ends when every [`Redelivery`] handle is dropped, or when aborted.
    pub(crate) fn start(bus: Arc<dyn Bus>, metrics: Arc<Metrics>) -> (Redelivery, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAX_PENDING);
        let task = tokio::spawn(run(bus, metrics.clone(), rx));
        (Redelivery { tx, metrics }, task)
    }

    /// Queues `delivery`, whose publish just failed; drops it (counted)
    /// if the queue is full.
    fn retry(&self, delivery: Delivery) {
        let pending = Pending { delivery, since: Instant::now() };
        match self.tx.try_send(pending) {
            Ok(()) => self.metrics.redeliveries.with_label_values(&["queued"]).inc(),
            Err(_) => self.metrics.redeliveries.with_label_values(&["dropped"]).inc(),
        }
    }
}

/// Publishes `delivery` on `bus`; if the bus is unavailable and
/// `redelivery` is given, a copy is queued to be published again. Returns
/// the first publish's outcome either way.
pub(crate) async fn publish(
    bus: &dyn Bus,
    redelivery: Option<&Redelivery>,
    delivery: Delivery,
) -> Result<(), BusError> {
    let copy = redelivery.map(|redelivery| (redelivery, delivery.clone()));
    let published = bus.publish(delivery).await;
    if let (Err(BusError::Unavailable(_)), Some((redelivery, copy))) = (&published, copy) {
        redelivery.retry(copy);
    }
    published
}

async fn run(bus: Arc<dyn Bus>, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Pending>) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(first) => pending.push_back(first),
                None => return,
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        while let Ok(more) = rx.try_recv() {
            if pending.len() < MAX_PENDING {
                pending.push_back(more);
            } else {
                metrics.redeliveries.with_label_values(&["dropped"]).inc();
            }
        }
        let before = pending.len();
        pending.retain(|waiting| waiting.since.elapsed() < GIVE_UP_AFTER);
        let expired = before - pending.len();
        if expired > 0 {
            metrics.redeliveries.with_label_values(&["dropped"]).inc_by(expired as u64);
            tracing::warn!(expired, "gave up publishing updates again; their recipients catch up when they sync");
        }
        let round: Vec<Pending> = pending.drain(..pending.len().min(ROUND)).collect();
        let outcomes =
            futures_util::future::join_all(round.iter().map(|waiting| bus.publish(waiting.delivery.clone()))).await;
        for (waiting, outcome) in round.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    metrics.bus_records.inc();
                    metrics.redeliveries.with_label_values(&["published"]).inc();
                }
                Err(BusError::Unavailable(_)) => pending.push_back(waiting),
                Err(error) => {
                    metrics.redeliveries.with_label_values(&["dropped"]).inc();
                    tracing::warn!(%error, shard = waiting.delivery.shard.0, "publishing an update again failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::bus::Payload;
    use crate::shard::ShardId;

    /// A bus that refuses every record while it is down, and records the
    /// seqs of what it took.
    #[derive(Default)]
    struct Switched {
        up: AtomicBool,
        took: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl Bus for Switched {
        async fn publish(&self, delivery: Delivery) -> Result<(), BusError> {
            if !self.up.load(Ordering::SeqCst) {
                return Err(BusError::Unavailable("down".into()));
            }
            self.took.lock().unwrap_or_else(|e| e.into_inner()).extend(delivery.recipients.iter().map(|r| r.1));
            Ok(())
        }
    }

    fn update(seq: u64) -> Delivery {
        Delivery { shard: ShardId(0), recipients: vec![(1, seq)], payload: Payload::Update(Arc::from("{}")) }
    }

    fn count(metrics: &Metrics, outcome: &str) -> u64 {
        metrics.redeliveries.with_label_values(&[outcome]).get()
    }

    fn took(bus: &Switched) -> Vec<u64> {
        bus.took.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_is_published_once_the_bus_is_back_and_given_up_after_five_minutes() {
        let bus = Arc::new(Switched::default());
        let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
        let (redelivery, _task) = Redelivery::start(bus.clone(), metrics.clone());

        redelivery.retry(update(1));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(took(&bus).is_empty(), "published while the bus was down");
        bus.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(RETRY_PAUSE * 2).await;
        assert_eq!(took(&bus), [1]);
        assert_eq!((count(&metrics, "queued"), count(&metrics, "published")), (1, 1));

        bus.up.store(false, Ordering::SeqCst);
        redelivery.retry(update(2));
        tokio::time::sleep(GIVE_UP_AFTER + RETRY_PAUSE * 2).await;
        bus.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(RETRY_PAUSE * 2).await;
        assert_eq!(took(&bus), [1], "an update older than five minutes was published");
        assert_eq!(count(&metrics, "dropped"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn updates_past_the_queues_bound_are_dropped_and_counted() {
        let bus = Arc::new(Switched::default());
        let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
        let (redelivery, _task) = Redelivery::start(bus.clone(), metrics.clone());
        for seq in 0..=MAX_PENDING as u64 {
            redelivery.retry(update(seq));
        }
        assert_eq!((count(&metrics, "queued"), count(&metrics, "dropped")), (MAX_PENDING as u64, 1));
        bus.up.store(true, Ordering::SeqCst);
        // A round publishes ROUND at a time, a pause apart.
        tokio::time::sleep(RETRY_PAUSE * (MAX_PENDING / ROUND + 2) as u32).await;
        let mut published = took(&bus);
        published.sort_unstable();
        assert_eq!(published, (0..MAX_PENDING as u64).collect::<Vec<_>>());
    }
}
