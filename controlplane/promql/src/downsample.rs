//! Reading downsampled data: rewriting a query so that the functions that
//! can be computed from per-window aggregates read those instead of raw
//! samples (Thanos' mapping, made exact).
//!
//! | function | reads view | evaluated as |
//! |---|---|---|
//! | `sum_over_time(x[R])` | `sum` | `sum_over_time` |
//! | `count_over_time(x[R])` | `count` | `sum_over_time` |
//! | `min_over_time(x[R])` | `min` | `min_over_time` |
//! | `max_over_time(x[R])` | `max` | `max_over_time` |
//! | `avg_over_time(x[R])` | `sum`, `count` | `sum_over_time(sum) / sum_over_time(count)` |
//! | `rate(x[R])`, `increase(x[R])` | `counter` | the same function |
//!
//! A selector is rewritten to resolution `r` only where the answer stays
//! the raw one: `R` is a multiple of `r` and every evaluation time (less
//! the offset) is a multiple of `r`, so each range `(t-R, t]` covers whole
//! windows. Everything else reads raw samples. The view and resolution
//! travel as reserved matchers (`strata_model::downsample`).

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{BinaryExpr, Call, Expr, MatrixSelector, ParenExpr};
use strata_model::downsample::{RESOLUTION_LABEL, RESOLUTIONS, VIEW_LABEL, View};

use crate::storage::{at_ms, offset_ms};

/// The resolutions a query may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxResolution {
    /// Raw samples only (`max_source_resolution=0s`).
    Raw,
    /// At most this many ms (`5m`, `1h`).
    Upto(i64),
    /// The coarsest resolution that keeps the answer (`auto`, the default).
    Auto,
}

impl MaxResolution {
    /// `max_source_resolution` as Thanos takes it: `auto`, `0s`, `5m`, `1h`
    /// (any duration; resolutions up to it are read).
    pub fn parse(text: &str) -> Result<MaxResolution, String> {
        let t = text.trim();
        if t.is_empty() || t == "auto" {
            return Ok(MaxResolution::Auto);
        }
        let ms = parse_duration_ms(t).ok_or_else(|| {
            format!("invalid max_source_resolution {text:?}: want auto or a duration such as 0s, 5m, 1h")
        })?;
        Ok(if ms < RESOLUTIONS[0] { MaxResolution::Raw } else { MaxResolution::Upto(ms) })
    }

    fn cap(self) -> i64 {
        match self {
            MaxResolution::Raw => 0,
            MaxResolution::Upto(ms) => ms,
            MaxResolution::Auto => i64::MAX,
        }
    }
}

/// A Prometheus duration (`5m`, `1h30m`, `300s`, `0`) or seconds (`300`), in ms.
fn parse_duration_ms(t: &str) -> Option<i64> {
    if let Ok(secs) = t.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as i64);
    }
    // The parser refuses zero durations ("0s", "0m"): they mean raw.
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if !digits.is_empty() && digits.chars().all(|c| c == '0') && digits.len() < t.len() {
        return Some(0);
    }
    promql_parser::util::parse_duration(t).ok().map(|d| d.as_millis() as i64)
}

/// The evaluation grid of the query: first time and step (0: one time).
#[derive(Debug, Clone, Copy)]
struct Grid {
    start: i64,
    end: i64,
    step: i64,
}

impl Grid {
    /// Whether every evaluation time minus `offset` is a multiple of `r`.
    fn aligned(&self, r: i64, offset: i64, at: Option<i64>) -> bool {
        match at {
            Some(t) => (t - offset).rem_euclid(r) == 0,
            None => (self.start - offset).rem_euclid(r) == 0 && (self.step == 0 || self.step % r == 0),
        }
    }
}

/// `expr` with the selectors of mapped functions reading downsampled views
/// where that keeps the answer; the resolutions chosen (empty when all
/// reads stay raw). `step` 0 for an instant query at `start`.
pub fn rewrite(expr: &Expr, start: i64, end: i64, step: i64, max: MaxResolution) -> (Expr, Vec<i64>) {
    let mut used = Vec::new();
    if max == MaxResolution::Raw {
        return (expr.clone(), used);
    }
    let grid = Grid { start, end, step };
    let out = walk(expr, &grid, max.cap(), &mut used);
    used.sort_unstable();
    used.dedup();
    (out, used)
}

fn walk(expr: &Expr, g: &Grid, cap: i64, used: &mut Vec<i64>) -> Expr {
    match expr {
        Expr::Call(c) => {
            if let Some(e) = rewrite_call(c, g, cap, used) {
                return e;
            }
            let mut c = c.clone();
            c.args.args = c.args.args.iter().map(|a| Box::new(walk(a, g, cap, used))).collect();
            Expr::Call(c)
        }
        Expr::Aggregate(a) => {
            let mut a = a.clone();
            a.expr = Box::new(walk(&a.expr, g, cap, used));
            if let Some(p) = &a.param {
                a.param = Some(Box::new(walk(p, g, cap, used)));
            }
            Expr::Aggregate(a)
        }
        Expr::Unary(u) => {
            let mut u = u.clone();
            u.expr = Box::new(walk(&u.expr, g, cap, used));
            Expr::Unary(u)
        }
        Expr::Binary(b) => {
            let mut b = b.clone();
            b.lhs = Box::new(walk(&b.lhs, g, cap, used));
            b.rhs = Box::new(walk(&b.rhs, g, cap, used));
            Expr::Binary(b)
        }
        Expr::Paren(p) => Expr::Paren(ParenExpr { expr: Box::new(walk(&p.expr, g, cap, used)) }),
        // A subquery evaluates on its own grid: left raw.
        Expr::Subquery(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => expr.clone(),
    }
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        _ => e,
    }
}

/// The coarsest resolution up to `cap` at which `ms` covers whole windows
/// at every evaluation time.
fn resolution_for(ms: &MatrixSelector, g: &Grid, cap: i64) -> Option<i64> {
    let range = ms.range.as_millis() as i64;
    let offset = offset_ms(&ms.vs.offset);
    let at = at_ms(&ms.vs.at, g.start, g.end);
    RESOLUTIONS.iter().rev().copied().find(|&r| r <= cap && range >= r && range % r == 0 && g.aligned(r, offset, at))
}

fn with_view(ms: &MatrixSelector, view: View, resolution: i64) -> Expr {
    let mut ms = ms.clone();
    let reserved = [VIEW_LABEL, RESOLUTION_LABEL];
    ms.vs.matchers.matchers.retain(|m| !reserved.contains(&m.name.as_str()));
    ms.vs.matchers.matchers.push(Matcher::new(MatchOp::Equal, VIEW_LABEL, view.name()));
    ms.vs.matchers.matchers.push(Matcher::new(MatchOp::Equal, RESOLUTION_LABEL, &resolution.to_string()));
    for alt in ms.vs.matchers.or_matchers.iter_mut() {
        alt.retain(|m| !reserved.contains(&m.name.as_str()));
        alt.push(Matcher::new(MatchOp::Equal, VIEW_LABEL, view.name()));
        alt.push(Matcher::new(MatchOp::Equal, RESOLUTION_LABEL, &resolution.to_string()));
    }
    Expr::MatrixSelector(ms)
}

fn call(template: &Call, name: &str, arg: Expr) -> Option<Expr> {
    // The parser's function table is private: take the entry from a parse.
    let Ok(Expr::Call(parsed)) = promql_parser::parser::parse(&format!("{name}(x[1m])")) else { return None };
    let func = parsed.func;
    let mut c = template.clone();
    c.func = func;
    c.args.args = vec![Box::new(arg)];
    Some(Expr::Call(c))
}

fn rewrite_call(c: &Call, g: &Grid, cap: i64, used: &mut Vec<i64>) -> Option<Expr> {
    let name = c.func.name;
    let mapped = matches!(
        name,
        "sum_over_time" | "count_over_time" | "min_over_time" | "max_over_time" | "avg_over_time" | "rate" | "increase"
    );
    if !mapped || c.args.args.len() != 1 {
        return None;
    }
    let Expr::MatrixSelector(ms) = unparen(&c.args.args[0]) else { return None };
    let r = resolution_for(ms, g, cap)?;
    let out = match name {
        "sum_over_time" => call(c, "sum_over_time", with_view(ms, View::Sum, r))?,
        "count_over_time" => call(c, "sum_over_time", with_view(ms, View::Count, r))?,
        "min_over_time" => call(c, "min_over_time", with_view(ms, View::Min, r))?,
        "max_over_time" => call(c, "max_over_time", with_view(ms, View::Max, r))?,
        "rate" | "increase" => call(c, name, with_view(ms, View::Counter, r))?,
        "avg_over_time" => {
            let sum = call(c, "sum_over_time", with_view(ms, View::Sum, r))?;
            let count = call(c, "sum_over_time", with_view(ms, View::Count, r))?;
            let div = promql_parser::parser::token::TokenType::new(promql_parser::parser::token::T_DIV);
            Expr::Paren(ParenExpr {
                expr: Box::new(Expr::Binary(BinaryExpr {
                    op: div,
                    lhs: Box::new(sum),
                    rhs: Box::new(count),
                    modifier: None,
                })),
            })
        }
        _ => return None,
    };
    used.push(r);
    Some(out)
}

/// `expr` with the reserved matchers of every selector removed: for an
/// evaluation over series already read in the selectors' one view (the
/// store gateway's pushed-down aggregation), which then need no tags and
/// reach the engine without another copy.
pub fn without_views(expr: &Expr) -> Expr {
    let strip = |ms: &mut Vec<Matcher>| ms.retain(|m| !strata_model::downsample::is_reserved(&m.name));
    let mut e = expr.clone();
    fn visit(e: &mut Expr, strip: &dyn Fn(&mut Vec<Matcher>)) {
        match e {
            Expr::VectorSelector(vs) => {
                strip(&mut vs.matchers.matchers);
                vs.matchers.or_matchers.iter_mut().for_each(strip);
            }
            Expr::MatrixSelector(ms) => {
                strip(&mut ms.vs.matchers.matchers);
                ms.vs.matchers.or_matchers.iter_mut().for_each(strip);
            }
            Expr::Call(c) => c.args.args.iter_mut().for_each(|a| visit(a, strip)),
            Expr::Aggregate(a) => {
                visit(&mut a.expr, strip);
                if let Some(p) = a.param.as_mut() {
                    visit(p, strip);
                }
            }
            Expr::Unary(u) => visit(&mut u.expr, strip),
            Expr::Binary(b) => {
                visit(&mut b.lhs, strip);
                visit(&mut b.rhs, strip);
            }
            Expr::Paren(p) => visit(&mut p.expr, strip),
            Expr::Subquery(s) => visit(&mut s.expr, strip),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    visit(&mut e, &strip);
    e
}

/// The reserved `(name, value)` pairs of a selector's matchers (empty for
/// a raw read).
pub fn reserved_pairs(matchers: &[Matcher]) -> Vec<(String, String)> {
    matchers
        .iter()
        .filter(|m| strata_model::downsample::is_reserved(&m.name) && matches!(m.op, MatchOp::Equal))
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect()
}

/// Marks a series fetched for a selector with that selector's reserved
/// pairs, so that reads of different views of one series stay apart in
/// one [`crate::MemoryStorage`].
pub fn tag_view(labels: &mut crate::Labels, reserved: &[(String, String)]) {
    for (n, v) in reserved {
        labels.set(n, v);
    }
}

/// Whether `labels` carry exactly the reserved pairs `reserved`.
pub(crate) fn same_view(labels: &crate::Labels, reserved: &[(String, String)]) -> bool {
    [VIEW_LABEL, RESOLUTION_LABEL].iter().all(|name| {
        let want = reserved.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        labels.get(name) == want
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const M5: i64 = 300_000;

    fn rw(q: &str, start: i64, step: i64, max: MaxResolution) -> (String, Vec<i64>) {
        let e = crate::parse(q).unwrap();
        let (out, used) = rewrite(&e, start, start + 10 * step, step, max);
        (out.to_string(), used)
    }

    #[test]
    fn rewritten_aggregations_can_still_be_pushed_down() {
        for q in [
            "sum by (environment) (rate(http_requests_total[1h]))",
            "sum(rate(x{code=\"500\"}[1h]))",
            "max(max_over_time(x{a=~\"b.*\"}[1h]))",
        ] {
            let e = crate::parse(q).unwrap();
            let (out, used) = rewrite(&e, 100 * H, 110 * H, H, MaxResolution::Auto);
            assert_eq!(used, vec![H], "{q}");
            let aggs = crate::pushdown::pushable_aggregates(&out);
            assert_eq!(aggs.len(), 1, "{q}");
            assert!(crate::pushdown::query_text(aggs[0]).is_some(), "{q} rewritten to {out} cannot be pushed down");
        }
    }

    #[test]
    fn mapped_functions_read_the_coarsest_aligned_resolution() {
        let (q, used) = rw("sum by (env) (rate(x[1h]))", 100 * H, H, MaxResolution::Auto);
        assert_eq!(used, vec![H]);
        assert!(q.contains("__strata_view__=\"counter\"") && q.contains("__strata_resolution__=\"3600000\""), "{q}");
        // 30m is not a multiple of 1h: 5m.
        let (_, used) = rw("rate(x[30m])", 100 * H, H, MaxResolution::Auto);
        assert_eq!(used, vec![M5]);
        // Steps of 1m are not aligned to any resolution: raw.
        let (q, used) = rw("rate(x[1h])", 100 * H, 60_000, MaxResolution::Auto);
        assert!(used.is_empty() && !q.contains("__strata"), "{q}");
        // A start off the grid: raw; an offset that realigns it: downsampled.
        let (_, used) = rw("rate(x[1h])", 100 * H + 60_000, H, MaxResolution::Auto);
        assert!(used.is_empty());
        let (_, used) = rw("rate(x[1h] offset 1m)", 100 * H + 60_000, H, MaxResolution::Auto);
        assert_eq!(used, vec![H]);
        // Capped.
        let (_, used) = rw("rate(x[1h])", 100 * H, H, MaxResolution::Upto(M5));
        assert_eq!(used, vec![M5]);
        let (q, used) = rw("rate(x[1h])", 100 * H, H, MaxResolution::Raw);
        assert!(used.is_empty() && !q.contains("__strata"));
    }

    #[test]
    fn functions_map_to_their_aggregates() {
        let (q, _) = rw("count_over_time(x[1h])", 0, H, MaxResolution::Auto);
        assert!(q.starts_with("sum_over_time(") && q.contains("\"count\""), "{q}");
        let (q, _) = rw("avg_over_time(x[1h])", 0, H, MaxResolution::Auto);
        assert!(q.contains("\"sum\"") && q.contains("\"count\"") && q.contains(" / "), "{q}");
        // Not mapped: raw.
        for f in ["quantile_over_time(0.5, x[1h])", "irate(x[1h])", "last_over_time(x[1h])", "x", "deriv(x[1h])"] {
            let (q, used) = rw(f, 0, H, MaxResolution::Auto);
            assert!(used.is_empty() && !q.contains("__strata"), "{f}: {q}");
        }
        // Inside a subquery: raw.
        let (_, used) = rw("max_over_time(rate(x[1h])[1d:1h])", 0, H, MaxResolution::Auto);
        assert!(used.is_empty());
    }

    #[test]
    fn without_views_leaves_the_query_as_written() {
        for q in [
            "sum by (environment) (rate(http_requests_total{code=\"500\"}[1h])) / sum(rate(x[1h]))",
            "avg_over_time(x[2h]) + on (a) group_left max_over_time(y[1h] offset 1h)",
            "max_over_time(x[1h]) - min_over_time(x[1h]) > 0",
        ] {
            let e = crate::parse(q).unwrap();
            let (down, used) = rewrite(&e, 100 * H, 110 * H, H, MaxResolution::Auto);
            assert!(!used.is_empty() && down.to_string().contains(VIEW_LABEL), "{down}");
            let stripped = without_views(&down).to_string();
            assert!(!stripped.contains(VIEW_LABEL) && !stripped.contains(RESOLUTION_LABEL), "{stripped}");
            assert_eq!(without_views(&e).to_string(), e.to_string());
        }
    }

    #[test]
    fn max_source_resolution_parses_like_thanos() {
        assert_eq!(MaxResolution::parse("auto"), Ok(MaxResolution::Auto));
        assert_eq!(MaxResolution::parse(""), Ok(MaxResolution::Auto));
        assert_eq!(MaxResolution::parse("0s"), Ok(MaxResolution::Raw));
        assert_eq!(MaxResolution::parse("0"), Ok(MaxResolution::Raw));
        assert_eq!(MaxResolution::parse("5m"), Ok(MaxResolution::Upto(M5)));
        assert_eq!(MaxResolution::parse("1h"), Ok(MaxResolution::Upto(H)));
        assert_eq!(MaxResolution::parse("3600"), Ok(MaxResolution::Upto(H)));
        assert!(MaxResolution::parse("soon").is_err());
    }
}
