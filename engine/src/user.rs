//! The user actor: one per user with a live connection; fans updates out
//! to every connection (device) of the user in `seq` order, and batches the
//! presence it is sent into one frame per coalescing window.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient, SpawnHandle};
use protocol::ws::{PresenceView, ServerFrame};
use tokio::sync::mpsc::error::TrySendError;

use crate::bus::Payload;
use crate::metrics::Metrics;

/// How long an update may wait for an earlier one still on its way before
/// it is sent anyway. Two chats commit independently, so the update with
/// the user's next `seq` can be published after a later one; holding the
/// later one briefly spares the client a needless `sync`.
const REORDER_WAIT: Duration = Duration::from_millis(50);

/// Most updates held back waiting for an earlier one.
const MAX_HELD: usize = 256;

/// Asks a connection to close itself with a WebSocket close code.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Kick {
    pub code: u16,
    pub reason: &'static str,
}

/// What the engine holds of a client connection: its bounded outbound
/// queue of serialized frames and a way to close it.
#[derive(Clone)]
pub struct ConnectionHandle {
    /// Unique per process.
    pub id: u64,
    /// The login session (token family) it authenticated with.
    pub session: i64,
    /// Bounded queue of text frames to write to the client.
    pub outbound: tokio::sync::mpsc::Sender<Arc<str>>,
    pub kick: Recipient<Kick>,
}

/// Adds a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AddConnection {
    pub conn: ConnectionHandle,
}

/// Removes a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RemoveConnection {
    pub conn_id: u64,
}

/// One update (or ephemeral frame) for this user.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver {
    pub seq: u64,
    pub payload: Payload,
}

/// Stops the actor (sent by its shard once the user has been idle).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Retire;

/// The user's shard moved to another node: every connection is told to
/// reconnect there ([`protocol::ws::close::MOVED`]) and the actor stops.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Evicted;

pub(crate) struct UserActor {
    user_id: i64,
    connections: HashMap<u64, ConnectionHandle>,
    metrics: Arc<Metrics>,
    /// Presence views waiting for the next `presence` frame, newest per user.
    pending_presence: BTreeMap<i64, PresenceView>,
    presence_window: Duration,
    /// The `seq` the next update should carry; unknown until the first.
    next_seq: Option<u64>,
    /// Updates that arrived ahead of `next_seq`, by seq.
    held: BTreeMap<u64, Arc<str>>,
    /// Sends the held updates when waiting is over.
    release_timer: Option<SpawnHandle>,
}

impl UserActor {
    pub(crate) fn new(user_id: i64, metrics: Arc<Metrics>, presence_window: Duration) -> Self {
        UserActor {
            user_id,
            connections: HashMap::new(),
            metrics,
            pending_presence: BTreeMap::new(),
            presence_window,
            next_seq: None,
            held: BTreeMap::new(),
            release_timer: None,
        }
    }

    /// Sends an update in `seq` order: one that arrives ahead of the next
    /// expected seq waits (at most [`REORDER_WAIT`]) for the ones before it.
    fn deliver_update(&mut self, seq: u64, frame: Arc<str>, ctx: &mut Context<Self>) {
        if self.next_seq.is_some_and(|next| seq > next) {
            self.held.insert(seq, frame);
            if self.held.len() > MAX_HELD {
                self.release_held(ctx);
            } else if self.release_timer.is_none() {
                self.release_timer = Some(ctx.run_later(REORDER_WAIT, |actor, ctx| actor.release_held(ctx)));
            }
            return;
        }
        self.send_update(seq, frame);
        while let Some(entry) = self.held.first_entry().filter(|entry| Some(*entry.key()) == self.next_seq) {
            let (seq, frame) = entry.remove_entry();
            self.send_update(seq, frame);
        }
        if self.held.is_empty()
            && let Some(timer) = self.release_timer.take()
        {
            ctx.cancel_future(timer);
        }
    }

    /// Sends every held update: what they waited for is not coming soon
    /// (the client will see the gap and `sync`).
    fn release_held(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.release_timer.take() {
            ctx.cancel_future(timer);
        }
        for (seq, frame) in std::mem::take(&mut self.held) {
            self.send_update(seq, frame);
        }
    }

    fn send_update(&mut self, seq: u64, frame: Arc<str>) {
        self.send(frame, true);
        // A late (or repeated) update is still sent; it never moves the expectation back.
        if self.next_seq.is_none_or(|next| seq >= next) {
            self.next_seq = Some(seq + 1);
        }
    }

    /// Queues a frame to every connection; a full queue closes its connection.
    fn send(&mut self, frame: Arc<str>, is_update: bool) {
        let metrics = &self.metrics;
        self.connections.retain(|conn_id, conn| match conn.outbound.try_send(frame.clone()) {
            Ok(()) => {
                if is_update {
                    metrics.messages_delivered.inc();
                }
                true
            }
            Err(TrySendError::Full(_)) => {
                tracing::warn!(conn_id, "outbound queue full, closing slow consumer");
                metrics.slow_consumer_closes.inc();
                conn.kick.do_send(Kick { code: protocol::ws::close::SLOW_CONSUMER, reason: "slow consumer" });
                false
            }
            Err(TrySendError::Closed(_)) => false,
        });
    }

    /// Sends the batched presence views as one frame.
    fn flush_presence(&mut self) {
        let users: Vec<PresenceView> = std::mem::take(&mut self.pending_presence).into_values().collect();
        if users.is_empty() {
            return;
        }
        match serde_json::to_string(&ServerFrame::Presence { users }) {
            Ok(json) => self.send(json.into(), false),
            Err(error) => tracing::error!(%error, "serializing a presence frame failed"),
        }
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.metrics.actors.with_label_values(&["user"]).inc();
        tracing::debug!(user_id = self.user_id, "user actor started");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.metrics.actors.with_label_values(&["user"]).dec();
        tracing::debug!(user_id = self.user_id, "user actor stopped");
    }
}

impl Handler<AddConnection> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: AddConnection, _ctx: &mut Self::Context) {
        self.connections.insert(msg.conn.id, msg.conn);
    }
}

impl Handler<RemoveConnection> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: RemoveConnection, _ctx: &mut Self::Context) {
        self.connections.remove(&msg.conn_id);
    }
}

impl Handler<Retire> for UserActor {
    type Result = ();
    fn handle(&mut self, _msg: Retire, ctx: &mut Self::Context) {
        use actix::ActorContext;
        ctx.stop();
    }
}

impl Handler<Evicted> for UserActor {
    type Result = ();
    fn handle(&mut self, _msg: Evicted, ctx: &mut Self::Context) {
        use actix::ActorContext;
        for conn in self.connections.values() {
            conn.kick.do_send(Kick { code: protocol::ws::close::MOVED, reason: "shard moved to another node" });
        }
        ctx.stop();
    }
}

impl Handler<Deliver> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        match msg.payload {
            Payload::Update(update) => {
                let frame = format!(r#"{{"type":"update","seq":{},"update":{update}}}"#, msg.seq);
                self.deliver_update(msg.seq, frame.into(), ctx)
            }
            Payload::Ephemeral(frame) => self.send(frame, false),
            Payload::Presence(views) => {
                // However many users change at once, each device gets one
                // frame per window: a storm costs frames per watcher, not per change.
                if self.pending_presence.is_empty() {
                    ctx.run_later(self.presence_window, |actor, _| actor.flush_presence());
                }
                for view in views.iter() {
                    self.pending_presence.insert(view.user_id.0, view.clone());
                }
            }
            Payload::EndSessions(sessions) => self.connections.retain(|_, conn| {
                let ended = sessions.contains(&conn.session);
                if ended {
                    let reason = "this login was ended from another device";
                    conn.kick.do_send(Kick { code: protocol::ws::close::SESSION_REVOKED, reason });
                }
                !ended
            }),
            // The shard actor keeps bookkeeping for itself; it never reaches users.
            Payload::Control(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    /// Stands in for a connection actor: kicks are not expected.
    struct NoKick;
    impl Actor for NoKick {
        type Context = Context<Self>;
    }
    impl Handler<Kick> for NoKick {
        type Result = ();
        fn handle(&mut self, _: Kick, _: &mut Self::Context) {}
    }

    /// A user actor with one connection; returns the connection's queue.
    fn user_with_connection() -> (actix::Addr<UserActor>, mpsc::Receiver<Arc<str>>) {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let user = UserActor::new(1, metrics, Duration::from_millis(10)).start();
        let (outbound, rx) = mpsc::channel(64);
        let kick = NoKick.start().recipient();
        user.do_send(AddConnection { conn: ConnectionHandle { id: 7, session: 70, outbound, kick } });
        (user, rx)
    }

    /// Stands in for a connection actor: reports the close codes it is sent.
    struct KickRecorder(mpsc::UnboundedSender<u16>);
    impl Actor for KickRecorder {
        type Context = Context<Self>;
    }
    impl Handler<Kick> for KickRecorder {
        type Result = ();
        fn handle(&mut self, kick: Kick, _: &mut Self::Context) {
            let _ = self.0.send(kick.code);
        }
    }

    #[actix_rt::test]
    async fn ending_a_session_closes_its_connections_only() {
        let (user, mut kept) = user_with_connection();
        let (outbound, _ended_queue) = mpsc::channel(64);
        let (kicks, mut kicked) = mpsc::unbounded_channel();
        let kick = KickRecorder(kicks).start().recipient();
        user.do_send(AddConnection { conn: ConnectionHandle { id: 8, session: 80, outbound, kick } });
        user.do_send(Deliver { seq: 0, payload: Payload::EndSessions(Arc::from(vec![80, 90])) });
        let code = tokio::time::timeout(Duration::from_secs(2), kicked.recv()).await.expect("a kick");
        assert_eq!(code, Some(protocol::ws::close::SESSION_REVOKED));
        user.do_send(update(1));
        assert_eq!(seqs(&mut kept, 1).await, [1], "the other session's connection stays");
    }

    fn update(seq: u64) -> Deliver {
        Deliver { seq, payload: Payload::Update(Arc::from(format!(r#"{{"n":{seq}}}"#))) }
    }

    async fn seqs(rx: &mut mpsc::Receiver<Arc<str>>, count: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        for _ in 0..count {
            let frame = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.expect("a frame").expect("open");
            let value: serde_json::Value = serde_json::from_str(&frame).expect("json");
            seqs.push(value["seq"].as_u64().expect("seq"));
        }
        seqs
    }

    #[actix_rt::test]
    async fn updates_published_out_of_order_reach_the_device_in_seq_order() {
        let (user, mut rx) = user_with_connection();
        for seq in [5, 7, 8, 6, 9] {
            user.do_send(update(seq));
        }
        assert_eq!(seqs(&mut rx, 5).await, [5, 6, 7, 8, 9]);
    }

    #[actix_rt::test]
    async fn an_update_that_never_comes_holds_the_later_ones_only_briefly() {
        let (user, mut rx) = user_with_connection();
        user.do_send(update(1));
        user.do_send(update(3));
        user.do_send(update(4));
        let started = std::time::Instant::now();
        assert_eq!(seqs(&mut rx, 3).await, [1, 3, 4], "the gap is left for the client's sync");
        assert!(started.elapsed() >= REORDER_WAIT);
        // A late arrival is still delivered, and the order after it holds.
        user.do_send(update(2));
        user.do_send(update(5));
        assert_eq!(seqs(&mut rx, 2).await, [2, 5]);
    }
}
