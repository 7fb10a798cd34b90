//! Writes `prometheus.WriteRequest` protobuf directly from borrowed labels,
//! so translating a data point into many series (histogram buckets) does not
//! clone its labels once per series. The bytes decode as an ordinary
//! `WriteRequest`; concatenating two encodings gives their union, which is
//! how the agent's batch processor merges requests.

use std::borrow::Cow;

use prost::Message;
use smallvec::SmallVec;
use std::hash::{BuildHasher, Hasher};
use strata_proto::prometheus::{Exemplar, MetricMetadata};

#[inline]
fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

#[inline]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn str_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { 1 + varint_len(s.len() as u64) + s.len() }
}

#[inline]
fn label_len(n: &str, v: &str) -> usize {
    str_field_len(n) + str_field_len(v)
}

#[inline]
fn put_str_field(buf: &mut Vec<u8>, key: u8, s: &str) {
    if !s.is_empty() {
        buf.push(key);
        put_varint(buf, s.len() as u64);
        buf.extend_from_slice(s.as_bytes());
    }
}

#[inline]
fn put_label(buf: &mut Vec<u8>, n: &str, v: &str) {
    buf.push(0x0a); // field 1, length-delimited
    put_varint(buf, label_len(n, v) as u64);
    put_str_field(buf, 0x0a, n);
    put_str_field(buf, 0x12, v);
}

#[inline]
fn sample_len(ts: i64) -> usize {
    9 + 1 + varint_len(ts as u64)
}

#[inline]
fn put_sample_fields(buf: &mut Vec<u8>, key_value: u8, key_ts: u8, ts: i64, value: f64) {
    buf.push(key_value);
    buf.extend_from_slice(&value.to_bits().to_le_bytes());
    buf.push(key_ts);
    put_varint(buf, ts as u64);
}

fn exemplar_len(e: &Exemplar) -> usize {
    let labels: usize = e
        .labels
        .iter()
        .map(|l| {
            let n = label_len(&l.name, &l.value);
            1 + varint_len(n as u64) + n
        })
        .sum();
    labels + sample_len(e.timestamp)
}

/// A label as a (name, value) pair of strings, whatever owns them.
pub trait LabelRef {
    fn name(&self) -> &str;
    fn value(&self) -> &str;
}

impl LabelRef for (&str, &str) {
    fn name(&self) -> &str {
        self.0
    }
    fn value(&self) -> &str {
        self.1
    }
}

impl LabelRef for (String, String) {
    fn name(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &str {
        &self.1
    }
}

impl LabelRef for (Cow<'_, str>, Cow<'_, str>) {
    fn name(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &str {
        &self.1
    }
}

impl LabelRef for (&str, Cow<'_, str>) {
    fn name(&self) -> &str {
        self.0
    }
    fn value(&self) -> &str {
        &self.1
    }
}

impl LabelRef for strata_proto::prometheus::Label {
    fn name(&self) -> &str {
        &self.name
    }
    fn value(&self) -> &str {
        &self.value
    }
}

/// Orders label names; decides on the first byte inline (label names
/// mostly differ there) before falling back to a full comparison.
#[inline]
pub fn cmp_names(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// True if `a` is `b` (the same slice, the common case in merges) or equal to it.
#[inline]
fn same_name(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.len() == b.len() && (std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b))
}

/// A label set small enough to live on the stack in the common case.
pub type LabelSet<'a> = SmallVec<[(&'a str, &'a str); 24]>;

/// Merges three label lists sorted by name into `out`; on equal names the
/// later list wins. With `drop_empty`, labels whose winning value is empty
/// are left out (an empty value means "no label").
pub fn merge_labels<'a, A: LabelRef, B: LabelRef, C: LabelRef>(
    a: &'a [A],
    b: &'a [B],
    c: &'a [C],
    drop_empty: bool,
    out: &mut LabelSet<'a>,
) {
    out.clear();
    let (mut i, mut j, mut k) = (0, 0, 0);
    loop {
        let na = a.get(i).map(|l| l.name());
        let nb = b.get(j).map(|l| l.name());
        let nc = c.get(k).map(|l| l.name());
        let min = match (na, nb, nc) {
            (None, None, None) => break,
            // Fast paths: only one list left.
            (Some(x), None, None) | (None, Some(x), None) | (None, None, Some(x)) => x,
            _ => [na, nb, nc]
                .into_iter()
                .flatten()
                .reduce(|x, y| if cmp_names(y, x).is_lt() { y } else { x })
                .unwrap_or_default(),
        };
        let mut pick = "";
        if same_name(na, min) {
            pick = a[i].value();
            i += 1;
        }
        if same_name(nb, min) {
            pick = b[j].value();
            j += 1;
        }
        if same_name(nc, min) {
            pick = c[k].value();
            k += 1;
        }
        if !(drop_empty && pick.is_empty()) {
            out.push((min, pick));
        }
    }
}

/// An encoded `WriteRequest` under construction.
#[derive(Debug, Default, Clone)]
pub struct WriteRequestEncoder {
    buf: Vec<u8>,
    series: usize,
}

impl WriteRequestEncoder {
    /// Appends one series with one sample. `base` must be sorted by name;
    /// `over` (sorted) and `ext` (sorted) override it.
    pub fn series<B: LabelRef>(
        &mut self,
        base: &[B],
        over: &[(&str, &str)],
        ext: &[(String, String)],
        ts: i64,
        value: f64,
        exemplars: &[Exemplar],
    ) {
        let mut labels = LabelSet::new();
        merge_labels(base, over, ext, true, &mut labels);
        self.series_labels(&labels, ts, value, exemplars);
    }

    /// Appends one series with one sample and exactly these labels (sorted
    /// by name, no empty values).
    pub fn series_labels(&mut self, labels: &[(&str, &str)], ts: i64, value: f64, exemplars: &[Exemplar]) {
        let labels_len: usize = labels
            .iter()
            .map(|(n, v)| {
                let l = label_len(n, v);
                1 + varint_len(l as u64) + l
            })
            .sum();
        let s_len = sample_len(ts);
        let ex_len: usize = exemplars
            .iter()
            .map(|e| {
                let l = exemplar_len(e);
                1 + varint_len(l as u64) + l
            })
            .sum();
        let total = labels_len + 1 + varint_len(s_len as u64) + s_len + ex_len;
        let buf = &mut self.buf;
        buf.reserve(total + 6);
        buf.push(0x0a); // WriteRequest.timeseries
        put_varint(buf, total as u64);
        for (n, v) in labels {
            put_label(buf, n, v);
        }
        buf.push(0x12); // TimeSeries.samples
        put_varint(buf, s_len as u64);
        put_sample_fields(buf, 0x09, 0x10, ts, value);
        for e in exemplars {
            buf.push(0x1a); // TimeSeries.exemplars
            put_varint(buf, exemplar_len(e) as u64);
            for l in &e.labels {
                put_label(buf, &l.name, &l.value);
            }
            put_sample_fields(buf, 0x11, 0x18, e.timestamp, e.value);
        }
        self.series += 1;
    }

    /// Appends metadata entries (`WriteRequest.metadata`).
    pub fn metadata(&mut self, md: &[MetricMetadata]) {
        for m in md {
            self.buf.push(0x1a);
            put_varint(&mut self.buf, m.encoded_len() as u64);
            m.encode_raw(&mut self.buf);
        }
    }

    pub fn num_series(&self) -> usize {
        self.series
    }

    /// Reserves room for `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// One `TimeSeries` inside an encoded `WriteRequest`, as byte ranges.
#[derive(Debug, Clone, Copy)]
pub struct RawSeries<'a> {
    /// The whole field: key, length and message.
    pub field: &'a [u8],
    /// A hash of the labels part (stable for equal label sets encoded the same way).
    pub labels_hash: u64,
    pub samples: usize,
}

/// Label hashes only pick a sender shard; a fixed seed keeps them stable.
const LABELS_HASH: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x5354_5241_5441);

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let x = *b.get(*pos)?;
        *pos += 1;
        v |= ((x & 0x7f) as u64) << shift;
        if x < 0x80 {
            return Some(v);
        }
    }
    None
}

fn skip_field(b: &[u8], pos: &mut usize, wire: u64) -> Option<()> {
    match wire {
        0 => {
            read_varint(b, pos)?;
        }
        1 => *pos += 8,
        2 => {
            let n = read_varint(b, pos)? as usize;
            *pos = pos.checked_add(n)?;
        }
        5 => *pos += 4,
        _ => return None,
    }
    (*pos <= b.len()).then_some(())
}

/// Splits an encoded `WriteRequest` into its series and metadata fields
/// without decoding them. `None` if the bytes are not a valid encoding.
pub fn split_write_request(b: &[u8]) -> Option<(Vec<RawSeries<'_>>, Vec<&[u8]>)> {
    let mut series = Vec::new();
    let mut metadata = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let start = pos;
        let key = read_varint(b, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        if wire != 2 {
            skip_field(b, &mut pos, wire)?;
            continue;
        }
        let n = read_varint(b, &mut pos)? as usize;
        let body_start = pos;
        let end = pos.checked_add(n).filter(|e| *e <= b.len())?;
        match field {
            1 => {
                // Hash label fields (field 1), count sample fields (field 2).
                let mut h = LABELS_HASH.build_hasher();
                let mut samples = 0;
                let mut p = body_start;
                while p < end {
                    let fstart = p;
                    let k = read_varint(b, &mut p)?;
                    skip_field(&b[..end], &mut p, k & 7)?;
                    match k >> 3 {
                        1 => h.write(&b[fstart..p]),
                        2 => samples += 1,
                        _ => {}
                    }
                }
                series.push(RawSeries { field: &b[start..end], labels_hash: h.finish(), samples });
            }
            3 => metadata.push(&b[start..end]),
            _ => {}
        }
        pos = end;
    }
    Some((series, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

    fn l(n: &str, v: &str) -> Label {
        Label { name: n.into(), value: v.into() }
    }

    #[test]
    fn encodes_what_prost_decodes() {
        let mut e = WriteRequestEncoder::default();
        let base: Vec<(Cow<str>, Cow<str>)> =
            vec![("a".into(), "1".into()), ("job".into(), "x".into()), ("z".into(), "".into())];
        let ext = vec![("environment".to_string(), "prod".to_string()), ("job".to_string(), "override".to_string())];
        let ex = Exemplar { labels: vec![l("trace_id", "ab")], value: 0.5, timestamp: -3 };
        e.series(&base, &[("__name__", "m"), ("le", "0.5")], &ext, 1_700_000_000_000, 2.5, std::slice::from_ref(&ex));
        e.series(&base, &[("__name__", "n")], &[], -5, f64::NAN, &[]);
        let md = MetricMetadata { r#type: 1, metric_family_name: "m".into(), help: "h".into(), unit: String::new() };
        e.metadata(std::slice::from_ref(&md));
        let req = WriteRequest::decode(e.bytes()).unwrap();
        assert_eq!(req.timeseries.len(), 2);
        assert_eq!(
            req.timeseries[0],
            TimeSeries {
                labels: vec![
                    l("__name__", "m"),
                    l("a", "1"),
                    l("environment", "prod"),
                    l("job", "override"),
                    l("le", "0.5")
                ],
                samples: vec![Sample { value: 2.5, timestamp: 1_700_000_000_000 }],
                exemplars: vec![ex],
                histograms: vec![],
            }
        );
        assert_eq!(req.timeseries[1].samples[0].timestamp, -5);
        assert!(req.timeseries[1].samples[0].value.is_nan());
        assert_eq!(req.metadata, vec![md]);

        let (series, metadata) = split_write_request(e.bytes()).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(metadata.len(), 1);
        assert_eq!(series[0].samples, 1);
        // Each series field is itself a valid one-series WriteRequest.
        let one = WriteRequest::decode(series[1].field).unwrap();
        assert_eq!(one.timeseries[0].labels[0], l("__name__", "n"));
        // Equal label sets hash equally, different ones (almost surely) not.
        let mut e2 = WriteRequestEncoder::default();
        e2.series(&base, &[("__name__", "n")], &[], 99, 1.0, &[]);
        let (s2, _) = split_write_request(e2.bytes()).unwrap();
        assert_eq!(s2[0].labels_hash, series[1].labels_hash);
        assert_ne!(series[0].labels_hash, series[1].labels_hash);
        assert!(split_write_request(&[0x0a, 0x05, 0x01]).is_none());
    }
}
