//! Picking where a request goes: a rule's weighted backends (`weighted`), then one endpoint of
//! the backend (`p2c` by default, `rr` as an option).

pub mod outlier;
pub mod p2c;
pub mod rr;
pub mod weighted;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use http::uri::Authority;
use tokio::time::Instant;

use parking_lot::Mutex;

use crate::config::{BackendLimits, LbKind, Protocol};
use crate::pool::UpstreamClient;
use crate::stats::{BackendStats, EndpointStats, Limit};

use self::outlier::{Health, Outcome, OutlierConfig};

/// One upstream address of one backend, with its connection pool and load estimate. It
/// survives snapshot swaps as long as the backend keeps the address.
pub struct Endpoint {
    pub addr: Arc<str>,
    /// `addr` as an authority, for requests that carry no Host.
    pub authority: Authority,
    pub client: UpstreamClient,
    pub load: p2c::PeakEwma,
    pub stats: Arc<EndpointStats>,
    /// Outlier detection state (used when the backend configures it).
    pub health: Health,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Lb {
    P2c,
    RoundRobin(rr::RoundRobin),
}

/// A backend of a snapshot: its protocol, its endpoints and how to choose among them.
#[derive(Debug)]
pub struct Backend {
    pub name: Arc<str>,
    pub protocol: Protocol,
    pub endpoints: Box<[Arc<Endpoint>]>,
    lb: Lb,
    outlier: Option<OutlierConfig>,
    limits: BackendLimits,
    /// Serialises ejections, so the cap holds.
    ejecting: Mutex<()>,
    pub stats: Arc<BackendStats>,
}

impl Backend {
    pub fn new(
        name: Arc<str>,
        protocol: Protocol,
        lb: LbKind,
        endpoints: Vec<Arc<Endpoint>>,
        (outlier, limits): (Option<OutlierConfig>, BackendLimits),
        stats: Arc<BackendStats>,
    ) -> Self {
        let lb = match lb {
            LbKind::P2cPeakEwma => Lb::P2c,
            LbKind::RoundRobin => Lb::RoundRobin(rr::RoundRobin::default()),
        };
        Backend {
            name,
            protocol,
            endpoints: endpoints.into_boxed_slice(),
            lb,
            outlier,
            limits,
            ejecting: Mutex::new(()),
            stats,
        }
    }

    /// The endpoint for the next request; `None` when the backend has no endpoints. Ejected
    /// endpoints are skipped, unless every endpoint is ejected: then all take traffic (panic
    /// mode, counted).
    pub fn pick(&self) -> Option<&Arc<Endpoint>> {
        // Only while an endpoint is (or was until now) ejected: the clock, the scan, the list.
        if self.outlier.is_some() && self.endpoints.iter().any(|e| e.health.flagged()) {
            let now = Instant::now();
            let healthy: Vec<usize> = (0..self.endpoints.len())
                .filter(|&i| !self.endpoints[i].health.is_ejected(now))
                .collect();
            if healthy.is_empty() {
                self.stats.panic.fetch_add(1, Relaxed);
            } else if healthy.len() < self.endpoints.len() {
                return self.pick_among(&healthy, now).map(|i| &self.endpoints[i]);
            }
        }
        let n = self.endpoints.len();
        if n == 1 {
            // Nothing to choose: no clock read, no counter.
            return self.endpoints.first();
        }
        let i = match &self.lb {
            Lb::RoundRobin(rr) => rr.pick(n)?,
            Lb::P2c => {
                let now = Instant::now();
                p2c::pick(n, |i| self.cost(i, now))?
            }
        };
        Some(&self.endpoints[i])
    }

    fn pick_among(&self, among: &[usize], now: Instant) -> Option<usize> {
        let k = match &self.lb {
            Lb::RoundRobin(rr) => rr.pick(among.len())?,
            Lb::P2c => p2c::pick(among.len(), |k| self.cost(among[k], now))?,
        };
        Some(among[k])
    }

    fn cost(&self, i: usize, now: Instant) -> f64 {
        let e = &self.endpoints[i];
        e.load.cost(e.stats.requests_active.load(Relaxed), now)
    }

    /// A place among the backend's concurrent requests (`limits.max_requests`); `None`: overflow
    /// (counted). Held until the response body ends.
    pub fn admit(&self) -> Option<Slot> {
        Slot::take(
            &self.stats,
            |s| &s.requests_active,
            self.limits.max_requests,
            Limit::MaxRequests,
        )
    }

    /// A place among the backend's concurrent retries (`limits.max_retries`); `None`: overflow.
    pub fn admit_retry(&self) -> Option<Slot> {
        Slot::take(
            &self.stats,
            |s| &s.retries_active,
            self.limits.max_retries,
            Limit::MaxRetries,
        )
    }

    /// Feeds one try's outcome at `endpoint` to outlier detection: ejects it when a detector
    /// fires and the cap (`max_ejection_percent`, at least one endpoint) allows.
    pub fn record(&self, endpoint: &Endpoint, outcome: Outcome) {
        let Some(cfg) = &self.outlier else { return };
        if !endpoint.health.record(outcome, cfg) {
            return;
        }
        let _one_at_a_time = self.ejecting.lock();
        let now = Instant::now();
        if endpoint.health.is_ejected(now) {
            // Tried in panic mode: the ejection it serves is not extended.
            endpoint.health.reset();
            return;
        }
        let ejected = self.endpoints.iter().filter(|e| e.health.is_ejected(now)).count();
        if ejected >= outlier::max_ejected(self.endpoints.len(), cfg.max_ejection_percent) {
            endpoint.health.reset();
            return;
        }
        endpoint.health.eject(cfg, now);
    }
}

/// One unit of a backend concurrency counter, given back on drop.
#[derive(Debug)]
pub struct Slot {
    stats: Arc<BackendStats>,
    counter: fn(&BackendStats) -> &std::sync::atomic::AtomicU64,
}

impl Slot {
    fn take(
        stats: &Arc<BackendStats>,
        counter: fn(&BackendStats) -> &std::sync::atomic::AtomicU64,
        max: u64,
        limit: Limit,
    ) -> Option<Slot> {
        let c = counter(stats);
        if c.fetch_add(1, Relaxed) >= max {
            c.fetch_sub(1, Relaxed);
            stats.overflowed(limit);
            return None;
        }
        Some(Slot {
            stats: stats.clone(),
            counter,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        (self.counter)(&self.stats).fetch_sub(1, Relaxed);
    }
}
