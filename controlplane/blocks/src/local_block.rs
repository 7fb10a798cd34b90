//! Blocks on local disk before their upload. An ingester encodes a cut block
//! once, into the bucket's layout (`<root>/<tenant>/<id>/series.parquet`,
//! `samples.parquet`, `meta.json`), serves reads from those files while
//! object storage is away, and uploads them as they are: large files in
//! parts, every request with a timeout sized to its bytes.

use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::{BlockError, BlockIndex, BlockMeta, BlockSeries, Compaction, encode_block_files};

/// A block written under a local root directory.
#[derive(Debug, Clone)]
pub struct LocalBlock {
    pub meta: BlockMeta,
    pub dir: PathBuf,
    /// Size of its three files.
    pub bytes: u64,
}

/// How blocks are uploaded.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Files larger than this go up as a multipart upload of parts this
    /// size (S3 needs ≥ 5 MiB for every part but the last).
    pub part_size: usize,
    /// Each request may take this long plus its bytes at `min_throughput`.
    pub base_timeout: Duration,
    /// Bytes per second a request must at least achieve.
    pub min_throughput: u64,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions { part_size: 16 << 20, base_timeout: Duration::from_secs(10), min_throughput: 1 << 20 }
    }
}

impl UploadOptions {
    /// The timeout of one request carrying `bytes`.
    pub fn request_timeout(&self, bytes: usize) -> Duration {
        self.base_timeout + Duration::from_secs_f64(bytes as f64 / self.min_throughput.max(1) as f64)
    }
}

/// What one upload sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadStats {
    pub bytes: u64,
    pub requests: u64,
    /// Files sent as multipart uploads.
    pub multipart_files: u64,
}

fn io_err(path: &FsPath, source: std::io::Error) -> BlockError {
    BlockError::Io { path: path.display().to_string(), source }
}

fn write_synced(path: &FsPath, data: &[u8]) -> Result<(), BlockError> {
    let mut f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(|e| io_err(path, e))
}

fn sync_dir(path: &FsPath) -> Result<(), BlockError> {
    std::fs::File::open(path).and_then(|d| d.sync_all()).map_err(|e| io_err(path, e))
}

/// Encodes a level-1 block into `<root>/<tenant>/<id>/`, atomically: the
/// files are written and synced in a temporary directory that is then
/// renamed into place (replacing an older copy) and the parent synced.
pub fn write_local_block<S: BlockSeries>(
    root: &FsPath,
    tenant: &str,
    shard: &str,
    id: &str,
    range: (i64, i64),
    series: &[S],
) -> Result<LocalBlock, BlockError> {
    let compaction = Compaction { level: 1, sources: vec![id.to_string()] };
    let (meta, files) = encode_block_files(tenant, shard, id, range, compaction, series)?;
    let meta_json = serde_json::to_vec_pretty(&meta)?;
    let files: Vec<(&str, &[u8])> =
        files.iter().map(|(n, d)| (*n, d.as_slice())).chain([("meta.json", meta_json.as_slice())]).collect();
    let dir = write_block_dir(root, tenant, id, &files)?;
    let bytes = files.iter().map(|(_, d)| d.len() as u64).sum();
    Ok(LocalBlock { meta, dir, bytes })
}

/// Writes `files` as `<root>/<tenant>/<id>/`, atomically: each file written
/// and synced in `.<id>.tmp`, which is synced and renamed into place
/// (replacing an older copy), then the parent synced.
fn write_block_dir(root: &FsPath, tenant: &str, id: &str, files: &[(&str, &[u8])]) -> Result<PathBuf, BlockError> {
    let parent = root.join(tenant);
    std::fs::create_dir_all(&parent).map_err(|e| io_err(&parent, e))?;
    let tmp = parent.join(format!(".{id}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| io_err(&tmp, e))?;
    for (name, data) in files {
        write_synced(&tmp.join(name), data)?;
    }
    sync_dir(&tmp)?;
    let dir = parent.join(id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
    sync_dir(&parent)?;
    Ok(dir)
}

impl LocalBlock {
    /// Opens `<root>/<tenant>/<id>/`, checking that its files have the
    /// sizes `meta.json` records.
    pub fn open(root: &FsPath, tenant: &str, id: &str) -> Result<LocalBlock, BlockError> {
        let dir = root.join(tenant).join(id);
        let meta_path = dir.join("meta.json");
        let raw = std::fs::read(&meta_path).map_err(|e| io_err(&meta_path, e))?;
        let meta: BlockMeta = serde_json::from_slice(&raw)?;
        if meta.ulid != id || meta.strata.tenant != tenant {
            return Err(BlockError::Invalid(format!("{} holds block {}", dir.display(), meta.ulid)));
        }
        let mut bytes = raw.len() as u64;
        for f in &meta.strata.files {
            let p = dir.join(&f.path);
            let size = std::fs::metadata(&p).map_err(|e| io_err(&p, e))?.len();
            if size != f.size {
                return Err(BlockError::Invalid(format!("{} is {size} bytes, meta.json says {}", p.display(), f.size)));
            }
            bytes += size;
        }
        Ok(LocalBlock { meta, dir, bytes })
    }

    /// The block's series index (its `series.parquet`).
    pub fn index(&self) -> Result<BlockIndex, BlockError> {
        let p = self.dir.join("series.parquet");
        let data = std::fs::read(&p).map_err(|e| io_err(&p, e))?;
        BlockIndex::from_series_file(self.meta.clone(), Bytes::from(data))
    }

    /// Every file's contents, `meta.json` last (to send the block whole).
    pub fn read_files(&self) -> Result<Vec<(String, Vec<u8>)>, BlockError> {
        let mut names: Vec<String> = self.meta.strata.files.iter().map(|f| f.path.clone()).collect();
        names.push("meta.json".into());
        names
            .into_iter()
            .map(|n| {
                let p = self.dir.join(&n);
                std::fs::read(&p).map(|d| (n, d)).map_err(|e| io_err(&p, e))
            })
            .collect()
    }
}

/// Writes files received whole (from [`LocalBlock::read_files`]) as a local
/// block, atomically, and opens it.
pub fn write_local_files(
    root: &FsPath,
    tenant: &str,
    id: &str,
    files: &[(String, Vec<u8>)],
) -> Result<LocalBlock, BlockError> {
    if let Some((name, _)) = files.iter().find(|(n, _)| n.contains('/') || n.starts_with('.')) {
        return Err(BlockError::Invalid(format!("file name {name:?} in block {id}")));
    }
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    write_block_dir(root, tenant, id, &files)?;
    LocalBlock::open(root, tenant, id)
}

async fn timed<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, object_store::Error>>,
) -> Result<T, BlockError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(BlockError::Timeout(format!("{what} took longer than {limit:?}"))),
    }
}

/// Uploads a local block to `<tenant>/<id>/` in the bucket: the Parquet
/// files first (multipart above `part_size`), `meta.json` last, so the block
/// becomes visible only once complete. Re-uploading is harmless: the same
/// names get the same content.
pub async fn upload_local_block(
    store: &dyn ObjectStore,
    block: &LocalBlock,
    opts: &UploadOptions,
) -> Result<UploadStats, BlockError> {
    let mut stats = UploadStats::default();
    let prefix = format!("{}/{}", block.meta.strata.tenant, block.meta.ulid);
    let part_size = opts.part_size.max(1);
    let mut names: Vec<&str> = block.meta.strata.files.iter().map(|f| f.path.as_str()).collect();
    names.push("meta.json");
    for name in names {
        let local = block.dir.join(name);
        let dest = Path::from(format!("{prefix}/{name}"));
        let size = std::fs::metadata(&local).map_err(|e| io_err(&local, e))?.len();
        if size as usize <= part_size {
            let data = std::fs::read(&local).map_err(|e| io_err(&local, e))?;
            let n = data.len();
            timed(opts.request_timeout(n), &format!("PUT {dest}"), store.put(&dest, PutPayload::from(data))).await?;
            stats.bytes += n as u64;
            stats.requests += 1;
            continue;
        }
        let mut file = std::fs::File::open(&local).map_err(|e| io_err(&local, e))?;
        let mut upload =
            timed(opts.base_timeout, &format!("starting the multipart upload of {dest}"), store.put_multipart(&dest))
                .await?;
        stats.requests += 1;
        let mut sent = 0u64;
        let result: Result<(), BlockError> = async {
            loop {
                let mut buf = vec![0u8; part_size.min((size - sent) as usize)];
                if buf.is_empty() {
                    break;
                }
                file.read_exact(&mut buf).map_err(|e| io_err(&local, e))?;
                let n = buf.len();
                timed(opts.request_timeout(n), &format!("a part of {dest}"), upload.put_part(Bytes::from(buf).into()))
                    .await?;
                sent += n as u64;
                stats.requests += 1;
            }
            timed(opts.base_timeout, &format!("completing {dest}"), upload.complete()).await?;
            stats.requests += 1;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Leave no orphaned parts behind (best effort: the store may be down).
            let _ = tokio::time::timeout(opts.base_timeout, upload.abort()).await;
            return Err(e);
        }
        stats.bytes += sent;
        stats.multipart_files += 1;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeriesData;
    use object_store::local::LocalFileSystem;
    use strata_model::Labels;

    fn input(n: usize, samples: usize) -> Vec<SeriesData> {
        (0..n)
            .map(|i| SeriesData {
                labels: Labels::from_pairs(vec![("__name__".into(), "m".into()), ("i".into(), format!("{i:05}"))]),
                // Values that do not compress away, so the files are large.
                samples: (0..samples as i64)
                    .map(|k| (k * 1000, f64::from_bits(0x3ff0_0000_0000_0000 ^ ((k as u64 * 2654435761) ^ i as u64))))
                    .collect(),
            })
            .collect()
    }

    #[tokio::test]
    async fn local_block_uploads_in_parts_and_reads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pending");
        let series = input(50, 2000);
        let block = write_local_block(&root, "t1", "shard-0", "b-1", (0, 2_000_000), &series).unwrap();
        assert_eq!(LocalBlock::open(&root, "t1", "b-1").unwrap().bytes, block.bytes);
        let samples_size = block.meta.strata.files.iter().find(|f| f.path == "samples.parquet").unwrap().size;
        assert!(samples_size > 50_000, "{samples_size}");

        let bucket = LocalFileSystem::new_with_prefix(dir.path().join("bucket").tap_create()).unwrap();
        let opts = UploadOptions { part_size: 16_000, ..Default::default() };
        let stats = upload_local_block(&bucket, &block, &opts).await.unwrap();
        assert_eq!(stats.bytes, block.bytes);
        assert!(stats.multipart_files >= 1, "{stats:?}");
        assert!(stats.requests > 4, "{stats:?}");

        // The uploaded block is byte-identical to one uploaded from memory.
        let (meta, mut got) = crate::read_block(&bucket, "t1", "b-1").await.unwrap();
        assert_eq!(meta, block.meta);
        let mut want = series.clone();
        want.sort_by(|a, b| a.labels.cmp(&b.labels));
        got.sort_by(|a, b| a.labels.cmp(&b.labels));
        assert_eq!(got, want);
        let direct = LocalFileSystem::new_with_prefix(dir.path().join("direct").tap_create()).unwrap();
        crate::upload_block(&direct, "t1", "shard-0", 0, 2_000_000, &series).await.unwrap();
        for name in ["series.parquet", "samples.parquet"] {
            let a = std::fs::read(dir.path().join("bucket/t1/b-1").join(name)).unwrap();
            let id = crate::block_id("shard-0", "t1", 0, 2_000_000);
            let b = std::fs::read(dir.path().join("direct/t1").join(id).join(name)).unwrap();
            assert_eq!(a, b, "{name}");
        }

        // The index reads the local files like the store gateway reads the bucket.
        let idx = block.index().unwrap();
        let local: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap());
        let got = idx.read_samples(local, &[0, 49], 0, i64::MAX).await.unwrap();
        assert_eq!(got[0], want[0].samples);
        assert_eq!(got[1], want[49].samples);
    }

    #[tokio::test]
    async fn upload_to_an_unusable_bucket_fails_and_a_truncated_block_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pending");
        let block = write_local_block(&root, "t1", "s", "b-2", (0, 10), &input(3, 10)).unwrap();
        // A bucket directory that is a plain file: every request fails.
        std::fs::write(dir.path().join("gone"), b"x").unwrap();
        let bucket = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let bad = object_store::prefix::PrefixStore::new(bucket, "gone");
        assert!(upload_local_block(&bad, &block, &UploadOptions::default()).await.is_err());

        let samples = block.dir.join("samples.parquet");
        let len = std::fs::metadata(&samples).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&samples).unwrap().set_len(len / 2).unwrap();
        let err = LocalBlock::open(&root, "t1", "b-2").unwrap_err().to_string();
        assert!(err.contains("samples.parquet") && err.contains("meta.json says"), "{err}");

        // Files received whole become the same block.
        let fresh = write_local_block(&root, "t1", "s", "b-3", (0, 10), &input(3, 10)).unwrap();
        let files = fresh.read_files().unwrap();
        let copy = write_local_files(&dir.path().join("other"), "t1", "b-3", &files).unwrap();
        assert_eq!(copy.meta, fresh.meta);
        assert_eq!(copy.bytes, fresh.bytes);
    }

    trait TapCreate {
        fn tap_create(self) -> Self;
    }
    impl TapCreate for PathBuf {
        fn tap_create(self) -> Self {
            std::fs::create_dir_all(&self).unwrap();
            self
        }
    }

    use std::sync::Arc;
}
