//! Group chats through a real server: creation among friends, roles and
//! what each may do, events in the history that reach every member's
//! devices live and after reconnect, history from the join point, removed
//! members cut off at once, limits, avatars and per-message receipts.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Cursor;

use common::{RawResponse, TestServer, TestUser, WsClient};
use protocol::rest::{ChatList, ChatSummary, MemberList, MessagePage, MessageReceipts, Role};
use protocol::ws::{ChatEvent, ClientFrame, Message, ServerFrame, Update};
use protocol::{ChatId, UserId};
use serde_json::json;

/// `method path` as `user` with an optional JSON body.
async fn call(server: &TestServer, user: &TestUser, method: &str, path: &str, body: serde_json::Value) -> RawResponse {
    let body = (!body.is_null()).then_some(body);
    server.call(method, path, Some(&user.tokens.access_token), body).await
}

/// Creates a group of `owner` with `members`; returns its summary.
async fn create(server: &TestServer, owner: &TestUser, name: &str, members: &[&TestUser]) -> ChatSummary {
    let members: Vec<UserId> = members.iter().map(|user| user.id).collect();
    let response = call(server, owner, "POST", "/api/v1/chats/groups", json!({"name": name, "members": members})).await;
    assert_eq!(response.status, 201, "create group: {}", response.json());
    serde_json::from_value(response.json()).unwrap()
}

/// Users who are all friends of `hub`.
async fn friends_of(server: &TestServer, hub: &TestUser, names: &[&str]) -> Vec<TestUser> {
    let mut users = Vec::new();
    for name in names {
        let user = server.register(name).await;
        server.befriend(hub, &user).await;
        users.push(user);
    }
    users
}

/// The next event message on a device.
async fn next_event(client: &mut WsClient) -> (Message, ChatEvent) {
    client
        .wait_for(|frame| match frame {
            ServerFrame::Update { update: Update::Message { message }, .. } => {
                message.event.clone().map(|event| (message.clone(), event))
            }
            _ => None,
        })
        .await
}

async fn history(server: &TestServer, user: &TestUser, chat: ChatId) -> Vec<Message> {
    let page: MessagePage = server.get_ok(&format!("/api/v1/chats/{chat}/messages"), &user.tokens.access_token).await;
    page.messages
}

/// Alice's group "g" with her friends Bob and Carol, each connected once.
struct Trio {
    server: TestServer,
    alice: TestUser,
    bob: TestUser,
    carol: TestUser,
    group: ChatSummary,
    a: WsClient,
    b: WsClient,
    c: WsClient,
}

async fn trio() -> Trio {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let [bob, carol] = <[TestUser; 2]>::try_from(friends_of(&server, &alice, &["bob", "carol"]).await).unwrap();
    let group = create(&server, &alice, "g", &[&bob, &carol]).await;
    let a = server.connect(&alice).await;
    let b = server.connect(&bob).await;
    let c = server.connect(&carol).await;
    Trio { server, alice, bob, carol, group, a, b, c }
}

fn png() -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::RgbImage::from_pixel(32, 32, image::Rgb([40, 120, 200]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[actix_web::test]
async fn a_group_is_created_among_friends_and_every_device_hears_of_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let [bob, carol] = <[TestUser; 2]>::try_from(friends_of(&server, &alice, &["bob", "carol"]).await).unwrap();
    let mut b1 = server.connect(&bob).await;
    let mut b2 = server.connect(&bob).await;

    let group = create(&server, &alice, "  Hiking club ", &[&bob, &carol]).await;
    let info = group.group.clone().unwrap();
    assert_eq!((info.name.as_str(), info.member_count, info.role), ("Hiking club", 3, Role::Owner));
    assert_eq!(info.owner_id, alice.id);
    assert!(group.members.is_empty(), "a group's summary does not list every member");

    for device in [&mut b1, &mut b2] {
        let (message, event) = next_event(device).await;
        assert_eq!(message.sender_id, alice.id);
        assert_eq!(event, ChatEvent::Created { name: "Hiking club".into(), members: vec![alice.id, bob.id, carol.id] });
    }
    // Carol was offline: the creation is in her log and her chat list.
    let mut c = server.connect(&carol).await;
    let synced = c.sync_all(0).await;
    assert!(matches!(&synced.messages()[0].1.event, Some(ChatEvent::Created { .. })));
    let list: ChatList = server.get_ok("/api/v1/chats", &carol.tokens.access_token).await;
    assert_eq!(list.chats[0].group.as_ref().map(|g| g.role), Some(Role::Member));

    // Everyone posts; everyone gets it once, in one order.
    let (sent, _) = c.send_message(group.id, "c1", "when do we leave?").await;
    assert_eq!(b1.next_message().await.1.id, sent.id);
    assert_eq!(b2.next_message().await.1.id, sent.id);
    let members: MemberList =
        server.get_ok(&format!("/api/v1/chats/{}/members", group.id), &bob.tokens.access_token).await;
    let roles: Vec<(UserId, Role)> = members.members.iter().map(|m| (m.user.id, m.role)).collect();
    let mut expected = vec![(alice.id, Role::Owner), (bob.id, Role::Member), (carol.id, Role::Member)];
    expected.sort_by_key(|(id, _)| id.0);
    assert_eq!(roles, expected);
}

#[actix_web::test]
async fn only_friends_of_the_adder_join_and_bad_requests_change_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let stranger = server.register("stranger").await;
    server.befriend(&alice, &bob).await;

    let refused =
        call(&server, &alice, "POST", "/api/v1/chats/groups", json!({"name": "g", "members": [stranger.id]})).await;
    refused.assert_problem(403, "not_a_friend");
    for name in ["", "   ", &"x".repeat(101), "tab\there"] {
        let response =
            call(&server, &alice, "POST", "/api/v1/chats/groups", json!({"name": name, "members": []})).await;
        response.assert_problem(422, "invalid_field");
    }
    let twice = json!({"name": "g", "members": [bob.id, bob.id]});
    call(&server, &alice, "POST", "/api/v1/chats/groups", twice).await.assert_problem(422, "invalid_field");
    let list: ChatList = server.get_ok("/api/v1/chats", &alice.tokens.access_token).await;
    assert!(list.chats.is_empty(), "no refused request made a group");

    let group = create(&server, &alice, "g", &[&bob]).await;
    let path = format!("/api/v1/chats/{}/members", group.id);
    call(&server, &alice, "POST", &path, json!({"members": [stranger.id]})).await.assert_problem(403, "not_a_friend");
    call(&server, &alice, "POST", &path, json!({"members": [bob.id]})).await.assert_problem(409, "already_member");
    call(&server, &alice, "POST", &path, json!({"members": []})).await.assert_problem(422, "invalid_field");
    let too_many: Vec<String> = (0..257).map(|i| (1_000_000 + i).to_string()).collect();
    call(&server, &alice, "POST", &path, json!({"members": too_many})).await.assert_problem(422, "invalid_field");
    // An outsider learns nothing about the group.
    let peek = call(&server, &stranger, "GET", &format!("/api/v1/chats/{}/members", group.id), json!(null)).await;
    peek.assert_problem(404, "chat_not_found");
    let rename =
        call(&server, &stranger, "PATCH", &format!("/api/v1/chats/{}", group.id), json!({"name": "mine"})).await;
    rename.assert_problem(404, "chat_not_found");
    assert_eq!(history(&server, &alice, group.id).await.len(), 1, "only the creation event");
}

#[actix_web::test]
async fn roles_decide_who_renames_adds_removes_and_owns() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let [bob, carol] = <[TestUser; 2]>::try_from(friends_of(&server, &alice, &["bob", "carol"]).await).unwrap();
    let dave = server.register("dave").await;
    server.befriend(&bob, &dave).await;
    let group = create(&server, &alice, "team", &[&bob, &carol]).await;
    let chat = group.id;
    let mut c = server.connect(&carol).await;
    c.sync_all(0).await;

    // Members neither rename nor add.
    let rename = json!({"name": "bob's team"});
    call(&server, &bob, "PATCH", &format!("/api/v1/chats/{chat}"), rename.clone())
        .await
        .assert_problem(403, "forbidden");
    let add_dave = json!({"members": [dave.id]});
    let members_path = format!("/api/v1/chats/{chat}/members");
    call(&server, &bob, "POST", &members_path, add_dave.clone()).await.assert_problem(403, "forbidden");

    // The owner makes Bob an admin; now he renames and adds his friend.
    let role_path = format!("/api/v1/chats/{chat}/members/{}/role", bob.id);
    let promoted = call(&server, &alice, "PUT", &role_path, json!({"role": "admin"})).await;
    assert_eq!(promoted.status, 200, "{}", promoted.json());
    assert_eq!(next_event(&mut c).await.1, ChatEvent::RoleChanged { user_id: bob.id, role: Role::Admin });
    let renamed = call(&server, &bob, "PATCH", &format!("/api/v1/chats/{chat}"), rename).await;
    assert_eq!(renamed.json()["group"]["name"], "bob's team");
    assert_eq!(next_event(&mut c).await.1, ChatEvent::Renamed { name: "bob's team".into() });
    let added = call(&server, &bob, "POST", &members_path, add_dave).await;
    assert_eq!(added.json()["group"]["member_count"], 4);
    assert_eq!(next_event(&mut c).await.1, ChatEvent::MembersAdded { members: vec![dave.id] });

    // An admin removes members but not the owner, and does not hand out roles.
    let remove = |user: &TestUser| format!("/api/v1/chats/{chat}/members/{}", user.id);
    call(&server, &bob, "DELETE", &remove(&alice), json!(null)).await.assert_problem(403, "forbidden");
    let carol_role = format!("/api/v1/chats/{chat}/members/{}/role", carol.id);
    call(&server, &bob, "PUT", &carol_role, json!({"role": "admin"})).await.assert_problem(403, "forbidden");
    call(&server, &alice, "PUT", &carol_role, json!({"role": "owner"})).await.assert_problem(422, "invalid_field");

    // Ownership moves; the old owner becomes an admin; an owner cannot just leave.
    let transfer =
        call(&server, &alice, "POST", &format!("/api/v1/chats/{chat}/owner"), json!({"user_id": bob.id})).await;
    assert_eq!(transfer.json()["group"]["owner_id"], json!(bob.id));
    assert_eq!(transfer.json()["group"]["role"], "admin");
    assert_eq!(next_event(&mut c).await.1, ChatEvent::OwnerChanged { user_id: bob.id });
    call(&server, &alice, "PUT", &carol_role, json!({"role": "admin"})).await.assert_problem(403, "forbidden");
    call(&server, &bob, "DELETE", &remove(&bob), json!(null)).await.assert_problem(409, "owner_must_transfer");
    let left = call(&server, &alice, "DELETE", &remove(&alice), json!(null)).await;
    assert_eq!(left.status, 204);
    let (message, event) = next_event(&mut c).await;
    assert_eq!((message.sender_id, event), (alice.id, ChatEvent::MemberLeft {}));
    let gone = call(&server, &alice, "DELETE", &remove(&carol), json!(null)).await;
    gone.assert_problem(404, "chat_not_found");
}

#[actix_web::test]
async fn removed_members_stop_receiving_at_once_and_new_ones_see_history_from_joining() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let [bob, carol] = <[TestUser; 2]>::try_from(friends_of(&server, &alice, &["bob", "carol"]).await).unwrap();
    let group = create(&server, &alice, "g", &[&bob]).await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let mut c = server.connect(&carol).await;
    a.send_message(group.id, "a1", "before carol").await;

    let add = json!({"members": [carol.id]});
    call(&server, &alice, "POST", &format!("/api/v1/chats/{}/members", group.id), add).await;
    assert_eq!(next_event(&mut c).await.1, ChatEvent::MembersAdded { members: vec![carol.id] });
    let (after, _) = a.send_message(group.id, "a2", "carol is here").await;
    assert_eq!(c.next_message().await.1.id, after.id);
    let seen_by_carol: Vec<String> = history(&server, &carol, group.id).await.iter().map(|m| m.body.clone()).collect();
    assert_eq!(seen_by_carol, ["carol is here", ""], "newest first: the message, then the event of her joining");

    // Bob is removed: the removal is the last thing he hears.
    let remove_bob = format!("/api/v1/chats/{}/members/{}", group.id, bob.id);
    assert_eq!(call(&server, &alice, "DELETE", &remove_bob, json!(null)).await.status, 204);
    assert_eq!(next_event(&mut b).await.1, ChatEvent::MembersAdded { members: vec![carol.id] });
    assert_eq!(next_event(&mut b).await.1, ChatEvent::MemberRemoved { user_id: bob.id });
    a.send_message(group.id, "a3", "bob is gone").await;
    assert_eq!(next_event(&mut c).await.1, ChatEvent::MemberRemoved { user_id: bob.id });
    assert_eq!(c.next_message().await.1.body, "bob is gone");
    b.ping_pong().await;
    assert!(
        b.backlog().iter().all(|f| !matches!(f, ServerFrame::Update { update: Update::Message { message }, .. } if message.body == "bob is gone")),
        "a removed member receives nothing more"
    );
    b.send(&ClientFrame::Send { client_msg_id: "b1".into(), chat_id: group.id, body: "hello?".into() }).await;
    assert_eq!(b.next_error().await.code, protocol::ws::ErrorCode::ChatNotFound);
    let (status, _) = server.get(&format!("/api/v1/chats/{}/messages", group.id), Some(&bob.tokens.access_token)).await;
    assert_eq!(status, 404, "the history is closed to him");
    let list: ChatList = server.get_ok("/api/v1/chats", &bob.tokens.access_token).await;
    assert!(list.chats.iter().all(|chat| chat.id != group.id));
    // After reconnecting, his replay ends with the removal, nothing later.
    let mut b_again = server.connect(&bob).await;
    let replay = b_again.sync_all(0).await;
    assert!(matches!(replay.messages().last().unwrap().1.event, Some(ChatEvent::MemberRemoved { .. })));
}

#[actix_web::test]
async fn limits_on_members_and_groups_per_user_are_enforced() {
    let server = TestServer::start_with(|config| {
        config.engine.max_group_members = 3;
        config.engine.max_groups_per_user = 2;
    })
    .await;
    let alice = server.register("alice").await;
    let friends = friends_of(&server, &alice, &["bob", "carol", "dave"]).await;
    let everyone: Vec<&TestUser> = friends.iter().collect();
    let body = json!({"name": "big", "members": everyone.iter().map(|u| u.id).collect::<Vec<_>>()});
    call(&server, &alice, "POST", "/api/v1/chats/groups", body).await.assert_problem(409, "group_full");
    let group = create(&server, &alice, "small", &everyone[..2]).await;
    let add = json!({"members": [friends[2].id]});
    call(&server, &alice, "POST", &format!("/api/v1/chats/{}/members", group.id), add)
        .await
        .assert_problem(409, "group_full");

    create(&server, &alice, "second", &[]).await;
    let third = call(&server, &alice, "POST", "/api/v1/chats/groups", json!({"name": "third"})).await;
    third.assert_problem(409, "too_many_groups");
    let list: ChatList = server.get_ok("/api/v1/chats", &alice.tokens.access_token).await;
    assert_eq!(list.chats.len(), 2);
}

#[actix_web::test]
async fn admins_delete_any_message_and_members_only_their_own() {
    let Trio { server, alice, bob: _bob, carol: _carol, group, mut a, mut b, mut c } = trio().await;
    let (spam, _) = b.send_message(group.id, "b1", "spam").await;

    let delete = |request_id: &str| ClientFrame::Delete {
        request_id: request_id.into(),
        chat_id: group.id,
        message_id: spam.id,
        for_everyone: true,
    };
    c.send(&delete("c-del")).await;
    assert_eq!(c.next_error().await.code, protocol::ws::ErrorCode::Forbidden, "a member cannot delete another's");
    a.send(&delete("a-del")).await;
    for device in [&mut a, &mut b, &mut c] {
        let deleted = device
            .wait_for(|frame| match frame {
                ServerFrame::Update { update: Update::Deleted { message_id, for_everyone: true, .. }, .. } => {
                    Some(*message_id)
                }
                _ => None,
            })
            .await;
        assert_eq!(deleted, spam.id);
    }
    let edit = ClientFrame::Edit { request_id: "e".into(), chat_id: group.id, message_id: spam.id, body: "x".into() };
    c.send(&edit).await;
    assert_eq!(c.next_error().await.code, protocol::ws::ErrorCode::MessageNotFound);
    let event_id = history(&server, &alice, group.id).await.last().unwrap().id;
    a.send(&ClientFrame::Delete {
        request_id: "ev".into(),
        chat_id: group.id,
        message_id: event_id,
        for_everyone: true,
    })
    .await;
    assert_eq!(a.next_error().await.code, protocol::ws::ErrorCode::Forbidden, "events stay");
}

#[actix_web::test]
async fn group_receipts_reach_the_sender_and_tell_who_has_read() {
    let Trio { server, alice, bob, carol, group, mut a, mut b, mut c } = trio().await;
    let (question, _) = b.send_message(group.id, "b1", "who's coming?").await;
    c.next_message().await;

    c.send(&ClientFrame::Seen { chat_id: group.id, message_id: question.id }).await;
    let receipt = b
        .wait_for(|frame| match frame {
            ServerFrame::Update { update: Update::Receipt { user_id, seen_up_to, .. }, .. } => {
                Some((*user_id, *seen_up_to))
            }
            _ => None,
        })
        .await;
    assert_eq!(receipt, (carol.id, question.id), "the sender hears of the read live");
    // That read covered Alice's creation event too, so she heard of it; a
    // read that covers only Bob's message does not reach her.
    let (second, _) = b.send_message(group.id, "b2", "bring water").await;
    a.next_message().await;
    c.send(&ClientFrame::Seen { chat_id: group.id, message_id: second.id }).await;
    b.wait_for(|frame| match frame {
        ServerFrame::Update { update: Update::Receipt { seen_up_to, .. }, .. } if *seen_up_to == second.id => Some(()),
        _ => None,
    })
    .await;
    a.ping_pong().await;
    let alice_heard = a.backlog().iter().any(|frame| {
        matches!(frame, ServerFrame::Update { update: Update::Receipt { seen_up_to, .. }, .. } if *seen_up_to == second.id)
    });
    assert!(!alice_heard, "a read reaches only the senders it covers, not every member");

    let path = format!("/api/v1/chats/{}/messages/{}/receipts", group.id, question.id);
    let receipts: MessageReceipts = server.get_ok(&path, &bob.tokens.access_token).await;
    assert_eq!(receipts.seen, vec![carol.id]);
    assert_eq!(receipts.delivered, vec![carol.id], "seen implies delivered; Alice's device never said");
    a.send(&ClientFrame::Received { chat_id: group.id, message_id: second.id }).await;
    a.ping_pong().await;
    let receipts: MessageReceipts = server.get_ok(&path, &bob.tokens.access_token).await;
    let mut both = vec![alice.id, carol.id];
    both.sort_by_key(|id| id.0);
    assert_eq!(receipts.delivered, both);
    let outsider = server.register("outsider").await;
    let (status, _) = server.get(&path, Some(&outsider.tokens.access_token)).await;
    assert_eq!(status, 404);

    // A device of Bob's that was away learns the same from its log.
    let mut b2 = server.connect(&bob).await;
    let replayed = b2.sync_all(0).await.updates.into_iter().find_map(|(_, update)| match update {
        Update::Receipt { user_id, seen_up_to, .. } if user_id == carol.id => Some(seen_up_to),
        _ => None,
    });
    assert_eq!(replayed, Some(second.id), "the log resolves to Carol's current watermark");
}

#[actix_web::test]
async fn typing_reaches_the_other_members_only() {
    let Trio { server: _server, alice: _alice, bob, carol: _carol, group, mut a, mut b, mut c } = trio().await;
    b.send(&ClientFrame::Typing { chat_id: group.id }).await;
    for device in [&mut a, &mut c] {
        let typist = device
            .wait_for(|frame| match frame {
                ServerFrame::Typing { chat_id, user_id, .. } if *chat_id == group.id => Some(*user_id),
                _ => None,
            })
            .await;
        assert_eq!(typist, bob.id);
    }
    b.ping_pong().await;
    assert!(b.backlog().iter().all(|frame| !matches!(frame, ServerFrame::Typing { .. })), "not to the typist");
}

#[actix_web::test]
async fn admins_set_the_group_avatar() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let [bob] = <[TestUser; 1]>::try_from(friends_of(&server, &alice, &["bob"]).await).unwrap();
    let group = create(&server, &alice, "g", &[&bob]).await;
    let path = format!("/api/v1/chats/{}/avatar", group.id);
    let upload = |user: &TestUser| {
        let auth = format!("Bearer {}", user.tokens.access_token);
        let server = &server;
        let path = path.clone();
        async move { server.request(awc::http::Method::PUT, &path, &[("authorization", auth.as_str())], png()).await }
    };
    upload(&bob).await.assert_problem(403, "forbidden");
    let set = upload(&alice).await;
    assert_eq!(set.status, 200, "{}", set.json());
    let small = set.json()["group"]["avatar"]["small"].as_str().unwrap().to_string();
    let (status, content_type, _) = server.get_raw(&small, None).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    let mut b = server.connect(&bob).await;
    let events: Vec<ChatEvent> = b.sync_all(0).await.messages().into_iter().filter_map(|(_, m)| m.event).collect();
    assert_eq!(events.last(), Some(&ChatEvent::AvatarChanged { avatar: true }));

    let replaced = upload(&alice).await;
    let (old_status, _, _) = server.get_raw(&small, None).await;
    assert_eq!((replaced.status, old_status), (200, 404), "the replaced avatar's files are deleted");
    let removed = call(&server, &alice, "DELETE", &path, json!(null)).await;
    assert_eq!(removed.json()["group"]["avatar"], json!(null));
}

#[actix_web::test]
async fn concurrent_senders_produce_one_order_for_every_member() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let others = friends_of(&server, &alice, &["bob", "carol", "dave", "erin"]).await;
    let group = create(&server, &alice, "busy", &others.iter().collect::<Vec<_>>()).await;
    let mut everyone = vec![alice.clone()];
    everyone.extend(others);
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for user in &everyone {
        senders.push((user.username.clone(), server.connect(user).await));
        readers.push(server.connect(user).await);
    }
    const EACH: usize = 20;
    let sends = senders.iter_mut().map(|(name, client)| async move {
        for i in 0..EACH {
            client.send_message(group.id, &format!("{name}-{i}"), &format!("{name} says {i}")).await;
        }
    });
    futures_util::future::join_all(sends).await;

    let total = EACH * everyone.len();
    let mut orders = Vec::new();
    for reader in &mut readers {
        let mut seen = Vec::with_capacity(total);
        while seen.len() < total {
            let (_, message) = reader.next_message().await;
            if message.event.is_none() {
                seen.push(message.id);
            }
        }
        orders.push(seen);
    }
    let path = format!("/api/v1/chats/{}/messages?limit=200", group.id);
    let page: MessagePage = server.get_ok(&path, &alice.tokens.access_token).await;
    let mut stored: Vec<_> = page.messages.iter().filter(|m| m.event.is_none()).map(|m| m.id).collect();
    stored.reverse();
    assert_eq!(stored.len(), total, "every send stored once");
    for order in &orders {
        assert_eq!(order, &stored, "every member sees the chat's one order, which is ID order");
    }
    assert!(stored.windows(2).all(|pair| pair[0].0 < pair[1].0));
}
