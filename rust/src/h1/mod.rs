//! The engine's own HTTP/1.1 client for plaintext upstreams (the fast path): a request whose
//! body is already known (none, or buffered for replay) is written as bytes on a pooled
//! connection the request's task drives itself, and the response is parsed with `httparse`
//! and relayed with its framing (content-length, chunked, close-delimited, none). Everything
//! else (request bodies streamed from the client, TLS upstreams, HTTP/2) stays on hyper's
//! client. Chosen per request in `pool::UpstreamClient::request`, before anything is sent.
//!
//! Switch: `FASTMESH_H1_FASTPATH` in the engine's environment, read once (`0` off, `1` on).

pub mod body;
pub mod codec;
pub mod conn;
pub mod server;

use std::sync::OnceLock;

/// Default when `FASTMESH_H1_FASTPATH` is not set.
const DEFAULT_ON: bool = true;

/// Whether the fast path is on (read once per process).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("FASTMESH_H1_FASTPATH") {
        Ok(v) => v != "0",
        Err(_) => DEFAULT_ON,
    })
}
