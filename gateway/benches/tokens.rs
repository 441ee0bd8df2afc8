//! Authenticating a request: verifying an access token the node has not
//! seen (the Ed25519 check), alone and 64 at once on one thread as in a
//! connection storm (the checks are batched), against one it verified
//! before (a SHA-256 and a cache lookup), as every REST call and reconnect
//! of a device does.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use gateway::auth::TokenKeys;

/// Fresh tokens verified together in `at_once`.
const AT_ONCE: usize = 64;

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let keys = &TokenKeys::load_or_create(dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut next_user = 0;
    let mut fresh = |count: usize| -> Vec<String> {
        (0..count)
            .map(|_| {
                next_user += 1;
                keys.issue(next_user, 1, Duration::from_secs(900)).unwrap()
            })
            .collect()
    };
    let mut group = c.benchmark_group("access_token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("first_sight", |b| {
        b.to_async(&runtime).iter_batched(
            || fresh(1).pop().unwrap(),
            |token| async move { keys.verify(&token).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(AT_ONCE as u64));
    group.bench_function("first_sight_64_at_once", |b| {
        b.to_async(&runtime).iter_batched(
            || fresh(AT_ONCE),
            |tokens| async move {
                let claims = join_all(tokens.iter().map(|token| keys.verify(token))).await;
                assert!(claims.iter().all(Option::is_some));
            },
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1));
    let token = fresh(1).pop().unwrap();
    runtime.block_on(keys.verify(&token)).unwrap();
    group.bench_function("seen_before", |b| b.to_async(&runtime).iter(|| async { keys.verify(&token).await.unwrap() }));
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
