//! PromQL functions.

use promql_parser::parser::{Call, Expr, VectorSelector};

use std::sync::Arc;

use crate::eval::{Ctx, Hist, Matrix, SeriesBuilder, StepSeries, Value};
use crate::histogram::ResetHint;
use crate::labels::{Labels, METRIC_NAME, is_valid_label_name};
use crate::storage::selector_matchers;
use crate::{Error, FloatHistogram};

/// Kahan-Babuška compensated summation step, as Prometheus does it.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus' `quantile` over a set of values (linear interpolation).
pub(crate) fn quantile(q: f64, values: &[f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = v.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    v[lower as usize] * (1.0 - weight) + v[upper as usize] * weight
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

fn metric_name(l: &Labels) -> &str {
    l.get("__name__").unwrap_or("")
}

/// Annotations for a range of floats and histograms: `mixed_warns` functions
/// cannot combine them (warning); the others ignore the histograms (info).
fn annotate_mixed_ranges(ctx: &Ctx<'_>, m: &Matrix, mixed_warns: bool) {
    for s in m.series.iter().filter(|s| !s.samples.is_empty() && !s.hists.is_empty()) {
        let metric = metric_name(&s.labels);
        if mixed_warns {
            ctx.warn(format_args!("encountered a mix of histograms and floats for metric name {metric:?}"));
        } else {
            ctx.info(format_args!(
                "ignored histograms in a range containing both floats and histograms for metric name {metric:?}"
            ));
        }
    }
}

/// Warnings for the two last points `irate` (`rate`) or `idelta` uses.
fn annotate_instant_pair(ctx: &Ctx<'_>, rate: bool, metric: &str, p0: &Point, p1: &Point) {
    match (p0, p1) {
        (Point::H(a), Point::H(b)) => {
            let custom = |h: &FloatHistogram| h.schema == crate::histogram::CUSTOM_BUCKETS_SCHEMA;
            // irate after a counter reset takes the last histogram as it is: nothing to subtract.
            let subtracts = !rate || !b.detect_reset(a);
            if subtracts && custom(a) != custom(b) {
                ctx.warn(format_args!(
                    "vector contains a mix of histograms with exponential and custom buckets schemas for metric name {metric:?}"
                ));
            } else if subtracts && custom(a) && a.custom_values != b.custom_values {
                ctx.warn(format_args!(
                    "vector contains histograms with incompatible custom buckets for metric name {metric:?}"
                ));
            }
            let gauge = |h: &FloatHistogram| h.reset_hint == ResetHint::Gauge;
            if rate && (gauge(a) || gauge(b)) {
                ctx.warn(format_args!("this native histogram metric is not a counter: {metric:?}"));
            }
            if !rate && (!gauge(a) || !gauge(b)) {
                ctx.warn(format_args!("this native histogram metric is not a gauge: {metric:?}"));
            }
        }
        (Point::F(_), Point::F(_)) => {}
        _ => ctx.warn(format_args!("encountered a mix of histograms and floats for metric name {metric:?}")),
    }
}

pub(crate) fn eval(ctx: &Ctx<'_>, c: &Call, ts: &[i64]) -> Result<Value, Error> {
    let name = c.func.name;
    let args = &c.args.args;
    let steps = ts.len();
    let arg = |i: usize| -> Result<Value, Error> {
        match args.get(i) {
            Some(a) => ctx.eval(a, ts),
            None => Err(Error::BadData(format!("missing argument {i} to {name}"))),
        }
    };
    let scalar_arg = |i: usize| -> Result<Vec<f64>, Error> {
        match arg(i)? {
            Value::Scalar(v) => Ok(v),
            _ => Err(Error::BadData(format!("expected scalar argument {i} to {name}"))),
        }
    };
    let string_arg = |i: usize| -> Result<String, Error> {
        match arg(i)? {
            Value::String(s) => Ok(s),
            _ => Err(Error::BadData(format!("expected string argument {i} to {name}"))),
        }
    };
    let vector_arg = |i: usize| -> Result<Vec<StepSeries>, Error> {
        match arg(i)? {
            Value::Vector(v) => Ok(v),
            _ => Err(Error::BadData(format!("expected instant vector argument {i} to {name}"))),
        }
    };
    let matrix_arg = |i: usize| -> Result<Matrix, Error> {
        match arg(i)? {
            Value::Matrix(m) => Ok(m),
            _ => Err(Error::BadData(format!("expected range vector argument {i} to {name}"))),
        }
    };
    match name {
        "time" => Ok(Value::Scalar(ts.iter().map(|&t| t as f64 / 1000.0).collect())),
        "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; steps])),
        "vector" => {
            let v = scalar_arg(0)?;
            Ok(Value::Vector(vec![StepSeries::floats(Labels::default(), v.into_iter().map(Some).collect(), false)]))
        }
        "scalar" => {
            let v = vector_arg(0)?;
            let out = (0..steps)
                .map(|i| {
                    let mut it = v.iter().filter_map(|s| s.vals[i]);
                    match (it.next(), it.next()) {
                        (Some(x), None) => x,
                        _ => f64::NAN,
                    }
                })
                .collect();
            Ok(Value::Scalar(out))
        }
        "timestamp" => {
            if let Some(Expr::VectorSelector(vs)) = args.first().map(|a| unwrap_parens(a)) {
                let mut times = Vec::new();
                let mut series = ctx.instant_selector(vs, ts, Some(&mut times))?;
                for (s, t) in series.iter_mut().zip(times) {
                    for (i, t) in t.into_iter().enumerate() {
                        if s.present(i) {
                            s.vals[i] = Some(t as f64 / 1000.0);
                        }
                    }
                    s.hists = Vec::new();
                    s.drop_name = true;
                }
                Ok(Value::Vector(series))
            } else {
                let mut series = vector_arg(0)?;
                for s in series.iter_mut() {
                    for (i, &t) in ts.iter().enumerate() {
                        if s.present(i) {
                            s.vals[i] = Some(t as f64 / 1000.0);
                        }
                    }
                    s.hists = Vec::new();
                    s.drop_name = true;
                }
                Ok(Value::Vector(series))
            }
        }
        "absent" => {
            let v = vector_arg(0)?;
            let labels = absent_labels(args.first().map(|a| a.as_ref()));
            let vals: Vec<Option<f64>> = (0..steps).map(|i| (!v.iter().any(|s| s.present(i))).then_some(1.0)).collect();
            Ok(absent_result(labels, vals))
        }
        "absent_over_time" => {
            let m = matrix_arg(0)?;
            let labels = absent_labels(args.first().map(|a| a.as_ref()));
            let mut present = vec![false; steps];
            for s in &m.series {
                for (i, (lo, hi)) in m.windows(&s.samples).into_iter().enumerate() {
                    present[i] |= hi > lo;
                }
                for (i, (lo, hi)) in m.windows(&s.hists).into_iter().enumerate() {
                    present[i] |= hi > lo;
                }
            }
            Ok(absent_result(labels, present.into_iter().map(|p| (!p).then_some(1.0)).collect()))
        }
        "rate" | "increase" | "delta" => {
            let m = matrix_arg(0)?;
            let (counter, rate) = (name != "delta", name == "rate");
            for s in m.series.iter().filter(|s| counter && !s.samples.is_empty()) {
                let metric = metric_name(&s.labels);
                if !metric.is_empty() && !["_total", "_sum", "_count", "_bucket"].iter().any(|x| metric.ends_with(x)) {
                    ctx.info(format_args!(
                        "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}"
                    ));
                }
            }
            annotate_mixed_ranges(ctx, &m, true);
            for s in m.series.iter().filter(|s| !s.hists.is_empty()) {
                let gauge = s.hists.iter().any(|(_, h)| h.reset_hint == ResetHint::Gauge);
                let metric = metric_name(&s.labels);
                if counter && gauge {
                    ctx.warn(format_args!("this native histogram metric is not a counter: {metric:?}"));
                }
                if !counter && s.hists.iter().any(|(_, h)| h.reset_hint != ResetHint::Gauge) {
                    ctx.warn(format_args!("this native histogram metric is not a gauge: {metric:?}"));
                }
            }
            if counter && m.series.iter().all(|s| s.hists.is_empty()) {
                return Ok(Value::Vector(counter_rates(&m, rate)));
            }
            Ok(Value::Vector(map_windows_mixed(&m, false, |w, hw, i| {
                if hw.is_empty() {
                    return extrapolated_rate(w, m.ends[i], m.range, counter, rate).map(Point::F);
                }
                if !w.is_empty() {
                    return None; // floats and histograms mixed in one window
                }
                histogram_rate(hw, m.ends[i], m.range, counter, rate).map(Point::H)
            })))
        }
        "irate" | "idelta" => {
            let m = matrix_arg(0)?;
            let rate = name == "irate";
            for s in m.series.iter().filter(|s| !s.hists.is_empty()) {
                for ((lo, hi), (hlo, hhi)) in m.windows(&s.samples).into_iter().zip(m.windows(&s.hists)) {
                    let all = merge_points(&s.samples[lo..hi], &s.hists[hlo..hhi]);
                    if let [.., (_, p0), (_, p1)] = all.as_slice() {
                        annotate_instant_pair(ctx, rate, metric_name(&s.labels), p0, p1);
                    }
                }
            }
            Ok(Value::Vector(map_windows_mixed(&m, false, |w, hw, _| {
                if hw.is_empty() {
                    return instant_rate(w, rate).map(Point::F);
                }
                let all = merge_points(w, hw);
                let [.., (t0, p0), (t1, p1)] = all.as_slice() else { return None };
                match (p0, p1) {
                    (Point::F(a), Point::F(b)) => instant_rate(&[(*t0, *a), (*t1, *b)], rate).map(Point::F),
                    (Point::H(a), Point::H(b)) => {
                        let mut h = (**b).clone();
                        if !rate || !b.detect_reset(a) {
                            h.sub(a).ok()?;
                        }
                        h.reset_hint = ResetHint::Gauge;
                        if rate {
                            let secs = (t1 - t0) as f64 / 1000.0;
                            if secs == 0.0 {
                                return None;
                            }
                            h.mul(1.0 / secs);
                        }
                        Some(Point::H(Arc::new(h)))
                    }
                    _ => None,
                }
            })))
        }
        "deriv" => {
            let m = matrix_arg(0)?;
            annotate_mixed_ranges(ctx, &m, false);
            Ok(Value::Vector(map_windows(&m, false, |w, _| (w.len() >= 2).then(|| linear_regression(w, w[0].0).0))))
        }
        "predict_linear" => {
            let m = matrix_arg(0)?;
            annotate_mixed_ranges(ctx, &m, false);
            let d = scalar_arg(1)?;
            Ok(Value::Vector(map_windows(&m, false, |w, i| {
                (w.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(w, ts[i]);
                    slope * d[i] + intercept
                })
            })))
        }
        "changes" | "resets" => {
            let m = matrix_arg(0)?;
            let resets = name == "resets";
            Ok(Value::Vector(map_windows_mixed(&m, false, |w, hw, _| {
                let all = merge_points(w, hw);
                let mut n = 0.0;
                let mut prev = &all.first()?.1;
                for (_, cur) in &all[1..] {
                    let hit = match (prev, cur) {
                        (Point::F(p), Point::F(c)) => {
                            if resets {
                                c < p
                            } else {
                                c != p && !(c.is_nan() && p.is_nan())
                            }
                        }
                        (Point::H(p), Point::H(c)) => {
                            if resets {
                                c.detect_reset(p)
                            } else {
                                !c.equals(p)
                            }
                        }
                        _ => true,
                    };
                    if hit {
                        n += 1.0;
                    }
                    prev = cur;
                }
                Some(Point::F(n))
            })))
        }
        "avg_over_time" | "count_over_time" | "sum_over_time" | "min_over_time" | "max_over_time"
        | "stddev_over_time" | "stdvar_over_time" | "last_over_time" | "first_over_time" | "present_over_time"
        | "mad_over_time" => {
            let m = matrix_arg(0)?;
            let keep_name = matches!(name, "last_over_time" | "first_over_time");
            match name {
                "avg_over_time" | "sum_over_time" => annotate_mixed_ranges(ctx, &m, true),
                "min_over_time" | "max_over_time" | "stddev_over_time" | "stdvar_over_time" | "mad_over_time" => {
                    annotate_mixed_ranges(ctx, &m, false)
                }
                _ => {}
            }
            if m.series.iter().any(|s| !s.hists.is_empty()) {
                return Ok(Value::Vector(map_windows_mixed(&m, keep_name, |w, hw, _| {
                    histogram_over_time(name, w, hw)
                })));
            }
            Ok(Value::Vector(map_windows(&m, keep_name, |w, _| {
                if w.is_empty() {
                    return None;
                }
                let vals = || w.iter().map(|s| s.1);
                Some(match name {
                    "avg_over_time" => crate::aggregate::avg(&vals().collect::<Vec<_>>()),
                    "count_over_time" => w.len() as f64,
                    "present_over_time" => 1.0,
                    "sum_over_time" => {
                        let (mut s, mut c) = (0.0, 0.0);
                        for v in vals() {
                            (s, c) = kahan_inc(v, s, c);
                        }
                        s + c
                    }
                    "min_over_time" => vals().fold(w[0].1, |m, v| if v < m || m.is_nan() { v } else { m }),
                    "max_over_time" => vals().fold(w[0].1, |m, v| if v > m || m.is_nan() { v } else { m }),
                    "stddev_over_time" => variance_over_time(w).sqrt(),
                    "stdvar_over_time" => variance_over_time(w),
                    "last_over_time" => w[w.len() - 1].1,
                    "first_over_time" => w[0].1,
                    _ => {
                        let v: Vec<f64> = vals().collect();
                        let median = quantile(0.5, &v);
                        let dev: Vec<f64> = v.iter().map(|x| (x - median).abs()).collect();
                        quantile(0.5, &dev)
                    }
                })
            })))
        }
        "ts_of_min_over_time" | "ts_of_max_over_time" | "ts_of_last_over_time" | "ts_of_first_over_time" => {
            let m = matrix_arg(0)?;
            if matches!(name, "ts_of_last_over_time" | "ts_of_first_over_time")
                && m.series.iter().any(|s| !s.hists.is_empty())
            {
                return Ok(Value::Vector(map_windows_mixed(&m, false, |w, hw, _| {
                    let all = merge_points(w, hw);
                    let pick = if name == "ts_of_last_over_time" { all.last() } else { all.first() };
                    pick.map(|(t, _)| Point::F(*t as f64 / 1000.0))
                })));
            }
            Ok(Value::Vector(map_windows(&m, false, |w, _| {
                if w.is_empty() {
                    return None;
                }
                let pick = match name {
                    "ts_of_last_over_time" => w[w.len() - 1],
                    "ts_of_first_over_time" => w[0],
                    _ => {
                        let max = name == "ts_of_max_over_time";
                        // The last occurrence of the extreme value, as Prometheus picks it.
                        w[1..].iter().fold(w[0], |best, &s| {
                            let better = if max { s.1 >= best.1 } else { s.1 <= best.1 };
                            if better || best.1.is_nan() { s } else { best }
                        })
                    }
                };
                Some(pick.0 as f64 / 1000.0)
            })))
        }
        "quantile_over_time" => {
            let q = scalar_arg(0)?;
            let m = matrix_arg(1)?;
            if m.series.iter().any(|s| !s.samples.is_empty()) {
                ctx.check_quantile(&q);
            }
            annotate_mixed_ranges(ctx, &m, false);
            Ok(Value::Vector(map_windows(&m, false, |w, i| {
                (!w.is_empty()).then(|| quantile(q[i], &w.iter().map(|s| s.1).collect::<Vec<_>>()))
            })))
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let m = matrix_arg(0)?;
            annotate_mixed_ranges(ctx, &m, false);
            let sf = scalar_arg(1)?;
            let tf = scalar_arg(2)?;
            for i in 0..steps {
                if !(sf[i] > 0.0 && sf[i] < 1.0) {
                    return Err(Error::Execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                        sf[i]
                    )));
                }
                if !(tf[i] > 0.0 && tf[i] < 1.0) {
                    return Err(Error::Execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                        tf[i]
                    )));
                }
            }
            Ok(Value::Vector(map_windows(&m, false, |w, i| double_exp_smoothing(w, sf[i], tf[i]))))
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "sin" | "cos" | "tan"
        | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh" | "acosh" | "atanh" | "deg" | "rad" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |v: f64| {
                    if v > 0.0 {
                        1.0
                    } else if v < 0.0 {
                        -1.0
                    } else {
                        v
                    }
                },
                "sin" => f64::sin,
                "cos" => f64::cos,
                "tan" => f64::tan,
                "asin" => f64::asin,
                "acos" => f64::acos,
                "atan" => f64::atan,
                "sinh" => f64::sinh,
                "cosh" => f64::cosh,
                "tanh" => f64::tanh,
                "asinh" => f64::asinh,
                "acosh" => f64::acosh,
                "atanh" => f64::atanh,
                "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
                _ => |v: f64| v * std::f64::consts::PI / 180.0,
            };
            let v = vector_arg(0)?;
            Ok(Value::Vector(map_values(v, |x, _| Some(f(x)))))
        }
        "clamp" => {
            let v = vector_arg(0)?;
            let (lo, hi) = (scalar_arg(1)?, scalar_arg(2)?);
            Ok(Value::Vector(map_values(v, |x, i| {
                (hi[i] >= lo[i] || lo[i].is_nan() || hi[i].is_nan()).then(|| go_max(lo[i], go_min(hi[i], x)))
            })))
        }
        "clamp_min" => {
            let v = vector_arg(0)?;
            let lo = scalar_arg(1)?;
            Ok(Value::Vector(map_values(v, |x, i| Some(go_max(lo[i], x)))))
        }
        "clamp_max" => {
            let v = vector_arg(0)?;
            let hi = scalar_arg(1)?;
            Ok(Value::Vector(map_values(v, |x, i| Some(go_min(hi[i], x)))))
        }
        "round" => {
            let v = vector_arg(0)?;
            let to = if args.len() > 1 { scalar_arg(1)? } else { vec![1.0; steps] };
            Ok(Value::Vector(map_values(v, |x, i| {
                let inv = 1.0 / to[i];
                Some((x * inv + 0.5).floor() / inv)
            })))
        }
        "days_in_month" | "day_of_month" | "day_of_week" | "day_of_year" | "hour" | "minute" | "month" | "year" => {
            let v = if args.is_empty() {
                vec![StepSeries::floats(
                    Labels::default(),
                    ts.iter().map(|&t| Some(t as f64 / 1000.0)).collect(),
                    false,
                )]
            } else {
                vector_arg(0)?
            };
            Ok(Value::Vector(map_values(v, |x, _| date_part(name, x))))
        }
        "label_replace" => {
            let v = vector_arg(0)?;
            let dst = string_arg(1)?;
            let repl = string_arg(2)?;
            let src = string_arg(3)?;
            let re_src = string_arg(4)?;
            let re = regex::Regex::new(&format!("^(?s:{re_src})$")).map_err(|e| {
                Error::Execution(format!("invalid regular expression in label_replace(): {re_src}: {e}"))
            })?;
            if !is_valid_label_name(&dst) {
                return Err(Error::Execution(format!("invalid destination label name in label_replace(): {dst}")));
            }
            relabel(v, steps, |l| {
                let value = l.get(&src).unwrap_or_default().to_string();
                let caps = re.captures(&value)?;
                let mut out = String::new();
                caps.expand(&repl, &mut out);
                Some((dst.clone(), out))
            })
        }
        "label_join" => {
            let v = vector_arg(0)?;
            let dst = string_arg(1)?;
            let sep = string_arg(2)?;
            let mut srcs = Vec::new();
            for i in 3..args.len() {
                let s = string_arg(i)?;
                if !is_valid_label_name(&s) {
                    return Err(Error::Execution(format!("invalid source label name in label_join(): {s}")));
                }
                srcs.push(s);
            }
            if !is_valid_label_name(&dst) {
                return Err(Error::Execution(format!("invalid destination label name in label_join(): {dst}")));
            }
            relabel(v, steps, |l| {
                let joined: Vec<&str> = srcs.iter().map(|s| l.get(s).unwrap_or_default()).collect();
                Some((dst.clone(), joined.join(&sep)))
            })
        }
        "sort" | "sort_desc" => {
            let mut v = vector_arg(0)?;
            // Histogram samples have no order: Prometheus leaves them out.
            for s in &mut v {
                s.hists = Vec::new();
            }
            v.retain(|s| s.vals.iter().any(Option::is_some));
            let desc = name == "sort_desc";
            v.sort_by(|a, b| {
                let (x, y) = (a.vals[0].unwrap_or(f64::NAN), b.vals[0].unwrap_or(f64::NAN));
                match (x.is_nan(), y.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                    _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                }
            });
            Ok(Value::Vector(v))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut v = vector_arg(0)?;
            let mut names = Vec::new();
            for i in 1..args.len() {
                names.push(string_arg(i)?);
            }
            let desc = name == "sort_by_label_desc";
            v.sort_by(|a, b| {
                let mut ord = std::cmp::Ordering::Equal;
                for n in &names {
                    ord = natural_cmp(a.labels.get(n).unwrap_or_default(), b.labels.get(n).unwrap_or_default());
                    if ord != std::cmp::Ordering::Equal {
                        break;
                    }
                }
                if ord == std::cmp::Ordering::Equal {
                    ord = a.labels.cmp(&b.labels);
                }
                if desc { ord.reverse() } else { ord }
            });
            Ok(Value::Vector(v))
        }
        "histogram_quantile" => {
            let q = scalar_arg(0)?;
            let v = vector_arg(1)?;
            if !v.is_empty() {
                ctx.check_quantile(&q);
            }
            histogram_quantile(ctx, &q, v, steps)
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev" | "histogram_stdvar" => {
            let v = vector_arg(0)?;
            Ok(Value::Vector(map_hists(v, |h, _| {
                Some(match name {
                    "histogram_count" => h.count,
                    "histogram_sum" => h.sum,
                    "histogram_avg" => h.sum / h.count,
                    "histogram_stddev" => h.variance().sqrt(),
                    _ => h.variance(),
                })
            })))
        }
        "histogram_fraction" => {
            let lo = scalar_arg(0)?;
            let hi = scalar_arg(1)?;
            let v = vector_arg(2)?;
            histogram_fraction(ctx, &lo, &hi, v, steps)
        }
        other => Err(Error::BadData(format!("function \"{other}\" is not supported"))),
    }
}

/// `(window, step index)` → value, for every series and step.
fn map_windows(m: &Matrix, keep_name: bool, f: impl Fn(&[(i64, f64)], usize) -> Option<f64>) -> Vec<StepSeries> {
    let mut out = Vec::with_capacity(m.series.len());
    for s in &m.series {
        let w = m.windows(&s.samples);
        let vals: Vec<Option<f64>> = w.into_iter().enumerate().map(|(i, (lo, hi))| f(&s.samples[lo..hi], i)).collect();
        if vals.iter().any(Option::is_some) {
            out.push(StepSeries::floats(s.labels.clone(), vals, s.drop_name || !keep_name));
        }
    }
    out
}

/// A float or a native histogram.
#[derive(Debug, Clone)]
pub(crate) enum Point {
    F(f64),
    H(Hist),
}

/// Float and histogram samples of one window, in time order.
fn merge_points(w: &[(i64, f64)], hw: &[(i64, Hist)]) -> Vec<(i64, Point)> {
    let mut out: Vec<(i64, Point)> = Vec::with_capacity(w.len() + hw.len());
    let (mut i, mut j) = (0, 0);
    while i < w.len() || j < hw.len() {
        if j >= hw.len() || (i < w.len() && w[i].0 < hw[j].0) {
            out.push((w[i].0, Point::F(w[i].1)));
            i += 1;
        } else {
            out.push((hw[j].0, Point::H(hw[j].1.clone())));
            j += 1;
        }
    }
    out
}

/// Like [`map_windows`], with each window's histogram samples too.
fn map_windows_mixed(
    m: &Matrix,
    keep_name: bool,
    f: impl Fn(&[(i64, f64)], &[(i64, Hist)], usize) -> Option<Point>,
) -> Vec<StepSeries> {
    let mut out = Vec::with_capacity(m.series.len());
    for s in &m.series {
        let w = m.windows(&s.samples);
        let hw = m.windows(&s.hists);
        let mut series = StepSeries::floats(s.labels.clone(), vec![None; w.len()], s.drop_name || !keep_name);
        for (i, ((lo, hi), (hlo, hhi))) in w.into_iter().zip(hw).enumerate() {
            match f(&s.samples[lo..hi], &s.hists[hlo..hhi], i) {
                Some(Point::F(v)) => series.vals[i] = Some(v),
                Some(Point::H(h)) => series.set_hist(i, Some(h)),
                None => {}
            }
        }
        if (0..series.vals.len()).any(|i| series.present(i)) {
            out.push(series);
        }
    }
    out
}

/// `*_over_time` on windows that may hold histograms: count/present/last/
/// first see both kinds, sum/avg combine histograms (none for a mixed
/// window), the rest read floats only.
fn histogram_over_time(name: &str, w: &[(i64, f64)], hw: &[(i64, Hist)]) -> Option<Point> {
    if hw.is_empty() && w.is_empty() {
        return None;
    }
    match name {
        "count_over_time" => Some(Point::F((w.len() + hw.len()) as f64)),
        "present_over_time" => Some(Point::F(1.0)),
        "last_over_time" => merge_points(w, hw).pop().map(|(_, p)| p),
        "first_over_time" => merge_points(w, hw).into_iter().next().map(|(_, p)| p),
        "sum_over_time" | "avg_over_time" if !hw.is_empty() => {
            if !w.is_empty() {
                return None;
            }
            let refs: Vec<&Hist> = hw.iter().map(|(_, h)| h).collect();
            let mut sum = crate::aggregate::sum_hists(&refs)?;
            if name == "avg_over_time" {
                sum.mul(1.0 / hw.len() as f64);
            }
            Some(Point::H(Arc::new(sum)))
        }
        _ if w.is_empty() => None,
        "sum_over_time" => {
            let (mut s, mut c) = (0.0, 0.0);
            for &(_, v) in w {
                (s, c) = kahan_inc(v, s, c);
            }
            Some(Point::F(s + c))
        }
        "avg_over_time" => Some(Point::F(crate::aggregate::avg(&w.iter().map(|s| s.1).collect::<Vec<_>>()))),
        "min_over_time" => Some(Point::F(w.iter().fold(w[0].1, |m, s| if s.1 < m || m.is_nan() { s.1 } else { m }))),
        "max_over_time" => Some(Point::F(w.iter().fold(w[0].1, |m, s| if s.1 > m || m.is_nan() { s.1 } else { m }))),
        "stddev_over_time" => Some(Point::F(variance_over_time(w).sqrt())),
        "stdvar_over_time" => Some(Point::F(variance_over_time(w))),
        _ => {
            let v: Vec<f64> = w.iter().map(|s| s.1).collect();
            let median = quantile(0.5, &v);
            let dev: Vec<f64> = v.iter().map(|x| (x - median).abs()).collect();
            Some(Point::F(quantile(0.5, &dev)))
        }
    }
}

/// A float per histogram sample; float samples are dropped.
fn map_hists(mut v: Vec<StepSeries>, f: impl Fn(&FloatHistogram, usize) -> Option<f64>) -> Vec<StepSeries> {
    for s in &mut v {
        let hists = std::mem::take(&mut s.hists);
        for (i, cell) in s.vals.iter_mut().enumerate() {
            *cell = hists.get(i).and_then(Option::as_ref).and_then(|h| f(h, i));
        }
        s.drop_name = true;
    }
    v.retain(|s| s.vals.iter().any(Option::is_some));
    v
}

fn map_values(mut v: Vec<StepSeries>, f: impl Fn(f64, usize) -> Option<f64>) -> Vec<StepSeries> {
    for s in &mut v {
        // Float functions ignore native histograms (Prometheus adds an info annotation).
        s.hists = Vec::new();
        for (i, cell) in s.vals.iter_mut().enumerate() {
            if let Some(x) = *cell {
                *cell = f(x, i);
            }
        }
        s.drop_name = true;
    }
    v.retain(|s| s.vals.iter().any(Option::is_some));
    v
}

fn relabel(v: Vec<StepSeries>, steps: usize, f: impl Fn(&Labels) -> Option<(String, String)>) -> Result<Value, Error> {
    let mut b = SeriesBuilder::new(steps);
    for s in v {
        let mut labels = s.labels.clone();
        let mut drop_name = s.drop_name;
        if let Some((dst, value)) = f(&s.labels) {
            labels.set(&dst, &value);
            if dst == METRIC_NAME {
                drop_name = false;
            }
        }
        let slot = b.slot(&labels, drop_name);
        b.series[slot].drop_name = drop_name;
        for (i, x) in s.vals.iter().enumerate() {
            if let Some(x) = x {
                b.set(slot, i, *x)?;
            }
        }
        for (i, h) in s.hists.iter().enumerate() {
            if let Some(h) = h {
                b.set_hist(slot, i, h.clone())?;
            }
        }
    }
    Ok(Value::Vector(b.series))
}

fn absent_labels(arg: Option<&Expr>) -> Labels {
    let vs: Option<&VectorSelector> = match arg.map(unwrap_parens) {
        Some(Expr::VectorSelector(vs)) => Some(vs),
        Some(Expr::MatrixSelector(ms)) => Some(&ms.vs),
        _ => None,
    };
    let Some(vs) = vs else { return Labels::default() };
    let matchers = selector_matchers(vs).into_iter().next().unwrap_or_default();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut dup: Vec<String> = Vec::new();
    for (k, m) in matchers.iter().enumerate() {
        if matchers[..k].iter().any(|o| o.name == m.name) {
            dup.push(m.name.clone());
        }
        if m.name == METRIC_NAME || !matches!(m.op, promql_parser::label::MatchOp::Equal) {
            continue;
        }
        pairs.push((m.name.clone(), m.value.clone()));
    }
    pairs.retain(|(n, _)| !dup.contains(n));
    Labels::new(pairs)
}

fn absent_result(labels: Labels, vals: Vec<Option<f64>>) -> Value {
    if vals.iter().all(Option::is_none) {
        return Value::Vector(Vec::new());
    }
    Value::Vector(vec![StepSeries::floats(labels, vals, false)])
}

/// `rate`/`increase` of float series: like [`extrapolated_rate`] per
/// window, with the counter resets of the whole series counted once, so a
/// window without a reset (nearly all of them) is not scanned.
fn counter_rates(m: &Matrix, rate: bool) -> Vec<StepSeries> {
    let mut out = Vec::with_capacity(m.series.len());
    let mut resets: Vec<u32> = Vec::new();
    for s in &m.series {
        let samples = &s.samples;
        // resets[k]: drops among samples[1..=k].
        resets.clear();
        let mut n = 0u32;
        resets.push(0);
        for w in samples.windows(2) {
            n += u32::from(w[1].1 < w[0].1);
            resets.push(n);
        }
        let mut vals = vec![None; m.ends.len()];
        let mut any = false;
        for (i, (lo, hi)) in m.windows(samples).into_iter().enumerate() {
            if hi - lo < 2 {
                continue;
            }
            let w = &samples[lo..hi];
            let v = if resets[hi - 1] == resets[lo] {
                let (first, last) = (w[0], w[w.len() - 1]);
                let result = last.1 - first.1;
                let zero_clamp = (result > 0.0 && first.1 >= 0.0).then_some((first.1, result));
                let end = m.ends[i];
                result * extrapolation_factor(first.0, last.0, w.len(), end - m.range, end, zero_clamp, rate)
            } else {
                match extrapolated_rate(w, m.ends[i], m.range, true, rate) {
                    Some(v) => v,
                    None => continue,
                }
            };
            vals[i] = Some(v);
            any = true;
        }
        if any {
            out.push(StepSeries::floats(s.labels.clone(), vals, true));
        }
    }
    out
}

fn extrapolated_rate(w: &[(i64, f64)], end: i64, range: i64, counter: bool, rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let start = end - range;
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = first.1;
        for &(_, v) in &w[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let zero_clamp = (counter && result > 0.0 && first.1 >= 0.0).then_some((first.1, result));
    Some(result * extrapolation_factor(first.0, last.0, w.len(), start, end, zero_clamp, rate))
}

/// Prometheus' extrapolation of a window's change to the whole range (and
/// per second for `rate`). `zero_clamp`: (first value, change) of a counter,
/// which is not extrapolated below zero.
fn extrapolation_factor(
    first_t: i64,
    last_t: i64,
    n: usize,
    start: i64,
    end: i64,
    zero_clamp: Option<(f64, f64)>,
    rate: bool,
) -> f64 {
    let mut to_start = (first_t - start) as f64 / 1000.0;
    let mut to_end = (end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg_between = sampled / (n - 1) as f64;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if let Some((first, result)) = zero_clamp {
        let to_zero = sampled * (first / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= (end - start) as f64 / 1000.0;
    }
    factor
}

/// `rate`/`increase`/`delta` over native histograms (Prometheus'
/// `histogramRate`): last − first at the lowest schema seen, plus every
/// sample before a counter reset, extrapolated like floats.
fn histogram_rate(hw: &[(i64, Hist)], end: i64, range: i64, counter: bool, rate: bool) -> Option<Hist> {
    if hw.len() < 2 {
        return None;
    }
    let (first, last) = (&hw[0], &hw[hw.len() - 1]);
    let custom = first.1.uses_custom_buckets();
    if hw.iter().any(|(_, h)| h.uses_custom_buckets() != custom) {
        return None;
    }
    let min_schema = if counter {
        hw.iter().map(|(_, h)| h.schema).min().unwrap_or(last.1.schema)
    } else {
        first.1.schema.min(last.1.schema)
    };
    let mut h = (*last.1).clone();
    h.reduce_to_schema(min_schema);
    h.sub(&first.1).ok()?;
    if counter {
        let mut prev = &first.1;
        for (_, cur) in &hw[1..] {
            if cur.detect_reset(prev) {
                h.add(prev).ok()?;
            }
            prev = cur;
        }
    }
    h.reset_hint = ResetHint::Gauge;
    h.mul(extrapolation_factor(first.0, last.0, hw.len(), end - range, end, None, rate));
    Some(Arc::new(h))
}

fn instant_rate(w: &[(i64, f64)], rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (prev, last) = (w[w.len() - 2], w[w.len() - 1]);
    let mut v = if rate && last.1 < prev.1 { last.1 } else { last.1 - prev.1 };
    let interval = last.0 - prev.0;
    if interval == 0 {
        return None;
    }
    if rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// `(slope, intercept)` of the least-squares line through `w`, with x in
/// seconds relative to `intercept_t`.
fn linear_regression(w: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = w[0].1;
    let mut const_y = true;
    for (i, &(t, y)) in w.iter().enumerate() {
        if const_y && i > 0 && y != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(y, sy, cy);
        (sxy, cxy) = kahan_inc(x * y, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

fn variance_over_time(w: &[(i64, f64)]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(_, v) in w {
        count += 1.0;
        let delta = v - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (v - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}

fn double_exp_smoothing(w: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, w[0].1);
    let mut b = w[1].1 - w[0].1;
    for (i, &(_, v)) in w.iter().enumerate().skip(1) {
        let x = sf * v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// Classic histogram buckets: series with an `le` label, grouped by their
/// other labels; `(upper bound, series index)` per group.
fn bucket_groups(v: &[StepSeries]) -> Vec<(Labels, Vec<(f64, usize)>)> {
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for (j, s) in v.iter().enumerate() {
        let Some(le) = s.labels.get("le") else { continue };
        let Some(upper) = parse_le(le) else { continue };
        let mut key = s.labels.clone();
        key.remove("le");
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((upper, j));
    }
    groups
}

/// `histogram_quantile`/`histogram_fraction` over classic bucket groups
/// (`classic` gets the step's `(upper bound, cumulative count)`s) and native
/// histograms (`native`). The name is removed (delayed), so a classic and
/// a native histogram with the same other labels collide, as in Prometheus.
fn histogram_function(
    ctx: &Ctx<'_>,
    v: Vec<StepSeries>,
    steps: usize,
    classic: impl Fn(&mut [(f64, f64)], usize) -> f64,
    native: impl Fn(&FloatHistogram, usize) -> f64,
) -> Result<Value, Error> {
    // Float series that are not buckets: no `le`, or one that is no number.
    for s in v.iter().filter(|s| s.vals.iter().any(Option::is_some)) {
        let le = s.labels.get("le");
        if le.and_then(parse_le).is_none() {
            ctx.warn(format_args!(
                "bucket label \"le\" is missing or has a malformed value of {:?} for metric name {:?}",
                le.unwrap_or(""),
                metric_name(&s.labels)
            ));
        }
    }
    let mut b = SeriesBuilder::new(steps);
    // A classic and a native histogram of the same series: neither is used
    // (Prometheus warns "vector contains a mix of classic and native histograms").
    let native_labels: std::collections::HashSet<&Labels> =
        v.iter().filter(|s| !s.hists.is_empty()).map(|s| &s.labels).collect();
    let groups = bucket_groups(&v);
    let conflicts: std::collections::HashSet<Labels> =
        groups.iter().filter(|(l, _)| native_labels.contains(l)).map(|(l, _)| l.clone()).collect();
    for (labels, members) in groups {
        if conflicts.contains(&labels) {
            ctx.warn(format_args!(
                "vector contains a mix of classic and native histograms for metric name {:?}",
                metric_name(&v[members[0].1].labels)
            ));
            continue;
        }
        let slot = b.slot(&labels, true);
        for i in 0..steps {
            let mut buckets: Vec<(f64, f64)> =
                members.iter().filter_map(|&(u, j)| v[j].vals[i].map(|c| (u, c))).collect();
            if !buckets.is_empty() {
                b.set(slot, i, classic(&mut buckets, i))?;
            }
        }
    }
    for s in v.iter().filter(|s| !s.hists.is_empty() && !conflicts.contains(&s.labels)) {
        let slot = b.slot(&s.labels, true);
        for i in 0..steps {
            if let Some(h) = s.hist(i) {
                b.set(slot, i, native(h, i))?;
            }
        }
    }
    b.series.retain(|s| s.vals.iter().any(Option::is_some));
    Ok(Value::Vector(b.series))
}

fn histogram_quantile(ctx: &Ctx<'_>, q: &[f64], v: Vec<StepSeries>, steps: usize) -> Result<Value, Error> {
    let names: Vec<String> = v.iter().map(|s| metric_name(&s.labels).to_string()).collect();
    let forced = std::cell::Cell::new(false);
    let out = histogram_function(
        ctx,
        v,
        steps,
        |b, i| {
            let (value, fixed) = bucket_quantile(q[i], b);
            if fixed {
                forced.set(true);
            }
            value
        },
        |h, i| h.quantile(q[i]),
    )?;
    if forced.get() {
        let name = names.first().map(String::as_str).unwrap_or("");
        ctx.info(format_args!(
            "input to histogram_quantile needed to be fixed for monotonicity (see \
             https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {name:?}"
        ));
    }
    Ok(out)
}

fn histogram_fraction(ctx: &Ctx<'_>, lo: &[f64], hi: &[f64], v: Vec<StepSeries>, steps: usize) -> Result<Value, Error> {
    histogram_function(ctx, v, steps, |b, i| bucket_fraction(lo[i], hi[i], b), |h, i| h.fraction(lo[i], hi[i]))
}

/// Sorted by upper bound, with a `+Inf` bucket, equal bounds merged.
fn coalesce_buckets(buckets: &mut [(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if !buckets.last().is_some_and(|b| b.0 == f64::INFINITY) {
        return None;
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(u, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == u => last.1 += c,
            _ => merged.push((u, c)),
        }
    }
    Some(merged)
}

/// Prometheus' `BucketFraction`: the share of observations between
/// `lower` and `upper`, interpolating linearly within buckets.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut [(f64, f64)]) -> f64 {
    let Some(b) = coalesce_buckets(buckets) else { return f64::NAN };
    let count = b[b.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, &(ub, c)) in b.iter().enumerate() {
        let lb = if i > 0 { b[i - 1].0 } else { f64::NEG_INFINITY };
        let interpolate = |v: f64| rank + (c - rank) * (v - lb) / (ub - lb);
        if !lower_set && lb >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lb >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lb < lower && ub > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && lb < upper && ub > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = c;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < eps * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Prometheus' `BucketQuantile`; also whether the buckets had to be made
/// monotonic (a real decrease, not floating-point noise).
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    let Some(mut b) = coalesce_buckets(buckets) else { return (f64::NAN, false) };
    // Force monotonicity, ignoring tiny floating-point deltas.
    let mut forced = false;
    let mut prev = b[0].1;
    for x in b.iter_mut().skip(1) {
        let cur = x.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) || cur < prev {
            forced |= cur < prev && !almost_equal(prev, cur, 1e-12);
            x.1 = prev;
            continue;
        }
        prev = cur;
    }
    if b.len() < 2 {
        return (f64::NAN, forced);
    }
    let observations = b[b.len() - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let n = b.len() - 1;
    let idx = b[..n].partition_point(|x| x.1 < rank);
    if idx == n {
        return (b[n - 1].0, forced);
    }
    if idx == 0 && b[0].0 <= 0.0 {
        return (b[0].0, forced);
    }
    let mut start = 0.0;
    let end = b[idx].0;
    let mut count = b[idx].1;
    if idx > 0 {
        start = b[idx - 1].0;
        count -= b[idx - 1].1;
        rank -= b[idx - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

fn date_part(name: &str, secs: f64) -> Option<f64> {
    if secs.is_nan() || secs.is_infinite() {
        return Some(f64::NAN);
    }
    let s = secs as i64;
    let days = s.div_euclid(86_400);
    let rem = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    Some(match name {
        "year" => y as f64,
        "month" => m as f64,
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
            (CUM[(m - 1) as usize] + d + if leap && m > 2 { 1 } else { 0 }) as f64
        }
        "hour" => (rem / 3600) as f64,
        "minute" => (rem % 3600 / 60) as f64,
        _ => {
            const DAYS: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            (DAYS[(m - 1) as usize] + if leap && m == 2 { 1 } else { 0 }) as f64
        }
    })
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Natural ordering: digit runs compare numerically.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (x.peek().copied(), y.peek().copied()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let mut na = String::new();
                while let Some(c) = x.peek().copied().filter(char::is_ascii_digit) {
                    na.push(c);
                    x.next();
                }
                let mut nb = String::new();
                while let Some(d) = y.peek().copied().filter(char::is_ascii_digit) {
                    nb.push(d);
                    y.next();
                }
                let (ta, tb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let ord = ta.len().cmp(&tb.len()).then(ta.cmp(tb));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(&d);
                }
                x.next();
                y.next();
            }
        }
    }
}
