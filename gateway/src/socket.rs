//! The node's listener: every accepted TCP connection is looked at before
//! anyone reads from it. A fresh connection whose request is the chat
//! socket's upgrade (`GET /api/v1/ws` with `Upgrade: websocket`) is served
//! by a lean WebSocket stack beside actix-web: the listener answers the
//! handshake, tokio-tungstenite reads frames with a small buffer, and the
//! connection's writer task writes its frames with a buffer that lives for
//! one batch. Everything else goes to actix-web's HTTP service.
//!
//! Why: actix-http's dispatcher keeps 8 KiB read and write buffers per
//! connection for the connection's whole life, which dominated what an
//! idle chat connection cost. See ARCHITECTURE.md, "The chat socket".

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_service::{Service, ServiceFactory, fn_factory, fn_service};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::{App, Error};
use bytes::Bytes;
use futures_util::StreamExt as _;
use protocol::WS_SUBPROTOCOL;
use protocol::limits::MAX_FRAME_BYTES;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::errors::ApiError;
use crate::state::{AppState, AuthUser};
use crate::ws::{Connection, Inbound, SocketWriter, authorize};

/// The chat socket's path.
const CHAT_SOCKET_PATH: &str = "/api/v1/ws";

/// Bytes the socket reads at a time. The buffer lives as long as the
/// connection, so it is kept small: most client frames (a `send` of a short
/// message is about 200 bytes) fit, a larger one is read in several steps.
const READ_BUFFER_BYTES: usize = 512;

/// Bytes of frames a batch collects before they are written out on their
/// own (the writer task also flushes whenever its queue runs dry).
const WRITE_BUFFER_BYTES: usize = 4096;

/// Most bytes of a request head looked at to route a connection; a longer
/// head goes to actix-web, which answers it.
const MAX_PEEKED_HEAD: usize = 8192;

/// How long a new connection may take to send its request head (and, on
/// the chat socket, to finish the handshake).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Most request headers looked at (more go to actix-web).
const MAX_HEADERS: usize = 32;

/// How long a refused request's remaining body may still be read, so that
/// the client sees the answer instead of a reset.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause between looks at a request head that has not fully arrived.
const PEEK_RETRY: Duration = Duration::from_millis(2);

/// How the HTTP service of [`dispatcher`] runs.
pub(crate) struct HttpSettings {
    /// How long an HTTP connection may sit idle between requests.
    pub keep_alive: Duration,
    pub local_addr: SocketAddr,
    /// Resolves when the server starts a graceful shutdown.
    pub shutdown: actix_server::GracefulShutdownSignal,
}

/// The per-worker service the listener runs each accepted connection
/// through: an authorized chat socket upgrade to [`serve_chat_socket`], the
/// rest (refused upgrades included, so they get the API's error responses)
/// to actix-web.
pub(crate) fn dispatcher<T, B>(
    app: App<T>,
    state: actix_web::web::Data<AppState>,
    http: HttpSettings,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = (), InitError = ()>
where
    T: ServiceFactory<ServiceRequest, Config = (), Response = ServiceResponse<B>, Error = Error, InitError = ()>
        + 'static,
    B: MessageBody + 'static,
{
    let HttpSettings { keep_alive, local_addr, shutdown } = http;
    // The settings actix-web's `HttpServer` would give its HTTP service.
    let http = actix_http::HttpService::build()
        .keep_alive(keep_alive)
        .client_request_timeout(HEAD_TIMEOUT)
        .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
        // Small writes (an actix-ws frame, an ack) must not wait for Nagle's
        // algorithm and the peer's delayed ACK: up to 40 ms each.
        .tcp_nodelay(true)
        .local_addr(local_addr)
        // Idle keep-alive connections close as soon as a graceful shutdown starts.
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
        .finish(actix_service::map_config(app, |()| AppConfig::default()))
        .tcp();
    fn_factory(move || {
        let http = http.new_service(());
        let state = state.clone();
        async move {
            let http = Rc::new(http.await?);
            Ok(fn_service(move |stream: TcpStream| {
                let (http, state) = (http.clone(), state.clone());
                // Each step is boxed: the future of a connection lives as
                // long as the connection, and unboxed it would be as large
                // as its largest step (the peek's headers, actix's dispatcher).
                async move {
                    match Box::pin(authorized_upgrade(&stream, &state)).await {
                        Some(upgrade) => {
                            // Only the wait for the socket's end stays on
                            // this worker: the handshake's state is freed.
                            let served = Box::pin(serve_chat_socket(stream, state.into_inner(), upgrade)).await;
                            if let Some(closed) = served {
                                // Resolves when the writer (and with it the
                                // socket's writing half) is dropped.
                                let _ = closed.await;
                            }
                        }
                        None => {
                            let _ = Box::pin(http.call(stream)).await;
                        }
                    }
                    Ok::<(), ()>(())
                }
            }))
        }
    })
}

/// An authorized chat socket upgrade, as read from its request head.
struct Upgrade {
    user: AuthUser,
    /// Bytes of the request head, read off the socket once it is answered.
    head_len: usize,
    /// The answer's `Sec-WebSocket-Accept`.
    accept_key: String,
}

/// The upgrade, if the connection's first request is an authorized chat
/// socket upgrade; judged from the request head without consuming it.
async fn authorized_upgrade(stream: &TcpStream, state: &AppState) -> Option<Upgrade> {
    let mut buf = vec![0; MAX_PEEKED_HEAD];
    let peek = async {
        loop {
            let n = stream.peek(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf[..n]) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let key = upgrade_key(&request)?;
                    let user = authorize_head(&request, state).await.ok()?;
                    return Some(Upgrade { user, head_len, accept_key: derive_accept_key(key.as_bytes()) });
                }
                // Not the chat socket's request line: no need to wait for the rest.
                Ok(httparse::Status::Partial) if request.path.is_some_and(|path| !is_chat_socket_path(path)) => {
                    return None;
                }
                Ok(httparse::Status::Partial) if n < buf.len() => tokio::time::sleep(PEEK_RETRY).await,
                // Too long or malformed: actix-web answers it.
                _ => return None,
            }
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, peek).await.ok().flatten()
}

fn is_chat_socket_path(path: &str) -> bool {
    path.split_once('?').map_or(path, |(path, _)| path) == CHAT_SOCKET_PATH
}

/// The values of a request header, as text.
fn header_values<'a>(request: &'a httparse::Request<'_, '_>, name: &'a str) -> impl Iterator<Item = &'a str> {
    request
        .headers
        .iter()
        .filter(move |header| header.name.eq_ignore_ascii_case(name))
        .filter_map(|header| std::str::from_utf8(header.value).ok())
}

/// The `Sec-WebSocket-Key` of a well-formed WebSocket upgrade (RFC 6455
/// §4.2.1) of the chat socket's path; `None` for any other request.
fn upgrade_key<'a>(request: &'a httparse::Request<'_, '_>) -> Option<&'a str> {
    let has = |name: &str, token: &str| {
        header_values(request, name).flat_map(|value| value.split(',')).any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    let upgrade = request.method == Some("GET")
        && request.version == Some(1)
        && request.path.is_some_and(is_chat_socket_path)
        && has("upgrade", "websocket")
        && has("connection", "upgrade")
        && has("sec-websocket-version", "13");
    upgrade.then(|| header_values(request, "sec-websocket-key").next()).flatten().map(str::trim)
}

/// [`authorize`] for a request head.
async fn authorize_head(request: &httparse::Request<'_, '_>, state: &AppState) -> Result<AuthUser, ApiError> {
    let ticket = request
        .path
        .and_then(|path| path.split_once('?'))
        .and_then(|(_, query)| serde_urlencoded::from_str::<crate::ws::WsQuery>(query).ok())
        .and_then(|query| query.ticket);
    let bearer = AuthUser::from_authorization(header_values(request, "authorization").next(), state);
    authorize(state, ticket.as_deref(), bearer, header_values(request, "sec-websocket-protocol")).await
}

/// Serves one authorized chat socket: the handshake's answer, then the
/// connection actor on its user's actor thread. Returns what resolves when
/// the socket is closed, so that the server's count of open connections
/// and its graceful shutdown still see it; `None` if the handshake failed.
///
/// tungstenite reads the socket's frames; the connection's writer task
/// writes its own (see [`FrameWriter`]), so the two halves share nothing.
async fn serve_chat_socket(
    mut stream: TcpStream,
    state: Arc<AppState>,
    upgrade: Upgrade,
) -> Option<oneshot::Receiver<()>> {
    let _ = stream.set_nodelay(true);
    let Upgrade { user, head_len, accept_key } = upgrade;
    // Boxed so that their state is freed once done (see `dispatcher`).
    let handshake = Box::pin(async {
        // The head was only peeked at: consume it, then answer it.
        let mut head = vec![0; head_len];
        stream.read_exact(&mut head).await?;
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept_key}\r\nSec-WebSocket-Protocol: {WS_SUBPROTOCOL}\r\n\r\n"
        );
        stream.write_all(answer.as_bytes()).await
    });
    match tokio::time::timeout(HEAD_TIMEOUT, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(%error, "chat socket handshake failed");
            return None;
        }
        Err(_) => return None,
    }
    // The socket moves to its user's actor thread (see `run_chat_socket`).
    let stream = stream.into_std().ok()?;
    let (done, closed) = oneshot::channel();
    let home = state.engine.home_thread(user.user_id).clone();
    home.spawn(run_chat_socket(stream, state, user, done)).then_some(closed)
}

/// Runs an upgraded chat socket's connection actor on the thread this is
/// spawned on: its user's actor thread. The connection's frames then reach
/// the user actor, and its updates the connection's writer task, without a
/// wake-up of another thread (a 1:1 message's delivery, each of a group
/// message's deliveries, the attach's call to the shard actor).
async fn run_chat_socket(stream: std::net::TcpStream, state: Arc<AppState>, user: AuthUser, done: oneshot::Sender<()>) {
    let stream = match TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "could not move a chat socket to its actor thread");
            return;
        }
    };
    let (read, write) = stream.into_split();
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .max_message_size(Some(MAX_FRAME_BYTES));
    let inbound = Box::pin(WebSocketStream::from_raw_socket(ReadHalf(read), Role::Server, Some(config))).await;
    let writer = FrameWriter { socket: write, batch: Vec::new(), _done: done };
    Connection::start(user, state, writer, inbound.map(Inbound::from));
}

impl From<Result<Message, WsError>> for Inbound {
    fn from(item: Result<Message, WsError>) -> Self {
        match item {
            Ok(Message::Text(text)) => Inbound::Text(Bytes::from(text)),
            Ok(Message::Binary(_)) => Inbound::Binary,
            Ok(Message::Ping(payload)) => Inbound::Ping(payload),
            Ok(Message::Pong(_) | Message::Frame(_)) => Inbound::Pong,
            Ok(Message::Close(_)) => Inbound::Close,
            Err(WsError::Capacity(_)) => Inbound::TooLarge,
            Err(WsError::Utf8(_)) => Inbound::InvalidUtf8,
            Err(error) => Inbound::Failed(error.to_string()),
        }
    }
}

/// The reading half of a chat socket, as the stream tungstenite reads.
/// What tungstenite writes of its own accord (its answers to pings and to
/// a close) is dropped: the connection answers those through its writer
/// task, the only one that writes to the socket.
struct ReadHalf(OwnedReadHalf);

impl AsyncRead for ReadHalf {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadHalf {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The writing half of a lean chat socket. Frames are encoded into a
/// buffer that lives for one batch, so an idle connection holds none (a
/// buffer kept between batches keeps the capacity of the largest).
struct FrameWriter {
    socket: OwnedWriteHalf,
    batch: Vec<u8>,
    /// Dropped with the writer: tells the listener's worker the socket is done.
    _done: oneshot::Sender<()>,
}

impl FrameWriter {
    fn push(&mut self, frame: Frame) {
        // Formatting into a `Vec` cannot fail.
        let _ = frame.format(&mut self.batch);
    }

    /// Writes the batch out and frees it.
    async fn write_out(&mut self) -> bool {
        let batch = std::mem::take(&mut self.batch);
        self.socket.write_all(&batch).await.is_ok()
    }
}

impl SocketWriter for FrameWriter {
    async fn text(&mut self, frame: &str) -> bool {
        let header = FrameHeader { opcode: OpCode::Data(Data::Text), ..FrameHeader::default() };
        let len = frame.len() as u64;
        self.batch.reserve(header.len(len) + frame.len());
        let _ = header.format(len, &mut self.batch);
        self.batch.extend_from_slice(frame.as_bytes());
        self.batch.len() < WRITE_BUFFER_BYTES || self.write_out().await
    }

    async fn flush(&mut self) -> bool {
        self.batch.is_empty() || self.write_out().await
    }

    async fn ping(&mut self) -> bool {
        self.push(Frame::ping(Bytes::new()));
        self.write_out().await
    }

    async fn pong(&mut self, payload: Bytes) -> bool {
        self.push(Frame::pong(payload));
        self.write_out().await
    }

    async fn close(mut self, code: u16, reason: &str) {
        self.push(Frame::close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })));
        if self.write_out().await {
            let _ = self.socket.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &[u8]) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        request.parse(head).is_ok_and(|status| status.is_complete()) && upgrade_key(&request).is_some()
    }

    const UPGRADE: &str = "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn only_the_chat_sockets_upgrade_takes_the_lean_path() {
        let head = |line: &str, headers: &str| format!("{line} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes();
        assert!(parse(&head("GET /api/v1/ws", UPGRADE)));
        assert!(parse(&head("GET /api/v1/ws?ticket=abc", &UPGRADE.to_lowercase())));
        assert!(!parse(&head("GET /api/v1/ws", "")), "no upgrade: actix-web answers");
        assert!(!parse(&head("GET /api/v1/ws", &UPGRADE.replace("Version: 13", "Version: 8"))));
        assert!(!parse(&head("GET /api/v1/ws", &UPGRADE.replace("Sec-WebSocket-Key", "X-Key"))));
        assert!(!parse(&head("POST /api/v1/ws", UPGRADE)));
        assert!(!parse(&head("GET /api/v1/wsx", UPGRADE)));
        assert!(!parse(&head("GET /api/v1/chats", UPGRADE)));
        let http_1_0 = format!("GET /api/v1/ws HTTP/1.0\r\nHost: x\r\n{UPGRADE}\r\n");
        assert!(!parse(http_1_0.as_bytes()), "WebSocket needs HTTP/1.1");
    }
}
