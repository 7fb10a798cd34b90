//! The ingester's write path after decoding: series validation, appending
//! to the head (XOR chunks, out-of-order and duplicate rules), reading back,
//! and snapshot/restore — on arbitrary remote write 1.0 content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use strata_head::{Head, HeadConfig};
use strata_model::{Limits, MatchOp, Matcher, validate_series};
use strata_proto::prometheus::WriteRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(mut req) = WriteRequest::decode(data) else { return };
    let limits = Limits { max_series: 64, ..Limits::default() };
    req.timeseries.retain(|ts| validate_series(&ts.labels, &limits).is_ok());
    let mut head = Head::new(HeadConfig { chunk_samples: 4, limits, ..HeadConfig::default() });
    let out = head.append("t", &req);
    let total: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
    assert_eq!((out.samples_written + out.samples_rejected) as usize, total);
    let Ok(all) = Matcher::new("__name__", MatchOp::Regex, ".+") else { return };
    let got = head.select("t", &[all.clone()], i64::MIN, i64::MAX, false);
    for (_, samples) in &got {
        assert!(samples.windows(2).all(|w| w[0].0 < w[1].0), "samples in strict time order");
    }
    let snap = head.snapshot().expect("snapshot");
    let mut restored = Head::new(HeadConfig::default());
    restored.restore(&snap).expect("restore");
    assert_eq!(restored.select("t", &[all], i64::MIN, i64::MAX, false), got);
});
