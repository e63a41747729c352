//! The two tiers together: where each lookup is answered, statistics, damage and rebuilds,
//! degraded directories, and many threads and "processes" sharing one directory.

mod common;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TempDir, decode, key, payload};
use metajit_cache::{Cache, CacheConfig, CacheMode, DiskTier, StatsSnapshot};

fn config(mode: CacheMode, dir: &std::path::Path) -> CacheConfig {
    CacheConfig {
        mode,
        dir: dir.to_owned(),
        max_bytes: 1 << 20,
    }
}

/// Looks up key `i`, building `payload(i)` (and counting builds) on a miss.
fn lookup(cache: &Cache<u64>, i: u64, builds: &AtomicUsize) -> u64 {
    let value = cache.get_or_build(key(i), decode, || {
        builds.fetch_add(1, Ordering::Relaxed);
        Ok((i, payload(i)))
    });
    *value.expect("building never fails here")
}

#[test]
fn memory_then_disk_then_build() {
    let dir = TempDir::new("tiers");
    let builds = AtomicUsize::new(0);
    let cache = Cache::<u64>::new(&config(CacheMode::Disk, dir.path()), "cpu");
    assert!(cache.disk().is_some());
    assert_eq!(lookup(&cache, 1, &builds), 1);
    assert_eq!(lookup(&cache, 1, &builds), 1);
    cache.clear_memory();
    assert_eq!(lookup(&cache, 1, &builds), 1);
    let s = cache.stats();
    assert_eq!(
        (s.misses, s.memory_hits, s.disk_hits, s.disk_writes),
        (1, 1, 1, 1)
    );
    assert_eq!(builds.load(Ordering::Relaxed), 1);
    let text = s.to_string();
    assert!(
        text.starts_with("metajit cache: compiled=1 disk_hits=1 memory_hits=1 compile_ms="),
        "{text}"
    );

    // A fresh "process" finds the entry on disk and compiles nothing.
    let fresh = Cache::<u64>::new(&config(CacheMode::Disk, dir.path()), "cpu");
    assert_eq!(lookup(&fresh, 1, &builds), 1);
    assert_eq!((fresh.stats().misses, fresh.stats().disk_hits), (0, 1));
    // Another backend does not see the cpu entries.
    let cuda = Cache::<u64>::new(&config(CacheMode::Disk, dir.path()), "cuda");
    assert_eq!(lookup(&cuda, 1, &builds), 1);
    assert_eq!(cuda.stats().misses, 1);

    cache.reset_stats();
    assert_eq!(cache.stats(), StatsSnapshot::default());
}

#[test]
fn stats_display_has_three_decimals() {
    let s = StatsSnapshot {
        misses: 3,
        disk_hits: 2,
        memory_hits: 7,
        compile_ns: 1_234_567,
        load_ns: 2_000,
        ..StatsSnapshot::default()
    };
    assert_eq!(
        s.to_string(),
        "metajit cache: compiled=3 disk_hits=2 memory_hits=7 compile_ms=1.235 load_ms=0.002"
    );
    let earlier = StatsSnapshot {
        misses: 1,
        ..StatsSnapshot::default()
    };
    assert_eq!(s.since(&earlier).misses, 2);
}

#[test]
fn memory_and_off_modes() {
    let dir = TempDir::new("modes");
    let builds = AtomicUsize::new(0);
    let memory = Cache::<u64>::new(&config(CacheMode::Memory, dir.path()), "cpu");
    assert!(memory.disk().is_none() && memory.memory().is_some());
    lookup(&memory, 1, &builds);
    lookup(&memory, 1, &builds);
    assert_eq!(builds.load(Ordering::Relaxed), 1);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "memory mode writes nothing"
    );

    let off = Cache::<u64>::new(&config(CacheMode::Off, dir.path()), "cpu");
    assert!(off.disk().is_none() && off.memory().is_none());
    assert_eq!(off.mode(), CacheMode::Off);
    lookup(&off, 1, &builds);
    lookup(&off, 1, &builds);
    assert_eq!(builds.load(Ordering::Relaxed), 3);
    assert_eq!(off.stats().misses, 2);
}

#[test]
fn build_errors_are_returned_and_nothing_is_stored() {
    let dir = TempDir::new("build-error");
    let cache = Cache::<u64>::new(&config(CacheMode::Disk, dir.path()), "cpu");
    let err = cache.get_or_build(key(1), decode, || Err("no such op".to_owned()));
    assert_eq!(err.unwrap_err(), "no such op");
    assert_eq!(cache.stats().misses, 0);
    assert!(cache.disk().unwrap().entries().is_empty());
    let builds = AtomicUsize::new(0);
    assert_eq!(lookup(&cache, 1, &builds), 1);
}

#[test]
fn empty_bytes_are_not_persisted() {
    let dir = TempDir::new("empty-bytes");
    let cache = Cache::<u64>::new(&config(CacheMode::Disk, dir.path()), "cpu");
    let value = cache.get_or_build(key(1), decode, || Ok::<_, String>((5, Vec::new())));
    assert_eq!(*value.unwrap(), 5);
    assert!(cache.disk().unwrap().entries().is_empty());
    assert_eq!(cache.stats().disk_writes, 0);
}

#[test]
fn damaged_entries_are_rebuilt_with_the_right_value() {
    let dir = TempDir::new("rebuild");
    let builds = AtomicUsize::new(0);
    let cache = Cache::<u64>::new(&config(CacheMode::Disk, dir.path()), "cpu");
    let disk = cache.disk().unwrap();
    for i in 0..5 {
        lookup(&cache, i, &builds);
    }
    let path = |i| disk.entry_path(&key(i));
    // Damage each entry differently: truncated, bit-flipped, empty, wrong version, foreign.
    let good: Vec<Vec<u8>> = (0..5).map(|i| fs::read(path(i)).unwrap()).collect();
    fs::write(path(0), &good[0][..50]).unwrap();
    let mut flipped = good[1].clone();
    flipped[60] ^= 4;
    fs::write(path(1), flipped).unwrap();
    fs::write(path(2), b"").unwrap();
    let mut version = good[3].clone();
    version[8] ^= 0x80;
    fs::write(path(3), version).unwrap();
    fs::write(path(4), &good[0]).unwrap(); // a sound entry, of another key
    cache.clear_memory();
    cache.reset_stats();
    builds.store(0, Ordering::Relaxed);

    for i in 0..5 {
        assert_eq!(lookup(&cache, i, &builds), i);
    }
    let s = cache.stats();
    assert_eq!(
        (s.damaged, s.misses, s.disk_hits, s.disk_writes),
        (5, 5, 0, 5)
    );
    // The rebuilt entries are sound again.
    cache.clear_memory();
    for i in 0..5 {
        assert_eq!(lookup(&cache, i, &builds), i);
    }
    assert_eq!(cache.stats().disk_hits, 5);
    assert_eq!(disk.verify(false).damaged, []);
}

#[test]
fn an_entry_that_fails_to_load_is_rebuilt() {
    let dir = TempDir::new("load-fails");
    let cache = Cache::<u64>::new(&config(CacheMode::Disk, dir.path()), "cpu");
    // A sound entry whose payload the loader rejects (too short for `decode`).
    cache.disk().unwrap().put(&key(1), b"abc").unwrap();
    let builds = AtomicUsize::new(0);
    assert_eq!(lookup(&cache, 1, &builds), 1);
    let s = cache.stats();
    assert_eq!((s.damaged, s.misses, s.disk_hits), (1, 1, 0));
    cache.clear_memory();
    assert_eq!(lookup(&cache, 1, &builds), 1);
    assert_eq!(cache.stats().disk_hits, 1, "the rebuild replaced the entry");
}

#[test]
fn an_unusable_dir_degrades_to_the_memory_tier() {
    let dir = TempDir::new("degrade");
    let file = dir.path().join("a-file");
    fs::write(&file, b"").unwrap();
    let cache = Cache::<u64>::new(&config(CacheMode::Disk, &file.join("cache")), "cpu");
    assert!(cache.disk().is_none());
    assert_eq!(cache.mode(), CacheMode::Disk);
    let builds = AtomicUsize::new(0);
    assert_eq!(lookup(&cache, 4, &builds), 4);
    assert_eq!(lookup(&cache, 4, &builds), 4);
    assert_eq!((cache.stats().misses, cache.stats().memory_hits), (1, 1));
}

#[cfg(unix)]
#[test]
fn a_read_only_dir_degrades_to_the_memory_tier() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("degrade-ro");
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let still_writable = fs::write(ro.join("probe"), b"").is_ok();
    let cache = Cache::<u64>::new(&config(CacheMode::Disk, &ro), "cpu");
    let builds = AtomicUsize::new(0);
    assert_eq!(lookup(&cache, 4, &builds), 4);
    assert_eq!(lookup(&cache, 4, &builds), 4);
    assert_eq!(builds.load(Ordering::Relaxed), 1);
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    if still_writable {
        eprintln!("skipped the degrade assertion: 0o555 does not restrict this user (root?)");
    } else {
        assert!(cache.disk().is_none());
    }
}

/// Separate caches on one directory stand in for processes: every lookup gets the right value,
/// whatever the interleaving of writes, reads and evictions, and no entry is ever damaged.
fn processes_share_a_dir(max_bytes: u64) {
    let dir = TempDir::new("processes");
    let config = CacheConfig {
        mode: CacheMode::Disk,
        dir: dir.path().to_owned(),
        max_bytes,
    };
    let keys = 150u64;
    let builds = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (config, builds) = (&config, &builds);
            s.spawn(move || {
                let cache = Cache::<u64>::new(config, "cpu");
                for j in 0..keys {
                    // A different order per thread, so threads race on different keys.
                    let i = (j * (2 * t + 1) + 31 * t) % keys;
                    assert_eq!(lookup(&cache, i, builds), i);
                    if j % 16 == 0 {
                        cache.clear_memory();
                    }
                }
                assert_eq!(cache.stats().damaged, 0);
            });
        }
    });
    let disk = DiskTier::open(dir.path(), "cpu", max_bytes).unwrap();
    let report = disk.verify(false);
    assert_eq!(report.damaged, []);
    if max_bytes == u64::MAX {
        assert_eq!(report.ok, keys as usize);
        assert!(
            builds.load(Ordering::Relaxed) < 8 * keys as usize,
            "later processes hit the disk"
        );
    }
}

#[test]
fn processes_share_a_dir_without_damage() {
    processes_share_a_dir(u64::MAX);
}

#[test]
fn processes_share_a_dir_under_a_tight_bound() {
    processes_share_a_dir(2_000);
}

#[test]
fn threads_share_one_cache_and_one_artifact_per_key() {
    let dir = TempDir::new("threads");
    let cache = Cache::<u64>::new(&config(CacheMode::Disk, dir.path()), "cpu");
    let builds = AtomicUsize::new(0);
    let results: Vec<Vec<Arc<u64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..50)
                        .map(|i| {
                            cache
                                .get_or_build(key(i), decode, || {
                                    builds.fetch_add(1, Ordering::Relaxed);
                                    Ok::<_, String>((i, payload(i)))
                                })
                                .unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for i in 0..50 {
        let first = &results[0][i];
        assert_eq!(**first, i as u64);
        assert!(
            results.iter().all(|r| Arc::ptr_eq(&r[i], first)),
            "key {i} has several artifacts"
        );
    }
    let s = cache.stats();
    assert_eq!(s.memory_hits + s.disk_hits + s.misses, 8 * 50);
}
