//! The node directory in Redis: one expiring key per node, and a set of
//! names to list them by.

use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;

use super::{RedisConnection, decode, px};
use crate::cluster::{ClusterError, NodeDirectory, NodeInfo};

/// Key kind of a node's entry: `{prefix}:node:{name}`.
pub const NODE_KEY: &str = "node";
/// The set of announced names: `{prefix}:nodes`.
pub const NODES_SET: &str = "nodes";

/// Removes from the set (KEYS[1]) each name (ARGV[i]) whose entry
/// (KEYS[i + 1]) is gone, unless it was announced again meanwhile.
const PRUNE: &str = r"
for i, name in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    redis.call('SREM', KEYS[1], name)
  end
end
return 0
";

/// The node directory in Redis.
pub struct RedisDirectory {
    redis: RedisConnection,
    ttl: Duration,
    prune: Script,
}

impl RedisDirectory {
    /// A directory whose entries last `node_ttl_ms` of the connection's config.
    pub fn new(redis: RedisConnection) -> Self {
        RedisDirectory { ttl: Duration::from_millis(redis.config().node_ttl_ms), redis, prune: Script::new(PRUNE) }
    }

    fn set_key(&self) -> String {
        format!("{}:{NODES_SET}", self.redis.config().key_prefix)
    }
}

#[async_trait]
impl NodeDirectory for RedisDirectory {
    async fn announce(&self, node: &NodeInfo) -> Result<(), ClusterError> {
        let json = serde_json::to_string(node)?;
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.redis.key(NODE_KEY, &node.name))
            .arg(json)
            .arg("PX")
            .arg(px(self.ttl))
            .ignore()
            .cmd("SADD")
            .arg(self.set_key())
            .arg(&node.name)
            .ignore();
        self.redis.bounded(pipe.query_async::<()>(&mut self.redis.manager())).await
    }

    async fn withdraw(&self, name: &str) -> Result<(), ClusterError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic().cmd("DEL").arg(self.redis.key(NODE_KEY, name)).ignore();
        pipe.cmd("SREM").arg(self.set_key()).arg(name).ignore();
        self.redis.bounded(pipe.query_async::<()>(&mut self.redis.manager())).await
    }

    async fn live_nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let mut names: Vec<String> = self
            .redis
            .bounded(::redis::cmd("SMEMBERS").arg(self.set_key()).query_async(&mut self.redis.manager()))
            .await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        names.sort();
        let keys: Vec<String> = names.iter().map(|name| self.redis.key(NODE_KEY, name)).collect();
        let values: Vec<Option<String>> =
            self.redis.bounded(::redis::cmd("MGET").arg(&keys).query_async(&mut self.redis.manager())).await?;
        let mut live = Vec::with_capacity(names.len());
        let mut prune = self.prune.key(self.set_key());
        let mut expired = 0;
        for ((name, key), value) in names.iter().zip(&keys).zip(values) {
            match value {
                Some(json) => live.extend(decode::<NodeInfo>(key, &json)),
                None => {
                    prune.key(key).arg(name);
                    expired += 1;
                }
            }
        }
        if expired > 0 {
            let _: i64 = self.redis.bounded(prune.invoke_async(&mut self.redis.manager())).await?;
        }
        Ok(live)
    }
}
