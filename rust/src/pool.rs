//! Upstream connections: one hyper client (and so one connection pool) per endpoint, HTTP/1.1
//! or HTTP/2 prior knowledge as the backend declares, with a connector that counts the
//! connections it opened so stats can report `connections_open`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::balance::{p2c::PeakEwma, Endpoint};
use crate::body::ProxyBody;
use crate::config::{PoolConfig, Protocol};
use crate::stats::EndpointStats;

pub type UpstreamClient = Client<Connector, ProxyBody>;

// === impl Connector ===

/// Connects to one endpoint whatever the request URI says: the URI carries the request's
/// authority (so `Host`/`:authority` survive), the endpoint is fixed.
#[derive(Clone)]
pub struct Connector {
    addr: Arc<str>,
    timeout: Duration,
    stats: Arc<EndpointStats>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = CountedIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<CountedIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let Connector { addr, timeout, stats } = self.clone();
        Box::pin(async move {
            let stream = match tokio::time::timeout(timeout, TcpStream::connect(&*addr)).await {
                Ok(res) => res?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {addr} timed out"),
                    ));
                }
            };
            stream.set_nodelay(true)?;
            Ok(CountedIo::new(stream, stats))
        })
    }
}

pin_project_lite::pin_project! {
    /// A TCP connection counted in its endpoint's `connections_open` while it is open.
    pub struct CountedIo {
        #[pin]
        io: TokioIo<TcpStream>,
        stats: Arc<EndpointStats>,
    }

    impl PinnedDrop for CountedIo {
        fn drop(this: Pin<&mut Self>) {
            this.stats.connections_open.fetch_sub(1, Relaxed);
        }
    }
}

impl CountedIo {
    fn new(stream: TcpStream, stats: Arc<EndpointStats>) -> Self {
        stats.connections_open.fetch_add(1, Relaxed);
        CountedIo {
            io: TokioIo::new(stream),
            stats,
        }
    }
}

impl Connection for CountedIo {
    fn connected(&self) -> Connected {
        Connected::new()
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

fn client(connector: Connector, protocol: Protocol, pool: PoolConfig) -> UpstreamClient {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle_per_endpoint)
        .http2_only(protocol == Protocol::H2c);
    builder.build(connector)
}

// === impl Upstreams ===

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    backend: Arc<str>,
    addr: Arc<str>,
    protocol: Protocol,
    pool: PoolConfig,
}

/// Every endpoint the current snapshot uses, so a new snapshot reuses the pools (and load
/// estimates) of the endpoints it keeps.
#[derive(Default)]
pub struct Upstreams {
    endpoints: Mutex<HashMap<EndpointKey, Arc<Endpoint>>>,
}

impl Upstreams {
    /// The endpoint `addr` of `backend`, created unless the registry has it with the same
    /// protocol and pool settings. `used` collects the keys a snapshot being compiled uses.
    pub fn endpoint(
        &self,
        backend: &Arc<str>,
        addr: &str,
        protocol: Protocol,
        pool: PoolConfig,
        used: &mut HashSet<EndpointKey>,
    ) -> Arc<Endpoint> {
        let key = EndpointKey {
            backend: backend.clone(),
            addr: Arc::from(addr),
            protocol,
            pool,
        };
        let mut endpoints = self.endpoints.lock();
        let ep = endpoints
            .entry(key.clone())
            .or_insert_with(|| {
                let stats = Arc::new(EndpointStats::new(backend.clone(), key.addr.clone()));
                let connector = Connector {
                    addr: key.addr.clone(),
                    timeout: pool.connect_timeout,
                    stats: stats.clone(),
                };
                Arc::new(Endpoint {
                    addr: key.addr.clone(),
                    authority: Authority::from_maybe_shared(Bytes::copy_from_slice(addr.as_bytes()))
                        .unwrap_or_else(|_| Authority::from_static("upstream")),
                    client: client(connector, protocol, pool),
                    load: PeakEwma::new(Instant::now()),
                    stats,
                })
            })
            .clone();
        used.insert(key);
        ep
    }

    /// Forgets endpoints the new snapshot does not use; their pools close once the last
    /// request still holding the old snapshot finishes.
    pub fn retain(&self, used: &HashSet<EndpointKey>) {
        self.endpoints.lock().retain(|k, _| used.contains(k));
    }

    /// Stats of every endpoint in use, ordered by backend then address.
    pub fn stats(&self) -> Vec<Arc<EndpointStats>> {
        let mut out: Vec<_> = self.endpoints.lock().values().map(|e| e.stats.clone()).collect();
        out.sort_by(|a, b| (&a.backend, &a.endpoint).cmp(&(&b.backend, &b.endpoint)));
        out
    }
}
