//! `scan` answers only where `httparse` (default config) gives a complete head, and then the
//! same: length, line, every span; each name tagged as `tag_of` tags it. Checked on a table of
//! heads, every prefix of them, and every head made by changing, inserting or removing one
//! byte of them.

use super::*;

const MAX: usize = 100;

type Spans = Vec<[usize; 4]>;

fn spans_of(buf: &[u8], headers: &[httparse::Header<'_>]) -> Spans {
    let start = buf.as_ptr() as usize;
    headers
        .iter()
        .map(|h| {
            let n = h.name.as_ptr() as usize - start;
            let v = h.value.as_ptr() as usize - start;
            [n, n + h.name.len(), v, v + h.value.len()]
        })
        .collect()
}

/// `httparse`'s answer: `Some` only for a complete head.
fn httparse_request(buf: &[u8]) -> Option<(RequestLine, usize, Spans)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(buf) else {
        return None;
    };
    let start = buf.as_ptr() as usize;
    let span = |s: &[u8]| [s.as_ptr() as usize - start, s.as_ptr() as usize - start + s.len()];
    let line = RequestLine {
        method: span(req.method?.as_bytes()),
        target: span(req.path?.as_bytes()),
        version: req.version?,
    };
    Some((line, len, spans_of(buf, req.headers)))
}

fn httparse_response(buf: &[u8]) -> Option<(StatusLine, usize, Spans)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = resp.parse(buf) else {
        return None;
    };
    let line = StatusLine {
        code: resp.code?,
        version: resp.version?,
    };
    Some((line, len, spans_of(buf, resp.headers)))
}

fn spans(f: &Scanned) -> Spans {
    f.spans().collect()
}

/// The scanner's answer checked against `httparse`'s; whether it answered.
fn agrees(buf: &[u8]) -> [bool; 2] {
    [
        same(buf, |f| request(buf, MAX, f), httparse_request(buf)),
        same(buf, |f| response(buf, MAX, f), httparse_response(buf)),
    ]
}

/// When `scan` answers, `httparse` answered the same (`expected`); whether `scan` answered.
fn same<L: PartialEq + std::fmt::Debug>(
    buf: &[u8],
    scan: impl FnOnce(&mut Scanned) -> Option<(L, usize)>,
    expected: Option<(L, usize, Spans)>,
) -> bool {
    let mut f = Scanned::default();
    let Some((line, len)) = scan(&mut f) else {
        return false;
    };
    check_tags(buf, &f);
    assert_eq!(
        Some((line, len, spans(&f))),
        expected,
        "{:?}",
        String::from_utf8_lossy(buf)
    );
    true
}

fn check_tags(buf: &[u8], f: &Scanned) {
    let mut present = 0;
    for field in &f.fields {
        let name = &buf[field.name[0] as usize..field.name[1] as usize];
        assert_eq!(field.tag, tag_of(name), "{}", String::from_utf8_lossy(name));
        present |= bit(field.tag);
    }
    assert_eq!(f.present, present);
}

/// Heads the scanner reads itself (the common shapes, `h2load`'s, curl's and nginx's among them).
const READ: [&[u8]; 12] = [
    b"GET / HTTP/1.1\r\nhost: 127.0.0.1:29490\r\nuser-agent: h2load nghttp2/1.52.0\r\naccept: */*\r\n\r\n",
    b"GET /a/b?c=d&e=%20f HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"DELETE /x HTTP/1.0\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nX-Request-Id: 0f\r\n\r\n",
    b"M-SEARCH * HTTP/1.1\r\nx:\r\ny:   \r\nz: \t a \t b\t \r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 10:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n",
    b"HTTP/1.1 204\r\nx-a: 1\r\n\r\n",
    b"HTTP/1.0 404 Not\tFound  \r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 \r\nSet-Cookie: a=\xc3\xa9; Path=/\r\nset-cookie: b=2\r\nTE: trailers\r\n\r\n",
    b"HTTP/1.1 999 x\r\nX-Forwarded-Client-Cert: By=spiffe://a/b;Hash=00\r\nProxy-Authenticate: Basic\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
];

/// Heads `httparse` reads (or refuses) that are not of the common shape: the scanner leaves
/// each to it.
const LEFT: [&[u8]; 24] = [
    b"\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET / HTTP/1.1\nhost: x\n\n",
    b"GET / HTTP/1.1\r\nhost: x\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\r\n\n",
    b"GET /\xc3\xa9 HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET  / HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost : x\r\n\r\n",
    b"GET / HTTP/1.1\r\n host: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\x01y\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\x7fy\r\n\r\n",
    b"GET / HTTP/1.1\r\nho@st: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\ry\r\n\r\n",
    b"GET / HTTP/2.0\r\nhost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\r\n",
    b"G(T / HTTP/1.1\r\n\r\n",
    b" / HTTP/1.1\r\n\r\n",
    b"GET  HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 200 O\x80K\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 200\n\r\n",
    b"HTTP/1.1  200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx: 1\r\n\tfolded\r\n\r\n",
];

#[test]
fn common_heads_are_read_as_httparse_reads_them() {
    for head in READ {
        let [req, resp] = agrees(head);
        assert!(req || resp, "not read: {:?}", String::from_utf8_lossy(head));
    }
}

#[test]
fn every_other_shape_and_every_refusal_is_left_to_httparse() {
    for head in LEFT {
        assert_eq!(agrees(head), [false, false], "{:?}", String::from_utf8_lossy(head));
    }
}

#[test]
fn an_incomplete_head_is_left_to_httparse() {
    for head in READ {
        let end = httparse_request(head)
            .map(|r| r.1)
            .or(httparse_response(head).map(|r| r.1))
            .unwrap();
        for cut in 0..end {
            assert_eq!(
                agrees(&head[..cut]),
                [false, false],
                "{:?}",
                String::from_utf8_lossy(&head[..cut])
            );
        }
    }
}

#[test]
fn one_byte_changed_inserted_or_removed_anywhere_gives_httparse_answer_or_none() {
    const BYTES: [u8; 20] = [
        0, b'\t', b'\n', b'\r', b' ', b':', b'/', b'@', b'(', b',', b'"', b'a', b'Z', b'0', b'-', 0x7f, 0x80, 0xc3,
        0xff, 0x01,
    ];
    let mut read = 0;
    for head in READ.iter().chain(&LEFT) {
        for at in 0..head.len() {
            let mut removed = head.to_vec();
            removed.remove(at);
            read += usize::from(agrees(&removed).contains(&true));
            for b in BYTES {
                let mut changed = head.to_vec();
                changed[at] = b;
                read += usize::from(agrees(&changed).contains(&true));
                let mut inserted = head.to_vec();
                inserted.insert(at, b);
                read += usize::from(agrees(&inserted).contains(&true));
            }
        }
    }
    // Most single-byte changes leave a valid head (a letter for a letter), which is read.
    assert!(read > 10_000, "{read}");
}

#[test]
fn more_fields_than_the_limit_are_left_to_httparse() {
    let fields: String = (0..MAX).map(|i| format!("x-{i}: v\r\n")).collect();
    let at_limit = format!("GET / HTTP/1.1\r\n{fields}\r\n");
    assert_eq!(agrees(at_limit.as_bytes()), [true, false]);
    let over = format!("GET / HTTP/1.1\r\n{fields}x: 1\r\n\r\n");
    assert_eq!(agrees(over.as_bytes()), [false, false]);
    assert!(request(over.as_bytes(), MAX, &mut Scanned::default()).is_none());
}

#[test]
fn words_and_tails_are_read_alike_at_every_alignment() {
    // Values and targets of every length 0..40 (so every stop byte lands at every offset of a
    // word, and in the byte-by-byte tail), with the bytes that stop a scan in them.
    for n in 0..40 {
        let text = "a".repeat(n);
        for stop in ["", "\t", "\x01", "\x7f", "\u{e9}"] {
            let head = format!("GET /{text}{stop} HTTP/1.1\r\nx: {text}{stop}{text}\r\n\r\n");
            let [req, _] = agrees(head.as_bytes());
            assert_eq!(req, stop.is_empty(), "{head:?}");
            let head = format!("GET / HTTP/1.1\r\nx: {text}{stop}{text}\r\n\r\n");
            let [req, _] = agrees(head.as_bytes());
            assert_eq!(req, !matches!(stop, "\x01" | "\x7f"), "{head:?}");
            let head = format!("HTTP/1.1 200 {text}{stop}{text}\r\n\r\n");
            let [_, resp] = agrees(head.as_bytes());
            assert_eq!(resp, matches!(stop, "" | "\t"), "{head:?}");
        }
    }
}

#[test]
fn names_are_read_alike_at_every_alignment() {
    // Names of every length 1..30, with each kind of byte at every place in them: token bytes
    // outside letters, digits and `-` (read by the table), and bytes no name may hold.
    for n in 1..30 {
        for at in 0..n {
            for b in [
                b'_', b'.', b'~', b'!', b'Z', b'9', b'-', b'@', b'(', b'/', b' ', b'{', 0x80, 0xe1, b'\t',
            ] {
                let mut name = vec![b'a'; n];
                name[at] = b;
                let mut head = b"GET / HTTP/1.1\r\n".to_vec();
                head.extend_from_slice(&name);
                head.extend_from_slice(b": v\r\n\r\n");
                let [req, _] = agrees(&head);
                assert_eq!(req, TOKEN[usize::from(b)], "{:?}", String::from_utf8_lossy(&head));
                // At the very end of the buffer too (the last word read shifted).
                let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
                head.extend_from_slice(&name);
                head.extend_from_slice(b":\r\n\r\n");
                let [_, resp] = agrees(&head);
                assert_eq!(resp, TOKEN[usize::from(b)], "{:?}", String::from_utf8_lossy(&head));
            }
        }
    }
}
