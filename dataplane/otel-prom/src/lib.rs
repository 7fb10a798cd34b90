//! OTLP metrics → Prometheus series.
//!
//! Implements the OpenTelemetry specification's "Prometheus and OpenMetrics
//! compatibility" rules for OTLP → Prometheus (the underscore-escaping
//! strategy with type and unit suffixes, the one Prometheus 2.x can store):
//!
//! * [`naming`]: metric names (unit suffixes, `_total`, `_ratio`) and label names;
//! * [`Translator`]: gauges, sums, histograms and summaries to samples,
//!   resource attributes to `job`/`instance`/`target_info`, promoted
//!   resource attributes, scope labels, exemplars, no-recorded-value → stale
//!   marker, and delta → cumulative conversion ([`delta`]).
//!
//! The translator never panics on input: data points it cannot represent are
//! counted as rejected with a message that names the metric and the reason,
//! which OTLP receivers return as a partial success.

pub mod delta;
pub mod encode;
pub mod naming;
pub mod otlp_http;
mod translate;

pub use translate::{Rejection, Stats, TranslateOutput, Translator, TranslatorConfig};

/// The bit pattern Prometheus uses to mark a series as stale.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True if `v` is exactly Prometheus' staleness marker.
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}
