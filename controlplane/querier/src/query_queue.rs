//! `--query.max-concurrency`: at most N PromQL evaluations run at once;
//! the others wait in line, and the wait counts against the query's own
//! deadline (`--query.timeout` or the `timeout` parameter), as in
//! Prometheus. The line itself is bounded by the HTTP server's
//! `--web.max-concurrent-requests`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct QueryQueue {
    slots: Arc<Semaphore>,
    waiting: AtomicI64,
}

/// A running query's slot; freed on drop.
pub struct Admitted(#[allow(dead_code)] OwnedSemaphorePermit);

impl QueryQueue {
    pub fn new(max_concurrency: usize) -> QueryQueue {
        QueryQueue { slots: Arc::new(Semaphore::new(max_concurrency.max(1))), waiting: AtomicI64::new(0) }
    }

    /// Waits for a slot until `deadline`; None if the deadline passed first.
    pub async fn admit(&self, deadline: Instant) -> Option<Admitted> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(Admitted(p));
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let got = tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match got {
            Ok(Ok(p)) => Some(Admitted(p)),
            _ => None,
        }
    }

    /// Queries waiting for a slot now.
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Per-tenant admission (`max_concurrent_queries` in
/// `--limits.overrides-file`): a tenant at its limit waits, within the
/// query's deadline, without taking one of the global slots meanwhile.
#[derive(Default)]
pub struct TenantQueues {
    /// Tenant → (its limit when the semaphore was made, the semaphore).
    slots: std::sync::Mutex<std::collections::HashMap<String, (u32, Arc<Semaphore>)>>,
}

/// Tenants whose semaphore is kept; idle ones are dropped past it.
const MAX_TENANT_QUEUES: usize = 10_000;

impl TenantQueues {
    /// A slot of `tenant` under `limit` (none: not limited) until
    /// `deadline`; `Err` if the deadline passed first.
    pub async fn admit(
        &self,
        tenant: &str,
        limit: Option<u32>,
        deadline: Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let Some(limit) = limit else { return Ok(None) };
        let sem = {
            let mut g = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            if !g.contains_key(tenant) && g.len() >= MAX_TENANT_QUEUES {
                g.retain(|_, (n, s)| s.available_permits() < *n as usize);
            }
            let e = g.entry(tenant.to_string()).or_insert_with(|| (limit, Arc::new(Semaphore::new(limit as usize))));
            if e.0 != limit {
                // A changed limit takes effect for new queries; running
                // ones finish on the old semaphore.
                *e = (limit, Arc::new(Semaphore::new(limit as usize)));
            }
            e.1.clone()
        };
        match tokio::time::timeout_at(deadline.into(), sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_tenant_at_its_limit_waits_while_others_run() {
        let q = TenantQueues::default();
        let soon = || Instant::now() + Duration::from_millis(100);
        let a1 = q.admit("a", Some(1), soon()).await.expect("a's first");
        assert!(a1.is_some());
        assert!(q.admit("a", Some(1), soon()).await.is_err(), "a's second waits out its deadline");
        assert!(q.admit("b", Some(1), soon()).await.expect("b is not held up by a").is_some());
        assert!(q.admit("c", None, soon()).await.expect("unlimited").is_none());
        drop(a1);
        assert!(q.admit("a", Some(1), soon()).await.is_ok(), "a's slot is free again");
        // A raised limit applies at once.
        let _held = q.admit("a", Some(1), soon()).await.expect("a");
        assert!(q.admit("a", Some(2), soon()).await.is_ok());
    }

    #[tokio::test]
    async fn past_the_limit_queries_wait_and_time_out_at_their_deadline() {
        let q = Arc::new(QueryQueue::new(1));
        let first = q.admit(Instant::now() + Duration::from_secs(1)).await.expect("a free slot");
        let started = Instant::now();
        assert!(q.admit(started + Duration::from_millis(200)).await.is_none());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(190) && waited < Duration::from_secs(2), "{waited:?}");
        // A waiting query runs as soon as the slot frees.
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.admit(Instant::now() + Duration::from_secs(10)).await.is_some() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(q.waiting(), 1);
        drop(first);
        assert!(waiter.await.expect("join"));
        assert_eq!(q.waiting(), 0);
    }
}
