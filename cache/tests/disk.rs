//! The disk tier: layout, round trip, every kind of damage, eviction, maintenance, failures.

mod common;

use std::fs;
use std::time::Duration;

use common::{TempDir, key, payload, set_age};
use metajit_cache::disk::{HEADER_LEN, MAGIC};
use metajit_cache::{CacheError, DiskTier, FORMAT_VERSION, Lookup};

#[test]
fn round_trip_and_layout() {
    let dir = TempDir::new("round-trip");
    let disk = DiskTier::open(dir.path(), "cpu", 1 << 20).unwrap();
    let (k, p) = (key(1), payload(1));
    assert_eq!(disk.get(&k), Lookup::Miss);
    assert_eq!(disk.put(&k, &p).unwrap(), 0);
    assert_eq!(disk.get(&k), Lookup::Hit(p.clone()));

    let hex = k.to_string();
    let path = dir
        .path()
        .join(format!("v{FORMAT_VERSION}"))
        .join("cpu")
        .join(&hex[..2])
        .join(&hex);
    assert_eq!(disk.entry_path(&k), path);
    assert_eq!(disk.root(), dir.path().join(format!("v{FORMAT_VERSION}")));
    assert_eq!(disk.dir(), dir.path());
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + p.len());
    assert_eq!(bytes[..8], MAGIC);
    assert_eq!(bytes[8..12], FORMAT_VERSION.to_le_bytes());
    assert_eq!(bytes[12..44], k.0);
    assert_eq!(bytes[44..52], (p.len() as u64).to_le_bytes());
    assert_eq!(bytes[52..84], *blake3::hash(&p).as_bytes());
    assert_eq!(bytes[84..], p);

    // Replacing an entry, and an empty payload, both work.
    disk.put(&k, b"").unwrap();
    assert_eq!(disk.get(&k), Lookup::Hit(Vec::new()));

    // No temp file is left behind.
    let names: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, [hex.as_str()]);
}

/// Writes `bytes` as the entry of `k`, asserts `get` calls it damaged (with `why` in the
/// reason) and removes it.
fn assert_damaged(disk: &DiskTier, k: &metajit_cache::Key, bytes: &[u8], why: &str) {
    let path = disk.entry_path(k);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    match disk.get(k) {
        Lookup::Damaged(reason) => assert!(reason.contains(why), "{reason:?} lacks {why:?}"),
        other => panic!(
            "{} bytes {bytes:02x?}: expected damaged, got {other:?}",
            bytes.len()
        ),
    }
    assert!(!path.exists(), "a damaged entry must be removed");
    assert_eq!(disk.get(k), Lookup::Miss);
}

fn good_entry(disk: &DiskTier, i: u64) -> Vec<u8> {
    disk.put(&key(i), &payload(i)).unwrap();
    fs::read(disk.entry_path(&key(i))).unwrap()
}

#[test]
fn every_single_bit_flip_is_damage() {
    let dir = TempDir::new("bit-flip");
    let disk = DiskTier::open(dir.path(), "cpu", 1 << 20).unwrap();
    let good = good_entry(&disk, 13);
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert_damaged(&disk, &key(13), &bad, "");
    }
}

#[test]
fn truncated_zero_length_and_overlong_entries_are_damage() {
    let dir = TempDir::new("truncated");
    let disk = DiskTier::open(dir.path(), "cpu", 1 << 20).unwrap();
    let good = good_entry(&disk, 6);
    assert_damaged(&disk, &key(6), &[], "empty file");
    for len in 1..HEADER_LEN {
        assert_damaged(&disk, &key(6), &good[..len], "truncated header");
    }
    for len in HEADER_LEN..good.len() {
        assert_damaged(&disk, &key(6), &good[..len], "payload bytes, file has");
    }
    let mut longer = good.clone();
    longer.push(0);
    assert_damaged(&disk, &key(6), &longer, "payload bytes, file has");
}

#[test]
fn wrong_version_and_foreign_entries_are_damage() {
    let dir = TempDir::new("foreign");
    let disk = DiskTier::open(dir.path(), "cpu", 1 << 20).unwrap();
    let good = good_entry(&disk, 2);
    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_damaged(
        &disk,
        &key(2),
        &newer,
        &format!("format version {}", FORMAT_VERSION + 1),
    );

    // A sound entry of another key, under this key's name.
    let other = good_entry(&disk, 3);
    assert_damaged(
        &disk,
        &key(2),
        &other,
        &format!("holds the entry of key {}", key(3)),
    );
    assert_eq!(
        disk.get(&key(3)),
        Lookup::Hit(payload(3)),
        "the real entry is untouched"
    );

    let mut text = b"#!/bin/sh\necho not a kernel\n".to_vec();
    text.resize(HEADER_LEN + 4, b' ');
    assert_damaged(&disk, &key(2), &text, "bad magic");
}

#[test]
fn lru_eviction_keeps_under_the_bound() {
    let dir = TempDir::new("lru");
    let size = (HEADER_LEN + 100) as u64;
    let disk = DiskTier::open(dir.path(), "cpu", 5 * size).unwrap();
    let body = [7u8; 100];
    for i in 0..5 {
        assert_eq!(disk.put(&key(i), &body).unwrap(), 0);
    }
    // Ages: entry 0 the oldest ... entry 4 the newest; then a hit makes 0 the most recent.
    for i in 0..5 {
        set_age(&disk.entry_path(&key(i)), Duration::from_secs(100 - 10 * i));
    }
    assert_eq!(disk.get(&key(0)), Lookup::Hit(body.to_vec()));

    // 6 entries > 5: evict the least recently used (1, then 2) down to 90% of the bound.
    assert_eq!(disk.put(&key(5), &body).unwrap(), 2);
    let present: Vec<u64> = (0..6)
        .filter(|&i| disk.entry_path(&key(i)).exists())
        .collect();
    assert_eq!(present, [0, 3, 4, 5]);
    assert_eq!(disk.total_bytes(), 4 * size);
}

#[test]
fn the_bound_holds_across_backends_and_many_writes() {
    let dir = TempDir::new("bound");
    let max = 4096;
    let cpu = DiskTier::open(dir.path(), "cpu", max).unwrap();
    let cuda = DiskTier::open(dir.path(), "cuda", max).unwrap();
    // Measures without touching the estimates of the two writers.
    let observer = DiskTier::open(dir.path(), "cpu", max).unwrap();
    let mut evicted = 0;
    for i in 0..200 {
        let tier = if i % 2 == 0 { &cpu } else { &cuda };
        evicted += tier.put(&key(i), &payload(i)).unwrap();
        // Each writer sees the other's writes only when it rescans, after writing 10% of the
        // bound: allow the documented overshoot, 10% plus an entry per writer.
        let total = observer.total_bytes();
        assert!(
            total <= max + 2 * (max / 10 + 100),
            "after write {i}: {total} bytes"
        );
    }
    assert!(evicted > 100, "{evicted}");
    let backends: std::collections::BTreeSet<String> =
        observer.entries().into_iter().map(|e| e.backend).collect();
    assert_eq!(
        backends.len(),
        2,
        "both backends keep their most recent entries"
    );
    observer.evict();
    assert!(observer.total_bytes() <= max);
}

#[test]
fn a_zero_bound_keeps_nothing() {
    let dir = TempDir::new("zero");
    let disk = DiskTier::open(dir.path(), "cpu", 0).unwrap();
    assert_eq!(disk.put(&key(1), &payload(1)).unwrap(), 1);
    assert_eq!(disk.get(&key(1)), Lookup::Miss);
    assert!(disk.entries().is_empty());
}

#[test]
fn eviction_scans_remove_stale_temp_files_only() {
    let dir = TempDir::new("stale");
    let disk = DiskTier::open(dir.path(), "cpu", 1 << 20).unwrap();
    disk.put(&key(1), &payload(1)).unwrap();
    let fan = disk.entry_path(&key(1)).parent().unwrap().to_owned();
    let backend = fan.parent().unwrap().to_owned();
    let (stale, fresh, stale_probe) = (
        fan.join(".tmp-1-2-3"),
        fan.join(".tmp-4-5-6"),
        backend.join(".tmp-7-8-9"),
    );
    for path in [&stale, &fresh, &stale_probe] {
        fs::write(path, b"partial").unwrap();
    }
    set_age(&stale, Duration::from_secs(2 * 3600));
    set_age(&stale_probe, Duration::from_secs(2 * 3600));
    assert_eq!(disk.entries().len(), 1, "temp files are not entries");
    assert_eq!(disk.evict(), 0);
    assert!(!stale.exists() && !stale_probe.exists() && fresh.exists());
    assert_eq!(disk.get(&key(1)), Lookup::Hit(payload(1)));
}

#[test]
fn entries_verify_and_clear() {
    let dir = TempDir::new("maintenance");
    let disk = DiskTier::open(dir.path(), "cpu", 1 << 20).unwrap();
    for i in 0..4 {
        disk.put(&key(i), &payload(i)).unwrap();
    }
    let mut entries = disk.entries();
    entries.sort_by_key(|e| e.key);
    let mut expected: Vec<_> = (0..4).map(key).collect();
    expected.sort();
    assert_eq!(
        entries.iter().map(|e| e.key.unwrap()).collect::<Vec<_>>(),
        expected
    );
    assert!(
        entries
            .iter()
            .all(|e| e.backend == "cpu" && e.modified.is_some())
    );
    let total: u64 = (0..4).map(|i| (HEADER_LEN + payload(i).len()) as u64).sum();
    assert_eq!(disk.total_bytes(), total);

    // One flipped payload bit, one stray file, one entry in the wrong fan-out directory.
    let damaged = disk.entry_path(&key(0));
    let mut bytes = fs::read(&damaged).unwrap();
    *bytes.last_mut().unwrap() ^= 0x10;
    fs::write(&damaged, bytes).unwrap();
    let stray = damaged.parent().unwrap().join("notes.txt");
    fs::write(&stray, b"hello").unwrap();
    let hex = key(1).to_string();
    let wrong_fan = if &hex[..2] == "00" { "01" } else { "00" };
    let misplaced = disk.root().join("cpu").join(wrong_fan).join(&hex);
    fs::create_dir_all(misplaced.parent().unwrap()).unwrap();
    fs::copy(disk.entry_path(&key(1)), &misplaced).unwrap();

    let report = disk.verify(false);
    assert_eq!(report.ok, 3);
    assert_eq!(report.bytes, total - (HEADER_LEN + payload(0).len()) as u64);
    let mut why = report.damaged.clone();
    why.sort();
    let mut expected = vec![
        (damaged.clone(), "payload checksum mismatch".to_owned()),
        (
            stray.clone(),
            "not a cache entry (the name is not a key)".to_owned(),
        ),
        (
            misplaced.clone(),
            format!("misplaced: belongs in directory {}", &hex[..2]),
        ),
    ];
    expected.sort();
    assert_eq!(why, expected);
    assert!(damaged.exists(), "verify(false) removes nothing");
    assert_eq!(disk.verify(true).damaged.len(), 3);
    let report = disk.verify(false);
    assert_eq!((report.ok, report.damaged.len()), (3, 0));

    // clear() removes every version's tree and nothing else.
    let old = dir.path().join("v0").join("cpu").join("ab").join("old");
    fs::create_dir_all(old.parent().unwrap()).unwrap();
    fs::write(&old, b"old format").unwrap();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    fs::create_dir_all(dir.path().join("vacation")).unwrap();
    fs::create_dir_all(dir.path().join("v")).unwrap();
    assert_eq!(disk.clear().unwrap(), 4);
    let mut left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["notes.txt", "v", "vacation"]);
    assert_eq!(disk.total_bytes(), 0);

    // The tier still works after a clear.
    disk.put(&key(9), &payload(9)).unwrap();
    assert_eq!(disk.get(&key(9)), Lookup::Hit(payload(9)));
}

#[test]
fn open_fails_with_the_path_when_the_dir_cannot_exist() {
    let dir = TempDir::new("under-file");
    let file = dir.path().join("a-file");
    fs::write(&file, b"").unwrap();
    let err = DiskTier::open(&file.join("cache"), "cpu", 1 << 20).unwrap_err();
    assert!(matches!(err, CacheError::Io { .. }));
    let message = err.to_string();
    assert!(message.starts_with("cannot create directory "), "{message}");
    assert!(message.contains(&file.display().to_string()), "{message}");
}

#[test]
fn open_rejects_backend_names_that_are_not_plain_directory_names() {
    let dir = TempDir::new("names");
    for bad in ["", ".", "..", "a/b", "../x", ".hidden", "a b"] {
        let err = DiskTier::open(dir.path(), bad, 1).unwrap_err();
        assert!(
            matches!(err, CacheError::BadBackend { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(DiskTier::open(dir.path(), "cuda-sm_90+ptx8.0", 1).is_ok());
}

#[cfg(unix)]
#[test]
fn open_fails_on_a_read_only_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("read-only");
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let still_writable = fs::write(ro.join("probe"), b"").is_ok();
    let result = DiskTier::open(&ro, "cpu", 1 << 20);
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    if still_writable {
        eprintln!("skipped: permissions do not restrict this user (root?), 0o555 is writable");
        return;
    }
    let err = result.unwrap_err().to_string();
    assert!(err.contains(&ro.display().to_string()), "{err}");
}

/// `open_existing` (what `metajit cache stats/verify` use) creates and writes nothing: a missing
/// directory stays missing, a hit keeps its mtime, a damaged entry stays, `put` fails.
#[test]
fn open_existing_only_reads() {
    let dir = TempDir::new("open-existing");
    let missing = dir.path().join("not-there");
    let ro = DiskTier::open_existing(&missing, "cpu", 1 << 20).unwrap();
    assert!(ro.entries().is_empty());
    assert_eq!(ro.verify(false), Default::default());
    assert_eq!(ro.get(&key(1)), Lookup::Miss);
    let err = ro.put(&key(1), &payload(1)).unwrap_err();
    assert!(matches!(err, CacheError::ReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(!missing.exists(), "open_existing created the directory");
    assert!(
        DiskTier::open_existing(dir.path(), "../x", 1).is_err(),
        "backend names are still checked"
    );

    let rw = DiskTier::open(dir.path(), "cpu", 1 << 20).unwrap();
    rw.put(&key(1), &payload(1)).unwrap();
    rw.put(&key(2), &payload(2)).unwrap();
    let (good, bad) = (rw.entry_path(&key(1)), rw.entry_path(&key(2)));
    set_age(&good, Duration::from_secs(3600));
    fs::write(&bad, b"garbage").unwrap();
    let mtime = |p: &std::path::Path| fs::metadata(p).unwrap().modified().unwrap();
    let old = mtime(&good);

    let ro = DiskTier::open_existing(dir.path(), "cpu", 1 << 20).unwrap();
    assert_eq!(ro.get(&key(1)), Lookup::Hit(payload(1)));
    assert_eq!(mtime(&good), old, "a read-only hit refreshed the mtime");
    assert!(matches!(ro.get(&key(2)), Lookup::Damaged(_)));
    assert!(bad.exists(), "a read-only get removed the damaged entry");
    let report = ro.verify(false);
    assert_eq!((report.ok, report.damaged.len()), (1, 1));
    assert!(bad.exists());
    // The explicit deletion still works.
    assert_eq!(ro.verify(true).damaged.len(), 1);
    assert!(!bad.exists());
    // The writable tier refreshes on a hit, as before.
    assert_eq!(rw.get(&key(1)), Lookup::Hit(payload(1)));
    assert!(mtime(&good) > old);
}
