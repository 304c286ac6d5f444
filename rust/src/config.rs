//! The snapshot contract (docs/engine-snapshot.md): validation of what Python sends (`wire`)
//! into compiled, typed structures (regexes anchored, header names parsed), errors naming the
//! field.
//!
//! Nothing here touches sockets or the runtime; `snapshot.rs` turns a `Config` into the tables
//! the request path reads.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};

use crate::authz::AuthorizationConfig;
use crate::balance::outlier::OutlierConfig;
use crate::error::ConfigError;
use crate::retry::{Budget, Condition, RetryPolicy, Timeouts};
use crate::route::filters::{Fault, Filters, HeaderModifier, PathModifier, Redirect, UrlRewrite};
use crate::route::matcher::{anchored, HeaderMatch, PathMatch, QueryMatch, RouteMatch, ValueMatch};
use crate::snapshot::LiveVhost;
use crate::tls::{TlsMode, UpstreamTls};

mod authz;
mod wire;

pub use self::wire::{LbKind, Protocol};
use self::wire::{
    PathModifierType, PathType, RawAbort, RawBackend, RawBackendTls, RawDelay, RawFilter, RawHeaderModifier,
    RawListener, RawMatch, RawOutlier, RawPathModifier, RawPool, RawRetry, RawRoute, RawSession, RawSnapshot,
    RawTimeouts, RawVhost, ValueType,
};

/// Largest weight a backendRef may carry (Gateway API).
pub const MAX_WEIGHT: u32 = 1_000_000;

// === compiled types ===

/// A validated snapshot.
#[derive(Debug)]
pub struct Config {
    pub version: Option<u64>,
    pub listeners: Vec<ListenerConfig>,
    pub pool: PoolConfig,
    /// Shared with the live snapshot's when their text is the same (`parse_reusing`).
    pub backends: Vec<Arc<BackendConfig>>,
    pub vhosts: Vec<VhostEntry>,
}

/// A virtual host of a snapshot: parsed, or the live one reused whole (same JSON text, and
/// every backend it names shared with the live snapshot).
#[derive(Debug)]
pub enum VhostEntry {
    Parsed(VhostConfig),
    Live(Arc<LiveVhost>),
}

impl VhostEntry {
    #[cfg(test)]
    fn parsed(&self) -> &VhostConfig {
        match self {
            VhostEntry::Parsed(v) => v,
            VhostEntry::Live(_) => panic!("reused, not parsed"),
        }
    }
}

#[derive(Debug)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    /// `None`: every request is allowed.
    pub authorization: Option<AuthorizationConfig>,
    /// What the listener accepts: plaintext, mTLS or both.
    pub tls: TlsMode,
}

/// Upstream connection pool settings (one per snapshot, shared by every endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolConfig {
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    pub connect_timeout: Duration,
    /// The backend's `limits.max_connections` (HTTP/1.1 connections per endpoint); `None`: no cap.
    pub max_connections: Option<u64>,
    /// The backend's `limits.max_pending_requests` (requests waiting for a connection under the cap).
    pub max_pending: Option<u64>,
}

/// A backend's limits on concurrent requests and retries (`u64::MAX`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendLimits {
    pub max_requests: u64,
    pub max_retries: u64,
}

#[derive(Debug, PartialEq)]
pub struct BackendConfig {
    pub name: String,
    pub protocol: Protocol,
    pub lb: LbKind,
    /// `host:port` strings, validated to carry a port.
    pub endpoints: Vec<String>,
    /// Originate mTLS to the endpoints.
    pub tls: Option<UpstreamTls>,
    pub outlier: Option<OutlierConfig>,
    pub limits: BackendLimits,
    /// The snapshot's pool settings with this backend's connection caps.
    pub pool: PoolConfig,
    /// What it was compiled from: its JSON text and the snapshot's `pool`.
    source: (Box<str>, PoolConfig),
}

impl BackendConfig {
    /// Whether the endpoints of both are built alike (an endpoint of one serves the other).
    pub fn same_pools(&self, other: &BackendConfig) -> bool {
        (self.protocol, self.pool, &self.tls) == (other.protocol, other.pool, &other.tls)
    }
}

#[derive(Debug)]
pub struct VhostConfig {
    pub name: String,
    /// Lower-cased: `example.com`, `*.example.com` or `*`.
    pub domains: Vec<String>,
    pub routes: Vec<RouteConfig>,
    /// Its JSON text.
    pub source: Box<str>,
}

#[derive(Debug)]
pub struct RouteConfig {
    pub name: String,
    pub matcher: RouteMatch,
    pub filters: Filters,
    pub backends: Vec<WeightedRef>,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    pub session: Option<SessionConfig>,
}

/// Session persistence of a route (`route::session`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionConfig {
    /// Cookie `name` (an RFC 6265 token); `Max-Age` when `max_age_s` is set.
    Cookie { name: String, max_age_s: Option<u64> },
    /// A hash of this request header's value.
    Header { name: HeaderName },
}

/// One weighted backendRef: an index into `Config::backends`, or `None` for an invalid ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightedRef {
    pub backend: Option<usize>,
    pub weight: u32,
}

// === validation ===

/// Parses and validates a snapshot.
pub fn parse(json: &str) -> Result<Config, ConfigError> {
    parse_reusing(json, &Reusable::default())
}

/// Parses and validates a snapshot; a backend whose JSON text (and the snapshot's `pool`) is
/// the same as one of `reusable` is that one, not parsed again.
pub fn parse_reusing(json: &str, reusable: &Reusable<'_>) -> Result<Config, ConfigError> {
    // serde straight into the typed structs; only a refused snapshot is parsed a second time,
    // tracking the path, to name the field (the tracking doubles the cost of a large snapshot).
    match serde_json::from_str::<RawSnapshot>(json) {
        Ok(raw) => compile(raw, reusable),
        Err(first) => Err(parse_error::<RawSnapshot>(json, "", first)),
    }
}

/// The error of the JSON text of `T` serde refused (`first`), naming the field path (under
/// `field`, the path of `T` in the snapshot; `""`: the snapshot itself).
#[cold]
fn parse_error<'de, T: serde::Deserialize<'de>>(json: &'de str, field: &str, first: serde_json::Error) -> ConfigError {
    let mut de = serde_json::Deserializer::from_str(json);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if field.is_empty() && (path == "." || inner.is_syntax() || inner.is_eof()) {
                ConfigError::Json(inner)
            } else if path == "." {
                ConfigError::invalid(field, inner.to_string())
            } else if field.is_empty() {
                ConfigError::invalid(path, inner.to_string())
            } else {
                ConfigError::invalid(format!("{field}.{path}"), inner.to_string())
            }
        }
        // Trailing characters after the object.
        Ok(_) => de.end().err().unwrap_or(first).into(),
    }
}

/// What of the live snapshot a new one may share, found by JSON text: backend configs, and
/// compiled virtual hosts.
#[derive(Default)]
pub struct Reusable<'a> {
    backends: HashMap<Text<'a>, &'a Arc<BackendConfig>>,
    vhosts: HashMap<Text<'a>, &'a Arc<LiveVhost>>,
}

impl<'a> Reusable<'a> {
    pub fn new(
        backends: impl Iterator<Item = &'a Arc<BackendConfig>>,
        vhosts: impl Iterator<Item = &'a Arc<LiveVhost>>,
    ) -> Self {
        Reusable {
            backends: backends.map(|c| (Text(&c.source.0), c)).collect(),
            vhosts: vhosts.map(|v| (Text(&v.source), v)).collect(),
        }
    }

    fn backend(&self, text: &str, pool: PoolConfig) -> Option<Arc<BackendConfig>> {
        self.backends
            .get(&Text(text))
            .filter(|c| c.source.1 == pool)
            .map(|c| Arc::clone(c))
    }
}

/// A backend's JSON text as a map key: hashed by its length and first bytes (where its unique
/// name is), compared whole.
#[derive(PartialEq, Eq)]
struct Text<'a>(&'a str);

impl Hash for Text<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let bytes = self.0.as_bytes();
        state.write_usize(bytes.len());
        state.write(&bytes[..bytes.len().min(96)]);
    }
}

fn compile(raw: RawSnapshot<'_>, reusable: &Reusable<'_>) -> Result<Config, ConfigError> {
    let listeners = listeners(raw.listeners)?;
    let pool = pool(&raw.pool)?;
    let mut by_name = HashMap::new();
    let mut backends = Vec::with_capacity(raw.backends.len());
    // Whether each backend's config is the live snapshot's (then its compiled backend is too).
    let mut shared = Vec::with_capacity(raw.backends.len());
    for (i, text) in raw.backends.into_iter().enumerate() {
        let text = text.get();
        let reused = reusable.backend(text, pool);
        shared.push(reused.is_some());
        let b = match reused {
            Some(b) => b,
            None => {
                let field = format!("backends[{i}]");
                let b: RawBackend =
                    serde_json::from_str(text).map_err(|e| parse_error::<RawBackend>(text, &field, e))?;
                if b.name.is_empty() {
                    return Err(ConfigError::invalid(format!("{field}.name"), "must not be empty"));
                }
                Arc::new(backend(b, &field, (text, pool))?)
            }
        };
        if by_name.insert(b.name.clone(), i).is_some() {
            return Err(ConfigError::invalid(
                format!("backends[{i}].name"),
                format!("duplicate backend {:?}", b.name),
            ));
        }
        backends.push(b);
    }
    let mut seen_domains: HashMap<String, String> = HashMap::new();
    let mut vhosts = Vec::with_capacity(raw.vhosts.len());
    for (i, text) in raw.vhosts.into_iter().enumerate() {
        let text = text.get();
        if let Some(live) = reusable.vhosts.get(&Text(text)) {
            // Its backends must be the live ones, its domains still its own; else it is parsed
            // (and any error reported as for a new one).
            let same_backends = live
                .backends
                .iter()
                .all(|name| by_name.get(&**name).is_some_and(|&j| shared[j]));
            if same_backends && live.domains.iter().all(|d| !seen_domains.contains_key(d)) {
                for d in &live.domains {
                    seen_domains.insert(d.clone(), live.vhost.name.clone());
                }
                vhosts.push(VhostEntry::Live(Arc::clone(live)));
                continue;
            }
        }
        let field = format!("vhosts[{i}]");
        let v: RawVhost = serde_json::from_str(text).map_err(|e| parse_error::<RawVhost>(text, &field, e))?;
        let mut domains = Vec::with_capacity(v.domains.len());
        for (j, d) in v.domains.iter().enumerate() {
            let d = d.to_ascii_lowercase();
            check_domain(&d).map_err(|m| ConfigError::invalid(format!("{field}.domains[{j}]"), m))?;
            if let Some(other) = seen_domains.insert(d.clone(), v.name.clone()) {
                return Err(ConfigError::invalid(
                    format!("{field}.domains[{j}]"),
                    format!("domain {d:?} is already claimed by vhost {other:?}"),
                ));
            }
            domains.push(d);
        }
        let routes = v
            .routes
            .into_iter()
            .enumerate()
            .map(|(j, r)| route(r, &format!("{field}.routes[{j}]"), &by_name))
            .collect::<Result<_, _>>()?;
        vhosts.push(VhostEntry::Parsed(VhostConfig {
            name: v.name,
            domains,
            routes,
            source: text.into(),
        }));
    }
    Ok(Config {
        version: raw.version,
        listeners,
        pool,
        backends,
        vhosts,
    })
}

/// One backend, its fields checked (`field`: its path, e.g. `backends[3]`), from its JSON text
/// and the snapshot's `pool`.
fn backend(b: RawBackend, field: &str, (text, pool): (&str, PoolConfig)) -> Result<BackendConfig, ConfigError> {
    for (j, e) in b.endpoints.iter().enumerate() {
        check_endpoint(e).map_err(|m| ConfigError::invalid(format!("{field}.endpoints[{j}]"), m))?;
    }
    let tls = match b.tls {
        None => None,
        Some(t) => {
            let tls = backend_tls(t, &format!("{field}.tls"))?;
            for (j, e) in b.endpoints.iter().enumerate() {
                crate::tls::outbound::server_name(&tls, e).map_err(|m| {
                    ConfigError::invalid(format!("{field}.endpoints[{j}]"), format!("no TLS server name: {m}"))
                })?;
            }
            Some(tls)
        }
    };
    let outlier = match &b.outlier_detection {
        None => None,
        Some(o) => Some(outlier(o, &format!("{field}.outlier_detection"))?),
    };
    if b.connect_timeout_ms == Some(0) {
        return Err(ConfigError::invalid(
            format!("{field}.connect_timeout_ms"),
            "must be greater than 0",
        ));
    }
    let l = &b.limits;
    for (name, v) in [("max_connections", l.max_connections), ("max_requests", l.max_requests)] {
        if v == Some(0) {
            return Err(ConfigError::invalid(
                format!("{field}.limits.{name}"),
                "must be greater than 0 (or null: no limit)",
            ));
        }
    }
    Ok(BackendConfig {
        name: b.name,
        protocol: b.protocol,
        lb: b.lb,
        endpoints: b.endpoints,
        tls,
        outlier,
        limits: BackendLimits {
            max_requests: l.max_requests.unwrap_or(u64::MAX),
            max_retries: l.max_retries.unwrap_or(u64::MAX),
        },
        pool: PoolConfig {
            max_connections: l.max_connections,
            max_pending: l.max_pending_requests,
            connect_timeout: b.connect_timeout_ms.map_or(pool.connect_timeout, Duration::from_millis),
            idle_timeout: b.idle_timeout_ms.map_or(pool.idle_timeout, Duration::from_millis),
            ..pool
        },
        source: (text.into(), pool),
    })
}

fn listeners(raw: Vec<RawListener>) -> Result<Vec<ListenerConfig>, ConfigError> {
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, l) in raw.into_iter().enumerate() {
        let field = format!("listeners[{i}]");
        if l.name.is_empty() {
            return Err(ConfigError::invalid(format!("{field}.name"), "must not be empty"));
        }
        if !names.insert(l.name.clone()) {
            return Err(ConfigError::invalid(
                format!("{field}.name"),
                format!("duplicate listener {:?}", l.name),
            ));
        }
        let address: SocketAddr = l.address.parse().map_err(|_| {
            ConfigError::invalid(
                format!("{field}.address"),
                format!("{:?} is not an ip:port address", l.address),
            )
        })?;
        if address.port() != 0 && !addresses.insert(address) {
            return Err(ConfigError::invalid(
                format!("{field}.address"),
                format!("{address} is used by two listeners"),
            ));
        }
        let authorization = match l.authorization {
            None => None,
            Some(a) => Some(authz::authorization(a, &format!("{field}.authorization"))?),
        };
        let tls = match l.tls.and_then(|t| t.mode) {
            None => TlsMode::Disable,
            Some(m) => TlsMode::parse(&m).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{field}.tls.mode"),
                    format!("{m:?} is not one of \"DISABLE\", \"PERMISSIVE\", \"STRICT\""),
                )
            })?,
        };
        out.push(ListenerConfig {
            name: l.name,
            address,
            authorization,
            tls,
        });
    }
    Ok(out)
}

fn backend_tls(raw: RawBackendTls, field: &str) -> Result<UpstreamTls, ConfigError> {
    if raw.identities.is_empty() {
        return Err(ConfigError::invalid(
            format!("{field}.identities"),
            "must name at least one SPIFFE ID",
        ));
    }
    for (i, id) in raw.identities.iter().enumerate() {
        let domain = id
            .strip_prefix("spiffe://")
            .map(|rest| rest.split('/').next().unwrap_or(""));
        if domain.is_none_or(str::is_empty) {
            return Err(ConfigError::invalid(
                format!("{field}.identities[{i}]"),
                format!("{id:?} is not a SPIFFE ID (spiffe://<trust domain>/<path>)"),
            ));
        }
    }
    if let Some(name) = &raw.server_name {
        if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
            return Err(ConfigError::invalid(
                format!("{field}.server_name"),
                format!("{name:?} is not a DNS name or IP address"),
            ));
        }
    }
    Ok(UpstreamTls {
        identities: raw.identities,
        server_name: raw.server_name,
    })
}

fn pool(raw: &RawPool) -> Result<PoolConfig, ConfigError> {
    if raw.connect_timeout_ms == 0 {
        return Err(ConfigError::invalid(
            "pool.connect_timeout_ms",
            "must be greater than 0",
        ));
    }
    Ok(PoolConfig {
        idle_timeout: Duration::from_millis(raw.idle_timeout_ms),
        max_idle_per_endpoint: raw.max_idle_per_endpoint,
        connect_timeout: Duration::from_millis(raw.connect_timeout_ms),
        max_connections: None,
        max_pending: None,
    })
}

fn outlier(raw: &RawOutlier, field: &str) -> Result<OutlierConfig, ConfigError> {
    if raw.max_ejection_percent > 100 {
        return Err(ConfigError::invalid(
            format!("{field}.max_ejection_percent"),
            format!("must be between 0 and 100 (got {})", raw.max_ejection_percent),
        ));
    }
    if raw.interval_ms == 0 {
        return Err(ConfigError::invalid(
            format!("{field}.interval_ms"),
            "must be greater than 0",
        ));
    }
    if raw.consecutive_5xx == 0 && raw.consecutive_gateway_errors == 0 {
        return Err(ConfigError::invalid(
            field,
            "consecutive_5xx and consecutive_gateway_errors are both 0: nothing would be detected",
        ));
    }
    Ok(OutlierConfig {
        consecutive_5xx: raw.consecutive_5xx,
        consecutive_gateway_errors: raw.consecutive_gateway_errors,
        interval: Duration::from_millis(raw.interval_ms),
        base_ejection: Duration::from_millis(raw.base_ejection_ms),
        max_ejection_percent: raw.max_ejection_percent,
    })
}

fn check_endpoint(e: &str) -> Result<(), String> {
    if e.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match e.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && !host.contains(['/', ' ']) && port.parse::<u16>().is_ok_and(|p| p > 0) =>
        {
            Ok(())
        }
        _ => Err(format!("{e:?} is not a host:port address")),
    }
}

fn check_domain(d: &str) -> Result<(), String> {
    let name = d.strip_prefix("*.").unwrap_or(d);
    if d == "*" {
        return Ok(());
    }
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err(format!("{d:?} is not a domain, \"*.suffix\" or \"*\""))
    }
}

fn route(r: RawRoute, field: &str, backends: &HashMap<String, usize>) -> Result<RouteConfig, ConfigError> {
    let matcher = route_match(r.matches, &format!("{field}.match"))?;
    let filters = filters(r.filters, field, &matcher, backends)?;
    let mut refs = Vec::with_capacity(r.backends.len());
    for (i, b) in r.backends.into_iter().enumerate() {
        let f = format!("{field}.backends[{i}]");
        if b.weight > MAX_WEIGHT {
            return Err(ConfigError::invalid(
                format!("{f}.weight"),
                format!("must be between 0 and {MAX_WEIGHT} (got {})", b.weight),
            ));
        }
        let backend =
            match b.backend {
                None => None,
                Some(name) => Some(*backends.get(&name).ok_or_else(|| {
                    ConfigError::invalid(format!("{f}.backend"), format!("unknown backend {name:?}"))
                })?),
            };
        refs.push(WeightedRef {
            backend,
            weight: b.weight,
        });
    }
    Ok(RouteConfig {
        name: r.name,
        matcher,
        filters,
        backends: refs,
        timeouts: timeouts(&r.timeouts, &format!("{field}.timeouts"))?,
        retry: match r.retry {
            None => RetryPolicy::default(),
            Some(raw) => retry(raw, &format!("{field}.retry"))?,
        },
        session: r.session.map(|s| session(s, &format!("{field}.session"))).transpose()?,
    })
}

fn session(raw: RawSession, field: &str) -> Result<SessionConfig, ConfigError> {
    match raw {
        RawSession::Cookie { name, max_age_s } => {
            // RFC 6265 cookie-name: an RFC 7230 token.
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(ConfigError::invalid(
                    format!("{field}.name"),
                    format!("{name:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"),
                ));
            }
            if max_age_s == Some(0) {
                return Err(ConfigError::invalid(
                    format!("{field}.max_age_s"),
                    "must be greater than 0 (or null)",
                ));
            }
            Ok(SessionConfig::Cookie { name, max_age_s })
        }
        RawSession::Header { name } => Ok(SessionConfig::Header {
            name: header_name(&name, &format!("{field}.name"))?,
        }),
    }
}

fn timeouts(raw: &RawTimeouts, field: &str) -> Result<Timeouts, ConfigError> {
    let ms = |v: Option<u64>, name: &str| match v {
        Some(0) => Err(ConfigError::invalid(
            format!("{field}.{name}"),
            "must be greater than 0 (or null)",
        )),
        v => Ok(v.map(Duration::from_millis)),
    };
    Ok(Timeouts {
        request: ms(raw.request_ms, "request_ms")?,
        per_try: ms(raw.per_try_ms, "per_try_ms")?,
    })
}

fn retry(raw: RawRetry, field: &str) -> Result<RetryPolicy, ConfigError> {
    let mut on = Vec::with_capacity(raw.on.len());
    for (i, c) in raw.on.iter().enumerate() {
        let names: Vec<_> = Condition::ALL.iter().map(|c| c.name()).collect();
        on.push(Condition::parse(c).ok_or_else(|| {
            ConfigError::invalid(
                format!("{field}.on[{i}]"),
                format!("{c:?} is not one of {}", names.join(", ")),
            )
        })?);
    }
    for (i, c) in raw.codes.iter().enumerate() {
        if !(400..=599).contains(c) {
            return Err(ConfigError::invalid(
                format!("{field}.codes[{i}]"),
                format!("must be a 4xx or 5xx status (got {c})"),
            ));
        }
    }
    let mut methods = Vec::with_capacity(raw.methods.len());
    for (i, m) in raw.methods.iter().enumerate() {
        methods.push(Method::from_bytes(m.as_bytes()).map_err(|_| {
            ConfigError::invalid(format!("{field}.methods[{i}]"), format!("{m:?} is not an HTTP method"))
        })?);
    }
    if raw.backoff.max_ms < raw.backoff.base_ms {
        return Err(ConfigError::invalid(
            format!("{field}.backoff.max_ms"),
            format!("must be at least base_ms ({})", raw.backoff.base_ms),
        ));
    }
    if raw.attempts > 20 {
        return Err(ConfigError::invalid(
            format!("{field}.attempts"),
            format!("must be at most 20 (got {})", raw.attempts),
        ));
    }
    let b = &raw.budget;
    if !(0.0..=1000.0).contains(&b.percent) {
        return Err(ConfigError::invalid(
            format!("{field}.budget.percent"),
            "must be between 0 and 1000",
        ));
    }
    if b.window_ms < 10 {
        return Err(ConfigError::invalid(
            format!("{field}.budget.window_ms"),
            "must be at least 10",
        ));
    }
    Ok(RetryPolicy::new(
        raw.attempts,
        &on,
        raw.codes,
        methods,
        raw.max_body_bytes,
        (
            Duration::from_millis(raw.backoff.base_ms),
            Duration::from_millis(raw.backoff.max_ms),
        ),
        Budget::new(b.percent, b.min_per_s, Duration::from_millis(b.window_ms)),
    ))
}

fn regex(pattern: &str, field: &str) -> Result<regex::Regex, ConfigError> {
    anchored(pattern).map_err(|anchored_err| {
        // Report against the user's pattern (not our `^(?:...)$` wrapper), on one line.
        let detail = regex::Regex::new(pattern).err().unwrap_or(anchored_err).to_string();
        let reason = detail.lines().last().unwrap_or_default().trim_start_matches("error: ");
        ConfigError::invalid(field, format!("invalid regular expression {pattern:?}: {reason}"))
    })
}

fn route_match(m: RawMatch, field: &str) -> Result<RouteMatch, ConfigError> {
    let path = match m.path {
        None => None,
        Some(p) => {
            let f = format!("{field}.path.value");
            Some(match p.kind {
                PathType::Exact | PathType::PathPrefix if !p.value.starts_with('/') => {
                    return Err(ConfigError::invalid(
                        f,
                        format!("must start with \"/\" (got {:?})", p.value),
                    ));
                }
                PathType::Exact => PathMatch::Exact(p.value),
                PathType::PathPrefix => PathMatch::prefix(&p.value),
                PathType::RegularExpression => PathMatch::Regex(regex(&p.value, &f)?),
            })
        }
    };
    let method = match m.method {
        None => None,
        Some(s) => Some(
            Method::from_bytes(s.as_bytes())
                .map_err(|_| ConfigError::invalid(format!("{field}.method"), format!("{s:?} is not an HTTP method")))?,
        ),
    };
    let mut headers = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.into_iter().enumerate() {
        let f = format!("{field}.headers[{i}]");
        headers.push(HeaderMatch {
            name: header_name(&h.name, &format!("{f}.name"))?,
            value: value_match(h.kind, h.value, &format!("{f}.value"))?,
        });
    }
    let mut query = Vec::with_capacity(m.query.len());
    for (i, q) in m.query.into_iter().enumerate() {
        let f = format!("{field}.query[{i}]");
        if q.name.is_empty() {
            return Err(ConfigError::invalid(format!("{f}.name"), "must not be empty"));
        }
        query.push(QueryMatch {
            name: q.name,
            value: value_match(q.kind, q.value, &format!("{f}.value"))?,
        });
    }
    Ok(RouteMatch {
        path,
        method,
        headers,
        query,
    })
}

#[allow(clippy::needless_pass_by_value)] // `value` moves into the Exact variant
fn value_match(kind: ValueType, value: String, field: &str) -> Result<ValueMatch, ConfigError> {
    Ok(match kind {
        ValueType::Exact => ValueMatch::Exact(value),
        ValueType::RegularExpression => ValueMatch::Regex(regex(&value, field)?),
    })
}

fn header_name(name: &str, field: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| ConfigError::invalid(field, format!("{name:?} is not a header name")))
}

fn header_value(value: &str, field: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(value).map_err(|_| ConfigError::invalid(field, format!("{value:?} is not a header value")))
}

fn header_modifier(raw: RawHeaderModifier, field: &str) -> Result<HeaderModifier, ConfigError> {
    let pairs = |list: Vec<(String, String)>, what: &str| -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, (n, v))| {
                let f = format!("{field}.{what}[{i}]");
                Ok((header_name(n, &f)?, header_value(v, &f)?))
            })
            .collect()
    };
    Ok(HeaderModifier {
        set: pairs(raw.set, "set")?,
        add: pairs(raw.add, "add")?,
        remove: raw
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| header_name(n, &format!("{field}.remove[{i}]")))
            .collect::<Result<_, _>>()?,
    })
}

fn path_modifier(
    raw: Option<RawPathModifier>,
    field: &str,
    matcher: &RouteMatch,
) -> Result<Option<PathModifier>, ConfigError> {
    let Some(p) = raw else { return Ok(None) };
    if !p.value.starts_with('/') {
        return Err(ConfigError::invalid(
            format!("{field}.value"),
            format!("must start with \"/\" (got {:?})", p.value),
        ));
    }
    Ok(Some(match p.kind {
        PathModifierType::ReplaceFullPath => PathModifier::ReplaceFullPath(p.value),
        PathModifierType::ReplacePrefixMatch => {
            if matcher.matched_prefix().is_none() {
                return Err(ConfigError::invalid(
                    format!("{field}.type"),
                    "ReplacePrefixMatch needs a PathPrefix path match",
                ));
            }
            PathModifier::ReplacePrefixMatch(p.value)
        }
    }))
}

fn percent(p: f64, field: &str) -> Result<f64, ConfigError> {
    if (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(ConfigError::invalid(
            field,
            format!("must be between 0 and 100 (got {p})"),
        ))
    }
}

fn fault(delay: Option<RawDelay>, abort: Option<RawAbort>, field: &str) -> Result<Fault, ConfigError> {
    let delay = match delay {
        None => None,
        Some(d) => Some((
            percent(d.percent, &format!("{field}.delay.percent"))?,
            Duration::from_millis(d.ms),
        )),
    };
    let abort = match abort {
        None => None,
        Some(a) => {
            let status = StatusCode::from_u16(a.status)
                .ok()
                .filter(|s| (200..=599).contains(&s.as_u16()))
                .ok_or_else(|| {
                    ConfigError::invalid(
                        format!("{field}.abort.status"),
                        format!("must be an HTTP status 200..599 (got {})", a.status),
                    )
                })?;
            Some((percent(a.percent, &format!("{field}.abort.percent"))?, status))
        }
    };
    Ok(Fault { delay, abort })
}

fn filters(
    raw: Vec<RawFilter>,
    field: &str,
    matcher: &RouteMatch,
    backends: &HashMap<String, usize>,
) -> Result<Filters, ConfigError> {
    let mut out = Filters::default();
    for (i, f) in raw.into_iter().enumerate() {
        let field = format!("{field}.filters[{i}]");
        match f {
            RawFilter::RequestHeaderModifier(m) => out.request_headers.push(header_modifier(m, &field)?),
            RawFilter::ResponseHeaderModifier(m) => out.response_headers.push(header_modifier(m, &field)?),
            RawFilter::UrlRewrite { hostname, path } => {
                if out.rewrite.is_some() {
                    return Err(ConfigError::invalid(field, "only one URLRewrite per route"));
                }
                let hostname = match hostname {
                    None => None,
                    Some(h) => {
                        check_domain(&h).map_err(|m| ConfigError::invalid(format!("{field}.hostname"), m))?;
                        let authority = http::uri::Authority::try_from(h.as_str())
                            .map_err(|e| ConfigError::invalid(format!("{field}.hostname"), e.to_string()))?;
                        Some((authority, header_value(&h, &format!("{field}.hostname"))?))
                    }
                };
                out.rewrite = Some(UrlRewrite {
                    hostname,
                    path: path_modifier(path, &format!("{field}.path"), matcher)?,
                });
            }
            RawFilter::RequestMirror { backend, percent: p } => {
                if out.mirror.is_some() {
                    return Err(ConfigError::invalid(field, "only one RequestMirror per route"));
                }
                let index = *backends.get(&backend).ok_or_else(|| {
                    ConfigError::invalid(format!("{field}.backend"), format!("unknown backend {backend:?}"))
                })?;
                out.mirror = Some((index, percent(p, &format!("{field}.percent"))?));
            }
            RawFilter::Fault { delay, abort } => {
                if out.fault.is_some() {
                    return Err(ConfigError::invalid(field, "only one Fault per route"));
                }
                out.fault = Some(fault(delay, abort, &field)?);
            }
            RawFilter::RequestRedirect {
                scheme,
                hostname,
                port,
                path,
                status_code,
            } => {
                if out.redirect.is_some() {
                    return Err(ConfigError::invalid(field, "only one RequestRedirect per route"));
                }
                if let Some(s) = &scheme {
                    if s != "http" && s != "https" {
                        return Err(ConfigError::invalid(
                            format!("{field}.scheme"),
                            format!("must be http or https (got {s:?})"),
                        ));
                    }
                }
                if let Some(h) = &hostname {
                    check_domain(h).map_err(|m| ConfigError::invalid(format!("{field}.hostname"), m))?;
                }
                if port == Some(0) {
                    return Err(ConfigError::invalid(
                        format!("{field}.port"),
                        "must be between 1 and 65535",
                    ));
                }
                let code = status_code.unwrap_or(302);
                if !matches!(code, 301 | 302 | 303 | 307 | 308) {
                    return Err(ConfigError::invalid(
                        format!("{field}.status_code"),
                        format!("must be one of 301, 302, 303, 307, 308 (got {code})"),
                    ));
                }
                out.redirect = Some(Redirect {
                    scheme,
                    hostname,
                    port,
                    path: path_modifier(path, &format!("{field}.path"), matcher)?,
                    status: StatusCode::from_u16(code).expect("checked redirect code"),
                });
            }
        }
    }
    if out.redirect.is_some() && out.rewrite.is_some() {
        return Err(ConfigError::invalid(
            format!("{field}.filters"),
            "RequestRedirect and URLRewrite cannot be combined",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
