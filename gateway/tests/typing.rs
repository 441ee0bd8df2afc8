//! Typing indicators: relayed to the other members only, rate-limited,
//! expiring on their own, never stored.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestServer, WsClient};
use protocol::limits::{TYPING_INTERVAL_MS, TYPING_TTL_MS};
use protocol::ws::{ClientFrame, ErrorCode, ServerFrame};

fn typing_frames(client: &WsClient) -> usize {
    client.backlog().iter().filter(|f| matches!(f, ServerFrame::Typing { .. })).count()
}

#[actix_web::test]
async fn the_other_member_sees_typing_with_an_expiry_and_the_typist_does_not() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut a2 = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;

    a.send(&ClientFrame::Typing { chat_id: chat }).await;
    let seen = b
        .wait_for(|frame| match frame {
            ServerFrame::Typing { chat_id, user_id, expires_in_ms } => Some((*chat_id, *user_id, *expires_in_ms)),
            _ => None,
        })
        .await;
    assert_eq!(seen, (chat, alice.id, TYPING_TTL_MS));
    a.ping_pong().await;
    a2.ping_pong().await;
    assert_eq!(typing_frames(&a) + typing_frames(&a2), 0, "the typist's own devices are not told");
}

#[actix_web::test]
async fn a_burst_of_typing_frames_is_relayed_once_per_interval() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    for _ in 0..20 {
        a.send(&ClientFrame::Typing { chat_id: chat }).await;
    }
    a.ping_pong().await;
    b.ping_pong().await;
    assert_eq!(typing_frames(&b), 1, "twenty keystrokes, one indicator");
    // After the interval, typing is relayed again.
    tokio::time::sleep(Duration::from_millis(TYPING_INTERVAL_MS + 100)).await;
    a.send(&ClientFrame::Typing { chat_id: chat }).await;
    a.ping_pong().await;
    b.ping_pong().await;
    assert_eq!(typing_frames(&b), 2);
}

#[actix_web::test]
async fn typing_is_never_stored_and_only_members_may_type() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mallory = server.register("mallory").await;
    let mut a = server.connect(&alice).await;
    let seq_before = server.connect(&bob).await.hello_seq();
    a.send(&ClientFrame::Typing { chat_id: chat }).await;
    a.ping_pong().await;
    assert_eq!(server.connect(&bob).await.hello_seq(), seq_before, "nothing entered the update log");

    let mut m = server.connect(&mallory).await;
    m.send(&ClientFrame::Typing { chat_id: chat }).await;
    assert_eq!(m.next_error().await.code, ErrorCode::ChatNotFound);
}

#[actix_web::test]
async fn nobody_types_across_a_block() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let resp = server.call("PUT", &format!("/api/v1/blocks/{}", alice.id), Some(&bob.tokens.access_token), None).await;
    assert_eq!(resp.status, 200);
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    a.send(&ClientFrame::Typing { chat_id: chat }).await;
    assert_eq!(a.next_error().await.code, ErrorCode::Forbidden);
    b.ping_pong().await;
    assert_eq!(typing_frames(&b), 0);
}
