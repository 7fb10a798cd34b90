//! Durable, segmented, checksummed on-disk queue.
//!
//! Layout: `<dir>/<seq:020>.rec` segment files of records and one
//! `cursor-<consumer>` file per consumer (remote write endpoint), replaced
//! atomically on every commit.
//!
//! Records use the framing the ingesters' Raft log uses (`strata_wal`):
//! `len u32 LE | crc32 u32 LE | body`, the body `unix ms u64 LE | payload`.
//! On open, the newest segment is scanned and truncated at the first
//! incomplete or corrupt record (a torn tail from a crash).
//!
//! Queues written before the shared framing (`<seq>.seg`, whose length
//! field left out the timestamp) are converted on open, segment by segment
//! (each written, synced and renamed to `.rec`, then the old file removed);
//! records keep their offsets, so the cursors stay valid. Every consumer has its own cursor; a segment is
//! deleted once every cursor is past it. The total size of segment files is
//! bounded by `max_bytes`: an append that does not fit fails with
//! [`QueueError::Full`] and nothing is dropped.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

/// Framing plus the timestamp: the bytes of a record besides its payload.
const HEADER: u64 = strata_wal::HEADER_BYTES + 8;
/// Largest record accepted (a sanity bound when reading lengths from disk).
pub const MAX_RECORD: u64 = 256 << 20;

/// When appended records are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// fsync before an append returns (and so before OTLP is acknowledged):
    /// survives power loss.
    Always,
    /// fsync from a background task every `fsync_interval`: survives a
    /// process crash (kill -9), may lose the last interval on power loss.
    Interval,
    /// Never fsync: the OS decides.
    Never,
}

#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue is full: {used} bytes of {max} used; the remote write endpoints are behind")]
    Full { used: u64, max: u64 },
    #[error("record of {0} bytes is larger than the queue allows")]
    TooLarge(u64),
    #[error("queue I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Where a record ends: the position a consumer commits after sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// A record read from the queue.
#[derive(Debug)]
pub struct Record {
    pub payload: Vec<u8>,
    pub unix_ms: u64,
    /// Position just after this record.
    pub end: Position,
}

/// Size figures for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    /// Bytes of all segment files.
    pub disk_bytes: u64,
    /// Bytes not yet committed by the slowest consumer.
    pub pending_bytes: u64,
    /// Records found corrupt and skipped since start.
    pub corrupt_records: u64,
    pub segments: usize,
}

struct Inner {
    dir: PathBuf,
    opts: QueueOptions,
    file: File,
    write_seg: u64,
    write_off: u64,
    /// Segment sequence → size in bytes.
    segments: BTreeMap<u64, u64>,
    cursors: Vec<Position>,
    names: Vec<String>,
    dirty: bool,
    corrupt: u64,
}

pub struct DiskQueue {
    inner: Mutex<Inner>,
    tail: watch::Sender<Position>,
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.rec"))
}

fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("cursor-{name}"))
}

/// Reads one record at the reader's position: its timestamp and payload.
/// `Ok(None)` means a clean end of file; `Err` with `InvalidData` means a
/// torn or corrupt record.
fn read_record(r: &mut impl Read) -> io::Result<Option<(u64, Vec<u8>)>> {
    match strata_wal::read(r, MAX_RECORD + 8)? {
        None => Ok(None),
        Some(body) => split_timestamp(body).map(Some),
    }
}

fn split_timestamp(mut body: Vec<u8>) -> io::Result<(u64, Vec<u8>)> {
    let Some(ts) = body.get(..8) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "queue record shorter than its timestamp"));
    };
    let ts = u64::from_le_bytes(ts.try_into().expect("8 bytes"));
    body.drain(..8);
    Ok((ts, body))
}

/// Converts a segment written before the shared framing (`<seq>.seg`:
/// `len u32 | crc32 u32 | unix ms u64 | payload[len]`, the CRC over
/// timestamp and payload) into `<seq>.rec`. The CRC and the offsets are
/// the same, only the length now counts the timestamp. A torn or corrupt
/// tail ends the conversion there, as it ended the old scan.
fn convert_legacy_segment(dir: &Path, seq: u64) -> io::Result<()> {
    let old = dir.join(format!("{seq:020}.seg"));
    let new = seg_path(dir, seq);
    if new.exists() {
        // Converted before a crash that came ahead of the removal.
        fs::remove_file(&old)?;
        return strata_wal::sync_dir(dir);
    }
    let data = fs::read(&old)?;
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0usize;
    while let Some(header) = data.get(at..at + HEADER as usize) {
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let Some(body) = data.get(at + 8..at + HEADER as usize + len as usize) else { break };
        if len > MAX_RECORD || strata_wal::checksum(&[body]) != crc {
            break;
        }
        strata_wal::encode(&mut out, &[body]);
        at += HEADER as usize + len as usize;
    }
    if at < data.len() {
        tracing::warn!(segment = seq, valid = at, size = data.len(), "dropping the torn tail of an old queue segment");
    }
    strata_wal::replace(&new, true, |w| w.write_all(&out))?;
    fs::remove_file(&old)?;
    strata_wal::sync_dir(dir)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir` for the given consumers,
    /// recovering from a torn tail.
    pub fn open(dir: &Path, opts: QueueOptions, consumers: &[String]) -> Result<Arc<Self>, QueueError> {
        fs::create_dir_all(dir)?;
        let legacy: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        for seq in legacy {
            convert_legacy_segment(dir, seq)?;
        }
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".rec").and_then(|s| s.parse::<u64>().ok()) {
                segments.insert(seq, entry.metadata()?.len());
            }
        }
        let (write_seg, write_off) = match segments.iter().next_back() {
            Some((&seq, &size)) => {
                let path = seg_path(dir, seq);
                let scan = strata_wal::scan(&path, MAX_RECORD + 8, |_, _| Ok(()))?;
                let valid = scan.valid_bytes;
                if !scan.is_clean() {
                    let records = scan.records;
                    tracing::warn!(segment = seq, valid, size, records, "truncating torn tail of queue segment");
                    strata_wal::truncate(&path, valid)?;
                    segments.insert(seq, valid);
                }
                (seq, valid)
            }
            None => {
                File::create(seg_path(dir, 1))?;
                strata_wal::sync_dir(dir)?;
                segments.insert(1, 0);
                (1, 0)
            }
        };
        let first = *segments.keys().next().expect("at least one segment");
        let mut cursors = Vec::new();
        for name in consumers {
            let pos = fs::read_to_string(cursor_path(dir, name))
                .ok()
                .and_then(|s| {
                    let mut it = s.split_whitespace().map(|x| x.parse::<u64>());
                    match (it.next(), it.next()) {
                        (Some(Ok(segment)), Some(Ok(offset))) => Some(Position { segment, offset }),
                        _ => None,
                    }
                })
                .unwrap_or(Position { segment: first, offset: 0 });
            // Clamp a cursor that points at a deleted segment or past the end.
            let pos = if pos.segment < first {
                Position { segment: first, offset: 0 }
            } else if pos > (Position { segment: write_seg, offset: write_off }) {
                Position { segment: write_seg, offset: write_off }
            } else {
                pos
            };
            cursors.push(pos);
        }
        let file = OpenOptions::new().append(true).open(seg_path(dir, write_seg))?;
        let tail = Position { segment: write_seg, offset: write_off };
        let (tx, _) = watch::channel(tail);
        let q = DiskQueue {
            inner: Mutex::new(Inner {
                dir: dir.to_path_buf(),
                opts,
                file,
                write_seg,
                write_off,
                segments,
                cursors,
                names: consumers.to_vec(),
                dirty: false,
                corrupt: 0,
            }),
            tail: tx,
        };
        {
            let mut inner = q.lock();
            inner.delete_consumed()?;
        }
        Ok(Arc::new(q))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the file state
        // inconsistent (positions are updated only after successful writes).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record; with [`FsyncPolicy::Always`] it is on stable storage when this returns.
    /// Blocking: call from a blocking context.
    pub fn append(&self, payload: &[u8]) -> Result<Position, QueueError> {
        let len = HEADER + payload.len() as u64;
        let mut inner = self.lock();
        if payload.len() as u64 > MAX_RECORD || len > inner.opts.max_bytes {
            return Err(QueueError::TooLarge(len));
        }
        let used: u64 = inner.segments.values().sum();
        if used + len > inner.opts.max_bytes {
            return Err(QueueError::Full { used, max: inner.opts.max_bytes });
        }
        if inner.write_off > 0 && inner.write_off + len > inner.opts.segment_bytes {
            inner.roll()?;
        }
        let mut buf = Vec::with_capacity(len as usize);
        strata_wal::encode(&mut buf, &[&now_ms().to_le_bytes(), payload]);
        if let Err(e) = inner.file.write_all(&buf) {
            // Cut back to the last good record so the file stays readable.
            let off = inner.write_off;
            let _ = inner.file.set_len(off);
            return Err(e.into());
        }
        if inner.opts.fsync == FsyncPolicy::Always {
            inner.file.sync_data()?;
        } else {
            inner.dirty = true;
        }
        inner.write_off += len;
        let (seg, off) = (inner.write_seg, inner.write_off);
        inner.segments.insert(seg, off);
        let pos = Position { segment: seg, offset: off };
        drop(inner);
        self.tail.send_replace(pos);
        Ok(pos)
    }

    /// fsyncs pending appends (for [`FsyncPolicy::Interval`]).
    pub fn sync(&self) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.dirty {
            inner.file.sync_data()?;
            inner.dirty = false;
        }
        Ok(())
    }

    /// A reader for consumer `index` (as passed to [`DiskQueue::open`]), starting at its committed cursor.
    pub fn reader(self: &Arc<Self>, index: usize) -> Reader {
        let pos = self.lock().cursors[index];
        Reader { queue: self.clone(), consumer: index, pos, file: None, tail: self.tail.subscribe() }
    }

    /// Records that consumer `index` has delivered everything up to `pos`.
    pub fn commit(&self, index: usize, pos: Position) -> Result<(), QueueError> {
        let mut inner = self.lock();
        if pos <= inner.cursors[index] {
            return Ok(());
        }
        inner.cursors[index] = pos;
        let path = cursor_path(&inner.dir, &inner.names[index]);
        let durable = inner.opts.fsync == FsyncPolicy::Always;
        strata_wal::replace(&path, durable, |w| writeln!(w, "{} {}", pos.segment, pos.offset))?;
        inner.delete_consumed()?;
        Ok(())
    }

    pub fn stats(&self) -> QueueStats {
        let inner = self.lock();
        let disk_bytes: u64 = inner.segments.values().sum();
        let min = inner
            .cursors
            .iter()
            .min()
            .copied()
            .unwrap_or(Position { segment: inner.write_seg, offset: inner.write_off });
        let consumed: u64 = inner
            .segments
            .iter()
            .map(|(&seq, &size)| {
                if seq < min.segment {
                    size
                } else if seq == min.segment {
                    min.offset.min(size)
                } else {
                    0
                }
            })
            .sum();
        QueueStats {
            disk_bytes,
            pending_bytes: disk_bytes.saturating_sub(consumed),
            corrupt_records: inner.corrupt,
            segments: inner.segments.len(),
        }
    }
}

impl Inner {
    fn roll(&mut self) -> io::Result<()> {
        if self.opts.fsync != FsyncPolicy::Never {
            self.file.sync_data()?;
        }
        let next = self.write_seg + 1;
        let f = OpenOptions::new().create(true).append(true).open(seg_path(&self.dir, next))?;
        if self.opts.fsync == FsyncPolicy::Always {
            strata_wal::sync_dir(&self.dir)?;
        }
        self.file = f;
        self.write_seg = next;
        self.write_off = 0;
        self.dirty = false;
        self.segments.insert(next, 0);
        Ok(())
    }

    fn delete_consumed(&mut self) -> io::Result<()> {
        let Some(min) = self.cursors.iter().map(|c| c.segment).min() else {
            return Ok(());
        };
        let old: Vec<u64> = self.segments.range(..min).map(|(&s, _)| s).filter(|&s| s != self.write_seg).collect();
        for seq in old {
            match fs::remove_file(seg_path(&self.dir, seq)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.segments.remove(&seq);
        }
        Ok(())
    }
}

/// Sequential reader for one consumer.
pub struct Reader {
    queue: Arc<DiskQueue>,
    consumer: usize,
    pos: Position,
    file: Option<(u64, io::BufReader<File>)>,
    tail: watch::Receiver<Position>,
}

impl Reader {
    pub fn consumer(&self) -> usize {
        self.consumer
    }

    /// Waits for and returns the next record.
    pub async fn next(&mut self) -> Result<Record, QueueError> {
        loop {
            let tail = *self.tail.borrow_and_update();
            if self.pos < tail {
                if let Some(rec) = self.try_read(tail)? {
                    return Ok(rec);
                }
                continue;
            }
            if self.tail.changed().await.is_err() {
                return Err(QueueError::Io(io::Error::other("queue closed")));
            }
        }
    }

    /// Like [`Reader::next`] but gives up after `wait`.
    pub async fn next_timeout(&mut self, wait: Duration) -> Result<Option<Record>, QueueError> {
        match tokio::time::timeout(wait, self.next()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    fn try_read(&mut self, tail: Position) -> Result<Option<Record>, QueueError> {
        let (seg_size, next_seg, dir) = {
            let inner = self.queue.lock();
            let size = inner.segments.get(&self.pos.segment).copied();
            let next = inner.segments.range(self.pos.segment + 1..).next().map(|(&s, _)| s);
            (size, next, inner.dir.clone())
        };
        let Some(seg_size) = seg_size else {
            // Our segment is gone (should not happen for a live cursor): move on.
            self.pos = Position { segment: next_seg.unwrap_or(tail.segment), offset: 0 };
            self.file = None;
            return Ok(None);
        };
        let limit = if self.pos.segment == tail.segment { tail.offset } else { seg_size };
        if self.pos.offset >= limit {
            if self.pos.segment < tail.segment {
                self.pos = Position { segment: next_seg.unwrap_or(tail.segment), offset: 0 };
                self.file = None;
            }
            return Ok(None);
        }
        if self.file.as_ref().map(|(s, _)| *s) != Some(self.pos.segment) {
            let mut f = File::open(seg_path(&dir, self.pos.segment))?;
            f.seek(SeekFrom::Start(self.pos.offset))?;
            self.file = Some((self.pos.segment, io::BufReader::with_capacity(1 << 20, f)));
        }
        let (_, reader) = self.file.as_mut().expect("opened above");
        match read_record(reader) {
            Ok(Some((unix_ms, payload))) => {
                self.pos.offset += HEADER + payload.len() as u64;
                Ok(Some(Record { payload, unix_ms, end: self.pos }))
            }
            Ok(None) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData && self.pos.segment < tail.segment => {
                // Corruption inside a sealed segment: skip the rest of it.
                tracing::error!(segment = self.pos.segment, offset = self.pos.offset, error = %e, "corrupt queue record; skipping rest of segment");
                self.queue.lock().corrupt += 1;
                self.pos = Position { segment: next_seg.unwrap_or(tail.segment), offset: 0 };
                self.file = None;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(max: u64, seg: u64) -> QueueOptions {
        QueueOptions { max_bytes: max, segment_bytes: seg, fsync: FsyncPolicy::Always }
    }

    #[tokio::test]
    async fn records_survive_reopen_and_cursors_persist() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["a".to_string(), "b".to_string()];
        {
            let q = DiskQueue::open(dir.path(), opts(1 << 20, 100), &names).unwrap();
            for i in 0..10u8 {
                q.append(&[i; 30]).unwrap();
            }
            let mut r = q.reader(0);
            let first = r.next().await.unwrap();
            assert_eq!(first.payload, vec![0u8; 30]);
            let second = r.next().await.unwrap();
            q.commit(0, second.end).unwrap();
        }
        let q = DiskQueue::open(dir.path(), opts(1 << 20, 100), &names).unwrap();
        let mut a = q.reader(0);
        assert_eq!(a.next().await.unwrap().payload, vec![2u8; 30]);
        let mut b = q.reader(1);
        assert_eq!(b.next().await.unwrap().payload, vec![0u8; 30]);
        // Segments roll every two records (2 * 46 bytes <= 100).
        assert!(q.stats().segments >= 5);
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_and_queue_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["a".to_string()];
        {
            let q = DiskQueue::open(dir.path(), opts(1 << 20, 1 << 20), &names).unwrap();
            q.append(b"one").unwrap();
            q.append(b"two").unwrap();
        }
        // Simulate a crash in the middle of writing a third record.
        let seg = seg_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let q = DiskQueue::open(dir.path(), opts(1 << 20, 1 << 20), &names).unwrap();
        q.append(b"three").unwrap();
        let mut r = q.reader(0);
        let got: Vec<Vec<u8>> =
            vec![r.next().await.unwrap().payload, r.next().await.unwrap().payload, r.next().await.unwrap().payload];
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    }

    #[tokio::test]
    async fn corrupt_record_in_sealed_segment_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["a".to_string()];
        let q = DiskQueue::open(dir.path(), opts(1 << 20, 40), &names).unwrap();
        q.append(&[1; 20]).unwrap(); // segment 1
        q.append(&[2; 20]).unwrap(); // segment 2
        q.append(&[3; 20]).unwrap(); // segment 3
        // Flip a payload byte in segment 2.
        let p = seg_path(dir.path(), 2);
        let mut bytes = fs::read(&p).unwrap();
        bytes[20] ^= 0xff;
        fs::write(&p, bytes).unwrap();
        let mut r = q.reader(0);
        assert_eq!(r.next().await.unwrap().payload, vec![1; 20]);
        assert_eq!(r.next().await.unwrap().payload, vec![3; 20]);
        assert_eq!(q.stats().corrupt_records, 1);
    }

    #[tokio::test]
    async fn full_queue_refuses_and_frees_space_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["a".to_string()];
        let q = DiskQueue::open(dir.path(), opts(200, 60), &names).unwrap();
        let mut ends = Vec::new();
        loop {
            match q.append(&[7; 34]) {
                Ok(p) => ends.push(p),
                Err(QueueError::Full { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ends.len(), 4);
        let mut r = q.reader(0);
        let rec = r.next().await.unwrap();
        let rec2 = r.next().await.unwrap();
        q.commit(0, rec.end).unwrap();
        q.commit(0, rec2.end).unwrap();
        // The first segment was deleted, so there is room again.
        q.append(&[8; 34]).unwrap();
        assert!(q.stats().pending_bytes <= q.stats().disk_bytes);
    }

    /// A record as queues wrote it before the shared framing.
    fn legacy_record(ts: u64, payload: &[u8]) -> Vec<u8> {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&ts.to_le_bytes());
        crc.update(payload);
        let mut r = (payload.len() as u32).to_le_bytes().to_vec();
        r.extend_from_slice(&crc.finalize().to_le_bytes());
        r.extend_from_slice(&ts.to_le_bytes());
        r.extend_from_slice(payload);
        r
    }

    #[tokio::test]
    async fn a_queue_from_before_the_shared_framing_is_converted_with_its_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let old = |seq: u64| dir.path().join(format!("{seq:020}.seg"));
        let seg1 = [legacy_record(1, b"one"), legacy_record(2, b"two")].concat();
        let mut seg2 = [legacy_record(3, b"three"), legacy_record(4, b"four")].concat();
        let good = seg2.len();
        seg2.extend_from_slice(&legacy_record(5, b"torn")[..10]);
        fs::write(old(1), &seg1).unwrap();
        fs::write(old(2), &seg2).unwrap();
        // Consumer "a" had sent "one"; its cursor is a byte offset.
        let after_one = legacy_record(1, b"one").len();
        fs::write(dir.path().join("cursor-a"), format!("1 {after_one}\n")).unwrap();

        let names = vec!["a".to_string(), "b".to_string()];
        let q = DiskQueue::open(dir.path(), opts(1 << 20, 1 << 20), &names).unwrap();
        assert!(!old(1).exists() && !old(2).exists(), "old segments removed");
        assert_eq!(fs::metadata(seg_path(dir.path(), 1)).unwrap().len(), seg1.len() as u64, "same offsets");
        assert_eq!(fs::metadata(seg_path(dir.path(), 2)).unwrap().len(), good as u64, "torn tail dropped");
        q.append(b"five").unwrap();
        let read_all = |mut r: Reader| async move {
            let mut got = Vec::new();
            while let Some(rec) = r.next_timeout(Duration::from_millis(50)).await.unwrap() {
                got.push((rec.unix_ms, String::from_utf8(rec.payload).unwrap()));
            }
            got
        };
        let a = read_all(q.reader(0)).await;
        assert_eq!(a.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), ["two", "three", "four", "five"]);
        assert_eq!(a[0].0, 2, "timestamps kept");
        let b = read_all(q.reader(1)).await;
        assert_eq!(b.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), ["one", "two", "three", "four", "five"]);

        // A crash after the new file was renamed in but before the old one
        // was removed: the next open only removes the old one.
        drop(q);
        fs::write(old(1), b"stale").unwrap();
        let q = DiskQueue::open(dir.path(), opts(1 << 20, 1 << 20), &names).unwrap();
        assert!(!old(1).exists());
        assert_eq!(read_all(q.reader(1)).await.len(), 5);
    }

    #[tokio::test]
    async fn reader_waits_for_appends() {
        let dir = tempfile::tempdir().unwrap();
        let q = DiskQueue::open(dir.path(), opts(1 << 20, 1 << 20), &["a".to_string()]).unwrap();
        let mut r = q.reader(0);
        assert!(r.next_timeout(Duration::from_millis(50)).await.unwrap().is_none());
        let q2 = q.clone();
        let h = tokio::spawn(async move { r.next().await.unwrap().payload });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q2.append(b"late").unwrap();
        assert_eq!(h.await.unwrap(), b"late".to_vec());
    }
}
