//! `serve` on a real loopback connection, with an engine that has no routes (every request
//! is answered 404 by the engine itself): what it answers, and what it hands to hyper.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::proxy::Proxy;
use crate::snapshot::Snapshot;
use crate::stats::Stats;

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The client writes `input` and half-closes; returns what the server wrote until it closed,
/// and the bytes it handed over (`None`: it closed the connection itself).
async fn exchange(input: &'static [u8], drain: watch::Receiver<bool>) -> (String, Option<Bytes>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(input).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        String::from_utf8(got).unwrap()
    });
    let (io, peer) = listener.accept().await.unwrap();
    let proxy = Proxy {
        snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
        stats: Arc::new(Stats::default()),
    };
    let conn = Conn::new(proxy, peer.ip(), addr, None);
    let handoff = serve(io, &conn, drain).await;
    let read = handoff.map(|h| h.read);
    (client.await.unwrap(), read)
}

fn responses(out: &str) -> usize {
    out.matches("HTTP/1.1 404 Not Found\r\n").count()
}

#[test]
fn pipelined_requests_with_bodies_are_answered_in_order() {
    run(async {
        let (_tx, rx) = watch::channel(false);
        let input = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n\
            POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /d HTTP/1.1\r\nhost: x\r\n\r\n";
        let (out, handoff) = exchange(input, rx).await;
        assert!(handoff.is_none(), "{handoff:?}");
        assert_eq!(responses(&out), 4, "{out}");
        assert!(!out.contains("400"), "{out}");
        // Each answer: the engine's 404, an empty body, a date, kept alive.
        let first = out.split("\r\n\r\n").next().unwrap();
        assert!(first.contains("content-length: 0\r\n"), "{first}");
        assert!(first.contains("\r\ndate: "), "{first}");
        assert!(!out.contains("connection: close"), "{out}");
    });
}

#[test]
fn what_it_does_not_serve_goes_to_hyper_with_every_byte_unanswered() {
    let first = "GET /first HTTP/1.1\r\nhost: x\r\n\r\n";
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many: &'static str = Box::leak(format!("GET / HTTP/1.1\r\n{many}\r\n").into_boxed_str());
    let cases: [&'static str; 10] = [
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "CONNECT x:443 HTTP/1.1\r\nhost: x:443\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
        "GARBAGE\r\n\r\n",
        many,
    ];
    for case in cases {
        run(async {
            let (_tx, rx) = watch::channel(false);
            let input: &'static [u8] = Box::leak(format!("{first}{case}").into_bytes().into_boxed_slice());
            let (out, handoff) = exchange(input, rx).await;
            assert_eq!(responses(&out), 1, "{case}: {out}");
            assert_eq!(handoff.as_deref(), Some(case.as_bytes()), "{case}");
        });
    }
}

#[test]
fn a_request_head_split_across_reads_is_served() {
    run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            for part in [
                &b"GET / HT"[..],
                b"TP/1.1\r\nhost: x\r\ncontent-le",
                b"ngth: 3\r\n\r\na",
                b"bc",
            ] {
                s.write_all(part).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            s.shutdown().await.unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).await.unwrap();
            got
        });
        let (io, peer) = listener.accept().await.unwrap();
        let proxy = Proxy {
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            stats: Arc::new(Stats::default()),
        };
        let conn = Conn::new(proxy, peer.ip(), addr, None);
        let (_tx, rx) = watch::channel(false);
        assert!(serve(io, &conn, rx).await.is_none());
        assert_eq!(responses(&client.await.unwrap()), 1);
    });
}

#[test]
fn connection_close_ends_the_connection_after_its_answer() {
    run(async {
        let (_tx, rx) = watch::channel(false);
        let input = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\nGET /never HTTP/1.1\r\nhost: x\r\n\r\n";
        let (out, handoff) = exchange(input, rx).await;
        assert!(handoff.is_none());
        assert_eq!(responses(&out), 1, "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
    });
}

#[test]
fn a_drain_closes_an_idle_connection_and_answers_the_next_request_with_close() {
    run(async {
        // Drained before any request arrived: the connection closes without an answer.
        let (tx, rx) = watch::channel(false);
        tx.send_replace(true);
        let mut rx_seen = rx.clone();
        rx_seen.mark_changed();
        let (out, handoff) = exchange(b"", rx_seen).await;
        assert!(handoff.is_none());
        assert_eq!(out, "");
        // Drained while a request is being served (the change already seen): it is answered,
        // with close, and the next one is not.
        let mut rx = rx;
        rx.borrow_and_update();
        let (out, _) = exchange(
            b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET /2 HTTP/1.1\r\nhost: x\r\n\r\n",
            rx,
        )
        .await;
        assert_eq!(responses(&out), 1, "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
    });
}

/// The server's head parser before the scanner (httparse, names compared one by one), kept
/// as the oracle: what it decided (`None`: partial; `Some(None)`: declined; else the head's
/// length, body length, method, target, close, HEAD, and the field spans).
#[allow(clippy::type_complexity)]
fn old_parse(buf: &[u8]) -> Option<Option<(usize, usize, [usize; 2], [usize; 2], bool, bool, Vec<[usize; 4]>)>> {
    use http::header::{EXPECT, TRANSFER_ENCODING, UPGRADE};
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return None,
        Ok(httparse::Status::Partial) | Err(_) => return Some(None),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Some(None);
    };
    if req.version != Some(1) || method == "CONNECT" {
        return Some(None);
    }
    let start = buf.as_ptr() as usize;
    let span = |s: &[u8]| [s.as_ptr() as usize - start, s.as_ptr() as usize - start + s.len()];
    let (mut body, mut close, mut spans) = (0u64, false, Vec::new());
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match parse_decimal(h.value.trim_ascii()) {
                Some(n) if n <= MAX_BODY && (body == 0 || body == n) => body = n,
                _ => return Some(None),
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if [TRANSFER_ENCODING, EXPECT, UPGRADE]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_str().as_bytes()))
        {
            return Some(None);
        }
        let [n0, n1] = span(name);
        let [v0, v1] = span(h.value);
        spans.push([n0, n1, v0, v1]);
    }
    let head = (
        len,
        body as usize,
        span(method.as_bytes()),
        span(target.as_bytes()),
        close,
        method == "HEAD",
        spans,
    );
    Some(Some(head))
}

#[test]
fn heads_are_served_declined_or_awaited_as_before_the_scanner() {
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let hundred: String = (0..100).map(|i| format!("x-h{i}: v\r\n")).collect();
    let long = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let table: Vec<String> = [
        "GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        "HEAD /h?q HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: x\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nCONTENT-LENGTH: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5, 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\r\nUpgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\r\nconnection: closed\r\nproxy-connection: close\r\n\r\n",
        "GET / HTTP/1.0\r\nhost: x\r\n\r\n",
        "CONNECT x:443 HTTP/1.1\r\nhost: x:443\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n",
        "GET / HTTP/1.1\nhost: x\ncontent-length: 1\n\nz",
        "GET / HTTP/1.1\r\nhost: x\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\x01\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\x7f\r\n\r\n",
        "GET / HTTP/1.1\r\nho st: x\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: caf\u{e9}\r\n\r\n",
        "GET /caf\u{e9} HTTP/1.1\r\nhost: x\r\n\r\n",
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: x\r\n",
        &format!("GET / HTTP/1.1\r\n{many}\r\n"),
        &format!("GET / HTTP/1.1\r\n{hundred}\r\n"),
        &long,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for head in &table {
        let buf = head.as_bytes();
        for cut in (0..=buf.len()).filter(|&c| c == buf.len() || c < 300) {
            let buf = &buf[..cut];
            let mut fields = Scanned::default();
            let new = match parse(buf, &mut fields) {
                Parse::Partial => None,
                Parse::Decline => Some(None),
                Parse::Complete(h) => {
                    let spans: Vec<[usize; 4]> = fields.spans().collect();
                    Some(Some((
                        h.len,
                        h.body,
                        h.method,
                        h.target,
                        h.close,
                        h.is_head_method,
                        spans,
                    )))
                }
            };
            assert_eq!(new, old_parse(buf), "{:?}", String::from_utf8_lossy(buf));
        }
    }
}
