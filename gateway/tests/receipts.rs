//! Delivered and seen receipts: watermarks that only move forward, pushed
//! to every member's devices live and kept for reconnects; unread counts.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, WsClient};
use protocol::rest::ChatList;
use protocol::ws::{ClientFrame, ServerFrame, Update};
use protocol::{ChatId, MessageId, UserId};

/// The next receipt update on a device: (reader, delivered, seen).
async fn next_receipt(client: &mut WsClient) -> (UserId, MessageId, MessageId) {
    client
        .wait_for(|frame| match frame {
            ServerFrame::Update { update: Update::Receipt { user_id, delivered_up_to, seen_up_to, .. }, .. } => {
                Some((*user_id, *delivered_up_to, *seen_up_to))
            }
            _ => None,
        })
        .await
}

fn receipts_in(client: &WsClient) -> usize {
    client.backlog().iter().filter(|f| matches!(f, ServerFrame::Update { update: Update::Receipt { .. }, .. })).count()
}

async fn unread(server: &TestServer, token: &str, chat: ChatId) -> u32 {
    let list: ChatList = server.get_ok("/api/v1/chats", token).await;
    list.chats.iter().find(|c| c.id == chat).map(|c| c.unread).unwrap()
}

#[actix_web::test]
async fn the_sender_sees_delivered_then_seen_live() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let mut b2 = server.connect(&bob).await;
    let (sent, _) = a.send_message(chat, "m1", "did you get this?").await;
    b.next_message().await;

    b.send(&ClientFrame::Received { chat_id: chat, message_id: sent.id }).await;
    assert_eq!(next_receipt(&mut a).await, (bob.id, sent.id, MessageId(0)), "delivered, not yet seen");
    b.send(&ClientFrame::Seen { chat_id: chat, message_id: sent.id }).await;
    assert_eq!(next_receipt(&mut a).await, (bob.id, sent.id, sent.id), "seen");
    // Bob's other device learns too (so its unread count follows).
    assert_eq!(next_receipt(&mut b2).await.2, MessageId(0));
    assert_eq!(next_receipt(&mut b2).await.2, sent.id);
}

#[actix_web::test]
async fn receipts_reach_a_sender_who_was_offline() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let (sent, _) = a.send_message(chat, "m1", "read this later").await;
    let seen_seq = a.next_message().await.0;
    a.close().await;

    let mut b = server.connect(&bob).await;
    b.send(&ClientFrame::Seen { chat_id: chat, message_id: sent.id }).await;
    b.ping_pong().await;

    let mut a = server.connect(&alice).await;
    let synced = a.sync_all(seen_seq).await;
    let receipt = synced.updates.iter().find_map(|(_, u)| match u {
        Update::Receipt { user_id, seen_up_to, .. } => Some((*user_id, *seen_up_to)),
        _ => None,
    });
    assert_eq!(receipt, Some((bob.id, sent.id)));
    let list: ChatList = server.get_ok("/api/v1/chats", &alice.tokens.access_token).await;
    let bob_receipts = list.chats[0].receipts.iter().find(|r| r.user_id == bob.id).cloned().unwrap();
    assert_eq!((bob_receipts.delivered_up_to, bob_receipts.seen_up_to), (sent.id, sent.id));
}

#[actix_web::test]
async fn one_watermark_covers_many_messages_and_never_moves_back() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(a.send_message(chat, &format!("m{i}"), &format!("message {i}")).await.0.id);
    }
    assert_eq!(unread(&server, &bob.tokens.access_token, chat).await, 30);
    assert_eq!(unread(&server, &alice.tokens.access_token, chat).await, 0, "your own messages are never unread");

    b.send(&ClientFrame::Seen { chat_id: chat, message_id: sent[29] }).await;
    assert_eq!(next_receipt(&mut a).await.2, sent[29]);
    assert_eq!(unread(&server, &bob.tokens.access_token, chat).await, 0, "one frame read them all");

    // An older watermark changes nothing and tells nobody.
    b.send(&ClientFrame::Seen { chat_id: chat, message_id: sent[3] }).await;
    b.send(&ClientFrame::Received { chat_id: chat, message_id: sent[3] }).await;
    b.ping_pong().await;
    a.ping_pong().await;
    assert_eq!(receipts_in(&a), 0, "no receipt for a watermark that did not move");
    let list: ChatList = server.get_ok("/api/v1/chats", &alice.tokens.access_token).await;
    let bob_seen = list.chats[0].receipts.iter().find(|r| r.user_id == bob.id).unwrap().seen_up_to;
    assert_eq!(bob_seen, sent[29]);
}

#[actix_web::test]
async fn a_receipt_cannot_run_ahead_of_the_chat() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let (sent, _) = a.send_message(chat, "m1", "one").await;
    b.send(&ClientFrame::Seen { chat_id: chat, message_id: MessageId(i64::MAX) }).await;
    assert_eq!(next_receipt(&mut a).await.2, sent.id, "capped at the newest message");
    let (later, _) = a.send_message(chat, "m2", "two").await;
    assert_eq!(unread(&server, &bob.tokens.access_token, chat).await, 1, "a later message is unread");
    assert!(later.id > sent.id);
}
