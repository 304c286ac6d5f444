use super::*;
use crate::config;
use crate::pool::Upstreams;
use crate::snapshot::Snapshot;
use crate::stats::Stats;
use http::{HeaderMap, Method};
use std::sync::Arc;

fn table(domains: &[&[&str]]) -> VhostTable {
    let domains: Vec<Vec<String>> = domains
        .iter()
        .map(|d| d.iter().map(std::string::ToString::to_string).collect())
        .collect();
    VhostTable::new(
        domains
            .iter()
            .enumerate()
            .map(|(i, d)| (d.as_slice(), Arc::new(Vhost::new(format!("v{i}"), Box::new([])))))
            .collect(),
    )
}

fn pick<'a>(t: &'a VhostTable, host: &str) -> Option<&'a str> {
    t.select(host).map(|v| v.name.as_str())
}

#[test]
fn vhost_exact_then_longest_suffix_then_any() {
    let t = table(&[
        &["*"],
        &["*.example.com"],
        &["*.api.example.com"],
        &["www.example.com", "reviews"],
    ]);
    assert_eq!(pick(&t, "www.example.com"), Some("v3"));
    assert_eq!(pick(&t, "reviews"), Some("v3"));
    assert_eq!(pick(&t, "a.api.example.com"), Some("v2"));
    assert_eq!(pick(&t, "x.y.example.com"), Some("v1"));
    assert_eq!(
        pick(&t, "example.com"),
        Some("v0"),
        "a wildcard needs at least one more label"
    );
    assert_eq!(pick(&t, "other"), Some("v0"));
    assert_eq!(pick(&t, ""), Some("v0"));
}

#[test]
fn vhost_is_case_insensitive_and_needs_a_match() {
    let t = table(&[&["reviews.default.svc.cluster.local"], &["*.Example.com"]]);
    assert_eq!(pick(&t, "Reviews.Default.SVC.cluster.local"), Some("v0"));
    assert_eq!(pick(&t, "reviews.default.svc.cluster.local."), Some("v0"));
    assert_eq!(
        pick(&t, "WWW.EXAMPLE.COM"),
        None,
        "domains come lower-cased from config::parse"
    );
    assert_eq!(pick(&t, "unknown"), None);
}

pub(super) fn compiled(routes: &str) -> Snapshot {
    let json = format!(
        r#"{{"backends": [{{"name": "a", "protocol": "http1", "endpoints": ["127.0.0.1:1"]}},
                          {{"name": "b", "protocol": "http1", "endpoints": ["127.0.0.1:2"]}}],
            "vhosts": [{{"name": "v", "domains": ["*"], "routes": {routes}}}]}}"#
    );
    Snapshot::compile(
        config::parse(&json).unwrap(),
        1,
        &Stats::default(),
        &Upstreams::default(),
        &[],
    )
    .snapshot
}

fn route_for(s: &Snapshot, method: &Method, path: &str, headers: &HeaderMap) -> Option<String> {
    s.vhosts
        .select("x")
        .unwrap()
        .route(method, path, None, headers)
        .map(|r| r.name.to_string())
}

#[test]
fn first_matching_route_wins_in_list_order() {
    let s = compiled(
        r#"[{"name": "prefix", "match": {"path": {"type": "PathPrefix", "value": "/api"}}, "backends": []},
            {"name": "exact", "match": {"path": {"type": "Exact", "value": "/api/v1"}}, "backends": []},
            {"name": "post", "match": {"method": "POST"}, "backends": []},
            {"name": "rest", "backends": []}]"#,
    );
    let h = HeaderMap::new();
    // The Exact route would be more specific, but Python already ordered the list: first wins.
    assert_eq!(route_for(&s, &Method::GET, "/api/v1", &h).as_deref(), Some("prefix"));
    assert_eq!(route_for(&s, &Method::POST, "/other", &h).as_deref(), Some("post"));
    assert_eq!(route_for(&s, &Method::GET, "/other", &h).as_deref(), Some("rest"));
}

#[test]
fn no_route_is_none() {
    let s = compiled(r#"[{"name": "only", "match": {"path": {"type": "Exact", "value": "/x"}}, "backends": []}]"#);
    assert_eq!(route_for(&s, &Method::GET, "/y", &HeaderMap::new()), None);
}

#[test]
fn weighted_targets_and_null_backend() {
    let s = compiled(
        r#"[{"name": "r", "backends": [{"backend": "a", "weight": 3}, {"backend": null, "weight": 1},
                                        {"backend": "b", "weight": 0}]}]"#,
    );
    let r = s
        .vhosts
        .select("x")
        .unwrap()
        .route(&Method::GET, "/", None, &HeaderMap::new())
        .unwrap();
    let mut counts = [0; 3];
    for _ in 0..400 {
        let t = r.pick().unwrap();
        let i = match t.backend.as_deref().map(|b| &*b.name) {
            Some("a") => 0,
            None => 1,
            Some(_) => 2,
        };
        counts[i] += 1;
    }
    assert_eq!(counts, [300, 100, 0]);
    let empty = compiled(r#"[{"name": "r", "backends": [{"backend": "a", "weight": 0}]}]"#);
    let r = empty
        .vhosts
        .select("x")
        .unwrap()
        .route(&Method::GET, "/", None, &HeaderMap::new())
        .unwrap();
    assert!(r.pick().is_none(), "all weights 0: no backend (the engine answers 500)");
}

/// The index must pick what a scan of every route in order picks.
#[test]
fn indexed_lookup_equals_a_linear_scan() {
    let kinds = [
        r#"{"type": "PathPrefix", "value": "/"}"#,
        r#"{"type": "PathPrefix", "value": "/a"}"#,
        r#"{"type": "PathPrefix", "value": "/a/"}"#,
        r#"{"type": "PathPrefix", "value": "/a/b"}"#,
        r#"{"type": "PathPrefix", "value": "/a//b"}"#,
        r#"{"type": "PathPrefix", "value": "/ab"}"#,
        r#"{"type": "Exact", "value": "/a/b"}"#,
        r#"{"type": "Exact", "value": "/"}"#,
        r#"{"type": "Exact", "value": "/a/"}"#,
        r#"{"type": "RegularExpression", "value": "/a/.*"}"#,
        r#"{"type": "RegularExpression", "value": "/[a-z]+"}"#,
    ];
    let mut routes = Vec::new();
    // Every kind twice, once restricted to POST, in an order that interleaves them.
    for (n, k) in kinds.iter().chain(kinds.iter().rev()).enumerate() {
        let method = if n % 3 == 1 { r#""POST""# } else { "null" };
        routes.push(format!(
            r#"{{"name": "r{n}", "match": {{"path": {k}, "method": {method}}}, "backends": []}}"#
        ));
        if n == 7 {
            routes.push(format!(r#"{{"name": "r{n}-any", "backends": []}}"#));
        }
    }
    let s = compiled(&format!("[{}]", routes.join(",")));
    let vhost = s.vhosts.select("x").unwrap();
    let h = HeaderMap::new();
    let paths = [
        "/", "/a", "/a/", "/a/b", "/a/b/", "/a/b/c", "/a//b", "/a//b/c", "/ab", "/abc", "/b", "//", "*", "", "/a/bc",
    ];
    for method in [Method::GET, Method::POST] {
        for path in paths {
            let scan = vhost
                .routes
                .iter()
                .find(|r| r.matcher.matches(&method, path, None, &h))
                .map(|r| r.name.to_string());
            assert_eq!(route_for(&s, &method, path, &h), scan, "{method} {path}");
        }
    }
}

#[test]
fn many_prefix_routes_fall_through_to_the_catch_all() {
    let mut routes: Vec<String> = (0..2000)
        .map(|i| {
            format!(
                r#"{{"name": "r{i}", "match": {{"path": {{"type": "PathPrefix", "value": "/r{i}"}}}}, "backends": []}}"#
            )
        })
        .collect();
    routes.push(r#"{"name": "all", "backends": []}"#.into());
    let s = compiled(&format!("[{}]", routes.join(",")));
    let h = HeaderMap::new();
    assert_eq!(route_for(&s, &Method::GET, "/", &h).as_deref(), Some("all"));
    assert_eq!(route_for(&s, &Method::GET, "/r1999/x", &h).as_deref(), Some("r1999"));
    assert_eq!(route_for(&s, &Method::GET, "/r19999", &h).as_deref(), Some("all"));
}
