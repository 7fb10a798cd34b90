//! Binary operators: arithmetic, comparison and set operators with vector matching.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD, T_MUL, T_NEQ, T_POW,
    T_SUB, TokenId,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use std::sync::Arc;

use crate::Error;
use crate::eval::{Ctx, SeriesBuilder, StepSeries, Value};
use crate::functions::Point;
use crate::histogram::ResetHint;
use crate::labels::Labels;

/// The operator as written in PromQL.
fn op_str(op: TokenId) -> &'static str {
    match op {
        T_ADD => "+",
        T_SUB => "-",
        T_MUL => "*",
        T_DIV => "/",
        T_MOD => "%",
        T_POW => "^",
        T_EQLC => "==",
        T_NEQ => "!=",
        T_GTR => ">",
        T_LSS => "<",
        T_GTE => ">=",
        T_LTE => "<=",
        T_ATAN2 => "atan2",
        T_LAND => "and",
        T_LOR => "or",
        T_LUNLESS => "unless",
        _ => "?",
    }
}

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Arithmetic operators drop the metric name; comparisons keep it.
fn drops_name(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW | T_ATAN2)
}

/// `(value, keep)` for one pair of operands.
pub(crate) fn apply(op: TokenId, l: f64, r: f64) -> Result<(f64, bool), Error> {
    Ok(match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => return Err(Error::BadData(format!("operator {op} not allowed here"))),
    })
}

/// One operation where at least one operand is a native histogram
/// (Prometheus' `vectorElemBinop`): `h * f`, `f * h`, `h / f`, `h + h`,
/// `h - h`, `h == h`, `h != h`; anything else has no result.
fn apply_points(ctx: &Ctx<'_>, op: TokenId, l: Point, r: Point, return_bool: bool) -> Option<Point> {
    let scaled = |h: &crate::eval::Hist, f: f64| {
        let mut h = (**h).clone();
        h.mul(f);
        Point::H(Arc::new(h))
    };
    let out = match (&l, &r, op) {
        (Point::H(h), Point::F(f), T_MUL) | (Point::F(f), Point::H(h), T_MUL) => Some(scaled(h, *f)),
        (Point::H(h), Point::F(f), T_DIV) => {
            let mut h = (**h).clone();
            h.count /= f;
            h.sum /= f;
            h.zero_count /= f;
            for v in h.positive.values_mut().chain(h.negative.values_mut()) {
                *v /= f;
            }
            Some(Point::H(Arc::new(h)))
        }
        (Point::H(a), Point::H(b), T_ADD | T_SUB) => {
            let mut h = (**a).clone();
            let ok = if op == T_ADD { h.add(b) } else { h.sub(b) };
            ok.ok()?;
            h.reset_hint = ResetHint::Gauge;
            Some(Point::H(Arc::new(h)))
        }
        (Point::H(a), Point::H(b), T_EQLC | T_NEQ) => {
            let keep = a.equals(b) == (op == T_EQLC);
            if return_bool {
                return Some(Point::F(if keep { 1.0 } else { 0.0 }));
            }
            keep.then(|| l.clone())
        }
        _ => {
            let kind = |p: &Point| if matches!(p, Point::H(_)) { "histogram" } else { "float" };
            ctx.info(format_args!(
                "incompatible sample types encountered for binary operator {:?}: {} {} {}",
                op_str(op),
                kind(&l),
                op_str(op),
                kind(&r)
            ));
            None
        }
    };
    if return_bool { None } else { out }
}

pub(crate) fn eval(ctx: &Ctx<'_>, b: &BinaryExpr, ts: &[i64]) -> Result<Value, Error> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ctx.eval(&b.lhs, ts)?;
    let rhs = ctx.eval(&b.rhs, ts)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let mut out = Vec::with_capacity(l.len());
            for (a, c) in l.into_iter().zip(r) {
                let (v, keep) = apply(op, a, c)?;
                out.push(if is_comparison(op) { if keep { 1.0 } else { 0.0 } } else { v });
            }
            Ok(Value::Scalar(out))
        }
        (Value::Vector(l), Value::Scalar(r)) => vector_scalar(ctx, op, l, &r, false, return_bool),
        (Value::Scalar(l), Value::Vector(r)) => vector_scalar(ctx, op, r, &l, true, return_bool),
        (Value::Vector(l), Value::Vector(r)) => {
            let (on, names) = match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                None => (false, Vec::new()),
            };
            match op {
                T_LAND | T_LOR | T_LUNLESS => Ok(Value::Vector(set_op(op, l, r, on, &names, ts.len()))),
                _ => {
                    let card = b.modifier.as_ref().map(|m| m.card.clone()).unwrap_or(VectorMatchCardinality::OneToOne);
                    vector_vector(ctx, op, l, r, on, &names, &card, return_bool, ts.len()).map(Value::Vector)
                }
            }
        }
        _ => Err(Error::BadData("binary expression must contain only scalar and instant vector types".into())),
    }
}

fn vector_scalar(
    ctx: &Ctx<'_>,
    op: TokenId,
    mut vec: Vec<StepSeries>,
    scalar: &[f64],
    swap: bool,
    return_bool: bool,
) -> Result<Value, Error> {
    let cmp = is_comparison(op);
    for s in &mut vec {
        for (i, cell) in s.vals.iter_mut().enumerate() {
            let Some(x) = *cell else { continue };
            let (l, r) = if swap { (scalar[i], x) } else { (x, scalar[i]) };
            let (mut v, mut keep) = apply(op, l, r)?;
            if cmp && swap {
                v = r;
            }
            if return_bool {
                v = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            *cell = keep.then_some(v);
        }
        let hists = std::mem::take(&mut s.hists);
        for (i, h) in hists.into_iter().enumerate() {
            let Some(h) = h else { continue };
            let (l, r) = if swap { (Point::F(scalar[i]), Point::H(h)) } else { (Point::H(h), Point::F(scalar[i])) };
            match apply_points(ctx, op, l, r, return_bool) {
                Some(Point::H(h)) => s.set_hist(i, Some(h)),
                Some(Point::F(v)) => s.vals[i] = Some(v),
                None => {}
            }
        }
        if return_bool || drops_name(op) {
            s.drop_name = true;
        }
    }
    vec.retain(|s| (0..s.vals.len()).any(|i| s.present(i)));
    Ok(Value::Vector(vec))
}

fn set_op(
    op: TokenId,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    on: bool,
    names: &[String],
    steps: usize,
) -> Vec<StepSeries> {
    let lsig: Vec<u64> = l.iter().map(|s| s.labels.signature(on, names)).collect();
    let rsig: Vec<u64> = r.iter().map(|s| s.labels.signature(on, names)).collect();
    let present = |side: &[StepSeries], sigs: &[u64], i: usize| -> HashSet<u64> {
        side.iter().zip(sigs).filter(|(s, _)| s.present(i)).map(|(_, &g)| g).collect()
    };
    match op {
        T_LAND | T_LUNLESS => {
            let mut out = l;
            for i in 0..steps {
                let rs = present(&r, &rsig, i);
                for (s, g) in out.iter_mut().zip(&lsig) {
                    let found = rs.contains(g);
                    if (op == T_LAND) != found {
                        s.vals[i] = None;
                        s.set_hist(i, None);
                    }
                }
            }
            out.retain(|s| (0..steps).any(|i| s.present(i)));
            out
        }
        _ => {
            let mut rr = r;
            for i in 0..steps {
                let ls = present(&l, &lsig, i);
                for (s, g) in rr.iter_mut().zip(&rsig) {
                    if ls.contains(g) {
                        s.vals[i] = None;
                        s.set_hist(i, None);
                    }
                }
            }
            let mut b = SeriesBuilder::new(steps);
            for s in l.into_iter().chain(rr) {
                if !(0..steps).any(|i| s.present(i)) {
                    continue;
                }
                let slot = b.slot(&s.labels, s.drop_name);
                for i in 0..steps {
                    // The same label set from both sides at one step cannot
                    // happen (the right side is masked); keep the left.
                    if b.series[slot].present(i) {
                        continue;
                    }
                    if let Some(v) = s.vals[i] {
                        b.series[slot].vals[i] = Some(v);
                    } else if let Some(h) = s.hist(i) {
                        b.series[slot].set_hist(i, Some(h.clone()));
                    }
                }
            }
            b.series
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn vector_vector(
    ctx: &Ctx<'_>,
    op: TokenId,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    on: bool,
    names: &[String],
    card: &VectorMatchCardinality,
    return_bool: bool,
    steps: usize,
) -> Result<Vec<StepSeries>, Error> {
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let include: Vec<String> = card.labels().map(|l| l.labels.clone()).unwrap_or_default();
    // The "many" side is `lhs` below; `rhs` is the "one" side.
    let (lhs, rhs) = if one_to_many { (r, l) } else { (l, r) };
    let lsig: Vec<u64> = lhs.iter().map(|s| s.labels.signature(on, names)).collect();
    let rsig: Vec<u64> = rhs.iter().map(|s| s.labels.signature(on, names)).collect();
    let mut out = SeriesBuilder::new(steps);
    let mut result_labels: HashMap<(usize, usize), (Labels, usize)> = HashMap::new();
    for i in 0..steps {
        let mut right: HashMap<u64, usize> = HashMap::new();
        for (j, s) in rhs.iter().enumerate() {
            if !s.present(i) {
                continue;
            }
            if let Some(&prev) = right.get(&rsig[j]) {
                let side = if one_to_many { "left" } else { "right" };
                return Err(Error::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    s.labels.signature_text(on, names),
                    rhs[prev].labels,
                    s.labels
                )));
            }
            right.insert(rsig[j], j);
        }
        let mut matched: HashMap<u64, HashSet<u64>> = HashMap::new();
        for (k, ls) in lhs.iter().enumerate() {
            if !ls.present(i) {
                continue;
            }
            let Some(&j) = right.get(&lsig[k]) else { continue };
            let result = match (ls.vals[i], rhs[j].vals[i]) {
                (Some(lv), Some(rv)) => {
                    let (a, c) = if one_to_many { (rv, lv) } else { (lv, rv) };
                    let (mut v, mut keep) = apply(op, a, c)?;
                    if return_bool {
                        v = if keep { 1.0 } else { 0.0 };
                        keep = true;
                    }
                    if !keep {
                        continue;
                    }
                    Point::F(v)
                }
                (lv, rv) => {
                    let point = |v: Option<f64>, s: &StepSeries| match v {
                        Some(v) => Point::F(v),
                        None => Point::H(s.hist(i).cloned().expect("present")),
                    };
                    let (lp, rp) = (point(lv, ls), point(rv, &rhs[j]));
                    let (a, c) = if one_to_many { (rp, lp) } else { (lp, rp) };
                    match apply_points(ctx, op, a, c, return_bool) {
                        Some(p) => p,
                        None => continue,
                    }
                }
            };
            let (labels, slot) = match result_labels.get(&(k, j)) {
                Some(x) => x.clone(),
                None => {
                    let labels = result_metric(&ls.labels, &rhs[j].labels, card, on, names, &include);
                    let drop = drops_name(op) || return_bool || ls.drop_name;
                    let slot = out.slot(&labels, drop);
                    result_labels.insert((k, j), (labels.clone(), slot));
                    (labels, slot)
                }
            };
            let set = matched.entry(lsig[k]).or_default();
            if matches!(card, VectorMatchCardinality::OneToOne) {
                if !set.is_empty() {
                    return Err(Error::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                            .into(),
                    ));
                }
                set.insert(0);
            } else {
                let h = labels.signature(true, &labels.0.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
                if !set.insert(h) {
                    return Err(Error::Execution(
                        "multiple matches for labels: grouping labels must ensure unique matches".into(),
                    ));
                }
            }
            match result {
                Point::F(v) => out.set(slot, i, v)?,
                Point::H(h) => out.set_hist(slot, i, h)?,
            }
        }
    }
    Ok(out.series)
}

fn result_metric(
    l: &Labels,
    r: &Labels,
    card: &VectorMatchCardinality,
    on: bool,
    names: &[String],
    include: &[String],
) -> Labels {
    let mut out = l.clone();
    if matches!(card, VectorMatchCardinality::OneToOne) {
        out = if on { out.keep(names) } else { out.drop(names) };
    }
    for name in include {
        match r.get(name) {
            Some(v) => out.set(name, v),
            None => out.remove(name),
        }
    }
    out
}
