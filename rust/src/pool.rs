//! Upstream connections: a small pool per endpoint and, within it, per request authority
//! (what the upstream sees as `Host`/`:authority`), on hyper's connection-level clients.
//! HTTP/1.1: idle connections on a stack (most recently used first), taken back when the
//! response body has been read to its end; a request that a reused connection refused before
//! writing it goes to the next one. HTTP/2: one multiplexed connection per authority, opened
//! once for all the requests that wait for it. Idle connections close after `idle_timeout`
//! (one timer task per pool while it holds connections, none per request); HTTP/1.1 keeps at
//! most `max_idle_per_endpoint` idle per authority. A connector counts the connections it
//! opened so stats can report `connections_open`.
//!
//! (Replaces hyper-util's legacy `Client`, whose pool hashed the authority byte by byte twice
//! per request and spawned a task per HTTP/1.1 response to wait for the connection to be idle:
//! about 12 % of the engine's instructions per request, bench/README.md "Profiles".)

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Method, Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use crate::balance::{outlier::Health, p2c::PeakEwma, Backend, Endpoint};
use crate::body::{PeerBody, ProxyBody};
use crate::config::{BackendConfig, PoolConfig, Protocol};
use crate::h1::body::RawBody;
use crate::h1::codec::Fields;
use crate::h1::conn::RawConn;
use crate::stats::{EndpointStats, Limit, Stats};
use crate::tls::outbound::{clone_connect_error, TlsConnect};
use crate::tls::{IdentityMismatch, IdentityStore, Stream, TlsStats, UpstreamTls};

// === impl Connector ===

/// Connects to one endpoint whatever the request URI says: the URI carries the request's
/// authority (so `Host`/`:authority` survive), the endpoint is fixed. With `tls`, the TLS
/// handshake (within its own `timeout`) is part of connecting.
#[derive(Clone)]
pub struct Connector {
    addr: Arc<str>,
    timeout: Duration,
    stats: Arc<EndpointStats>,
    tls: Option<Arc<TlsConnect>>,
    /// The endpoint's HTTP/1.1 connection cap (`limits.max_connections`), if any.
    cap: Option<Arc<ConnCap>>,
}

/// A cap on an endpoint's HTTP/1.1 connections and on the requests that may wait for one.
/// Connections are counted in `connections_open` from the moment a connect is reserved.
pub struct ConnCap {
    max_connections: u64,
    max_pending: u64,
    pending: AtomicU64,
    /// Signalled when a connection closes or goes idle.
    freed: Notify,
}

/// A request waiting under the cap, uncounted on drop.
struct Pending<'a>(&'a ConnCap);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Relaxed);
    }
}

impl Connector {
    /// Reserves a connection under the cap: `Some(true)` reserved, `Some(false)` no cap, `None`
    /// the cap is reached.
    fn reserve(&self) -> Option<bool> {
        let Some(cap) = &self.cap else { return Some(false) };
        let open = &self.stats.connections_open;
        let mut current = open.load(Relaxed);
        loop {
            if current >= cap.max_connections {
                return None;
            }
            match open.compare_exchange_weak(current, current + 1, Relaxed, Relaxed) {
                Ok(_) => return Some(true),
                Err(now) => current = now,
            }
        }
    }

    /// Connects; `reserved`: the connection was already counted by `reserve`.
    async fn connect(&self, reserved: bool) -> io::Result<CountedIo> {
        let (stream, counted) = self.connect_stream(reserved).await?;
        Ok(CountedIo {
            io: TokioIo::new(stream),
            counted,
        })
    }

    /// A plaintext connection for the engine's own HTTP/1.1 client (`h1`).
    async fn connect_raw(&self, reserved: bool) -> io::Result<RawConn> {
        match self.connect_stream(reserved).await? {
            (Stream::Plain(tcp), counted) => Ok(RawConn::new(tcp, counted)),
            _ => Err(io::Error::other("the HTTP/1.1 fast path is for plaintext upstreams")),
        }
    }

    async fn connect_stream(&self, reserved: bool) -> io::Result<(Stream, Counted)> {
        if !reserved {
            self.stats.connections_open.fetch_add(1, Relaxed);
        }
        // Counted from here: closing (or failing) gives the place back.
        let counted = Counted {
            stats: self.stats.clone(),
            cap: self.cap.clone(),
        };
        let addr = &*self.addr;
        let stream = match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Ok(res) => res?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                ));
            }
        };
        stream.set_nodelay(true)?;
        let stream = match &self.tls {
            None => Stream::Plain(stream),
            Some(tls) => match tokio::time::timeout(self.timeout, tls.handshake(stream)).await {
                Ok(res) => res?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("TLS handshake with {addr} timed out"),
                    ));
                }
            },
        };
        Ok((stream, counted))
    }
}

/// A connection's place in `connections_open` (and under the cap), given back on drop.
pub struct Counted {
    stats: Arc<EndpointStats>,
    cap: Option<Arc<ConnCap>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats.connections_open.fetch_sub(1, Relaxed);
        if let Some(cap) = &self.cap {
            cap.freed.notify_one();
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection counted in its endpoint's `connections_open` while it is open.
    pub struct CountedIo {
        #[pin]
        io: TokioIo<Stream>,
        counted: Counted,
    }
}

impl hyper::rt::Read for CountedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for CountedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}

// === impl UpstreamClient ===

/// Why a request got no response from an endpoint.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (connect, timeout, HTTP/2 handshake): nothing was sent.
    Connect(io::Error),
    /// The connection failed while the request was on it.
    Http(hyper::Error),
    /// A connection-pool limit was reached: nothing was sent.
    Overflow(Limit),
    /// The connection failed while the request was on it (the engine's own HTTP/1.1 client).
    Io(io::Error),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }

    /// The upstream presented another workload's certificate.
    pub fn identity_mismatch(&self) -> Option<&IdentityMismatch> {
        match self {
            UpstreamError::Connect(e) => IdentityMismatch::of(e),
            UpstreamError::Http(_) | UpstreamError::Overflow(_) | UpstreamError::Io(_) => None,
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connect: {e}"),
            UpstreamError::Http(e) => write!(f, "{e}"),
            UpstreamError::Overflow(limit) => write!(f, "overflow: {}", limit.name()),
            UpstreamError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) | UpstreamError::Io(e) => Some(e),
            UpstreamError::Http(e) => Some(e),
            UpstreamError::Overflow(_) => None,
        }
    }
}

/// A response from an endpoint (boxed: moved by value on its way up, it was ~10 copies of 152
/// bytes per request) and the connection it came on.
pub type Reply = (Box<Response<PeerBody>>, Pooled);

/// The connections of one endpoint.
pub struct UpstreamClient {
    shared: Arc<Shared>,
}

struct Shared {
    connector: Connector,
    protocol: Protocol,
    /// HTTP/1.1 requests whose body is in memory go through the engine's own client (`h1`):
    /// the fast path is on and the upstream is plaintext.
    raw: bool,
    idle_timeout: Duration,
    max_idle: usize,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    /// By authority; a handful per endpoint (the service's names), so a scan.
    hosts: Vec<HostPool>,
    /// Whether the idle timer task runs.
    reaper: bool,
    /// Numbers HTTP/2 connections, so a finished request counts against its own connection.
    next_id: u64,
}

struct HostPool {
    authority: Authority,
    /// HTTP/1.1 idle connections, most recently used last.
    idle: Vec<(http1::SendRequest<ProxyBody>, Instant)>,
    /// Idle connections of the engine's own HTTP/1.1 client (`h1`), most recently used last.
    raw: Vec<(RawConn, Instant)>,
    h2: H2Slot,
}

/// A waiter's answer: the connection and its number, or why it could not be made.
type H2Ready = Result<(http2::SendRequest<ProxyBody>, u64), io::Error>;

enum H2Slot {
    None,
    /// Requests waiting for the connection being made.
    Connecting(Vec<oneshot::Sender<H2Ready>>),
    Ready {
        sender: http2::SendRequest<ProxyBody>,
        id: u64,
        /// Requests whose response has not finished.
        active: usize,
        idle_since: Instant,
    },
}

impl PoolState {
    fn host(&mut self, authority: &Authority) -> &mut HostPool {
        let i = match self.hosts.iter().position(|h| same(&h.authority, authority)) {
            Some(i) => i,
            None => {
                self.hosts.push(HostPool {
                    // A copy: a request's authority may share a read buffer (its `Host`), which
                    // the pool would keep alive.
                    authority: Authority::from_maybe_shared(Bytes::copy_from_slice(authority.as_str().as_bytes()))
                        .unwrap_or_else(|_| authority.clone()),
                    idle: Vec::new(),
                    raw: Vec::new(),
                    h2: H2Slot::None,
                });
                self.hosts.len() - 1
            }
        };
        &mut self.hosts[i]
    }
}

/// `Authority`'s `==` compares byte by byte ignoring ASCII case; the same bytes are the
/// common case.
fn same(a: &Authority, b: &Authority) -> bool {
    a.as_str() == b.as_str() || a == b
}

/// A connection a response came on; part of the response body. `release` (the body was read
/// to its end) gives an HTTP/1.1 connection back to the pool; dropping it otherwise closes it.
/// For HTTP/2 it counts the request as finished on its connection either way. Empty for the
/// engine's own HTTP/1.1 client, whose body gives its connection back itself: one pointer,
/// boxed for hyper's connections, as it is moved with every response (callgrind).
pub struct Pooled(Option<Box<Held>>);

struct Held {
    shared: Arc<Shared>,
    authority: Authority,
    conn: PooledConn,
}

enum PooledConn {
    H1(Option<http1::SendRequest<ProxyBody>>),
    H2(u64),
}

/// Where a connection of the engine's own HTTP/1.1 client goes back when its response ends.
pub struct Return {
    shared: Arc<Shared>,
    authority: Authority,
}

impl Return {
    pub fn give(self, conn: RawConn) {
        self.shared.put_raw_idle(&self.authority, conn);
    }
}

impl Pooled {
    fn new(shared: &Arc<Shared>, authority: &Authority, conn: PooledConn) -> Self {
        Pooled(Some(Box::new(Held {
            shared: shared.clone(),
            authority: authority.clone(),
            conn,
        })))
    }

    pub fn release(mut self) {
        let Some(held) = self.0.as_deref_mut() else { return };
        if let PooledConn::H1(sender) = &mut held.conn {
            if let Some(mut sender) = sender.take() {
                if sender.is_ready() {
                    held.shared.put_idle(&held.authority, sender);
                } else {
                    // Still busy (say the request body is still going up): idle once it is
                    // done, so a checkout never waits behind another request.
                    let shared = held.shared.clone();
                    let authority = held.authority.clone();
                    tokio::spawn(async move {
                        if sender.ready().await.is_ok() {
                            shared.put_idle(&authority, sender);
                        }
                    });
                }
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let PooledConn::H2(id) = self.conn {
            self.shared.h2_done(&self.authority, id);
        }
    }
}

impl UpstreamClient {
    fn new(connector: Connector, protocol: Protocol, pool: PoolConfig) -> Self {
        UpstreamClient {
            shared: Arc::new(Shared {
                raw: protocol == Protocol::Http1 && connector.tls.is_none() && crate::h1::enabled(),
                connector,
                protocol,
                idle_timeout: pool.idle_timeout,
                max_idle: pool.max_idle_per_endpoint,
                state: Mutex::new(PoolState::default()),
            }),
        }
    }

    /// Sends `req` (origin-form URI and `Host` for HTTP/1.1, absolute URI for HTTP/2) on a
    /// connection for `authority`.
    ///
    /// The request stays in its box (the fast path only reads it); the other paths (hyper's
    /// HTTP/1.1 and HTTP/2 clients: streamed bodies, TLS, h2c upstreams) run in a boxed future
    /// of their own, so this future stays as small as the fast path's (callgrind: a future is
    /// copied whole where it is boxed, by the HTTP/2 server per stream).
    pub async fn request(&self, authority: &Authority, req: Box<Request<ProxyBody>>) -> Result<Reply, UpstreamError> {
        if self.shared.protocol == Protocol::H2c {
            return Box::pin(self.send_h2(authority, req)).await;
        }
        if self.reads(&req) {
            return self.send_raw(authority, &req).await;
        }
        Box::pin(self.send_h1(authority, *req)).await
    }

    /// Whether `request_ref` can send `req`: the fast path (`h1`), which reads the request and
    /// leaves it as it was, so it can be sent again as it is. The other paths consume it.
    pub fn reads(&self, req: &Request<ProxyBody>) -> bool {
        self.shared.raw && req.body().known_ref().is_some()
    }

    /// `request` for a request the fast path can send (`reads`), by reference.
    pub async fn request_ref(&self, authority: &Authority, req: &Request<ProxyBody>) -> Result<Reply, UpstreamError> {
        self.send_raw(authority, req).await
    }

    /// HTTP/1.1 on hyper's client.
    async fn send_h1(&self, authority: &Authority, mut req: Request<ProxyBody>) -> Result<Reply, UpstreamError> {
        let shared = &self.shared;
        // hyper's client takes a `HeaderMap`.
        crate::body::materialize(&mut req);
        let mut pending = None;
        let reserved = loop {
            while let Some(mut sender) = shared.take_idle(authority) {
                if sender.ready().await.is_err() {
                    continue;
                }
                match sender.try_send_request(req).await {
                    Ok(resp) => return Ok((Box::new(resp.map(PeerBody::Hyper)), shared.pooled_h1(authority, sender))),
                    Err(mut e) => match e.take_message() {
                        // Refused before it was written (the connection was closing): the next one.
                        Some(r) => req = r,
                        None => return Err(UpstreamError::Http(e.into_error())),
                    },
                }
            }
            match shared.room(&mut pending)? {
                Some(reserved) => break reserved,
                None => shared.freed().await,
            }
        };
        drop(pending);
        // Boxed, as in `send_raw`: rare, and large inline.
        let io = Box::pin(shared.connector.connect(reserved))
            .await
            .map_err(UpstreamError::Connect)?;
        let (mut sender, conn) = http1::Builder::new().handshake(io).await.map_err(UpstreamError::Http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = sender.send_request(req).await.map_err(UpstreamError::Http)?;
        Ok((Box::new(resp.map(PeerBody::Hyper)), shared.pooled_h1(authority, sender)))
    }

    /// The fast path (`h1`): a request whose body is in memory, on a connection this task
    /// drives. A reused connection that fails while the request is written is dropped and the
    /// next one tried (nothing reached the upstream that it could have processed); a failure
    /// after that is the request's (`UpstreamError::Io`, a reset to the retry policy).
    async fn send_raw(&self, authority: &Authority, req: &Request<ProxyBody>) -> Result<Reply, UpstreamError> {
        let shared = &self.shared;
        let body = req
            .body()
            .known_ref()
            .expect("the fast path takes known bodies (`reads`)");
        // The client's fields as bytes, when they still are (`ProxyBody::head`).
        let raw = req.body().head();
        let fields = Fields {
            map: req.headers(),
            raw,
        };
        let method = req.method();
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let mut pending = None;
        let mut conn = loop {
            if let Some(mut conn) = shared.take_raw_idle(authority) {
                if conn.send(method, target, fields, body).await.is_ok() {
                    break conn;
                }
                continue;
            }
            match shared.room(&mut pending)? {
                Some(reserved) => {
                    drop(pending);
                    // Boxed: connecting (TCP, maybe TLS) is rare and its future large; inline,
                    // it would make every request's future larger to move (callgrind).
                    let mut conn = Box::pin(shared.connector.connect_raw(reserved))
                        .await
                        .map_err(UpstreamError::Connect)?;
                    conn.send(method, target, fields, body)
                        .await
                        .map_err(UpstreamError::Io)?;
                    break conn;
                }
                None => shared.freed().await,
            }
        };
        let head = conn
            .read_head(method == Method::HEAD)
            .await
            .map_err(UpstreamError::Io)?;
        let back = Return {
            shared: shared.clone(),
            authority: authority.clone(),
        };
        // A request whose fields came as bytes (`h1::server`) gets its response's fields as
        // bytes too, inside the (boxed) body (`PeerBody::raw_head`); any other (HTTP/2, hyper's
        // server, a vhost that built a `HeaderMap`) gets them in the response's `HeaderMap`.
        let (fields, map) = if raw.is_some() {
            (Some(head.headers), None)
        } else {
            (None, Some(head.headers.into_map()))
        };
        let body = RawBody::new(conn, fields, head.framing, head.keep_alive, back);
        // Boxed: it goes up through the try, the retry loop and the timeout as one pointer.
        let mut resp = Box::new(Response::new(PeerBody::Raw(body)));
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        if let Some(map) = map {
            *resp.headers_mut() = map;
        }
        // The body gives the connection back itself.
        Ok((resp, Pooled(None)))
    }

    /// HTTP/2 (h2c) on hyper's client.
    async fn send_h2(&self, authority: &Authority, mut req: Box<Request<ProxyBody>>) -> Result<Reply, UpstreamError> {
        // h2's client takes a `HeaderMap`.
        crate::body::materialize(&mut req);
        let (mut sender, id) = self.h2_sender(authority).await?;
        // Counted active from here: dropped on error too.
        let pooled = Pooled::new(&self.shared, authority, PooledConn::H2(id));
        let resp = sender.send_request(*req).await.map_err(UpstreamError::Http)?;
        Ok((Box::new(resp.map(PeerBody::Hyper)), pooled))
    }

    /// The authority's HTTP/2 connection (counted active for the caller), made once for all
    /// requests waiting for it; the making runs in its own task so no waiter's cancellation
    /// stops it.
    async fn h2_sender(&self, authority: &Authority) -> Result<(http2::SendRequest<ProxyBody>, u64), UpstreamError> {
        let waiting = {
            let mut state = self.shared.state.lock();
            let host = state.host(authority);
            if let H2Slot::Ready { sender, id, active, .. } = &mut host.h2 {
                if !sender.is_closed() {
                    *active += 1;
                    return Ok((sender.clone(), *id));
                }
                host.h2 = H2Slot::None;
            }
            let (tx, rx) = oneshot::channel();
            match &mut host.h2 {
                H2Slot::Connecting(waiters) => waiters.push(tx),
                slot => {
                    *slot = H2Slot::Connecting(vec![tx]);
                    let shared = self.shared.clone();
                    let authority = authority.clone();
                    tokio::spawn(async move { shared.connect_h2(authority).await });
                }
            }
            rx
        };
        match waiting.await {
            Ok(Ok(ready)) => Ok(ready),
            Ok(Err(e)) => Err(UpstreamError::Connect(e)),
            Err(_) => Err(UpstreamError::Connect(io::Error::other(
                "HTTP/2 connection attempt abandoned",
            ))),
        }
    }
}

impl Shared {
    /// Resolves when a connection under the cap closes or goes idle.
    async fn freed(&self) {
        let cap = self.connector.cap.as_deref().expect("only a cap refuses");
        cap.freed.notified().await;
    }

    /// Room for one more connection: `Some(reserved)` (see `Connector::reserve`), `None` at
    /// the cap with this request among the pending ones (wait for `freed`), an overflow
    /// error when no more may wait.
    fn room<'a>(&'a self, pending: &mut Option<Pending<'a>>) -> Result<Option<bool>, UpstreamError> {
        if let Some(reserved) = self.connector.reserve() {
            return Ok(Some(reserved));
        }
        let cap = self.connector.cap.as_deref().expect("only a cap refuses");
        if pending.is_none() {
            if cap.pending.fetch_add(1, Relaxed) >= cap.max_pending {
                cap.pending.fetch_sub(1, Relaxed);
                return Err(UpstreamError::Overflow(if cap.max_pending == 0 {
                    Limit::MaxConnections
                } else {
                    Limit::MaxPendingRequests
                }));
            }
            *pending = Some(Pending(cap));
        }
        Ok(None)
    }

    /// The most recently used idle raw connection still open and not expired.
    fn take_raw_idle(&self, authority: &Authority) -> Option<RawConn> {
        let mut state = self.state.lock();
        let host = state.hosts.iter_mut().find(|h| same(&h.authority, authority))?;
        let now = Instant::now();
        while let Some((mut conn, since)) = host.raw.pop() {
            if now.saturating_duration_since(since) < self.idle_timeout && conn.usable() {
                return Some(conn);
            }
        }
        None
    }

    fn put_raw_idle(self: &Arc<Self>, authority: &Authority, conn: RawConn) {
        let mut state = self.state.lock();
        let host = state.host(authority);
        if host.raw.len() >= self.max_idle {
            return; // dropped: the connection closes
        }
        host.raw.push((conn, Instant::now()));
        self.ensure_reaper(&mut state);
        if let Some(cap) = &self.connector.cap {
            cap.freed.notify_one();
        }
    }

    fn pooled_h1(self: &Arc<Self>, authority: &Authority, sender: http1::SendRequest<ProxyBody>) -> Pooled {
        Pooled::new(self, authority, PooledConn::H1(Some(sender)))
    }

    /// The most recently used idle connection still open and not expired.
    fn take_idle(&self, authority: &Authority) -> Option<http1::SendRequest<ProxyBody>> {
        let mut state = self.state.lock();
        let host = state.hosts.iter_mut().find(|h| same(&h.authority, authority))?;
        let now = Instant::now();
        while let Some((sender, since)) = host.idle.pop() {
            if !sender.is_closed() && now.saturating_duration_since(since) < self.idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(self: &Arc<Self>, authority: &Authority, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut state = self.state.lock();
        let host = state.host(authority);
        if host.idle.len() >= self.max_idle {
            return; // dropped: the connection closes
        }
        host.idle.push((sender, Instant::now()));
        self.ensure_reaper(&mut state);
        if let Some(cap) = &self.connector.cap {
            cap.freed.notify_one();
        }
    }

    async fn connect_h2(self: Arc<Self>, authority: Authority) {
        let made = async {
            let io = self.connector.connect(false).await?;
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(io::Error::other)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, io::Error>(sender)
        }
        .await;
        let mut state = self.state.lock();
        let id = state.next_id;
        state.next_id += 1;
        let host = state.host(&authority);
        let waiters = match std::mem::replace(&mut host.h2, H2Slot::None) {
            H2Slot::Connecting(waiters) => waiters,
            other => {
                host.h2 = other;
                Vec::new()
            }
        };
        match made {
            Ok(sender) => {
                let mut active = 0;
                for w in waiters {
                    if w.send(Ok((sender.clone(), id))).is_ok() {
                        active += 1;
                    }
                }
                host.h2 = H2Slot::Ready {
                    sender,
                    id,
                    active,
                    idle_since: Instant::now(),
                };
                self.ensure_reaper(&mut state);
            }
            Err(e) => {
                for w in waiters {
                    let _ = w.send(Err(clone_connect_error(&e)));
                }
                // Clears the authority's empty entry later.
                self.ensure_reaper(&mut state);
            }
        }
    }

    fn h2_done(self: &Arc<Self>, authority: &Authority, done: u64) {
        let mut state = self.state.lock();
        if let Some(host) = state.hosts.iter_mut().find(|h| same(&h.authority, authority)) {
            if let H2Slot::Ready {
                id, active, idle_since, ..
            } = &mut host.h2
            {
                if *id == done {
                    *active = active.saturating_sub(1);
                    if *active == 0 {
                        *idle_since = Instant::now();
                    }
                }
            }
        }
    }

    /// Starts the idle timer task unless it runs. It ticks every `idle_timeout` (so an idle
    /// connection closes between one and two timeouts after its last use) and stops when the
    /// pool holds no connection.
    fn ensure_reaper(self: &Arc<Self>, state: &mut PoolState) {
        if state.reaper {
            return;
        }
        state.reaper = true;
        let weak: Weak<Shared> = Arc::downgrade(self);
        let every = self.idle_timeout.max(Duration::from_millis(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(shared) = weak.upgrade() else { return };
                if !shared.reap() {
                    return;
                }
            }
        });
    }

    /// Closes expired idle connections; `false` (and the timer stops) once none is left.
    fn reap(&self) -> bool {
        let now = Instant::now();
        let expired = |since: Instant| now.saturating_duration_since(since) >= self.idle_timeout;
        let mut state = self.state.lock();
        for host in &mut state.hosts {
            host.idle
                .retain(|(sender, since)| !sender.is_closed() && !expired(*since));
            host.raw.retain_mut(|(conn, since)| !expired(*since) && conn.usable());
            let close_h2 = match &host.h2 {
                H2Slot::Ready {
                    sender,
                    active,
                    idle_since,
                    ..
                } => sender.is_closed() || *active == 0 && expired(*idle_since),
                _ => false,
            };
            if close_h2 {
                host.h2 = H2Slot::None;
            }
        }
        state
            .hosts
            .retain(|h| !h.idle.is_empty() || !h.raw.is_empty() || !matches!(h.h2, H2Slot::None));
        state.reaper = !state.hosts.is_empty();
        state.reaper
    }
}

// === impl Upstreams ===

/// The backends of a snapshot by name, each with the config it was built from.
pub type Built = HashMap<Arc<str>, (Arc<BackendConfig>, Arc<Backend>)>;

/// The live snapshot's backends, so the next snapshot reuses what it keeps: a backend whose
/// config is unchanged whole (endpoints, pools, load estimates, outlier state, round-robin
/// position; no work per endpoint), and of a changed backend the endpoints whose address and
/// pool settings (protocol, pool, TLS) are unchanged.
#[derive(Default)]
pub struct Upstreams {
    live: Mutex<Arc<Built>>,
    /// What TLS endpoints present and trust.
    identity: Arc<IdentityStore>,
    tls_stats: Arc<TlsStats>,
}

impl Upstreams {
    pub fn new(identity: Arc<IdentityStore>, tls_stats: Arc<TlsStats>) -> Self {
        Upstreams {
            live: Mutex::default(),
            identity,
            tls_stats,
        }
    }

    /// The live snapshot's backends (what `backend` reuses from).
    pub fn live(&self) -> Arc<Built> {
        self.live.lock().clone()
    }

    /// The backend `cfg` describes: the live one of that name when its config is the same,
    /// else a new one keeping the live endpoints it can. Records it in `next`.
    pub fn backend(&self, live: &Built, cfg: Arc<BackendConfig>, stats: &Stats, next: &mut Built) -> Arc<Backend> {
        let old = live.get_key_value(cfg.name.as_str());
        if let Some((name, (old_cfg, backend))) = old {
            if Arc::ptr_eq(old_cfg, &cfg) || *old_cfg == cfg {
                next.insert(name.clone(), (cfg, backend.clone()));
                return backend.clone();
            }
        }
        let name: Arc<str> = old.map_or_else(|| Arc::from(cfg.name.as_str()), |(name, _)| name.clone());
        // An address listed twice gets one endpoint.
        let mut by_addr: HashMap<&str, Arc<Endpoint>> = match old {
            Some((_, (old_cfg, backend))) if old_cfg.same_pools(&cfg) => {
                backend.endpoints.iter().map(|e| (&*e.addr, e.clone())).collect()
            }
            _ => HashMap::new(),
        };
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|addr| {
                by_addr
                    .entry(addr)
                    .or_insert_with(|| self.endpoint(&name, addr, cfg.protocol, cfg.pool, cfg.tls.as_ref()))
                    .clone()
            })
            .collect();
        drop(by_addr);
        let backend = Arc::new(Backend::new(
            name.clone(),
            cfg.protocol,
            cfg.lb,
            endpoints,
            (cfg.outlier, cfg.limits),
            stats.backend(&name),
        ));
        next.insert(name, (cfg, backend.clone()));
        backend
    }

    /// A new endpoint `addr` of `backend`: its pool, connector and counters.
    pub fn endpoint(
        &self,
        backend: &Arc<str>,
        addr: &str,
        protocol: Protocol,
        pool: PoolConfig,
        tls: Option<&UpstreamTls>,
    ) -> Arc<Endpoint> {
        let addr_arc: Arc<str> = Arc::from(addr);
        let stats = Arc::new(EndpointStats::new(backend.clone(), addr_arc.clone()));
        let tls = tls.map(|tls| {
            let http2 = protocol == Protocol::H2c;
            let connect = TlsConnect::new(tls, addr, http2, self.identity.clone(), self.tls_stats.clone())
                .expect("config validated the server name");
            Arc::new(connect)
        });
        let connector = Connector {
            addr: addr_arc.clone(),
            timeout: pool.connect_timeout,
            stats: stats.clone(),
            tls,
            cap: pool.max_connections.filter(|_| protocol == Protocol::Http1).map(|max| {
                Arc::new(ConnCap {
                    max_connections: max,
                    max_pending: pool.max_pending.unwrap_or(u64::MAX),
                    pending: AtomicU64::new(0),
                    freed: Notify::new(),
                })
            }),
        };
        Arc::new(Endpoint {
            addr: addr_arc,
            authority: Authority::from_maybe_shared(Bytes::copy_from_slice(addr.as_bytes()))
                .unwrap_or_else(|_| Authority::from_static("upstream")),
            client: UpstreamClient::new(connector, protocol, pool),
            load: PeakEwma::new(tokio::time::Instant::now()),
            stats,
            health: Health::default(),
        })
    }

    /// Makes `next` the live backends once its snapshot is live. The endpoints it dropped are
    /// forgotten; their pools close once the last request still holding the old snapshot finishes.
    pub fn replace(&self, next: Built) {
        let old = std::mem::replace(&mut *self.live.lock(), Arc::new(next));
        drop(old);
    }

    /// Every endpoint in use (for its stats), ordered by backend then address.
    pub fn stats(&self) -> Vec<Arc<Endpoint>> {
        let live = self.live();
        let mut out: Vec<_> = live.values().flat_map(|(_, b)| b.endpoints.iter().cloned()).collect();
        out.sort_by(|a, b| (&a.stats.backend, &a.stats.endpoint).cmp(&(&b.stats.backend, &b.stats.endpoint)));
        out.dedup_by(|a, b| Arc::ptr_eq(a, b));
        out
    }
}
