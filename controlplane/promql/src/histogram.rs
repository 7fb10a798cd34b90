//! Native histograms (float form), as PromQL sees them: exponential bucket
//! schemas −4…8 and custom buckets (schema −53, NHCB). Buckets are kept
//! sparse (index → count); the arithmetic follows Prometheus'
//! `model/histogram.FloatHistogram`.

use std::collections::BTreeMap;

/// Schema of histograms with custom bucket bounds (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetHint {
    #[default]
    Unknown,
    CounterReset,
    NotCounterReset,
    Gauge,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    /// Positive buckets by index (exponential) or by position in
    /// `custom_values` (custom buckets; the last one is `+Inf`).
    pub positive: BTreeMap<i32, f64>,
    pub negative: BTreeMap<i32, f64>,
    pub custom_values: Vec<f64>,
    pub reset_hint: ResetHint,
}

/// One bucket with its bounds, as iterated for quantiles and fractions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub count: f64,
}

/// Two histograms that cannot be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incompatible {
    /// Custom-bucket histograms with different bounds.
    CustomBounds,
    /// An exponential and a custom-bucket histogram.
    Schemas,
}

fn exp_bound(idx: i32, schema: i32) -> f64 {
    // Upper bound of bucket `idx`: 2^(idx * 2^-schema).
    ((idx as f64) * (-(schema as f64)).exp2()).exp2()
}

impl FloatHistogram {
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    fn bounds(&self, idx: i32, positive: bool) -> (f64, f64) {
        if self.uses_custom_buckets() {
            let i = idx.max(0) as usize;
            let lower = if i == 0 {
                f64::NEG_INFINITY
            } else {
                self.custom_values.get(i - 1).copied().unwrap_or(f64::INFINITY)
            };
            let upper = self.custom_values.get(i).copied().unwrap_or(f64::INFINITY);
            return (lower, upper);
        }
        let (lo, hi) = (exp_bound(idx - 1, self.schema), exp_bound(idx, self.schema));
        if positive { (lo, hi) } else { (-hi, -lo) }
    }

    /// Every bucket in ascending order of bounds: negative buckets, the
    /// zero bucket (when it holds observations), positive buckets.
    pub fn buckets(&self) -> Vec<Bucket> {
        let zt = self.zero_threshold;
        let mut out = Vec::with_capacity(self.positive.len() + self.negative.len() + 1);
        for (&idx, &count) in self.negative.iter().rev() {
            let (mut lower, mut upper) = self.bounds(idx, false);
            if upper < 0.0 && upper > -zt {
                upper = -zt;
            }
            if lower > 0.0 && lower < zt {
                lower = zt;
            }
            out.push(Bucket { lower, upper, count });
        }
        if self.zero_count > 0.0 {
            out.push(Bucket { lower: -zt, upper: zt, count: self.zero_count });
        }
        for (&idx, &count) in &self.positive {
            let (mut lower, upper) = self.bounds(idx, true);
            if !self.uses_custom_buckets() && lower > 0.0 && lower < zt {
                lower = zt;
            }
            out.push(Bucket { lower, upper, count });
        }
        out
    }

    fn has_positive(&self) -> bool {
        !self.positive.is_empty()
    }

    fn has_negative(&self) -> bool {
        !self.negative.is_empty()
    }

    /// Multiplies every count and the sum by `f`.
    pub fn mul(&mut self, f: f64) {
        self.count *= f;
        self.sum *= f;
        self.zero_count *= f;
        for v in self.positive.values_mut().chain(self.negative.values_mut()) {
            *v *= f;
        }
    }

    /// Lowers the resolution to `schema` (merging buckets).
    pub fn reduce_to_schema(&mut self, schema: i32) {
        if self.uses_custom_buckets() || schema >= self.schema {
            return;
        }
        let delta = self.schema - schema;
        let remap = |m: &BTreeMap<i32, f64>| {
            let mut out = BTreeMap::new();
            for (&idx, &c) in m {
                *out.entry(((idx - 1) >> delta) + 1).or_insert(0.0) += c;
            }
            out
        };
        self.positive = remap(&self.positive);
        self.negative = remap(&self.negative);
        self.schema = schema;
    }

    /// Raises the zero threshold to at least `zt`, moving the buckets it
    /// covers into the zero bucket (a bucket straddling the new threshold
    /// moves too, and the threshold becomes its upper bound).
    fn widen_zero(&mut self, zt: f64) {
        if self.uses_custom_buckets() || zt <= self.zero_threshold {
            return;
        }
        let mut zt = zt;
        loop {
            let mut changed = false;
            for positive in [true, false] {
                let keys: Vec<i32> = if positive {
                    self.positive.keys().copied().collect()
                } else {
                    self.negative.keys().copied().collect()
                };
                for idx in keys {
                    let (lo, hi) = self.bounds(idx, true);
                    if lo < zt {
                        let c = if positive { self.positive.remove(&idx) } else { self.negative.remove(&idx) };
                        self.zero_count += c.unwrap_or(0.0);
                        if hi > zt {
                            zt = hi;
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        self.zero_threshold = zt;
    }

    fn align(&mut self, other: &FloatHistogram) -> Result<FloatHistogram, Incompatible> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(Incompatible::Schemas);
        }
        let mut other = other.clone();
        if self.uses_custom_buckets() {
            if self.custom_values != other.custom_values {
                return Err(Incompatible::CustomBounds);
            }
            return Ok(other);
        }
        let schema = self.schema.min(other.schema);
        self.reduce_to_schema(schema);
        other.reduce_to_schema(schema);
        let zt = self.zero_threshold.max(other.zero_threshold);
        self.widen_zero(zt);
        other.widen_zero(zt);
        // Widening one may have raised its threshold past the other's.
        let zt = self.zero_threshold.max(other.zero_threshold);
        self.widen_zero(zt);
        other.widen_zero(zt);
        Ok(other)
    }

    /// `self += other` (`factor` 1) or `self -= other` (`factor` −1).
    fn combine(&mut self, other: &FloatHistogram, factor: f64) -> Result<(), Incompatible> {
        let other = self.align(other)?;
        self.count += factor * other.count;
        self.sum += factor * other.sum;
        self.zero_count += factor * other.zero_count;
        for (&idx, &c) in &other.positive {
            *self.positive.entry(idx).or_insert(0.0) += factor * c;
        }
        for (&idx, &c) in &other.negative {
            *self.negative.entry(idx).or_insert(0.0) += factor * c;
        }
        Ok(())
    }

    pub fn add(&mut self, other: &FloatHistogram) -> Result<(), Incompatible> {
        self.combine(other, 1.0)
    }

    pub fn sub(&mut self, other: &FloatHistogram) -> Result<(), Incompatible> {
        self.combine(other, -1.0)
    }

    /// Whether `self` (the later sample) starts over relative to `prev`.
    pub fn detect_reset(&self, prev: &FloatHistogram) -> bool {
        match self.reset_hint {
            ResetHint::CounterReset => return true,
            ResetHint::NotCounterReset | ResetHint::Gauge => return false,
            ResetHint::Unknown => {}
        }
        if self.count < prev.count {
            return true;
        }
        if self.uses_custom_buckets() != prev.uses_custom_buckets() {
            return true;
        }
        if self.uses_custom_buckets() {
            if self.custom_values != prev.custom_values {
                return true;
            }
        } else if self.schema > prev.schema || self.zero_threshold < prev.zero_threshold {
            return true;
        }
        let mut cur = self.clone();
        let mut p = prev.clone();
        let schema = cur.schema.min(p.schema);
        cur.reduce_to_schema(schema);
        p.reduce_to_schema(schema);
        if cur.zero_threshold > p.zero_threshold {
            p.widen_zero(cur.zero_threshold);
        }
        if cur.zero_count < p.zero_count {
            return true;
        }
        let decreased = |a: &BTreeMap<i32, f64>, b: &BTreeMap<i32, f64>| {
            b.iter().any(|(idx, &pc)| a.get(idx).copied().unwrap_or(0.0) < pc)
        };
        decreased(&cur.positive, &p.positive) || decreased(&cur.negative, &p.negative)
    }

    /// Equal as values: same schema, bounds, counts and sum; empty buckets
    /// are the same as missing ones.
    pub fn equals(&self, other: &FloatHistogram) -> bool {
        let same_buckets = |a: &BTreeMap<i32, f64>, b: &BTreeMap<i32, f64>| {
            a.iter().filter(|(_, c)| **c != 0.0).eq(b.iter().filter(|(_, c)| **c != 0.0))
        };
        self.schema == other.schema
            && self.zero_threshold == other.zero_threshold
            && self.zero_count == other.zero_count
            && self.count == other.count
            && (self.sum == other.sum || (self.sum.is_nan() && other.sum.is_nan()))
            && self.custom_values == other.custom_values
            && same_buckets(&self.positive, &other.positive)
            && same_buckets(&self.negative, &other.negative)
    }

    /// `histogram_quantile` on a native histogram.
    pub fn quantile(&self, q: f64) -> f64 {
        if q < 0.0 {
            return f64::NEG_INFINITY;
        }
        if q > 1.0 {
            return f64::INFINITY;
        }
        if self.count == 0.0 || q.is_nan() {
            return f64::NAN;
        }
        let all = self.buckets();
        let forward = self.sum.is_nan() || q < 0.5;
        let mut rank = if forward { q * self.count } else { (1.0 - q) * self.count };
        let mut count = 0.0;
        let mut bucket = Bucket { lower: 0.0, upper: 0.0, count: 0.0 };
        let order: Vec<usize> = if forward { (0..all.len()).collect() } else { (0..all.len()).rev().collect() };
        for &i in &order {
            bucket = all[i];
            if bucket.count == 0.0 {
                continue;
            }
            count += bucket.count;
            if count >= rank {
                break;
            }
        }
        if !self.uses_custom_buckets() && bucket.lower < 0.0 && bucket.upper > 0.0 {
            if !self.has_negative() && self.has_positive() {
                bucket.lower = 0.0;
            } else if !self.has_positive() && self.has_negative() {
                bucket.upper = 0.0;
            }
        } else if self.uses_custom_buckets() {
            if bucket.lower == f64::NEG_INFINITY {
                if bucket.upper <= 0.0 {
                    return bucket.upper;
                }
                bucket.lower = 0.0;
            } else if bucket.upper == f64::INFINITY {
                return bucket.lower;
            }
        }
        if count > self.count {
            count = self.count;
        }
        if count < rank {
            if self.sum.is_nan() {
                return f64::NAN;
            }
            return bucket.upper;
        }
        if forward {
            rank -= count - bucket.count;
        } else {
            rank = count - rank;
        }
        let fraction = rank / bucket.count;
        if self.uses_custom_buckets() || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
            return bucket.lower + (bucket.upper - bucket.lower) * fraction;
        }
        let log_lower = bucket.lower.abs().log2();
        let log_upper = bucket.upper.abs().log2();
        if bucket.lower > 0.0 {
            (log_lower + (log_upper - log_lower) * fraction).exp2()
        } else {
            -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2()
        }
    }

    /// `histogram_fraction(lower, upper)` on a native histogram.
    pub fn fraction(&self, lower: f64, upper: f64) -> f64 {
        if self.count == 0.0 || lower.is_nan() || upper.is_nan() {
            return f64::NAN;
        }
        if lower >= upper {
            return 0.0;
        }
        let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
        let (mut lower_set, mut upper_set) = (false, false);
        let (has_pos, has_neg) = (self.has_positive(), self.has_negative());
        for mut b in self.buckets() {
            let mut zero_bucket = false;
            if b.lower <= 0.0 && b.upper >= 0.0 {
                zero_bucket = true;
                if !has_neg && has_pos {
                    b.lower = 0.0;
                } else if !has_pos && has_neg {
                    b.upper = 0.0;
                }
            }
            let linear = |v: f64| rank + b.count * (v - b.lower) / (b.upper - b.lower);
            let exponential = |v: f64| {
                let (ll, lu, lv) = (b.lower.abs().log2(), b.upper.abs().log2(), v.abs().log2());
                let f = if v > 0.0 { (lv - ll) / (lu - ll) } else { 1.0 - (lv - lu) / (ll - lu) };
                rank + b.count * f
            };
            let interpolate =
                |v: f64| if self.uses_custom_buckets() || zero_bucket { linear(v) } else { exponential(v) };
            if !lower_set && b.lower >= lower {
                lower_rank = rank;
                lower_set = true;
            }
            if !upper_set && b.lower >= upper {
                upper_rank = rank;
                upper_set = true;
            }
            if lower_set && upper_set {
                break;
            }
            if !lower_set && b.lower < lower && b.upper > lower {
                lower_rank = interpolate(lower);
                lower_set = true;
            }
            if !upper_set && b.lower < upper && b.upper > upper {
                upper_rank = interpolate(upper);
                upper_set = true;
            }
            if lower_set && upper_set {
                break;
            }
            rank += b.count;
        }
        let count = self.count;
        if !lower_set || lower_rank > count {
            lower_rank = count;
        }
        if !upper_set || upper_rank > count {
            upper_rank = count;
        }
        (upper_rank - lower_rank) / self.count
    }

    /// Estimated variance of the observations (`histogram_stdvar`): each
    /// bucket's observations sit at its midpoint (geometric for exponential
    /// buckets).
    pub fn variance(&self) -> f64 {
        if self.count == 0.0 {
            return f64::NAN;
        }
        let mean = self.sum / self.count;
        let mut var = 0.0;
        let mut c = 0.0;
        for b in self.buckets() {
            if b.count == 0.0 {
                continue;
            }
            let val = if self.uses_custom_buckets() {
                (b.upper + b.lower) / 2.0
            } else if b.lower <= 0.0 && b.upper >= 0.0 {
                0.0
            } else {
                let mid = (b.upper * b.lower).sqrt();
                if b.upper < 0.0 { -mid } else { mid }
            };
            let delta = val - mean;
            let (s, cc) = crate::functions::kahan_inc(b.count * delta * delta, var, c);
            var = s;
            c = cc;
        }
        (var + c) / self.count
    }
}

/// Go's `%g` for a float64 (shortest digits; exponent form below 1e-4 and
/// from 1e6 on), as Prometheus prints histograms.
fn go_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{f}")
    } else {
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

impl std::fmt::Display for FloatHistogram {
    /// Prometheus' `FloatHistogram.String()`: count, sum and the non-empty
    /// buckets with their bounds (`count_values` uses it as a label value).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{count:{}, sum:{}", go_g(self.count), go_g(self.sum))?;
        for (&idx, &c) in self.negative.iter().rev() {
            if c != 0.0 {
                let (lo, hi) = self.bounds(idx, false);
                write!(f, ", [{},{}):{}", go_g(lo), go_g(hi), go_g(c))?;
            }
        }
        if self.zero_count != 0.0 {
            let zt = self.zero_threshold;
            write!(f, ", [{},{}]:{}", go_g(-zt), go_g(zt), go_g(self.zero_count))?;
        }
        for (&idx, &c) in &self.positive {
            if c != 0.0 {
                let (lo, hi) = self.bounds(idx, true);
                write!(f, ", ({},{}]:{}", go_g(lo), go_g(hi), go_g(c))?;
            }
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(schema: i32, buckets: &[(i32, f64)]) -> FloatHistogram {
        let positive: BTreeMap<i32, f64> = buckets.iter().copied().collect();
        let count = positive.values().sum();
        FloatHistogram { schema, count, sum: count, positive, ..Default::default() }
    }

    #[test]
    fn schema_reduction_merges_neighbours() {
        // Schema 1 buckets 1..=4 → schema 0 buckets 1, 2.
        let mut h = exp(1, &[(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]);
        h.reduce_to_schema(0);
        assert_eq!(h.positive.into_iter().collect::<Vec<_>>(), vec![(1, 3.0), (2, 7.0)]);
    }

    #[test]
    fn add_aligns_schemas_and_custom_bounds_must_match() {
        let mut a = exp(0, &[(1, 1.0)]);
        a.add(&exp(1, &[(1, 1.0), (2, 1.0)])).unwrap();
        assert_eq!(a.positive.get(&1), Some(&3.0));
        let nhcb = |vals: Vec<f64>| FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            custom_values: vals,
            count: 1.0,
            positive: [(0, 1.0)].into(),
            ..Default::default()
        };
        assert_eq!(nhcb(vec![1.0]).clone().add(&nhcb(vec![2.0])), Err(Incompatible::CustomBounds));
        assert_eq!(a.add(&nhcb(vec![1.0])), Err(Incompatible::Schemas));
    }

    #[test]
    fn quantile_interpolates_within_custom_buckets() {
        // Bounds 1, 2, 4, +Inf with 1, 1, 2, 0 observations.
        let h = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            custom_values: vec![1.0, 2.0, 4.0],
            count: 4.0,
            sum: 8.0,
            positive: [(0, 1.0), (1, 1.0), (2, 2.0)].into(),
            ..Default::default()
        };
        assert_eq!(h.quantile(0.25), 1.0);
        assert_eq!(h.quantile(0.5), 2.0);
        assert_eq!(h.quantile(0.75), 3.0);
        assert_eq!(h.fraction(0.0, 2.0), 0.5);
        assert!(h.quantile(f64::NAN).is_nan());
    }

    #[test]
    fn prints_like_prometheus() {
        let h = FloatHistogram {
            count: 20.0,
            sum: 10.0,
            zero_threshold: 0.001,
            zero_count: 2.0,
            positive: [(0, 1.0), (1, 2.0)].into(),
            negative: [(0, 1.0), (1, 2.0)].into(),
            ..Default::default()
        };
        assert_eq!(h.to_string(), "{count:20, sum:10, [-2,-1):2, [-1,-0.5):1, [-0.001,0.001]:2, (0.5,1]:1, (1,2]:2}");
        assert_eq!(go_g(1e6), "1e+06");
        assert_eq!(go_g(123456.0), "123456");
        assert_eq!(go_g(0.00001), "1e-05");
        assert_eq!(go_g(0.0001), "0.0001");
    }

    #[test]
    fn reset_detection() {
        let a = exp(0, &[(1, 2.0), (2, 2.0)]);
        let mut b = exp(0, &[(1, 3.0), (2, 1.0)]);
        assert!(b.detect_reset(&a), "a bucket went down");
        b.reset_hint = ResetHint::NotCounterReset;
        assert!(!b.detect_reset(&a));
        assert!(!exp(0, &[(1, 2.0), (2, 3.0)]).detect_reset(&a));
    }
}
