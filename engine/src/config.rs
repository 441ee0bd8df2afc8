//! Engine settings: the `[engine]` section of the node's config file.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Engine settings. Every field has a default; see `parley.example.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Number of virtual shards (a power of two). Changing it re-homes users.
    pub shard_count: u32,
    /// This node's snowflake generator ID (0–1023); unique per live node.
    pub generator_id: u16,
    /// Seconds a user actor lingers after its last connection closed.
    pub user_idle_grace_secs: u64,
    /// Seconds a chat actor lingers after its last message.
    pub chat_idle_grace_secs: u64,
    /// Frames queued per connection before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Messages a user may send per second, sustained.
    pub sends_per_second: u32,
    /// Messages a user may send in a burst.
    pub send_burst: u32,
    /// Threads running user, chat and shard actors; 0 means one per CPU.
    pub actor_threads: usize,
    /// Most members of a group (see `protocol::limits::MAX_GROUP_MEMBERS`
    /// for why 1,024); operators may lower it.
    pub max_group_members: usize,
    /// Most groups one user may be in.
    pub max_groups_per_user: u32,
    /// Milliseconds a user stays shown online after their last connection
    /// closed, so a page reload does not flap to offline and back.
    pub presence_offline_grace_ms: u64,
    /// Presence changes of one user are sent at most once per this many
    /// milliseconds; changes within the window are coalesced into the last.
    pub presence_coalesce_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shard_count: crate::shard::DEFAULT_SHARD_COUNT,
            generator_id: 0,
            user_idle_grace_secs: 30,
            chat_idle_grace_secs: 300,
            outbound_queue: 256,
            sends_per_second: 20,
            send_burst: 100,
            actor_threads: 0,
            max_group_members: protocol::limits::MAX_GROUP_MEMBERS,
            max_groups_per_user: protocol::limits::MAX_GROUPS_PER_USER,
            presence_offline_grace_ms: 5_000,
            presence_coalesce_ms: 250,
        }
    }
}

impl EngineConfig {
    pub fn user_idle_grace(&self) -> Duration {
        Duration::from_secs(self.user_idle_grace_secs)
    }

    pub fn chat_idle_grace(&self) -> Duration {
        Duration::from_secs(self.chat_idle_grace_secs.max(1))
    }

    /// The group limits the engine enforces.
    pub fn group_limits(&self) -> crate::policy::GroupLimits {
        crate::policy::GroupLimits {
            max_members: self.max_group_members,
            max_groups_per_user: self.max_groups_per_user,
        }
    }

    /// Resolved number of actor threads.
    pub fn actor_threads(&self) -> usize {
        match self.actor_threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            n => n,
        }
    }
}
