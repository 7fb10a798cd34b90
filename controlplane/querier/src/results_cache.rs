//! Where the query frontend keeps results: in this process (an LRU bounded
//! by bytes, `--query.results-cache.max-bytes`) or in memcached shared by
//! several queriers (`--query.results-cache.memcached.addresses`). Either
//! way a cache failure only costs time: a lookup that fails is a miss, a
//! store that fails is dropped, both counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use strata_model::lru::ByteLru;

use crate::memcached::Memcached;

/// Settings of the results cache.
#[derive(Debug, Clone)]
pub struct ResultsCacheConfig {
    /// Bytes the in-process cache holds at most (0: no in-process cache).
    pub max_bytes: usize,
    /// memcached servers (`host:port`); when given they replace the
    /// in-process cache.
    pub memcached: Vec<String>,
    /// Deadline of one memcached operation.
    pub memcached_timeout: Duration,
    /// Largest value stored (memcached's default item size is 1 MiB).
    pub max_item_bytes: usize,
    /// How long an entry is kept.
    pub ttl: Duration,
}

impl Default for ResultsCacheConfig {
    fn default() -> Self {
        ResultsCacheConfig {
            max_bytes: 128 << 20,
            memcached: Vec::new(),
            memcached_timeout: Duration::from_millis(200),
            max_item_bytes: 1 << 20,
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    backend: &'static str,
    result: &'static str,
}

#[derive(Clone)]
struct CacheMetrics {
    lookups: Family<OutcomeLabels, Counter>,
    stores: Family<OutcomeLabels, Counter>,
    bytes: Gauge,
    items: Gauge,
}

/// Per-entry bookkeeping counted against the byte budget besides the value.
const ENTRY_OVERHEAD: usize = 96;

type Lru = ByteLru<String, Arc<[u8]>>;

enum Backend {
    InProcess(Mutex<Lru>),
    Memcached(Memcached),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::InProcess(_) => "inprocess",
            Backend::Memcached(_) => "memcached",
        }
    }
}

/// A results cache.
pub struct ResultsCache {
    backend: Backend,
    ttl: Duration,
    max_item_bytes: usize,
    metrics: CacheMetrics,
}

impl ResultsCache {
    /// `None` when configured off (no memcached and `max_bytes` 0). Its
    /// metrics are registered in `registry`.
    pub fn new(cfg: &ResultsCacheConfig, registry: &mut Registry) -> Option<ResultsCache> {
        let backend = if !cfg.memcached.is_empty() {
            Backend::Memcached(Memcached::new(&cfg.memcached, cfg.memcached_timeout, cfg.max_item_bytes))
        } else if cfg.max_bytes > 0 {
            Backend::InProcess(Mutex::new(Lru::new(cfg.max_bytes)))
        } else {
            return None;
        };
        let metrics = CacheMetrics {
            lookups: Family::default(),
            stores: Family::default(),
            bytes: Gauge::default(),
            items: Gauge::default(),
        };
        registry.register(
            "results_cache_lookups",
            "Results cache lookups by backend and result: hit, miss, error (cache unreachable or broken: bypassed)",
            metrics.lookups.clone(),
        );
        registry.register(
            "results_cache_stores",
            "Results cache stores by backend and result: stored, too_large (over the item size), error",
            metrics.stores.clone(),
        );
        registry.register("results_cache_bytes", "Bytes held by the in-process results cache", metrics.bytes.clone());
        registry.register("results_cache_items", "Entries in the in-process results cache", metrics.items.clone());
        let backend_name = backend.name();
        for result in ["hit", "miss", "error"] {
            let _ = metrics.lookups.get_or_create(&OutcomeLabels { backend: backend_name, result });
        }
        for result in ["stored", "too_large", "error"] {
            let _ = metrics.stores.get_or_create(&OutcomeLabels { backend: backend_name, result });
        }
        Some(ResultsCache { backend, ttl: cfg.ttl, max_item_bytes: cfg.max_item_bytes, metrics })
    }

    fn count_lookup(&self, result: &'static str) {
        self.metrics.lookups.get_or_create(&OutcomeLabels { backend: self.backend.name(), result }).inc();
    }

    fn count_store(&self, result: &'static str) {
        self.metrics.stores.get_or_create(&OutcomeLabels { backend: self.backend.name(), result }).inc();
    }

    /// The value under `key`; `None` on a miss or when the cache fails.
    pub async fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        let found = match &self.backend {
            Backend::InProcess(lru) => lru.lock().ok().and_then(|mut l| l.get(&key.to_string(), Some(self.ttl))),
            Backend::Memcached(mc) => match mc.get(key).await {
                Ok(v) => v.map(Arc::from),
                Err(e) => {
                    tracing::warn!(error = %e, "results cache lookup failed; answering without it");
                    self.count_lookup("error");
                    return None;
                }
            },
        };
        self.count_lookup(if found.is_some() { "hit" } else { "miss" });
        found
    }

    /// Whether a value of about `bytes` would be stored; when not, the
    /// refusal is counted (so callers skip encoding it).
    pub fn accepts(&self, bytes: usize) -> bool {
        let fits = bytes <= self.max_item_bytes;
        if !fits {
            self.count_store("too_large");
        }
        fits
    }

    /// Stores `value` under `key` (values over the item size are skipped).
    pub async fn put(&self, key: &str, value: Vec<u8>) {
        if value.len() > self.max_item_bytes {
            self.count_store("too_large");
            return;
        }
        let result = match &self.backend {
            Backend::InProcess(lru) => match lru.lock() {
                Ok(mut l) => {
                    let cost = key.len() + value.len() + ENTRY_OVERHEAD;
                    l.put(key.to_string(), value.into(), cost);
                    self.metrics.bytes.set(l.bytes() as i64);
                    self.metrics.items.set(l.len() as i64);
                    "stored"
                }
                Err(_) => "error",
            },
            Backend::Memcached(mc) => match mc.set(key, &value, self.ttl).await {
                Ok(true) => "stored",
                Ok(false) => "too_large",
                Err(e) => {
                    tracing::warn!(error = %e, "results cache store failed");
                    "error"
                }
            },
        };
        self.count_store(result);
    }
}
