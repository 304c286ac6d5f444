//! The engine's own downstream HTTP/2 server for prior-knowledge cleartext connections (h2c),
//! in place of hyper's (h2 crate) server: `server` (one task per connection, the requests of a
//! read decoded together and their responses written together), `frame`, `hpack`, and the
//! request body `body`. Reached from the HTTP/1.1 server's hand-off when a connection starts
//! with the HTTP/2 preface (`listener`); TLS connections (ALPN h2) stay on hyper.
//!
//! Switch: `FASTMESH_H2_SERVER=0` in the engine's environment (read once) serves h2c with
//! hyper again; so does `FASTMESH_H1_SERVER=0` (no hand-off to take the connection from).

pub mod body;
pub mod frame;
pub mod hpack;
pub mod server;

use std::sync::OnceLock;

/// Whether h2c connections are served here (read once per process).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("FASTMESH_H2_SERVER").map_or(true, |v| v != "0"))
}

/// Whether the bytes read so far start an HTTP/2 connection (prior knowledge): the whole
/// preface, or as much of it as was read, when that is at least its request line.
pub fn is_preface(read: &[u8]) -> bool {
    let n = read.len().min(frame::PREFACE.len());
    n >= 16 && read[..n] == frame::PREFACE[..n]
}
