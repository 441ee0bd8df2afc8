//! The chat actor: one per active chat, on the chat's shard. It orders the
//! chat's messages (one append at a time), persists them, and publishes
//! one delivery per destination shard.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseFuture, WrapFuture};
use storage::{AppendOutcome, ChatKind, ChatRecord, GroupChanged, NewMessage, RelationView, Role};
use tokio::sync::oneshot;

use crate::bus::{Delivery, Payload};
use crate::policy::GroupCommand;
use crate::{Core, EngineError, GroupError, Posted, ids, message_view, policy, redelivery};

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
    /// Work waiting its turn, in arrival order.
    queue: VecDeque<Op>,
    /// A step (a batch of posts, or one change) is being written.
    busy: bool,
    /// The members' relation, for the block check on 1:1 posts.
    relations: Rc<RelationCache>,
}

/// What each member of a 1:1 chat was to the other when relations last
/// changed anywhere: the block check of a post reads storage only after a
/// relation change (any, anywhere: they are rare next to messages).
#[derive(Default)]
pub(crate) struct RelationCache {
    /// `(sender, relations epoch, view)` for each of the two members.
    entries: Cell<[Option<(i64, u64, RelationView)>; 2]>,
}

impl RelationCache {
    /// How `user` stands with `peer`, from the cache if no relation changed since.
    async fn view(&self, core: &Core, user: i64, peer: i64) -> Result<RelationView, EngineError> {
        if !core.cache_relations {
            return Ok(core.stores.relations.relation(user, peer).await?);
        }
        // Read before loading: a change committed meanwhile leaves the entry stale, never wrong.
        let epoch = core.relations_epoch.load(Ordering::Acquire);
        let mut entries = self.entries.get();
        if let Some((_, _, view)) = entries.iter().flatten().find(|(u, e, _)| *u == user && *e == epoch) {
            return Ok(*view);
        }
        let view = core.stores.relations.relation(user, peer).await?;
        let slot = entries.iter().position(|entry| entry.is_none_or(|(u, _, _)| u == user)).unwrap_or(0);
        entries[slot] = Some((user, epoch, view));
        self.entries.set(entries);
        Ok(view)
    }
}

/// One queued request with the channel its answer goes back on.
enum Op {
    Post(PostMessage, Reply<Posted>),
    Change(ChangeMessage, Reply<()>),
    Group(ChangeGroup, Reply<GroupChanged>),
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// Most posts written in one transaction.
const MAX_BATCH: usize = 128;

impl ChatActor {
    pub(crate) fn new(chat_id: i64, core: Arc<Core>, on_stop: actix::Recipient<ChatStopped>) -> Self {
        ChatActor {
            chat_id,
            chat: None,
            core,
            last_activity: Instant::now(),
            on_stop,
            queue: VecDeque::new(),
            busy: false,
            relations: Rc::default(),
        }
    }

    /// Queues a request and answers when its turn has been written.
    fn enqueue<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> ResponseFuture<Result<T, EngineError>> {
        self.last_activity = Instant::now();
        let (reply, answer) = oneshot::channel();
        self.queue.push_back(op(reply));
        self.drive(ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(EngineError::Unavailable)) })
    }

    /// Starts the next step unless one is running. Steps run one at a time
    /// in queue order, so a chat's IDs, commits, update seqs and bus records
    /// share one order; posts that queued up behind a step are written
    /// together in the next one (group commit).
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.queue.is_empty() {
            return;
        }
        let Some(chat) = self.chat.clone() else {
            for op in self.queue.drain(..) {
                op.fail(EngineError::ChatNotFound);
            }
            return;
        };
        self.busy = true;
        let core = self.core.clone();
        let relations = self.relations.clone();
        let step: Pin<Box<dyn Future<Output = Option<ChatRecord>>>> = match self.queue.pop_front() {
            Some(Op::Post(post, reply)) => {
                let mut posts = vec![(post, reply)];
                while posts.len() < MAX_BATCH && matches!(self.queue.front(), Some(Op::Post(..))) {
                    if let Some(Op::Post(post, reply)) = self.queue.pop_front() {
                        posts.push((post, reply));
                    }
                }
                Box::pin(async move {
                    write_posts(&core, &chat, &relations, posts).await;
                    None
                })
            }
            Some(Op::Change(change, reply)) => Box::pin(async move {
                let _ = reply.send(change_message(&core, &chat, change).await);
                None
            }),
            Some(Op::Group(change, reply)) => Box::pin(async move {
                let result = change_group(&core, &chat, change).await;
                let updated = result.as_ref().ok().map(|changed| changed.chat.clone());
                let _ = reply.send(result);
                updated
            }),
            None => Box::pin(async { None }),
        };
        ctx.spawn(step.into_actor(self).map(|updated, actor, ctx| {
            if let Some(chat) = updated {
                actor.chat = Some(chat);
            }
            actor.busy = false;
            actor.drive(ctx);
        }));
    }
}

impl Op {
    fn fail(self, error: EngineError) {
        let _ = match self {
            Op::Post(_, reply) => reply.send(Err(error)).is_ok(),
            Op::Change(_, reply) => reply.send(Err(error)).is_ok(),
            Op::Group(_, reply) => reply.send(Err(error)).is_ok(),
        };
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
            if actor.last_activity.elapsed() >= grace && !actor.busy && actor.queue.is_empty() {
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
    type Result = ResponseFuture<Result<Posted, EngineError>>;

    fn handle(&mut self, msg: PostMessage, ctx: &mut Self::Context) -> Self::Result {
        self.enqueue(ctx, |reply| Op::Post(msg, reply))
    }
}

impl Handler<ChangeMessage> for ChatActor {
    type Result = ResponseFuture<Result<(), EngineError>>;

    fn handle(&mut self, msg: ChangeMessage, ctx: &mut Self::Context) -> Self::Result {
        self.enqueue(ctx, |reply| Op::Change(msg, reply))
    }
}

impl Handler<ChangeGroup> for ChatActor {
    type Result = ResponseFuture<Result<GroupChanged, EngineError>>;

    fn handle(&mut self, msg: ChangeGroup, ctx: &mut Self::Context) -> Self::Result {
        self.enqueue(ctx, |reply| Op::Group(msg, reply))
    }
}

/// Writes a run of posts in one transaction, then publishes and answers
/// each. Posts the chat refuses (not a member, a block) are answered
/// without being written; a failed write fails every post of the run.
async fn write_posts(
    core: &Core,
    chat: &ChatRecord,
    relations: &RelationCache,
    posts: Vec<(PostMessage, Reply<Posted>)>,
) {
    let mut batch = Vec::with_capacity(posts.len());
    let mut replies = Vec::with_capacity(posts.len());
    for (post, reply) in posts {
        match prepare_post(core, chat, relations, post).await {
            Ok(message) => {
                batch.push(message);
                replies.push(reply);
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }
    if batch.is_empty() {
        return;
    }
    core.metrics.append_batch.observe(batch.len() as f64);
    let asked: Vec<NewMessage> = batch.clone();
    match core.stores.chats.append_messages(batch, &chat.members).await {
        Ok(outcomes) => {
            for ((outcome, asked), reply) in outcomes.into_iter().zip(asked).zip(replies) {
                let _ = reply.send(match outcome {
                    AppendOutcome::Appended { message, seqs } => {
                        core.metrics.messages_sent.inc();
                        publish_message(core, &message, seqs).await;
                        Ok(Posted { message: message_view(&message), duplicate: false })
                    }
                    AppendOutcome::Duplicate { message: stored } => {
                        if stored.chat_id == asked.chat_id && stored.body == asked.body {
                            Ok(Posted { message: message_view(&stored), duplicate: true })
                        } else {
                            Err(EngineError::ClientMsgIdConflict)
                        }
                    }
                });
            }
        }
        Err(error) => {
            tracing::error!(chat_id = chat.id, %error, posts = replies.len(), "appending messages failed");
            for reply in replies {
                let _ = reply.send(Err(EngineError::Storage(storage::StorageError::Backend(error.to_string().into()))));
            }
        }
    }
}

/// Checks a post against the chat and gives it its ID.
async fn prepare_post(
    core: &Core,
    chat: &ChatRecord,
    relations: &RelationCache,
    post: PostMessage,
) -> Result<NewMessage, EngineError> {
    if !chat.members.contains(&post.sender_id) {
        return Err(EngineError::ChatNotFound);
    }
    if let Some(peer) = direct_peer(chat, post.sender_id) {
        policy::may_message(relations.view(core, post.sender_id, peer).await?)?;
    }
    let id = core.ids.next_id().await?;
    Ok(NewMessage {
        id,
        chat_id: chat.id,
        sender_id: post.sender_id,
        sent_at_ms: ids::decompose(id).unix_ms as i64,
        client_msg_id: post.client_msg_id,
        body: post.body,
        event: None,
    })
}

/// Edits a message or deletes it for everyone, then tells every member.
async fn change_message(core: &Core, chat: &ChatRecord, msg: ChangeMessage) -> Result<(), EngineError> {
    if !chat.members.contains(&msg.user_id) {
        return Err(EngineError::ChatNotFound);
    }
    let moderator = chat.group.is_some() && chat.role_of(msg.user_id) >= Some(Role::Admin);
    let chats = &core.stores.chats;
    let message = chats.message(chat.id, msg.message_id).await?.ok_or(EngineError::MessageNotFound)?;
    let now = crate::now_ms();
    let (update, seqs) = match msg.new_body {
        Some(body) => {
            policy::may_edit(&message, msg.user_id, now)?;
            let (edited, seqs) = chats.edit_message(chat.id, message.id, body, now, &chat.members).await?;
            (protocol::ws::Update::Edited { message: message_view(&edited) }, seqs)
        }
        None => {
            policy::may_change_for_everyone(&message, msg.user_id, moderator, now)?;
            let seqs = chats.delete_message(chat.id, message.id, now, &chat.members).await?;
            let update = protocol::ws::Update::Deleted {
                chat_id: protocol::ChatId(chat.id),
                message_id: protocol::MessageId(message.id),
                for_everyone: true,
            };
            (update, seqs)
        }
    };
    publish(core, &update, seqs).await;
    Ok(())
}

/// Only friends of the adder join a group: [`GroupError::NotAFriend`] names
/// the first of `users` who is not a friend of `adder`.
pub(crate) async fn ensure_friends(core: &Core, adder: i64, users: &[i64]) -> Result<(), EngineError> {
    let relations = core.stores.relations.relations_with(adder, users).await?;
    let is_friend =
        |user: &i64| relations.iter().any(|(other, relation)| other == user && *relation == storage::Relation::Friends);
    match users.iter().find(|user| !is_friend(user)) {
        Some(stranger) => Err(GroupError::NotAFriend(*stranger).into()),
        None => Ok(()),
    }
}

/// Applies a group change the member's role allows, with its event message.
async fn change_group(core: &Core, chat: &ChatRecord, msg: ChangeGroup) -> Result<GroupChanged, EngineError> {
    let (change, event) = policy::plan_group_change(chat, msg.user_id, msg.command, core.config.group_limits())?;
    if let storage::GroupChange::AddMembers { users, .. } = &change {
        ensure_friends(core, msg.user_id, users).await?;
    }
    let event = event_message(core, chat.id, msg.user_id, &event).await?;
    let changed = core.stores.chats.change_group(chat.id, change, event).await?.map_err(GroupError::from)?;
    publish_message(core, &changed.message, changed.seqs.clone()).await;
    Ok(changed)
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
    // Only updates are published again after a failure: a typing
    // indicator or a presence view would be stale by then.
    let redelivery = core.redelivery.as_ref().filter(|_| matches!(payload, Payload::Update(_)));
    for (shard, recipients) in by_shard {
        let delivery = Delivery { shard, recipients, payload: payload.clone() };
        match redelivery::publish(&*core.bus, redelivery, delivery).await {
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
