//! Rules are evaluated by the querier's query service
//! ([`strata_querier::query_service`]: planning, push-down, StoreAPI
//! fan-out, merge, PromQL), the same code that answers `/api/v1/query`,
//! over the ingesters' and stores' StoreAPI.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_promql::QueryValue;
use strata_querier::QuerierState;

use crate::alerting::LabelSet;

pub struct RuleQuerier {
    state: Arc<QuerierState>,
    timeout: Duration,
}

fn labels_of(l: &strata_promql::Labels) -> LabelSet {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl RuleQuerier {
    pub fn new(state: Arc<QuerierState>, timeout: Duration) -> Self {
        RuleQuerier { state, timeout }
    }

    pub fn state(&self) -> &Arc<QuerierState> {
        &self.state
    }

    async fn run(&self, tenant: &str, expr: &str, t: i64) -> Result<QueryValue, String> {
        let parsed = promql_parser::parser::parse(expr).map_err(|e| format!("could not parse expression: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let out = strata_querier::query_service::evaluate(&self.state, tenant, parsed, t, t, None, deadline)
            .await
            .map_err(|e| e.to_string())?;
        for w in &out.warnings {
            tracing::debug!(tenant, expr, warning = %w, "rule query warning");
        }
        Ok(out.value)
    }

    /// An instant query at `t` (ms): its samples (a scalar is one sample
    /// without labels), as a rule sees them. Histogram samples are refused
    /// as Prometheus 2 refuses them in rules that do not aggregate them.
    pub async fn instant(&self, tenant: &str, expr: &str, t: i64) -> Result<Vec<(LabelSet, f64)>, String> {
        match self.run(tenant, expr, t).await? {
            QueryValue::Vector(v) => {
                Ok(v.into_iter().filter(|s| s.h.is_none()).map(|s| (labels_of(&s.labels), s.v)).collect())
            }
            QueryValue::Scalar { v, .. } => Ok(vec![(LabelSet::new(), v)]),
            other => Err(format!("rule result is not a vector or scalar: {}", other.result_type())),
        }
    }

    /// The newest raw sample of each series a range selector returns at
    /// `t`: labels, its time (ms) and value.
    pub async fn last_samples(&self, tenant: &str, expr: &str, t: i64) -> Result<Vec<(LabelSet, i64, f64)>, String> {
        match self.run(tenant, expr, t).await? {
            QueryValue::Matrix(series) => Ok(series
                .into_iter()
                .filter_map(|s| s.samples.last().map(|(t, v)| (labels_of(&s.labels), *t, *v)))
                .collect()),
            other => Err(format!("expected a range vector, got {}", other.result_type())),
        }
    }
}
