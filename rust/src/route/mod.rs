//! Routing: virtual host selection by `Host`/`:authority`, then the first route whose match
//! succeeds, then one of its weighted backends.

pub mod filters;
pub mod matcher;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;

use crate::balance::weighted::SmoothWeighted;
use crate::balance::Backend;
use crate::config::SessionConfig;
use crate::retry::RoutePolicy;
use crate::stats::RouteStats;

use self::filters::Filters;
use self::matcher::{PathMatch, RouteMatch};
use self::session::Session;

/// One weighted backendRef of a route, with the counters of (route, backend).
#[derive(Debug)]
pub struct Target {
    /// `None`: an invalid backendRef; its share of requests answers 500.
    pub backend: Option<Arc<Backend>>,
    pub stats: Arc<RouteStats>,
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    pub filters: Filters,
    pub targets: Box<[Target]>,
    picker: SmoothWeighted,
    weights: Box<[u32]>,
    total: u64,
    session: Option<Session>,
    /// Counters of responses the engine makes for this route (redirects, 500): backend `""`.
    pub local_stats: Arc<RouteStats>,
    pub policy: RoutePolicy,
}

impl Route {
    pub fn new(
        name: Arc<str>,
        matcher: RouteMatch,
        filters: Filters,
        targets: Vec<(Target, u32)>,
        session: Option<SessionConfig>,
        local_stats: Arc<RouteStats>,
        policy: RoutePolicy,
    ) -> Self {
        let weights: Box<[u32]> = targets.iter().map(|(_, w)| *w).collect();
        let session = session.map(|s| match s {
            SessionConfig::Cookie { name, max_age_s } => {
                let names: Vec<Option<&str>> = targets
                    .iter()
                    .map(|(t, _)| t.backend.as_ref().map(|b| &*b.name))
                    .collect();
                Session::cookie(&name, max_age_s, &names)
            }
            SessionConfig::Header { name } => Session::Header { name },
        });
        Route {
            name,
            matcher,
            filters,
            targets: targets.into_iter().map(|(t, _)| t).collect(),
            picker: SmoothWeighted::new(&weights),
            total: weights.iter().map(|&w| u64::from(w)).sum(),
            weights,
            session,
            local_stats,
            policy,
        }
    }

    /// The backend for the next request (the weighted choice, ignoring any session); `None`
    /// when the route has no backend of weight > 0.
    pub fn pick(&self) -> Option<&Target> {
        self.picker.pick().map(|i| &self.targets[i])
    }

    /// The backend for a request, its session considered, and the `Set-Cookie` its answer must
    /// carry (a cookie session whose request named no live backendRef).
    pub fn pick_for(&self, headers: &http::HeaderMap) -> Option<(&Target, Option<&http::HeaderValue>)> {
        let Some(session) = &self.session else {
            return self.pick().map(|t| (t, None));
        };
        if let Some(i) = session.choose(headers, &self.weights, self.total) {
            return Some((&self.targets[i], None));
        }
        let i = self.picker.pick()?;
        Some((&self.targets[i], session.set_cookie(i)))
    }
}

#[derive(Debug)]
pub struct Vhost {
    pub name: String,
    /// In precedence order: the first route whose match succeeds wins.
    pub routes: Box<[Route]>,
    index: RouteIndex,
    /// Some route matches on headers or has session affinity: a request's fields must be in
    /// its `HeaderMap` before routing (`body::materialize`); else they may stay bytes.
    pub reads_headers: bool,
}

impl Vhost {
    pub fn new(name: String, routes: Box<[Route]>) -> Self {
        let index = RouteIndex::new(&routes);
        let reads_headers = routes
            .iter()
            .any(|r| !r.matcher.headers.is_empty() || r.session.is_some());
        Vhost {
            name,
            routes,
            index,
            reads_headers,
        }
    }

    /// The first route whose match succeeds. Only the routes the path can match are tried
    /// (see `RouteIndex`), so the cost does not grow with the number of routes.
    pub fn route(
        &self,
        method: &http::Method,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Option<&Route> {
        let mut best: Option<u32> = None;
        self.index.candidates(path, |list| {
            // Each list is in precedence order: its first full match is its best.
            for &i in list {
                if best.is_some_and(|b| i >= b) {
                    break;
                }
                if self.routes[i as usize].matcher.matches(method, path, query, headers) {
                    best = Some(i);
                    break;
                }
            }
        });
        best.map(|i| &self.routes[i as usize])
    }
}

/// Routes by path match, so a lookup tries only the routes its path can match: `Exact` paths
/// in a hash map, `PathPrefix` paths in a trie of path elements, the rest (regular
/// expressions, no path match) in one list tried every time. Every list holds route indexes
/// in precedence order; a candidate is still checked with its full match (method, headers,
/// query), and the lowest index that matches wins, as in a scan of all routes.
#[derive(Debug, Default)]
struct RouteIndex {
    exact: HashMap<Box<str>, Vec<u32>>,
    prefixes: PrefixNode,
    other: Vec<u32>,
}

#[derive(Debug, Default)]
struct PrefixNode {
    /// Routes whose prefix ends here.
    routes: Vec<u32>,
    children: HashMap<Box<str>, PrefixNode>,
}

impl RouteIndex {
    fn new(routes: &[Route]) -> Self {
        let mut index = RouteIndex::default();
        for (i, r) in routes.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 routes");
            match &r.matcher.path {
                Some(PathMatch::Exact(p)) => index.exact.entry(p.as_str().into()).or_default().push(i),
                // The prefix without its trailing `/`: "" (from "/") or "/a/b".
                Some(PathMatch::Prefix(p)) if p.is_empty() || p.starts_with('/') => {
                    let mut node = &mut index.prefixes;
                    if !p.is_empty() {
                        for element in p[1..].split('/') {
                            node = node.children.entry(element.into()).or_default();
                        }
                    }
                    node.routes.push(i);
                }
                _ => index.other.push(i),
            }
        }
        index
    }

    /// Calls `visit` with each list of candidate routes for `path`.
    fn candidates<'a>(&'a self, path: &str, mut visit: impl FnMut(&'a [u32])) {
        if let Some(list) = self.exact.get(path) {
            visit(list);
        }
        // Prefix "/a/b" matches exactly the paths whose elements start with a, b.
        let mut node = &self.prefixes;
        visit(&node.routes);
        if let Some(rest) = path.strip_prefix('/') {
            for element in rest.split('/') {
                if node.children.is_empty() {
                    break;
                }
                match node.children.get(element) {
                    Some(child) => {
                        node = child;
                        visit(&node.routes);
                    }
                    None => break,
                }
            }
        }
        visit(&self.other);
    }
}

/// Virtual hosts by domain: exact name first, then the longest `*.suffix`, then `*`.
#[derive(Debug, Default)]
pub struct VhostTable {
    /// Shared with the next snapshot when it keeps them (`snapshot::LiveVhost`).
    vhosts: Vec<Arc<Vhost>>,
    exact: HashMap<Box<str>, usize>,
    /// `.suffix` (from `*.suffix`), longest first.
    suffixes: Vec<(Box<str>, usize)>,
    any: Option<usize>,
}

impl VhostTable {
    /// `entries` pairs each virtual host with its (lower-case, validated unique) domains.
    pub fn new(entries: Vec<(&[String], Arc<Vhost>)>) -> Self {
        let mut table = VhostTable::default();
        table.exact.reserve(entries.iter().map(|(d, _)| d.len()).sum());
        for (i, (domains, vhost)) in entries.into_iter().enumerate() {
            for d in domains {
                if d == "*" {
                    table.any.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    table.suffixes.push((suffix.into(), i));
                } else {
                    table.exact.entry(d.as_str().into()).or_insert(i);
                }
            }
            table.vhosts.push(vhost);
        }
        table
            .suffixes
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        table
    }

    /// The virtual host for `host` (no port; compared case-insensitively).
    pub fn select(&self, host: &str) -> Option<&Vhost> {
        let lower;
        let mut host = host.strip_suffix('.').unwrap_or(host);
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            host = &lower;
        }
        let i = self.exact.get(host).copied().or_else(|| {
            self.suffixes
                .iter()
                .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(&**suffix))
                .map(|(_, i)| *i)
                .or(self.any)
        })?;
        Some(&self.vhosts[i])
    }
}

#[cfg(test)]
mod tests;
