//! The durable write under every send: `append_message` for a 1:1 chat
//! (message + two update-log entries in one transaction), SQLite with
//! `synchronous = normal` (survives kill -9) and `full` (survives power
//! loss); and for a 1,024-member group (message + 1,024 log entries).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicI64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use storage::{NewGroup, NewMessage, NewUser, StorageConfig, Stores, Synchronous};

fn user(id: i64) -> NewUser {
    NewUser {
        id,
        username: format!("user{id}"),
        username_key: format!("user{id}"),
        display_name: format!("User {id}"),
        password_hash: "$argon2id$bench".into(),
        pepper_version: 1,
        created_at_ms: 0,
    }
}

/// A chat of `members` users (a 1:1 chat for two, else a group); returns
/// its ID and members.
async fn setup(stores: &Stores, members: i64) -> (i64, Vec<i64>) {
    let ids: Vec<i64> = (1..=members).collect();
    for id in &ids {
        stores.users.create_user(user(*id)).await.unwrap();
    }
    if members == 2 {
        return (stores.chats.direct_chat(1, 2, 10, 0).await.unwrap().id, ids);
    }
    let group = NewGroup {
        id: 10,
        name: "bench".into(),
        owner: 1,
        members: ids.clone(),
        created_at_ms: 0,
        max_groups_per_user: 10,
    };
    let event = NewMessage {
        id: 11,
        chat_id: 10,
        sender_id: 1,
        client_msg_id: "event:11".into(),
        body: String::new(),
        sent_at_ms: 11,
        event: Some("{}".into()),
    };
    stores.chats.create_group(group, event).await.unwrap().unwrap();
    (10, ids)
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("append_message");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("normal", Synchronous::Normal, 2),
        ("full", Synchronous::Full, 2),
        ("group_1024", Synchronous::Normal, 1_024),
    ];
    for (name, synchronous, members) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::Sqlite { path: "bench.sqlite3".into(), synchronous };
        let stores = storage::open(&config, dir.path()).unwrap();
        let (chat, audience) = runtime.block_on(setup(&stores, members));
        let next = AtomicI64::new(1_000);
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let message = NewMessage {
                    id,
                    chat_id: chat,
                    sender_id: 1,
                    client_msg_id: id.to_string(),
                    body: "a typical short chat message of about sixty bytes".into(),
                    sent_at_ms: id,
                    event: None,
                };
                stores.chats.append_message(message, &audience).await.unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
