//! Parley's engine: actors, routing, delivery, IDs, shards and the bus.
//!
//! The engine knows nothing of HTTP or WebSocket framing: the gateway hands
//! it a [`ConnectionHandle`] (a bounded queue of serialized frames) per
//! client connection and calls the methods of [`Engine`].

mod bus;
mod chat;
pub mod cluster;
mod config;
mod error;
pub mod ids;
pub mod kafka;
pub mod metrics;
pub mod peers;
pub mod policy;
pub mod presence;
mod redelivery;
pub mod redis;
mod registry;
pub mod shard;
#[cfg(feature = "test-support")]
pub mod testing;
mod user;

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};

use actix::{Actor, Addr, Arbiter, ArbiterHandle};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use protocol::rest::RelationState;
use protocol::ws::{Message, Update};
use protocol::{ChatId, MessageId, UserId};
use storage::{
    ChatOverview, ChatRecord, GroupChanged, MemberRecord, MessageRecord, NewGroup, Relation, RelationAction,
    RelationEntry, RelationView, Stores, UpdateKind, UserRecord, UserSearch,
};

pub use bus::{Bus, BusError, Delivery, InProcessBus, Payload};
pub use config::EngineConfig;
pub use error::{EngineError, GroupError};
pub use ids::{Clock, GeneratorLease, IdGenerator, LeaseGrant, SystemClock};
pub use metrics::Metrics;
pub use policy::GroupCommand;
pub use shard::{OwnsAll, ShardId, ShardMap, ShardOwnership};
pub use user::{ConnectionHandle, Kick};

use crate::chat::{ChangeGroup, ChangeMessage, PostMessage};
use crate::cluster::{NodeDirectory, NodeInfo, SharedState};
use crate::kafka::{DeliveryConsumer, KafkaBus, KafkaConfig, OwnershipChange};
use crate::peers::{ChatCommand, ChatReply, Peers};
use crate::presence::PresenceControl;
use crate::registry::{
    Attach, ChatActors, ChatAddr, Detach, Evict, Gained, SetChoice, SetIdle, ShardActor, route_by_shard,
};

/// What every actor shares.
pub(crate) struct Core {
    pub stores: Stores,
    pub ids: IdGenerator,
    pub shards: ShardMap,
    pub bus: Arc<dyn Bus>,
    pub metrics: Arc<Metrics>,
    pub config: EngineConfig,
    /// Counts committed relation changes: a relation read while it had a
    /// value stays true until it moves (see `chat::RelationCache`).
    pub relations_epoch: std::sync::atomic::AtomicU64,
    /// Which shards this node owns; set once the bus is connected.
    pub ownership: OnceLock<Arc<dyn ShardOwnership>>,
    /// Where shard actors share their users' shown presence, for a node
    /// that takes a shard over (memory on one node, Redis in a cluster).
    pub presence: Arc<dyn cluster::PresenceDirectory>,
    /// Cluster mode: updates and presence bookkeeping whose publish
    /// failed, published again in the background (`redelivery`).
    pub redelivery: Option<redelivery::Redelivery>,
    /// Whether chat actors may cache relations (`chat::RelationCache`):
    /// only on a single node, where `relations_epoch` sees every change. A
    /// cluster node would miss a block made through another node.
    pub cache_relations: bool,
}

impl Core {
    /// Whether this node owns `shard` now (nothing before the bus is connected).
    pub(crate) fn owns(&self, shard: ShardId) -> bool {
        self.ownership.get().is_some_and(|ownership| ownership.owns(shard))
    }
}

/// What makes a node one of a cluster: the Kafka bus, whose consumer
/// group decides which shards it owns, and how the others reach it.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    /// Unique among live nodes.
    pub name: String,
    /// The node's base URL as clients and the other nodes reach it
    /// (`http://host:port` or `https://…`).
    pub url: String,
    pub kafka: KafkaConfig,
    /// How often the node announces itself (and its shards) in the directory.
    pub heartbeat: std::time::Duration,
}

/// The adapters a node runs on, chosen in one place (the gateway's config).
pub struct Adapters {
    pub shared: SharedState,
    /// `None`: a single node (in-process bus, owns every shard).
    pub cluster: Option<ClusterNode>,
    /// Carries chat commands to the nodes that own them.
    pub peers: Arc<dyn Peers>,
}

/// A stored (or found-again) message.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Posted {
    pub message: Message,
    /// True when the send was a retry of an already stored one.
    pub duplicate: bool,
}

/// A batch of a user's update log.
#[derive(Clone, Debug)]
pub struct SyncBatch {
    pub updates: Vec<(u64, Update)>,
    /// Replay complete up to this seq.
    pub seq: u64,
    pub has_more: bool,
}

/// Handle to a running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    core: Arc<Core>,
    shard_actors: Arc<Vec<Addr<ShardActor>>>,
    /// Each shard's running chat actors, indexed like `shard_actors`.
    shard_chats: Arc<Vec<Arc<ChatActors>>>,
    arbiters: Arc<Vec<ArbiterHandle>>,
    send_limiter: Arc<DefaultKeyedRateLimiter<i64>>,
    /// One typing indicator per (user, chat) per interval.
    typing_limiter: Arc<DefaultKeyedRateLimiter<(i64, i64)>>,
    /// Renews the generator lease; taken and stopped by [`Engine::stop`].
    keeper: Arc<tokio::sync::Mutex<Option<cluster::LeaseKeeper>>>,
    /// Who owns which shard (other nodes included).
    directory: Arc<dyn NodeDirectory>,
    peers: Arc<dyn Peers>,
    /// This node as the directory lists it; `None` on a single node.
    node: Option<Arc<ClusterNode>>,
    /// The base URLs of the live nodes as last read from the directory
    /// (refreshed on every heartbeat); empty on a single node.
    node_urls: Arc<std::sync::RwLock<Vec<String>>>,
    /// The Kafka consumer and the tasks that follow its assignment;
    /// stopped by [`Engine::stop`].
    cluster_tasks: Arc<tokio::sync::Mutex<ClusterTasks>>,
}

/// What a cluster node runs beside its actors.
#[derive(Default)]
struct ClusterTasks {
    consumer: Option<DeliveryConsumer>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Engine {
    /// Starts the engine: the ID generator under a generator ID from the
    /// shared state's leases (a node's fixed one, or leased from Redis and
    /// renewed until [`Engine::stop`]), the bus, and one shard actor per
    /// shard, spread over `actor_threads` arbiters.
    ///
    /// A single node uses the in-process bus and owns every shard. A
    /// cluster node produces to Kafka, joins the delivery topic's consumer
    /// group (the shards it owns are the partitions it is assigned),
    /// evicts the clients of shards it loses, and announces what it owns
    /// in the node directory.
    pub async fn start(
        config: EngineConfig,
        stores: Stores,
        metrics: Arc<Metrics>,
        adapters: Adapters,
    ) -> Result<Self, EngineError> {
        let shards = ShardMap::new(config.shard_count).map_err(|e| EngineError::Config(e.to_string()))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let kafka = match &adapters.cluster {
            Some(node) => {
                let bus = Arc::new(KafkaBus::new(&node.kafka)?);
                bus.check_topic(shards).await?;
                Some(bus)
            }
            None => None,
        };
        let keeper = cluster::LeaseKeeper::start(adapters.shared.leases.clone()).await?;
        let ids = IdGenerator::start(keeper.lease().clone(), clock, stores.meta.clone()).await?;
        let mut cluster_tasks = ClusterTasks::default();
        let redelivery = kafka.as_ref().map(|bus| {
            let (redelivery, task) = redelivery::Redelivery::start(bus.clone(), metrics.clone());
            cluster_tasks.tasks.push(task);
            redelivery
        });
        let in_process = Arc::new(InProcessBus::default());
        let bus: Arc<dyn Bus> = match &kafka {
            Some(bus) => bus.clone(),
            None => in_process.clone(),
        };
        let core = Arc::new(Core {
            stores,
            ids,
            shards,
            bus,
            metrics,
            config: config.clone(),
            relations_epoch: std::sync::atomic::AtomicU64::new(0),
            ownership: OnceLock::new(),
            presence: adapters.shared.presence.clone(),
            redelivery,
            cache_relations: adapters.cluster.is_none(),
        });
        let arbiters: Vec<ArbiterHandle> = (0..config.actor_threads()).map(|_| Arbiter::new().handle()).collect();
        let mut shard_actors = Vec::with_capacity(shards.count() as usize);
        let mut shard_chats = Vec::with_capacity(shards.count() as usize);
        for shard in shards.all() {
            let arbiter = thread_of(&arbiters, shard);
            let core = core.clone();
            let chats = Arc::new(ChatActors::default());
            shard_chats.push(chats.clone());
            shard_actors.push(ShardActor::start_in_arbiter(arbiter, move |_| ShardActor::new(shard, core, chats)));
        }
        let recipients: Vec<actix::Recipient<Delivery>> =
            shard_actors.iter().map(|addr| addr.clone().recipient()).collect();
        let node = adapters.cluster.map(Arc::new);
        let node_urls = Arc::new(std::sync::RwLock::new(Vec::new()));
        match &node {
            Some(node) => {
                let (consumer, changes) =
                    DeliveryConsumer::start(&node.kafka, recipients, core.metrics.consumer_counters())?;
                let ownership = consumer.ownership();
                let _ = core.ownership.set(Arc::new(ownership.clone()));
                cluster_tasks.consumer = Some(consumer);
                let directory = adapters.shared.directory.clone();
                let announcer = Announcer { directory, node: node.clone(), ownership, metrics: core.metrics.clone() };
                let follow = follow_assignment(changes, shard_actors.clone(), announcer.clone(), core.clone());
                cluster_tasks.tasks.push(tokio::spawn(follow));
                cluster_tasks.tasks.push(tokio::spawn(announce_periodically(announcer, node_urls.clone())));
            }
            None => {
                in_process.connect(recipients)?;
                let _ = core.ownership.set(Arc::new(OwnsAll));
                core.metrics.owned_shards.set(i64::from(shards.count()));
            }
        }
        let quota = Quota::per_second(nonzero(config.sends_per_second)).allow_burst(nonzero(config.send_burst));
        let generator = keeper.lease().get().map(|grant| grant.generator);
        tracing::info!(shards = shards.count(), ?generator, cluster = node.is_some(), "engine started");
        Ok(Engine {
            core,
            keeper: Arc::new(tokio::sync::Mutex::new(Some(keeper))),
            shard_actors: Arc::new(shard_actors),
            shard_chats: Arc::new(shard_chats),
            arbiters: Arc::new(arbiters),
            send_limiter: Arc::new(RateLimiter::keyed(quota)),
            typing_limiter: Arc::new(RateLimiter::keyed(
                Quota::with_period(std::time::Duration::from_millis(protocol::limits::TYPING_INTERVAL_MS))
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)),
            )),
            directory: adapters.shared.directory,
            peers: adapters.peers,
            node,
            node_urls,
            cluster_tasks: Arc::new(tokio::sync::Mutex::new(cluster_tasks)),
        })
    }

    /// The base URL of the node that serves `user_id`'s connections (the
    /// owner of their shard, maybe this node); `None` on a single node.
    /// Fails with [`EngineError::Unavailable`] while no node owns the shard
    /// (during a rebalance), so the client retries.
    pub async fn home_of(&self, user_id: UserId) -> Result<Option<String>, EngineError> {
        let Some(me) = &self.node else { return Ok(None) };
        let shard = self.core.shards.shard_of(user_id.0);
        if self.core.owns(shard) {
            return Ok(Some(me.url.clone()));
        }
        match self.directory.owner_of(shard).await? {
            Some(owner) if owner.name != me.name => Ok(Some(owner.url)),
            _ => Err(EngineError::Unavailable),
        }
    }

    /// The base URLs of the cluster's live nodes, as of the last heartbeat
    /// (a web page served here may connect to any of them); empty on a
    /// single node.
    pub fn node_urls(&self) -> Vec<String> {
        self.node_urls.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The stores the engine writes through.
    pub fn stores(&self) -> &Stores {
        &self.core.stores
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.core.metrics
    }

    pub fn config(&self) -> &EngineConfig {
        &self.core.config
    }

    /// A fresh snowflake ID (for users, chats, token families).
    pub async fn next_id(&self) -> Result<i64, EngineError> {
        Ok(self.core.ids.next_id().await?)
    }

    /// The actor thread of `user_id`'s shard: where their user actor runs.
    /// A connection served on it reaches its user actor, and is reached by
    /// it, without waking another thread.
    pub fn home_thread(&self, user_id: UserId) -> &ArbiterHandle {
        thread_of(&self.arbiters, self.core.shards.shard_of(user_id.0))
    }

    fn shard_actor(&self, id: i64) -> &Addr<ShardActor> {
        let shard = self.core.shards.shard_of(id);
        &self.shard_actors[shard.0 as usize]
    }

    /// Attaches a client connection: from now on every update of the user
    /// is queued to it. Returns the user's newest update `seq`, read after
    /// attaching, so anything older is available through [`Engine::sync`].
    ///
    /// The user shows as online to the people entitled to their presence,
    /// and every device of the user is sent a `presence` snapshot of those
    /// people, then their changes.
    ///
    /// Fails with [`EngineError::Moved`] if this node does not own the
    /// user's shard.
    pub async fn attach(&self, user_id: UserId, conn: ConnectionHandle) -> Result<u64, EngineError> {
        if !self.core.owns(self.core.shards.shard_of(user_id.0)) {
            return Err(EngineError::Moved);
        }
        // Two reads, not three: the user and their presence peers together
        // before the attach; the latest seq after it, so that no update
        // falls between the one in `hello` and the first sent live.
        let (user, peers) =
            self.core.stores.relations.user_and_presence_peers(user_id.0).await?.ok_or(EngineError::UserNotFound)?;
        let attach = Attach { user_id: user_id.0, conn, choice: user.presence, status_text: user.status_text };
        self.shard_actor(user_id.0).send(attach).await?;
        let seq = self.core.stores.chats.latest_seq(user_id.0).await?;
        let links = peers.into_iter().map(|peer| (user_id.0, peer)).collect();
        route_by_shard(&self.core, links, |links| PresenceControl::AddInterest { links, snapshot: true });
        Ok(seq)
    }

    /// A connection reports its user idle (or active again).
    pub fn set_idle(&self, user_id: UserId, conn_id: u64, idle: bool) {
        self.shard_actor(user_id.0).do_send(SetIdle { user_id: user_id.0, conn_id, idle });
    }

    /// Stores the user's presence choice and status text and shows them to
    /// the people entitled (coalesced like every presence change).
    pub async fn set_presence(
        &self,
        user_id: UserId,
        choice: storage::PresenceChoice,
        status_text: String,
    ) -> Result<(), EngineError> {
        use protocol::limits::MAX_STATUS_TEXT_CHARS;
        let status_text = status_text.trim().to_owned();
        if status_text.chars().count() > MAX_STATUS_TEXT_CHARS || status_text.chars().any(char::is_control) {
            return Err(EngineError::InvalidField(format!(
                "status text must be at most {MAX_STATUS_TEXT_CHARS} characters without control characters"
            )));
        }
        match self.core.stores.users.set_presence(user_id.0, choice, status_text.clone()).await {
            Ok(()) => {}
            Err(storage::StorageError::NotFound(_)) => return Err(EngineError::UserNotFound),
            Err(error) => return Err(error.into()),
        }
        self.shard_actor(user_id.0).do_send(SetChoice { user_id: user_id.0, choice, status_text });
        Ok(())
    }

    /// Re-decides whether `user` and each of `among` see each other's
    /// presence (after a friendship, block or group membership changed)
    /// and starts or stops the watching both ways.
    async fn refresh_presence(&self, user: i64, among: Vec<i64>) -> Result<(), EngineError> {
        let stores = &self.core.stores;
        let among: Vec<i64> = among.into_iter().filter(|other| *other != user).collect();
        if among.is_empty() {
            return Ok(());
        }
        let Some(me) = stores.users.user_by_id(user).await? else { return Ok(()) };
        let me = storage::PresencePeer { user_id: user, last_seen_ms: me.last_seen_ms, status_text: me.status_text };
        let peers = stores.relations.presence_peers(user, Some(among.clone())).await?;
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for other in among {
            match peers.iter().find(|peer| peer.user_id == other) {
                Some(peer) => {
                    add.push((user, peer.clone()));
                    add.push((other, me.clone()));
                }
                None => {
                    remove.push((user, other));
                    remove.push((other, user));
                }
            }
        }
        route_by_shard(&self.core, add, |links| PresenceControl::AddInterest { links, snapshot: false });
        route_by_shard(&self.core, remove, |links| PresenceControl::RemoveInterest { links });
        Ok(())
    }

    /// Closes every connection of `user_id` that belongs to one of
    /// `sessions` (ended login sessions) with
    /// [`protocol::ws::close::SESSION_REVOKED`], on whichever node holds
    /// them: the word travels on the bus to the owner of the user's shard.
    /// Returns once the bus has it.
    pub async fn end_sessions(&self, user_id: UserId, sessions: &[i64]) -> Result<(), EngineError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let delivery = Delivery {
            shard: self.core.shards.shard_of(user_id.0),
            recipients: vec![(user_id.0, 0)],
            payload: Payload::EndSessions(Arc::from(sessions)),
        };
        Ok(self.core.bus.publish(delivery).await?)
    }

    /// Detaches a connection (it closed).
    pub fn detach(&self, user_id: UserId, conn_id: u64) {
        self.shard_actor(user_id.0).do_send(Detach { user_id: user_id.0, conn_id });
    }

    /// Posts a message: validated, rate-limited, ordered by the chat's
    /// actor, durable when this returns `Ok`.
    pub async fn post(
        &self,
        sender: UserId,
        chat_id: ChatId,
        client_msg_id: String,
        body: String,
    ) -> Result<Posted, EngineError> {
        validate_send(&client_msg_id, &body)?;
        if let Err(not_until) = self.send_limiter.check_key(&sender.0) {
            self.core.metrics.rate_limited.with_label_values(&["send"]).inc();
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            return Err(EngineError::RateLimited { retry_after_ms: wait.as_millis() as u64 + 1 });
        }
        match self.ask_chat(chat_id, ChatCommand::Post { sender_id: sender.0, client_msg_id, body }).await? {
            ChatReply::Posted(posted) => Ok(posted),
            _ => Err(EngineError::Unavailable),
        }
    }

    /// Runs a command on the chat's actor: here if this node owns the
    /// chat's shard, else on the node that does. A command whose owner
    /// moved meanwhile is sent once more to the new owner.
    async fn ask_chat(&self, chat_id: ChatId, command: ChatCommand) -> Result<ChatReply, EngineError> {
        let shard = self.core.shards.shard_of(chat_id.0);
        for _ in 0..2 {
            if self.core.owns(shard) {
                return self.run_chat_command(chat_id, command).await;
            }
            let owner = self.directory.owner_of(shard).await?.ok_or(EngineError::Unavailable)?;
            if self.node.as_ref().is_some_and(|me| me.name == owner.name) {
                // The directory still names this node for a shard it gave up.
                return Err(EngineError::Unavailable);
            }
            match self.peers.forward(&owner, chat_id.0, command.clone()).await {
                Err(EngineError::Moved) => continue,
                result => return result,
            }
        }
        Err(EngineError::Unavailable)
    }

    /// Runs a command on this node's actor of the chat, starting it if
    /// needed (the end of a forwarded command). Fails with
    /// [`EngineError::Moved`] if this node does not own the chat's shard.
    pub async fn run_chat_command(&self, chat_id: ChatId, command: ChatCommand) -> Result<ChatReply, EngineError> {
        if !self.core.owns(self.core.shards.shard_of(chat_id.0)) {
            return Err(EngineError::Moved);
        }
        Ok(match command {
            ChatCommand::Post { sender_id, client_msg_id, body } => ChatReply::Posted(
                self.ask_local_chat(chat_id, UserId(sender_id), || PostMessage {
                    sender_id,
                    client_msg_id: client_msg_id.clone(),
                    body: body.clone(),
                })
                .await?,
            ),
            ChatCommand::ChangeMessage { user_id, message_id, new_body } => {
                self.ask_local_chat(chat_id, UserId(user_id), || ChangeMessage {
                    user_id,
                    message_id,
                    new_body: new_body.clone(),
                })
                .await?;
                ChatReply::MessageChanged
            }
            ChatCommand::ChangeGroup { user_id, command } => ChatReply::GroupChanged(
                self.ask_local_chat(chat_id, UserId(user_id), || ChangeGroup { user_id, command: command.clone() })
                    .await?,
            ),
        })
    }

    /// Sends a message to this node's actor of the chat, starting it if
    /// needed on the actor thread of `user_id` (who asks): their connection
    /// runs there, so their later commands, and for a 1:1 chat half of the
    /// other member's, reach the chat without waking another thread. A chat
    /// actor may retire between lookup and send; the message was then
    /// never handled, so asking a fresh actor once more is safe.
    async fn ask_local_chat<M, T>(
        &self,
        chat_id: ChatId,
        user_id: UserId,
        message: impl Fn() -> M,
    ) -> Result<T, EngineError>
    where
        M: actix::Message<Result = Result<T, EngineError>> + Send + 'static,
        T: Send + 'static,
        chat::ChatActor: actix::Handler<M>,
    {
        let shard = self.core.shards.shard_of(chat_id.0).0 as usize;
        let mut running = self.shard_chats[shard].get(chat_id.0);
        for _ in 0..2 {
            let chat = match running.take() {
                Some(chat) => chat,
                None => {
                    let thread = self.home_thread(user_id).clone();
                    self.shard_actors[shard].send(ChatAddr { chat_id: chat_id.0, thread }).await?
                }
            };
            match chat.send(message()).await {
                Ok(result) => return result,
                Err(actix::MailboxError::Closed) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(EngineError::Unavailable)
    }

    /// Edits the user's own message, or deletes it for everyone (`new_body`
    /// `None`); every member's devices converge through the update log.
    pub async fn change_message(
        &self,
        user_id: UserId,
        chat_id: ChatId,
        message_id: MessageId,
        new_body: Option<String>,
    ) -> Result<(), EngineError> {
        if let Some(body) = &new_body {
            validate_body(body)?;
        }
        let command = ChatCommand::ChangeMessage { user_id: user_id.0, message_id: message_id.0, new_body };
        match self.ask_chat(chat_id, command).await? {
            ChatReply::MessageChanged => Ok(()),
            _ => Err(EngineError::Unavailable),
        }
    }

    /// Deletes a message for this user only: hidden on all of their devices.
    pub async fn hide_message(
        &self,
        user_id: UserId,
        chat_id: ChatId,
        message_id: MessageId,
    ) -> Result<(), EngineError> {
        let chat = self.core.stores.chats.chat(chat_id.0).await?;
        if !chat.is_some_and(|chat| chat.members.contains(&user_id.0)) {
            return Err(EngineError::ChatNotFound);
        }
        let seq = match self.core.stores.chats.hide_message(user_id.0, chat_id.0, message_id.0).await {
            Ok(seq) => seq,
            Err(storage::StorageError::NotFound(_)) => return Err(EngineError::MessageNotFound),
            Err(error) => return Err(error.into()),
        };
        if let Some(seq) = seq {
            let update = Update::Deleted { chat_id, message_id, for_everyone: false };
            chat::publish(&self.core, &update, vec![(user_id.0, seq)]).await;
        }
        Ok(())
    }

    /// Tells the chat's other members that `user_id` is typing. Ephemeral:
    /// nothing is stored; beyond one indicator per user and chat every
    /// [`protocol::limits::TYPING_INTERVAL_MS`] it does nothing.
    pub async fn typing(&self, user_id: UserId, chat_id: ChatId) -> Result<(), EngineError> {
        if self.typing_limiter.check_key(&(user_id.0, chat_id.0)).is_err() {
            return Ok(());
        }
        let chat = self.core.stores.chats.chat(chat_id.0).await?;
        let Some(chat) = chat.filter(|chat| chat.members.contains(&user_id.0)) else {
            return Err(EngineError::ChatNotFound);
        };
        let others: Vec<(i64, u64)> = chat.members.iter().filter(|m| **m != user_id.0).map(|m| (*m, 0)).collect();
        if let storage::ChatKind::Direct = chat.kind
            && let Some((peer, _)) = others.first()
        {
            policy::may_message(self.core.stores.relations.relation(user_id.0, *peer).await?)?;
        }
        let frame =
            protocol::ws::ServerFrame::Typing { chat_id, user_id, expires_in_ms: protocol::limits::TYPING_TTL_MS };
        match serde_json::to_string(&frame) {
            Ok(json) => chat::deliver(&self.core, Payload::Ephemeral(json.into()), others).await,
            Err(error) => tracing::error!(%error, "serializing a typing frame failed"),
        }
        Ok(())
    }

    /// Up to `limit` updates of the user's log after `after`.
    pub async fn sync(&self, user_id: UserId, after: u64, limit: u32) -> Result<SyncBatch, EngineError> {
        let limit = limit.clamp(1, protocol::limits::MAX_SYNC_BATCH);
        let records = self.core.stores.chats.updates_after(user_id.0, after, limit).await?;
        let has_more = records.len() as u32 == limit;
        let seq = match records.last() {
            Some(last) => last.seq,
            None => self.core.stores.chats.latest_seq(user_id.0).await?,
        };
        let updates = records
            .into_iter()
            .map(|record| {
                let update = match record.kind {
                    UpdateKind::Message(message) => Update::Message { message: message_view(&message) },
                    UpdateKind::Edited(message) => Update::Edited { message: message_view(&message) },
                    UpdateKind::Deleted { chat_id, message_id, for_everyone } => {
                        Update::Deleted { chat_id: ChatId(chat_id), message_id: MessageId(message_id), for_everyone }
                    }
                    UpdateKind::Receipt { chat_id, receipt } => receipt_update(chat_id, receipt),
                    UpdateKind::Relation { other, relation } => {
                        Update::Relation { user_id: UserId(other), relation: relation_state(relation) }
                    }
                };
                (record.seq, update)
            })
            .collect();
        Ok(SyncBatch { updates, seq, has_more })
    }

    /// Records that one of the user's devices has the chat's messages up to
    /// `message_id` (delivered), or with `seen` that the user has read them;
    /// if a watermark moved, every member's devices hear of it.
    pub async fn mark_read(
        &self,
        user_id: UserId,
        chat_id: ChatId,
        message_id: MessageId,
        seen: bool,
    ) -> Result<(), EngineError> {
        let change = match self.core.stores.chats.mark_read(chat_id.0, user_id.0, message_id.0, seen).await {
            Ok(change) => change,
            Err(storage::StorageError::NotFound(_)) => return Err(EngineError::ChatNotFound),
            Err(error) => return Err(error.into()),
        };
        if let Some(change) = change {
            let update = receipt_update(chat_id.0, change.receipt);
            chat::publish(&self.core, &update, change.seqs).await;
        }
        Ok(())
    }

    /// Opens (or finds) the 1:1 chat of `user_id` and `peer_id`.
    pub async fn open_direct_chat(&self, user_id: UserId, peer_id: UserId) -> Result<ChatRecord, EngineError> {
        let users = &self.core.stores.users;
        let me = users.user_by_id(user_id.0).await?.ok_or(EngineError::UserNotFound)?;
        let peer = users.user_by_id(peer_id.0).await?.ok_or(EngineError::UserNotFound)?;
        let view = self.core.stores.relations.relation(me.id, peer.id).await?;
        policy::may_open_direct(&me, &peer, view)?;
        let new_id = self.next_id().await?;
        Ok(self.core.stores.chats.direct_chat(me.id, peer.id, new_id, now_ms()).await?)
    }

    /// Creates a group owned by `creator` with friends of theirs as members.
    pub async fn create_group(
        &self,
        creator: UserId,
        name: String,
        members: Vec<UserId>,
    ) -> Result<GroupChanged, EngineError> {
        let name = validate_group_name(&name)?;
        let others: Vec<i64> = members.iter().map(|user| user.0).filter(|user| *user != creator.0).collect();
        if !others.is_empty() {
            policy::validate_new_members(&others)?;
        }
        if others.len() + 1 > self.core.config.max_group_members {
            return Err(GroupError::GroupFull(self.core.config.max_group_members).into());
        }
        chat::ensure_friends(&self.core, creator.0, &others).await?;
        let id = self.next_id().await?;
        let mut everyone = others;
        everyone.insert(0, creator.0);
        let event = protocol::ws::ChatEvent::Created {
            name: name.clone(),
            members: everyone.iter().copied().map(UserId).collect(),
        };
        let event = chat::event_message(&self.core, id, creator.0, &event).await?;
        let group = NewGroup {
            id,
            name,
            owner: creator.0,
            members: everyone,
            created_at_ms: now_ms(),
            max_groups_per_user: self.core.config.max_groups_per_user,
        };
        let created = self.core.stores.chats.create_group(group, event).await?.map_err(GroupError::from)?;
        chat::publish_message(&self.core, &created.message, created.seqs.clone()).await;
        for member in &created.chat.members {
            self.refresh_presence(*member, created.chat.members.clone()).await?;
        }
        tracing::info!(chat_id = id, creator = %creator, members = created.chat.members.len(), "group created");
        Ok(created)
    }

    /// Applies `command` of `user_id` to a group, through the group's actor.
    pub async fn change_group(
        &self,
        user_id: UserId,
        chat_id: ChatId,
        command: GroupCommand,
    ) -> Result<GroupChanged, EngineError> {
        let command = match command {
            GroupCommand::Rename(name) => GroupCommand::Rename(validate_group_name(&name)?),
            other => other,
        };
        let changed = match self
            .ask_chat(chat_id, ChatCommand::ChangeGroup { user_id: user_id.0, command: command.clone() })
            .await?
        {
            ChatReply::GroupChanged(changed) => changed,
            _ => return Err(EngineError::Unavailable),
        };
        // Who shares a group changed: so may who sees whose presence.
        match &command {
            GroupCommand::AddMembers(users) => {
                for user in users {
                    self.refresh_presence(*user, changed.chat.members.clone()).await?;
                }
            }
            GroupCommand::RemoveMember(user) => {
                let before = changed.seqs.iter().map(|(member, _)| *member).collect();
                self.refresh_presence(*user, before).await?;
            }
            _ => {}
        }
        tracing::info!(chat_id = %chat_id, user_id = %user_id, event = ?changed.message.event, "group changed");
        Ok(changed)
    }

    /// One of the user's chats, as in their chat list.
    pub async fn chat_overview(&self, user_id: UserId, chat_id: ChatId) -> Result<ChatOverview, EngineError> {
        let chats = self.core.stores.chats.chats_of_user(user_id.0).await?;
        chats.into_iter().find(|overview| overview.chat.id == chat_id.0).ok_or(EngineError::ChatNotFound)
    }

    /// Every member of a chat with their role; only for members.
    pub async fn members(&self, user_id: UserId, chat_id: ChatId) -> Result<Vec<MemberRecord>, EngineError> {
        let members = self.core.stores.chats.members(chat_id.0).await?;
        if !members.iter().any(|member| member.user_id == user_id.0) {
            return Err(EngineError::ChatNotFound);
        }
        Ok(members)
    }

    /// Which other members have received a message (delivered) and read it
    /// (seen), from their watermarks; only for members.
    pub async fn message_receipts(
        &self,
        user_id: UserId,
        chat_id: ChatId,
        message_id: MessageId,
    ) -> Result<(Vec<UserId>, Vec<UserId>), EngineError> {
        let chats = &self.core.stores.chats;
        let receipts = chats.receipts(chat_id.0).await?;
        if !receipts.iter().any(|receipt| receipt.user_id == user_id.0) {
            return Err(EngineError::ChatNotFound);
        }
        let message = chats.message(chat_id.0, message_id.0).await?.ok_or(EngineError::MessageNotFound)?;
        let others = receipts.iter().filter(|receipt| receipt.user_id != message.sender_id);
        let delivered = others.clone().filter(|r| r.delivered_up_to >= message.id).map(|r| UserId(r.user_id)).collect();
        let seen = others.filter(|r| r.seen_up_to >= message.id).map(|r| UserId(r.user_id)).collect();
        Ok((delivered, seen))
    }

    /// The user's chats, most recently active first.
    pub async fn chats_of(&self, user_id: UserId) -> Result<Vec<ChatOverview>, EngineError> {
        Ok(self.core.stores.chats.chats_of_user(user_id.0).await?)
    }

    /// A page of a chat's history, newest first; only for members.
    pub async fn history(
        &self,
        user_id: UserId,
        chat_id: ChatId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, EngineError> {
        let chat = self.core.stores.chats.chat(chat_id.0).await?;
        if !chat.is_some_and(|chat| chat.members.contains(&user_id.0)) {
            return Err(EngineError::ChatNotFound);
        }
        let limit = limit.clamp(1, protocol::limits::MAX_HISTORY_PAGE);
        Ok(self.core.stores.chats.messages_before(chat_id.0, user_id.0, before.map(|id| id.0), limit).await?)
    }

    /// How `user_id` stands with `other`.
    pub async fn relation(&self, user_id: UserId, other: UserId) -> Result<RelationView, EngineError> {
        Ok(self.core.stores.relations.relation(user_id.0, other.0).await?)
    }

    /// Applies a friendship or block action of `user_id` toward `other`,
    /// then tells every device of both users whose relation changed.
    pub async fn relate(
        &self,
        user_id: UserId,
        other: UserId,
        action: RelationAction,
    ) -> Result<RelationView, EngineError> {
        let change = match self.core.stores.relations.apply(user_id.0, other.0, action, now_ms()).await {
            Ok(change) => change?,
            Err(storage::StorageError::NotFound(_)) => return Err(EngineError::UserNotFound),
            Err(error) => return Err(error.into()),
        };
        // After the commit: a post checked against the old relation before
        // this point raced the change, as it would have without a cache.
        self.core.relations_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        for (side, seq, relation) in change.updates {
            let peer = if side == user_id.0 { other } else { user_id };
            let update = Update::Relation { user_id: peer, relation: relation_state(relation) };
            chat::publish(&self.core, &update, vec![(side, seq)]).await;
        }
        tracing::info!(user_id = %user_id, other = %other, ?action, "relation changed");
        self.refresh_presence(user_id.0, vec![other.0]).await?;
        Ok(change.view)
    }

    /// A page of the users `user_id` has `relation` with, or blocks (`None`).
    pub async fn related_users(
        &self,
        user_id: UserId,
        relation: Option<Relation>,
        after: Option<RelationEntry>,
        limit: u32,
    ) -> Result<Vec<RelationEntry>, EngineError> {
        let relations = &self.core.stores.relations;
        let limit = limit.clamp(1, protocol::limits::MAX_RELATION_PAGE);
        Ok(match relation {
            Some(relation) => relations.relations(user_id.0, relation, after, limit).await?,
            None => relations.blocked(user_id.0, after, limit).await?,
        })
    }

    /// Users matching `query` for `searcher`, best first; people who block
    /// the searcher never appear.
    pub async fn search_users(
        &self,
        searcher: UserId,
        query: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<UserRecord>, EngineError> {
        let search = UserSearch {
            key: storage::search_key(query),
            searcher: searcher.0,
            limit: limit.clamp(1, protocol::limits::MAX_SEARCH_PAGE),
            offset: offset.min(protocol::limits::MAX_SEARCH_OFFSET),
        };
        Ok(self.core.stores.users.search_users(search).await?)
    }

    /// Forgets rate-limit state of users idle for a while; call periodically.
    pub fn prune_rate_limits(&self) {
        self.send_limiter.retain_recent();
        self.typing_limiter.retain_recent();
    }

    /// Stops the actor threads and gives the generator ID back (a lease
    /// from Redis is free for another node at once). Connections should be
    /// closed first.
    pub async fn stop(&self) {
        let ClusterTasks { consumer, tasks } = std::mem::take(&mut *self.cluster_tasks.lock().await);
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
        if let Some(consumer) = consumer {
            consumer.stop().await;
        }
        if let Some(node) = &self.node
            && let Err(error) = self.directory.withdraw(&node.name).await
        {
            tracing::warn!(%error, "could not withdraw from the node directory; the entry expires by itself");
        }
        for arbiter in self.arbiters.iter() {
            arbiter.stop();
        }
        if let Some(keeper) = self.keeper.lock().await.take()
            && let Err(error) = keeper.stop().await
        {
            tracing::warn!(%error, "could not release the generator lease; it expires by itself");
        }
    }
}

/// The actor thread that runs `shard`'s actors.
fn thread_of(arbiters: &[ArbiterHandle], shard: ShardId) -> &ArbiterHandle {
    &arbiters[shard.0 as usize % arbiters.len()]
}

/// Follows the consumer group's assignment: the clients of a lost shard
/// are told to reconnect elsewhere and its chat actors stop; every change
/// is announced in the directory at once; for gained shards, every shard
/// is asked to register its users' presence interest in them again (their
/// presence books start empty here).
async fn follow_assignment(
    mut changes: tokio::sync::mpsc::UnboundedReceiver<OwnershipChange>,
    shards: Vec<Addr<ShardActor>>,
    announcer: Announcer,
    core: Arc<Core>,
) {
    while let Some(change) = changes.recv().await {
        if let OwnershipChange::Revoked(lost) = &change {
            for shard in lost {
                if let Some(actor) = shards.get(shard.0 as usize) {
                    actor.do_send(Evict);
                }
            }
        }
        announcer.announce().await;
        if let OwnershipChange::Assigned(gained) = change {
            for shard in &gained {
                if let Some(actor) = shards.get(shard.0 as usize) {
                    actor.do_send(Gained);
                }
            }
            registry::rewatch(&core, gained).await;
        }
    }
}

/// Announces this node and its shards on every heartbeat, so that the
/// entry of a node that dies expires, and reads which nodes are live.
async fn announce_periodically(announcer: Announcer, node_urls: Arc<std::sync::RwLock<Vec<String>>>) {
    let mut tick = tokio::time::interval(announcer.node.heartbeat);
    loop {
        tick.tick().await;
        announcer.announce().await;
        match announcer.directory.live_nodes().await {
            Ok(nodes) => {
                let urls = nodes.into_iter().map(|node| node.url).collect();
                *node_urls.write().unwrap_or_else(std::sync::PoisonError::into_inner) = urls;
            }
            Err(error) => tracing::warn!(%error, "reading the node directory failed"),
        }
    }
}

/// Tells the directory (and the metrics) which shards this node owns.
#[derive(Clone)]
struct Announcer {
    directory: Arc<dyn NodeDirectory>,
    node: Arc<ClusterNode>,
    ownership: kafka::KafkaOwnership,
    metrics: Arc<Metrics>,
}

impl Announcer {
    async fn announce(&self) {
        let shards = self.ownership.owned();
        self.metrics.owned_shards.set(shards.len() as i64);
        let info = NodeInfo { name: self.node.name.clone(), url: self.node.url.clone(), shards };
        if let Err(error) = self.directory.announce(&info).await {
            tracing::warn!(%error, "announcing the node in the directory failed; retrying on the next heartbeat");
        }
    }
}

/// Converts a stored message to its wire form.
pub fn message_view(record: &MessageRecord) -> Message {
    Message {
        id: MessageId(record.id),
        chat_id: ChatId(record.chat_id),
        sender_id: UserId(record.sender_id),
        client_msg_id: record.client_msg_id.clone(),
        body: record.body.clone(),
        sent_at: record.sent_at_ms,
        edited_at: record.edited_at_ms,
        deleted: record.deleted_at_ms.is_some(),
        event: record.event.as_deref().map(|json| {
            serde_json::from_str(json).unwrap_or_else(|error| {
                tracing::error!(%error, message_id = record.id, "stored event does not parse");
                protocol::ws::ChatEvent::Unknown
            })
        }),
    }
}

/// The wire form of a member's receipts.
fn receipt_update(chat_id: i64, receipt: storage::ReceiptRecord) -> Update {
    Update::Receipt {
        chat_id: ChatId(chat_id),
        user_id: UserId(receipt.user_id),
        delivered_up_to: MessageId(receipt.delivered_up_to),
        seen_up_to: MessageId(receipt.seen_up_to),
    }
}

/// The wire form of a stored relation.
pub fn relation_state(relation: Relation) -> RelationState {
    match relation {
        Relation::None => RelationState::None,
        Relation::Friends => RelationState::Friends,
        Relation::RequestSent => RelationState::RequestSent,
        Relation::RequestReceived => RelationState::RequestReceived,
    }
}

fn validate_send(client_msg_id: &str, body: &str) -> Result<(), EngineError> {
    use protocol::limits::MAX_CLIENT_MSG_ID_BYTES;
    if client_msg_id.is_empty() || client_msg_id.len() > MAX_CLIENT_MSG_ID_BYTES {
        return Err(EngineError::InvalidField(format!("client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_BYTES} bytes")));
    }
    validate_body(body)
}

fn validate_body(body: &str) -> Result<(), EngineError> {
    use protocol::limits::MAX_BODY_BYTES;
    if body.trim().is_empty() {
        return Err(EngineError::InvalidField("body must not be empty".into()));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(EngineError::InvalidField(format!("body must be at most {MAX_BODY_BYTES} bytes")));
    }
    Ok(())
}

/// A group name: trimmed, within [`protocol::limits::GROUP_NAME_LEN`]
/// characters, without control characters.
fn validate_group_name(name: &str) -> Result<String, EngineError> {
    use protocol::limits::GROUP_NAME_LEN;
    let name = name.trim();
    if !GROUP_NAME_LEN.contains(&name.chars().count()) || name.chars().any(char::is_control) {
        return Err(EngineError::InvalidField(format!(
            "name must be {} to {} characters without control characters",
            GROUP_NAME_LEN.start(),
            GROUP_NAME_LEN.end()
        )));
    }
    Ok(name.to_owned())
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
