//! A new snapshot reuses what it keeps of the live one: a backend whose config is unchanged
//! whole, and the endpoints (pools, load, outlier state) a changed backend keeps.

use std::sync::Arc;

use super::*;

/// Backends `rr` (round robin over `a`, `b`) and `other` (`other_endpoints`), a route to each.
fn two_backends(a: SocketAddr, b: SocketAddr, other_endpoints: &str) -> String {
    format!(
        r#"{{"listeners": [{{"name": "l", "address": "127.0.0.1:0"}}],
            "backends": [
              {{"name": "rr", "protocol": "http1", "lb": "round_robin", "endpoints": ["{a}", "{b}"]}},
              {{"name": "other", "protocol": "http1", "endpoints": [{other_endpoints}]}}],
            "vhosts": [{{"name": "v", "domains": ["*"], "routes": [
              {{"name": "other", "match": {{"path": {{"type": "PathPrefix", "value": "/other"}}}},
                "backends": [{{"backend": "other", "weight": 1}}]}},
              {{"name": "rr", "backends": [{{"backend": "rr", "weight": 1}}]}}]}}]}}"#
    )
}

fn backend(engine: &Engine, name: &str) -> Arc<crate::balance::Backend> {
    engine.upstreams.live()[name].1.clone()
}

#[test]
fn an_unchanged_backend_is_reused_whole_across_an_unrelated_change() {
    run(async {
        let a = upstream("a", false).await;
        let b = upstream("b", false).await;
        let engine = Engine::new(1).unwrap();
        engine.apply(&two_backends(a, b, &format!("\"{a}\""))).unwrap();
        let proxy = engine.listeners()[0].1;
        let before = backend(&engine, "rr");
        assert_eq!(h1(proxy, get("x", "/")).await.field("upstream"), "a");
        assert_eq!(h1(proxy, get("x", "/other")).await.field("upstream"), "a");
        // Only `other` changes (one EndpointSlice): `rr` is the same object, round robin included.
        engine.apply(&two_backends(a, b, &format!("\"{b}\""))).unwrap();
        assert!(
            Arc::ptr_eq(&before, &backend(&engine, "rr")),
            "unchanged backend rebuilt"
        );
        assert_eq!(
            h1(proxy, get("x", "/")).await.field("upstream"),
            "b",
            "round robin went on where it was (a rebuilt backend starts over at a)"
        );
        assert_eq!(h1(proxy, get("x", "/other")).await.field("upstream"), "b");
        // The pooled connection to `a` survived: the third request reuses it.
        assert_eq!(h1(proxy, get("x", "/")).await.field("upstream"), "a");
        assert_eq!(open_connections(&engine, "rr"), 2, "one connection per endpoint");
        let stats: serde_json::Value = serde_json::from_str(&engine.stats_json()).unwrap();
        let other: Vec<_> = stats["upstream"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["backend"] == "other")
            .map(|u| u["endpoint"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            other,
            [b.to_string()],
            "the endpoint `other` dropped is gone from the stats"
        );
    });
}

#[test]
fn a_changed_backend_keeps_the_endpoints_it_keeps_with_the_same_settings() {
    run(async {
        let engine = Engine::new(1).unwrap();
        let eps = |list: &[&str]| list.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
        let snap =
            |other: &str, protocol: &str| one_route(&format!(r#""protocol": "{protocol}", "endpoints": [{other}]"#));
        engine
            .apply(&snap(&eps(&["127.0.0.1:1", "127.0.0.1:2"]), "http1"))
            .unwrap();
        let first = backend(&engine, "b");
        engine
            .apply(&snap(&eps(&["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:3"]), "http1"))
            .unwrap();
        let second = backend(&engine, "b");
        assert!(!Arc::ptr_eq(&first, &second), "a changed backend is rebuilt");
        assert!(
            Arc::ptr_eq(&first.endpoints[1], &second.endpoints[0]),
            "kept endpoint reused"
        );
        assert!(
            Arc::ptr_eq(&second.endpoints[1], &second.endpoints[2]),
            "an address listed twice: one endpoint"
        );
        let listed: Vec<_> = engine.upstreams.stats().iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(listed, ["127.0.0.1:2", "127.0.0.1:3"]);
        // Other pool settings (here the protocol): every endpoint is new.
        engine
            .apply(&snap(&eps(&["127.0.0.1:2", "127.0.0.1:3"]), "h2c"))
            .unwrap();
        let third = backend(&engine, "b");
        assert!(third
            .endpoints
            .iter()
            .all(|e| !second.endpoints.iter().any(|s| Arc::ptr_eq(e, s))));
        // A refused snapshot changes nothing.
        engine.apply(&snap("\"nope\"", "http1")).unwrap_err();
        assert!(Arc::ptr_eq(&third, &backend(&engine, "b")));
    });
}

/// Vhost `s` splits 1:1 between backends `ba` (`a`) and `bb` (`b`); vhost `o` routes to
/// `other` (`other_endpoint`).
fn two_vhosts(a: SocketAddr, b: SocketAddr, other_endpoint: SocketAddr) -> String {
    format!(
        r#"{{"listeners": [{{"name": "l", "address": "127.0.0.1:0"}}],
            "backends": [
              {{"name": "ba", "protocol": "http1", "endpoints": ["{a}"]}},
              {{"name": "bb", "protocol": "http1", "endpoints": ["{b}"]}},
              {{"name": "other", "protocol": "http1", "endpoints": ["{other_endpoint}"]}}],
            "vhosts": [
              {{"name": "s", "domains": ["s"], "routes": [{{"name": "split",
                "backends": [{{"backend": "ba", "weight": 1}}, {{"backend": "bb", "weight": 1}}]}}]}},
              {{"name": "o", "domains": ["o"], "routes": [{{"name": "o", "backends": [{{"backend": "other", "weight": 1}}]}}]}}]}}"#
    )
}

fn vhost(engine: &Engine, name: &str) -> Arc<crate::route::Vhost> {
    let snapshot = engine.proxy.snapshot.load();
    let live = snapshot.live.iter().find(|v| v.vhost.name == name).unwrap();
    live.vhost.clone()
}

#[test]
fn an_unchanged_vhost_is_reused_whole_and_a_vhost_whose_backend_changed_is_not() {
    run(async {
        let a = upstream("a", false).await;
        let b = upstream("b", false).await;
        let engine = Engine::new(1).unwrap();
        engine.apply(&two_vhosts(a, b, a)).unwrap();
        let proxy = engine.listeners()[0].1;
        let (s, o) = (vhost(&engine, "s"), vhost(&engine, "o"));
        let first = h1(proxy, get("s", "/")).await.field("upstream").to_owned();
        assert_eq!(h1(proxy, get("o", "/")).await.field("upstream"), "a");
        engine.apply(&two_vhosts(a, b, b)).unwrap();
        assert!(Arc::ptr_eq(&s, &vhost(&engine, "s")), "unchanged vhost rebuilt");
        assert!(
            !Arc::ptr_eq(&o, &vhost(&engine, "o")),
            "its backend changed: recompiled"
        );
        let second = h1(proxy, get("s", "/")).await.field("upstream").to_owned();
        assert_ne!(
            first, second,
            "the 1:1 split went on where it was (a rebuilt route starts over)"
        );
        assert_eq!(
            h1(proxy, get("o", "/")).await.field("upstream"),
            "b",
            "the new endpoint serves"
        );
        // The same text naming a backend that is gone: refused, naming the field.
        let gone = two_vhosts(a, b, b).replace(
            &format!(r#"{{"name": "bb", "protocol": "http1", "endpoints": ["{b}"]}},"#),
            "",
        );
        let err = engine.apply(&gone).unwrap_err().to_string();
        assert!(
            err.contains("vhosts[0].routes[0].backends[1].backend: unknown backend \"bb\""),
            "{err}"
        );
        assert!(
            Arc::ptr_eq(&s, &vhost(&engine, "s")),
            "a refused snapshot changes nothing"
        );
    });
}
