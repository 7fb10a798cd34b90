//! `strata compact`: keeps the bucket small and bounded. Run exactly one
//! per bucket (like Thanos' compactor). Each pass:
//!
//! 1. **Retention**: blocks whose data ended more than `retention` ago are
//!    marked for deletion.
//! 2. **Redundant blocks**: a block whose sources are all inside another
//!    block's sources (a compaction input left over by an interrupted pass,
//!    or a level-1 block an ingester re-uploaded after it was compacted) is
//!    marked for deletion — its data is in the bigger block.
//! 3. **Compaction**: the blocks of one (tenant, shard) that lie inside one
//!    aligned window of `range` (e.g. twenty-four 5-minute blocks in 2 h),
//!    once the window ended more than `delay` ago (late blocks from the
//!    ingesters have arrived), are merged into one block: series by label
//!    set, samples by timestamp (equal timestamps hold equal data; the first
//!    wins). The new block's id is derived from its sources, so a repeated
//!    pass writes the same objects. Then its inputs are marked.
//! 4. **Deletion**: blocks marked more than `delete_delay` ago are deleted
//!    (store gateways have re-listed the bucket by then and no longer read
//!    them).
//!
//! Store gateways serve the new block and drop the marked ones in the same
//! sync; they merge overlapping blocks by timestamp, so a query during the
//! hand-over counts nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use object_store::ObjectStore;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strata_blocks::{
    BlockError, BlockIndex, BlockMeta, BlockWriter, BucketConfig, Compaction, SampleCursor, block_id, delete_block,
    list_blocks, list_deletion_marks, mark_for_deletion, publish_block, sample_rows, visible_block_bytes,
};
use strata_model::{Labels, METRIC_NAME};

/// What one pass does (all times in ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Window that blocks are compacted into (aligned to multiples of it).
    pub range_ms: i64,
    /// A window is compacted once it ended this long ago.
    pub delay_ms: i64,
    /// Data older than this is deleted; 0 keeps everything.
    pub retention_ms: i64,
    /// Marked blocks are deleted this long after being marked.
    pub delete_delay_ms: i64,
    /// Most bytes the visible blocks may take; beyond it the oldest blocks
    /// are marked for deletion (Prometheus' `--storage.tsdb.retention.size`).
    /// 0 keeps everything.
    pub retention_bytes: u64,
    /// Downsampling and per-resolution retention.
    pub downsampling: DownsamplePlan,
}

/// When blocks are downsampled and how long each resolution is kept (ms;
/// a retention of 0 keeps that resolution forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DownsamplePlan {
    /// Write 5-minute blocks of raw blocks whose data ended this long ago
    /// (`None`: no downsampling).
    pub after_5m_ms: Option<i64>,
    /// Write 1-hour blocks of blocks whose data ended this long ago.
    pub after_1h_ms: Option<i64>,
    pub retention_raw_ms: i64,
    pub retention_5m_ms: i64,
    pub retention_1h_ms: i64,
}

impl DownsamplePlan {
    /// Thanos' defaults: 5m after 40h, 1h after 10 days, every resolution kept.
    pub fn thanos_defaults() -> DownsamplePlan {
        DownsamplePlan {
            after_5m_ms: Some(40 * 3_600_000),
            after_1h_ms: Some(240 * 3_600_000),
            retention_raw_ms: 0,
            retention_5m_ms: 0,
            retention_1h_ms: 0,
        }
    }

    fn retention_of(&self, resolution: i64) -> i64 {
        match resolution {
            0 => self.retention_raw_ms,
            r if r <= RES_5M => self.retention_5m_ms,
            _ => self.retention_1h_ms,
        }
    }
}

const RES_5M: i64 = strata_model::downsample::RESOLUTIONS[0];
const RES_1H: i64 = strata_model::downsample::RESOLUTIONS[1];

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Blocks written by this pass.
    pub compacted: Vec<BlockMeta>,
    /// Blocks marked for deletion (compaction inputs, redundant, retention).
    pub marked: usize,
    /// Blocks deleted (marked earlier, past `delete_delay`).
    pub deleted: usize,
    /// Blocks visible after the pass.
    pub blocks: usize,
    /// Bytes of the blocks kept after retention (before this pass's compaction).
    pub bytes: u64,
    /// Windows not compacted because their blocks are unreadable or
    /// disagree (why, per window).
    pub halted: Vec<String>,
    /// Downsampled blocks written by this pass.
    pub downsampled: Vec<BlockMeta>,
}

/// Id of a compacted block: the range's id plus a hash of its level-1 sources.
fn compacted_id(shard: &str, tenant: &str, min_t: i64, max_t: i64, sources: &BTreeSet<String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for s in sources {
        for b in s.bytes().chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{}-c{h:016x}", block_id(shard, tenant, min_t, max_t))
}

fn sources(m: &BlockMeta) -> BTreeSet<&str> {
    m.compaction.sources.iter().map(String::as_str).collect()
}

/// Why a window's blocks were not compacted.
#[derive(Debug)]
enum GroupFailure {
    /// The blocks themselves: unreadable, inconsistent, or disagreeing on
    /// a sample. Only this group stops; the pass goes on.
    Halt(String),
    /// Object storage failed: the pass fails and is retried.
    Store(BlockError),
}

fn failure(context: &str, e: BlockError) -> GroupFailure {
    match e {
        BlockError::Store(_) | BlockError::Timeout(_) | BlockError::Io { .. } => GroupFailure::Store(e),
        other => GroupFailure::Halt(format!("{context}: {other}")),
    }
}

/// Merges `group` into the block `id`, series by series (memory bounded by
/// the series index and one series' samples, not by the blocks' size):
/// series by label set, samples by timestamp. Equal timestamps must hold
/// equal values (bit for bit); blocks that disagree halt the group. The
/// written block is read back and checked (every series and its sample
/// count, the samples file's row count) before its `meta.json` makes it
/// visible.
async fn compact_group(
    store: &Arc<dyn ObjectStore>,
    tenant: &str,
    shard: &str,
    id: &str,
    range: (i64, i64),
    compaction: Compaction,
    group: &[&BlockMeta],
) -> Result<BlockMeta, GroupFailure> {
    // The output's series in block order, each with its (input,
    // series_ref)s; each label set is kept once, and of each input only
    // where its series' rows start.
    let mut order: BTreeMap<(String, Labels), Vec<(usize, u32)>> = BTreeMap::new();
    let mut names = BTreeSet::new();
    let mut row_starts: Vec<Vec<u64>> = Vec::with_capacity(group.len());
    for (i, m) in group.iter().enumerate() {
        let idx = BlockIndex::load(store.as_ref(), (*m).clone())
            .await
            .map_err(|e| failure(&format!("block {}", m.ulid), e))?;
        let BlockIndex { labels, row_start, .. } = idx;
        for (r, l) in labels.into_iter().enumerate() {
            names.extend(
                l.iter().map(|(n, _)| n).filter(|n| !names.contains(*n)).map(str::to_string).collect::<Vec<_>>(),
            );
            let key = (l.get(METRIC_NAME).unwrap_or("").to_string(), l);
            let members = order.entry(key).or_default();
            if members.last().is_some_and(|(j, _)| *j == i) {
                return Err(GroupFailure::Halt(format!("block {}: a series is listed twice", m.ulid)));
            }
            members.push((i, r as u32));
        }
        row_starts.push(row_start);
    }
    let mut cursors = Vec::with_capacity(group.len());
    for m in group {
        cursors.push(SampleCursor::open(store.clone(), m).await.map_err(|e| failure(&format!("block {}", m.ulid), e))?);
    }
    let out = |e| failure(&format!("writing block {id}"), e);
    let mut writer = BlockWriter::new(store.clone(), tenant, shard, id, &names).map_err(out)?;
    let mut counts = Vec::with_capacity(order.len());
    let mut merged: Vec<(i64, f64)> = Vec::new();
    for ((_, labels), members) in &order {
        merged.clear();
        for &(i, r) in members {
            let rows = row_starts[i][r as usize + 1] - row_starts[i][r as usize];
            cursors[i].take(r, rows, &mut merged).await.map_err(|e| failure(&format!("block {}", group[i].ulid), e))?;
        }
        if members.len() > 1 {
            // Stable: equal timestamps keep block order; they must agree.
            merged.sort_by_key(|s| s.0);
            let mut conflict = None;
            merged.dedup_by(|b, a| {
                let same_t = a.0 == b.0;
                if same_t && a.1.to_bits() != b.1.to_bits() && conflict.is_none() {
                    conflict = Some((a.0, a.1, b.1));
                }
                same_t
            });
            if let Some((t, a, b)) = conflict {
                let ids: Vec<&str> = members.iter().map(|&(i, _)| group[i].ulid.as_str()).collect();
                return Err(GroupFailure::Halt(format!(
                    "blocks {ids:?} disagree on series {labels:?} at {t}: {a} and {b} (two writers for one series, or a corrupt block)"
                )));
            }
        }
        writer.add(labels, &merged).await.map_err(out)?;
        counts.push(merged.len() as u64);
    }
    for (i, c) in cursors.into_iter().enumerate() {
        c.finish().await.map_err(|e| failure(&format!("block {}", group[i].ulid), e))?;
    }
    let meta = writer.finish(range, compaction).await.map_err(out)?;
    // Read back what was written before anything depends on it.
    let check = |e| failure(&format!("checking block {id}"), e);
    let written = BlockIndex::load(store.as_ref(), meta.clone()).await.map_err(check)?;
    let rows = sample_rows(store.clone(), &meta).await.map_err(check)?;
    let want_total: u64 = counts.iter().sum();
    let same_series = written.labels.len() == order.len()
        && written.labels.iter().zip(order.keys()).all(|(a, (_, b))| a == b)
        && written.row_start.windows(2).map(|w| w[1] - w[0]).eq(counts.iter().copied());
    if !same_series || rows != want_total || meta.stats.num_samples != want_total {
        return Err(GroupFailure::Halt(format!(
            "block {id} as written does not hold what was merged ({} series, {rows} sample rows; expected {} series, {want_total} samples)",
            written.labels.len(),
            order.len()
        )));
    }
    publish_block(store.as_ref(), &meta).await.map_err(|e| failure(&format!("publishing block {id}"), e))?;
    Ok(meta)
}

/// The id of the downsampled block of `resolution` made of the data of
/// `m` (raw or downsampled): the same for every block of those sources.
fn downsampled_id(m: &BlockMeta, resolution: i64) -> String {
    let sources: BTreeSet<String> = m.compaction.sources.iter().cloned().collect();
    let base = compacted_id(&m.strata.shard, &m.strata.tenant, m.min_time, m.max_time, &sources);
    format!("{base}-ds{}m", resolution / 60_000)
}

/// Writes the block of `resolution` made of `src` (a raw block, or a
/// downsampled one of a finer resolution), series by series, and makes it
/// visible after reading it back.
async fn downsample_block(
    store: &Arc<dyn ObjectStore>,
    src: &BlockMeta,
    resolution: i64,
) -> Result<BlockMeta, GroupFailure> {
    let id = downsampled_id(src, resolution);
    let input = |e| failure(&format!("block {}", src.ulid), e);
    let idx = BlockIndex::load(store.as_ref(), src.clone()).await.map_err(input)?;
    let names: BTreeSet<String> = idx.values.keys().cloned().collect();
    let mut cursor = SampleCursor::open(store.clone(), src).await.map_err(input)?;
    let out = |e| failure(&format!("writing block {id}"), e);
    let (tenant, shard) = (&src.strata.tenant, &src.strata.shard);
    let mut writer =
        BlockWriter::with_resolution(store.clone(), tenant, shard, &id, &names, resolution).map_err(out)?;
    let (mut samples, mut windows, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    let mut counts = Vec::with_capacity(idx.labels.len());
    for (r, labels) in idx.labels.iter().enumerate() {
        let n = idx.row_start[r + 1] - idx.row_start[r];
        rows.clear();
        if src.downsample.resolution > 0 {
            windows.clear();
            cursor.take_windows(r as u32, n, &mut windows).await.map_err(input)?;
            strata_blocks::downsample(&windows, resolution, &mut rows);
        } else {
            samples.clear();
            cursor.take(r as u32, n, &mut samples).await.map_err(input)?;
            strata_blocks::windows_of_samples(&samples, resolution, &mut rows);
        }
        writer.add_windows(labels, &rows).await.map_err(out)?;
        counts.push(rows.len() as u64);
    }
    cursor.finish().await.map_err(input)?;
    let compaction = Compaction { level: src.compaction.level, sources: src.compaction.sources.clone() };
    let meta = writer.finish((src.min_time, src.max_time), compaction).await.map_err(out)?;
    let check = |e| failure(&format!("checking block {id}"), e);
    let written = BlockIndex::load(store.as_ref(), meta.clone()).await.map_err(check)?;
    let written_rows = sample_rows(store.clone(), &meta).await.map_err(check)?;
    let want: u64 = counts.iter().sum();
    if written.labels != idx.labels
        || written_rows != want
        || !written.row_start.windows(2).map(|w| w[1] - w[0]).eq(counts.iter().copied())
    {
        return Err(GroupFailure::Halt(format!(
            "block {id} as written does not hold what was downsampled ({} series, {written_rows} rows; expected {}, {want})",
            written.labels.len(),
            idx.labels.len()
        )));
    }
    publish_block(store.as_ref(), &meta).await.map_err(|e| failure(&format!("publishing block {id}"), e))?;
    Ok(meta)
}

/// Step 3b of a pass (returns the blocks written and those replaced): raw blocks that will not be compacted any further
/// (alone in their window, the window settled) and whose data ended
/// `after_5m` ago get a 5-minute block; blocks whose data ended `after_1h`
/// ago get a 1-hour block, made of the 5-minute block when there is one
/// (the raw block may be gone by then).
async fn downsample_pass(
    store: &Arc<dyn ObjectStore>,
    plan: &Plan,
    now_ms: i64,
    current: &[BlockMeta],
    report: &mut Report,
) -> Result<(usize, usize), BlockError> {
    let d = plan.downsampling;
    if d.after_5m_ms.is_none() && d.after_1h_ms.is_none() {
        return Ok((0, 0));
    }
    let window = |m: &BlockMeta| m.min_time.div_euclid(plan.range_ms) * plan.range_ms;
    let mut raw_in_window: BTreeMap<(&str, &str, i64), usize> = BTreeMap::new();
    for m in current.iter().filter(|m| m.downsample.resolution == 0) {
        *raw_in_window.entry((&m.strata.tenant, &m.strata.shard, window(m))).or_default() += 1;
    }
    // What exists of each (tenant, shard, sources), by resolution.
    type Key = (String, String, Vec<String>);
    let key = |m: &BlockMeta| -> Key {
        let mut s = m.compaction.sources.clone();
        s.sort();
        (m.strata.tenant.clone(), m.strata.shard.clone(), s)
    };
    let mut have: BTreeMap<Key, BTreeMap<i64, BlockMeta>> = BTreeMap::new();
    for m in current {
        have.entry(key(m)).or_default().insert(m.downsample.resolution, m.clone());
    }
    let old_enough = |m: &BlockMeta, after: Option<i64>| after.is_some_and(|a| m.max_time.saturating_add(a) <= now_ms);
    // A raw block alone in its window, past the delay: compacted for good.
    let settled = |m: &BlockMeta| {
        let w = window(m);
        raw_in_window.get(&(m.strata.tenant.as_str(), m.strata.shard.as_str(), w)) == Some(&1)
            && w + plan.range_ms + plan.delay_ms <= now_ms
    };
    for (k, by_res) in have.iter_mut() {
        if by_res.get(&0).is_some_and(|raw| !settled(raw)) {
            continue;
        }
        for (res, after) in [(RES_5M, d.after_5m_ms), (RES_1H, d.after_1h_ms)] {
            // Made of the finest data left: 5m for 1h when there is one
            // (raw may be past its retention), else raw.
            let Some(src) = by_res.range(..res).next_back().map(|(_, m)| m.clone()) else { continue };
            if by_res.contains_key(&res) || !old_enough(&src, after) {
                continue;
            }
            match downsample_block(store, &src, res).await {
                Ok(meta) => {
                    by_res.insert(res, meta.clone());
                    report.downsampled.push(meta);
                }
                Err(GroupFailure::Store(e)) => return Err(e),
                Err(GroupFailure::Halt(why)) => {
                    tracing::error!(tenant = %k.0, block = %src.ulid, error = %why, "downsampling of this block halted");
                    report.halted.push(format!("tenant {}, block {}: {why}", k.0, src.ulid));
                    break;
                }
            }
        }
    }
    // Downsampled blocks of data a new block now holds more of (its raw
    // block was compacted again with late data) are replaced.
    let mut retired = BTreeSet::new();
    for new in &report.downsampled {
        let theirs = sources(new);
        for old in current.iter().filter(|o| {
            o.downsample.resolution == new.downsample.resolution
                && o.ulid != new.ulid
                && o.strata.tenant == new.strata.tenant
                && o.strata.shard == new.strata.shard
                && sources(o).len() < theirs.len()
                && sources(o).is_subset(&theirs)
        }) {
            if retired.insert(old.ulid.clone()) {
                tracing::info!(block = %old.ulid, superseded_by = %new.ulid, "redundant: marked for deletion");
                mark_for_deletion(
                    store.as_ref(),
                    &old.strata.tenant,
                    &old.ulid,
                    now_ms,
                    &format!("replaced by {}", new.ulid),
                )
                .await?;
                report.marked += 1;
            }
        }
    }
    for m in &report.downsampled {
        tracing::info!(
            block = %m.ulid, tenant = %m.strata.tenant, resolution = m.downsample.resolution,
            series = m.stats.num_series, windows = m.stats.num_samples, "downsampled"
        );
    }
    Ok((report.downsampled.len(), retired.len()))
}

/// One pass over the bucket at time `now_ms`.
pub async fn compact_once(store: &Arc<dyn ObjectStore>, plan: &Plan, now_ms: i64) -> Result<Report, BlockError> {
    let mut report = Report::default();
    let objects = store.clone();
    let store = objects.as_ref();
    let mut visible = list_blocks(store).await?;

    // 1. Retention: overall, and per resolution.
    let retention = |m: &BlockMeta| -> i64 {
        let per_resolution = plan.downsampling.retention_of(m.downsample.resolution);
        match (plan.retention_ms, per_resolution) {
            (0, r) | (r, 0) => r,
            (a, b) => a.min(b),
        }
    };
    let expired = |m: &BlockMeta| retention(m) > 0 && m.max_time <= now_ms - retention(m);
    for m in visible.iter().filter(|m| expired(m)) {
        tracing::info!(
            block = %m.ulid, tenant = %m.strata.tenant, resolution = m.downsample.resolution,
            "past retention: marked for deletion"
        );
        mark_for_deletion(store, &m.strata.tenant, &m.ulid, now_ms, "retention").await?;
        report.marked += 1;
    }
    visible.retain(|m| !expired(m));

    // 2. Blocks whose data another block already holds.
    let redundant: Vec<(usize, String)> = visible
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let mine = sources(m);
            visible
                .iter()
                .find(|o| {
                    o.ulid != m.ulid
                        && (o.downsample.resolution == m.downsample.resolution || o.downsample.resolution == 0)
                        && o.strata.tenant == m.strata.tenant
                        && o.strata.shard == m.strata.shard
                        && o.compaction.sources.len() > mine.len()
                        && mine.is_subset(&sources(o))
                })
                .map(|o| (i, o.ulid.clone()))
        })
        .collect();
    for (i, by) in redundant.iter().rev() {
        let m = visible.remove(*i);
        tracing::info!(block = %m.ulid, superseded_by = %by, "redundant: marked for deletion");
        mark_for_deletion(store, &m.strata.tenant, &m.ulid, now_ms, &format!("compacted into {by}")).await?;
        report.marked += 1;
    }

    // 2b. Size retention: keep the newest blocks that fit, mark the rest.
    let sizes = visible_block_bytes(store).await?;
    let size_of = |m: &BlockMeta| sizes.get(&(m.strata.tenant.clone(), m.ulid.clone())).copied().unwrap_or(0);
    report.bytes = visible.iter().map(size_of).sum();
    if plan.retention_bytes > 0 && report.bytes > plan.retention_bytes {
        let mut newest_first: Vec<usize> = (0..visible.len()).collect();
        newest_first.sort_by(|&a, &b| {
            let (a, b) = (&visible[a], &visible[b]);
            // At equal ranges raw blocks go before downsampled ones.
            (b.max_time, b.min_time, b.downsample.resolution, &b.ulid).cmp(&(
                a.max_time,
                a.min_time,
                a.downsample.resolution,
                &a.ulid,
            ))
        });
        let mut kept = 0u64;
        let mut over = BTreeSet::new();
        for i in newest_first {
            let size = size_of(&visible[i]);
            if !over.is_empty() || kept + size > plan.retention_bytes {
                over.insert(i);
            } else {
                kept += size;
            }
        }
        for &i in over.iter().rev() {
            let m = visible.remove(i);
            tracing::info!(
                block = %m.ulid, tenant = %m.strata.tenant, bytes = size_of(&m), limit = plan.retention_bytes,
                "past size retention: marked for deletion"
            );
            mark_for_deletion(store, &m.strata.tenant, &m.ulid, now_ms, "size retention").await?;
            report.marked += 1;
        }
        report.bytes = kept;
    }

    // 3. Compaction of complete windows.
    let mut windows: BTreeMap<(String, String, i64), Vec<&BlockMeta>> = BTreeMap::new();
    for m in visible.iter().filter(|m| m.downsample.resolution == 0) {
        let w = m.min_time.div_euclid(plan.range_ms) * plan.range_ms;
        if m.max_time <= w + plan.range_ms && w + plan.range_ms + plan.delay_ms <= now_ms {
            windows.entry((m.strata.tenant.clone(), m.strata.shard.clone(), w)).or_default().push(m);
        }
    }
    let mut replaced = BTreeSet::new();
    for ((tenant, shard, w), group) in windows {
        if group.len() < 2 {
            continue;
        }
        let min_t = group.iter().map(|m| m.min_time).min().unwrap_or(w);
        let max_t = group.iter().map(|m| m.max_time).max().unwrap_or(w + plan.range_ms);
        let all_sources: BTreeSet<String> = group.iter().flat_map(|m| m.compaction.sources.iter().cloned()).collect();
        let id = compacted_id(&shard, &tenant, min_t, max_t, &all_sources);
        let compaction = Compaction {
            level: group.iter().map(|m| m.compaction.level).max().unwrap_or(1) + 1,
            sources: all_sources.into_iter().collect(),
        };
        let meta = match compact_group(&objects, &tenant, &shard, &id, (min_t, max_t), compaction, &group).await {
            Ok(meta) => meta,
            Err(GroupFailure::Store(e)) => return Err(e),
            Err(GroupFailure::Halt(why)) => {
                tracing::error!(
                    tenant = %tenant, shard = %shard, window_start = w, inputs = group.len(), error = %why,
                    "compaction of this window halted: its blocks stay as they are (queries still read them); \
                     see docs/operations.md#stratacompactorhalted"
                );
                report.halted.push(format!("tenant {tenant}, window at {w}: {why}"));
                continue;
            }
        };
        tracing::info!(
            block = %id, tenant = %tenant, inputs = group.len(), series = meta.stats.num_series,
            samples = meta.stats.num_samples, "compacted"
        );
        for m in &group {
            mark_for_deletion(store, &tenant, &m.ulid, now_ms, &format!("compacted into {id}")).await?;
            replaced.insert(m.ulid.clone());
            report.marked += 1;
        }
        report.compacted.push(meta);
    }
    report.blocks = visible.len() - replaced.len() + report.compacted.len();

    // 3b. Downsampling of settled raw blocks.
    let current: Vec<BlockMeta> = visible
        .iter()
        .filter(|m| !replaced.contains(&m.ulid))
        .cloned()
        .chain(report.compacted.iter().cloned())
        .collect();
    let (written, retired) = downsample_pass(&objects, plan, now_ms, &current, &mut report).await?;
    report.blocks = (report.blocks + written).saturating_sub(retired);

    // 4. Deletion of blocks marked long enough ago.
    for mark in list_deletion_marks(store).await? {
        if mark.deletion_time + plan.delete_delay_ms <= now_ms {
            delete_block(store, &mark.tenant, &mark.id).await?;
            tracing::info!(block = %mark.id, tenant = %mark.tenant, reason = %mark.reason, "deleted");
            report.deleted += 1;
        }
    }
    Ok(report)
}

#[derive(Debug, thiserror::Error)]
pub enum CompactorError {
    #[error("object store at {0}: {1}")]
    ObjectStore(String, String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("HTTP server failed: {0}")]
    Serve(String),
    #[error("compaction pass failed: {0}")]
    Pass(#[from] BlockError),
}

#[derive(Debug, Clone)]
pub struct CompactorConfig {
    pub objstore: BucketConfig,
    pub web_listen: SocketAddr,
    /// Time between passes.
    pub interval: Duration,
    pub range: Duration,
    pub delay: Duration,
    /// Zero keeps data forever.
    pub retention: Duration,
    /// Most bytes of blocks to keep (oldest deleted first); zero: no limit.
    pub retention_size: u64,
    pub delete_delay: Duration,
    /// Downsampling and per-resolution retention.
    pub downsampling: DownsamplePlan,
    /// One pass, then exit (for cron jobs and tests).
    pub once: bool,
    /// HTTP timeouts and limits (`--web.*`).
    pub http: strata_server::HttpServerConfig,
}

struct Metrics {
    registry: Registry,
    runs: Counter,
    run_errors: Counter,
    compacted: Counter,
    downsampled: Counter,
    marked: Counter,
    deleted: Counter,
    blocks: Gauge,
    bytes: Gauge,
    halted: Gauge,
    last_success: Gauge<f64, AtomicU64>,
    http: strata_server::HttpMetrics,
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("strata_compactor");
        let m = Metrics {
            registry: Registry::default(),
            runs: Counter::default(),
            run_errors: Counter::default(),
            compacted: Counter::default(),
            downsampled: Counter::default(),
            marked: Counter::default(),
            deleted: Counter::default(),
            blocks: Gauge::default(),
            bytes: Gauge::default(),
            halted: Gauge::default(),
            last_success: Gauge::default(),
            http: strata_server::HttpMetrics::global(),
        };
        r.register("runs", "Compaction passes started", m.runs.clone());
        r.register("run_errors", "Compaction passes that failed", m.run_errors.clone());
        r.register("blocks_written", "Compacted blocks written", m.compacted.clone());
        r.register("blocks_downsampled", "Downsampled blocks (5m, 1h) written", m.downsampled.clone());
        r.register("blocks_marked", "Blocks marked for deletion (inputs, redundant, retention)", m.marked.clone());
        r.register("blocks_deleted", "Blocks deleted after the delete delay", m.deleted.clone());
        r.register("blocks", "Blocks visible in the bucket after the last pass", m.blocks.clone());
        r.register(
            "block_bytes",
            "Bytes of the blocks kept by the last pass's retention (before its compaction)",
            m.bytes.clone(),
        );
        r.register(
            "halted_groups",
            "Windows the last pass did not compact because their blocks are unreadable or disagree (see the logs)",
            m.halted.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "When the last pass succeeded (Unix time)",
            m.last_success.clone(),
        );
        Metrics { registry: r, ..m }
    }
}

/// A byte size as Prometheus' `--storage.tsdb.retention.size` takes it:
/// a whole number, optionally with `B`, `KB`, `MB`, `GB`, `TB`, `PB`, `EB`
/// (powers of 1024, as Prometheus) or `KiB`… `EiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a size: want a whole number of bytes, e.g. 512MB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KB" | "KiB" => 10,
        "MB" | "MiB" => 20,
        "GB" | "GiB" => 30,
        "TB" | "TiB" => 40,
        "PB" | "PiB" => 50,
        "EB" | "EiB" => 60,
        u => return Err(format!("{text:?}: unknown unit {u:?} (B, KB, MB, GB, TB, PB, EB)")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("{text:?} does not fit in 64 bits"))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn metrics(State(m): State<Arc<Metrics>>) -> axum::response::Response {
    strata_server::process::metrics_response(&m.registry)
}

/// Runs passes every `interval` until `shutdown` (or one pass with `once`).
pub async fn run(
    cfg: CompactorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CompactorError> {
    if cfg.range < Duration::from_secs(60) {
        return Err(CompactorError::Config(format!("--compaction.range must be at least 1m, got {:?}", cfg.range)));
    }
    let path = cfg.objstore.describe();
    let store = cfg.objstore.open().map_err(|e| CompactorError::ObjectStore(path.clone(), e.to_string()))?;
    let plan = Plan {
        range_ms: ms(cfg.range),
        delay_ms: ms(cfg.delay),
        retention_ms: ms(cfg.retention),
        delete_delay_ms: ms(cfg.delete_delay),
        retention_bytes: cfg.retention_size,
        downsampling: cfg.downsampling,
    };
    let m = Arc::new(Metrics::new());
    let pass = move |m: Arc<Metrics>, store: Arc<dyn ObjectStore>| async move {
        m.runs.inc();
        let run = strata_telemetry::BackgroundRun::start("compaction");
        let result = compact_once(&store, &plan, now_ms()).await;
        run.finish(result.is_ok());
        match result {
            Ok(r) => {
                m.compacted.inc_by(r.compacted.len() as u64);
                m.downsampled.inc_by(r.downsampled.len() as u64);
                m.marked.inc_by(r.marked as u64);
                m.deleted.inc_by(r.deleted as u64);
                m.blocks.set(r.blocks as i64);
                m.bytes.set(i64::try_from(r.bytes).unwrap_or(i64::MAX));
                m.halted.set(r.halted.len() as i64);
                m.last_success.set(now_ms() as f64 / 1000.0);
                tracing::info!(
                    written = r.compacted.len(),
                    downsampled = r.downsampled.len(),
                    marked = r.marked,
                    deleted = r.deleted,
                    blocks = r.blocks,
                    "pass done"
                );
                Ok(())
            }
            Err(e) => {
                m.run_errors.inc();
                tracing::warn!(error = %e, "compaction pass failed");
                Err(e)
            }
        }
    };
    if cfg.once {
        return Ok(pass(m, store).await?);
    }
    let listener =
        tokio::net::TcpListener::bind(cfg.web_listen).await.map_err(|e| CompactorError::Bind(cfg.web_listen, e))?;
    let http_metrics = m.http.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/-/ready", get(|| async { "Ready\n" }))
        .route("/-/healthy", get(|| async { "OK\n" }))
        .with_state(m.clone());
    tracing::info!(web = %cfg.web_listen, objstore = %path, range = ?cfg.range, retention = ?cfg.retention, "strata compact started");
    let interval = cfg.interval;
    let passes = tokio::spawn(async move {
        loop {
            let _ = pass(m.clone(), store.clone()).await;
            tokio::time::sleep(interval).await;
        }
    });
    let served = strata_server::serve(
        listener,
        app,
        &cfg.http,
        Some(&http_metrics),
        strata_server::auth::status_access,
        shutdown,
    )
    .await;
    passes.abort();
    served.map_err(|e| CompactorError::Serve(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use strata_blocks::{SeriesData, read_block, upload_block};

    const MIN: i64 = 60_000;

    fn arc(s: &InMemory) -> Arc<dyn ObjectStore> {
        Arc::new(s.clone())
    }

    /// The reference the streaming merge is checked against: merges blocks' series: one per label set, samples in time order, one per timestamp.
    async fn merge_in_memory(
        store: &dyn ObjectStore,
        tenant: &str,
        blocks: &[&BlockMeta],
    ) -> Result<Vec<SeriesData>, BlockError> {
        let mut merged: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        for m in blocks {
            let (_, series) = read_block(store, tenant, &m.ulid).await?;
            for s in series {
                merged.entry(s.labels).or_default().extend(s.samples);
            }
        }
        Ok(merged
            .into_iter()
            .map(|(labels, mut samples)| {
                // Stable sort, so dedup keeps the first block's sample.
                samples.sort_by_key(|s| s.0);
                samples.dedup_by_key(|s| s.0);
                SeriesData { labels, samples }
            })
            .collect())
    }

    fn plan() -> Plan {
        Plan {
            range_ms: 10 * MIN,
            delay_ms: MIN,
            retention_ms: 0,
            delete_delay_ms: 5 * MIN,
            retention_bytes: 0,
            downsampling: DownsamplePlan::default(),
        }
    }

    fn series(name: &str, env: &str, samples: Vec<(i64, f64)>) -> SeriesData {
        SeriesData {
            labels: Labels::from_pairs(vec![("__name__".into(), name.into()), ("env".into(), env.into())]),
            samples,
        }
    }

    /// Ten 1-minute blocks of two series (one sample every 15 s), like an ingester cuts them.
    async fn minute_blocks(store: &InMemory, tenant: &str, from: i64, n: i64) -> Vec<SeriesData> {
        let mut all: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        for k in 0..n {
            let t0 = from + k * MIN;
            let block: Vec<SeriesData> = ["prod", "qa"]
                .iter()
                .map(|env| {
                    series("requests_total", env, (0..4).map(|i| (t0 + i * 15_000, (k * 4 + i) as f64)).collect())
                })
                .collect();
            for s in &block {
                all.entry(s.labels.clone()).or_default().extend(s.samples.iter().copied());
            }
            upload_block(store, tenant, "shard-0", t0, t0 + MIN, &block).await.unwrap();
        }
        all.into_iter().map(|(labels, samples)| SeriesData { labels, samples }).collect()
    }

    #[tokio::test]
    async fn settled_blocks_are_downsampled_again_after_late_data_and_resolutions_retire_apart() {
        let store = InMemory::new();
        let t0 = 100 * 10 * MIN;
        let data = minute_blocks(&store, "t", t0, 10).await;
        let p = Plan {
            downsampling: DownsamplePlan { after_5m_ms: Some(0), after_1h_ms: Some(0), ..DownsamplePlan::default() },
            ..plan()
        };
        let r = compact_once(&arc(&store), &p, t0 + 30 * MIN).await.unwrap();
        assert_eq!((r.compacted.len(), r.downsampled.len()), (1, 2));
        let raw_id = r.compacted[0].ulid.clone();
        // The 5m block holds exactly the windows of the raw samples.
        let d5 = r.downsampled.iter().find(|m| m.downsample.resolution == RES_5M).unwrap().clone();
        assert_eq!(d5.compaction.sources, r.compacted[0].compaction.sources);
        let idx = BlockIndex::load(&store, d5.clone()).await.unwrap();
        let refs: Vec<u32> = (0..idx.labels.len() as u32).collect();
        let got = idx.read_windows(arc(&store), &refs, i64::MIN, i64::MAX).await.unwrap();
        for (r, labels) in idx.labels.iter().enumerate() {
            let raw = &data.iter().find(|s| &s.labels == labels).unwrap().samples;
            let mut want = Vec::new();
            strata_blocks::windows_of_samples(raw, RES_5M, &mut want);
            assert_eq!(got[r], want, "{labels:?}");
        }
        // Nothing more to do.
        let r = compact_once(&arc(&store), &p, t0 + 31 * MIN).await.unwrap();
        assert!(r.compacted.is_empty() && r.downsampled.is_empty() && r.marked == 0);

        // A late block in the window: merged into a new raw block, the old
        // downsampled blocks become redundant, the new one is downsampled.
        let late = vec![series("late_total", "prod", vec![(t0 + 5 * MIN, 1.0), (t0 + 6 * MIN, 2.0)])];
        upload_block(&store, "t", "shard-0", t0 + 5 * MIN, t0 + 6 * MIN + 1, &late).await.unwrap();
        let r = compact_once(&arc(&store), &p, t0 + 40 * MIN).await.unwrap();
        assert_eq!((r.compacted.len(), r.downsampled.len()), (1, 2));
        assert_ne!(r.compacted[0].ulid, raw_id);
        let visible = list_blocks(&store).await.unwrap();
        let mut res: Vec<i64> = visible.iter().map(|m| m.downsample.resolution).collect();
        res.sort();
        assert_eq!(res, vec![0, RES_5M, RES_1H], "one block per resolution: {visible:?}");
        for m in visible.iter().filter(|m| m.downsample.resolution > 0) {
            let idx = BlockIndex::load(&store, m.clone()).await.unwrap();
            assert!(idx.labels.iter().any(|l| l.get(METRIC_NAME) == Some("late_total")), "{}", m.ulid);
        }

        // Raw retention removes only the raw block.
        let short_raw =
            Plan { downsampling: DownsamplePlan { retention_raw_ms: MIN, ..p.downsampling }, delete_delay_ms: 0, ..p };
        let r = compact_once(&arc(&store), &short_raw, t0 + 60 * MIN).await.unwrap();
        assert_eq!(r.marked, 1);
        let left: Vec<i64> = list_blocks(&store).await.unwrap().iter().map(|m| m.downsample.resolution).collect();
        assert_eq!(left.len(), 2);
        assert!(left.iter().all(|&r| r > 0), "{left:?}");
    }

    /// Every series of `tenant` over all visible blocks (checked against data built independently).
    async fn everything(store: &InMemory, tenant: &str) -> Vec<SeriesData> {
        let metas: Vec<BlockMeta> =
            list_blocks(store).await.unwrap().into_iter().filter(|m| m.strata.tenant == tenant).collect();
        merge_in_memory(store, tenant, &metas.iter().collect::<Vec<_>>()).await.unwrap()
    }

    #[tokio::test]
    async fn a_complete_window_becomes_one_block_with_the_same_data() {
        let store = InMemory::new();
        let t0 = 100 * 10 * MIN; // window-aligned
        let want = minute_blocks(&store, "t", t0, 10).await;
        // The window is not complete yet (delay): nothing happens.
        let r = compact_once(&arc(&store), &plan(), t0 + 10 * MIN + MIN / 2).await.unwrap();
        assert_eq!((r.compacted.len(), r.marked, r.blocks), (0, 0, 10));

        let r = compact_once(&arc(&store), &plan(), t0 + 11 * MIN).await.unwrap();
        assert_eq!(r.compacted.len(), 1);
        let c = &r.compacted[0];
        assert_eq!((c.min_time, c.max_time, c.compaction.level), (t0, t0 + 10 * MIN, 2));
        assert_eq!(c.compaction.sources.len(), 10);
        assert_eq!((c.stats.num_series, c.stats.num_samples), (2, 80));
        assert_eq!((r.marked, r.blocks), (10, 1));
        // Readers see exactly the compacted block, with every sample.
        let listed = list_blocks(&store).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].ulid, c.ulid);
        assert_eq!(everything(&store, "t").await, want);

        // Inputs are deleted only after the delete delay.
        let objects = |s: &InMemory| {
            let s = s.clone();
            async move { s.list(None).try_collect::<Vec<_>>().await.unwrap().len() }
        };
        let before = objects(&store).await;
        let r = compact_once(&arc(&store), &plan(), t0 + 12 * MIN).await.unwrap();
        assert_eq!((r.deleted, r.compacted.len(), r.marked), (0, 0, 0));
        assert_eq!(objects(&store).await, before);
        let r = compact_once(&arc(&store), &plan(), t0 + 16 * MIN).await.unwrap();
        assert_eq!(r.deleted, 10);
        assert_eq!(objects(&store).await, 4, "only the compacted block's four files are left");
        assert_eq!(everything(&store, "t").await, want);
    }

    #[tokio::test]
    async fn windows_tenants_and_partial_windows_are_kept_apart() {
        let store = InMemory::new();
        let t0 = 100 * 10 * MIN;
        // 15 minutes for tenant a: one full window and half of the next; 3 minutes for b.
        let want_a = minute_blocks(&store, "a", t0, 15).await;
        let want_b = minute_blocks(&store, "b", t0, 3).await;
        let r = compact_once(&arc(&store), &plan(), t0 + 15 * MIN).await.unwrap();
        let mut got: Vec<(String, i64, i64)> =
            r.compacted.iter().map(|m| (m.strata.tenant.clone(), m.min_time, m.max_time)).collect();
        got.sort();
        assert_eq!(got, vec![("a".into(), t0, t0 + 10 * MIN), ("b".into(), t0, t0 + 3 * MIN)]);
        // a's second window is not complete: its five blocks stay as they are.
        assert_eq!(r.blocks, 2 + 5);
        assert_eq!(everything(&store, "a").await, want_a);
        assert_eq!(everything(&store, "b").await, want_b);
    }

    #[tokio::test]
    async fn an_interrupted_pass_and_a_re_uploaded_source_leave_no_double_data() {
        let store = InMemory::new();
        let t0 = 100 * 10 * MIN;
        let want = minute_blocks(&store, "t", t0, 10).await;
        let r = compact_once(&arc(&store), &plan(), t0 + 11 * MIN).await.unwrap();
        let compacted = r.compacted[0].ulid.clone();
        // An ingester re-uploads one of the compacted level-1 blocks (e.g. after a
        // failover that lost its BlockUploaded entry): same id, same content.
        let again = minute_blocks(&store, "t", t0 + 3 * MIN, 1).await;
        assert_eq!(list_blocks(&store).await.unwrap().len(), 1, "the re-uploaded block is still marked");
        // Simulate a lost mark too: remove marks, as if the pass crashed after the upload.
        for m in list_deletion_marks(&store).await.unwrap() {
            let p = object_store::path::Path::from(format!("{}/{}/{}", m.tenant, m.id, strata_blocks::DELETION_MARK));
            store.delete(&p).await.unwrap();
        }
        assert_eq!(list_blocks(&store).await.unwrap().len(), 11);
        let r = compact_once(&arc(&store), &plan(), t0 + 12 * MIN).await.unwrap();
        assert_eq!((r.compacted.len(), r.marked, r.blocks), (0, 10, 1), "sources of the compacted block are redundant");
        assert_eq!(list_blocks(&store).await.unwrap()[0].ulid, compacted);
        assert_eq!(everything(&store, "t").await, want);
        assert!(!again.is_empty());
    }

    #[tokio::test]
    async fn retention_deletes_old_blocks_only() {
        let store = InMemory::new();
        let t0 = 100 * 10 * MIN;
        minute_blocks(&store, "t", t0, 3).await;
        let p = Plan {
            retention_ms: 60 * MIN,
            range_ms: 10 * MIN,
            delay_ms: 100 * MIN,
            delete_delay_ms: 0,
            retention_bytes: 0,
            downsampling: DownsamplePlan::default(),
        };
        // At t0+62m the first two blocks (ending t0+1m, t0+2m) are past 60 minutes.
        let r = compact_once(&arc(&store), &p, t0 + 62 * MIN).await.unwrap();
        assert_eq!((r.marked, r.deleted, r.blocks), (2, 2, 1));
        let left = list_blocks(&store).await.unwrap();
        assert_eq!((left.len(), left[0].min_time), (1, t0 + 2 * MIN));
    }

    #[test]
    fn sizes_parse_as_prometheus_reads_them() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1TB"), Ok(1 << 40));
        assert!(parse_size("1.5GB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("GB").unwrap_err().contains("not a size"));
        assert!(parse_size("10QB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("20EB").unwrap_err().contains("64 bits"));
    }

    #[tokio::test]
    async fn size_retention_deletes_the_oldest_blocks_until_the_rest_fits() {
        let store = InMemory::new();
        let t0 = 100 * 10 * MIN;
        minute_blocks(&store, "a", t0, 4).await;
        minute_blocks(&store, "b", t0 + 2 * MIN, 3).await;
        let sizes = visible_block_bytes(&store).await.unwrap();
        assert_eq!(sizes.len(), 7);
        let metas = list_blocks(&store).await.unwrap();
        let size = |tenant: &str, k: i64| {
            let m = metas.iter().find(|m| m.strata.tenant == tenant && m.min_time == t0 + k * MIN).unwrap();
            sizes[&(tenant.to_string(), m.ulid.clone())]
        };
        let total: u64 = sizes.values().sum();
        // Room for all but the two oldest blocks (a's minutes 0 and 1): the
        // newest five (a: 2, 3; b: 2, 3, 4) fit exactly.
        let limit = total - size("a", 0) - size("a", 1);
        let p = Plan { retention_bytes: limit, delay_ms: 1000 * MIN, ..plan() };
        // No limit, or a limit the bucket fits in: nothing happens.
        let r = compact_once(&arc(&store), &Plan { retention_bytes: total, ..p }, t0 + 10 * MIN).await.unwrap();
        assert_eq!((r.marked, r.blocks, r.bytes), (0, 7, total));
        let r = compact_once(&arc(&store), &p, t0 + 10 * MIN).await.unwrap();
        assert_eq!((r.marked, r.blocks, r.bytes), (2, 5, limit));
        let left: Vec<(String, i64)> = list_blocks(&store)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.strata.tenant, (m.min_time - t0) / MIN))
            .collect();
        assert!(!left.contains(&("a".into(), 0)) && !left.contains(&("a".into(), 1)), "{left:?}");
        assert_eq!(left.len(), 5);
        // The marked blocks leave the size count at once and are deleted after the delay.
        assert_eq!(visible_block_bytes(&store).await.unwrap().values().sum::<u64>(), limit);
        let r = compact_once(&arc(&store), &p, t0 + 16 * MIN).await.unwrap();
        assert_eq!((r.marked, r.deleted, r.blocks), (0, 2, 5));
        // One byte less than the five: the oldest of them goes too (newest kept first).
        let r = compact_once(&arc(&store), &Plan { retention_bytes: limit - 1, ..p }, t0 + 16 * MIN).await.unwrap();
        assert_eq!((r.marked, r.blocks), (1, 4));
        let ends: Vec<i64> = list_blocks(&store).await.unwrap().into_iter().map(|m| (m.max_time - t0) / MIN).collect();
        assert_eq!(ends.iter().filter(|&&e| e == 3).count(), 1, "one of the two oldest (ending t0+3m) went: {ends:?}");
    }

    #[tokio::test]
    async fn blocks_that_disagree_or_are_corrupt_halt_only_their_window() {
        let store = InMemory::new();
        let t0 = 100 * 10 * MIN;
        let want_a = minute_blocks(&store, "a", t0, 10).await;
        // Tenant b: two blocks with different values for one sample.
        upload_block(&store, "b", "shard-0", t0, t0 + MIN, &[series("x", "prod", vec![(t0, 1.0)])]).await.unwrap();
        let other = [series("x", "prod", vec![(t0, 2.0), (t0 + MIN, 3.0)])];
        upload_block(&store, "b", "shard-0", t0 + MIN, t0 + 2 * MIN, &other).await.unwrap();
        // Tenant c: a block whose samples file lost its footer.
        minute_blocks(&store, "c", t0, 2).await;
        let victim = list_blocks(&store).await.unwrap().into_iter().find(|m| m.strata.tenant == "c").unwrap();
        let path = object_store::path::Path::from(format!("c/{}/samples.parquet", victim.ulid));
        let mut bytes = store.get(&path).await.unwrap().bytes().await.unwrap().to_vec();
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(b"XXXX");
        store.put(&path, object_store::PutPayload::from(bytes)).await.unwrap();

        let r = compact_once(&arc(&store), &plan(), t0 + 11 * MIN).await.unwrap();
        assert_eq!(r.compacted.len(), 1, "tenant a's window is compacted: {:?}", r.halted);
        assert_eq!(r.halted.len(), 2, "{:?}", r.halted);
        assert!(r.halted.iter().any(|h| h.contains("tenant b") && h.contains("disagree") && h.contains("at 60000000")));
        assert!(r.halted.iter().any(|h| h.contains("tenant c") && h.contains(&victim.ulid)), "{:?}", r.halted);
        // Halted windows keep their blocks, unmarked and readable.
        let mut left: Vec<String> = list_blocks(&store).await.unwrap().into_iter().map(|m| m.strata.tenant).collect();
        left.sort();
        assert_eq!(left, ["a", "b", "b", "c", "c"].map(String::from), "{left:?}");
        assert_eq!(everything(&store, "a").await, want_a);
    }

    #[tokio::test]
    async fn the_streaming_merge_equals_the_in_memory_one_on_overlapping_blocks() {
        // Blocks overlapping in time (a late block in a compacted window),
        // series present in some blocks only, equal duplicates.
        let store = InMemory::new();
        let t0 = 100 * 10 * MIN;
        let mut blocks = Vec::new();
        for b in 0..4i64 {
            let block: Vec<SeriesData> = (0..300)
                .filter(|i| (i + b) % 3 != 0)
                .map(|i| {
                    let env = format!("e{i:03}");
                    // Equal timestamps in two blocks hold equal values.
                    let samples = (0..40)
                        .map(|k| {
                            let t = t0 + b * 30_000 + k * 15_000;
                            (t, (i * 1000) as f64 + ((t - t0) / 15_000) as f64)
                        })
                        .collect();
                    let name = if i % 2 == 0 { "up" } else { "requests_total" };
                    series(name, &env, samples)
                })
                .collect();
            upload_block(&store, "t", "shard-0", t0 + b * MIN, t0 + (b + 1) * MIN, &block).await.unwrap();
            blocks.push(block);
        }
        let want = everything(&store, "t").await;
        let r = compact_once(&arc(&store), &plan(), t0 + 11 * MIN).await.unwrap();
        assert_eq!((r.compacted.len(), r.halted.len()), (1, 0), "{:?}", r.halted);
        let got = everything(&store, "t").await;
        assert_eq!(got, want);
        assert_eq!(r.compacted[0].stats.num_samples, want.iter().map(|s| s.samples.len() as u64).sum::<u64>());
    }
}
