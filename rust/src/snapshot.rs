//! The immutable tables one request reads: built from a validated `Config`, swapped in whole.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::authz::{self, Authorization};
use crate::balance::Backend;
use crate::config::{Config, VhostConfig, VhostEntry};
use crate::pool::{Built, Upstreams};
use crate::retry::RoutePolicy;
use crate::route::{Route, Target, Vhost, VhostTable};
use crate::stats::Stats;

#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    pub vhosts: VhostTable,
    /// Authorization policies of the listeners that have some, by bound address.
    pub authz: authz::Listeners,
    /// Its virtual hosts as the next snapshot may reuse them.
    pub live: Vec<Arc<LiveVhost>>,
}

/// A compiled virtual host with what it was compiled from: the next snapshot reuses it whole
/// when its JSON text is the same and so are the backends it names (`config::Reusable`).
#[derive(Debug)]
pub struct LiveVhost {
    pub source: Box<str>,
    /// Lower-cased, validated.
    pub domains: Vec<String>,
    /// The backends its routes (and mirrors) name.
    pub backends: Vec<Arc<str>>,
    pub vhost: Arc<Vhost>,
}

/// A compiled snapshot plus what the engine needs to put it in service.
pub struct Compiled {
    pub snapshot: Snapshot,
    /// The snapshot's backends (`Upstreams::replace` makes them the live ones once it is live).
    pub backends: Built,
}

impl Snapshot {
    /// Resolves names to shared handles: backends (the live ones reused whole when their config
    /// is unchanged, else their endpoints' pools when those are), routes to their (route,
    /// backend) counters, listeners' authorization to the address each is bound on (`bound`, in `cfg.listeners` order).
    pub fn compile(cfg: Config, version: u64, stats: &Stats, upstreams: &Upstreams, bound: &[SocketAddr]) -> Compiled {
        let authz = cfg
            .listeners
            .into_iter()
            .zip(bound)
            .filter_map(|(l, &addr)| Some((addr, Authorization::new(l.authorization?, stats))))
            .collect();
        let live = upstreams.live();
        let mut built = Built::with_capacity(cfg.backends.len());
        let backends: Vec<Arc<Backend>> = cfg
            .backends
            .into_iter()
            .map(|b| upstreams.backend(&live, b, stats, &mut built))
            .collect();
        drop(live);
        let live: Vec<Arc<LiveVhost>> = cfg
            .vhosts
            .into_iter()
            .map(|v| match v {
                VhostEntry::Live(live) => live,
                VhostEntry::Parsed(v) => Arc::new(vhost(v, &backends, stats)),
            })
            .collect();
        let entries = live.iter().map(|v| (v.domains.as_slice(), v.vhost.clone())).collect();
        Compiled {
            snapshot: Snapshot {
                version,
                vhosts: VhostTable::new(entries),
                live,
                authz: authz::Listeners::new(authz),
            },
            backends: built,
        }
    }
}

/// Compiles a parsed virtual host: its routes resolved to `backends` (the snapshot's, by index)
/// and their counters.
fn vhost(v: VhostConfig, backends: &[Arc<Backend>], stats: &Stats) -> LiveVhost {
    let mut named: Vec<Arc<str>> = Vec::new();
    let routes = v
        .routes
        .into_iter()
        .map(|r| {
            let targets = r
                .backends
                .iter()
                .map(|w| {
                    let backend = w.backend.map(|i| backends[i].clone());
                    let stats = stats.route(&r.name, backend.as_ref().map_or("", |b| &*b.name));
                    (Target { backend, stats }, w.weight)
                })
                .collect();
            let local_stats = stats.route(&r.name, "");
            let mirror = r.filters.mirror.map(|(i, percent)| (backends[i].clone(), percent));
            named.extend(
                r.backends
                    .iter()
                    .filter_map(|w| w.backend)
                    .map(|i| backends[i].name.clone()),
            );
            named.extend(mirror.as_ref().map(|(b, _)| b.name.clone()));
            let policy = RoutePolicy {
                timeouts: r.timeouts,
                retry: r.retry,
                mirror,
                stats: stats.resilience(&r.name),
            };
            Route::new(
                Arc::from(r.name),
                r.matcher,
                r.filters,
                targets,
                r.session,
                local_stats,
                policy,
            )
        })
        .collect();
    named.sort_unstable();
    named.dedup();
    LiveVhost {
        source: v.source,
        domains: v.domains,
        backends: named,
        vhost: Arc::new(Vhost::new(v.name, routes)),
    }
}
