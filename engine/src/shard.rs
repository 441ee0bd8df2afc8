//! Virtual shards: `shard = stable_hash(id) % S`, and who owns which shard.
//!
//! The hash is XXH3-64 of the ID's little-endian bytes with seed 0, a frozen
//! algorithm: every node, and the Kafka producer in cluster mode (which sets
//! the partition explicitly), computes the same shard for the same ID.

use serde::{Deserialize, Serialize};

/// Default number of virtual shards.
pub const DEFAULT_SHARD_COUNT: u32 = 64;

/// A virtual shard's number, below [`ShardMap::count`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u32);

/// Maps entity IDs to shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardMap {
    count: u32,
}

/// A shard count that is not a power of two in `1..=65536`.
#[derive(Debug, thiserror::Error)]
#[error("shard count {0} must be a power of two between 1 and 65536")]
pub struct BadShardCount(pub u32);

impl ShardMap {
    pub fn new(count: u32) -> Result<Self, BadShardCount> {
        if count.is_power_of_two() && count <= 65_536 { Ok(ShardMap { count }) } else { Err(BadShardCount(count)) }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard of a user, chat or group ID.
    pub fn shard_of(&self, id: i64) -> ShardId {
        let hash = xxhash_rust::xxh3::xxh3_64(&id.to_le_bytes());
        ShardId((hash & u64::from(self.count - 1)) as u32)
    }

    /// Every shard.
    pub fn all(&self) -> impl Iterator<Item = ShardId> {
        (0..self.count).map(ShardId)
    }
}

/// Which shards this node owns. Single node: all of them; in a cluster the
/// Kafka consumer group's assignment of the delivery topic's partitions.
pub trait ShardOwnership: Send + Sync + 'static {
    fn owns(&self, shard: ShardId) -> bool;
}

/// A node that owns every shard.
#[derive(Clone, Copy, Debug, Default)]
pub struct OwnsAll;

impl ShardOwnership for OwnsAll {
    fn owns(&self, _shard: ShardId) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_counts_must_be_powers_of_two() {
        assert!(ShardMap::new(64).is_ok());
        assert!(ShardMap::new(1).is_ok());
        assert!(ShardMap::new(0).is_err());
        assert!(ShardMap::new(48).is_err());
        assert!(ShardMap::new(1 << 17).is_err());
    }

    #[test]
    fn hashing_is_stable_and_spreads_sequential_ids() {
        let map = ShardMap::new(64).expect("valid");
        // Frozen values: changing the hash would re-home every user.
        assert_eq!(map.shard_of(1), ShardId(46));
        assert_eq!(map.shard_of(42), ShardId(8));
        assert_eq!(map.shard_of(7_263_548_392_017_920_001), ShardId(18));
        let mut counts = [0u32; 64];
        let base = 7_263_548_392_017_920_000_i64;
        for i in 0..64_000 {
            counts[map.shard_of(base + i * 4096).0 as usize] += 1;
        }
        let (min, max) = (counts.iter().min().copied(), counts.iter().max().copied());
        assert!(min > Some(800) && max < Some(1200), "uneven spread {min:?}..{max:?}");
    }
}
