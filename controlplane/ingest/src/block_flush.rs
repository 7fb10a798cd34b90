//! Cutting the head into blocks and uploading them (leader only).
//!
//! The leader proposes `CutBlock` for each block range that has elapsed —
//! as in Prometheus, when the newest sample of the tenant is past the
//! range's end plus a grace period — and for an idle tenant (no new samples
//! for `idle_flush`) everything it holds. Every replica applies the cut the
//! same way, so all hold the same pending block. The leader writes it to
//! object storage under its deterministic id (`series.parquet`,
//! `samples.parquet`, then `meta.json`) and proposes `BlockUploaded`, after
//! which replicas keep the data only for `retain_after_upload` (until the
//! store gateways list the block). A new leader re-uploads any pending block
//! with identical content.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use strata_blocks::SeriesData;

use crate::raft_types::{NodeId, Raft, Request};
use crate::state_machine::{FrozenBlock, StateMachine};

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
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            duration: Duration::from_secs(2 * 3600),
            grace: Duration::from_secs(3600),
            idle_flush: Duration::from_secs(3600),
            retain_after_upload: Duration::from_secs(300),
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
        })
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    async fn propose(&self, req: Request) -> Result<(), FlushError> {
        self.raft.client_write(req).await.map(|_| ()).map_err(|e| FlushError::Raft(e.to_string()))
    }

    /// Uploads every pending block, then proposes `BlockUploaded` for each.
    pub async fn upload_pending(&self) -> Result<Vec<String>, FlushError> {
        let _g = self.upload_lock.lock().await;
        let pending: Vec<FrozenBlock> = self.sm.state.read().await.blocks.pending.values().cloned().collect();
        let mut done = Vec::new();
        let mut first_err = None;
        for b in pending {
            let series: Vec<SeriesData> =
                b.series.iter().map(|(l, s)| SeriesData { labels: l.clone(), samples: s.clone() }).collect();
            match strata_blocks::upload_block(self.store.as_ref(), &b.tenant, &self.shard, b.min_t, b.before, &series)
                .await
            {
                Ok(meta) => {
                    tracing::info!(id = %meta.ulid, samples = meta.stats.num_samples, series = meta.stats.num_series, "uploaded block");
                    self.propose(Request::BlockUploaded { id: b.id.clone() }).await?;
                    done.push(b.id);
                }
                Err(e) => {
                    // Keep going: one tenant's failure must not hold back the others.
                    self.upload_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                self.propose(Request::CutBlock { tenant: r.tenant, before: r.max_t.saturating_add(1) }).await?;
            }
        }
        self.upload_pending().await
    }

    /// Decides which cuts are due now; `idle` tracks (newest sample, since when) per tenant.
    async fn due_cuts(&self, idle: &mut HashMap<String, (i64, Instant)>) -> Vec<(String, i64)> {
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
                out.push((r.tenant.clone(), range_end));
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
                out.push((r.tenant.clone(), r.max_t.saturating_add(1)));
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
            if !self.is_leader() {
                idle.clear();
                continue;
            }
            for (tenant, before) in self.due_cuts(&mut idle).await {
                if let Err(e) = self.propose(Request::CutBlock { tenant: tenant.clone(), before }).await {
                    tracing::warn!(%tenant, error = %e, "proposing a block cut failed");
                }
            }
            if let Err(e) = self.upload_pending().await {
                tracing::warn!(error = %e, "block upload failed; retrying");
            }
        }
    }
}
