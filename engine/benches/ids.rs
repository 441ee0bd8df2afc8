//! Snowflake ID generation, the other step under every send.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::cluster::LeaseKeeper;
use engine::cluster::local::FixedGenerator;
use engine::{Clock, IdGenerator, SystemClock};

fn next_id(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stores = storage::open(&storage::StorageConfig::default(), dir.path()).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let keeper = runtime.block_on(LeaseKeeper::start(Arc::new(FixedGenerator::new(1).unwrap()))).unwrap();
    let ids = runtime.block_on(IdGenerator::start(keeper.lease().clone(), clock, stores.meta)).unwrap();
    let mut group = c.benchmark_group("ids");
    group.throughput(Throughput::Elements(1));
    group.bench_function("next_id", |b| b.to_async(&runtime).iter(|| async { ids.next_id().await.unwrap() }));
    group.finish();
}

criterion_group!(benches, next_id);
criterion_main!(benches);
