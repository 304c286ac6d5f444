//! The immutable tables one request reads: built from a validated `Config`, swapped in whole.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::authz::{self, Authorization};
use crate::balance::Backend;
use crate::config::Config;
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
        let entries = cfg
            .vhosts
            .into_iter()
            .map(|v| {
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
                        let policy = RoutePolicy {
                            timeouts: r.timeouts,
                            retry: r.retry,
                            mirror: r.filters.mirror.map(|(i, percent)| (backends[i].clone(), percent)),
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
                (v.domains, Vhost::new(v.name, routes))
            })
            .collect();
        Compiled {
            snapshot: Snapshot {
                version,
                vhosts: VhostTable::new(entries),
                authz: authz::Listeners::new(authz),
            },
            backends: built,
        }
    }
}
