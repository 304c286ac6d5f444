//! Routing: virtual host selection by `Host`/`:authority`, then the first route whose match
//! succeeds, then one of its weighted backends.

pub mod filters;
pub mod matcher;

use std::collections::HashMap;
use std::sync::Arc;

use crate::balance::weighted::SmoothWeighted;
use crate::balance::Backend;
use crate::stats::RouteStats;

use self::filters::Filters;
use self::matcher::RouteMatch;

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
    /// Counters of responses the engine makes for this route (redirects, 500): backend `""`.
    pub local_stats: Arc<RouteStats>,
}

impl Route {
    pub fn new(
        name: Arc<str>,
        matcher: RouteMatch,
        filters: Filters,
        targets: Vec<(Target, u32)>,
        local_stats: Arc<RouteStats>,
    ) -> Self {
        let weights: Vec<u32> = targets.iter().map(|(_, w)| *w).collect();
        Route {
            name,
            matcher,
            filters,
            targets: targets.into_iter().map(|(t, _)| t).collect(),
            picker: SmoothWeighted::new(&weights),
            local_stats,
        }
    }

    /// The backend for the next request; `None` when the route has no backend of weight > 0.
    pub fn pick(&self) -> Option<&Target> {
        self.picker.pick().map(|i| &self.targets[i])
    }
}

#[derive(Debug)]
pub struct Vhost {
    pub name: String,
    pub routes: Box<[Route]>,
}

impl Vhost {
    /// The first route whose match succeeds.
    pub fn route(
        &self,
        method: &http::Method,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.matcher.matches(method, path, query, headers))
    }
}

/// Virtual hosts by domain: exact name first, then the longest `*.suffix`, then `*`.
#[derive(Debug, Default)]
pub struct VhostTable {
    vhosts: Vec<Vhost>,
    exact: HashMap<Box<str>, usize>,
    /// `.suffix` (from `*.suffix`), longest first.
    suffixes: Vec<(Box<str>, usize)>,
    any: Option<usize>,
}

impl VhostTable {
    /// `entries` pairs each virtual host with its (lower-case, validated unique) domains.
    pub fn new(entries: Vec<(Vec<String>, Vhost)>) -> Self {
        let mut table = VhostTable::default();
        for (i, (domains, vhost)) in entries.into_iter().enumerate() {
            for d in domains {
                if d == "*" {
                    table.any.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    table.suffixes.push((suffix.into(), i));
                } else {
                    table.exact.entry(d.into_boxed_str()).or_insert(i);
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
