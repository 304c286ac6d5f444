//! The server on real loopback connections: the h2 crate's client (requests, bodies both ways
//! past every window, trailers, concurrency), and raw frames for what a client library would
//! not send (protocol errors, limits, resets, drain). Handlers are small closures here; the
//! engine's `Conn::handle` behind it is tested through `tests/` (pytest, h2spec).

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bytes::BufMut;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

type Reply = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;

/// Answers `path` with the path as body; `/echo` with the request body (and its trailers as
/// response trailers); `/big` with 3 MiB; `/wait` after 300 ms.
fn handler(req: Request<ProxyBody>) -> Reply {
    Box::pin(async move {
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/echo" => {
                let collected = req.into_body().collect().await.unwrap();
                let trailers = collected.trailers().cloned();
                let data = collected.to_bytes();
                Response::new(ProxyBody::buffered(Some(data), trailers))
            }
            "/big" => Response::new(ProxyBody::buffered(Some(Bytes::from(vec![b'x'; 3 << 20])), None)),
            "/huge" => Response::new(ProxyBody::buffered(Some(Bytes::from(vec![b'x'; 32 << 20])), None)),
            "/wait" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Response::new(ProxyBody::buffered(Some(Bytes::from_static(b"waited")), None))
            }
            "/cookie" => {
                let head = req.body().head().expect("fields as bytes");
                let all: Vec<&str> = head
                    .get_all("cookie")
                    .map(|v| std::str::from_utf8(v).unwrap())
                    .collect();
                Response::new(ProxyBody::buffered(Some(Bytes::from(all.join("|"))), None))
            }
            "/authority" => {
                let a = req.uri().authority().map_or("-", |a| a.as_str()).to_string();
                Response::new(ProxyBody::buffered(Some(Bytes::from(a)), None))
            }
            // The request's fields as the proxy gets them: a block written as `name: value` lines.
            "/fields" => {
                assert!(req.headers().is_empty(), "no HeaderMap built: {:?}", req.headers());
                let mut out = Vec::new();
                req.body().head().expect("fields as bytes").write_to(&mut out, None);
                Response::new(ProxyBody::buffered(Some(Bytes::from(out)), None))
            }
            _ => Response::new(ProxyBody::buffered(Some(Bytes::from(path)), None)),
        }
    })
}

/// A server on a loopback port serving one connection with `handler`; its drain sender.
async fn server(handler: fn(Request<ProxyBody>) -> Reply) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let (io, _) = listener.accept().await.unwrap();
        drive(Connection::new(io, b"", handler), rx).await;
    });
    (addr, tx)
}

async fn client(addr: std::net::SocketAddr) -> ::h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = ::h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    send.ready().await.unwrap()
}

async fn body_of(resp: ::h2::client::ResponseFuture) -> (http::StatusCode, Bytes, Option<HeaderMap>) {
    let resp = resp.await.unwrap();
    let status = resp.status();
    let mut body = resp.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap();
    (status, data.freeze(), trailers)
}

#[test]
fn concurrent_requests_on_one_connection_get_their_own_answers() {
    run(async {
        let (addr, _drain) = server(handler).await;
        let mut send = client(addr).await;
        let mut waiting = Vec::new();
        for i in 0..150 {
            let req = Request::get(format!("http://x/r{i}")).body(()).unwrap();
            send = send.ready().await.unwrap();
            let (resp, _) = send.send_request(req, true).unwrap();
            waiting.push((i, resp));
        }
        for (i, resp) in waiting {
            let (status, body, _) = body_of(resp).await;
            assert_eq!(status, 200);
            assert_eq!(body, format!("/r{i}"));
        }
    });
}

#[test]
fn bodies_longer_than_every_window_go_both_ways_with_trailers() {
    run(async {
        let (addr, _drain) = server(handler).await;
        let mut send = client(addr).await;
        // 3 MiB up (stream and connection windows 1 MiB: given back as the handler reads),
        // the same down (the client's windows are 64 KiB: the server waits for its updates).
        let payload = Bytes::from((0..3u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let (resp, mut stream) = send
            .send_request(Request::post("http://x/echo").body(()).unwrap(), false)
            .unwrap();
        let mut rest = payload.clone();
        while !rest.is_empty() {
            stream.reserve_capacity(rest.len().min(1 << 16));
            let n = std::future::poll_fn(|cx| stream.poll_capacity(cx))
                .await
                .unwrap()
                .unwrap();
            stream.send_data(rest.split_to(n.min(rest.len())), false).unwrap();
        }
        let mut t = HeaderMap::new();
        t.insert("x-checksum", HeaderValue::from_static("abc"));
        stream.send_trailers(t).unwrap();
        let (status, body, trailers) = body_of(resp).await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), payload.len());
        assert!(body == payload, "the body came back changed");
        assert_eq!(trailers.unwrap()["x-checksum"], "abc");
        // And a large response to a bodiless request, on the same connection.
        let (resp, _) = send
            .send_request(Request::get("http://x/big").body(()).unwrap(), true)
            .unwrap();
        assert_eq!(body_of(resp).await.1.len(), 3 << 20);
    });
}

// ---- raw frames ----

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    frame::head(&mut b, payload.len(), kind, flags, stream);
    b.put_slice(payload);
    b.to_vec()
}

/// A header block of literal fields (new names, not indexed).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for (n, v) in fields {
        b.put_u8(0);
        hpack::put_int(&mut b, 0, 7, n.len());
        b.put_slice(n.as_bytes());
        hpack::put_int(&mut b, 0, 7, v.len());
        b.put_slice(v.as_bytes());
    }
    b.to_vec()
}

/// A bodiless GET of `path` on `stream` (HEADERS with END_STREAM).
fn get(stream: u32, path: &str) -> Vec<u8> {
    let fields = [(":method", "GET"), (":scheme", "http"), (":path", path)];
    frame(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        stream,
        &block(&fields),
    )
}

const GET: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/a"),
    (":authority", "x"),
];

/// A frame the server sent: type, flags, stream, payload.
type Got = (u8, u8, u32, Vec<u8>);

/// Connects and sends the preface, SETTINGS with `settings` and `frames`.
async fn open(addr: std::net::SocketAddr, settings: &[u8], frames: &[Vec<u8>]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut input = frame::PREFACE.to_vec();
    input.extend(frame(frame::SETTINGS, 0, 0, settings));
    for f in frames {
        input.extend(f);
    }
    s.write_all(&input).await.unwrap();
    s
}

/// `open`, then the frames the server sent (type, flags, stream, payload) until it closed or
/// went quiet for 500 ms.
async fn raw(addr: std::net::SocketAddr, frames: &[Vec<u8>]) -> Vec<Got> {
    let mut s = open(addr, &[], frames).await;
    read_frames(&mut s).await
}

/// The whole frames at the start of `buf` (type, flags, stream, payload), and where they end.
fn parse_frames(buf: &[u8]) -> (Vec<Got>, usize) {
    let mut got = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 9 {
        let h = Head::parse(&buf[at..]);
        if buf.len() < at + 9 + h.len {
            break;
        }
        got.push((h.kind, h.flags, h.stream, buf[at + 9..at + 9 + h.len].to_vec()));
        at += 9 + h.len;
    }
    (got, at)
}

async fn read_frames(s: &mut TcpStream) -> Vec<Got> {
    let mut buf = Vec::new();
    loop {
        let mut chunk = vec![0u8; 65536];
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    parse_frames(&buf).0
}

/// The DATA payloads of stream `id`, joined.
fn data_of(frames: &[Got], id: u32) -> Vec<u8> {
    frames
        .iter()
        .filter(|f| f.0 == frame::DATA && f.2 == id)
        .flat_map(|f| f.3.clone())
        .collect()
}

fn goaway_code(frames: &[Got]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.0 == frame::GOAWAY)
        .map(|f| u32::from_be_bytes(f.3[4..8].try_into().unwrap()))
}

fn rst_code(frames: &[Got], stream: u32) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.0 == frame::RST_STREAM && f.2 == stream)
        .map(|f| u32::from_be_bytes(f.3[..4].try_into().unwrap()))
}

#[test]
fn settings_are_announced_and_acknowledged_and_pings_answered() {
    run(async {
        let (addr, _drain) = server(handler).await;
        let got = raw(addr, &[frame(frame::PING, 0, 0, b"12345678")]).await;
        let first = &got[0];
        assert_eq!((first.0, first.1), (frame::SETTINGS, 0));
        let values: Vec<(u16, u32)> = first
            .3
            .chunks(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect();
        assert!(values.contains(&(frame::SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS)));
        assert!(
            got.iter().any(|f| f.0 == frame::SETTINGS && f.1 == frame::ACK),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|f| f.0 == frame::PING && f.1 == frame::ACK && f.3 == b"12345678"),
            "{got:?}"
        );
        assert_eq!(goaway_code(&got), None);
    });
}

#[test]
#[allow(clippy::too_many_lines)] // one table of cases
fn connection_errors_send_goaway_with_their_code() {
    let headers =
        |stream: u32, flags: u8, fields: &[(&str, &str)]| frame(frame::HEADERS, flags, stream, &block(fields));
    let eh = frame::END_HEADERS | frame::END_STREAM;
    let cases: Vec<(&str, Vec<Vec<u8>>, Reason)> = vec![
        (
            "DATA on stream 0",
            vec![frame(frame::DATA, 0, 0, b"x")],
            Reason::Protocol,
        ),
        (
            "DATA on an idle stream",
            vec![frame(frame::DATA, 0, 5, b"x")],
            Reason::Protocol,
        ),
        ("HEADERS on stream 0", vec![headers(0, eh, GET)], Reason::Protocol),
        ("even stream id", vec![headers(2, eh, GET)], Reason::Protocol),
        (
            "stream id going down",
            vec![headers(5, eh, GET), headers(3, eh, GET)],
            Reason::Protocol,
        ),
        (
            "another frame inside a header block",
            vec![
                headers(1, frame::END_STREAM, GET),
                frame(frame::PING, 0, 0, b"12345678"),
            ],
            Reason::Protocol,
        ),
        (
            "CONTINUATION without HEADERS",
            vec![frame(frame::CONTINUATION, frame::END_HEADERS, 1, &block(GET))],
            Reason::Protocol,
        ),
        (
            "invalid HPACK",
            vec![frame(frame::HEADERS, eh, 1, &[0x80])],
            Reason::Compression,
        ),
        (
            "frame over SETTINGS_MAX_FRAME_SIZE",
            vec![frame(frame::DATA, 0, 1, &[0; 16_385])],
            Reason::FrameSize,
        ),
        (
            "PING of 7 bytes",
            vec![frame(frame::PING, 0, 0, b"1234567")],
            Reason::FrameSize,
        ),
        (
            "SETTINGS of 5 bytes",
            vec![frame(frame::SETTINGS, 0, 0, &[0; 5])],
            Reason::FrameSize,
        ),
        (
            "SETTINGS_ENABLE_PUSH 2",
            vec![frame(frame::SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2])],
            Reason::Protocol,
        ),
        (
            "initial window over 2^31-1",
            vec![frame(frame::SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0])],
            Reason::FlowControl,
        ),
        (
            "max frame size below 16384",
            vec![frame(frame::SETTINGS, 0, 0, &[0, 5, 0, 0, 0x3f, 0xff])],
            Reason::Protocol,
        ),
        (
            "WINDOW_UPDATE of 0 on the connection",
            vec![frame(frame::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0])],
            Reason::Protocol,
        ),
        (
            "connection window over 2^31-1",
            vec![frame(frame::WINDOW_UPDATE, 0, 0, &[0x7f, 0xff, 0xff, 0xff])],
            Reason::FlowControl,
        ),
        (
            "RST_STREAM on an idle stream",
            vec![frame(frame::RST_STREAM, 0, 9, &[0, 0, 0, 8])],
            Reason::Protocol,
        ),
        (
            "PUSH_PROMISE from a client",
            vec![frame(frame::PUSH_PROMISE, frame::END_HEADERS, 1, &[0, 0, 0, 2])],
            Reason::Protocol,
        ),
        (
            "padding as long as the frame",
            vec![frame(frame::DATA, frame::PADDED, 1, &[5, 0, 0])],
            Reason::Protocol,
        ),
    ];
    run(async {
        for (what, frames, want) in cases {
            let (addr, _drain) = server(handler).await;
            let got = raw(addr, &frames).await;
            assert_eq!(goaway_code(&got), Some(want as u32), "{what}: {got:?}");
        }
    });
}

#[test]
fn malformed_requests_are_reset_and_the_connection_goes_on() {
    let with = |extra: (&'static str, &'static str)| {
        let mut f = GET.to_vec();
        f.push(extra);
        f
    };
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("upper-case name", with(("X-Up", "1"))),
        ("connection header", with(("connection", "keep-alive"))),
        ("te other than trailers", with(("te", "gzip"))),
        ("unknown pseudo-header", with((":foo", "1"))),
        ("response pseudo-header", with((":status", "200"))),
        ("no :path", vec![(":method", "GET"), (":scheme", "http")]),
        (
            "empty :path",
            vec![(":method", "GET"), (":scheme", "http"), (":path", "")],
        ),
        (
            "duplicate :method",
            vec![
                (":method", "GET"),
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
            ],
        ),
        (
            "pseudo after regular",
            vec![(":method", "GET"), ("x", "1"), (":scheme", "http"), (":path", "/")],
        ),
        ("content-length with END_STREAM", with(("content-length", "3"))),
        // Values go into an HTTP/1.1 head as they are: what `HeaderValue` refuses is refused.
        ("CR LF in a value", with(("x-a", "1\r\nx-injected: 1"))),
        ("NUL in a value", with(("x-a", "1\u{0}"))),
        ("DEL in a value", with(("x-a", "\u{7f}"))),
        ("CR LF in a cookie crumb", with(("cookie", "a=1\r\nx: 1"))),
    ];
    run(async {
        for (what, fields) in cases {
            let (addr, _drain) = server(handler).await;
            let eh = frame::END_HEADERS | frame::END_STREAM;
            let got = raw(
                addr,
                &[
                    frame(frame::HEADERS, eh, 1, &block(&fields)),
                    frame(frame::HEADERS, eh, 3, &block(GET)),
                ],
            )
            .await;
            assert_eq!(rst_code(&got, 1), Some(Reason::Protocol as u32), "{what}: {got:?}");
            assert!(
                got.iter().any(|f| f.0 == frame::HEADERS && f.2 == 3),
                "{what}: stream 3 answered: {got:?}"
            );
            assert_eq!(goaway_code(&got), None, "{what}");
        }
    });
}

#[test]
fn a_header_list_over_the_limits_is_answered_431() {
    let many: Vec<(String, String)> = (0..=MAX_FIELDS).map(|i| (format!("x-h{i}"), "v".to_string())).collect();
    let long = vec![("x-long".to_string(), "v".repeat(MAX_LIST_SIZE))];
    run(async {
        for extra in [many, long] {
            let (addr, _drain) = server(handler).await;
            let mut fields: Vec<(&str, &str)> = GET.to_vec();
            fields.extend(extra.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let mut blk = block(&fields);
            // Longer than a frame: HEADERS and CONTINUATIONs.
            let rest = blk.split_off(blk.len().min(16_000));
            let mut frames = vec![frame(frame::HEADERS, frame::END_STREAM, 1, &blk)];
            for (i, c) in rest.chunks(16_000).enumerate() {
                let last = (i + 1) * 16_000 >= rest.len();
                frames.push(frame(
                    frame::CONTINUATION,
                    if last { frame::END_HEADERS } else { 0 },
                    1,
                    c,
                ));
            }
            if rest.is_empty() {
                frames[0] = frame(frame::HEADERS, frame::END_STREAM | frame::END_HEADERS, 1, &blk);
            }
            frames.push(get(3, "/after"));
            let got = raw(addr, &frames).await;
            let answer = got
                .iter()
                .find(|f| f.0 == frame::HEADERS && f.2 == 1)
                .expect("stream 1 answered");
            let mut out = Vec::new();
            hpack::Decoder::new(4096)
                .decode(&Bytes::from(answer.3.clone()), &mut out)
                .unwrap();
            assert_eq!(out[0].1, "431");
            assert!(got.iter().any(|f| f.0 == frame::DATA && f.2 == 3), "{got:?}");
            assert_eq!(goaway_code(&got), None);
        }
    });
}

#[test]
fn cookie_crumbs_are_joined_into_one_field() {
    run(async {
        let (addr, _drain) = server(handler).await;
        let fields = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/cookie"),
            ("cookie", "a=1"),
            ("x-other", "1"),
            ("cookie", "b=2"),
        ];
        let eh = frame::END_HEADERS | frame::END_STREAM;
        let got = raw(addr, &[frame(frame::HEADERS, eh, 1, &block(&fields))]).await;
        assert_eq!(String::from_utf8(data_of(&got, 1)).unwrap(), "a=1; b=2");
    });
}

#[test]
fn regular_fields_go_to_the_handler_as_a_block_in_order_with_duplicates() {
    run(async {
        let (addr, _drain) = server(handler).await;
        let fields = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/fields"),
            (":authority", "x.test"),
            ("x-b", "2"),
            ("accept", "*/*"),
            ("cookie", "a=1"),
            ("x-b", "1"),
            ("te", "trailers"),
            ("x-tab", "a\tb \u{80}"),
            ("cookie", "b=2"),
        ];
        let eh = frame::END_HEADERS | frame::END_STREAM;
        let got = raw(addr, &[frame(frame::HEADERS, eh, 1, &block(&fields))]).await;
        // Pseudo-headers left out, the cookie crumbs joined at the end.
        assert_eq!(
            data_of(&got, 1),
            b"x-b: 2\r\naccept: */*\r\nx-b: 1\r\nte: trailers\r\nx-tab: a\tb \xc2\x80\r\ncookie: a=1; b=2\r\n"
        );
    });
}

#[test]
fn content_length_must_match_the_data() {
    run(async {
        let (addr, _drain) = server(handler).await;
        let mut post = vec![(":method", "POST"), (":scheme", "http"), (":path", "/echo")];
        post.push(("content-length", "4"));
        let got = raw(
            addr,
            &[
                frame(frame::HEADERS, frame::END_HEADERS, 1, &block(&post)),
                frame(frame::DATA, frame::END_STREAM, 1, b"abc"),
                frame(frame::HEADERS, frame::END_HEADERS, 3, &block(&post)),
                frame(frame::DATA, frame::PADDED | frame::END_STREAM, 3, b"\x02abcdxx"),
            ],
        )
        .await;
        assert_eq!(rst_code(&got, 1), Some(Reason::Protocol as u32), "{got:?}");
        // Stream 3: 4 bytes behind padding, echoed.
        assert_eq!(data_of(&got, 3), b"abcd");
    });
}

#[test]
fn responses_wait_for_the_clients_window() {
    run(async {
        let (addr, _drain) = server(handler).await;
        // Initial window 5: of the 9-byte body "/abcdefgh", 5 go out.
        let mut s = open(addr, &[0, 4, 0, 0, 0, 5], &[get(1, "/abcdefgh")]).await;
        let got = read_frames(&mut s).await;
        let data: Vec<_> = got.iter().filter(|f| f.0 == frame::DATA).collect();
        assert_eq!(data.len(), 1, "{got:?}");
        assert_eq!(data[0].3, b"/abcd");
        assert_eq!(data[0].1 & frame::END_STREAM, 0);
        // A negative window: SETTINGS to 2 takes the stream to -3; +4 lets one byte through.
        s.write_all(&frame(frame::SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 2]))
            .await
            .unwrap();
        s.write_all(&frame(frame::WINDOW_UPDATE, 0, 1, &[0, 0, 0, 4]))
            .await
            .unwrap();
        let got = read_frames(&mut s).await;
        let data: Vec<_> = got.iter().filter(|f| f.0 == frame::DATA).collect();
        assert_eq!(data.len(), 1, "{got:?}");
        assert_eq!(data[0].3, b"e");
        s.write_all(&frame(frame::WINDOW_UPDATE, 0, 1, &[0, 0, 0, 100]))
            .await
            .unwrap();
        let got = read_frames(&mut s).await;
        let last = got.iter().find(|f| f.0 == frame::DATA).unwrap();
        assert_eq!(last.3, b"fgh");
        assert_eq!(last.1 & frame::END_STREAM, frame::END_STREAM);
    });
}

#[test]
fn streams_over_the_concurrency_limit_are_refused() {
    run(async {
        let (addr, _drain) = server(handler).await;
        let wait = [(":method", "GET"), (":scheme", "http"), (":path", "/wait")];
        let frames: Vec<Vec<u8>> = (0..=MAX_CONCURRENT_STREAMS)
            .map(|i| {
                frame(
                    frame::HEADERS,
                    frame::END_HEADERS | frame::END_STREAM,
                    2 * i + 1,
                    &block(&wait),
                )
            })
            .collect();
        let got = raw(addr, &frames).await;
        let refused = 2 * MAX_CONCURRENT_STREAMS + 1;
        assert_eq!(rst_code(&got, refused), Some(Reason::RefusedStream as u32));
        let answered = got.iter().filter(|f| f.0 == frame::HEADERS).count();
        assert_eq!(answered, MAX_CONCURRENT_STREAMS as usize);
    });
}

static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct Guard;
impl Drop for Guard {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

fn never(_: Request<ProxyBody>) -> Reply {
    Box::pin(async {
        let _g = Guard;
        std::future::pending::<()>().await;
        unreachable!()
    })
}

#[test]
fn a_reset_stream_drops_its_handler() {
    run(async {
        let (addr, _drain) = server(never).await;
        let mut s = open(addr, &[], &[get(1, "/a")]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(DROPPED.load(Ordering::SeqCst), 0);
        s.write_all(&frame(frame::RST_STREAM, 0, 1, &[0, 0, 0, 8]))
            .await
            .unwrap();
        let got = read_frames(&mut s).await;
        assert_eq!(DROPPED.load(Ordering::SeqCst), 1);
        // The reset ends the stream only, not the connection.
        assert_eq!(goaway_code(&got), None, "{got:?}");
    });
}

#[test]
fn a_drain_sends_goaway_and_lets_the_stream_in_flight_finish() {
    run(async {
        let (addr, drain) = server(handler).await;
        let mut s = open(addr, &[], &[get(1, "/wait")]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drain.send_replace(true);
        // A stream opened after the GOAWAY is not served.
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(&get(3, "/a")).await.unwrap();
        let mut all = Vec::new();
        let mut closed = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            let mut chunk = vec![0u8; 4096];
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
        assert!(closed, "the connection closes once the stream is done");
        let (frames, _) = parse_frames(&all);
        let goaway = frames.iter().position(|f| f.0 == frame::GOAWAY).expect("GOAWAY");
        assert_eq!(
            &frames[goaway].3[..],
            &[0, 0, 0, 1, 0, 0, 0, 0],
            "last stream 1, NO_ERROR"
        );
        let data = frames
            .iter()
            .position(|f| f.0 == frame::DATA && f.2 == 1)
            .expect("stream 1 answered");
        assert!(data > goaway);
        assert_eq!(frames[data].3, b"waited");
        assert!(!frames.iter().any(|f| f.2 == 3), "{frames:?}");
    });
}

#[test]
fn reading_resumes_after_a_large_response_filled_the_socket() {
    run(async {
        let (addr, _drain) = server(handler).await;
        // Windows larger than the response: all 32 MiB is queued at once (over MAX_QUEUED), the
        // socket takes a part, and reading pauses until it took the rest.
        let grow = frame(frame::WINDOW_UPDATE, 0, 0, &0x7fff_0000u32.to_be_bytes());
        let mut s = open(addr, &[0, 4, 0x7f, 0xff, 0xff, 0xff], &[grow, get(1, "/huge")]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Read the whole response (to its END_STREAM), then ask again on the same connection.
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed");
            buf.extend_from_slice(&chunk[..n]);
            let (frames, at) = parse_frames(&buf);
            if frames
                .iter()
                .any(|f| f.0 == frame::DATA && f.1 & frame::END_STREAM != 0)
            {
                assert_eq!(at, buf.len());
                break;
            }
        }
        s.write_all(&get(3, "/next")).await.unwrap();
        let frames = read_frames(&mut s).await;
        assert!(
            frames.iter().any(|f| f.0 == frame::DATA && f.2 == 3 && f.3 == b"/next"),
            "stream 3 answered"
        );
    });
}

#[test]
fn connection_specific_names_are_recognised_in_any_case() {
    for n in [
        "connection",
        "Connection",
        "TRANSFER-ENCODING",
        "Upgrade",
        "keep-alive",
        "Proxy-Connection",
    ] {
        assert!(raw_connection_specific(n.as_bytes()), "{n}");
        let lower = HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).unwrap();
        assert!(connection_specific(&lower), "{n}");
    }
    for n in [
        "connections",
        "content-type",
        "te",
        "upgrade-insecure-requests",
        "keep-alivf",
    ] {
        assert!(!raw_connection_specific(n.as_bytes()), "{n}");
    }
}

#[test]
fn each_request_has_its_own_authority_checked() {
    // The connection keeps the last `:authority` parsed: the same bytes again reuse it, other
    // bytes are parsed (and refused when invalid) whatever came before.
    run(async {
        let (addr, _drain) = server(handler).await;
        let req = |authority: &'static str| {
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/authority"),
                (":authority", authority),
            ]
        };
        let eh = frame::END_HEADERS | frame::END_STREAM;
        let streams = [
            (1, "a.test"),
            (3, "a.test"),
            (5, "b.test:8080"),
            (7, "bad authority"),
            (9, "a.test"),
        ];
        let frames: Vec<Vec<u8>> = streams
            .iter()
            .map(|&(id, a)| frame(frame::HEADERS, eh, id, &block(&req(a))))
            .collect();
        let got = raw(addr, &frames).await;
        let body = |id: u32| String::from_utf8(data_of(&got, id)).unwrap();
        assert_eq!(body(1), "a.test");
        assert_eq!(body(3), "a.test");
        assert_eq!(body(5), "b.test:8080");
        assert_eq!(rst_code(&got, 7), Some(Reason::Protocol as u32), "{got:?}");
        assert_eq!(body(9), "a.test");
        assert_eq!(goaway_code(&got), None);
    });
}

#[test]
fn field_values_by_words_are_checked_as_byte_by_byte() {
    let byte_ok = |b: u8| b >= b' ' && b != 0x7f || b == b'\t';
    for len in [1usize, 7, 8, 9, 16, 23] {
        for at in 0..len {
            for b in 0..=255u8 {
                let mut v = vec![b'a'; len];
                v[at] = b;
                assert_eq!(field_value(&v), byte_ok(b), "{v:?}");
                // And beside a tab, which needs the byte look.
                v[(at + 1) % len] = b'\t';
                assert_eq!(field_value(&v), v.iter().all(|&c| byte_ok(c)), "{v:?}");
            }
        }
    }
    assert!(field_value(b""));
}

#[test]
fn a_header_block_longer_than_a_frame_goes_on_in_continuations() {
    let block: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let mut out = BytesMut::new();
    write_headers(&mut out, 3, &block, true, 16_384);
    let (got, used) = parse_frames(&out);
    assert_eq!(used, out.len());
    let layout: Vec<(u8, u8, u32, usize)> = got.iter().map(|f| (f.0, f.1, f.2, f.3.len())).collect();
    assert_eq!(
        layout,
        [
            (frame::HEADERS, frame::END_STREAM, 3, 16_384),
            (frame::CONTINUATION, 0, 3, 16_384),
            (frame::CONTINUATION, frame::END_HEADERS, 3, 7_232),
        ]
    );
    assert_eq!(got.iter().flat_map(|f| f.3.clone()).collect::<Vec<u8>>(), block);
    // One that fits: a single HEADERS frame with both flags.
    let mut out = BytesMut::new();
    write_headers(&mut out, 5, &block[..16_384], true, 16_384);
    let (got, _) = parse_frames(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0, got[0].1, got[0].3.len()),
        (frame::HEADERS, frame::END_STREAM | frame::END_HEADERS, 16_384)
    );
}

/// The server's side of an in-memory connection, each write kept (to see what went out together).
struct Recorded {
    io: tokio::io::DuplexStream,
    writes: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl AsyncRead for Recorded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recorded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = done {
            self.writes.lock().unwrap().push(buf[..n].to_vec());
        }
        done
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.as_mut().poll_write(cx, &all)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[test]
fn an_answer_that_comes_while_the_first_waits_for_the_reactor_goes_out_in_the_same_write() {
    run(async {
        let (client, server_io) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx_a, rx_a) = tokio::sync::oneshot::channel::<()>();
        let (tx_b, rx_b) = tokio::sync::oneshot::channel::<()>();
        let waits = Arc::new(std::sync::Mutex::new(vec![("/b", rx_b), ("/a", rx_a)]));
        let handler = move |req: Request<ProxyBody>| -> Reply {
            let path = req.uri().path().to_string();
            let mut waits = waits.lock().unwrap();
            let at = waits.iter().position(|(p, _)| *p == path).expect("a known path");
            let (_, rx) = waits.remove(at);
            Box::pin(async move {
                rx.await.unwrap();
                Response::new(ProxyBody::buffered(Some(Bytes::from(path)), None))
            })
        };
        let (_drain_tx, drain) = watch::channel(false);
        let io = Recorded {
            io: server_io,
            writes: writes.clone(),
        };
        tokio::spawn(drive(Connection::new(io, b"", handler), drain));
        let (mut read, mut write) = tokio::io::split(client);
        let mut input = frame::PREFACE.to_vec();
        input.extend(frame(frame::SETTINGS, 0, 0, &[]));
        input.extend(get(1, "/a"));
        input.extend(get(3, "/b"));
        write.write_all(&input).await.unwrap();
        // Both requests read and their handlers waiting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = writes.lock().unwrap().len();
        // /a is answered; /b's answer comes in the very next turn of the runtime, after one
        // poll of its reactor (this task's `yield_now` is woken there, as a deferred wake-up is).
        tx_a.send(()).unwrap();
        tokio::task::yield_now().await;
        tx_b.send(()).unwrap();
        let mut buf = Vec::new();
        loop {
            let frames = parse_frames(&buf).0;
            if !data_of(&frames, 1).is_empty() && !data_of(&frames, 3).is_empty() {
                break;
            }
            let mut chunk = vec![0u8; 65536];
            let n = tokio::time::timeout(Duration::from_secs(5), read.read(&mut chunk))
                .await
                .expect("both answers within 5 s")
                .unwrap();
            assert!(n > 0, "the server closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        let answers: Vec<Vec<Got>> = writes.lock().unwrap()[before..]
            .iter()
            .map(|w| parse_frames(w).0)
            .filter(|frames| frames.iter().any(|f| f.0 == frame::HEADERS))
            .collect();
        assert_eq!(answers.len(), 1, "both answers in one write: {answers:?}");
        assert_eq!(data_of(&answers[0], 1), b"/a");
        assert_eq!(data_of(&answers[0], 3), b"/b");
    });
}
