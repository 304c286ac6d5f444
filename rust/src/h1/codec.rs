//! HTTP/1.1 bytes on the upstream side: the request head written from a `HeaderMap`, the
//! response head scanned (`headers::raw::scan`, else parsed with `httparse`), the response body's framing (RFC 9112 section 6.3)
//! and a chunked decoder that finds where a chunked body ends.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use std::io;

use crate::headers::raw::scan::{self, Scanned, StatusLine};
use crate::headers::raw::{Known, Name, RawHeaders};

/// Most headers a response (or its trailers) may have, as hyper's default.
const MAX_HEADERS: usize = 100;
/// Largest response head (or chunk-size line plus trailers) kept while waiting for its end.
pub const MAX_HEAD: usize = 64 * 1024;

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A message's header fields: its `HeaderMap`, and those still kept as bytes (`headers::raw`;
/// the map is empty then, or holds what was added to it).
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    pub map: &'a HeaderMap,
    pub raw: Option<&'a RawHeaders>,
}

impl<'a> Fields<'a> {
    pub fn map(map: &'a HeaderMap) -> Self {
        Fields { map, raw: None }
    }

    /// The values of `name` (lower-case): the map's, then the raw ones.
    pub fn get_all<N: Name<'a>>(self, name: N) -> impl Iterator<Item = &'a [u8]> + 'a {
        // An empty map (fields kept as bytes) is not asked: it would parse `name` first.
        let map =
            (!self.map.is_empty()).then(|| self.map.get_all(name.as_str()).into_iter().map(HeaderValue::as_bytes));
        map.into_iter()
            .flatten()
            .chain(self.raw.into_iter().flat_map(move |r| r.get_all(name)))
    }

    /// The first value of `name` (lower-case).
    pub fn get<N: Name<'a>>(self, name: N) -> Option<&'a [u8]> {
        match self.raw {
            Some(raw) if self.map.is_empty() => raw.get(name),
            _ => self.get_all(name).next(),
        }
    }

    pub fn contains<N: Name<'a>>(self, name: N) -> bool {
        !self.map.is_empty() && self.map.contains_key(name.as_str()) || self.raw.is_some_and(|r| r.contains(name))
    }

    /// Writes every field as `name: value\r\n` (the map's lower-case, as hyper does; the raw
    /// ones as they came), but `skip` (lower-case).
    pub fn write_to(self, dst: &mut Vec<u8>, skip: Option<&str>) {
        // An empty map (fields kept as bytes) is not walked.
        if !self.map.is_empty() {
            for (name, value) in self.map {
                if skip.is_some_and(|s| name.as_str() == s) {
                    continue;
                }
                dst.extend_from_slice(name.as_str().as_bytes());
                dst.extend_from_slice(b": ");
                dst.extend_from_slice(value.as_bytes());
                dst.extend_from_slice(b"\r\n");
            }
        }
        if let Some(raw) = self.raw {
            raw.write_to(dst, skip);
        }
    }
}

/// Writes the request line and headers of an origin-form HTTP/1.1 request, as hyper's client
/// does (names as stored, lower-case; values as they are; fields kept as bytes as they came).
/// `body_len`: a body of that many bytes follows; `content-length` is added when the headers
/// have none (hyper does the same for a body of known size). No body: nothing is added.
pub fn write_request_head(dst: &mut Vec<u8>, method: &Method, target: &str, headers: Fields<'_>, body_len: usize) {
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    headers.write_to(dst, None);
    if body_len > 0 && !headers.contains(Known::CONTENT_LENGTH) {
        dst.extend_from_slice(b"content-length: ");
        dst.extend_from_slice(body_len.to_string().as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304, `content-length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection (no length, or a transfer coding other than
    /// chunked last): the connection is not reused.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    /// The fields as they came (`headers::raw`).
    pub headers: RawHeaders,
    pub framing: Framing,
    /// The upstream keeps the connection open after this response.
    pub keep_alive: bool,
}

/// Parses a response head from the start of `buf` and removes it from there; `Ok(None)`: the
/// head is not complete yet. Informational (1xx) heads are returned too (framing `Empty`), the
/// caller skips them. `head_request`: the response to a HEAD has no body whatever it says.
/// `fields`: scratch space kept by the caller (no allocation or large array per response).
/// The common shape is scanned in one pass (`scan::response`); anything else is `httparse`'s
/// to decide, as before.
pub fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
    fields: &mut Scanned,
) -> io::Result<Option<ResponseHead>> {
    let (line, len) = match scan::response(buf, MAX_HEADERS, fields) {
        Some((line, len)) => (line, len),
        None => match parse_response_slow(buf, fields)? {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    let status = StatusCode::from_u16(line.code).map_err(|_| invalid("invalid status code"))?;
    let version = if line.version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // The head's bytes stay shared by the header values (no copy per value).
    let head = buf.split_to(len).freeze();
    // Forwarded as these bytes (`RawHeaders`): no `HeaderMap` unless something needs one.
    let headers = RawHeaders::scanned(head, fields);
    let framing = framing(status, head_request, &headers)?;
    let keep_alive = framing != Framing::Close && keeps_alive(version, &headers);
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// `parse_response` by `httparse`: a head not in the shape `scan` reads (or not complete).
#[inline(never)] // its header array must not land in the caller's frame
fn parse_response_slow(buf: &BytesMut, fields: &mut Scanned) -> io::Result<Option<(StatusLine, usize)>> {
    let mut raw = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut raw);
    let len = match parsing {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(invalid("response head too large")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let line = StatusLine {
        code: parsed.code.unwrap_or(0),
        version: parsed.version.unwrap_or(1),
    };
    let start = buf.as_ptr() as usize;
    fields.from_spans(
        buf,
        parsed.headers.iter().map(|h| {
            let n = h.name.as_ptr() as usize - start;
            let v = h.value.as_ptr() as usize - start;
            [n, n + h.name.len(), v, v + h.value.len()]
        }),
    );
    Ok(Some((line, len)))
}

fn framing(status: StatusCode, head_request: bool, headers: &RawHeaders) -> io::Result<Framing> {
    if status.is_informational()
        || head_request
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if let Some(last) = headers.get_all(Known::TRANSFER_ENCODING).last() {
        // The last coding must be chunked for the length to be known; else the body runs to
        // the connection's close.
        let chunked = last
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked { Framing::Chunked } else { Framing::Close });
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(Known::CONTENT_LENGTH) {
        for part in v.split(|b| *b == b',') {
            let n = parse_decimal(part.trim_ascii()).ok_or_else(|| invalid("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter()
        .try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

/// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only with `keep-alive`.
fn keeps_alive(version: Version, headers: &RawHeaders) -> bool {
    if version == Version::HTTP_11 {
        !headers.has_token(Known::CONNECTION, b"close")
    } else {
        headers.has_token(Known::CONNECTION, b"keep-alive")
    }
}

/// What the chunked decoder found in the buffer.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended (after its last chunk and trailers).
    End,
    /// More bytes are needed.
    More,
}

/// Decodes a chunked body (RFC 9112 section 7.1) chunk by chunk, so the end is known.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Bytes left of the current chunk.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    Done,
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes what it can from the start of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Chunk> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Chunk::End),
                ChunkState::Size => {
                    let Some(eol) = find_crlf(buf) else {
                        return if buf.len() > 1024 {
                            Err(invalid("chunk size line too long"))
                        } else {
                            Ok(Chunk::More)
                        };
                    };
                    let line = &buf[..eol];
                    // Extensions (`;name=value`) are ignored.
                    let digits = line.split(|b| *b == b';').next().unwrap_or(&[]).trim_ascii();
                    let size = parse_hex(digits).ok_or_else(|| invalid("invalid chunk size"))?;
                    buf.advance(eol + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Chunk::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Chunk::Data(buf.split_to(n).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Chunk::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        self.state = ChunkState::Done;
                        return Ok(Chunk::End);
                    }
                    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (len, trailers) = match httparse::parse_headers(buf, &mut raw) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut map = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| invalid("invalid trailer name"))?;
                                let value =
                                    HeaderValue::from_bytes(f.value).map_err(|_| invalid("invalid trailer value"))?;
                                map.append(name, value);
                            }
                            (len, map)
                        }
                        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                            return Err(invalid("trailers too large"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(Chunk::More),
                        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                    };
                    buf.advance(len);
                    self.state = ChunkState::Done;
                    return Ok(Chunk::Trailers(trailers));
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let d = char::from(b).to_digit(16)?;
        Some(n * 16 + u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], head: bool) -> io::Result<Option<ResponseHead>> {
        let mut buf = BytesMut::from(bytes);
        parse_response(&mut buf, head, &mut Scanned::default())
    }

    #[test]
    fn request_head_is_what_hyper_writes() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("svc"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        write_request_head(&mut out, &Method::GET, "/p?q=1", Fields::map(&h), 0);
        assert_eq!(out, b"GET /p?q=1 HTTP/1.1\r\nhost: svc\r\nx-a: 1\r\nx-a: 2\r\n\r\n");
        out.clear();
        write_request_head(&mut out, &Method::POST, "/", Fields::map(&h), 5);
        assert!(out.ends_with(b"x-a: 2\r\ncontent-length: 5\r\n\r\n"));
        h.insert("content-length", HeaderValue::from_static("5"));
        out.clear();
        write_request_head(&mut out, &Method::POST, "/", Fields::map(&h), 5);
        assert_eq!(out.windows(14).filter(|w| w == b"content-length").count(), 1);
    }

    #[test]
    fn response_framing() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Y: a b\r\n\r\nhello", false)
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.framing, Framing::Length(12));
        assert!(r.keep_alive);
        assert_eq!(r.headers.get("x-y"), Some(&b"a b"[..]));
        let f = |b: &[u8], head| parse(b, head).unwrap().unwrap().framing;
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", true),
            Framing::Empty
        );
        assert_eq!(f(b"HTTP/1.1 204 No Content\r\n\r\n", false), Framing::Empty);
        assert_eq!(
            f(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 3\r\n\r\n", false),
            Framing::Empty
        );
        assert_eq!(f(b"HTTP/1.1 100 Continue\r\n\r\n", false), Framing::Empty);
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            Framing::Empty
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 4\r\n\r\n",
                false
            ),
            Framing::Chunked
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
            Framing::Close
        );
        assert_eq!(f(b"HTTP/1.1 200 OK\r\n\r\n", false), Framing::Close);
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n", false),
            Framing::Length(7)
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 7, 8\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-len", false).unwrap().is_none());
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let k = |b: &[u8]| parse(b, false).unwrap().unwrap().keep_alive;
        assert!(!k(b"HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 1\r\n\r\n"));
        assert!(!k(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"));
        assert!(k(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n"
        ));
        assert!(!k(b"HTTP/1.1 200 OK\r\n\r\n"), "close-delimited");
    }

    #[test]
    fn chunked_body_ends_where_it_says_whatever_the_splits() {
        let wire: &[u8] = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for split in 1..wire.len() {
            let mut dec = Chunked::default();
            let mut buf = BytesMut::new();
            let mut data = Vec::new();
            let mut trailers = None;
            let mut fed = 0;
            loop {
                match dec.decode(&mut buf).unwrap() {
                    Chunk::Data(d) => data.extend_from_slice(&d),
                    Chunk::Trailers(t) => trailers = Some(t),
                    Chunk::End => break,
                    Chunk::More => {
                        let to = (fed + split).min(wire.len());
                        assert!(to > fed, "decoder wants more than the body");
                        buf.extend_from_slice(&wire[fed..to]);
                        fed = to;
                    }
                }
            }
            assert_eq!(data, b"hello world");
            assert_eq!(trailers.unwrap()["x-t"], "1");
            assert_eq!(&buf[..], &b"NEXT"[..buf.len()], "split {split}");
            assert!(dec.is_done());
        }
        let mut dec = Chunked::default();
        let mut buf = BytesMut::from(&b"zz\r\n"[..]);
        assert!(dec.decode(&mut buf).is_err());
        let mut dec = Chunked::default();
        let mut buf = BytesMut::from(&b"2\r\nabXY"[..]);
        assert!(matches!(dec.decode(&mut buf).unwrap(), Chunk::Data(_)));
        assert!(dec.decode(&mut buf).is_err());
    }
}
