//! The request path: load the snapshot once, pick the virtual host and the first matching
//! route, apply its filters, pick a backend and an endpoint, forward, and stream both bodies.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, SET_COOKIE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body as _;
use tokio::time::Instant;

use crate::balance::outlier::Outcome;
use crate::balance::p2c::FAILURE_PENALTY;
use crate::balance::{Backend, Endpoint, Slot};
use crate::body::{BodyError, Deadline, InFlight, PeerBody, ProxyBody};
use crate::config::Protocol;
use crate::headers;
use crate::headers::raw::{HeaderEdit, RawHeaders};
use crate::pool::{Pooled, Reply, UpstreamError};
use crate::retry::{Failure, RetryPolicy, RoutePolicy, DEFAULT_MAX_BODY};
use crate::route::filters::{hit, RequestTarget};
use crate::route::Route;
use crate::snapshot::Snapshot;
use crate::stats::{Limit, RouteStats, Stats};
use crate::tls::Peer;

/// What every connection shares: the live snapshot and the counters.
#[derive(Clone)]
pub struct Proxy {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub stats: Arc<Stats>,
}

/// One downstream connection.
pub struct Conn {
    proxy: Proxy,
    /// The peer's IP, rendered once for `x-forwarded-for`.
    client_ip: HeaderValue,
    /// The bound address of the listener the connection came through (authorization's port).
    local: SocketAddr,
    /// The verified mTLS caller; `None` on plaintext connections.
    pub peer: Option<Arc<Peer>>,
    /// `x-forwarded-client-cert` for the requests of a verified mTLS connection.
    pub client_cert: Option<HeaderValue>,
}

impl Conn {
    pub fn new(proxy: Proxy, ip: IpAddr, local: SocketAddr, peer: Option<Arc<Peer>>) -> Self {
        let client_ip = HeaderValue::from_str(&ip.to_string()).expect("an IP is a valid header value");
        Conn {
            proxy,
            client_ip,
            local,
            peer,
            client_cert: None,
        }
    }

    /// `req`'s body: `ProxyBody::request` (hyper's server) or `ProxyBody::buffered` (`h1::server`).
    /// A request whose header fields are kept as bytes (`ProxyBody::head`, made by `h1::server`
    /// and `h2::server`) may get a response whose fields are bytes too (`ProxyBody::take_raw_head`,
    /// its `HeaderMap` empty then), already edited (hop-by-hop removed, the route's
    /// `ResponseHeaderModifier`, `set-cookie`); every other response has them in its `HeaderMap`.
    ///
    /// The request is boxed here, once: on its way (routing, the replay copy, retries, the
    /// upstream client) it is passed as that box or borrowed, never moved by value (a request
    /// is ~430 bytes; its moves were ~15 % of the instructions per request, callgrind).
    pub fn handle(&self, req: Request<ProxyBody>) -> impl Future<Output = Response<ProxyBody>> + Send + '_ {
        self.handle_boxed(Box::new(req))
    }

    /// `handle` for a request already in a box (`h1::server` builds it there).
    #[allow(clippy::too_many_lines)] // one request's path, read top to bottom
    pub async fn handle_boxed(&self, mut req: Box<Request<ProxyBody>>) -> Response<ProxyBody> {
        let start = Instant::now();
        let mut inflight = InFlight::new(&self.proxy.stats);
        // In flight requests keep the snapshot they started with, even across a swap.
        let snapshot = self.proxy.snapshot.load_full();
        let version = req.version();
        let authority = authority(&req);
        let host = authority.as_ref().map_or("", host_of);
        let unmatched = self.proxy.stats.unmatched();
        let Some(vhost) = snapshot.vhosts.select(host) else {
            return local(StatusCode::NOT_FOUND, None, unmatched, start, inflight);
        };
        if vhost.reads_headers {
            // Header matchers and session affinity look fields up in a `HeaderMap`.
            crate::body::materialize(&mut req);
        }
        let (path, query) = (req.uri().path(), req.uri().query());
        let Some(route) = vhost.route(req.method(), path, query, req.headers()) else {
            return local(StatusCode::NOT_FOUND, None, unmatched, start, inflight);
        };
        // Before any byte goes upstream; the body is not read, so no `100 Continue` either.
        if let Err(denied) = snapshot.authz.check(self.local, self.peer.as_deref(), &req, host) {
            return local_body(StatusCode::FORBIDDEN, denied.0, &route.local_stats, start, inflight);
        }
        if let Some(redirect) = &route.filters.redirect {
            let target = RequestTarget {
                scheme: "http",
                host,
                port: authority.as_ref().and_then(Authority::port_u16),
                path,
                query,
            };
            let location = redirect.location(&target, route.matcher.matched_prefix());
            return match HeaderValue::try_from(location) {
                Ok(v) => local(
                    redirect.status,
                    Some((LOCATION, v)),
                    &route.local_stats,
                    start,
                    inflight,
                ),
                Err(_) => local(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    &route.local_stats,
                    start,
                    inflight,
                ),
            };
        }
        if let Some(status) = inject(route).await {
            return local(status, None, &route.local_stats, start, inflight);
        }
        let Some((target, set_cookie)) = route.pick_for(req.headers()) else {
            return local(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                &route.local_stats,
                start,
                inflight,
            );
        };
        let Some(backend) = &target.backend else {
            return local(StatusCode::INTERNAL_SERVER_ERROR, None, &target.stats, start, inflight);
        };
        let Some(slot) = backend.admit() else {
            return overflow(Limit::MaxRequests, &target.stats, start, inflight);
        };
        inflight.hold(slot);
        let Some(endpoint) = backend.pick() else {
            return local(StatusCode::SERVICE_UNAVAILABLE, None, &target.stats, start, inflight);
        };
        inflight.to_endpoint(endpoint);
        let policy = &route.policy;
        policy.retry.budget.deposit();
        let Some(key) = self.upstream_request(&mut req, authority, route, backend, endpoint) else {
            return local(StatusCode::INTERNAL_SERVER_ERROR, None, &target.stats, start, inflight);
        };
        let mirror = policy.mirror.as_ref().filter(|(_, percent)| hit(*percent));
        // Whether the request may be sent again, and its copy when one is needed already (kept
        // here and lent to `forward`, which makes it when a try would consume the request).
        let mut copy = None;
        let replayable = match Replay::at_once(&req, &policy.retry, mirror.is_some()) {
            Some(keep) => {
                if keep && mirror.is_some() {
                    copy = Some(Replay::known(&req));
                }
                keep
            }
            // Boxed: rare (a body still streaming), and its future is large.
            None => match Box::pin(Replay::prepare(&mut req, &policy.retry, mirror.is_some())).await {
                Ok(read) => {
                    copy = read;
                    copy.is_some()
                }
                // The client's body failed while it was being buffered.
                Err(_) => return local(StatusCode::BAD_REQUEST, None, &target.stats, start, inflight),
            },
        };
        if let Some((to, _)) = mirror {
            send_mirror(to, backend, &key, copy.as_ref(), policy);
        }
        // Not boxed: the forwarding future is made in place in this one (its arguments are
        // references and the request's box); whoever must move this future boxes it once
        // (the HTTP/2 server per stream, `listener` for hyper's server).
        let forwarding = {
            let (key, copy, inflight) = (&key, &mut copy, &mut inflight);
            move || forward(backend, endpoint, req, key, (replayable, copy), policy, inflight)
        };
        let Some((result, endpoint, sent)) = within(policy, start, forwarding).await else {
            return local(StatusCode::GATEWAY_TIMEOUT, None, &target.stats, start, inflight);
        };
        match result {
            Ok((resp, pooled)) => {
                let now = Instant::now();
                if resp.status().is_server_error() {
                    // Failing fast must not make an endpoint look good to the balancer.
                    penalize(endpoint, sent);
                } else {
                    endpoint.load.observe(now - sent, now);
                }
                let (mut parts, mut body) = resp.into_parts();
                // Answer in the client's protocol, whatever the upstream spoke.
                parts.version = version;
                if let Some(raw) = body.raw_head() {
                    edit_response(raw, route, set_cookie, |raw| raw.strip_hop_by_hop(false));
                } else {
                    edit_response(&mut parts.headers, route, set_cookie, headers::strip_hop_by_hop);
                }
                target.stats.record(parts.status, now - start);
                let mut body = ProxyBody::upstream(body, inflight, pooled);
                if let Some(deadline) = body_deadline(policy, start, sent) {
                    body = body.until(deadline);
                }
                Response::from_parts(parts, body)
            }
            Err(e) => failed(&e, backend, endpoint, sent, &target.stats, start, inflight),
        }
    }

    /// The request to send upstream: hop-by-hop headers removed, forwarding headers set, the
    /// route's request filters applied; for HTTP/1.1 an origin-form URI and a `Host` (the
    /// request's authority, without port 80, when it had no `Host`), for HTTP/2 an absolute URI
    /// with the request's authority (either way the endpoint's address when it has none).
    /// Also returns that authority: the upstream pool's key.
    fn upstream_request(
        &self,
        req: &mut Request<ProxyBody>,
        authority: Option<Authority>,
        route: &Route,
        backend: &Backend,
        endpoint: &Endpoint,
    ) -> Option<Authority> {
        if backend.protocol == Protocol::H2c {
            // h2's client takes a `HeaderMap`.
            crate::body::materialize(req);
        }
        // Fields the client sent as bytes are edited as bytes (`headers::raw`).
        let mut raw = req.body_mut().take_head();
        // Not shared yet (the replay copy is taken after this): no copy made.
        let has_host = match raw.as_mut().map(Arc::make_mut) {
            Some(h) => self.edit_request(h, route, |h| h.strip_hop_by_hop(true), headers::set_forwarded_raw),
            None => self.edit_request(
                req.headers_mut(),
                route,
                headers::strip_request_hop_by_hop,
                headers::set_forwarded,
            ),
        };
        let mut authority = authority;
        let mut path_and_query = req.uri().path_and_query().cloned();
        if let Some(rw) = &route.filters.rewrite {
            if let Some((rewritten, _)) = &rw.hostname {
                authority = Some(rewritten.clone());
            }
            if let Some(modifier) = &rw.path {
                let path = modifier.apply(req.uri().path(), route.matcher.matched_prefix());
                let pq = match req.uri().query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path,
                };
                path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
            }
        }
        let authority = authority.unwrap_or_else(|| endpoint.authority.clone());
        let path_and_query = path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        match backend.protocol {
            Protocol::Http1 => {
                *req.version_mut() = Version::HTTP_11;
                if !has_host {
                    let host = match authority.port_u16() {
                        Some(80) => HeaderValue::from_str(authority.host()),
                        _ => HeaderValue::from_str(authority.as_str()),
                    };
                    match raw.as_mut().map(Arc::make_mut) {
                        Some(h) => h.insert(HOST, host.ok()?),
                        None => {
                            req.headers_mut().insert(HOST, host.ok()?);
                        }
                    }
                }
            }
            Protocol::H2c => {
                // `:authority` carries it.
                *req.version_mut() = Version::HTTP_2;
                req.headers_mut().remove(HOST);
                uri.scheme = Some(Scheme::HTTP);
                uri.authority = Some(authority.clone());
            }
        }
        req.body_mut().set_head(raw);
        uri.path_and_query = Some(path_and_query);
        *req.uri_mut() = Uri::from_parts(uri).ok()?;
        Some(authority)
    }
}

impl Conn {
    /// A request's header fields on their way upstream: hop-by-hop ones removed (`strip`),
    /// forwarding fields set (`forwarded`), `x-forwarded-client-cert` set or removed, the
    /// route's `RequestHeaderModifier`s and `URLRewrite` hostname applied. Whether a `Host`
    /// is there then.
    fn edit_request<H: HeaderEdit>(
        &self,
        h: &mut H,
        route: &Route,
        strip: impl FnOnce(&mut H),
        forwarded: impl FnOnce(&mut H, &HeaderValue),
    ) -> bool {
        strip(h);
        forwarded(h, &self.client_ip);
        headers::set_client_cert(h, self.client_cert.as_ref());
        for m in &route.filters.request_headers {
            m.apply(h);
        }
        if let Some((_, hostname)) = route.filters.rewrite.as_ref().and_then(|rw| rw.hostname.as_ref()) {
            h.insert_header(HOST, hostname.clone());
        }
        h.contains_header(&HOST)
    }
}

/// A response's header fields on their way to the client: hop-by-hop ones removed (`strip`),
/// the route's `ResponseHeaderModifier`s applied, the session's `set-cookie` added.
fn edit_response<H: HeaderEdit>(
    headers: &mut H,
    route: &Route,
    set_cookie: Option<&HeaderValue>,
    strip: impl FnOnce(&mut H),
) {
    strip(headers);
    for m in &route.filters.response_headers {
        m.apply(headers);
    }
    if let Some(cookie) = set_cookie {
        headers.append_header(SET_COOKIE, cookie.clone());
    }
}

/// The parts of a request needed to send it again. A request is sent again as itself while
/// the upstream client only reads it (its fast path); a copy is made before a try that consumes
/// it (hyper's and h2's clients), for a mirror, or when its body was read here (`prepare`).
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// The fields kept as bytes (`ProxyBody::head`), if they are.
    head: Option<Arc<RawHeaders>>,
    body: Option<Bytes>,
    /// Boxed: rare, and a `HeaderMap` inline made the replay copy 88 bytes longer.
    trailers: Option<Box<HeaderMap>>,
}

impl Replay {
    /// Whether the request can be sent again, without awaiting, when its body is already known:
    /// none, or in memory whole (the engine's own HTTP/1.1 server reads small bodies before
    /// routing). No copy is made here (`Replay::known` makes one when it is needed). `None`: the
    /// body streams, `prepare` decides.
    fn at_once(req: &Request<ProxyBody>, policy: &RetryPolicy, mirrored: bool) -> Option<bool> {
        use http_body::Body as _;
        if req.body().is_end_stream() {
            return Some(true);
        }
        req.body().in_memory()?;
        let (limit, wanted) = Replay::limit(req, policy, mirrored);
        Some(wanted && req.body().size_hint().lower() <= limit)
    }

    /// A copy of a request whose body is known (`at_once`); the body's bytes are shared, not copied.
    fn known(req: &Request<ProxyBody>) -> Replay {
        use http_body::Body as _;
        let data = if req.body().is_end_stream() {
            None
        } else {
            req.body().in_memory().flatten().cloned()
        };
        Replay::of(req, data, None)
    }

    /// The most body bytes kept for a replay, and whether the request is replayed at all.
    fn limit<B>(req: &Request<B>, policy: &RetryPolicy, mirrored: bool) -> (u64, bool) {
        // A mirrored request is copied whatever its method, up to the larger of the limits.
        if mirrored {
            (policy.max_body.max(DEFAULT_MAX_BODY), true)
        } else {
            (policy.max_body, policy.retries_method(req.method()))
        }
    }

    /// A replayable copy of `req` when its body allows one: no body, or (for a method the policy
    /// retries) a body of at most `max_body` bytes, which is read into memory here (and put
    /// back into `req` as a buffered body). Longer bodies are streamed and never replayed.
    async fn prepare(
        req: &mut Request<ProxyBody>,
        policy: &RetryPolicy,
        mirrored: bool,
    ) -> Result<Option<Replay>, BodyError> {
        use http_body::Body as _;
        if req.body().is_end_stream() {
            return Ok(Some(Replay::of(req, None, None)));
        }
        let (limit, wanted) = Replay::limit(req, policy, mirrored);
        // A body known to be longer is streamed at once; one of unknown length (chunked, HTTP/2
        // without content-length) is read up to the limit, then streamed if longer.
        let too_long = req.body().size_hint().lower() > limit;
        if too_long || !wanted {
            return Ok(None);
        }
        let mut body = std::mem::replace(req.body_mut(), ProxyBody::none());
        let head = body.take_head();
        let (data, trailers) = match body.read_up_to(limit).await? {
            Ok(read) => read,
            Err(mut longer) => {
                longer.set_head(head);
                *req.body_mut() = longer;
                return Ok(None);
            }
        };
        let mut body = ProxyBody::buffered(Some(data.clone()), trailers.clone());
        body.set_head(head);
        *req.body_mut() = body;
        Ok(Some(Replay::of(req, Some(data), trailers)))
    }

    fn of(req: &Request<ProxyBody>, body: Option<Bytes>, trailers: Option<HeaderMap>) -> Replay {
        Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            head: req.body().head_shared(),
            body,
            trailers: trailers.map(Box::new),
        }
    }

    /// A copy of the request to send again, boxed as the upstream client takes it.
    fn request(&self) -> Box<Request<ProxyBody>> {
        let mut body = ProxyBody::buffered(self.body.clone(), self.trailers.as_deref().cloned());
        body.set_head(self.head.clone());
        let mut copy = Box::new(Request::new(body));
        *copy.method_mut() = self.method.clone();
        *copy.uri_mut() = self.uri.clone();
        *copy.version_mut() = self.version;
        *copy.headers_mut() = self.headers.clone();
        copy
    }
}

/// Why one try got no usable response.
#[derive(Debug)]
enum TryError {
    Upstream(UpstreamError),
    /// No response headers within the route's per-try timeout.
    PerTryTimeout,
}

impl TryError {
    fn failure(&self) -> Failure {
        match self {
            TryError::PerTryTimeout => Failure::PerTryTimeout,
            TryError::Upstream(e) if e.is_connect() => Failure::ConnectFailure,
            TryError::Upstream(e) if refused(e) => Failure::RefusedStream,
            TryError::Upstream(_) => Failure::Reset,
        }
    }
}

type Answer = Result<Reply, TryError>;

/// Sends a request to an endpoint, and again while the route's retry policy says so: the
/// request is replayable (`Replay`), its failure matches a retry condition (`RetryPolicy::
/// condition`: unprocessed failures for any method, the others for retryable methods only),
/// attempts are left and the budget grants one. A retry waits its backoff and goes to an
/// endpoint not tried yet when the backend has one. Returns the last try's answer, the
/// endpoint that gave it and when the try started.
///
///
/// The request comes boxed and stays in its box: the upstream client's fast path borrows it
/// (and a retry sends it again as it is); a path that consumes it gets it whole, after a copy
/// for the retries was made (`Replay`; `replay`: whether the request may be sent again, and its
/// copy if one was made). `authority` is the upstream pool's key.
async fn forward<'b>(
    backend: &'b Backend,
    mut endpoint: &'b Arc<Endpoint>,
    req: Box<Request<ProxyBody>>,
    authority: &Authority,
    replay: (bool, &mut Option<Replay>),
    policy: &RoutePolicy,
    inflight: &mut InFlight,
) -> (Answer, &'b Arc<Endpoint>, Instant) {
    let retry = &policy.retry;
    let limit = policy.timeouts.per_try;
    let (replayable, copy) = replay;
    let mut current = Some(req);
    let mut tried: Vec<&Arc<Endpoint>> = Vec::new();
    // Held while a retry is in flight (dropped when the next one replaces it, or on return).
    let mut _retrying: Option<Slot> = None;
    let mut retries = 0;
    loop {
        let req = match (current.take(), &*copy) {
            (Some(req), _) => req,
            (None, Some(copy)) => copy.request(),
            (None, None) => unreachable!("only a replayable request is tried again"),
        };
        let sent = Instant::now();
        let client = &endpoint.client;
        let answer = if client.reads(&req) {
            let answer = try_once(limit, || client.request_ref(authority, &req)).await;
            current = Some(req);
            answer
        } else {
            if replayable && copy.is_none() && retries < retry.attempts {
                *copy = Some(Replay::known(&req));
            }
            try_once(limit, || client.request(authority, req)).await
        };
        if matches!(answer, Err(TryError::PerTryTimeout)) {
            policy.stats.timeouts_per_try.fetch_add(1, Relaxed);
        }
        match &answer {
            // A pool limit answers at once: no retry, and no verdict on the endpoint.
            Err(TryError::Upstream(UpstreamError::Overflow(_))) => return (answer, endpoint, sent),
            Ok((resp, _)) => backend.record(endpoint, Outcome::of_status(resp.status())),
            // A refused stream says nothing about the endpoint's health.
            Err(e) if e.failure() == Failure::RefusedStream => {}
            Err(_) => backend.record(endpoint, Outcome::GatewayError),
        }
        if !replayable || retries >= retry.attempts {
            return (answer, endpoint, sent);
        }
        let failure = match &answer {
            Ok((resp, _)) if resp.status().as_u16() < 400 => return (answer, endpoint, sent),
            Ok((resp, _)) => Failure::Status(resp.status()),
            Err(e) => e.failure(),
        };
        let method = match (&current, &*copy) {
            (Some(req), _) => req.method(),
            (None, Some(copy)) => &copy.method,
            (None, None) => unreachable!("a copy is made before a replayable request is consumed"),
        };
        let Some(reason) = retry.condition(failure, method) else {
            return (answer, endpoint, sent);
        };
        if !retry.budget.withdraw() {
            policy.stats.budget_exhausted.fetch_add(1, Relaxed);
            return (answer, endpoint, sent);
        }
        // Held through the retry's try (`limits.max_retries`); overflow: no retry.
        let Some(slot) = backend.admit_retry() else {
            return (answer, endpoint, sent);
        };
        _retrying = Some(slot);
        policy.stats.retried(reason);
        penalize(endpoint, sent);
        if let Ok((resp, pooled)) = answer {
            discard(resp, pooled);
        }
        retries += 1;
        tried.push(endpoint);
        let wait = retry.backoff(retries);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        endpoint = untried(backend, &tried).unwrap_or(endpoint);
        inflight.to_endpoint(endpoint);
    }
}

/// Fault injection: waits the delay and/or returns the abort status, each for its share of requests.
async fn inject(route: &Route) -> Option<StatusCode> {
    let fault = route.filters.fault.as_ref()?;
    let stats = &route.policy.stats;
    if let Some((percent, delay)) = fault.delay {
        if hit(percent) {
            stats.faults_delay.fetch_add(1, Relaxed);
            tokio::time::sleep(delay).await;
        }
    }
    let (percent, status) = fault.abort?;
    hit(percent).then(|| {
        stats.faults_abort.fetch_add(1, Relaxed);
        status
    })
}

/// Sends a copy of the request to the mirror backend in its own task and ignores the answer
/// (its body is read and dropped). Skipped (counted) when the request body could not be kept,
/// or the mirror backend has no endpoint or speaks another protocol than the primary.
fn send_mirror(
    to: &Arc<Backend>,
    primary: &Backend,
    authority: &Authority,
    replay: Option<&Replay>,
    policy: &RoutePolicy,
) {
    let endpoint = to.pick().filter(|_| to.protocol == primary.protocol);
    let (Some(endpoint), Some(replay)) = (endpoint, replay) else {
        policy.stats.mirror_skipped.fetch_add(1, Relaxed);
        return;
    };
    policy.stats.mirrored.fetch_add(1, Relaxed);
    let (endpoint, authority, req) = (endpoint.clone(), authority.clone(), replay.request());
    tokio::spawn(async move {
        if let Ok((resp, pooled)) = endpoint.client.request(&authority, req).await {
            let mut body = resp.into_body();
            while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                if frame.is_err() {
                    return;
                }
            }
            pooled.release();
        }
    });
}

/// When a response body must have ended: the earlier of the request timeout (from the
/// request's start) and the per-try timeout (from the last try's start), as Gateway API's
/// `timeouts.request` and `timeouts.backendRequest` cover the whole response.
fn body_deadline(policy: &RoutePolicy, start: Instant, sent: Instant) -> Option<Deadline> {
    let t = policy.timeouts;
    let request = t.request.map(|limit| (start + limit, false));
    let per_try = t.per_try.map(|limit| (sent + limit, true));
    let (at, is_per_try) = match (request, per_try) {
        (Some(r), Some(p)) => {
            if p.0 < r.0 {
                p
            } else {
                r
            }
        }
        (r, p) => r.or(p)?,
    };
    Some(Deadline::new(at, policy.stats.clone(), is_per_try))
}

/// Runs the future `forwarding` makes within the route's request timeout; `None` (counted) when
/// it expired. Made here, not passed in: an async fn's argument is moved into its state, and
/// the forwarding future is large (it holds the upstream client's).
async fn within<T, F: Future<Output = T>>(
    policy: &RoutePolicy,
    start: Instant,
    forwarding: impl FnOnce() -> F,
) -> Option<T> {
    match policy.timeouts.request {
        None => Some(forwarding().await),
        Some(limit) => {
            let done = tokio::time::timeout_at(start + limit, forwarding()).await.ok();
            if done.is_none() {
                policy.stats.timeouts_request.fetch_add(1, Relaxed);
            }
            done
        }
    }
}

/// One try within the route's per-try timeout. The future `sending` makes is made here (as in
/// `within`), not passed in.
async fn try_once<F>(limit: Option<Duration>, sending: impl FnOnce() -> F) -> Answer
where
    F: Future<Output = Result<Reply, UpstreamError>>,
{
    let sending = sending();
    match limit {
        None => sending.await.map_err(TryError::Upstream),
        Some(limit) => match tokio::time::timeout(limit, sending).await {
            Ok(res) => res.map_err(TryError::Upstream),
            Err(_) => Err(TryError::PerTryTimeout),
        },
    }
}

/// A response that will be retried: its connection goes back to the pool when its body has
/// already ended, else it closes (reading an unknown body to reuse a connection is not worth it).
fn discard(resp: Box<Response<PeerBody>>, pooled: Pooled) {
    use http_body::Body as _;
    let ended = resp.body().is_end_stream();
    drop(resp);
    if ended {
        pooled.release();
    }
}

/// An endpoint of the backend not in `tried`: the balancer's pick when it is one, else the
/// first untried one; `None` when every endpoint was tried.
fn untried<'b>(backend: &'b Backend, tried: &[&Arc<Endpoint>]) -> Option<&'b Arc<Endpoint>> {
    let fresh = |e: &&Arc<Endpoint>| !tried.iter().any(|t| Arc::ptr_eq(t, e));
    (0..2)
        .find_map(|_| backend.pick().filter(fresh))
        .or_else(|| backend.endpoints.iter().find(fresh))
}

/// A failed endpoint looks slow to the balancer for a while (`FAILURE_PENALTY` on top of the
/// time it took to fail).
fn penalize(endpoint: &Endpoint, sent: Instant) {
    let now = Instant::now();
    endpoint.load.observe(now - sent + FAILURE_PENALTY, now);
}

/// An HTTP/2 stream the upstream refused or cut with a graceful GOAWAY: it was not processed.
fn refused(err: &UpstreamError) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let reason = h2.reason();
            return h2.is_remote()
                && (reason == Some(h2::Reason::REFUSED_STREAM)
                    || h2.is_go_away() && reason == Some(h2::Reason::NO_ERROR));
        }
        source = e.source();
    }
    false
}

/// The request's authority: the URI's (HTTP/2, absolute-form HTTP/1.1), else `Host`. A `Host`
/// kept as bytes is shared, not copied (the upstream pool's key is cloned per request; a
/// copied one was also promoted to shared, a second allocation).
fn authority(req: &Request<ProxyBody>) -> Option<Authority> {
    if let Some(a) = req.uri().authority() {
        return Some(a.clone());
    }
    let host = match req.body().head() {
        // By its tag (no `tag_of` per request), shared with the head's block (no copy).
        Some(raw) => {
            let host = raw.get(crate::headers::raw::Known::HOST)?;
            if let Some(shared) = raw.share(host) {
                return Authority::from_maybe_shared(shared).ok();
            }
            host
        }
        None => req.headers().get(HOST)?.as_bytes(),
    };
    Authority::try_from(host).ok()
}

/// `Authority::host` with byte searches: the same result (userinfo dropped, an IPv6 literal
/// kept in its brackets, the port dropped) without `str` pattern splitting, which cost
/// ~400 instructions per request (callgrind).
fn host_of(authority: &Authority) -> &str {
    let s = authority.as_str();
    let b = s.as_bytes();
    let start = b.iter().rposition(|&c| c == b'@').map_or(0, |i| i + 1);
    let host_port = &b[start..];
    let end = if host_port.first() == Some(&b'[') {
        match host_port.iter().position(|&c| c == b']') {
            Some(i) => i + 1,
            None => return authority.host(),
        }
    } else {
        host_port.iter().position(|&c| c == b':').unwrap_or(host_port.len())
    };
    // Cut at ASCII bytes, so on char boundaries.
    &s[start..start + end]
}

/// The engine's answer when the last try failed: 503 for a pool limit, 504 for a per-try
/// timeout, else 502.
fn failed(
    e: &TryError,
    backend: &Backend,
    endpoint: &Endpoint,
    sent: Instant,
    stats: &RouteStats,
    start: Instant,
    inflight: InFlight,
) -> Response<ProxyBody> {
    if let TryError::Upstream(UpstreamError::Overflow(limit)) = e {
        backend.stats.overflowed(*limit);
        return overflow(*limit, stats, start, inflight);
    }
    penalize(endpoint, sent);
    let status = match e {
        TryError::PerTryTimeout => StatusCode::GATEWAY_TIMEOUT,
        TryError::Upstream(e) => {
            if let Some(mismatch) = e.identity_mismatch() {
                return local_text(StatusCode::BAD_GATEWAY, &mismatch.to_string(), stats, start, inflight);
            }
            StatusCode::BAD_GATEWAY
        }
    };
    local(status, None, stats, start, inflight)
}

/// 503 at once for a request over a connection-pool limit, naming the limit.
fn overflow(limit: Limit, stats: &RouteStats, start: Instant, inflight: InFlight) -> Response<ProxyBody> {
    let header = (OVERFLOW, HeaderValue::from_static(limit.name()));
    local(StatusCode::SERVICE_UNAVAILABLE, Some(header), stats, start, inflight)
}

const OVERFLOW: HeaderName = HeaderName::from_static("x-fastmesh-overflow");

/// A response the engine makes itself, with an empty body.
fn local(
    status: StatusCode,
    header: Option<(HeaderName, HeaderValue)>,
    stats: &RouteStats,
    start: Instant,
    inflight: InFlight,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty(inflight));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    if let Some((name, value)) = header {
        resp.headers_mut().insert(name, value);
    }
    stats.record(status, start.elapsed());
    resp
}

/// A response the engine makes itself, with a one-line text body.
fn local_text(
    status: StatusCode,
    text: &str,
    stats: &RouteStats,
    start: Instant,
    inflight: InFlight,
) -> Response<ProxyBody> {
    local_body(status, Bytes::from(format!("{text}\n")), stats, start, inflight)
}

/// A response the engine makes itself, with a `text/plain` body.
fn local_body(
    status: StatusCode,
    body: Bytes,
    stats: &RouteStats,
    start: Instant,
    inflight: InFlight,
) -> Response<ProxyBody> {
    let len = HeaderValue::from(body.len());
    let mut resp = Response::new(ProxyBody::text(body, inflight));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_LENGTH, len);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    stats.record(status, start.elapsed());
    resp
}

#[cfg(test)]
mod host_tests {
    use super::*;

    /// A request whose fields are bytes (`h1::server`) with `Host: host`.
    fn raw_request(host: &str) -> (Request<ProxyBody>, Bytes) {
        let block = Bytes::from(format!("GET / HTTP/1.1\r\nx-a: 1\r\nHost: {host}\r\n\r\n"));
        let name = block.windows(4).position(|w| w == b"Host").unwrap();
        let value = name + 6;
        let spans = [[16, 19, 21, 22], [name, name + 4, value, value + host.len()]];
        let mut body = ProxyBody::none();
        body.set_head(Some(Arc::new(RawHeaders::new(block.clone(), &spans))));
        (Request::new(body), block)
    }

    fn within(a: &Authority, block: &Bytes) -> bool {
        let (at, start) = (a.as_str().as_ptr() as usize, block.as_ptr() as usize);
        at >= start && at < start + block.len()
    }

    #[test]
    fn a_host_kept_as_bytes_becomes_the_authority_without_a_copy() {
        let (req, block) = raw_request("example.com:8080");
        let a = authority(&req).unwrap();
        assert_eq!(a.as_str(), "example.com:8080");
        assert!(within(&a, &block), "shares the head's bytes");
        // A `Host` an edit put there is not in the head's bytes: copied.
        let (mut req, block) = raw_request("example.com:8080");
        let mut head = req.body_mut().take_head().unwrap();
        Arc::make_mut(&mut head).insert(HOST, HeaderValue::from_static("other:81"));
        req.body_mut().set_head(Some(head));
        let a = authority(&req).unwrap();
        assert_eq!(a.as_str(), "other:81");
        assert!(!within(&a, &block));
        // Not a valid authority: none, as before.
        assert!(authority(&raw_request("a b").0).is_none());
    }

    #[test]
    fn host_of_matches_authority_host() {
        for s in [
            "example.com",
            "example.com:8080",
            "Example.COM:80",
            "127.0.0.1",
            "127.0.0.1:25002",
            "[::1]",
            "[::1]:8080",
            "user@host:1",
            "user:pw@host",
            "a@b@c:9",
            "user@[fe80::1]:443",
        ] {
            let a = Authority::try_from(s).unwrap();
            assert_eq!(host_of(&a), a.host(), "{s}");
        }
    }
}
