//! Cold vs warm start: the first call of W1 (`relu(x*1.5+0.5) * sigmoid(x) + tanh(x)`), of a
//! small MLP forward pass and of a LeNet-5 training step (DESIGN §9 W6/W7: SGD with momentum
//! 0.9 on random inputs), in a fresh process with an empty kernel cache (cold: every kernel is
//! compiled) and in a second fresh process on the same cache (warm: every kernel is loaded from
//! disk). The example runs itself as those child processes, with a temporary
//! `METAJIT_CACHE_DIR`, and prints one table. The children inherit the environment, so
//! `METAJIT_MODE=eager` measures eager mode.
//!
//! ```text
//! cargo run --release --example cold_start                  # W1 at 2^10 elements (first: it compiles), 2^24, an MLP, LeNet-5 b64
//! cargo run --release --example cold_start -- --only lenet,w1 --batch 16
//! cargo run --release --example cold_start -- --tsv         # tab-separated lines (the bench harness's W7 row)
//! ```
//!
//! Options: `--only LIST` (comma-separated, in the order to run: `w1`, `mlp`, `lenet`; default
//! `w1,mlp,lenet`), `--batch N` (the LeNet-5 batch, default 64), `--tsv` (instead of the table,
//! one line per workload: `result`, name, then cold first-call, warm first-call and steady-state
//! nanoseconds, kernels compiled during the cold first call, kernels loaded from disk and
//! kernels compiled during the warm first call; then a `process` line with the two processes'
//! wall times in nanoseconds).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use metajit::nn::{Module, functional as F, lenet5};
use metajit::optim::{Optimizer, Sgd, SgdConfig};
use metajit::{DType, Tensor};

const HELP: &str = "cold_start: first calls in a fresh process, cold and warm kernel cache

usage: cargo run --release --example cold_start -- [--only w1,mlp,lenet] [--batch N] [--tsv]";

/// What to run, from the command line (the children get the same arguments).
struct Args {
    only: Vec<String>,
    batch: usize,
    tsv: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        only: vec!["w1".into(), "mlp".into(), "lenet".into()],
        batch: 64,
        tsv: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            "--tsv" => a.tsv = true,
            "--only" => {
                let v = it.next().ok_or("--only needs a value")?;
                a.only = v.split(',').map(|s| s.trim().to_lowercase()).collect();
                if let Some(bad) = a
                    .only
                    .iter()
                    .find(|s| !["w1", "mlp", "lenet"].contains(&s.as_str()))
                {
                    return Err(format!(
                        "--only: unknown workload {bad:?} (expected w1, mlp, lenet)"
                    ));
                }
            }
            "--batch" => {
                let v = it.next().ok_or("--batch needs a value")?;
                a.batch = match v.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--batch: expected a positive integer, got {v:?}")),
                };
            }
            // `cargo bench` passes `--bench` to every target; ignore it.
            "--bench" => {}
            other => return Err(format!("unknown option {other} (see --help)")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cold_start: {e}");
            std::process::exit(2);
        }
    };
    if std::env::var("METAJIT_COLD_START_CHILD").is_ok() {
        child(&args);
        return;
    }
    let dir = std::env::temp_dir().join(format!("metajit-cold-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
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

    if args.tsv {
        for (c, w) in cold.lines.iter().zip(&warm.lines) {
            println!(
                "result\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                c.name,
                c.first.as_nanos(),
                w.first.as_nanos(),
                c.steady.min(w.steady).as_nanos(),
                c.compiled,
                w.disk_hits,
                w.compiled
            );
        }
        println!(
            "process\t{}\t{}",
            cold.process.as_nanos(),
            warm.process.as_nanos()
        );
        return;
    }
    println!("cache dir: {} (removed at the end)", dir.display());
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
    /// Kernels compiled during the first call.
    compiled: u64,
    /// Kernels loaded from the disk cache during the first call.
    disk_hits: u64,
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
        .args(std::env::args_os().skip(1))
        .env("METAJIT_COLD_START_CHILD", tag)
        .env("METAJIT_CACHE_DIR", dir)
        .env_remove("METAJIT_CACHE")
        .output()
        .expect("running the child process");
    let process = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!(
            "cold_start: the {tag} child failed ({})\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
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
            let num = |s: &str| s.parse::<u64>().expect("a count from the child");
            c.lines.push(Line {
                name: f[0].to_string(),
                first: Duration::from_nanos(num(f[1])),
                steady: Duration::from_nanos(num(f[2])),
                compiled: num(f[3]),
                disk_hits: num(f[4]),
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

fn child(args: &Args) {
    for what in &args.only {
        match what.as_str() {
            "w1" => w1(),
            "mlp" => mlp(),
            "lenet" => lenet(args.batch),
            _ => unreachable!("checked by parse_args"),
        }
    }
    println!("{}", metajit::cache_stats());
}

fn w1() {
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
}

fn mlp() {
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
}

/// One LeNet-5 training step as `examples/train_mnist.rs` takes it (zero_grad, forward,
/// cross-entropy, backward, SGD step with momentum 0.9, realize), on random inputs made (and
/// the model initialised) before the clock starts.
fn lenet(batch: usize) {
    metajit::manual_seed(0);
    let net = lenet5();
    let mut opt = Sgd::new(
        net.parameters(),
        SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            ..Default::default()
        },
    );
    let x = Tensor::randn([batch, 1, 28, 28]);
    let y = (Tensor::rand([batch]) * 10.0).floor().cast(DType::I64);
    metajit::realize_all(&[&x, &y]).expect("the inputs");
    time(&format!("LeNet-5 step b{batch}"), || {
        opt.zero_grad();
        let loss = F::cross_entropy(&net.forward(&x), &y, &Default::default());
        loss.backward();
        opt.step();
        opt.realize_with(&[&loss]).expect("a training step");
        loss
    });
}

/// Times the first realize of `f()`'s result (with the kernels it compiled and loaded from
/// disk), then the fastest of five more.
fn time(name: &str, mut f: impl FnMut() -> Tensor) {
    let s0 = metajit::cache_stats();
    let t0 = Instant::now();
    f().realize().expect("the first call");
    let first = t0.elapsed();
    let d = metajit::cache_stats().since(&s0);
    let steady = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            f().realize().expect("a later call");
            t0.elapsed()
        })
        .min()
        .unwrap_or_default();
    println!(
        "line {name}\t{}\t{}\t{}\t{}",
        first.as_nanos(),
        steady.as_nanos(),
        d.misses,
        d.disk_hits
    );
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}
