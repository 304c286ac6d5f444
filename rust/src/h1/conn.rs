//! An upstream HTTP/1.1 connection driven by the request's own task: the request head (and a
//! body already in memory) written with one vectored write, the response head read and parsed
//! here, the body read by `RawBody` as the client's side polls it. No connection task, no
//! channel, no oneshot per request (hyper's client dispatch cost ~40 % of the instructions
//! per request, bench/README.md "Profiles").

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::codec::{self, Fields, ResponseHead};
use crate::pool::Counted;

/// First read size; doubles (up to `MAX_READ`) while reads fill the buffer, as hyper's
/// adaptive strategy does for large bodies.
const INITIAL_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// A connection, boxed once when it is made: it goes from the pool to a request, into the
/// response body and back to the pool, each time as one pointer (inline it is ~140 bytes,
/// copied ~10 times per request; callgrind).
pub struct RawConn(Box<State>);

pub struct State {
    io: TcpStream,
    _counted: Counted,
    /// Bytes read and not yet consumed.
    pub(super) buf: BytesMut,
    read_size: usize,
    /// The request head being written (reused).
    head: Vec<u8>,
    /// Where the response head's names and values are (reused).
    spans: crate::headers::raw::scan::Scanned,
}

impl RawConn {
    pub fn new(io: TcpStream, counted: Counted) -> Self {
        RawConn(Box::new(State {
            io,
            _counted: counted,
            buf: BytesMut::new(),
            read_size: INITIAL_READ,
            head: Vec::with_capacity(512),
            spans: crate::headers::raw::scan::Scanned::default(),
        }))
    }
}

impl std::ops::Deref for RawConn {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for RawConn {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
    }
}

impl State {
    /// Whether an idle connection can take a request: the upstream has not closed it and sent
    /// nothing unasked. Free when the socket is not readable (the reactor's readiness, no
    /// syscall); one non-blocking read otherwise.
    pub fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: EOF, an error or stray bytes close it; a spurious wake-up does not.
            Poll::Ready(Ok(())) => matches!(self.poll_fill(&mut cx), Poll::Pending),
        }
    }

    /// Writes the request: head and body (in memory) in one vectored write where they fit.
    pub async fn send(
        &mut self,
        method: &Method,
        target: &str,
        headers: Fields<'_>,
        body: Option<&Bytes>,
    ) -> io::Result<()> {
        self.head.clear();
        let body_len = body.map_or(0, Bytes::len);
        codec::write_request_head(&mut self.head, method, target, headers, body_len);
        let mut out = (&self.head[..]).chain(body.map_or(&[][..], |b| &b[..]));
        write_all(&mut self.io, &mut out).await
    }

    /// Reads until a final (not 1xx) response head is complete. `Ok(None)`: the upstream
    /// closed the connection before sending a byte of it.
    pub async fn read_head(&mut self, head_request: bool) -> io::Result<ResponseHead> {
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = codec::parse_response(&mut self.buf, head_request, &mut self.spans)? {
                    if head.status.is_informational() {
                        continue; // skipped, as hyper's client does
                    }
                    return Ok(head);
                }
            }
            let n = std::future::poll_fn(|cx| self.poll_fill(cx)).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if self.buf.is_empty() {
                        "connection closed before the response"
                    } else {
                        "connection closed within the response head"
                    },
                ));
            }
        }
    }

    /// Reads what the socket has into `buf`; `Ready(Ok(0))` at EOF.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let spare = self.buf.capacity() - self.buf.len();
        if spare < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let spare = self.buf.capacity() - self.buf.len();
        let n = std::task::ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        if n == spare && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// Writes all of `out` (vectored: one `writev` for its parts while the socket takes them).
pub async fn write_all<B: Buf>(io: &mut TcpStream, out: &mut B) -> io::Result<()> {
    std::future::poll_fn(|cx| {
        while out.has_remaining() {
            let n = std::task::ready!(tokio_util::io::poll_write_buf(Pin::new(&mut *io), cx, &mut *out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
        }
        Pin::new(&mut *io).poll_flush(cx)
    })
    .await
}
