//! Bad input through a real server: every class of invalid WebSocket frame
//! or REST request gets its documented error, changes nothing, and leaves
//! the server and other clients working.
#![allow(clippy::unwrap_used)]

mod common;

use actix_web::web::Bytes;
use awc::http::Method;
use awc::ws;
use common::{TestServer, TestUser, WsClient};
use protocol::ChatId;
use protocol::limits::{MAX_BODY_BYTES, MAX_CLIENT_MSG_ID_BYTES, MAX_FRAME_BYTES};
use protocol::rest::{MessagePage, OpenDirectChat, RegisterRequest};
use protocol::ws::{ClientFrame, ErrorCode, ErrorFrame, ServerFrame, close};

/// Sends raw text and expects an `error` frame with `code` and no `client_msg_id`.
async fn expect_rejected(ws: &mut WsClient, text: &str, code: ErrorCode) {
    ws.send_text(text).await;
    let error = ws.next_error().await;
    assert_eq!(error.code, code, "frame {text:?} got {error:?}");
    assert!(!error.message.is_empty());
}

/// Sends a `send` frame and waits for the error carrying its `client_msg_id`.
async fn send_expecting_error(ws: &mut WsClient, chat_id: ChatId, client_msg_id: &str, body: &str) -> ErrorFrame {
    ws.send(&ClientFrame::Send { client_msg_id: client_msg_id.into(), chat_id, body: body.into() }).await;
    let wanted = client_msg_id.to_string();
    ws.wait_for(|frame| match frame {
        ServerFrame::Error(error) if error.client_msg_id.as_deref() == Some(wanted.as_str()) => Some(error.clone()),
        ServerFrame::Ack { client_msg_id, .. } if *client_msg_id == wanted => {
            panic!("send {wanted:?} was accepted")
        }
        _ => None,
    })
    .await
}

/// The stored history of a chat, newest first.
async fn history(server: &TestServer, chat: ChatId, user: &TestUser) -> MessagePage {
    server.get_ok(&format!("/api/v1/chats/{chat}/messages?limit=200"), &user.tokens.access_token).await
}

/// Invalid UTF-8 in a text message, split over two fragments.
async fn send_invalid_utf8(ws: &mut WsClient) {
    ws.send_ws(ws::Message::Continuation(actix_ws::Item::FirstText(Bytes::from_static(b"{\"type\":")))).await;
    ws.send_ws(ws::Message::Continuation(actix_ws::Item::Last(Bytes::from_static(b"\xff\xfe}")))).await;
}

/// Bob and Carol exchange one message each way; both see both.
async fn exchange(b: &mut WsClient, c: &mut WsClient, chat: ChatId, round: usize) {
    let (sent, _) = b.send_message(chat, &format!("b-{round}"), "still there?").await;
    assert_eq!(c.next_message().await.1, sent);
    let (reply, _) = c.send_message(chat, &format!("c-{round}"), "yes").await;
    assert_eq!(b.next_message().await.1.id, sent.id, "bob's own update");
    assert_eq!(b.next_message().await.1, reply);
    assert_eq!(c.next_message().await.1, reply, "carol's own update");
}

fn oversized_frame(chat: ChatId) -> String {
    let frame = serde_json::to_string(&ClientFrame::Send {
        client_msg_id: "huge".into(),
        chat_id: chat,
        body: "a".repeat(MAX_FRAME_BYTES),
    })
    .unwrap();
    assert!(frame.len() > MAX_FRAME_BYTES);
    frame
}

// ------------------------------------------------------------- WebSocket

#[actix_web::test]
async fn malformed_frames_get_their_documented_codes_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let (alice, _bob, chat) = server.alice_and_bob().await;
    let mut ws = server.connect(&alice).await;

    let cases = [
        ("not json at all", ErrorCode::BadFrame),
        ("{\"type\":\"send\"", ErrorCode::BadFrame),
        ("[1,2,3]", ErrorCode::BadFrame),
        ("{\"no_type\":true}", ErrorCode::BadFrame),
        ("{\"type\":\"teleport\"}", ErrorCode::UnknownType),
        ("{\"type\":\"teleport\",\"to\":\"mars\"}", ErrorCode::UnknownType),
        ("{\"type\":\"send\",\"client_msg_id\":\"m1\",\"body\":\"hi\"}", ErrorCode::BadFrame),
        (&format!("{{\"type\":\"send\",\"client_msg_id\":\"m2\",\"chat_id\":\"{chat}\"}}"), ErrorCode::BadFrame),
        (
            &format!(
                "{{\"type\":\"send\",\"client_msg_id\":\"m3\",\"chat_id\":\"{chat}\",\"body\":\"hi\",\"urgent\":true}}"
            ),
            ErrorCode::BadFrame,
        ),
        ("{\"type\":\"sync\",\"after_seq\":0,\"sneaky\":1}", ErrorCode::BadFrame),
        ("{\"type\":\"ping\",\"payload\":\"x\"}", ErrorCode::BadFrame),
        ("{\"type\":\"sync\",\"after_seq\":\"zero\"}", ErrorCode::BadFrame),
        ("{\"type\":\"send\",\"client_msg_id\":\"m4\",\"chat_id\":\"abc\",\"body\":\"hi\"}", ErrorCode::BadFrame),
        ("{\"type\":\"send\",\"client_msg_id\":\"m5\",\"chat_id\":\"-5\",\"body\":\"hi\"}", ErrorCode::BadFrame),
        ("{\"type\":\"send\",\"client_msg_id\":\"m6\",\"chat_id\":\"1.5\",\"body\":\"hi\"}", ErrorCode::BadFrame),
        ("{\"type\":\"received\",\"chat_id\":\"1\",\"message_id\":\"x\"}", ErrorCode::BadFrame),
    ];
    for (text, code) in &cases {
        expect_rejected(&mut ws, text, *code).await;
    }
    ws.ping_pong().await;

    ws.send_ws(ws::Message::Binary(Bytes::from_static(b"{\"type\":\"ping\"}"))).await;
    assert_eq!(ws.next_error().await.code, ErrorCode::BinaryNotSupported);
    ws.ping_pong().await;

    // The connection still sends for real, and nothing of the above was stored.
    let (sent, _) = ws.send_message(chat, "good-1", "a valid message").await;
    let page = history(&server, chat, &alice).await;
    assert_eq!(page.messages, [sent]);
}

#[actix_web::test]
async fn fragmented_messages_are_joined() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut ws = server.connect(&alice).await;
    ws.send_ws(ws::Message::Continuation(actix_ws::Item::FirstText(Bytes::from_static(b"{\"type\":")))).await;
    ws.send_ws(ws::Message::Continuation(actix_ws::Item::Last(Bytes::from_static(b"\"ping\"}")))).await;
    ws.wait_for(|frame| matches!(frame, ServerFrame::Pong {}).then_some(())).await;
}

#[actix_web::test]
async fn invalid_utf8_in_a_text_frame_is_refused_and_closes_the_connection_with_1007() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut ws = server.connect(&alice).await;
    send_invalid_utf8(&mut ws).await;
    let (frames, code) = ws.frames_until_close().await;
    assert_eq!(code, Some(close::INVALID_PAYLOAD), "frames before the close: {frames:?}");
    let errors: Vec<_> =
        frames.iter().filter_map(|f| if let ServerFrame::Error(e) = f { Some(e.code) } else { None }).collect();
    assert_eq!(errors, [ErrorCode::InvalidUtf8]);
    // The next connection works.
    server.connect(&alice).await.ping_pong().await;
}

#[actix_web::test]
async fn invalid_sends_are_refused_with_their_client_msg_id_and_store_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mallory = server.register("mallory").await;
    let chat = server.direct_chat(&alice, &bob).await;
    let not_mine = server.direct_chat(&bob, &mallory).await;
    let mut ws = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;

    let too_long = "a".repeat(MAX_BODY_BYTES + 1);
    let too_long_in_bytes = "é".repeat(MAX_BODY_BYTES / 2 + 1); // fewer characters than the limit, more bytes
    let long_id = "x".repeat(MAX_CLIENT_MSG_ID_BYTES + 1);
    let cases: [(&str, ChatId, &str, ErrorCode); 8] = [
        ("too-long", chat, &too_long, ErrorCode::InvalidField),
        ("too-long-bytes", chat, &too_long_in_bytes, ErrorCode::InvalidField),
        ("empty", chat, "", ErrorCode::InvalidField),
        ("blank", chat, " \n\t ", ErrorCode::InvalidField),
        (&long_id, chat, "hi", ErrorCode::InvalidField),
        ("", chat, "hi", ErrorCode::InvalidField),
        ("no-such-chat", ChatId(4_242_424_242), "hi", ErrorCode::ChatNotFound),
        ("not-a-member", not_mine, "hi", ErrorCode::ChatNotFound),
    ];
    for (client_msg_id, chat_id, body, code) in cases {
        let error = send_expecting_error(&mut ws, chat_id, client_msg_id, body).await;
        assert_eq!(error.code, code, "{client_msg_id}: {error:?}");
    }
    ws.ping_pong().await;
    assert!(history(&server, chat, &alice).await.messages.is_empty());
    assert!(history(&server, not_mine, &bob).await.messages.is_empty());

    // Nothing was stored, so a corrected send may reuse the client_msg_id.
    let (fixed, duplicate) = ws.send_message(chat, "too-long", "short now").await;
    assert!(!duplicate);
    assert_eq!(b.next_message().await.1, fixed, "bob's first update is the valid message");
    assert_eq!(history(&server, chat, &alice).await.messages, [fixed]);
}

#[actix_web::test]
async fn limits_are_inclusive() {
    let server = TestServer::start().await;
    let (alice, _bob, chat) = server.alice_and_bob().await;
    let mut ws = server.connect(&alice).await;
    let longest_id = "i".repeat(MAX_CLIENT_MSG_ID_BYTES);
    let largest = "b".repeat(MAX_BODY_BYTES);
    let (message, _) = ws.send_message(chat, &longest_id, &largest).await;
    assert_eq!(message.body.len(), MAX_BODY_BYTES);
    assert_eq!(message.client_msg_id, longest_id);
    let largest_multibyte = "é".repeat(MAX_BODY_BYTES / 2);
    let (message, _) = ws.send_message(chat, "multibyte", &largest_multibyte).await;
    assert_eq!(message.body, largest_multibyte);
}

#[actix_web::test]
async fn a_frame_above_64_kib_closes_the_connection_with_1009() {
    let server = TestServer::start().await;
    let (alice, _bob, chat) = server.alice_and_bob().await;
    let mut ws = server.connect(&alice).await;
    ws.send_text(&oversized_frame(chat)).await;
    let (frames, code) = ws.frames_until_close().await;
    assert_eq!(code, Some(close::TOO_BIG), "frames before the close: {frames:?}");
    for frame in &frames {
        match frame {
            ServerFrame::Error(error) => assert_eq!(error.code, ErrorCode::FrameTooLarge),
            // Bob's presence, sent to a friend who connects.
            ServerFrame::Presence { .. } => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    // Nothing stored; the user reconnects and carries on.
    assert!(history(&server, chat, &alice).await.messages.is_empty());
    let mut ws = server.connect(&alice).await;
    ws.send_message(chat, "after", "smaller this time").await;
}

#[actix_web::test]
async fn more_than_20_invalid_frames_close_the_connection_with_4029() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut ws = server.connect(&alice).await;
    for i in 0..20 {
        expect_rejected(&mut ws, &format!("garbage {i}"), ErrorCode::BadFrame).await;
    }
    ws.ping_pong().await;
    ws.send_text("one too many").await;
    let (frames, code) = ws.frames_until_close().await;
    assert_eq!(code, Some(close::TOO_MANY_ERRORS), "frames before the close: {frames:?}");
    // The user is not locked out.
    let mut ws = server.connect(&alice).await;
    ws.ping_pong().await;
}

#[actix_web::test]
async fn abuse_changes_nothing_and_other_users_are_unaffected() {
    let server = TestServer::start().await;
    let mallory = server.register("mallory").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let target = server.direct_chat(&mallory, &bob).await;
    let bystanders = server.direct_chat(&bob, &carol).await;
    let mut b = server.connect(&bob).await;
    let mut c = server.connect(&carol).await;
    let mut exchanged = 0;
    let mut m = server.connect(&mallory).await;
    for text in [
        "not json",
        "{\"type\":\"teleport\"}",
        "{\"type\":\"send\",\"client_msg_id\":\"x\",\"body\":\"hi\"}",
        "{\"type\":\"sync\",\"after_seq\":0,\"extra\":true}",
        "{\"type\":\"send\",\"client_msg_id\":\"x\",\"chat_id\":\"abc\",\"body\":\"hi\"}",
    ] {
        m.send_text(text).await;
        m.next_error().await;
    }
    exchanged += 1;
    exchange(&mut b, &mut c, bystanders, exchanged).await;
    m.send_ws(ws::Message::Binary(Bytes::from_static(b"\x00\x01"))).await;
    assert_eq!(m.next_error().await.code, ErrorCode::BinaryNotSupported);
    for (id, body) in [("big", "a".repeat(MAX_BODY_BYTES + 1)), ("empty", String::new()), ("blank", "  ".into())] {
        assert_eq!(send_expecting_error(&mut m, target, id, &body).await.code, ErrorCode::InvalidField);
    }
    let long_id = "x".repeat(MAX_CLIENT_MSG_ID_BYTES + 1);
    assert_eq!(send_expecting_error(&mut m, target, &long_id, "hi").await.code, ErrorCode::InvalidField);
    assert_eq!(send_expecting_error(&mut m, bystanders, "intrude", "hi").await.code, ErrorCode::ChatNotFound);
    exchanged += 1;
    exchange(&mut b, &mut c, bystanders, exchanged).await;

    // Invalid UTF-8, an oversized frame, then a flood of garbage, each on a new connection.
    let mut m = server.connect(&mallory).await;
    send_invalid_utf8(&mut m).await;
    assert_eq!(m.frames_until_close().await.1, Some(close::INVALID_PAYLOAD));
    exchanged += 1;
    exchange(&mut b, &mut c, bystanders, exchanged).await;
    let mut m = server.connect(&mallory).await;
    m.send_text(&oversized_frame(target)).await;
    assert_eq!(m.frames_until_close().await.1, Some(close::TOO_BIG));
    exchanged += 1;
    exchange(&mut b, &mut c, bystanders, exchanged).await;
    // 21 at once, one past the limit: frames sent after the server closed
    // could fail on a broken pipe, or reset the connection before the
    // close frame is read.
    let mut m = server.connect(&mallory).await;
    for i in 0..21 {
        m.send_text(&format!("flood {i}")).await;
    }
    assert_eq!(m.frames_until_close().await.1, Some(close::TOO_MANY_ERRORS));
    exchanged += 1;
    exchange(&mut b, &mut c, bystanders, exchanged).await;

    // Nothing changed.
    assert!(history(&server, target, &mallory).await.messages.is_empty());
    assert!(history(&server, target, &bob).await.messages.is_empty());
    let mut m = server.connect(&mallory).await;
    assert!(m.sync_all(0).await.messages().is_empty(), "mallory's update log holds no message");
    let bystander_history = history(&server, bystanders, &carol).await;
    assert_eq!(bystander_history.messages.len(), 2 * exchanged);
    assert!(bystander_history.messages.iter().all(|msg| msg.sender_id != mallory.id));
    let (status, _, _) = server.get_raw("/healthz", None).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn sends_over_the_rate_limit_are_refused_and_not_stored() {
    let server = TestServer::start_with(|c| {
        c.engine.sends_per_second = 1;
        c.engine.send_burst = 3;
    })
    .await;
    let (alice, _bob, chat) = server.alice_and_bob().await;
    let mut ws = server.connect(&alice).await;

    for i in 1..=5 {
        ws.send(&ClientFrame::Send { client_msg_id: format!("r{i}"), chat_id: chat, body: format!("burst {i}") }).await;
    }
    let mut outcomes = Vec::new();
    for i in 1..=5 {
        let wanted = format!("r{i}");
        let outcome = ws
            .wait_for(|frame| match frame {
                ServerFrame::Ack { client_msg_id, .. } if *client_msg_id == wanted => Some(Ok(())),
                ServerFrame::Error(error) if error.client_msg_id.as_deref() == Some(wanted.as_str()) => {
                    Some(Err(error.clone()))
                }
                _ => None,
            })
            .await;
        outcomes.push(outcome);
    }
    assert!(outcomes[..3].iter().all(Result::is_ok), "the burst of 3 is acked: {outcomes:?}");
    let mut retry_after_ms = 0;
    for outcome in &outcomes[3..] {
        let error = outcome.as_ref().expect_err("sends beyond the burst are refused");
        assert_eq!(error.code, ErrorCode::RateLimited, "{error:?}");
        let wait = error.retry_after_ms.unwrap_or_else(|| panic!("no retry_after_ms: {error:?}"));
        assert!((1..=1_001).contains(&wait), "retry_after_ms {wait}");
        retry_after_ms = retry_after_ms.max(wait);
    }
    let page = history(&server, chat, &alice).await;
    let bodies: Vec<&str> = page.messages.iter().rev().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["burst 1", "burst 2", "burst 3"]);

    // Backing off and retrying with the same client_msg_id, as documented, works.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(retry_after_ms + 50)).await;
    let (message, duplicate) = ws.send_message(chat, "r4", "burst 4").await;
    assert!(!duplicate);
    assert_eq!(history(&server, chat, &alice).await.messages[0], message);
}

// ------------------------------------------------------------------ REST

#[actix_web::test]
async fn malformed_json_bodies_are_400_bad_request_problems() {
    let server = TestServer::start().await;
    let json = [("content-type", "application/json")];
    let cases: [(&str, &str, &'static [u8]); 7] = [
        ("not JSON", "/api/v1/auth/register", b"{not json"),
        ("truncated", "/api/v1/auth/login", b"{\"username\":\"alice\""),
        ("wrong type", "/api/v1/auth/login", b"{\"username\":\"alice\",\"password\":42}"),
        (
            "unknown field",
            "/api/v1/auth/register",
            b"{\"username\":\"alice\",\"password\":\"long enough password\",\"display_name\":\"A\",\"admin\":true}",
        ),
        ("missing field", "/api/v1/auth/register", b"{\"username\":\"alice\",\"password\":\"long enough password\"}"),
        ("empty body", "/api/v1/auth/login", b""),
        ("missing field", "/api/v1/auth/refresh", b"{}"),
    ];
    for (what, path, body) in cases {
        let resp = server.request(Method::POST, path, &json, Bytes::from_static(body)).await;
        let problem = resp.assert_problem(400, "bad_request");
        assert!(problem["detail"].is_string(), "{what}: {problem}");
    }
    let resp = server
        .request(Method::POST, "/api/v1/auth/login", &[("content-type", "text/plain")], Bytes::from_static(b"hi"))
        .await;
    resp.assert_problem(400, "bad_request");
    // Nothing was registered by any of it.
    let (status, body) = server
        .post(
            "/api/v1/auth/register",
            None,
            &RegisterRequest {
                username: "alice".into(),
                password: "long enough password".into(),
                display_name: "A".into(),
            },
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[actix_web::test]
async fn an_oversized_json_body_is_refused_with_a_problem() {
    let server = TestServer::start().await;
    let body = serde_json::to_vec(&RegisterRequest {
        username: "alice".into(),
        password: "long enough password".into(),
        display_name: "A".repeat(17 * 1024),
    })
    .unwrap();
    assert!(body.len() > 16 * 1024);
    let resp =
        server.request(Method::POST, "/api/v1/auth/register", &[("content-type", "application/json")], body).await;
    resp.assert_problem(400, "bad_request");
    let (status, _) = server
        .post(
            "/api/v1/auth/login",
            None,
            &protocol::rest::LoginRequest { username: "alice".into(), password: "long enough password".into() },
        )
        .await;
    assert_eq!(status, 401, "nothing was registered");
}

#[actix_web::test]
async fn bad_path_and_query_values_are_refused() {
    let server = TestServer::start().await;
    let (alice, _bob, chat) = server.alice_and_bob().await;
    let token = Some(alice.tokens.access_token.as_str());
    for (path, status, code) in [
        ("/api/v1/chats/abc/messages".to_string(), 400, "bad_request"),
        ("/api/v1/chats/-1/messages".to_string(), 400, "bad_request"),
        ("/api/v1/users/abc".to_string(), 400, "bad_request"),
        (format!("/api/v1/chats/{chat}/messages?limit=0"), 422, "invalid_field"),
        (format!("/api/v1/chats/{chat}/messages?limit=201"), 422, "invalid_field"),
        (format!("/api/v1/chats/{chat}/messages?limit=500"), 422, "invalid_field"),
        (format!("/api/v1/chats/{chat}/messages?limit=ten"), 400, "bad_request"),
        (format!("/api/v1/chats/{chat}/messages?before=yesterday"), 400, "bad_request"),
        (format!("/api/v1/chats/{chat}/messages?page=2"), 400, "bad_request"),
        ("/api/v1/chats/4242424242/messages".to_string(), 404, "chat_not_found"),
        ("/api/v1/users/4242424242".to_string(), 404, "user_not_found"),
    ] {
        let resp = server.get_full(&path, token).await;
        assert_eq!(resp.status, status, "GET {path}: {:?}", resp.json());
        resp.assert_problem(status, code);
    }
    // The limits themselves are accepted.
    for limit in [1, 200] {
        let (status, body) = server.get(&format!("/api/v1/chats/{chat}/messages?limit={limit}"), token).await;
        assert_eq!(status, 200, "limit={limit}: {body}");
    }
}

#[actix_web::test]
async fn unknown_routes_are_404_not_found_problems() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.tokens.access_token.as_str());
    for path in ["/api/v1/teleport", "/api/v1/chats/1/attachments", "/api/v2/chats", "/nope"] {
        server.get_full(path, token).await.assert_problem(404, "not_found");
        server.get_full(path, None).await.assert_problem(404, "not_found");
    }
    let resp =
        server.request(Method::POST, "/api/v1/auth/teleport", &[("content-type", "application/json")], "{}").await;
    resp.assert_problem(404, "not_found");
}

#[actix_web::test]
async fn a_direct_chat_needs_another_existing_user() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.tokens.access_token.as_str());
    let (status, body) = server.post("/api/v1/chats/direct", token, &OpenDirectChat { user_id: alice.id }).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "invalid_field");
    let (status, body) =
        server.post("/api/v1/chats/direct", token, &OpenDirectChat { user_id: protocol::UserId(4_242_424_242) }).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "user_not_found");
    let (status, body) = server.post("/api/v1/chats/direct", token, &serde_json::json!({"user_id": "bob"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "bad_request");
    let list: protocol::rest::ChatList = server.get_ok("/api/v1/chats", &alice.tokens.access_token).await;
    assert!(list.chats.is_empty(), "no chat was created");
}
