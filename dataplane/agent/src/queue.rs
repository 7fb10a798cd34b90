//! Durable, segmented, checksummed on-disk queue.
//!
//! Layout: `<dir>/<seq:020>.seg` segment files of records and one
//! `cursor-<consumer>` file per consumer (remote write endpoint).
//!
//! Record: `len u32 LE | crc32 u32 LE | unix ms u64 LE | payload[len]`, the
//! CRC covering the timestamp and the payload. On open, the newest segment
//! is scanned and truncated at the first incomplete or corrupt record (a
//! torn tail from a crash). Every consumer has its own cursor; a segment is
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

const HEADER: u64 = 16;
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
    dir.join(format!("{seq:020}.seg"))
}

fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("cursor-{name}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn checksum(ts: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&ts.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Reads one record at the file's current position. `Ok(None)` means a
/// clean end of file; `Err` with `InvalidData` means a torn or corrupt record.
fn read_record(r: &mut impl Read) -> io::Result<Option<(u64, Vec<u8>)>> {
    let mut header = [0u8; HEADER as usize];
    let mut got = 0;
    while got < header.len() {
        let n = r.read(&mut header[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(io::ErrorKind::InvalidData, "torn record header"))
            };
        }
        got += n;
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let ts = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if len > MAX_RECORD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("record length {len} is implausible")));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(io::ErrorKind::InvalidData, "torn record payload")
        } else {
            e
        }
    })?;
    if checksum(ts, &payload) != crc {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "record checksum mismatch"));
    }
    Ok(Some((ts, payload)))
}

/// Scans a segment and returns the length of its valid prefix.
fn valid_prefix(path: &Path) -> io::Result<(u64, u64)> {
    let mut r = io::BufReader::new(File::open(path)?);
    let mut off = 0u64;
    let mut records = 0;
    loop {
        match read_record(&mut r) {
            Ok(Some((_, p))) => {
                off += HEADER + p.len() as u64;
                records += 1;
            }
            Ok(None) => return Ok((off, records)),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok((off, records)),
            Err(e) => return Err(e),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir` for the given consumers,
    /// recovering from a torn tail.
    pub fn open(dir: &Path, opts: QueueOptions, consumers: &[String]) -> Result<Arc<Self>, QueueError> {
        fs::create_dir_all(dir)?;
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".seg").and_then(|s| s.parse::<u64>().ok()) {
                segments.insert(seq, entry.metadata()?.len());
            }
        }
        let (write_seg, write_off) = match segments.iter().next_back() {
            Some((&seq, &size)) => {
                let path = seg_path(dir, seq);
                let (valid, records) = valid_prefix(&path)?;
                if valid < size {
                    tracing::warn!(segment = seq, valid, size, records, "truncating torn tail of queue segment");
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(valid)?;
                    f.sync_all()?;
                    segments.insert(seq, valid);
                }
                (seq, valid)
            }
            None => {
                File::create(seg_path(dir, 1))?;
                sync_dir(dir)?;
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
        let ts = now_ms();
        let mut buf = Vec::with_capacity(len as usize);
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&checksum(ts, payload).to_le_bytes());
        buf.extend_from_slice(&ts.to_le_bytes());
        buf.extend_from_slice(payload);
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
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{} {}", pos.segment, pos.offset)?;
            if inner.opts.fsync == FsyncPolicy::Always {
                f.sync_data()?;
            }
        }
        fs::rename(&tmp, &path)?;
        if inner.opts.fsync == FsyncPolicy::Always {
            // The rename is durable only once the directory is synced.
            sync_dir(&inner.dir)?;
        }
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
            sync_dir(&self.dir)?;
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
