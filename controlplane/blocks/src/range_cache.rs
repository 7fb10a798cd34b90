//! The store gateway's cache of block data: byte ranges of blocks' Parquet
//! files as read for queries (Thanos' caching bucket, in process). Block
//! files never change once written, so an entry is valid until it is
//! evicted; the bound is bytes (`--store.cache.max-bytes`).

use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use object_store::path::Path;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use strata_model::lru::ByteLru;

/// Bookkeeping per entry counted against the budget besides its data.
const ENTRY_OVERHEAD: usize = 128;

/// Counters the cache keeps up to date.
#[derive(Clone, Default)]
pub struct RangeCacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub bytes: Gauge,
}

pub struct RangeCache {
    lru: Mutex<ByteLru<(String, u64, u64), Bytes>>,
    metrics: RangeCacheMetrics,
}

impl std::fmt::Debug for RangeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeCache").field("bytes", &self.metrics.bytes.get()).finish()
    }
}

impl RangeCache {
    pub fn new(max_bytes: usize, metrics: RangeCacheMetrics) -> RangeCache {
        RangeCache { lru: Mutex::new(ByteLru::new(max_bytes)), metrics }
    }

    fn key(path: &Path, range: &Range<u64>) -> (String, u64, u64) {
        (path.to_string(), range.start, range.end)
    }

    /// The bytes of `range` of the object `path`, if cached.
    pub fn get(&self, path: &Path, range: &Range<u64>) -> Option<Bytes> {
        let found = self.lru.lock().ok().and_then(|mut l| l.get(&Self::key(path, range), None));
        match found {
            Some(_) => self.metrics.hits.inc(),
            None => self.metrics.misses.inc(),
        };
        found
    }

    /// Keeps a copy of `data` (a read may hand out a slice of a larger,
    /// coalesced buffer, which must not stay alive uncounted).
    pub fn put(&self, path: &Path, range: &Range<u64>, data: &Bytes) {
        let key = Self::key(path, range);
        let cost = key.0.len() + data.len() + ENTRY_OVERHEAD;
        if let Ok(mut l) = self.lru.lock() {
            l.put(key, Bytes::copy_from_slice(data), cost);
            self.metrics.bytes.set(l.bytes() as i64);
        }
    }
}
