//! Downsampled blocks: per series and aligned window of the block's
//! resolution, one row of aggregates (Thanos' model, in Parquet).
//!
//! A downsampled block has the raw block's `series.parquet` (its
//! `num_samples` counting windows) and `aggregates.parquet` instead of
//! `samples.parquet`, one row per series and window, sorted by
//! (series_ref, timestamp):
//!
//! | column | type | |
//! |---|---|---|
//! | `series_ref` | u32 | as in `series.parquet` |
//! | `timestamp` | i64 | the window's last sample (ms) |
//! | `count`, `sum`, `min`, `max` | f64 | of the window's samples (staleness markers excluded; `min`/`max` are NaN only if every sample is) |
//! | `first_timestamp`, `first` | i64, f64 | the window's first sample |
//! | `last` | f64 | the window's last sample |
//! | `increase` | f64 | the counter's increase from `first` to `last`, resets accounted as PromQL does |
//! | `resets` | u32 | counter resets inside the window |
//!
//! Window `k` of resolution `r` holds the samples with timestamps in
//! `((k-1)·r, k·r]`: left-open like PromQL's range windows, so a range
//! `(t-R, t]` with `t` and `R` multiples of `r` covers whole windows and
//! `sum_over_time`, `count_over_time`, `min_over_time` and
//! `max_over_time` over the aggregates equal those over the raw samples.
//! Windows are built by folding samples ([`Window::sample`],
//! [`Window::then`]); the fold is associative, so 1-hour windows are
//! folded from 5-minute ones exactly as from raw samples.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use strata_model::downsample::View;

use crate::BlockError;

/// The schema of `aggregates.parquet`.
pub(crate) fn aggregates_schema() -> SchemaRef {
    let f = |n: &str| Field::new(n, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("series_ref", DataType::UInt32, false),
        Field::new("timestamp", DataType::Int64, false),
        f("count"),
        f("sum"),
        f("min"),
        f("max"),
        Field::new("first_timestamp", DataType::Int64, false),
        f("first"),
        f("last"),
        f("increase"),
        Field::new("resets", DataType::UInt32, false),
    ]))
}

/// Writer properties of `aggregates.parquet`: like `samples.parquet`'s.
pub(crate) fn aggregates_props(row_group: usize) -> Result<parquet::file::properties::WriterProperties, BlockError> {
    use parquet::basic::{Compression, Encoding, ZstdLevel};
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(8192)
        .set_max_row_group_row_count(Some(row_group));
    for c in ["timestamp", "first_timestamp"] {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
    }
    for c in ["count", "sum", "min", "max", "first", "last", "increase"] {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::BYTE_STREAM_SPLIT);
    }
    Ok(b.build())
}

/// A record batch of `aggregates.parquet` rows.
pub(crate) fn windows_batch(schema: &SchemaRef, refs: Vec<u32>, rows: &[Window]) -> Result<RecordBatch, BlockError> {
    let f = |get: fn(&Window) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(get).collect::<Vec<_>>()))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(refs)),
        Arc::new(Int64Array::from(rows.iter().map(|w| w.t).collect::<Vec<_>>())),
        f(|w| w.count),
        f(|w| w.sum),
        f(|w| w.min),
        f(|w| w.max),
        Arc::new(Int64Array::from(rows.iter().map(|w| w.first_t).collect::<Vec<_>>())),
        f(|w| w.first),
        f(|w| w.last),
        f(|w| w.increase),
        Arc::new(UInt32Array::from(rows.iter().map(|w| w.resets).collect::<Vec<_>>())),
    ];
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The columns of an `aggregates.parquet` record batch.
pub(crate) struct WindowColumns {
    pub series_ref: UInt32Array,
    t: Int64Array,
    count: Float64Array,
    sum: Float64Array,
    min: Float64Array,
    max: Float64Array,
    first_t: Int64Array,
    first: Float64Array,
    last: Float64Array,
    increase: Float64Array,
    resets: UInt32Array,
}

fn column<T: Array + Clone + 'static>(b: &RecordBatch, name: &str) -> Result<T, BlockError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>().cloned())
        .ok_or_else(|| BlockError::Invalid(format!("aggregates: column {name} missing or of the wrong type")))
}

impl WindowColumns {
    pub fn of(b: &RecordBatch) -> Result<WindowColumns, BlockError> {
        Ok(WindowColumns {
            series_ref: column(b, "series_ref")?,
            t: column(b, "timestamp")?,
            count: column(b, "count")?,
            sum: column(b, "sum")?,
            min: column(b, "min")?,
            max: column(b, "max")?,
            first_t: column(b, "first_timestamp")?,
            first: column(b, "first")?,
            last: column(b, "last")?,
            increase: column(b, "increase")?,
            resets: column(b, "resets")?,
        })
    }

    pub fn window(&self, i: usize) -> Window {
        Window {
            t: self.t.value(i),
            count: self.count.value(i),
            sum: self.sum.value(i),
            min: self.min.value(i),
            max: self.max.value(i),
            first_t: self.first_t.value(i),
            first: self.first.value(i),
            last: self.last.value(i),
            increase: self.increase.value(i),
            resets: self.resets.value(i),
        }
    }
}

/// The columns of `aggregates.parquet` a read in `view` needs.
pub(crate) fn view_columns(view: View) -> &'static [&'static str] {
    match view {
        View::Count => &["series_ref", "timestamp", "count"],
        View::Sum => &["series_ref", "timestamp", "sum"],
        View::Min => &["series_ref", "timestamp", "min"],
        View::Max => &["series_ref", "timestamp", "max"],
        View::Counter => &["series_ref", "timestamp", "first_timestamp", "first", "last", "increase", "resets"],
    }
}

/// The columns of a record batch read with [`view_columns`].
pub(crate) struct ViewColumns {
    pub series_ref: UInt32Array,
    t: Int64Array,
    view: View,
    values: ViewValues,
}

enum ViewValues {
    /// `count`, `sum`, `min` or `max`: one point per window.
    One(Float64Array),
    Counter(Box<CounterColumns>),
}

struct CounterColumns {
    first_t: Int64Array,
    first: Float64Array,
    last: Float64Array,
    increase: Float64Array,
    resets: UInt32Array,
}

impl ViewColumns {
    pub fn of(b: &RecordBatch, view: View) -> Result<ViewColumns, BlockError> {
        let values = match view {
            View::Count => ViewValues::One(column(b, "count")?),
            View::Sum => ViewValues::One(column(b, "sum")?),
            View::Min => ViewValues::One(column(b, "min")?),
            View::Max => ViewValues::One(column(b, "max")?),
            View::Counter => ViewValues::Counter(Box::new(CounterColumns {
                first_t: column(b, "first_timestamp")?,
                first: column(b, "first")?,
                last: column(b, "last")?,
                increase: column(b, "increase")?,
                resets: column(b, "resets")?,
            })),
        };
        Ok(ViewColumns { series_ref: column(b, "series_ref")?, t: column(b, "timestamp")?, view, values })
    }

    /// Row `i` as a window holding the view's aggregates (the others 0),
    /// to be folded into coarser windows read in the same view.
    pub fn window(&self, i: usize) -> Window {
        let t = self.t.value(i);
        let mut w = Window {
            t,
            count: 0.0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
            first_t: t,
            first: 0.0,
            last: 0.0,
            increase: 0.0,
            resets: 0,
        };
        match &self.values {
            ViewValues::One(v) => {
                let x = v.value(i);
                match self.view {
                    View::Count => w.count = x,
                    View::Sum => w.sum = x,
                    View::Min => w.min = x,
                    View::Max => w.max = x,
                    View::Counter => {}
                }
            }
            ViewValues::Counter(c) => {
                w.first_t = c.first_t.value(i);
                w.first = c.first.value(i);
                w.last = c.last.value(i);
                w.increase = c.increase.value(i);
                w.resets = c.resets.value(i);
            }
        }
        w
    }

    /// Appends the points of the windows in `rows` (one series, time
    /// order) whose last sample lies in `[min_t, max_t]`, without points
    /// before `min_t`: what [`Window::points`] gives for each.
    pub fn points(&self, rows: std::ops::Range<usize>, (min_t, max_t): (i64, i64), out: &mut Vec<(i64, f64)>) {
        let ts = &self.t.values()[rows.clone()];
        let (a, z) = if ts.windows(2).all(|w| w[0] <= w[1]) {
            let a = ts.partition_point(|&x| x < min_t);
            (a, ts.partition_point(|&x| x <= max_t).max(a))
        } else {
            (0, ts.len())
        };
        let rows = rows.start + a..rows.start + z;
        let in_range = |t: i64| t >= min_t && t <= max_t;
        match &self.values {
            ViewValues::One(v) => {
                let vs = &v.values()[rows.clone()];
                let ts = &self.t.values()[rows];
                out.extend(ts.iter().copied().zip(vs.iter().copied()).filter(|&(t, _)| in_range(t)));
            }
            ViewValues::Counter(c) => {
                let CounterColumns { first_t, first, last, increase, resets } = c.as_ref();
                for i in rows {
                    let t = self.t.value(i);
                    if !in_range(t) {
                        continue;
                    }
                    let w = Window {
                        t,
                        count: 0.0,
                        sum: 0.0,
                        min: 0.0,
                        max: 0.0,
                        first_t: first_t.value(i),
                        first: first.value(i),
                        last: last.value(i),
                        increase: increase.value(i),
                        resets: resets.value(i),
                    };
                    let start = out.len();
                    w.counter_points(out);
                    // Points are in time order and end at `t <= max_t`:
                    // only leading ones can fall before `min_t`.
                    let early = out[start..].iter().take_while(|(t, _)| *t < min_t).count();
                    if early > 0 {
                        out.drain(start..start + early);
                    }
                }
            }
        }
    }
}

/// Aggregates of one series over one window (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub t: i64,
    pub count: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub first_t: i64,
    pub first: f64,
    pub last: f64,
    pub increase: f64,
    pub resets: u32,
}

/// Prometheus' staleness marker.
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

impl Window {
    /// One raw sample.
    pub fn sample(t: i64, v: f64) -> Window {
        Window { t, count: 1.0, sum: v, min: v, max: v, first_t: t, first: v, last: v, increase: 0.0, resets: 0 }
    }

    /// This window followed by `next` (later samples).
    pub fn then(&self, next: &Window) -> Window {
        // PromQL's reset rule between the last sample and the next one.
        let reset = next.first < self.last;
        let seam = if reset { next.first } else { next.first - self.last };
        Window {
            t: next.t,
            count: self.count + next.count,
            sum: self.sum + next.sum,
            min: if next.min < self.min || self.min.is_nan() { next.min } else { self.min },
            max: if next.max > self.max || self.max.is_nan() { next.max } else { self.max },
            first_t: self.first_t,
            first: self.first,
            last: next.last,
            increase: self.increase + seam + next.increase,
            resets: self.resets + next.resets + reset as u32,
        }
    }

    /// The window's points in `view` (time order).
    pub fn points(&self, view: View, out: &mut Vec<(i64, f64)>) {
        match view {
            View::Count => out.push((self.t, self.count)),
            View::Sum => out.push((self.t, self.sum)),
            View::Min => out.push((self.t, self.min)),
            View::Max => out.push((self.t, self.max)),
            View::Counter => self.counter_points(out),
        }
    }

    /// The first and last samples, and in between, if the counter reset,
    /// a peak `p` and a zero such that PromQL's increase over
    /// `first → p → 0 → last` (each drop counted as a reset) is the
    /// window's increase. The points join raw samples and other windows
    /// exactly as the raw samples would: the first and last are raw.
    fn counter_points(&self, out: &mut Vec<(i64, f64)>) {
        out.push((self.first_t, self.first));
        if self.t == self.first_t {
            return;
        }
        if self.resets > 0 {
            // Never below `first`: a rounding error must not look like a reset.
            let peak = (self.first + self.increase - self.last).max(self.first);
            let mut extra = [0.0f64; 2];
            let mut k = 0usize;
            if peak > self.first {
                extra[k] = peak;
                k += 1;
            }
            if self.last >= peak {
                extra[k] = 0.0;
                k += 1;
            }
            let span = self.t - self.first_t;
            let n = k as i64;
            // Distinct timestamps strictly inside the window (a window
            // that needs k extra points holds at least k + 2 samples).
            if span > n {
                for (i, v) in extra[..k].iter().enumerate() {
                    out.push((self.first_t + span * (i as i64 + 1) / (n + 1), *v));
                }
            }
        }
        out.push((self.t, self.last));
    }
}

/// The window (`k` with `((k-1)·r, k·r]`) a timestamp falls in.
pub fn window_of(t: i64, resolution_ms: i64) -> i64 {
    (t + resolution_ms - 1).div_euclid(resolution_ms)
}

/// Folds time-ordered windows (or samples as [`Window::sample`]) into
/// windows of `resolution_ms`. Staleness markers must be left out by the
/// caller ([`windows_of_samples`] does).
pub fn downsample(input: &[Window], resolution_ms: i64, out: &mut Vec<Window>) {
    fold_windows(input.iter().copied(), resolution_ms, out)
}

/// [`downsample`] over windows as they come.
fn fold_windows(input: impl Iterator<Item = Window>, resolution_ms: i64, out: &mut Vec<Window>) {
    let mut current: Option<(i64, Window)> = None;
    for w in input {
        let k = window_of(w.t, resolution_ms);
        current = Some(match current {
            Some((ck, acc)) if ck == k => (k, acc.then(&w)),
            Some((_, acc)) => {
                out.push(acc);
                (k, w)
            }
            None => (k, w),
        });
    }
    out.extend(current.map(|(_, w)| w));
}

/// One series' windows of a resolution, folded from its raw samples or
/// finer windows as they arrive in time order: what [`downsample`] gives,
/// built incrementally (a read folds rows batch by batch) and without a
/// division per input.
#[derive(Debug, Default)]
pub struct Fold {
    /// End of the last window's interval (`k·r` of `((k-1)·r, k·r]`).
    end: i64,
    windows: Vec<Window>,
}

impl Fold {
    /// Adds `w` (a [`Window::sample`] or a finer window) after the
    /// earlier ones. False, and nothing added, when it is earlier than
    /// the last one added: folding needs time order.
    pub fn push(&mut self, w: &Window, resolution_ms: i64) -> bool {
        match self.windows.last_mut() {
            Some(last) if w.t < last.t => false,
            Some(last) if w.t <= self.end => {
                *last = last.then(w);
                true
            }
            _ => {
                self.end = window_of(w.t, resolution_ms).saturating_mul(resolution_ms);
                self.windows.push(*w);
                true
            }
        }
    }

    /// Adds raw samples (`ts` ascending, later than those added before),
    /// staleness markers left out: [`Fold::push`] of each as a
    /// [`Window::sample`], with only `view`'s aggregates kept up to date
    /// (the others stay those of the window's first sample). False, and
    /// nothing added, when `ts` starts before the last sample added.
    pub fn push_samples(&mut self, ts: &[i64], vs: &[f64], view: View, resolution_ms: i64) -> bool {
        if let (Some(last), Some(&t0)) = (self.windows.last(), ts.first())
            && t0 < last.t
        {
            return false;
        }
        // Each update is `Window::then` with a one-sample window, reduced
        // to the view's aggregates (bit for bit the same).
        match view {
            View::Count => self.fold_samples(ts, vs, resolution_ms, |w, _| w.count += 1.0),
            View::Sum => self.fold_samples(ts, vs, resolution_ms, |w, v| w.sum += v),
            View::Min => self.fold_samples(ts, vs, resolution_ms, |w, v| {
                if v < w.min || w.min.is_nan() {
                    w.min = v
                }
            }),
            View::Max => self.fold_samples(ts, vs, resolution_ms, |w, v| {
                if v > w.max || w.max.is_nan() {
                    w.max = v
                }
            }),
            View::Counter => self.fold_samples(ts, vs, resolution_ms, |w, v| {
                let reset = v < w.last;
                let seam = if reset { v } else { v - w.last };
                w.increase = w.increase + seam + 0.0;
                w.resets += reset as u32;
                w.last = v;
            }),
        }
        true
    }

    fn fold_samples(&mut self, ts: &[i64], vs: &[f64], resolution_ms: i64, update: impl Fn(&mut Window, f64)) {
        for (&t, &v) in ts.iter().zip(vs) {
            if is_stale(v) {
                continue;
            }
            match self.windows.last_mut() {
                Some(w) if t <= self.end => {
                    update(w, v);
                    w.t = t;
                }
                _ => {
                    self.end = window_of(t, resolution_ms).saturating_mul(resolution_ms);
                    self.windows.push(Window::sample(t, v));
                }
            }
        }
    }

    /// The folded windows' points in `view` (time order), without those
    /// before `min_t`.
    pub fn points(&self, view: View, min_t: i64) -> Vec<(i64, f64)> {
        let mut out = Vec::with_capacity(self.windows.len() * if view == View::Counter { 2 } else { 1 });
        for w in &self.windows {
            w.points(view, &mut out);
        }
        let early = out.iter().take_while(|(t, _)| *t < min_t).count();
        out.drain(..early);
        out
    }
}

/// Whether `v` is Prometheus' staleness marker (left out of windows).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Raw samples (time order) as windows of `resolution_ms`, staleness
/// markers left out.
pub fn windows_of_samples(samples: &[(i64, f64)], resolution_ms: i64, out: &mut Vec<Window>) {
    let singles = samples.iter().filter(|s| !is_stale(s.1)).map(|&(t, v)| Window::sample(t, v));
    fold_windows(singles, resolution_ms, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PromQL's increase over samples (resets accounted), no extrapolation.
    fn raw_increase(s: &[(i64, f64)]) -> f64 {
        let mut inc = 0.0;
        for w in s.windows(2) {
            inc += if w[1].1 < w[0].1 { w[1].1 } else { w[1].1 - w[0].1 };
        }
        inc
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn counter_points_keep_every_increase_and_join_like_raw_samples() {
        let mut seed = 7u64;
        for round in 0..300 {
            // A counter with random resets, sampled every 15 s.
            let mut v = (lcg(&mut seed) % 50) as f64;
            let samples: Vec<(i64, f64)> = (0..400)
                .map(|i| {
                    if lcg(&mut seed).is_multiple_of(37) {
                        v = (lcg(&mut seed) % 5) as f64;
                    } else {
                        v += (lcg(&mut seed) % 10) as f64;
                    }
                    (1_000_000 + i * 15_000 + (lcg(&mut seed) % 3) as i64, v)
                })
                .collect();
            for res in [300_000, 3_600_000] {
                let mut windows = Vec::new();
                windows_of_samples(&samples, res, &mut windows);
                let mut points = Vec::new();
                for w in &windows {
                    w.points(View::Counter, &mut points);
                }
                assert!(points.windows(2).all(|p| p[0].0 < p[1].0), "round {round}: points in time order");
                assert_eq!(raw_increase(&points), raw_increase(&samples), "round {round}, resolution {res}");
                assert_eq!(points.first(), samples.first());
                assert_eq!(points.last(), samples.last());
                // 1 h from 5 m windows equals 1 h from raw samples.
                if res == 3_600_000 {
                    let mut five = Vec::new();
                    windows_of_samples(&samples, 300_000, &mut five);
                    let mut hour = Vec::new();
                    downsample(&five, res, &mut hour);
                    assert_eq!(hour, windows);
                }
            }
        }
    }

    #[test]
    fn windows_are_left_open_and_aggregate_like_promql() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let s = [(0, 1.0), (1, 5.0), (300_000, 2.0), (300_001, f64::NAN), (300_002, stale), (600_000, 4.0)];
        let mut w = Vec::new();
        windows_of_samples(&s, 300_000, &mut w);
        // (-5m, 0], (0, 5m], (5m, 10m]
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].t, w[0].count, w[0].sum), (0, 1.0, 1.0));
        assert_eq!((w[1].t, w[1].count, w[1].sum, w[1].min, w[1].max), (300_000, 2.0, 7.0, 2.0, 5.0));
        assert_eq!((w[2].t, w[2].count, w[2].min, w[2].max), (600_000, 2.0, 4.0, 4.0));
        assert!(w[2].sum.is_nan());
        let all_nan = [(1, f64::NAN), (2, f64::NAN)];
        let mut w = Vec::new();
        windows_of_samples(&all_nan, 300_000, &mut w);
        assert!(w[0].min.is_nan() && w[0].max.is_nan());
    }
}
