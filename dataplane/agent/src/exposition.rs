//! The optional Prometheus exposition endpoint (`--prometheus-exporter.listen-address`,
//! :8889 by convention, like the OpenTelemetry Collector's `prometheus`
//! exporter): the latest value of every translated series, in the
//! Prometheus text format, for a Prometheus that scrapes the data plane
//! instead of (or as well as) receiving remote write.
//!
//! Series not updated for `expiration` disappear, as do series whose latest
//! sample is a staleness marker. Samples are exposed without timestamps, so
//! the scraper stamps them with its scrape time (the collector's default).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_proto::prometheus::{WriteRequest, metric_metadata::MetricType};

struct Latest {
    value: f64,
    updated: Instant,
}

#[derive(Default)]
struct State {
    /// Label set (sorted, `__name__` included) → latest sample.
    series: HashMap<Vec<(String, String)>, Latest>,
    /// Metric family → (type, help).
    families: HashMap<String, (MetricType, String)>,
}

/// A series as rendered: name, labels without `__name__`, value.
type ExposedSeries<'a> = (&'a str, Vec<&'a (String, String)>, f64);

/// Latest samples of the translated series, rendered on scrape.
pub struct Exposition {
    state: Mutex<State>,
    expiration: Duration,
}

const NAME: &str = "__name__";

impl Exposition {
    pub fn new(expiration: Duration) -> Self {
        Exposition { state: Mutex::new(State::default()), expiration }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the samples and metadata of a translated request.
    pub fn update(&self, req: &WriteRequest) {
        let now = Instant::now();
        let mut st = self.lock();
        for md in &req.metadata {
            let t = MetricType::try_from(md.r#type).unwrap_or(MetricType::Unknown);
            st.families.insert(md.metric_family_name.clone(), (t, md.help.clone()));
        }
        for ts in &req.timeseries {
            // Samples of one request are in time order; the last one wins.
            let Some(s) = ts.samples.iter().max_by_key(|s| s.timestamp) else { continue };
            let mut key: Vec<(String, String)> = ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
            key.sort();
            if strata_otel_prom::is_stale_nan(s.value) {
                st.series.remove(&key);
            } else {
                st.series.insert(key, Latest { value: s.value, updated: now });
            }
        }
    }

    /// Number of series currently exposed.
    pub fn len(&self) -> usize {
        self.lock().series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text exposition (format 0.0.4), expiring idle series first.
    pub fn render(&self) -> String {
        let mut st = self.lock();
        let expiration = self.expiration;
        st.series.retain(|_, l| l.updated.elapsed() <= expiration);
        // family → [(series name, labels without __name__, value)]
        let mut by_family: BTreeMap<&str, Vec<ExposedSeries<'_>>> = BTreeMap::new();
        for (labels, latest) in &st.series {
            let Some(name) = labels.iter().find(|l| l.0 == NAME).map(|l| l.1.as_str()) else { continue };
            let family = family_of(name, &st.families);
            let rest: Vec<&(String, String)> = labels.iter().filter(|l| l.0 != NAME).collect();
            by_family.entry(family).or_default().push((name, rest, latest.value));
        }
        let mut out = String::new();
        for (family, mut series) in by_family {
            series.sort_by(|a, b| a.0.cmp(b.0).then_with(|| a.1.cmp(&b.1)));
            let (t, help) = st.families.get(family).map_or((MetricType::Unknown, ""), |(t, h)| (*t, h.as_str()));
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {family} {}", escape_help(help));
            }
            let _ = writeln!(out, "# TYPE {family} {}", type_name(t));
            for (name, labels, value) in series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (n, v)) in labels.iter().map(|l| (&l.0, &l.1)).enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{n}=\"{}\"", escape_label_value(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", format_value(value));
            }
        }
        out
    }
}

/// The metric family a series belongs to: its own name when it has
/// metadata, else its name without a histogram/summary suffix when that has.
fn family_of<'a>(name: &'a str, families: &HashMap<String, (MetricType, String)>) -> &'a str {
    if families.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.contains_key(base)
        {
            return base;
        }
    }
    name
}

fn type_name(t: MetricType) -> &'static str {
    match t {
        MetricType::Counter => "counter",
        MetricType::Gauge | MetricType::Info => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::Summary => "summary",
        MetricType::Unknown | MetricType::Gaugehistogram | MetricType::Stateset => "untyped",
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::prometheus::{Label, MetricMetadata, Sample, TimeSeries};

    fn series(labels: &[(&str, &str)], value: f64, ts: i64) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect(),
            samples: vec![Sample { value, timestamp: ts }],
            ..Default::default()
        }
    }

    fn md(name: &str, t: MetricType, help: &str) -> MetricMetadata {
        MetricMetadata { r#type: t as i32, metric_family_name: name.into(), help: help.into(), unit: String::new() }
    }

    #[test]
    fn renders_families_with_latest_values_and_drops_stale_series() {
        let e = Exposition::new(Duration::from_secs(300));
        e.update(&WriteRequest {
            timeseries: vec![
                series(&[("__name__", "orders_total"), ("job", "shop")], 3.0, 1),
                series(&[("__name__", "lat_seconds_bucket"), ("le", "0.5"), ("path", "a\"b\\c\nd")], 2.0, 1),
                series(&[("__name__", "lat_seconds_bucket"), ("le", "+Inf"), ("path", "x")], 4.0, 1),
                series(&[("__name__", "lat_seconds_count"), ("path", "x")], 4.0, 1),
                series(&[("__name__", "lat_seconds_sum"), ("path", "x")], 0.75, 1),
                series(&[("__name__", "gone"), ("job", "shop")], 1.0, 1),
                series(&[("__name__", "no_metadata")], f64::INFINITY, 1),
            ],
            metadata: vec![
                md("orders_total", MetricType::Counter, "Orders\ncreated"),
                md("lat_seconds", MetricType::Histogram, ""),
                md("gone", MetricType::Gauge, "g"),
            ],
        });
        e.update(&WriteRequest {
            timeseries: vec![
                series(&[("__name__", "orders_total"), ("job", "shop")], 5.0, 2),
                series(&[("__name__", "gone"), ("job", "shop")], strata_otel_prom::stale_nan(), 2),
            ],
            metadata: vec![],
        });
        let text = e.render();
        assert_eq!(
            text,
            "# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{le=\"+Inf\",path=\"x\"} 4\n\
             lat_seconds_bucket{le=\"0.5\",path=\"a\\\"b\\\\c\\nd\"} 2\n\
             lat_seconds_count{path=\"x\"} 4\n\
             lat_seconds_sum{path=\"x\"} 0.75\n\
             # TYPE no_metadata untyped\n\
             no_metadata +Inf\n\
             # HELP orders_total Orders\\ncreated\n\
             # TYPE orders_total counter\n\
             orders_total{job=\"shop\"} 5\n"
        );
        assert_eq!(e.len(), 6);
    }

    #[test]
    fn idle_series_expire() {
        let e = Exposition::new(Duration::ZERO);
        e.update(&WriteRequest { timeseries: vec![series(&[("__name__", "up")], 1.0, 1)], metadata: vec![] });
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(e.render(), "");
        assert!(e.is_empty());
    }
}
