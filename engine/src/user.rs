//! The user actor: one per user with a live connection; fans updates out
//! to every connection (device) of the user, and batches the presence it
//! is sent into one frame per coalescing window.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient};
use protocol::ws::{PresenceView, ServerFrame};
use tokio::sync::mpsc::error::TrySendError;

use crate::bus::Payload;
use crate::metrics::Metrics;

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

pub(crate) struct UserActor {
    user_id: i64,
    connections: HashMap<u64, ConnectionHandle>,
    metrics: Arc<Metrics>,
    /// Presence views waiting for the next `presence` frame, newest per user.
    pending_presence: BTreeMap<i64, PresenceView>,
    presence_window: Duration,
}

impl UserActor {
    pub(crate) fn new(user_id: i64, metrics: Arc<Metrics>, presence_window: Duration) -> Self {
        UserActor { user_id, connections: HashMap::new(), metrics, pending_presence: BTreeMap::new(), presence_window }
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

impl Handler<Deliver> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        match msg.payload {
            Payload::Update(update) => {
                self.send(format!(r#"{{"type":"update","seq":{},"update":{update}}}"#, msg.seq).into(), true)
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
        }
    }
}
