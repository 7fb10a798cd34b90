//! Self-monitoring: every interval the agent ships its own metrics (what
//! its `/metrics` page shows) through its disk queue to the control plane,
//! labelled like the data it forwards (`environment`, `data_plane_id`, …)
//! plus `job="strata-agent"` and `instance`, so the dashboard's Data planes
//! page can show each agent's queue depth and delivery counters without a
//! scraper in the data plane.

use std::sync::Arc;
use std::time::Duration;

use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use tokio::sync::watch;

use crate::pipeline::Pipeline;

/// The samples of the agent's own exposition: `__name__` first, then the
/// labels; a page that does not parse (never, for our own renderer) is
/// logged and yields nothing.
pub fn parse_exposition(text: &str) -> Vec<(Vec<(String, String)>, f64)> {
    match strata_textparse::parse_text(text) {
        Ok(families) => families
            .into_iter()
            .flat_map(|f| f.samples)
            .map(|s| {
                let mut labels = vec![("__name__".to_string(), s.name)];
                labels.extend(s.labels);
                (labels, s.value)
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot parse the agent's own metrics");
            Vec::new()
        }
    }
}

/// Builds the remote-write request for one self-monitoring round.
pub fn write_request(text: &str, extra: &[(String, String)], now_ms: i64) -> WriteRequest {
    let timeseries = parse_exposition(text)
        .into_iter()
        .map(|(mut labels, value)| {
            for (k, v) in extra {
                match labels.iter_mut().find(|(n, _)| n == k) {
                    Some(l) => l.1 = v.clone(),
                    None => labels.push((k.clone(), v.clone())),
                }
            }
            labels.sort();
            TimeSeries {
                labels: labels.into_iter().map(|(name, value)| Label { name, value }).collect(),
                samples: vec![Sample { value, timestamp: now_ms }],
                ..Default::default()
            }
        })
        .collect();
    WriteRequest { timeseries, ..Default::default() }
}

/// Ships `render()` every `every` until `stop` turns true.
pub async fn run(
    pipeline: Arc<Pipeline>,
    render: impl Fn() -> String + Send + 'static,
    extra: Vec<(String, String)>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let req = write_request(&render(), &extra, crate::now_ms() as i64);
        if let Err(e) = pipeline.submit_series(&req).await {
            tracing::warn!(error = %e, "cannot queue the agent's own metrics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_prometheus_client_writes() {
        let m = crate::telemetry::AgentMetrics::new();
        m.queue_pending_bytes.set(1234);
        m.samples_sent.get_or_create(&vec![("endpoint".into(), "http://a:9009/api/v1/write".into())]).inc_by(7);
        m.otlp_request("grpc", "success");
        let text = m.render();
        let parsed = parse_exposition(&text);
        let find = |name: &str| parsed.iter().find(|(l, _)| l[0].1 == name).cloned();
        assert_eq!(find("strata_agent_queue_bytes").map(|x| x.1), Some(1234.0), "{text}");
        let (labels, v) = find("strata_agent_samples_sent_total").expect("counter");
        assert_eq!(v, 7.0);
        assert_eq!(labels[1], ("endpoint".to_string(), "http://a:9009/api/v1/write".to_string()));
        let bucket = parsed.iter().find(|(l, _)| l.iter().any(|(n, v)| n == "le" && v == "+Inf"));
        assert!(bucket.is_none() || bucket.is_some_and(|(_, v)| *v >= 0.0));
        let parsed = parse_exposition("x{a=\"q\\\"uote\\\\\",b=\"n\\nl\"} 2.5\nup +Inf\n");
        assert_eq!(
            parsed,
            vec![
                (
                    vec![
                        ("__name__".into(), "x".into()),
                        ("a".into(), "q\"uote\\".into()),
                        ("b".into(), "n\nl".into())
                    ],
                    2.5
                ),
                (vec![("__name__".into(), "up".into())], f64::INFINITY),
            ]
        );
        assert!(parse_exposition("garbage{").is_empty());
    }

    #[test]
    fn labels_requests_like_the_data_plane() {
        let extra = vec![
            ("environment".to_string(), "prod".to_string()),
            ("job".to_string(), "strata-agent".to_string()),
            ("instance".to_string(), "127.0.0.1:8888".to_string()),
        ];
        let req = write_request("# HELP x y\nstrata_agent_queue_bytes 5\n", &extra, 1000);
        assert_eq!(req.timeseries.len(), 1);
        let names: Vec<(&str, &str)> =
            req.timeseries[0].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(
            names,
            vec![
                ("__name__", "strata_agent_queue_bytes"),
                ("environment", "prod"),
                ("instance", "127.0.0.1:8888"),
                ("job", "strata-agent")
            ]
        );
        assert_eq!(req.timeseries[0].samples, vec![Sample { value: 5.0, timestamp: 1000 }]);
    }
}
