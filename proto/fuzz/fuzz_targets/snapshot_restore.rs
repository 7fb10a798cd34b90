//! State-machine snapshot restore on arbitrary bytes (`snapshot.bin`):
//! a damaged snapshot is refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_ingest::head::HeadConfig;
use strata_ingest::state_machine::StateMachine;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("snapshot.bin"), data).expect("write snapshot");
    let _ = StateMachine::open(dir.path().to_path_buf(), HeadConfig::default(), "shard-0");
});
