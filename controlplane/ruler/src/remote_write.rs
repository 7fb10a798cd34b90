//! Rule results back into Strata through remote write 1.0 to the
//! ingesters (per tenant, `X-Scope-OrgID`), so recording rules and `ALERTS`
//! are replicated through Raft, cut into blocks and queried like any
//! series. The write returns once the ingesters acknowledged it, so the
//! next rule of the group reads what this one wrote.

use std::sync::Arc;
use std::time::Duration;

use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

use crate::alerting::LabelSet;
use crate::metrics::RulerMetrics;

pub struct RemoteWriter {
    urls: Vec<String>,
    client: strata_server::http_client::HttpClient,
    external_labels: LabelSet,
    bearer_token_file: Option<std::path::PathBuf>,
    metrics: Arc<RulerMetrics>,
    attempts: u32,
}

impl RemoteWriter {
    pub fn new(
        urls: Vec<String>,
        timeout: Duration,
        tls: Option<strata_server::tls::TlsClientConfig>,
        external_labels: LabelSet,
        bearer_token_file: Option<std::path::PathBuf>,
        metrics: Arc<RulerMetrics>,
    ) -> Result<Self, String> {
        let client = strata_server::http_client::HttpClient::with_tls(tls, false, timeout, crate::USER_AGENT)
            .map_err(|e| format!("--http-client.tls-*: {e}"))?;
        Ok(RemoteWriter { urls, client, external_labels, bearer_token_file, metrics, attempts: 3 })
    }

    /// Writes `series` at `t` (ms) for `tenant`. Tries each URL in turn
    /// (any ingester of the Raft group accepts a write), retrying
    /// retryable answers (5xx, 429, connection errors) a few times.
    pub async fn write(&self, tenant: &str, t: i64, series: Vec<(LabelSet, f64)>) -> Result<(), String> {
        if self.urls.is_empty() {
            return Ok(());
        }
        let n = series.len() as u64;
        let req = WriteRequest {
            timeseries: series
                .into_iter()
                .map(|(mut l, v)| {
                    for (k, ev) in &self.external_labels {
                        l.entry(k.clone()).or_insert_with(|| ev.clone());
                    }
                    TimeSeries {
                        labels: l.into_iter().map(|(name, value)| Label { name, value }).collect(),
                        samples: vec![Sample { value: v, timestamp: t }],
                        ..Default::default()
                    }
                })
                .collect(),
            metadata: vec![],
        };
        let body = bytes::Bytes::from(strata_proto::remote_write::encode_v1(&req));
        let token = match &self.bearer_token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("reading --remote-write.bearer-token-file {}: {e}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let client = self.client.current();
            for url in &self.urls {
                let mut rb = client
                    .post(url)
                    .header("Content-Type", strata_proto::remote_write::CONTENT_TYPE_V1)
                    .header("Content-Encoding", strata_proto::remote_write::CONTENT_ENCODING)
                    .header(strata_proto::remote_write::VERSION_HEADER, strata_proto::remote_write::VERSION_1)
                    .header(strata_model::tenant::TENANT_HEADER, tenant)
                    .body(body.clone());
                if let Some(t) = &token {
                    rb = rb.bearer_auth(t);
                }
                match rb.send().await {
                    Ok(r) if r.status().is_success() => {
                        self.metrics.written_samples.inc_by(n);
                        return Ok(());
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        last = format!("{url}: HTTP {status}: {}", text.trim());
                        if status.is_client_error() && status.as_u16() != 429 {
                            // The data itself is refused: retrying cannot help.
                            self.metrics.write_failures.inc();
                            return Err(last);
                        }
                    }
                    Err(e) => last = format!("{url}: {e}"),
                }
            }
        }
        self.metrics.write_failures.inc();
        Err(last)
    }
}
