//! End to end on real sockets: hyper upstreams (HTTP/1.1 and h2c) on 127.0.0.1:0, the engine
//! in front, hyper clients speaking HTTP/1.1 and HTTP/2 prior knowledge to it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use super::*;

// === upstream ===

/// Answers every request with `key=value` lines describing what it received; `/trailers`
/// adds response trailers, `/status/N` answers N, `/bytes/N` sends N bytes.
async fn echo(name: &'static str, req: Request<Incoming>) -> Result<Response<BoxedBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let collected = body.collect().await.expect("request body");
    let req_trailers = collected.trailers().cloned();
    let body_bytes = collected.to_bytes().len();
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .map_or("-", |v| v.to_str().unwrap_or("?"))
            .to_owned()
    };
    let path = parts.uri.path().to_owned();
    if let Some(code) = path.strip_prefix("/status/") {
        let mut resp = Response::new(full(""));
        *resp.status_mut() = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        return Ok(resp);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return Ok(Response::new(full(&"x".repeat(n.parse().unwrap()))));
    }
    let text =
        format!(
        "upstream={name}\nmethod={}\npath={}\nquery={}\nversion={:?}\nhost={}\nauthority={}\nxff={}\nxfp={}\nrid={}\n\
         connection={}\nx-hop={}\nte={}\nx-a={}\nexpect={}\nbody_bytes={body_bytes}\nreq_trailer={}\n",
        parts.method,
        path,
        parts.uri.query().unwrap_or("-"),
        parts.version,
        header("host"),
        parts.uri.authority().map_or("-".to_owned(), std::string::ToString::to_string),
        header("x-forwarded-for"),
        header("x-forwarded-proto"),
        header("x-request-id"),
        header("connection"),
        header("x-hop"),
        header("te"),
        header("x-a"),
        header("expect"),
        req_trailers.as_ref().and_then(|t| t.get("x-checksum")).map_or("-", |v| v.to_str().unwrap()),
    );
    let mut resp = Response::new(if path == "/trailers" {
        let mut t = HeaderMap::new();
        t.insert("x-upstream-trailer", name.parse().unwrap());
        Full::new(Bytes::from(text))
            .with_trailers(async move { Some(Ok(t)) })
            .boxed()
    } else {
        full(&text)
    });
    resp.headers_mut().insert("x-upstream", name.parse().unwrap());
    resp.headers_mut().insert("connection", "x-hop-resp".parse().unwrap());
    resp.headers_mut().insert("x-hop-resp", "1".parse().unwrap());
    Ok(resp)
}

type BoxedBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: &str) -> BoxedBody {
    Full::new(Bytes::copy_from_slice(s.as_bytes())).boxed()
}

async fn upstream(name: &'static str, h2: bool) -> SocketAddr {
    crate::testutil::serve(h2, move |req| echo(name, req)).await
}

// === clients ===

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    trailers: Option<HeaderMap>,
}

impl Answer {
    fn field(&self, key: &str) -> &str {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.body))
    }
}

async fn read(resp: Response<Incoming>) -> Answer {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(collected.to_bytes().to_vec()).unwrap(),
        trailers,
    }
}

/// One request over a fresh HTTP/1.1 connection; `path` goes in origin form with `Host: host`.
async fn h1<B>(proxy: SocketAddr, req: Request<B>) -> Answer
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    read(send.send_request(req).await.unwrap()).await
}

/// One request over a fresh HTTP/2 prior-knowledge connection.
async fn h2<B>(proxy: SocketAddr, req: Request<B>) -> Answer
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    read(send.send_request(req).await.unwrap()).await
}

fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::<Bytes>::default())
        .unwrap()
}

fn get2(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{host}{path}"))
        .body(Full::<Bytes>::default())
        .unwrap()
}

// === engine ===

fn snapshot(h1: SocketAddr, h2c: SocketAddr, dead: SocketAddr) -> String {
    format!(
        r#"{{"listeners": [{{"name": "outbound", "address": "127.0.0.1:0"}}],
            "backends": [
              {{"name": "one", "protocol": "http1", "endpoints": ["{h1}"]}},
              {{"name": "two", "protocol": "h2c", "lb": "round_robin", "endpoints": ["{h2c}"]}},
              {{"name": "empty", "protocol": "http1", "endpoints": []}},
              {{"name": "dead", "protocol": "http1", "endpoints": ["{dead}"]}}],
            "vhosts": [
              {{"name": "svc", "domains": ["svc.test", "*.svc.test"], "routes": [
                {{"name": "h2c", "match": {{"path": {{"type": "PathPrefix", "value": "/h2c"}}}},
                  "filters": [{{"type": "URLRewrite", "path": {{"type": "ReplacePrefixMatch", "value": "/"}}}}],
                  "backends": [{{"backend": "two", "weight": 1}}]}},
                {{"name": "split", "match": {{"path": {{"type": "Exact", "value": "/split"}}}},
                  "backends": [{{"backend": "one", "weight": 90}}, {{"backend": "two", "weight": 10}}]}},
                {{"name": "redirect", "match": {{"path": {{"type": "PathPrefix", "value": "/old"}}}},
                  "filters": [{{"type": "RequestRedirect", "path": {{"type": "ReplacePrefixMatch", "value": "/new"}}, "status_code": 301}}]}},
                {{"name": "null", "match": {{"path": {{"type": "Exact", "value": "/null"}}}},
                  "backends": [{{"backend": null, "weight": 1}}]}},
                {{"name": "empty", "match": {{"path": {{"type": "Exact", "value": "/empty"}}}},
                  "backends": [{{"backend": "empty", "weight": 1}}]}},
                {{"name": "dead", "match": {{"path": {{"type": "Exact", "value": "/dead"}}}},
                  "backends": [{{"backend": "dead", "weight": 1}}]}},
                {{"name": "v2", "match": {{"headers": [{{"type": "Exact", "name": "x-version", "value": "v2"}}]}},
                  "filters": [{{"type": "RequestHeaderModifier", "set": [["x-a", "set"]]}},
                              {{"type": "ResponseHeaderModifier", "add": [["x-resp", "added"]]}}],
                  "backends": [{{"backend": "two", "weight": 1}}]}},
                {{"name": "rest", "match": {{"path": {{"type": "PathPrefix", "value": "/"}}}},
                  "backends": [{{"backend": "one", "weight": 1}}]}}]}}]}}"#
    )
}

struct Setup {
    engine: Engine,
    proxy: SocketAddr,
}

async fn setup() -> Setup {
    let one = upstream("one", false).await;
    let two = upstream("two", true).await;
    // A port nobody listens on: bind, note, close.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let engine = Engine::new(2).unwrap();
    assert_eq!(engine.apply(&snapshot(one, two, dead)).unwrap(), 1);
    let proxy = engine.listeners()[0].1;
    Setup { engine, proxy }
}

/// Runs blocking engine calls (drain) off the test's runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A snapshot with one listener on port 0 and one catch-all route to backend `b`, described by `backend`
/// (the backend object's fields after its name, e.g. `"protocol": "http1", "endpoints": ["127.0.0.1:1"]`).
fn one_route(backend: &str) -> String {
    format!(
        r#"{{"listeners": [{{"name": "l", "address": "127.0.0.1:0"}}],
            "backends": [{{"name": "b", {backend}}}],
            "vhosts": [{{"name": "v", "domains": ["*"], "routes": [{{"name": "r", "backends": [{{"backend": "b", "weight": 1}}]}}]}}]}}"#
    )
}

/// Reads a raw HTTP/1.1 request head (up to the blank line) from `stream`; stops early at EOF.
async fn read_head(stream: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let read = stream.read(&mut chunk).await.unwrap();
        if read == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}

#[test]
fn http1_to_http1_preserves_host_and_sets_forwarding_headers() {
    run(async {
        let s = setup().await;
        let req = Request::get("/hello?x=1")
            .header("host", "svc.test:8080")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("te", "trailers")
            .body(Full::<Bytes>::default())
            .unwrap();
        let a = h1(s.proxy, req).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.field("upstream"), "one");
        assert_eq!(a.field("path"), "/hello");
        assert_eq!(a.field("query"), "x=1");
        assert_eq!(a.field("host"), "svc.test:8080");
        assert_eq!(a.field("xff"), "127.0.0.1");
        assert_eq!(a.field("xfp"), "http");
        assert_eq!(a.field("rid").len(), 36);
        assert_eq!(a.field("x-hop"), "-", "a header named in Connection is hop-by-hop");
        assert_eq!(a.field("te"), "trailers");
        assert!(
            a.headers.get("x-hop-resp").is_none(),
            "response hop-by-hop headers removed"
        );
        assert_eq!(a.headers["x-upstream"], "one");
    });
}

#[test]
fn http2_client_authority_reaches_an_http1_upstream_as_host() {
    run(async {
        let s = setup().await;
        let a = h2(s.proxy, get2("api.svc.test", "/from-h2")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.field("upstream"), "one");
        assert_eq!(a.field("version"), "HTTP/1.1");
        assert_eq!(a.field("host"), "api.svc.test");
    });
}

#[test]
fn http1_client_reaches_an_h2c_upstream_with_authority_and_rewritten_path() {
    run(async {
        let s = setup().await;
        let a = h1(s.proxy, get("svc.test", "/h2c/inner?q=2")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.field("upstream"), "two");
        assert_eq!(a.field("version"), "HTTP/2.0");
        assert_eq!(a.field("authority"), "svc.test");
        assert_eq!(a.field("path"), "/inner");
        assert_eq!(a.field("query"), "q=2");
        // h2 to h2c, trailers both ways.
        let mut t = HeaderMap::new();
        t.insert("x-checksum", "abc".parse().unwrap());
        let body =
            Full::new(Bytes::from_static(b"payload")).with_trailers(std::future::ready(Some(Ok::<_, Infallible>(t))));
        let req = Request::post("http://svc.test/h2c/trailers")
            .header("te", "trailers")
            .body(body)
            .unwrap();
        let a = h2(s.proxy, req).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.field("body_bytes"), "7");
        assert_eq!(a.field("req_trailer"), "abc");
        assert_eq!(a.trailers.expect("response trailers")["x-upstream-trailer"], "two");
    });
}

#[test]
fn streams_request_and_response_bodies() {
    run(async {
        let s = setup().await;
        let big = Bytes::from(vec![7u8; 3 << 20]);
        for proto in ["h1", "h2"] {
            let req = Request::post("http://svc.test/upload")
                .header("host", "svc.test")
                .body(Full::new(big.clone()))
                .unwrap();
            let a = if proto == "h1" {
                h1(s.proxy, req).await
            } else {
                h2(s.proxy, req).await
            };
            assert_eq!(a.field("body_bytes"), (3 << 20).to_string(), "{proto}");
        }
        let a = h1(s.proxy, get("svc.test", "/bytes/2000000")).await;
        assert_eq!(a.body.len(), 2_000_000);
        let a = h1(
            s.proxy,
            Request::post("/expect")
                .header("host", "svc.test")
                .header("expect", "100-continue")
                .body(Full::new(Bytes::from_static(b"abc")))
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.field("body_bytes"), "3");
        assert_eq!(a.field("expect"), "-");
    });
}

#[test]
fn head_and_no_body_statuses() {
    run(async {
        let s = setup().await;
        let a = h1(
            s.proxy,
            Request::head("/x")
                .header("host", "svc.test")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 200);
        assert!(a.body.is_empty());
        assert!(a.headers["content-length"].to_str().unwrap().parse::<u32>().unwrap() > 0);
        for code in [204, 304] {
            let a = h1(s.proxy, get("svc.test", &format!("/status/{code}"))).await;
            assert_eq!(a.status.as_u16(), code);
            assert!(a.body.is_empty());
        }
    });
}

#[test]
fn engine_answers_404_500_502_503_and_redirects() {
    run(async {
        let s = setup().await;
        assert_eq!(h1(s.proxy, get("unknown.example", "/")).await.status, 404);
        assert_eq!(h2(s.proxy, get2("svc.test", "/null")).await.status, 500);
        assert_eq!(h1(s.proxy, get("svc.test", "/empty")).await.status, 503);
        assert_eq!(h1(s.proxy, get("svc.test", "/dead")).await.status, 502);
        let a = h1(s.proxy, get("svc.test:8080", "/old/page?a=b")).await;
        assert_eq!(a.status, 301);
        assert_eq!(a.headers["location"], "http://svc.test:8080/new/page?a=b");
        assert_eq!(a.headers["content-length"], "0");
        let stats: serde_json::Value = serde_json::from_str(&s.engine.stats_json()).unwrap();
        let count = |route: &str, backend: &str, class: &str| {
            stats["routes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["route"] == route && r["backend"] == backend)
                .map_or(0, |r| r["status"][class].as_u64().unwrap_or(0))
        };
        assert_eq!(count("", "", "4xx"), 1);
        assert_eq!(count("null", "", "5xx"), 1);
        assert_eq!(count("empty", "empty", "5xx"), 1);
        assert_eq!(count("dead", "dead", "5xx"), 1);
        assert_eq!(count("redirect", "", "3xx"), 1);
    });
}

#[test]
fn header_match_and_modifiers() {
    run(async {
        let s = setup().await;
        let req = Request::get("/any")
            .header("host", "svc.test")
            .header("X-Version", "v2")
            .header("x-a", "orig")
            .body(Full::<Bytes>::default())
            .unwrap();
        let a = h1(s.proxy, req).await;
        assert_eq!(a.field("upstream"), "two");
        assert_eq!(a.field("x-a"), "set");
        assert_eq!(a.headers["x-resp"], "added");
    });
}

#[test]
fn weighted_split_is_exact_and_stats_count_it() {
    run(async {
        let s = setup().await;
        let stream = TcpStream::connect(s.proxy).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut ones = 0;
        for _ in 0..200 {
            send.ready().await.unwrap();
            let a = read(send.send_request(get("svc.test", "/split")).await.unwrap()).await;
            if a.field("upstream") == "one" {
                ones += 1;
            }
        }
        assert_eq!(ones, 180);
        let stats: serde_json::Value = serde_json::from_str(&s.engine.stats_json()).unwrap();
        assert_eq!(stats["version"], 1);
        assert_eq!(stats["connections"]["active"], 1);
        let split_one = stats["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == "split" && r["backend"] == "one")
            .unwrap();
        assert_eq!(split_one["status"]["2xx"], 180);
        assert_eq!(split_one["latency"]["count"], 180);
        assert_eq!(s.engine.active_requests(), 0);
    });
}

#[test]
fn apply_keeps_unchanged_listeners_and_refuses_without_changing() {
    run(async {
        let s = setup().await;
        let before = s.engine.listeners();
        // Same listener, other routes: the socket stays.
        let v2 = r#"{"listeners": [{"name": "outbound", "address": "127.0.0.1:0"}],
                     "vhosts": [{"name": "v", "domains": ["*"], "routes": []}]}"#;
        assert_eq!(s.engine.apply(v2).unwrap(), 2);
        assert_eq!(s.engine.listeners(), before);
        assert_eq!(
            h1(s.proxy, get("svc.test", "/")).await.status,
            404,
            "the new snapshot serves"
        );
        // A bad snapshot and an unbindable address change nothing.
        assert!(matches!(
            s.engine.apply(r#"{"vhosts": [{"name": 1}]}"#),
            Err(Error::Config(_))
        ));
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let busy = format!(
            r#"{{"version": 9, "listeners": [{{"name": "outbound", "address": "127.0.0.1:0"}},
                                           {{"name": "extra", "address": "{}"}}]}}"#,
            taken.local_addr().unwrap()
        );
        assert!(matches!(s.engine.apply(&busy), Err(Error::Bind { .. })));
        assert_eq!(s.engine.version(), 2);
        assert_eq!(s.engine.listeners(), before);
        // Removing the listener closes its socket before apply returns (called, as Python
        // does, from a thread outside any runtime).
        let engine = Arc::new(s.engine);
        let e = engine.clone();
        assert_eq!(blocking(move || e.apply(r#"{"version": 5}"#).unwrap()).await, 5);
        assert!(engine.listeners().is_empty());
        assert!(TcpStream::connect(s.proxy).await.is_err());
    });
}

#[test]
fn drain_finishes_in_flight_and_stops_accepting() {
    run(async {
        let s = setup().await;
        let engine = Arc::new(s.engine);
        // An idle keep-alive connection must not hold the drain up.
        let stream = TcpStream::connect(s.proxy).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        assert_eq!(
            read(send.send_request(get("svc.test", "/")).await.unwrap())
                .await
                .status,
            200
        );
        let e = engine.clone();
        assert!(blocking(move || e.drain(std::time::Duration::from_secs(5))).await);
        conn.await.unwrap().unwrap();
        assert!(TcpStream::connect(s.proxy).await.is_err());
        let _ = Method::GET;
    });
}

/// An upstream that sends informational responses (100, 103) before its answer.
async fn informational_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        let _ = stream.read(&mut [0u8; 1]).await;
    });
    addr
}

#[test]
fn upstream_informational_responses_are_skipped() {
    run(async {
        let up = informational_upstream().await;
        let engine = Engine::new(1).unwrap();
        let json = one_route(&format!(r#""protocol": "http1", "endpoints": ["{up}"]"#));
        engine.apply(&json).unwrap();
        let a = h1(engine.listeners()[0].1, get("x", "/")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body, "ok");
    });
}

/// A request body the test feeds chunk by chunk.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[test]
fn in_flight_requests_finish_on_the_snapshot_they_started_with() {
    run(async {
        let one = upstream("one", false).await;
        let two = upstream("two", false).await;
        let engine = Engine::new(1).unwrap();
        let to = |backend: SocketAddr| one_route(&format!(r#""protocol": "http1", "endpoints": ["{backend}"]"#));
        engine.apply(&to(one)).unwrap();
        let proxy = engine.listeners()[0].1;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let req = Request::post("/slow")
            .header("host", "x")
            .body(ChannelBody(rx))
            .unwrap();
        let pending = tokio::spawn(async move { h1(proxy, req).await });
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        // Wait until the request is in flight in the engine.
        while engine.active_requests() == 0 {
            tokio::task::yield_now().await;
        }
        engine.apply(&to(two)).unwrap();
        assert_eq!(h1(proxy, get("x", "/")).await.field("upstream"), "two");
        tx.send(Bytes::from_static(b"second")).await.unwrap();
        drop(tx);
        let a = pending.await.unwrap();
        assert_eq!(a.field("upstream"), "one");
        assert_eq!(a.field("body_bytes"), "11");
    });
}

/// An upstream whose first connection closes after reading a request, unanswered (a keep-alive
/// race seen from the proxy); later connections answer 200.
async fn closing_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for n in 0.. {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_head(&mut stream).await;
            if n > 0 {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nretry")
                    .await
                    .unwrap();
                let _ = stream.read(&mut [0u8; 1]).await;
            }
        }
    });
    addr
}

#[test]
fn bodiless_idempotent_request_is_retried_once_when_the_connection_dies_under_it() {
    run(async {
        let up = closing_upstream().await;
        let engine = Engine::new(1).unwrap();
        let json = one_route(&format!(r#""protocol": "http1", "endpoints": ["{up}"]"#));
        engine.apply(&json).unwrap();
        let a = h1(engine.listeners()[0].1, get("x", "/")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body, "retry");
    });
}

#[test]
fn a_dead_endpoint_is_skipped_for_bodiless_requests() {
    run(async {
        let live = upstream("live", false).await;
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let engine = Engine::new(1).unwrap();
        let json = one_route(&format!(
            r#""protocol": "http1", "lb": "round_robin", "endpoints": ["{dead}", "{live}"]"#
        ));
        engine.apply(&json).unwrap();
        let proxy = engine.listeners()[0].1;
        for _ in 0..6 {
            let a = h1(proxy, get("x", "/")).await;
            assert_eq!(a.status, 200);
            assert_eq!(a.field("upstream"), "live");
        }
        // A request with a body cannot be replayed: its turn on the dead endpoint is a 502.
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let req = Request::post("/")
                .header("host", "x")
                .body(Full::new(Bytes::from_static(b"b")))
                .unwrap();
            statuses.push(h1(proxy, req).await.status.as_u16());
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 502]);
        assert_eq!(engine.active_requests(), 0);
    });
}

/// Upstream connections counted open for `backend` in the stats.
fn open_connections(engine: &Engine, backend: &str) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(&engine.stats_json()).unwrap();
    stats["upstream"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["backend"] == backend)
        .map(|u| u["connections_open"].as_u64().unwrap())
        .sum()
}

#[test]
fn sequential_requests_reuse_one_upstream_connection_each_way() {
    run(async {
        let s = setup().await;
        for i in 0..5 {
            // A body read to its end (HTTP/1.1 and HTTP/2 clients), and HEAD (no body at all).
            assert_eq!(h1(s.proxy, get("svc.test", &format!("/r{i}"))).await.status, 200);
            assert_eq!(h2(s.proxy, get2("svc.test", "/h2c/x")).await.status, 200);
            let head = Request::head("/r")
                .header("host", "svc.test")
                .body(Full::<Bytes>::default())
                .unwrap();
            assert_eq!(h1(s.proxy, head).await.status, 200);
        }
        assert_eq!(
            open_connections(&s.engine, "one"),
            1,
            "HTTP/1.1 upstream connection reused"
        );
        assert_eq!(open_connections(&s.engine, "two"), 1, "one HTTP/2 upstream connection");
    });
}

mod fastpath;
mod h2server;
mod headers;
mod resilience;
mod reuse;
mod server;
