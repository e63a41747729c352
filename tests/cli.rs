//! The `metajit cache` command line: path, stats, verify, clear.

use std::path::Path;
use std::process::{Command, Output};

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metajit"))
        .args(args)
        .env("METAJIT_CACHE_DIR", dir)
        .output()
        .expect("running the metajit binary")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn cache_commands() {
    let dir = std::env::temp_dir().join(format!("metajit-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let o = cli(&dir, &["cache", "path"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        dir.to_string_lossy()
    );

    // Fill the cache with two entries through the library's own store.
    let disk = metajit::cache::DiskTier::open(&dir, "cpu", u64::MAX).expect("open");
    for i in 0..2u32 {
        let key = metajit::cache::KeyBuilder::new("cli test").u32(i).finish();
        disk.put(&key, &[i as u8; 100]).expect("put");
    }
    let o = cli(&dir, &["cache", "stats"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("entries     2"), "{t}");
    assert!(t.contains("cpu"), "{t}");

    let o = cli(&dir, &["cache", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 entries ok"), "{}", text(&o));

    // Damage one: verify reports it (exit 1), --remove drops it.
    let victim = disk.entries()[0].path.clone();
    std::fs::write(&victim, b"garbage").expect("damaging an entry");
    let o = cli(&dir, &["cache", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("1 damaged"), "{}", text(&o));
    let o = cli(&dir, &["cache", "verify", "--remove"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!victim.exists());
    let o = cli(&dir, &["cache", "verify"]);
    assert!(o.status.success(), "{}", text(&o));

    let o = cli(&dir, &["cache", "clear"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("removed 1 file"), "{}", text(&o));
    assert_eq!(disk.entries().len(), 0);

    // Bad usage and bad settings: exit 2 with a message.
    let o = cli(&dir, &["cache", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("usage"), "{}", text(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_metajit"))
        .args(["cache", "stats"])
        .env("METAJIT_CACHE_DIR", &dir)
        .env("METAJIT_CACHE_MAX_MB", "lots")
        .output()
        .expect("running the metajit binary");
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("METAJIT_CACHE_MAX_MB"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file and directory under `dir`: relative path, whether a directory, size, mtime.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, bool, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = std::fs::metadata(&d).expect("metadata");
        let rel = d.strip_prefix(dir).unwrap().to_path_buf();
        out.push((rel, meta.is_dir(), meta.len(), meta.modified().unwrap()));
        if meta.is_dir() {
            for item in std::fs::read_dir(&d).expect("listing") {
                stack.push(item.expect("listing").path());
            }
        }
    }
    out.sort();
    out
}

/// Sets every file's and directory's mtime under `dir` to `t`, and (with `writable` false)
/// clears every write bit, as `chmod -R a-w`.
fn touch_and_chmod(dir: &Path, t: std::time::SystemTime, writable: bool) {
    use std::os::unix::fs::PermissionsExt;
    for (rel, is_dir, _, _) in snapshot(dir) {
        let path = dir.join(rel);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        let mode = if writable {
            mode | 0o200
        } else {
            mode & !0o222
        };
        if writable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::fs::File::open(&path)
            .and_then(|f| f.set_modified(t))
            .unwrap_or_else(|e| panic!("setting the mtime of {}: {e}", path.display()));
        if !writable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let _ = is_dir;
    }
}

/// `stats` and `verify` only read: on a cache whose files and directories are all read-only
/// (`chmod -R a-w`), they succeed, and no file or directory is created, removed, resized or
/// touched — checked by comparing every mtime (a probe file created and removed still changes
/// its directory's mtime), so the check holds even as root, where write bits stop nothing.
/// This is what a full disk needs: an earlier `verify` wrote a probe file and failed there.
#[test]
fn stats_and_verify_write_nothing() {
    let dir = std::env::temp_dir().join(format!("metajit-cli-ro-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let disk = metajit::cache::DiskTier::open(&dir, "cpu", u64::MAX).expect("open");
    for i in 0..3u32 {
        let key = metajit::cache::KeyBuilder::new("cli ro test")
            .u32(i)
            .finish();
        disk.put(&key, &[i as u8; 100]).expect("put");
    }
    let mut entries = disk.entries();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    std::fs::write(&entries[0].path, b"garbage").expect("damaging an entry");
    drop(disk);

    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    touch_and_chmod(&dir, past, false);
    let before = snapshot(&dir);
    assert!(before.iter().all(|e| e.3 == past));

    let o = cli(&dir, &["cache", "stats"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("entries     3"), "{}", text(&o));
    let o = cli(&dir, &["cache", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("2 entries ok") && text(&o).contains("1 damaged"),
        "{}",
        text(&o)
    );
    let after = snapshot(&dir);

    touch_and_chmod(&dir, past, true);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(before, after, "stats/verify changed the cache directory");
}
