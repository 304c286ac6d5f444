//! Picking where a request goes: a rule's weighted backends (`weighted`), then one endpoint of
//! the backend (`p2c` by default, `rr` as an option).

pub mod p2c;
pub mod rr;
pub mod weighted;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use http::uri::Authority;
use tokio::time::Instant;

use crate::config::{LbKind, Protocol};
use crate::pool::UpstreamClient;
use crate::stats::EndpointStats;

/// One upstream address of one backend, with its connection pool and load estimate. It
/// survives snapshot swaps as long as the backend keeps the address.
pub struct Endpoint {
    pub addr: Arc<str>,
    /// `addr` as an authority, for requests that carry no Host.
    pub authority: Authority,
    pub client: UpstreamClient,
    pub load: p2c::PeakEwma,
    pub stats: Arc<EndpointStats>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Lb {
    P2c,
    RoundRobin(rr::RoundRobin),
}

/// A backend of a snapshot: its protocol, its endpoints and how to choose among them.
#[derive(Debug)]
pub struct Backend {
    pub name: Arc<str>,
    pub protocol: Protocol,
    pub endpoints: Box<[Arc<Endpoint>]>,
    lb: Lb,
}

impl Backend {
    pub fn new(name: Arc<str>, protocol: Protocol, lb: LbKind, endpoints: Vec<Arc<Endpoint>>) -> Self {
        let lb = match lb {
            LbKind::P2cPeakEwma => Lb::P2c,
            LbKind::RoundRobin => Lb::RoundRobin(rr::RoundRobin::default()),
        };
        Backend {
            name,
            protocol,
            endpoints: endpoints.into_boxed_slice(),
            lb,
        }
    }

    /// The endpoint for the next request; `None` when the backend has no endpoints.
    pub fn pick(&self) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        if n == 1 {
            // Nothing to choose: no clock read, no counter.
            return self.endpoints.first();
        }
        let i = match &self.lb {
            Lb::RoundRobin(rr) => rr.pick(n)?,
            Lb::P2c => {
                let now = Instant::now();
                p2c::pick(n, |i| {
                    let e = &self.endpoints[i];
                    e.load.cost(e.stats.requests_active.load(Relaxed), now)
                })?
            }
        };
        Some(&self.endpoints[i])
    }
}
