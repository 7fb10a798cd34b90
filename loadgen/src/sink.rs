//! `bench sink`: a minimal Prometheus remote write 1.0 receiver. It
//! decompresses every request and walks every protobuf field — checking
//! wire types, lengths and label UTF-8, counting series and samples — the
//! way a zero-allocation receiver parser (VictoriaMetrics') does, but
//! stores nothing. It stands in for the storage when a benchmark measures a
//! sender (strata-agent) rather than a database sharing this machine's cores.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use strata_proto::remote_write as rw;

/// Largest decompressed request accepted (as Prometheus' default).
const MAX_DECODED_BYTES: usize = 32 << 20;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    series: AtomicU64,
    samples: AtomicU64,
    rejected_requests: AtomicU64,
}

async fn write(State(c): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.contains("io.prometheus.write.v2") {
        c.rejected_requests.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "this sink speaks remote write 1.0 only".into());
    }
    let decoded = rw::decompress(&body, MAX_DECODED_BYTES)
        .map_err(|e| format!("snappy: {e}"))
        .and_then(|raw| walk_write_request(&raw).ok_or_else(|| "protobuf: malformed WriteRequest".to_string()));
    match decoded {
        Ok((series, samples)) => {
            c.requests.fetch_add(1, Ordering::Relaxed);
            c.series.fetch_add(series, Ordering::Relaxed);
            c.samples.fetch_add(samples, Ordering::Relaxed);
            (StatusCode::NO_CONTENT, String::new())
        }
        Err(e) => {
            c.rejected_requests.fetch_add(1, Ordering::Relaxed);
            (StatusCode::BAD_REQUEST, format!("cannot decode remote write request: {e}"))
        }
    }
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut rest = b.get(*pos..)?;
    let before = rest.len();
    let v = prost::encoding::decode_varint(&mut rest).ok()?;
    *pos += before - rest.len();
    Some(v)
}

/// Walks one protobuf message: calls `f(field, wire type, payload)` per
/// field, where payload is the bytes of a length-delimited field (empty
/// otherwise). `None` if the encoding is malformed.
fn fields<'a>(b: &'a [u8], mut f: impl FnMut(u64, u64, &'a [u8]) -> Option<()>) -> Option<()> {
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        let payload: &[u8] = match wire {
            0 => {
                varint(b, &mut pos)?;
                &[]
            }
            1 | 5 => {
                pos = pos.checked_add(if wire == 1 { 8 } else { 4 }).filter(|p| *p <= b.len())?;
                &[]
            }
            2 => {
                let n = varint(b, &mut pos)? as usize;
                let end = pos.checked_add(n).filter(|e| *e <= b.len())?;
                let p = &b[pos..end];
                pos = end;
                p
            }
            _ => return None,
        };
        f(field, wire, payload)?;
    }
    Some(())
}

/// Validates a `prometheus.WriteRequest` without building it: every series'
/// labels must be UTF-8, every sample well formed. Returns (series, samples).
fn walk_write_request(b: &[u8]) -> Option<(u64, u64)> {
    let (mut series, mut samples) = (0u64, 0u64);
    fields(b, |field, wire, ts| {
        if field != 1 {
            return Some(());
        }
        (wire == 2).then_some(())?;
        series += 1;
        fields(ts, |f, w, p| {
            match (f, w) {
                // Label { name = 1, value = 2 }
                (1, 2) => fields(p, |_, lw, s| (lw != 2 || std::str::from_utf8(s).is_ok()).then_some(())),
                // Sample { value = 1 (double), timestamp = 2 (varint) }
                (2, 2) => {
                    samples += 1;
                    fields(p, |_, _, _| Some(()))
                }
                _ => Some(()),
            }
        })
    })?;
    Some((series, samples))
}

async fn metrics(State(c): State<Arc<Counts>>) -> String {
    let mut out = String::new();
    for (name, help, v) in [
        ("requests", "Remote write requests accepted.", &c.requests),
        ("series", "Time series received.", &c.series),
        ("samples", "Samples received.", &c.samples),
        ("rejected_requests", "Requests answered with an error.", &c.rejected_requests),
    ] {
        out.push_str(&format!(
            "# HELP strata_loadgen_sink_{name}_total {help}\n# TYPE strata_loadgen_sink_{name}_total counter\nstrata_loadgen_sink_{name}_total {}\n",
            v.load(Ordering::Relaxed)
        ));
    }
    out
}

fn router(c: Arc<Counts>) -> Router {
    Router::new().route("/api/v1/write", post(write)).route("/metrics", get(metrics)).with_state(c)
}

/// Serves the sink on `listen` until Ctrl-C, then prints what it received.
pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let counts = Arc::new(Counts::default());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("bench sink: remote write 1.0 on http://{}/api/v1/write", listener.local_addr()?);
    axum::serve(listener, router(counts.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!(
        "bench sink: {} requests, {} series, {} samples, {} rejected requests",
        counts.requests.load(Ordering::Relaxed),
        counts.series.load(Ordering::Relaxed),
        counts.samples.load(Ordering::Relaxed),
        counts.rejected_requests.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

    async fn serve() -> (String, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(counts.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), counts)
    }

    #[tokio::test]
    async fn counts_decoded_samples_and_refuses_what_it_cannot_read() {
        let (base, counts) = serve().await;
        let c = reqwest::Client::new();
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label { name: "__name__".into(), value: "up".into() }],
                samples: vec![Sample { value: 1.0, timestamp: 1 }, Sample { value: 1.0, timestamp: 2 }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let ok = c
            .post(format!("{base}/api/v1/write"))
            .header("content-type", rw::CONTENT_TYPE_V1)
            .body(rw::compress(&req.encode_to_vec()))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 204);
        let bad = c.post(format!("{base}/api/v1/write")).body("not snappy").send().await.unwrap();
        assert_eq!(bad.status(), 400);
        assert!(bad.text().await.unwrap().contains("snappy"));
        // A label value that is not UTF-8, and a truncated message.
        let mut raw = req.encode_to_vec();
        let at = raw.windows(2).position(|w| w == b"up").unwrap();
        raw[at] = 0xff;
        assert_eq!(walk_write_request(&raw), None);
        let full = req.encode_to_vec();
        assert_eq!(walk_write_request(&full), Some((1, 2)));
        assert_eq!(walk_write_request(&full[..full.len() - 1]), None);
        let bad_proto = c.post(format!("{base}/api/v1/write")).body(rw::compress(&raw)).send().await.unwrap();
        assert_eq!(bad_proto.status(), 400);
        let v2 = c
            .post(format!("{base}/api/v1/write"))
            .header("content-type", rw::CONTENT_TYPE_V2)
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        assert_eq!(v2.status(), 415);
        assert_eq!(counts.samples.load(Ordering::Relaxed), 2);
        assert_eq!(counts.series.load(Ordering::Relaxed), 1);
        assert_eq!(counts.rejected_requests.load(Ordering::Relaxed), 3);
        let text = c.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(text.contains("strata_loadgen_sink_samples_total 2\n"), "{text}");
    }
}
