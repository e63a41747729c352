//! metajit's error type, for failures of the environment (configuration, I/O, devices,
//! compilation). Misuse of the API (shape or dtype mismatch) panics at the caller's line instead.

use std::path::{Path, PathBuf};

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
    /// A file could not be opened, read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: `read`, `write`, ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file's contents break its format (damaged, truncated, or not that kind of file).
    #[error("bad {format} file {}: {reason}", path.display())]
    Format {
        /// The format expected (`idx`, `gzip`, `safetensors`, ...).
        format: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
    /// The tensors in a file do not match the tensors they were to be loaded into.
    #[error("cannot load {}: {}", path.display(), problems.join("; "))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Every problem found, one a line: missing or unexpected names, wrong shapes or dtypes.
        problems: Vec<String>,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// An [`Error::Format`] for `path`.
    pub(crate) fn format(format: &'static str, path: &Path, reason: impl Into<String>) -> Error {
        Error::Format {
            format,
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

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
