//! Timeouts and retries (docs/engine-snapshot.md "Resilience") against misbehaving upstreams
//! on loopback that count what they receive.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::*;

#[derive(Clone, Copy)]
enum Behaviour {
    Ok,
    Fail(u16),
    Slow(u64),
}

/// A hyper HTTP/1.1 upstream that behaves as told and counts requests (and their body bytes).
async fn counting(name: &'static str, behaviour: Behaviour) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (hits, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, b) = (hits.clone(), bytes.clone());
    let addr = crate::testutil::serve(false, move |req: Request<Incoming>| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            h.fetch_add(1, Relaxed);
            let body = req.into_body().collect().await.map(|c| c.to_bytes().len()).unwrap_or(0);
            b.fetch_add(body, Relaxed);
            let status = match behaviour {
                Behaviour::Ok => 200,
                Behaviour::Fail(code) => code,
                Behaviour::Slow(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    200
                }
            };
            let mut resp = Response::new(full(name));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(resp)
        }
    })
    .await;
    (addr, hits, bytes)
}

/// One catch-all route `r` to backend `b` (round robin over `endpoints`) with `policy` (JSON
/// members of the route object, e.g. `"retry": {...}`).
fn resilient(endpoints: &[SocketAddr], policy: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"{{"listeners": [{{"name": "l", "address": "127.0.0.1:0"}}],
            "backends": [{{"name": "b", "protocol": "http1", "lb": "round_robin", "endpoints": [{}]}}],
            "vhosts": [{{"name": "v", "domains": ["*"], "routes": [
              {{"name": "r", "backends": [{{"backend": "b", "weight": 1}}] {}{policy}}}]}}]}}"#,
        eps.join(", "),
        if policy.is_empty() { "" } else { ", " },
    )
}

fn resilience(engine: &Engine) -> serde_json::Value {
    let stats: serde_json::Value = serde_json::from_str(&engine.stats_json()).unwrap();
    stats["resilience"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "r")
        .cloned()
        .unwrap_or_default()
}

fn request(method: Method, body: usize) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/")
        .header("host", "x")
        .body(Full::new(Bytes::from(vec![b'x'; body])))
        .unwrap()
}

const RETRY_5XX: &str = r#""retry": {"attempts": 2, "on": ["5xx"], "backoff": {"base_ms": 1, "max_ms": 5}}"#;

#[test]
fn a_503_endpoint_is_retried_on_another_endpoint() {
    run(async {
        let (bad, bad_hits, _) = counting("bad", Behaviour::Fail(503)).await;
        let (a, _, _) = counting("a", Behaviour::Ok).await;
        let (b, _, _) = counting("b", Behaviour::Ok).await;
        for (policy, expect_errors) in [("", true), (RETRY_5XX, false)] {
            let engine = Engine::new(1).unwrap();
            engine.apply(&resilient(&[bad, a, b], policy)).unwrap();
            let proxy = engine.listeners()[0].1;
            let bad_before = bad_hits.load(Relaxed);
            let mut errors = 0;
            for _ in 0..60 {
                let answer = h1(proxy, get("x", "/")).await;
                if answer.status != 200 {
                    errors += 1;
                }
            }
            assert_eq!(errors > 0, expect_errors, "policy {policy:?}: {errors} errors");
            if !expect_errors {
                // Every try at the bad endpoint was retried once, never on it again.
                let bad = bad_hits.load(Relaxed) - bad_before;
                assert!(bad >= 20, "{bad}");
                assert_eq!(resilience(&engine)["retries"]["5xx"], bad as u64);
            }
        }
    });
}

#[test]
fn post_is_not_retried_unless_the_route_marks_it_and_bodies_over_the_limit_never_are() {
    run(async {
        let (bad, hits, bytes) = counting("bad", Behaviour::Fail(503)).await;
        let cases = [
            (RETRY_5XX.to_owned(), Method::POST, 10, 1),
            (
                RETRY_5XX.replace("\"on\"", "\"methods\": [\"POST\"], \"on\""),
                Method::POST,
                10,
                3,
            ),
            (RETRY_5XX.to_owned(), Method::PUT, 10, 3),
            (RETRY_5XX.to_owned(), Method::PUT, 64 * 1024, 3),
            (RETRY_5XX.to_owned(), Method::PUT, 64 * 1024 + 1, 1),
            (RETRY_5XX.to_owned(), Method::PUT, 1024 * 1024, 1),
        ];
        for (policy, method, size, tries) in cases {
            let engine = Engine::new(1).unwrap();
            engine.apply(&resilient(&[bad], &policy)).unwrap();
            let (h0, b0) = (hits.load(Relaxed), bytes.load(Relaxed));
            let answer = h1(engine.listeners()[0].1, request(method.clone(), size)).await;
            assert_eq!(answer.status, 503);
            assert_eq!(hits.load(Relaxed) - h0, tries, "{method} of {size} bytes with {policy}");
            assert_eq!(
                bytes.load(Relaxed) - b0,
                tries * size,
                "every try carried the whole body"
            );
        }
    });
}

/// An upstream (HTTP/1.1, or h2c with `h2`) that records each request's method, target, the
/// client's `x-probe` field and body, and answers 503 to the first `fail` requests, then 200.
async fn recording(h2: bool, fail: usize) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let addr = crate::testutil::serve(h2, move |req: Request<Incoming>| {
        let s = s.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let probe = parts.headers.get("x-probe").map(|v| v.to_str().unwrap().to_owned());
            let line = format!(
                "{} {} {probe:?} {}",
                parts.method,
                parts.uri.path(),
                String::from_utf8_lossy(&body)
            );
            let n = {
                let mut seen = s.lock().unwrap();
                seen.push(line);
                seen.len()
            };
            let mut resp = Response::new(full("r"));
            *resp.status_mut() = if n <= fail {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            Ok::<_, Infallible>(resp)
        }
    })
    .await;
    (addr, seen)
}

/// A retried request is the same request on every try: on the fast path the upstream client
/// borrows the request and sends it again as it is (no copy is made), on hyper's h2c client
/// it is consumed, so a copy is made before the first try.
#[test]
fn every_try_of_a_retried_request_carries_the_same_head_and_body() {
    run(async {
        for h2c in [false, true] {
            let (up, seen) = recording(h2c, 2).await;
            let engine = Engine::new(1).unwrap();
            let mut config = resilient(&[up], RETRY_5XX);
            if h2c {
                config = config.replace(r#""protocol": "http1""#, r#""protocol": "h2c""#);
            }
            engine.apply(&config).unwrap();
            let req = Request::builder()
                .method(Method::PUT)
                .uri("/put/here?q=1")
                .header("host", "x")
                .header("x-probe", "p-1")
                .body(Full::new(Bytes::from_static(b"the body")))
                .unwrap();
            let answer = h1(engine.listeners()[0].1, req).await;
            assert_eq!(answer.status, 200, "h2c {h2c}");
            let seen = seen.lock().unwrap().clone();
            let one = r#"PUT /put/here Some("p-1") the body"#;
            assert_eq!(seen, vec![one; 3], "h2c {h2c}");
            assert_eq!(resilience(&engine)["retries"]["5xx"], 2, "h2c {h2c}");
        }
    });
}

#[test]
fn a_slow_endpoint_trips_the_per_try_timeout_and_the_retry_lands_elsewhere() {
    run(async {
        let (slow, slow_hits, _) = counting("slow", Behaviour::Slow(3000)).await;
        let (fast, _, _) = counting("fast", Behaviour::Ok).await;
        let engine = Engine::new(1).unwrap();
        let policy = r#""timeouts": {"per_try_ms": 100}, "retry": {"attempts": 1, "on": ["gateway-error"], "backoff": {"base_ms": 1, "max_ms": 1}}"#;
        engine.apply(&resilient(&[slow, fast], policy)).unwrap();
        let proxy = engine.listeners()[0].1;
        for _ in 0..4 {
            let answer = h1(proxy, get("x", "/")).await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.body, "fast");
        }
        let slow = slow_hits.load(Relaxed) as u64;
        assert!(slow >= 2, "{slow}");
        let r = resilience(&engine);
        assert_eq!(r["timeouts"]["per_try"], slow);
        assert_eq!(r["retries"]["gateway-error"], slow);
    });
}

#[test]
fn request_timeout_answers_504_before_the_upstream_does() {
    run(async {
        let (slow, _, _) = counting("slow", Behaviour::Slow(3000)).await;
        let engine = Engine::new(1).unwrap();
        engine
            .apply(&resilient(&[slow], r#""timeouts": {"request_ms": 200}"#))
            .unwrap();
        let started = std::time::Instant::now();
        let answer = h1(engine.listeners()[0].1, get("x", "/")).await;
        assert_eq!(answer.status, 504);
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(resilience(&engine)["timeouts"]["request"], 1);
    });
}

#[test]
fn retries_stay_within_the_budget_when_every_endpoint_fails() {
    run(async {
        let (a, a_hits, _) = counting("a", Behaviour::Fail(503)).await;
        let (b, b_hits, _) = counting("b", Behaviour::Fail(503)).await;
        let engine = Engine::new(1).unwrap();
        let policy = r#""retry": {"attempts": 3, "on": ["5xx"], "backoff": {"base_ms": 0, "max_ms": 0},
                                  "budget": {"percent": 20, "min_per_s": 1, "window_ms": 10000}}"#;
        engine.apply(&resilient(&[a, b], policy)).unwrap();
        let proxy = engine.listeners()[0].1;
        for _ in 0..200 {
            assert_eq!(h1(proxy, get("x", "/")).await.status, 503);
        }
        // 200 requests; retries allowed: 1/s * 10 s + 20 % of 200 = 50 (without a budget: 600).
        let upstream = a_hits.load(Relaxed) + b_hits.load(Relaxed);
        assert!((200..=250).contains(&upstream), "{upstream} tries at the upstreams");
        let r = resilience(&engine);
        assert!(r["budget_exhausted"].as_u64().unwrap() > 100, "{r}");
        assert_eq!(r["retries"]["5xx"].as_u64().unwrap() as usize, upstream - 200);
    });
}

/// An upstream that reads each request, writes the start of a response head and resets the
/// connection (SO_LINGER 0) on every other connection; the others answer 200.
async fn resetting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resets = Arc::new(AtomicUsize::new(0));
    let counted = resets.clone();
    tokio::spawn(async move {
        for n in 0.. {
            let (mut stream, _) = listener.accept().await.unwrap();
            let counted = counted.clone();
            tokio::spawn(async move {
                loop {
                    read_head(&mut stream).await;
                    if n % 2 == 0 {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-le").await;
                        #[allow(deprecated)] // blocks on drop only with unsent data; a reset is the point
                        let _ = stream.set_linger(Some(Duration::ZERO));
                        counted.fetch_add(1, Relaxed);
                        return;
                    }
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, resets)
}

#[test]
fn a_reset_mid_response_is_retried_for_idempotent_requests_only() {
    run(async {
        let (up, resets) = resetting_upstream().await;
        let engine = Engine::new(1).unwrap();
        engine.apply(&resilient(&[up], "")).unwrap();
        let proxy = engine.listeners()[0].1;
        for _ in 0..10 {
            // Fresh client connections; the engine's pool reuses the surviving upstream ones.
            let answer = h1(proxy, get("x", "/")).await;
            assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "ok"));
        }
        assert!(resets.load(Relaxed) >= 1);
        assert!(resilience(&engine)["retries"]["reset"].as_u64().unwrap() >= 1);
        // A POST that met a reset is not replayed: 502.
        let before = resets.load(Relaxed);
        let mut statuses = Vec::new();
        while resets.load(Relaxed) == before {
            let req = Request::post("/")
                .header("host", "x")
                .body(Full::<Bytes>::default())
                .unwrap();
            // New upstream connections only come after the pooled one is gone: force a fresh one.
            let engine2 = Engine::new(1).unwrap();
            engine2.apply(&resilient(&[up], "")).unwrap();
            statuses.push(h1(engine2.listeners()[0].1, req).await.status.as_u16());
        }
        assert_eq!(statuses.last(), Some(&502), "{statuses:?}");
    });
}

// === outlier detection and the balancer's failure penalty ===

/// One catch-all route to backend `b` over `endpoints` with `lb` and the backend members `extra`.
fn backend_with(endpoints: &[SocketAddr], lb: &str, extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"{{"listeners": [{{"name": "l", "address": "127.0.0.1:0"}}],
            "backends": [{{"name": "b", "protocol": "http1", "lb": "{lb}", "endpoints": [{}] {extra}}}],
            "vhosts": [{{"name": "v", "domains": ["*"], "routes": [
              {{"name": "r", "backends": [{{"backend": "b", "weight": 1}}]}}]}}]}}"#,
        eps.join(", "),
    )
}

fn upstream_stats(engine: &Engine) -> Vec<serde_json::Value> {
    let stats: serde_json::Value = serde_json::from_str(&engine.stats_json()).unwrap();
    stats["upstream"].as_array().unwrap().clone()
}

fn endpoint_entry(engine: &Engine, addr: SocketAddr) -> serde_json::Value {
    upstream_stats(engine)
        .into_iter()
        .find(|u| u["endpoint"] == addr.to_string())
        .unwrap()
}

async fn statuses(proxy: SocketAddr, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(h1(proxy, get("x", "/")).await.status.as_u16());
    }
    out
}

#[test]
fn consecutive_5xx_eject_an_endpoint_until_its_ejection_time_ends() {
    run(async {
        let (bad, bad_hits, _) = counting("bad", Behaviour::Fail(503)).await;
        let (a, _, _) = counting("a", Behaviour::Ok).await;
        let (b, _, _) = counting("b", Behaviour::Ok).await;
        let engine = Engine::new(1).unwrap();
        let outlier = r#", "outlier_detection": {"consecutive_5xx": 3, "interval_ms": 5000, "base_ejection_ms": 700, "max_ejection_percent": 10}"#;
        engine
            .apply(&backend_with(&[bad, a, b], "round_robin", outlier))
            .unwrap();
        let proxy = engine.listeners()[0].1;
        let first = statuses(proxy, 30).await;
        assert_eq!(bad_hits.load(Relaxed), 3, "ejected after 3 consecutive 503s");
        assert_eq!(first.iter().filter(|s| **s == 503).count(), 3);
        assert_eq!(endpoint_entry(&engine, bad)["ejected"], true);
        assert_eq!(endpoint_entry(&engine, bad)["ejections"], 1);
        tokio::time::sleep(Duration::from_millis(800)).await;
        statuses(proxy, 30).await;
        assert_eq!(bad_hits.load(Relaxed), 6, "readmitted after 700 ms, ejected again");
        assert_eq!(endpoint_entry(&engine, bad)["ejections"], 2);
        // Second ejection: 2 x 700 ms (no interval in service since the first).
        tokio::time::sleep(Duration::from_millis(800)).await;
        statuses(proxy, 9).await;
        assert_eq!(
            bad_hits.load(Relaxed),
            6,
            "still ejected 800 ms into a 1400 ms ejection"
        );
    });
}

#[test]
fn never_more_than_max_ejection_percent_but_at_least_one_and_panic_when_all_are_out() {
    run(async {
        let (bad1, _, _) = counting("bad1", Behaviour::Fail(503)).await;
        let (bad2, _, _) = counting("bad2", Behaviour::Fail(503)).await;
        let (good, _, _) = counting("good", Behaviour::Ok).await;
        let engine = Engine::new(1).unwrap();
        let outlier =
            r#", "outlier_detection": {"consecutive_5xx": 2, "base_ejection_ms": 60000, "max_ejection_percent": 10}"#;
        engine
            .apply(&backend_with(&[bad1, bad2, good], "round_robin", outlier))
            .unwrap();
        statuses(engine.listeners()[0].1, 30).await;
        let ejected = upstream_stats(&engine).iter().filter(|u| u["ejected"] == true).count();
        assert_eq!(
            ejected, 1,
            "10 % of 3 endpoints rounds down to 0; one is ejected anyway"
        );

        // One endpoint, ejected: traffic still reaches it (panic mode), and it is counted.
        let (only, only_hits, _) = counting("only", Behaviour::Fail(503)).await;
        let engine = Engine::new(1).unwrap();
        let outlier = r#", "outlier_detection": {"consecutive_5xx": 1, "base_ejection_ms": 60000}"#;
        engine.apply(&backend_with(&[only], "round_robin", outlier)).unwrap();
        assert_eq!(
            statuses(engine.listeners()[0].1, 5).await,
            [503; 5],
            "the upstream's 503s, not the engine's"
        );
        assert_eq!(only_hits.load(Relaxed), 5);
        let stats: serde_json::Value = serde_json::from_str(&engine.stats_json()).unwrap();
        assert_eq!(stats["backends"][0]["backend"], "b");
        assert_eq!(stats["backends"][0]["panic"], 4);
    });
}

#[test]
fn an_endpoint_failing_fast_does_not_attract_the_load() {
    run(async {
        let (bad, bad_hits, _) = counting("bad", Behaviour::Fail(503)).await;
        let (a, a_hits, _) = counting("a", Behaviour::Slow(5)).await;
        let (b, b_hits, _) = counting("b", Behaviour::Slow(5)).await;
        let engine = Engine::new(1).unwrap();
        engine.apply(&backend_with(&[bad, a, b], "p2c_peak_ewma", "")).unwrap();
        statuses(engine.listeners()[0].1, 200).await;
        let (bad, good) = (bad_hits.load(Relaxed), a_hits.load(Relaxed) + b_hits.load(Relaxed));
        assert_eq!(bad + good, 200);
        // Without the penalty the 503 endpoint (fastest to answer) would win most draws (~2/3).
        assert!(bad < 20, "the failing endpoint got {bad} of 200 requests");
    });
}

// === connection-pool limits ===

/// `n` concurrent requests; each answer's status, `x-fastmesh-overflow` and time taken.
async fn concurrent(proxy: SocketAddr, n: usize) -> Vec<(u16, String, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let a = h1(proxy, get("x", "/")).await;
                let header = a
                    .headers
                    .get("x-fastmesh-overflow")
                    .map_or(String::new(), |v| v.to_str().unwrap().to_owned());
                (a.status.as_u16(), header, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn overflow_count(engine: &Engine, limit: &str) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(&engine.stats_json()).unwrap();
    stats["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend"] == "b")
        .and_then(|b| b["overflow"][limit].as_u64())
        .unwrap_or(0)
}

#[test]
fn requests_over_a_limit_get_503_at_once_naming_the_limit() {
    run(async {
        let (slow, hits, _) = counting("slow", Behaviour::Slow(600)).await;
        for (limits, ok, limit) in [
            (r#"{"max_requests": 2}"#, 2, "max_requests"),
            (
                r#"{"max_connections": 1, "max_pending_requests": 0}"#,
                1,
                "max_connections",
            ),
            (
                r#"{"max_connections": 1, "max_pending_requests": 2}"#,
                3,
                "max_pending_requests",
            ),
        ] {
            let engine = Engine::new(1).unwrap();
            engine
                .apply(&backend_with(
                    &[slow],
                    "round_robin",
                    &format!(r#", "limits": {limits}"#),
                ))
                .unwrap();
            let h0 = hits.load(Relaxed);
            let answers = concurrent(engine.listeners()[0].1, 8).await;
            let served: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
            let refused: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
            assert_eq!((served.len(), refused.len()), (ok, 8 - ok), "{limits}: {answers:?}");
            assert!(refused.iter().all(|a| a.1 == limit), "{limits}: {answers:?}");
            // Refused without waiting for the upstream (600 ms per request).
            assert!(
                refused.iter().all(|a| a.2 < Duration::from_millis(500)),
                "{limits}: {answers:?}"
            );
            assert_eq!(hits.load(Relaxed) - h0, ok);
            assert_eq!(overflow_count(&engine, limit), (8 - ok) as u64);
            if limit != "max_requests" {
                assert!(open_connections(&engine, "b") <= 1, "{limits}");
            }
        }
    });
}

#[test]
fn max_retries_caps_concurrent_retries() {
    run(async {
        let (bad, hits, _) = counting("bad", Behaviour::Fail(503)).await;
        let engine = Engine::new(1).unwrap();
        let json = backend_with(&[bad], "round_robin", r#", "limits": {"max_retries": 0}"#)
            .replace(r#""weight": 1}]}"#, &format!(r#""weight": 1}}], {RETRY_5XX}}}"#));
        engine.apply(&json).unwrap();
        assert_eq!(statuses(engine.listeners()[0].1, 3).await, [503; 3]);
        assert_eq!(hits.load(Relaxed), 3, "no retry went out");
        assert_eq!(overflow_count(&engine, "max_retries"), 3);
    });
}

#[test]
fn a_backend_idle_timeout_overrides_the_pool_one() {
    run(async {
        let (a, _, _) = counting("a", Behaviour::Ok).await;
        let engine = Engine::new(1).unwrap();
        engine
            .apply(&backend_with(&[a], "round_robin", r#", "idle_timeout_ms": 100"#))
            .unwrap();
        assert_eq!(h1(engine.listeners()[0].1, get("x", "/")).await.status, 200);
        assert_eq!(open_connections(&engine, "b"), 1);
        // The snapshot's pool keeps idle connections 90 s; this backend's, 100 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(open_connections(&engine, "b"), 0);
    });
}

// === fault injection and mirroring ===

#[test]
fn faults_match_their_percentages() {
    run(async {
        let (a, hits, _) = counting("a", Behaviour::Ok).await;
        let engine = Engine::new(1).unwrap();
        let fault = r#"{"type": "Fault", "delay": {"percent": 20, "ms": 30}, "abort": {"percent": 25, "status": 418}}"#;
        let json = resilient(&[a], "").replace(
            r#""weight": 1}] }"#,
            &format!(r#""weight": 1}}], "filters": [{fault}]}}"#),
        );
        engine.apply(&json).unwrap();
        let proxy = engine.listeners()[0].1;
        let (mut aborted, mut slow) = (0, 0);
        for _ in 0..1000 {
            let started = std::time::Instant::now();
            let status = h1(proxy, get("x", "/")).await.status.as_u16();
            if status == 418 {
                aborted += 1;
            }
            if started.elapsed() >= Duration::from_millis(30) {
                slow += 1;
            }
        }
        // Binomial: 250 +- 14 and 200 +- 13 (1 sd); 5 sd of tolerance.
        assert!((180..=320).contains(&aborted), "{aborted} aborted of 1000");
        assert!((135..=265).contains(&slow), "{slow} delayed of 1000");
        assert_eq!(
            hits.load(Relaxed),
            1000 - aborted,
            "an aborted request never reaches the upstream"
        );
        let r = resilience(&engine);
        assert_eq!(r["faults"]["abort"], aborted as u64);
        assert!(r["faults"]["delay"].as_u64().unwrap() as usize <= slow);
    });
}

#[test]
fn a_mirror_gets_its_share_and_its_answers_are_ignored() {
    run(async {
        let (primary, primary_hits, primary_bytes) = counting("primary", Behaviour::Ok).await;
        let (shadow, shadow_hits, shadow_bytes) = counting("shadow", Behaviour::Fail(500)).await;
        let engine = Engine::new(1).unwrap();
        let json = format!(
            r#"{{"listeners": [{{"name": "l", "address": "127.0.0.1:0"}}],
                "backends": [{{"name": "b", "protocol": "http1", "endpoints": ["{primary}"]}},
                             {{"name": "m", "protocol": "http1", "endpoints": ["{shadow}"]}}],
                "vhosts": [{{"name": "v", "domains": ["*"], "routes": [
                  {{"name": "r", "filters": [{{"type": "RequestMirror", "backend": "m", "percent": 30}}],
                    "backends": [{{"backend": "b", "weight": 1}}]}}]}}]}}"#
        );
        engine.apply(&json).unwrap();
        let proxy = engine.listeners()[0].1;
        for i in 0..1000 {
            let answer = h1(proxy, request(if i % 2 == 0 { Method::GET } else { Method::POST }, 100)).await;
            assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "primary"));
        }
        assert_eq!(primary_hits.load(Relaxed), 1000);
        assert_eq!(primary_bytes.load(Relaxed), 100_000);
        // Copies are sent in the background: wait for them to land.
        let mirrored = resilience(&engine)["mirrored"].as_u64().unwrap() as usize;
        for _ in 0..100 {
            if shadow_hits.load(Relaxed) == mirrored {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(shadow_hits.load(Relaxed), mirrored);
        assert_eq!(
            shadow_bytes.load(Relaxed),
            mirrored * 100,
            "POST bodies are mirrored too"
        );
        assert!((230..=370).contains(&mirrored), "{mirrored} mirrored of 1000 (30 %)");
    });
}

/// A request body of unknown length (sent chunked): `n` chunks of `size` bytes.
struct Chunks(Vec<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(if self.0.is_empty() {
            None
        } else {
            Some(Ok(hyper::body::Frame::data(self.0.remove(0))))
        })
    }
}

#[test]
fn chunked_bodies_are_kept_for_replay_up_to_the_limit_and_streamed_whole_beyond() {
    run(async {
        let (bad, hits, bytes) = counting("bad", Behaviour::Fail(503)).await;
        let engine = Engine::new(1).unwrap();
        engine.apply(&resilient(&[bad], RETRY_5XX)).unwrap();
        let proxy = engine.listeners()[0].1;
        for (chunks, tries) in [(4, 3), (64, 3), (65, 1), (300, 1)] {
            let (h0, b0) = (hits.load(Relaxed), bytes.load(Relaxed));
            let body = Chunks((0..chunks).map(|_| Bytes::from(vec![b'x'; 1024])).collect());
            let req = Request::put("/").header("host", "x").body(body).unwrap();
            assert!(req.headers().get("content-length").is_none());
            assert_eq!(h1(proxy, req).await.status, 503);
            assert_eq!(hits.load(Relaxed) - h0, tries, "{chunks} KiB chunked");
            assert_eq!(
                bytes.load(Relaxed) - b0,
                tries * chunks * 1024,
                "whole body on every try"
            );
        }
    });
}

/// An HTTP/1.1 upstream that answers every request with headers and the first 5 of 100 body
/// bytes, then stalls for 3 s.
async fn stalling_body() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                read_head(&mut stream).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
                    .await;
                tokio::time::sleep(Duration::from_secs(3)).await;
            });
        }
    });
    addr
}

/// A raw GET: what the client received until the connection closed (or 1.5 s passed), and when.
async fn get_until_close(proxy: SocketAddr) -> (String, Duration, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let started = std::time::Instant::now();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_millis(1500), stream.read_to_end(&mut got))
        .await
        .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), started.elapsed(), closed)
}

#[test]
fn a_response_body_that_stalls_is_cut_at_the_request_or_per_try_timeout() {
    run(async {
        let stall = stalling_body().await;
        for (policy, kind) in [
            (r#""timeouts": {"request_ms": 300}"#, "request"),
            (r#""timeouts": {"per_try_ms": 300}"#, "per_try"),
            (r#""timeouts": {"request_ms": 1000, "per_try_ms": 300}"#, "per_try"),
            (r#""timeouts": {"request_ms": 300, "per_try_ms": 1000}"#, "request"),
        ] {
            let engine = Engine::new(1).unwrap();
            engine.apply(&resilient(&[stall], policy)).unwrap();
            let (got, took, closed) = get_until_close(engine.listeners()[0].1).await;
            // The head and the first bytes passed; then the connection was cut, not left hanging.
            assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
            assert!(got.ends_with("\r\n\r\nhello"), "{got}");
            assert!(closed, "{policy}: still open after {took:?}");
            assert!(took >= Duration::from_millis(250), "{policy}: cut after {took:?}");
            let timeouts = &resilience(&engine)["timeouts"];
            assert_eq!(timeouts[kind], 1, "{policy}: {timeouts}");
            assert_eq!(timeouts.as_object().map(|o| o.len()), Some(1), "{policy}: {timeouts}");
        }
        // Without a timeout the body waits for the upstream.
        let engine = Engine::new(1).unwrap();
        engine.apply(&resilient(&[stall], "")).unwrap();
        let (got, _, closed) = get_until_close(engine.listeners()[0].1).await;
        assert!(got.ends_with("hello") && !closed, "{got}");
    });
}
