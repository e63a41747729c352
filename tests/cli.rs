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
