//! Presence through a real server: friends and group members see each
//! other come online, go idle, choose busy or invisible, and go offline
//! after a grace period that hides a reload; strangers and blocked users
//! learn nothing; flapping is coalesced; last-seen survives reconnects.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestServer, TestUser, WsClient};
use protocol::UserId;
use protocol::ws::{ClientFrame, PresenceStatus, PresenceView, ServerFrame};
use serde_json::json;

/// A server with short presence timings: a 400 ms grace, a 50 ms window.
async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.engine.presence_offline_grace_ms = 400;
        config.engine.presence_coalesce_ms = 50;
    })
    .await
}

/// The next presence of `user` this device hears (snapshot or change).
async fn presence_of(client: &mut WsClient, user: &TestUser) -> PresenceView {
    let wanted = user.id;
    client.wait_for(|frame| presence_in(frame, wanted)).await
}

fn presence_in(frame: &ServerFrame, user: UserId) -> Option<PresenceView> {
    match frame {
        ServerFrame::Presence { users } => users.iter().find(|view| view.user_id == user).cloned(),
        _ => None,
    }
}

/// Waits until this device sees `user` with `status`; returns that view.
async fn until_status(client: &mut WsClient, user: &TestUser, status: PresenceStatus) -> PresenceView {
    loop {
        let view = presence_of(client, user).await;
        if view.status == status {
            return view;
        }
    }
}

/// Every presence of `user` this device has heard so far (after a round trip).
async fn heard_about(client: &mut WsClient, user: &TestUser) -> Vec<PresenceView> {
    client.ping_pong().await;
    client.backlog().iter().filter_map(|frame| presence_in(frame, user.id)).collect()
}

async fn set_presence(server: &TestServer, user: &TestUser, status: &str, text: &str) -> u16 {
    let body = json!({"status": status, "status_text": text});
    server.call("PUT", "/api/v1/me/presence", Some(&user.tokens.access_token), Some(body)).await.status
}

#[actix_web::test]
async fn friends_see_online_away_busy_and_offline_with_last_seen() {
    let server = server().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    server.befriend(&alice, &bob).await;
    let mut b = server.connect(&bob).await;
    let snapshot = presence_of(&mut b, &alice).await;
    assert_eq!((snapshot.status, snapshot.last_seen), (PresenceStatus::Offline, None), "never seen yet");

    let mut a = server.connect(&alice).await;
    until_status(&mut b, &alice, PresenceStatus::Online).await;
    until_status(&mut a, &bob, PresenceStatus::Online).await;

    a.send(&ClientFrame::Activity { idle: true }).await;
    until_status(&mut b, &alice, PresenceStatus::Away).await;
    a.send(&ClientFrame::Activity { idle: false }).await;
    until_status(&mut b, &alice, PresenceStatus::Online).await;

    assert_eq!(set_presence(&server, &alice, "busy", " in a meeting ").await, 200);
    let busy = until_status(&mut b, &alice, PresenceStatus::Busy).await;
    assert_eq!(busy.status_text, "in a meeting");
    let (status, me) = server.get("/api/v1/me", Some(&alice.tokens.access_token)).await;
    assert_eq!((status, &me["presence"]), (200, &json!({"status": "busy", "status_text": "in a meeting"})));
    assert_eq!(set_presence(&server, &alice, "auto", "").await, 200);
    until_status(&mut b, &alice, PresenceStatus::Online).await;

    a.close().await;
    let offline = until_status(&mut b, &alice, PresenceStatus::Offline).await;
    let last_seen = offline.last_seen.expect("a last-seen time once offline");
    assert!(last_seen > 1_700_000_000_000, "{last_seen}");
    // A later connection of Bob's is told the same, from storage.
    let mut b2 = server.connect(&bob).await;
    let again = presence_of(&mut b2, &alice).await;
    assert_eq!((again.status, again.last_seen), (PresenceStatus::Offline, Some(last_seen)));
}

#[actix_web::test]
async fn a_reload_within_the_grace_does_not_flap() {
    let server = server().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    server.befriend(&alice, &bob).await;
    let mut b = server.connect(&bob).await;
    let a = server.connect(&alice).await;
    until_status(&mut b, &alice, PresenceStatus::Online).await;

    a.close().await;
    let mut a = server.connect(&alice).await;
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    a.ping_pong().await;
    let heard = heard_about(&mut b, &alice).await;
    assert!(heard.iter().all(|view| view.status == PresenceStatus::Online), "no offline in between: {heard:?}");
}

#[actix_web::test]
async fn flapping_is_coalesced_and_the_last_state_wins() {
    let server = TestServer::start_with(|config| config.engine.presence_coalesce_ms = 250).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    server.befriend(&alice, &bob).await;
    let mut b = server.connect(&bob).await;
    let mut a = server.connect(&alice).await;
    until_status(&mut b, &alice, PresenceStatus::Online).await;

    for flap in 0..50 {
        a.send(&ClientFrame::Activity { idle: flap % 2 == 0 }).await;
    }
    a.send(&ClientFrame::Activity { idle: true }).await;
    until_status(&mut b, &alice, PresenceStatus::Away).await;
    actix_rt::time::sleep(Duration::from_millis(600)).await;
    let heard = heard_about(&mut b, &alice).await;
    assert!(heard.len() <= 3, "51 changes in a few milliseconds leave as a handful of frames: {heard:?}");
    assert!(heard.iter().all(|view| view.status == PresenceStatus::Away));
}

#[actix_web::test]
async fn strangers_and_blocked_users_learn_nothing() {
    let server = server().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let stranger = server.register("stranger").await;
    server.befriend(&alice, &bob).await;
    let mut s = server.connect(&stranger).await;
    let mut b = server.connect(&bob).await;
    let mut a = server.connect(&alice).await;
    until_status(&mut b, &alice, PresenceStatus::Online).await;
    assert_eq!(set_presence(&server, &alice, "busy", "secret plans").await, 200);
    until_status(&mut b, &alice, PresenceStatus::Busy).await;
    assert!(heard_about(&mut s, &alice).await.is_empty(), "a stranger hears nothing of alice");

    // Bob blocks Alice: each learns nothing more of the other.
    let block = format!("/api/v1/blocks/{}", alice.id);
    assert_eq!(server.call("PUT", &block, Some(&bob.tokens.access_token), None).await.status, 200);
    let hidden = until_status(&mut a, &bob, PresenceStatus::Offline).await;
    assert_eq!(hidden.last_seen, None, "the former friend is hidden, not shown as just left");
    until_status(&mut b, &alice, PresenceStatus::Offline).await;
    let before = heard_about(&mut b, &alice).await.len();
    assert_eq!(set_presence(&server, &alice, "auto", "").await, 200);
    a.send(&ClientFrame::Activity { idle: true }).await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(heard_about(&mut b, &alice).await.len(), before, "no presence across a block");
}

#[actix_web::test]
async fn group_members_see_each_other_until_one_is_removed() {
    let server = server().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    server.befriend(&alice, &bob).await;
    server.befriend(&alice, &carol).await;
    // Bob and Carol are not friends; they meet in Alice's group.
    let mut b = server.connect(&bob).await;
    let mut c = server.connect(&carol).await;
    assert!(heard_about(&mut b, &carol).await.is_empty());
    let body = json!({"name": "g", "members": [bob.id, carol.id]});
    let created = server.call("POST", "/api/v1/chats/groups", Some(&alice.tokens.access_token), Some(body)).await;
    assert_eq!(created.status, 201);
    until_status(&mut b, &carol, PresenceStatus::Online).await;
    until_status(&mut c, &bob, PresenceStatus::Online).await;

    let chat = created.json()["id"].as_str().unwrap().to_string();
    let removal = format!("/api/v1/chats/{chat}/members/{}", carol.id);
    assert_eq!(server.call("DELETE", &removal, Some(&alice.tokens.access_token), None).await.status, 204);
    let hidden = until_status(&mut b, &carol, PresenceStatus::Offline).await;
    assert_eq!(hidden.last_seen, None);
    until_status(&mut c, &bob, PresenceStatus::Offline).await;
    let before = heard_about(&mut b, &carol).await.len();
    c.send(&ClientFrame::Activity { idle: true }).await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(heard_about(&mut b, &carol).await.len(), before, "no presence once nothing is shared");
}

#[actix_web::test]
async fn invisible_users_look_offline_and_bad_settings_are_refused() {
    let server = server().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    server.befriend(&alice, &bob).await;
    let mut b = server.connect(&bob).await;
    let _a = server.connect(&alice).await;
    until_status(&mut b, &alice, PresenceStatus::Online).await;
    assert_eq!(set_presence(&server, &alice, "invisible", "").await, 200);
    until_status(&mut b, &alice, PresenceStatus::Offline).await;

    let token = Some(alice.tokens.access_token.as_str());
    let long = json!({"status": "auto", "status_text": "x".repeat(101)});
    server.call("PUT", "/api/v1/me/presence", token, Some(long)).await.assert_problem(422, "invalid_field");
    let unknown = json!({"status": "sleeping"});
    server.call("PUT", "/api/v1/me/presence", token, Some(unknown)).await.assert_problem(400, "bad_request");
    let (_, me) = server.get("/api/v1/me", token).await;
    assert_eq!(me["presence"]["status"], "invisible", "refused settings change nothing");
}
