//! Per-tenant limits that change at run time (Mimir's runtime overrides):
//! a YAML file with `defaults:` and per-tenant `tenants:` entries, read by
//! `--limits.overrides-file` and reloaded when it changes, and the
//! ingestion rate limiter they drive.
//!
//! ```yaml
//! defaults:
//!   ingestion_rate: 100000      # samples/s per tenant at this entry point
//!   ingestion_burst: 200000     # samples at once (default: the rate)
//! tenants:
//!   team-a: { ingestion_rate: 500000, ingestion_burst: 1000000 }
//!   batch-jobs: { ingestion_rate: 1000 }
//! ```
//!
//! A key a tenant does not set comes from `defaults`; a key neither sets
//! is unlimited.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// One tenant's (or the defaults') settings; `None`: not set here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrides {
    /// Samples (and exemplars) per second accepted from the tenant.
    pub ingestion_rate: Option<f64>,
    /// Samples accepted at once above the rate (the bucket's size).
    pub ingestion_burst: Option<f64>,
}

/// The overrides file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default)]
    pub defaults: TenantOverrides,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantOverrides>,
}

/// A tenant's ingestion limit: `rate` samples/s, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: f64,
}

impl Overrides {
    /// Parses and checks an overrides file; the message names the entry.
    pub fn parse(text: &str) -> Result<Overrides, String> {
        if text.trim().is_empty() {
            return Ok(Overrides::default());
        }
        let o: Overrides = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let check = |at: &str, t: &TenantOverrides| -> Result<(), String> {
            for (key, v) in [("ingestion_rate", t.ingestion_rate), ("ingestion_burst", t.ingestion_burst)] {
                if let Some(v) = v
                    && !(v.is_finite() && v > 0.0)
                {
                    return Err(format!("{at}: {key} must be a positive number of samples, not {v}"));
                }
            }
            Ok(())
        };
        check("defaults", &o.defaults)?;
        for (tenant, t) in &o.tenants {
            crate::tenant::validate_tenant(tenant).map_err(|m| format!("tenants: {tenant:?}: {m}"))?;
            check(&format!("tenants: {tenant}"), t)?;
        }
        Ok(o)
    }

    /// `tenant`'s ingestion limit, `None` when unlimited.
    pub fn ingestion(&self, tenant: &str) -> Option<RateLimit> {
        let own = self.tenants.get(tenant).copied().unwrap_or_default();
        let rate = own.ingestion_rate.or(self.defaults.ingestion_rate)?;
        let burst = own.ingestion_burst.or(self.defaults.ingestion_burst).unwrap_or(rate).max(1.0);
        Some(RateLimit { rate, burst })
    }
}

/// Token buckets per tenant: a request of `n` samples passes if the
/// tenant's bucket holds `n` tokens (refilled at its rate up to its burst).
#[derive(Debug, Default)]
pub struct IngestionLimiter {
    /// Tenant → (tokens, time of the last refill in ms).
    buckets: HashMap<String, (f64, i64)>,
}

/// Buckets kept before full ones are forgotten (a full bucket is the
/// same as no bucket).
const MAX_BUCKETS: usize = 10_000;

impl IngestionLimiter {
    /// Takes `n` tokens from `tenant`'s bucket at `now_ms`, or says how many
    /// whole seconds to wait until they could be there (at least 1). A
    /// request larger than the burst can never pass: `Err(None)`.
    pub fn admit(&mut self, tenant: &str, limit: RateLimit, n: u64, now_ms: i64) -> Result<(), Option<u64>> {
        let n = n as f64;
        if n > limit.burst {
            return Err(None);
        }
        if !self.buckets.contains_key(tenant) && self.buckets.len() >= MAX_BUCKETS {
            self.buckets.retain(|_, (tokens, _)| *tokens < limit.burst);
        }
        let (tokens, last) = self.buckets.entry(tenant.to_string()).or_insert((limit.burst, now_ms));
        let elapsed = (now_ms - *last).max(0) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * limit.rate).min(limit.burst);
        *last = now_ms;
        if *tokens >= n {
            *tokens -= n;
            Ok(())
        } else {
            Err(Some(((n - *tokens) / limit.rate).ceil().max(1.0) as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_inherit_the_defaults_and_bad_files_name_the_entry() {
        let o = Overrides::parse(
            "defaults: {ingestion_rate: 100}\ntenants:\n  a: {ingestion_rate: 10, ingestion_burst: 50}\n  b: {ingestion_burst: 500}\n",
        )
        .unwrap();
        assert_eq!(o.ingestion("a"), Some(RateLimit { rate: 10.0, burst: 50.0 }));
        assert_eq!(o.ingestion("b"), Some(RateLimit { rate: 100.0, burst: 500.0 }));
        assert_eq!(o.ingestion("c"), Some(RateLimit { rate: 100.0, burst: 100.0 }));
        assert_eq!(Overrides::parse("tenants: {a: {ingestion_burst: 5}}").unwrap().ingestion("a"), None);
        assert_eq!(Overrides::parse("").unwrap().ingestion("a"), None);
        for (text, want) in [
            ("defaults: {ingestion_rate: -1}", "defaults: ingestion_rate must be a positive"),
            ("tenants: {a: {ingestion_burst: 0}}", "tenants: a: ingestion_burst"),
            ("tenants: {'a/b': {ingestion_rate: 1}}", "tenants: \"a/b\""),
            ("defaults: {ingestion_rates: 1}", "unknown field `ingestion_rates`"),
            ("limits: {}", "unknown field `limits`"),
        ] {
            let err = Overrides::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn the_bucket_refills_at_the_rate_up_to_the_burst() {
        let mut l = IngestionLimiter::default();
        let lim = RateLimit { rate: 100.0, burst: 300.0 };
        assert_eq!(l.admit("a", lim, 300, 0), Ok(()));
        // Empty: 150 samples need 1.5 s of refill, said as 2 s.
        assert_eq!(l.admit("a", lim, 150, 0), Err(Some(2)));
        // Another tenant has its own bucket.
        assert_eq!(l.admit("b", lim, 300, 0), Ok(()));
        // After 1 s, 100 tokens; after 10 s, capped at the burst.
        assert_eq!(l.admit("a", lim, 100, 1000), Ok(()));
        assert_eq!(l.admit("a", lim, 1, 1000), Err(Some(1)));
        assert_eq!(l.admit("a", lim, 300, 11_000), Ok(()));
        assert_eq!(l.admit("a", lim, 301, 100_000), Err(None), "larger than the burst");
    }
}
