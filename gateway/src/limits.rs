//! Rate limits that hold across a cluster: each node's own limiter, then a
//! count of the same key shared by every node.

use std::fmt::Display;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use engine::cluster::RequestCounts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::IntCounterVec;

use crate::errors::ApiError;

/// One kind of request limited per key (an IP, a user): `per_window`
/// requests per `window` with a burst of `burst`.
///
/// A request passes this node's limiter (a GCRA, smooth), then the
/// cluster's count of its key ([`RequestCounts`]: Redis in a cluster,
/// memory on one node) in a fixed window that starts with the key's first
/// request, which allows `per_window + burst` per window. The limiter lets
/// no more than that through in any window, so a node alone is never held
/// to less than its own limiter allows; a client that spreads its requests
/// over n nodes gets no more than one node allows. If the shared count is
/// unreachable, the node's own limit applies alone (logged): refusing
/// every request while Redis is down would be worse.
pub struct Limit<K: Hash + Eq + Clone> {
    /// Label in the `rate_limited_total` metric and prefix of the shared
    /// count's keys.
    name: &'static str,
    limiter: DefaultKeyedRateLimiter<K>,
    window: Duration,
    /// Requests per key and window across the cluster.
    budget: u64,
}

impl<K: Hash + Eq + Clone + Display> Limit<K> {
    /// Zero counts as one.
    pub fn new(name: &'static str, per_window: u32, burst: u32, window: Duration) -> Self {
        let per_window = NonZeroU32::new(per_window).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        // A period of zero (more requests than nanoseconds per window) is no limit.
        let quota = Quota::with_period(window / per_window.get()).unwrap_or(Quota::per_second(NonZeroU32::MAX));
        Limit {
            name,
            limiter: RateLimiter::keyed(quota.allow_burst(burst)),
            window,
            budget: u64::from(per_window.get()) + u64::from(burst.get()),
        }
    }

    /// Counts one request of `key`; refuses it with
    /// [`ApiError::RateLimited`] (and counts the refusal in `refused`) if
    /// this node's limiter or the cluster's count is spent.
    pub async fn check(&self, key: K, counts: &dyn RequestCounts, refused: &IntCounterVec) -> Result<(), ApiError> {
        let refuse = |wait: Duration| {
            refused.with_label_values(&[self.name]).inc();
            ApiError::RateLimited { retry_after_secs: wait.as_secs().max(1) }
        };
        if let Err(not_until) = self.limiter.check_key(&key) {
            return Err(refuse(not_until.wait_time_from(DefaultClock::default().now())));
        }
        match counts.count(&format!("{}:{key}", self.name), self.window).await {
            Ok((count, left)) if count > self.budget => Err(refuse(left)),
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, limit = self.name, "the cluster's request counts are unreachable; this node's limit applies alone");
                Ok(())
            }
        }
    }

    /// Forgets limiter state that has refilled; called periodically.
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use engine::cluster::local::LocalCounts;
    use prometheus::Opts;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn refused() -> IntCounterVec {
        IntCounterVec::new(Opts::new("refused", "refused"), &["limit"]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[actix_web::test]
    async fn a_shared_count_spent_on_other_nodes_refuses_here() {
        let shared = LocalCounts::default();
        let refused = refused();
        let [here, there, elsewhere]: [Limit<i64>; 3] = std::array::from_fn(|_| Limit::new("search", 5, 5, MINUTE));
        for node in [&there, &elsewhere] {
            for _ in 0..5 {
                assert!(node.check(7, &shared, &refused).await.is_ok(), "within the node's burst and the budget");
            }
        }
        // This node's own limiter is untouched, but the key's budget
        // (5 + 5 a minute) is spent across the cluster.
        let Err(ApiError::RateLimited { retry_after_secs }) = here.check(7, &shared, &refused).await else {
            panic!("the eleventh request in a minute passed");
        };
        assert!((1..=60).contains(&retry_after_secs));
        assert!(here.check(8, &shared, &refused).await.is_ok(), "another key has its own budget");
        assert_eq!(refused.with_label_values(&["search"]).get(), 1);
    }

    #[actix_web::test]
    async fn a_node_alone_is_held_to_its_own_limiter() {
        let shared = LocalCounts::default();
        let refused = refused();
        let limit = Limit::new("upload", 6, 2, MINUTE);
        assert!(limit.check(1, &shared, &refused).await.is_ok());
        assert!(limit.check(1, &shared, &refused).await.is_ok());
        // The burst of two is spent; the next token comes in ten seconds.
        let Err(ApiError::RateLimited { retry_after_secs }) = limit.check(1, &shared, &refused).await else {
            panic!("a third request within the burst passed");
        };
        assert!((9..=10).contains(&retry_after_secs), "{retry_after_secs}");
    }
}
