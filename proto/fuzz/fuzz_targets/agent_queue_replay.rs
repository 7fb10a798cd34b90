//! The agent's disk queue replayed from arbitrary segment and cursor
//! bytes (current or pre-conversion segments): a torn or hostile queue opens (cutting the damage) or fails with
//! an error; reading it back never panics or allocates unchecked sizes.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strata_agent::queue::{DiskQueue, FsyncPolicy, QueueOptions};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let split = data.first().map(|b| *b as usize % 24).unwrap_or(0).min(data.len());
    // The high bit of the first byte picks a segment from before the shared
    // record framing (converted on open) or a current one.
    let ext = if data.first().is_some_and(|b| b & 0x80 != 0) { "seg" } else { "rec" };
    std::fs::write(dir.path().join(format!("{:020}.{ext}", 1)), &data[split..]).expect("segment");
    std::fs::write(dir.path().join("cursor-rw"), &data[..split]).expect("cursor");
    let opts = QueueOptions { max_bytes: 1 << 20, segment_bytes: 64 << 10, fsync: FsyncPolicy::Never };
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    rt.block_on(async {
        let Ok(q) = DiskQueue::open(dir.path(), opts, &["rw".to_string()]) else { return };
        let mut r = q.reader(0);
        for _ in 0..16 {
            match r.next_timeout(Duration::from_millis(1)).await {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    });
});
