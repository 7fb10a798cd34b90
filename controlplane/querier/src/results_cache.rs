//! Where the query frontend keeps results: in this process (an LRU bounded
//! by bytes, `--query.results-cache.max-bytes`) or in memcached shared by
//! several queriers (`--query.results-cache.memcached.addresses`). Either
//! way a cache failure only costs time: a lookup that fails is a miss, a
//! store that fails is dropped, both counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
            Backend::InProcess(lru) => lru.lock().ok().and_then(|mut l| l.get(key, self.ttl)),
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
                    l.put(key, value.into());
                    self.metrics.bytes.set(l.bytes as i64);
                    self.metrics.items.set(l.map.len() as i64);
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

/// Per-entry bookkeeping counted against the byte budget besides the value.
const ENTRY_OVERHEAD: usize = 96;

struct LruEntry {
    value: Arc<[u8]>,
    tick: u64,
    stored: Instant,
}

/// Least recently used entries go first once `bytes` would exceed `max_bytes`.
struct Lru {
    map: HashMap<String, LruEntry>,
    order: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
    max_bytes: usize,
}

impl Lru {
    fn new(max_bytes: usize) -> Lru {
        Lru { map: HashMap::new(), order: BTreeMap::new(), tick: 0, bytes: 0, max_bytes }
    }

    fn cost(key: &str, value: &[u8]) -> usize {
        key.len() + value.len() + ENTRY_OVERHEAD
    }

    fn get(&mut self, key: &str, ttl: Duration) -> Option<Arc<[u8]>> {
        let expired = self.map.get(key)?.stored.elapsed() > ttl;
        if expired {
            self.remove(key);
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        let e = self.map.get_mut(key)?;
        self.order.remove(&e.tick);
        e.tick = tick;
        self.order.insert(tick, key.to_string());
        Some(e.value.clone())
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e.tick);
            self.bytes -= Self::cost(key, &e.value);
        }
    }

    fn put(&mut self, key: &str, value: Arc<[u8]>) {
        self.remove(key);
        let cost = Self::cost(key, &value);
        if cost > self.max_bytes {
            return;
        }
        while self.bytes + cost > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some(e) = self.map.remove(&oldest) {
                self.bytes -= Self::cost(&oldest, &e.value);
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.to_string());
        self.map.insert(key.to_string(), LruEntry { value, tick: self.tick, stored: Instant::now() });
        self.bytes += cost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_stays_within_its_bytes_and_drops_the_least_recent() {
        let budget = 4 * (2 + 100 + ENTRY_OVERHEAD);
        let mut lru = Lru::new(budget);
        for k in ["k1", "k2", "k3", "k4"] {
            lru.put(k, vec![0u8; 100].into());
        }
        let day = Duration::from_secs(86_400);
        assert!(lru.get("k1", day).is_some(), "k1 used: k2 is now the least recent");
        lru.put("k5", vec![0u8; 100].into());
        assert!(lru.bytes <= budget);
        assert!(lru.get("k2", day).is_none());
        for k in ["k1", "k3", "k4", "k5"] {
            assert!(lru.get(k, day).is_some(), "{k}");
        }
        // Replacing a key does not count it twice; an oversize value is not kept.
        lru.put("k5", vec![1u8; 100].into());
        assert_eq!(lru.bytes, budget);
        lru.put("huge", vec![0u8; budget].into());
        assert!(lru.get("huge", day).is_none());
        assert_eq!(lru.bytes, budget);
        // Expired entries are misses and free their bytes.
        assert!(lru.get("k1", Duration::ZERO).is_none());
        assert_eq!(lru.bytes, budget - (2 + 100 + ENTRY_OVERHEAD));
    }
}
