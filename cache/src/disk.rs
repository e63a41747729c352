//! The disk tier: key → artifact bytes, in files shared by every process using the directory.
//!
//! # Layout
//!
//! ```text
//! <dir>/v<FORMAT_VERSION>/<backend>/<first 2 hex digits of key>/<64 hex digits of key>
//! ```
//!
//! Each entry is a header followed by the payload:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `MJITKRNL` |
//! | 4 | [`FORMAT_VERSION`], little-endian |
//! | 32 | the key |
//! | 8 | payload length, little-endian |
//! | 32 | blake3 of the payload |
//! | n | payload |
//!
//! # Guarantees
//!
//! - **Atomic writes.** [`DiskTier::put`] writes a uniquely named temp file
//!   (`.tmp-<pid>-<counter>-<nanos>`, created exclusively) in the entry's own directory and
//!   renames it over the entry. `rename` within a directory is atomic on POSIX, so a reader opens
//!   either the old complete file or the new complete one, never a partial one; a reader that
//!   already has the old file open keeps reading it even after it is replaced or evicted.
//! - **Verified reads.** [`DiskTier::get`] checks the magic, the version, that the stored key is
//!   the requested one, that the stored length is exactly the bytes that follow, and the
//!   checksum. Anything else (empty, truncated, bit-flipped, foreign, older or newer format) is
//!   reported as [`Lookup::Damaged`] and removed, never returned as a hit. The checksum guards
//!   against accidents (crashes, full disks, bad copies), not against someone who can write to
//!   the directory: the directory must be as trusted as the code that runs from it.
//! - **Bounded size, least recently used first.** A hit refreshes the entry's modification
//!   time; when the entries under `<dir>/v<FORMAT_VERSION>/` (all backends) exceed the bound,
//!   the oldest are deleted until the total is at most 90% of it. Each `DiskTier` keeps an
//!   estimate of that total (one directory scan on the first write, plus the size of each of
//!   its own writes) and rescans only when the estimate crosses the bound or when its own
//!   writes since its last scan pass 10% of the bound, so most writes cost no scan. Writes by
//!   other processes are seen only at a rescan; since every process rescans after writing 10%
//!   of the bound, the directory exceeds the bound by at most about 10% (plus one entry) per
//!   process writing to it. Trees of other format versions are not counted;
//!   [`DiskTier::clear`] removes them.
//! - **Inspection writes nothing.** [`DiskTier::open_existing`] opens a tier for inspection and
//!   maintenance (the `metajit cache` command) without creating a directory or writing a file,
//!   so `stats` and `verify` work on a full disk, a read-only mount or another user's cache:
//!   its [`get`](DiskTier::get) neither refreshes a hit's time nor removes a damaged entry,
//!   [`entries`](DiskTier::entries) and [`verify`](DiskTier::verify) only read, and its
//!   [`put`](DiskTier::put) fails. Only the explicit deletions remove files: `verify(true)`,
//!   [`evict`](DiskTier::evict) and [`clear`](DiskTier::clear).
//! - **Concurrent processes are safe.** Any process may delete any file at any moment (eviction,
//!   `clear`, a damaged entry): every file-system error while scanning or evicting is ignored,
//!   and a write whose directory vanished recreates it. The worst outcome of a race is a miss
//!   and a rebuild. Stale temp files (from crashed writers, older than an hour) are removed by
//!   eviction scans.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{CacheError, FORMAT_VERSION, Key};

/// The first 8 bytes of every entry.
pub const MAGIC: [u8; 8] = *b"MJITKRNL";
/// The size of an entry's header: magic, version, key, payload length, checksum.
pub const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 32;

/// Temp files older than this are left over from a crashed writer.
const STALE_TEMP: Duration = Duration::from_secs(60 * 60);
const TEMP_PREFIX: &str = ".tmp-";
/// The running total is not known yet (no scan since `open`).
const UNKNOWN: u64 = u64::MAX;

/// The answer of [`DiskTier::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The entry exists and verified: its payload.
    Hit(Vec<u8>),
    /// There is no entry for the key.
    Miss,
    /// There was an entry but it could not be used (it has been removed where possible): why.
    Damaged(String),
}

/// One file in the disk tier, as listed by [`DiskTier::entries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// Where it is.
    pub path: PathBuf,
    /// The backend directory it is in.
    pub backend: String,
    /// The key its name spells, or `None` if the name is not a key (a stray file).
    pub key: Option<Key>,
    /// Its size, header included.
    pub bytes: u64,
    /// Its modification time: the last write or hit.
    pub modified: Option<SystemTime>,
}

/// The result of [`DiskTier::verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries that verified.
    pub ok: usize,
    /// Files that did not, and why.
    pub damaged: Vec<(PathBuf, String)>,
    /// The total size of the entries that verified.
    pub bytes: u64,
}

/// The disk tier of one backend. Cheap to share between threads (`&self` everywhere).
#[derive(Debug)]
pub struct DiskTier {
    dir: PathBuf,
    root: PathBuf,
    backend_dir: PathBuf,
    max_bytes: u64,
    /// Approximate bytes under `root`, or [`UNKNOWN`].
    estimate: AtomicU64,
    /// Bytes this tier wrote since its last scan.
    since_scan: AtomicU64,
    /// Held by the thread scanning for eviction; others skip rather than scan again.
    evicting: Mutex<()>,
    /// Opened by [`DiskTier::open_existing`]: reads never write, `put` fails.
    read_only: bool,
}

impl DiskTier {
    /// Opens (creating as needed) the tier for `backend` in `dir`, bounded to `max_bytes` of
    /// entries (0: keep nothing). Fails, naming the path, if the directory cannot be created or
    /// written, or if `backend` is not a plain directory name.
    pub fn open(dir: &Path, backend: &str, max_bytes: u64) -> Result<DiskTier, CacheError> {
        let tier = DiskTier::open_existing(dir, backend, max_bytes)?;
        let backend_dir = &tier.backend_dir;
        fs::create_dir_all(backend_dir).map_err(io_err("create directory", backend_dir))?;
        // Prove the directory is writable: permissions, read-only mounts and full disks all show
        // up here rather than as a failed write per kernel later.
        let probe = backend_dir.join(temp_name());
        File::create_new(&probe)
            .and_then(|mut f| f.write_all(b"probe"))
            .map_err(io_err("write a file in", backend_dir))?;
        fs::remove_file(&probe).map_err(io_err("remove", &probe))?;
        Ok(DiskTier {
            read_only: false,
            ..tier
        })
    }

    /// Opens the tier for `backend` in `dir` for inspection and maintenance, creating and
    /// writing nothing (see the module doc): a missing directory is an empty tier, and a full
    /// disk or read-only mount is no obstacle. Fails only if `backend` is not a plain directory
    /// name.
    pub fn open_existing(
        dir: &Path,
        backend: &str,
        max_bytes: u64,
    ) -> Result<DiskTier, CacheError> {
        check_backend_name(backend)?;
        let root = dir.join(format!("v{FORMAT_VERSION}"));
        let backend_dir = root.join(backend);
        Ok(DiskTier {
            dir: dir.to_owned(),
            root,
            backend_dir,
            max_bytes,
            estimate: AtomicU64::new(UNKNOWN),
            since_scan: AtomicU64::new(0),
            evicting: Mutex::new(()),
            read_only: true,
        })
    }

    /// The cache directory given to [`open`](Self::open).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/v<FORMAT_VERSION>`: the tree the size bound covers.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The size bound in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where the entry for `key` lives (whether or not it exists).
    pub fn entry_path(&self, key: &Key) -> PathBuf {
        let hex = key.to_string();
        self.backend_dir.join(&hex[..2]).join(hex)
    }

    /// Reads and verifies the entry for `key`. A damaged entry is removed (best effort) and
    /// reported; a hit refreshes the entry's modification time (best effort) for eviction.
    /// A tier from [`open_existing`](Self::open_existing) does neither: it only reads.
    pub fn get(&self, key: &Key) -> Lookup {
        let path = self.entry_path(key);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            // Unreadable: unusable, but a rebuild's `put` replaces it.
            Err(e) => return Lookup::Damaged(format!("cannot be opened: {e}")),
        };
        let meta = match file.metadata() {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Lookup::Damaged("not a regular file".to_owned()),
            Err(e) => return Lookup::Damaged(format!("cannot be read: {e}")),
        };
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        if let Err(e) = file.read_to_end(&mut bytes) {
            return Lookup::Damaged(format!("cannot be read: {e}"));
        }
        match check_entry(&bytes, key) {
            Ok(()) => {
                if !self.read_only {
                    let _ = file.set_modified(SystemTime::now());
                }
                bytes.drain(..HEADER_LEN);
                Lookup::Hit(bytes)
            }
            Err(why) => {
                if !self.read_only {
                    remove_if_unchanged(&path, &meta);
                }
                Lookup::Damaged(why)
            }
        }
    }

    /// Stores `payload` under `key` atomically (replacing any entry), then keeps the tier under
    /// its bound. Returns the number of entries evicted for that. Fails on a tier from
    /// [`open_existing`](Self::open_existing).
    pub fn put(&self, key: &Key, payload: &[u8]) -> Result<usize, CacheError> {
        let path = self.entry_path(key);
        if self.read_only {
            return Err(CacheError::ReadOnly { path });
        }
        let mut entry = Vec::with_capacity(HEADER_LEN + payload.len());
        entry.extend_from_slice(&MAGIC);
        entry.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        entry.extend_from_slice(&key.0);
        entry.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        entry.extend_from_slice(blake3::hash(payload).as_bytes());
        entry.extend_from_slice(payload);
        write_atomically(&path, &entry)?;

        let written = entry.len() as u64;
        let estimate = self.estimate.fetch_update(Relaxed, Relaxed, |total| {
            (total != UNKNOWN).then(|| total.saturating_add(written))
        });
        let since_scan = self
            .since_scan
            .fetch_add(written, Relaxed)
            .saturating_add(written);
        let over_bound = match estimate {
            Ok(before) => before.saturating_add(written) > self.max_bytes,
            Err(_) => true, // never scanned: learn the total now
        };
        if over_bound || since_scan > self.max_bytes / 10 {
            Ok(self.evict())
        } else {
            Ok(0)
        }
    }

    /// Scans the tree and, if the entries exceed the bound, deletes the least recently used
    /// until they take at most 90% of it; also removes stale temp files. Returns the number of
    /// entries deleted. [`put`](Self::put) calls this when needed; a CLI may call it directly.
    pub fn evict(&self) -> usize {
        let _guard = match self.evicting.try_lock() {
            Ok(guard) => guard,
            // The lock guards no data, so a panic while holding it left nothing inconsistent.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Another thread of this process is scanning: its result will do for us too.
            Err(TryLockError::WouldBlock) => return 0,
        };
        self.since_scan.store(0, Relaxed);
        let mut entries = self.scan(true);
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut evicted = 0;
        if total > self.max_bytes {
            let target = self.max_bytes - self.max_bytes / 10;
            entries.sort_by(|a, b| {
                let time = |e: &EntryInfo| e.modified.unwrap_or(UNIX_EPOCH);
                time(a).cmp(&time(b)).then_with(|| a.path.cmp(&b.path))
            });
            for entry in &entries {
                if total <= target {
                    break;
                }
                match fs::remove_file(&entry.path) {
                    Ok(()) => {
                        evicted += 1;
                        total -= entry.bytes;
                    }
                    // Someone else removed it: it no longer counts, but was not our eviction.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => total -= entry.bytes,
                    Err(_) => {}
                }
            }
        }
        self.estimate.store(total, Relaxed);
        evicted
    }

    /// Every file in the tree (all backends) except temp files, unsorted.
    pub fn entries(&self) -> Vec<EntryInfo> {
        self.scan(false)
    }

    /// The total size of [`entries`](Self::entries) (a fresh scan).
    pub fn total_bytes(&self) -> u64 {
        let total = self.scan(false).iter().map(|e| e.bytes).sum();
        self.estimate.store(total, Relaxed);
        total
    }

    /// Reads and verifies every entry of every backend, including that its name is a key and
    /// that it is in that key's directory; with `remove_damaged`, removes the ones that fail.
    /// Without it, nothing is written: no file, directory or modification time changes.
    pub fn verify(&self, remove_damaged: bool) -> VerifyReport {
        let mut report = VerifyReport::default();
        for entry in self.scan(false) {
            let verdict = match entry.key {
                None => Verdict::Damaged("not a cache entry (the name is not a key)".to_owned()),
                Some(key) => verify_file(&entry.path, &key),
            };
            match verdict {
                Verdict::Ok => {
                    report.ok += 1;
                    report.bytes += entry.bytes;
                }
                Verdict::Gone => {}
                Verdict::Damaged(why) => {
                    if remove_damaged {
                        let _ = fs::remove_file(&entry.path);
                    }
                    report.damaged.push((entry.path, why));
                }
            }
        }
        report
    }

    /// Removes the trees of every format version (`<dir>/v<digits>/`), leaving anything else in
    /// the directory alone. Returns the number of files removed. The tier stays usable: the next
    /// `put` recreates its directories.
    pub fn clear(&self) -> Result<usize, CacheError> {
        let mut removed = 0;
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("list", &self.dir)(e)),
        };
        for item in listing.flatten() {
            let name = item.file_name();
            let is_version = name.to_str().is_some_and(|n| {
                n.len() > 1 && n.starts_with('v') && n[1..].bytes().all(|b| b.is_ascii_digit())
            });
            if is_version && item.file_type().is_ok_and(|t| t.is_dir()) {
                removed += remove_tree(&item.path())?;
            }
        }
        self.estimate.store(0, Relaxed);
        Ok(removed)
    }

    /// Lists the files at entry depth (`root/<backend>/<xx>/<file>`). With `sweep`, removes
    /// stale temp files (also the open probe's, at backend depth) and leaves fresh ones out.
    /// Errors are skipped: another process may be deleting files as we go.
    fn scan(&self, sweep: bool) -> Vec<EntryInfo> {
        let mut out = Vec::new();
        let now = SystemTime::now();
        for (backend_path, backend) in subdirs(&self.root) {
            for (fan_path, _) in subdirs(&backend_path) {
                for (path, name, meta) in files(&fan_path) {
                    if name.starts_with(TEMP_PREFIX) {
                        if sweep {
                            remove_if_stale(&path, &meta, now);
                        }
                        continue;
                    }
                    out.push(EntryInfo {
                        key: Key::from_hex(&name),
                        path,
                        backend: backend.clone(),
                        bytes: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
            if sweep {
                for (path, name, meta) in files(&backend_path) {
                    if name.starts_with(TEMP_PREFIX) {
                        remove_if_stale(&path, &meta, now);
                    }
                }
            }
        }
        out
    }
}

/// `Err(why)` if `bytes` is not a sound entry for `key`.
fn check_entry(bytes: &[u8], key: &Key) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("empty file".to_owned());
    }
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated header ({} of {HEADER_LEN} bytes)",
            bytes.len()
        ));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    let (magic, rest) = header.split_at(8);
    let (version, rest) = rest.split_at(4);
    let (stored_key, rest) = rest.split_at(32);
    let (length, checksum) = rest.split_at(8);
    if magic != MAGIC {
        return Err("not a metajit cache entry (bad magic)".to_owned());
    }
    // The slices have exactly these lengths, so the conversions cannot fail.
    let version = u32::from_le_bytes(version.try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, expected {FORMAT_VERSION}"
        ));
    }
    if stored_key != key.0 {
        let other = Key(stored_key.try_into().unwrap_or_default());
        return Err(format!("holds the entry of key {other}"));
    }
    let length = u64::from_le_bytes(length.try_into().unwrap_or_default());
    if length != payload.len() as u64 {
        return Err(format!(
            "header says {length} payload bytes, file has {}",
            payload.len()
        ));
    }
    if blake3::hash(payload).as_bytes() != checksum {
        return Err("payload checksum mismatch".to_owned());
    }
    Ok(())
}

enum Verdict {
    Ok,
    Damaged(String),
    /// Removed by someone else since the scan: nothing to report.
    Gone,
}

/// Verifies one listed file for [`DiskTier::verify`].
fn verify_file(path: &Path, key: &Key) -> Verdict {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Verdict::Gone,
        Err(e) => return Verdict::Damaged(format!("cannot be read: {e}")),
    };
    if let Err(why) = check_entry(&bytes, key) {
        return Verdict::Damaged(why);
    }
    let hex = key.to_string();
    let fan = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str());
    if fan != Some(&hex[..2]) {
        return Verdict::Damaged(format!("misplaced: belongs in directory {}", &hex[..2]));
    }
    Verdict::Ok
}

/// Writes `bytes` to a fresh temp file beside `path` and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let Some(dir) = path.parent() else {
        return Err(io_err("write", path)(io::ErrorKind::InvalidInput.into()));
    };
    // Second chances: a concurrent `clear` may remove the directory under us.
    let mut attempts = 3;
    loop {
        attempts -= 1;
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let temp = dir.join(temp_name());
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => file,
            Err(e) if attempts > 0 && retryable(&e) => continue,
            Err(e) => return Err(io_err("create", &temp)(e)),
        };
        if let Err(e) = file.write_all(bytes) {
            drop(file);
            let _ = fs::remove_file(&temp);
            return Err(io_err("write", &temp)(e));
        }
        drop(file);
        match fs::rename(&temp, path) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&temp);
                if attempts == 0 || !retryable(&e) {
                    return Err(io_err("rename a temp file to", path)(e));
                }
            }
        }
    }
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
    )
}

/// `.tmp-<pid>-<counter>-<nanos>`: unique within the process by the counter, across processes
/// by the pid, and across pid namespaces sharing a directory (containers) very likely by the
/// clock; files are created exclusively, so a clash is a retry, never a clobber.
fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{TEMP_PREFIX}{}-{n}-{nanos}", std::process::id())
}

/// Removes the damaged file at `path` only if it is still the file we read (on Unix, the same
/// inode), so that a good entry renamed over it meanwhile survives.
fn remove_if_unchanged(path: &Path, read: &Metadata) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match fs::symlink_metadata(path) {
            Ok(now) if now.dev() == read.dev() && now.ino() == read.ino() => {}
            _ => return,
        }
    }
    #[cfg(not(unix))]
    let _ = read;
    let _ = fs::remove_file(path);
}

fn remove_if_stale(path: &Path, meta: &Metadata, now: SystemTime) {
    let age = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok());
    if age.is_some_and(|age| age > STALE_TEMP) {
        let _ = fs::remove_file(path);
    }
}

/// The subdirectories of `dir` with their names (UTF-8 names only), skipping errors.
fn subdirs(dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(listing) = fs::read_dir(dir) else {
        return Vec::new();
    };
    listing
        .flatten()
        .filter(|item| item.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|item| Some((item.path(), item.file_name().into_string().ok()?)))
        .collect()
}

/// The regular files in `dir` with their names and metadata, skipping errors.
fn files(dir: &Path) -> Vec<(PathBuf, String, Metadata)> {
    let Ok(listing) = fs::read_dir(dir) else {
        return Vec::new();
    };
    listing
        .flatten()
        .filter(|item| item.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|item| {
            let meta = item.metadata().ok()?;
            let name = item.file_name().to_string_lossy().into_owned();
            Some((item.path(), name, meta))
        })
        .collect()
}

/// Removes `dir` and everything in it, counting the files (anything not a directory); what
/// vanishes meanwhile is not an error.
fn remove_tree(dir: &Path) -> Result<usize, CacheError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut removed = 0;
    for item in listing {
        let item = match item {
            Ok(item) => item,
            Err(e) => return Err(io_err("list", dir)(e)),
        };
        let path = item.path();
        if item.file_type().is_ok_and(|t| t.is_dir()) {
            removed += remove_tree(&path)?;
        } else {
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(removed),
        // NotFound: removed by someone else. DirectoryNotEmpty: a concurrent writer put a file
        // in it after we listed it; the entry is fresh, and leaving it is correct.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Ok(removed)
        }
        Err(e) => Err(io_err("remove directory", dir)(e)),
    }
}

fn check_backend_name(backend: &str) -> Result<(), CacheError> {
    let why = if backend.is_empty() {
        "it is empty"
    } else if backend.starts_with('.') {
        "it starts with '.'"
    } else if !backend
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_+.".contains(&b))
    {
        "only ASCII letters, digits and - _ + . are allowed"
    } else {
        return Ok(());
    };
    Err(CacheError::BadBackend {
        backend: backend.to_owned(),
        why,
    })
}

/// Wraps an `io::Error` with what was being done and where.
fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CacheError {
    let path = path.to_owned();
    move |source| CacheError::Io { op, path, source }
}
