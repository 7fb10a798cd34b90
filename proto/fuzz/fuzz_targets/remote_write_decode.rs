//! Untrusted remote write bodies: snappy framing, 1.0 and 2.0 protobuf,
//! symbol table validation and 2.0 → 1.0 conversion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use strata_proto::prometheus::WriteRequest;
use strata_proto::remote_write as rw;
use strata_proto::write_v2;

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
    if let Ok(v2) = write_v2::Request::decode(data) {
        let body = rw::encode_v2(&v2);
        if let Ok(checked) = rw::decode_v2(&body, usize::MAX) {
            let _ = rw::v2_to_v1(&checked);
        }
    }
});
