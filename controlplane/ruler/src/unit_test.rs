//! `strata ruler test`: rule unit tests in `promtool test rules` format,
//! evaluated the way promtool evaluates them (every group at each
//! evaluation step from time 0 over an in-memory storage that receives the
//! recording rules' results; alert tests see firing alerts only; PromQL
//! tests run after the rules), with promtool's output and exit codes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use strata_promql::{Engine, EngineOptions, Labels, MemoryStorage, QueryValue, Series};

use crate::alerting::{AlertState, AlertingRule, Context, LabelSet};
use crate::rule_file::{self, Rule, parse_duration};
use crate::template::QuerySample;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<PromqlTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromqlTest {
    expr: String,
    eval_time: String,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    value: f64,
}

/// Runs every file, printing as promtool does; the exit code (0: all
/// passed, 1: a test failed or a file could not be read). As promtool,
/// failures go to `err`, the rest to `out`.
pub fn run_files(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut code = 0;
    for f in files {
        let _ = writeln!(out, "Unit Testing:  {}", f.display());
        match run_file(f) {
            Ok(errs) if errs.is_empty() => {
                let _ = writeln!(out, "  SUCCESS");
            }
            Ok(errs) | Err(errs) => {
                code = 1;
                // promtool's layout: the failures on standard error, a
                // blank line on standard output after each.
                let _ = writeln!(err, "  FAILED:");
                for e in errs {
                    let _ = writeln!(err, "{e}");
                    let _ = writeln!(out);
                }
            }
        }
        let _ = writeln!(out);
    }
    code
}

/// Prometheus' `model.Duration` as text (`4m`, `1h30m`, `1d`, `500ms`).
pub fn prom_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("y", 31_536_000_000u64),
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        let n = ms / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            ms -= n * size;
        }
    }
    out
}

/// promtool's expanding notation: `a+bxn`, `a-bxn`, `axn`, `_`, `_xn`,
/// `stale`, numbers (`Inf`, `NaN`); `None` is a missing sample.
pub fn expand_values(s: &str) -> Result<Vec<Option<f64>>, String> {
    let num = |t: &str| -> Result<f64, String> {
        match t {
            "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
            "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
            "NaN" | "nan" => Ok(f64::NAN),
            "stale" => Ok(f64::from_bits(strata_promql::STALE_NAN_BITS)),
            _ => t.parse::<f64>().map_err(|_| format!("invalid value {t:?}")),
        }
    };
    let mut out = Vec::new();
    for tok in s.split_whitespace() {
        if tok.starts_with('{') {
            return Err(format!("native histogram notation is not supported: {tok:?}"));
        }
        let (base, times) = match tok.rsplit_once('x') {
            Some((b, n)) if !b.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
                (b, Some(n.parse::<usize>().map_err(|_| format!("invalid repeat in {tok:?}"))?))
            }
            _ => (tok, None),
        };
        let Some(n) = times else {
            out.push(if base == "_" { None } else { Some(num(base)?) });
            continue;
        };
        if base == "_" {
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        // a+b or a-b (the sign after the first character).
        let split = base.char_indices().skip(1).find(|(_, c)| *c == '+' || *c == '-').map(|(i, _)| i);
        match split {
            Some(i) if !base[..i].ends_with(['e', 'E']) => {
                let a = num(&base[..i])?;
                let b = num(&base[i + 1..])?;
                let b = if &base[i..i + 1] == "-" { -b } else { b };
                out.extend((0..=n).map(|k| Some(a + b * k as f64)));
            }
            _ => {
                let a = num(base)?;
                out.extend(std::iter::repeat_n(Some(a), n + 1));
            }
        }
    }
    Ok(out)
}

fn series_labels(sel: &str) -> Result<LabelSet, String> {
    use promql_parser::parser::Expr;
    let expr = promql_parser::parser::parse(sel).map_err(|e| format!("invalid series {sel:?}: {e}"))?;
    let Expr::VectorSelector(vs) = expr else { return Err(format!("invalid series {sel:?}: not a selector")) };
    let mut l = LabelSet::new();
    if let Some(n) = vs.name {
        l.insert("__name__".into(), n);
    }
    for m in vs.matchers.matchers {
        l.insert(m.name, m.value);
    }
    Ok(l)
}

fn labels_string(l: &LabelSet) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn indent(s: &str, by: &str) -> String {
    s.replace('\n', &format!("\n{by}"))
}

fn run_file(path: &Path) -> Result<Vec<String>, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("  {}: {e}", path.display())])?;
    let tf: TestFile = serde_yaml::from_str(&text).map_err(|e| vec![format!("  {}: {e}", path.display())])?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let eval_interval = match tf.evaluation_interval.as_deref() {
        Some(s) => parse_duration(s).map_err(|e| vec![format!("  evaluation_interval: {e}")])?,
        None => Duration::from_secs(60),
    };
    let mut groups = Vec::new();
    for rf in &tf.rule_files {
        let full = if Path::new(rf).is_absolute() { PathBuf::from(rf) } else { dir.join(rf) };
        let mut matched: Vec<PathBuf> =
            glob::glob(&full.to_string_lossy()).map_err(|e| vec![format!("  {e}")])?.filter_map(Result::ok).collect();
        matched.sort();
        if matched.is_empty() {
            return Err(vec![format!("  {}: no such file", full.display())]);
        }
        for f in matched {
            groups.extend(rule_file::load(&f, eval_interval)?);
        }
    }
    if !tf.group_eval_order.is_empty() {
        let mut ordered = Vec::new();
        for name in &tf.group_eval_order {
            match groups.iter().position(|g| &g.name == name) {
                Some(i) => ordered.push(groups.remove(i)),
                None => {
                    return Err(vec![format!(
                        "  group name {name:?} in group_eval_order not found among the rule files"
                    )]);
                }
            }
        }
        ordered.append(&mut groups);
        groups = ordered;
    }
    let mut errs = Vec::new();
    for (i, t) in tf.tests.iter().enumerate() {
        match run_test(t, &groups, eval_interval) {
            Ok(e) => errs.extend(e),
            Err(e) => errs.push(format!("    test {i}: {e}")),
        }
    }
    Ok(errs)
}

type SeriesKey = Vec<(String, String)>;

struct Store {
    series: BTreeMap<SeriesKey, Vec<(i64, f64)>>,
}

impl Store {
    fn add(&mut self, l: &LabelSet, t: i64, v: f64) {
        let s = self.series.entry(l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).or_default();
        match s.last() {
            Some((lt, _)) if *lt >= t => {
                if let Some(pos) = s.iter().position(|(st, _)| *st == t) {
                    s[pos].1 = v;
                }
            }
            _ => s.push((t, v)),
        }
    }

    fn storage(&self) -> MemoryStorage {
        let mut m = MemoryStorage::new();
        for (l, samples) in &self.series {
            m.add(Series::floats(Labels::new(l.clone()), samples.clone()));
        }
        m
    }
}

fn instant(engine: &Engine, storage: &MemoryStorage, expr: &str, t: i64) -> Result<Vec<(LabelSet, f64)>, String> {
    let e = promql_parser::parser::parse(expr).map_err(|e| e.to_string())?;
    match engine.instant(storage, &e, t).map_err(|e| e.to_string())? {
        QueryValue::Vector(v) => Ok(v
            .into_iter()
            .map(|s| (s.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), s.v))
            .collect()),
        QueryValue::Scalar { v, .. } => Ok(vec![(LabelSet::new(), v)]),
        other => Err(format!("rule result is not a vector or scalar: {}", other.result_type())),
    }
}

enum TestRule {
    Recording { name: String, expr: String, labels: LabelSet },
    Alerting(AlertingRule),
}

fn run_test(t: &TestGroup, groups: &[rule_file::Group], eval_interval: Duration) -> Result<Vec<String>, String> {
    let interval = match t.interval.as_deref() {
        Some(s) => parse_duration(s)?,
        None => eval_interval,
    };
    let mut store = Store { series: BTreeMap::new() };
    for s in &t.input_series {
        let l = series_labels(&s.series)?;
        for (k, v) in expand_values(&s.values)?.into_iter().enumerate() {
            if let Some(v) = v {
                store.add(&l, k as i64 * interval.as_millis() as i64, v);
            }
        }
    }
    let engine = Engine::new(EngineOptions::default());
    let mut rules: Vec<(Duration, Vec<TestRule>)> = groups
        .iter()
        .map(|g| {
            let rules = g
                .rules
                .iter()
                .map(|r| match r {
                    Rule::Recording { name, expr, labels } => {
                        TestRule::Recording { name: name.clone(), expr: expr.clone(), labels: labels.clone() }
                    }
                    Rule::Alerting(spec) => TestRule::Alerting(AlertingRule::new(spec.clone())),
                })
                .collect();
            (g.interval, rules)
        })
        .collect();
    let mut alert_tests: Vec<(i64, &AlertTest)> = Vec::new();
    for a in &t.alert_rule_test {
        alert_tests.push((parse_duration(&a.eval_time)?.as_millis() as i64, a));
    }
    alert_tests.sort_by_key(|(t, _)| *t);
    let mut max_t = alert_tests.last().map(|(t, _)| *t).unwrap_or(0);
    for p in &t.promql_expr_test {
        max_t = max_t.max(parse_duration(&p.eval_time)?.as_millis() as i64);
    }
    let step = eval_interval.as_millis().max(1) as i64;
    let mut errs = Vec::new();
    let mut next_alert = 0;
    let mut ts = 0i64;
    while ts <= max_t {
        for (giv, rs) in rules.iter_mut() {
            if ts % (giv.as_millis().max(1) as i64) != 0 {
                continue;
            }
            for r in rs.iter_mut() {
                let storage = store.storage();
                match r {
                    TestRule::Recording { name, expr, labels } => {
                        let Ok(rows) = instant(&engine, &storage, expr, ts) else { continue };
                        for (mut l, v) in rows {
                            l.insert("__name__".into(), name.clone());
                            l.extend(labels.clone());
                            store.add(&l, ts, v);
                        }
                    }
                    TestRule::Alerting(a) => {
                        let Ok(rows) = instant(&engine, &storage, &a.spec.expr.clone(), ts) else { continue };
                        let query = |q: &str| -> Result<Vec<QuerySample>, String> {
                            Ok(instant(&engine, &storage, q, ts)?
                                .into_iter()
                                .map(|(labels, value)| QuerySample { labels, value })
                                .collect())
                        };
                        let ctx = Context {
                            external_labels: &t.external_labels,
                            external_url: &t.external_url,
                            query: &query,
                        };
                        if let Ok(out) = a.eval(ts, rows, 0, &ctx) {
                            for (l, v) in out {
                                store.add(&l, ts, v);
                            }
                        }
                    }
                }
            }
        }
        while next_alert < alert_tests.len() && alert_tests[next_alert].0 < ts + step {
            let (at, test) = alert_tests[next_alert];
            next_alert += 1;
            let mut got: Vec<(LabelSet, LabelSet)> = Vec::new();
            for (_, rs) in &rules {
                for r in rs {
                    if let TestRule::Alerting(a) = r
                        && a.spec.name == test.alertname
                    {
                        got.extend(
                            a.active
                                .values()
                                .filter(|x| x.state == AlertState::Firing)
                                .map(|x| (x.labels.clone(), x.annotations.clone())),
                        );
                    }
                }
            }
            let mut exp: Vec<(LabelSet, LabelSet)> = test
                .exp_alerts
                .iter()
                .map(|e| {
                    let mut l = e.exp_labels.clone();
                    l.insert("alertname".into(), test.alertname.clone());
                    (l, e.exp_annotations.clone())
                })
                .collect();
            got.sort();
            exp.sort();
            if got != exp {
                let show = |v: &[(LabelSet, LabelSet)]| -> String {
                    if v.is_empty() {
                        return "[]".into();
                    }
                    let items: Vec<String> = v
                        .iter()
                        .enumerate()
                        .map(|(i, (l, a))| {
                            format!(
                                "{i}:{}",
                                indent(
                                    &format!("\nLabels:{}\nAnnotations:{}", labels_string(l), labels_string(a)),
                                    "  "
                                )
                            )
                        })
                        .collect();
                    format!("[\n{}\n]", items.join(",\n"))
                };
                errs.push(format!(
                    "    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                    test.alertname,
                    prom_duration(Duration::from_millis(at as u64)),
                    indent(&show(&exp), "            "),
                    indent(&show(&got), "            ")
                ));
            }
        }
        ts += step;
    }
    let storage = store.storage();
    for p in &t.promql_expr_test {
        let at = parse_duration(&p.eval_time)?.as_millis() as i64;
        let when = prom_duration(Duration::from_millis(at as u64));
        let mut got = match instant(&engine, &storage, &p.expr, at) {
            Ok(g) => g,
            Err(e) => {
                errs.push(format!("    expr: {:?}, time: {when}, err: {e}", p.expr));
                continue;
            }
        };
        let mut exp = Vec::new();
        for s in &p.exp_samples {
            let l = if s.labels.trim().is_empty() { LabelSet::new() } else { series_labels(&s.labels)? };
            exp.push((l, s.value));
        }
        got.sort_by(|a, b| a.0.cmp(&b.0));
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        let same = got.len() == exp.len()
            && got.iter().zip(&exp).all(|(g, e)| {
                g.0 == e.0
                    && (g.1 == e.1
                        || (g.1.is_nan() && e.1.is_nan())
                        || ((g.1 - e.1).abs() <= 1e-9 * e.1.abs().max(1e-300)))
            });
        if !same {
            let show = |v: &[(LabelSet, f64)]| -> String {
                if v.is_empty() {
                    return "nil".into();
                }
                v.iter()
                    .map(|(l, x)| format!("{} {}", labels_string(l), crate::gofmt::format_e(*x, None).to_uppercase()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            errs.push(format!(
                "    expr: {:?}, time: {when},\n        exp: {}\n        got: {}",
                p.expr,
                show(&exp),
                show(&got)
            ));
        }
    }
    if !t.name.is_empty() && !errs.is_empty() {
        errs.insert(0, format!("    name: {},", t.name));
    }
    Ok(errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanding_notation_as_promtool() {
        assert_eq!(expand_values("1+1x3").unwrap(), vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0)]);
        assert_eq!(expand_values("10-2x2").unwrap(), vec![Some(10.0), Some(8.0), Some(6.0)]);
        assert_eq!(
            expand_values("5x2 _ _x2 7").unwrap(),
            vec![Some(5.0), Some(5.0), Some(5.0), None, None, None, Some(7.0)]
        );
        assert_eq!(expand_values("-1+1x1").unwrap(), vec![Some(-1.0), Some(0.0)]);
        assert!(expand_values("1+x").is_err());
        assert!(expand_values("stale").unwrap()[0].is_some_and(strata_promql::is_stale_nan));
    }

    #[test]
    fn durations_print_as_prometheus() {
        assert_eq!(prom_duration(Duration::from_secs(600)), "10m");
        assert_eq!(prom_duration(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(prom_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(prom_duration(Duration::ZERO), "0s");
    }
}
