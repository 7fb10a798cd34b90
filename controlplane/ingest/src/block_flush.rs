//! Cutting the head into blocks and uploading them (leader only).
//!
//! The leader proposes `CutBlock` for each block range that has elapsed
//! (a tenant of more than `cut_part_series` series in parts,
//! `CutBlockPart`, one block each, so no apply holds writes for long) —
//! as in Prometheus, when the newest sample of the tenant is past the
//! range's end plus a grace period — and for an idle tenant (no new samples
//! for `idle_flush`) everything it holds. Every replica applies the cut the
//! same way, so all hold the same pending block. The leader writes it to
//! object storage under its deterministic id (`series.parquet`,
//! `samples.parquet`, then `meta.json`) and proposes `BlockUploaded`, after
//! which replicas keep the data only for `retain_after_upload` (until the
//! store gateways list the block). A new leader re-uploads any pending block
//! with identical content.
//!
//! Every replica spills each cut block to local disk in its final Parquet
//! form first (encoded once; only its series index stays in memory), and the
//! leader uploads those files — large ones in parts — retrying a failed
//! block with exponential backoff and jitter. So an object-store outage
//! costs disk, not memory; the write path refuses writes (503) once the
//! pending bytes reach `--ingest.max-pending-bytes`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use strata_blocks::{SeriesData, UploadOptions};

use crate::raft_types::{NodeId, Raft, Request};
use crate::state_machine::{FrozenBlock, FrozenData, StateMachine};

/// Block settings of an ingester.
#[derive(Debug, Clone)]
pub struct BlockConfig {
    /// Block range (Prometheus: 2h).
    pub duration: Duration,
    /// A range is cut once the newest sample is this far past its end
    /// (default: half the block duration, as Prometheus).
    pub grace: Duration,
    /// A tenant without new samples for this long is flushed entirely.
    pub idle_flush: Duration,
    /// How long replicas keep an uploaded block's data in memory.
    pub retain_after_upload: Duration,
    /// Part size, timeouts of uploads.
    pub upload: UploadOptions,
    /// Longest wait between two attempts to upload a block.
    pub upload_backoff_max: Duration,
    /// Series moved per cut entry: a tenant with more is cut in parts, one
    /// Raft entry (and one block) each, so a write never waits behind a cut
    /// of the whole head.
    pub cut_part_series: usize,
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            duration: Duration::from_secs(2 * 3600),
            grace: Duration::from_secs(3600),
            idle_flush: Duration::from_secs(3600),
            retain_after_upload: Duration::from_secs(300),
            upload: UploadOptions::default(),
            upload_backoff_max: Duration::from_secs(120),
            cut_part_series: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("not the Raft leader (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    #[error("Raft: {0}")]
    Raft(String),
    #[error("upload of block {0} failed: {1}")]
    Upload(String, String),
}

/// Counters of spilling and uploading (`strata_ingester_block_*`).
#[derive(Clone, Default)]
pub struct FlushMetrics {
    pub spilled: Counter,
    pub spill_failures: Counter,
    pub upload_attempts: Counter,
    pub upload_failures: Counter,
    pub upload_bytes: Counter,
    pub upload_requests: Counter,
}

impl FlushMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("block_spills", "Cut blocks written to local disk", self.spilled.clone());
        r.register(
            "block_spill_failures",
            "Failed attempts to write a cut block to local disk (it stays in memory)",
            self.spill_failures.clone(),
        );
        r.register("block_upload_attempts", "Attempts to upload a block", self.upload_attempts.clone());
        r.register("block_upload_failures", "Failed attempts to upload a block", self.upload_failures.clone());
        r.register("block_upload_bytes", "Bytes of blocks uploaded", self.upload_bytes.clone());
        r.register(
            "block_upload_requests",
            "Requests of successful block uploads (PUTs, and multipart create, parts, complete)",
            self.upload_requests.clone(),
        );
    }
}

/// Retry schedule of one block's upload.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    next: Instant,
}

/// The delay after `failures` failed attempts: 1 s doubling up to `max`,
/// times a random factor in [0.5, 1.5) so replicas and blocks spread out.
fn backoff_delay(failures: u32, max: Duration) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1u32 << failures.min(20)).min(max);
    base.mul_f64(0.5 + rand::random::<f64>())
}

/// The leader's block cutter and uploader.
pub struct BlockFlusher {
    pub cfg: BlockConfig,
    raft: Raft,
    sm: StateMachine,
    node_id: NodeId,
    shard: String,
    store: Arc<dyn ObjectStore>,
    /// One upload pass at a time.
    upload_lock: tokio::sync::Mutex<()>,
    pub upload_errors: std::sync::atomic::AtomicU64,
    pub metrics: FlushMetrics,
    backoff: std::sync::Mutex<HashMap<String, Backoff>>,
}

impl BlockFlusher {
    pub fn new(
        cfg: BlockConfig,
        raft: Raft,
        sm: StateMachine,
        node_id: NodeId,
        shard: String,
        store: Arc<dyn ObjectStore>,
    ) -> Arc<Self> {
        Arc::new(BlockFlusher {
            cfg,
            raft,
            sm,
            node_id,
            shard,
            store,
            upload_lock: tokio::sync::Mutex::new(()),
            upload_errors: 0.into(),
            metrics: FlushMetrics::default(),
            backoff: Default::default(),
        })
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    async fn propose(&self, req: Request) -> Result<(), FlushError> {
        self.raft.client_write(req).await.map(|_| ()).map_err(|e| FlushError::Raft(e.to_string()))
    }

    /// Spills every pending block still in memory to local disk (every
    /// replica does). A block that cannot be written stays in memory.
    pub async fn spill_pending(&self) {
        let run = strata_telemetry::BackgroundRun::start("spill");
        let results = self.sm.spill_pending().await;
        if !results.is_empty() {
            run.finish(results.iter().all(|r| r.is_ok()));
        }
        for r in results {
            match r {
                Ok((id, bytes)) => {
                    tracing::info!(%id, bytes, "spilled block to disk");
                    self.metrics.spilled.inc();
                }
                Err((id, e)) => {
                    self.metrics.spill_failures.inc();
                    tracing::warn!(%id, error = %e, "spilling a block to disk failed; it stays in memory");
                }
            }
        }
    }

    /// Removes spilled block files nothing refers to any more (uploaded and
    /// past retention, and not in the snapshot on disk).
    pub async fn remove_unreferenced(&self) {
        let _no_spills = self.sm.lock_spills().await;
        // List first, then read what is referenced: a block a snapshot
        // install writes meanwhile (under the state lock) is either not
        // listed or already referenced.
        let root = self.sm.spill_root();
        let mut found = Vec::new();
        if let Ok(tenants) = std::fs::read_dir(&root) {
            for t in tenants.flatten() {
                let Ok(blocks) = std::fs::read_dir(t.path()) else { continue };
                found.extend(blocks.flatten().map(|b| (b.file_name().to_string_lossy().to_string(), b.path())));
            }
        }
        let mut keep: BTreeSet<String> = {
            let st = self.sm.state.read().await;
            st.blocks.pending.keys().chain(st.blocks.retained.iter().map(|(b, _)| &b.id)).cloned().collect()
        };
        keep.extend(self.sm.snapshot_refs());
        for (name, path) in found {
            // `.<id>.tmp`: an interrupted write (spills wait for this sweep).
            if keep.contains(&name) {
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "removing a spilled block failed"),
            }
        }
    }

    /// Uploads every pending block whose retry time has come, then proposes
    /// `BlockUploaded` for each. Spilled blocks go up from their files; a
    /// block that could not be spilled, from memory.
    pub async fn upload_pending(&self) -> Result<Vec<String>, FlushError> {
        self.upload(false).await
    }

    async fn upload(&self, ignore_backoff: bool) -> Result<Vec<String>, FlushError> {
        let _g = self.upload_lock.lock().await;
        let pending: Vec<FrozenBlock> = self.sm.state.read().await.blocks.pending.values().cloned().collect();
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let run = strata_telemetry::BackgroundRun::start("upload");
        let r = self.upload_blocks(pending, ignore_backoff).await;
        run.finish(r.is_ok());
        r
    }

    async fn upload_blocks(&self, pending: Vec<FrozenBlock>, ignore_backoff: bool) -> Result<Vec<String>, FlushError> {
        let mut done = Vec::new();
        let mut first_err = None;
        let now = Instant::now();
        for b in pending {
            let due = self.backoff.lock().map(|m| m.get(&b.id).is_none_or(|x| x.next <= now)).unwrap_or(true);
            if !due && !ignore_backoff {
                first_err.get_or_insert(FlushError::Upload(b.id.clone(), "waiting to retry".into()));
                continue;
            }
            self.metrics.upload_attempts.inc();
            let result = match &b.data {
                FrozenData::Spilled(sb) => {
                    strata_blocks::upload_local_block(self.store.as_ref(), &sb.local, &self.cfg.upload).await.map(
                        |stats| {
                            self.metrics.upload_requests.inc_by(stats.requests);
                            stats.bytes
                        },
                    )
                }
                FrozenData::Memory(series) => {
                    let series: Vec<SeriesData> =
                        series.iter().map(|(l, s)| SeriesData { labels: l.clone(), samples: s.clone() }).collect();
                    // Under the pending block's own id, as its spilled copy
                    // would be: the parts of a cut in parts have ids of their
                    // own, which (shard, tenant, range) alone would not give.
                    let upload = strata_blocks::upload_block_as(
                        self.store.as_ref(),
                        &b.tenant,
                        &self.shard,
                        &b.id,
                        (b.min_t, b.before),
                        strata_blocks::Compaction { level: 1, sources: vec![b.id.clone()] },
                        &series,
                    );
                    match tokio::time::timeout(self.cfg.upload.request_timeout(b.bytes() as usize) * 3, upload).await {
                        Ok(r) => r.map(|m| {
                            // series.parquet, samples.parquet, meta.json
                            self.metrics.upload_requests.inc_by(3);
                            m.strata.files.iter().map(|f| f.size).sum()
                        }),
                        Err(_) => Err(strata_blocks::BlockError::Timeout(format!("uploading block {}", b.id))),
                    }
                }
            };
            match result {
                Ok(bytes) => {
                    self.metrics.upload_bytes.inc_by(bytes);
                    if let Ok(mut m) = self.backoff.lock() {
                        m.remove(&b.id);
                    }
                    tracing::info!(id = %b.id, bytes, "uploaded block");
                    self.propose(Request::BlockUploaded { id: b.id.clone() }).await?;
                    done.push(b.id);
                }
                Err(e) => {
                    // Keep going: one tenant's failure must not hold back the others.
                    self.upload_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.metrics.upload_failures.inc();
                    let wait = if let Ok(mut m) = self.backoff.lock() {
                        let x = m.entry(b.id.clone()).or_insert(Backoff { failures: 0, next: now });
                        let wait = backoff_delay(x.failures, self.cfg.upload_backoff_max);
                        x.failures += 1;
                        x.next = Instant::now() + wait;
                        wait
                    } else {
                        Duration::ZERO
                    };
                    tracing::warn!(id = %b.id, error = %e, retry_in = ?wait, "block upload failed");
                    first_err.get_or_insert(FlushError::Upload(b.id.clone(), e.to_string()));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// `POST /api/v1/admin/flush`: cut everything the head holds now and upload it.
    pub async fn flush_all(&self) -> Result<Vec<String>, FlushError> {
        if !self.is_leader() {
            return Err(FlushError::NotLeader(self.raft.metrics().borrow().current_leader));
        }
        let ranges = self.sm.state.read().await.head.tenant_ranges();
        for r in ranges {
            if r.min_t <= r.max_t {
                self.propose_cut(&r.tenant, r.max_t.saturating_add(1), r.series).await?;
            }
        }
        self.spill_pending().await;
        // An operator's flush retries now, whatever the backoff says.
        self.upload(true).await
    }

    /// Proposes the cut of `tenant` before `before`: one entry, or one per
    /// part when the tenant has more than `cut_part_series` series.
    async fn propose_cut(&self, tenant: &str, before: i64, series: usize) -> Result<(), FlushError> {
        let parts = series.div_ceil(self.cfg.cut_part_series.max(1)).clamp(1, u32::MAX as usize) as u32;
        if parts == 1 {
            return self.propose(Request::CutBlock { tenant: tenant.to_string(), before }).await;
        }
        for part in 0..parts {
            self.propose(Request::CutBlockPart { tenant: tenant.to_string(), before, part, parts }).await?;
        }
        Ok(())
    }

    /// Decides which cuts are due now (tenant, before, series);
    /// `idle` tracks (newest sample, since when) per tenant.
    async fn due_cuts(&self, idle: &mut HashMap<String, (i64, Instant)>) -> Vec<(String, i64, usize)> {
        let d = self.cfg.duration.as_millis().max(1) as i64;
        let grace = self.cfg.grace.as_millis() as i64;
        let ranges = self.sm.state.read().await.head.tenant_ranges();
        let mut out = Vec::new();
        for r in ranges {
            if r.min_t > r.max_t {
                idle.remove(&r.tenant);
                continue;
            }
            // Every elapsed range gets its own cut (and block), oldest first,
            // so a backlog (e.g. after a backfill) drains in one pass.
            let mut range_end = r.min_t.div_euclid(d) * d + d;
            let mut cut_any = false;
            while r.max_t >= range_end.saturating_add(grace) {
                out.push((r.tenant.clone(), range_end, r.series));
                range_end += d;
                cut_any = true;
            }
            if cut_any {
                continue;
            }
            let e = idle.entry(r.tenant.clone()).or_insert((r.max_t, Instant::now()));
            if e.0 != r.max_t {
                *e = (r.max_t, Instant::now());
            } else if e.1.elapsed() >= self.cfg.idle_flush {
                out.push((r.tenant.clone(), r.max_t.saturating_add(1), r.series));
                idle.remove(&r.tenant);
            }
        }
        out
    }

    /// Runs until the process stops: cut, upload, release retained memory.
    pub async fn run(self: Arc<Self>) {
        let tick = (self.cfg.duration / 8).clamp(Duration::from_millis(200), Duration::from_secs(10));
        let mut idle: HashMap<String, (i64, Instant)> = HashMap::new();
        loop {
            tokio::time::sleep(tick).await;
            {
                let retain = self.cfg.retain_after_upload;
                let mut st = self.sm.state.write().await;
                st.blocks.retained.retain(|(_, at)| at.elapsed() < retain);
            }
            let leader = self.is_leader();
            if leader {
                for (tenant, before, series) in self.due_cuts(&mut idle).await {
                    let run = strata_telemetry::BackgroundRun::start("cut");
                    let r = self.propose_cut(&tenant, before, series).await;
                    run.finish(r.is_ok());
                    if let Err(e) = r {
                        tracing::warn!(%tenant, error = %e, "proposing a block cut failed");
                    }
                }
            } else {
                idle.clear();
            }
            // Right after cutting (followers: within a tick of applying the cut).
            self.spill_pending().await;
            self.remove_unreferenced().await;
            if !leader {
                continue;
            }
            // Failures are logged per block, with their retry time.
            let _ = self.upload_pending().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let max = Duration::from_secs(60);
        for failures in 0..30 {
            let base = Duration::from_secs(1 << failures.min(6)).min(max);
            for _ in 0..20 {
                let d = backoff_delay(failures, max);
                assert!(d >= base.mul_f64(0.5) && d < base.mul_f64(1.5), "{failures}: {d:?}");
            }
        }
    }
}
