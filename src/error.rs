//! metajit's error type, for failures of the environment (configuration, I/O, devices,
//! compilation). Misuse of the API (shape or dtype mismatch) panics at the caller's line instead.

/// An error from the environment metajit runs in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An environment variable or setting has a value metajit does not accept.
    #[error("invalid value {value:?} for {var}: expected {allowed}")]
    Config {
        /// The variable.
        var: &'static str,
        /// The value found.
        value: String,
        /// The values accepted.
        allowed: &'static str,
    },
    /// The selected backend cannot run here.
    #[error("device {device}: {reason}")]
    Device {
        /// The device asked for.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A backend failed to compile or run a graph.
    #[error("backend: {0}")]
    Backend(#[from] metajit_codegen::BackendError),
}

impl Error {
    pub(crate) fn config(var: &str, value: &str, allowed: &'static str) -> Error {
        Error::Config {
            var: leak_var_name(var),
            value: value.to_string(),
            allowed,
        }
    }
}

/// Variable names are a small fixed set; map them to their static spelling.
fn leak_var_name(var: &str) -> &'static str {
    const KNOWN: [&str; 7] = [
        "METAJIT_MODE",
        "METAJIT_DEVICE",
        "METAJIT_DEBUG",
        "METAJIT_THREADS",
        "METAJIT_CACHE",
        "METAJIT_CACHE_DIR",
        "METAJIT_CACHE_MAX_MB",
    ];
    KNOWN.into_iter().find(|k| *k == var).unwrap_or("METAJIT_*")
}

/// `Result` with metajit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
