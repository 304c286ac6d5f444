//! The downstream HTTP/1.1 fast path (`h1::server`, on by default) end to end: raw clients
//! on real sockets, the engine, hyper upstreams.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Writes `input` on a fresh connection, returns everything read until the proxy closes it
/// (the last request asks for that, or is an error). No half-close: hyper's server closes at
/// once when the client shuts its side down.
async fn raw(proxy: SocketAddr, input: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(input).await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn pipelined_requests_and_their_bodies_reach_the_upstream_in_order() {
    run(async {
        let s = setup().await;
        let out = raw(
            s.proxy,
            b"GET /a HTTP/1.1\r\nhost: svc.test\r\n\r\n\
              POST /b HTTP/1.1\r\nhost: svc.test\r\ncontent-length: 5\r\n\r\nhello\
              GET /c?q=1 HTTP/1.1\r\nhost: svc.test\r\nx-version: v2\r\n\r\n\
              GET /d HTTP/1.1\r\nhost: svc.test\r\nconnection: close\r\n\r\n",
        )
        .await;
        let answers: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
        // What each answer holds, in order; the third: routing by header, request and response
        // filters, the h2c backend.
        let expected: [&[&str]; 4] = [
            &["200 OK", "path=/a\n"],
            &["path=/b\n", "body_bytes=5\n", "method=POST\n"],
            &["upstream=two\n", "x-a=set\n", "x-resp: added\r\n", "query=q=1\n"],
            &["path=/d\n", "connection: close\r\n"],
        ];
        assert_eq!(answers.len(), expected.len(), "{out}");
        for (answer, holds) in answers.iter().zip(expected) {
            assert!(holds.iter().all(|h| answer.contains(h)), "{holds:?} in {out}");
        }
        // Hop-by-hop headers of the upstream's answer are not relayed.
        assert!(!out.contains("x-hop-resp"), "{out}");
        // Counted as one connection and four requests, per route and backend.
        let stats: serde_json::Value = serde_json::from_str(&s.engine.stats_json()).unwrap();
        assert_eq!(stats["connections"]["total"], 1);
        let count = |route: &str| {
            stats["routes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["route"] == route)
                .map(|r| r["status"]["2xx"].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        assert_eq!((count("rest"), count("v2")), (3, 1), "{stats}");
    });
}

#[test]
fn bad_requests_get_400_and_oversized_heads_431_from_hyper_after_the_handoff() {
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let long = |kib: usize| "v".repeat(kib * 1024);
    // (request, how the answer starts, what it holds)
    let cases = [
        (
            "GET / HTTP/1.1\r\nhost: svc.test\r\nbad header\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request\r\n",
            "",
        ),
        (
            format!("GET / HTTP/1.1\r\nhost: svc.test\r\n{many}\r\n"),
            "HTTP/1.1 431 Request Header Fields Too Large\r\n",
            "",
        ),
        // A head longer than the fast path reads (64 KiB) goes to hyper, which serves it up to
        // its own limit (~400 KiB) and answers 431 above.
        (
            format!(
                "GET /long HTTP/1.1\r\nhost: svc.test\r\nconnection: close\r\nx-long: {}\r\n\r\n",
                long(100)
            ),
            "HTTP/1.1 200 OK\r\n",
            "path=/long\n",
        ),
        (
            format!("GET / HTTP/1.1\r\nhost: svc.test\r\nx-long: {}\r\n\r\n", long(500)),
            "HTTP/1.1 431 Request Header Fields Too Large\r\n",
            "",
        ),
        // A first request served by the fast path, then one it hands over (chunked body).
        (
            "GET /first HTTP/1.1\r\nhost: svc.test\r\n\r\nPOST /second HTTP/1.1\r\nhost: svc.test\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .to_owned(),
            "HTTP/1.1 200 OK\r\n",
            "path=/second\nquery=-\nversion=HTTP/1.1\n",
        ),
    ];
    run(async {
        let s = setup().await;
        for (req, start, holds) in &cases {
            let out = raw(s.proxy, req.as_bytes()).await;
            assert!(out.starts_with(start) && out.contains(holds), "{out}");
        }
        let out = raw(s.proxy, cases[4].0.as_bytes()).await;
        assert!(out.contains("path=/first\n") && out.contains("body_bytes=3\n"), "{out}");
    });
}

#[test]
fn a_drain_lets_the_in_flight_response_finish_then_closes_the_keep_alive_connection() {
    run(async {
        let slow = crate::testutil::serve(false, |_req| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"slow"))))
        })
        .await;
        let engine = Arc::new(Engine::new(1).unwrap());
        engine
            .apply(&one_route(&format!(r#""protocol": "http1", "endpoints": ["{slow}"]"#)))
            .unwrap();
        let proxy = engine.listeners()[0].1;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let e = engine.clone();
        let drained = tokio::task::spawn_blocking(move || e.drain(Duration::from_secs(5)));
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        let got = String::from_utf8(got).unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(
            got.contains("connection: close\r\n") && got.ends_with("\r\n\r\nslow"),
            "{got}"
        );
        assert!(drained.await.unwrap());
    });
}

#[test]
fn a_response_shorter_than_its_content_length_closes_the_connection() {
    run(async {
        let up = upstream("one", false).await;
        let engine = Engine::new(1).unwrap();
        // A filter that claims more bytes than the upstream's body has.
        let snapshot = format!(
            r#"{{"listeners": [{{"name": "l", "address": "127.0.0.1:0"}}],
                "backends": [{{"name": "b", "protocol": "http1", "endpoints": ["{up}"]}}],
                "vhosts": [{{"name": "v", "domains": ["*"], "routes": [{{"name": "r",
                  "filters": [{{"type": "ResponseHeaderModifier", "set": [["content-length", "100000"]]}}],
                  "backends": [{{"backend": "b", "weight": 1}}]}}]}}]}}"#
        );
        engine.apply(&snapshot).unwrap();
        let proxy = engine.listeners()[0].1;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        // The client sees the end of the connection, not a wait for bytes that never come.
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
            .await
            .expect("the connection closes")
            .ok();
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("HTTP/1.1 200 OK\r\n") && got.contains("path=/\n"),
            "{got}"
        );
    });
}

#[test]
fn a_request_stops_counting_as_active_before_its_answer_reaches_the_client() {
    run(async {
        let s = setup().await;
        let mut c = TcpStream::connect(s.proxy).await.unwrap();
        for path in ["/", "/status/204", "/null", "/bytes/10"].iter().cycle().take(200) {
            let req = format!("GET {path} HTTP/1.1\r\nhost: svc.test\r\n\r\n");
            c.write_all(req.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            // Each answer is read whole (its content-length) before looking at the count.
            loop {
                let mut chunk = [0u8; 4096];
                let n = c.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed after {got:?}");
                got.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.parse().unwrap());
                    if body.len() >= len {
                        break;
                    }
                }
            }
            assert_eq!(s.engine.active_requests(), 0, "{path}");
        }
    });
}
