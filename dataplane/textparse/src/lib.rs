//! Prometheus' exposition formats, parsed (Prometheus' `model/textparse`
//! and `expfmt`, for the agent's scrape and push receivers):
//!
//! * [`parse_text`]: the text format 0.0.4 (`text/plain; version=0.0.4`);
//! * [`parse_openmetrics`]: OpenMetrics 1.0 text (exemplars, `# UNIT`,
//!   `_created`, timestamps in seconds, `# EOF`);
//! * [`model`]: the client data model (`io.prometheus.client.MetricFamily`):
//!   text families grouped into it as Pushgateway does, delimited protobuf
//!   bodies decoded, and a family rendered back to samples the way the
//!   Pushgateway's `/metrics` shows it.
//!
//! Errors name the line and the problem; nothing is partially accepted.

pub mod model;

use std::collections::HashMap;

/// A metric family's type (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    /// `untyped` (text format) or `unknown` (OpenMetrics), or no `# TYPE`.
    Unknown,
}

impl MetricType {
    fn parse(word: &str, openmetrics: bool) -> Option<MetricType> {
        Some(match word {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" if !openmetrics => MetricType::Unknown,
            "unknown" if openmetrics => MetricType::Unknown,
            "gaugehistogram" if openmetrics => MetricType::GaugeHistogram,
            "info" if openmetrics => MetricType::Info,
            "stateset" if openmetrics => MetricType::StateSet,
            _ => return None,
        })
    }

    /// The name Prometheus' metadata API uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }

    /// The type in remote write's metadata (`prometheus.MetricMetadata`).
    pub fn to_metadata(&self) -> strata_proto::prometheus::metric_metadata::MetricType {
        use strata_proto::prometheus::metric_metadata::MetricType as M;
        match self {
            MetricType::Counter => M::Counter,
            MetricType::Gauge => M::Gauge,
            MetricType::Histogram => M::Histogram,
            MetricType::GaugeHistogram => M::Gaugehistogram,
            MetricType::Summary => M::Summary,
            MetricType::Info => M::Info,
            MetricType::StateSet => M::Stateset,
            MetricType::Unknown => M::Unknown,
        }
    }

    /// The series-name suffixes a family of this type has ("" = the
    /// family's own name).
    fn suffixes(&self, openmetrics: bool) -> &'static [&'static str] {
        match (self, openmetrics) {
            (MetricType::Counter, false) => &[""],
            (MetricType::Counter, true) => &["_total", "_created"],
            (MetricType::Histogram, _) => &["_bucket", "_sum", "_count", "_created"],
            (MetricType::GaugeHistogram, _) => &["_bucket", "_gsum", "_gcount"],
            (MetricType::Summary, _) => &["", "_sum", "_count", "_created"],
            (MetricType::Info, _) => &["_info"],
            _ => &[""],
        }
    }
}

/// An exemplar attached to a sample (OpenMetrics).
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' metric name (`x_bucket` for a histogram `x`).
    pub name: String,
    /// Labels in the order given, without `__name__`.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the epoch, when the line carries one.
    pub timestamp_ms: Option<i64>,
    pub exemplar: Option<Exemplar>,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A metric family: its metadata and its samples, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: MetricType,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

impl Family {
    /// True for an OpenMetrics `_created` sample of this family (Prometheus
    /// drops them by default: they are not series of their own).
    pub fn is_created(&self, s: &Sample) -> bool {
        matches!(self.kind, MetricType::Counter | MetricType::Histogram | MetricType::Summary)
            && s.name.strip_suffix("_created") == Some(self.name.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Which parser a body needs, from its `Content-Type` (as Prometheus
/// negotiates; anything unknown is the text format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
    Protobuf,
}

impl Format {
    pub fn of_content_type(ct: Option<&str>) -> Format {
        let Some(ct) = ct else { return Format::Text };
        let lower = ct.to_ascii_lowercase();
        let media = lower.split(';').next().unwrap_or("").trim();
        match media {
            "application/openmetrics-text" => Format::OpenMetrics,
            "application/vnd.google.protobuf"
                if lower.contains("proto=io.prometheus.client.metricfamily")
                    && lower.contains("encoding=delimited") =>
            {
                Format::Protobuf
            }
            _ => Format::Text,
        }
    }
}

/// Parses the Prometheus text format 0.0.4.
pub fn parse_text(text: &str) -> Result<Vec<Family>, ParseError> {
    Parser::new(false).run(text)
}

/// Parses OpenMetrics 1.0 text (must end with `# EOF`).
pub fn parse_openmetrics(text: &str) -> Result<Vec<Family>, ParseError> {
    Parser::new(true).run(text)
}

struct Parser {
    openmetrics: bool,
    families: Vec<Family>,
    by_name: HashMap<String, usize>,
    typed: Vec<bool>,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// A valid Prometheus label name.
pub fn valid_label_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// A valid Prometheus metric name.
pub fn valid_metric_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty() && is_name_start(b[0]) && b.iter().all(|c| is_name_char(*c))
}

/// Parses a sample value as Go's `strconv.ParseFloat` accepts it.
pub fn parse_value(s: &str) -> Option<f64> {
    let word = s.trim_start_matches(['+', '-']).to_ascii_lowercase();
    let special = matches!(word.as_str(), "inf" | "infinity" | "nan");
    let plain = !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c));
    if special || plain { s.parse().ok() } else { None }
}

/// Formats a float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` (what
/// Prometheus' text format writes for values and `le`/`quantile` labels).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let sci = format!("{:e}", v.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if v < 0.0 {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    } else if exp < 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-exp - 1) as usize));
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.push_str(&"0".repeat(int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// A cursor over one line.
struct Line<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Line<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn blanks(&mut self) -> usize {
        let from = self.at;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
        self.at - from
    }

    fn name(&mut self) -> &'a str {
        let from = self.at;
        if self.peek().is_some_and(is_name_start) {
            while self.peek().is_some_and(is_name_char) {
                self.at += 1;
            }
        }
        std::str::from_utf8(&self.s[from..self.at]).unwrap_or("")
    }

    fn token(&mut self) -> &'a str {
        let from = self.at;
        while self.peek().is_some_and(|c| c != b' ' && c != b'\t') {
            self.at += 1;
        }
        std::str::from_utf8(&self.s[from..self.at]).unwrap_or("")
    }

    fn rest(&self) -> &'a str {
        std::str::from_utf8(&self.s[self.at..]).unwrap_or("")
    }

    /// `{name="value",…}` (the `{` already seen).
    fn labels(&mut self) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        loop {
            self.blanks();
            if self.peek() == Some(b'}') {
                self.at += 1;
                return Ok(out);
            }
            let name = self.name();
            if name.is_empty() || name.contains(':') {
                return Err(format!("invalid label name at {:?}", self.rest()));
            }
            self.blanks();
            if self.peek() != Some(b'=') {
                return Err(format!("expected '=' after label name {name:?}"));
            }
            self.at += 1;
            self.blanks();
            if self.peek() != Some(b'"') {
                return Err(format!("expected '\"' to open the value of label {name:?}"));
            }
            self.at += 1;
            let value = self.quoted().map_err(|m| format!("label {name:?}: {m}"))?;
            if out.iter().any(|(n, _)| n == name) {
                return Err(format!("duplicate label name {name:?}"));
            }
            out.push((name.to_string(), value));
            self.blanks();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected ',' or '}}' after the value of label {name:?}")),
            }
        }
    }

    /// A label value up to its closing quote (escapes `\\`, `\"`, `\n`).
    fn quoted(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        loop {
            match self.peek() {
                None => return Err("value not closed".into()),
                Some(b'"') => {
                    self.at += 1;
                    return String::from_utf8(buf).map_err(|_| "value is not UTF-8".into());
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(b'\\') => buf.push(b'\\'),
                        Some(b'"') => buf.push(b'"'),
                        Some(b'n') => buf.push(b'\n'),
                        other => {
                            return Err(format!(
                                "invalid escape sequence '\\{}'",
                                other.map(char::from).unwrap_or(' ')
                            ));
                        }
                    }
                    self.at += 1;
                }
                Some(c) => {
                    buf.push(c);
                    self.at += 1;
                }
            }
        }
    }
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Parser {
    fn new(openmetrics: bool) -> Parser {
        Parser { openmetrics, families: Vec::new(), by_name: HashMap::new(), typed: Vec::new() }
    }

    fn family(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        self.families.push(Family {
            name: name.to_string(),
            kind: MetricType::Unknown,
            help: None,
            unit: None,
            samples: Vec::new(),
        });
        self.typed.push(false);
        self.by_name.insert(name.to_string(), self.families.len() - 1);
        self.families.len() - 1
    }

    /// The family a series name belongs to: a typed family whose suffixes
    /// produce it, else a family of that exact name, else a new one.
    fn family_of_series(&mut self, name: &str) -> usize {
        for suffix in ["_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount", "_info", ""] {
            let Some(base) = name.strip_suffix(suffix) else { continue };
            if let Some(&i) = self.by_name.get(base)
                && self.typed[i]
                && self.families[i].kind.suffixes(self.openmetrics).contains(&suffix)
            {
                return i;
            }
        }
        self.family(name)
    }

    fn run(mut self, text: &str) -> Result<Vec<Family>, ParseError> {
        let mut eof = false;
        let lines: Vec<&str> = text.split('\n').collect();
        let n = lines.len();
        for (i, raw) in lines.into_iter().enumerate() {
            let lineno = i + 1;
            let err = |message: String| ParseError { line: lineno, message };
            if self.openmetrics {
                if eof {
                    if raw.is_empty() && i + 1 == n {
                        break;
                    }
                    return Err(err("content after # EOF".into()));
                }
                if raw.is_empty() {
                    if i + 1 == n {
                        break;
                    }
                    return Err(err("empty line (OpenMetrics allows none)".into()));
                }
            }
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let mut line = Line { s: raw.as_bytes(), at: 0 };
            if !self.openmetrics {
                line.blanks();
                if line.peek().is_none() {
                    continue;
                }
            }
            if line.peek() == Some(b'#') {
                line.at += 1;
                if self.openmetrics {
                    if line.rest() == " EOF" {
                        eof = true;
                        continue;
                    }
                    if line.peek() != Some(b' ') {
                        return Err(err(format!("invalid comment {raw:?}")));
                    }
                }
                line.blanks();
                let keyword = line.token();
                if !matches!(keyword, "HELP" | "TYPE" | "UNIT") || (keyword == "UNIT" && !self.openmetrics) {
                    if self.openmetrics {
                        return Err(err(format!("invalid comment {raw:?} (only # HELP, # TYPE, # UNIT, # EOF)")));
                    }
                    continue;
                }
                if line.blanks() == 0 {
                    if self.openmetrics {
                        return Err(err(format!("# {keyword} without a metric name")));
                    }
                    continue;
                }
                let name = line.name();
                if name.is_empty() {
                    return Err(err(format!("invalid metric name in # {keyword} line {raw:?}")));
                }
                let rest = match line.blanks() {
                    0 if line.peek().is_some() => {
                        return Err(err(format!("invalid metric name in # {keyword} line {raw:?}")));
                    }
                    _ => line.rest(),
                };
                let idx = self.family(name);
                match keyword {
                    "HELP" => {
                        if self.families[idx].help.is_some() {
                            return Err(err(format!("second HELP line for metric name {name:?}")));
                        }
                        self.families[idx].help = Some(unescape_help(rest));
                    }
                    "TYPE" => {
                        let Some(kind) = MetricType::parse(rest.trim_end(), self.openmetrics) else {
                            return Err(err(format!("unknown metric type {:?} for {name:?}", rest.trim_end())));
                        };
                        if self.typed[idx] || !self.families[idx].samples.is_empty() {
                            return Err(err(format!(
                                "second TYPE line for metric name {name:?}, or TYPE reported after samples"
                            )));
                        }
                        self.families[idx].kind = kind;
                        self.typed[idx] = true;
                    }
                    _ => {
                        if !name.ends_with(&format!("_{rest}")) && !rest.is_empty() {
                            return Err(err(format!("unit {rest:?} is not a suffix of metric name {name:?}")));
                        }
                        self.families[idx].unit = Some(rest.to_string());
                    }
                }
                continue;
            }
            let sample = self.sample(&mut line).map_err(err)?;
            let idx = self.family_of_series(&sample.name);
            let fam = &self.families[idx];
            if self.openmetrics
                && fam.kind == MetricType::Counter
                && !sample.name.ends_with("_total")
                && !fam.is_created(&sample)
            {
                return Err(err(format!("counter sample {:?} does not end in _total", sample.name)));
            }
            self.families[idx].samples.push(sample);
        }
        if self.openmetrics && !eof {
            return Err(ParseError { line: n, message: "OpenMetrics text does not end with # EOF".into() });
        }
        Ok(self
            .families
            .into_iter()
            .filter(|f| !f.samples.is_empty() || f.help.is_some() || f.unit.is_some())
            .collect())
    }

    fn sample(&self, line: &mut Line) -> Result<Sample, String> {
        let name = line.name();
        if name.is_empty() {
            return Err(format!("invalid metric name at {:?}", line.rest()));
        }
        // The text format allows blanks between the name and its labels.
        let mut gap = if self.openmetrics { 0 } else { line.blanks() };
        let labels = if line.peek() == Some(b'{') {
            line.at += 1;
            gap = 0;
            line.labels()?
        } else {
            Vec::new()
        };
        gap += line.blanks();
        if gap == 0 || line.peek().is_none() {
            return Err(format!("expected a value after {name:?}"));
        }
        let vtext = line.token();
        let value = parse_value(vtext).ok_or_else(|| format!("invalid value {vtext:?} of {name:?}"))?;
        let mut sample = Sample { name: name.to_string(), labels, value, timestamp_ms: None, exemplar: None };
        let blanks = line.blanks();
        if line.peek().is_none() {
            return Ok(sample);
        }
        if blanks == 0 {
            return Err(format!("unexpected {:?} after the value of {name:?}", line.rest()));
        }
        if line.peek() != Some(b'#') {
            let t = line.token();
            sample.timestamp_ms =
                Some(self.timestamp(t).ok_or_else(|| format!("invalid timestamp {t:?} of {name:?}"))?);
            let blanks = line.blanks();
            if line.peek().is_none() {
                return Ok(sample);
            }
            if blanks == 0 || line.peek() != Some(b'#') {
                return Err(format!("unexpected {:?} after the timestamp of {name:?}", line.rest()));
            }
        }
        if !self.openmetrics {
            return Err(format!("unexpected {:?} after the value of {name:?}", line.rest()));
        }
        // OpenMetrics exemplar: ` # {labels} value [timestamp]`.
        line.at += 1;
        line.blanks();
        if line.peek() != Some(b'{') {
            return Err(format!("invalid exemplar of {name:?}: expected '{{'"));
        }
        line.at += 1;
        let labels = line.labels().map_err(|m| format!("exemplar of {name:?}: {m}"))?;
        let runes: usize = labels.iter().map(|(n, v)| n.chars().count() + v.chars().count()).sum();
        if runes > 128 {
            return Err(format!("exemplar of {name:?} has {runes} characters of labels, over OpenMetrics' 128"));
        }
        line.blanks();
        let vtext = line.token();
        let value = parse_value(vtext).ok_or_else(|| format!("invalid exemplar value {vtext:?} of {name:?}"))?;
        line.blanks();
        let timestamp_ms = match line.token() {
            "" => None,
            t => Some(self.timestamp(t).ok_or_else(|| format!("invalid exemplar timestamp {t:?} of {name:?}"))?),
        };
        line.blanks();
        if line.peek().is_some() {
            return Err(format!("unexpected {:?} after the exemplar of {name:?}", line.rest()));
        }
        sample.exemplar = Some(Exemplar { labels, value, timestamp_ms });
        Ok(sample)
    }

    /// Text format: integer milliseconds; OpenMetrics: float seconds.
    fn timestamp(&self, t: &str) -> Option<i64> {
        if self.openmetrics {
            let s: f64 = t.parse().ok().filter(|v: &f64| v.is_finite())?;
            Some((s * 1000.0).round() as i64)
        } else {
            t.parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &Sample) -> Vec<(&str, &str)> {
        s.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }

    #[test]
    fn parses_the_text_format_with_families_escapes_and_timestamps() {
        let text = "# HELP http_requests_total The total.\\nSecond line \\\\ here\n\
# TYPE http_requests_total counter\n\
http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
http_requests_total{method=\"post\",code=\"400\",} 3\n\
\n\
  # a comment\n\
msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
metric_without_timestamp_and_labels 12.47\n\
# TYPE rpc_duration_seconds summary\n\
rpc_duration_seconds{quantile=\"0.5\"} 4773\n\
rpc_duration_seconds_sum 1.7560473e+07\n\
rpc_duration_seconds_count 2693\n\
# TYPE h histogram\n\
h_bucket{le=\"0.05\"} 24054\n\
h_bucket{le=\"+Inf\"} 144320\n\
h_sum 53423\n\
h_count 144320\n\
nan_value NaN\n\
neg -Inf\n";
        let f = parse_text(text).unwrap();
        let names: Vec<(&str, MetricType, usize)> =
            f.iter().map(|f| (f.name.as_str(), f.kind, f.samples.len())).collect();
        assert_eq!(
            names,
            vec![
                ("http_requests_total", MetricType::Counter, 2),
                ("msdos_file_access_time_seconds", MetricType::Unknown, 1),
                ("metric_without_timestamp_and_labels", MetricType::Unknown, 1),
                ("rpc_duration_seconds", MetricType::Summary, 3),
                ("h", MetricType::Histogram, 4),
                ("nan_value", MetricType::Unknown, 1),
                ("neg", MetricType::Unknown, 1),
            ]
        );
        assert_eq!(f[0].help.as_deref(), Some("The total.\nSecond line \\ here"));
        assert_eq!(f[0].samples[0].timestamp_ms, Some(1_395_066_363_000));
        assert_eq!(labels(&f[0].samples[1]), vec![("method", "post"), ("code", "400")]);
        assert_eq!(
            labels(&f[1].samples[0]),
            vec![("path", "C:\\DIR\\FILE.TXT"), ("error", "Cannot find file:\n\"FILE.TXT\"")]
        );
        assert_eq!(f[1].samples[0].value, 1.458255915e9);
        assert_eq!(f[4].samples[1].value, 144320.0);
        assert!(f[5].samples[0].value.is_nan());
        assert_eq!(f[6].samples[0].value, f64::NEG_INFINITY);
    }

    #[test]
    fn bad_text_names_the_line_and_the_problem() {
        for (text, line, want) in [
            ("a 1\nb{x=\"1\" 2\n", 2, "expected ',' or '}'"),
            ("a{x=\"1\",x=\"2\"} 1\n", 1, "duplicate label name \"x\""),
            ("a one\n", 1, "invalid value \"one\""),
            ("a 1 2 3\n", 1, "unexpected \"3\""),
            ("a 1 1.5\n", 1, "invalid timestamp"),
            ("# TYPE a counter\n# TYPE a gauge\n", 2, "second TYPE line"),
            ("a 1\n# TYPE a counter\n", 2, "TYPE reported after samples"),
            ("# TYPE a countr\n", 1, "unknown metric type \"countr\""),
            ("# HELP a x\n# HELP a y\n", 2, "second HELP line"),
            ("a{x=\"\\q\"} 1\n", 1, "invalid escape sequence"),
            ("1a 1\n", 1, "invalid metric name"),
            ("a{1x=\"y\"} 1\n", 1, "invalid label name"),
            ("a{x=\"y} 1\n", 1, "not closed"),
            ("a\n", 1, "expected a value"),
        ] {
            let e = parse_text(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn parses_openmetrics_with_exemplars_units_and_created() {
        let text = "# TYPE foo counter\n\
# HELP foo Foos.\n\
foo_total{a=\"b\"} 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67 1520879602.1\n\
foo_created{a=\"b\"} 1520430000.123\n\
# TYPE lat_seconds histogram\n\
# UNIT lat_seconds seconds\n\
lat_seconds_bucket{le=\"0.1\"} 8 # {id=\"x\"} 0.05\n\
lat_seconds_bucket{le=\"+Inf\"} 10\n\
lat_seconds_count 10\n\
lat_seconds_sum 2.5\n\
# TYPE build info\n\
build_info{version=\"1\"} 1\n\
# EOF\n";
        let f = parse_openmetrics(text).unwrap();
        assert_eq!(f.len(), 3);
        let foo = &f[0];
        assert_eq!((foo.name.as_str(), foo.kind, foo.samples.len()), ("foo", MetricType::Counter, 2));
        assert_eq!(foo.samples[0].timestamp_ms, Some(1_520_879_607_789));
        let ex = foo.samples[0].exemplar.as_ref().unwrap();
        assert_eq!((ex.value, ex.timestamp_ms), (0.67, Some(1_520_879_602_100)));
        assert_eq!(ex.labels, vec![("trace_id".to_string(), "KOO5S4vxi0o".to_string())]);
        assert!(foo.is_created(&foo.samples[1]) && !foo.is_created(&foo.samples[0]));
        assert_eq!(f[1].unit.as_deref(), Some("seconds"));
        assert_eq!(f[1].samples[0].exemplar.as_ref().unwrap().timestamp_ms, None);
        assert_eq!((f[2].name.as_str(), f[2].kind), ("build", MetricType::Info));
        for (text, want) in [
            ("a 1\n", "does not end with # EOF"),
            ("a 1\n# EOF\nb 2\n", "content after # EOF"),
            ("a 1\n\n# EOF\n", "empty line"),
            ("# TYPE c counter\nc 1\n# EOF\n", "does not end in _total"),
            ("# TYPE c_seconds gauge\n# UNIT c_seconds bytes\n# EOF\n", "not a suffix"),
            ("a 1 # {x=\"y\"}\n# EOF\n", "invalid exemplar value"),
        ] {
            let e = parse_openmetrics(text).unwrap_err();
            assert!(e.message.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn formats_floats_like_go() {
        for (v, want) in [
            (1.0, "1"),
            (0.5, "0.5"),
            (0.005, "0.005"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (2.5e-7, "2.5e-07"),
            (-3.25, "-3.25"),
            (1e21, "1e+21"),
            (123.456, "123.456"),
            (f64::INFINITY, "+Inf"),
            (0.0, "0"),
        ] {
            assert_eq!(go_float(v), want, "{v}");
        }
    }

    #[test]
    fn content_types_pick_the_parser() {
        assert_eq!(Format::of_content_type(Some("text/plain; version=0.0.4; charset=utf-8")), Format::Text);
        assert_eq!(Format::of_content_type(Some("application/openmetrics-text; version=1.0.0")), Format::OpenMetrics);
        assert_eq!(
            Format::of_content_type(Some(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            )),
            Format::Protobuf
        );
        assert_eq!(Format::of_content_type(None), Format::Text);
    }
}
