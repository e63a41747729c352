//! The compiled-kernel cache across processes (DESIGN §6): each test spawns this very test
//! binary as child processes (the `child` test, which does nothing unless
//! `METAJIT_TEST_CACHE_CHILD=1`), each with its own `METAJIT_CACHE_DIR`, and compares what the
//! children compute and what their caches did.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use metajit::Tensor;
use metajit::cache::{DiskTier, FORMAT_VERSION};

/// What the child computes: a fused element-wise chain (W1's), a row softmax, reductions,
/// a matmul with bias and relu, and an integer kernel. Prints one `result <name> <hash>` line
/// per output and one `stats` line of cache counters.
#[test]
fn child() {
    if std::env::var("METAJIT_TEST_CACHE_CHILD").as_deref() != Ok("1") {
        return;
    }
    metajit::manual_seed(7);
    let x = Tensor::randn([1000]);
    let m = Tensor::randn([37, 50]);
    let a = Tensor::randn([16, 24]);
    let b = Tensor::randn([24, 8]);
    let bias = Tensor::randn([8]);
    let ints = Tensor::from_vec((0..60i32).collect::<Vec<_>>(), [6, 10]);
    let outputs = [
        ("w1", (&x * 1.5 + 0.5).relu() * x.sigmoid() + x.tanh()),
        ("softmax", {
            let e = (&m - m.max(1, true)).exp();
            &e / e.sum(1, true)
        }),
        ("colsum", m.sum(0, false)),
        ("sum", x.sum_all()),
        ("mlp", (a.matmul(&b) + &bias).relu()),
        ("ints", (&ints * 3 - 7).maximum(0).sum(1, false)),
    ];
    for (name, t) in &outputs {
        match t.realize() {
            Ok(_) => {}
            Err(e) => {
                println!("error {e}");
                std::process::exit(3);
            }
        }
        let mut h = std::hash::DefaultHasher::new();
        match t.dtype() {
            metajit::DType::F32 => t
                .to_vec::<f32>()
                .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                .expect("realized")
                .hash(&mut h),
            _ => format!("{:?}", t.to_f64_vec().expect("realized")).hash(&mut h),
        }
        println!("result {name} {:016x}", h.finish());
    }
    for k in fixed_keys() {
        println!("key {k}");
    }
    let s = metajit::cache_stats();
    println!(
        "stats compiled={} disk_hits={} memory_hits={} damaged={} disk_writes={}",
        s.misses, s.disk_hits, s.memory_hits, s.damaged, s.disk_writes
    );
}

/// The cache keys of the kernels of a fixed random graph.
fn fixed_keys() -> Vec<String> {
    use metajit::metaops::r#gen::{GenConfig, random_graph};
    use metajit::metaops::schedule::{Step, schedule};
    let (g, _) = random_graph(42, &GenConfig::default());
    let identity = metajit_codegen::cpu::jit::target_description();
    schedule(&g)
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Kernel { kernel, .. } => {
                Some(metajit::kernel_cache_key("cpu", &identity, kernel).to_string())
            }
            _ => None,
        })
        .collect()
}

/// One child's report.
#[derive(Debug)]
struct Report {
    results: BTreeMap<String, String>,
    stats: BTreeMap<String, u64>,
    keys: Vec<String>,
    stderr: String,
}

fn spawn(dir: &Path, env: &[(&str, &str)]) -> std::process::Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("METAJIT_TEST_CACHE_CHILD", "1")
        .env("METAJIT_CACHE_DIR", dir)
        .env_remove("METAJIT_CACHE")
        .env_remove("METAJIT_CACHE_MAX_MB")
        .env_remove("METAJIT_DEBUG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawning the child test process")
}

fn parse(out: Output) -> Report {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let mut results = BTreeMap::new();
    let mut stats = BTreeMap::new();
    let mut keys = Vec::new();
    for line in stdout.lines() {
        // libtest may print `test child ... ` on the line of the child's first output.
        let line = line.trim_start_matches("test child ... ");
        if let Some(r) = line.strip_prefix("result ") {
            let (name, hash) = r.split_once(' ').expect("result <name> <hash>");
            results.insert(name.to_string(), hash.to_string());
        } else if let Some(k) = line.strip_prefix("key ") {
            keys.push(k.to_string());
        } else if let Some(s) = line.strip_prefix("stats ") {
            for kv in s.split_whitespace() {
                let (k, v) = kv.split_once('=').expect("k=v");
                stats.insert(k.to_string(), v.parse().expect("a count"));
            }
        }
    }
    assert_eq!(results.len(), 6, "child printed:\n{stdout}\n{stderr}");
    Report {
        results,
        stats,
        keys,
        stderr,
    }
}

fn run_child(dir: &Path, env: &[(&str, &str)]) -> Report {
    parse(
        spawn(dir, env)
            .wait_with_output()
            .expect("waiting for the child"),
    )
}

/// A fresh, empty directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "metajit-cache-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating a temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn disk(dir: &Path) -> DiskTier {
    DiskTier::open(dir, "cpu", u64::MAX).expect("opening the test cache dir")
}

/// Cold then warm: the warm process compiles nothing and computes the same bits.
#[test]
fn warm_disk_cache_compiles_nothing() {
    let dir = TempDir::new("warm");
    let cold = run_child(&dir.0, &[]);
    assert!(cold.stats["compiled"] > 0, "{cold:?}");
    assert_eq!(cold.stats["disk_hits"], 0, "{cold:?}");
    assert_eq!(
        cold.stats["disk_writes"], cold.stats["compiled"],
        "{cold:?}"
    );
    let entries = disk(&dir.0).entries();
    assert_eq!(entries.len() as u64, cold.stats["compiled"]);
    for e in &entries {
        let rel = e.path.strip_prefix(&dir.0).expect("under the dir");
        let parts: Vec<_> = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(parts.len(), 4, "{rel:?}");
        assert_eq!(parts[0], format!("v{FORMAT_VERSION}"));
        assert_eq!(parts[1], "cpu");
        assert_eq!(parts[3].len(), 64);
        assert!(parts[3].starts_with(&parts[2]), "{rel:?}");
    }

    let warm = run_child(&dir.0, &[]);
    assert_eq!(warm.stats["compiled"], 0, "{warm:?}");
    assert_eq!(warm.stats["disk_hits"], cold.stats["compiled"], "{warm:?}");
    assert_eq!(warm.results, cold.results);
    // The same kernel has the same key in every process.
    assert!(!cold.keys.is_empty());
    assert_eq!(cold.keys, warm.keys);
    assert_eq!(cold.keys, fixed_keys());

    // METAJIT_DEBUG=1: a line per kernel run saying where the kernel came from, and the
    // statistics line at exit.
    let dbg = run_child(&dir.0, &[("METAJIT_DEBUG", "1")]);
    let last = dbg.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "metajit cache: compiled=0 disk_hits={} memory_hits=",
            cold.stats["compiled"]
        )) && last.contains(" compile_ms=0.000 load_ms="),
        "{}",
        dbg.stderr
    );
    assert!(dbg.stderr.contains("[disk hit]"), "{}", dbg.stderr);

    // The memory tier only: compiles again, same results, writes nothing.
    let mem = run_child(&dir.0, &[("METAJIT_CACHE", "memory")]);
    assert_eq!(mem.stats["compiled"], cold.stats["compiled"], "{mem:?}");
    assert_eq!(mem.stats["disk_writes"], 0, "{mem:?}");
    assert_eq!(mem.results, cold.results);
}

/// Damaged entries of every kind are rebuilt, never executed, and replaced.
#[test]
fn damaged_entries_are_rebuilt() {
    let dir = TempDir::new("damaged");
    let cold = run_child(&dir.0, &[]);
    let mut paths: Vec<PathBuf> = disk(&dir.0).entries().into_iter().map(|e| e.path).collect();
    paths.sort();
    assert!(paths.len() >= 5, "{paths:?}");
    // Truncated.
    let bytes = std::fs::read(&paths[0]).expect("reading an entry");
    std::fs::write(&paths[0], &bytes[..bytes.len() / 2]).expect("truncating");
    // One bit flipped in the machine code.
    let mut bytes = std::fs::read(&paths[1]).expect("reading an entry");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&paths[1], &bytes).expect("flipping a bit");
    // Zero length.
    std::fs::write(&paths[2], b"").expect("emptying");
    // Wrong format version (the field after the 8-byte magic).
    let mut bytes = std::fs::read(&paths[3]).expect("reading an entry");
    bytes[8] = bytes[8].wrapping_add(1);
    std::fs::write(&paths[3], &bytes).expect("changing the version");
    // Foreign: another kernel's entry under this name.
    let foreign = std::fs::read(&paths[5 % paths.len()]).expect("reading an entry");
    std::fs::write(&paths[4], &foreign).expect("copying a foreign entry");

    let again = run_child(&dir.0, &[]);
    assert_eq!(again.results, cold.results, "{again:?}");
    assert_eq!(again.stats["damaged"], 5, "{again:?}");
    assert_eq!(again.stats["compiled"], 5, "{again:?}");
    let warnings = again
        .stderr
        .lines()
        .filter(|l| l.contains("damaged"))
        .count();
    assert!(
        (1..=5).contains(&warnings),
        "the damage is logged, once per entry at most:\n{}",
        again.stderr
    );
    let report = disk(&dir.0).verify(false);
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.ok, paths.len());

    let warm = run_child(&dir.0, &[]);
    assert_eq!(warm.stats["compiled"], 0, "{warm:?}");
    assert_eq!(warm.results, cold.results);
}

/// Several processes filling one cache dir at once all compute the right bits and leave a
/// consistent cache.
#[test]
fn concurrent_processes_share_a_dir() {
    let dir = TempDir::new("concurrent");
    let reference = run_child(&TempDir::new("concurrent-ref").0, &[]);
    let children: Vec<_> = (0..4).map(|_| spawn(&dir.0, &[])).collect();
    for c in children {
        let r = parse(c.wait_with_output().expect("waiting for a child"));
        assert_eq!(r.results, reference.results);
    }
    let report = disk(&dir.0).verify(false);
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.ok as u64, reference.stats["compiled"]);
    let warm = run_child(&dir.0, &[]);
    assert_eq!(warm.stats["compiled"], 0, "{warm:?}");
}

/// A cache dir that cannot be created degrades to the memory tier with one warning.
#[test]
fn unusable_dir_degrades_to_memory() {
    let dir = TempDir::new("unusable");
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"not a directory").expect("writing a file");
    let under_file = file.join("cache");
    let r = run_child(&under_file, &[]);
    assert!(r.stats["compiled"] > 0);
    assert_eq!(r.stats["disk_writes"], 0);
    let warnings: Vec<_> = r.stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{}", r.stderr);
    assert!(warnings[0].contains("memory"), "{}", warnings[0]);
    let ok = run_child(&dir.0.join("fine"), &[]);
    assert_eq!(ok.results, r.results);
}

/// A read-only cache dir (where permissions apply: not for root) degrades the same way.
#[test]
fn read_only_dir_degrades_to_memory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("readonly");
    let ro = dir.0.join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    if std::fs::write(ro.join("probe"), b"x").is_ok() {
        eprintln!("read_only_dir_degrades_to_memory: skipped, permissions do not apply (root)");
        let _ = std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755));
        return;
    }
    let r = run_child(&ro, &[]);
    let _ = std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755));
    assert_eq!(r.stats["disk_writes"], 0);
    let warnings = r.stderr.lines().filter(|l| l.contains("warning")).count();
    assert_eq!(warnings, 1, "{}", r.stderr);
}

/// Bad values fail the first realize with the variable and the allowed values.
#[test]
fn bad_env_values_name_the_variable() {
    let dir = TempDir::new("badenv");
    for (var, value, allowed) in [
        ("METAJIT_CACHE", "dsk", "disk, memory, off"),
        ("METAJIT_CACHE_MAX_MB", "lots", "non-negative integer"),
    ] {
        let out = spawn(&dir.0, &[(var, value)])
            .wait_with_output()
            .expect("waiting for the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{stdout}");
        let line = stdout
            .lines()
            .find(|l| l.contains("error "))
            .unwrap_or_else(|| panic!("no error line in:\n{stdout}"));
        assert!(
            line.contains(var) && line.contains(value) && line.contains(allowed),
            "{line}"
        );
    }
}

/// Without a cache every kernel is compiled at every lookup; results stay right.
#[test]
fn cache_off_compiles_every_lookup() {
    let dir = TempDir::new("off");
    let on = run_child(&dir.0, &[]);
    let off = run_child(&dir.0, &[("METAJIT_CACHE", "off")]);
    assert_eq!(off.results, on.results);
    assert_eq!(
        off.stats["disk_hits"] + off.stats["memory_hits"],
        0,
        "{off:?}"
    );
    assert_eq!(
        off.stats["compiled"],
        on.stats["compiled"] + on.stats["memory_hits"],
        "{off:?}"
    );
}

/// A bound of 0 MB keeps nothing on disk; results stay right.
#[test]
fn size_bound_is_kept() {
    let dir = TempDir::new("bound");
    let r = run_child(&dir.0, &[("METAJIT_CACHE_MAX_MB", "0")]);
    assert!(r.stats["compiled"] > 0);
    assert_eq!(disk(&dir.0).total_bytes(), 0);
    let again = run_child(&dir.0, &[("METAJIT_CACHE_MAX_MB", "0")]);
    assert_eq!(again.results, r.results);
}
