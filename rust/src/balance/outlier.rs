//! Outlier detection (Envoy's consecutive-5xx and consecutive-gateway-error detectors, Istio's
//! `outlierDetection` fields): an endpoint that fails N times in a row is ejected for
//! `base_ejection * (times ejected)`, never more than `max_ejection_percent` of the backend's
//! endpoints at once but always at least one (as Envoy). Each `interval` an endpoint stays in
//! service takes one off its ejection count. The state lives in the `Endpoint`, so it survives
//! snapshot swaps that keep the endpoint.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A backend's `outlier_detection` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// 0 = this detector is off.
    pub consecutive_5xx: u32,
    pub consecutive_gateway_errors: u32,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

/// What one try at an endpoint came to, for the detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// 500, 501, 505...: counts toward `consecutive_5xx` only.
    ServerError,
    /// 502, 503, 504, connect failure, reset, timeout: counts toward both detectors.
    GatewayError,
}

impl Outcome {
    pub fn of_status(status: http::StatusCode) -> Outcome {
        match status.as_u16() {
            502..=504 => Outcome::GatewayError,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Success,
        }
    }
}

/// One endpoint's detector state.
#[derive(Debug, Default)]
pub struct Health {
    /// Read on every pick: only an ejected endpoint takes the lock.
    ejected: AtomicBool,
    state: Mutex<HealthState>,
    pub ejections_total: AtomicU64,
}

#[derive(Debug, Default)]
struct HealthState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    until: Option<Instant>,
    /// Multiplier of the next ejection time.
    ejections: u32,
    /// When the multiplier last changed (it decays by one per interval in service).
    since: Option<Instant>,
}

impl Health {
    /// Whether the endpoint is ejected at `now`; an ejection that has run out ends here.
    pub fn is_ejected(&self, now: Instant) -> bool {
        if !self.ejected.load(Relaxed) {
            return false;
        }
        let mut s = self.state.lock();
        match s.until {
            Some(until) if now < until => true,
            _ => {
                // Readmitted with a clean streak (failures of requests that were in flight
                // when it was ejected do not count against it).
                s.until = None;
                s.since = Some(now);
                s.consecutive_5xx = 0;
                s.consecutive_gateway = 0;
                self.ejected.store(false, Relaxed);
                false
            }
        }
    }

    /// Records an outcome; `true` when it reached a threshold and the endpoint should be ejected
    /// (the caller checks the backend-wide cap, then calls `eject`).
    pub fn record(&self, outcome: Outcome, cfg: &OutlierConfig) -> bool {
        let mut s = self.state.lock();
        match outcome {
            Outcome::Success => {
                s.consecutive_5xx = 0;
                s.consecutive_gateway = 0;
                return false;
            }
            Outcome::ServerError => {
                s.consecutive_5xx += 1;
                s.consecutive_gateway = 0;
            }
            Outcome::GatewayError => {
                s.consecutive_5xx += 1;
                s.consecutive_gateway += 1;
            }
        }
        let hit = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
        hit(s.consecutive_5xx, cfg.consecutive_5xx) || hit(s.consecutive_gateway, cfg.consecutive_gateway_errors)
    }

    /// Ejects the endpoint for `base * ejections` (the multiplier first decays by the intervals
    /// spent in service since it last changed); counters start over.
    pub fn eject(&self, cfg: &OutlierConfig, now: Instant) {
        let mut s = self.state.lock();
        if let (Some(since), false) = (s.since, cfg.interval.is_zero()) {
            let healthy = now.saturating_duration_since(since).as_nanos() / cfg.interval.as_nanos();
            s.ejections = s.ejections.saturating_sub(u32::try_from(healthy).unwrap_or(u32::MAX));
        }
        s.ejections = s.ejections.saturating_add(1);
        s.since = Some(now);
        s.until = Some(now + cfg.base_ejection.saturating_mul(s.ejections));
        s.consecutive_5xx = 0;
        s.consecutive_gateway = 0;
        self.ejected.store(true, Relaxed);
        self.ejections_total.fetch_add(1, Relaxed);
    }

    /// Forgets the failure streak (an endpoint not ejected because of the cap starts over).
    pub fn reset(&self) {
        let mut s = self.state.lock();
        s.consecutive_5xx = 0;
        s.consecutive_gateway = 0;
    }

    /// Whether the endpoint was ejected and has not been seen readmitted yet (one atomic load).
    pub fn flagged(&self) -> bool {
        self.ejected.load(Relaxed)
    }

    /// Whether the endpoint is ejected now (for stats: an ejection that ran out shows as over).
    pub fn currently_ejected(&self) -> bool {
        self.ejected.load(Relaxed) && self.state.lock().until.is_some_and(|until| Instant::now() < until)
    }
}

/// How many of `n` endpoints may be ejected at once: `max_percent` of them, at least one.
pub fn max_ejected(n: usize, max_percent: u32) -> usize {
    (n * max_percent as usize / 100).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 3,
            consecutive_gateway_errors: 0,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 10,
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_streak() {
        let h = Health::default();
        let c = cfg();
        assert!(!h.record(Outcome::GatewayError, &c));
        assert!(!h.record(Outcome::ServerError, &c));
        assert!(!h.record(Outcome::Success, &c));
        assert!(!h.record(Outcome::ServerError, &c));
        assert!(!h.record(Outcome::ServerError, &c));
        assert!(h.record(Outcome::GatewayError, &c));
        let gw = OutlierConfig {
            consecutive_5xx: 0,
            consecutive_gateway_errors: 2,
            ..c
        };
        let h = Health::default();
        assert!(!h.record(Outcome::ServerError, &gw));
        assert!(!h.record(Outcome::GatewayError, &gw));
        assert!(h.record(Outcome::GatewayError, &gw));
    }

    #[test]
    fn ejection_time_grows_with_ejections_and_decays_per_interval_in_service() {
        let h = Health::default();
        let c = cfg();
        let t0 = Instant::now();
        h.eject(&c, t0);
        assert!(h.is_ejected(t0 + Duration::from_secs(29)));
        assert!(!h.is_ejected(t0 + Duration::from_secs(30)), "readmitted after base * 1");
        let t1 = t0 + Duration::from_secs(31);
        h.eject(&c, t1);
        assert!(h.is_ejected(t1 + Duration::from_secs(59)), "second ejection: base * 2");
        assert!(!h.is_ejected(t1 + Duration::from_secs(60)));
        // 25 s in service = 2 intervals: the multiplier drops from 2 to 0, the next is base * 1.
        let t2 = t1 + Duration::from_secs(85);
        h.eject(&c, t2);
        assert!(!h.is_ejected(t2 + Duration::from_secs(30)));
        assert_eq!(h.ejections_total.load(Relaxed), 3);
    }

    #[test]
    fn at_least_one_endpoint_may_be_ejected() {
        assert_eq!(max_ejected(3, 10), 1);
        assert_eq!(max_ejected(1, 10), 1);
        assert_eq!(max_ejected(20, 10), 2);
        assert_eq!(max_ejected(3, 100), 3);
    }
}
