//! The crash-safe storage primitive every durable file of Strata uses: the
//! Raft log and the state-machine snapshot of an ingester, and the agent's
//! queue and cursors.
//!
//! * **Records**: `len u32 LE | crc32 u32 LE | body[len]`, the CRC (IEEE)
//!   covering the body. A user puts its own fixed fields at the front of the
//!   body (the Raft log a kind byte, the agent queue a timestamp).
//! * **Torn-tail recovery**: [`scan`] reads a file's records up to the first
//!   incomplete or corrupt one and reports how many bytes are valid;
//!   [`truncate`] cuts the file back to them. A crash in the middle of an
//!   append leaves exactly such a tail.
//! * **Atomic replace**: [`replace`] writes a temporary file, fsyncs it,
//!   renames it over the target and fsyncs the directory, so a crash leaves
//!   either the old or the new file, never a mix (and the rename itself
//!   survives a power loss).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// Bytes of framing in front of every record's body.
pub const HEADER_BYTES: u64 = 8;

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file ends inside the record (an append cut short by a crash).
    #[error("torn record: {0}")]
    Torn(&'static str),
    /// The record is complete but not what was written.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl RecordError {
    /// Torn or corrupt (as opposed to an I/O error reading the file).
    pub fn is_damage(&self) -> bool {
        !matches!(self, RecordError::Io(_))
    }
}

impl From<RecordError> for io::Error {
    fn from(e: RecordError) -> io::Error {
        match e {
            RecordError::Io(e) => e,
            damage => io::Error::new(io::ErrorKind::InvalidData, damage.to_string()),
        }
    }
}

/// CRC of a body given in parts (as [`encode`] computes it).
pub fn checksum(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Appends one record whose body is `parts` concatenated to `buf`.
///
/// Panics if the body is 4 GiB or larger (callers bound their records far
/// below that; [`read`] refuses anything above its caller's limit).
pub fn encode(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).expect("record body below 4 GiB");
    buf.reserve(HEADER_BYTES as usize + len as usize);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(parts).to_le_bytes());
    for p in parts {
        buf.extend_from_slice(p);
    }
}

/// Starts a record whose body the caller then appends to `buf` itself (a
/// serializer writing in place); [`end_record`] fills in its header.
/// Returns where the record starts.
pub fn begin_record(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_BYTES as usize]);
    start
}

/// Completes the record [`begin_record`] started at `start`: its body is
/// everything appended since. Panics if that is 4 GiB or more.
pub fn end_record(buf: &mut [u8], start: usize) {
    let body_at = start + HEADER_BYTES as usize;
    let len = u32::try_from(buf.len() - body_at).expect("record body below 4 GiB");
    let crc = checksum(&[&buf[body_at..]]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..body_at].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the record at the start of `buf` without copying: its body and
/// the bytes it takes. `Ok(None)` for an empty `buf`.
pub fn parse(buf: &[u8], max_body: u64) -> Result<Option<(&[u8], usize)>, RecordError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let Some(header) = buf.get(..HEADER_BYTES as usize) else {
        return Err(RecordError::Torn("the input ends inside a record header"));
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > max_body {
        return Err(RecordError::Corrupt(format!("record length {len} is above the limit of {max_body} bytes")));
    }
    let end = HEADER_BYTES as usize + len as usize;
    let body = buf.get(HEADER_BYTES as usize..end).ok_or(RecordError::Torn("the input ends inside a record body"))?;
    if checksum(&[body]) != crc {
        return Err(RecordError::Corrupt("checksum mismatch".into()));
    }
    Ok(Some((body, end)))
}

/// Size on disk of a record with a body of `body_len` bytes.
pub fn framed_len(body_len: usize) -> u64 {
    HEADER_BYTES + body_len as u64
}

/// Reads the record at the reader's position and returns its body.
/// `Ok(None)` at a clean end of the input (no byte of a next record);
/// a length above `max_body` is corruption, refused before allocating.
pub fn read(r: &mut impl Read, max_body: u64) -> Result<Option<Vec<u8>>, RecordError> {
    let mut header = [0u8; HEADER_BYTES as usize];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(RecordError::Torn("the file ends inside a record header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > max_body {
        return Err(RecordError::Corrupt(format!("record length {len} is above the limit of {max_body} bytes")));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => RecordError::Torn("the file ends inside a record body"),
        _ => RecordError::Io(e),
    })?;
    if checksum(&[&body]) != crc {
        return Err(RecordError::Corrupt("checksum mismatch".into()));
    }
    Ok(Some(body))
}

/// What [`scan`] found in a file.
#[derive(Debug)]
pub struct Scan {
    /// Bytes from the start of the file up to the end of the last good record.
    pub valid_bytes: u64,
    /// Good records read.
    pub records: u64,
    /// The file's length.
    pub file_bytes: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub damage: Option<RecordError>,
}

impl Scan {
    /// The file holds nothing after its good records.
    pub fn is_clean(&self) -> bool {
        self.damage.is_none() && self.valid_bytes == self.file_bytes
    }
}

/// Reads every record of the file at `path` in order, calling
/// `each(offset, body)` for each, and stops at the first torn or corrupt
/// record (reported in [`Scan::damage`], not as an error). An error from
/// `each` or from reading the file ends the scan with that error.
pub fn scan(path: &Path, max_body: u64, mut each: impl FnMut(u64, Vec<u8>) -> io::Result<()>) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_bytes = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let (mut valid_bytes, mut records) = (0u64, 0u64);
    loop {
        match read(&mut r, max_body) {
            Ok(Some(body)) => {
                let offset = valid_bytes;
                valid_bytes += framed_len(body.len());
                records += 1;
                each(offset, body)?;
            }
            Ok(None) => return Ok(Scan { valid_bytes, records, file_bytes, damage: None }),
            Err(RecordError::Io(e)) => return Err(e),
            Err(damage) => return Ok(Scan { valid_bytes, records, file_bytes, damage: Some(damage) }),
        }
    }
}

/// Cuts the file at `path` back to its first `len` bytes and fsyncs it
/// (dropping a torn tail [`scan`] found).
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

/// fsyncs a directory: what makes a create, rename or delete in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces the file at `path` atomically with what `write` writes: into
/// `<path>.tmp`, fsynced, renamed over `path`, then the directory fsynced.
/// With `durable == false` the two fsyncs are skipped (the replace is still
/// atomic, but a power loss may bring back the old file).
pub fn replace(path: &Path, durable: bool, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = path.file_name().ok_or_else(|| io::Error::other("no file name to replace"))?.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        if durable {
            f.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn records(bodies: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for b in bodies {
            encode(&mut buf, &[b]);
        }
        buf
    }

    #[test]
    fn records_round_trip_and_parts_frame_as_one_body() {
        let mut buf = Vec::new();
        encode(&mut buf, &[&[1], b"payload"]);
        encode(&mut buf, &[]);
        assert_eq!(buf.len() as u64, framed_len(8) + framed_len(0));
        // The layout is fixed: length, then the CRC of the whole body.
        assert_eq!(&buf[0..4], &8u32.to_le_bytes());
        assert_eq!(&buf[4..8], &crc32fast::hash(b"\x01payload").to_le_bytes());
        let mut r = Cursor::new(&buf);
        assert_eq!(read(&mut r, 100).expect("first"), Some(b"\x01payload".to_vec()));
        assert_eq!(read(&mut r, 100).expect("second"), Some(Vec::new()));
        assert_eq!(read(&mut r, 100).expect("end"), None);
    }

    #[test]
    fn every_cut_of_a_record_is_torn_and_every_flipped_bit_is_caught() {
        let buf = records(&[b"hello, record"]);
        for cut in 1..buf.len() {
            let e = read(&mut Cursor::new(&buf[..cut]), 100).expect_err("a cut record is damage");
            assert!(matches!(e, RecordError::Torn(_)), "cut at {cut}: {e}");
        }
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match read(&mut Cursor::new(&bad), 100) {
                Ok(Some(body)) => panic!("bit {bit} flipped but read {body:?}"),
                Ok(None) => panic!("bit {bit}: no record"),
                Err(e) => assert!(e.is_damage(), "bit {bit}: {e}"),
            }
        }
    }

    #[test]
    fn records_built_in_place_parse_like_encoded_ones() {
        let mut buf = b"prefix".to_vec();
        let start = begin_record(&mut buf);
        buf.extend_from_slice(b"written by a serializer");
        end_record(&mut buf, start);
        let mut expected = b"prefix".to_vec();
        encode(&mut expected, &[b"written by a serializer"]);
        assert_eq!(buf, expected);
        let (body, used) = parse(&buf[6..], 100).expect("parse").expect("a record");
        assert_eq!((body, used), (&b"written by a serializer"[..], buf.len() - 6));
        assert!(matches!(parse(&buf[6..buf.len() - 1], 100), Err(RecordError::Torn(_))));
        assert!(matches!(parse(&buf[6..10], 100), Err(RecordError::Torn(_))));
        assert!(parse(&[], 100).expect("empty").is_none());
        let mut bad = buf[6..].to_vec();
        bad[12] ^= 1;
        assert!(matches!(parse(&bad, 100), Err(RecordError::Corrupt(_))));
    }

    #[test]
    fn a_length_above_the_limit_is_refused_before_allocating() {
        let mut buf = u32::MAX.to_le_bytes().to_vec();
        buf.extend_from_slice(&[0; 4]);
        let e = read(&mut Cursor::new(&buf), 1 << 20).expect_err("implausible length");
        assert!(e.to_string().contains("above the limit"), "{e}");
    }

    #[test]
    fn scan_stops_at_a_torn_tail_and_truncate_removes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let mut buf = records(&[b"one", b"two", b"three"]);
        let good = buf.len() as u64;
        let mut torn = Vec::new();
        encode(&mut torn, &[b"four, never finished"]);
        buf.extend_from_slice(&torn[..torn.len() - 5]);
        fs::write(&path, &buf).expect("write");

        let mut seen = Vec::new();
        let s = scan(&path, 1 << 20, |off, body| {
            seen.push((off, body));
            Ok(())
        })
        .expect("scan");
        assert_eq!(s.valid_bytes, good);
        assert_eq!(s.records, 3);
        assert!(matches!(s.damage, Some(RecordError::Torn(_))), "{:?}", s.damage);
        assert!(!s.is_clean());
        assert_eq!(seen, vec![(0, b"one".to_vec()), (11, b"two".to_vec()), (22, b"three".to_vec())]);

        truncate(&path, s.valid_bytes).expect("truncate");
        let s = scan(&path, 1 << 20, |_, _| Ok(())).expect("rescan");
        assert!(s.is_clean(), "{s:?}");
        assert_eq!((s.valid_bytes, s.records), (good, 3));
    }

    #[test]
    fn scan_reports_corruption_in_the_middle_and_keeps_the_records_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let mut buf = records(&[b"one", b"two", b"three"]);
        buf[11 + 8] ^= 0xff; // the body of "two"
        fs::write(&path, &buf).expect("write");
        let s = scan(&path, 1 << 20, |_, _| Ok(())).expect("scan");
        assert_eq!((s.valid_bytes, s.records), (11, 1));
        assert!(matches!(s.damage, Some(RecordError::Corrupt(_))), "{:?}", s.damage);
    }

    #[test]
    fn replace_leaves_the_old_or_the_new_file_never_a_mix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vote");
        replace(&path, true, |w| w.write_all(b"first")).expect("first");
        assert_eq!(fs::read(&path).expect("read"), b"first");
        replace(&path, true, |w| w.write_all(b"second, longer")).expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"second, longer");
        // A writer that fails half-way leaves the old file and no temporary.
        let e = replace(&path, true, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .expect_err("failed write");
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(fs::read(&path).expect("read"), b"second, longer");
        let names: Vec<_> = fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("vote")]);
    }
}
