//! metajit's content-addressed store of compiled artifacts (DESIGN §6).
//!
//! It knows bytes and keys, not kernels. The caller computes a [`Key`] with a [`KeyBuilder`]
//! from everything that can change the code (canonical kernel IR text, backend, target features,
//! codegen version, compile options) and asks a [`Cache`] for the artifact, supplying how to load
//! one from stored bytes and how to build one:
//!
//! ```
//! use metajit_cache::{Cache, CacheConfig, CacheMode, KeyBuilder};
//! # let dir = std::env::temp_dir().join(format!("metajit-cache-doctest-{}", std::process::id()));
//! let config = CacheConfig { mode: CacheMode::Disk, dir: dir.clone(), max_bytes: 1 << 20 };
//! let cache: Cache<String> = Cache::new(&config, "cpu");
//! let key = KeyBuilder::new("kernel").str("%0 = add a b : f32[4]").str("cpu").finish();
//! let build = || Ok::<_, std::str::Utf8Error>(("code".to_string(), b"code".to_vec()));
//! let load = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_string);
//! assert_eq!(*cache.get_or_build(key, load, build)?, "code"); // built, stored in both tiers
//! assert_eq!(*cache.get_or_build(key, load, build)?, "code"); // memory hit
//! cache.clear_memory();
//! assert_eq!(*cache.get_or_build(key, load, build)?, "code"); // disk hit
//! assert_eq!((cache.stats().misses, cache.stats().memory_hits, cache.stats().disk_hits), (1, 1, 1));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), std::str::Utf8Error>(())
//! ```
//!
//! - [`key`]: keys, and the unambiguous encoding they hash.
//! - [`config`]: [`CacheConfig`] from `METAJIT_CACHE`, `METAJIT_CACHE_DIR`,
//!   `METAJIT_CACHE_MAX_MB`, or from Rust.
//! - [`memory`]: [`MemoryTier`], key → loaded artifact within a process.
//! - [`disk`]: [`DiskTier`], key → bytes shared by processes: the layout, the entry format, and
//!   why atomic writes, verified reads and least-recently-used eviction make it safe for
//!   concurrent processes and robust against damage.
//! - [`cache`]: [`Cache`], the tiers together; it never fails because of the environment.
//! - [`stats`]: hit, miss and timing counters.
#![deny(missing_docs)]

pub mod cache;
pub mod config;
pub mod disk;
pub mod key;
pub mod memory;
pub mod stats;

use std::io;
use std::path::PathBuf;

pub use cache::{Cache, Source};
pub use config::{CacheConfig, CacheMode, ConfigError};
pub use disk::{DiskTier, EntryInfo, Lookup, VerifyReport};
pub use key::{Key, KeyBuilder};
pub use memory::MemoryTier;
pub use stats::{Stats, StatsSnapshot};

/// The version of the on-disk format; written in every stored artifact's header, and part of
/// every key, so that a format change never reads an old entry.
pub const FORMAT_VERSION: u32 = 1;

/// A failure of the disk tier, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file-system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `create directory`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error from the system.
        source: io::Error,
    },
    /// A write to a disk tier opened for inspection only
    /// ([`DiskTier::open_existing`](crate::DiskTier::open_existing)).
    #[error("cannot write {}: the cache was opened read-only", path.display())]
    ReadOnly {
        /// The entry that was to be written.
        path: PathBuf,
    },
    /// The backend name cannot be used as a directory name.
    #[error("bad cache backend name {backend:?}: {why}")]
    BadBackend {
        /// The name given.
        backend: String,
        /// What is wrong with it.
        why: &'static str,
    },
}
