//! Counters the admin API reads. The registry is consulted only when a snapshot is compiled;
//! a request pays atomic increments on handles it already holds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use parking_lot::Mutex;
use serde::Serialize;

use crate::balance::Endpoint;
use crate::retry::Condition;
use crate::tls::{TlsStats, TlsStatsDoc};

/// Upper bounds (inclusive) of the latency histogram buckets, in milliseconds: 10 and 15 ms times
/// every power of two, from 1.25 ms to 10.24 s (and 0.625 ms). The layout repeats at every
/// doubling (adjacent bounds 1.33x and 1.5x apart), so a latency that doubles in that range lands
/// two buckets up and its interpolated quantile doubles too: a p99 ratio gate sees it. Decimal
/// bounds (1-2-5, 1-1.5-2-3-5-7) repeat per decade instead and read some doublings as 1.4x
/// (30 -> 60 ms: 50 -> 70).
pub const LATENCY_BOUNDS_MS: [f64; BUCKETS] = [
    0.625, 1.25, 1.875, 2.5, 3.75, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 160.0, 240.0, 320.0,
    480.0, 640.0, 960.0, 1280.0, 1920.0, 2560.0, 3840.0, 5120.0, 7680.0, 10240.0,
];
const BUCKETS: usize = 28;
const LATENCY_BOUNDS_US: [u64; BUCKETS] = [
    625, 1_250, 1_875, 2_500, 3_750, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 40_000, 60_000, 80_000, 120_000,
    160_000, 240_000, 320_000, 480_000, 640_000, 960_000, 1_280_000, 1_920_000, 2_560_000, 3_840_000, 5_120_000,
    7_680_000, 10_240_000,
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Responses of one (route, backend) pair: status classes and time to response headers.
#[derive(Debug)]
pub struct RouteStats {
    route: Arc<str>,
    backend: Arc<str>,
    status: [AtomicU64; 5],
    /// One per bound, then the overflow (`inf`) bucket.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl RouteStats {
    fn new(route: Arc<str>, backend: Arc<str>) -> Self {
        RouteStats {
            route,
            backend,
            status: Default::default(),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn record(&self, status: StatusCode, latency: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.status[class].fetch_add(1, Relaxed);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Responses of status class `class` (1 to 5).
    pub fn status_class(&self, class: usize) -> u64 {
        self.status[class - 1].load(Relaxed)
    }
}

/// Load of one upstream endpoint of one backend.
#[derive(Debug)]
pub struct EndpointStats {
    pub backend: Arc<str>,
    pub endpoint: Arc<str>,
    pub connections_open: AtomicU64,
    pub requests_active: AtomicU64,
}

impl EndpointStats {
    pub fn new(backend: Arc<str>, endpoint: Arc<str>) -> Self {
        EndpointStats {
            backend,
            endpoint,
            connections_open: AtomicU64::new(0),
            requests_active: AtomicU64::new(0),
        }
    }
}

/// The resilience decisions of one route (docs/engine-snapshot.md "Resilience").
#[derive(Debug)]
pub struct ResilienceStats {
    route: Arc<str>,
    /// By `retry::Condition` (its discriminant).
    retries: [AtomicU64; 6],
    pub budget_exhausted: AtomicU64,
    pub timeouts_request: AtomicU64,
    pub timeouts_per_try: AtomicU64,
    pub faults_delay: AtomicU64,
    pub faults_abort: AtomicU64,
    /// Copies sent to the mirror backend, and mirror shares not sent (body not replayable,
    /// mirror backend without endpoints or of another protocol).
    pub mirrored: AtomicU64,
    pub mirror_skipped: AtomicU64,
}

impl ResilienceStats {
    fn new(route: Arc<str>) -> Self {
        ResilienceStats {
            route,
            retries: Default::default(),
            budget_exhausted: AtomicU64::new(0),
            timeouts_request: AtomicU64::new(0),
            timeouts_per_try: AtomicU64::new(0),
            faults_delay: AtomicU64::new(0),
            faults_abort: AtomicU64::new(0),
            mirrored: AtomicU64::new(0),
            mirror_skipped: AtomicU64::new(0),
        }
    }

    pub fn retried(&self, reason: Condition) {
        self.retries[reason as usize].fetch_add(1, Relaxed);
    }

    fn doc(&self) -> Option<ResilienceDoc<'_>> {
        let retries: BTreeMap<_, _> = Condition::ALL
            .iter()
            .map(|c| (c.name(), self.retries[*c as usize].load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let timeouts: BTreeMap<_, _> = [("request", &self.timeouts_request), ("per_try", &self.timeouts_per_try)]
            .into_iter()
            .map(|(k, v)| (k, v.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let faults: BTreeMap<_, _> = [("delay", &self.faults_delay), ("abort", &self.faults_abort)]
            .into_iter()
            .map(|(k, v)| (k, v.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let budget_exhausted = self.budget_exhausted.load(Relaxed);
        let (mirrored, mirror_skipped) = (self.mirrored.load(Relaxed), self.mirror_skipped.load(Relaxed));
        let any = !retries.is_empty() || !timeouts.is_empty() || !faults.is_empty();
        (any || budget_exhausted + mirrored + mirror_skipped > 0).then_some(ResilienceDoc {
            route: &self.route,
            retries,
            budget_exhausted,
            timeouts,
            faults,
            mirrored,
            mirror_skipped,
        })
    }
}

/// The connection-pool limits, in the order of `BackendStats::overflow`; their names are the
/// `x-fastmesh-overflow` header values and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxConnections = 0,
    MaxPendingRequests = 1,
    MaxRequests = 2,
    MaxRetries = 3,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::MaxConnections,
        Limit::MaxPendingRequests,
        Limit::MaxRequests,
        Limit::MaxRetries,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::MaxPendingRequests => "max_pending_requests",
            Limit::MaxRequests => "max_requests",
            Limit::MaxRetries => "max_retries",
        }
    }
}

/// Decisions about one backend, and its concurrency counters (the limits read them).
#[derive(Debug)]
pub struct BackendStats {
    backend: Arc<str>,
    /// Picks made while every endpoint was ejected (traffic went to all of them).
    pub panic: AtomicU64,
    /// By `Limit`.
    overflow: [AtomicU64; 4],
    /// Requests in flight to the backend (to the end of the response body).
    pub requests_active: AtomicU64,
    /// Retries in flight.
    pub retries_active: AtomicU64,
}

impl BackendStats {
    pub fn overflowed(&self, limit: Limit) {
        self.overflow[limit as usize].fetch_add(1, Relaxed);
    }
}

/// The counters registered under `name`, made by `make` on first use.
fn registered<T>(map: &Mutex<BTreeMap<Arc<str>, Arc<T>>>, name: &str, make: impl FnOnce(Arc<str>) -> T) -> Arc<T> {
    let mut map = map.lock();
    if let Some(found) = map.get(name) {
        return found.clone();
    }
    let key: Arc<str> = Arc::from(name);
    map.entry(key.clone()).or_insert_with(|| Arc::new(make(key))).clone()
}

/// (route name, backend name); `""` for none.
type RouteKey = (Arc<str>, Arc<str>);

/// (policy name, action).
type PolicyKey = (Arc<str>, &'static str);

/// Engine-wide counters plus the (route, backend) registry.
#[derive(Debug)]
pub struct Stats {
    pub connections_active: AtomicU64,
    pub connections_total: AtomicU64,
    pub requests_active: AtomicU64,
    /// Handshakes and their failures, both directions.
    pub tls: Arc<TlsStats>,
    routes: Mutex<BTreeMap<RouteKey, Arc<RouteStats>>>,
    resilience: Mutex<BTreeMap<Arc<str>, Arc<ResilienceStats>>>,
    backends: Mutex<BTreeMap<Arc<str>, Arc<BackendStats>>>,
    unmatched: Arc<RouteStats>,
    /// Requests each authorization policy matched, by (policy name, action).
    authz: Mutex<BTreeMap<PolicyKey, Arc<AtomicU64>>>,
    /// Requests denied because no ALLOW policy matched.
    pub authz_denied_no_match: Arc<AtomicU64>,
}

impl Default for Stats {
    fn default() -> Self {
        let empty: Arc<str> = Arc::from("");
        let unmatched = Arc::new(RouteStats::new(empty.clone(), empty.clone()));
        let mut routes = BTreeMap::new();
        routes.insert((empty.clone(), empty), unmatched.clone());
        Stats {
            connections_active: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            requests_active: AtomicU64::new(0),
            tls: Arc::default(),
            routes: Mutex::new(routes),
            resilience: Mutex::default(),
            backends: Mutex::default(),
            unmatched,
            authz: Mutex::default(),
            authz_denied_no_match: Arc::default(),
        }
    }
}

impl Stats {
    /// The counters of (route, backend), created on first use; they live as long as the engine.
    pub fn route(&self, route: &str, backend: &str) -> Arc<RouteStats> {
        let key: RouteKey = (Arc::from(route), Arc::from(backend));
        self.routes
            .lock()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(RouteStats::new(key.0, key.1)))
            .clone()
    }

    /// The resilience counters of a route, created on first use.
    pub fn resilience(&self, route: &str) -> Arc<ResilienceStats> {
        registered(&self.resilience, route, ResilienceStats::new)
    }

    /// The counters of a backend, created on first use.
    pub fn backend(&self, name: &str) -> Arc<BackendStats> {
        registered(&self.backends, name, |backend| BackendStats {
            backend,
            panic: AtomicU64::new(0),
            overflow: Default::default(),
            requests_active: AtomicU64::new(0),
            retries_active: AtomicU64::new(0),
        })
    }

    /// Requests no route matched (route and backend `""`).
    pub fn unmatched(&self) -> &Arc<RouteStats> {
        &self.unmatched
    }

    /// The counter of an authorization policy, created on first use; it lives as long as the engine.
    pub fn authz_policy(&self, policy: &str, action: &'static str) -> Arc<AtomicU64> {
        self.authz
            .lock()
            .entry((Arc::from(policy), action))
            .or_default()
            .clone()
    }

    /// The stats JSON of the contract.
    pub fn render(&self, version: u64, upstream: &[Arc<Endpoint>]) -> String {
        let routes = self.routes.lock();
        let authz = self.authz.lock();
        let resilience = self.resilience.lock();
        let backends = self.backends.lock();
        let doc = StatsDoc {
            version,
            connections: ConnectionsDoc {
                active: self.connections_active.load(Relaxed),
                total: self.connections_total.load(Relaxed),
            },
            requests_active: self.requests_active.load(Relaxed),
            latency_bounds_ms: &LATENCY_BOUNDS_MS,
            routes: routes
                .values()
                .filter(|s| s.count() > 0)
                .map(|s| RouteDoc::from(&**s))
                .collect(),
            upstream: upstream
                .iter()
                .map(|e| UpstreamDoc {
                    backend: &e.stats.backend,
                    endpoint: &e.stats.endpoint,
                    connections_open: e.stats.connections_open.load(Relaxed),
                    requests_active: e.stats.requests_active.load(Relaxed),
                    ejected: e.health.currently_ejected(),
                    ejections: e.health.ejections_total.load(Relaxed),
                })
                .collect(),
            authz: authz
                .iter()
                .map(|((policy, action), n)| AuthzDoc {
                    policy,
                    action,
                    matched: n.load(Relaxed),
                })
                .filter(|d| d.matched > 0)
                .collect(),
            authz_denied_no_match: self.authz_denied_no_match.load(Relaxed),
            tls: self.tls.doc(),
            resilience: resilience.values().filter_map(|r| r.doc()).collect(),
            backends: backends.values().filter_map(|b| b.doc()).collect(),
        };
        serde_json::to_string(&doc).expect("stats serialize")
    }
}

// === JSON documents ===

#[derive(Serialize)]
struct StatsDoc<'a> {
    version: u64,
    connections: ConnectionsDoc,
    requests_active: u64,
    latency_bounds_ms: &'a [f64],
    routes: Vec<RouteDoc<'a>>,
    upstream: Vec<UpstreamDoc<'a>>,
    authz: Vec<AuthzDoc<'a>>,
    authz_denied_no_match: u64,
    tls: TlsStatsDoc,
    resilience: Vec<ResilienceDoc<'a>>,
    backends: Vec<BackendDoc<'a>>,
}

#[derive(Serialize)]
struct AuthzDoc<'a> {
    policy: &'a str,
    action: &'static str,
    matched: u64,
}

#[derive(Serialize)]
struct BackendDoc<'a> {
    backend: &'a str,
    panic: u64,
    overflow: BTreeMap<&'static str, u64>,
}

impl BackendStats {
    fn doc(&self) -> Option<BackendDoc<'_>> {
        let overflow: BTreeMap<_, _> = Limit::ALL
            .iter()
            .map(|l| (l.name(), self.overflow[*l as usize].load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let panic = self.panic.load(Relaxed);
        (panic > 0 || !overflow.is_empty()).then_some(BackendDoc {
            backend: &self.backend,
            panic,
            overflow,
        })
    }
}

#[derive(Serialize)]
struct ResilienceDoc<'a> {
    route: &'a str,
    retries: BTreeMap<&'static str, u64>,
    budget_exhausted: u64,
    timeouts: BTreeMap<&'static str, u64>,
    faults: BTreeMap<&'static str, u64>,
    mirrored: u64,
    mirror_skipped: u64,
}

#[derive(Serialize)]
struct ConnectionsDoc {
    active: u64,
    total: u64,
}

#[derive(Serialize)]
struct RouteDoc<'a> {
    route: &'a str,
    backend: &'a str,
    status: BTreeMap<&'static str, u64>,
    latency: LatencyDoc,
}

#[derive(Serialize)]
struct LatencyDoc {
    buckets: Vec<u64>,
    inf: u64,
    sum_ms: f64,
    count: u64,
}

#[derive(Serialize)]
struct UpstreamDoc<'a> {
    backend: &'a str,
    endpoint: &'a str,
    connections_open: u64,
    requests_active: u64,
    ejected: bool,
    ejections: u64,
}

impl<'a> From<&'a RouteStats> for RouteDoc<'a> {
    fn from(s: &'a RouteStats) -> Self {
        let status = CLASSES
            .iter()
            .zip(&s.status)
            .map(|(c, n)| (*c, n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let buckets: Vec<u64> = s.buckets.iter().map(|b| b.load(Relaxed)).collect();
        RouteDoc {
            route: &s.route,
            backend: &s.backend,
            status,
            latency: LatencyDoc {
                inf: buckets[LATENCY_BOUNDS_US.len()],
                buckets: buckets[..LATENCY_BOUNDS_US.len()].to_vec(),
                sum_ms: s.sum_us.load(Relaxed) as f64 / 1000.0,
                count: s.count(),
            },
        }
    }
}

#[cfg(test)]
mod tests;
