//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use metajit_cache::{Key, KeyBuilder};

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "metajit-cache-test-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create a test directory under the temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The test key numbered `i`.
pub fn key(i: u64) -> Key {
    KeyBuilder::new("test").u64(i).finish()
}

/// The test payload for key `i`: a few bytes that spell `i`, with a length depending on `i`.
pub fn payload(i: u64) -> Vec<u8> {
    let mut bytes = i.to_le_bytes().to_vec();
    bytes.extend(std::iter::repeat_n(i as u8, (i % 7) as usize));
    bytes
}

/// Decodes [`payload`].
pub fn decode(bytes: &[u8]) -> Result<u64, String> {
    let first: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("payload of {} bytes is too short", bytes.len()))?;
    Ok(u64::from_le_bytes(first))
}

/// Sets the modification time of `path` to `ago` before now.
pub fn set_age(path: &Path, ago: Duration) {
    let file = fs::File::options()
        .write(true)
        .open(path)
        .expect("open to set mtime");
    file.set_modified(SystemTime::now() - ago)
        .expect("set mtime");
}
