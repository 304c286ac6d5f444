//! The body type both ways: the peer's body streamed as it arrives (never buffered), or
//! nothing (responses the engine makes, a bodiless request replayed). A response body carries
//! the request's in-flight guard, so a request counts as active until its response is done.

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::balance::Endpoint;
use crate::pool::Pooled;
use crate::stats::Stats;

/// Counts a request in `requests_active` (engine-wide, and per endpoint once one is chosen)
/// until dropped.
pub struct InFlight {
    stats: Arc<Stats>,
    endpoint: Option<Arc<Endpoint>>,
}

impl InFlight {
    pub fn new(stats: &Arc<Stats>) -> Self {
        stats.requests_active.fetch_add(1, Relaxed);
        InFlight {
            stats: stats.clone(),
            endpoint: None,
        }
    }

    pub fn to_endpoint(&mut self, endpoint: &Arc<Endpoint>) {
        endpoint.stats.requests_active.fetch_add(1, Relaxed);
        if let Some(old) = self.endpoint.replace(endpoint.clone()) {
            old.stats.requests_active.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.requests_active.fetch_sub(1, Relaxed);
        if let Some(e) = &self.endpoint {
            e.stats.requests_active.fetch_sub(1, Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ProxyBody {
        #[pin]
        inner: Option<Incoming>,
        guard: Option<InFlight>,
        // A body the engine wrote itself (an error message), sent once.
        text: Option<Bytes>,
        // The upstream connection a response body comes on: back to its pool once the body
        // is read to its end.
        pooled: Option<Pooled>,
    }

    impl PinnedDrop for ProxyBody {
        // hyper stops polling a body once it says it is at its end (content-length reached):
        // the connection is reusable then too.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(pooled) = this.pooled.take() {
                if this.inner.as_ref().get_ref().as_ref().is_some_and(Body::is_end_stream) {
                    pooled.release();
                }
            }
        }
    }
}

impl ProxyBody {
    pub fn empty(guard: InFlight) -> Self {
        ProxyBody {
            inner: None,
            guard: Some(guard),
            text: None,
            pooled: None,
        }
    }

    /// A response body from upstream; an empty one gives its connection back at once (hyper
    /// does not poll a body that says it is at its end).
    pub fn upstream(body: Incoming, guard: InFlight, pooled: Pooled) -> Self {
        let pooled = if body.is_end_stream() {
            pooled.release();
            None
        } else {
            Some(pooled)
        };
        ProxyBody {
            inner: Some(body),
            guard: Some(guard),
            text: None,
            pooled,
        }
    }

    /// A short body the engine writes itself.
    pub fn text(text: Bytes, guard: InFlight) -> Self {
        ProxyBody {
            inner: None,
            guard: Some(guard),
            text: Some(text),
            pooled: None,
        }
    }

    /// A downstream request body on its way upstream.
    pub fn request(body: Incoming) -> Self {
        ProxyBody {
            inner: Some(body),
            guard: None,
            text: None,
            pooled: None,
        }
    }

    /// No body and no guard.
    pub fn none() -> Self {
        ProxyBody {
            inner: None,
            guard: None,
            text: None,
            pooled: None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let Some(mut inner) = this.inner.as_pin_mut() else {
            if let Some(text) = this.text.take() {
                return Poll::Ready(Some(Ok(Frame::data(text))));
            }
            this.guard.take();
            return Poll::Ready(None);
        };
        let frame = inner.as_mut().poll_frame(cx);
        match frame {
            Poll::Ready(None) => {
                if let Some(pooled) = this.pooled.take() {
                    pooled.release();
                }
                this.guard.take();
            }
            Poll::Ready(Some(Err(_))) => {
                this.pooled.take();
                this.guard.take();
            }
            Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => {
                if let Some(pooled) = this.pooled.take() {
                    pooled.release();
                }
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.text.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(
            || SizeHint::with_exact(self.text.as_ref().map_or(0, |t| t.len() as u64)),
            Body::size_hint,
        )
    }
}
