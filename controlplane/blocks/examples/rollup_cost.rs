//! What a raw block's hourly rollup costs its writer: a 2-hour block of
//! SERIES counters at 15 s (the ingester's flush, `encode_block`), timed
//! whole and for the rollup's fold alone, with each file's size.
//!
//!   cargo run --release -p strata-blocks --example rollup_cost [SERIES] [RUNS]
//!
//! (Results in docs/benchmarks.md, "Storage".)

use std::time::Instant;

use strata_blocks::{ROLLUP_RESOLUTION_MS, SeriesData, encode_block, windows_of_samples};
use strata_model::Labels;

fn main() {
    let mut args = std::env::args().skip(1);
    let series: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let start = 1_800_000_000_000i64; // on a 2-hour boundary
    let input: Vec<SeriesData> = (0..series)
        .map(|i| {
            let mut v = (i * 13 % 1000) as f64;
            let samples = (0..480i64)
                .map(|k| {
                    v += ((k as usize * 7 + i) % 5) as f64;
                    (start + k * 15_000, v)
                })
                .collect();
            SeriesData {
                labels: Labels::from_pairs(vec![
                    ("__name__".into(), format!("metric_{}", i % 20)),
                    ("instance".into(), format!("host-{:04}", i / 20)),
                ]),
                samples,
            }
        })
        .collect();
    let samples: usize = input.iter().map(|s| s.samples.len()).sum();
    let (mut whole, mut fold) = (Vec::new(), Vec::new());
    let mut sizes = (0, 0, 0);
    for _ in 0..runs {
        let t = Instant::now();
        let block = encode_block(&input).expect("encode");
        whole.push(t.elapsed().as_secs_f64() * 1e3);
        sizes = (block.series.len(), block.samples.len(), block.rollup.len());
        let t = Instant::now();
        let mut windows = Vec::new();
        for s in &input {
            windows_of_samples(&s.samples, ROLLUP_RESOLUTION_MS, &mut windows);
        }
        fold.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(windows.len(), series * 3, "every series spans three hourly windows");
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{series} series, {samples} samples: encode_block {:.1} ms (median of {runs}), of which the hourly fold {:.1} ms",
        median(&mut whole),
        median(&mut fold)
    );
    println!(
        "bytes: series.parquet {}, samples.parquet {}, rollup-1h.parquet {} ({:.2} % of samples.parquet)",
        sizes.0,
        sizes.1,
        sizes.2,
        sizes.2 as f64 * 100.0 / sizes.1 as f64
    );
}
