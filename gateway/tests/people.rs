//! People: every friendship transition, the friends-only and blocking
//! rules on messaging, profiles, and user search.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, TestUser};
use protocol::rest::{
    FriendRequest, OwnProfile, ProfilePatch, RelatedUserPage, RelationState, RelationStatus, SearchResults, UserView,
};
use protocol::ws::{ClientFrame, ErrorCode, ServerFrame, Update};
use protocol::{ChatId, UserId};

/// POSTs or DELETEs a relation endpoint as `user`; returns status and body.
async fn act(server: &TestServer, user: &TestUser, method: &str, path: &str) -> (u16, serde_json::Value) {
    let token = Some(user.tokens.access_token.as_str());
    match method {
        "POST" => server.post(path, token, &()).await,
        other => {
            let resp = server.call(other, path, token, None).await;
            (resp.status, resp.json())
        }
    }
}

async fn request(server: &TestServer, from: &TestUser, to: &TestUser) -> (u16, serde_json::Value) {
    server.post("/api/v1/friends/requests", Some(&from.tokens.access_token), &FriendRequest { user_id: to.id }).await
}

async fn list(server: &TestServer, user: &TestUser, path: &str) -> Vec<UserId> {
    let page: RelatedUserPage = server.get_ok(path, &user.tokens.access_token).await;
    page.users.iter().map(|entry| entry.user.id).collect()
}

/// Waits for the next relation update on a device.
async fn next_relation(client: &mut common::WsClient) -> (u64, UserId, RelationState) {
    client
        .wait_for(|frame| match frame {
            ServerFrame::Update { seq, update: Update::Relation { user_id, relation } } => {
                Some((*seq, *user_id, *relation))
            }
            _ => None,
        })
        .await
}

fn relation(body: &serde_json::Value) -> RelationState {
    serde_json::from_value::<RelationStatus>(body.clone()).unwrap().relation
}

#[actix_web::test]
async fn a_request_accepted_makes_friends_and_both_sides_see_every_step_live() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a1 = server.connect(&alice).await;
    let mut a2 = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;

    let (status, body) = request(&server, &alice, &bob).await;
    assert_eq!((status, relation(&body)), (200, RelationState::RequestSent));
    assert_eq!(next_relation(&mut b).await.1, alice.id, "bob hears of alice's request");
    assert_eq!(next_relation(&mut a1).await.1, bob.id);
    assert_eq!(next_relation(&mut a2).await.2, RelationState::RequestSent, "every device of the sender");
    assert_eq!(list(&server, &bob, "/api/v1/friends/requests/incoming").await, [alice.id]);
    assert_eq!(list(&server, &alice, "/api/v1/friends/requests/outgoing").await, [bob.id]);

    let (status, body) = act(&server, &bob, "POST", &format!("/api/v1/friends/requests/{}/accept", alice.id)).await;
    assert_eq!((status, relation(&body)), (200, RelationState::Friends));
    assert_eq!(next_relation(&mut a1).await.2, RelationState::Friends);
    assert_eq!(next_relation(&mut b).await.2, RelationState::Friends);
    assert_eq!(list(&server, &alice, "/api/v1/friends").await, [bob.id]);
    assert_eq!(list(&server, &bob, "/api/v1/friends").await, [alice.id]);
    assert!(list(&server, &bob, "/api/v1/friends/requests/incoming").await.is_empty());
}

#[actix_web::test]
async fn decline_cancel_and_remove_end_in_strangers() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    request(&server, &alice, &bob).await;
    let (status, body) = act(&server, &bob, "POST", &format!("/api/v1/friends/requests/{}/decline", alice.id)).await;
    assert_eq!((status, relation(&body)), (200, RelationState::None));
    assert!(list(&server, &alice, "/api/v1/friends/requests/outgoing").await.is_empty());

    request(&server, &alice, &bob).await;
    let (status, body) = act(&server, &alice, "DELETE", &format!("/api/v1/friends/requests/{}", bob.id)).await;
    assert_eq!((status, relation(&body)), (200, RelationState::None));
    assert!(list(&server, &bob, "/api/v1/friends/requests/incoming").await.is_empty());

    server.befriend(&alice, &bob).await;
    let (status, body) = act(&server, &bob, "DELETE", &format!("/api/v1/friends/{}", alice.id)).await;
    assert_eq!((status, relation(&body)), (200, RelationState::None));
    assert!(list(&server, &alice, "/api/v1/friends").await.is_empty());
}

#[actix_web::test]
async fn requesting_someone_who_asked_you_accepts() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    request(&server, &alice, &bob).await;
    let (status, body) = request(&server, &bob, &alice).await;
    assert_eq!((status, relation(&body)), (200, RelationState::Friends));
}

#[actix_web::test]
async fn illegal_transitions_get_clear_errors_and_change_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let accept = |user: &TestUser| format!("/api/v1/friends/requests/{}/accept", user.id);

    let (status, body) = request(&server, &alice, &alice).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("relation_with_yourself")));
    let (status, body) = act(&server, &alice, "POST", &accept(&bob)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("no_request_to_answer")));
    request(&server, &alice, &bob).await;
    let (status, body) = request(&server, &alice, &bob).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("already_requested")), "duplicate request");
    // Accepting your own request: the request is Alice's, toward Bob.
    let (status, body) = act(&server, &alice, "POST", &accept(&bob)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("own_request")));
    let (status, body) = act(&server, &bob, "DELETE", &format!("/api/v1/friends/requests/{}", alice.id)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("no_request_to_cancel")));
    let (status, body) = act(&server, &alice, "DELETE", &format!("/api/v1/friends/{}", bob.id)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("not_friends")));
    let (status, body) = act(&server, &alice, "DELETE", &format!("/api/v1/blocks/{}", carol.id)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("not_blocked")));
    let (status, body) = act(&server, &alice, "POST", "/api/v1/friends/requests/42/accept").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("user_not_found")));

    // After all that, only the one pending request exists.
    assert_eq!(list(&server, &alice, "/api/v1/friends/requests/outgoing").await, [bob.id]);
    assert_eq!(list(&server, &bob, "/api/v1/friends/requests/incoming").await, [alice.id]);
    assert!(list(&server, &alice, "/api/v1/friends").await.is_empty());
    server.befriend(&alice, &bob).await;
    let (status, body) = request(&server, &bob, &alice).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("already_friends")));
}

#[actix_web::test]
async fn only_friends_start_chats_and_history_stays_readable_after_unfriending() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let open = |user: &TestUser, peer: &TestUser| {
        let token = user.tokens.access_token.clone();
        let body = protocol::rest::OpenDirectChat { user_id: peer.id };
        let server = &server;
        async move { server.post("/api/v1/chats/direct", Some(&token), &body).await }
    };
    let (status, body) = open(&alice, &bob).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "strangers cannot start a chat");
    request(&server, &alice, &bob).await;
    let (status, _) = open(&alice, &bob).await;
    assert_eq!(status, 403, "a pending request is not a friendship");

    let chat = server.direct_chat(&alice, &bob).await;
    let mut a = server.connect(&alice).await;
    a.send_message(chat, "m1", "hello friend").await;
    act(&server, &bob, "DELETE", &format!("/api/v1/friends/{}", alice.id)).await;
    let history: protocol::rest::MessagePage =
        server.get_ok(&format!("/api/v1/chats/{chat}/messages"), &bob.tokens.access_token).await;
    assert_eq!(history.messages.len(), 1, "history stays readable");
    let (status, _) = open(&alice, &bob).await;
    assert_eq!(status, 403, "no new chat with a former friend");
}

/// Sends as `client` and returns the error frame the send got.
async fn send_refused(client: &mut common::WsClient, chat: ChatId, id: &str) -> protocol::ws::ErrorFrame {
    client.send(&ClientFrame::Send { client_msg_id: id.into(), chat_id: chat, body: "hi".into() }).await;
    client.next_error().await
}

#[actix_web::test]
async fn a_block_stops_messages_requests_and_search_both_ways_and_history_stays() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    a.send_message(chat, "before", "before the block").await;

    let (status, body) = act(&server, &alice, "PUT", &format!("/api/v1/blocks/{}", bob.id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blocking"], true);
    assert_eq!(body["relation"], "none", "the friendship ended");
    // Bob learns the friendship ended, nothing about the block.
    let (_, who, state) = next_relation(&mut b).await;
    assert_eq!((who, state), (alice.id, RelationState::None));

    let refused = send_refused(&mut b, chat, "blocked-1").await;
    assert_eq!((refused.code, refused.client_msg_id.as_deref()), (ErrorCode::Forbidden, Some("blocked-1")));
    let refused = send_refused(&mut a, chat, "blocker-1").await;
    assert_eq!(refused.code, ErrorCode::Forbidden, "the blocker must unblock to write");
    let (status, body) = request(&server, &bob, &alice).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("blocked_by_user")));
    let (status, body) = request(&server, &alice, &bob).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("you_block_user")));
    let found: SearchResults = server.get_ok("/api/v1/users/search?q=alice", &bob.tokens.access_token).await;
    assert!(found.users.is_empty(), "the blocker is invisible to the blocked user");
    let history: protocol::rest::MessagePage =
        server.get_ok(&format!("/api/v1/chats/{chat}/messages"), &bob.tokens.access_token).await;
    assert_eq!(history.messages.len(), 1, "existing history stays readable, nothing new was stored");
    assert_eq!(list(&server, &alice, "/api/v1/blocks").await, [bob.id]);

    // Unblocking does not restore the friendship, but messages flow again in the existing chat.
    let (status, body) = act(&server, &alice, "DELETE", &format!("/api/v1/blocks/{}", bob.id)).await;
    assert_eq!((status, body["blocking"].as_bool()), (200, Some(false)));
    assert!(list(&server, &alice, "/api/v1/friends").await.is_empty());
    b.send_message(chat, "after", "hi again").await;
}

#[actix_web::test]
async fn relation_changes_made_while_offline_arrive_on_reconnect() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    request(&server, &alice, &bob).await;
    request(&server, &carol, &bob).await;
    act(&server, &alice, "DELETE", &format!("/api/v1/friends/requests/{}", bob.id)).await;

    let mut b = server.connect(&bob).await;
    let synced = b.sync_all(0).await;
    let changes: Vec<(UserId, RelationState)> = synced
        .updates
        .iter()
        .map(|(_, update)| match update {
            Update::Relation { user_id, relation } => (*user_id, *relation),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        changes,
        [
            (alice.id, RelationState::RequestReceived),
            (carol.id, RelationState::RequestReceived),
            (alice.id, RelationState::None),
        ]
    );
    assert_eq!(synced.seqs(), [1, 2, 3]);
}

#[actix_web::test]
async fn lists_page_newest_first_without_gaps() {
    let server = TestServer::start().await;
    let hub = server.register("hub").await;
    let mut others = Vec::new();
    for i in 0..7 {
        let other = server.register(&format!("friend{i}")).await;
        server.befriend(&other, &hub).await;
        others.push(other.id);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
        let page: RelatedUserPage =
            server.get_ok(&format!("/api/v1/friends?limit=3{query}"), &hub.tokens.access_token).await;
        seen.extend(page.users.iter().map(|entry| entry.user.id));
        after = page.next_after;
        if after.is_none() {
            break;
        }
    }
    others.reverse();
    assert_eq!(seen, others, "newest friendship first, each once");
    let (status, body) = server.get("/api/v1/friends?after=garbage", Some(&hub.tokens.access_token)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let (status, _) = server.get("/api/v1/friends?limit=0", Some(&hub.tokens.access_token)).await;
    assert_eq!(status, 422);
}

#[actix_web::test]
async fn profiles_have_a_public_and_an_own_view() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let patch = ProfilePatch { display_name: Some("Alice Liddell".into()), bio: Some("down the rabbit hole".into()) };
    let resp = server
        .call("PATCH", "/api/v1/me", Some(&alice.tokens.access_token), Some(serde_json::to_value(&patch).unwrap()))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.json());
    let own: OwnProfile = serde_json::from_value(resp.json()).unwrap();
    assert_eq!((own.user.display_name.as_str(), own.user.bio.as_str()), ("Alice Liddell", "down the rabbit hole"));
    assert_eq!(own.user.username, "alice", "usernames never change");
    assert!(own.email.is_none() && own.phone.is_none());

    let public: serde_json::Value =
        server.get_ok(&format!("/api/v1/users/{}", alice.id), &bob.tokens.access_token).await;
    assert_eq!(public["bio"], "down the rabbit hole");
    assert!(public.get("email").is_none() && public.get("phone").is_none(), "contact details are private: {public}");
    let view: UserView = serde_json::from_value(public).unwrap();
    assert_eq!(view.display_name, "Alice Liddell");

    for bad in [
        serde_json::json!({"bio": "x".repeat(281)}),
        serde_json::json!({"display_name": ""}),
        serde_json::json!({"username": "mallory"}),
    ] {
        let resp = server.call("PATCH", "/api/v1/me", Some(&alice.tokens.access_token), Some(bad.clone())).await;
        assert!(resp.status == 422 || resp.status == 400, "{bad} -> {}", resp.status);
    }
    let me: OwnProfile = server.get_ok("/api/v1/me", &alice.tokens.access_token).await;
    assert_eq!(me.user.display_name, "Alice Liddell", "refused patches changed nothing");
}

#[actix_web::test]
async fn search_ranks_exact_then_prefix_then_substring_ignoring_case_and_accents() {
    let server = TestServer::start().await;
    let searcher = server.register("searcher").await;
    for (username, display) in
        [("annabel", "Annabel Lee"), ("ann", "Ann"), ("joanna", "Joanna Smith"), ("zoe", "Zoë Ånn"), ("bob", "Bob")]
    {
        let user = server.register(username).await;
        let patch = serde_json::json!({ "display_name": display });
        server.call("PATCH", "/api/v1/me", Some(&user.tokens.access_token), Some(patch)).await;
    }
    let names = |results: SearchResults| results.users.into_iter().map(|hit| hit.user.username).collect::<Vec<_>>();
    let token = &searcher.tokens.access_token;

    let found = names(server.get_ok("/api/v1/users/search?q=ANN", token).await);
    assert_eq!(found[0], "ann", "exact first: {found:?}");
    assert_eq!(&found[1..3], ["annabel", "zoe"], "then prefixes (of a name or a word): {found:?}");
    assert_eq!(&found[3..], ["joanna"], "then substrings: {found:?}");
    assert_eq!(names(server.get_ok("/api/v1/users/search?q=zoe", token).await), ["zoe"], "accents fold");
    assert_eq!(names(server.get_ok("/api/v1/users/search?q=%C3%A5nn%20", token).await)[0], "ann");
    assert_eq!(names(server.get_ok("/api/v1/users/search?q=jo", token).await), ["joanna"], "short prefix");
    assert!(names(server.get_ok("/api/v1/users/search?q=searcher", token).await).is_empty(), "not yourself");
    // Paging.
    let page2 = names(server.get_ok("/api/v1/users/search?q=ann&limit=2&offset=2", token).await);
    assert_eq!(page2, ["zoe", "joanna"]);
    // Results carry the searcher's relation.
    let ann = server.login("ann", "password-ann").await;
    server.post("/api/v1/friends/requests", Some(&ann.access_token), &FriendRequest { user_id: searcher.id }).await;
    let hits: SearchResults = server.get_ok("/api/v1/users/search?q=ann&limit=1", token).await;
    assert_eq!(hits.users[0].relation, RelationState::RequestReceived);
    // Bad queries.
    for bad in ["q=", "q=%20%20", &format!("q={}", "x".repeat(65)), "q=a&limit=0", "q=a&limit=51", "q=a&offset=1001"] {
        let (status, body) = server.get(&format!("/api/v1/users/search?{bad}"), Some(token)).await;
        assert_eq!((status, body["code"].as_str()), (422, Some("invalid_field")), "{bad}");
    }
}

#[actix_web::test]
async fn search_is_rate_limited_per_user() {
    let server = TestServer::start_with(|c| {
        c.limits.searches_per_second = 1;
        c.limits.search_burst = 3;
    })
    .await;
    let alice = server.register("alice").await;
    let token = &alice.tokens.access_token;
    for _ in 0..3 {
        let (status, _) = server.get("/api/v1/users/search?q=bob", Some(token)).await;
        assert_eq!(status, 200);
    }
    let (status, body) = server.get("/api/v1/users/search?q=bob", Some(token)).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
}
