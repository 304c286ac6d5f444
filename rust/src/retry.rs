//! A route's resilience policy (docs/engine-snapshot.md "Resilience"): timeouts, which failed
//! tries are retried, how long to wait before a retry, and the retry budget that keeps retries
//! from multiplying the load of a failing backend (Linkerd's budget, Envoy's conditions).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::stats::ResilienceStats;

/// Request bodies up to this size are buffered for replay when a retry policy is configured.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;

/// Why a try failed, as the retry conditions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection: nothing was sent.
    ConnectFailure,
    /// An HTTP/2 stream refused (or cut by a graceful GOAWAY) before it was processed.
    RefusedStream,
    /// The connection closed or reset before the response headers.
    Reset,
    /// No response headers within the per-try timeout.
    PerTryTimeout,
    /// A response with this status.
    Status(StatusCode),
}

/// A retry condition (`retry.on`, plus `codes`); its name is the `reason` metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    ConnectFailure = 0,
    RefusedStream = 1,
    Reset = 2,
    GatewayError = 3,
    FiveXx = 4,
    RetriableStatusCodes = 5,
}

impl Condition {
    pub const ALL: [Condition; 6] = [
        Condition::ConnectFailure,
        Condition::RefusedStream,
        Condition::Reset,
        Condition::GatewayError,
        Condition::FiveXx,
        Condition::RetriableStatusCodes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Condition::ConnectFailure => "connect-failure",
            Condition::RefusedStream => "refused-stream",
            Condition::Reset => "reset",
            Condition::GatewayError => "gateway-error",
            Condition::FiveXx => "5xx",
            Condition::RetriableStatusCodes => "retriable-status-codes",
        }
    }

    pub fn parse(s: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.name() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Whether this condition covers `failure`.
    fn covers(self, failure: Failure, codes: &[u16]) -> bool {
        use Failure as F;
        match (self, failure) {
            (Condition::ConnectFailure, F::ConnectFailure)
            | (Condition::RefusedStream, F::RefusedStream)
            | (Condition::Reset, F::Reset | F::PerTryTimeout)
            | (Condition::GatewayError, F::ConnectFailure | F::RefusedStream | F::PerTryTimeout)
            | (Condition::FiveXx, F::ConnectFailure | F::RefusedStream | F::Reset | F::PerTryTimeout) => true,
            (Condition::GatewayError, F::Status(s)) => matches!(s.as_u16(), 502..=504),
            (Condition::FiveXx, F::Status(s)) => s.is_server_error(),
            (Condition::RetriableStatusCodes, F::Status(s)) => codes.contains(&s.as_u16()),
            _ => false,
        }
    }
}

/// What a route does about slow and failing upstreams (and its mirror), with the counters of
/// its decisions.
#[derive(Debug)]
pub struct RoutePolicy {
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// `RequestMirror`: where copies go, and the percent of requests copied.
    pub mirror: Option<(Arc<crate::balance::Backend>, f64)>,
    pub stats: Arc<ResilienceStats>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request (every try and backoff) to the response headers: 504 after it.
    pub request: Option<Duration>,
    /// One try to the response headers.
    pub per_try: Option<Duration>,
}

#[derive(Debug)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    /// Bits of `Condition`s (`RetriableStatusCodes` set when `codes` is not empty).
    on: u8,
    codes: Vec<u16>,
    methods: Vec<Method>,
    /// Largest request body buffered for replay; 0 = only bodiless requests are replayable.
    pub max_body: u64,
    backoff_base: Duration,
    backoff_max: Duration,
    pub budget: Budget,
}

/// The idempotent methods the issue and Envoy retry by default.
fn default_methods() -> Vec<Method> {
    vec![Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE]
}

impl Default for RetryPolicy {
    /// The built-in policy of a route without `retry`: one immediate retry of a bodiless request
    /// that provably was not processed, or of an idempotent one whose connection closed under it.
    fn default() -> Self {
        RetryPolicy::new(
            1,
            &[Condition::ConnectFailure, Condition::RefusedStream, Condition::Reset],
            Vec::new(),
            default_methods(),
            0,
            (Duration::ZERO, Duration::ZERO),
            Budget::default(),
        )
    }
}

impl RetryPolicy {
    pub fn new(
        attempts: u32,
        on: &[Condition],
        codes: Vec<u16>,
        methods: Vec<Method>,
        max_body: u64,
        (backoff_base, backoff_max): (Duration, Duration),
        budget: Budget,
    ) -> Self {
        let mut bits = on.iter().fold(0, |b, c| b | c.bit());
        if !codes.is_empty() {
            bits |= Condition::RetriableStatusCodes.bit();
        }
        RetryPolicy {
            attempts,
            on: bits,
            codes,
            methods,
            max_body,
            backoff_base,
            backoff_max,
            budget,
        }
    }

    pub fn default_methods() -> Vec<Method> {
        default_methods()
    }

    /// Whether the method may be retried after it reached the upstream.
    pub fn retries_method(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// The condition under which `failure` of a `method` request is retried, if any.
    /// Connect failures and refused streams were not processed: any method qualifies.
    pub fn condition(&self, failure: Failure, method: &Method) -> Option<Condition> {
        let unprocessed = matches!(failure, Failure::ConnectFailure | Failure::RefusedStream);
        if !unprocessed && !self.retries_method(method) {
            return None;
        }
        Condition::ALL
            .into_iter()
            .find(|c| self.on & c.bit() != 0 && c.covers(failure, &self.codes))
    }

    /// The wait before retry number `n` (1-based): `min(max, base * 2^(n-1))` plus up to 50 %
    /// random jitter, capped at `max`.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.backoff_max);
        let jitter = exp.mul_f64(fastrand::f64() * 0.5);
        (exp + jitter).min(self.backoff_max)
    }
}

/// Retries allowed over a sliding window: `min_per_s * window` plus `percent` % of the requests
/// in the window (Linkerd's retry budget; Finagle's before it). Ten slots of `window / 10`.
#[derive(Debug)]
pub struct Budget {
    percent: f64,
    min_retries: f64,
    slot: Duration,
    state: Mutex<Slots>,
}

const SLOTS_U32: u32 = 10;
const SLOTS: usize = SLOTS_U32 as usize;

#[derive(Debug)]
struct Slots {
    /// Start of slot `current`.
    start: Instant,
    current: usize,
    requests: [u32; SLOTS],
    retries: [u32; SLOTS],
}

impl Default for Budget {
    /// 20 % of requests plus 10 retries/s over 10 s.
    fn default() -> Self {
        Budget::new(20.0, 10, Duration::from_secs(10))
    }
}

impl Budget {
    pub fn new(percent: f64, min_per_s: u32, window: Duration) -> Self {
        Budget {
            percent,
            min_retries: f64::from(min_per_s) * window.as_secs_f64(),
            slot: (window / SLOTS_U32).max(Duration::from_millis(1)),
            state: Mutex::new(Slots {
                start: Instant::now(),
                current: 0,
                requests: [0; SLOTS],
                retries: [0; SLOTS],
            }),
        }
    }

    fn advance(&self, s: &mut Slots, now: Instant) {
        let passed = now.saturating_duration_since(s.start).as_nanos() / self.slot.as_nanos().max(1);
        if passed == 0 {
            return;
        }
        for _ in 0..passed.min(SLOTS as u128) {
            s.current = (s.current + 1) % SLOTS;
            s.requests[s.current] = 0;
            s.retries[s.current] = 0;
        }
        s.start += self.slot * u32::try_from(passed).unwrap_or(u32::MAX);
        if now.saturating_duration_since(s.start) >= self.slot {
            s.start = now;
        }
    }

    /// Counts a request (its first try).
    pub fn deposit(&self) {
        let mut s = self.state.lock();
        self.advance(&mut s, Instant::now());
        let c = s.current;
        s.requests[c] = s.requests[c].saturating_add(1);
    }

    /// Takes one retry from the budget; `false` when it is exhausted.
    pub fn withdraw(&self) -> bool {
        let mut s = self.state.lock();
        self.advance(&mut s, Instant::now());
        let requests: u32 = s.requests.iter().sum();
        let retries: u32 = s.retries.iter().sum();
        let allowed = self.min_retries + f64::from(requests) * self.percent / 100.0;
        if f64::from(retries) + 1.0 > allowed {
            return false;
        }
        let c = s.current;
        s.retries[c] += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_envoy() {
        let p = RetryPolicy::new(
            2,
            &[Condition::GatewayError],
            vec![409],
            default_methods(),
            0,
            (Duration::ZERO, Duration::ZERO),
            Budget::default(),
        );
        let s = |c| Failure::Status(StatusCode::from_u16(c).unwrap());
        assert_eq!(p.condition(s(503), &Method::GET), Some(Condition::GatewayError));
        assert_eq!(p.condition(s(500), &Method::GET), None);
        assert_eq!(p.condition(s(409), &Method::GET), Some(Condition::RetriableStatusCodes));
        assert_eq!(
            p.condition(Failure::PerTryTimeout, &Method::GET),
            Some(Condition::GatewayError)
        );
        assert_eq!(p.condition(Failure::Reset, &Method::GET), None);
        // Not a retryable method: only unprocessed failures.
        assert_eq!(p.condition(s(503), &Method::POST), None);
        assert_eq!(
            p.condition(Failure::ConnectFailure, &Method::POST),
            Some(Condition::GatewayError)
        );
        let builtin = RetryPolicy::default();
        assert_eq!(builtin.condition(s(503), &Method::GET), None);
        assert_eq!(builtin.condition(Failure::Reset, &Method::GET), Some(Condition::Reset));
        assert_eq!(builtin.condition(Failure::Reset, &Method::POST), None);
    }

    #[test]
    fn backoff_is_exponential_with_jitter_and_capped() {
        let p = RetryPolicy::new(
            5,
            &[],
            vec![],
            vec![],
            0,
            (Duration::from_millis(10), Duration::from_millis(50)),
            Budget::default(),
        );
        for _ in 0..100 {
            let b1 = p.backoff(1);
            assert!(
                b1 >= Duration::from_millis(10) && b1 <= Duration::from_millis(15),
                "{b1:?}"
            );
            let b2 = p.backoff(2);
            assert!(
                b2 >= Duration::from_millis(20) && b2 <= Duration::from_millis(30),
                "{b2:?}"
            );
            assert!(p.backoff(4) <= Duration::from_millis(50));
            assert_eq!(p.backoff(9), Duration::from_millis(50));
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(1)).collect();
        assert!(spread.len() > 10, "jittered");
    }

    #[test]
    fn budget_allows_the_floor_plus_a_share_of_requests() {
        let b = Budget::new(20.0, 1, Duration::from_secs(10));
        for _ in 0..100 {
            b.deposit();
        }
        // 1/s * 10 s + 20 % of 100 = 30.
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 30);
    }

    #[test]
    fn budget_window_slides() {
        let b = Budget::new(0.0, 10, Duration::from_secs(1));
        assert_eq!((0..20).filter(|_| b.withdraw()).count(), 10);
        std::thread::sleep(Duration::from_millis(300));
        assert!(!b.withdraw(), "the first retries are still in the window");
        std::thread::sleep(Duration::from_millis(900));
        assert_eq!((0..20).filter(|_| b.withdraw()).count(), 10);
    }
}
