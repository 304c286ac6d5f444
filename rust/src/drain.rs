//! Graceful shutdown: every downstream connection is watched; draining asks each to finish
//! (HTTP/1.1 closes after the response in progress, HTTP/2 sends GOAWAY) and waits for all of
//! them, up to a deadline. Connections served by hyper are watched through hyper-util's
//! `GracefulShutdown`; those of the engine's own HTTP/1.1 server (`h1::server`) hold a
//! receiver of `signal`, which turns `true` when the drain starts, and drop it when they close.

use std::future::Future;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use parking_lot::Mutex;
use tokio::sync::watch;

pub struct Drain {
    /// `None` once draining started.
    graceful: Mutex<Option<GracefulShutdown>>,
    signal: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            graceful: Mutex::new(Some(GracefulShutdown::new())),
            signal: watch::Sender::new(false),
        }
    }
}

impl Drain {
    /// Wraps a connection so a drain reaches it; `None` when draining already started (the
    /// caller then drops the connection).
    pub fn watch<C: GracefulConnection>(&self, conn: C) -> Option<impl Future<Output = C::Output>> {
        self.graceful.lock().as_ref().map(|g| g.watch(conn))
    }

    /// A signal for a connection the engine serves itself: it changes to `true` when the drain
    /// starts; the drain waits until every receiver is dropped. `None` when draining already
    /// started.
    pub fn subscribe(&self) -> Option<watch::Receiver<bool>> {
        let graceful = self.graceful.lock();
        graceful.as_ref().map(|_| self.signal.subscribe())
    }

    /// Starts draining every watched connection and waits up to `deadline` for them to close.
    /// `true` when all closed in time (or a drain already ran).
    pub async fn drain(&self, deadline: Duration) -> bool {
        let graceful = self.graceful.lock().take();
        match graceful {
            Some(g) => {
                self.signal.send_replace(true);
                let all = async {
                    g.shutdown().await;
                    self.signal.closed().await;
                };
                tokio::time::timeout(deadline, all).await.is_ok()
            }
            None => true,
        }
    }
}
