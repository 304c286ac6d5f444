//! A response body read from a `RawConn` as its reader polls it, framed by the response head;
//! at its end the connection goes back to its pool (`Release`) when both sides keep it.

use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use super::codec::{Chunk, Chunked, Framing};
use super::conn::RawConn;
use crate::headers::raw::RawHeaders;
use crate::pool::Return;

pub struct RawBody {
    /// `None` once the body ended (the connection released or closed).
    conn: Option<RawConn>,
    state: State,
    keep_alive: bool,
    release: Option<Return>,
    /// Trailers found after the last chunk, delivered after the data. Boxed: rare.
    trailers: Option<Box<HeaderMap>>,
    /// The response's header fields while they are forwarded as bytes (`headers::raw`); here,
    /// in the box, so a response moved by value stays small. Taken by whoever writes the head.
    pub head: Option<RawHeaders>,
}

enum State {
    /// Data already read (the whole body arrived with the head), then the end.
    Whole(Option<Bytes>),
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

impl RawBody {
    /// The body of a response whose head was just read from `conn`. When the whole body is
    /// already in the buffer, the connection is released at once. Made in its box (it lives
    /// there, `PeerBody::Raw`): made on the stack and then boxed, it was copied twice.
    pub fn new(
        mut conn: RawConn,
        head: Option<RawHeaders>,
        framing: Framing,
        keep_alive: bool,
        release: Return,
    ) -> Box<Self> {
        let state = match framing {
            Framing::Empty => State::Whole(None),
            Framing::Length(n) if conn.buf.len() as u64 >= n => {
                let n = usize::try_from(n).expect("within the buffer");
                State::Whole(Some(conn.buf.split_to(n).freeze()))
            }
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::default()),
            Framing::Close => State::Close,
        };
        let mut body = Box::new(RawBody {
            conn: Some(conn),
            state,
            keep_alive,
            release: Some(release),
            trailers: None,
            head,
        });
        if matches!(body.state, State::Whole(_)) {
            body.finish();
        }
        body
    }

    /// The message ended: the connection goes back to the pool if both ends keep it and
    /// nothing follows the response; else it closes.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                if let Some(release) = self.release.take() {
                    release.give(conn);
                }
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(e)))
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            match &mut self.state {
                State::Whole(data) => {
                    return match data.take() {
                        Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                        None => {
                            self.state = State::Done;
                            continue;
                        }
                    };
                }
                State::Done => return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t)))),
                State::Length(left) => {
                    let left = *left;
                    let conn = self.conn.as_mut().expect("open while the body runs");
                    if conn.buf.is_empty() {
                        match std::task::ready!(conn.poll_fill(cx)) {
                            Ok(0) => {
                                return self.fail(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "upstream closed within the body",
                                ))
                            }
                            Ok(_) => {}
                            Err(e) => return self.fail(e),
                        }
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(conn.buf.len());
                    let data = conn.buf.split_to(n).freeze();
                    let left = left - n as u64;
                    if left == 0 {
                        self.state = State::Done;
                        self.finish();
                    } else {
                        self.state = State::Length(left);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(dec) => {
                    let conn = self.conn.as_mut().expect("open while the body runs");
                    match dec.decode(&mut conn.buf) {
                        Ok(Chunk::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                        Ok(Chunk::Trailers(t)) => self.trailers = Some(Box::new(t)),
                        Ok(Chunk::End) => {
                            self.state = State::Done;
                            self.finish();
                        }
                        Ok(Chunk::More) => match std::task::ready!(conn.poll_fill(cx)) {
                            Ok(0) => {
                                return self.fail(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "upstream closed within a chunked body",
                                ))
                            }
                            Ok(_) => {}
                            Err(e) => return self.fail(e),
                        },
                        Err(e) => return self.fail(e),
                    }
                }
                State::Close => {
                    let conn = self.conn.as_mut().expect("open while the body runs");
                    if conn.buf.is_empty() {
                        match std::task::ready!(conn.poll_fill(cx)) {
                            Ok(0) => {
                                self.conn = None;
                                self.state = State::Done;
                                continue;
                            }
                            Ok(_) => {}
                            Err(e) => return self.fail(e),
                        }
                    }
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Whole(None)) && self.trailers.is_none()
    }

    pub fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Whole(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            State::Length(n) => SizeHint::with_exact(*n),
            State::Done if self.trailers.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
