//! Connection lifecycle: hello, heartbeats, idle timeout, keep-alive.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use protocol::ws::{ClientFrame, ServerFrame, Update, close};

#[actix_web::test]
async fn hello_announces_the_user_protocol_and_limits() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let a = server.connect(&alice).await;
    match &a.hello {
        ServerFrame::Hello { protocol, user_id, seq, limits, .. } => {
            assert_eq!(*protocol, 1);
            assert_eq!(*user_id, alice.id);
            assert_eq!(*seq, 0);
            assert_eq!(limits.max_body_bytes, protocol::limits::MAX_BODY_BYTES);
            assert_eq!(limits.max_frame_bytes, protocol::limits::MAX_FRAME_BYTES);
            assert_eq!(limits.idle_timeout_secs, 60);
        }
        other => panic!("expected hello, got {other:?}"),
    }
}

/// A server whose connections beat every `beat_secs` and are closed once
/// silent for `idle_secs`.
async fn heartbeat_server(beat_secs: u64, idle_secs: u64) -> TestServer {
    TestServer::start_with(|c| {
        c.websocket.heartbeat_secs = beat_secs;
        c.websocket.idle_timeout_secs = idle_secs;
    })
    .await
}

#[actix_web::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let server = heartbeat_server(1, 2).await;
    let alice = server.register("alice").await;
    let mut a = server.connect(&alice).await;
    // Read nothing and answer no pings.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(a.closed().await, Some(close::IDLE_TIMEOUT));
}

#[actix_web::test]
async fn a_client_that_keeps_talking_stays_connected() {
    let server = heartbeat_server(1, 2).await;
    let alice = server.register("alice").await;
    let mut a = server.connect(&alice).await;
    for _ in 0..8 {
        a.send(&ClientFrame::Ping {}).await;
        a.wait_for(|f| matches!(f, ServerFrame::Pong {}).then_some(())).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Four seconds in, twice the idle timeout: still served.
    let bob = server.register("bob").await;
    let chat = server.direct_chat(&alice, &bob).await;
    a.send_message(chat, "still-here", "still connected").await;
}

#[actix_web::test]
async fn one_user_may_hold_many_connections_and_closing_one_leaves_the_others() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut devices = Vec::new();
    for _ in 0..5 {
        devices.push(server.connect(&alice).await);
    }
    devices.remove(0).close().await;
    devices.remove(0).close().await;
    let mut b = server.connect(&bob).await;
    let (sent, _) = b.send_message(chat, "fan", "to three devices").await;
    for device in &mut devices {
        assert_eq!(device.next_message().await.1, sent);
    }
}

#[actix_web::test]
async fn receipts_are_accepted_from_members_and_refused_for_other_chats() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let chat = server.direct_chat(&alice, &bob).await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let (sent, _) = a.send_message(chat, "r1", "did you get this?").await;
    b.next_message().await;
    b.send(&ClientFrame::Received { chat_id: chat, message_id: sent.id }).await;
    // A receipt gets no answer of its own, only the receipt update every member's devices get.
    b.wait_for(|f| matches!(f, ServerFrame::Update { update: Update::Receipt { .. }, .. }).then_some(())).await;
    b.ping_pong().await;
    assert!(b.backlog().iter().all(|f| !matches!(f, ServerFrame::Error(_))), "{:?}", b.backlog());

    let mut c = server.connect(&carol).await;
    c.send(&ClientFrame::Received { chat_id: chat, message_id: sent.id }).await;
    assert_eq!(c.next_error().await.code, protocol::ws::ErrorCode::ChatNotFound);
}

/// A chat socket opened by tokio-tungstenite over a plain TCP connection.
/// With `after_a_request`, a `GET /healthz` goes first on the same
/// connection, so the upgrade arrives on a reused connection and actix-ws
/// serves it; otherwise the lean stack does.
async fn raw_chat_socket(
    server: &TestServer,
    token: &str,
    after_a_request: bool,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let mut stream = tokio::net::TcpStream::connect(server.server.addr()).await.unwrap();
    if after_a_request {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: parley\r\n\r\n").await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap().to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let length = head.lines().find_map(|line| line.strip_prefix("content-length: ")).unwrap();
        let mut body = vec![0; length.trim().parse().unwrap()];
        stream.read_exact(&mut body).await.unwrap();
    }
    let mut request = server.ws_url("").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("sec-websocket-protocol", "parley.v1".parse().unwrap());
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (socket, response) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "parley.v1");
    socket
}

#[actix_web::test]
async fn websocket_pings_get_pongs_with_their_payload_on_both_stacks() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for after_a_request in [false, true] {
        let mut socket = raw_chat_socket(&server, &alice.tokens.access_token, after_a_request).await;
        let hello = socket.next().await.unwrap().unwrap();
        assert!(hello.to_text().unwrap().contains(r#""type":"hello""#), "{hello:?}");
        for payload in ["are you there?", "still there?"] {
            socket.send(Message::Ping(payload.as_bytes().to_vec().into())).await.unwrap();
            let pong = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("no pong").unwrap();
            assert_eq!(pong.unwrap(), Message::Pong(payload.as_bytes().to_vec().into()), "reused: {after_a_request}");
        }
        socket.close(None).await.unwrap();
        // The server answers the close and ends the connection.
        while let Some(Ok(message)) = socket.next().await {
            assert!(matches!(message, Message::Close(_)), "{message:?}");
        }
    }
}

/// Reads `socket` until `deadline`; the instants at which WebSocket pings
/// arrived (tungstenite answers them). Fails if the server closes it.
async fn pings_until(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    deadline: tokio::time::Instant,
) -> Vec<tokio::time::Instant> {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;

    let mut pings = Vec::new();
    while let Ok(message) = tokio::time::timeout_at(deadline, socket.next()).await {
        match message.expect("the server closed the socket").unwrap() {
            Message::Ping(_) => pings.push(tokio::time::Instant::now()),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
    pings
}

#[actix_web::test]
async fn a_talking_client_is_not_pinged_and_one_that_falls_silent_is_and_stays() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;

    // Beats every second; pinged once silent for 3 s (3 + 2 beats = 5).
    let server = heartbeat_server(1, 5).await;
    let alice = server.register("alice").await;
    let mut socket = raw_chat_socket(&server, &alice.tokens.access_token, false).await;
    let talking_until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < talking_until {
        socket.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
        let pings = pings_until(&mut socket, tokio::time::Instant::now() + Duration::from_millis(400)).await;
        assert!(pings.is_empty(), "a client heard from every 0.4 s was pinged");
    }
    // Silent from now on (but answering pings, which counts as heard):
    // pinged every 3-4 s, and never closed for idleness.
    let silent_since = tokio::time::Instant::now();
    let pings = pings_until(&mut socket, silent_since + Duration::from_secs(9)).await;
    let first = pings.first().expect("a silent client was not pinged");
    assert!(*first >= silent_since + Duration::from_millis(2_500), "pinged after {:?}", *first - silent_since);
    assert!(pings.len() >= 2, "{} pings in 9 s of silence", pings.len());
}

#[actix_web::test]
async fn connections_opened_together_are_not_pinged_together() {
    let server = heartbeat_server(2, 4).await;
    let alice = server.register("alice").await;
    let mut sockets = Vec::new();
    for _ in 0..12 {
        sockets.push(raw_chat_socket(&server, &alice.tokens.access_token, false).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2_500);
    let firsts = futures_util::future::join_all(sockets.iter_mut().map(|socket| async move {
        *pings_until(socket, deadline).await.first().expect("a silent connection was not pinged within a beat")
    }))
    .await;
    let (earliest, latest) = (firsts.iter().min().unwrap(), firsts.iter().max().unwrap());
    // Twelve first beats drawn over 2 s: all within 0.3 s of each other
    // has a chance below one in a billion.
    assert!(*latest - *earliest > Duration::from_millis(300), "first pings within {:?}", *latest - *earliest);
}
