//! Header fields forwarded as bytes (`headers::raw`) through the engine's own HTTP/1.1 server
//! and client: what the upstream reads and what the client gets, byte for byte, from raw
//! sockets on both sides.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Reads one request head (up to its blank line) from `s`.
async fn head_of(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "EOF within a request head");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).unwrap()
}

/// An upstream that answers one request with `response` and hands the request head it read
/// to the test.
pub(super) async fn recording(response: &'static [u8]) -> (SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let head = head_of(&mut s).await;
        s.write_all(response).await.unwrap();
        let _ = tx.send(head);
        // Keep the connection open until the proxy closes it.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    (addr, rx)
}

/// The snapshot of `one_route` with `filters` on the route.
fn with_filters(up: SocketAddr, filters: &str) -> String {
    format!(
        r#"{{"listeners": [{{"name": "l", "address": "127.0.0.1:0"}}],
            "backends": [{{"name": "b", "protocol": "http1", "endpoints": ["{up}"]}}],
            "vhosts": [{{"name": "v", "domains": ["*"], "routes": [{{"name": "r", "filters": {filters},
                "backends": [{{"backend": "b", "weight": 1}}]}}]}}]}}"#
    )
}

#[test]
fn fields_are_forwarded_with_their_case_order_and_duplicates_and_edited() {
    run(async {
        let (up, seen) = recording(
            b"HTTP/1.1 200 OK\r\nServer: Up\r\nSet-Cookie: a=1\r\nX-Resp-Gone: 1\r\nConnection: keep-alive, X-Resp-Hop\r\n\
              X-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
        )
        .await;
        let engine = Engine::new(1).unwrap();
        let filters = r#"[{"type": "RequestHeaderModifier", "set": [["x-set", "s"]], "add": [["x-added", "a"]], "remove": ["x-gone"]},
                          {"type": "ResponseHeaderModifier", "set": [], "add": [["x-resp-added", "r"]], "remove": ["x-resp-gone"]}]"#;
        engine.apply(&with_filters(up, filters)).unwrap();
        let proxy = engine.listeners()[0].1;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(
            b"GET /p?q=1 HTTP/1.1\r\nHost: svc.test\r\nX-Dup: 1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: h\r\n\
              X-Set: old\r\nx-dup:2\r\nTE: trailers\r\nKeep-Alive: 5\r\nProxy-Authorization: Basic x\r\n\
              X-Gone: 1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Client-Cert: forged\r\nX-Request-Id: rid\r\n\
              X-Forwarded-Proto: https\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        let head = seen.await.unwrap();
        // Wire order and case kept, duplicates kept apart, hop-by-hop fields (and what
        // `Connection` lists) dropped, `TE: trailers` kept, the client's XFCC dropped, its
        // `X-Request-Id` kept, then the edits in order.
        assert_eq!(
            head,
            "GET /p?q=1 HTTP/1.1\r\nHost: svc.test\r\nX-Dup: 1\r\nx-dup: 2\r\nX-Request-Id: rid\r\n\
             te: trailers\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-set: s\r\nx-added: a\r\n\r\n"
        );
        let got = String::from_utf8(got).unwrap();
        let (resp_head, body) = got.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "ok");
        let lines: Vec<&str> = resp_head.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 200 OK");
        // The upstream's fields in its order and case; hop-by-hop ones and the removed one gone;
        // the server's own (`date`, `connection: close`) after them.
        assert_eq!(
            lines[1..5],
            ["Server: Up", "Set-Cookie: a=1", "set-cookie: b=2", "Content-Length: 2"],
            "{got}"
        );
        assert_eq!(lines[5], "x-resp-added: r", "{got}");
        assert!(lines[6].starts_with("date: "), "{got}");
        assert_eq!(lines[7], "connection: close", "{got}");
        assert_eq!(lines.len(), 8, "{got}");
    });
}

#[test]
fn a_header_matcher_still_sees_the_fields_and_hyper_downstreams_get_a_header_map() {
    // Header matching (a `HeaderMap` built for routing) and an HTTP/2 client (the response's
    // fields put in its `HeaderMap` by `Conn::handle`) over the same raw upstream client.
    run(async {
        let s = setup().await;
        let mut c = TcpStream::connect(s.proxy).await.unwrap();
        c.write_all(b"GET /m HTTP/1.1\r\nHost: svc.test\r\nX-Version: v2\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8(got).unwrap();
        assert!(got.contains("upstream=two\n"), "{got}");
        let a = h2(s.proxy, get2("svc.test", "/h2")).await;
        assert_eq!(a.status, 200);
        assert!(a.body.contains("upstream=one\n"), "{}", a.body);
    });
}

#[test]
fn fields_kept_as_bytes_reach_an_h2c_upstream_through_a_header_map() {
    // A vhost without header matches (the fields stay bytes through routing), an h2c backend:
    // the map is built before the edits, and the upstream sees them (authority, forwarding
    // fields, hop-by-hop gone).
    run(async {
        let up = upstream("h2", true).await;
        let engine = Engine::new(1).unwrap();
        engine
            .apply(&one_route(&format!(r#""protocol": "h2c", "endpoints": ["{up}"]"#)))
            .unwrap();
        let proxy = engine.listeners()[0].1;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"GET /x HTTP/1.1\r\nHost: svc.test\r\nX-Hop: 1\r\nConnection: close, x-hop\r\nX-A: kept\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8(got).unwrap();
        for line in [
            "HTTP/1.1 200 OK",
            "upstream=h2\n",
            "version=HTTP/2.0\n",
            "authority=svc.test\n",
            "host=-\n",
            "xff=127.0.0.1\n",
            "xfp=http\n",
            "x-hop=-\n",
            "x-a=kept\n",
        ] {
            assert!(got.contains(line), "{line:?} in {got}");
        }
    });
}
