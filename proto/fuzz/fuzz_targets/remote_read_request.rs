//! Remote read requests as the querier receives them: snappy decompressed
//! under the size guard, then decoded; never a panic, never an allocation
//! beyond the guard.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use strata_proto::prometheus::ReadRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = strata_proto::remote_write::decompress(data, 4 << 20) {
        assert!(raw.len() <= 4 << 20);
        let _ = ReadRequest::decode(raw.as_slice());
    }
    let _ = ReadRequest::decode(data);
});
