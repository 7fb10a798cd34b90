//! Fault injection: error rate, latency multiplier and payment-provider
//! failure rate, from the environment at start and changeable at runtime
//! through `POST /admin/faults` (optionally for a limited duration).

use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Faults {
    /// Probability (0..1) that an /api request fails with 500.
    pub error_rate: f64,
    /// Multiplies every endpoint's simulated work time.
    pub latency_multiplier: f64,
    /// Probability (0..1) that the payment provider declines with an error.
    pub payment_failure_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults { error_rate: 0.0, latency_multiplier: 1.0, payment_failure_rate: 0.05 }
    }
}

/// Body of `POST /admin/faults`; omitted fields keep their value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    pub error_rate: Option<f64>,
    pub latency_multiplier: Option<f64>,
    pub payment_failure_rate: Option<f64>,
    /// Revert to the previous settings after this many seconds.
    pub duration_seconds: Option<f64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("{0} must be between 0 and 1, got {1}")]
    Rate(&'static str, f64),
    #[error("latency_multiplier must be between 0 and 100, got {0}")]
    Multiplier(f64),
    #[error("duration_seconds must be positive, got {0}")]
    Duration(f64),
}

fn rate(name: &'static str, v: f64) -> Result<f64, FaultError> {
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(FaultError::Rate(name, v)) }
}

impl Faults {
    /// Reads `ERROR_RATE`, `LATENCY_MULTIPLIER` and `PAYMENT_FAILURE_RATE`.
    pub fn from_env() -> Result<Self, String> {
        let mut f = Faults::default();
        let read = |k: &str| -> Result<Option<f64>, String> {
            match std::env::var(k) {
                Ok(v) if !v.trim().is_empty() => {
                    v.trim().parse::<f64>().map(Some).map_err(|_| format!("{k}={v:?} is not a number"))
                }
                _ => Ok(None),
            }
        };
        let update = FaultUpdate {
            error_rate: read("ERROR_RATE")?,
            latency_multiplier: read("LATENCY_MULTIPLIER")?,
            payment_failure_rate: read("PAYMENT_FAILURE_RATE")?,
            duration_seconds: None,
        };
        f = f.apply(&update).map_err(|e| e.to_string())?;
        Ok(f)
    }

    pub fn apply(&self, u: &FaultUpdate) -> Result<Faults, FaultError> {
        let mut f = *self;
        if let Some(v) = u.error_rate {
            f.error_rate = rate("error_rate", v)?;
        }
        if let Some(v) = u.payment_failure_rate {
            f.payment_failure_rate = rate("payment_failure_rate", v)?;
        }
        if let Some(v) = u.latency_multiplier {
            if !(0.0..=100.0).contains(&v) {
                return Err(FaultError::Multiplier(v));
            }
            f.latency_multiplier = v;
        }
        if let Some(d) = u.duration_seconds
            && (d.is_nan() || d <= 0.0)
        {
            return Err(FaultError::Duration(d));
        }
        Ok(f)
    }
}

/// Current faults plus an optional scheduled revert.
pub struct FaultState {
    inner: RwLock<(Faults, Option<(Instant, Faults)>)>,
}

impl FaultState {
    pub fn new(f: Faults) -> Self {
        FaultState { inner: RwLock::new((f, None)) }
    }

    /// The faults in effect now (applying a due revert).
    pub fn current(&self) -> Faults {
        {
            let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
            match g.1 {
                Some((at, _)) if Instant::now() >= at => {}
                _ => return g.0,
            }
        }
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some((at, prev)) = g.1
            && Instant::now() >= at
        {
            g.0 = prev;
            g.1 = None;
        }
        g.0
    }

    pub fn update(&self, u: &FaultUpdate) -> Result<Faults, FaultError> {
        let now = self.current();
        let next = now.apply(u)?;
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let revert =
            u.duration_seconds.map(|d| (Instant::now() + Duration::from_secs_f64(d), g.1.map_or(now, |(_, p)| p)));
        *g = (next, revert);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_validate_and_revert() {
        let s = FaultState::new(Faults::default());
        let bad = FaultUpdate {
            error_rate: Some(1.5),
            latency_multiplier: None,
            payment_failure_rate: None,
            duration_seconds: None,
        };
        assert_eq!(s.update(&bad), Err(FaultError::Rate("error_rate", 1.5)));
        let u = FaultUpdate {
            error_rate: None,
            latency_multiplier: Some(5.0),
            payment_failure_rate: None,
            duration_seconds: Some(0.05),
        };
        assert_eq!(s.update(&u).unwrap().latency_multiplier, 5.0);
        assert_eq!(s.current().latency_multiplier, 5.0);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.current().latency_multiplier, 1.0);
    }
}
