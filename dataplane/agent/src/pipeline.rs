//! Processors between the receivers and the queue: OTLP → Prometheus
//! translation, the label processor (set or override static labels such as
//! `environment` and `data_plane_id`), and the batch processor, which
//! group-commits many requests into one queue record (one fsync) and only
//! then acknowledges each of them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use strata_otel_prom::{Translator, TranslatorConfig};
use strata_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use strata_proto::prometheus::WriteRequest;
use tokio::sync::{mpsc, oneshot};

use crate::config::AgentConfig;
use crate::exposition::Exposition;
use crate::queue::{DiskQueue, QueueError};
use crate::telemetry::AgentMetrics;

/// Why a request was not accepted; receivers map these to OTLP errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// Retryable: the queue is full (endpoints are down or slow).
    #[error("{0}")]
    QueueFull(String),
    /// Retryable: the queue could not be written.
    #[error("disk queue error: {0}")]
    Queue(String),
    /// The agent is shutting down.
    #[error("agent is shutting down")]
    ShuttingDown,
}

/// An accepted request: what was rejected, for OTLP partial success.
#[derive(Debug, Default, Clone)]
pub struct Accepted {
    pub rejected_points: u64,
    pub message: String,
}

struct BatchItem {
    /// Encoded `prometheus.WriteRequest`.
    bytes: Vec<u8>,
    samples: usize,
    done: oneshot::Sender<Result<(), SubmitError>>,
}

pub struct Pipeline {
    translator: Mutex<Translator>,
    batch_tx: mpsc::Sender<BatchItem>,
    queue: Arc<DiskQueue>,
    max_queue_bytes: u64,
    metrics: Arc<AgentMetrics>,
    exposition: Option<Arc<Exposition>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Pipeline {
    /// Builds the pipeline and starts its batch task.
    pub fn start(
        cfg: &AgentConfig,
        queue: Arc<DiskQueue>,
        metrics: Arc<AgentMetrics>,
        exposition: Option<Arc<Exposition>>,
    ) -> Arc<Self> {
        let t = &cfg.translation;
        let translator = Translator::new(TranslatorConfig {
            promote_resource_attributes: t.promote_resource_attributes.clone(),
            scope_labels: t.scope_labels,
            target_info: t.target_info,
            delta_max_streams: t.delta_max_streams,
            delta_max_stale: t.delta_max_stale,
            // The label processor: set or override on every series.
            external_labels: cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        });
        let (tx, rx) = mpsc::channel(1024);
        let p = Arc::new(Pipeline {
            translator: Mutex::new(translator),
            batch_tx: tx,
            queue: queue.clone(),
            max_queue_bytes: cfg.queue.max_bytes,
            metrics: metrics.clone(),
            exposition,
        });
        tokio::spawn(batch_loop(rx, queue, metrics, cfg.batch.send_batch_size, cfg.batch.timeout));
        p
    }

    pub fn metrics(&self) -> &Arc<AgentMetrics> {
        &self.metrics
    }

    /// Translates, labels and durably queues one OTLP request. Returns once
    /// the data is in the queue (fsynced under `fsync: always`).
    pub async fn submit(&self, req: &ExportMetricsServiceRequest) -> Result<Accepted, SubmitError> {
        let points: u64 = count_points(req);
        // Refuse before translating when the queue is already full, so a
        // retried request is not counted twice by delta → cumulative state.
        let stats = self.queue.stats();
        if stats.disk_bytes >= self.max_queue_bytes {
            self.metrics.datapoints_refused.get_or_create(&vec![("reason".into(), "queue_full".into())]).inc_by(points);
            return Err(SubmitError::QueueFull(format!(
                "agent disk queue is full ({} of {} bytes); retry later",
                stats.disk_bytes, self.max_queue_bytes
            )));
        }
        let out = {
            let mut tr = self.translator.lock().unwrap_or_else(|p| p.into_inner());
            let out = tr.translate(req, now_ms());
            self.metrics.delta_streams.set(tr.delta_streams() as u64);
            out
        };
        self.metrics.datapoints_received.inc_by(out.stats.data_points);
        for (reason, n) in &out.stats.rejected_by_reason {
            self.metrics.datapoints_rejected.get_or_create(&vec![("reason".into(), reason.to_string())]).inc_by(*n);
        }
        if !out.rejections.is_empty() {
            tracing::debug!(rejected = out.stats.rejected_points, message = %out.rejection_message(), "OTLP data points rejected");
        }
        let accepted = Accepted { rejected_points: out.stats.rejected_points, message: out.rejection_message() };
        if out.num_series() == 0 {
            return Ok(accepted);
        }
        if let Some(e) = &self.exposition {
            e.update(&out.write_request());
        }
        let samples = out.stats.samples as usize;
        let bytes = out.into_bytes();
        self.enqueue(bytes, samples, points).await.map(|()| accepted)
    }

    /// Refuses when the disk queue is full (nothing new can be forwarded).
    pub fn check_capacity(&self) -> Result<(), SubmitError> {
        let stats = self.queue.stats();
        if stats.disk_bytes >= self.max_queue_bytes {
            return Err(SubmitError::QueueFull(format!(
                "agent disk queue is full ({} of {} bytes); retry later",
                stats.disk_bytes, self.max_queue_bytes
            )));
        }
        Ok(())
    }

    /// Queues series the agent builds itself (self-monitoring, pushed
    /// groups), bypassing translation and the exposition.
    pub async fn submit_series(&self, req: &WriteRequest) -> Result<(), SubmitError> {
        self.check_capacity()?;
        let samples = req.timeseries.iter().map(|t| t.samples.len()).sum();
        self.enqueue(req.encode_to_vec(), samples, 0).await
    }

    /// Hands encoded series to the batcher and waits until they are queued.
    async fn enqueue(&self, bytes: Vec<u8>, samples: usize, points: u64) -> Result<(), SubmitError> {
        let (done, wait) = oneshot::channel();
        self.batch_tx.send(BatchItem { bytes, samples, done }).await.map_err(|_| SubmitError::ShuttingDown)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.metrics
                    .datapoints_refused
                    .get_or_create(&vec![("reason".into(), refusal_reason(&e).into())])
                    .inc_by(points);
                Err(e)
            }
            Err(_) => Err(SubmitError::ShuttingDown),
        }
    }
}

fn refusal_reason(e: &SubmitError) -> &'static str {
    match e {
        SubmitError::QueueFull(_) => "queue_full",
        SubmitError::Queue(_) => "queue_error",
        SubmitError::ShuttingDown => "shutting_down",
    }
}

/// Number of data points in an OTLP request.
pub fn count_points(req: &ExportMetricsServiceRequest) -> u64 {
    use strata_proto::otlp::metrics::v1::metric::Data;
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        } as u64)
        .sum()
}

async fn batch_loop(
    mut rx: mpsc::Receiver<BatchItem>,
    queue: Arc<DiskQueue>,
    metrics: Arc<AgentMetrics>,
    max_samples: usize,
    timeout: Duration,
) {
    while let Some(first) = rx.recv().await {
        // Group commit: take everything already waiting; while this record
        // is written and fsynced, new requests queue up for the next one.
        // A positive timeout additionally lingers to fill bigger records.
        let deadline = Instant::now() + timeout;
        let mut items = vec![first];
        let mut samples = items[0].samples;
        while samples < max_samples {
            let item = match rx.try_recv() {
                Ok(item) => Some(item),
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() { None } else { tokio::time::timeout(left, rx.recv()).await.ok().flatten() }
                }
            };
            let Some(item) = item else { break };
            samples += item.samples;
            items.push(item);
        }
        // Encoded WriteRequests concatenate into their union.
        let mut waiters = Vec::with_capacity(items.len());
        let merged = if items.len() == 1 {
            let item = items.remove(0);
            waiters.push(item.done);
            item.bytes
        } else {
            let mut merged = Vec::with_capacity(items.iter().map(|i| i.bytes.len()).sum());
            for item in items {
                merged.extend_from_slice(&item.bytes);
                waiters.push(item.done);
            }
            merged
        };
        let payload = strata_proto::remote_write::compress(&merged);
        let q = queue.clone();
        let result = tokio::task::spawn_blocking(move || q.append(&payload)).await;
        let result = match result {
            Ok(Ok(_)) => {
                metrics.samples_queued.inc_by(samples as u64);
                metrics.queue_records.inc();
                Ok(())
            }
            Ok(Err(QueueError::Full { used, max })) => {
                Err(SubmitError::QueueFull(format!("agent disk queue is full ({used} of {max} bytes); retry later")))
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot append to the disk queue");
                Err(SubmitError::Queue(e.to_string()))
            }
            Err(e) => Err(SubmitError::Queue(e.to_string())),
        };
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}
