//! The body type both ways: the peer's body streamed as it arrives (never buffered), or
//! nothing (responses the engine makes, a bodiless request replayed). A response body carries
//! the request's in-flight guard, so a request counts as active until its response is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::balance::{Endpoint, Slot};
use crate::h1::body::RawBody;
use crate::headers::raw::RawHeaders;
use crate::pool::Pooled;
use crate::stats::{ResilienceStats, Stats};

/// Why a body stopped before its end.
#[derive(Debug)]
pub enum BodyError {
    /// The peer's body failed (reset, closed early, malformed).
    Peer(hyper::Error),
    /// The upstream's body failed on the engine's own HTTP/1.1 client (`h1`).
    Io(std::io::Error),
    /// The route's request or per-try timeout expired while the response body was streaming:
    /// the client's connection (HTTP/1.1) or stream (HTTP/2) is cut, as Envoy does once the
    /// headers are sent.
    Timeout,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Peer(e) => write!(f, "{e}"),
            BodyError::Io(e) => write!(f, "{e}"),
            BodyError::Timeout => f.write_str("response body timed out"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Peer(e) => Some(e),
            BodyError::Io(e) => Some(e),
            BodyError::Timeout => None,
        }
    }
}

/// The end of a route's timeout for a response body, and the counter it bumps when it fires
/// (`request` or `per_try`, whichever ends first).
pub struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
    stats: Arc<ResilienceStats>,
    per_try: bool,
}

impl Deadline {
    pub fn new(at: tokio::time::Instant, stats: Arc<ResilienceStats>, per_try: bool) -> Self {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            stats,
            per_try,
        }
    }
}

/// Counts a request in `requests_active` (engine-wide, and per endpoint once one is chosen)
/// until dropped.
pub struct InFlight {
    stats: Arc<Stats>,
    endpoint: Option<Arc<Endpoint>>,
    /// The request's place among its backend's concurrent requests (`limits.max_requests`).
    slot: Option<Slot>,
}

impl InFlight {
    pub fn new(stats: &Arc<Stats>) -> Self {
        stats.requests_active.fetch_add(1, Relaxed);
        InFlight {
            stats: stats.clone(),
            endpoint: None,
            slot: None,
        }
    }

    /// Holds the backend slot until the response is done.
    pub fn hold(&mut self, slot: Slot) {
        self.slot = Some(slot);
    }

    pub fn to_endpoint(&mut self, endpoint: &Arc<Endpoint>) {
        endpoint.stats.requests_active.fetch_add(1, Relaxed);
        if let Some(old) = self.endpoint.replace(endpoint.clone()) {
            old.stats.requests_active.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.requests_active.fetch_sub(1, Relaxed);
        if let Some(e) = &self.endpoint {
            e.stats.requests_active.fetch_sub(1, Relaxed);
        }
    }
}

/// A peer's body: hyper's (downstream requests, HTTP/2 and streamed HTTP/1.1 upstreams) or
/// the engine's own HTTP/1.1 client's (`h1`). Both are `Unpin`. The latter is boxed: a
/// response (and this body in it) is moved about 25 times on its way through hyper's server,
/// and inline it tripled `ProxyBody` (callgrind: ~8,000 instructions of memcpy per request).
pub enum PeerBody {
    Hyper(Incoming),
    Raw(Box<RawBody>),
    /// A request body on the engine's own HTTP/2 server (`h2`).
    H2(Box<crate::h2::body::RecvBody>),
}

impl PeerBody {
    /// The header fields of a response from the engine's own HTTP/1.1 client, kept as bytes
    /// (`headers::raw`) while nobody needed a `HeaderMap`; the response's `HeaderMap` is empty
    /// then.
    pub fn raw_head(&mut self) -> Option<&mut RawHeaders> {
        match self {
            PeerBody::Raw(b) => b.head.as_mut(),
            PeerBody::Hyper(_) | PeerBody::H2(_) => None,
        }
    }

    pub fn take_raw_head(&mut self) -> Option<RawHeaders> {
        match self {
            PeerBody::Raw(b) => b.head.take(),
            PeerBody::Hyper(_) | PeerBody::H2(_) => None,
        }
    }
}

impl Body for PeerBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            PeerBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::Peer))),
            PeerBody::Raw(b) => b.poll_frame(cx).map(|f| f.map(|r| r.map_err(BodyError::Io))),
            PeerBody::H2(b) => Pin::new(&mut **b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::Io))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PeerBody::Hyper(b) => b.is_end_stream(),
            PeerBody::Raw(b) => b.is_end_stream(),
            PeerBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PeerBody::Hyper(b) => b.size_hint(),
            PeerBody::Raw(b) => b.size_hint(),
            PeerBody::H2(b) => b.size_hint(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ProxyBody {
        #[pin]
        inner: Option<PeerBody>,
        // A request body read into memory so it can be replayed, or a body the engine wrote
        // itself (an error message); `inner` is `None` then.
        buffered: Option<Bytes>,
        // Boxed: rare, and a `HeaderMap` inline made every move of a request or response 88
        // bytes longer (callgrind: memcpy was 16 % of the instructions of the h1 fast path).
        trailers: Option<Box<HeaderMap>>,
        guard: Option<InFlight>,
        // The upstream connection a response body comes on: back to its pool once the body
        // is read to its end.
        pooled: Option<Pooled>,
        // A response body must end before the route's timeout (none: no timer at all). Boxed:
        // rare, and a response is moved by value.
        deadline: Option<Box<Deadline>>,
        // A request's header fields kept as the bytes the client sent (`headers::raw`, from
        // `h1::server` and `h2::server`); the request's `HeaderMap` is empty then. Shared: the replay copy of
        // the request (`proxy::Replay`) takes a reference, not a copy; one pointer to move.
        head: Option<Arc<RawHeaders>>,
    }

    impl PinnedDrop for ProxyBody {
        // hyper stops polling a body once it says it is at its end (content-length reached):
        // the connection is reusable then too.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(pooled) = this.pooled.take() {
                if this.inner.as_ref().get_ref().as_ref().is_some_and(Body::is_end_stream) {
                    pooled.release();
                }
            }
        }
    }
}

impl ProxyBody {
    pub fn empty(guard: InFlight) -> Self {
        ProxyBody {
            inner: None,
            buffered: None,
            trailers: None,
            guard: Some(guard),
            pooled: None,
            deadline: None,
            head: None,
        }
    }

    /// A response body from upstream; an empty one gives its connection back at once (hyper
    /// does not poll a body that says it is at its end).
    pub fn upstream(body: PeerBody, guard: InFlight, pooled: Pooled) -> Self {
        let pooled = if body.is_end_stream() {
            pooled.release();
            None
        } else {
            Some(pooled)
        };
        ProxyBody {
            inner: Some(body),
            buffered: None,
            trailers: None,
            guard: Some(guard),
            pooled,
            deadline: None,
            head: None,
        }
    }

    /// A short body the engine writes itself.
    pub fn text(text: Bytes, guard: InFlight) -> Self {
        ProxyBody {
            inner: None,
            buffered: Some(text).filter(|t| !t.is_empty()),
            trailers: None,
            guard: Some(guard),
            pooled: None,
            deadline: None,
            head: None,
        }
    }

    /// A downstream request body on its way upstream.
    pub fn request(body: Incoming) -> Self {
        ProxyBody::downstream(PeerBody::Hyper(body))
    }

    /// A downstream request body on the engine's own HTTP/2 server.
    pub fn h2(body: crate::h2::body::RecvBody) -> Self {
        ProxyBody::downstream(PeerBody::H2(Box::new(body)))
    }

    fn downstream(inner: PeerBody) -> Self {
        ProxyBody {
            inner: Some(inner),
            buffered: None,
            trailers: None,
            guard: None,
            pooled: None,
            deadline: None,
            head: None,
        }
    }

    /// No body and no guard.
    pub fn none() -> Self {
        ProxyBody::buffered(None, None)
    }

    /// A request body already in memory (a replayable copy); `None`: no body.
    pub fn buffered(data: Option<Bytes>, trailers: Option<HeaderMap>) -> Self {
        ProxyBody {
            inner: None,
            buffered: data.filter(|d| !d.is_empty()),
            trailers: trailers.map(Box::new),
            guard: None,
            pooled: None,
            deadline: None,
            head: None,
        }
    }

    /// The whole body when it is known before sending (no body, or data in memory without
    /// trailers): `Some(None)` no body, `Some(Some(data))`; `None` when it streams. Not taken:
    /// the upstream client's fast path reads it, and a retry sends the same request again.
    pub fn known_ref(&self) -> Option<Option<&Bytes>> {
        let streaming = self.inner.as_ref().is_some_and(|b| !b.is_end_stream());
        if streaming || self.trailers.is_some() {
            return None;
        }
        Some(self.buffered.as_ref())
    }

    /// The whole body when it is in memory (no body, or data without trailers) and nothing was
    /// read from it yet: `Some(None)` no body, `Some(Some(data))`; `None` otherwise.
    pub fn in_memory(&self) -> Option<Option<&Bytes>> {
        (self.inner.is_none() && self.trailers.is_none()).then_some(self.buffered.as_ref())
    }

    /// A request's header fields kept as bytes (`h1::server`, `h2::server`); `None` after `take_head`.
    pub fn head(&self) -> Option<&RawHeaders> {
        self.head.as_deref()
    }

    /// The same fields, shared (the replay copy of a request).
    pub fn head_shared(&self) -> Option<Arc<RawHeaders>> {
        self.head.clone()
    }

    pub fn take_head(&mut self) -> Option<Arc<RawHeaders>> {
        self.head.take()
    }

    pub fn set_head(&mut self, head: Option<Arc<RawHeaders>>) {
        self.head = head;
    }

    /// The response's header fields if they are still bytes (`PeerBody::raw_head`), taken: the
    /// writer of the head writes them (`h1::server`), or `into_map` puts them in the response's
    /// `HeaderMap` (`proxy::Conn::handle`).
    pub fn take_raw_head(&mut self) -> Option<RawHeaders> {
        self.inner.as_mut().and_then(PeerBody::take_raw_head)
    }

    /// Cuts the body (an error to the client, counted) if it has not ended by `deadline`.
    #[must_use]
    pub fn until(mut self, deadline: Deadline) -> Self {
        self.deadline = Some(Box::new(deadline));
        self
    }

    /// Reads the body into memory if it ends within `limit` bytes: `Ok(Ok((data, trailers)))`.
    /// A longer one: `Ok(Err(body))`, the same body (what was read comes first, then the rest).
    pub async fn read_up_to(mut self, limit: u64) -> Result<Result<(Bytes, Option<HeaderMap>), ProxyBody>, BodyError> {
        let mut data = bytes::BytesMut::new();
        let mut trailers = None;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await {
            match frame?.into_data() {
                Ok(chunk) => {
                    data.extend_from_slice(&chunk);
                    if data.len() as u64 > limit {
                        self.buffered = Some(data.freeze());
                        return Ok(Err(self));
                    }
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Ok(Ok((data.freeze(), trailers)))
    }
}

/// Puts a request's header fields kept as bytes (`ProxyBody::head`) into its `HeaderMap`, for
/// whatever needs one (header matchers, session affinity, hyper's and h2's clients).
pub fn materialize(req: &mut http::Request<ProxyBody>) {
    if let Some(head) = req.body_mut().take_head() {
        let map = std::mem::take(req.headers_mut());
        let mut all = Arc::unwrap_or_clone(head).into_map();
        all.extend(map);
        *req.headers_mut() = all;
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        // Data read ahead (a replay copy, or the start of a body too long to keep) comes first.
        if let Some(data) = this.buffered.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(mut inner) = this.inner.as_mut().as_pin_mut() else {
            if let Some(trailers) = this.trailers.take() {
                return Poll::Ready(Some(Ok(Frame::trailers(*trailers))));
            }
            this.guard.take();
            return Poll::Ready(None);
        };
        let frame = inner.as_mut().poll_frame(cx);
        match frame {
            Poll::Ready(None) => {
                if let Some(pooled) = this.pooled.take() {
                    pooled.release();
                }
                this.guard.take();
            }
            Poll::Ready(Some(Err(_))) => {
                this.pooled.take();
                this.guard.take();
            }
            Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => {
                if let Some(pooled) = this.pooled.take() {
                    pooled.release();
                }
            }
            Poll::Pending => {
                if let Some(deadline) = this.deadline.as_mut() {
                    if deadline.sleep.as_mut().poll(cx).is_ready() {
                        let counter = if deadline.per_try {
                            &deadline.stats.timeouts_per_try
                        } else {
                            &deadline.stats.timeouts_request
                        };
                        counter.fetch_add(1, Relaxed);
                        // The upstream connection closes (its body is unread); the request ends.
                        this.deadline.take();
                        this.pooled.take();
                        this.guard.take();
                        this.inner.set(None);
                        return Poll::Ready(Some(Err(BodyError::Timeout)));
                    }
                }
            }
            Poll::Ready(Some(Ok(_))) => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none()
            && match &self.inner {
                Some(inner) => inner.is_end_stream(),
                None => self.trailers.is_none(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self.buffered.as_ref().map_or(0, |b| b.len() as u64);
        let Some(inner) = &self.inner else {
            return SizeHint::with_exact(ahead);
        };
        let rest = inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + ahead);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}
