//! The client data model (`io.prometheus.client.MetricFamily`): what the
//! Pushgateway stores. Text bodies are grouped into it as Prometheus'
//! `expfmt` text parser does (a summary's quantiles, `_sum` and `_count`
//! into one metric), protobuf bodies decode into it, and [`samples`]
//! renders a family back to the series the Pushgateway's `/metrics`
//! exposes.

use prost::Message;
use strata_proto::client_model::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType as PbType, Quantile, Summary,
    Untyped,
};

use crate::{Family, MetricType, ParseError, Sample, go_float};

/// Largest single delimited message accepted (a family's bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Decodes a delimited protobuf body (varint length, `MetricFamily`, …).
pub fn decode_delimited(mut body: &[u8]) -> Result<Vec<MetricFamily>, ParseError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let err = |message: String| ParseError { line: out.len() + 1, message };
        let len = prost::encoding::decode_varint(&mut body)
            .map_err(|e| err(format!("message {}: invalid length prefix: {e}", out.len() + 1)))?;
        if len as usize > MAX_MESSAGE_BYTES || len as usize > body.len() {
            return Err(err(format!(
                "message {}: length {len} is past the body's end ({} bytes left)",
                out.len() + 1,
                body.len()
            )));
        }
        let (msg, rest) = body.split_at(len as usize);
        let mf = MetricFamily::decode(msg)
            .map_err(|e| err(format!("message {}: invalid MetricFamily: {e}", out.len() + 1)))?;
        if mf.name().is_empty() {
            return Err(err(format!("message {}: metric family without a name", out.len() + 1)));
        }
        out.push(mf);
        body = rest;
    }
    Ok(out)
}

/// Encodes families as a delimited protobuf body.
pub fn encode_delimited(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        // Writing into a Vec cannot fail.
        let _ = f.encode_length_delimited(&mut out);
    }
    out
}

fn pair(n: &str, v: &str) -> LabelPair {
    LabelPair { name: Some(n.to_string()), value: Some(v.to_string()) }
}

fn labels_without(s: &Sample, skip: &str) -> Vec<LabelPair> {
    s.labels.iter().filter(|(n, _)| n != skip).map(|(n, v)| pair(n, v)).collect()
}

fn same_labels(a: &[LabelPair], b: &[LabelPair]) -> bool {
    a.len() == b.len() && a.iter().all(|l| b.contains(l))
}

fn bound(s: &Sample, label: &str, what: &str) -> Result<f64, String> {
    let v = s.label(label).ok_or_else(|| format!("{what} sample {:?} without a {label:?} label", s.name))?;
    crate::parse_value(v).ok_or_else(|| format!("{what} sample {:?}: {label}={v:?} is not a number", s.name))
}

/// Groups text-format families into the client model as `expfmt` does.
/// OpenMetrics-only types and `_created` samples are refused: the text
/// format 0.0.4 has neither.
pub fn from_families(families: Vec<Family>) -> Result<Vec<MetricFamily>, String> {
    families.into_iter().filter(|f| !f.samples.is_empty()).map(from_family).collect()
}

fn from_family(f: Family) -> Result<MetricFamily, String> {
    let mut mf = MetricFamily { name: Some(f.name.clone()), help: f.help.clone(), ..Default::default() };
    let mut metrics: Vec<Metric> = Vec::new();
    // The metric of a summary/histogram sample: same labels but the bound.
    fn slot(metrics: &mut Vec<Metric>, labels: Vec<LabelPair>, init: impl FnOnce() -> Metric) -> &mut Metric {
        match metrics.iter().position(|m| same_labels(&m.label, &labels)) {
            Some(i) => &mut metrics[i],
            None => {
                let mut m = init();
                m.label = labels;
                metrics.push(m);
                metrics.last_mut().expect("just pushed")
            }
        }
    }
    match f.kind {
        MetricType::Counter | MetricType::Gauge | MetricType::Unknown => {
            mf.set_type(match f.kind {
                MetricType::Counter => PbType::Counter,
                MetricType::Gauge => PbType::Gauge,
                _ => PbType::Untyped,
            });
            for s in &f.samples {
                let labels = labels_without(s, "");
                if metrics.iter().any(|m| same_labels(&m.label, &labels)) {
                    return Err(format!("duplicate sample of {} with labels {:?}", f.name, s.labels));
                }
                let mut m = Metric { label: labels, timestamp_ms: s.timestamp_ms, ..Default::default() };
                match f.kind {
                    MetricType::Counter => m.counter = Some(Counter { value: Some(s.value), ..Default::default() }),
                    MetricType::Gauge => m.gauge = Some(Gauge { value: Some(s.value) }),
                    _ => m.untyped = Some(Untyped { value: Some(s.value) }),
                }
                metrics.push(m);
            }
        }
        MetricType::Summary => {
            mf.set_type(PbType::Summary);
            for s in &f.samples {
                let init = || Metric { summary: Some(Summary::default()), ..Default::default() };
                if s.name == f.name {
                    let q = bound(s, "quantile", "summary")?;
                    let m = slot(&mut metrics, labels_without(s, "quantile"), init);
                    m.timestamp_ms = m.timestamp_ms.or(s.timestamp_ms);
                    let sum = m.summary.get_or_insert_default();
                    sum.quantile.push(Quantile { quantile: Some(q), value: Some(s.value) });
                } else {
                    let m = slot(&mut metrics, labels_without(s, ""), init);
                    m.timestamp_ms = m.timestamp_ms.or(s.timestamp_ms);
                    let sum = m.summary.get_or_insert_default();
                    if s.name.ends_with("_sum") {
                        sum.sample_sum = Some(s.value);
                    } else if s.name.ends_with("_count") {
                        sum.sample_count = Some(count(s)?);
                    } else {
                        return Err(format!(
                            "sample {:?} in summary {} (no _created in the text format)",
                            s.name, f.name
                        ));
                    }
                }
            }
        }
        MetricType::Histogram => {
            mf.set_type(PbType::Histogram);
            for s in &f.samples {
                let init = || Metric { histogram: Some(Histogram::default()), ..Default::default() };
                if s.name.ends_with("_bucket") {
                    let le = bound(s, "le", "histogram")?;
                    let m = slot(&mut metrics, labels_without(s, "le"), init);
                    m.timestamp_ms = m.timestamp_ms.or(s.timestamp_ms);
                    m.histogram.get_or_insert_default().bucket.push(Bucket {
                        upper_bound: Some(le),
                        cumulative_count: Some(count(s)?),
                        ..Default::default()
                    });
                } else {
                    let m = slot(&mut metrics, labels_without(s, ""), init);
                    m.timestamp_ms = m.timestamp_ms.or(s.timestamp_ms);
                    let h = m.histogram.get_or_insert_default();
                    if s.name.ends_with("_sum") {
                        h.sample_sum = Some(s.value);
                    } else if s.name.ends_with("_count") {
                        h.sample_count = Some(count(s)?);
                    } else {
                        return Err(format!("sample {:?} in histogram {}", s.name, f.name));
                    }
                }
            }
        }
        other => return Err(format!("metric type {} of {} is not in the text format", other.as_str(), f.name)),
    }
    mf.metric = metrics;
    Ok(mf)
}

fn count(s: &Sample) -> Result<u64, String> {
    if s.value.is_finite() && s.value >= 0.0 {
        Ok(s.value as u64)
    } else {
        Err(format!("count {} of {:?} is not a non-negative number", s.value, s.name))
    }
}

/// True when any metric of the families carries a timestamp.
pub fn has_timestamps(families: &[MetricFamily]) -> bool {
    families.iter().any(|f| f.metric.iter().any(|m| m.timestamp_ms.is_some()))
}

/// The family's type as Strata's metadata names it.
pub fn type_of(f: &MetricFamily) -> MetricType {
    match f.r#type() {
        PbType::Counter => MetricType::Counter,
        PbType::Gauge => MetricType::Gauge,
        PbType::Summary => MetricType::Summary,
        PbType::Histogram => MetricType::Histogram,
        PbType::GaugeHistogram => MetricType::GaugeHistogram,
        PbType::Untyped => MetricType::Unknown,
    }
}

/// The series a family exposes, as the Pushgateway's text `/metrics`
/// writes them: quantiles and buckets with `quantile`/`le` in Go's float
/// format, a `+Inf` bucket added when missing, `_sum` and `_count`.
pub fn samples(f: &MetricFamily) -> Vec<Sample> {
    let name = f.name();
    let mut out = Vec::new();
    for m in &f.metric {
        let labels: Vec<(String, String)> =
            m.label.iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
        let mut push = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
            let mut labels = labels.clone();
            if let Some((n, v)) = extra {
                labels.push((n.to_string(), v));
            }
            out.push(Sample {
                name: format!("{name}{suffix}"),
                labels,
                value,
                timestamp_ms: m.timestamp_ms,
                exemplar: None,
            });
        };
        match f.r#type() {
            PbType::Counter => push("", None, m.counter.as_ref().map(|c| c.value()).unwrap_or(0.0)),
            PbType::Gauge => push("", None, m.gauge.as_ref().map(|g| g.value()).unwrap_or(0.0)),
            PbType::Untyped => push("", None, m.untyped.as_ref().map(|u| u.value()).unwrap_or(0.0)),
            PbType::Summary => {
                let s = m.summary.clone().unwrap_or_default();
                for q in &s.quantile {
                    push("", Some(("quantile", go_float(q.quantile()))), q.value());
                }
                push("_sum", None, s.sample_sum());
                push("_count", None, s.sample_count() as f64);
            }
            PbType::Histogram | PbType::GaugeHistogram => {
                let h = m.histogram.clone().unwrap_or_default();
                let count =
                    if h.sample_count_float.is_some() { h.sample_count_float() } else { h.sample_count() as f64 };
                let mut inf = false;
                for b in &h.bucket {
                    inf |= b.upper_bound() == f64::INFINITY;
                    let c = if b.cumulative_count_float.is_some() {
                        b.cumulative_count_float()
                    } else {
                        b.cumulative_count() as f64
                    };
                    push("_bucket", Some(("le", go_float(b.upper_bound()))), c);
                }
                if !inf {
                    push("_bucket", Some(("le", "+Inf".into())), count);
                }
                push("_sum", None, h.sample_sum());
                push("_count", None, count);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_groups_into_the_client_model_and_renders_back() {
        let text = "# HELP rpc RPC latency.\n# TYPE rpc summary\nrpc{svc=\"a\",quantile=\"0.50\"} 1\nrpc{svc=\"a\",quantile=\"0.9\"} 2\nrpc_sum{svc=\"a\"} 10\nrpc_count{svc=\"a\"} 4\n\
# TYPE lat histogram\nlat_bucket{le=\"0.1\"} 1\nlat_bucket{le=\"1.0\"} 3\nlat_sum 2\nlat_count 4\n\
# TYPE up gauge\nup{x=\"1\"} 1\nother 7\n";
        let fams = from_families(crate::parse_text(text).unwrap()).unwrap();
        assert_eq!(fams.len(), 4);
        assert_eq!(fams[0].help(), "RPC latency.");
        assert_eq!(fams[0].metric.len(), 1);
        assert_eq!(fams[0].metric[0].summary.as_ref().unwrap().quantile.len(), 2);
        let rendered: Vec<String> =
            fams.iter().flat_map(samples).map(|s| format!("{}{:?} {}", s.name, s.labels, s.value)).collect();
        assert_eq!(
            rendered,
            vec![
                r#"rpc[("svc", "a"), ("quantile", "0.5")] 1"#,
                r#"rpc[("svc", "a"), ("quantile", "0.9")] 2"#,
                r#"rpc_sum[("svc", "a")] 10"#,
                r#"rpc_count[("svc", "a")] 4"#,
                r#"lat_bucket[("le", "0.1")] 1"#,
                r#"lat_bucket[("le", "1")] 3"#,
                r#"lat_bucket[("le", "+Inf")] 4"#,
                r#"lat_sum[] 2"#,
                r#"lat_count[] 4"#,
                r#"up[("x", "1")] 1"#,
                r#"other[] 7"#,
            ]
        );
        // Through the delimited protobuf and back: unchanged.
        let body = encode_delimited(&fams);
        assert_eq!(decode_delimited(&body).unwrap(), fams);
        assert!(!has_timestamps(&fams));
        assert!(has_timestamps(&from_families(crate::parse_text("a 1 1000\n").unwrap()).unwrap()));
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let e = from_families(crate::parse_text("# TYPE h histogram\nh_bucket 1\n").unwrap()).unwrap_err();
        assert!(e.contains("without a \"le\" label"), "{e}");
        let e = from_families(crate::parse_text("a 1\na 2\n").unwrap()).unwrap_err();
        assert!(e.contains("duplicate sample of a"), "{e}");
        let e = decode_delimited(&[0x05, 0x0a]).unwrap_err();
        assert!(e.message.contains("past the body's end"), "{e}");
        let e = decode_delimited(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(e.message.contains("invalid length prefix"), "{e}");
        let e = decode_delimited(&[0x02, 0x18, 0x01]).unwrap_err();
        assert!(e.message.contains("without a name"), "{e}");
    }
}
