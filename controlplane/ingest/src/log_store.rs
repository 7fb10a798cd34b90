//! Durable Raft log: a small segmented WAL of our own.
//!
//! Records (`strata_wal` framing, body `kind u8 | payload`) in
//! `wal-<seq>.log` segments: kind 1 appends entries (bincode), kind 2 truncates from an
//! index, kind 3 purges up to a log id. Appends are fsynced before openraft
//! is told they are durable. On open the segments are replayed; the newest
//! one is cut at the first torn or corrupt record. The vote lives in its own
//! file, replaced atomically (`strata_wal::replace`); the committed log id,
//! a startup hint saved on every commit, is one checksummed record
//! overwritten in place without fsync. Segments whose entries are all
//! purged are deleted.
//! Only an index (log id and file position per entry) and the most recent
//! entries stay in memory; older entries are read back from their segment.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::Mutex;

use crate::raft_types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const KIND_ENTRIES: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
const KIND_PURGE: u8 = 3;
const SEGMENT_BYTES: u64 = 64 << 20;
/// Recent entries kept decoded in memory (replication and apply read them),
/// bounded by count and by payload bytes.
const CACHE_ENTRIES: usize = 512;
const CACHE_BYTES: usize = 16 << 20;

/// Approximate memory of an entry's payload.
fn entry_bytes(e: &Entry) -> usize {
    match &e.payload {
        openraft::EntryPayload::Normal(
            crate::raft_types::Request::Write { items } | crate::raft_types::Request::WriteSnappy { items },
        ) => items.iter().map(|(t, b)| t.len() + b.len()).sum::<usize>() + 64,
        _ => 64,
    }
}

/// Where an entry lives: its log id and the WAL record holding it.
#[derive(Debug, Clone, Copy)]
struct Loc {
    log_id: LogId,
    seg: u64,
    offset: u64,
}

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from_io_error(subject, verb, io::Error::other(e.to_string()))
}

struct Inner {
    dir: PathBuf,
    file: File,
    seg: u64,
    seg_size: u64,
    /// Segment → highest entry index it holds.
    segments: BTreeMap<u64, u64>,
    index: BTreeMap<u64, Loc>,
    cache: BTreeMap<u64, Entry>,
    cache_bytes: usize,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    committed_file: CommittedFile,
}

/// The Raft log storage; clones share the same log (used as the reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:020}.log"))
}

fn write_atomic<T: Serialize>(dir: &Path, name: &str, v: &T) -> io::Result<()> {
    let bytes = bincode::serialize(v).map_err(io::Error::other)?;
    strata_wal::replace(&dir.join(name), true, |w| w.write_all(&bytes))
}

/// The committed log id: a hint openraft saves on every commit (before
/// applying), so it is overwritten in place — one `strata_wal` record
/// (bincode) at offset 0, no fsync, no rename. Lost, stale or torn after a
/// crash it reads as unknown or older, which is safe: the node then learns
/// what is committed from its log and the leader, as Raft does anyway. (It
/// used to be replaced through a temporary file and a rename; on ext4 that
/// cost an open, a rename and a writeback per commit — about 7 % of a
/// 3-node cluster's CPU in the backfill benchmark.)
struct CommittedFile(File);

impl CommittedFile {
    const NAME: &str = "committed";

    fn open(dir: &Path) -> io::Result<(CommittedFile, Option<LogId>)> {
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join(Self::NAME))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let committed = match Self::decode(&buf) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(%why, "ignoring an unreadable committed log id");
                None
            }
        };
        Ok((CommittedFile(file), committed))
    }

    fn decode(buf: &[u8]) -> Result<Option<LogId>, String> {
        match strata_wal::parse(buf, 4096) {
            Ok(None) => Ok(None),
            Ok(Some((body, _))) => bincode::deserialize(body).map_err(|e| format!("undecodable record: {e}")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn save(&self, committed: &Option<LogId>) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let payload = bincode::serialize(committed).map_err(io::Error::other)?;
        let mut rec = Vec::new();
        strata_wal::encode(&mut rec, &[&payload]);
        self.0.write_all_at(&rec, 0)
    }
}

fn read_file<T: DeserializeOwned>(dir: &Path, name: &str) -> io::Result<Option<T>> {
    match fs::read(dir.join(name)) {
        Ok(b) => bincode::deserialize(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Largest record body read back (a bound checked before allocating).
const MAX_RECORD: u64 = 1 << 30;

fn encode_record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    strata_wal::encode(&mut buf, &[&[kind], payload]);
    buf
}

/// Splits a record body into its kind and payload.
fn split_kind(mut body: Vec<u8>) -> io::Result<(u8, Vec<u8>)> {
    if body.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "empty Raft log record"));
    }
    let kind = body.remove(0);
    Ok((kind, body))
}

impl LogStore {
    /// Opens the log in `dir`, replaying and repairing it.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let mut index: BTreeMap<u64, Loc> = BTreeMap::new();
        let mut last_purged: Option<LogId> = None;
        let mut segments = BTreeMap::new();
        let bad = |e: bincode::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        for (i, seq) in seqs.iter().enumerate() {
            let path = seg_path(dir, *seq);
            let mut max_index = 0u64;
            let scan = strata_wal::scan(&path, MAX_RECORD, |offset, body| {
                let (kind, payload) = split_kind(body)?;
                match kind {
                    KIND_ENTRIES => {
                        let es: Vec<Entry> = bincode::deserialize(&payload).map_err(bad)?;
                        for e in es {
                            max_index = max_index.max(e.log_id.index);
                            index.insert(e.log_id.index, Loc { log_id: e.log_id, seg: *seq, offset });
                        }
                    }
                    KIND_TRUNCATE => {
                        let from: u64 = bincode::deserialize(&payload).map_err(bad)?;
                        index.split_off(&from);
                    }
                    KIND_PURGE => {
                        let upto: LogId = bincode::deserialize(&payload).map_err(bad)?;
                        index = index.split_off(&(upto.index + 1));
                        last_purged = Some(upto);
                    }
                    k => {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown WAL record kind {k}")));
                    }
                }
                Ok(())
            })?;
            if let Some(e) = &scan.damage {
                let valid = scan.valid_bytes;
                if i + 1 != seqs.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("Raft log segment {} is corrupt at byte {valid}: {e}", path.display()),
                    ));
                }
                tracing::warn!(segment = seq, valid, error = %e, "truncating torn tail of the Raft log");
                strata_wal::truncate(&path, valid)?;
            }
            segments.insert(*seq, max_index);
        }
        let seg = seqs.last().copied().unwrap_or(1);
        let path = seg_path(dir, seg);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let seg_size = file.metadata()?.len();
        segments.entry(seg).or_insert(0);
        let vote = read_file(dir, "vote")?;
        let (committed_file, committed) = CommittedFile::open(dir)?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                file,
                seg,
                seg_size,
                segments,
                index,
                cache: BTreeMap::new(),
                cache_bytes: 0,
                last_purged,
                vote,
                committed,
                committed_file,
            })),
        })
    }
}

impl LogStore {
    /// Appends entries and fsyncs them before returning (what openraft's
    /// `append` does before reporting the entries durable).
    pub async fn append_durable(&self, entries: Vec<Entry>) -> io::Result<()> {
        let mut inner = self.inner.lock().await;
        let payload = bincode::serialize(&entries).map_err(io::Error::other)?;
        let (seg, offset) = inner.write(KIND_ENTRIES, &payload)?;
        for e in entries {
            let idx = e.log_id.index;
            inner.segments.entry(seg).and_modify(|m| *m = (*m).max(idx)).or_insert(idx);
            inner.index.insert(idx, Loc { log_id: e.log_id, seg, offset });
            inner.cache_bytes += entry_bytes(&e);
            if let Some(old) = inner.cache.insert(idx, e) {
                inner.cache_bytes -= entry_bytes(&old);
            }
        }
        while inner.cache.len() > CACHE_ENTRIES || (inner.cache_bytes > CACHE_BYTES && inner.cache.len() > 1) {
            if let Some((_, old)) = inner.cache.pop_first() {
                inner.cache_bytes -= entry_bytes(&old);
            }
        }
        Ok(())
    }
}

impl Inner {
    /// Reads the entries of `range` from the cache or their WAL records.
    fn read_range(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut decoded: Option<((u64, u64), Vec<Entry>)> = None;
        for (idx, loc) in self.index.range(range) {
            if let Some(e) = self.cache.get(idx) {
                out.push(e.clone());
                continue;
            }
            let key = (loc.seg, loc.offset);
            if decoded.as_ref().map(|(k, _)| *k) != Some(key) {
                let mut f = File::open(seg_path(&self.dir, loc.seg))?;
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(loc.offset))?;
                let body = strata_wal::read(&mut BufReader::new(f), MAX_RECORD)?.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::UnexpectedEof, format!("log entry {idx} missing from its segment"))
                })?;
                let (kind, payload) = split_kind(body)?;
                if kind != KIND_ENTRIES {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("log entry {idx} points at a non-entry record"),
                    ));
                }
                let es: Vec<Entry> =
                    bincode::deserialize(&payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                decoded = Some((key, es));
            }
            let (_, es) = decoded.as_ref().expect("decoded above");
            let e = es.iter().find(|e| e.log_id.index == *idx).cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("log entry {idx} not in its WAL record"))
            })?;
            out.push(e);
        }
        Ok(out)
    }

    /// Writes one record and fsyncs; returns its (segment, offset).
    fn write(&mut self, kind: u8, payload: &[u8]) -> io::Result<(u64, u64)> {
        if self.seg_size >= SEGMENT_BYTES {
            self.file.sync_data()?;
            self.seg += 1;
            self.file = OpenOptions::new().create(true).append(true).open(seg_path(&self.dir, self.seg))?;
            strata_wal::sync_dir(&self.dir)?;
            self.seg_size = 0;
            self.segments.insert(self.seg, 0);
        }
        let rec = encode_record(kind, payload);
        tokio::task::block_in_place(|| {
            self.file.write_all(&rec)?;
            self.file.sync_data()
        })?;
        let offset = self.seg_size;
        self.seg_size += rec.len() as u64;
        Ok((self.seg, offset))
    }

    fn delete_purged_segments(&mut self) {
        let Some(purged) = self.last_purged else { return };
        let old: Vec<u64> =
            self.segments.iter().filter(|(s, max)| **s != self.seg && **max <= purged.index).map(|(s, _)| *s).collect();
        for s in old {
            if fs::remove_file(seg_path(&self.dir, s)).is_ok() {
                self.segments.remove(&s);
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.inner.lock().await;
        tokio::task::block_in_place(|| inner.read_range(range))
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock().await;
        let last = inner.index.values().next_back().map(|l| l.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        let dir = inner.dir.clone();
        tokio::task::block_in_place(|| write_atomic(&dir, "vote", vote))
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        inner.committed_file.save(&committed).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.append_durable(entries.into_iter().collect()).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = io::Error::other(e.to_string());
                callback.log_io_completed(Err(e));
                Err(StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, err))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        let payload = bincode::serialize(&log_id.index).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        inner.write(KIND_TRUNCATE, &payload).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        inner.index.split_off(&log_id.index);
        let dropped = inner.cache.split_off(&log_id.index);
        inner.cache_bytes -= dropped.values().map(entry_bytes).sum::<usize>();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        let payload = bincode::serialize(&log_id).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        inner.write(KIND_PURGE, &payload).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        inner.index = inner.index.split_off(&(log_id.index + 1));
        inner.cache = inner.cache.split_off(&(log_id.index + 1));
        inner.cache_bytes = inner.cache.values().map(entry_bytes).sum();
        inner.last_purged = Some(log_id);
        inner.delete_purged_segments();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Blank }
    }

    async fn append(s: &mut LogStore, es: Vec<Entry>) {
        s.append_durable(es).await.unwrap();
    }

    async fn indexes(s: &mut LogStore) -> Vec<u64> {
        s.try_get_log_entries(0..u64::MAX).await.unwrap().iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn survives_reopen_with_truncate_purge_vote_and_committed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path()).unwrap();
            append(&mut s, (1..=10).map(|i| entry(1, i)).collect()).await;
            s.truncate(LogId::new(CommittedLeaderId::new(1, 1), 8)).await.unwrap();
            append(&mut s, (8..=12).map(|i| entry(2, i)).collect()).await;
            s.purge(LogId::new(CommittedLeaderId::new(1, 1), 3)).await.unwrap();
            s.save_vote(&Vote::new(2, 1)).await.unwrap();
            s.save_committed(Some(LogId::new(CommittedLeaderId::new(2, 1), 11))).await.unwrap();
        }
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut s).await, (4..=12).collect::<Vec<_>>());
        let e = s.try_get_log_entries(8..9).await.unwrap();
        assert_eq!(e[0].log_id.leader_id.term, 2, "truncated entries replaced");
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        assert_eq!(s.read_committed().await.unwrap().map(|l| l.index), Some(11));
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(3));
        assert_eq!(st.last_log_id.map(|l| l.index), Some(12));
        drop(s);
        // The committed id is a hint written in place without fsync: a
        // record torn by a crash (short, or old and new bytes mixed) reads as
        // unknown, and the log itself is intact.
        let path = dir.path().join("committed");
        let good = std::fs::read(&path).unwrap();
        let mut mixed = good.clone();
        let last = mixed.len() - 1;
        mixed[last] ^= 0x01; // the index's high byte from an older value
        for torn in [&good[..5], &good[..good.len() - 2], &mixed[..]] {
            std::fs::write(&path, torn).unwrap();
            let mut s = LogStore::open(dir.path()).unwrap();
            assert_eq!(s.read_committed().await.unwrap(), None, "{torn:?}");
        }
        // A shorter record written over a longer one (None after Some)
        // reads back as written: the length field, not the file size, counts.
        std::fs::write(&path, &good).unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.read_committed().await.unwrap().map(|l| l.index), Some(11));
        s.save_committed(None).await.unwrap();
        drop(s);
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.read_committed().await.unwrap(), None);
        assert_eq!(indexes(&mut s).await, (4..=12).collect::<Vec<_>>());
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn torn_tail_is_cut_and_log_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path()).unwrap();
            append(&mut s, (1..=5).map(|i| entry(1, i)).collect()).await;
        }
        // A crash in the middle of the next append leaves half a record.
        let seg = seg_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 9, 9, 9]).unwrap();
        drop(f);
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut s).await, vec![1, 2, 3, 4, 5]);
        append(&mut s, vec![entry(1, 6)]).await;
        drop(s);
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut s).await, vec![1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn corruption_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path()).unwrap();
            append(&mut s, vec![entry(1, 1)]).await;
        }
        let seg = seg_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[10] ^= 0xff;
        fs::write(&seg, &bytes).unwrap();
        // The damaged record is the last one, so it is treated as a torn tail.
        let mut s = LogStore::open(dir.path()).unwrap();
        assert!(indexes(&mut s).await.is_empty());
        // In an older segment it is fatal, with the file named.
        fs::write(&seg, &bytes).unwrap();
        fs::write(seg_path(dir.path(), 2), b"").unwrap();
        let err = LogStore::open(dir.path()).err().expect("corrupt older segment must fail");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use crate::raft_types::Request;
    use openraft::{CommittedLeaderId, EntryPayload};

    #[tokio::test(flavor = "multi_thread")]
    async fn cache_is_bounded_by_bytes_and_old_entries_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        let big = |i: u64| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(Request::Write { items: vec![("t".into(), vec![i as u8; 1 << 20])] }),
        };
        for i in 1..=40 {
            s.append_durable(vec![big(i)]).await.unwrap();
        }
        {
            let inner = s.inner.lock().await;
            assert!(inner.cache_bytes <= CACHE_BYTES + (2 << 20), "{}", inner.cache_bytes);
            assert!(inner.cache.len() < 40);
            assert_eq!(inner.cache_bytes, inner.cache.values().map(entry_bytes).sum::<usize>());
        }
        let all = s.try_get_log_entries(1..=40).await.unwrap();
        assert_eq!(all.len(), 40);
        for (i, e) in all.iter().enumerate() {
            let EntryPayload::Normal(Request::Write { items }) = &e.payload else { panic!("payload") };
            assert_eq!(items[0].1[0], (i + 1) as u8, "entry {} read back", i + 1);
        }
    }
}
