//! fastmesh's data plane: an HTTP/1.1 + HTTP/2 (cleartext) proxy configured by one JSON
//! snapshot at a time (docs/engine-snapshot.md). Built by maturin as `fastmesh._engine`
//! (feature `python`, the `py` module); a plain Rust library without it.
// `deny`, not `forbid`: the global allocator (`alloc`) is the one module allowed `unsafe`.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[cfg_attr(not(feature = "python"), allow(dead_code))]
mod alloc;
pub mod authz;
pub mod balance;
pub mod body;
pub mod config;
pub mod drain;
pub mod engine;
pub mod error;
pub mod h1;
pub mod h2;
pub mod headers;
pub mod listener;
pub mod pool;
pub mod proxy;
pub mod retry;
pub mod route;
pub mod snapshot;
pub mod stats;
pub mod tls;

#[cfg(test)]
mod testutil;

#[cfg(feature = "python")]
mod py;

/// The extension's global allocator, for the examples (a plain Rust build keeps the system one).
pub use alloc::MiMalloc;
pub use engine::Engine;
pub use error::{ConfigError, Error};
