//! The snapshot as Python sends it: serde types, one per JSON object of the contract
//! (docs/engine-snapshot.md). Unknown fields are refused so contract drift shows at once.

use serde::Deserialize;
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSnapshot {
    /// Set by the Python runtime; when absent the engine counts on from its current version.
    #[serde(default)]
    pub(super) version: Option<u64>,
    #[serde(default)]
    pub(super) listeners: Vec<RawListener>,
    #[serde(default)]
    pub(super) pool: RawPool,
    #[serde(default)]
    pub(super) backends: Vec<RawBackend>,
    #[serde(default)]
    pub(super) vhosts: Vec<RawVhost>,
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
