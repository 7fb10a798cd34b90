//! Untrusted remote write bodies: snappy framing, 1.0 and 2.0 protobuf,
//! symbol table validation and 2.0 → 1.0 conversion; the borrowed
//! samples-only reader (`write_view`) agrees with prost wherever it answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use strata_proto::prometheus::WriteRequest;
use strata_proto::remote_write as rw;
use strata_proto::write_v2;
use strata_proto::write_view::WriteView;

fuzz_target!(|data: &[u8]| {
    let limit = 1 << 20;
    let _ = rw::decode_v1(data, limit);
    if let Ok(v2) = rw::decode_v2(data, limit) {
        let _ = rw::v2_to_v1(&v2);
    }
    // Already-decompressed bodies exercise the protobuf decoders directly.
    if let Ok(v1) = WriteRequest::decode(data) {
        let v2 = rw::v1_to_v2(&v1);
        let back = rw::v2_to_v1(&v2);
        assert_eq!(back.timeseries.len(), v1.timeseries.len());
    }
    if let Some(view) = WriteView::parse(data) {
        let v1 = WriteRequest::decode(data).expect("what the view reads, prost reads");
        assert!(v1.metadata.is_empty());
        assert_eq!(view.len(), v1.timeseries.len());
        for ((labels, samples), ts) in view.series().zip(&v1.timeseries) {
            assert!(ts.exemplars.is_empty() && ts.histograms.is_empty());
            let want: Vec<(&str, &str)> = ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
            assert_eq!(labels, want.as_slice());
            let bits = |s: &[strata_proto::prometheus::Sample]| -> Vec<(i64, u64)> {
                s.iter().map(|x| (x.timestamp, x.value.to_bits())).collect()
            };
            assert_eq!(bits(samples), bits(&ts.samples));
        }
    }
    if let Ok(v2) = write_v2::Request::decode(data) {
        let body = rw::encode_v2(&v2);
        if let Ok(checked) = rw::decode_v2(&body, usize::MAX) {
            let _ = rw::v2_to_v1(&checked);
        }
    }
});
