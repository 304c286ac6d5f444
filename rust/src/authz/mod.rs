//! Authorization with Istio's `AuthorizationPolicy` semantics (docs/engine-snapshot.md,
//! "Authorization"), evaluated per request once routing has chosen a route, before any byte
//! goes upstream and before `100 Continue`:
//!
//! - every AUDIT policy that matches is counted (it never changes the decision);
//! - a DENY policy matching: 403 `RBAC: access denied: policy <name>`;
//! - ALLOW policies present (or `default_deny`) and none matching: 403 `... no ALLOW policy matched`;
//! - otherwise the request goes on.
//!
//! A policy with no rules matches nothing. Config parsing (`config::authz`) builds the rules;
//! `Authorization::new` attaches the counters, once per snapshot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;

use crate::stats::Stats;
use crate::tls::Peer;

pub mod matcher;

pub use self::matcher::{Attributes, Condition, Operation, Patterns, PortCondition, Rule, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Audit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
        }
    }
}

/// A validated policy, before counters are attached (`config::authz`).
#[derive(Debug)]
pub struct PolicyConfig {
    pub name: String,
    pub action: Action,
    pub rules: Vec<Rule>,
}

/// A listener's `authorization`, validated.
#[derive(Debug, Default)]
pub struct AuthorizationConfig {
    pub default_deny: bool,
    pub policies: Vec<PolicyConfig>,
}

#[derive(Debug)]
struct Policy {
    rules: Vec<Rule>,
    /// Requests this policy matched (cumulative, kept across snapshots by name and action).
    matched: Arc<AtomicU64>,
    /// The 403 body when a DENY policy matches.
    denied_body: Bytes,
}

impl Policy {
    fn matches(&self, a: &Attributes<'_>) -> bool {
        self.rules.iter().any(|r| r.matches(a))
    }
}

/// The compiled policies of one listener.
#[derive(Debug)]
pub struct Authorization {
    deny: Vec<Policy>,
    audit: Vec<Policy>,
    allow: Vec<Policy>,
    /// Deny when no ALLOW policy matches, even if there is none.
    allow_required: bool,
    /// `Stats::authz_denied_no_match`.
    denied_no_match: Arc<AtomicU64>,
}

const NO_MATCH_BODY: &[u8] = b"RBAC: access denied: no ALLOW policy matched\n";

impl Authorization {
    pub fn new(cfg: AuthorizationConfig, stats: &Stats) -> Self {
        let mut out = Authorization {
            deny: Vec::new(),
            audit: Vec::new(),
            allow: Vec::new(),
            allow_required: cfg.default_deny,
            denied_no_match: stats.authz_denied_no_match.clone(),
        };
        for p in cfg.policies {
            let policy = Policy {
                matched: stats.authz_policy(&p.name, p.action.as_str()),
                denied_body: Bytes::from(format!("RBAC: access denied: policy {}\n", p.name)),
                rules: p.rules,
            };
            match p.action {
                Action::Deny => out.deny.push(policy),
                Action::Audit => out.audit.push(policy),
                Action::Allow => out.allow.push(policy),
            }
        }
        out.allow_required |= !out.allow.is_empty();
        out
    }

    /// The decision for one request: `Err` with the 403 body when it is denied.
    pub fn evaluate(&self, a: &Attributes<'_>) -> Result<(), Denied> {
        for p in self.audit.iter().filter(|p| p.matches(a)) {
            p.matched.fetch_add(1, Relaxed);
        }
        if let Some(p) = self.deny.iter().find(|p| p.matches(a)) {
            p.matched.fetch_add(1, Relaxed);
            return Err(Denied(p.denied_body.clone()));
        }
        if !self.allow_required {
            return Ok(());
        }
        if let Some(p) = self.allow.iter().find(|p| p.matches(a)) {
            p.matched.fetch_add(1, Relaxed);
            return Ok(());
        }
        self.denied_no_match.fetch_add(1, Relaxed);
        Err(Denied(Bytes::from_static(NO_MATCH_BODY)))
    }
}

/// The policies of every listener that has some, by the listener's bound address.
#[derive(Debug, Default)]
pub struct Listeners(Vec<(SocketAddr, Authorization)>);

impl Listeners {
    pub fn new(entries: Vec<(SocketAddr, Authorization)>) -> Self {
        Listeners(entries)
    }

    /// Authorizes a request that came through the listener bound on `local` (its port is the
    /// `ports` attribute). `host` is the request's host without port.
    pub fn check<B>(&self, local: SocketAddr, peer: Option<&Peer>, req: &Request<B>, host: &str) -> Result<(), Denied> {
        if self.0.is_empty() {
            return Ok(());
        }
        let Some((_, authz)) = self.0.iter().find(|(addr, _)| *addr == local) else {
            return Ok(());
        };
        let a = Attributes::new(peer, req.method().as_str(), req.uri().path(), host, local.port());
        authz.evaluate(&a)
    }
}

/// A denied request: the 403 body (`proxy.rs` answers it before reading the request body, so
/// hyper sends no `100 Continue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub Bytes);

#[cfg(test)]
mod tests;
