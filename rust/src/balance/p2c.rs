//! Power of two choices over peak-EWMA latency (Linkerd's balancer, after tower's `PeakEwma`).
//!
//! Each endpoint keeps an RTT estimate that jumps to a slower observation at once (the peak)
//! and otherwise decays toward recent observations with a ~10 s time constant; reading it also
//! decays it toward 0, so an endpoint that was slow once is tried again later. The cost of an
//! endpoint is `estimate * (requests in flight + 1)`; of two endpoints drawn at random, the
//! cheaper one wins.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Estimate an endpoint starts with, before it has answered (Linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Added to the time a failed try took (a 5xx response, a connect failure, a reset): an
/// endpoint that fails fast must look worse than healthy ones under load, not better.
pub const FAILURE_PENALTY: Duration = Duration::from_millis(250);
/// Time constant of the exponential decay.
pub const DECAY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct PeakEwma {
    state: Mutex<Estimate>,
}

#[derive(Debug)]
struct Estimate {
    rtt_ns: f64,
    stamp: Instant,
}

impl Estimate {
    /// Folds in one observation (`rtt_ns` 0 means "time passed, nothing observed").
    fn update(&mut self, rtt_ns: f64, now: Instant) -> f64 {
        if self.rtt_ns < rtt_ns {
            self.rtt_ns = rtt_ns;
        } else {
            let elapsed = now.saturating_duration_since(self.stamp).as_nanos() as f64;
            let decay = (-elapsed / DECAY.as_nanos() as f64).exp();
            self.rtt_ns = self.rtt_ns * decay + rtt_ns * (1.0 - decay);
        }
        self.stamp = now;
        self.rtt_ns
    }
}

impl PeakEwma {
    pub fn new(now: Instant) -> Self {
        PeakEwma {
            state: Mutex::new(Estimate {
                rtt_ns: DEFAULT_RTT.as_nanos() as f64,
                stamp: now,
            }),
        }
    }

    /// Records the time an endpoint took to answer.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        self.state.lock().update(rtt.as_nanos() as f64, now);
    }

    /// `estimate * (pending + 1)`.
    pub fn cost(&self, pending: u64, now: Instant) -> f64 {
        let estimate = self.state.lock().update(0.0, now);
        estimate * (pending + 1) as f64
    }
}

/// Draws two distinct indexes out of `n` and returns the one with the lower cost.
pub fn pick(n: usize, cost: impl Fn(usize) -> f64) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        _ => {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            Some(if cost(b) < cost(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests;
