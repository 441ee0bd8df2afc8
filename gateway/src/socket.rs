//! The node's listener: every accepted TCP connection is looked at before
//! anyone reads from it. A fresh connection whose request is the chat
//! socket's upgrade (`GET /api/v1/ws` with `Upgrade: websocket`) is served
//! by a lean WebSocket stack (tokio-tungstenite with small buffers) beside
//! actix-web; everything else goes to actix-web's HTTP service.
//!
//! Why: actix-http's dispatcher keeps 8 KiB read and write buffers per
//! connection for the connection's whole life, which dominated what an
//! idle chat connection cost. See ARCHITECTURE.md, "The chat socket".

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_service::{Service, ServiceFactory, fn_factory, fn_service};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::{App, Error};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use protocol::WS_SUBPROTOCOL;
use protocol::limits::MAX_FRAME_BYTES;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::errors::ApiError;
use crate::state::{AppState, AuthUser};
use crate::ws::{Connection, Inbound, SocketWriter, authorize};

/// The chat socket's path.
const CHAT_SOCKET_PATH: &str = "/api/v1/ws";

/// Bytes the socket reads at a time. A frame larger than this is read in
/// several steps; the buffer lives as long as the connection, so it is kept
/// small.
const READ_BUFFER_BYTES: usize = 1024;

/// Bytes of frames the socket collects before writing them out on its own
/// (the writer task also flushes whenever its queue runs dry).
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
                        Some(user) => Box::pin(serve_chat_socket(stream, state.into_inner(), user)).await,
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

/// The user, if the connection's first request is an authorized chat
/// socket upgrade; judged from the request head without consuming it.
async fn authorized_upgrade(stream: &TcpStream, state: &AppState) -> Option<AuthUser> {
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
                Ok(httparse::Status::Complete(_)) => {
                    if !is_upgrade_request(&request) {
                        return None;
                    }
                    return authorize_head(&request, state).await.ok();
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

/// A well-formed WebSocket upgrade (RFC 6455 §4.2.1) of the chat socket's path.
fn is_upgrade_request(request: &httparse::Request<'_, '_>) -> bool {
    let has = |name: &str, token: &str| {
        header_values(request, name).flat_map(|value| value.split(',')).any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    request.method == Some("GET")
        && request.path.is_some_and(is_chat_socket_path)
        && has("upgrade", "websocket")
        && has("connection", "upgrade")
        && has("sec-websocket-version", "13")
        && header_values(request, "sec-websocket-key").next().is_some()
}

/// The handshake's answer names the subprotocol (already checked by
/// [`authorize_head`]).
#[allow(clippy::result_large_err, reason = "the signature is tungstenite's `Callback`")]
fn name_subprotocol(_: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(WS_SUBPROTOCOL));
    Ok(response)
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

/// Serves one authorized chat socket: the handshake, then the connection
/// actor; returns when the socket is closed.
async fn serve_chat_socket(stream: TcpStream, state: Arc<AppState>, user: AuthUser) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .max_message_size(Some(MAX_FRAME_BYTES));
    // Boxed so that its state is freed once done (see `dispatcher`).
    let handshake = Box::pin(tokio_tungstenite::accept_hdr_async_with_config(stream, name_subprotocol, Some(config)));
    let socket = match tokio::time::timeout(HEAD_TIMEOUT, handshake).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => {
            tracing::debug!(%error, "chat socket handshake failed");
            return;
        }
        Err(_) => return,
    };
    let (sink, stream) = socket.split();
    let (done, closed) = oneshot::channel();
    Connection::start(user, state, TungsteniteWriter { sink, _done: done }, stream.map(Inbound::from));
    // Resolves when the writer (and with it the socket) is dropped.
    let _ = closed.await;
}

impl From<Result<Message, WsError>> for Inbound {
    fn from(item: Result<Message, WsError>) -> Self {
        match item {
            Ok(Message::Text(text)) => Inbound::Text(Bytes::from(text)),
            Ok(Message::Binary(_)) => Inbound::Binary,
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Inbound::Control,
            Ok(Message::Close(_)) => Inbound::Close,
            Err(WsError::Capacity(_)) => Inbound::TooLarge,
            Err(WsError::Utf8(_)) => Inbound::InvalidUtf8,
            Err(error) => Inbound::Failed(error.to_string()),
        }
    }
}

/// The writing half of a lean chat socket.
struct TungsteniteWriter {
    sink: futures_util::stream::SplitSink<WebSocketStream<TcpStream>, Message>,
    /// Dropped with the writer: tells [`serve_chat_socket`] the socket is done.
    _done: oneshot::Sender<()>,
}

impl SocketWriter for TungsteniteWriter {
    async fn text(&mut self, frame: &str) -> bool {
        self.sink.feed(Message::text(frame)).await.is_ok()
    }

    async fn flush(&mut self) -> bool {
        self.sink.flush().await.is_ok()
    }

    async fn ping(&mut self) -> bool {
        self.sink.send(Message::Ping(Bytes::new())).await.is_ok()
    }

    async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        let _ = self.sink.send(Message::Close(Some(frame))).await;
        let _ = self.sink.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &[u8]) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        request.parse(head).is_ok_and(|status| status.is_complete()) && is_upgrade_request(&request)
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
    }
}
