//! metajit's content-addressed store of compiled artifacts.
//!
//! It knows bytes and keys, not kernels: a key is the blake3 hash of a canonical kernel
//! description computed by the caller; a memory tier maps keys to loaded artifacts and a disk
//! tier to artifact bytes (see DESIGN §6). This crate is filled in with the compiled-kernel
//! cache issue; until the native backend exists there is nothing to cache.
#![deny(missing_docs)]

/// The version of the on-disk format; written first in every stored artifact, and part of
/// every key, so that a format change never reads an old entry.
pub const FORMAT_VERSION: u32 = 1;
