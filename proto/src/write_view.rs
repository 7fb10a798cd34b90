//! A borrowed, allocation-light reading of a remote write 1.0
//! `WriteRequest` that holds only series labels and float samples — what
//! nearly every write is. Label names and values stay slices of the
//! encoded bytes (prost would allocate two `String`s per label); labels and
//! samples of all series land in two flat vectors.
//!
//! [`WriteView::parse`] returns `None` for anything else — metadata,
//! exemplars, native histograms, unknown fields, malformed input — and the
//! caller decodes with prost instead, so the view never has to know those
//! messages and never decides what an error message says.

use std::ops::Range;

use crate::prometheus::Sample;

/// The series of a samples-only `WriteRequest`, in wire order.
#[derive(Debug, Default)]
pub struct WriteView<'a> {
    labels: Vec<(&'a str, &'a str)>,
    samples: Vec<Sample>,
    series: Vec<(Range<usize>, Range<usize>)>,
}

impl<'a> WriteView<'a> {
    /// Reads `buf` (an uncompressed `prometheus.WriteRequest`), or `None`
    /// when it holds more than labels and float samples or is malformed.
    pub fn parse(buf: &'a [u8]) -> Option<WriteView<'a>> {
        let mut v = WriteView::default();
        let mut r = Reader(buf);
        while !r.0.is_empty() {
            match r.key()? {
                // repeated TimeSeries timeseries = 1;
                (1, WIRE_LEN) => {
                    let ts = r.bytes()?;
                    v.timeseries(ts)?;
                }
                _ => return None,
            }
        }
        Some(v)
    }

    fn timeseries(&mut self, buf: &'a [u8]) -> Option<()> {
        let (l0, s0) = (self.labels.len(), self.samples.len());
        let mut r = Reader(buf);
        while !r.0.is_empty() {
            match r.key()? {
                // repeated Label labels = 1;
                (1, WIRE_LEN) => {
                    let label = r.bytes()?;
                    self.labels.push(parse_label(label)?);
                }
                // repeated Sample samples = 2;
                (2, WIRE_LEN) => {
                    let sample = r.bytes()?;
                    self.samples.push(parse_sample(sample)?);
                }
                _ => return None,
            }
        }
        self.series.push((l0..self.labels.len(), s0..self.samples.len()));
        Some(())
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Each series' labels (as sent) and samples.
    pub fn series(&self) -> impl Iterator<Item = (&[(&'a str, &'a str)], &[Sample])> + '_ {
        self.series.iter().map(|(l, s)| (&self.labels[l.clone()], &self.samples[s.clone()]))
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;

fn parse_label(buf: &[u8]) -> Option<(&str, &str)> {
    let (mut name, mut value) = ("", "");
    let mut r = Reader(buf);
    while !r.0.is_empty() {
        match r.key()? {
            (1, WIRE_LEN) => name = std::str::from_utf8(r.bytes()?).ok()?,
            (2, WIRE_LEN) => value = std::str::from_utf8(r.bytes()?).ok()?,
            _ => return None,
        }
    }
    Some((name, value))
}

fn parse_sample(buf: &[u8]) -> Option<Sample> {
    let mut s = Sample::default();
    let mut r = Reader(buf);
    while !r.0.is_empty() {
        match r.key()? {
            // double value = 1;
            (1, WIRE_I64) => s.value = f64::from_bits(r.fixed64()?),
            // int64 timestamp = 2;
            (2, WIRE_VARINT) => s.timestamp = r.varint()? as i64,
            _ => return None,
        }
    }
    Some(s)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte may only carry the top bit.
                return (i < 9 || b <= 1).then_some(v);
            }
        }
        None
    }

    /// (field number, wire type)
    fn key(&mut self) -> Option<(u64, u8)> {
        let k = self.varint()?;
        let field = k >> 3;
        (field != 0).then_some((field, (k & 7) as u8))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        if n > self.0.len() {
            return None;
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }

    fn fixed64(&mut self) -> Option<u64> {
        let (b, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*b))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::prometheus::{Exemplar, Histogram, Label, MetricMetadata, TimeSeries, WriteRequest};

    fn label(n: &str, v: &str) -> Label {
        Label { name: n.into(), value: v.into() }
    }

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
            samples: samples.iter().map(|&(timestamp, value)| Sample { value, timestamp }).collect(),
            ..Default::default()
        }
    }

    fn with_labels_only() -> TimeSeries {
        series(&[("__name__", "h")], &[])
    }

    /// The view's series, as prost's messages, for comparing with prost.
    fn as_prost(v: &WriteView) -> Vec<TimeSeries> {
        v.series()
            .map(|(l, s)| TimeSeries {
                labels: l.iter().map(|(n, v)| label(n, v)).collect(),
                samples: s.to_vec(),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn reads_what_prost_reads() {
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "up"), ("job", "a")], &[(1000, 1.0), (2000, 0.0)]),
                series(&[("__name__", "temp"), ("room", "ünïcode")], &[(-5, -3.5), (i64::MAX, f64::NAN)]),
                series(&[("__name__", "no_samples")], &[]),
                series(&[], &[(0, 0.0)]),
                // Defaults are omitted on the wire: empty value, zero sample.
                series(&[("__name__", "x"), ("empty", "")], &[(0, 0.0), (i64::MIN, f64::INFINITY)]),
            ],
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        let v = WriteView::parse(&bytes).expect("samples-only request");
        assert_eq!(v.len(), 5);
        let got = as_prost(&v);
        assert_eq!(got.len(), req.timeseries.len());
        for (g, w) in got.iter().zip(&req.timeseries) {
            assert_eq!(g.labels, w.labels);
            assert_eq!(g.samples.len(), w.samples.len());
            for (a, b) in g.samples.iter().zip(&w.samples) {
                assert_eq!((a.timestamp, a.value.to_bits()), (b.timestamp, b.value.to_bits()));
            }
        }
        assert!(WriteView::parse(&[]).expect("empty request").is_empty());
    }

    #[test]
    fn anything_else_is_left_to_prost() {
        let mut with_exemplar = series(&[("__name__", "a")], &[(1, 1.0)]);
        with_exemplar.exemplars.push(Exemplar { labels: vec![label("trace_id", "t")], value: 1.0, timestamp: 1 });
        let cases = [
            WriteRequest { timeseries: vec![with_exemplar], ..Default::default() },
            WriteRequest {
                timeseries: vec![series(&[("__name__", "a")], &[(1, 1.0)])],
                metadata: vec![MetricMetadata { metric_family_name: "a".into(), ..Default::default() }],
            },
            WriteRequest {
                timeseries: vec![TimeSeries { histograms: vec![Histogram::default()], ..with_labels_only() }],
                ..Default::default()
            },
        ];
        for req in cases {
            assert!(WriteView::parse(&req.encode_to_vec()).is_none(), "{req:?}");
        }
        let good = WriteRequest { timeseries: vec![series(&[("__name__", "a")], &[(1, 1.0)])], ..Default::default() }
            .encode_to_vec();
        // Truncated anywhere, or with an unknown field appended: not for the view.
        for cut in 1..good.len() {
            assert!(WriteView::parse(&good[..cut]).is_none(), "cut at {cut}");
        }
        let mut unknown = good.clone();
        unknown.extend_from_slice(&[0x28, 0x01]); // field 5, varint 1
        assert!(WriteView::parse(&unknown).is_none());
        // Invalid UTF-8 in a label value.
        let bad = WriteRequest { timeseries: vec![series(&[("__name__", "a\u{e9}")], &[])], ..Default::default() };
        let mut bytes = bad.encode_to_vec();
        let pos = bytes.len() - 2;
        bytes[pos] = 0xff;
        assert!(WriteView::parse(&bytes).is_none());
        assert!(WriteRequest::decode(&bytes[..]).is_err(), "prost rejects it too");
        // An over-long varint.
        assert!(WriteView::parse(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_none());
    }
}
