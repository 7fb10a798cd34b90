//! Prometheus remote write exporter.
//!
//! One [`run_endpoint`] task per endpoint reads the disk queue with its own
//! cursor. Each record's series are split over `shards` concurrent senders
//! by a hash of their labels, so every series stays in time order while
//! shards send in parallel. A shard merges queued pieces up to
//! `max_samples_per_send`. Failures on 5xx, 429, 401/403 (credentials, which
//! an operator fixes) and connection errors are retried forever with
//! exponential backoff and full jitter (the queue is the buffer); other 4xx
//! answers are logged with the receiver's message,
//! counted, and not retried. The cursor advances over a record only when
//! all of its pieces are done, so an agent crash re-sends at most the
//! records that were in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use rand::Rng;
use strata_proto::prometheus::WriteRequest;
use strata_proto::remote_write as rw;
use tokio::sync::{mpsc, watch};

use crate::config::{EndpointConfig, Protocol, RemoteWriteConfig};
use crate::queue::{DiskQueue, Position, Reader};
use crate::telemetry::AgentMetrics;

const USE_V2: u8 = 2;
const USE_V1: u8 = 1;

/// A record's piece for one shard: encoded `WriteRequest` fields (its
/// series, then the record's metadata), never decoded on the 1.0 path.
struct Piece {
    bytes: Vec<u8>,
    samples: usize,
    ticket: Arc<Ticket>,
}

/// Completion tracking for one queue record.
struct Ticket {
    seq: u64,
    end: Position,
    unix_ms: u64,
    remaining: AtomicUsize,
    done: mpsc::UnboundedSender<(u64, Position, u64)>,
}

impl Ticket {
    fn finish_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.done.send((self.seq, self.end, self.unix_ms));
        }
    }
}

/// Shared per-endpoint state.
struct Endpoint {
    name: String,
    url: String,
    headers: Vec<(String, String)>,
    /// Its configuration, for the credentials read at each request.
    config: EndpointConfig,
    protocol: Protocol,
    /// Currently spoken version (auto mode may downgrade to 1.0).
    version: AtomicU8,
    client: HttpClient,
    cfg: RemoteWriteConfig,
    metrics: Arc<AgentMetrics>,
}

/// The HTTP client of one endpoint (an `https` URL: TLS, rebuilt when its
/// certificates are reloaded).
pub(crate) use strata_server::http_client::HttpClient;

fn endpoint_client(endpoint: &EndpointConfig, timeout: std::time::Duration) -> Result<HttpClient, String> {
    HttpClient::with_tls(endpoint.tls_config.clone(), endpoint.url.starts_with("https://"), timeout, AGENT_UA)
}

/// The agent's User-Agent.
pub(crate) const AGENT_UA: &str = concat!("strata-agent/", env!("CARGO_PKG_VERSION"));

/// Runs the exporter for one endpoint until `shutdown` flips to true.
/// `oldest_age` receives the enqueue time of the oldest record not yet
/// delivered (0 when drained).
pub async fn run_endpoint(
    queue: Arc<DiskQueue>,
    mut reader: Reader,
    endpoint: EndpointConfig,
    cfg: RemoteWriteConfig,
    metrics: Arc<AgentMetrics>,
    last_delivered: Arc<std::sync::atomic::AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match endpoint_client(&endpoint, cfg.timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(endpoint = %endpoint.url, error = %e, "cannot build HTTP client");
            return;
        }
    };
    let ep = Arc::new(Endpoint {
        name: endpoint.url.clone(),
        url: endpoint.url.clone(),
        headers: endpoint.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        config: endpoint.clone(),
        protocol: endpoint.protocol,
        version: AtomicU8::new(if endpoint.protocol == Protocol::V1 { USE_V1 } else { USE_V2 }),
        client,
        cfg: cfg.clone(),
        metrics,
    });
    let consumer = reader.consumer();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u64, Position, u64)>();
    let mut shard_txs = Vec::with_capacity(cfg.shards);
    for shard in 0..cfg.shards {
        let (tx, rx) = mpsc::channel::<Piece>(4);
        shard_txs.push(tx);
        tokio::spawn(shard_loop(ep.clone(), shard, rx));
    }

    // Committer: advances the cursor over the contiguous prefix of finished records.
    let committer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut next = 0u64;
            let mut finished: BTreeMap<u64, (Position, u64)> = BTreeMap::new();
            while let Some((seq, end, ms)) = done_rx.recv().await {
                finished.insert(seq, (end, ms));
                let mut advanced = None;
                while let Some(entry) = finished.remove(&next) {
                    advanced = Some(entry);
                    next += 1;
                }
                if let Some((pos, ms)) = advanced {
                    last_delivered.store(ms, Ordering::Relaxed);
                    if let Err(e) = queue.commit(consumer, pos) {
                        tracing::error!(error = %e, "cannot persist queue cursor");
                    }
                }
            }
        })
    };

    let mut seq = 0u64;
    loop {
        let record = tokio::select! {
            r = reader.next() => r,
            _ = shutdown.changed() => break,
        };
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the disk queue; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let raw = rw::decompress(&record.payload, usize::MAX).ok();
        let Some((series, metadata)) = raw.as_deref().and_then(strata_otel_prom::encode::split_write_request) else {
            // Checksummed on disk, so this means a bug or a format change.
            tracing::error!(segment = record.end.segment, "undecodable queue record skipped");
            let t = Ticket {
                seq,
                end: record.end,
                unix_ms: record.unix_ms,
                remaining: AtomicUsize::new(1),
                done: done_tx.clone(),
            };
            t.finish_one();
            seq += 1;
            continue;
        };
        // Same labels → same shard, so every series stays in time order.
        let per_shard = raw.as_deref().map_or(0, |r| r.len() / cfg.shards + r.len() / 16);
        let mut parts: Vec<(Vec<u8>, usize)> = (0..cfg.shards).map(|_| (Vec::with_capacity(per_shard), 0)).collect();
        for s in &series {
            let part = &mut parts[(s.labels_hash % cfg.shards as u64) as usize];
            part.0.extend_from_slice(s.field);
            part.1 += s.samples;
        }
        let used: Vec<usize> = (0..cfg.shards).filter(|&i| parts[i].1 > 0 || !parts[i].0.is_empty()).collect();
        let ticket = Arc::new(Ticket {
            seq,
            end: record.end,
            unix_ms: record.unix_ms,
            remaining: AtomicUsize::new(used.len().max(1)),
            done: done_tx.clone(),
        });
        seq += 1;
        if used.is_empty() {
            ticket.finish_one();
            continue;
        }
        for i in used {
            let (mut bytes, samples) = std::mem::take(&mut parts[i]);
            for m in &metadata {
                bytes.extend_from_slice(m);
            }
            let piece = Piece { bytes, samples, ticket: ticket.clone() };
            tokio::select! {
                r = shard_txs[i].send(piece) => if r.is_err() { return; },
                _ = shutdown.changed() => { drop(shard_txs); committer.abort(); return; }
            }
        }
    }
    drop(shard_txs);
    committer.abort();
}

async fn shard_loop(ep: Arc<Endpoint>, shard: usize, mut rx: mpsc::Receiver<Piece>) {
    while let Some(first) = rx.recv().await {
        let mut samples = first.samples;
        let mut body = first.bytes;
        let mut tickets = vec![first.ticket];
        while samples < ep.cfg.max_samples_per_send {
            match rx.try_recv() {
                Ok(p) => {
                    samples += p.samples;
                    body.extend_from_slice(&p.bytes);
                    tickets.push(p.ticket);
                }
                Err(_) => break,
            }
        }
        send_with_retry(&ep, shard, &body, samples as u64).await;
        for t in tickets {
            t.finish_one();
        }
    }
}

enum Outcome {
    Done,
    Retry(Option<Duration>),
    Fail,
    Downgrade,
}

/// Sends an encoded (uncompressed) 1.0 `WriteRequest`, retrying per the rules above.
async fn send_with_retry(ep: &Endpoint, shard: usize, req: &[u8], samples: u64) {
    let labels = ep.metrics.endpoint(&ep.name);
    let mut backoff = ep.cfg.min_backoff;
    loop {
        let version = ep.version.load(Ordering::Relaxed);
        let outcome = send_once(ep, req, samples, version).await;
        match outcome {
            Outcome::Done => {
                ep.metrics.samples_sent.get_or_create(&labels).inc_by(samples);
                return;
            }
            Outcome::Fail => return,
            Outcome::Downgrade => {
                tracing::info!(endpoint = %ep.name, "receiver does not speak remote write 2.0; using 1.0");
                ep.version.store(USE_V1, Ordering::Relaxed);
            }
            Outcome::Retry(after) => {
                ep.metrics.samples_retried.get_or_create(&labels).inc_by(samples);
                let jittered = rand::rng().random_range(Duration::ZERO..=backoff);
                let wait = after.map_or(jittered, |a| a.max(jittered));
                tracing::debug!(endpoint = %ep.name, shard, wait_ms = wait.as_millis() as u64, "retrying remote write");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(ep.cfg.max_backoff);
            }
        }
    }
}

async fn send_once(ep: &Endpoint, req: &[u8], samples: u64, version: u8) -> Outcome {
    let (body, content_type, version_header) = if version == USE_V2 {
        // 2.0 needs a symbol table: decode and re-encode (1.0 never decodes).
        let v1 = match WriteRequest::decode(req) {
            Ok(v1) => v1,
            Err(e) => {
                // Our own encoding: never expected. Count it rather than send nothing.
                tracing::error!(endpoint = %ep.name, error = %e, samples, "cannot re-encode queued data as remote write 2.0");
                ep.metrics
                    .samples_failed
                    .get_or_create(&vec![
                        ("endpoint".into(), ep.name.clone()),
                        ("reason".into(), "encode_error".into()),
                    ])
                    .inc_by(samples);
                return Outcome::Fail;
            }
        };
        (rw::encode_v2(&rw::v1_to_v2(&v1)), rw::CONTENT_TYPE_V2, rw::VERSION_2)
    } else {
        (rw::compress(req), rw::CONTENT_TYPE_V1, rw::VERSION_1)
    };
    let proto = if version == USE_V2 { "2.0" } else { "1.0" };
    let mut rb = ep
        .client
        .current()
        .post(&ep.url)
        .header("Content-Type", content_type)
        .header("Content-Encoding", rw::CONTENT_ENCODING)
        .header(rw::VERSION_HEADER, version_header)
        .body(body);
    for (k, v) in &ep.headers {
        rb = rb.header(k, v);
    }
    match ep.config.authorization_header() {
        Ok(Some(v)) => rb = rb.header(reqwest_rustls::header::AUTHORIZATION, v),
        Ok(None) => {}
        Err(e) => {
            // A credentials file being rotated or missing: keep the data queued.
            tracing::error!(endpoint = %ep.name, error = %e, "remote write credentials unavailable; will retry");
            return Outcome::Retry(None);
        }
    }
    let start = Instant::now();
    let resp = rb.send().await;
    ep.metrics.send_duration.get_or_create(&ep.metrics.endpoint(&ep.name)).observe(start.elapsed().as_secs_f64());
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            ep.metrics
                .requests_sent
                .get_or_create(&vec![
                    ("endpoint".into(), ep.name.clone()),
                    ("protocol".into(), proto.into()),
                    ("status".into(), "error".into()),
                ])
                .inc();
            tracing::warn!(endpoint = %ep.name, error = %e, "remote write failed; will retry");
            return Outcome::Retry(None);
        }
    };
    let status = resp.status();
    ep.metrics
        .requests_sent
        .get_or_create(&vec![
            ("endpoint".into(), ep.name.clone()),
            ("protocol".into(), proto.into()),
            ("status".into(), status.as_u16().to_string()),
        ])
        .inc();
    let auto = ep.protocol == Protocol::Auto;
    if status.is_success() {
        if version == USE_V2 && auto && !resp.headers().contains_key(rw::SAMPLES_WRITTEN_HEADER) {
            // A 1.0-only receiver decodes a 2.0 body as an empty 1.0 request
            // and says 2xx: nothing was stored, so resend as 1.0.
            return Outcome::Downgrade;
        }
        return Outcome::Done;
    }
    if status.as_u16() == 415 && version == USE_V2 && auto {
        return Outcome::Downgrade;
    }
    if status.as_u16() == 401 || status.as_u16() == 403 {
        // Credentials refused: an operator fixes them (the files are re-read
        // on every request); the data stays in the queue meanwhile instead
        // of being dropped like other 4xx answers.
        let text = resp.text().await.unwrap_or_default();
        tracing::error!(
            endpoint = %ep.name,
            status = status.as_u16(),
            message = %truncate(&text),
            "remote write credentials refused; keeping the data queued and retrying"
        );
        return Outcome::Retry(None);
    }
    if status.as_u16() == 429 || status.is_server_error() {
        let after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        tracing::warn!(endpoint = %ep.name, status = status.as_u16(), message = %truncate(&text), "remote write failed; will retry");
        return Outcome::Retry(after);
    }
    let text = resp.text().await.unwrap_or_default();
    tracing::error!(
        endpoint = %ep.name,
        status = status.as_u16(),
        samples,
        message = %truncate(&text),
        "remote write rejected; dropping these samples (not retryable)"
    );
    ep.metrics
        .samples_failed
        .get_or_create(&vec![
            ("endpoint".into(), ep.name.clone()),
            ("reason".into(), format!("http_{}", status.as_u16())),
        ])
        .inc_by(samples);
    Outcome::Fail
}

fn truncate(s: &str) -> &str {
    let s = s.trim();
    match s.char_indices().nth(512) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
