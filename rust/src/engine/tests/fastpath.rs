//! The upstream HTTP/1.1 fast path (`h1`) against a scripted raw upstream: every response
//! framing relayed whole, and the keep-alive decision after each (counted by the upstream's
//! accepted connections).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Reads one request head; its path, or `None` at EOF.
async fn request_path(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split(' ').nth(1).map(str::to_owned)
}

/// An upstream answering by path with the framings the fast path must relay; counts the
/// connections it accepted.
async fn scripted() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, SeqCst);
            tokio::spawn(async move {
                while let Some(path) = request_path(&mut s).await {
                    let w = |b: &'static [u8]| b;
                    match path.as_str() {
                        "/chunked" => {
                            s.write_all(w(
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
                            ))
                            .await
                            .unwrap();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            s.write_all(b"6;x=y\r\n world\r\n0\r\nx-trailer: t\r\n\r\n")
                                .await
                                .unwrap();
                        }
                        "/split" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-len").await.unwrap();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            s.write_all(b"gth: 10\r\n\r\n01234").await.unwrap();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            s.write_all(b"56789").await.unwrap();
                        }
                        "/eof" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await.unwrap();
                            return;
                        }
                        "/close" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
                                .await
                                .unwrap();
                        }
                        "/http10" => {
                            s.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await
                                .unwrap();
                        }
                        "/extra" => {
                            // Bytes after the response: the connection cannot be trusted.
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokJUNK")
                                .await
                                .unwrap();
                        }
                        "/idle-close" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await
                                .unwrap();
                            // Closes the idle connection after the answer (an upstream's idle timeout).
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                        "/head" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
                                .await
                                .unwrap();
                        }
                        _ => s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nsame")
                            .await
                            .unwrap(),
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// An engine with one route to a `scripted` upstream: the engine, its listener, the upstream's count.
async fn engine_before_scripted() -> (Engine, SocketAddr, Arc<AtomicUsize>) {
    let (up, accepted) = scripted().await;
    let engine = Engine::new(1).unwrap();
    engine
        .apply(&one_route(&format!(r#""protocol": "http1", "endpoints": ["{up}"]"#)))
        .unwrap();
    let proxy = engine.listeners()[0].1;
    (engine, proxy, accepted)
}

fn req(method: Method, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "x")
        .body(Full::<Bytes>::default())
        .unwrap()
}

#[test]
fn every_response_framing_is_relayed_and_decides_reuse() {
    run(async {
        let (engine, proxy, accepted) = engine_before_scripted().await;
        let conns = || accepted.load(SeqCst);
        // Chunked (split across writes, with an extension and trailers): ends where it says,
        // so the connection is reused.
        let a = h2(proxy, get2("x", "/chunked")).await;
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello world"));
        assert_eq!(a.trailers.unwrap()["x-trailer"], "t");
        assert_eq!(h1(proxy, req(Method::GET, "/")).await.body, "same");
        assert_eq!(conns(), 1, "reused after a chunked body");
        // A head and body in pieces.
        assert_eq!(h1(proxy, req(Method::GET, "/split")).await.body, "0123456789");
        assert_eq!(h1(proxy, req(Method::GET, "/")).await.body, "same");
        assert_eq!(conns(), 1, "reused after a content-length body");
        // Close-delimited: read to the end, then a new connection.
        assert_eq!(h1(proxy, req(Method::GET, "/eof")).await.body, "until the end");
        assert_eq!(h1(proxy, req(Method::GET, "/")).await.body, "same");
        assert_eq!(conns(), 2, "a close-delimited body ends its connection");
        for (path, why) in [
            ("/close", "Connection: close"),
            ("/http10", "HTTP/1.0"),
            ("/extra", "bytes after the response"),
        ] {
            let before = conns();
            assert_eq!(h1(proxy, req(Method::GET, path)).await.body, "ok", "{path}");
            assert_eq!(h1(proxy, req(Method::GET, "/")).await.body, "same");
            assert_eq!(conns(), before + 1, "not reused after {why}");
        }
        // HEAD: no body whatever content-length says; the connection stays usable.
        let before = conns();
        let a = h1(proxy, req(Method::HEAD, "/head")).await;
        assert_eq!(
            (a.status.as_u16(), a.headers["content-length"].to_str().unwrap()),
            (200, "4")
        );
        assert_eq!(h1(proxy, req(Method::GET, "/")).await.body, "same");
        assert_eq!(conns(), before, "reused after HEAD");
        assert_eq!(engine.active_requests(), 0);
    });
}

#[test]
fn an_idle_connection_the_upstream_closed_is_not_used_for_the_next_request() {
    run(async {
        let (engine, proxy, accepted) = engine_before_scripted().await;
        assert_eq!(h1(proxy, req(Method::GET, "/idle-close")).await.body, "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // POST is not retried after a reset: it succeeds only if the closed connection is
        // recognised before the request is written on it.
        let a = h1(proxy, req(Method::POST, "/")).await;
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "same"));
        assert_eq!(accepted.load(SeqCst), 2);
        let stats: serde_json::Value = serde_json::from_str(&engine.stats_json()).unwrap();
        assert!(
            stats["resilience"].as_array().is_none_or(|r| r
                .iter()
                .all(|r| r["retries"].as_object().is_none_or(serde_json::Map::is_empty))),
            "no retry: {stats}"
        );
    });
}
