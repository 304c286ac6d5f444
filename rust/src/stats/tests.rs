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
    let ep = upstreams.endpoint(&backend, "127.0.0.1:1", crate::config::Protocol::Http1, pool, None);
    ep.stats.connections_open.store(2, Relaxed);
    let v: serde_json::Value = serde_json::from_str(&stats.render(4, &[ep])).unwrap();
    assert_eq!(v["version"], 4);
    assert_eq!(v["latency_bounds_ms"].as_array().unwrap().len(), 28);
    let routes = v["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "unused counters are left out: {routes:?}");
    let route = &routes[0];
    assert_eq!(route["route"], "default/r/rule/0");
    assert_eq!(route["status"], serde_json::json!({"2xx": 3, "5xx": 1}));
    let buckets: Vec<u64> = serde_json::from_value(route["latency"]["buckets"].clone()).unwrap();
    let mut want = [0u64; 28];
    (want[0], want[1], want[9]) = (1, 1, 1); // 0.4 ms, 1 ms, 20 ms (inclusive)
    assert_eq!(buckets, want);
    assert_eq!(route["latency"]["inf"], 1);
    assert_eq!(route["latency"]["count"], 4);
    assert!((route["latency"]["sum_ms"].as_f64().unwrap() - 11021.4).abs() < 1e-6);
    assert_eq!(v["upstream"][0]["connections_open"], 2);
    assert_eq!(v["upstream"][0]["ejected"], false);
    assert_eq!(v["connections"], serde_json::json!({"active": 0, "total": 0}));
}

fn bucket_of(us: u64) -> usize {
    LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS)
}

#[test]
fn a_doubling_from_1ms_to_10s_moves_two_buckets() {
    for (ms, us) in LATENCY_BOUNDS_MS.iter().zip(LATENCY_BOUNDS_US) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let from_ms = (ms * 1000.0).round() as u64;
        assert_eq!(from_ms, us, "the two tables agree");
    }
    // Every latency x in [1 ms, 5 s] and its double 2x land in different buckets.
    let mut us = 1_000u64;
    while us <= 5_000_000 {
        assert_ne!(
            bucket_of(us),
            bucket_of(2 * us),
            "{us} us and its double share a bucket"
        );
        us += us / 200 + 1;
    }
    // The case of issue 7: 11 ms and 22 ms used to share the 10..25 ms bucket.
    assert_eq!(bucket_of(22_000), bucket_of(11_000) + 2);
}
