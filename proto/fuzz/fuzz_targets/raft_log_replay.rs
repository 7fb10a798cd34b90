//! Raft log replay on arbitrary segment bytes: opening a log whose segment
//! is corrupt, truncated or hostile ends in a clear error or a usable log
//! (torn tail cut), never a panic or an unchecked allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::storage::RaftLogReader;
use strata_ingest::log_store::LogStore;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(format!("wal-{:020}.log", 1)), data).expect("write segment");
    let Ok(mut log) = LogStore::open(dir.path()) else { return };
    // The log store reads under `block_in_place`, as on the ingester's runtime.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
    let _ = rt.block_on(log.try_get_log_entries(0..64));
});
