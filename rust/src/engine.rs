//! The engine: its own tokio runtime, the live snapshot, the listeners, and `apply`.

use std::mem;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::runtime::{Handle, Runtime};

use crate::config::{self, ListenerConfig};
use crate::drain::Drain;
use crate::error::{ConfigError, Error};
use crate::listener::{self, Listener, Server};
use crate::pool::Upstreams;
use crate::proxy::Proxy;
use crate::snapshot::Snapshot;
use crate::stats::Stats;
use crate::tls::{Identity, IdentityStore, Inbound, TlsMode};

pub struct Engine {
    /// The runtime's threads carry every request.
    rt: EngineRuntime,
    proxy: Proxy,
    upstreams: Upstreams,
    drain: Arc<Drain>,
    server: Arc<Server>,
    /// The workload certificate, key and trust bundle every handshake reads.
    identity: Arc<IdentityStore>,
    /// Live listeners; the lock also serializes `apply`.
    listeners: Mutex<Vec<Listener>>,
}

/// The engine's tokio runtime. One worker thread (the default): a `current_thread` runtime
/// driven by a dedicated thread. Its scheduler is FIFO: the tasks woken by one I/O poll (say
/// 20 downstream connections with a request each) all run before the tasks they wake in turn
/// (the upstream connections that write those requests), so writes to one peer go out back to
/// back while it is awake instead of one per wake-up, and there is no work-stealing machinery.
/// More worker threads: tokio's `multi_thread` runtime.
enum EngineRuntime {
    /// `Some` until drop.
    Multi(Option<Runtime>),
    Dedicated {
        handle: Handle,
        /// Dropping it (or sending) stops the runtime thread, which then shuts the runtime down.
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    },
}

impl EngineRuntime {
    fn new(worker_threads: usize) -> Result<Self, Error> {
        if worker_threads > 1 {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(worker_threads)
                .thread_name("fastmesh-engine")
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            return Ok(EngineRuntime::Multi(Some(rt)));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fastmesh-engine".into())
            .spawn(move || {
                let _ = rt.block_on(stopped);
                rt.shutdown_background();
            })
            .map_err(Error::Runtime)?;
        Ok(EngineRuntime::Dedicated {
            handle,
            stop: Some(stop),
        })
    }

    fn handle(&self) -> &Handle {
        match self {
            EngineRuntime::Multi(rt) => rt.as_ref().expect("runtime lives until drop").handle(),
            EngineRuntime::Dedicated { handle, .. } => handle,
        }
    }

    fn shutdown(&mut self) {
        match self {
            EngineRuntime::Multi(rt) => {
                if let Some(rt) = rt.take() {
                    rt.shutdown_background();
                }
            }
            EngineRuntime::Dedicated { stop, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
        }
    }
}

/// What happens to one listener of a new snapshot.
enum Slot {
    Keep(Listener, String),
    Bind(String, SocketAddr, (TcpListener, SocketAddr)),
}

impl Engine {
    /// Starts the runtime with `worker_threads` threads; nothing listens until `apply`.
    pub fn new(worker_threads: usize) -> Result<Self, Error> {
        if worker_threads == 0 {
            return Err(Error::Argument("worker_threads must be at least 1".into()));
        }
        let rt = EngineRuntime::new(worker_threads)?;
        let proxy = Proxy {
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            stats: Arc::new(Stats::default()),
        };
        let drain = Arc::new(Drain::default());
        let identity = Arc::new(IdentityStore::default());
        let tls_stats = proxy.stats.tls.clone();
        let inbound = Inbound::new(identity.clone(), tls_stats.clone());
        let server = Arc::new(Server::new(proxy.clone(), drain.clone(), inbound));
        Ok(Engine {
            rt,
            proxy,
            upstreams: Upstreams::new(identity.clone(), tls_stats),
            drain,
            server,
            identity,
            listeners: Mutex::new(Vec::new()),
        })
    }

    fn rt(&self) -> &Handle {
        self.rt.handle()
    }

    /// Validates a snapshot, binds its new listeners, swaps it in, then closes the listeners
    /// it dropped. On error nothing changes. Returns the new version.
    pub fn apply(&self, json: &str) -> Result<u64, Error> {
        // What the live snapshot has with the same JSON text is not parsed (nor compiled) again.
        let cfg = {
            let (backends, current) = (self.upstreams.live(), self.proxy.snapshot.load_full());
            let reusable = config::Reusable::new(backends.values().map(|(c, _)| c), current.live.iter());
            config::parse_reusing(json, &reusable)?
        };
        if self.identity.current().is_none() {
            needs_no_identity(&cfg)?;
        }
        let modes: Vec<TlsMode> = cfg.listeners.iter().map(|l| l.tls).collect();
        let mut live = self.listeners.lock();
        let version = cfg.version.unwrap_or_else(|| self.version() + 1);
        let rt = self.rt().enter();
        let (slots, closing) = match plan(mem::take(&mut *live), &cfg.listeners) {
            Ok(planned) => planned,
            Err((restored, err)) => {
                *live = restored;
                return Err(err);
            }
        };
        let bound: Vec<SocketAddr> = slots
            .iter()
            .map(|slot| match slot {
                Slot::Keep(l, _) => l.local,
                Slot::Bind(_, _, (_, local)) => *local,
            })
            .collect();
        let compiled = Snapshot::compile(cfg, version, &self.proxy.stats, &self.upstreams, &bound);
        self.proxy.snapshot.store(Arc::new(compiled.snapshot));
        self.upstreams.replace(compiled.backends);
        *live = slots
            .into_iter()
            .zip(modes)
            .map(|(slot, mode)| match slot {
                Slot::Keep(mut l, name) => {
                    l.name = name;
                    l.set_tls(mode);
                    l
                }
                Slot::Bind(name, configured, bound) => {
                    listener::start(name, configured, bound, self.server.clone(), mode)
                }
            })
            .collect();
        drop(rt);
        // The listeners the snapshot dropped close only now that it is live.
        self.close(closing);
        Ok(version)
    }

    /// Closes listeners and waits until their sockets are closed, so the ports are free when
    /// `apply`/`drain` return. The closing runs on the engine's runtime; the caller's thread
    /// (whatever it is) only waits for it.
    fn close(&self, listeners: Vec<Listener>) {
        if listeners.is_empty() {
            return;
        }
        let (done, wait) = std::sync::mpsc::sync_channel::<()>(1);
        self.rt().spawn(async move {
            for l in listeners {
                l.close().await;
            }
            let _ = done.send(());
        });
        let _ = wait.recv();
    }

    /// Listener name to bound address.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .lock()
            .iter()
            .map(|l| (l.name.clone(), l.local))
            .collect()
    }

    pub fn stats_json(&self) -> String {
        self.proxy.stats.render(self.version(), &self.upstreams.stats())
    }

    /// Stops accepting, lets in-flight requests finish, waits up to `timeout`. Blocks the
    /// calling thread (not a runtime thread).
    pub fn drain(&self, timeout: Duration) -> bool {
        let listeners = mem::take(&mut *self.listeners.lock());
        self.close(listeners);
        self.rt().block_on(self.drain.drain(timeout))
    }

    /// Swaps in the workload's certificate chain, key and trust bundle; new handshakes (both
    /// directions) use them at once, established connections are untouched. Returns the
    /// generation (1, 2, ...).
    pub fn set_identity(&self, cert_chain_pem: &str, key_pem: &str, trust_bundle_pem: &str) -> Result<u64, Error> {
        Ok(self.identity.set(cert_chain_pem, key_pem, trust_bundle_pem)?)
    }

    /// The current identity (no key), if one was set.
    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.identity.current()
    }

    pub fn version(&self) -> u64 {
        self.proxy.snapshot.load().version
    }

    pub fn active_requests(&self) -> u64 {
        self.proxy
            .stats
            .requests_active
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Before `set_identity` no listener may need TLS and no backend may originate it.
fn needs_no_identity(cfg: &config::Config) -> Result<(), Error> {
    const HINT: &str = "needs a workload identity: call Engine.set_identity first";
    if let Some((i, l)) = cfg
        .listeners
        .iter()
        .enumerate()
        .find(|(_, l)| l.tls != TlsMode::Disable)
    {
        let message = format!("{} {HINT}", l.tls.as_str());
        return Err(ConfigError::invalid(format!("listeners[{i}].tls.mode"), message).into());
    }
    if let Some(i) = cfg.backends.iter().position(|b| b.tls.is_some()) {
        return Err(ConfigError::invalid(format!("backends[{i}].tls"), format!("mTLS {HINT}")).into());
    }
    Ok(())
}

/// Matches the wanted listeners with the live ones (same name and address, then same address
/// when its port is fixed) and binds the rest. Returns the slots in `wanted` order and the
/// live listeners no longer wanted; on a bind error, the live listeners untouched.
#[allow(clippy::type_complexity)]
fn plan(live: Vec<Listener>, wanted: &[ListenerConfig]) -> Result<(Vec<Slot>, Vec<Listener>), (Vec<Listener>, Error)> {
    let mut old: Vec<Option<Listener>> = live.into_iter().map(Some).collect();
    let mut slots = Vec::with_capacity(wanted.len());
    for w in wanted {
        let same = |l: &Option<Listener>, by_name: bool| {
            l.as_ref()
                .is_some_and(|l| l.configured == w.address && (!by_name || l.name == w.name))
        };
        let found = old.iter().position(|l| same(l, true)).or_else(|| {
            (w.address.port() != 0)
                .then(|| old.iter().position(|l| same(l, false)))
                .flatten()
        });
        if let Some(i) = found {
            let l = old[i].take().expect("matched a live listener");
            slots.push(Slot::Keep(l, w.name.clone()));
            continue;
        }
        match listener::bind(w.address) {
            Ok(bound) => slots.push(Slot::Bind(w.name.clone(), w.address, bound)),
            Err(source) => {
                let restored = old
                    .into_iter()
                    .flatten()
                    .chain(slots.into_iter().filter_map(|s| match s {
                        Slot::Keep(l, _) => Some(l),
                        Slot::Bind(..) => None,
                    }))
                    .collect();
                let err = Error::Bind {
                    name: w.name.clone(),
                    address: w.address.to_string(),
                    source,
                };
                return Err((restored, err));
            }
        }
    }
    Ok((slots, old.into_iter().flatten().collect()))
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.listeners.get_mut().clear();
        self.rt.shutdown();
    }
}

#[cfg(test)]
mod tests;
