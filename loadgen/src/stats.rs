//! Latency and status bookkeeping shared by the traffic and bench modes.

use std::collections::BTreeMap;
use std::time::Duration;

/// Latencies (µs) and status counts.
#[derive(Default, Clone)]
pub struct Recorder {
    latencies_us: Vec<u64>,
    pub statuses: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn record(&mut self, status: &str, latency: Duration) {
        self.latencies_us.push(latency.as_micros() as u64);
        *self.statuses.entry(status.to_string()).or_default() += 1;
    }

    pub fn count(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub fn errors(&self) -> u64 {
        self.statuses.iter().filter(|(s, _)| !s.starts_with('2')).map(|(_, n)| *n).sum()
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.latencies_us.extend_from_slice(&other.latencies_us);
        for (k, v) in &other.statuses {
            *self.statuses.entry(k.clone()).or_default() += v;
        }
    }

    /// Quantile `q` (0..1) of the recorded latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        quantile_us(&self.latencies_us, q)
    }
}

/// Nearest-rank quantile of a list of microsecond latencies.
pub fn quantile_us(values: &[u64], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Duration::from_micros(v[rank - 1])
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile_us(&v, 0.5), Duration::from_micros(50));
        assert_eq!(quantile_us(&v, 0.95), Duration::from_micros(95));
        assert_eq!(quantile_us(&v, 1.0), Duration::from_micros(100));
        assert_eq!(quantile_us(&[], 0.5), Duration::ZERO);
        let mut r = Recorder::default();
        r.record("200", Duration::from_millis(1));
        r.record("500", Duration::from_millis(3));
        assert_eq!(r.errors(), 1);
        assert_eq!(r.count(), 2);
    }
}
