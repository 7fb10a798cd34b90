//! PromQL text from users: parsing and evaluating any string must return a
//! value or an error, never panic (instant and short range queries over a
//! small fixed data set, with tight limits).
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strata_promql::labels::Labels;
use strata_promql::{Engine, EngineOptions, FloatHistogram, MemoryStorage, Series};

fn storage() -> &'static MemoryStorage {
    static S: OnceLock<MemoryStorage> = OnceLock::new();
    S.get_or_init(|| {
        let mut s = MemoryStorage::new();
        for (name, env, le) in [
            ("up", "a", ""),
            ("up", "b", ""),
            ("req_total", "a", ""),
            ("lat_bucket", "a", "0.1"),
            ("lat_bucket", "a", "+Inf"),
        ] {
            let mut l = vec![("__name__".to_string(), name.to_string()), ("env".to_string(), env.to_string())];
            if !le.is_empty() {
                l.push(("le".to_string(), le.to_string()));
            }
            let samples =
                (0..40).map(|k| (k * 15_000, (k * 3 % 7) as f64 + if le == "+Inf" { 10.0 } else { 0.0 })).collect();
            s.add(Series::floats(Labels::new(l), samples));
        }
        // Native histograms: exponential (growing, with a reset) and custom buckets.
        let exp = |k: i64| FloatHistogram {
            schema: (k % 3) as i32,
            count: (k % 20) as f64 * 3.0,
            sum: (k % 20) as f64 * 1.5,
            zero_threshold: 0.001,
            zero_count: (k % 20) as f64,
            positive: [(1, (k % 20) as f64), (3, (k % 20) as f64)].into(),
            ..Default::default()
        };
        let nhcb = |k: i64| FloatHistogram {
            schema: -53,
            custom_values: vec![0.1, 1.0],
            count: k as f64 * 2.0,
            sum: k as f64,
            positive: [(0, k as f64), (2, k as f64)].into(),
            ..Default::default()
        };
        for (env, make) in [("a", &exp as &dyn Fn(i64) -> FloatHistogram), ("b", &nhcb)] {
            let l = vec![("__name__".to_string(), "lat".to_string()), ("env".to_string(), env.to_string())];
            let histograms = (0..40).map(|k| (k * 15_000, Arc::new(make(k)))).collect();
            s.add(Series { labels: Labels::new(l), samples: Vec::new(), histograms });
        }
        s
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.len() > 512 {
        return;
    }
    let Ok(expr) = strata_promql::parse(text) else { return };
    let engine = Engine::new(EngineOptions {
        max_samples: 200_000,
        timeout: Duration::from_secs(2),
        default_subquery_step: Duration::from_secs(60),
        ..EngineOptions::default()
    });
    let _ = engine.instant(storage(), &expr, 300_000);
    let _ = engine.range(storage(), &expr, 0, 600_000, 30_000);
});
