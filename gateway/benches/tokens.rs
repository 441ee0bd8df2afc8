//! Authenticating a request: verifying an access token the node has not
//! seen (the Ed25519 check) against one it verified before (a SHA-256 and
//! a cache lookup), as every REST call and reconnect of a device does.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gateway::auth::TokenKeys;

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let keys = TokenKeys::load_or_create(dir.path()).unwrap();
    let mut next_user = 0;
    let mut group = c.benchmark_group("access_token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("first_sight", |b| {
        b.iter_batched(
            || {
                next_user += 1;
                keys.issue(next_user, 1, Duration::from_secs(900)).unwrap()
            },
            |token| keys.verify(&token).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let token = keys.issue(0, 1, Duration::from_secs(900)).unwrap();
    keys.verify(&token).unwrap();
    group.bench_function("seen_before", |b| b.iter(|| keys.verify(&token).unwrap()));
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
