//! Graceful shutdown: every downstream connection is watched; draining asks each to finish
//! (HTTP/1.1 closes after the response in progress, HTTP/2 sends GOAWAY) and waits for all of
//! them, up to a deadline.

use std::future::Future;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use parking_lot::Mutex;

pub struct Drain {
    /// `None` once draining started.
    graceful: Mutex<Option<GracefulShutdown>>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            graceful: Mutex::new(Some(GracefulShutdown::new())),
        }
    }
}

impl Drain {
    /// Wraps a connection so a drain reaches it; `None` when draining already started (the
    /// caller then drops the connection).
    pub fn watch<C: GracefulConnection>(&self, conn: C) -> Option<impl Future<Output = C::Output>> {
        self.graceful.lock().as_ref().map(|g| g.watch(conn))
    }

    /// Starts draining every watched connection and waits up to `deadline` for them to close.
    /// `true` when all closed in time (or a drain already ran).
    pub async fn drain(&self, deadline: Duration) -> bool {
        let graceful = self.graceful.lock().take();
        match graceful {
            Some(g) => tokio::time::timeout(deadline, g.shutdown()).await.is_ok(),
            None => true,
        }
    }
}
