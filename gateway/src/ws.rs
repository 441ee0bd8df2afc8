//! `GET /api/v1/ws`: the connection actor, which decodes frames, enforces
//! limits, heartbeats, and owns the connection's bounded outbound queue,
//! over either WebSocket stack: the lean one of [`crate::socket`], or
//! actix-ws for an upgrade that arrives on a reused HTTP connection.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler, WrapFuture};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use bytes::Bytes;
use engine::{ConnectionHandle, Engine, Kick};
use futures_util::StreamExt as _;
use protocol::limits::{
    MAX_BODY_BYTES, MAX_CLIENT_MSG_ID_BYTES, MAX_FRAME_BYTES, MAX_REQUEST_ID_BYTES, MAX_SYNC_BATCH,
};
use protocol::ws::{ClientFrame, ErrorCode, ErrorFrame, Limits, ServerFrame, close};
use protocol::{ChatId, MessageId, UserId, WS_SUBPROTOCOL};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::errors::{ApiError, frame_code, frame_retry_after_ms};
use crate::state::{AppState, AuthUser};

/// The most frames the writer hands the socket before flushing it.
const MAX_FRAMES_PER_FLUSH: usize = 64;

/// How long a reply may wait for room in a full outbound queue before the
/// client is treated as a slow consumer.
const REPLY_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closing connection may spend writing frames still queued.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Frame `type`s of protocol v1, to tell `unknown_type` from `bad_frame`.
const CLIENT_FRAME_TYPES: [&str; 8] = ["send", "received", "seen", "sync", "ping", "typing", "edit", "delete"];

/// The chat socket's query string.
#[derive(Deserialize)]
pub(crate) struct WsQuery {
    pub(crate) ticket: Option<String>,
}

/// Upgrades an authenticated request to a WebSocket speaking `parley.v1`
/// with actix-ws. Only upgrades that arrive on a reused HTTP connection
/// get here: [`crate::socket`] takes every fresh one.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<WsQuery>,
) -> Result<HttpResponse, ApiError> {
    let offered =
        req.headers().get_all(actix_web::http::header::SEC_WEBSOCKET_PROTOCOL).filter_map(|value| value.to_str().ok());
    let user = authorize(&state, query.ticket.as_deref(), AuthUser::from_headers(&req, &state), offered).await?;
    let (response, session, stream) = actix_ws::handle_with_protocols(&req, body, &[WS_SUBPROTOCOL])
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    let stream =
        stream.max_frame_size(MAX_FRAME_BYTES).aggregate_continuations().max_continuation_size(MAX_FRAME_BYTES);
    Connection::start(user, state.into_inner(), ActixWriter(session), stream.map(Inbound::from));
    Ok(response)
}

/// Who may open a chat socket: the holder of a valid ticket (browsers) or
/// bearer token, offering the `parley.v1` subprotocol, while the node is
/// not shutting down. Shared by both WebSocket stacks.
pub(crate) async fn authorize<'a>(
    state: &AppState,
    ticket: Option<&str>,
    bearer: impl Future<Output = Result<AuthUser, ApiError>>,
    offered_protocols: impl IntoIterator<Item = &'a str>,
) -> Result<AuthUser, ApiError> {
    if state.is_shutting_down() {
        return Err(ApiError::Unavailable);
    }
    let user = match ticket {
        Some(ticket) => AuthUser::from_claims(state.tickets.redeem(ticket).await?, state).await?,
        None => bearer.await?,
    };
    let offered = offered_protocols
        .into_iter()
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == WS_SUBPROTOCOL);
    if !offered {
        return Err(ApiError::UnsupportedProtocol);
    }
    Ok(user)
}

/// What a client sent, whichever WebSocket stack read it.
pub(crate) enum Inbound {
    /// A complete text message (continuations already joined).
    Text(Bytes),
    Binary,
    /// A ping, to be answered with a pong carrying its payload.
    Ping(Bytes),
    /// A pong: only proof of life.
    Pong,
    Close,
    /// A frame or message above [`MAX_FRAME_BYTES`].
    TooLarge,
    InvalidUtf8,
    /// Anything else the stack could not read; the connection is over.
    Failed(String),
}

impl From<Result<AggregatedMessage, ProtocolError>> for Inbound {
    fn from(item: Result<AggregatedMessage, ProtocolError>) -> Self {
        match item {
            Ok(AggregatedMessage::Text(text)) => Inbound::Text(text.into_bytes()),
            Ok(AggregatedMessage::Binary(_)) => Inbound::Binary,
            Ok(AggregatedMessage::Ping(payload)) => Inbound::Ping(payload),
            Ok(AggregatedMessage::Pong(_)) => Inbound::Pong,
            Ok(AggregatedMessage::Close(_)) => Inbound::Close,
            Err(ProtocolError::Overflow) => Inbound::TooLarge,
            Err(ProtocolError::Io(error)) if error.kind() == std::io::ErrorKind::InvalidData => Inbound::InvalidUtf8,
            Err(error) => Inbound::Failed(error.to_string()),
        }
    }
}

/// The writing half of a WebSocket, owned by the connection's writer task.
pub(crate) trait SocketWriter: Unpin + 'static {
    /// Hands a text frame to the socket (it may buffer it); false once the
    /// socket is gone.
    async fn text(&mut self, frame: &str) -> bool;
    /// Writes whatever the socket buffered.
    async fn flush(&mut self) -> bool;
    async fn ping(&mut self) -> bool;
    async fn pong(&mut self, payload: Bytes) -> bool;
    /// Sends the close frame and ends the socket.
    async fn close(self, code: u16, reason: &str);
}

/// actix-ws's session as a [`SocketWriter`]: it writes through the HTTP
/// dispatcher, which flushes on its own.
struct ActixWriter(Session);

impl SocketWriter for ActixWriter {
    async fn text(&mut self, frame: &str) -> bool {
        self.0.text(frame.to_owned()).await.is_ok()
    }

    async fn flush(&mut self) -> bool {
        true
    }

    async fn ping(&mut self) -> bool {
        self.0.ping(b"").await.is_ok()
    }

    async fn pong(&mut self, payload: Bytes) -> bool {
        self.0.pong(&payload).await.is_ok()
    }

    async fn close(self, code: u16, reason: &str) {
        let reason = CloseReason { code: CloseCode::from(code), description: Some(reason.to_owned()) };
        let _ = self.0.close(Some(reason)).await;
    }
}

/// What an `edit` or `delete` frame asks for.
enum Change {
    Edit(String),
    DeleteForEveryone,
    DeleteForMe,
}

/// The control frames the actor asks its writer task for.
#[derive(Default)]
struct ControlFrames {
    wake: Notify,
    /// Ping the client (the heartbeat).
    ping: Cell<bool>,
    /// Answer the client's latest ping with this payload. Only the latest:
    /// RFC 6455 §5.5.3 allows it, and a client that pings without reading
    /// cannot queue pongs.
    pong: Cell<Option<Bytes>>,
}

impl ControlFrames {
    fn ping(&self) {
        self.ping.set(true);
        self.wake.notify_one();
    }

    fn pong(&self, payload: Bytes) {
        self.pong.set(Some(payload));
        self.wake.notify_one();
    }

    /// Writes the frames asked for; false once the socket is gone.
    async fn write(&self, writer: &mut impl SocketWriter) -> bool {
        if let Some(payload) = self.pong.take()
            && !writer.pong(payload).await
        {
            return false;
        }
        !self.ping.take() || writer.ping().await
    }
}

/// How the writer task is to end the connection.
struct WriterClose {
    code: u16,
    reason: &'static str,
    /// Write the frames still queued before the close frame.
    flush: bool,
}

/// One client connection.
pub(crate) struct Connection<W: SocketWriter> {
    id: u64,
    user_id: UserId,
    /// The login session (token family) the connection authenticated with.
    session_id: i64,
    state: Arc<AppState>,
    /// The socket's writing half until the writer task takes it.
    writer: Option<W>,
    /// Pings and pongs for the writer task to send.
    control: Rc<ControlFrames>,
    outbound: mpsc::Sender<Arc<str>>,
    /// Taken by the writer task once `hello` is ready.
    outbound_rx: Option<mpsc::Receiver<Arc<str>>>,
    last_heard: Instant,
    protocol_errors: u32,
    token_expires_in: Duration,
    /// Tells the writer task to close; `None` before it starts.
    writer_close: Option<oneshot::Sender<WriterClose>>,
    closing: bool,
}

impl<W: SocketWriter> Connection<W> {
    /// Starts the actor of an authorized, upgraded connection.
    pub(crate) fn start(
        user: AuthUser,
        state: Arc<AppState>,
        writer: W,
        inbound: impl futures_util::Stream<Item = Inbound> + 'static,
    ) {
        let token_expires_in = Duration::from_secs(user.claims.exp.saturating_sub(crate::auth::unix_secs()));
        let connection = Connection::new(user.user_id, user.claims.session_id(), state, writer, token_expires_in);
        Connection::create(|ctx| {
            ctx.add_stream(inbound);
            connection
        });
    }

    fn new(user_id: UserId, session_id: i64, state: Arc<AppState>, writer: W, token_expires_in: Duration) -> Self {
        let (outbound, outbound_rx) = mpsc::channel(state.config.engine.outbound_queue.max(1));
        Connection {
            id: state.connections.next_id(),
            user_id,
            session_id,
            state,
            writer: Some(writer),
            control: Rc::default(),
            outbound,
            outbound_rx: Some(outbound_rx),
            last_heard: Instant::now(),
            protocol_errors: 0,
            token_expires_in,
            writer_close: None,
            closing: false,
        }
    }

    fn engine(&self) -> Engine {
        self.state.engine.clone()
    }

    /// Queues a frame; a full queue means the client cannot keep up.
    fn push(&mut self, frame: &ServerFrame, ctx: &mut Context<Self>) {
        let Ok(json) = serde_json::to_string(frame) else { return };
        if self.outbound.try_send(json.into()).is_err() {
            self.state.engine.metrics().slow_consumer_closes.inc();
            self.close(close::SLOW_CONSUMER, "slow consumer", ctx);
        }
    }

    /// Answers an invalid frame; too many of them close the connection.
    fn reject(&mut self, code: ErrorCode, message: String, ctx: &mut Context<Self>) {
        let label = serde_json::to_value(code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        self.state.engine.metrics().protocol_errors.with_label_values(&[label.as_str()]).inc();
        self.push(&ServerFrame::error(code, message, None), ctx);
        self.protocol_errors += 1;
        if self.protocol_errors > self.state.config.websocket.max_protocol_errors {
            self.close(close::TOO_MANY_ERRORS, "too many invalid frames", ctx);
        }
    }

    /// Closes the WebSocket with `code` and stops the actor.
    fn close(&mut self, code: u16, reason: &'static str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        tracing::debug!(conn_id = self.id, user_id = %self.user_id, code, reason, "closing connection");
        // A client that cannot keep up gets no more frames; anyone else gets
        // what is already queued before the close frame.
        let flush = code != close::SLOW_CONSUMER;
        match (self.writer_close.take(), self.writer.take()) {
            (Some(writer), _) => {
                let _ = writer.send(WriterClose { code, reason, flush });
            }
            (None, Some(writer)) => {
                actix::spawn(writer.close(code, reason));
            }
            (None, None) => {}
        }
        ctx.stop();
    }

    fn handle_text(&mut self, text: &[u8], ctx: &mut Context<Self>) {
        let frame = match serde_json::from_slice::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(error) => {
                let (code, message) = classify_bad_frame(text, &error);
                return self.reject(code, message, ctx);
            }
        };
        match frame {
            ClientFrame::Send { client_msg_id, chat_id, body } => {
                let engine = self.engine();
                let user_id = self.user_id;
                let started = Instant::now();
                let reply_id = client_msg_id.clone();
                // One send at a time per connection keeps the client's order.
                ctx.wait(async move { engine.post(user_id, chat_id, client_msg_id, body).await }.into_actor(self).map(
                    move |result, conn, ctx| {
                        let frame = match result {
                            Ok(posted) => {
                                conn.state.engine.metrics().send_ack_seconds.observe(started.elapsed().as_secs_f64());
                                ServerFrame::Ack {
                                    client_msg_id: reply_id,
                                    message: posted.message,
                                    duplicate: posted.duplicate,
                                }
                            }
                            Err(error) => ServerFrame::Error(ErrorFrame {
                                code: frame_code(&error),
                                message: error.to_string(),
                                client_msg_id: Some(reply_id),
                                request_id: None,
                                retry_after_ms: frame_retry_after_ms(&error),
                            }),
                        };
                        conn.push(&frame, ctx);
                    },
                ));
            }
            ClientFrame::Received { chat_id, message_id } => self.mark_read(chat_id, message_id, false, ctx),
            ClientFrame::Seen { chat_id, message_id } => self.mark_read(chat_id, message_id, true, ctx),
            ClientFrame::Sync { after_seq } => self.sync(after_seq, ctx),
            ClientFrame::Ping {} => self.push(&ServerFrame::Pong {}, ctx),
            ClientFrame::Activity { idle } => self.state.engine.set_idle(self.user_id, self.id, idle),
            ClientFrame::Typing { chat_id } => {
                let (engine, user_id) = (self.engine(), self.user_id);
                self.spawn_quiet(async move { engine.typing(user_id, chat_id).await }, ctx);
            }
            ClientFrame::Edit { request_id, chat_id, message_id, body } => {
                self.change(request_id, chat_id, message_id, Change::Edit(body), ctx)
            }
            ClientFrame::Delete { request_id, chat_id, message_id, for_everyone } => {
                let change = if for_everyone { Change::DeleteForEveryone } else { Change::DeleteForMe };
                self.change(request_id, chat_id, message_id, change, ctx)
            }
        }
    }

    /// Moves this user's delivered (and with `seen`, seen) watermark.
    fn mark_read(&mut self, chat_id: ChatId, message_id: MessageId, seen: bool, ctx: &mut Context<Self>) {
        let (engine, user_id) = (self.engine(), self.user_id);
        self.spawn_quiet(async move { engine.mark_read(user_id, chat_id, message_id, seen).await }, ctx);
    }

    /// Runs an engine call that has no answer of its own: only a failure
    /// gets a frame (`error`).
    fn spawn_quiet(
        &mut self,
        call: impl std::future::Future<Output = Result<(), engine::EngineError>> + 'static,
        ctx: &mut Context<Self>,
    ) {
        ctx.spawn(call.into_actor(self).map(|result, conn, ctx| {
            if let Err(error) = result {
                conn.push(&ServerFrame::error(frame_code(&error), error.to_string(), None), ctx);
            }
        }));
    }

    /// Edits or deletes a message; answers `done` or `error`, echoing `request_id`.
    /// Handled in order with this connection's sends.
    fn change(
        &mut self,
        request_id: String,
        chat_id: ChatId,
        message_id: MessageId,
        change: Change,
        ctx: &mut Context<Self>,
    ) {
        if request_id.is_empty() || request_id.len() > MAX_REQUEST_ID_BYTES {
            let message = format!("request_id must be 1 to {MAX_REQUEST_ID_BYTES} bytes");
            return self.reject(ErrorCode::InvalidField, message, ctx);
        }
        let engine = self.engine();
        let user_id = self.user_id;
        ctx.wait(
            async move {
                match change {
                    Change::Edit(body) => engine.change_message(user_id, chat_id, message_id, Some(body)).await,
                    Change::DeleteForEveryone => engine.change_message(user_id, chat_id, message_id, None).await,
                    Change::DeleteForMe => engine.hide_message(user_id, chat_id, message_id).await,
                }
            }
            .into_actor(self)
            .map(move |result, conn, ctx| {
                let frame = match result {
                    Ok(()) => ServerFrame::Done { request_id },
                    Err(error) => ServerFrame::Error(ErrorFrame {
                        code: frame_code(&error),
                        message: error.to_string(),
                        client_msg_id: None,
                        request_id: Some(request_id),
                        retry_after_ms: frame_retry_after_ms(&error),
                    }),
                };
                conn.push(&frame, ctx);
            }),
        );
    }

    /// Replays a batch of the update log, waiting for queue room rather
    /// than dropping (a replay can be larger than the queue).
    fn sync(&mut self, after_seq: u64, ctx: &mut Context<Self>) {
        let engine = self.engine();
        let user_id = self.user_id;
        let outbound = self.outbound.clone();
        ctx.wait(
            async move {
                let batch = engine.sync(user_id, after_seq, MAX_SYNC_BATCH).await?;
                let frames = batch
                    .updates
                    .into_iter()
                    .map(|(seq, update)| ServerFrame::Update { seq, update })
                    .chain(std::iter::once(ServerFrame::Synced { seq: batch.seq, has_more: batch.has_more }));
                for frame in frames {
                    let json: Arc<str> = serde_json::to_string(&frame).unwrap_or_default().into();
                    match tokio::time::timeout(REPLY_QUEUE_TIMEOUT, outbound.send(json)).await {
                        Ok(Ok(())) => {}
                        _ => return Ok(false),
                    }
                }
                Ok::<bool, engine::EngineError>(true)
            }
            .into_actor(self)
            .map(|result, conn, ctx| match result {
                Ok(true) => {}
                Ok(false) => conn.close(close::SLOW_CONSUMER, "slow consumer", ctx),
                Err(error) => conn.push(&ServerFrame::error(frame_code(&error), error.to_string(), None), ctx),
            }),
        );
    }

    /// Closes a connection silent for `idle_timeout`, and pings one that
    /// could reach it by the beat after next. A client heard from more
    /// recently is alive and its own traffic keeps any NAT or proxy on the
    /// way open, so a busy connection is not pinged at all (with the
    /// defaults: pinged once silent for 20 s). Whenever `idle_timeout`
    /// exceeds one beat plus a round trip, a client that answers pings is
    /// never closed, as when every beat pinged.
    fn heartbeat(&mut self, beat: Duration, idle_timeout: Duration, ctx: &mut Context<Self>) {
        let silent = self.last_heard.elapsed();
        if silent >= idle_timeout {
            self.close(close::IDLE_TIMEOUT, "idle timeout", ctx);
        } else if silent + 2 * beat >= idle_timeout {
            self.control.ping();
        }
    }

    /// Starts the writer task: `hello` first, then the queue, in order,
    /// flushing the socket whenever the queue runs dry; pings and pongs
    /// when told.
    /// Told to close, it writes what is queued (for at most
    /// [`CLOSE_FLUSH_TIMEOUT`]) and then the close frame.
    fn start_writer(&mut self, hello: ServerFrame) {
        let (Some(mut rx), Some(mut writer)) = (self.outbound_rx.take(), self.writer.take()) else { return };
        let (close_tx, mut close_rx) = oneshot::channel::<WriterClose>();
        self.writer_close = Some(close_tx);
        let control = self.control.clone();
        let hello = serde_json::to_string(&hello).unwrap_or_default();
        actix::spawn(async move {
            if !(writer.text(&hello).await && writer.flush().await) {
                return;
            }
            let WriterClose { code, reason, flush } = loop {
                // The close signal first: it is sent before the queue's
                // senders go away, so a closed queue never hides it.
                tokio::select! {
                    biased;
                    // The actor is gone without a word: the client left.
                    close = &mut close_rx => break close.unwrap_or(WriterClose { code: close::NORMAL, reason: "", flush: false }),
                    () = control.wake.notified() => if !control.write(&mut writer).await {
                        return;
                    },
                    frame = rx.recv() => {
                        let Some(frame) = frame else { return };
                        if !write_batch(&mut writer, &frame, &mut rx).await {
                            return;
                        }
                    }
                }
            };
            if flush {
                let drain = async {
                    while let Ok(frame) = rx.try_recv() {
                        if !write_batch(&mut writer, &frame, &mut rx).await {
                            return;
                        }
                    }
                };
                let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, drain).await;
            }
            writer.close(code, reason).await;
        });
    }
}

/// Writes `first` and up to [`MAX_FRAMES_PER_FLUSH`] more frames already
/// queued, then flushes: a burst costs one write, not one per frame.
async fn write_batch<W: SocketWriter>(writer: &mut W, first: &str, rx: &mut mpsc::Receiver<Arc<str>>) -> bool {
    if !writer.text(first).await {
        return false;
    }
    for _ in 1..MAX_FRAMES_PER_FLUSH {
        let Ok(frame) = rx.try_recv() else { break };
        if !writer.text(&frame).await {
            return false;
        }
    }
    writer.flush().await
}

impl<W: SocketWriter> Actor for Connection<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let metrics = self.state.engine.metrics();
        metrics.connections.inc();
        metrics.actors.with_label_values(&["connection"]).inc();
        self.state.connections.insert(self.id, ctx.address().recipient());
        tracing::info!(conn_id = self.id, user_id = %self.user_id, "connection opened");
        // The shutdown flag is set before connections are kicked: either the
        // kick saw this connection, or this connection sees the flag.
        if self.state.is_shutting_down() {
            self.close(close::GOING_AWAY, "server shutting down", ctx);
            return;
        }

        let handle = ConnectionHandle {
            id: self.id,
            session: self.session_id,
            outbound: self.outbound.clone(),
            kick: ctx.address().recipient(),
        };
        let engine = self.engine();
        let user_id = self.user_id;
        ctx.wait(async move { engine.attach(user_id, handle).await }.into_actor(self).map(|result, conn, ctx| {
            match result {
                Ok(seq) => {
                    let ws = &conn.state.config.websocket;
                    conn.start_writer(ServerFrame::Hello {
                        protocol: protocol::PROTOCOL_VERSION,
                        user_id: conn.user_id,
                        session_id: conn.id.to_string(),
                        seq,
                        limits: Limits {
                            max_frame_bytes: MAX_FRAME_BYTES,
                            max_body_bytes: MAX_BODY_BYTES,
                            max_client_msg_id_bytes: MAX_CLIENT_MSG_ID_BYTES,
                            idle_timeout_secs: ws.idle_timeout_secs,
                        },
                    });
                }
                Err(engine::EngineError::Moved) => {
                    tracing::debug!(user_id = %conn.user_id, "user's shard lives on another node");
                    conn.close(close::MOVED, "connect to the node that serves you (see ws-ticket)", ctx);
                }
                Err(error) => {
                    tracing::error!(%error, "attaching a connection failed");
                    conn.close(close::GOING_AWAY, "server unavailable", ctx);
                }
            }
        }));

        let ws = &self.state.config.websocket;
        let (beat, idle_timeout) =
            (Duration::from_secs(ws.heartbeat_secs.max(1)), Duration::from_secs(ws.idle_timeout_secs));
        // The first beat at a random point of the interval: connections
        // opened together (all clients reconnecting after a restart) would
        // otherwise be pinged together, every interval, for good.
        ctx.run_later(beat.mul_f64(rand::random::<f64>()), move |conn, ctx| {
            conn.heartbeat(beat, idle_timeout, ctx);
            ctx.run_interval(beat, move |conn, ctx| conn.heartbeat(beat, idle_timeout, ctx));
        });
        ctx.run_later(self.token_expires_in, |conn, ctx| conn.close(close::TOKEN_EXPIRED, "access token expired", ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let metrics = self.state.engine.metrics();
        metrics.connections.dec();
        metrics.actors.with_label_values(&["connection"]).dec();
        self.state.connections.remove(self.id);
        self.state.engine.detach(self.user_id, self.id);
        tracing::info!(conn_id = self.id, user_id = %self.user_id, "connection closed");
    }
}

impl<W: SocketWriter> StreamHandler<Inbound> for Connection<W> {
    fn handle(&mut self, item: Inbound, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Inbound::Text(text) => self.handle_text(&text, ctx),
            Inbound::Binary => {
                self.reject(ErrorCode::BinaryNotSupported, "protocol v1 uses JSON text frames".into(), ctx)
            }
            Inbound::Ping(payload) => self.control.pong(payload),
            Inbound::Pong => {}
            Inbound::Close => self.close(close::NORMAL, "bye", ctx),
            Inbound::TooLarge => {
                self.reject(ErrorCode::FrameTooLarge, format!("frames are limited to {MAX_FRAME_BYTES} bytes"), ctx);
                self.close(close::TOO_BIG, "frame too large", ctx);
            }
            Inbound::InvalidUtf8 => {
                self.reject(ErrorCode::InvalidUtf8, "text frames must be valid UTF-8".into(), ctx);
                self.close(close::INVALID_PAYLOAD, "invalid UTF-8", ctx);
            }
            Inbound::Failed(error) => {
                tracing::debug!(conn_id = self.id, %error, "websocket protocol error");
                self.close(close::PROTOCOL_ERROR, "protocol error", ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl<W: SocketWriter> Handler<Kick> for Connection<W> {
    type Result = ();
    fn handle(&mut self, kick: Kick, ctx: &mut Self::Context) {
        self.close(kick.code, kick.reason, ctx);
    }
}

/// Tells a frame of an unknown `type` from a malformed one.
fn classify_bad_frame(text: &[u8], error: &serde_json::Error) -> (ErrorCode, String) {
    let kind = serde_json::from_slice::<serde_json::Value>(text)
        .ok()
        .and_then(|value| value.get("type").and_then(|t| t.as_str()).map(str::to_owned));
    match kind {
        Some(kind) if !CLIENT_FRAME_TYPES.contains(&kind.as_str()) => {
            (ErrorCode::UnknownType, format!("unknown frame type {kind:?}"))
        }
        _ => (ErrorCode::BadFrame, format!("malformed frame: {error}")),
    }
}
