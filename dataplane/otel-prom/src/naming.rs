//! Metric and label names per the OTel "Prometheus and OpenMetrics
//! compatibility" specification (OTLP metric points → Prometheus).

/// How a metric is exposed, which decides its type suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic sum: gets `_total`.
    Counter,
    /// Gauge or non-monotonic sum: gets `_ratio` when the unit is `1`.
    Gauge,
    /// Histogram (classic buckets) — suffixes `_bucket/_sum/_count` are added per series.
    Histogram,
    /// Summary — `_sum/_count` are added per series.
    Summary,
}

/// Main units (the part before `/`).
fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        _ => return None,
    })
}

/// Units after `/` ("per ...").
fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// Replaces every run of characters other than `[a-zA-Z0-9]` with one `_`
/// and trims underscores at both ends (units are spliced into names).
fn clean_unit(u: &str) -> String {
    u.split(|c: char| !c.is_ascii_alphanumeric()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join("_")
}

/// The Prometheus unit words for an OTel unit: `(main, per)`. Units in curly
/// braces (annotations like `{request}`) contribute nothing.
pub fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let per = parts.next().unwrap_or("").trim();
    let main_word = if main.is_empty() || main.contains(['{', '}']) {
        String::new()
    } else {
        clean_unit(unit_word(main).unwrap_or(main))
    };
    let per_word = if per.is_empty() || per.contains(['{', '}']) {
        String::new()
    } else {
        clean_unit(per_unit_word(per).unwrap_or(per))
    };
    (main_word, per_word)
}

/// The Prometheus unit string recorded in metadata (e.g. `seconds`, `bytes_per_second`).
pub fn prometheus_unit(unit: &str) -> String {
    let (main, per) = unit_suffixes(unit);
    match (main.is_empty(), per.is_empty()) {
        (_, true) => main,
        (true, false) => format!("per_{per}"),
        (false, false) => format!("{main}_per_{per}"),
    }
}

/// Builds the Prometheus metric family name for an OTel metric.
///
/// The name is split into tokens on every character outside `[a-zA-Z0-9:]`
/// (which also collapses repeated underscores), the unit words are appended
/// unless a token already equals them, `_total` is moved to the end for
/// counters, `_ratio` is appended to unit-`1` gauges, and a leading digit is
/// prefixed with `_`. Returns `None` if nothing valid remains.
pub fn metric_name(name: &str, unit: &str, kind: MetricKind) -> Option<String> {
    let mut tokens: Vec<&str> = name.split(|c: char| !is_name_char(c)).filter(|t| !t.is_empty()).collect();
    if tokens.is_empty() {
        return None;
    }
    let (main, per) = unit_suffixes(unit);
    let mut owned: Vec<String> = Vec::new();
    if !main.is_empty() && !tokens.contains(&main.as_str()) {
        owned.push(main.clone());
    }
    if !per.is_empty() && !tokens.contains(&per.as_str()) {
        owned.push("per".into());
        owned.push(per.clone());
    }
    match kind {
        MetricKind::Counter => {
            tokens.retain(|t| *t != "total");
            owned.push("total".into());
        }
        MetricKind::Gauge if unit == "1" => {
            tokens.retain(|t| *t != "ratio");
            owned.push("ratio".into());
        }
        _ => {}
    }
    let mut out = String::with_capacity(name.len() + 16);
    for t in tokens.iter().copied().chain(owned.iter().map(String::as_str)) {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(t);
    }
    if out.is_empty() {
        return None;
    }
    if out.as_bytes()[0].is_ascii_digit() {
        out.insert(0, '_');
    }
    Some(out)
}

/// Builds a Prometheus label name from an OTel attribute key: characters
/// outside `[a-zA-Z0-9_]` become `_`; a leading digit gets the prefix `key_`
/// and a single leading underscore the prefix `key`. Returns `None` for an
/// empty key.
pub fn label_name(key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let mut out: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.as_bytes()[0].is_ascii_digit() {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    Some(out)
}

/// Formats a float like Go's `strconv.FormatFloat(v, 'f', -1, 64)`, the
/// format Prometheus' OTLP translator uses for `le` and `quantile`.
pub fn format_float(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v.is_nan() {
        return "NaN".into();
    }
    // Rust's Display prints the shortest representation that round-trips,
    // without exponent, which matches 'f' with precision -1.
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::MetricKind::*;
    use super::*;

    // Rows from the specification's and Prometheus' translator tables.
    #[test]
    fn metric_names_follow_the_spec() {
        let cases: &[(&str, &str, MetricKind, &str)] = &[
            ("http.server.request.duration", "s", Histogram, "http_server_request_duration_seconds"),
            ("http.server.active_requests", "{request}", Gauge, "http_server_active_requests"),
            ("http.server.request.body.size", "By", Histogram, "http_server_request_body_size_bytes"),
            ("orders.created", "{order}", Counter, "orders_created_total"),
            ("system.cpu.time", "s", Counter, "system_cpu_time_seconds_total"),
            ("system.memory.utilization", "1", Gauge, "system_memory_utilization_ratio"),
            ("foo.ratio", "1", Gauge, "foo_ratio"),
            ("requests_total", "", Counter, "requests_total"),
            ("total.requests", "", Counter, "requests_total"),
            ("request_duration_seconds", "s", Histogram, "request_duration_seconds"),
            ("net.io", "By/s", Gauge, "net_io_bytes_per_second"),
            ("throughput", "{packets}/s", Gauge, "throughput_per_second"),
            ("rate", "1/s", Counter, "rate_per_second_total"),
            ("temp", "Cel", Gauge, "temp_celsius"),
            ("disk", "KiBy", Gauge, "disk_kibibytes"),
            ("latency", "ms", Summary, "latency_milliseconds"),
            ("uptime", "d", Counter, "uptime_days_total"),
            ("freq", "Hz", Gauge, "freq_hertz"),
            ("pct", "%", Gauge, "pct_percent"),
            ("money", "$", Counter, "money_total"),
            ("custom", "widgets", Gauge, "custom_widgets"),
            ("custom", "foo/bar", Gauge, "custom_foo_per_bar"),
            ("a..b__c", "", Gauge, "a_b_c"),
            ("2xx.count", "", Counter, "_2xx_count_total"),
            ("ns:metric", "", Gauge, "ns:metric"),
            ("counter.ratio", "1", Counter, "counter_ratio_total"),
            ("héllo.wörld", "", Gauge, "h_llo_w_rld"),
            ("per.sec", "m/mo", Gauge, "per_sec_meters_per_month"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(metric_name(name, unit, *kind).as_deref(), Some(*want), "{name} [{unit}] {kind:?}");
        }
        assert_eq!(metric_name("", "s", Gauge), None);
        assert_eq!(metric_name("...", "", Gauge), None);
    }

    #[test]
    fn label_names_follow_the_spec() {
        assert_eq!(label_name("http.request.method").as_deref(), Some("http_request_method"));
        assert_eq!(label_name("service.instance.id").as_deref(), Some("service_instance_id"));
        assert_eq!(label_name("2xx").as_deref(), Some("key_2xx"));
        assert_eq!(label_name("_private").as_deref(), Some("key_private"));
        assert_eq!(label_name("__reserved").as_deref(), Some("__reserved"));
        assert_eq!(label_name("a/b-c").as_deref(), Some("a_b_c"));
        assert_eq!(label_name(""), None);
    }

    #[test]
    fn floats_format_like_prometheus() {
        assert_eq!(format_float(0.005), "0.005");
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(2.5), "2.5");
        assert_eq!(format_float(10000.0), "10000");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(0.99), "0.99");
    }

    #[test]
    fn prometheus_units() {
        assert_eq!(prometheus_unit("s"), "seconds");
        assert_eq!(prometheus_unit("By/s"), "bytes_per_second");
        assert_eq!(prometheus_unit("{request}"), "");
        assert_eq!(prometheus_unit("1"), "");
    }
}
