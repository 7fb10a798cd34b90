//! A circuit breaker in front of the simulated payment provider.
//!
//! Closed: calls go through; `failure_threshold` consecutive failures open it.
//! Open: calls fail fast until `open_for` has passed, then it is half-open.
//! Half-open: one trial call at a time; success closes, failure re-opens.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// Numeric value exported as the `circuit_breaker.state` gauge.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Instant,
    trial_in_flight: bool,
}

pub struct CircuitBreaker {
    inner: Mutex<Inner>,
    failure_threshold: u32,
    open_for: Duration,
}

/// Permission to call the provider; report the result with [`CircuitBreaker::record`].
#[derive(Debug, PartialEq, Eq)]
pub enum Permit {
    Call,
    Rejected,
}

impl CircuitBreaker {
    pub fn new(failure_threshold: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: Instant::now(),
                trial_in_flight: false,
            }),
            failure_threshold,
            open_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        let mut g = self.lock();
        self.refresh(&mut g);
        g.state
    }

    fn refresh(&self, g: &mut Inner) {
        if g.state == BreakerState::Open && g.opened_at.elapsed() >= self.open_for {
            g.state = BreakerState::HalfOpen;
            g.trial_in_flight = false;
        }
    }

    pub fn acquire(&self) -> Permit {
        let mut g = self.lock();
        self.refresh(&mut g);
        match g.state {
            BreakerState::Closed => Permit::Call,
            BreakerState::Open => Permit::Rejected,
            BreakerState::HalfOpen if !g.trial_in_flight => {
                g.trial_in_flight = true;
                Permit::Call
            }
            BreakerState::HalfOpen => Permit::Rejected,
        }
    }

    pub fn record(&self, success: bool) {
        let mut g = self.lock();
        match (g.state, success) {
            (_, true) => {
                g.state = BreakerState::Closed;
                g.failures = 0;
                g.trial_in_flight = false;
            }
            (BreakerState::HalfOpen, false) => {
                g.state = BreakerState::Open;
                g.opened_at = Instant::now();
                g.trial_in_flight = false;
            }
            (_, false) => {
                g.failures += 1;
                if g.failures >= self.failure_threshold && g.state == BreakerState::Closed {
                    g.state = BreakerState::Open;
                    g.opened_at = Instant::now();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_half_opens_and_closes() {
        let b = CircuitBreaker::new(3, Duration::from_millis(30));
        for _ in 0..3 {
            assert_eq!(b.acquire(), Permit::Call);
            b.record(false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.acquire(), Permit::Rejected);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.acquire(), Permit::Call);
        assert_eq!(b.acquire(), Permit::Rejected, "only one trial call while half-open");
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.acquire(), Permit::Call);
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
