//! The engine's own HTTP/2 server (`h2::server`) with the HTTP/1.1 upstream client: the
//! request's fields go up as the bytes the server decoded them into (`headers::raw`), the
//! response's come back as bytes and are encoded from them (names lower-cased), with real
//! sockets on both sides (hyper's HTTP/2 client, a raw upstream).

use super::headers::recording;
use super::*;

#[test]
fn h2c_fields_go_up_as_bytes_and_the_upstreams_come_back_lower_case_and_edited() {
    run(async {
        let (up, seen) = recording(
            b"HTTP/1.1 200 OK\r\nServer: Up\r\nSet-Cookie: a=1\r\nX-Resp-Gone: 1\r\nConnection: keep-alive, X-Resp-Hop\r\n\
              X-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\nset-cookie: b=2\r\nX-MiXed-Case: v\r\nContent-Length: 2\r\n\r\nok",
        )
        .await;
        let engine = Engine::new(1).unwrap();
        let snapshot = format!(
            r#"{{"listeners": [{{"name": "l", "address": "127.0.0.1:0"}}],
                "backends": [{{"name": "b", "protocol": "http1", "endpoints": ["{up}"]}}],
                "vhosts": [{{"name": "v", "domains": ["*"], "routes": [{{"name": "r", "filters": [
                  {{"type": "RequestHeaderModifier", "set": [["x-set", "s"]], "add": [], "remove": ["x-gone"]}},
                  {{"type": "ResponseHeaderModifier", "set": [], "add": [["x-resp-added", "r"]], "remove": ["x-resp-gone"]}}],
                  "backends": [{{"backend": "b", "weight": 1}}]}}]}}]}}"#
        );
        engine.apply(&snapshot).unwrap();
        let proxy = engine.listeners()[0].1;
        let req = Request::get("http://svc.test/p?q=1")
            .header("x-dup", "1")
            .header("x-gone", "1")
            .header("x-set", "old")
            .header("te", "trailers")
            .header("x-dup", "2")
            .header("x-request-id", "rid")
            .body(Full::<Bytes>::default())
            .unwrap();
        let a = h2(proxy, req).await;
        let head = seen.await.unwrap();
        // The client's fields in the order it sent them (its `HeaderMap` groups `x-dup`), `x-gone`
        // removed, `te: trailers` appended again by the hop-by-hop strip, the edits after
        // them, `Host` from `:authority` last.
        assert_eq!(
            head,
            "GET /p?q=1 HTTP/1.1\r\nx-dup: 1\r\nx-dup: 2\r\nx-request-id: rid\r\nte: trailers\r\n\
             x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-set: s\r\nhost: svc.test\r\n\r\n",
            "{head}"
        );
        assert_eq!(a.status, 200);
        assert_eq!(a.body, "ok");
        let mut fields: Vec<(String, String)> = a
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        fields.sort();
        // Names lower-cased (hyper's client refuses upper-case ones), hop-by-hop fields and the
        // removed one gone, the added one there; no `date` added on HTTP/2.
        assert_eq!(
            fields,
            [
                ("content-length", "2"),
                ("server", "Up"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-mixed-case", "v"),
                ("x-resp-added", "r"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
    });
}
