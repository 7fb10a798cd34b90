//! The Parquet block reader on corrupt files: a damaged `series.parquet`
//! or `samples.parquet` gives an error, never a panic.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use object_store::ObjectStore;
use strata_blocks::{BlockIndex, BlockMeta, BlockStats, Compaction, FileInfo, StrataMeta};

fuzz_target!(|data: &[u8]| {
    let meta = |samples: u64| BlockMeta {
        ulid: "b-1".into(),
        min_time: 0,
        max_time: 10,
        stats: BlockStats { num_samples: 0, num_series: 0 },
        compaction: Compaction { level: 1, sources: vec![] },
        version: 1,
        strata: StrataMeta {
            schema_version: 2,
            tenant: "t".into(),
            shard: "s".into(),
            raft_log_range: None,
            files: vec![FileInfo { path: "samples.parquet".into(), size: samples }],
        },
        downsample: Default::default(),
    };
    let _ = BlockIndex::from_series_file(meta(data.len() as u64), bytes::Bytes::copy_from_slice(data));
    // The same bytes as samples.parquet behind a valid index of 4 series.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("t/b-1")).expect("dir");
    std::fs::write(dir.path().join("t/b-1/samples.parquet"), data).expect("write");
    let series: Vec<strata_blocks::SeriesData> = (0..4)
        .map(|i| strata_blocks::SeriesData {
            labels: strata_model::Labels::from_pairs(vec![("__name__".into(), format!("m{i}"))]),
            samples: vec![(i, i as f64)],
        })
        .collect();
    let Ok(encoded) = strata_blocks::encode_block(&series) else { return };
    let Ok(index) = BlockIndex::from_series_file(meta(data.len() as u64), bytes::Bytes::from(encoded.series)) else {
        return;
    };
    let Ok(fs) = object_store::local::LocalFileSystem::new_with_prefix(dir.path()) else { return };
    let store: Arc<dyn ObjectStore> = Arc::new(fs);
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let _ = rt.block_on(index.read_samples(store, &[0, 2, 3], i64::MIN, i64::MAX));
});
