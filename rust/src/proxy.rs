//! The request path: load the snapshot once, pick the virtual host and the first matching
//! route, apply its filters, pick a backend and an endpoint, forward, and stream both bodies.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::balance::p2c::DEFAULT_RTT;
use crate::balance::{Backend, Endpoint};
use crate::body::{InFlight, ProxyBody};
use crate::config::Protocol;
use crate::headers;
use crate::pool::{Pooled, UpstreamError};
use crate::route::filters::RequestTarget;
use crate::route::Route;
use crate::snapshot::Snapshot;
use crate::stats::{RouteStats, Stats};
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

    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
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
        let Some(target) = route.pick() else {
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
        let Some(endpoint) = backend.pick() else {
            return local(StatusCode::SERVICE_UNAVAILABLE, None, &target.stats, start, inflight);
        };
        inflight.to_endpoint(endpoint);
        let Some((upstream_req, key)) = self.upstream_request(req, authority, route, backend, endpoint) else {
            return local(StatusCode::INTERNAL_SERVER_ERROR, None, &target.stats, start, inflight);
        };
        // Boxed: the forwarding future (pool, connection, retry) is large, and this future is
        // moved whole when hyper stores or spawns it (a task per HTTP/2 stream). Boxing it
        // keeps those moves small (callgrind: memcpy was 18 % of h2c instructions).
        let (result, endpoint, sent) = Box::pin(forward(backend, endpoint, key, upstream_req, &mut inflight)).await;
        match result {
            Ok((resp, pooled)) => {
                let now = Instant::now();
                endpoint.load.observe(now - sent, now);
                let (mut parts, body) = resp.into_parts();
                // Answer in the client's protocol, whatever the upstream spoke.
                parts.version = version;
                headers::strip_hop_by_hop(&mut parts.headers);
                for m in &route.filters.response_headers {
                    m.apply(&mut parts.headers);
                }
                target.stats.record(parts.status, now - start);
                Response::from_parts(parts, ProxyBody::upstream(body, inflight, pooled))
            }
            Err(e) => {
                penalize(endpoint, sent);
                if let Some(mismatch) = e.identity_mismatch() {
                    return local_text(
                        StatusCode::BAD_GATEWAY,
                        &mismatch.to_string(),
                        &target.stats,
                        start,
                        inflight,
                    );
                }
                local(StatusCode::BAD_GATEWAY, None, &target.stats, start, inflight)
            }
        }
    }

    /// The request to send upstream: hop-by-hop headers removed, forwarding headers set, the
    /// route's request filters applied; for HTTP/1.1 an origin-form URI and a `Host` (the
    /// request's authority, without port 80, when it had no `Host`), for HTTP/2 an absolute URI
    /// with the request's authority (either way the endpoint's address when it has none).
    /// Also returns that authority: the upstream pool's key.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        authority: Option<Authority>,
        route: &Route,
        backend: &Backend,
        endpoint: &Endpoint,
    ) -> Option<(Request<ProxyBody>, Authority)> {
        let (mut parts, body) = req.into_parts();
        let h = &mut parts.headers;
        headers::strip_request_hop_by_hop(h);
        headers::set_forwarded(h, &self.client_ip);
        headers::set_client_cert(h, self.client_cert.as_ref());
        for m in &route.filters.request_headers {
            m.apply(h);
        }
        let mut authority = authority;
        let mut path_and_query = parts.uri.path_and_query().cloned();
        if let Some(rw) = &route.filters.rewrite {
            if let Some((rewritten, hostname)) = &rw.hostname {
                authority = Some(rewritten.clone());
                h.insert(HOST, hostname.clone());
            }
            if let Some(modifier) = &rw.path {
                let path = modifier.apply(parts.uri.path(), route.matcher.matched_prefix());
                let pq = match parts.uri.query() {
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
                parts.version = Version::HTTP_11;
                if !parts.headers.contains_key(HOST) {
                    let host = match authority.port_u16() {
                        Some(80) => HeaderValue::from_str(authority.host()),
                        _ => HeaderValue::from_str(authority.as_str()),
                    };
                    parts.headers.insert(HOST, host.ok()?);
                }
            }
            Protocol::H2c => {
                // `:authority` carries it.
                parts.version = Version::HTTP_2;
                parts.headers.remove(HOST);
                uri.scheme = Some(Scheme::HTTP);
                uri.authority = Some(authority.clone());
            }
        }
        uri.path_and_query = Some(path_and_query);
        parts.uri = Uri::from_parts(uri).ok()?;
        Some((Request::from_parts(parts, ProxyBody::request(body)), authority))
    }
}

/// Sends a request to an endpoint, and once more when that is safe: the request has no body
/// and its first try provably was not processed. The connection could not be made (then
/// another endpoint of the backend is tried, if it has one); an HTTP/2 stream was refused or
/// cut by a graceful GOAWAY; or, for idempotent methods, the connection closed under it (a
/// keep-alive race). Returns the endpoint that answered and when the request went to it.
async fn forward<'b>(
    backend: &'b Backend,
    mut endpoint: &'b Arc<Endpoint>,
    authority: Authority,
    req: Request<ProxyBody>,
    inflight: &mut InFlight,
) -> (
    Result<(Response<Incoming>, Pooled), UpstreamError>,
    &'b Arc<Endpoint>,
    Instant,
) {
    use http_body::Body as _;
    let replay = req.body().is_end_stream().then(|| {
        let mut copy = Request::new(ProxyBody::none());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        copy
    });
    let sent = Instant::now();
    let again = match (endpoint.client.request(&authority, req).await, replay) {
        (Err(e), Some(again)) if e.is_connect() => {
            penalize(endpoint, sent);
            match backend.pick().filter(|other| !Arc::ptr_eq(other, endpoint)) {
                Some(other) => {
                    inflight.to_endpoint(other);
                    endpoint = other;
                    again
                }
                None => return (Err(e), endpoint, sent),
            }
        }
        (Err(e), Some(again)) if unprocessed(&e, again.method().is_idempotent()) => again,
        (res, _) => return (res, endpoint, sent),
    };
    let sent = Instant::now();
    (endpoint.client.request(&authority, again).await, endpoint, sent)
}

/// A failed endpoint looks slow to the balancer for a while.
fn penalize(endpoint: &Endpoint, sent: Instant) {
    let now = Instant::now();
    endpoint.load.observe(now - sent + DEFAULT_RTT, now);
}

fn unprocessed(err: &UpstreamError, idempotent: bool) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let reason = h2.reason();
            return h2.is_remote()
                && (reason == Some(h2::Reason::REFUSED_STREAM)
                    || h2.is_go_away() && reason == Some(h2::Reason::NO_ERROR));
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if idempotent && (h.is_incomplete_message() || h.is_canceled()) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// The request's authority: the URI's (HTTP/2, absolute-form HTTP/1.1), else `Host`.
fn authority<B>(req: &Request<B>) -> Option<Authority> {
    if let Some(a) = req.uri().authority() {
        return Some(a.clone());
    }
    let host = req.headers().get(HOST)?;
    Authority::try_from(host.as_bytes()).ok()
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
