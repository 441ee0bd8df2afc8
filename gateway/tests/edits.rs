//! Editing and deleting messages: every device converges, live and after
//! reconnect; only what the rules allow is changed.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, WsClient};
use protocol::rest::MessagePage;
use protocol::ws::{ClientFrame, ErrorCode, ErrorFrame, Message, ServerFrame, Update};
use protocol::{ChatId, MessageId};

/// Sends an `edit` or `delete` and waits for its answer.
async fn request(client: &mut WsClient, frame: ClientFrame) -> Result<(), ErrorFrame> {
    let wanted = match &frame {
        ClientFrame::Edit { request_id, .. } | ClientFrame::Delete { request_id, .. } => request_id.clone(),
        other => panic!("not a change: {other:?}"),
    };
    client.send(&frame).await;
    client
        .wait_for(|frame| match frame {
            ServerFrame::Done { request_id } if *request_id == wanted => Some(Ok(())),
            ServerFrame::Error(error) if error.request_id.as_deref() == Some(wanted.as_str()) => {
                Some(Err(error.clone()))
            }
            _ => None,
        })
        .await
}

fn edit(chat_id: ChatId, message_id: MessageId, body: &str) -> ClientFrame {
    ClientFrame::Edit { request_id: format!("edit-{body}"), chat_id, message_id, body: body.into() }
}

fn delete(chat_id: ChatId, message_id: MessageId, for_everyone: bool) -> ClientFrame {
    ClientFrame::Delete { request_id: format!("del-{message_id}-{for_everyone}"), chat_id, message_id, for_everyone }
}

async fn next_edited(client: &mut WsClient) -> Message {
    client
        .wait_for(|frame| match frame {
            ServerFrame::Update { update: Update::Edited { message }, .. } => Some(message.clone()),
            _ => None,
        })
        .await
}

async fn next_deleted(client: &mut WsClient) -> (MessageId, bool) {
    client
        .wait_for(|frame| match frame {
            ServerFrame::Update { update: Update::Deleted { message_id, for_everyone, .. }, .. } => {
                Some((*message_id, *for_everyone))
            }
            _ => None,
        })
        .await
}

async fn history(server: &TestServer, chat: ChatId, token: &str) -> Vec<Message> {
    server.get_ok::<MessagePage>(&format!("/api/v1/chats/{chat}/messages"), token).await.messages
}

#[actix_web::test]
async fn an_edit_reaches_every_device_and_history_shows_the_current_text() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut phone = server.connect(&alice).await;
    let mut laptop = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let (sent, _) = phone.send_message(chat, "m1", "helo").await;

    request(&mut phone, edit(chat, sent.id, "hello")).await.unwrap();
    for device in [&mut phone, &mut laptop, &mut b] {
        let edited = next_edited(device).await;
        assert_eq!((edited.id, edited.body.as_str()), (sent.id, "hello"));
        assert!(edited.edited_at.is_some(), "shown as edited");
    }
    let stored = history(&server, chat, &bob.tokens.access_token).await;
    assert_eq!(stored[0].body, "hello");
    assert!(stored[0].edited_at.is_some());
}

#[actix_web::test]
async fn a_device_offline_during_edits_and_deletion_converges_on_reconnect() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let (first, _) = a.send_message(chat, "m1", "first draft").await;
    let (second, _) = a.send_message(chat, "m2", "to be deleted").await;
    let b = server.connect(&bob).await;
    let seen = b.hello_seq();
    b.close().await;

    request(&mut a, edit(chat, first.id, "second draft")).await.unwrap();
    request(&mut a, edit(chat, first.id, "final text")).await.unwrap();
    request(&mut a, delete(chat, second.id, true)).await.unwrap();

    let mut b = server.connect(&bob).await;
    let synced = b.sync_all(seen).await;
    assert_eq!(synced.seqs(), (seen + 1..=seen + 3).collect::<Vec<_>>(), "one update per change, no gap");
    let edits: Vec<&str> = synced
        .updates
        .iter()
        .filter_map(|(_, u)| match u {
            Update::Edited { message } => Some(message.body.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(edits, ["final text", "final text"], "each edit resolves to the current text");
    assert!(synced.updates.iter().any(|(_, u)| matches!(
        u,
        Update::Deleted { message_id, for_everyone: true, .. } if *message_id == second.id
    )));
    // A full replay from scratch never shows the deleted text.
    let all = b.sync_all(0).await;
    assert!(all.messages().iter().all(|(_, m)| m.body != "to be deleted"));
}

#[actix_web::test]
async fn deleting_for_everyone_leaves_a_tombstone_on_every_device() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let (sent, _) = a.send_message(chat, "m1", "oops, wrong chat").await;
    request(&mut a, delete(chat, sent.id, true)).await.unwrap();
    assert_eq!(next_deleted(&mut a).await, (sent.id, true));
    assert_eq!(next_deleted(&mut b).await, (sent.id, true));
    for token in [&alice.tokens.access_token, &bob.tokens.access_token] {
        let stored = history(&server, chat, token).await;
        assert_eq!(stored.len(), 1, "the tombstone stays in place");
        assert!(stored[0].deleted && stored[0].body.is_empty(), "the text is gone: {:?}", stored[0]);
    }
    let again = request(&mut a, edit(chat, sent.id, "resurrect")).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::MessageNotFound, "a tombstone cannot be edited");
}

#[actix_web::test]
async fn deleting_for_me_hides_it_on_my_devices_only() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut a2 = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let (from_bob, _) = b.send_message(chat, "m1", "a message alice wants gone").await;
    let (kept, _) = b.send_message(chat, "m2", "this one stays").await;

    request(&mut a, delete(chat, from_bob.id, false)).await.unwrap();
    assert_eq!(next_deleted(&mut a2).await, (from_bob.id, false), "alice's other device hides it too");
    let mine: Vec<MessageId> = history(&server, chat, &alice.tokens.access_token).await.iter().map(|m| m.id).collect();
    assert_eq!(mine, [kept.id]);
    let theirs = history(&server, chat, &bob.tokens.access_token).await;
    assert_eq!(theirs.len(), 2, "bob still sees both");
    assert_eq!(theirs[1].body, "a message alice wants gone");
    // Bob heard nothing about it.
    b.ping_pong().await;
    assert!(b.backlog().iter().all(|f| !matches!(f, ServerFrame::Update { update: Update::Deleted { .. }, .. })));
}

#[actix_web::test]
async fn changes_the_rules_forbid_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mallory = server.register("mallory").await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let mut m = server.connect(&mallory).await;
    let (sent, _) = a.send_message(chat, "m1", "original").await;

    let not_author = request(&mut b, edit(chat, sent.id, "bob rewrites alice")).await.unwrap_err();
    assert_eq!(not_author.code, ErrorCode::Forbidden);
    let not_author = request(&mut b, delete(chat, sent.id, true)).await.unwrap_err();
    assert_eq!(not_author.code, ErrorCode::Forbidden);
    let outsider = request(&mut m, edit(chat, sent.id, "intrusion")).await.unwrap_err();
    assert_eq!(outsider.code, ErrorCode::ChatNotFound);
    let outsider = request(&mut m, delete(chat, sent.id, false)).await.unwrap_err();
    assert_eq!(outsider.code, ErrorCode::ChatNotFound);
    let missing = request(&mut a, edit(chat, MessageId(42), "nothing")).await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::MessageNotFound);
    let empty = request(&mut a, edit(chat, sent.id, "  ")).await.unwrap_err();
    assert_eq!(empty.code, ErrorCode::InvalidField);
    a.send(&ClientFrame::Edit { request_id: String::new(), chat_id: chat, message_id: sent.id, body: "x".into() })
        .await;
    assert_eq!(a.next_error().await.code, ErrorCode::InvalidField, "a request_id is required");

    let stored = history(&server, chat, &alice.tokens.access_token).await;
    assert_eq!((stored[0].body.as_str(), stored[0].edited_at), ("original", None), "nothing changed");
}

#[actix_web::test]
async fn a_message_can_be_edited_a_bounded_number_of_times() {
    let server = TestServer::start().await;
    let (alice, _bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let (sent, _) = a.send_message(chat, "m1", "v0").await;
    for i in 1..=protocol::limits::MAX_EDITS_PER_MESSAGE {
        request(&mut a, edit(chat, sent.id, &format!("v{i}"))).await.unwrap();
    }
    let closed = request(&mut a, edit(chat, sent.id, "one too many")).await.unwrap_err();
    assert_eq!(closed.code, ErrorCode::EditClosed);
    // Deleting it for everyone is still allowed.
    request(&mut a, delete(chat, sent.id, true)).await.unwrap();
}
