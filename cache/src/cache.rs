//! [`Cache`]: the memory tier in front of the disk tier, with statistics and warnings.
//!
//! A lookup tries memory, then disk, then builds; whatever it builds it stores in both tiers.
//! Nothing the environment does makes it fail or return a wrong artifact: an unusable directory
//! means memory only, a damaged entry or one that fails to load means a rebuild, a failed write
//! means the artifact is not persisted. Each of these warns once per process on stderr (one
//! line per kind, however many entries are affected; [`Stats`] counts them all).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::{CacheConfig, CacheMode, DiskTier, Key, Lookup, MemoryTier, Stats, StatsSnapshot};

static WARNED_UNUSABLE: AtomicBool = AtomicBool::new(false);
static WARNED_DAMAGED: AtomicBool = AtomicBool::new(false);
static WARNED_LOAD: AtomicBool = AtomicBool::new(false);
static WARNED_WRITE: AtomicBool = AtomicBool::new(false);

/// Prints `metajit cache: warning: <message>` unless `flag` says it was printed already.
fn warn_once(flag: &AtomicBool, message: fmt::Arguments<'_>) {
    if !flag.swap(true, Relaxed) {
        eprintln!("metajit cache: warning: {message}");
    }
}

/// Where [`Cache::lookup`] found its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The memory tier.
    Memory,
    /// The disk tier (loaded without building).
    Disk,
    /// Neither: it was built.
    Built,
}

impl Source {
    /// `memory hit`, `disk hit` or `compiled`, for log lines.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Memory => "memory hit",
            Source::Disk => "disk hit",
            Source::Built => "compiled",
        }
    }
}

/// A two-tier cache of artifacts `V` (e.g. loaded kernels) for one backend.
pub struct Cache<V> {
    mode: CacheMode,
    backend: &'static str,
    memory: Option<MemoryTier<V>>,
    disk: Option<DiskTier>,
    stats: Stats,
}

impl<V> Cache<V> {
    /// A cache for `backend` (a directory name, e.g. `"cpu"`) with the tiers `config` asks for.
    /// Never fails: if the disk tier cannot be opened, warns once and uses memory only.
    pub fn new(config: &CacheConfig, backend: &'static str) -> Cache<V> {
        let disk = match config.mode {
            CacheMode::Disk => match DiskTier::open(&config.dir, backend, config.max_bytes) {
                Ok(disk) => Some(disk),
                Err(e) => {
                    warn_once(
                        &WARNED_UNUSABLE,
                        format_args!(
                            "cache dir {} is not usable ({e}); using the memory tier only",
                            config.dir.display()
                        ),
                    );
                    None
                }
            },
            CacheMode::Memory | CacheMode::Off => None,
        };
        let memory = (config.mode != CacheMode::Off).then(MemoryTier::new);
        Cache {
            mode: config.mode,
            backend,
            memory,
            disk,
            stats: Stats::default(),
        }
    }

    /// The artifact for `key`: from memory, else loaded by `load` from the bytes stored on disk,
    /// else built by `build`, which returns the artifact and the bytes to store on disk (empty
    /// bytes: store nothing). A disk entry that is damaged or that `load` rejects is rebuilt.
    /// Only `build`'s error is returned.
    ///
    /// Threads (or processes) racing on one key may each build it; any result is valid, and
    /// threads sharing this cache get the first one stored.
    pub fn get_or_build<E: fmt::Display>(
        &self,
        key: Key,
        load: impl FnOnce(&[u8]) -> Result<V, E>,
        build: impl FnOnce() -> Result<(V, Vec<u8>), E>,
    ) -> Result<Arc<V>, E> {
        self.lookup(key, load, build).map(|(value, _)| value)
    }

    /// [`get_or_build`](Self::get_or_build), also saying which tier answered (or that it was
    /// built).
    pub fn lookup<E: fmt::Display>(
        &self,
        key: Key,
        load: impl FnOnce(&[u8]) -> Result<V, E>,
        build: impl FnOnce() -> Result<(V, Vec<u8>), E>,
    ) -> Result<(Arc<V>, Source), E> {
        if let Some(found) = self.find(key, load) {
            return Ok(found);
        }
        let start = Instant::now();
        let (value, bytes) = build()?;
        Ok((
            self.store(key, value, &bytes, start.elapsed()),
            Source::Built,
        ))
    }

    /// The first half of [`lookup`](Self::lookup): the value from the memory tier, else from
    /// the disk tier through `load`; `None` when neither has it (a damaged entry, or one `load`
    /// rejects, counts as damaged and reads as missing). With [`store`](Self::store), a caller
    /// can build several missing values at once (in parallel) between the two halves.
    pub fn find<E: fmt::Display>(
        &self,
        key: Key,
        load: impl FnOnce(&[u8]) -> Result<V, E>,
    ) -> Option<(Arc<V>, Source)> {
        if let Some(value) = self.memory.as_ref().and_then(|m| m.get(&key)) {
            self.stats.memory_hit();
            return Some((value, Source::Memory));
        }
        let disk = self.disk.as_ref()?;
        let start = Instant::now();
        match disk.get(&key) {
            Lookup::Hit(bytes) => match load(&bytes) {
                Ok(value) => {
                    self.stats.disk_hit(start.elapsed());
                    return Some((self.remember(key, value), Source::Disk));
                }
                Err(e) => {
                    self.stats.damaged();
                    warn_once(
                        &WARNED_LOAD,
                        format_args!(
                            "entry {} could not be loaded ({e}); treating it as missing",
                            disk.entry_path(&key).display()
                        ),
                    );
                }
            },
            Lookup::Miss => {}
            Lookup::Damaged(why) => {
                self.stats.damaged();
                warn_once(
                    &WARNED_DAMAGED,
                    format_args!(
                        "damaged entry {}: {why}; treating it as missing",
                        disk.entry_path(&key).display()
                    ),
                );
            }
        }
        None
    }

    /// The second half of [`lookup`](Self::lookup): records a value built in `took` (counted
    /// as compiled), keeps it in the memory tier and writes `bytes` to the disk tier (empty
    /// bytes: nothing). Returns the shared copy: the first one stored when threads race.
    pub fn store(&self, key: Key, value: V, bytes: &[u8], took: Duration) -> Arc<V> {
        self.stats.compiled(took);
        let value = self.remember(key, value);
        if let Some(disk) = &self.disk
            && !bytes.is_empty()
        {
            match disk.put(&key, bytes) {
                Ok(evicted) => self.stats.disk_write(evicted),
                Err(e) => {
                    self.stats.disk_write_error();
                    warn_once(
                        &WARNED_WRITE,
                        format_args!("could not store a cache entry ({e}); continuing"),
                    );
                }
            }
        }
        value
    }

    /// Stores `value` in the memory tier (if any) and returns the shared copy.
    fn remember(&self, key: Key, value: V) -> Arc<V> {
        let value = Arc::new(value);
        match &self.memory {
            Some(memory) => memory.get_or_insert(key, value),
            None => value,
        }
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Sets the counters to zero.
    pub fn reset_stats(&self) {
        self.stats.reset();
    }

    /// The mode asked for (a `Disk` cache whose directory was unusable still says `Disk`; see
    /// [`disk`](Self::disk)).
    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    /// The backend name given to [`new`](Self::new).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The memory tier, unless the mode is `Off`.
    pub fn memory(&self) -> Option<&MemoryTier<V>> {
        self.memory.as_ref()
    }

    /// The disk tier, if the mode is `Disk` and the directory was usable.
    pub fn disk(&self) -> Option<&DiskTier> {
        self.disk.as_ref()
    }

    /// Empties the memory tier (the next lookups go to disk).
    pub fn clear_memory(&self) {
        if let Some(memory) = &self.memory {
            memory.clear();
        }
    }
}

impl<V> fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("mode", &self.mode)
            .field("backend", &self.backend)
            .field("memory", &self.memory)
            .field("disk", &self.disk.as_ref().map(DiskTier::root))
            .field("stats", &self.stats())
            .finish()
    }
}
