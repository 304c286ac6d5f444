//! The downstream half of the fast path: plaintext HTTP/1.1 connections served without
//! hyper's server (and hyper-util's `auto` connection). Request heads are scanned
//! (`headers::raw::scan`; other shapes parsed with `httparse`) from a per-connection buffer (pipelined requests wait there for their turn),
//! a body of known, small length is read into memory, the request goes through the same
//! `Conn::handle` as hyper's, and the response head and body are written with one vectored
//! write when the body is already there. Keep-alive; a drain closes an idle connection at
//! once and a busy one after its response (`Connection: close` on it).
//!
//! What it does not serve is handed, with the bytes read so far, to hyper (`Handoff`), which
//! then serves the rest of the connection as before: HTTP/2 prior knowledge, anything
//! `httparse` or `http` refuses (hyper answers 400 or 431 as it always did), HTTP/1.0,
//! `CONNECT`, `Upgrade`, `Expect`, `Transfer-Encoding` and bodies over `MAX_BODY` (streamed
//! by hyper). The decision is taken before any byte of the request is answered.
//!
//! Switch: `FASTMESH_H1_SERVER=0` (or `FASTMESH_H1_FASTPATH=0`, which also turns off the
//! upstream half) serves every connection with hyper.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::CONNECTION;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::codec::Fields;
use super::conn::write_all;
use crate::body::ProxyBody;
use crate::headers::raw::scan::{self, RequestLine, Scanned};
use crate::headers::raw::{has_token, tag, Known, RawHeaders};
use crate::proxy::Conn;

/// Most headers a request may have (hyper's default; over it hyper answers 431).
const MAX_HEADERS: usize = 100;
/// Longest request head read here; a longer one goes to hyper (its limit is ~400 KiB).
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body read into memory here; longer ones go to hyper, which streams them.
pub const MAX_BODY: u64 = 64 * 1024;
const READ: usize = 8 * 1024;

/// Whether plaintext HTTP/1.1 connections are served here (read once per process).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| super::enabled() && std::env::var("FASTMESH_H1_SERVER").map_or(true, |v| v != "0"))
}

/// A connection for hyper to serve from here on: the socket, and the bytes read from it
/// that were not answered (they are read again first).
pub struct Handoff {
    pub io: TcpStream,
    pub read: Bytes,
}

/// A request head found in the buffer: where its parts are, and what follows it.
struct Head {
    len: usize,
    body: usize,
    method: [usize; 2],
    target: [usize; 2],
    close: bool,
    is_head_method: bool,
}

enum Parse {
    Complete(Head),
    Partial,
    /// Not for this server: hyper serves the connection from here.
    Decline,
}

/// Serves `io` until the client or a drain closes it; `Some` when hyper must take over.
pub async fn serve(mut io: TcpStream, conn: &Conn, drain: watch::Receiver<bool>) -> Option<Handoff> {
    let mut buf = BytesMut::with_capacity(READ);
    let mut fields = Scanned::default();
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut draining = false;
    // Made once per connection, not per request: a `changed()` future registers with the
    // watch's `Notify` when first polled and unregisters when dropped (~300 instructions per
    // request, callgrind). On a clone, so `drain` can still be read while it is pending.
    let mut watch = drain.clone();
    let mut drained = std::pin::pin!(watch.changed());
    loop {
        let head = loop {
            if !buf.is_empty() {
                match parse(&buf, &mut fields) {
                    Parse::Complete(h) if buf.len() >= h.len + h.body => break h,
                    Parse::Complete(_) | Parse::Partial => {}
                    Parse::Decline => return Some(Handoff { io, read: buf.freeze() }),
                }
            }
            // Between requests a drain closes the connection; within one it waits for the rest.
            let n = if buf.is_empty() && !draining {
                tokio::select! {
                    biased;
                    r = std::future::poll_fn(|cx| fill(&mut io, &mut buf, cx)) => r,
                    _ = &mut drained => { draining = true; continue; }
                }
            } else if buf.is_empty() {
                return None;
            } else {
                std::future::poll_fn(|cx| fill(&mut io, &mut buf, cx)).await
            };
            match n {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        let Some(req) = request(&mut buf, &head, &fields) else {
            let _ = write_all(&mut io, &mut &BAD_REQUEST[..]).await;
            return None;
        };
        let mut resp = conn.handle_boxed(req).await;
        let close = head.close || draining || *drain.borrow();
        if respond(&mut io, &mut out, &mut resp, head.is_head_method, close)
            .await
            .is_err()
            || close
        {
            return None;
        }
    }
}

const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Reads what the socket has into `buf`; `Ready(Ok(0))` at EOF.
fn fill(io: &mut TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ / 2 {
        buf.reserve(READ);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Finds a request head at the start of `buf` (nothing consumed); `fields` gets where its
/// header names and values are, tagged. The common shape is scanned in one pass
/// (`scan::request`); anything else is `httparse`'s to decide, as before.
fn parse(buf: &[u8], fields: &mut Scanned) -> Parse {
    let (line, len) = match scan::request(buf, MAX_HEADERS, fields) {
        Some(found) => found,
        None => match parse_slow(buf, fields) {
            Ok(found) => found,
            Err(p) => return p,
        },
    };
    if line.version != 1 || &buf[line.method[0]..line.method[1]] == b"CONNECT" {
        return Parse::Decline;
    }
    let mut body = 0u64;
    let mut close = false;
    if fields.has(tag::CONTENT_LENGTH)
        || fields.has(tag::CONNECTION)
        || fields.has(tag::TRANSFER_ENCODING)
        || fields.has(tag::EXPECT)
        || fields.has(tag::UPGRADE)
    {
        for (t, value) in fields.tagged(buf) {
            match t {
                tag::CONTENT_LENGTH => match parse_decimal(value.trim_ascii()) {
                    Some(n) if n <= MAX_BODY && (body == 0 || body == n) => body = n,
                    _ => return Parse::Decline,
                },
                tag::CONNECTION => close |= has_token(value, b"close"),
                tag::TRANSFER_ENCODING | tag::EXPECT | tag::UPGRADE => return Parse::Decline,
                _ => {}
            }
        }
    }
    Parse::Complete(Head {
        len,
        body: usize::try_from(body).expect("at most MAX_BODY"),
        method: line.method,
        target: line.target,
        close,
        is_head_method: &buf[line.method[0]..line.method[1]] == b"HEAD",
    })
}

/// `parse` by `httparse`: a head not in the shape `scan` reads (or not complete).
#[inline(never)] // keeps the header array out of `serve`'s future
fn parse_slow(buf: &[u8], fields: &mut Scanned) -> Result<(RequestLine, usize), Parse> {
    let mut raw = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, &mut raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Err(Parse::Partial),
        Ok(httparse::Status::Partial) | Err(_) => return Err(Parse::Decline),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Parse::Decline);
    };
    let start = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let at = s.as_ptr() as usize - start;
        [at, at + s.len()]
    };
    fields.from_spans(
        buf,
        req.headers.iter().map(|h| {
            let [n0, n1] = span(h.name.as_bytes());
            let [v0, v1] = span(h.value);
            [n0, n1, v0, v1]
        }),
    );
    let line = RequestLine {
        method: span(method.as_bytes()),
        target: span(target.as_bytes()),
        version,
    };
    Ok((line, len))
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter()
        .try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

/// Takes the request `head` found (and its body) off `buf`; the target and the header fields
/// stay slices of the read buffer, the fields as a block forwarded as bytes (`headers::raw`,
/// in the body: `ProxyBody::head`) until something needs a `HeaderMap`. `None`: a method or
/// target `http` refuses (400); the fields were checked by `httparse` as `http` would. Boxed
/// here, as `Conn::handle_boxed` takes it (it is never moved by value after this).
fn request(buf: &mut BytesMut, head: &Head, fields: &Scanned) -> Option<Box<Request<ProxyBody>>> {
    let bytes = buf.split_to(head.len).freeze();
    let body = (head.body > 0).then(|| buf.split_to(head.body).freeze());
    let method = Method::from_bytes(&bytes[head.method[0]..head.method[1]]).ok()?;
    let uri = Uri::from_maybe_shared(bytes.slice(head.target[0]..head.target[1])).ok()?;
    let mut body = ProxyBody::buffered(body, None);
    body.set_head(Some(std::sync::Arc::new(RawHeaders::scanned(bytes, fields))));
    let mut req = Box::new(Request::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    Some(req)
}

/// How the response body goes on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    /// `content-length`; a body that ends short of it (or would run past it) closes the
    /// connection after what fits, as hyper's server does, so the client is never left waiting.
    Length(u64),
    Chunked,
}

/// Writes `resp`: the head, and the body as its frames come. The head goes out with the first
/// frame when that one is ready (one write for a response whose body is in memory); else at
/// once, so the client sees the head while the body is awaited. `Err`: the connection can't
/// be used any more (a write failed, or the body failed after its head went out). `resp` is
/// borrowed, not moved (a response is ~250 bytes); its body ends (`finish`) where the request must.
async fn respond(
    io: &mut TcpStream,
    out: &mut Vec<u8>,
    resp: &mut Response<ProxyBody>,
    head_request: bool,
    close: bool,
) -> io::Result<()> {
    let status = resp.status();
    // Out of the response, so the body can be borrowed beside them (empty when `raw` has them).
    let map = std::mem::take(resp.headers_mut());
    let body = resp.body_mut();
    out.clear();
    let raw = body.take_raw_head();
    let fields = Fields {
        map: &map,
        raw: raw.as_ref(),
    };
    let framing = write_head(out, status, fields, body, head_request, close);
    if framing == Framing::None {
        // The request ends (its in-flight count, its upstream connection back to the pool)
        // before the client can see the answer.
        finish(body);
        return write_all(io, &mut &out[..]).await;
    }
    let allowed = framing == Framing::Chunked && fields.contains(Known::TRAILER);
    let declared = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut sent = 0u64;
    let mut head_sent = false;
    let mut trailers = None;
    loop {
        let frame = std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending if !head_sent => Poll::Ready(Next::Waiting),
            Poll::Pending => Poll::Pending,
            Poll::Ready(f) => Poll::Ready(Next::Frame(f)),
        })
        .await;
        let frame = match frame {
            Next::Waiting => {
                write_all(io, &mut &out[..]).await?;
                out.clear();
                head_sent = true;
                continue;
            }
            Next::Frame(None) => break,
            Next::Frame(Some(Ok(frame))) => frame,
            Next::Frame(Some(Err(e))) => return Err(io::Error::other(e)),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if allowed {
                    trailers = frame.into_trailers().ok();
                }
                continue;
            }
        };
        sent += data.len() as u64;
        if sent > declared {
            return Err(io::Error::other("response body longer than its content-length"));
        }
        let end = body.is_end_stream();
        if framing == Framing::Chunked && !data.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        let mut tail: &[u8] = b"";
        if framing == Framing::Chunked {
            tail = if data.is_empty() { b"" } else { b"\r\n" };
        }
        if end {
            // The rest of the message goes out with this frame.
            let mut last = Vec::new();
            last.extend_from_slice(tail);
            if framing == Framing::Chunked {
                finish_chunked(&mut last, trailers.take(), fields);
            }
            finish(body);
            write_all(io, &mut (&out[..]).chain(&data[..]).chain(&last[..])).await?;
            return complete(framing, sent);
        }
        write_all(io, &mut (&out[..]).chain(&data[..]).chain(tail)).await?;
        out.clear();
        head_sent = true;
    }
    if framing == Framing::Chunked {
        finish_chunked(out, trailers, fields);
    }
    if !out.is_empty() {
        write_all(io, &mut &out[..]).await?;
    }
    complete(framing, sent)
}

/// Ends a response body in place: dropped as if the response were (its in-flight count, its
/// upstream connection back to the pool when it was read to its end).
fn finish(body: &mut ProxyBody) {
    *body = ProxyBody::none();
}

/// `Err` (the connection closes) when a body with a `content-length` ended short of it.
fn complete(framing: Framing, sent: u64) -> io::Result<()> {
    match framing {
        Framing::Length(n) if n != sent => Err(io::Error::other("response body shorter than its content-length")),
        _ => Ok(()),
    }
}

enum Next {
    /// The body has no frame ready and the head is still unsent.
    Waiting,
    Frame(Option<Result<http_body::Frame<Bytes>, crate::body::BodyError>>),
}

/// The last chunk and the trailers the response's `Trailer` header announced (as hyper's
/// server does).
fn finish_chunked(dst: &mut Vec<u8>, trailers: Option<HeaderMap>, headers: Fields<'_>) {
    dst.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        let announced: Vec<HeaderName> = headers
            .get_all(Known::TRAILER)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for (name, value) in &trailers {
            if announced.contains(name) {
                write_header(dst, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    dst.extend_from_slice(b"\r\n");
}

fn write_header(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// The status line and headers as hyper's server writes them (names lower-case, a `date`
/// when there is none, `content-length` from the body when known, else chunked); how the body
/// follows. Fields kept as bytes go out as they came (their names' case, their order).
fn write_head(
    dst: &mut Vec<u8>,
    status: StatusCode,
    headers: Fields<'_>,
    body: &ProxyBody,
    head_request: bool,
    close: bool,
) -> Framing {
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    dst.extend_from_slice(b"\r\n");
    headers.write_to(dst, close.then_some(CONNECTION.as_str()));
    if !headers.contains(Known::DATE) {
        write_header(dst, b"date", &date());
    }
    if close {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if let Some(v) = headers.get(Known::CONTENT_LENGTH) {
        // Unreadable: the body runs until the connection closes.
        Framing::Length(parse_decimal(v.trim_ascii()).unwrap_or(u64::MAX))
    } else if bodiless {
        Framing::None
    } else if let Some(n) = body.size_hint().exact() {
        dst.extend_from_slice(b"content-length: ");
        dst.extend_from_slice(n.to_string().as_bytes());
        dst.extend_from_slice(b"\r\n");
        if n == 0 {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    dst.extend_from_slice(b"\r\n");
    if bodiless {
        Framing::None
    } else {
        framing
    }
}

/// The `date` header's value, formatted once a second per thread.
fn date() -> [u8; 29] {
    use std::cell::Cell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let (at, value) = c.get();
        if at == secs {
            return value;
        }
        let mut value = [0u8; 29];
        value.copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
        c.set((secs, value));
        value
    })
}

/// A connection handed to hyper: the bytes read already come first.
pub struct Rewind {
    read: Bytes,
    io: TcpStream,
}

impl From<Handoff> for Rewind {
    fn from(h: Handoff) -> Self {
        Rewind { read: h.read, io: h.io }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
