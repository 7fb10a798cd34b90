//! Aggregation operators, evaluated per step over groups fixed per series.

use std::collections::HashMap;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_LIMIT_RATIO, T_LIMITK, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use std::sync::Arc;

use crate::eval::{Ctx, Hist, SeriesBuilder, StepSeries, Value};
use crate::functions::{kahan_inc, quantile};
use crate::labels::{Labels, METRIC_NAME, is_valid_label_name};
use crate::{Error, FloatHistogram, PushedAggregate};

/// Labels of the group a series belongs to.
fn group_labels(l: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::default(),
        Some(LabelModifier::Include(names)) => l.keep(&names.labels),
        Some(LabelModifier::Exclude(names)) => {
            let mut out = l.drop(&names.labels);
            out.remove(METRIC_NAME);
            out
        }
    }
}

pub(crate) fn eval(ctx: &Ctx<'_>, a: &AggregateExpr, ts: &[i64]) -> Result<Value, Error> {
    match ctx.storage.pushed(a) {
        Some(p) if crate::pushdown::is_pushable(a) => splice_pushed(ctx, a, ts, p),
        _ => eval_raw(ctx, a, ts),
    }
}

/// An aggregation whose values at some steps were computed elsewhere:
/// the other steps are evaluated here, and the two are put together.
fn splice_pushed(ctx: &Ctx<'_>, a: &AggregateExpr, ts: &[i64], p: &PushedAggregate) -> Result<Value, Error> {
    let pos: Vec<Option<usize>> = ts.iter().map(|t| p.steps.binary_search(t).ok()).collect();
    let rest: Vec<usize> = (0..ts.len()).filter(|&i| pos[i].is_none()).collect();
    let mut out: Vec<StepSeries> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    if !rest.is_empty() {
        let rest_ts: Vec<i64> = rest.iter().map(|&i| ts[i]).collect();
        let Value::Vector(local) = eval_raw(ctx, a, &rest_ts)? else {
            return Err(Error::Execution("aggregation did not return an instant vector".into()));
        };
        for s in local {
            let mut vals = vec![None; ts.len()];
            for (&i, v) in rest.iter().zip(s.vals) {
                vals[i] = v;
            }
            let mut full = StepSeries::floats(s.labels, vals, s.drop_name);
            for (&i, h) in rest.iter().zip(s.hists) {
                full.set_hist(i, h);
            }
            index.insert(full.labels.clone(), out.len());
            out.push(full);
        }
    }
    let first_pushed = out.len();
    for (labels, vals) in &p.series {
        let slot = match index.get(labels) {
            Some(&i) => i,
            None => {
                index.insert(labels.clone(), out.len());
                out.push(StepSeries::floats(labels.clone(), vec![None; ts.len()], false));
                out.len() - 1
            }
        };
        for (i, j) in pos.iter().enumerate() {
            if let Some(j) = *j {
                out[slot].vals[i] = vals.get(j).copied().flatten();
            }
        }
    }
    out[first_pushed..].sort_by(|x, y| x.labels.cmp(&y.labels));
    out.retain(|s| (0..ts.len()).any(|i| s.present(i)));
    Ok(Value::Vector(out))
}

fn eval_raw(ctx: &Ctx<'_>, a: &AggregateExpr, ts: &[i64]) -> Result<Value, Error> {
    let op = a.op.id();
    let steps = ts.len();
    let param = match &a.param {
        Some(p) => Some(ctx.eval(p, ts)?),
        None => None,
    };
    let input = match ctx.eval(&a.expr, ts)? {
        Value::Vector(v) => v,
        _ => return Err(Error::BadData("expected type instant vector in aggregation expression".into())),
    };
    // Group index per input series, and each group's labels.
    let mut groups: Vec<Labels> = Vec::new();
    let mut group_drop: Vec<bool> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut member: Vec<usize> = Vec::with_capacity(input.len());
    for s in &input {
        let g = group_labels(&s.labels, &a.modifier);
        let keeps_name = g.get(METRIC_NAME).is_some();
        let id = *index.entry(g.clone()).or_insert_with(|| {
            groups.push(g);
            group_drop.push(false);
            groups.len() - 1
        });
        if keeps_name && s.drop_name {
            group_drop[id] = true;
        }
        member.push(id);
    }
    let scalar_param = |what: &str| -> Result<Vec<f64>, Error> {
        match &param {
            Some(Value::Scalar(v)) => Ok(v.clone()),
            _ => Err(Error::BadData(format!("expected scalar parameter for {what}"))),
        }
    };
    match op {
        T_TOPK | T_BOTTOMK | T_LIMITK => {
            let k = scalar_param("topk/bottomk/limitk")?;
            if op != T_LIMITK && input.iter().any(|s| !s.hists.is_empty()) {
                ctx.info(format_args!("ignored histogram in {} aggregation", a.op));
            }
            select_k(op, input, &member, groups.len(), &k)
        }
        T_LIMIT_RATIO => {
            let r = scalar_param("limit_ratio")?;
            if let Some(bad) = r.iter().find(|r| !(-1.0..=1.0).contains(*r)) {
                ctx.warn(format_args!(
                    "ratio value should be between -1 and 1, got {}, capping to {}",
                    crate::format_float(*bad),
                    crate::format_float(bad.clamp(-1.0, 1.0))
                ));
            }
            limit_ratio(input, &r)
        }
        T_COUNT_VALUES => {
            let name = match &param {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(Error::BadData("expected string parameter for count_values".into())),
            };
            if !is_valid_label_name(&name) {
                return Err(Error::Execution(format!("invalid label name {name:?}")));
            }
            let mut b = SeriesBuilder::new(steps);
            for i in 0..steps {
                let mut counts: HashMap<Labels, f64> = HashMap::new();
                let mut order = Vec::new();
                for (s, &g) in input.iter().zip(&member) {
                    let value = match (s.vals[i], s.hist(i)) {
                        (Some(v), _) => Some(crate::format_float(v)),
                        (None, Some(h)) => Some(h.to_string()),
                        _ => None,
                    };
                    if let Some(value) = value {
                        let mut l = groups[g].clone();
                        l.set(&name, &value);
                        let c = counts.entry(l.clone()).or_insert_with(|| {
                            order.push(l);
                            0.0
                        });
                        *c += 1.0;
                    }
                }
                for l in order {
                    let slot = b.slot(&l, false);
                    b.set(slot, i, counts[&l])?;
                }
            }
            Ok(Value::Vector(b.series))
        }
        _ => {
            let phi = if op == T_QUANTILE { Some(scalar_param("quantile")?) } else { None };
            if let Some(q) = &phi
                && !input.is_empty()
            {
                ctx.check_quantile(q);
            }
            let (mut mixed, mut ignored) = (false, false);
            let mut out: Vec<StepSeries> = groups
                .iter()
                .zip(&group_drop)
                .map(|(l, &d)| StepSeries::floats(l.clone(), vec![None; steps], d))
                .collect();
            let any_hists = input.iter().any(|s| !s.hists.is_empty());
            if !any_hists && matches!(op, T_SUM | T_MIN | T_MAX | T_COUNT | T_GROUP) {
                accumulate_floats(ctx, op, &input, &member, &mut out)?;
                out.retain(|s| (0..steps).any(|i| s.present(i)));
                return Ok(Value::Vector(out));
            }
            let mut values: Vec<Vec<f64>> = vec![Vec::new(); groups.len()];
            let mut hists: Vec<Vec<&Hist>> = vec![Vec::new(); groups.len()];
            for i in 0..steps {
                ctx.check("aggregation")?;
                for v in values.iter_mut() {
                    v.clear();
                }
                for h in hists.iter_mut() {
                    h.clear();
                }
                for (s, &g) in input.iter().zip(&member) {
                    if let Some(v) = s.vals[i] {
                        values[g].push(v);
                    } else if let Some(h) = s.hist(i) {
                        hists[g].push(h);
                    }
                }
                for (g, vals) in values.iter().enumerate() {
                    if any_hists && !hists[g].is_empty() {
                        // Native histograms: sum/avg combine them (a group
                        // mixing floats and histograms has no result, as in
                        // Prometheus); count/group count them; the other
                        // operators ignore them.
                        match op {
                            T_SUM | T_AVG if vals.is_empty() => {
                                let sum = sum_hists(&hists[g]);
                                if let Some(mut h) = sum {
                                    if op == T_AVG {
                                        h.mul(1.0 / hists[g].len() as f64);
                                    }
                                    out[g].set_hist(i, Some(Arc::new(h)));
                                }
                                continue;
                            }
                            T_SUM | T_AVG => {
                                mixed = true;
                                continue;
                            }
                            T_COUNT => {
                                out[g].vals[i] = Some((vals.len() + hists[g].len()) as f64);
                                continue;
                            }
                            T_GROUP => {
                                out[g].vals[i] = Some(1.0);
                                continue;
                            }
                            _ => ignored = true,
                        }
                    }
                    if vals.is_empty() {
                        continue;
                    }
                    out[g].vals[i] = Some(match op {
                        T_SUM => {
                            let (mut sum, mut c) = (0.0, 0.0);
                            for &v in vals {
                                (sum, c) = kahan_inc(v, sum, c);
                            }
                            sum + c
                        }
                        T_AVG => avg(vals),
                        T_COUNT => vals.len() as f64,
                        T_GROUP => 1.0,
                        T_MIN => vals[1..].iter().fold(vals[0], |m, &v| if m > v || m.is_nan() { v } else { m }),
                        T_MAX => vals[1..].iter().fold(vals[0], |m, &v| if m < v || m.is_nan() { v } else { m }),
                        T_STDDEV => stdvar(vals).sqrt(),
                        T_STDVAR => stdvar(vals),
                        T_QUANTILE => quantile(phi.as_ref().map(|p| p[i]).unwrap_or(f64::NAN), vals),
                        _ => return Err(Error::BadData(format!("unsupported aggregation operator {}", a.op))),
                    });
                }
            }
            if mixed {
                ctx.warn("encountered a mix of histograms and floats for aggregation");
            }
            if ignored {
                ctx.info(format_args!("ignored histogram in {} aggregation", a.op));
            }
            out.retain(|s| (0..steps).any(|i| s.present(i)));
            Ok(Value::Vector(out))
        }
    }
}

/// `sum`/`min`/`max`/`count`/`group` of float series, series by series
/// into per-group, per-step accumulators: the same operations in the same
/// order as collecting each step's values first, without the per-step lists.
fn accumulate_floats(
    ctx: &Ctx<'_>,
    op: u16,
    input: &[StepSeries],
    member: &[usize],
    out: &mut [StepSeries],
) -> Result<(), Error> {
    let steps = out.first().map_or(0, |s| s.vals.len());
    // Kahan compensation per group and step (sum only).
    let mut comp: Vec<Vec<f64>> = if op == T_SUM { vec![vec![0.0; steps]; out.len()] } else { Vec::new() };
    for (n, (s, &g)) in input.iter().zip(member).enumerate() {
        if n % 1024 == 0 {
            ctx.check("aggregation")?;
        }
        let acc = &mut out[g].vals;
        for (i, v) in s.vals.iter().enumerate() {
            let Some(v) = *v else { continue };
            acc[i] = Some(match (op, acc[i]) {
                (T_SUM, None) => {
                    let (sum, c) = kahan_inc(v, 0.0, 0.0);
                    comp[g][i] = c;
                    sum
                }
                (T_SUM, Some(sum)) => {
                    let (sum, c) = kahan_inc(v, sum, comp[g][i]);
                    comp[g][i] = c;
                    sum
                }
                (T_COUNT, c) => c.unwrap_or(0.0) + 1.0,
                (T_GROUP, _) => 1.0,
                (_, None) => v,
                (T_MIN, Some(m)) if m > v || m.is_nan() => v,
                (T_MAX, Some(m)) if m < v || m.is_nan() => v,
                (_, Some(m)) => m,
            });
        }
    }
    if op == T_SUM {
        for (s, c) in out.iter_mut().zip(comp) {
            for (v, c) in s.vals.iter_mut().zip(c) {
                if let Some(v) = v {
                    *v += c;
                }
            }
        }
    }
    Ok(())
}

/// The sum of native histograms; `None` when they cannot be added
/// (exponential with custom buckets, or different custom bounds).
pub(crate) fn sum_hists(hs: &[&Hist]) -> Option<FloatHistogram> {
    let mut sum = (**hs.first()?).as_ref().clone();
    for h in &hs[1..] {
        sum.add(h).ok()?;
    }
    sum.reset_hint = crate::histogram::ResetHint::Gauge;
    Some(sum)
}

pub(crate) fn avg(vals: &[f64]) -> f64 {
    let (mut sum, mut c) = (vals[0], 0.0);
    let mut count = 1.0;
    let mut incremental = false;
    let mut mean = 0.0;
    for &v in &vals[1..] {
        count += 1.0;
        if !incremental {
            let (ns, nc) = kahan_inc(v, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(v / count, q * mean, q * c);
    }
    if incremental { mean + c } else { (sum + c) / count }
}

fn stdvar(vals: &[f64]) -> f64 {
    if vals.iter().any(|v| v.is_nan() || v.is_infinite()) {
        return f64::NAN;
    }
    let mut count = 1.0;
    let (mut mean, mut value) = (vals[0], 0.0);
    for &v in &vals[1..] {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        value += delta * (v - mean);
    }
    value / count
}

fn select_k(op: u16, input: Vec<StepSeries>, member: &[usize], ngroups: usize, k: &[f64]) -> Result<Value, Error> {
    let steps = k.len();
    let mut keep: Vec<Vec<Option<f64>>> = input.iter().map(|s| vec![None; s.vals.len()]).collect();
    let mut keep_h: Vec<Vec<Option<Hist>>> = input.iter().map(|s| vec![None; s.vals.len()]).collect();
    // Output order: by group, then rank at the first step (matters for instant queries).
    let mut first_order: Vec<usize> = Vec::new();
    for i in 0..steps {
        let kf = k[i];
        if kf.is_nan() {
            return Err(Error::Execution("Parameter value is NaN".into()));
        }
        if kf >= 9.223_372_036_854_776e18 || kf <= -9.223_372_036_854_776e18 {
            return Err(Error::Execution(format!("Scalar value {kf} overflows int64")));
        }
        let kk = kf as i64;
        if kk < 1 {
            continue;
        }
        let mut per_group: Vec<Vec<usize>> = vec![Vec::new(); ngroups];
        for (j, s) in input.iter().enumerate() {
            // limitk keeps histogram samples too; topk/bottomk rank floats only.
            if s.vals[i].is_some() || (op == T_LIMITK && s.hist(i).is_some()) {
                per_group[member[j]].push(j);
            }
        }
        for cands in per_group.iter_mut() {
            if op != T_LIMITK {
                let top = op == T_TOPK;
                cands.sort_by(|&x, &y| {
                    let (a, b) = (input[x].vals[i].unwrap_or(f64::NAN), input[y].vals[i].unwrap_or(f64::NAN));
                    match (a.is_nan(), b.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if top => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
                        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
                    }
                });
            }
            cands.truncate(kk as usize);
            for &j in cands.iter() {
                keep[j][i] = input[j].vals[i];
                if op == T_LIMITK {
                    keep_h[j][i] = input[j].hist(i).cloned();
                }
                if i == 0 {
                    first_order.push(j);
                }
            }
        }
    }
    let mut order = first_order;
    for j in 0..input.len() {
        if !order.contains(&j) {
            order.push(j);
        }
    }
    let mut input: Vec<Option<StepSeries>> = input.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for j in order {
        if let Some(mut s) = input[j].take() {
            s.vals = std::mem::take(&mut keep[j]);
            s.hists = if s.hists.is_empty() { Vec::new() } else { std::mem::take(&mut keep_h[j]) };
            if (0..s.vals.len()).any(|i| s.present(i)) {
                out.push(s);
            }
        }
    }
    Ok(Value::Vector(out))
}

/// `limit_ratio`: keeps a deterministic, label-hash-based share of the series.
fn limit_ratio(mut input: Vec<StepSeries>, r: &[f64]) -> Result<Value, Error> {
    use std::hash::{Hash, Hasher};
    for s in &mut input {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        s.labels.hash(&mut h);
        let offset = h.finish() as f64 / u64::MAX as f64;
        for (i, v) in s.vals.iter_mut().enumerate() {
            let ratio = r[i].clamp(-1.0, 1.0);
            let keep = if ratio >= 0.0 { offset < ratio } else { offset >= 1.0 + ratio };
            if !keep {
                *v = None;
                if let Some(h) = s.hists.get_mut(i) {
                    *h = None;
                }
            }
        }
    }
    input.retain(|s| (0..s.vals.len()).any(|i| s.present(i)));
    Ok(Value::Vector(input))
}
