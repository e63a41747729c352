//! Cache statistics: lock-free counters, read as a consistent-enough [`StatsSnapshot`].
//!
//! Each counter is exact; a snapshot taken while other threads use the cache may mix counts from
//! slightly different moments (the counters are independent relaxed atomics).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The live counters of a [`Cache`](crate::Cache).
#[derive(Debug, Default)]
pub struct Stats {
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    compile_ns: AtomicU64,
    load_ns: AtomicU64,
    damaged: AtomicU64,
    disk_writes: AtomicU64,
    disk_write_errors: AtomicU64,
    evictions: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Lookups answered by the memory tier.
    pub memory_hits: u64,
    /// Lookups answered by the disk tier (and loaded successfully).
    pub disk_hits: u64,
    /// Lookups that built the artifact: the number of compiles.
    pub misses: u64,
    /// Nanoseconds spent in successful builds.
    pub compile_ns: u64,
    /// Nanoseconds spent reading, verifying and loading disk hits.
    pub load_ns: u64,
    /// Disk entries found damaged or failing to load (each was then rebuilt).
    pub damaged: u64,
    /// Entries written to disk.
    pub disk_writes: u64,
    /// Disk writes that failed (the artifact was still returned).
    pub disk_write_errors: u64,
    /// Disk entries removed to keep the disk tier under its bound.
    pub evictions: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            memory_hits: self.memory_hits.load(Relaxed),
            disk_hits: self.disk_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            compile_ns: self.compile_ns.load(Relaxed),
            load_ns: self.load_ns.load(Relaxed),
            damaged: self.damaged.load(Relaxed),
            disk_writes: self.disk_writes.load(Relaxed),
            disk_write_errors: self.disk_write_errors.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
        }
    }

    /// Sets every counter to zero.
    pub fn reset(&self) {
        for counter in [
            &self.memory_hits,
            &self.disk_hits,
            &self.misses,
            &self.compile_ns,
            &self.load_ns,
            &self.damaged,
            &self.disk_writes,
            &self.disk_write_errors,
            &self.evictions,
        ] {
            counter.store(0, Relaxed);
        }
    }

    pub(crate) fn memory_hit(&self) {
        self.memory_hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn disk_hit(&self, load: Duration) {
        self.disk_hits.fetch_add(1, Relaxed);
        self.load_ns.fetch_add(nanos(load), Relaxed);
    }

    pub(crate) fn compiled(&self, compile: Duration) {
        self.misses.fetch_add(1, Relaxed);
        self.compile_ns.fetch_add(nanos(compile), Relaxed);
    }

    pub(crate) fn damaged(&self) {
        self.damaged.fetch_add(1, Relaxed);
    }

    pub(crate) fn disk_write(&self, evicted: usize) {
        self.disk_writes.fetch_add(1, Relaxed);
        self.evictions.fetch_add(evicted as u64, Relaxed);
    }

    pub(crate) fn disk_write_error(&self) {
        self.disk_write_errors.fetch_add(1, Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl std::ops::Add for StatsSnapshot {
    type Output = StatsSnapshot;

    /// Field-wise sum (e.g. the counters of a cache and of the ones it replaced).
    fn add(self, o: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            memory_hits: self.memory_hits + o.memory_hits,
            disk_hits: self.disk_hits + o.disk_hits,
            misses: self.misses + o.misses,
            compile_ns: self.compile_ns + o.compile_ns,
            load_ns: self.load_ns + o.load_ns,
            damaged: self.damaged + o.damaged,
            disk_writes: self.disk_writes + o.disk_writes,
            disk_write_errors: self.disk_write_errors + o.disk_write_errors,
            evictions: self.evictions + o.evictions,
        }
    }
}

impl StatsSnapshot {
    /// The counts accumulated since `earlier` (a snapshot of the same cache), e.g. per
    /// realize; saturates at zero if the stats were reset in between.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            memory_hits: self.memory_hits.saturating_sub(earlier.memory_hits),
            disk_hits: self.disk_hits.saturating_sub(earlier.disk_hits),
            misses: self.misses.saturating_sub(earlier.misses),
            compile_ns: self.compile_ns.saturating_sub(earlier.compile_ns),
            load_ns: self.load_ns.saturating_sub(earlier.load_ns),
            damaged: self.damaged.saturating_sub(earlier.damaged),
            disk_writes: self.disk_writes.saturating_sub(earlier.disk_writes),
            disk_write_errors: self
                .disk_write_errors
                .saturating_sub(earlier.disk_write_errors),
            evictions: self.evictions.saturating_sub(earlier.evictions),
        }
    }
}

/// `metajit cache: compiled=<n> disk_hits=<n> memory_hits=<n> compile_ms=<x.xxx> load_ms=<y.yyy>`
impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "metajit cache: compiled={} disk_hits={} memory_hits={} compile_ms={:.3} load_ms={:.3}",
            self.misses,
            self.disk_hits,
            self.memory_hits,
            self.compile_ns as f64 / 1e6,
            self.load_ns as f64 / 1e6,
        )
    }
}
