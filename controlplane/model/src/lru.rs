//! A least-recently-used map bounded by bytes: the querier's results cache
//! and the store gateway's cache of block data both keep one.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

struct Entry<V> {
    value: V,
    cost: usize,
    tick: u64,
    stored: Instant,
}

/// Entries cost what the caller says (their bytes plus bookkeeping); the
/// least recently used go first once the total would exceed `max_bytes`.
pub struct ByteLru<K, V> {
    map: HashMap<K, Entry<V>>,
    order: BTreeMap<u64, K>,
    tick: u64,
    bytes: usize,
    max_bytes: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> ByteLru<K, V> {
    pub fn new(max_bytes: usize) -> Self {
        ByteLru { map: HashMap::new(), order: BTreeMap::new(), tick: 0, bytes: 0, max_bytes }
    }

    /// The value under `key`, now the most recently used; `None` if absent
    /// or stored longer than `max_age` ago (then dropped).
    pub fn get(&mut self, key: &K, max_age: Option<Duration>) -> Option<V> {
        let expired = max_age.is_some_and(|age| self.map.get(key).is_some_and(|e| e.stored.elapsed() > age));
        if expired {
            self.remove(key);
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        let e = self.map.get_mut(key)?;
        self.order.remove(&e.tick);
        e.tick = tick;
        self.order.insert(tick, key.clone());
        Some(e.value.clone())
    }

    pub fn remove(&mut self, key: &K) {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e.tick);
            self.bytes -= e.cost;
        }
    }

    /// Stores `value` at `cost` bytes, evicting the least recently used
    /// entries to make room; a value costing more than the whole budget is
    /// not kept.
    pub fn put(&mut self, key: K, value: V, cost: usize) {
        self.remove(&key);
        if cost > self.max_bytes {
            return;
        }
        while self.bytes + cost > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some(e) = self.map.remove(&oldest) {
                self.bytes -= e.cost;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, Entry { value, cost, tick: self.tick, stored: Instant::now() });
        self.bytes += cost;
    }

    /// Bytes held (the entries' costs).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_bytes_and_drops_the_least_recent() {
        let mut lru: ByteLru<&str, u32> = ByteLru::new(400);
        for (i, k) in ["k1", "k2", "k3", "k4"].iter().enumerate() {
            lru.put(k, i as u32, 100);
        }
        assert_eq!(lru.get(&"k1", None), Some(0), "k1 used: k2 is now the least recent");
        lru.put("k5", 4, 100);
        assert_eq!(lru.bytes(), 400);
        assert_eq!(lru.get(&"k2", None), None);
        for k in ["k1", "k3", "k4", "k5"] {
            assert!(lru.get(&k, None).is_some(), "{k}");
        }
        // Replacing a key does not count it twice; an oversize value is not kept.
        lru.put("k5", 5, 100);
        assert_eq!((lru.bytes(), lru.len()), (400, 4));
        lru.put("huge", 6, 401);
        assert_eq!(lru.get(&"huge", None), None);
        assert_eq!(lru.bytes(), 400);
        // Expired entries are misses and free their bytes.
        assert_eq!(lru.get(&"k1", Some(Duration::ZERO)), None);
        assert_eq!(lru.bytes(), 300);
        // One entry bigger than several: as many go as needed.
        lru.put("big", 7, 350);
        assert_eq!((lru.bytes(), lru.len()), (350, 1));
    }
}
