use super::*;

#[test]
fn records_classes_and_buckets_and_renders_the_contract() {
    let stats = Stats::default();
    let r = stats.route("default/r/rule/0", "default/b:80");
    assert!(
        Arc::ptr_eq(&r, &stats.route("default/r/rule/0", "default/b:80")),
        "one counter per pair"
    );
    r.record(StatusCode::OK, Duration::from_micros(400));
    r.record(StatusCode::OK, Duration::from_millis(1));
    r.record(StatusCode::BAD_GATEWAY, Duration::from_millis(20));
    r.record(StatusCode::OK, Duration::from_secs(11));
    let pool = crate::config::PoolConfig {
        idle_timeout: Duration::from_secs(1),
        max_idle_per_endpoint: 1,
        connect_timeout: Duration::from_secs(1),
        max_connections: None,
        max_pending: None,
    };
    let upstreams = crate::pool::Upstreams::default();
    let backend: Arc<str> = Arc::from("default/b:80");
    let ep = upstreams.endpoint(
        &backend,
        "127.0.0.1:1",
        crate::config::Protocol::Http1,
        pool,
        None,
        &mut std::collections::HashSet::new(),
    );
    ep.stats.connections_open.store(2, Relaxed);
    let v: serde_json::Value = serde_json::from_str(&stats.render(4, &[ep])).unwrap();
    assert_eq!(v["version"], 4);
    assert_eq!(v["latency_bounds_ms"].as_array().unwrap().len(), 14);
    let routes = v["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "unused counters are left out: {routes:?}");
    let route = &routes[0];
    assert_eq!(route["route"], "default/r/rule/0");
    assert_eq!(route["status"], serde_json::json!({"2xx": 3, "5xx": 1}));
    let buckets: Vec<u64> = serde_json::from_value(route["latency"]["buckets"].clone()).unwrap();
    assert_eq!(buckets, [1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(route["latency"]["inf"], 1);
    assert_eq!(route["latency"]["count"], 4);
    assert!((route["latency"]["sum_ms"].as_f64().unwrap() - 11021.4).abs() < 1e-6);
    assert_eq!(v["upstream"][0]["connections_open"], 2);
    assert_eq!(v["upstream"][0]["ejected"], false);
    assert_eq!(v["connections"], serde_json::json!({"active": 0, "total": 0}));
}
