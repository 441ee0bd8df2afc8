//! User search over 100,000 users: latency percentiles of `search_users`
//! for the query shapes people type (2-letter prefix, 3–5 letter fragment,
//! whole name). Run with `cargo bench -p storage --bench search`.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use storage::{NewUser, StorageConfig, Stores, UserSearch, search_key};

/// Users in the table.
const USERS: i64 = 100_000;
/// Timed searches per query shape.
const SEARCHES: usize = 1_000;

const FIRST: [&str; 40] = [
    "Anna", "Ben", "Chloé", "David", "Émile", "Fatima", "George", "Hana", "Ivan", "Jade", "Karim", "Léa", "Mateo",
    "Nora", "Oscar", "Paula", "Quentin", "Rosa", "Sven", "Tariq", "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoë",
    "Amélie", "Björn", "Carmen", "Dmitri", "Elif", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Kai", "Lucía", "Mira",
    "Noah",
];
const LAST: [&str; 25] = [
    "Smith", "García", "Müller", "Rossi", "Kowalski", "Nguyen", "Silva", "Dubois", "Jensen", "Novak", "Öztürk",
    "Tanaka", "Kim", "Ivanova", "Andersen", "Costa", "Fischer", "Moreau", "Haddad", "Larsen", "Petrov", "Santos",
    "Weber", "Yilmaz", "Zhang",
];

fn name(i: i64) -> (String, String) {
    let first = FIRST[(i % 40) as usize];
    let last = LAST[((i / 40) % 25) as usize];
    (
        format!("{}{}{}", first.to_lowercase(), last.to_lowercase(), i).replace(['é', 'ë', 'ü', 'ö', 'í'], "e"),
        format!("{first} {last}"),
    )
}

async fn populate(stores: &Stores) {
    // Concurrent inserts keep the writer busy; SQLite serialises them.
    let mut next = 1;
    while next <= USERS {
        let batch: Vec<_> = (next..(next + 256).min(USERS + 1))
            .map(|id| {
                let (username, display_name) = name(id);
                let users = stores.users.clone();
                tokio::spawn(async move {
                    users
                        .create_user(NewUser {
                            id,
                            username_key: username.clone(),
                            username,
                            display_name,
                            password_hash: "$argon2id$bench".into(),
                            pepper_version: 1,
                            created_at_ms: id,
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        next += batch.len() as i64;
        for task in batch {
            task.await.unwrap();
        }
    }
}

/// Builds the `i`th query of a shape.
type QueryFor = fn(usize) -> String;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stores = storage::open(&StorageConfig::default(), dir.path()).unwrap();
    let started = Instant::now();
    runtime.block_on(populate(&stores));
    println!("populated {USERS} users in {:.1} s", started.elapsed().as_secs_f64());

    let shapes: [(&str, QueryFor); 3] = [
        ("2-letter prefix", |i| search_key(&FIRST[i % 40].chars().take(2).collect::<String>())),
        ("3-5 letter fragment", |i| {
            let last = search_key(LAST[i % 25]);
            let len = 3 + i % 3;
            last.chars().skip(i % 2).take(len).collect()
        }),
        ("full name", |i| search_key(&format!("{} {}", FIRST[i % 40], LAST[(i / 40) % 25]))),
    ];
    println!("{:<22} {:>9} {:>9} {:>9} {:>9} {:>8}", "query shape", "p50", "p95", "p99", "max", "hits");
    for (label, query) in shapes {
        let mut latencies = Vec::with_capacity(SEARCHES);
        let mut hits = 0;
        for i in 0..SEARCHES {
            let search = UserSearch { key: query(i), searcher: 0, limit: 20, offset: 0 };
            let started = Instant::now();
            hits += runtime.block_on(stores.users.search_users(search)).unwrap().len();
            latencies.push(started.elapsed());
        }
        latencies.sort();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        println!(
            "{label:<22} {:>9} {:>9} {:>9} {:>9} {:>8.1}",
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.95)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies[latencies.len() - 1]),
            hits as f64 / SEARCHES as f64
        );
    }
}
