//! Keeps this node's generator lease: claims an ID, renews it, grants the
//! [`GeneratorLease`] the ID generator checks, and claims anew after a loss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{ClusterError, GeneratorLeases, HEARTBEATS_PER_TTL};
use crate::ids::{GeneratorLease, LeaseGrant};

/// The local grant ends this fraction of the time to live (1/10) before
/// the shared claim would, for clocks that run at slightly different rates.
pub const SAFETY_MARGIN_DIVISOR: u32 = 10;
/// [`LeaseKeeper::start`] gives up after this many times to live without
/// a valid lease.
pub const START_TIMEOUT_TTLS: u32 = 4;

/// Holds a generator lease for as long as it runs.
///
/// The local grant is valid until `t + ttl - ttl / 10`, where `t` is when
/// the last successful renewal was *sent*: it ends before the shared claim
/// can expire, so by the time another node can claim the ID this one has
/// stopped. A fresh claim grants IDs only once one time to live has passed
/// since it was made: a previous holder that lost the ID without noticing
/// (Redis restarted empty) has stopped by then. So a node starts, or comes
/// back after losing its lease, with a pause of one time to live.
///
/// When a renewal finds the ID held by someone else or expired, the grant
/// is withdrawn at once and the keeper claims a new ID on its next round;
/// when Redis is unreachable, the grant runs out by itself and the keeper
/// keeps trying.
pub struct LeaseKeeper {
    lease: GeneratorLease,
    leases: Arc<dyn GeneratorLeases>,
    renewals: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Claims a generator ID and returns once the lease grants it: at once
    /// for leases that never expire, after one time to live for a fresh
    /// expiring claim (renewing meanwhile). Renewals then go on in a task
    /// of the current tokio runtime.
    pub async fn start(leases: Arc<dyn GeneratorLeases>) -> Result<Self, ClusterError> {
        let lease = GeneratorLease::vacant();
        let Some(ttl) = leases.ttl() else {
            let generator = leases.claim().await?;
            lease.set(Some(LeaseGrant { generator, epoch: 1, valid_until: None }));
            return Ok(LeaseKeeper { lease, leases, renewals: None });
        };
        let mut renewer = Renewer { leases: leases.clone(), lease: lease.clone(), ttl, held: None, epoch: 0 };
        renewer.claim().await?;
        let give_up = Instant::now() + ttl * START_TIMEOUT_TTLS;
        while lease.valid_at(Instant::now()).is_none() {
            if Instant::now() >= give_up {
                renewer.release().await;
                return Err(ClusterError::LeaseNotHeld(ttl * START_TIMEOUT_TTLS));
            }
            tokio::time::sleep(renewer.interval()).await;
            renewer.round().await;
        }
        let renewals = tokio::spawn(async move {
            loop {
                tokio::time::sleep(renewer.interval()).await;
                renewer.round().await;
            }
        });
        Ok(LeaseKeeper { lease, leases, renewals: Some(renewals) })
    }

    /// The lease to hand the [`crate::IdGenerator`].
    pub fn lease(&self) -> &GeneratorLease {
        &self.lease
    }

    /// Stops renewing and handing out IDs, and releases the ID.
    pub async fn stop(mut self) -> Result<(), ClusterError> {
        if let Some(renewals) = self.renewals.take() {
            renewals.abort();
        }
        let grant = self.lease.get();
        self.lease.set(None);
        match grant {
            Some(grant) => self.leases.release(grant.generator).await,
            None => Ok(()),
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(renewals) = self.renewals.take() {
            renewals.abort();
        }
    }
}

/// The claim currently held.
#[derive(Clone, Copy)]
struct Held {
    generator: u16,
    claimed_at: Instant,
}

/// The renewal loop's state.
struct Renewer {
    leases: Arc<dyn GeneratorLeases>,
    lease: GeneratorLease,
    ttl: Duration,
    held: Option<Held>,
    /// Claims made so far; each one is a new grant epoch.
    epoch: u64,
}

impl Renewer {
    fn interval(&self) -> Duration {
        self.ttl / HEARTBEATS_PER_TTL
    }

    async fn claim(&mut self) -> Result<(), ClusterError> {
        let generator = self.leases.claim().await?;
        self.epoch += 1;
        self.held = Some(Held { generator, claimed_at: Instant::now() });
        tracing::info!(generator, "generator id claimed");
        Ok(())
    }

    /// One round: renew the held ID, or claim one if none is held.
    async fn round(&mut self) {
        let Some(held) = self.held else {
            if let Err(error) = self.claim().await {
                tracing::warn!(%error, "claiming a generator id failed; retrying");
            }
            return;
        };
        let sent = Instant::now();
        match self.leases.renew(held.generator).await {
            Ok(true) if sent >= held.claimed_at + self.ttl => {
                let valid_until = sent + self.ttl - self.ttl / SAFETY_MARGIN_DIVISOR;
                let grant = LeaseGrant { generator: held.generator, epoch: self.epoch, valid_until: Some(valid_until) };
                self.lease.set(Some(grant));
            }
            // Still fencing a fresh claim.
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(generator = held.generator, "generator lease lost; no ids until a new claim");
                self.lease.set(None);
                self.held = None;
            }
            Err(error) => tracing::warn!(generator = held.generator, %error, "renewing the generator lease failed"),
        }
    }

    async fn release(&mut self) {
        if let Some(held) = self.held.take()
            && let Err(error) = self.leases.release(held.generator).await
        {
            tracing::warn!(generator = held.generator, %error, "releasing the generator id failed");
        }
    }
}
