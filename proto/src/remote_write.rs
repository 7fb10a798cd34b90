//! Prometheus remote write framing: snappy block compression, the content
//! types that select 1.0 or 2.0, the 2.0 response headers, and lossless
//! conversion between the two message formats.

use crate::prometheus::{self, Label, WriteRequest};
use crate::write_v2;
use prost::Message;

/// `Content-Type` of a remote write 1.0 body.
pub const CONTENT_TYPE_V1: &str = "application/x-protobuf";
/// `Content-Type` of a remote write 2.0 body.
pub const CONTENT_TYPE_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
/// The only `Content-Encoding` either version allows.
pub const CONTENT_ENCODING: &str = "snappy";
/// Version header every sender sets.
pub const VERSION_HEADER: &str = "X-Prometheus-Remote-Write-Version";
pub const VERSION_1: &str = "0.1.0";
pub const VERSION_2: &str = "2.0.0";
/// Headers a 2.0 receiver returns to say what it stored.
pub const SAMPLES_WRITTEN_HEADER: &str = "X-Prometheus-Remote-Write-Samples-Written";
pub const HISTOGRAMS_WRITTEN_HEADER: &str = "X-Prometheus-Remote-Write-Histograms-Written";
pub const EXEMPLARS_WRITTEN_HEADER: &str = "X-Prometheus-Remote-Write-Exemplars-Written";

/// Which remote write message a body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Why a remote write body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported Content-Type {0:?}: expected {CONTENT_TYPE_V1:?} or {CONTENT_TYPE_V2:?}")]
    UnsupportedContentType(String),
    #[error("unsupported Content-Encoding {0:?}: expected \"snappy\"")]
    UnsupportedContentEncoding(String),
    #[error("body is not valid snappy (block format): {0}")]
    Snappy(#[from] snap::Error),
    #[error("decompressed body is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid remote write 2.0 request: {0}")]
    InvalidSymbols(String),
}

impl DecodeError {
    /// The HTTP status a receiver answers with (remote write spec: 415 lets
    /// a 2.0 sender fall back to 1.0; 413 for oversize; 400 otherwise).
    pub fn http_status(&self) -> u16 {
        match self {
            DecodeError::UnsupportedContentType(_) | DecodeError::UnsupportedContentEncoding(_) => 415,
            DecodeError::TooLarge { .. } => 413,
            _ => 400,
        }
    }
}

/// Picks the message version from a `Content-Type` header value (missing
/// header means 1.0, as the spec allows for old senders).
pub fn version_from_content_type(content_type: Option<&str>) -> Result<Version, DecodeError> {
    let Some(ct) = content_type else {
        return Ok(Version::V1);
    };
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(DecodeError::UnsupportedContentType(ct.to_string()));
    }
    let mut version = Version::V1;
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("proto")
        {
            version = match v.trim().trim_matches('"') {
                "prometheus.WriteRequest" => Version::V1,
                "io.prometheus.write.v2.Request" => Version::V2,
                _ => return Err(DecodeError::UnsupportedContentType(ct.to_string())),
            };
        }
    }
    Ok(version)
}

/// Checks a `Content-Encoding` header value (missing means snappy, like Prometheus).
pub fn check_content_encoding(encoding: Option<&str>) -> Result<(), DecodeError> {
    match encoding {
        None => Ok(()),
        Some(e) if e.trim().eq_ignore_ascii_case(CONTENT_ENCODING) => Ok(()),
        Some(e) => Err(DecodeError::UnsupportedContentEncoding(e.to_string())),
    }
}

/// Snappy-decompresses `body`, refusing output larger than `limit` bytes
/// before allocating it.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let size = snap::raw::decompress_len(body)?;
    if size > limit {
        return Err(DecodeError::TooLarge { size, limit });
    }
    Ok(snap::raw::Decoder::new().decompress_vec(body)?)
}

/// Snappy-compresses an encoded message.
pub fn compress(raw: &[u8]) -> Vec<u8> {
    // Compression into a Vec sized by max_compress_len cannot fail.
    snap::raw::Encoder::new().compress_vec(raw).unwrap_or_default()
}

/// Decodes a snappy-compressed remote write 1.0 body.
pub fn decode_v1(body: &[u8], limit: usize) -> Result<WriteRequest, DecodeError> {
    let raw = decompress(body, limit)?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

/// Decodes a snappy-compressed remote write 2.0 body and checks its symbol references.
pub fn decode_v2(body: &[u8], limit: usize) -> Result<write_v2::Request, DecodeError> {
    let raw = decompress(body, limit)?;
    let req = write_v2::Request::decode(raw.as_slice())?;
    validate_v2(&req)?;
    Ok(req)
}

/// Encodes and compresses a 1.0 request.
pub fn encode_v1(req: &WriteRequest) -> Vec<u8> {
    compress(&req.encode_to_vec())
}

/// Encodes and compresses a 2.0 request.
pub fn encode_v2(req: &write_v2::Request) -> Vec<u8> {
    compress(&req.encode_to_vec())
}

fn validate_v2(req: &write_v2::Request) -> Result<(), DecodeError> {
    let n = req.symbols.len() as u32;
    if n > 0 && !req.symbols[0].is_empty() {
        return Err(DecodeError::InvalidSymbols("symbols[0] must be the empty string".into()));
    }
    let check = |refs: &[u32], what: &str| -> Result<(), DecodeError> {
        if !refs.len().is_multiple_of(2) {
            return Err(DecodeError::InvalidSymbols(format!("{what} has an odd number of label references")));
        }
        if let Some(r) = refs.iter().find(|r| **r >= n) {
            return Err(DecodeError::InvalidSymbols(format!(
                "{what} references symbol {r}, but the table has {n} symbols"
            )));
        }
        Ok(())
    };
    for (i, ts) in req.timeseries.iter().enumerate() {
        check(&ts.labels_refs, &format!("timeseries[{i}].labels_refs"))?;
        for (j, ex) in ts.exemplars.iter().enumerate() {
            check(&ex.labels_refs, &format!("timeseries[{i}].exemplars[{j}]"))?;
        }
        if let Some(md) = &ts.metadata
            && (md.help_ref >= n || md.unit_ref >= n)
        {
            return Err(DecodeError::InvalidSymbols(format!(
                "timeseries[{i}].metadata references a symbol outside the table of {n}"
            )));
        }
    }
    Ok(())
}

/// Builds a 2.0 symbol table as series are added.
#[derive(Default)]
pub struct SymbolTable {
    symbols: Vec<String>,
    index: std::collections::HashMap<String, u32>,
}

impl SymbolTable {
    pub fn new() -> Self {
        let mut t = SymbolTable::default();
        t.intern("");
        t
    }

    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.symbols.len() as u32;
        self.symbols.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    fn refs(&mut self, labels: &[Label]) -> Vec<u32> {
        let mut out = Vec::with_capacity(labels.len() * 2);
        for l in labels {
            out.push(self.intern(&l.name));
            out.push(self.intern(&l.value));
        }
        out
    }

    pub fn into_symbols(self) -> Vec<String> {
        self.symbols
    }
}

fn metadata_type_v1_to_v2(t: i32) -> i32 {
    // Both enums use the same numbers for the same types.
    t
}

/// Converts a 1.0 request to 2.0: labels and metadata are symbolized and
/// each series carries its family's metadata (matched by metric name,
/// including the `_bucket`/`_sum`/`_count`/`_total` suffixes).
pub fn v1_to_v2(req: &WriteRequest) -> write_v2::Request {
    let mut table = SymbolTable::new();
    let metadata: std::collections::HashMap<&str, &prometheus::MetricMetadata> =
        req.metadata.iter().map(|m| (m.metric_family_name.as_str(), m)).collect();
    let mut timeseries = Vec::with_capacity(req.timeseries.len());
    for ts in &req.timeseries {
        let name = ts.labels.iter().find(|l| l.name == "__name__").map(|l| l.value.as_str()).unwrap_or("");
        let md = family_of(name, &metadata).map(|m| write_v2::Metadata {
            r#type: metadata_type_v1_to_v2(m.r#type),
            help_ref: table.intern(&m.help),
            unit_ref: table.intern(&m.unit),
        });
        let labels_refs = table.refs(&ts.labels);
        let exemplars = ts
            .exemplars
            .iter()
            .map(|e| write_v2::Exemplar { labels_refs: table.refs(&e.labels), value: e.value, timestamp: e.timestamp })
            .collect();
        timeseries.push(write_v2::TimeSeries {
            labels_refs,
            samples: ts.samples.iter().map(|s| write_v2::Sample { value: s.value, timestamp: s.timestamp }).collect(),
            histograms: ts.histograms.iter().map(histogram_v1_to_v2).collect(),
            exemplars,
            metadata: md,
            created_timestamp: 0,
        });
    }
    write_v2::Request { symbols: table.into_symbols(), timeseries }
}

fn family_of<'a>(
    name: &str,
    md: &std::collections::HashMap<&str, &'a prometheus::MetricMetadata>,
) -> Option<&'a prometheus::MetricMetadata> {
    if let Some(m) = md.get(name) {
        return Some(m);
    }
    for suffix in ["_bucket", "_sum", "_count", "_total", "_created"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(m) = md.get(base)
        {
            return Some(m);
        }
    }
    None
}

/// Converts a 2.0 request to 1.0 series (labels resolved from the symbol
/// table) plus one metadata entry per metric family. The request must have
/// passed [`decode_v2`]'s validation.
pub fn v2_to_v1(req: &write_v2::Request) -> WriteRequest {
    let sym = |i: u32| req.symbols.get(i as usize).cloned().unwrap_or_default();
    let labels = |refs: &[u32]| -> Vec<Label> {
        refs.chunks_exact(2).map(|p| Label { name: sym(p[0]), value: sym(p[1]) }).collect()
    };
    let mut metadata = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let timeseries = req
        .timeseries
        .iter()
        .map(|ts| {
            let labels_v1 = labels(&ts.labels_refs);
            if let Some(md) = &ts.metadata
                && (md.r#type != 0 || md.help_ref != 0 || md.unit_ref != 0)
            {
                let name = labels_v1.iter().find(|l| l.name == "__name__").map(|l| l.value.clone());
                if let Some(name) = name
                    && seen.insert(name.clone())
                {
                    metadata.push(prometheus::MetricMetadata {
                        r#type: md.r#type,
                        metric_family_name: name,
                        help: sym(md.help_ref),
                        unit: sym(md.unit_ref),
                    });
                }
            }
            prometheus::TimeSeries {
                labels: labels_v1,
                samples: ts
                    .samples
                    .iter()
                    .map(|s| prometheus::Sample { value: s.value, timestamp: s.timestamp })
                    .collect(),
                exemplars: ts
                    .exemplars
                    .iter()
                    .map(|e| prometheus::Exemplar {
                        labels: labels(&e.labels_refs),
                        value: e.value,
                        timestamp: e.timestamp,
                    })
                    .collect(),
                histograms: ts.histograms.iter().map(histogram_v2_to_v1).collect(),
            }
        })
        .collect();
    WriteRequest { timeseries, metadata }
}

fn histogram_v1_to_v2(h: &prometheus::Histogram) -> write_v2::Histogram {
    use prometheus::histogram::{Count, ZeroCount};
    write_v2::Histogram {
        count: h.count.map(|c| match c {
            Count::CountInt(v) => write_v2::histogram::Count::CountInt(v),
            Count::CountFloat(v) => write_v2::histogram::Count::CountFloat(v),
        }),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count.map(|c| match c {
            ZeroCount::ZeroCountInt(v) => write_v2::histogram::ZeroCount::ZeroCountInt(v),
            ZeroCount::ZeroCountFloat(v) => write_v2::histogram::ZeroCount::ZeroCountFloat(v),
        }),
        negative_spans: h
            .negative_spans
            .iter()
            .map(|s| write_v2::BucketSpan { offset: s.offset, length: s.length })
            .collect(),
        negative_deltas: h.negative_deltas.clone(),
        negative_counts: h.negative_counts.clone(),
        positive_spans: h
            .positive_spans
            .iter()
            .map(|s| write_v2::BucketSpan { offset: s.offset, length: s.length })
            .collect(),
        positive_deltas: h.positive_deltas.clone(),
        positive_counts: h.positive_counts.clone(),
        reset_hint: h.reset_hint,
        timestamp: h.timestamp,
        custom_values: h.custom_values.clone(),
    }
}

fn histogram_v2_to_v1(h: &write_v2::Histogram) -> prometheus::Histogram {
    use write_v2::histogram::{Count, ZeroCount};
    prometheus::Histogram {
        count: h.count.map(|c| match c {
            Count::CountInt(v) => prometheus::histogram::Count::CountInt(v),
            Count::CountFloat(v) => prometheus::histogram::Count::CountFloat(v),
        }),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count.map(|c| match c {
            ZeroCount::ZeroCountInt(v) => prometheus::histogram::ZeroCount::ZeroCountInt(v),
            ZeroCount::ZeroCountFloat(v) => prometheus::histogram::ZeroCount::ZeroCountFloat(v),
        }),
        negative_spans: h
            .negative_spans
            .iter()
            .map(|s| prometheus::BucketSpan { offset: s.offset, length: s.length })
            .collect(),
        negative_deltas: h.negative_deltas.clone(),
        negative_counts: h.negative_counts.clone(),
        positive_spans: h
            .positive_spans
            .iter()
            .map(|s| prometheus::BucketSpan { offset: s.offset, length: s.length })
            .collect(),
        positive_deltas: h.positive_deltas.clone(),
        positive_counts: h.positive_counts.clone(),
        reset_hint: h.reset_hint,
        timestamp: h.timestamp,
        custom_values: h.custom_values.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::{MetricMetadata, Sample, TimeSeries};

    fn sample_request() -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label { name: "__name__".into(), value: "http_requests_total".into() },
                    Label { name: "job".into(), value: "api".into() },
                ],
                samples: vec![Sample { value: 1.0, timestamp: 1000 }, Sample { value: 2.0, timestamp: 2000 }],
                exemplars: vec![],
                histograms: vec![],
            }],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "http_requests".into(),
                help: "Requests".into(),
                unit: "".into(),
            }],
        }
    }

    #[test]
    fn v1_round_trips_through_snappy() {
        let req = sample_request();
        let body = encode_v1(&req);
        assert_eq!(decode_v1(&body, 1 << 20).expect("decode"), req);
    }

    #[test]
    fn v1_to_v2_and_back_keeps_series_and_metadata() {
        let req = sample_request();
        let v2 = v1_to_v2(&req);
        assert_eq!(v2.symbols[0], "");
        let body = encode_v2(&v2);
        let back = v2_to_v1(&decode_v2(&body, 1 << 20).expect("decode"));
        assert_eq!(back.timeseries, req.timeseries);
        assert_eq!(back.metadata.len(), 1);
        assert_eq!(back.metadata[0].help, "Requests");
        assert_eq!(back.metadata[0].r#type, 1);
    }

    #[test]
    fn content_types_select_versions() {
        assert_eq!(version_from_content_type(None).unwrap(), Version::V1);
        assert_eq!(version_from_content_type(Some("application/x-protobuf")).unwrap(), Version::V1);
        assert_eq!(version_from_content_type(Some(CONTENT_TYPE_V2)).unwrap(), Version::V2);
        assert_eq!(
            version_from_content_type(Some("application/x-protobuf; proto=prometheus.WriteRequest")).unwrap(),
            Version::V1
        );
        let err = version_from_content_type(Some("application/json")).unwrap_err();
        assert_eq!(err.http_status(), 415);
        let err = version_from_content_type(Some("application/x-protobuf;proto=foo.Bar")).unwrap_err();
        assert_eq!(err.http_status(), 415);
        assert_eq!(check_content_encoding(Some("gzip")).unwrap_err().http_status(), 415);
    }

    #[test]
    fn bad_bodies_are_client_errors() {
        assert_eq!(decode_v1(b"not snappy at all", 1 << 20).unwrap_err().http_status(), 400);
        let big = compress(&vec![0u8; 4096]);
        assert_eq!(decode_v1(&big, 1024).unwrap_err().http_status(), 413);
        let garbage = compress(&[0xff, 0xff, 0xff]);
        assert!(matches!(decode_v1(&garbage, 1 << 20), Err(DecodeError::Protobuf(_))));
        let bad_ref = write_v2::Request {
            symbols: vec!["".into()],
            timeseries: vec![write_v2::TimeSeries { labels_refs: vec![0, 5], ..Default::default() }],
        };
        assert!(matches!(decode_v2(&encode_v2(&bad_ref), 1 << 20), Err(DecodeError::InvalidSymbols(_))));
    }
}
