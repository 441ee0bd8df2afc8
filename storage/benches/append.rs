//! The durable write under every send: `append_message` for a 1:1 chat
//! (message + two update-log entries in one transaction), SQLite with
//! `synchronous = normal` (survives kill -9) and `full` (survives power loss).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicI64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use storage::{NewMessage, NewUser, StorageConfig, Stores, Synchronous};

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

async fn setup(stores: &Stores) -> i64 {
    stores.users.create_user(user(1)).await.unwrap();
    stores.users.create_user(user(2)).await.unwrap();
    stores.chats.direct_chat(1, 2, 10, 0).await.unwrap().id
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("append_message");
    group.throughput(Throughput::Elements(1));
    for (name, synchronous) in [("normal", Synchronous::Normal), ("full", Synchronous::Full)] {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::Sqlite { path: "bench.sqlite3".into(), synchronous };
        let stores = storage::open(&config, dir.path()).unwrap();
        let chat = runtime.block_on(setup(&stores));
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
                stores.chats.append_message(message, &[1, 2]).await.unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
