//! The immutable tables one request reads: built from a validated `Config`, swapped in whole.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::authz::{self, Authorization};
use crate::balance::Backend;
use crate::config::Config;
use crate::pool::{EndpointKey, Upstreams};
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
    /// The endpoints the snapshot uses (the rest of the registry is dropped once it is live).
    pub endpoints: HashSet<EndpointKey>,
}

impl Snapshot {
    /// Resolves names to shared handles: backends to their endpoints' pools (reused from the
    /// registry when unchanged), routes to their (route, backend) counters, listeners'
    /// authorization to the address each is bound on (`bound`, in `cfg.listeners` order).
    pub fn compile(cfg: Config, version: u64, stats: &Stats, upstreams: &Upstreams, bound: &[SocketAddr]) -> Compiled {
        let authz = cfg
            .listeners
            .into_iter()
            .zip(bound)
            .filter_map(|(l, &addr)| Some((addr, Authorization::new(l.authorization?, stats))))
            .collect();
        let mut used = HashSet::new();
        let backends: Vec<Arc<Backend>> = cfg
            .backends
            .into_iter()
            .map(|b| {
                let name: Arc<str> = Arc::from(b.name);
                let endpoints = b
                    .endpoints
                    .iter()
                    .map(|addr| upstreams.endpoint(&name, addr, b.protocol, b.pool, b.tls.as_ref(), &mut used))
                    .collect();
                let backend_stats = stats.backend(&name);
                Arc::new(Backend::new(
                    name,
                    b.protocol,
                    b.lb,
                    endpoints,
                    (b.outlier, b.limits),
                    backend_stats,
                ))
            })
            .collect();
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
            endpoints: used,
        }
    }
}
