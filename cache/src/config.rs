//! Cache settings, from the environment or from Rust.
//!
//! | variable | values | default |
//! |---|---|---|
//! | `METAJIT_CACHE` | `disk`, `memory`, `off` (any case) | `disk` |
//! | `METAJIT_CACHE_DIR` | a directory | `$XDG_CACHE_HOME/metajit`, else `$HOME/.cache/metajit`, else `<temp dir>/metajit-cache` |
//! | `METAJIT_CACHE_MAX_MB` | a non-negative integer (megabytes of disk) | 1024 |
//!
//! An empty value counts as unset. A bad value is a [`ConfigError`] naming the variable, the
//! value and the allowed values; it is never silently replaced by the default.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The variable choosing the [`CacheMode`].
pub const ENV_MODE: &str = "METAJIT_CACHE";
/// The variable choosing the cache directory.
pub const ENV_DIR: &str = "METAJIT_CACHE_DIR";
/// The variable bounding the disk tier, in megabytes.
pub const ENV_MAX_MB: &str = "METAJIT_CACHE_MAX_MB";
/// The disk bound when [`ENV_MAX_MB`] is unset.
pub const DEFAULT_MAX_MB: u64 = 1024;

const MODE_ALLOWED: &str = "disk, memory, off";
const MAX_MB_ALLOWED: &str = "a non-negative integer (megabytes)";

/// Which tiers a [`Cache`](crate::Cache) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheMode {
    /// The memory tier in front of the disk tier: a fresh process reuses earlier compiles.
    Disk,
    /// The memory tier only: each process compiles each kernel once.
    Memory,
    /// No caching: every lookup builds.
    Off,
}

impl FromStr for CacheMode {
    type Err = ConfigError;

    /// Parses `disk`, `memory` or `off`, ignoring case; the error names [`ENV_MODE`].
    fn from_str(s: &str) -> Result<CacheMode, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "disk" => Ok(CacheMode::Disk),
            "memory" => Ok(CacheMode::Memory),
            "off" => Ok(CacheMode::Off),
            _ => Err(ConfigError::new(ENV_MODE, s, MODE_ALLOWED)),
        }
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheMode::Disk => "disk",
            CacheMode::Memory => "memory",
            CacheMode::Off => "off",
        })
    }
}

/// A bad value for one of the cache's variables.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?} is not valid; allowed values: {allowed}")]
pub struct ConfigError {
    /// The variable, e.g. `METAJIT_CACHE`.
    pub variable: &'static str,
    /// The value it had.
    pub value: String,
    /// The values it may have, in words.
    pub allowed: &'static str,
}

impl ConfigError {
    fn new(variable: &'static str, value: &str, allowed: &'static str) -> ConfigError {
        ConfigError {
            variable,
            value: value.to_owned(),
            allowed,
        }
    }
}

/// The cache's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Which tiers to use.
    pub mode: CacheMode,
    /// The directory holding the disk tier (its entries live in `<dir>/v<FORMAT_VERSION>/`).
    pub dir: PathBuf,
    /// The disk tier's size bound in bytes; 0 means the disk tier keeps nothing (every write is
    /// evicted at once).
    pub max_bytes: u64,
}

impl CacheConfig {
    /// Reads `METAJIT_CACHE`, `METAJIT_CACHE_DIR` and `METAJIT_CACHE_MAX_MB` (and `XDG_CACHE_HOME`
    /// and `HOME` for the default directory) from the process environment.
    pub fn from_env() -> Result<CacheConfig, ConfigError> {
        CacheConfig::parse(&|name| std::env::var_os(name))
    }

    /// Like [`from_env`](Self::from_env), reading the variables through `get` instead (for
    /// tests and embedders that do not want to touch the process environment).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<CacheConfig, ConfigError> {
        CacheConfig::parse(&|name| get(name).map(OsString::from))
    }

    /// Like [`from_vars`](Self::from_vars) with values as the OS gives them: a directory may
    /// be any path; a mode or bound that is not UTF-8 is a [`ConfigError`].
    pub fn from_os_vars(
        get: impl Fn(&str) -> Option<OsString>,
    ) -> Result<CacheConfig, ConfigError> {
        CacheConfig::parse(&get)
    }

    fn parse(get: &dyn Fn(&str) -> Option<OsString>) -> Result<CacheConfig, ConfigError> {
        // An empty value counts as unset.
        let get = |name: &str| get(name).filter(|v| !v.is_empty());
        let mode = match get(ENV_MODE) {
            Some(v) => v.to_string_lossy().parse()?,
            None => CacheMode::Disk,
        };
        let dir = match get(ENV_DIR) {
            Some(v) => PathBuf::from(v),
            None => default_dir(&get),
        };
        let max_mb = match get(ENV_MAX_MB) {
            Some(v) => parse_mb(&v.to_string_lossy())?,
            None => DEFAULT_MAX_MB,
        };
        Ok(CacheConfig {
            mode,
            dir,
            max_bytes: max_mb.saturating_mul(1 << 20),
        })
    }
}

/// `$XDG_CACHE_HOME/metajit` (only an absolute path counts, as the XDG spec says), else
/// `$HOME/.cache/metajit`, else `<temp dir>/metajit-cache`.
fn default_dir(get: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    if let Some(xdg) = get("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return xdg.join("metajit");
    }
    if let Some(home) = get("HOME") {
        return PathBuf::from(home).join(".cache").join("metajit");
    }
    std::env::temp_dir().join("metajit-cache")
}

/// Digits only: `u64::from_str` would also take `+5`.
fn parse_mb(s: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::new(ENV_MAX_MB, s, MAX_MB_ALLOWED);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // More digits than a u64 holds is still "a lot": saturate (no bound) rather than fail.
    Ok(s.parse().unwrap_or(u64::MAX))
}
