//! In-memory implementations of the cluster traits, for a single node:
//! the same contracts as the Redis ones, time to live included, within one
//! process.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    ClusterError, GeneratorLeases, NodeDirectory, NodeInfo, PresenceDirectory, RequestCounts, RevokedSessions,
    SharedPresence, TicketStore,
};
use crate::ids::{IdError, MAX_GENERATOR};

/// A single node's generator ID: always granted, never expires.
#[derive(Clone, Copy, Debug)]
pub struct FixedGenerator(u16);

impl FixedGenerator {
    pub fn new(generator: u16) -> Result<Self, IdError> {
        if generator > MAX_GENERATOR {
            return Err(IdError::BadGenerator(generator));
        }
        Ok(FixedGenerator(generator))
    }
}

#[async_trait]
impl GeneratorLeases for FixedGenerator {
    fn ttl(&self) -> Option<Duration> {
        None
    }

    async fn claim(&self) -> Result<u16, ClusterError> {
        Ok(self.0)
    }

    async fn renew(&self, generator: u16) -> Result<bool, ClusterError> {
        Ok(generator == self.0)
    }

    async fn release(&self, _generator: u16) -> Result<(), ClusterError> {
        Ok(())
    }
}

/// Expired entries are swept when the map has grown to this many entries
/// (or twice its size after the last sweep), so that a write costs O(1)
/// amortised however many entries are live.
const SWEEP_AT_LEAST: usize = 64;

/// A map whose entries expire: an expired entry is never returned.
struct Expiring<K, V> {
    ttl: Duration,
    inner: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    map: HashMap<K, (V, Instant)>,
    /// Sweep when the map reaches this size.
    sweep_at: usize,
}

impl<K: Eq + Hash, V: Clone> Expiring<K, V> {
    /// Entries live `ttl` unless inserted with their own.
    fn new(ttl: Duration) -> Self {
        Expiring { ttl, inner: Mutex::new(Entries { map: HashMap::new(), sweep_at: SWEEP_AT_LEAST }) }
    }

    /// Runs `f` on the entries. A poisoned lock (a panic elsewhere while
    /// holding it) still holds whole entries: use them.
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<K, (V, Instant)>, Instant) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if inner.map.len() >= inner.sweep_at {
            inner.map.retain(|_, (_, expires)| *expires > now);
            inner.sweep_at = (inner.map.len() * 2).max(SWEEP_AT_LEAST);
        }
        f(&mut inner.map, now)
    }

    fn insert(&self, key: K, value: V) {
        self.insert_for(key, value, self.ttl);
    }

    /// Inserts (or replaces) an entry that lives `ttl`.
    fn insert_for(&self, key: K, value: V, ttl: Duration) {
        self.with(|map, now| map.insert(key, (value, now + ttl)));
    }

    /// Inserts for `ttl` unless a live entry has the key; true if inserted.
    fn insert_new(&self, key: K, value: V, ttl: Duration) -> bool {
        self.with(|map, now| match map.get(&key) {
            Some((_, expires)) if *expires > now => false,
            _ => {
                map.insert(key, (value, now + ttl));
                true
            }
        })
    }

    fn get(&self, key: &K) -> Option<V> {
        self.with(|map, now| map.get(key).filter(|(_, expires)| *expires > now).map(|(value, _)| value.clone()))
    }

    fn take(&self, key: &K) -> Option<V> {
        self.with(|map, now| map.remove(key).filter(|(_, expires)| *expires > now).map(|(value, _)| value))
    }

    fn values(&self) -> Vec<V> {
        self.with(|map, now| {
            map.values().filter(|(_, expires)| *expires > now).map(|(value, _)| value.clone()).collect()
        })
    }
}

/// The node directory of a single node (or of nodes sharing a process,
/// in tests).
pub struct LocalDirectory(Expiring<String, NodeInfo>);

impl LocalDirectory {
    /// A directory whose entries live `ttl` after their last announcement.
    pub fn new(ttl: Duration) -> Self {
        LocalDirectory(Expiring::new(ttl))
    }
}

#[async_trait]
impl NodeDirectory for LocalDirectory {
    async fn announce(&self, node: &NodeInfo) -> Result<(), ClusterError> {
        self.0.insert(node.name.clone(), node.clone());
        Ok(())
    }

    async fn withdraw(&self, name: &str) -> Result<(), ClusterError> {
        self.0.take(&name.to_owned());
        Ok(())
    }

    async fn live_nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let mut nodes = self.0.values();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }
}

/// Presence in this process's memory.
pub struct LocalPresence(Expiring<i64, SharedPresence>);

impl LocalPresence {
    /// Presence whose entries live `ttl` after they were last published.
    pub fn new(ttl: Duration) -> Self {
        LocalPresence(Expiring::new(ttl))
    }
}

#[async_trait]
impl PresenceDirectory for LocalPresence {
    fn ttl(&self) -> Duration {
        self.0.ttl
    }

    async fn publish(&self, entries: &[(i64, SharedPresence)]) -> Result<(), ClusterError> {
        for (user, presence) in entries {
            self.0.insert(*user, presence.clone());
        }
        Ok(())
    }

    async fn remove(&self, users: &[i64]) -> Result<(), ClusterError> {
        for user in users {
            self.0.take(user);
        }
        Ok(())
    }

    async fn read(&self, users: &[i64]) -> Result<Vec<Option<SharedPresence>>, ClusterError> {
        Ok(users.iter().map(|user| self.0.get(user)).collect())
    }
}

/// One-time tickets in this process's memory.
pub struct LocalTickets(Expiring<String, String>);

impl Default for LocalTickets {
    fn default() -> Self {
        // Every insert names its own time to live.
        LocalTickets(Expiring::new(Duration::ZERO))
    }
}

#[async_trait]
impl TicketStore for LocalTickets {
    async fn insert(&self, ticket: &str, payload: &str, ttl: Duration) -> Result<bool, ClusterError> {
        Ok(self.0.insert_new(ticket.to_owned(), payload.to_owned(), ttl))
    }

    async fn take(&self, ticket: &str) -> Result<Option<String>, ClusterError> {
        Ok(self.0.take(&ticket.to_owned()))
    }
}

/// Ended login sessions in this process's memory; incomplete until restored.
pub struct LocalRevokedSessions {
    sessions: Expiring<i64, ()>,
    complete: AtomicBool,
}

impl Default for LocalRevokedSessions {
    fn default() -> Self {
        // Every revocation names its own time to live.
        LocalRevokedSessions { sessions: Expiring::new(Duration::ZERO), complete: AtomicBool::new(false) }
    }
}

#[async_trait]
impl RevokedSessions for LocalRevokedSessions {
    async fn revoke(&self, sessions: &[i64], ttl: Duration) -> Result<(), ClusterError> {
        for session in sessions {
            self.sessions.insert_for(*session, (), ttl);
        }
        Ok(())
    }

    async fn is_revoked(&self, session: i64) -> Result<bool, ClusterError> {
        if !self.complete.load(Ordering::Acquire) {
            return Err(ClusterError::RevocationsIncomplete);
        }
        Ok(self.sessions.get(&session).is_some())
    }

    async fn is_complete(&self) -> Result<bool, ClusterError> {
        Ok(self.complete.load(Ordering::Acquire))
    }

    async fn restore(&self, sessions: &[(i64, Duration)]) -> Result<(), ClusterError> {
        for (session, ttl) in sessions {
            self.sessions.insert_for(*session, (), *ttl);
        }
        self.complete.store(true, Ordering::Release);
        Ok(())
    }
}

/// Request counts in this process's memory.
pub struct LocalCounts(Expiring<String, u64>);

impl Default for LocalCounts {
    fn default() -> Self {
        // Every window is counted with its own length.
        LocalCounts(Expiring::new(Duration::ZERO))
    }
}

#[async_trait]
impl RequestCounts for LocalCounts {
    async fn count(&self, key: &str, window: Duration) -> Result<(u64, Duration), ClusterError> {
        Ok(self.0.with(|map, now| {
            let (count, ends) = map.entry(key.to_owned()).or_insert((0, now + window));
            if *ends <= now {
                (*count, *ends) = (0, now + window);
            }
            *count += 1;
            (*count, *ends - now)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_are_swept_as_the_map_grows() {
        let map = Expiring::new(Duration::from_millis(1));
        for key in 0..SWEEP_AT_LEAST {
            map.insert(key, ());
        }
        std::thread::sleep(Duration::from_millis(5));
        map.insert(SWEEP_AT_LEAST, ());
        let inner = map.inner.lock().expect("not poisoned");
        assert_eq!(inner.map.len(), 1);
        assert_eq!(inner.sweep_at, SWEEP_AT_LEAST);
    }
}
