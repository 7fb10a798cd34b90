//! Strata's Raft log (log_store.rs) side by side with TiKV's `raft-engine`
//! on the same entries: fsynced appends and reopening (recovery) a log.
//!
//! raft-engine is only compiled for this comparison:
//! `cargo bench -p strata-ingest --features bench-raft-engine --bench raftlog_compare`
//!
//! Both sides store the same bincode-encoded `Entry` values whose payloads
//! are pseudo-random bytes (real entries carry snappy-compressed writes, so
//! raft-engine's LZ4 batch compression is switched off: it would only cost
//! CPU). Each append is one durable write (fsync) of the batch, which is how
//! the ingester uses its log: one append per group-committed Raft round.

use std::path::Path;

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use openraft::{CommittedLeaderId, EntryPayload};
use protobuf::well_known_types::BytesValue;
use raft_engine::{Config, Engine, LogBatch, MessageExt, ReadableSize};
use strata_ingest::log_store::LogStore;
use strata_ingest::raft_types::{Entry, LogId, Request};

const REGION: u64 = 1;

/// raft-engine stores protobuf messages; a `BytesValue` holding the entry's
/// index (8 bytes, big endian) followed by the bincode-encoded entry.
struct Framed;

impl MessageExt for Framed {
    type Entry = BytesValue;

    fn index(e: &BytesValue) -> u64 {
        let mut idx = [0u8; 8];
        idx.copy_from_slice(&e.value[..8]);
        u64::from_be_bytes(idx)
    }
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    // xorshift64*: incompressible, like a snappy body.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn entry(index: u64, body: &[u8]) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::WriteSnappy { items: vec![("anonymous".into(), body.to_vec())] }),
    }
}

fn framed(e: &Entry) -> BytesValue {
    let mut value = e.log_id.index.to_be_bytes().to_vec();
    value.extend(bincode::serialize(e).expect("entry encodes"));
    let mut m = BytesValue::new();
    m.value = value;
    m
}

fn engine_config(dir: &Path) -> Config {
    Config {
        dir: dir.to_string_lossy().into_owned(),
        batch_compression_threshold: ReadableSize(0),
        ..Default::default()
    }
}

fn raft_engine_append(engine: &Engine, entries: &[Entry]) {
    let mut batch = LogBatch::with_capacity(entries.len());
    let framed: Vec<BytesValue> = entries.iter().map(framed).collect();
    batch.add_entries::<Framed>(REGION, &framed).expect("batch accepts entries");
    engine.write(&mut batch, true).expect("raft-engine write");
}

/// (label, entries per append, payload bytes per entry)
const SHAPES: [(&str, usize, usize); 3] =
    [("1 x 100KiB entry", 1, 100 << 10), ("64 x 2KiB entries", 64, 2 << 10), ("1 x 4KiB entry", 1, 4 << 10)];

/// Benchmarks `append` on batches of `per_append` consecutive entries.
fn appends(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    per_append: usize,
    body: &[u8],
    mut append: impl FnMut(Vec<Entry>),
) {
    let mut next = 1u64;
    g.bench_function(name, |b| {
        b.iter_batched(
            || {
                let es: Vec<Entry> = (0..per_append as u64).map(|i| entry(next + i, body)).collect();
                next += per_append as u64;
                es
            },
            &mut append,
            BatchSize::SmallInput,
        )
    });
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut g = c.benchmark_group("raftlog_append_fsync");
    g.sample_size(30);
    for (shape, per_append, size) in SHAPES {
        let body = payload(size as u64, size);
        g.throughput(Throughput::Bytes((per_append * size) as u64));

        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(dir.path()).expect("open log");
        appends(&mut g, &format!("strata/{shape}"), per_append, &body, |es| {
            rt.block_on(store.append_durable(es)).expect("append")
        });

        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(engine_config(dir.path())).expect("open raft-engine");
        appends(&mut g, &format!("raft-engine/{shape}"), per_append, &body, |es| raft_engine_append(&engine, &es));
    }
    g.finish();
}

/// Reopen a log holding 64 MiB of entries (64 KiB each): what a restarted
/// ingester pays before it can replay and rejoin.
fn reopen(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut g = c.benchmark_group("raftlog_reopen_64MiB");
    g.sample_size(10);
    let body = payload(7, 64 << 10);
    let batches = 64u64;
    let per_batch = 16u64;
    g.throughput(Throughput::Bytes(batches * per_batch * (64 << 10)));

    let strata_dir = tempfile::tempdir().expect("tempdir");
    {
        let store = LogStore::open(strata_dir.path()).expect("open log");
        for b in 0..batches {
            let es: Vec<Entry> = (0..per_batch).map(|i| entry(1 + b * per_batch + i, &body)).collect();
            rt.block_on(store.append_durable(es)).expect("append");
        }
    }
    g.bench_function("strata", |b| b.iter(|| LogStore::open(strata_dir.path()).expect("reopen")));

    let engine_dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = Engine::open(engine_config(engine_dir.path())).expect("open raft-engine");
        for b in 0..batches {
            let es: Vec<Entry> = (0..per_batch).map(|i| entry(1 + b * per_batch + i, &body)).collect();
            raft_engine_append(&engine, &es);
        }
    }
    g.bench_function("raft-engine", |b| {
        b.iter(|| {
            let engine = Engine::open(engine_config(engine_dir.path())).expect("reopen raft-engine");
            assert_eq!(engine.last_index(REGION), Some(batches * per_batch));
        })
    });
    g.finish();
}

criterion_group!(benches, append, reopen);
criterion_main!(benches);
