//! Aggregation push-down: evaluating `sum by (…) (rate(x[5m]))` where the
//! data lives and shipping one value per group and step instead of every
//! raw sample.
//!
//! An aggregation is *pushable* when its result at step `t` can be combined
//! from partial results computed independently by sources that each hold a
//! disjoint set of series, all of them complete for the data window of `t`:
//! `sum`, `min`, `max`, `count` and `group` (with `by`/`without`, not
//! grouping on `__name__`) of a plain instant selector or of a function of
//! one range selector (`rate`, `increase`, `*_over_time`, …), without `@`.
//! The caller (the querier) decides, per step, whether a source covers the
//! step's data window; it fetches partial results for the covered steps,
//! combines them with [`combine`] and hands them to the engine through
//! [`crate::Storage::pushed`]; the engine evaluates the remaining steps from
//! raw samples as usual and splices the two.

use std::collections::HashMap;

use promql_parser::parser::token::{T_COUNT, T_GROUP, T_MAX, T_MIN, T_SUM};
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};

use crate::labels::{Labels, METRIC_NAME};

/// Values of one aggregation at some steps, computed elsewhere.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushedAggregate {
    /// Step timestamps (ms) covered, ascending.
    pub steps: Vec<i64>,
    /// The aggregation's output series, one value (or none) per covered step.
    pub series: Vec<(Labels, Vec<Option<f64>>)>,
}

/// Whether `a` can be evaluated per source and combined (see the module docs).
pub fn is_pushable(a: &AggregateExpr) -> bool {
    if !matches!(a.op.id(), T_SUM | T_MIN | T_MAX | T_COUNT | T_GROUP) || a.param.is_some() {
        return false;
    }
    let names = match &a.modifier {
        None => &[][..],
        Some(LabelModifier::Include(l)) | Some(LabelModifier::Exclude(l)) => &l.labels[..],
    };
    if names.iter().any(|n| n == METRIC_NAME) {
        return false;
    }
    match unparen(&a.expr) {
        Expr::VectorSelector(vs) => vs.at.is_none(),
        Expr::Call(c) => {
            if c.func.name.starts_with("absent") {
                return false;
            }
            let mut ranges = 0;
            for arg in &c.args.args {
                match unparen(arg) {
                    Expr::MatrixSelector(ms) if ms.vs.at.is_none() => ranges += 1,
                    Expr::NumberLiteral(_) => {}
                    _ => return false,
                }
            }
            ranges == 1
        }
        _ => false,
    }
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        _ => e,
    }
}

/// The pushable aggregations of `expr` that are evaluated at the query's
/// own steps (not inside a subquery or under `@`), outermost first.
pub fn pushable_aggregates(expr: &Expr) -> Vec<&AggregateExpr> {
    let mut out = Vec::new();
    collect(expr, &mut out);
    out
}

fn collect<'a>(expr: &'a Expr, out: &mut Vec<&'a AggregateExpr>) {
    match expr {
        Expr::Aggregate(a) => {
            if is_pushable(a) {
                out.push(a);
                return;
            }
            collect(&a.expr, out);
            if let Some(p) = &a.param {
                collect(p, out);
            }
        }
        Expr::Unary(u) => collect(&u.expr, out),
        Expr::Binary(b) => {
            collect(&b.lhs, out);
            collect(&b.rhs, out);
        }
        Expr::Paren(p) => collect(&p.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| collect(a, out)),
        // A subquery evaluates its expression on its own grid.
        Expr::Subquery(_) => {}
        Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

/// The data an aggregation reads at step `t`: samples with timestamps in
/// `[t - before, t - after]` (`after` is the offset, negative for a
/// negative offset).
pub fn data_window(a: &AggregateExpr, lookback_ms: i64) -> (i64, i64) {
    let sels = crate::storage::selections(&a.expr, 0, 0, lookback_ms);
    let min = sels.iter().map(|s| s.min_t).min().unwrap_or(0);
    let max = sels.iter().map(|s| s.max_t).max().unwrap_or(0);
    (-min, -max)
}

/// The key under which a pushed aggregation is stored and looked up.
pub fn key(a: &AggregateExpr) -> String {
    a.to_string()
}

/// The text to send to a source for `a`: its PromQL, when that parses back
/// to exactly `a` (otherwise the aggregation is not pushed).
///
/// The printer sorts a selector's matchers, so the text parses back with
/// them in another order than the query (or a rewrite) wrote them; the
/// comparison ignores that order, which means nothing.
pub fn query_text(a: &AggregateExpr) -> Option<String> {
    let text = key(a);
    match crate::parse(&text) {
        Ok(Expr::Aggregate(mut back)) => {
            let mut a = a.clone();
            sort_matchers(&mut a.expr);
            sort_matchers(&mut back.expr);
            (back == a).then_some(text)
        }
        _ => None,
    }
}

/// Sorts the plain matchers of the selectors of a pushable aggregation's
/// argument as the printer does (by their text; `or` groups are printed
/// in their own order and left alone).
fn sort_matchers(e: &mut Expr) {
    let sort = |vs: &mut promql_parser::parser::VectorSelector| {
        if vs.matchers.or_matchers.is_empty() {
            vs.matchers.matchers.sort_by_cached_key(|m| m.to_string());
        }
    };
    match e {
        Expr::Paren(p) => sort_matchers(&mut p.expr),
        Expr::VectorSelector(vs) => sort(vs),
        Expr::MatrixSelector(ms) => sort(&mut ms.vs),
        Expr::Call(c) => c.args.args.iter_mut().for_each(|a| sort_matchers(a)),
        _ => {}
    }
}

/// Combines the partial results of aggregation `a` from sources holding
/// disjoint series: sums and counts add up, minima and maxima compare.
/// Every part has one value per step of the same step list.
pub fn combine(a: &AggregateExpr, parts: Vec<Vec<(Labels, Vec<Option<f64>>)>>) -> Vec<(Labels, Vec<Option<f64>>)> {
    let op = a.op.id();
    let mut out: Vec<(Labels, Vec<Option<f64>>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for part in parts {
        for (labels, vals) in part {
            let Some(&i) = index.get(&labels) else {
                index.insert(labels.clone(), out.len());
                out.push((labels, vals));
                continue;
            };
            for (acc, v) in out[i].1.iter_mut().zip(vals) {
                let Some(v) = v else { continue };
                *acc = Some(match *acc {
                    None => v,
                    Some(a) => match op {
                        T_SUM | T_COUNT => a + v,
                        T_MIN if a > v || a.is_nan() => v,
                        T_MAX if a < v || a.is_nan() => v,
                        T_GROUP => 1.0,
                        _ => a,
                    },
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_in_any_order_are_pushed_down() {
        for q in [
            r#"sum by (env) (rate(x{route="/a",code="500"}[5m]))"#,
            r#"max(y{b="1",a=~"2.*"})"#,
            r#"count((rate(x{z="1",a="2"}[1h])))"#,
        ] {
            let a = agg(q);
            let text = query_text(&a).unwrap_or_else(|| panic!("{q} is not pushed down"));
            assert!(text.contains(r#"{a"#) || text.contains(r#"{code"#), "{text}");
        }
    }

    fn agg(q: &str) -> AggregateExpr {
        match crate::parse(q).unwrap() {
            Expr::Aggregate(a) => a,
            e => panic!("not an aggregation: {e}"),
        }
    }

    #[test]
    fn pushable_shapes() {
        for q in [
            "sum by (environment) (rate(http_requests_total[5m]))",
            "max without (instance) (up)",
            "count(quantile_over_time(0.9, x{a=~\"b.*\"}[10m] offset 1h))",
            "group by (job) ((rate(x[1m])))",
        ] {
            assert!(is_pushable(&agg(q)), "{q}");
        }
        for q in [
            "avg by (environment) (rate(x[5m]))",
            "topk(5, rate(x[5m]))",
            "sum(rate(x[5m] @ 100))",
            "sum by (__name__) (x)",
            "sum(absent_over_time(x[5m]))",
            "sum(rate(x[5m]) / rate(y[5m]))",
            "sum(max_over_time(rate(x[1m])[5m:]))",
            "sum(sum(x))",
        ] {
            assert!(!is_pushable(&agg(q)), "{q}");
        }
    }

    #[test]
    fn finds_aggregations_at_query_steps_only() {
        let e = crate::parse(
            "topk(5, sum by (route) (rate(x[5m]))) / on() group_left sum(x) + max_over_time(sum(rate(y[1m]))[10m:])",
        )
        .unwrap();
        let found: Vec<String> = pushable_aggregates(&e).into_iter().map(key).collect();
        assert_eq!(found, vec!["sum by (route) (rate(x[5m]))", "sum(x)"]);
    }

    #[test]
    fn query_text_round_trips() {
        for q in [
            "sum by (environment, le) (rate(http_request_duration_seconds_bucket{job=~\"a|b\\\\.c\",x!=\"q\\\"uote\"}[5m]))",
            "count without (instance) (up offset -5m)",
            "min(quantile_over_time(0.25, x[1h30m]))",
        ] {
            let a = agg(q);
            let text = query_text(&a).unwrap_or_else(|| panic!("{q} does not round-trip"));
            assert_eq!(agg(&text), a);
        }
    }

    /// Evaluating with some steps pushed (and only the raw samples the other
    /// steps need) gives exactly the result of evaluating everything here.
    #[test]
    fn engine_splices_pushed_steps() {
        use crate::{Engine, MemoryStorage, QueryValue, Series};
        let mut full = MemoryStorage::new();
        let mut all = Vec::new();
        for (env, slope) in [("a", 1.0), ("b", 3.0), ("c", 0.5)] {
            for inst in 0..3 {
                let samples: Vec<(i64, f64)> =
                    (0..400).map(|i| (i * 15_000, (i as f64) * slope * (inst + 1) as f64)).collect();
                let labels = Labels::new(vec![
                    ("__name__".into(), "x_total".into()),
                    ("env".into(), env.into()),
                    ("inst".into(), inst.to_string()),
                ]);
                all.push(Series::floats(labels, samples));
            }
        }
        for s in &all {
            full.add(s.clone());
        }
        let engine = Engine::default();
        let (start, end, step) = (600_000, 5_900_000, 60_000);
        for q in [
            "sum by (env) (rate(x_total[5m]))",
            "topk(2, max by (env) (x_total)) / on (env) group_left count by (env) (increase(x_total[2m]))",
        ] {
            let expr = crate::parse(q).unwrap();
            let want = engine.range(&full, &expr, start, end, step).unwrap();
            // Steps 20..60 are pushed: computed from the full data.
            let (cs, ce) = (start + 20 * step, start + 60 * step);
            let mut part = MemoryStorage::new();
            let mut spans: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
            for a in pushable_aggregates(&expr) {
                let pushed = engine.range(&full, &Expr::Aggregate(a.clone()), cs, ce, step).unwrap();
                let QueryValue::Matrix(m) = pushed else { panic!() };
                let steps: Vec<i64> = (cs..=ce).step_by(step as usize).collect();
                let series: Vec<(Labels, Vec<Option<f64>>)> = m
                    .into_iter()
                    .map(|s| {
                        let vals = steps.iter().map(|t| s.samples.iter().find(|x| x.0 == *t).map(|x| x.1)).collect();
                        (s.labels, vals)
                    })
                    .collect();
                part.add_pushed(a, PushedAggregate { steps, series });
                spans.insert(key(a), vec![(start, cs - step), (ce + step, end)]);
            }
            // Raw samples: only what the selections for the other steps need.
            let sels = crate::selections_pushed(&expr, start, end, 300_000, &|a| spans.get(&key(a)).cloned());
            for s in &all {
                let keep: Vec<(i64, f64)> = s
                    .samples
                    .iter()
                    .copied()
                    .filter(|(t, _)| {
                        sels.iter().any(|sel| {
                            sel.matchers.iter().all(|m| m.is_match(s.labels.get(&m.name).unwrap_or_default()))
                                && *t >= sel.min_t
                                && *t <= sel.max_t
                        })
                    })
                    .collect();
                part.add(Series::floats(s.labels.clone(), keep));
            }
            let got = engine.range(&part, &expr, start, end, step).unwrap();
            assert_eq!(got, want, "{q}");
        }
    }

    #[test]
    fn windows_follow_range_lookback_and_offset() {
        assert_eq!(data_window(&agg("sum(rate(x[5m]))"), 300_000), (300_000, 0));
        assert_eq!(data_window(&agg("sum(x offset 1m)"), 300_000), (360_000, 60_000));
        assert_eq!(data_window(&agg("sum(x offset -1m)"), 300_000), (240_000, -60_000));
    }

    #[test]
    fn combines_partial_results() {
        let l = |v: &str| Labels::new(vec![("env".into(), v.into())]);
        let parts = || {
            vec![
                vec![(l("a"), vec![Some(1.0), None, Some(5.0)])],
                vec![(l("a"), vec![Some(2.0), Some(3.0), None]), (l("b"), vec![None, Some(7.0), None])],
            ]
        };
        assert_eq!(
            combine(&agg("sum by (env) (x)"), parts()),
            vec![(l("a"), vec![Some(3.0), Some(3.0), Some(5.0)]), (l("b"), vec![None, Some(7.0), None])]
        );
        assert_eq!(combine(&agg("min by (env) (x)"), parts())[0].1, vec![Some(1.0), Some(3.0), Some(5.0)]);
        assert_eq!(combine(&agg("max by (env) (x)"), parts())[0].1, vec![Some(2.0), Some(3.0), Some(5.0)]);
        assert_eq!(combine(&agg("group by (env) (x)"), parts())[0].1, vec![Some(1.0), Some(3.0), Some(5.0)]);
    }
}
