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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
