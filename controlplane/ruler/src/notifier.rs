//! Alerts to Alertmanager over API v2 with Prometheus' notifier
//! semantics: a bounded queue (the oldest dropped, counted), batches of at
//! most 64 alerts POSTed to every Alertmanager, external labels added, a
//! slow or unreachable Alertmanager never blocking evaluation.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::alerting::{LabelSet, Notification};
use crate::metrics::RulerMetrics;

/// Alerts per POST (Prometheus: `maxBatchSize`).
pub const MAX_BATCH: usize = 64;

pub struct Notifier {
    queue: Mutex<VecDeque<Notification>>,
    capacity: usize,
    wake: tokio::sync::Notify,
    urls: Vec<String>,
    client: strata_server::http_client::HttpClient,
    external_labels: LabelSet,
    metrics: Arc<RulerMetrics>,
}

impl Notifier {
    pub fn new(
        urls: Vec<String>,
        capacity: usize,
        timeout: Duration,
        tls: Option<strata_server::tls::TlsClientConfig>,
        external_labels: LabelSet,
        metrics: Arc<RulerMetrics>,
    ) -> Result<Arc<Notifier>, String> {
        let client = strata_server::http_client::HttpClient::with_tls(tls, false, timeout, crate::USER_AGENT)
            .map_err(|e| format!("--http-client.tls-*: {e}"))?;
        let urls = urls.into_iter().map(|u| format!("{}/api/v2/alerts", u.trim_end_matches('/'))).collect();
        Ok(Arc::new(Notifier {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            wake: tokio::sync::Notify::new(),
            urls,
            client,
            external_labels,
            metrics,
        }))
    }

    /// Queues alerts; never waits.
    pub fn send(&self, alerts: Vec<Notification>) {
        if self.urls.is_empty() {
            return;
        }
        let Ok(mut q) = self.queue.lock() else { return };
        for mut a in alerts {
            for (k, v) in &self.external_labels {
                a.labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            q.push_back(a);
        }
        let over = q.len().saturating_sub(self.capacity);
        if over > 0 {
            q.drain(..over);
            self.metrics.notifications_dropped.inc_by(over as u64);
            tracing::warn!(dropped = over, "alert queue full: dropped the oldest alerts");
        }
        self.metrics.notification_queue.set(q.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    pub fn queue_length(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    fn next_batch(&self) -> Vec<Notification> {
        let Ok(mut q) = self.queue.lock() else { return Vec::new() };
        let n = q.len().min(MAX_BATCH);
        let batch: Vec<Notification> = q.drain(..n).collect();
        self.metrics.notification_queue.set(q.len() as i64);
        batch
    }

    /// Delivers queued alerts until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                self.wake.notified().await;
                continue;
            }
            let body = match serde_json::to_vec(&batch) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "encoding alerts failed");
                    continue;
                }
            };
            let this = &*self;
            let client = this.client.current();
            let sends = this.urls.iter().map(|url| {
                let body = body.clone();
                let client = client.clone();
                async move {
                    let r =
                        client
                            .post(url)
                            .header("Content-Type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| {
                                if r.status().is_success() { Ok(()) } else { Err(format!("HTTP {}", r.status())) }
                            });
                    (url, r)
                }
            });
            for (url, r) in futures::future::join_all(sends).await {
                match r {
                    Ok(()) => self.metrics.notification_sent(url, batch.len() as u64),
                    Err(e) => {
                        self.metrics.notification_error(url, batch.len() as u64);
                        tracing::warn!(alertmanager = %url, error = %e, alerts = batch.len(), "sending alerts failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(i: usize) -> Notification {
        Notification {
            labels: [("alertname".to_string(), format!("A{i}"))].into_iter().collect(),
            annotations: LabelSet::new(),
            starts_at: "1970-01-01T00:00:00Z".into(),
            ends_at: "1970-01-01T00:04:00Z".into(),
            generator_url: String::new(),
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let m = Arc::new(RulerMetrics::new());
        let ext: LabelSet = [("cluster".to_string(), "eu".to_string())].into_iter().collect();
        let n = Notifier::new(vec!["http://127.0.0.1:1".into()], 100, Duration::from_secs(1), None, ext, m.clone())
            .unwrap();
        n.send((0..150).map(alert).collect());
        assert_eq!(n.queue_length(), 100);
        assert_eq!(m.notifications_dropped.get(), 50);
        let batch = n.next_batch();
        assert_eq!(batch.len(), MAX_BATCH);
        assert_eq!(batch[0].labels.get("alertname").map(String::as_str), Some("A50"), "the oldest went");
        assert_eq!(batch[0].labels.get("cluster").map(String::as_str), Some("eu"), "external labels added");
        let json = serde_json::to_value(&batch[0]).unwrap();
        assert!(json.get("startsAt").is_some() && json.get("generatorURL").is_some(), "{json}");
    }
}
