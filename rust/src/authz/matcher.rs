//! The compiled conditions of a policy rule (Istio's `from.source` / `to.operation`): string
//! patterns with `*` wildcards, sets of them, and the positive/negative pairs of each field.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::tls::Peer;

/// What a rule is matched against: one request on one connection.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// The verified mTLS caller; `None` on plaintext.
    pub peer: Option<&'a Peer>,
    /// The caller's namespace (`/ns/<ns>/` of its SPIFFE ID).
    pub namespace: Option<&'a str>,
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    /// Without the port.
    pub host: &'a str,
    /// The listener's local port.
    pub port: u16,
}

impl<'a> Attributes<'a> {
    pub fn new(peer: Option<&'a Peer>, method: &'a str, path: &'a str, host: &'a str, port: u16) -> Self {
        Attributes {
            peer,
            namespace: peer.and_then(Peer::namespace),
            method,
            path,
            host,
            port,
        }
    }
}

/// One Istio string pattern: `*` (any value present), `prefix*`, `*suffix` or an exact value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wildcard {
    Any,
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl Wildcard {
    fn matches(&self, value: &str) -> bool {
        match self {
            Wildcard::Any => true,
            Wildcard::Prefix(p) => value.starts_with(&**p),
            Wildcard::Suffix(s) => value.ends_with(&**s),
        }
    }
}

/// A list of patterns, one of which must match: exact values in a hash set, wildcards scanned.
#[derive(Debug, Default)]
pub struct Patterns {
    exact: HashSet<Box<str>>,
    wildcards: Vec<Wildcard>,
    /// Values and patterns compare ASCII case-insensitively (hosts); patterns are stored lower-case.
    fold_case: bool,
}

impl Patterns {
    /// Compiles patterns; an error names the index of the bad one and why.
    pub fn new<S: AsRef<str>>(patterns: &[S], fold_case: bool) -> Result<Self, (usize, String)> {
        let mut out = Patterns {
            fold_case,
            ..Patterns::default()
        };
        for (i, p) in patterns.iter().enumerate() {
            let p = p.as_ref();
            let p = if fold_case {
                p.to_ascii_lowercase()
            } else {
                p.to_owned()
            };
            if p.is_empty() {
                return Err((i, "must not be empty".into()));
            }
            let inner = p.strip_prefix('*').unwrap_or(&p);
            let inner = inner.strip_suffix('*').unwrap_or(inner);
            if inner.contains('*') || (p.len() > 1 && p.starts_with('*') && p.ends_with('*')) {
                return Err((
                    i,
                    format!("{p:?}: only \"*\", a prefix (\"abc*\") or a suffix (\"*abc\") wildcard is supported"),
                ));
            }
            if p == "*" {
                out.wildcards.push(Wildcard::Any);
            } else if let Some(prefix) = p.strip_suffix('*') {
                out.wildcards.push(Wildcard::Prefix(prefix.into()));
            } else if let Some(suffix) = p.strip_prefix('*') {
                out.wildcards.push(Wildcard::Suffix(suffix.into()));
            } else {
                out.exact.insert(p.into());
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty()
    }

    pub fn matches(&self, value: &str) -> bool {
        let value = if self.fold_case && value.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(value.to_ascii_lowercase())
        } else {
            Cow::Borrowed(value)
        };
        self.exact.contains(&*value) || self.wildcards.iter().any(|w| w.matches(&value))
    }
}

/// A field and its negation (`principals` / `not_principals`): when set, the value must match
/// one of the positive patterns and none of the negative ones. An absent value (no caller on
/// plaintext) matches no pattern: it fails a positive list and passes a negative one.
#[derive(Debug, Default)]
pub struct Condition {
    pub any_of: Patterns,
    pub none_of: Patterns,
}

impl Condition {
    pub fn matches(&self, value: Option<&str>) -> bool {
        let hit = |p: &Patterns| value.is_some_and(|v| p.matches(v));
        (self.any_of.is_empty() || hit(&self.any_of)) && (self.none_of.is_empty() || !hit(&self.none_of))
    }
}

/// `ports` / `not_ports`.
#[derive(Debug, Default)]
pub struct PortCondition {
    pub any_of: Vec<u16>,
    pub none_of: Vec<u16>,
}

impl PortCondition {
    pub fn matches(&self, port: u16) -> bool {
        (self.any_of.is_empty() || self.any_of.contains(&port)) && !self.none_of.contains(&port)
    }
}

/// Istio's `source`: every field set must hold.
#[derive(Debug, Default)]
pub struct Source {
    pub principals: Condition,
    pub namespaces: Condition,
}

impl Source {
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        self.principals.matches(a.peer.map(|p| &*p.spiffe_id)) && self.namespaces.matches(a.namespace)
    }
}

/// Istio's `operation`: every field set must hold.
#[derive(Debug, Default)]
pub struct Operation {
    pub methods: Condition,
    pub paths: Condition,
    pub ports: PortCondition,
    pub hosts: Condition,
}

impl Operation {
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        self.ports.matches(a.port)
            && self.methods.matches(Some(a.method))
            && self.paths.matches(Some(a.path))
            && self.hosts.matches(Some(a.host))
    }
}

/// A rule matches when one of `from` (or `from` is empty) and one of `to` (or `to` is empty) match.
#[derive(Debug, Default)]
pub struct Rule {
    pub from: Vec<Source>,
    pub to: Vec<Operation>,
}

impl Rule {
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(a)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(a)))
    }
}
