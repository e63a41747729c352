//! Cold vs warm start: the first call of W1 (`relu(x*1.5+0.5) * sigmoid(x) + tanh(x)`) and of a
//! small MLP forward pass, in a fresh process with an empty kernel cache (cold: every kernel is
//! compiled) and in a second fresh process on the same cache (warm: every kernel is loaded from
//! disk). The example runs itself as those child processes, with a temporary
//! `METAJIT_CACHE_DIR`, and prints one table.
//!
//! ```text
//! cargo run --release --example cold_start    # W1 at 2^10 elements (first: it compiles), 2^24, an MLP
//! ```

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use metajit::Tensor;

fn main() {
    if std::env::var("METAJIT_COLD_START_CHILD").is_ok() {
        child();
        return;
    }
    let dir = std::env::temp_dir().join(format!("metajit-cold-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!("cache dir: {} (removed at the end)", dir.display());
    let cold = run_child(&dir, "cold");
    let warm = run_child(&dir, "warm");
    let stored = metajit::cache::DiskTier::open(&dir, "cpu", u64::MAX)
        .map(|d| d.entries())
        .unwrap_or_default();
    let (entries, bytes) = (
        stored.len() as u64,
        stored.iter().map(|e| e.bytes).sum::<u64>(),
    );
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\n{:<18} {:>14} {:>14} {:>14}",
        "first call of", "cold", "warm", "steady state"
    );
    for (c, w) in cold.lines.iter().zip(&warm.lines) {
        println!(
            "{:<18} {:>14} {:>14} {:>14}",
            c.name,
            ms(c.first),
            ms(w.first),
            ms(c.steady.min(w.steady))
        );
    }
    println!(
        "{:<18} {:>14} {:>14}",
        "whole process",
        ms(cold.process),
        ms(warm.process)
    );
    println!("\ncold: {}", cold.stats);
    println!("warm: {}", warm.stats);
    let per = |total_ms: f64, n: f64| {
        if n > 0.0 {
            format!("{:.1} us", 1e3 * total_ms / n)
        } else {
            "-".into()
        }
    };
    println!(
        "per kernel: compile {} (cold), load {} (warm); {entries} entries, {} bytes on disk ({} per kernel)",
        per(cold.compile_ms, cold.compiled),
        per(warm.load_ms, warm.disk_hits),
        bytes,
        bytes / entries.max(1)
    );
}

/// One timed workload of a child.
struct Line {
    name: String,
    first: Duration,
    steady: Duration,
}

/// What a child reported.
struct Child {
    lines: Vec<Line>,
    stats: String,
    compiled: f64,
    disk_hits: f64,
    compile_ms: f64,
    load_ms: f64,
    process: Duration,
}

fn run_child(dir: &Path, tag: &str) -> Child {
    let exe = std::env::current_exe().expect("this example's path");
    let t0 = Instant::now();
    let out = Command::new(exe)
        .env("METAJIT_COLD_START_CHILD", tag)
        .env("METAJIT_CACHE_DIR", dir)
        .env_remove("METAJIT_CACHE")
        .output()
        .expect("running the child process");
    let process = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
    let mut c = Child {
        lines: Vec::new(),
        stats: String::new(),
        compiled: 0.0,
        disk_hits: 0.0,
        compile_ms: 0.0,
        load_ms: 0.0,
        process,
    };
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("line ") {
            let f: Vec<&str> = rest.split('\t').collect();
            let ns = |s: &str| Duration::from_nanos(s.parse().expect("nanoseconds"));
            c.lines.push(Line {
                name: f[0].to_string(),
                first: ns(f[1]),
                steady: ns(f[2]),
            });
        } else if line.starts_with("metajit cache:") {
            c.stats = line.to_string();
            for kv in line.split_whitespace() {
                if let Some((k, v)) = kv.split_once('=') {
                    let v: f64 = v.parse().unwrap_or(0.0);
                    match k {
                        "compiled" => c.compiled = v,
                        "disk_hits" => c.disk_hits = v,
                        "compile_ms" => c.compile_ms = v,
                        "load_ms" => c.load_ms = v,
                        _ => {}
                    }
                }
            }
        }
    }
    c
}

fn child() {
    let w1 = |x: &Tensor| (x * 1.5 + 0.5).relu() * x.sigmoid() + x.tanh();
    for n in [1usize << 10, 1 << 24] {
        let x = Tensor::from_vec(
            (0..n)
                .map(|i| ((i % 2001) as f32 - 1000.0) / 250.0)
                .collect(),
            [n],
        );
        x.realize().expect("the input");
        time(&format!("W1 n=2^{}", n.trailing_zeros()), || w1(&x));
    }
    let input = Tensor::from_vec(vec![0.5f32; 64 * 784], [64, 784]);
    let w = |i: usize, o: usize| Tensor::from_vec(vec![0.01f32; i * o], [i, o]);
    let (w1m, w2m, w3m) = (w(784, 512), w(512, 512), w(512, 10));
    let b = |o: usize| Tensor::from_vec(vec![0.1f32; o], [o]);
    let (b1, b2, b3) = (b(512), b(512), b(10));
    metajit::realize_all(&[&input, &w1m, &w2m, &w3m, &b1, &b2, &b3]).expect("the weights");
    time("MLP forward b=64", || {
        let h = (input.matmul(&w1m) + &b1).relu();
        let h = (h.matmul(&w2m) + &b2).relu();
        let logits = h.matmul(&w3m) + &b3;
        let e = (&logits - logits.max(1, true)).exp();
        &e / e.sum(1, true)
    });
    println!("{}", metajit::cache_stats());
}

/// Times the first realize of `f()`'s result, then the fastest of five more.
fn time(name: &str, f: impl Fn() -> Tensor) {
    let t0 = Instant::now();
    f().realize().expect("the first call");
    let first = t0.elapsed();
    let steady = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            f().realize().expect("a later call");
            t0.elapsed()
        })
        .min()
        .unwrap_or_default();
    println!("line {name}\t{}\t{}", first.as_nanos(), steady.as_nanos());
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}
