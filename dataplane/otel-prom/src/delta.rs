//! Delta → cumulative conversion.
//!
//! Prometheus stores cumulative counters; OTLP senders may report deltas.
//! [`DeltaToCumulative`] keeps a running total per stream (metric identity +
//! all attributes) and turns each delta point into the cumulative value
//! since the stream was first seen. Streams not updated for `max_stale` are
//! forgotten, and at most `max_streams` are tracked, so memory is bounded;
//! a forgotten stream restarts from zero, which PromQL's `rate()` treats as
//! a counter reset.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Identity of a stream: hash of resource, scope, metric name and point attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey(pub u64);

impl StreamKey {
    pub fn of<T: Hash>(parts: T) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        parts.hash(&mut h);
        StreamKey(h.finish())
    }
}

#[derive(Debug, Clone)]
enum Acc {
    Sum(f64),
    Histogram { bounds: Vec<f64>, counts: Vec<u64>, count: u64, sum: f64 },
}

#[derive(Debug, Clone)]
struct Stream {
    acc: Acc,
    /// End time (ns) of the last point added.
    last_end_ns: u64,
    last_seen_ms: i64,
}

/// Why a delta point was not converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaDrop {
    /// The point ends before (or exactly when) the last accepted one did.
    OutOfOrder,
    /// Too many streams are tracked already.
    TooManyStreams,
}

/// A cumulative histogram produced from deltas.
#[derive(Debug, Clone, PartialEq)]
pub struct CumulativeHistogram {
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

/// One delta histogram point.
#[derive(Debug, Clone, Copy)]
pub struct HistogramDelta<'a> {
    pub bounds: &'a [f64],
    pub counts: &'a [u64],
    pub count: u64,
    pub sum: f64,
}

/// Running totals for delta streams.
pub struct DeltaToCumulative {
    streams: HashMap<StreamKey, Stream>,
    max_streams: usize,
    max_stale_ms: i64,
    last_gc_ms: i64,
}

impl DeltaToCumulative {
    pub fn new(max_streams: usize, max_stale: std::time::Duration) -> Self {
        DeltaToCumulative {
            streams: HashMap::new(),
            max_streams,
            max_stale_ms: max_stale.as_millis() as i64,
            last_gc_ms: 0,
        }
    }

    /// Number of streams currently tracked.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Forgets streams idle for longer than `max_stale` (checked at most once a second).
    pub fn gc(&mut self, now_ms: i64) {
        if now_ms - self.last_gc_ms < 1000 {
            return;
        }
        self.last_gc_ms = now_ms;
        let limit = now_ms - self.max_stale_ms;
        self.streams.retain(|_, s| s.last_seen_ms >= limit);
    }

    fn slot(&mut self, key: StreamKey, end_ns: u64, now_ms: i64, init: Acc) -> Result<&mut Stream, DeltaDrop> {
        let len = self.streams.len();
        let max = self.max_streams;
        let entry = self.streams.entry(key);
        let stream = match entry {
            std::collections::hash_map::Entry::Occupied(o) => {
                let s = o.into_mut();
                if end_ns <= s.last_end_ns {
                    return Err(DeltaDrop::OutOfOrder);
                }
                s
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                if len >= max {
                    return Err(DeltaDrop::TooManyStreams);
                }
                v.insert(Stream { acc: init, last_end_ns: 0, last_seen_ms: now_ms })
            }
        };
        stream.last_end_ns = end_ns;
        stream.last_seen_ms = now_ms;
        Ok(stream)
    }

    /// Adds a delta sum point; returns the cumulative total.
    pub fn add_sum(&mut self, key: StreamKey, end_ns: u64, delta: f64, now_ms: i64) -> Result<f64, DeltaDrop> {
        let s = self.slot(key, end_ns, now_ms, Acc::Sum(0.0))?;
        match &mut s.acc {
            Acc::Sum(total) => {
                *total += delta;
                Ok(*total)
            }
            acc => {
                // Same stream identity changed type: restart it.
                *acc = Acc::Sum(delta);
                Ok(delta)
            }
        }
    }

    /// Adds a delta histogram point; returns the cumulative histogram. A
    /// change of bucket bounds restarts the stream (a counter reset).
    pub fn add_histogram(
        &mut self,
        key: StreamKey,
        end_ns: u64,
        delta: HistogramDelta<'_>,
        now_ms: i64,
    ) -> Result<CumulativeHistogram, DeltaDrop> {
        let HistogramDelta { bounds, counts, count, sum } = delta;
        let fresh = || Acc::Histogram { bounds: bounds.to_vec(), counts: vec![0; counts.len()], count: 0, sum: 0.0 };
        let s = self.slot(key, end_ns, now_ms, fresh())?;
        let reset = match &s.acc {
            Acc::Histogram { bounds: b, counts: c, .. } => b.as_slice() != bounds || c.len() != counts.len(),
            Acc::Sum(_) => true,
        };
        if reset {
            s.acc = fresh();
        }
        let Acc::Histogram { counts: acc_counts, count: acc_count, sum: acc_sum, .. } = &mut s.acc else {
            unreachable!("reset above guarantees a histogram accumulator")
        };
        for (a, c) in acc_counts.iter_mut().zip(counts) {
            *a = a.saturating_add(*c);
        }
        *acc_count = acc_count.saturating_add(count);
        *acc_sum += sum;
        Ok(CumulativeHistogram { counts: acc_counts.clone(), count: *acc_count, sum: *acc_sum })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sums_accumulate_and_reject_out_of_order() {
        let mut d = DeltaToCumulative::new(10, Duration::from_secs(300));
        let k = StreamKey::of(("a", 1));
        assert_eq!(d.add_sum(k, 10, 5.0, 0), Ok(5.0));
        assert_eq!(d.add_sum(k, 20, 3.0, 0), Ok(8.0));
        assert_eq!(d.add_sum(k, 20, 3.0, 0), Err(DeltaDrop::OutOfOrder));
        assert_eq!(d.add_sum(k, 15, 3.0, 0), Err(DeltaDrop::OutOfOrder));
        assert_eq!(d.add_sum(k, 30, 0.5, 0), Ok(8.5));
        let other = StreamKey::of(("b", 1));
        assert_eq!(d.add_sum(other, 10, 1.0, 0), Ok(1.0));
    }

    #[test]
    fn histograms_accumulate_and_reset_on_new_bounds() {
        let mut d = DeltaToCumulative::new(10, Duration::from_secs(300));
        let k = StreamKey::of("h");
        let h = d
            .add_histogram(k, 1, HistogramDelta { bounds: &[1.0, 2.0], counts: &[1, 2, 3], count: 6, sum: 10.0 }, 0)
            .unwrap();
        assert_eq!(h, CumulativeHistogram { counts: vec![1, 2, 3], count: 6, sum: 10.0 });
        let h = d
            .add_histogram(k, 2, HistogramDelta { bounds: &[1.0, 2.0], counts: &[1, 0, 1], count: 2, sum: 4.0 }, 0)
            .unwrap();
        assert_eq!(h, CumulativeHistogram { counts: vec![2, 2, 4], count: 8, sum: 14.0 });
        let h =
            d.add_histogram(k, 3, HistogramDelta { bounds: &[5.0], counts: &[1, 1], count: 2, sum: 7.0 }, 0).unwrap();
        assert_eq!(h, CumulativeHistogram { counts: vec![1, 1], count: 2, sum: 7.0 });
    }

    #[test]
    fn bounded_and_forgets_idle_streams() {
        let mut d = DeltaToCumulative::new(2, Duration::from_secs(60));
        assert!(d.add_sum(StreamKey(1), 1, 1.0, 0).is_ok());
        assert!(d.add_sum(StreamKey(2), 1, 1.0, 0).is_ok());
        assert_eq!(d.add_sum(StreamKey(3), 1, 1.0, 0), Err(DeltaDrop::TooManyStreams));
        d.add_sum(StreamKey(2), 2, 1.0, 50_000).unwrap();
        d.gc(70_000);
        assert_eq!(d.len(), 1);
        // Stream 1 was forgotten and restarts from zero.
        assert_eq!(d.add_sum(StreamKey(1), 5, 2.0, 70_000), Ok(2.0));
    }
}
