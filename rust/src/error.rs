//! Typed engine errors; `py/` maps them to Python exceptions in one place.

use std::io;

/// A snapshot the engine refuses. Nothing changes when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON, or does not have the shape of the contract (docs/engine-snapshot.md).
    #[error("invalid snapshot: {0}")]
    Json(#[from] serde_json::Error),
    /// A field has the right shape but a value the engine cannot use.
    #[error("invalid snapshot: {field}: {message}")]
    Invalid { field: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything `Engine` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind listener {name:?} on {address}: {source}")]
    Bind {
        name: String,
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the engine runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("invalid argument: {0}")]
    Argument(String),
    #[error(transparent)]
    Identity(#[from] crate::tls::IdentityError),
}
