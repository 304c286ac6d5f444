//! The Python binding `fastmesh._engine` (described by src/fastmesh/_engine.pyi): the only
//! module that imports pyo3. Errors become Python exceptions here and nowhere else.

use std::collections::HashMap;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::error::Error;

/// The engine's allocations (not Python's) go to mimalloc: per-request headers, futures and
/// buffers are allocated and freed at a high rate on one thread.
#[global_allocator]
static GLOBAL: crate::alloc::MiMalloc = crate::alloc::MiMalloc;

fn to_py(err: Error) -> PyErr {
    match err {
        Error::Config(e) => PyValueError::new_err(e.to_string()),
        Error::Argument(m) => PyValueError::new_err(m),
        e @ Error::Bind { .. } => PyOSError::new_err(e.to_string()),
        e @ Error::Runtime(_) => PyRuntimeError::new_err(e.to_string()),
    }
}

/// The engine: its own runtime threads; Python only configures it.
#[pyclass(name = "Engine", module = "fastmesh._engine", frozen)]
struct Engine {
    inner: crate::Engine,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (worker_threads = 1))]
    fn new(worker_threads: usize) -> PyResult<Self> {
        Ok(Engine {
            inner: crate::Engine::new(worker_threads).map_err(to_py)?,
        })
    }

    /// Validates and applies a snapshot; returns its version. ValueError for a bad snapshot,
    /// OSError when a listener cannot bind; either way nothing changes.
    fn apply(&self, py: Python<'_>, snapshot_json: &str) -> PyResult<u64> {
        py.detach(|| self.inner.apply(snapshot_json)).map_err(to_py)
    }

    /// Listener name to bound "ip:port".
    fn listeners(&self) -> HashMap<String, String> {
        self.inner
            .listeners()
            .into_iter()
            .map(|(name, addr)| (name, addr.to_string()))
            .collect()
    }

    /// Counters as JSON (docs/engine-snapshot.md).
    fn stats_json(&self) -> String {
        self.inner.stats_json()
    }

    /// Stops accepting and waits up to `timeout_s` for in-flight requests; True if all finished.
    fn drain(&self, py: Python<'_>, timeout_s: f64) -> PyResult<bool> {
        let timeout = Duration::try_from_secs_f64(timeout_s).map_err(|_| {
            PyValueError::new_err(format!(
                "timeout_s must be a non-negative number of seconds (got {timeout_s})"
            ))
        })?;
        Ok(py.detach(|| self.inner.drain(timeout)))
    }

    fn version(&self) -> u64 {
        self.inner.version()
    }

    fn active_requests(&self) -> u64 {
        self.inner.active_requests()
    }
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()
}
