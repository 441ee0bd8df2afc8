//! The shard actor: one per owned virtual shard. It owns the lifecycle of
//! the user and chat actors whose IDs hash to its shard, routes bus
//! deliveries to them, and keeps its users' presence (see [`crate::presence`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, Addr, ArbiterHandle, AsyncContext, Context, Handler, Message, SpawnHandle, WrapFuture,
};
use protocol::ws::{PresenceStatus, PresenceView};
use storage::{PresenceChoice, PresencePeer};

use crate::Core;
use crate::bus::{Delivery, Payload};
use crate::chat::{ChatActor, ChatStopped};
use crate::cluster::{HEARTBEATS_PER_TTL, SharedPresence};
use crate::presence::{PresenceBook, PresenceControl, Publish};
use crate::redelivery::Redelivery;
use crate::shard::ShardId;
use crate::user::{AddConnection, ConnectionHandle, Deliver, Evicted, Kick, RemoveConnection, Retire, UserActor};

/// Attaches a connection to its user, starting the user actor if needed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Attach {
    pub user_id: i64,
    pub conn: ConnectionHandle,
    /// The user's stored presence choice and status text.
    pub choice: PresenceChoice,
    pub status_text: String,
}

/// A connection reports its user idle or active.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetIdle {
    pub user_id: i64,
    pub conn_id: u64,
    pub idle: bool,
}

/// The user chose a presence (already stored).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetChoice {
    pub user_id: i64,
    pub choice: PresenceChoice,
    pub status_text: String,
}

/// Detaches a connection; the user actor retires after the idle grace.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Detach {
    pub user_id: i64,
    pub conn_id: u64,
}

/// This node lost the shard (cluster mode): its users' connections are
/// told to reconnect to the new owner, their actors stop, and the chat
/// actors are forgotten (they finish what they hold and retire when idle;
/// new commands go to the new owner).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Evict;

/// This node was given the shard (cluster mode), whose users were just
/// shown by another node: for the directory's time to live, users this
/// shard does not know are looked up in the presence directory as they
/// are watched (see [`ShardActor`]'s handling of `Watch`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Gained;

/// The live chat actors of one shard. The shard actor starts and forgets
/// them; the engine reads them here without a round trip through the
/// shard actor's mailbox (a cross-thread wake-up per command), and asks
/// the shard actor ([`ChatAddr`]) only to start one. Forgetting them all
/// when the shard moves away happens under the same lock, so a reader sees
/// either the old owner's actors or none.
#[derive(Default)]
pub(crate) struct ChatActors(Mutex<HashMap<i64, Addr<ChatActor>>>);

impl ChatActors {
    /// The chat's running actor, if it has one.
    pub(crate) fn get(&self, chat_id: i64) -> Option<Addr<ChatActor>> {
        self.lock().get(&chat_id).filter(|addr| addr.connected()).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Addr<ChatActor>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Returns the chat's actor, starting it on `thread` if needed.
#[derive(Message)]
#[rtype(result = "Addr<ChatActor>")]
pub(crate) struct ChatAddr {
    pub chat_id: i64,
    pub thread: ArbiterHandle,
}

struct UserEntry {
    addr: Addr<UserActor>,
    connections: usize,
    retire_timer: Option<SpawnHandle>,
}

pub(crate) struct ShardActor {
    shard: ShardId,
    core: Arc<Core>,
    users: HashMap<i64, UserEntry>,
    chats: Arc<ChatActors>,
    presence: PresenceBook,
    /// A pending coalesced presence flush per user.
    flush_timers: HashMap<i64, SpawnHandle>,
    /// A running offline grace period per user.
    grace_timers: HashMap<i64, SpawnHandle>,
    /// When this node was last given the shard.
    gained_at: Option<Instant>,
}

impl ShardActor {
    pub(crate) fn new(shard: ShardId, core: Arc<Core>, chats: Arc<ChatActors>) -> Self {
        ShardActor {
            shard,
            core,
            users: HashMap::new(),
            chats,
            presence: PresenceBook::default(),
            flush_timers: HashMap::new(),
            grace_timers: HashMap::new(),
            gained_at: None,
        }
    }

    /// Publishes the user's presence after the coalescing window, unless a
    /// flush is pending already (it will carry this change too).
    fn schedule_flush(&mut self, user_id: i64, ctx: &mut Context<Self>) {
        if self.flush_timers.contains_key(&user_id) {
            return;
        }
        let window = Duration::from_millis(self.core.config.presence_coalesce_ms);
        let timer = ctx.run_later(window, move |shard, ctx| {
            shard.flush_timers.remove(&user_id);
            if let Some(publish) = shard.presence.flush(user_id, crate::now_ms()) {
                shard.publish_presence(publish, ctx);
            }
        });
        self.flush_timers.insert(user_id, timer);
    }

    fn publish_presence(&self, publish: Publish, ctx: &mut Context<Self>) {
        let view = &publish.view;
        let shown = (view.user_id.0, SharedPresence { status: view.status, status_text: view.status_text.clone() });
        self.share_presence(vec![shown], ctx);
        self.send_presence(vec![publish.view], publish.watchers, ctx);
    }

    /// Writes users' shown presence to the presence directory, for a node
    /// that takes this shard over: offline ones are removed. Best effort
    /// (a failure is logged; the next heartbeat repeats the online ones).
    fn share_presence(&self, shown: Vec<(i64, SharedPresence)>, ctx: &mut Context<Self>) {
        let (offline, online): (Vec<_>, Vec<_>) =
            shown.into_iter().partition(|(_, presence)| presence.status == PresenceStatus::Offline);
        let offline: Vec<i64> = offline.into_iter().map(|(user_id, _)| user_id).collect();
        let directory = self.core.presence.clone();
        ctx.spawn(
            async move {
                let written = match directory.publish(&online).await {
                    Ok(()) => directory.remove(&offline).await,
                    failed => failed,
                };
                if let Err(error) = written {
                    tracing::warn!(%error, "writing to the presence directory failed");
                }
            }
            .into_actor(self),
        );
    }

    /// Whether users this shard does not know may have been shown by the
    /// shard's previous owner (their directory entries have not expired).
    fn recently_gained(&self) -> bool {
        self.gained_at.is_some_and(|at| at.elapsed() < self.core.presence.ttl())
    }

    /// Registers `watcher` with `peers` and sends it their views. Right
    /// after the shard moved here, peers this book does not know are first
    /// looked up in the presence directory: one shown there by the previous
    /// owner is taken over as in a grace period (shown as they were, offline
    /// unless they reconnect here within `presence_offline_grace_ms`), so a
    /// handover does not show its users offline while they reconnect. The
    /// actor waits for the lookup, so later controls (an unwatch) keep
    /// their order.
    fn watch(&mut self, watcher: i64, peers: Vec<PresencePeer>, ctx: &mut Context<Self>) {
        let unknown: Vec<i64> = if self.recently_gained() {
            peers.iter().map(|peer| peer.user_id).filter(|user_id| !self.presence.knows(*user_id)).collect()
        } else {
            Vec::new()
        };
        if unknown.is_empty() {
            let views = self.presence.watch(watcher, &peers);
            self.send_presence(views, vec![watcher], ctx);
            return;
        }
        let directory = self.core.presence.clone();
        ctx.wait(async move { (directory.read(&unknown).await, unknown) }.into_actor(self).map(
            move |(found, unknown), shard, ctx| {
                match found {
                    Ok(found) => {
                        for (user_id, presence) in unknown.into_iter().zip(found) {
                            let Some(presence) = presence else { continue };
                            if shard.presence.take_over(user_id, presence.status, presence.status_text) {
                                shard.start_grace(user_id, ctx);
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "reading the presence directory failed"),
                }
                let views = shard.presence.watch(watcher, &peers);
                shard.send_presence(views, vec![watcher], ctx);
            },
        ));
    }

    /// Sends presence views to every device of `recipients`, through the
    /// bus like any delivery; their user actors batch them. Spawned in order
    /// on this actor, so views of one user arrive in the order they were decided.
    fn send_presence(&self, users: Vec<PresenceView>, recipients: Vec<i64>, ctx: &mut Context<Self>) {
        if recipients.is_empty() || users.is_empty() {
            return;
        }
        let core = self.core.clone();
        let recipients = recipients.into_iter().map(|user| (user, 0)).collect();
        ctx.spawn(
            async move { crate::chat::deliver(&core, Payload::Presence(users.into()), recipients).await }
                .into_actor(self),
        );
    }

    /// The user's last connection closed: offline once the grace ends.
    fn start_grace(&mut self, user_id: i64, ctx: &mut Context<Self>) {
        let grace = Duration::from_millis(self.core.config.presence_offline_grace_ms);
        let timer = ctx.run_later(grace, move |shard, ctx| {
            shard.grace_timers.remove(&user_id);
            let Some(offline) = shard.presence.grace_expired(user_id, crate::now_ms()) else { return };
            if let Some(timer) = shard.flush_timers.remove(&user_id) {
                ctx.cancel_future(timer);
            }
            if let Some(publish) = offline.publish {
                shard.publish_presence(publish, ctx);
            }
            route_by_shard(&shard.core, offline.unwatch, |targets| PresenceControl::Unwatch {
                watcher: user_id,
                targets,
            });
            if let Some(last_seen) = offline.last_seen_ms {
                let users = shard.core.stores.users.clone();
                ctx.spawn(async move { users.set_last_seen(user_id, last_seen).await }.into_actor(shard).map(
                    move |result, _, _| {
                        if let Err(error) = result {
                            tracing::warn!(%error, user_id, "storing last-seen failed");
                        }
                    },
                ));
            }
        });
        if let Some(old) = self.grace_timers.insert(user_id, timer) {
            ctx.cancel_future(old);
        }
    }
}

/// Publishes one [`PresenceControl`] per shard owning some of `users`, built
/// from that shard's share.
pub(crate) fn route_by_shard<T>(core: &Core, users: Vec<T>, control: impl Fn(Vec<T>) -> PresenceControl)
where
    T: UserKeyed,
{
    let mut by_shard: BTreeMap<ShardId, Vec<T>> = BTreeMap::new();
    for item in users {
        by_shard.entry(core.shards.shard_of(item.user_key())).or_default().push(item);
    }
    let deliveries: Vec<Delivery> = by_shard
        .into_iter()
        .map(|(shard, items)| Delivery {
            shard,
            recipients: Vec::new(),
            payload: Payload::Control(Arc::new(control(items))),
        })
        .collect();
    if deliveries.is_empty() {
        return;
    }
    // One task publishes them in order; tasks spawned one after the other
    // hand their first record to the bus in spawn order, so controls for
    // one shard keep the order they were decided in.
    let bus = core.bus.clone();
    let redelivery = core.redelivery.clone();
    actix::spawn(async move { publish_controls(&*bus, redelivery.as_ref(), deliveries).await });
}

/// Asks every shard to register its users' interest in the users of
/// `moved` again: this node was just given those shards, and their
/// presence books start empty here (see [`PresenceControl::Rewatch`]).
pub(crate) async fn rewatch(core: &Core, moved: Vec<ShardId>) {
    if moved.is_empty() {
        return;
    }
    let control = Arc::new(PresenceControl::Rewatch { shards: moved });
    let deliveries = core
        .shards
        .all()
        .map(|shard| Delivery { shard, recipients: Vec::new(), payload: Payload::Control(control.clone()) })
        .collect();
    publish_controls(&*core.bus, core.redelivery.as_ref(), deliveries).await;
}

/// Publishes presence bookkeeping one record after the other; a record
/// the bus could not take is published again later by `redelivery` (a
/// cluster node), or logged and skipped.
async fn publish_controls(bus: &dyn crate::bus::Bus, redelivery: Option<&Redelivery>, deliveries: Vec<Delivery>) {
    for delivery in deliveries {
        let shard = delivery.shard;
        if let Err(error) = crate::redelivery::publish(bus, redelivery, delivery).await {
            tracing::warn!(%error, shard = shard.0, "publishing presence bookkeeping failed");
        }
    }
}

/// Something that belongs to the shard of a user.
pub(crate) trait UserKeyed {
    fn user_key(&self) -> i64;
}

impl UserKeyed for i64 {
    fn user_key(&self) -> i64 {
        *self
    }
}

impl UserKeyed for PresencePeer {
    fn user_key(&self) -> i64 {
        self.user_id
    }
}

impl<T> UserKeyed for (i64, T) {
    fn user_key(&self) -> i64 {
        self.0
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.core.metrics.actors.with_label_values(&["shard"]).inc();
        tracing::debug!(shard = self.shard.0, "shard actor started");
        // Keeps this shard's online users in the presence directory.
        ctx.run_interval(self.core.presence.ttl() / HEARTBEATS_PER_TTL, |shard, ctx| {
            let online = shard.presence.shown_online().into_iter();
            let shown = online.map(|(user_id, status, status_text)| (user_id, SharedPresence { status, status_text }));
            let shown: Vec<_> = shown.collect();
            if !shown.is_empty() {
                shard.share_presence(shown, ctx);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.core.metrics.actors.with_label_values(&["shard"]).dec();
    }
}

impl Handler<Attach> for ShardActor {
    type Result = ();
    fn handle(&mut self, msg: Attach, ctx: &mut Self::Context) {
        // The shard may have moved between the engine's check and now.
        if !self.core.owns(self.shard) {
            msg.conn.kick.do_send(Kick { code: protocol::ws::close::MOVED, reason: "shard moved to another node" });
            return;
        }
        let metrics = self.core.metrics.clone();
        let entry = self.users.entry(msg.user_id).or_insert_with(|| UserEntry {
            addr: UserActor::new(msg.user_id, metrics, Duration::from_millis(self.core.config.presence_coalesce_ms))
                .start(),
            connections: 0,
            retire_timer: None,
        });
        if let Some(timer) = entry.retire_timer.take() {
            ctx.cancel_future(timer);
        }
        entry.connections += 1;
        let conn_id = msg.conn.id;
        entry.addr.do_send(AddConnection { conn: msg.conn });
        self.presence.connect(msg.user_id, conn_id, msg.choice, msg.status_text);
        if let Some(timer) = self.grace_timers.remove(&msg.user_id) {
            ctx.cancel_future(timer);
        }
        self.schedule_flush(msg.user_id, ctx);
    }
}

impl Handler<SetIdle> for ShardActor {
    type Result = ();
    fn handle(&mut self, msg: SetIdle, ctx: &mut Self::Context) {
        self.presence.set_idle(msg.user_id, msg.conn_id, msg.idle);
        self.schedule_flush(msg.user_id, ctx);
    }
}

impl Handler<SetChoice> for ShardActor {
    type Result = ();
    fn handle(&mut self, msg: SetChoice, ctx: &mut Self::Context) {
        self.presence.set_choice(msg.user_id, msg.choice, msg.status_text);
        self.schedule_flush(msg.user_id, ctx);
    }
}

impl ShardActor {
    /// Applies presence bookkeeping that another shard (or the engine) sent.
    fn control(&mut self, msg: PresenceControl, ctx: &mut Context<Self>) {
        match msg {
            PresenceControl::AddInterest { links, snapshot } => {
                let mut by_watcher: BTreeMap<i64, Vec<PresencePeer>> = BTreeMap::new();
                for (user_id, peer) in links {
                    let added = !self.presence.add_interest(user_id, std::slice::from_ref(&peer)).is_empty();
                    if added || (snapshot && self.presence.is_online(user_id)) {
                        by_watcher.entry(user_id).or_default().push(peer);
                    }
                }
                for (watcher, peers) in by_watcher {
                    route_by_shard(&self.core, peers, |peers| PresenceControl::Watch { watcher, peers });
                }
            }
            PresenceControl::RemoveInterest { links } => {
                for (user_id, target) in links {
                    if self.presence.remove_interest(user_id, &[target]).is_empty() {
                        continue;
                    }
                    route_by_shard(&self.core, vec![target], |targets| PresenceControl::Unwatch {
                        watcher: user_id,
                        targets,
                    });
                    let hidden = PresenceView {
                        user_id: protocol::UserId(target),
                        status: PresenceStatus::Offline,
                        status_text: String::new(),
                        last_seen: None,
                    };
                    self.send_presence(vec![hidden], vec![user_id], ctx);
                }
            }
            PresenceControl::Watch { watcher, peers } => self.watch(watcher, peers, ctx),
            PresenceControl::Unwatch { watcher, targets } => self.presence.unwatch(watcher, &targets),
            PresenceControl::Rewatch { shards } => {
                let moved = |user: i64| shards.contains(&self.core.shards.shard_of(user));
                for (watcher, peers) in self.presence.interest_in(moved) {
                    route_by_shard(&self.core, peers, |peers| PresenceControl::Watch { watcher, peers });
                }
            }
        }
    }
}

impl Handler<Detach> for ShardActor {
    type Result = ();
    fn handle(&mut self, msg: Detach, ctx: &mut Self::Context) {
        if self.presence.disconnect(msg.user_id, msg.conn_id) {
            self.start_grace(msg.user_id, ctx);
        }
        let Some(entry) = self.users.get_mut(&msg.user_id) else { return };
        entry.addr.do_send(RemoveConnection { conn_id: msg.conn_id });
        entry.connections = entry.connections.saturating_sub(1);
        if entry.connections == 0 && entry.retire_timer.is_none() {
            let user_id = msg.user_id;
            let timer = ctx.run_later(self.core.config.user_idle_grace(), move |shard, _ctx| {
                if let Some(entry) = shard.users.get(&user_id)
                    && entry.connections == 0
                    && let Some(entry) = shard.users.remove(&user_id)
                {
                    entry.addr.do_send(Retire);
                }
            });
            entry.retire_timer = Some(timer);
        }
    }
}

impl Handler<Evict> for ShardActor {
    type Result = ();
    fn handle(&mut self, _msg: Evict, ctx: &mut Self::Context) {
        let users = self.users.len();
        for (_, entry) in self.users.drain() {
            if let Some(timer) = entry.retire_timer {
                ctx.cancel_future(timer);
            }
            entry.addr.do_send(Evicted);
        }
        for (_, timer) in self.flush_timers.drain().chain(self.grace_timers.drain()) {
            ctx.cancel_future(timer);
        }
        self.presence = PresenceBook::default();
        self.chats.lock().clear();
        tracing::info!(shard = self.shard.0, users, "shard moved away; its clients were told to reconnect");
    }
}

impl Handler<Gained> for ShardActor {
    type Result = ();
    fn handle(&mut self, _msg: Gained, _ctx: &mut Self::Context) {
        self.gained_at = Some(Instant::now());
    }
}

impl Handler<ChatAddr> for ShardActor {
    type Result = actix::MessageResult<ChatAddr>;
    fn handle(&mut self, msg: ChatAddr, ctx: &mut Self::Context) -> Self::Result {
        let mut chats = self.chats.lock();
        if let Some(addr) = chats.get(&msg.chat_id).filter(|addr| addr.connected()) {
            return actix::MessageResult(addr.clone());
        }
        let (chat_id, core, shard) = (msg.chat_id, self.core.clone(), ctx.address().recipient());
        let addr = ChatActor::start_in_arbiter(&msg.thread, move |_| ChatActor::new(chat_id, core, shard));
        chats.insert(msg.chat_id, addr.clone());
        actix::MessageResult(addr)
    }
}

impl Handler<ChatStopped> for ShardActor {
    type Result = ();
    fn handle(&mut self, msg: ChatStopped, _ctx: &mut Self::Context) {
        let mut chats = self.chats.lock();
        if chats.get(&msg.chat_id).is_some_and(|addr| !addr.connected()) {
            chats.remove(&msg.chat_id);
        }
    }
}

impl Handler<Delivery> for ShardActor {
    type Result = ();
    fn handle(&mut self, msg: Delivery, ctx: &mut Self::Context) {
        if let Payload::Control(control) = msg.payload {
            self.control(Arc::unwrap_or_clone(control), ctx);
            return;
        }
        for (user_id, seq) in msg.recipients {
            // Users without a live connection catch up from storage later.
            if let Some(entry) = self.users.get(&user_id) {
                entry.addr.do_send(Deliver { seq, payload: msg.payload.clone() });
            }
        }
    }
}
