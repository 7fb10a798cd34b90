//! The OTLP → Prometheus translator.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use strata_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use strata_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use strata_proto::otlp::metrics::v1::{
    AggregationTemporality, Exemplar as OtlpExemplar, HistogramDataPoint, Metric, NumberDataPoint, exemplar,
    metric::Data, number_data_point,
};
use strata_proto::prometheus::{Exemplar, Label, MetricMetadata, WriteRequest, metric_metadata};

use crate::delta::{DeltaDrop, DeltaToCumulative, HistogramDelta, StreamKey};
use crate::encode::{LabelRef, LabelSet, WriteRequestEncoder, cmp_names, merge_labels};
use crate::naming::{MetricKind, format_float, label_name, metric_name, prometheus_unit};
use prost::Message;
use smallvec::SmallVec;

/// OTLP data point flag: no value was recorded (maps to a staleness marker).
const FLAG_NO_RECORDED_VALUE: u32 = 1;
/// Prometheus' ordinary NaN (not the staleness marker).
const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;
/// Keep at most this many rejection messages per request.
const MAX_MESSAGES: usize = 8;

/// Translator settings.
#[derive(Debug, Clone)]
pub struct TranslatorConfig {
    /// Resource attributes copied as labels onto every series of the resource
    /// (in addition to `target_info`).
    pub promote_resource_attributes: Vec<String>,
    /// Add `otel_scope_name` / `otel_scope_version` labels.
    pub scope_labels: bool,
    /// Emit a `target_info` series per resource.
    pub target_info: bool,
    /// Bound on delta streams tracked for delta → cumulative conversion.
    pub delta_max_streams: usize,
    /// Delta streams idle this long are forgotten.
    pub delta_max_stale: Duration,
    /// Labels set on every series, overriding translated ones (the agent's
    /// `environment`, `data_plane_id`, …).
    pub external_labels: Vec<(String, String)>,
}

impl Default for TranslatorConfig {
    fn default() -> Self {
        TranslatorConfig {
            promote_resource_attributes: Vec::new(),
            scope_labels: true,
            target_info: true,
            delta_max_streams: 100_000,
            delta_max_stale: Duration::from_secs(300),
            external_labels: Vec::new(),
        }
    }
}

/// A data point the translator could not use.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub metric: String,
    /// Short machine-readable reason (used as a metric label).
    pub reason: &'static str,
    pub message: String,
}

/// Counts for one translated request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    /// OTLP data points seen.
    pub data_points: u64,
    /// Data points rejected (see `rejected_by_reason`).
    pub rejected_points: u64,
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Prometheus samples produced.
    pub samples: u64,
    pub exemplars: u64,
}

/// Result of translating one OTLP request.
#[derive(Debug, Default)]
pub struct TranslateOutput {
    /// Estimated number of series this request produces (sizes `encoded`).
    expected_series: usize,
    /// The series, as an encoded `prometheus.WriteRequest` (see [`crate::encode`]).
    pub encoded: WriteRequestEncoder,
    /// Metadata of the metric families seen.
    pub metadata: Vec<MetricMetadata>,
    pub stats: Stats,
    /// The first few rejections, for error messages.
    pub rejections: Vec<Rejection>,
}

impl TranslateOutput {
    fn reject(&mut self, metric: &str, reason: &'static str, message: String, points: u64) {
        self.stats.rejected_points += points;
        *self.stats.rejected_by_reason.entry(reason).or_default() += points;
        if self.rejections.len() < MAX_MESSAGES {
            self.rejections.push(Rejection { metric: metric.to_string(), reason, message });
        }
    }

    /// A one-line summary of the rejections, for OTLP partial-success messages.
    pub fn rejection_message(&self) -> String {
        let mut msg = self.rejections.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; ");
        let shown: u64 = self.rejections.len() as u64;
        if self.stats.rejected_points > shown {
            msg.push_str(&format!(" ({} data points rejected in total)", self.stats.rejected_points));
        }
        msg
    }

    /// Encodes a series: `base` labels (sorted) with `over` (sorted) and the
    /// configured external labels on top.
    fn push<B: LabelRef>(
        &mut self,
        ext: &[(String, String)],
        base: &[B],
        over: &[(&str, &str)],
        ts: i64,
        value: f64,
        exemplars: &[Exemplar],
    ) {
        self.stats.samples += 1;
        self.stats.exemplars += exemplars.len() as u64;
        self.encoded.series(base, over, ext, ts, value, exemplars);
        if self.encoded.num_series() == 1 {
            // Size the buffer once from the first series instead of doubling it.
            let first = self.encoded.bytes().len();
            self.encoded.reserve(first.saturating_mul(self.expected_series.saturating_sub(1)) / 8 * 9);
        }
    }

    /// Number of series produced.
    pub fn num_series(&self) -> usize {
        self.encoded.num_series()
    }

    /// The output as encoded `WriteRequest` bytes: series, then metadata.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut e = self.encoded;
        e.metadata(&self.metadata);
        e.into_bytes()
    }

    /// The output decoded into a `WriteRequest` (for callers that need structs).
    pub fn write_request(&self) -> WriteRequest {
        let mut req = WriteRequest::decode(self.encoded.bytes()).unwrap_or_default();
        req.metadata = self.metadata.clone();
        req
    }
}

/// Stateful translator (the state is the delta → cumulative accumulators).
pub struct Translator {
    cfg: TranslatorConfig,
    promoted: HashSet<String>,
    delta: DeltaToCumulative,
    le_cache: HashMap<u64, std::sync::Arc<str>>,
    label_names: LabelNames,
}

fn any_value_string(v: &Option<AnyValue>) -> String {
    let Some(AnyValue { value: Some(v) }) = v else {
        return String::new();
    };
    match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => format_float(*d),
        any_value::Value::BytesValue(b) => hex::encode(b),
        // Dictionary references only exist in profiles, never in metrics.
        any_value::Value::StringValueStrindex(i) => i.to_string(),
        any_value::Value::ArrayValue(a) => {
            let items: Vec<String> =
                a.values.iter().map(|v| json_string(&any_value_string(&Some(v.clone())))).collect();
            format!("[{}]", items.join(","))
        }
        any_value::Value::KvlistValue(kv) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|p| format!("{}:{}", json_string(&p.key), json_string(&any_value_string(&p.value))))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Normalizes attribute keys to label names; keys that collide after
/// normalization have their values joined with `;` in key order (spec).
/// Returns the label with an empty key as an error.
fn attributes_to_labels(attrs: &[KeyValue]) -> Result<Vec<Label>, ()> {
    // Off the hot path (resources, exemplars): a throwaway name cache.
    let mut names = LabelNames::default();
    if !names.resolve(attrs) {
        return Err(());
    }
    let mut labels = PointAttrs::new();
    names.labels(attrs, &mut labels);
    Ok(labels.into_iter().map(|(n, v)| Label { name: n.to_string(), value: v.into_owned() }).collect())
}

/// A data point's attributes as labels (sorted by name), borrowing from
/// the request and the label-name cache where possible.
type PointAttrs<'a> = SmallVec<[(&'a str, Cow<'a, str>); 12]>;

/// True if `key` is already a valid label name that sanitizing leaves unchanged.
fn label_name_unchanged(key: &str) -> bool {
    let b = key.as_bytes();
    let Some(&first) = b.first() else { return false };
    let single_leading_underscore = first == b'_' && b.get(1) != Some(&b'_');
    let leading_digit = first.is_ascii_digit();
    let all_valid = b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    all_valid && !leading_digit && !single_leading_underscore
}

/// How one attribute key becomes a label name.
#[derive(Debug, Clone, Copy)]
enum NameId {
    /// The key is a valid label name already.
    AsIs,
    /// The sanitized name is `LabelNames::names[i]`.
    Cached(u32),
}

/// Sanitized label names of attribute keys (`http.route` → `http_route`),
/// kept across requests so the hot path does not build a string per
/// attribute per data point.
#[derive(Debug, Default)]
struct LabelNames {
    index: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    names: Vec<Box<str>>,
    /// The current data point's attributes, resolved by [`LabelNames::resolve`].
    ids: Vec<NameId>,
}

impl LabelNames {
    /// Bound on cached names; the cache starts over when a request begins
    /// above it.
    const MAX: usize = 16_384;

    fn trim(&mut self) {
        if self.names.len() > Self::MAX {
            self.index.clear();
            self.names.clear();
        }
    }

    /// Resolves the label names of `attrs` into `self.ids`. False if a key
    /// has no valid label name (it is empty).
    fn resolve(&mut self, attrs: &[KeyValue]) -> bool {
        self.ids.clear();
        for kv in attrs {
            let id = if label_name_unchanged(&kv.key) {
                NameId::AsIs
            } else if let Some(&i) = self.index.get(kv.key.as_str()) {
                NameId::Cached(i)
            } else {
                let Some(name) = label_name(&kv.key) else { return false };
                let i = self.names.len() as u32;
                self.names.push(name.into());
                self.index.insert(kv.key.as_str().into(), i);
                NameId::Cached(i)
            };
            self.ids.push(id);
        }
        true
    }

    /// The labels of the attributes last passed to [`LabelNames::resolve`],
    /// sorted by name; keys that collide after sanitizing have their values
    /// joined with `;` in key order (spec).
    fn labels<'a>(&'a self, attrs: &'a [KeyValue], out: &mut PointAttrs<'a>) {
        let mut tmp: SmallVec<[(&'a str, &'a str, Cow<'a, str>); 12]> = attrs
            .iter()
            .zip(&self.ids)
            .map(|(kv, id)| {
                let name: &str = match id {
                    NameId::AsIs => &kv.key,
                    NameId::Cached(i) => &self.names[*i as usize],
                };
                let value: Cow<'_, str> = match &kv.value {
                    Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }) => Cow::Borrowed(s),
                    v => Cow::Owned(any_value_string(v)),
                };
                (name, kv.key.as_str(), value)
            })
            .collect();
        if !tmp.is_sorted_by(|a, b| cmp_names(a.0, b.0).is_lt()) {
            tmp.sort_unstable_by(|a, b| cmp_names(a.0, b.0).then(a.1.cmp(b.1)));
        }
        out.clear();
        for (name, _, value) in tmp {
            match out.last_mut() {
                Some(last) if last.0 == name => {
                    let v = last.1.to_mut();
                    v.push(';');
                    v.push_str(&value);
                }
                _ => out.push((name, value)),
            }
        }
    }
}

/// Labels every data point of a scope gets: `low` loses to the point's
/// attributes, `top` (job, instance) wins over them.
struct ScopeContext<'r> {
    low: Vec<Label>,
    top: SmallVec<[(&'r str, &'r str); 2]>,
}

/// Sets `name=value` in a label set sorted by name.
fn set_label(labels: &mut Vec<Label>, name: &str, value: &str, overwrite: bool) {
    match labels.binary_search_by(|l| l.name.as_str().cmp(name)) {
        Ok(i) => {
            if overwrite {
                labels[i].value = value.to_string();
            }
        }
        Err(i) => labels.insert(i, Label { name: name.to_string(), value: value.to_string() }),
    }
}

fn nanos_to_ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

fn exemplars_of(src: &[OtlpExemplar]) -> Vec<(f64, Exemplar)> {
    src.iter()
        .map(|e| {
            let mut labels = attributes_to_labels(&e.filtered_attributes).unwrap_or_default();
            if !e.trace_id.is_empty() {
                set_label(&mut labels, "trace_id", &hex::encode(&e.trace_id), true);
            }
            if !e.span_id.is_empty() {
                set_label(&mut labels, "span_id", &hex::encode(&e.span_id), true);
            }
            let value = match e.value {
                Some(exemplar::Value::AsDouble(d)) => d,
                Some(exemplar::Value::AsInt(i)) => i as f64,
                None => 0.0,
            };
            (value, Exemplar { labels, value, timestamp: nanos_to_ms(e.time_unix_nano) })
        })
        .collect()
}

const IDENTIFYING: [&str; 3] = ["service.name", "service.namespace", "service.instance.id"];

impl Translator {
    pub fn new(mut cfg: TranslatorConfig) -> Self {
        cfg.external_labels.sort();
        cfg.external_labels.dedup_by(|a, b| a.0 == b.0);
        let promoted = cfg.promote_resource_attributes.iter().cloned().collect();
        let delta = DeltaToCumulative::new(cfg.delta_max_streams, cfg.delta_max_stale);
        Translator { cfg, promoted, delta, le_cache: HashMap::new(), label_names: LabelNames::default() }
    }

    /// Number of delta streams being converted to cumulative.
    pub fn delta_streams(&self) -> usize {
        self.delta.len()
    }

    /// Translates one OTLP export request. `now_ms` is wall-clock time, used
    /// only to expire idle delta streams.
    pub fn translate(&mut self, req: &ExportMetricsServiceRequest, now_ms: i64) -> TranslateOutput {
        self.delta.gc(now_ms);
        let mut names = std::mem::take(&mut self.label_names);
        names.trim();
        let mut out = TranslateOutput { expected_series: expected_series(req), ..Default::default() };
        let mut families: HashSet<String> = HashSet::new();
        for rm in &req.resource_metrics {
            let attrs: &[KeyValue] = rm.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
            let get = |k: &str| attrs.iter().find(|kv| kv.key == k).map(|kv| any_value_string(&kv.value));
            let job = match (get("service.namespace"), get("service.name")) {
                (Some(ns), Some(name)) if !ns.is_empty() => Some(format!("{ns}/{name}")),
                (_, Some(name)) => Some(name),
                _ => None,
            };
            let instance = get("service.instance.id");

            // Labels every series of this resource gets: promoted attributes.
            let promoted_attrs: Vec<KeyValue> =
                attrs.iter().filter(|kv| self.promoted.contains(&kv.key)).cloned().collect();
            let resource_labels = attributes_to_labels(&promoted_attrs).unwrap_or_default();
            let mut max_ts: Option<i64> = None;

            for sm in &rm.scope_metrics {
                let mut low = resource_labels.clone();
                if self.cfg.scope_labels
                    && let Some(scope) = &sm.scope
                {
                    if !scope.name.is_empty() {
                        set_label(&mut low, "otel_scope_name", &scope.name, true);
                    }
                    if !scope.version.is_empty() {
                        set_label(&mut low, "otel_scope_version", &scope.version, true);
                    }
                }
                // Sorted by name: "instance" < "job".
                let mut top = SmallVec::new();
                if let Some(i) = &instance {
                    top.push(("instance", i.as_str()));
                }
                if let Some(j) = &job {
                    top.push(("job", j.as_str()));
                }
                let context = ScopeContext { low, top };
                for metric in &sm.metrics {
                    self.translate_metric(metric, &context, &mut names, now_ms, &mut families, &mut max_ts, &mut out);
                }
            }

            // target_info carries the non-identifying resource attributes.
            if self.cfg.target_info {
                let info_attrs: Vec<KeyValue> =
                    attrs.iter().filter(|kv| !IDENTIFYING.contains(&kv.key.as_str())).cloned().collect();
                if let (false, Some(ts)) = (info_attrs.is_empty(), max_ts)
                    && let Ok(mut labels) = attributes_to_labels(&info_attrs)
                {
                    if let Some(j) = &job {
                        set_label(&mut labels, "job", j, true);
                    }
                    if let Some(i) = &instance {
                        set_label(&mut labels, "instance", i, true);
                    }
                    set_label(&mut labels, "__name__", "target_info", true);
                    let ext = &self.cfg.external_labels;
                    if families.insert("target_info".into()) {
                        out.metadata.push(MetricMetadata {
                            r#type: metric_metadata::MetricType::Gauge as i32,
                            metric_family_name: "target_info".into(),
                            help: "Target metadata".into(),
                            unit: String::new(),
                        });
                    }
                    out.push(ext, &labels, &[], ts, 1.0, &[]);
                }
            }
        }
        self.label_names = names;
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn translate_metric(
        &mut self,
        metric: &Metric,
        context: &ScopeContext<'_>,
        names: &mut LabelNames,
        now_ms: i64,
        families: &mut HashSet<String>,
        max_ts: &mut Option<i64>,
        out: &mut TranslateOutput,
    ) {
        let Some(data) = &metric.data else {
            // A metric with no data has no points to reject.
            return;
        };
        let (kind, points, meta_type) = match data {
            Data::Gauge(g) => (MetricKind::Gauge, g.data_points.len(), metric_metadata::MetricType::Gauge),
            Data::Sum(s) if s.is_monotonic => {
                (MetricKind::Counter, s.data_points.len(), metric_metadata::MetricType::Counter)
            }
            Data::Sum(s) => (MetricKind::Gauge, s.data_points.len(), metric_metadata::MetricType::Gauge),
            Data::Histogram(h) => (MetricKind::Histogram, h.data_points.len(), metric_metadata::MetricType::Histogram),
            Data::Summary(s) => (MetricKind::Summary, s.data_points.len(), metric_metadata::MetricType::Summary),
            Data::ExponentialHistogram(h) => {
                out.stats.data_points += h.data_points.len() as u64;
                out.reject(
                    &metric.name,
                    "exponential_histogram_unsupported",
                    format!(
                        "metric {:?}: exponential histograms are not supported by Prometheus remote write 1.0 receivers without native histograms; use explicit bucket boundaries",
                        metric.name
                    ),
                    h.data_points.len() as u64,
                );
                return;
            }
        };
        out.stats.data_points += points as u64;
        // Sums without a monotonic ratio unit keep the ratio suffix only as gauges (spec).
        let unit = if kind == MetricKind::Gauge && matches!(data, Data::Sum(_)) && metric.unit == "1" {
            "1"
        } else {
            metric.unit.as_str()
        };
        let Some(name) = metric_name(&metric.name, unit, kind) else {
            out.reject(
                &metric.name,
                "invalid_metric_name",
                format!("metric name {:?} has no characters valid in a Prometheus metric name", metric.name),
                points as u64,
            );
            return;
        };
        if families.insert(name.clone()) {
            out.metadata.push(MetricMetadata {
                r#type: meta_type as i32,
                metric_family_name: name.clone(),
                help: metric.description.clone(),
                unit: prometheus_unit(&metric.unit),
            });
        }

        let temporality = |t: i32| AggregationTemporality::try_from(t).unwrap_or(AggregationTemporality::Unspecified);
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    self.number_point(&name, metric, p, kind, false, context, names, now_ms, max_ts, out);
                }
            }
            Data::Sum(s) => {
                let t = temporality(s.aggregation_temporality);
                if t == AggregationTemporality::Unspecified {
                    out.reject(
                        &metric.name,
                        "unspecified_temporality",
                        format!("metric {:?}: sum has no aggregation temporality", metric.name),
                        s.data_points.len() as u64,
                    );
                    return;
                }
                let is_delta = t == AggregationTemporality::Delta;
                for p in &s.data_points {
                    self.number_point(&name, metric, p, kind, is_delta, context, names, now_ms, max_ts, out);
                }
            }
            Data::Histogram(h) => {
                let t = temporality(h.aggregation_temporality);
                if t == AggregationTemporality::Unspecified {
                    out.reject(
                        &metric.name,
                        "unspecified_temporality",
                        format!("metric {:?}: histogram has no aggregation temporality", metric.name),
                        h.data_points.len() as u64,
                    );
                    return;
                }
                let is_delta = t == AggregationTemporality::Delta;
                for p in &h.data_points {
                    self.histogram_point(&name, metric, p, is_delta, context, names, now_ms, max_ts, out);
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    let mut attrs = PointAttrs::new();
                    let Some(ts) = point_attrs(metric, &p.attributes, p.time_unix_nano, names, &mut attrs, out) else {
                        continue;
                    };
                    let mut base = LabelSet::new();
                    merge_labels(&context.low, &attrs, &context.top, false, &mut base);
                    *max_ts = Some(max_ts.map_or(ts, |m: i64| m.max(ts)));
                    let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
                    let v = |x: f64| if stale { crate::stale_nan() } else { x };
                    let ext = &self.cfg.external_labels;
                    for q in &p.quantile_values {
                        let qs = format_float(q.quantile);
                        out.push(ext, &base, &[("__name__", &name), ("quantile", &qs)], ts, v(q.value), &[]);
                    }
                    out.push(ext, &base, &[("__name__", &format!("{name}_sum"))], ts, v(p.sum), &[]);
                    out.push(ext, &base, &[("__name__", &format!("{name}_count"))], ts, v(p.count as f64), &[]);
                }
            }
            Data::ExponentialHistogram(_) => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn number_point(
        &mut self,
        name: &str,
        metric: &Metric,
        p: &NumberDataPoint,
        kind: MetricKind,
        is_delta: bool,
        context: &ScopeContext<'_>,
        names: &mut LabelNames,
        now_ms: i64,
        max_ts: &mut Option<i64>,
        out: &mut TranslateOutput,
    ) {
        let mut attrs = PointAttrs::new();
        let Some(ts) = point_attrs(metric, &p.attributes, p.time_unix_nano, names, &mut attrs, out) else {
            return;
        };
        let mut base = LabelSet::new();
        merge_labels(&context.low, &attrs, &context.top, false, &mut base);
        let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
        let raw = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None if stale => 0.0,
            None => {
                out.reject(name, "missing_value", format!("metric {:?}: data point has no value", metric.name), 1);
                return;
            }
        };
        if kind == MetricKind::Counter && !stale && !raw.is_finite() {
            out.reject(
                name,
                "non_finite_counter",
                format!("metric {:?}: counter value {raw} is not a finite number", metric.name),
                1,
            );
            return;
        }
        let mut value = if stale {
            crate::stale_nan()
        } else if raw.is_nan() {
            // Never let an arbitrary NaN payload look like a staleness marker.
            f64::from_bits(NORMAL_NAN_BITS)
        } else {
            raw
        };
        if is_delta && !stale {
            match self.delta.add_sum(StreamKey::of((base.as_slice(), name)), p.time_unix_nano, raw, now_ms) {
                Ok(total) => value = total,
                Err(drop) => {
                    let (reason, msg) = delta_drop_message(drop);
                    out.reject(name, reason, format!("metric {:?}: {msg}", metric.name), 1);
                    return;
                }
            }
        }
        *max_ts = Some(max_ts.map_or(ts, |m: i64| m.max(ts)));
        let exemplars: Vec<Exemplar> = exemplars_of(&p.exemplars).into_iter().map(|(_, e)| e).collect();
        out.push(&self.cfg.external_labels, &base, &[("__name__", name)], ts, value, &exemplars);
    }

    #[allow(clippy::too_many_arguments)]
    fn histogram_point(
        &mut self,
        name: &str,
        metric: &Metric,
        p: &HistogramDataPoint,
        is_delta: bool,
        context: &ScopeContext<'_>,
        names: &mut LabelNames,
        now_ms: i64,
        max_ts: &mut Option<i64>,
        out: &mut TranslateOutput,
    ) {
        let mut attrs = PointAttrs::new();
        let Some(ts) = point_attrs(metric, &p.attributes, p.time_unix_nano, names, &mut attrs, out) else {
            return;
        };
        let mut base = LabelSet::new();
        merge_labels(&context.low, &attrs, &context.top, false, &mut base);
        let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
        if !stale && !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
            out.reject(
                name,
                "invalid_histogram",
                format!(
                    "metric {:?}: histogram has {} bucket counts for {} bounds (want bounds + 1)",
                    metric.name,
                    p.bucket_counts.len(),
                    p.explicit_bounds.len()
                ),
                1,
            );
            return;
        }
        if p.explicit_bounds.windows(2).any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less)) {
            out.reject(
                name,
                "invalid_histogram",
                format!("metric {:?}: histogram bounds are not strictly increasing", metric.name),
                1,
            );
            return;
        }
        let (counts, count, sum): (std::borrow::Cow<'_, [u64]>, u64, Option<f64>) = if is_delta && !stale {
            let key = StreamKey::of((base.as_slice(), name));
            let delta = HistogramDelta {
                bounds: &p.explicit_bounds,
                counts: &p.bucket_counts,
                count: p.count,
                sum: p.sum.unwrap_or(0.0),
            };
            match self.delta.add_histogram(key, p.time_unix_nano, delta, now_ms) {
                Ok(h) => (h.counts.into(), h.count, p.sum.map(|_| h.sum)),
                Err(drop) => {
                    let (reason, msg) = delta_drop_message(drop);
                    out.reject(name, reason, format!("metric {:?}: {msg}", metric.name), 1);
                    return;
                }
            }
        } else {
            (p.bucket_counts.as_slice().into(), p.count, p.sum)
        };
        *max_ts = Some(max_ts.map_or(ts, |m: i64| m.max(ts)));
        let v = |x: f64| if stale { crate::stale_nan() } else { x };

        // Attach each exemplar to the first bucket whose bound holds its value.
        let mut exemplars = exemplars_of(&p.exemplars);
        let bucket_name = format!("{name}_bucket");
        let ext = &self.cfg.external_labels;
        let mut cumulative: u64 = 0;
        for (i, bound) in p.explicit_bounds.iter().enumerate() {
            cumulative = cumulative.saturating_add(counts.get(i).copied().unwrap_or(0));
            let ex: Vec<Exemplar> = take_exemplars(&mut exemplars, |val| val <= *bound);
            if self.le_cache.len() > 4096 {
                self.le_cache.clear();
            }
            let le = self.le_cache.entry(bound.to_bits()).or_insert_with(|| format_float(*bound).into()).clone();
            out.push(ext, &base, &[("__name__", &bucket_name), ("le", &le)], ts, v(cumulative as f64), &ex);
        }
        let ex: Vec<Exemplar> = take_exemplars(&mut exemplars, |_| true);
        out.push(ext, &base, &[("__name__", &bucket_name), ("le", "+Inf")], ts, v(count as f64), &ex);
        if let Some(s) = sum {
            out.push(ext, &base, &[("__name__", &format!("{name}_sum"))], ts, v(s), &[]);
        }
        out.push(ext, &base, &[("__name__", &format!("{name}_count"))], ts, v(count as f64), &[]);
    }
}

/// A data point's attributes as sorted labels, and its timestamp; rejects
/// points with bad attributes or no timestamp.
fn point_attrs<'a>(
    metric: &Metric,
    attributes: &'a [KeyValue],
    time_unix_nano: u64,
    names: &'a mut LabelNames,
    labels: &mut PointAttrs<'a>,
    out: &mut TranslateOutput,
) -> Option<i64> {
    if time_unix_nano == 0 {
        out.reject(
            &metric.name,
            "missing_timestamp",
            format!("metric {:?}: data point has no time_unix_nano", metric.name),
            1,
        );
        return None;
    }
    if !names.resolve(attributes) {
        out.reject(
            &metric.name,
            "invalid_label_name",
            format!("metric {:?}: data point has an attribute with an empty key", metric.name),
            1,
        );
        return None;
    }
    let names: &'a LabelNames = names;
    names.labels(attributes, labels);
    Some(nanos_to_ms(time_unix_nano))
}

/// How many series a request translates to, at most (before rejections).
fn expected_series(req: &ExportMetricsServiceRequest) -> usize {
    let mut n = 0;
    for rm in &req.resource_metrics {
        n += 1; // target_info
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            n += match &m.data {
                Some(Data::Gauge(g)) => g.data_points.len(),
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Histogram(h)) => {
                    h.data_points.len() * (h.data_points.first().map_or(0, |p| p.explicit_bounds.len()) + 3)
                }
                Some(Data::Summary(s)) => {
                    s.data_points.len() * (s.data_points.first().map_or(0, |p| p.quantile_values.len()) + 2)
                }
                Some(Data::ExponentialHistogram(_)) | None => 0,
            };
        }
    }
    n
}

fn take_exemplars(ex: &mut Vec<(f64, Exemplar)>, pred: impl Fn(f64) -> bool) -> Vec<Exemplar> {
    if ex.is_empty() {
        return Vec::new();
    }
    let (take, keep): (Vec<_>, Vec<_>) = ex.drain(..).partition(|(v, _)| pred(*v));
    *ex = keep;
    take.into_iter().map(|(_, e)| e).collect()
}

fn delta_drop_message(d: DeltaDrop) -> (&'static str, &'static str) {
    match d {
        DeltaDrop::OutOfOrder => ("delta_out_of_order", "delta point ends before the previous point of its stream"),
        DeltaDrop::TooManyStreams => {
            ("delta_too_many_streams", "too many delta streams to convert to cumulative (raise the limit)")
        }
    }
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
