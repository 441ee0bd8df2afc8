//! 1:1 messaging through a real server: exchange, fan-out, idempotency,
//! catch-up, ordering and history.
#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use protocol::MessageId;
use protocol::rest::{ChatList, MessagePage};
use protocol::ws::ClientFrame;

#[actix_web::test]
async fn two_users_exchange_messages_both_ways() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;

    let (sent, duplicate) = a.send_message(chat, "a-1", "hi bob").await;
    assert!(!duplicate);
    let (_, got) = b.next_message().await;
    assert_eq!(got, sent);
    assert_eq!(got.body, "hi bob");
    assert_eq!(got.sender_id, alice.id);

    let (reply, _) = b.send_message(chat, "b-1", "hi alice").await;
    // Alice's device sees its own message first (the update of her send), then Bob's reply.
    assert_eq!(a.next_message().await.1.id, sent.id);
    assert_eq!(a.next_message().await.1, reply);
    assert!(reply.id > sent.id, "server IDs grow");
}

#[actix_web::test]
async fn a_chat_whose_actor_retired_when_idle_takes_sends_again() {
    let server = TestServer::start_with(|c| c.engine.chat_idle_grace_secs = 1).await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let chat_actors = "parley_actors{kind=\"chat\"}";

    let (first, _) = a.send_message(chat, "a-1", "before the pause").await;
    assert_eq!(b.next_message().await.1, first);
    assert_eq!(server.metric(chat_actors).await, Some(1.0));
    // The chat's actor retires after its idle grace (checked every second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.metric(chat_actors).await != Some(0.0) {
        assert!(std::time::Instant::now() < deadline, "the idle chat actor did not retire");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A send starts a new one, and goes through.
    let (second, _) = a.send_message(chat, "a-2", "after the pause").await;
    assert_eq!(b.next_message().await.1, second);
    assert!(second.id > first.id);
    assert_eq!(server.metric(chat_actors).await, Some(1.0));
}

#[actix_web::test]
async fn every_device_of_a_user_receives_and_sees_its_own_sends() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut phone = server.connect(&alice).await;
    let mut laptop = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;

    let (from_bob, _) = b.send_message(chat, "b-1", "to both your devices").await;
    assert_eq!(phone.next_message().await.1, from_bob);
    assert_eq!(laptop.next_message().await.1, from_bob);

    let (from_phone, _) = phone.send_message(chat, "phone-1", "sent from my phone").await;
    assert_eq!(laptop.next_message().await.1, from_phone, "the other device sees what this one sent");
    assert_eq!(b.next_message().await.1, from_bob, "bob's own send comes back to him first");
    assert_eq!(b.next_message().await.1, from_phone);
}

#[actix_web::test]
async fn a_retried_send_returns_the_same_message_and_stores_nothing_twice() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;

    let (first, first_dup) = a.send_message(chat, "retry-me", "only once").await;
    let (again, again_dup) = a.send_message(chat, "retry-me", "only once").await;
    assert!(!first_dup);
    assert!(again_dup);
    assert_eq!(first, again);

    // After a reconnect, too.
    a.close().await;
    let mut a = server.connect(&alice).await;
    let (third, third_dup) = a.send_message(chat, "retry-me", "only once").await;
    assert!(third_dup);
    assert_eq!(third.id, first.id);

    let page: MessagePage = server.get_ok(&format!("/api/v1/chats/{chat}/messages"), &bob.tokens.access_token).await;
    assert_eq!(page.messages.len(), 1);
    // Bob received it once; his next update is the next real message.
    assert_eq!(b.next_message().await.1.id, first.id);
    let (next, _) = a.send_message(chat, "after", "next").await;
    assert_eq!(b.next_message().await.1.id, next.id);
    let log = server.connect(&bob).await.sync_all(0).await;
    assert_eq!(log.messages().len(), 2, "one update per stored message: {:?}", log.seqs());
}

#[actix_web::test]
async fn reusing_a_client_msg_id_for_different_content_is_refused() {
    let server = TestServer::start().await;
    let (alice, _bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    a.send_message(chat, "same-id", "original").await;
    a.send(&ClientFrame::Send { client_msg_id: "same-id".into(), chat_id: chat, body: "different".into() }).await;
    let error = a.next_error().await;
    assert_eq!(error.code, protocol::ws::ErrorCode::ClientMsgIdConflict);
    assert_eq!(error.client_msg_id.as_deref(), Some("same-id"));
    let page: MessagePage = server.get_ok(&format!("/api/v1/chats/{chat}/messages"), &alice.tokens.access_token).await;
    assert_eq!(page.messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["original"]);
}

#[actix_web::test]
async fn an_offline_user_catches_up_with_no_gap_and_no_duplicate() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;

    let (seen, _) = a.send_message(chat, "m-0", "before going offline").await;
    let (last_seq, got) = b.next_message().await;
    assert_eq!(got.id, seen.id);
    b.close().await;

    let mut missed = Vec::new();
    for i in 1..=25 {
        missed.push(a.send_message(chat, &format!("m-{i}"), &format!("missed {i}")).await.0);
    }

    let mut b = server.connect(&bob).await;
    assert_eq!(b.hello_seq(), last_seq + 25, "hello tells how far behind the device is");
    let synced = b.sync_all(last_seq).await;
    assert_eq!(synced.seq, last_seq + 25);
    assert_eq!(synced.seqs(), ((last_seq + 1)..=(last_seq + 25)).collect::<Vec<_>>(), "consecutive seqs: no gap");
    let got: Vec<MessageId> = synced.messages().iter().map(|(_, m)| m.id).collect();
    assert_eq!(got, missed.iter().map(|m| m.id).collect::<Vec<_>>(), "exactly what was missed, in order");
}

#[actix_web::test]
async fn a_client_can_detect_a_gap_and_fill_it() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    // Bob's log so far: becoming friends with Alice.
    let base = server.connect(&bob).await.hello_seq();
    let mut a = server.connect(&alice).await;
    a.send_message(chat, "x-1", "one").await;
    a.send_message(chat, "x-2", "two").await;
    let (three, _) = a.send_message(chat, "x-3", "three").await;

    // Bob's device last processed the first message; his live stream starts later.
    let mut b = server.connect(&bob).await;
    let filled = b.sync_all(base + 1).await;
    assert_eq!(filled.seqs(), [base + 2, base + 3]);
    assert_eq!(filled.messages()[1].1.id, three.id);
    assert_eq!(filled.seq, base + 3);
    // A sync past the end returns nothing and the current seq.
    let nothing = b.sync_all(base + 3).await;
    assert!(nothing.updates.is_empty());
    assert_eq!(nothing.seq, base + 3);
}

#[actix_web::test]
async fn both_members_see_the_same_order_under_concurrent_sends() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    const EACH: usize = 30;

    // Pipeline both sides' sends without waiting for acks.
    for i in 0..EACH {
        a.send(&ClientFrame::Send { client_msg_id: format!("a{i}"), chat_id: chat, body: format!("a{i}") }).await;
        b.send(&ClientFrame::Send { client_msg_id: format!("b{i}"), chat_id: chat, body: format!("b{i}") }).await;
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    while seen_a.len() < 2 * EACH {
        seen_a.push(a.next_message().await.1.id);
    }
    while seen_b.len() < 2 * EACH {
        seen_b.push(b.next_message().await.1.id);
    }
    assert_eq!(seen_a, seen_b, "both members see one order");
    let mut sorted = seen_a.clone();
    sorted.sort();
    assert_eq!(seen_a, sorted, "live order is message ID order");
    let page: MessagePage =
        server.get_ok(&format!("/api/v1/chats/{chat}/messages?limit=200"), &alice.tokens.access_token).await;
    let history: Vec<MessageId> = page.messages.iter().rev().map(|m| m.id).collect();
    assert_eq!(history, seen_a, "history has the same order");
}

#[actix_web::test]
async fn history_pages_newest_first_and_the_chat_list_shows_the_newest_message() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let with_bob = server.direct_chat(&alice, &bob).await;
    let with_carol = server.direct_chat(&alice, &carol).await;
    let mut a = server.connect(&alice).await;
    let mut sent = Vec::new();
    for i in 0..12 {
        sent.push(a.send_message(with_bob, &format!("h{i}"), &format!("msg {i}")).await.0);
    }
    let (newest, _) = a.send_message(with_carol, "c0", "hello carol").await;

    let mut pages = Vec::new();
    let mut before: Option<MessageId> = None;
    loop {
        let query = before.map(|b| format!("&before={b}")).unwrap_or_default();
        let page: MessagePage =
            server.get_ok(&format!("/api/v1/chats/{with_bob}/messages?limit=5{query}"), &bob.tokens.access_token).await;
        pages.push(page.messages.len());
        before = page.next_before;
        sent.retain(|m| !page.messages.contains(m));
        if before.is_none() {
            break;
        }
    }
    assert!(sent.is_empty(), "every message appears in some page");
    assert_eq!(pages, [5, 5, 2]);

    let list: ChatList = server.get_ok("/api/v1/chats", &alice.tokens.access_token).await;
    assert_eq!(list.chats.len(), 2);
    assert_eq!(list.chats[0].id, with_carol, "most recently active first");
    assert_eq!(list.chats[0].last_message.as_ref(), Some(&newest));
    assert_eq!(list.chats[1].last_message.as_ref().map(|m| m.body.as_str()), Some("msg 11"));
    let names: Vec<_> = list.chats[0].members.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"carol"));
    let bob_list: ChatList = server.get_ok("/api/v1/chats", &bob.tokens.access_token).await;
    assert_eq!(bob_list.chats.len(), 1, "bob is not in alice's chat with carol");
}

#[actix_web::test]
async fn only_members_read_or_post_in_a_chat() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mallory = server.register("mallory").await;
    let chat = server.direct_chat(&alice, &bob).await;
    let mut a = server.connect(&alice).await;
    a.send_message(chat, "p1", "private").await;

    let (status, body) =
        server.get(&format!("/api/v1/chats/{chat}/messages"), Some(&mallory.tokens.access_token)).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "chat_not_found");
    let mut m = server.connect(&mallory).await;
    m.send(&ClientFrame::Send { client_msg_id: "x".into(), chat_id: chat, body: "intrusion".into() }).await;
    let error = m.next_error().await;
    assert_eq!(error.code, protocol::ws::ErrorCode::ChatNotFound);
    let page: MessagePage = server.get_ok(&format!("/api/v1/chats/{chat}/messages"), &alice.tokens.access_token).await;
    assert_eq!(page.messages.len(), 1, "nothing was stored");
}
