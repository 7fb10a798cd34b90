//! Raft log (WAL) append throughput with fsync, the cost every write pays.
//! Run: `cargo bench -p strata-ingest --bench wal`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use openraft::{CommittedLeaderId, EntryPayload};
use strata_ingest::log_store::LogStore;
use strata_ingest::raft_types::{Entry, LogId, Request};

fn entry(index: u64, payload: usize) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::Write { items: vec![("anonymous".into(), vec![7u8; payload])] }),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut g = c.benchmark_group("wal_append_fsync");
    g.sample_size(20);
    for (name, per_append, size) in [("1 x 100KiB entry", 1usize, 100 << 10), ("64 x 2KiB entries", 64, 2 << 10)] {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let mut next = 1u64;
        g.throughput(Throughput::Bytes((per_append * size) as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let es: Vec<Entry> = (0..per_append as u64).map(|i| entry(next + i, size)).collect();
                next += per_append as u64;
                rt.block_on(store.append_durable(es)).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
