//! The shard actor: one per owned virtual shard. It owns the lifecycle of
//! the user and chat actors whose IDs hash to its shard, and routes bus
//! deliveries to them.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message, SpawnHandle};

use crate::Core;
use crate::bus::Delivery;
use crate::chat::{ChatActor, ChatStopped};
use crate::shard::ShardId;
use crate::user::{AddConnection, ConnectionHandle, Deliver, RemoveConnection, Retire, UserActor};

/// Attaches a connection to its user, starting the user actor if needed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Attach {
    pub user_id: i64,
    pub conn: ConnectionHandle,
}

/// Detaches a connection; the user actor retires after the idle grace.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Detach {
    pub user_id: i64,
    pub conn_id: u64,
}

/// Returns the chat's actor, starting it if needed.
#[derive(Message)]
#[rtype(result = "Addr<ChatActor>")]
pub(crate) struct ChatAddr {
    pub chat_id: i64,
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
    chats: HashMap<i64, Addr<ChatActor>>,
}

impl ShardActor {
    pub(crate) fn new(shard: ShardId, core: Arc<Core>) -> Self {
        ShardActor { shard, core, users: HashMap::new(), chats: HashMap::new() }
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.core.metrics.actors.with_label_values(&["shard"]).inc();
        tracing::debug!(shard = self.shard.0, "shard actor started");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.core.metrics.actors.with_label_values(&["shard"]).dec();
    }
}

impl Handler<Attach> for ShardActor {
    type Result = ();
    fn handle(&mut self, msg: Attach, ctx: &mut Self::Context) {
        let metrics = self.core.metrics.clone();
        let entry = self.users.entry(msg.user_id).or_insert_with(|| UserEntry {
            addr: UserActor::new(msg.user_id, metrics).start(),
            connections: 0,
            retire_timer: None,
        });
        if let Some(timer) = entry.retire_timer.take() {
            ctx.cancel_future(timer);
        }
        entry.connections += 1;
        entry.addr.do_send(AddConnection { conn: msg.conn });
    }
}

impl Handler<Detach> for ShardActor {
    type Result = ();
    fn handle(&mut self, msg: Detach, ctx: &mut Self::Context) {
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

impl Handler<ChatAddr> for ShardActor {
    type Result = actix::MessageResult<ChatAddr>;
    fn handle(&mut self, msg: ChatAddr, ctx: &mut Self::Context) -> Self::Result {
        if let Some(addr) = self.chats.get(&msg.chat_id).filter(|addr| addr.connected()) {
            return actix::MessageResult(addr.clone());
        }
        let addr = ChatActor::new(msg.chat_id, self.core.clone(), ctx.address().recipient()).start();
        self.chats.insert(msg.chat_id, addr.clone());
        actix::MessageResult(addr)
    }
}

impl Handler<ChatStopped> for ShardActor {
    type Result = ();
    fn handle(&mut self, msg: ChatStopped, _ctx: &mut Self::Context) {
        if self.chats.get(&msg.chat_id).is_some_and(|addr| !addr.connected()) {
            self.chats.remove(&msg.chat_id);
        }
    }
}

impl Handler<Delivery> for ShardActor {
    type Result = ();
    fn handle(&mut self, msg: Delivery, _ctx: &mut Self::Context) {
        for (user_id, seq) in msg.recipients {
            // Users without a live connection catch up from storage later.
            if let Some(entry) = self.users.get(&user_id) {
                entry.addr.do_send(Deliver { seq, payload: msg.payload.clone() });
            }
        }
    }
}
