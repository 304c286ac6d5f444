//! The snapshot as Python sends it: serde types, one per JSON object of the contract
//! (docs/engine-snapshot.md). Unknown fields are refused so contract drift shows at once.

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSnapshot<'a> {
    /// Set by the Python runtime; when absent the engine counts on from its current version.
    #[serde(default)]
    pub(super) version: Option<u64>,
    #[serde(default)]
    pub(super) listeners: Vec<RawListener>,
    #[serde(default)]
    pub(super) pool: RawPool,
    /// Each a `RawBackend`, parsed unless the live snapshot has the same text (`config::Reusable`).
    #[serde(default, borrow)]
    pub(super) backends: Vec<&'a RawValue>,
    /// Each a `RawVhost`, parsed unless the live snapshot has the same text (`config::Reusable`).
    #[serde(default, borrow)]
    pub(super) vhosts: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: String,
    /// `ip:port`; port 0 binds any free port.
    pub(super) address: String,
    /// Absent: every request is allowed.
    #[serde(default)]
    pub(super) authorization: Option<RawAuthorization>,
    #[serde(default)]
    pub(super) tls: Option<RawListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenerTls {
    /// "DISABLE" (default) | "PERMISSIVE" | "STRICT".
    #[serde(default)]
    pub(super) mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackendTls {
    /// SPIFFE IDs the server may present.
    pub(super) identities: Vec<String>,
    /// SNI; default: the endpoint's host.
    #[serde(default)]
    pub(super) server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuthorization {
    #[serde(default)]
    pub(super) default_deny: bool,
    #[serde(default)]
    pub(super) policies: Vec<RawPolicy>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub(super) enum RawAction {
    Allow,
    Deny,
    Audit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) name: String,
    pub(super) action: RawAction,
    #[serde(default)]
    pub(super) rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    #[serde(default)]
    pub(super) from: Vec<RawSource>,
    #[serde(default)]
    pub(super) to: Vec<RawOperation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSource {
    pub(super) principals: Vec<String>,
    pub(super) not_principals: Vec<String>,
    pub(super) namespaces: Vec<String>,
    pub(super) not_namespaces: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOperation {
    pub(super) methods: Vec<String>,
    pub(super) not_methods: Vec<String>,
    pub(super) paths: Vec<String>,
    pub(super) not_paths: Vec<String>,
    pub(super) ports: Vec<u16>,
    pub(super) not_ports: Vec<u16>,
    pub(super) hosts: Vec<String>,
    pub(super) not_hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPool {
    /// Idle upstream connections are closed after this (default 90 s).
    pub(super) idle_timeout_ms: u64,
    /// Cap on idle HTTP/1.1 connections kept per endpoint (default 64).
    pub(super) max_idle_per_endpoint: usize,
    /// Upstream TCP connect timeout (default 2 s).
    pub(super) connect_timeout_ms: u64,
}

impl Default for RawPool {
    fn default() -> Self {
        RawPool {
            idle_timeout_ms: 90_000,
            max_idle_per_endpoint: 64,
            connect_timeout_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http1,
    H2c,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbKind {
    #[default]
    P2cPeakEwma,
    RoundRobin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) name: String,
    pub(super) protocol: Protocol,
    #[serde(default)]
    pub(super) lb: LbKind,
    #[serde(default)]
    pub(super) endpoints: Vec<String>,
    #[serde(default)]
    pub(super) tls: Option<RawBackendTls>,
    /// Absent: no outlier detection.
    #[serde(default)]
    pub(super) outlier_detection: Option<RawOutlier>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    /// Override `pool.connect_timeout_ms` / `pool.idle_timeout_ms` for this backend.
    #[serde(default)]
    pub(super) connect_timeout_ms: Option<u64>,
    #[serde(default)]
    pub(super) idle_timeout_ms: Option<u64>,
}

/// Connection-pool limits; `None` = unlimited.
#[allow(clippy::struct_field_names)] // the contract's field names
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default)]
    pub(super) max_connections: Option<u64>,
    #[serde(default)]
    pub(super) max_pending_requests: Option<u64>,
    #[serde(default)]
    pub(super) max_requests: Option<u64>,
    #[serde(default)]
    pub(super) max_retries: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOutlier {
    pub(super) consecutive_5xx: u32,
    pub(super) consecutive_gateway_errors: u32,
    pub(super) interval_ms: u64,
    pub(super) base_ejection_ms: u64,
    pub(super) max_ejection_percent: u32,
}

impl Default for RawOutlier {
    /// Istio's defaults.
    fn default() -> Self {
        RawOutlier {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 0,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_percent: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVhost {
    pub(super) name: String,
    pub(super) domains: Vec<String>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: String,
    #[serde(default, rename = "match")]
    pub(super) matches: RawMatch,
    #[serde(default)]
    pub(super) filters: Vec<RawFilter>,
    #[serde(default)]
    pub(super) backends: Vec<RawWeighted>,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    /// Absent: the built-in policy (`RetryPolicy::default`).
    #[serde(default)]
    pub(super) retry: Option<RawRetry>,
    /// Absent: no session persistence.
    #[serde(default)]
    pub(super) session: Option<RawSession>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type")]
pub(super) enum RawSession {
    Cookie {
        name: String,
        #[serde(default)]
        max_age_s: Option<u64>,
    },
    Header {
        name: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    #[serde(default)]
    pub(super) request_ms: Option<u64>,
    #[serde(default)]
    pub(super) per_try_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetry {
    pub(super) attempts: u32,
    pub(super) on: Vec<String>,
    pub(super) codes: Vec<u16>,
    pub(super) methods: Vec<String>,
    pub(super) max_body_bytes: u64,
    pub(super) backoff: RawBackoff,
    pub(super) budget: RawBudget,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            attempts: 1,
            on: vec!["connect-failure".into(), "refused-stream".into(), "reset".into()],
            codes: Vec::new(),
            methods: ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"].map(String::from).to_vec(),
            max_body_bytes: 65_536,
            backoff: RawBackoff::default(),
            budget: RawBudget::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBackoff {
    pub(super) base_ms: u64,
    pub(super) max_ms: u64,
}

impl Default for RawBackoff {
    fn default() -> Self {
        RawBackoff {
            base_ms: 25,
            max_ms: 250,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBudget {
    pub(super) percent: f64,
    pub(super) min_per_s: u32,
    pub(super) window_ms: u64,
}

impl Default for RawBudget {
    fn default() -> Self {
        RawBudget {
            percent: 20.0,
            min_per_s: 10,
            window_ms: 10_000,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    #[serde(default)]
    pub(super) path: Option<RawPath>,
    #[serde(default)]
    pub(super) method: Option<String>,
    #[serde(default)]
    pub(super) headers: Vec<RawValueMatch>,
    #[serde(default)]
    pub(super) query: Vec<RawValueMatch>,
}

#[derive(Debug, Deserialize)]
pub(super) enum PathType {
    Exact,
    PathPrefix,
    RegularExpression,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPath {
    #[serde(rename = "type")]
    pub(super) kind: PathType,
    pub(super) value: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(super) enum ValueType {
    #[default]
    Exact,
    RegularExpression,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValueMatch {
    #[serde(rename = "type", default)]
    pub(super) kind: ValueType,
    pub(super) name: String,
    pub(super) value: String,
}

#[derive(Debug, Deserialize)]
pub(super) enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPathModifier {
    #[serde(rename = "type")]
    pub(super) kind: PathModifierType,
    pub(super) value: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub(super) enum RawFilter {
    RequestHeaderModifier(RawHeaderModifier),
    ResponseHeaderModifier(RawHeaderModifier),
    #[serde(rename = "URLRewrite")]
    UrlRewrite {
        #[serde(default)]
        hostname: Option<String>,
        #[serde(default)]
        path: Option<RawPathModifier>,
    },
    RequestMirror {
        backend: String,
        #[serde(default = "hundred")]
        percent: f64,
    },
    Fault {
        #[serde(default)]
        delay: Option<RawDelay>,
        #[serde(default)]
        abort: Option<RawAbort>,
    },
    RequestRedirect {
        #[serde(default)]
        scheme: Option<String>,
        #[serde(default)]
        hostname: Option<String>,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        path: Option<RawPathModifier>,
        #[serde(default)]
        status_code: Option<u16>,
    },
}

fn hundred() -> f64 {
    100.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelay {
    pub(super) percent: f64,
    pub(super) ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAbort {
    pub(super) percent: f64,
    pub(super) status: u16,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderModifier {
    #[serde(default)]
    pub(super) set: Vec<(String, String)>,
    #[serde(default)]
    pub(super) add: Vec<(String, String)>,
    #[serde(default)]
    pub(super) remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeighted {
    pub(super) backend: Option<String>,
    pub(super) weight: u32,
}
