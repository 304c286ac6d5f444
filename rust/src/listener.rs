//! Downstream listeners: bind, accept, and serve HTTP/1.1 and HTTP/2 prior knowledge on the
//! same port (hyper-util's `auto` builder reads the first bytes for the HTTP/2 preface). A
//! listener's TLS mode (`tls::inbound`) decides, per connection, plaintext or mTLS first.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::body::ProxyBody;
use crate::drain::Drain;
use crate::h1;
use crate::h1::server::Rewind;
use crate::h2;
use crate::proxy::{Conn, Proxy};
use crate::tls::inbound::Accepted;
use crate::tls::{Inbound, Stream, TlsMode};

/// Accept backlog.
const BACKLOG: u32 = 1024;

/// How downstream connections are served; shared by every listener.
pub struct Server {
    builder: auto::Builder<TokioExecutor>,
    proxy: Proxy,
    drain: Arc<Drain>,
    inbound: Inbound,
}

impl Server {
    pub fn new(proxy: Proxy, drain: Arc<Drain>, inbound: Inbound) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // No per-request header timer: a mesh proxy's peers are local services.
        builder.http1().header_read_timeout(None).timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        Server {
            builder,
            proxy,
            drain,
            inbound,
        }
    }

    /// A connection accepted by the listener bound on `local`.
    fn accept(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, local: SocketAddr, mode: TlsMode) {
        let _ = stream.set_nodelay(true);
        if mode == TlsMode::Disable {
            let plain = Accepted {
                stream: Stream::Plain(stream),
                peer: None,
            };
            return self.serve(plain, peer, local);
        }
        // The first byte and the handshake are awaited in the connection's own task.
        let server = self.clone();
        tokio::spawn(async move {
            if let Some(accepted) = server.inbound.accept(stream, mode).await {
                server.serve(accepted, peer, local);
            }
        });
    }

    fn serve(self: &Arc<Self>, accepted: Accepted, peer: SocketAddr, local: SocketAddr) {
        let Accepted { stream, peer: caller } = accepted;
        let mut conn = Conn::new(
            self.proxy.clone(),
            peer.ip(),
            local,
            caller.as_ref().map(|(p, _)| p.clone()),
        );
        conn.client_cert = caller.map(|(_, xfcc)| xfcc);
        let conn = Arc::new(conn);
        let stats = self.proxy.stats.clone();
        let stream = match stream {
            Stream::Plain(tcp) if h1::server::enabled() => {
                let Some(drain) = self.drain.subscribe() else {
                    return;
                };
                stats.connections_active.fetch_add(1, Relaxed);
                stats.connections_total.fetch_add(1, Relaxed);
                let server = self.clone();
                tokio::spawn(async move {
                    if let Some(handoff) = h1::server::serve(tcp, &conn, drain).await {
                        if h2::enabled() && h2::is_preface(&handoff.read) {
                            // HTTP/2 prior knowledge: the engine's own server (`h2`).
                            if let Some(drain) = server.drain.subscribe() {
                                h2::server::serve(handoff.io, &handoff.read, &conn, drain).await;
                            }
                        } else if let Some(watched) = server.hyper(Rewind::from(handoff), conn) {
                            watched.await;
                        }
                    }
                    stats.connections_active.fetch_sub(1, Relaxed);
                });
                return;
            }
            other => other,
        };
        let Some(watched) = self.hyper(stream, conn) else {
            return;
        };
        stats.connections_active.fetch_add(1, Relaxed);
        stats.connections_total.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            watched.await;
            stats.connections_active.fetch_sub(1, Relaxed);
        });
    }

    /// The connection served by hyper (HTTP/1.1 or HTTP/2, as its first bytes say), watched
    /// by the drain; `None` when draining already started.
    fn hyper<I>(&self, io: I, conn: Arc<Conn>) -> Option<impl std::future::Future<Output = ()> + Send + 'static>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |req: Request<Incoming>| {
            let conn = conn.clone();
            // Boxed: hyper moves the service future (into a task per HTTP/2 stream), and the
            // request's future is large (the upstream client's is made in place in it).
            let handling = Box::pin(async move { conn.handle(req.map(ProxyBody::request)).await });
            async move { Ok::<_, Infallible>(handling.await) }
        });
        let connection = self.builder.serve_connection(TokioIo::new(io), service).into_owned();
        let watched = self.drain.watch(connection)?;
        Some(async move {
            let _ = watched.await;
        })
    }
}

/// A bound listener. Dropping it stops accepting and closes the socket soon after; `close`
/// waits until the socket is closed. Connections already accepted go on either way.
pub struct Listener {
    pub name: String,
    /// The address from the snapshot (port 0 stays 0 here).
    pub configured: SocketAddr,
    pub local: SocketAddr,
    /// `TlsMode` as a byte: read per accepted connection, changed by a snapshot in place.
    mode: Arc<AtomicU8>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Connections accepted from now on follow `mode`; established ones keep theirs.
    pub fn set_tls(&self, mode: TlsMode) {
        self.mode.store(mode.to_u8(), Relaxed);
    }

    /// Stops accepting and resolves once the socket is closed.
    pub async fn close(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

/// Binds `addr`; must run inside the engine's runtime. The socket starts accepting once
/// `start` is called, so a failed apply leaves no trace.
pub fn bind(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Spawns the accept loop of a bound socket; must run inside the engine's runtime.
pub fn start(
    name: String,
    configured: SocketAddr,
    bound: (TcpListener, SocketAddr),
    server: Arc<Server>,
    tls: TlsMode,
) -> Listener {
    let (listener, local) = bound;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let mode = Arc::new(AtomicU8::new(tls.to_u8()));
    let current = mode.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                res = listener.accept() => match res {
                    Ok((stream, peer)) => server.accept(stream, peer, local, TlsMode::from_u8(current.load(Relaxed))),
                    // Out of file descriptors and the like: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
            }
        }
    });
    Listener {
        name,
        configured,
        local,
        mode,
        stop,
        task,
    }
}
