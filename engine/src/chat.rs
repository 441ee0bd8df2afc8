//! The chat actor: one per active chat, on the chat's shard. It orders the
//! chat's messages (one append at a time), persists them, and publishes
//! one delivery per destination shard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, Message, WrapFuture};
use storage::{AppendOutcome, ChatKind, ChatRecord, GroupChanged, NewMessage, Role};

use crate::bus::{Delivery, Payload};
use crate::policy::GroupCommand;
use crate::{Core, EngineError, GroupError, Posted, ids, message_view, policy};

/// Posts a message to the chat.
#[derive(Message)]
#[rtype(result = "Result<Posted, EngineError>")]
pub(crate) struct PostMessage {
    pub sender_id: i64,
    pub client_msg_id: String,
    pub body: String,
}

/// Edits a message (its author, within the window) or deletes it for everyone.
#[derive(Message)]
#[rtype(result = "Result<(), EngineError>")]
pub(crate) struct ChangeMessage {
    pub user_id: i64,
    pub message_id: i64,
    /// `Some(body)` edits; `None` deletes for everyone.
    pub new_body: Option<String>,
}

/// Changes a group: checked against the members' roles, stored with the
/// event message that records it, which reaches everyone who was a member
/// before or after.
#[derive(Message)]
#[rtype(result = "Result<GroupChanged, EngineError>")]
pub(crate) struct ChangeGroup {
    pub user_id: i64,
    pub command: GroupCommand,
}

/// Tells the shard a chat actor has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ChatStopped {
    pub chat_id: i64,
}

pub(crate) struct ChatActor {
    chat_id: i64,
    /// `None` until loaded; stays `None` if the chat does not exist.
    chat: Option<ChatRecord>,
    core: Arc<Core>,
    last_activity: Instant,
    on_stop: actix::Recipient<ChatStopped>,
}

impl ChatActor {
    pub(crate) fn new(chat_id: i64, core: Arc<Core>, on_stop: actix::Recipient<ChatStopped>) -> Self {
        ChatActor { chat_id, chat: None, core, last_activity: Instant::now(), on_stop }
    }
}

impl Actor for ChatActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.core.metrics.actors.with_label_values(&["chat"]).inc();
        let chats = self.core.stores.chats.clone();
        let chat_id = self.chat_id;
        // Nothing is handled before the chat is loaded.
        ctx.wait(async move { chats.chat(chat_id).await }.into_actor(self).map(|loaded, actor, ctx| match loaded {
            Ok(chat) => actor.chat = chat,
            Err(error) => {
                tracing::error!(chat_id = actor.chat_id, %error, "loading chat failed");
                ctx.stop();
            }
        }));
        let grace = self.core.config.chat_idle_grace();
        ctx.run_interval(grace.min(Duration::from_secs(30)), move |actor, ctx| {
            if actor.last_activity.elapsed() >= grace {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.core.metrics.actors.with_label_values(&["chat"]).dec();
        self.on_stop.do_send(ChatStopped { chat_id: self.chat_id });
    }
}

impl Handler<PostMessage> for ChatActor {
    type Result = AtomicResponse<Self, Result<Posted, EngineError>>;

    fn handle(&mut self, msg: PostMessage, _ctx: &mut Self::Context) -> Self::Result {
        self.last_activity = Instant::now();
        let members = match &self.chat {
            Some(chat) if chat.members.contains(&msg.sender_id) => chat.members.clone(),
            _ => return AtomicResponse::new(Box::pin(actix::fut::ready(Err(EngineError::ChatNotFound)))),
        };
        let core = self.core.clone();
        let chat_id = self.chat_id;
        let peer = self.chat.as_ref().and_then(|chat| direct_peer(chat, msg.sender_id));
        // Atomic: the next post waits until this one is stored and published,
        // so IDs, update seqs and bus records of a chat share one order.
        AtomicResponse::new(Box::pin(
            async move {
                if let Some(peer) = peer {
                    policy::may_message(core.stores.relations.relation(msg.sender_id, peer).await?)?;
                }
                let id = core.ids.next_id().await?;
                let message = NewMessage {
                    id,
                    chat_id,
                    sender_id: msg.sender_id,
                    sent_at_ms: ids::decompose(id).unix_ms as i64,
                    client_msg_id: msg.client_msg_id,
                    body: msg.body,
                    event: None,
                };
                match core.stores.chats.append_message(message.clone(), &members).await? {
                    AppendOutcome::Appended { message, seqs } => {
                        core.metrics.messages_sent.inc();
                        publish_message(&core, &message, seqs).await;
                        Ok(Posted { message: message_view(&message), duplicate: false })
                    }
                    AppendOutcome::Duplicate { message: stored } => {
                        if stored.chat_id == message.chat_id && stored.body == message.body {
                            Ok(Posted { message: message_view(&stored), duplicate: true })
                        } else {
                            Err(EngineError::ClientMsgIdConflict)
                        }
                    }
                }
            }
            .into_actor(self),
        ))
    }
}

impl Handler<ChangeMessage> for ChatActor {
    type Result = AtomicResponse<Self, Result<(), EngineError>>;

    fn handle(&mut self, msg: ChangeMessage, _ctx: &mut Self::Context) -> Self::Result {
        self.last_activity = Instant::now();
        let (members, moderator) = match &self.chat {
            Some(chat) if chat.members.contains(&msg.user_id) => {
                let moderator = chat.group.is_some() && chat.role_of(msg.user_id) >= Some(Role::Admin);
                (chat.members.clone(), moderator)
            }
            _ => return AtomicResponse::new(Box::pin(actix::fut::ready(Err(EngineError::ChatNotFound)))),
        };
        let core = self.core.clone();
        let chat_id = self.chat_id;
        // Serialised with posts: a change never overtakes the message it changes.
        AtomicResponse::new(Box::pin(
            async move {
                let chats = &core.stores.chats;
                let message = chats.message(chat_id, msg.message_id).await?.ok_or(EngineError::MessageNotFound)?;
                let now = crate::now_ms();
                let (update, seqs) = match msg.new_body {
                    Some(body) => {
                        policy::may_edit(&message, msg.user_id, now)?;
                        let (edited, seqs) = chats.edit_message(chat_id, message.id, body, now, &members).await?;
                        (protocol::ws::Update::Edited { message: message_view(&edited) }, seqs)
                    }
                    None => {
                        policy::may_change_for_everyone(&message, msg.user_id, moderator, now)?;
                        let seqs = chats.delete_message(chat_id, message.id, now, &members).await?;
                        let update = protocol::ws::Update::Deleted {
                            chat_id: protocol::ChatId(chat_id),
                            message_id: protocol::MessageId(message.id),
                            for_everyone: true,
                        };
                        (update, seqs)
                    }
                };
                publish(&core, &update, seqs).await;
                Ok(())
            }
            .into_actor(self),
        ))
    }
}

impl Handler<ChangeGroup> for ChatActor {
    type Result = AtomicResponse<Self, Result<GroupChanged, EngineError>>;

    fn handle(&mut self, msg: ChangeGroup, _ctx: &mut Self::Context) -> Self::Result {
        self.last_activity = Instant::now();
        let planned = match &self.chat {
            Some(chat) => policy::plan_group_change(chat, msg.user_id, msg.command, self.core.config.group_limits()),
            None => Err(EngineError::ChatNotFound),
        };
        let (change, event) = match planned {
            Ok(planned) => planned,
            Err(error) => return AtomicResponse::new(Box::pin(actix::fut::ready(Err(error)))),
        };
        let core = self.core.clone();
        let chat_id = self.chat_id;
        // Serialised with posts: a removed member's next send is refused,
        // an added member gets every message after the event.
        AtomicResponse::new(Box::pin(
            async move {
                if let storage::GroupChange::AddMembers { users, .. } = &change {
                    let relations = core.stores.relations.relations_with(msg.user_id, users).await?;
                    if let Some(stranger) = users.iter().find(|user| {
                        !relations
                            .iter()
                            .any(|(other, relation)| other == *user && *relation == storage::Relation::Friends)
                    }) {
                        return Err(GroupError::NotAFriend(*stranger).into());
                    }
                }
                let event = event_message(&core, chat_id, msg.user_id, &event).await?;
                let changed =
                    core.stores.chats.change_group(chat_id, change, event).await?.map_err(GroupError::from)?;
                publish_message(&core, &changed.message, changed.seqs.clone()).await;
                Ok(changed)
            }
            .into_actor(self)
            .map(|result: Result<GroupChanged, EngineError>, actor, _ctx| {
                if let Ok(changed) = &result {
                    actor.chat = Some(changed.chat.clone());
                }
                result
            }),
        ))
    }
}

/// A new event message of `sender` in the chat, recording `event`.
pub(crate) async fn event_message(
    core: &Core,
    chat_id: i64,
    sender_id: i64,
    event: &protocol::ws::ChatEvent,
) -> Result<NewMessage, EngineError> {
    let json = serde_json::to_string(event).map_err(|error| EngineError::InvalidField(error.to_string()))?;
    let id = core.ids.next_id().await?;
    Ok(NewMessage {
        id,
        chat_id,
        sender_id,
        client_msg_id: format!("event:{id}"),
        body: String::new(),
        sent_at_ms: ids::decompose(id).unix_ms as i64,
        event: Some(json),
    })
}

/// Publishes a stored message to its recipients as a `message` update.
pub(crate) async fn publish_message(core: &Core, message: &storage::MessageRecord, seqs: Vec<(i64, u64)>) {
    publish(core, &protocol::ws::Update::Message { message: message_view(message) }, seqs).await;
}

/// Publishes one update to its recipients: one delivery per destination
/// shard, the update serialized once. The update is durable already: a
/// failed publish only delays delivery until the recipients sync.
pub(crate) async fn publish(core: &Core, update: &protocol::ws::Update, seqs: Vec<(i64, u64)>) {
    match serde_json::to_string(update) {
        Ok(json) => deliver(core, Payload::Update(json.into()), seqs).await,
        Err(error) => tracing::error!(%error, "serializing an update failed"),
    }
}

/// Sends a payload to its recipients: one bus record per destination shard.
pub(crate) async fn deliver(core: &Core, payload: Payload, seqs: Vec<(i64, u64)>) {
    let mut by_shard: BTreeMap<_, Vec<(i64, u64)>> = BTreeMap::new();
    for (user_id, seq) in seqs {
        by_shard.entry(core.shards.shard_of(user_id)).or_default().push((user_id, seq));
    }
    for (shard, recipients) in by_shard {
        let delivery = Delivery { shard, recipients, payload: payload.clone() };
        match core.bus.publish(delivery).await {
            Ok(()) => core.metrics.bus_records.inc(),
            Err(error) => tracing::warn!(%error, shard = shard.0, "publishing a delivery failed"),
        }
    }
}

/// The other member of a 1:1 chat, seen from `sender`.
fn direct_peer(chat: &ChatRecord, sender: i64) -> Option<i64> {
    match chat.kind {
        ChatKind::Direct => chat.members.iter().copied().find(|member| *member != sender),
        ChatKind::Group => None,
    }
}
