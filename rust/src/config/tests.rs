use super::*;

fn snapshot(vhosts: &str) -> String {
    format!(
        r#"{{"version": 7,
            "listeners": [{{"name": "outbound", "address": "127.0.0.1:0"}}],
            "backends": [{{"name": "b1", "protocol": "http1", "endpoints": ["127.0.0.1:9001", "svc.local:80"]}},
                         {{"name": "b2", "protocol": "h2c", "lb": "round_robin", "endpoints": []}}],
            "vhosts": {vhosts}}}"#
    )
}

fn route(body: &str) -> String {
    snapshot(&format!(
        r#"[{{"name": "v", "domains": ["*"], "routes": [{{"name": "r", {body}}}]}}]"#
    ))
}

fn err(json: &str) -> String {
    parse(json).expect_err("snapshot should be refused").to_string()
}

#[test]
fn parses_the_contract_example() {
    let json = snapshot(
        r#"[{"name": "reviews", "domains": ["Reviews", "*.example.com"], "routes": [
            {"name": "default/reviews/rule/0",
             "match": {"path": {"type": "PathPrefix", "value": "/api/"}, "method": "GET",
                       "headers": [{"type": "Exact", "name": "X-Version", "value": "v2"}],
                       "query": [{"type": "RegularExpression", "name": "debug", "value": "[01]"}]},
             "filters": [
               {"type": "RequestHeaderModifier", "set": [["x-a", "1"]], "add": [["x-b", "2"]], "remove": ["x-c"]},
               {"type": "ResponseHeaderModifier", "set": [], "add": [], "remove": []},
               {"type": "URLRewrite", "hostname": null, "path": {"type": "ReplacePrefixMatch", "value": "/v2"}}],
             "backends": [{"backend": "b1", "weight": 90}, {"backend": null, "weight": 10}]}]}]"#,
    );
    let cfg = parse(&json).unwrap();
    assert_eq!(cfg.version, Some(7));
    assert_eq!(cfg.listeners[0].address, "127.0.0.1:0".parse().unwrap());
    assert_eq!(cfg.pool.connect_timeout, Duration::from_secs(2));
    assert_eq!(cfg.pool.max_idle_per_endpoint, 64);
    assert_eq!(cfg.backends[0].lb, LbKind::P2cPeakEwma);
    assert_eq!(cfg.backends[1].lb, LbKind::RoundRobin);
    assert_eq!(cfg.backends[1].protocol, Protocol::H2c);
    let v = cfg.vhosts[0].parsed();
    assert_eq!(v.domains, ["reviews", "*.example.com"]);
    let r = &v.routes[0];
    assert_eq!(r.matcher.headers[0].name, "x-version");
    assert_eq!(r.matcher.matched_prefix(), Some("/api"));
    assert_eq!(
        r.backends,
        [
            WeightedRef {
                backend: Some(0),
                weight: 90
            },
            WeightedRef {
                backend: None,
                weight: 10
            }
        ]
    );
    assert_eq!(r.filters.request_headers.len(), 1);
    assert_eq!(r.filters.response_headers.len(), 1);
    assert!(r.filters.rewrite.is_some());
}

#[test]
fn empty_object_is_an_empty_snapshot() {
    let cfg = parse("{}").unwrap();
    assert!(cfg.listeners.is_empty() && cfg.vhosts.is_empty() && cfg.version.is_none());
}

#[test]
fn refuses_what_is_not_json_or_not_the_contract() {
    assert!(err("{").starts_with("invalid snapshot: "));
    assert!(err(r#"{"vhost": []}"#).contains("unknown field `vhost`"));
    assert!(err(r#"{"backends": [{"name": "b", "protocol": "http3"}]}"#).contains("http3"));
    assert!(err(r#"{"backends": [{"name": "b", "protocol": "http1", "lb": "random"}]}"#).contains("random"));
    assert!(err(&route(r#""filters": [{"type": "Mirror"}]"#)).contains("Mirror"));
}

#[test]
fn names_the_field_of_each_mistake() {
    let cases = [
        (route(r#""match": {"path": {"type": "RegularExpression", "value": "(unclosed"}}"#),
         "vhosts[0].routes[0].match.path.value: invalid regular expression \"(unclosed\": unclosed group"),
        (route(r#""match": {"path": {"type": "PathPrefix", "value": "api"}}"#),
         "vhosts[0].routes[0].match.path.value: must start with \"/\""),
        (route(r#""match": {"headers": [{"type": "Exact", "name": "bad header", "value": "1"}]}"#),
         "vhosts[0].routes[0].match.headers[0].name: \"bad header\" is not a header name"),
        (route(r#""match": {"query": [{"type": "RegularExpression", "name": "q", "value": "*"}]}"#),
         "vhosts[0].routes[0].match.query[0].value: invalid regular expression"),
        (route(r#""match": {"method": "GE T"}"#), "vhosts[0].routes[0].match.method"),
        (route(r#""backends": [{"backend": "b1", "weight": 1000001}]"#),
         "vhosts[0].routes[0].backends[0].weight: must be between 0 and 1000000 (got 1000001)"),
        (route(r#""backends": [{"backend": "nope", "weight": 1}]"#),
         "vhosts[0].routes[0].backends[0].backend: unknown backend \"nope\""),
        (route(r#""filters": [{"type": "URLRewrite", "path": {"type": "ReplacePrefixMatch", "value": "/x"}}]"#),
         "vhosts[0].routes[0].filters[0].path.type: ReplacePrefixMatch needs a PathPrefix path match"),
        (route(r#""filters": [{"type": "RequestRedirect", "status_code": 200}]"#),
         "vhosts[0].routes[0].filters[0].status_code: must be one of 301, 302, 303, 307, 308 (got 200)"),
        (route(r#""filters": [{"type": "RequestRedirect", "scheme": "ftp"}]"#),
         "vhosts[0].routes[0].filters[0].scheme"),
        (route(r#""filters": [{"type": "RequestHeaderModifier", "set": [["x-a", "bad\nvalue"]]}]"#),
         "vhosts[0].routes[0].filters[0].set[0]"),
        (snapshot(r#"[{"name": "a", "domains": ["x"]}, {"name": "b", "domains": ["X"]}]"#),
         "vhosts[1].domains[0]: domain \"x\" is already claimed by vhost \"a\""),
        (snapshot(r#"[{"name": "a", "domains": ["bad domain"]}]"#), "vhosts[0].domains[0]"),
        (r#"{"listeners": [{"name": "a", "address": "localhost:80"}]}"#.to_owned(),
         "listeners[0].address: \"localhost:80\" is not an ip:port address"),
        (r#"{"listeners": [{"name": "a", "address": "127.0.0.1:8080"}, {"name": "b", "address": "127.0.0.1:8080"}]}"#.to_owned(),
         "listeners[1].address: 127.0.0.1:8080 is used by two listeners"),
        (r#"{"listeners": [{"name": "a", "address": "127.0.0.1:0"}, {"name": "a", "address": "127.0.0.1:0"}]}"#.to_owned(),
         "listeners[1].name: duplicate listener \"a\""),
        (r#"{"backends": [{"name": "b", "protocol": "http1", "endpoints": ["127.0.0.1"]}]}"#.to_owned(),
         "backends[0].endpoints[0]: \"127.0.0.1\" is not a host:port address"),
        (r#"{"backends": [{"name": "b", "protocol": "http1"}, {"name": "b", "protocol": "h2c"}]}"#.to_owned(),
         "backends[1].name: duplicate backend \"b\""),
        (r#"{"pool": {"connect_timeout_ms": 0}}"#.to_owned(), "pool.connect_timeout_ms: must be greater than 0"),
    ];
    for (json, want) in cases {
        let got = err(&json);
        assert!(got.contains(want), "error {got:?} should contain {want:?}");
        assert!(!got.contains('\n'), "one line: {got:?}");
    }
}

#[test]
fn regexes_are_anchored() {
    let cfg = parse(&route(
        r#""match": {"path": {"type": "RegularExpression", "value": "/v[0-9]"}}"#,
    ))
    .unwrap();
    let m = &cfg.vhosts[0].parsed().routes[0].matcher;
    let headers = http::HeaderMap::new();
    assert!(m.matches(&Method::GET, "/v1", None, &headers));
    assert!(!m.matches(&Method::GET, "/v1/x", None, &headers));
    assert!(!m.matches(&Method::GET, "/api/v1", None, &headers));
}

fn authz(authorization: &str) -> String {
    format!(r#"{{"listeners": [{{"name": "in", "address": "127.0.0.1:0", "authorization": {authorization}}}]}}"#)
}

fn authz_rule(rule: &str) -> String {
    authz(&format!(
        r#"{{"policies": [{{"name": "ns/p", "action": "ALLOW", "rules": [{rule}]}}]}}"#
    ))
}

#[test]
fn parses_the_authorization_of_the_contract() {
    let cfg = parse(&authz(
        r#"{"default_deny": false, "policies": [
             {"name": "default/allow-reads", "action": "ALLOW", "rules": [
               {"from": [{"principals": ["spiffe://td/ns/default/sa/web"], "not_principals": [],
                          "namespaces": ["default"], "not_namespaces": []}],
                "to": [{"methods": ["GET"], "not_methods": [], "paths": ["/api/*"], "not_paths": [],
                        "ports": [15006], "not_ports": [], "hosts": ["*.example.com"], "not_hosts": []}]}]}]}"#,
    ))
    .unwrap();
    let a = cfg.listeners[0].authorization.as_ref().unwrap();
    assert!(!a.default_deny);
    assert_eq!(a.policies[0].name, "default/allow-reads");
    assert_eq!(a.policies[0].rules[0].to[0].ports.any_of, [15006]);
    assert!(parse(r#"{"listeners": [{"name": "in", "address": "127.0.0.1:0"}]}"#)
        .unwrap()
        .listeners[0]
        .authorization
        .is_none());
}

#[test]
fn names_the_field_of_each_authorization_mistake() {
    let cases = [
        (authz(r#"{"policies": [{"name": "a", "action": "ALLOW"}, {"name": "a", "action": "DENY"}]}"#),
         "listeners[0].authorization.policies[1].name: duplicate policy \"a\""),
        (authz(r#"{"policies": [{"name": "", "action": "ALLOW"}]}"#),
         "listeners[0].authorization.policies[0].name: must not be empty"),
        (authz_rule(r#"{"to": [{"paths": ["/ok", "/a*b"]}]}"#),
         "listeners[0].authorization.policies[0].rules[0].to[0].paths[1]: \"/a*b\": only \"*\", a prefix"),
        (authz_rule(r#"{"to": [{"not_paths": ["api"]}]}"#),
         "listeners[0].authorization.policies[0].rules[0].to[0].not_paths[0]: must start with \"/\" or \"*\""),
        (authz_rule(r#"{"to": [{"not_ports": [0]}]}"#),
         "listeners[0].authorization.policies[0].rules[0].to[0].not_ports[0]: must be between 1 and 65535"),
        (authz_rule(r#"{}, {"from": [{"principals": ["td/ns/a/sa/b"]}]}"#),
         "listeners[0].authorization.policies[0].rules[1].from[0].principals[0]: \"td/ns/a/sa/b\" is not a spiffe:// URI"),
        (authz_rule(r#"{"from": [{"not_namespaces": ["*a*"]}]}"#),
         "listeners[0].authorization.policies[0].rules[0].from[0].not_namespaces[0]"),
        (authz_rule(r#"{"to": [{"hosts": [""]}]}"#),
         "listeners[0].authorization.policies[0].rules[0].to[0].hosts[0]: must not be empty"),
    ];
    for (json, want) in cases {
        let got = err(&json);
        assert!(got.contains(want), "error {got:?} should contain {want:?}");
    }
}

#[test]
fn refuses_unknown_authorization_fields_and_actions() {
    assert!(err(&authz(r#"{"policy": []}"#)).contains("unknown field `policy`"));
    assert!(err(&authz(r#"{"policies": [{"name": "a", "action": "CUSTOM"}]}"#)).contains("CUSTOM"));
    assert!(err(&authz_rule(r#"{"to": [{"method": ["GET"]}]}"#)).contains("unknown field `method`"));
    assert!(err(&authz_rule(r#"{"from": [{"principal": ["*"]}]}"#)).contains("unknown field `principal`"));
    assert!(err(&authz_rule(r#"{"when": []}"#)).contains("unknown field `when`"));
}
#[test]
fn resilience_fields_are_checked_naming_the_field() {
    let ok = route(
        r#""timeouts": {"request_ms": 1000, "per_try_ms": 100},
           "retry": {"attempts": 2, "on": ["5xx", "reset"], "codes": [409], "methods": ["GET", "POST"],
                     "max_body_bytes": 1024, "backoff": {"base_ms": 10, "max_ms": 100},
                     "budget": {"percent": 20, "min_per_s": 10, "window_ms": 10000}}"#,
    );
    let cfg = parse(&ok).unwrap();
    let r = &cfg.vhosts[0].parsed().routes[0];
    assert_eq!(r.timeouts.per_try, Some(Duration::from_millis(100)));
    assert_eq!(r.retry.attempts, 2);
    assert!(r.retry.retries_method(&Method::POST));
    for (body, expected) in [
        (
            r#""retry": {"on": ["sometimes"]}"#,
            "vhosts[0].routes[0].retry.on[0]: \"sometimes\" is not one of",
        ),
        (
            r#""retry": {"codes": [200]}"#,
            "vhosts[0].routes[0].retry.codes[0]: must be a 4xx or 5xx status",
        ),
        (
            r#""retry": {"attempts": 99}"#,
            "vhosts[0].routes[0].retry.attempts: must be at most 20",
        ),
        (
            r#""retry": {"methods": ["G T"]}"#,
            "vhosts[0].routes[0].retry.methods[0]",
        ),
        (
            r#""retry": {"backoff": {"base_ms": 10, "max_ms": 1}}"#,
            "vhosts[0].routes[0].retry.backoff.max_ms",
        ),
        (
            r#""retry": {"budget": {"window_ms": 0}}"#,
            "vhosts[0].routes[0].retry.budget.window_ms",
        ),
        (
            r#""timeouts": {"request_ms": 0}"#,
            "vhosts[0].routes[0].timeouts.request_ms",
        ),
        (r#""retry": {"tries": 1}"#, "unknown field `tries`"),
        (
            r#""filters": [{"type": "RequestMirror", "backend": "nope"}]"#,
            "vhosts[0].routes[0].filters[0].backend: unknown backend \"nope\"",
        ),
        (
            r#""filters": [{"type": "RequestMirror", "backend": "b1", "percent": 101}]"#,
            "vhosts[0].routes[0].filters[0].percent: must be between 0 and 100",
        ),
        (
            r#""filters": [{"type": "Fault", "abort": {"percent": 5, "status": 99}}]"#,
            "vhosts[0].routes[0].filters[0].abort.status",
        ),
        (
            r#""filters": [{"type": "Fault", "delay": {"percent": -1, "ms": 5}}]"#,
            "vhosts[0].routes[0].filters[0].delay.percent",
        ),
    ] {
        let e = err(&route(body));
        assert!(e.contains(expected), "{e}");
    }
}

#[test]
fn backend_errors_name_the_field_path_inside_the_backend() {
    let ok = r#"{"name": "a", "protocol": "http1"}"#;
    let cases = [
        (
            r#"{"name": "b", "protocol": "http3"}"#,
            "backends[1].protocol: unknown variant `http3`",
        ),
        (
            r#"{"name": "b", "protocol": "http1", "bogus": 1}"#,
            "backends[1].bogus: unknown field `bogus`",
        ),
        (r#"{"name": "b"}"#, "backends[1]: missing field `protocol`"),
        (
            r#"{"name": "b", "protocol": "http1", "endpoints": [1]}"#,
            "backends[1].endpoints[0]: invalid type",
        ),
        (
            r#"{"name": "b", "protocol": "http1", "limits": {"max_requests": "x"}}"#,
            "backends[1].limits.max_requests",
        ),
        (
            r#"{"name": "", "protocol": "http1"}"#,
            "backends[1].name: must not be empty",
        ),
    ];
    for (backend, want) in cases {
        let got = err(&format!(r#"{{"backends": [{ok}, {backend}]}}"#));
        assert!(got.contains(want), "error {got:?} should contain {want:?}");
        assert!(!got.contains('\n'), "one line: {got:?}");
    }
}

#[test]
fn a_backend_with_the_same_text_and_pool_is_shared_not_parsed_again() {
    let snap = |pool: &str, a: &str| {
        format!(
            r#"{{"pool": {{"connect_timeout_ms": {pool}}}, "backends": [
                {{"name": "a", "protocol": "http1", "endpoints": [{a}]}},
                {{"name": "b", "protocol": "h2c", "endpoints": ["127.0.0.1:2"]}}]}}"#
        )
    };
    let live = parse(&snap("100", r#""127.0.0.1:1""#)).unwrap();
    let reusable = Reusable::new(live.backends.iter(), std::iter::empty());
    let next = parse_reusing(&snap("100", r#""127.0.0.1:3""#), &reusable).unwrap();
    assert!(
        !Arc::ptr_eq(&live.backends[0], &next.backends[0]),
        "changed text: parsed"
    );
    assert_eq!(next.backends[0].endpoints, ["127.0.0.1:3"]);
    assert!(Arc::ptr_eq(&live.backends[1], &next.backends[1]), "same text: shared");
    // The snapshot's pool settings are part of a backend's config.
    let other_pool = parse_reusing(&snap("200", r#""127.0.0.1:1""#), &reusable).unwrap();
    assert!(!Arc::ptr_eq(&live.backends[1], &other_pool.backends[1]));
    assert_eq!(other_pool.backends[1].pool.connect_timeout, Duration::from_millis(200));
    // A shared backend still counts for duplicate names.
    let dup = r#"{"pool": {"connect_timeout_ms": 100}, "backends": [
                {"name": "b", "protocol": "h2c", "endpoints": ["127.0.0.1:2"]},
                {"name": "b", "protocol": "h2c", "endpoints": ["127.0.0.1:2"]}]}"#;
    let got = parse_reusing(dup, &reusable).unwrap_err().to_string();
    assert!(got.contains("backends[1].name: duplicate backend \"b\""), "{got}");
}

#[test]
fn a_reused_vhost_still_claims_its_domains() {
    let vhost = |name: &str, domain: &str| {
        format!(
            r#"{{"name": "{name}", "domains": ["{domain}"], "routes": [{{"name": "r", "backends": [{{"backend": "b1", "weight": 1}}]}}]}}"#
        )
    };
    let live = crate::snapshot::Snapshot::compile(
        parse(&snapshot(&format!("[{}]", vhost("a", "x")))).unwrap(),
        1,
        &crate::stats::Stats::default(),
        &crate::pool::Upstreams::default(),
        &[],
    );
    let backends = parse(&snapshot("[]")).unwrap().backends;
    let reusable = Reusable::new(backends.iter(), live.snapshot.live.iter());
    // The reused vhost first, then after a new one claiming its domain (then it is parsed).
    for (first, second) in [(("a", "x"), ("c", "X")), (("c", "x"), ("a", "x"))] {
        let json = snapshot(&format!("[{}, {}]", vhost(first.0, first.1), vhost(second.0, second.1)));
        let got = parse_reusing(&json, &reusable).unwrap_err().to_string();
        let want = format!(
            "vhosts[1].domains[0]: domain \"x\" is already claimed by vhost \"{}\"",
            first.0
        );
        assert!(got.contains(&want), "{got}");
    }
}
