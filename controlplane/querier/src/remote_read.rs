//! Prometheus remote read (`POST /api/v1/read`): SAMPLES and
//! STREAMED_XOR_CHUNKS responses.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use strata_proto::prometheus::{
    Chunk, ChunkedReadResponse, ChunkedSeries, Label, QueryResult, ReadRequest, ReadResponse, Sample, TimeSeries,
    chunk, read_request,
};

use crate::QuerierState;

/// Largest decompressed ReadRequest (a few queries of matchers: tiny).
const MAX_DECOMPRESSED_READ_REQUEST: usize = 4 << 20;

/// Samples per XOR chunk in streamed responses (as Prometheus cuts them).
const SAMPLES_PER_CHUNK: usize = 120;

fn error(status: StatusCode, msg: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

/// CRC-32 with the Castagnoli polynomial, as the streamed format requires.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Chunk bytes per streamed frame at most (as Prometheus cuts them: a
/// series with more is sent in several frames).
const FRAME_CHUNK_BYTES: usize = 1 << 20;

fn labels_proto(l: &strata_promql::Labels) -> Vec<Label> {
    l.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect()
}

/// One series as STREAMED_XOR_CHUNKS frames: `uvarint len | crc32c BE |
/// ChunkedReadResponse`.
fn series_frames(query_index: i64, labels: &strata_promql::Labels, samples: &[(i64, f64)]) -> Vec<Bytes> {
    let frame = |chunks: Vec<Chunk>| {
        let msg = ChunkedReadResponse {
            chunked_series: vec![ChunkedSeries { labels: labels_proto(labels), chunks }],
            query_index,
        };
        let data = msg.encode_to_vec();
        let mut frame = Vec::with_capacity(data.len() + 14);
        put_uvarint(&mut frame, data.len() as u64);
        frame.extend_from_slice(&crc32c(&data).to_be_bytes());
        frame.extend_from_slice(&data);
        Bytes::from(frame)
    };
    let mut frames = Vec::new();
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut bytes = 0usize;
    for part in samples.chunks(SAMPLES_PER_CHUNK) {
        let mut c = strata_head::chunk::XorChunk::new();
        for &(t, v) in part {
            c.append(t, v);
        }
        bytes += c.bytes().len();
        chunks.push(Chunk {
            min_time_ms: part[0].0,
            max_time_ms: part[part.len() - 1].0,
            r#type: chunk::Encoding::Xor as i32,
            data: c.bytes().to_vec().into(),
        });
        if bytes >= FRAME_CHUNK_BYTES {
            frames.push(frame(std::mem::take(&mut chunks)));
            bytes = 0;
        }
    }
    if !chunks.is_empty() || frames.is_empty() {
        frames.push(frame(chunks));
    }
    frames
}

pub async fn read(State(state): State<Arc<QuerierState>>, headers: HeaderMap, body: Bytes) -> Response {
    // The decompressed size is checked before anything is allocated: a
    // small body may claim gigabytes.
    let raw = match strata_proto::remote_write::decompress(&body, MAX_DECOMPRESSED_READ_REQUEST) {
        Ok(r) => r,
        Err(e @ strata_proto::remote_write::DecodeError::TooLarge { .. }) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, format!("remote read: {e}"));
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("remote read: {e}")),
    };
    let req = match ReadRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("remote read: invalid ReadRequest protobuf: {e}")),
    };
    let tenant = crate::api::tenant(&headers);
    let streamed =
        req.accepted_response_types.first().is_some_and(|t| *t == read_request::ResponseType::StreamedXorChunks as i32);
    let mut results = Vec::with_capacity(req.queries.len());
    // Every query of the request together loads at most --query.max-samples,
    // counted while the series stream in.
    let max_samples = state.max_samples_for(&tenant);
    let budget = crate::fanout::SampleBudget::new(max_samples);
    for q in &req.queries {
        if q.matchers.is_empty() {
            return error(StatusCode::BAD_REQUEST, "remote read: a query needs at least one matcher".into());
        }
        match state
            .stores
            .select_proto(&tenant, q.matchers.clone(), q.start_timestamp_ms, q.end_timestamp_ms, false, &budget)
            .await
        {
            Ok(r) => results.push(r.data),
            Err(crate::fanout::FanoutError::TooManySamples) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "remote read: query processing would load too many samples into memory (over {max_samples}, \
                         --query.max-samples or the tenant's max_samples_per_query)"
                    ),
                );
            }
            Err(crate::fanout::FanoutError::SourceLimit(m)) => {
                return error(StatusCode::UNPROCESSABLE_ENTITY, format!("remote read: {m}"));
            }
            Err(crate::fanout::FanoutError::BadRequest(m)) => {
                return error(StatusCode::BAD_REQUEST, format!("remote read: {m}"));
            }
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("remote read: {e}")),
        }
    }
    if streamed {
        // Frames are encoded as the body is sent, one series (or, for a long
        // series, up to FRAME_CHUNK_BYTES of its chunks) at a time, and each
        // series' samples are dropped once framed: the answer is never held
        // twice, and the client reads the first frame while the rest are
        // encoded.
        let frames = results.into_iter().enumerate().flat_map(|(qi, series)| {
            series.into_iter().flat_map(move |s| series_frames(qi as i64, &s.labels, &s.samples))
        });
        let body = Body::from_stream(futures::stream::iter(frames.map(Ok::<_, std::convert::Infallible>)));
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse")],
            body,
        )
            .into_response();
    }
    let resp = ReadResponse {
        results: results
            .into_iter()
            .map(|series| QueryResult {
                timeseries: series
                    .into_iter()
                    .map(|s| TimeSeries {
                        labels: labels_proto(&s.labels),
                        samples: s.samples.iter().map(|&(t, v)| Sample { timestamp: t, value: v }).collect(),
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect(),
    };
    let body = match snap::raw::Encoder::new().compress_vec(&resp.encode_to_vec()) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("remote read: {e}")),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf"), (header::CONTENT_ENCODING, "snappy")],
        Body::from(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }

    /// A long series goes out in several frames of about 1 MiB of chunks,
    /// each a valid `uvarint | crc32c | ChunkedReadResponse`, together
    /// holding every sample once; an empty series is one empty frame.
    #[test]
    fn long_series_are_split_into_bounded_frames() {
        use prost::Message;
        let labels = strata_promql::Labels::from_sorted_or_sort(vec![("__name__".into(), "x".into())]);
        let samples: Vec<(i64, f64)> = (0..1_200_000).map(|k| (k * 15_000, ((k * 7919) % 1000) as f64 + 0.5)).collect();
        let frames = super::series_frames(3, &labels, &samples);
        assert!(frames.len() >= 2, "{} frames", frames.len());
        let mut back = Vec::new();
        for f in &frames {
            let (mut len, mut shift, mut at) = (0u64, 0, 0);
            loop {
                let b = f[at];
                len |= ((b & 0x7f) as u64) << shift;
                at += 1;
                if b < 0x80 {
                    break;
                }
                shift += 7;
            }
            let crc = u32::from_be_bytes(f[at..at + 4].try_into().unwrap());
            let data = &f[at + 4..];
            assert_eq!(data.len() as u64, len);
            assert_eq!(super::crc32c(data), crc);
            let msg = super::ChunkedReadResponse::decode(data).unwrap();
            assert_eq!(msg.query_index, 3);
            let bytes: usize = msg.chunked_series[0].chunks.iter().map(|c| c.data.len()).sum();
            assert!(bytes < super::FRAME_CHUNK_BYTES + 4096, "frame of {bytes} chunk bytes");
            for c in &msg.chunked_series[0].chunks {
                back.extend(strata_head::chunk::decode(&c.data).unwrap());
            }
        }
        assert_eq!(back, samples);
        let empty = super::series_frames(0, &labels, &[]);
        assert_eq!(empty.len(), 1);
    }
}
