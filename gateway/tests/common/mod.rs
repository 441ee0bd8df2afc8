//! Test harness: a real Parley server on 127.0.0.1:0 and real HTTP and
//! WebSocket clients, so each test reads as a few lines of behaviour.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use awc::ws::{self, Frame};
use engine::testing::without_inherited_fds;
use futures_util::{SinkExt, StreamExt};
use gateway::Server;
use gateway::config::Config;
use protocol::rest::{ChatSummary, LoginRequest, OpenDirectChat, RegisterRequest, TokenResponse};
use protocol::ws::{ClientFrame, Message, ServerFrame, Update};
use protocol::{ChatId, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tempfile::TempDir;

/// How long a test waits for any single frame or response. Above the
/// Kafka producer's delivery timeout (10 s): in a cluster test an ack may
/// wait that long for a broker that is down.
pub const WAIT: Duration = Duration::from_secs(20);

/// Config for tests: cheap Argon2, generous auth limits, a temp data dir.
pub fn test_config(dir: &TempDir) -> Config {
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.auth.argon2_memory_kib = 1024;
    config.auth.argon2_iterations = 1;
    config.limits.auth_per_minute_per_ip = 10_000;
    config.limits.auth_burst_per_ip = 10_000;
    config.engine.sends_per_second = 10_000;
    config.engine.send_burst = 10_000;
    config.limits.searches_per_second = 10_000;
    config.limits.search_burst = 10_000;
    config.limits.uploads_per_minute = 10_000;
    config.limits.upload_burst = 10_000;
    config
}

/// A running in-process server with its own data directory. Derefs to
/// [`Api`], so `server.register(..)` talks to it.
pub struct TestServer {
    pub server: Server,
    pub dir: TempDir,
    api: Api,
}

impl std::ops::Deref for TestServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A client of one Parley node's HTTP and WebSocket API.
pub struct Api {
    pub base: String,
    http: awc::Client,
}

/// A registered, logged-in user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub username: String,
    pub password: String,
    pub id: UserId,
    pub tokens: TokenResponse,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` adjusts the test config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir);
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: TempDir, config: Config) -> TestServer {
        let listener = gateway::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = Server::start(config, listener).await.unwrap().spawn();
        let api = Api::new(format!("http://{}", server.addr()));
        TestServer { server, dir, api }
    }
}

impl Api {
    /// A client of the node at `base` (`http://host:port`).
    pub fn new(base: String) -> Api {
        Api { base, http: awc::Client::builder().timeout(WAIT).finish() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON; returns status and body as JSON (null if empty).
    pub async fn post(&self, path: &str, token: Option<&str>, body: &impl Serialize) -> (u16, serde_json::Value) {
        let mut req = self.http.post(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let mut resp = req.send_json(body).await.unwrap();
        let bytes = resp.body().await.unwrap();
        (resp.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// POSTs raw bytes with a content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: &'static [u8]) -> (u16, serde_json::Value) {
        let mut resp =
            self.http.post(self.url(path)).insert_header(("content-type", content_type)).send_body(body).await.unwrap();
        let bytes = resp.body().await.unwrap();
        (resp.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// GETs; returns status, content type and body bytes.
    pub async fn get_raw(&self, path: &str, token: Option<&str>) -> (u16, String, Bytes) {
        let mut req = self.http.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let mut resp = req.send().await.unwrap();
        let content_type =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let bytes = resp.body().limit(16 * 1024 * 1024).await.unwrap();
        (resp.status().as_u16(), content_type, bytes)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let (status, _, bytes) = self.get_raw(path, token).await;
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// GETs and decodes a successful JSON response.
    pub async fn get_ok<T: DeserializeOwned>(&self, path: &str, token: &str) -> T {
        let (status, body) = self.get(path, Some(token)).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_value(body).unwrap()
    }

    /// Registers `username` (password `password-<username>`) and logs in.
    pub async fn register(&self, username: &str) -> TestUser {
        let password = format!("password-{username}");
        let body =
            RegisterRequest { username: username.into(), password: password.clone(), display_name: username.into() };
        let (status, body) = self.post("/api/v1/auth/register", None, &body).await;
        assert_eq!(status, 201, "register {username}: {body}");
        let tokens = self.login(username, &password).await;
        TestUser { username: username.into(), password, id: tokens.user_id, tokens }
    }

    pub async fn login(&self, username: &str, password: &str) -> TokenResponse {
        let body = LoginRequest { username: username.into(), password: password.into() };
        let (status, body) = self.post("/api/v1/auth/login", None, &body).await;
        assert_eq!(status, 200, "login {username}: {body}");
        serde_json::from_value(body).unwrap()
    }

    /// Registers `alice` and `bob` and opens their 1:1 chat.
    pub async fn alice_and_bob(&self) -> (TestUser, TestUser, ChatId) {
        let alice = self.register("alice").await;
        let bob = self.register("bob").await;
        let chat = self.direct_chat(&alice, &bob).await;
        (alice, bob, chat)
    }

    /// Makes `user` and `peer` friends (request, then accept); a no-op for friends.
    pub async fn befriend(&self, user: &TestUser, peer: &TestUser) {
        let request = protocol::rest::FriendRequest { user_id: peer.id };
        let (status, body) = self.post("/api/v1/friends/requests", Some(&user.tokens.access_token), &request).await;
        let pending = body["relation"] == "request_sent" || body["code"] == "already_requested";
        assert!(status == 200 || pending || body["code"] == "already_friends", "friend request: {status} {body}");
        if pending {
            let path = format!("/api/v1/friends/requests/{}/accept", user.id);
            let (status, body) = self.post(&path, Some(&peer.tokens.access_token), &()).await;
            assert_eq!(status, 200, "accept: {body}");
        }
    }

    /// Opens the 1:1 chat of `user` with `peer`, befriending them first.
    pub async fn direct_chat(&self, user: &TestUser, peer: &TestUser) -> ChatId {
        self.befriend(user, peer).await;
        let (status, body) = self
            .post("/api/v1/chats/direct", Some(&user.tokens.access_token), &OpenDirectChat { user_id: peer.id })
            .await;
        assert_eq!(status, 200, "open chat: {body}");
        serde_json::from_value::<ChatSummary>(body).unwrap().id
    }

    /// Connects a WebSocket as `user` with a bearer token and reads `hello`.
    pub async fn connect(&self, user: &TestUser) -> WsClient {
        WsClient::connect(&self.ws_url(""), Some(&user.tokens.access_token)).await.unwrap()
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("{}/api/v1/ws{query}", self.base.replacen("http", "ws", 1))
    }
}

/// A response with its headers, for checks beyond status and body.
pub struct RawResponse {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }

    /// The body as JSON (null if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Asserts an RFC 9457 problem with `status` and `code`; returns the body.
    pub fn assert_problem(&self, status: u16, code: &str) -> serde_json::Value {
        let body = self.json();
        assert_eq!(self.status, status, "status; body: {body}");
        assert_eq!(self.content_type(), "application/problem+json", "content type; body: {body}");
        assert_eq!(body["code"], code, "code; body: {body}");
        assert_eq!(body["status"], status, "status field; body: {body}");
        assert_eq!(body["type"], format!("https://parley.chat/problems/{code}"), "type; body: {body}");
        assert!(body["title"].is_string(), "title; body: {body}");
        body
    }
}

impl TestServer {
    /// The HTTP client the harness uses.
    pub fn http(&self) -> &awc::Client {
        &self.http
    }

    /// Sends any request with extra headers and a raw body; returns status, headers and body.
    pub async fn request(
        &self,
        method: awc::http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> RawResponse {
        let mut req = self.http.request(method, self.url(path));
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        let mut resp = req.send_body(body.into()).await.unwrap();
        let body = resp.body().limit(16 * 1024 * 1024).await.unwrap();
        RawResponse { status: resp.status().as_u16(), headers: resp.headers().clone(), body }
    }

    /// Sends `method path` with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> RawResponse {
        let auth = token.map(|token| format!("Bearer {token}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let body = body.map(|body| serde_json::to_vec(&body).unwrap()).unwrap_or_default();
        self.request(method.parse().unwrap(), path, &headers, body).await
    }

    /// GETs with an optional bearer token; returns status, headers and body.
    pub async fn get_full(&self, path: &str, token: Option<&str>) -> RawResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.request(awc::http::Method::GET, path, &headers, Bytes::new()).await
    }

    /// The status of a GET, or `None` if no response came (the server is gone).
    pub async fn try_status(&self, path: &str) -> Option<u16> {
        let client = awc::Client::builder().timeout(Duration::from_secs(2)).finish();
        let resp = client.get(self.url(path)).send().await.ok()?;
        Some(resp.status().as_u16())
    }

    /// A WebSocket handshake sent as a plain request, so the refusal's body can be read.
    pub async fn ws_handshake(&self, query: &str, headers: &[(&str, &str)]) -> RawResponse {
        let mut all = vec![
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        all.extend_from_slice(headers);
        self.request(awc::http::Method::GET, &format!("/api/v1/ws{query}"), &all, Bytes::new()).await
    }

    /// The value of one metric line (`name` including labels) in `GET /metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (status, _, body) = self.get_raw("/metrics", None).await;
        assert_eq!(status, 200);
        metric_value(std::str::from_utf8(&body).unwrap(), name)
    }
}

/// The value of the sample `name` (with its labels, if any) in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The result of a full sync.
pub struct Synced {
    /// Every replayed update with its seq, in order.
    pub updates: Vec<(u64, Update)>,
    /// The seq the replay is complete up to.
    pub seq: u64,
}

impl Synced {
    /// The seqs of every replayed update.
    pub fn seqs(&self) -> Vec<u64> {
        self.updates.iter().map(|(seq, _)| *seq).collect()
    }

    /// The replayed message updates.
    pub fn messages(&self) -> Vec<(u64, Message)> {
        self.updates
            .iter()
            .filter_map(|(seq, update)| match update {
                Update::Message { message } => Some((*seq, message.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Why a WebSocket handshake failed.
#[derive(Debug)]
pub struct HandshakeRefused {
    pub status: u16,
}

/// A WebSocket client speaking `parley.v1`.
/// Why [`WsClient::open`] gave no client.
#[derive(Debug)]
pub enum Refused {
    /// The upgrade was refused with this HTTP status.
    Handshake(HandshakeRefused),
    /// The socket opened and closed before `hello`, with this code.
    Closed(Option<u16>),
}

pub struct WsClient {
    framed: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
    pub hello: ServerFrame,
    /// Frames read while waiting for something else, in arrival order.
    backlog: std::collections::VecDeque<ServerFrame>,
}

impl WsClient {
    pub async fn connect(url: &str, token: Option<&str>) -> Result<WsClient, HandshakeRefused> {
        match Self::open(url, token).await {
            Ok(client) => Ok(client),
            Err(Refused::Handshake(refused)) => Err(refused),
            Err(Refused::Closed(code)) => panic!("closed before hello with {code:?}"),
        }
    }

    /// Like [`WsClient::connect`], but a server that accepts the socket and
    /// closes it before `hello` is an answer too (its close code).
    pub async fn open(url: &str, token: Option<&str>) -> Result<WsClient, Refused> {
        let client = awc::Client::builder().timeout(WAIT).finish();
        let mut req = client.ws(url).protocols(["parley.v1"]).max_frame_size(1 << 20);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        match req.connect().await {
            Ok((_resp, framed)) => {
                let mut client = WsClient { framed, hello: ServerFrame::Pong {}, backlog: Default::default() };
                loop {
                    match tokio::time::timeout(WAIT, client.framed.next()).await.expect("no frame after the handshake")
                    {
                        Some(Ok(Frame::Text(bytes))) => {
                            client.hello = serde_json::from_slice(&bytes).expect("server frame is valid JSON");
                            break;
                        }
                        Some(Ok(Frame::Close(reason))) => {
                            return Err(Refused::Closed(reason.map(|r| u16::from(r.code))));
                        }
                        Some(Ok(_)) => {}
                        other => panic!("socket failed before hello: {other:?}"),
                    }
                }
                assert!(matches!(client.hello, ServerFrame::Hello { .. }), "first frame: {:?}", client.hello);
                Ok(client)
            }
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
                Err(Refused::Handshake(HandshakeRefused { status: status.as_u16() }))
            }
            Err(error) => panic!("websocket connect failed: {error}"),
        }
    }

    /// The `seq` announced in `hello`.
    pub fn hello_seq(&self) -> u64 {
        match &self.hello {
            ServerFrame::Hello { seq, .. } => *seq,
            _ => 0,
        }
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_text(&serde_json::to_string(frame).unwrap()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.framed.send(ws::Message::Text(text.into())).await.unwrap();
    }

    pub async fn send_ws(&mut self, message: ws::Message) {
        self.framed.send(message).await.unwrap();
    }

    /// Reads the next protocol frame (answering pings); `None` once closed.
    async fn read(&mut self) -> Option<ServerFrame> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.framed.next()).await.expect("timed out waiting for a frame")?;
            match frame.ok()? {
                Frame::Text(bytes) => return Some(serde_json::from_slice(&bytes).expect("server frame is valid JSON")),
                Frame::Ping(bytes) => {
                    let _ = self.framed.send(ws::Message::Pong(bytes)).await;
                }
                Frame::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The next frame, from the backlog first.
    pub async fn next(&mut self) -> ServerFrame {
        self.try_next().await.expect("connection closed")
    }

    /// The next frame, from the backlog first; `None` once the server has
    /// closed the connection (or it broke).
    pub async fn try_next(&mut self) -> Option<ServerFrame> {
        match self.backlog.pop_front() {
            Some(frame) => Some(frame),
            None => self.read().await,
        }
    }

    /// Waits for the first frame matching `pick`, keeping the others in the backlog.
    pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(&ServerFrame) -> Option<T>) -> T {
        if let Some(index) = self.backlog.iter().position(|f| pick(f).is_some()) {
            let frame = self.backlog.remove(index).unwrap();
            return pick(&frame).unwrap();
        }
        loop {
            let frame = self.read().await.expect("connection closed while waiting");
            if let Some(found) = pick(&frame) {
                return found;
            }
            self.backlog.push_back(frame);
        }
    }

    /// Sends a message and waits for its ack; returns the ack's message and `duplicate`.
    pub async fn send_message(&mut self, chat_id: ChatId, client_msg_id: &str, body: &str) -> (Message, bool) {
        self.send(&ClientFrame::Send { client_msg_id: client_msg_id.into(), chat_id, body: body.into() }).await;
        let wanted = client_msg_id.to_string();
        self.wait_for(|frame| match frame {
            ServerFrame::Ack { client_msg_id, message, duplicate } if *client_msg_id == wanted => {
                Some((message.clone(), *duplicate))
            }
            ServerFrame::Error(error) if error.client_msg_id.as_deref() == Some(wanted.as_str()) => {
                panic!("send {wanted} failed: {error:?}")
            }
            _ => None,
        })
        .await
    }

    /// Waits for the next message update; returns its seq and message.
    pub async fn next_message(&mut self) -> (u64, Message) {
        self.wait_for(|frame| match frame {
            ServerFrame::Update { seq, update: Update::Message { message } } => Some((*seq, message.clone())),
            _ => None,
        })
        .await
    }

    /// Waits for the next `error` frame.
    pub async fn next_error(&mut self) -> protocol::ws::ErrorFrame {
        self.wait_for(|frame| match frame {
            ServerFrame::Error(error) => Some(error.clone()),
            _ => None,
        })
        .await
    }

    /// Syncs everything after `after_seq`: every update in order and the final seq.
    pub async fn sync_all(&mut self, after_seq: u64) -> Synced {
        self.try_sync_all(after_seq).await.expect("closed during sync")
    }

    /// [`Self::sync_all`], or `None` if the socket closed before it was done.
    pub async fn try_sync_all(&mut self, mut after_seq: u64) -> Option<Synced> {
        let mut updates = Vec::new();
        loop {
            self.send(&ClientFrame::Sync { after_seq }).await;
            loop {
                match self.read().await? {
                    ServerFrame::Update { seq, update } => updates.push((seq, update)),
                    ServerFrame::Synced { seq, has_more } => {
                        after_seq = seq;
                        if !has_more {
                            return Some(Synced { updates, seq });
                        }
                        break;
                    }
                    other => self.backlog.push_back(other),
                }
            }
        }
    }

    /// Sends an application `ping` and waits for its `pong`: the connection still works.
    pub async fn ping_pong(&mut self) {
        self.send(&ClientFrame::Ping {}).await;
        self.wait_for(|frame| matches!(frame, ServerFrame::Pong {}).then_some(())).await;
    }

    /// Like [`WsClient::ping_pong`], but a server that closes the
    /// connection first is an answer too: its close code.
    pub async fn ping_pong_or_close(&mut self) -> Result<(), Option<u16>> {
        self.send(&ClientFrame::Ping {}).await;
        loop {
            let frame = tokio::time::timeout(WAIT, self.framed.next()).await.expect("timed out waiting for pong");
            match frame {
                Some(Ok(Frame::Text(bytes))) => {
                    match serde_json::from_slice(&bytes).expect("server frame is valid JSON") {
                        ServerFrame::Pong {} => return Ok(()),
                        other => self.backlog.push_back(other),
                    }
                }
                Some(Ok(Frame::Ping(bytes))) => {
                    let _ = self.framed.send(ws::Message::Pong(bytes)).await;
                }
                Some(Ok(Frame::Close(reason))) => return Err(reason.map(|r| u16::from(r.code))),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// The frames read but not yet picked by a `wait_for`, oldest first.
    pub fn take_backlog(&mut self) -> Vec<ServerFrame> {
        self.backlog.drain(..).collect()
    }

    /// Reads every frame until the server closes the connection; returns
    /// the protocol frames read (backlog first) and the close code.
    pub async fn frames_until_close(&mut self) -> (Vec<ServerFrame>, Option<u16>) {
        let mut frames: Vec<ServerFrame> = self.backlog.drain(..).collect();
        loop {
            let frame = tokio::time::timeout(WAIT, self.framed.next()).await.expect("timed out waiting for close");
            match frame {
                Some(Ok(Frame::Text(bytes))) => {
                    frames.push(serde_json::from_slice(&bytes).expect("server frame is valid JSON"))
                }
                Some(Ok(Frame::Close(reason))) => return (frames, reason.map(|r| u16::from(r.code))),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (frames, None),
            }
        }
    }

    /// Frames received so far but not yet consumed.
    pub fn backlog(&self) -> &std::collections::VecDeque<ServerFrame> {
        &self.backlog
    }

    /// Waits until the server closes the connection; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.framed.next()).await.expect("timed out waiting for close");
            match frame {
                Some(Ok(Frame::Close(reason))) => return reason.map(|r| u16::from(r.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.framed.send(ws::Message::Close(None)).await;
    }
}

/// A `parley` process, killed if the test ends without stopping it.
pub struct Node(pub Child);

impl Drop for Node {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Node {
    /// `kill -9`, and reap.
    pub fn kill_9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

/// Starts `parley serve` on a free loopback port with its data in `dir`,
/// configured through environment variables, and waits until it is ready.
/// Its log goes to `dir/parley.log`.
pub async fn spawn_node(dir: &Path) -> (Node, Api) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("parley.log")).unwrap();
    spawn_node_logging_to(dir, Stdio::from(log)).await
}

/// [`spawn_node`] with its log (stderr) going to `log`.
pub async fn spawn_node_logging_to(dir: &Path, log: Stdio) -> (Node, Api) {
    spawn_node_with(dir, log, &[]).await
}

/// [`spawn_node_logging_to`] with these environment variables set too.
pub async fn spawn_node_with(dir: &Path, log: Stdio, env: &[(&str, &str)]) -> (Node, Api) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let node = Node(
        without_inherited_fds(&mut Command::new(env!("CARGO_BIN_EXE_parley")))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .env("PARLEY_LISTEN", format!("127.0.0.1:{port}"))
            .env("PARLEY_LOG_FORMAT", "json")
            .env("PARLEY_AUTH__ARGON2_MEMORY_KIB", "1024")
            .env("PARLEY_AUTH__ARGON2_ITERATIONS", "1")
            .env("PARLEY_ENGINE__SEND_BURST", "10000")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = awc::Client::new().get(api.url("/readyz")).send().await.map(|r| r.status().as_u16() == 200);
        if ready.unwrap_or(false) {
            return (node, api);
        }
        assert!(Instant::now() < deadline, "parley did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
