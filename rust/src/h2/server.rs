//! One HTTP/2 connection (prior knowledge, after the preface), served in one task: every read
//! is decoded to the last complete frame, each complete request goes to `Conn::handle` as a
//! future of the connection's set (no task per stream) with its fields as a block of bytes
//! (`headers::raw`, no `HeaderMap`), and whatever the connection has to say after a wake-up —
//! responses that became ready (encoded from the upstream's raw fields when they are bytes),
//! window updates, acks — goes out in one write (vectored when large bodies go as their own
//! slices).
//!
//! Conformance (RFC 9113): SETTINGS and their ACK, PING, flow control both ways (connection and
//! stream windows; the client's window given back as the handler reads the body), RST_STREAM,
//! GOAWAY (connection errors; a drain sends NO_ERROR and lets the streams in flight finish),
//! CONTINUATION, padding, PRIORITY read and ignored, SETTINGS_MAX_CONCURRENT_STREAMS enforced
//! (REFUSED_STREAM), request bodies and trailers, malformed requests refused per §8.1.1.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use futures_util::task::AtomicWaker;
use http::header::{CONNECTION, CONTENT_LENGTH, COOKIE, TRANSFER_ENCODING, UPGRADE};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::body::{self, Sender};
use super::frame::{self, Head, Reason};
use super::hpack::{self, Name};
use crate::body::ProxyBody;
use crate::headers::raw::RawHeaders;
use crate::proxy::Conn;

/// SETTINGS_MAX_CONCURRENT_STREAMS (hyper's default).
pub const MAX_CONCURRENT_STREAMS: u32 = 200;
/// The window each request body starts with, and the connection's (hyper's defaults: 1 MiB).
pub const STREAM_WINDOW: u32 = 1 << 20;
pub const CONN_WINDOW: u32 = 1 << 20;
/// The largest header block (after CONTINUATIONs) taken; a larger one is ENHANCE_YOUR_CALM
/// (twice the list size answered 431 below: the block of a list just over it is still read).
const MAX_HEADER_BLOCK: usize = 2 * MAX_LIST_SIZE;
/// Most fields, and most decoded bytes (RFC 9113 §6.5.2's size: name + value + 32 each), of a
/// request's header list; over either the request is answered 431 (as hyper's HTTP/1.1 server
/// answers over 100 headers), and `HeaderMap` is never asked to hold more than it can.
const MAX_FIELDS: usize = 200;
const MAX_LIST_SIZE: usize = 64 * 1024;
/// The SETTINGS_HEADER_TABLE_SIZE the decoder keeps to (the default; never announced).
const HEADER_TABLE_SIZE: usize = 4096;
const READ: usize = 16 * 1024;
/// Reading pauses while this much output waits for the socket.
const MAX_QUEUED: usize = 256 * 1024;
/// Body chunks up to this size are copied next to their frame header (one iovec fewer).
const COPY_DATA: usize = 1024;
/// Emptied data queues kept for new streams.
const SPARE: usize = 16;
/// Closed stream ids remembered to tell "closed" (STREAM_CLOSED) from "never opened".
const CLOSED_KEPT: usize = 64;
/// ENHANCE_YOUR_CALM.
const CALM: u32 = 0xb;

/// A stream's handler: boxed (written into its box in place), not type-erased, so that its
/// poll can be inlined into the set's.
type Handler<F> = Pin<Box<Cancelable<F>>>;

/// Stream ids hash to themselves (odd, increasing: no collisions to fear).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u32 keys")
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Set when a stream is reset while its handler runs: the handler is dropped at its next poll.
#[derive(Default)]
struct Cancel {
    flag: AtomicBool,
    waker: AtomicWaker,
}

impl Cancel {
    fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }
}

#[allow(clippy::struct_excessive_bools)] // the states of a stream's two halves
struct Stream {
    /// The request body's sender, until END_STREAM.
    recv: Option<Sender>,
    /// END_STREAM received (half-closed remote).
    recv_closed: bool,
    /// How much more the client may send on this stream.
    recv_window: i64,
    /// Window taken by the handler, not yet given back.
    recv_credit: u32,
    length: Option<u64>,
    received: u64,
    send_window: i64,
    /// The response body, while it has frames to give.
    body: Option<ProxyBody>,
    /// Data waiting for window.
    pending: VecDeque<Bytes>,
    /// Boxed: rare, and inline it made every stream entry 88 bytes longer.
    trailers: Option<Box<HeaderMap>>,
    /// The body ended: END_STREAM goes with the last of `pending` (or the trailers).
    ending: bool,
    /// END_STREAM sent (half-closed local).
    sent: bool,
    head_request: bool,
    cancel: Arc<Cancel>,
}

/// A header block being read (HEADERS without END_HEADERS, then CONTINUATIONs).
struct Partial {
    stream: u32,
    end_stream: bool,
    priority_error: bool,
    block: BytesMut,
}

/// A connection error: GOAWAY with this code, then close.
struct ConnError(u32);

impl From<Reason> for ConnError {
    fn from(r: Reason) -> Self {
        ConnError(r as u32)
    }
}

#[allow(clippy::struct_excessive_bools)] // the connection's states, each read on its own
pub struct Connection<I, H, F> {
    io: I,
    /// Answers a request (`Conn::handle`; tests give their own).
    handler: H,
    rbuf: BytesMut,
    read_closed: bool,
    preface: bool,
    settings_seen: bool,
    /// Control frames and small bodies, in the order they go out.
    out: BytesMut,
    /// Chunks waiting for the socket (`out` is split off into it before each write).
    queue: VecDeque<Bytes>,
    queued: usize,
    decoder: hpack::Decoder,
    fields: Vec<(Name, Bytes)>,
    /// Where a request's fields are in its block (`request`), kept for the next one.
    spans: Vec<[usize; 4]>,
    /// Emptied `pending` queues of closed streams, for the next ones (one allocation less per
    /// response body).
    spare: Vec<VecDeque<Bytes>>,
    /// The last request's `:authority` (`authority_of`).
    authority: Option<Authority>,
    streams: HashMap<u32, Stream, BuildHasherDefault<IdHasher>>,
    handlers: FuturesUnordered<Handler<F>>,
    /// Streams with a response body or data still to send.
    sending: Vec<u32>,
    /// Streams whose request body is open (their credit is collected on each poll).
    receiving: usize,
    last_id: u32,
    /// Recently closed streams, and whether this side reset them (frames the client sent
    /// before it saw the reset are ignored then).
    closed: VecDeque<(u32, bool)>,
    continuation: Option<Partial>,
    peer_window: i64,
    peer_max_frame: usize,
    send_window: i64,
    recv_window: i64,
    recv_credit: u32,
    /// GOAWAY sent (drain): streams above this id are ignored.
    goaway: Option<u32>,
    /// The client sent GOAWAY: no new streams will come.
    peer_goaway: bool,
    /// A connection error was sent: close once it is written.
    failed: bool,
    /// The write of what is queued was put off once for the reactor (see `poll`).
    deferred: bool,
}

impl<I, H, F> Connection<I, H, F>
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    /// A connection whose first bytes (`read`, the preface or a part of it) were already read.
    pub fn new(io: I, read: &[u8], handler: H) -> Self {
        let mut out = BytesMut::with_capacity(4096);
        frame::settings(
            &mut out,
            &[
                (frame::SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            ],
        );
        let grow = CONN_WINDOW - u32::try_from(frame::DEFAULT_WINDOW).expect("small");
        frame::window_update(&mut out, 0, grow);
        let mut rbuf = BytesMut::with_capacity(READ.max(read.len()));
        rbuf.extend_from_slice(read);
        Connection {
            io,
            handler,
            rbuf,
            read_closed: false,
            preface: false,
            settings_seen: false,
            out,
            queue: VecDeque::new(),
            queued: 0,
            decoder: hpack::Decoder::new(HEADER_TABLE_SIZE),
            fields: Vec::new(),
            spans: Vec::new(),
            spare: Vec::new(),
            authority: None,
            streams: HashMap::default(),
            handlers: FuturesUnordered::new(),
            sending: Vec::new(),
            receiving: 0,
            last_id: 0,
            closed: VecDeque::new(),
            continuation: None,
            peer_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            send_window: frame::DEFAULT_WINDOW,
            recv_window: i64::from(CONN_WINDOW),
            recv_credit: 0,
            goaway: None,
            peer_goaway: false,
            failed: false,
            deferred: false,
        }
    }

    /// Graceful shutdown: GOAWAY(NO_ERROR) naming the last stream taken; those finish.
    pub fn drain(&mut self) {
        if self.goaway.is_none() && !self.failed {
            frame::goaway(&mut self.out, self.last_id, Reason::NoError);
            self.goaway = Some(self.last_id);
        }
    }

    /// Serves until the connection is done (closed by the client, drained, or failed).
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..32 {
            let mut progress = false;
            let paused = self.queued >= MAX_QUEUED;
            if !self.read_closed && !self.failed && !paused {
                if self.rbuf.capacity() - self.rbuf.len() < READ / 2 {
                    self.rbuf.reserve(READ);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                    Poll::Ready(Ok(0) | Err(_)) => {
                        self.read_closed = true;
                        // Nothing more will come: a half-received request body fails.
                        self.reset_all_bodies();
                    }
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Pending => {}
                }
            }
            if !self.failed {
                if let Err(ConnError(code)) = self.frames() {
                    self.fail(code);
                }
            }
            if !self.failed {
                while let Poll::Ready(Some((id, resp))) = self.handlers.poll_next_unpin(cx) {
                    if let Some(resp) = resp {
                        self.respond(id, resp, cx);
                    }
                }
                self.pump_all(cx);
                if self.receiving > 0 {
                    self.collect_credit(cx);
                }
            }
            // Responses ready while others are still on their way: the runtime polls its
            // reactor once (a deferred wake-up) before they are written, so the upstream answers
            // that arrived meanwhile go out in the same write (fewer, larger writes to the client).
            let output = !self.out.is_empty() || !self.queue.is_empty();
            if output && !self.deferred && !paused && !self.handlers.is_empty() {
                self.deferred = true;
                let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
                return Poll::Pending;
            }
            self.deferred = false;
            match self.flush(cx) {
                // Reading paused for the output: it resumes now (no read waker is registered).
                Poll::Ready(Ok(())) => progress |= paused,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            if self.queue.is_empty() {
                if self.failed {
                    return Poll::Ready(());
                }
                let no_more = self.read_closed || self.goaway.is_some() || self.peer_goaway;
                if no_more && self.streams.is_empty() && self.handlers.is_empty() {
                    return Poll::Ready(());
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // A busy connection yields to the others.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Decodes and handles every complete frame in the read buffer.
    fn frames(&mut self) -> Result<(), ConnError> {
        if !self.preface {
            let n = self.rbuf.len().min(frame::PREFACE.len());
            if self.rbuf[..n] != frame::PREFACE[..n] {
                return Err(Reason::Protocol.into());
            }
            if n < frame::PREFACE.len() {
                return Ok(());
            }
            self.rbuf.advance(n);
            self.preface = true;
        }
        while self.rbuf.len() >= frame::HEADER_LEN && !self.failed {
            let head = Head::parse(&self.rbuf);
            if head.len > frame::DEFAULT_MAX_FRAME {
                return Err(Reason::FrameSize.into());
            }
            if self.rbuf.len() < frame::HEADER_LEN + head.len {
                break;
            }
            self.rbuf.advance(frame::HEADER_LEN);
            let payload = self.rbuf.split_to(head.len).freeze();
            if !self.settings_seen {
                if head.kind != frame::SETTINGS || head.has(frame::ACK) {
                    return Err(Reason::Protocol.into());
                }
                self.settings_seen = true;
            }
            if let Some(p) = &self.continuation {
                if head.kind != frame::CONTINUATION || head.stream != p.stream {
                    return Err(Reason::Protocol.into());
                }
            }
            self.frame(head, &payload)?;
        }
        Ok(())
    }

    fn frame(&mut self, head: Head, payload: &Bytes) -> Result<(), ConnError> {
        match head.kind {
            frame::DATA => self.data(head, payload),
            frame::HEADERS => self.headers(head, payload),
            frame::CONTINUATION => {
                let Some(mut p) = self.continuation.take() else {
                    return Err(Reason::Protocol.into());
                };
                p.block.extend_from_slice(payload);
                if p.block.len() > MAX_HEADER_BLOCK {
                    return Err(ConnError(CALM));
                }
                if head.has(frame::END_HEADERS) {
                    self.header_block(p.stream, p.end_stream, p.priority_error, &p.block.freeze())
                } else {
                    self.continuation = Some(p);
                    Ok(())
                }
            }
            frame::PRIORITY => {
                if head.stream == 0 {
                    return Err(Reason::Protocol.into());
                }
                if head.len != 5 {
                    self.reset(head.stream, Reason::FrameSize);
                } else if dependency(payload) == head.stream {
                    self.reset(head.stream, Reason::Protocol);
                }
                Ok(())
            }
            frame::RST_STREAM => {
                if head.len != 4 {
                    return Err(Reason::FrameSize.into());
                }
                if head.stream == 0 || self.idle(head.stream) {
                    return Err(Reason::Protocol.into());
                }
                self.close(head.stream, false);
                Ok(())
            }
            frame::SETTINGS => self.settings(head, payload),
            frame::PUSH_PROMISE => Err(Reason::Protocol.into()),
            frame::PING => {
                if head.stream != 0 {
                    return Err(Reason::Protocol.into());
                }
                if head.len != 8 {
                    return Err(Reason::FrameSize.into());
                }
                if !head.has(frame::ACK) {
                    frame::ping_ack(&mut self.out, payload);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if head.stream != 0 {
                    return Err(Reason::Protocol.into());
                }
                self.peer_goaway = true;
                Ok(())
            }
            frame::WINDOW_UPDATE => self.window_update(head, payload),
            // Unknown frame types are ignored (§4.1), except inside a header block (above).
            _ => Ok(()),
        }
    }

    fn idle(&self, id: u32) -> bool {
        id > self.last_id
    }

    fn settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(Reason::Protocol.into());
        }
        if head.has(frame::ACK) {
            return if head.len == 0 {
                Ok(())
            } else {
                Err(Reason::FrameSize.into())
            };
        }
        if !head.len.is_multiple_of(6) {
            return Err(Reason::FrameSize.into());
        }
        for s in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                frame::SETTINGS_ENABLE_PUSH if v > 1 => return Err(Reason::Protocol.into()),
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if i64::from(v) > frame::MAX_WINDOW {
                        return Err(Reason::FlowControl.into());
                    }
                    let delta = i64::from(v) - self.peer_window;
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > frame::MAX_WINDOW {
                            return Err(Reason::FlowControl.into());
                        }
                    }
                    self.peer_window = i64::from(v);
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    let v = v as usize;
                    if !(frame::DEFAULT_MAX_FRAME..=frame::MAX_MAX_FRAME).contains(&v) {
                        return Err(Reason::Protocol.into());
                    }
                    self.peer_max_frame = v;
                }
                // The encoder never indexes: the peer's table size does not matter; unknown
                // settings are ignored.
                _ => {}
            }
        }
        frame::settings_ack(&mut self.out);
        Ok(())
    }

    fn window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.len != 4 {
            return Err(Reason::FrameSize.into());
        }
        let inc = i64::from(u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff);
        if head.stream == 0 {
            if inc == 0 {
                return Err(Reason::Protocol.into());
            }
            self.send_window += inc;
            if self.send_window > frame::MAX_WINDOW {
                return Err(Reason::FlowControl.into());
            }
            return Ok(());
        }
        if self.idle(head.stream) {
            return Err(Reason::Protocol.into());
        }
        let Some(s) = self.streams.get_mut(&head.stream) else {
            return Ok(());
        };
        if inc == 0 {
            self.reset(head.stream, Reason::Protocol);
            return Ok(());
        }
        s.send_window += inc;
        if s.send_window > frame::MAX_WINDOW {
            self.reset(head.stream, Reason::FlowControl);
        }
        Ok(())
    }

    fn data(&mut self, head: Head, payload: &Bytes) -> Result<(), ConnError> {
        let id = head.stream;
        if id == 0 || self.idle(id) {
            return Err(Reason::Protocol.into());
        }
        let (start, end) = frame::unpad(payload, head.has(frame::PADDED)).ok_or(Reason::Protocol)?;
        let len = i64::try_from(head.len).expect("at most 16 KiB");
        if len > self.recv_window {
            return Err(Reason::FlowControl.into());
        }
        self.recv_window -= len;
        // Padding is given back at once; data when the handler reads it.
        let pad = u32::try_from(head.len - (end - start)).expect("small");
        self.conn_credit(pad);
        let Some(s) = self.streams.get_mut(&id) else {
            self.conn_credit(u32::try_from(end - start).expect("small"));
            if !self.reset_by_us(id) {
                self.reset(id, Reason::StreamClosed);
            }
            return Ok(());
        };
        if s.recv_closed {
            self.conn_credit(u32::try_from(end - start).expect("small"));
            self.reset(id, Reason::StreamClosed);
            return Ok(());
        }
        if len > s.recv_window {
            self.conn_credit(u32::try_from(end - start).expect("small"));
            self.reset(id, Reason::FlowControl);
            return Ok(());
        }
        s.recv_window -= len;
        s.recv_credit += pad;
        let data = payload.slice(start..end);
        s.received += data.len() as u64;
        let fin = head.has(frame::END_STREAM);
        let too_long = s.length.is_some_and(|n| s.received > n || fin && s.received != n);
        if too_long {
            self.conn_credit(u32::try_from(data.len()).expect("small"));
            self.reset(id, Reason::Protocol);
            return Ok(());
        }
        let n = u32::try_from(data.len()).expect("small");
        let tx = s.recv.as_ref().expect("open streams have a body");
        let dropped = n > 0 && !tx.data(data);
        if fin {
            tx.end(None);
        }
        if dropped {
            // The handler dropped the body: nothing holds the window.
            s.recv_credit += n;
            self.conn_credit(n);
        }
        if fin {
            self.end_of_request(id);
        }
        Ok(())
    }

    fn headers(&mut self, head: Head, payload: &Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(Reason::Protocol.into());
        }
        let (mut start, end) = frame::unpad(payload, head.has(frame::PADDED)).ok_or(Reason::Protocol)?;
        let mut priority_error = false;
        if head.has(frame::PRIORITY_FLAG) {
            if end < start + 5 {
                return Err(Reason::FrameSize.into());
            }
            priority_error = dependency(&payload[start..]) == head.stream;
            start += 5;
        }
        let fragment = payload.slice(start..end);
        if head.has(frame::END_HEADERS) {
            self.header_block(head.stream, head.has(frame::END_STREAM), priority_error, &fragment)
        } else {
            self.continuation = Some(Partial {
                stream: head.stream,
                end_stream: head.has(frame::END_STREAM),
                priority_error,
                block: BytesMut::from(&fragment[..]),
            });
            Ok(())
        }
    }

    /// A complete header block: a new request, or a request's trailers.
    fn header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        priority_error: bool,
        block: &Bytes,
    ) -> Result<(), ConnError> {
        let mut fields = std::mem::take(&mut self.fields);
        fields.clear();
        // Decoded whatever happens to the stream: the table must follow the client's.
        let decoded = self.decoder.decode(block, &mut fields);
        let result = match decoded {
            Err(_) => Err(Reason::Compression.into()),
            Ok(()) => self.on_fields(id, end_stream, priority_error, &mut fields),
        };
        fields.clear();
        self.fields = fields;
        result
    }

    fn on_fields(
        &mut self,
        id: u32,
        end_stream: bool,
        priority_error: bool,
        fields: &mut Vec<(Name, Bytes)>,
    ) -> Result<(), ConnError> {
        if let Some(s) = self.streams.get_mut(&id) {
            if s.recv_closed {
                self.reset(id, Reason::StreamClosed);
                return Ok(());
            }
            let trailers = trailers(fields);
            let length_ok = s.length.is_none_or(|n| n == s.received);
            let (Some(trailers), true, true) = (trailers, end_stream, length_ok) else {
                self.reset(id, Reason::Protocol);
                return Ok(());
            };
            s.recv.as_ref().expect("open streams have a body").end(Some(trailers));
            self.end_of_request(id);
            return Ok(());
        }
        if id.is_multiple_of(2) {
            return Err(Reason::Protocol.into());
        }
        if id <= self.last_id {
            if self.reset_by_us(id) {
                return Ok(());
            }
            let code = if self.closed.iter().any(|&(c, _)| c == id) {
                Reason::StreamClosed
            } else {
                Reason::Protocol
            };
            return Err(code.into());
        }
        self.last_id = id;
        if self.goaway.is_some() || self.failed {
            // Above the GOAWAY's last stream: ignored (the client may retry it elsewhere).
            return Ok(());
        }
        if priority_error {
            self.reset(id, Reason::Protocol);
            return Ok(());
        }
        if self.streams.len() >= MAX_CONCURRENT_STREAMS as usize {
            self.reset(id, Reason::RefusedStream);
            return Ok(());
        }
        let size: usize = fields.iter().map(|(n, v)| n.size() + v.len() + 32).sum();
        if fields.len() > MAX_FIELDS || size > MAX_LIST_SIZE {
            self.too_large(id, end_stream);
            return Ok(());
        }
        let Some((mut req, length)) = request(fields, &mut self.spans, &mut self.authority, size) else {
            self.reset(id, Reason::Protocol);
            return Ok(());
        };
        if end_stream && length.is_some_and(|n| n != 0) {
            self.reset(id, Reason::Protocol);
            return Ok(());
        }
        let recv = if end_stream {
            None
        } else {
            let (tx, rx) = body::channel(length);
            let head = req.body_mut().take_head();
            *req.body_mut() = ProxyBody::h2(rx);
            req.body_mut().set_head(head);
            self.receiving += 1;
            Some(tx)
        };
        let head_request = req.method() == Method::HEAD;
        let cancel = Arc::new(Cancel::default());
        let pending = self.spare.pop().unwrap_or_default();
        let peer_window = self.peer_window;
        // Made where it is stored (no old entry to give back: the id is new).
        self.streams.entry(id).or_insert_with(|| Stream {
            recv,
            recv_closed: end_stream,
            recv_window: i64::from(STREAM_WINDOW),
            recv_credit: 0,
            length,
            received: 0,
            send_window: peer_window,
            body: None,
            pending,
            trailers: None,
            ending: false,
            sent: false,
            head_request,
            cancel: cancel.clone(),
        });
        // The box is allocated before the handler's future is made, so the future is written
        // into it in place (callgrind: made first and moved in, it was copied 3 times).
        let slot = Box::new_uninit();
        let handler = Box::write(
            slot,
            Cancelable {
                id,
                cancel,
                inner: (self.handler)(req),
            },
        );
        self.handlers.push(Box::into_pin(handler));
        Ok(())
    }

    /// A header list over the limits: answered 431, the rest of the request not wanted.
    fn too_large(&mut self, id: u32, end_stream: bool) {
        let mut block = BytesMut::new();
        hpack::encode_status(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &mut block);
        write_headers(&mut self.out, id, &block, true, self.peer_max_frame);
        if end_stream {
            self.forget(id);
        } else {
            self.reset(id, Reason::NoError);
        }
    }

    /// END_STREAM from the client.
    fn end_of_request(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.recv_closed = true;
        if s.recv.take().is_some() {
            self.receiving -= 1;
        }
        if s.sent {
            self.forget(id);
        }
    }

    /// Writes the response head and as much of the body as is ready and fits the windows.
    fn respond(&mut self, id: u32, resp: Response<ProxyBody>, cx: &mut Context<'_>) {
        let max_frame = self.peer_max_frame;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let (parts, mut body) = resp.into_parts();
        let mut block = BytesMut::with_capacity(128);
        hpack::encode_status(parts.status, &mut block);
        for (name, value) in &parts.headers {
            if !connection_specific(name) {
                hpack::encode_field(name, value, &mut block);
            }
        }
        // The fields of a response to a request whose fields went as bytes (`request`), when
        // they came as bytes from the engine's HTTP/1.1 client: encoded from those bytes.
        let raw = body.take_raw_head();
        let mut has_length = parts.headers.contains_key(CONTENT_LENGTH);
        if let Some(raw) = &raw {
            for (name, value) in raw.iter() {
                if !raw_connection_specific(name) {
                    hpack::encode_raw_field(name, value, &mut block);
                }
            }
            has_length |= raw.contains(CONTENT_LENGTH.as_str());
        }
        drop(raw);
        let bodiless = s.head_request || body.is_end_stream();
        if !has_length && !s.head_request {
            if let Some(n) = body.size_hint().exact() {
                let status = parts.status.as_u16();
                if status != 204 && status != 304 && !parts.status.is_informational() {
                    hpack::encode_field(&CONTENT_LENGTH, &HeaderValue::from(n), &mut block);
                }
            }
        }
        write_headers(&mut self.out, id, &block, bodiless, max_frame);
        if bodiless {
            drop(body);
            s.sent = true;
            if s.recv_closed {
                self.forget(id);
            } else {
                // The answer is complete before the request: the rest of it is not wanted.
                self.reset(id, Reason::NoError);
            }
            return;
        }
        s.body = Some(body);
        self.sending.push(id);
        self.pump(id, cx);
    }

    fn pump_all(&mut self, cx: &mut Context<'_>) {
        let mut i = 0;
        while i < self.sending.len() {
            let id = self.sending[i];
            if self.pump(id, cx) {
                i += 1;
            } else {
                self.sending.swap_remove(i);
            }
        }
    }

    /// Moves one stream's response forward; `false` once it has nothing more to send.
    fn pump(&mut self, id: u32, cx: &mut Context<'_>) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            return false;
        };
        loop {
            while let Some(front) = s.pending.front_mut() {
                let max_frame = i64::try_from(self.peer_max_frame).expect("at most 2^24");
                let room = self.send_window.min(s.send_window).min(max_frame);
                if room <= 0 {
                    return true;
                }
                let n = front.len().min(usize::try_from(room).expect("positive"));
                let chunk = if n == front.len() {
                    s.pending.pop_front().expect("front")
                } else {
                    front.split_to(n)
                };
                let fin = s.ending && s.pending.is_empty() && s.trailers.is_none();
                let sent = i64::try_from(n).expect("at most a frame");
                self.send_window -= sent;
                s.send_window -= sent;
                frame::head(
                    &mut self.out,
                    n,
                    frame::DATA,
                    if fin { frame::END_STREAM } else { 0 },
                    id,
                );
                if n <= COPY_DATA {
                    self.out.extend_from_slice(&chunk);
                } else {
                    self.queued += self.out.len() + chunk.len();
                    self.queue.push_back(self.out.split().freeze());
                    self.queue.push_back(chunk);
                }
                if fin {
                    s.sent = true;
                }
            }
            if s.ending {
                if let Some(trailers) = s.trailers.take() {
                    let mut block = BytesMut::new();
                    for (name, value) in trailers.iter() {
                        if !connection_specific(name) {
                            hpack::encode_field(name, value, &mut block);
                        }
                    }
                    write_headers(&mut self.out, id, &block, true, self.peer_max_frame);
                    s.sent = true;
                } else if !s.sent {
                    frame::head(&mut self.out, 0, frame::DATA, frame::END_STREAM, id);
                    s.sent = true;
                }
                if s.recv_closed {
                    self.forget(id);
                } else {
                    self.reset(id, Reason::NoError);
                }
                return false;
            }
            let Some(body) = s.body.as_mut() else {
                return false;
            };
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return true,
                Poll::Ready(None) => {
                    s.body = None;
                    s.ending = true;
                }
                Poll::Ready(Some(Ok(f))) => {
                    let end = body.is_end_stream();
                    match f.into_data() {
                        Ok(data) if !data.is_empty() => s.pending.push_back(data),
                        Ok(_) => {}
                        Err(f) => s.trailers = f.into_trailers().ok().map(Box::new),
                    }
                    if end {
                        s.body = None;
                        s.ending = true;
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    self.reset(id, Reason::Internal);
                    return false;
                }
            }
        }
    }

    /// Gives the client back the window its request bodies' handlers read.
    fn collect_credit(&mut self, cx: &Context<'_>) {
        let mut total = 0;
        for (&id, s) in &mut self.streams {
            if let Some(tx) = &s.recv {
                let n = u32::try_from(tx.taken(cx)).expect("within the window");
                s.recv_credit += n;
                total += n;
            }
            if s.recv_credit >= STREAM_WINDOW / 2 && !s.recv_closed {
                frame::window_update(&mut self.out, id, s.recv_credit);
                s.recv_window += i64::from(s.recv_credit);
                s.recv_credit = 0;
            }
        }
        self.conn_credit(total);
    }

    fn conn_credit(&mut self, n: u32) {
        self.recv_credit += n;
        if self.recv_credit >= CONN_WINDOW / 2 {
            frame::window_update(&mut self.out, 0, self.recv_credit);
            self.recv_window += i64::from(self.recv_credit);
            self.recv_credit = 0;
        }
    }

    /// A stream error: RST_STREAM, and the stream is gone (its handler dropped).
    fn reset(&mut self, id: u32, reason: Reason) {
        frame::rst_stream(&mut self.out, id, reason);
        self.close(id, true);
    }

    /// The stream ends now: its handler is cancelled, its request body fails.
    fn close(&mut self, id: u32, by_us: bool) {
        if let Some(s) = self.streams.get(&id) {
            s.cancel.cancel();
            if let Some(tx) = &s.recv {
                tx.reset();
            }
        }
        self.forget_as(id, by_us);
    }

    /// Whether this side reset the (closed) stream `id` recently.
    fn reset_by_us(&self, id: u32) -> bool {
        self.closed.iter().any(|&(c, by_us)| c == id && by_us)
    }

    /// The stream is closed (both sides done, or reset).
    fn forget(&mut self, id: u32) {
        self.forget_as(id, false);
    }

    fn forget_as(&mut self, id: u32, by_us: bool) {
        if let Some(s) = self.streams.remove(&id) {
            if s.recv.is_some() {
                self.receiving -= 1;
            }
            // Window the client used on it comes back to the connection.
            self.conn_credit(s.recv_credit);
            let mut pending = s.pending;
            if pending.capacity() > 0 && self.spare.len() < SPARE {
                pending.clear();
                self.spare.push(pending);
            }
        }
        if self.closed.len() == CLOSED_KEPT {
            self.closed.pop_front();
        }
        self.closed.push_back((id, by_us));
    }

    fn reset_all_bodies(&mut self) {
        for s in self.streams.values() {
            if let Some(tx) = &s.recv {
                tx.reset();
            }
        }
    }

    /// A connection error: GOAWAY, every stream dropped, closed once written.
    fn fail(&mut self, code: u32) {
        self.out.extend_from_slice(&[0, 0, 8, frame::GOAWAY, 0, 0, 0, 0, 0]);
        self.out.extend_from_slice(&self.last_id.to_be_bytes());
        self.out.extend_from_slice(&code.to_be_bytes());
        self.failed = true;
        self.continuation = None;
        for s in self.streams.values() {
            s.cancel.cancel();
            if let Some(tx) = &s.recv {
                tx.reset();
            }
        }
        self.streams.clear();
        self.handlers = FuturesUnordered::new();
        self.sending.clear();
        self.receiving = 0;
    }

    /// Writes what is queued, as few `writev`s as the socket takes.
    fn flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.queue.is_empty() && !self.out.is_empty() {
            // Most wake-ups: everything to say is in `out` (small frames are copied there), so
            // it is written from there, without a vector of slices or a frozen chunk.
            match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                // Cleared, not advanced, when all went: its whole capacity stays for the next.
                Poll::Ready(Ok(w)) if w == self.out.len() => self.out.clear(),
                Poll::Ready(Ok(w)) => self.out.advance(w),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            if self.out.is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
        if !self.out.is_empty() {
            self.queued += self.out.len();
            self.queue.push_back(self.out.split().freeze());
        }
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); 64];
            let mut n = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.queue) {
                *slot = IoSlice::new(chunk);
                n += 1;
            }
            let written = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(w)) => w,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.queued -= written;
            let mut left = written;
            while left > 0 {
                let front = self.queue.front_mut().expect("written bytes were queued");
                if front.len() <= left {
                    left -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The stream a PRIORITY (or HEADERS' priority fields) depends on.
fn dependency(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff
}

/// HEADERS (and CONTINUATIONs when the block is longer than a frame).
fn write_headers(out: &mut BytesMut, id: u32, block: &[u8], end_stream: bool, max_frame: usize) {
    let fin = if end_stream { frame::END_STREAM } else { 0 };
    if block.len() <= max_frame {
        // Nearly every block: one HEADERS frame.
        frame::head(out, block.len(), frame::HEADERS, fin | frame::END_HEADERS, id);
        out.extend_from_slice(block);
        return;
    }
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let last = chunks.peek().is_none();
    frame::head(
        out,
        first.len(),
        frame::HEADERS,
        fin | if last { frame::END_HEADERS } else { 0 },
        id,
    );
    out.extend_from_slice(first);
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        frame::head(
            out,
            c.len(),
            frame::CONTINUATION,
            if last { frame::END_HEADERS } else { 0 },
            id,
        );
        out.extend_from_slice(c);
    }
}

/// Headers HTTP/2 does not carry (RFC 9113 §8.2.2).
fn connection_specific(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// `connection_specific` for a name in any case (an HTTP/1.1 peer's, kept as bytes).
fn raw_connection_specific(name: &[u8]) -> bool {
    matches!(name.len(), 7 | 10 | 16 | 17)
        && [CONNECTION, TRANSFER_ENCODING, UPGRADE]
            .iter()
            .map(HeaderName::as_str)
            .chain(["keep-alive", "proxy-connection"])
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// The request of a header block; `None` when it is malformed (§8.1.1: a stream error). Its
/// regular fields go to the proxy as a block of `name: value\r\n` lines (`headers::raw`, in
/// the body: `ProxyBody::head`), as the HTTP/1.1 server's do: edited as bytes, written upstream
/// in one run, no `HeaderMap` built unless something needs one. Values are checked here as
/// `HeaderValue` would (names were, by the decoder): nothing passes that passed no check before.
/// `size`: the header list's size (RFC 9113 §6.5.2), `last`: the connection's last authority.
fn request(
    fields: &mut Vec<(Name, Bytes)>,
    spans: &mut Vec<[usize; 4]>,
    last: &mut Option<Authority>,
    size: usize,
) -> Option<(Request<ProxyBody>, Option<u64>)> {
    let (mut method, mut scheme, mut authority, mut path) = (None, None, None, None);
    let mut length = None;
    let mut regular = false;
    // `cookie` may come in crumbs: one field for the rest of the way (RFC 9113 §8.2.3).
    let mut cookie: Option<Bytes> = None;
    // The list's size (each field's name and value and 32) has room for its lines.
    let mut block = BytesMut::with_capacity(size);
    spans.clear();
    for (name, value) in fields.drain(..) {
        let slot = match name {
            Name::Method => &mut method,
            Name::Scheme => &mut scheme,
            Name::Authority => &mut authority,
            Name::Path => &mut path,
            Name::Header(name) => {
                regular = true;
                let n = name.as_str().as_bytes();
                // The names looked at, by their bytes (one length compare for most).
                if raw_connection_specific(n) || !field_value(&value) {
                    return None;
                }
                match n {
                    b"te" if value != "trailers" => return None,
                    b"content-length" => {
                        let n = std::str::from_utf8(&value).ok()?.parse::<u64>().ok()?;
                        if length.is_some_and(|l| l != n) {
                            return None;
                        }
                        length = Some(n);
                    }
                    _ => {}
                }
                if n == b"cookie" {
                    cookie = Some(match cookie.take() {
                        None => value,
                        Some(before) => {
                            let mut joined = BytesMut::with_capacity(before.len() + 2 + value.len());
                            joined.extend_from_slice(&before);
                            joined.extend_from_slice(b"; ");
                            joined.extend_from_slice(&value);
                            joined.freeze()
                        }
                    });
                    continue;
                }
                spans.push(line(&mut block, name.as_str().as_bytes(), &value));
                continue;
            }
            Name::Invalid(_) => return None,
        };
        // Pseudo-headers come first, once each.
        if regular || slot.is_some() {
            return None;
        }
        *slot = Some(value);
    }
    if let Some(cookie) = cookie {
        spans.push(line(&mut block, COOKIE.as_str().as_bytes(), &cookie));
    }
    let method = Method::from_bytes(&method?).ok()?;
    let mut uri = http::uri::Parts::default();
    if method == Method::CONNECT {
        if scheme.is_some() || path.is_some() {
            return None;
        }
        uri.authority = Some(authority_of(&authority?, last)?);
    } else {
        let path = path.filter(|p| !p.is_empty())?;
        uri.scheme = Some(http::uri::Scheme::try_from(&scheme?[..]).ok()?);
        if let Some(a) = authority {
            uri.authority = Some(authority_of(&a, last)?);
        }
        uri.path_and_query = Some(http::uri::PathAndQuery::from_maybe_shared(path).ok()?);
    }
    // Without `:authority` the URI is the path alone (the `Host` header names the host).
    if uri.authority.is_none() && method != Method::CONNECT {
        uri.scheme = None;
    }
    let mut body = ProxyBody::none();
    body.set_head(Some(Arc::new(RawHeaders::new(block.freeze(), spans))));
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = Uri::from_parts(uri).ok()?;
    *req.version_mut() = Version::HTTP_2;
    Some((req, length))
}

/// `:authority` as an `Authority`: the previous request's when the bytes are the same (a
/// client sends the same one on every request of a connection, so it is parsed once), else
/// parsed from a copy (the block it came in is not kept alive by it).
fn authority_of(value: &[u8], last: &mut Option<Authority>) -> Option<Authority> {
    if let Some(a) = last.as_ref().filter(|a| a.as_str().as_bytes() == value) {
        return Some(a.clone());
    }
    let a = Authority::from_maybe_shared(Bytes::copy_from_slice(value)).ok()?;
    *last = Some(a.clone());
    Some(a)
}

/// Appends `name: value\r\n` to `block`; where its name and value are.
fn line(block: &mut BytesMut, name: &[u8], value: &[u8]) -> [usize; 4] {
    let n0 = block.len();
    block.extend_from_slice(name);
    let n1 = block.len();
    block.extend_from_slice(b": ");
    block.extend_from_slice(value);
    let v1 = block.len();
    block.extend_from_slice(b"\r\n");
    [n0, n1, n1 + 2, v1]
}

/// What `HeaderValue::from_bytes` accepts: visible ASCII, obs-text, space and tab (no CR, LF
/// or NUL: the value is written into an HTTP/1.1 head as it is).
fn field_value(v: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let byte = |b: &u8| *b >= b' ' && *b != 0x7f || *b == b'\t';
    let mut words = v.chunks_exact(8);
    // Eight bytes at a time: a word with no byte below 0x20 and none equal to 0x7f is fine as
    // it is (the usual "has a byte less than" and "has a zero byte" tests; bytes from 0x80
    // pass); a word with one (a tab, or a bad byte) is looked at byte by byte.
    let words_ok = words.by_ref().all(|w| {
        let w8 = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        let below_space = w8.wrapping_sub(0x20 * ONES) & !w8 & (0x80 * ONES);
        let del = w8 ^ (0x7f * ONES);
        let has_del = del.wrapping_sub(ONES) & !del & (0x80 * ONES);
        below_space | has_del == 0 || w.iter().all(byte)
    });
    words_ok && words.remainder().iter().all(byte)
}

/// Trailers: regular fields only.
fn trailers(fields: &mut Vec<(Name, Bytes)>) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields.drain(..) {
        let Name::Header(name) = name else {
            return None;
        };
        if connection_specific(&name) {
            return None;
        }
        map.append(name, HeaderValue::from_maybe_shared(value).ok()?);
    }
    Some(map)
}

pin_project_lite::pin_project! {
    /// A stream's handler, dropped (without an answer) when the stream is reset.
    struct Cancelable<F> {
        id: u32,
        cancel: Arc<Cancel>,
        #[pin]
        inner: F,
    }
}

impl<F: Future<Output = Response<ProxyBody>>> Future for Cancelable<F> {
    type Output = (u32, Option<Response<ProxyBody>>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.cancel.flag.load(Ordering::Acquire) {
            return Poll::Ready((*this.id, None));
        }
        match this.inner.poll(cx) {
            Poll::Ready(resp) => Poll::Ready((*this.id, Some(resp))),
            Poll::Pending => {
                this.cancel.waker.register(cx.waker());
                Poll::Pending
            }
        }
    }
}

/// Serves an HTTP/2 connection whose first bytes are `read` until it ends; a drain (`drain`
/// turning `true`) sends GOAWAY and lets the streams in flight finish.
pub async fn serve<I>(io: I, read: &[u8], conn: &Conn, drain: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    drive(Connection::new(io, read, |req| conn.handle(req)), drain).await;
}

/// Runs `c` to its end, draining it when `drain` turns `true` (or its sender goes).
pub async fn drive<I, H, F>(mut c: Connection<I, H, F>, mut drain: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut draining = *drain.borrow_and_update();
    if draining {
        c.drain();
    }
    loop {
        tokio::select! {
            biased;
            () = std::future::poll_fn(|cx| c.poll(cx)) => return,
            r = drain.changed(), if !draining => {
                if r.is_err() || *drain.borrow() {
                    draining = true;
                    c.drain();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
