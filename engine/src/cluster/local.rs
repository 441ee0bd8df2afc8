//! In-memory implementations of the cluster traits, for a single node:
//! the same contracts as the Redis ones, time to live included, within one
//! process.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{ClusterError, GeneratorLeases, NodeDirectory, NodeInfo, PresenceDirectory, SharedPresence, TicketStore};
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

/// A map whose entries expire; expired entries are never returned and are
/// dropped on the next write.
struct Expiring<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> Expiring<K, V> {
    fn new(ttl: Duration) -> Self {
        Expiring { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// Runs `f` on the live entries. A poisoned lock (a panic elsewhere
    /// while holding it) still holds consistent entries: use them.
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<K, (V, Instant)>, Instant) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        entries.retain(|_, (_, expires)| *expires > now);
        f(&mut entries, now)
    }

    fn insert(&self, key: K, value: V) {
        let ttl = self.ttl;
        self.with(|entries, now| entries.insert(key, (value, now + ttl)));
    }

    /// Inserts for `ttl` unless a live entry has the key; true if inserted.
    fn insert_new(&self, key: K, value: V, ttl: Duration) -> bool {
        self.with(|entries, now| match entries.entry(key) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert((value, now + ttl));
                true
            }
        })
    }

    fn get(&self, key: &K) -> Option<V> {
        self.with(|entries, _| entries.get(key).map(|(value, _)| value.clone()))
    }

    fn take(&self, key: &K) -> Option<V> {
        self.with(|entries, _| entries.remove(key).map(|(value, _)| value))
    }

    fn values(&self) -> Vec<V> {
        self.with(|entries, _| entries.values().map(|(value, _)| value.clone()).collect())
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
