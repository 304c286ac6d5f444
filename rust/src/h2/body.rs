//! A request body arriving in DATA frames, read by the request's handler. The connection puts
//! data in, the handler takes it out; what the handler took is given back to the client as
//! window (stream and connection) by the connection, so an unread body holds the client back.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;

#[derive(Default)]
struct State {
    data: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    end: bool,
    /// The stream was reset (by the client, or for a protocol error): the body fails.
    reset: bool,
    /// The handler dropped the body: what comes is discarded (and its window given back).
    dropped: bool,
    /// Bytes taken by the handler and not yet given back as window.
    taken: usize,
    reader: Option<Waker>,
    conn: Option<Waker>,
}

/// The connection's end.
#[derive(Clone)]
pub struct Sender(Arc<Mutex<State>>);

/// The handler's end (`PeerBody::H2`).
pub struct RecvBody {
    state: Arc<Mutex<State>>,
    /// `content-length`, when the request has one (validated by the connection).
    length: Option<u64>,
    read: u64,
}

pub fn channel(length: Option<u64>) -> (Sender, RecvBody) {
    let state = Arc::new(Mutex::new(State::default()));
    (Sender(state.clone()), RecvBody { state, length, read: 0 })
}

impl Sender {
    /// Data for the handler; `false` when it dropped the body (the caller gives the window back).
    pub fn data(&self, data: Bytes) -> bool {
        let mut s = self.0.lock();
        if s.dropped {
            return false;
        }
        s.data.push_back(data);
        wake(&mut s.reader);
        true
    }

    pub fn end(&self, trailers: Option<HeaderMap>) {
        let mut s = self.0.lock();
        s.end = true;
        s.trailers = trailers;
        wake(&mut s.reader);
    }

    pub fn reset(&self) {
        let mut s = self.0.lock();
        s.reset = true;
        wake(&mut s.reader);
    }

    /// Bytes the handler took since the last call; `cx` is woken when it takes more.
    pub fn taken(&self, cx: &Context<'_>) -> usize {
        let mut s = self.0.lock();
        if s.conn.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            s.conn = Some(cx.waker().clone());
        }
        std::mem::take(&mut s.taken)
    }
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let mut s = this.state.lock();
        if let Some(data) = s.data.pop_front() {
            s.taken += data.len();
            this.read += data.len() as u64;
            wake(&mut s.conn);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if s.reset {
            return Poll::Ready(Some(Err(std::io::Error::other("HTTP/2 stream reset by the client"))));
        }
        if let Some(trailers) = s.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if s.end {
            return Poll::Ready(None);
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let s = self.state.lock();
        s.end && s.data.is_empty() && s.trailers.is_none() && !s.reset
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.read)),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        s.dropped = true;
        s.taken += s.data.drain(..).map(|d| d.len()).sum::<usize>();
        wake(&mut s.conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(b: &mut RecvBody) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(b).poll_frame(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn data_then_trailers_then_end_and_what_was_taken_is_counted() {
        let (tx, mut rx) = channel(Some(5));
        assert!(poll(&mut rx).is_pending());
        assert!(tx.data(Bytes::from_static(b"abc")));
        tx.data(Bytes::from_static(b"de"));
        let cx = Context::from_waker(Waker::noop());
        assert_eq!(tx.taken(&cx), 0);
        let Poll::Ready(Some(Ok(f))) = poll(&mut rx) else {
            panic!()
        };
        assert_eq!(f.into_data().unwrap(), "abc");
        assert_eq!(rx.size_hint().exact(), Some(2));
        assert_eq!(tx.taken(&cx), 3);
        let mut t = HeaderMap::new();
        t.insert("x-t", "1".parse().unwrap());
        tx.end(Some(t));
        assert!(!rx.is_end_stream());
        assert!(matches!(poll(&mut rx), Poll::Ready(Some(Ok(_)))));
        let Poll::Ready(Some(Ok(f))) = poll(&mut rx) else {
            panic!()
        };
        assert!(f.is_trailers());
        assert!(rx.is_end_stream());
        assert!(matches!(poll(&mut rx), Poll::Ready(None)));
        assert_eq!(tx.taken(&cx), 2);
    }

    #[test]
    fn a_reset_fails_the_body_and_a_dropped_body_gives_its_data_back() {
        let (tx, mut rx) = channel(None);
        tx.reset();
        assert!(matches!(poll(&mut rx), Poll::Ready(Some(Err(_)))));
        let (tx, rx) = channel(None);
        tx.data(Bytes::from_static(b"abcd"));
        drop(rx);
        let cx = Context::from_waker(Waker::noop());
        assert_eq!(tx.taken(&cx), 4);
        assert!(!tx.data(Bytes::from_static(b"ef")));
    }
}
