//! Downstream listeners: bind, accept, and serve HTTP/1.1 and HTTP/2 prior knowledge on the
//! same port (hyper-util's `auto` builder reads the first bytes for the HTTP/2 preface).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::drain::Drain;
use crate::proxy::{Conn, Proxy};

/// Accept backlog.
const BACKLOG: u32 = 1024;

/// How downstream connections are served; shared by every listener.
pub struct Server {
    builder: auto::Builder<TokioExecutor>,
    proxy: Proxy,
    drain: Arc<Drain>,
}

impl Server {
    pub fn new(proxy: Proxy, drain: Arc<Drain>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // No per-request header timer: a mesh proxy's peers are local services.
        builder.http1().header_read_timeout(None).timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        Server { builder, proxy, drain }
    }

    /// Serves a connection accepted by the listener bound on `local`.
    fn serve(&self, stream: TcpStream, peer: SocketAddr, local: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn::new(self.proxy.clone(), peer.ip(), local, None));
        let service = service_fn(move |req| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(conn.handle(req).await) }
        });
        let connection = self
            .builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let Some(watched) = self.drain.watch(connection) else {
            return;
        };
        let stats = self.proxy.stats.clone();
        stats.connections_active.fetch_add(1, Relaxed);
        stats.connections_total.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            let _ = watched.await;
            stats.connections_active.fetch_sub(1, Relaxed);
        });
    }
}

/// A bound listener. Dropping it stops accepting and closes the socket soon after; `close`
/// waits until the socket is closed. Connections already accepted go on either way.
pub struct Listener {
    pub name: String,
    /// The address from the snapshot (port 0 stays 0 here).
    pub configured: SocketAddr,
    pub local: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Listener {
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
pub fn start(name: String, configured: SocketAddr, bound: (TcpListener, SocketAddr), server: Arc<Server>) -> Listener {
    let (listener, local) = bound;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                res = listener.accept() => match res {
                    Ok((stream, peer)) => server.serve(stream, peer, local),
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
        stop,
        task,
    }
}
