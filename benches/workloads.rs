//! The benchmark workloads of DESIGN §9, in one process, in three modes.
//!
//! ```sh
//! cargo bench --bench workloads                                  # everything
//! cargo bench --bench workloads -- --quick                       # tiny sizes (CI smoke run)
//! METAJIT_BENCH_QUICK=1 METAJIT_BENCH_FILTER=W1 cargo bench --bench workloads
//! cargo bench --bench workloads -- softmax,W3                    # filters as arguments
//! cargo bench --bench workloads -- W5,LeNet,W7                   # the conv and LeNet rows
//! ```
//!
//! Each workload runs in **compiled** mode (the default: lazy graph, fused), **eager** mode
//! (`set_mode(Mode::Eager)`: every meta-op its own kernel) and on the **reference** interpreter
//! (`set_device(Device::Reference)`, compiled mode; only where the work is small enough to take
//! about a second per run, else "skipped (too slow)"). Eager matmul materialises its n^3
//! broadcast product; eager is skipped where that would not fit in the available memory (an
//! allocation failure aborts the process, which no harness can catch). Per workload and mode:
//! one cold run (it schedules and compiles; its compile time per kernel is reported), untimed
//! warm-up runs (at least 3 runs in all and at least 1 s, 0.1 s with `--quick`), then timed
//! runs: at least `METAJIT_BENCH_RUNS` (default 7), and more while they add up to less than
//! 1 s (0.1 s quick), at most 1000 — the rule `benches/timing.py` applies to the peers. A
//! timed run records the graph from realized inputs and realizes its output; the clock covers
//! both, and nothing else (inputs are realized before, outputs are dropped after). A training
//! step (W6) is one run: zero_grad, forward, loss, backward, optimizer step, realize.
//!
//! Every mode's output is compared with the compiled mode's (a warning is printed past a
//! tolerance): a fast wrong answer is not a result.
//!
//! Beside the modes: W5 also times its GEMM alone (the same m, n, k, in the same mode) to give
//! the GEMM's share of the convolution's time; PyTorch eager runs the same workloads on the same
//! sizes after metajit, in one process (`benches/torch_workloads.py`, with the interpreter
//! `METAJIT_TORCH_PYTHON`, default `python3`; "torch: not installed" when it cannot import
//! torch; a failure of the script is reported, never fatal), giving the `vs torch` column
//! (metajit's median over torch's); W7 runs the `cold_start` example (built with `cargo build --release
//! --example cold_start`, found next to this binary) three times per mode (once in a quick run;
//! the table shows medians): the first LeNet-5 step and W1's first call in a fresh process with
//! an empty kernel cache, then in another on the cache the first left.
//!
//! Before the workloads, the harness measures the machine's limits and prints them above the
//! table: a copy and a read (sum) loop over a 256 MiB buffer on all cores (rayon) and on one
//! core (GB/s), one core's FMA peak (independent vector FMAs on the widest vectors the CPU has,
//! detected at run time), and the `gemm` crate called directly on each selected W4 shape. Each
//! row's `of limit` column is its throughput's share of the limit that bounds it: copy
//! bandwidth for W1 and W2, read bandwidth for W3, the direct GEMM and the FMA peak of all
//! cores for W4, the FMA peak for W5.
//!
//! Settings: `METAJIT_BENCH_RUNS` (timed runs, at least 5), `METAJIT_BENCH_FILTER` (comma-
//! separated, case-insensitive substrings of workload names; arguments after `--` are added),
//! `METAJIT_BENCH_QUICK=1` or the argument `--quick` (data sizes ÷ 16, matmul n ÷ 16, small
//! conv and LeNet batches, a short torch run, for a smoke run),
//! `METAJIT_BENCH_REFERENCE=all` (time the reference interpreter even where it takes minutes).
//! The other `METAJIT_*` settings apply as usual (`METAJIT_DEVICE` picks the device of the
//! compiled and eager modes), but for the kernel cache: unless `METAJIT_CACHE_DIR` is set, the
//! bench uses a fresh, temporary cache dir, so that its cold runs compile.
//!
//! Writes `target/bench/workloads.json` (every number and sample, kernel counts, compile time,
//! peak RSS per mode, the machine, the load average; schema `metajit-bench-workloads/3`: a
//! workload's `peer` and a mode's `part` are new in 2, `limits` and a mode's `share_of_limit`
//! in 3, and the W7 entries, metric kind
//! `latency`, give per mode `cold_first_s`, `warm_first_s` and their samples instead of
//! `median_s`) and
//! `target/bench/workloads.svg` (median time per workload and mode, log scale).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metajit::nn::{Module, Sequential, functional as F, lenet5};
use metajit::optim::{Optimizer, Sgd, SgdConfig};
use metajit::{Device, Mode, Stats, Tensor};
use rayon::prelude::*;

// ---------------------------------------------------------------------------------------------
// Settings

struct Settings {
    runs: usize,
    /// Runs before the timed ones, the cold one included (at least).
    warmups: usize,
    /// Seconds of untimed runs before the timed ones (at least).
    warmup_seconds: f64,
    /// Seconds the timed runs add up to (at least, up to 1000 runs).
    min_seconds: f64,
    quick: bool,
    filters: Vec<String>,
    /// Run the reference interpreter on every workload, however slow (`METAJIT_BENCH_REFERENCE=all`).
    reference_all: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let runs = match std::env::var("METAJIT_BENCH_RUNS") {
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if n >= 5 => n,
                _ => {
                    eprintln!("METAJIT_BENCH_RUNS={v:?}: expected an integer >= 5");
                    std::process::exit(2);
                }
            },
            Err(_) => 7,
        };
        let quick = match std::env::var("METAJIT_BENCH_QUICK") {
            Ok(v) => match v.trim() {
                "" | "0" | "false" => false,
                "1" | "true" => true,
                _ => {
                    eprintln!("METAJIT_BENCH_QUICK={v:?}: expected 0 or 1");
                    std::process::exit(2);
                }
            },
            Err(_) => false,
        } || std::env::args().skip(1).any(|a| a == "--quick");
        let mut filters: Vec<String> = std::env::var("METAJIT_BENCH_FILTER")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        // `cargo bench --bench workloads -- W1` passes `W1` (and cargo's own `--bench`; flags
        // such as `--quick` are not filters).
        for a in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
            filters.extend(
                a.split(',')
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| !s.is_empty()),
            );
        }
        let reference_all = std::env::var("METAJIT_BENCH_REFERENCE").is_ok_and(|v| v == "all");
        Settings {
            runs,
            warmups: 3,
            warmup_seconds: if quick { 0.1 } else { 1.0 },
            min_seconds: if quick { 0.1 } else { 1.0 },
            quick,
            filters,
            reference_all,
        }
    }

    fn selects(&self, name: &str) -> bool {
        let n = name.to_lowercase();
        self.filters.is_empty() || self.filters.iter().any(|f| n.contains(f.as_str()))
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// How a workload turns a time into a throughput.
#[derive(Clone, Copy)]
enum Metric {
    /// Bytes moved per run (GB/s).
    Bytes(f64),
    /// Floating-point operations per run (GFLOP/s).
    Flops(f64),
    /// Dispatched ops per run (µs per op).
    Ops(f64),
}

impl Metric {
    fn unit(self) -> &'static str {
        match self {
            Metric::Bytes(_) => "GB/s",
            Metric::Flops(_) => "GFLOP/s",
            Metric::Ops(_) => "us/op",
        }
    }

    fn per_run(self) -> f64 {
        match self {
            Metric::Bytes(v) | Metric::Flops(v) | Metric::Ops(v) => v,
        }
    }

    fn throughput(self, seconds: f64) -> f64 {
        match self {
            Metric::Bytes(b) => b / seconds / 1e9,
            Metric::Flops(f) => f / seconds / 1e9,
            Metric::Ops(n) => seconds * 1e6 / n,
        }
    }
}

/// Records one run's graph from the inputs.
type RunFn = dyn Fn(&[Tensor]) -> Tensor;

struct Workload {
    id: &'static str,
    name: String,
    description: String,
    metric: Metric,
    /// Element-operations of one run, to decide whether the reference interpreter can take it.
    work: f64,
    /// Bytes eager mode materialises at its peak, when far above the inputs' size (eager matmul
    /// materialises the n^3 broadcast product): eager is skipped when this exceeds the memory
    /// available (an allocation failure aborts the process; it cannot be caught).
    eager_bytes: Option<f64>,
    /// Makes the inputs (realized by the harness).
    setup: Box<dyn Fn() -> Vec<Tensor>>,
    /// Records one run's graph from the inputs; the harness realizes what it returns.
    run: Box<RunFn>,
    /// A piece of the run timed alone in each mode (W5: its GEMM), for its share of the time.
    part: Option<Part>,
    /// Its name in `benches/torch_workloads.py`'s output, when PyTorch runs it too.
    torch: Option<String>,
    /// The machine limit its throughput is a share of.
    limit: Limit,
}

/// A piece of a workload, timed alone in the same mode right after the workload's runs.
struct Part {
    /// What it is, for the table and the JSON (`GEMM 50176x576 @ 576x64`).
    name: String,
    setup: Box<dyn Fn() -> Vec<Tensor>>,
    run: Box<RunFn>,
}

/// What another framework's run of a workload gave.
enum Peer {
    /// Its median seconds per run, and what ran it (`torch 2.5.1, 2 threads`).
    Ok { name: String, median_s: f64 },
    /// It is not there (`torch: not installed`): not an error.
    Unavailable(String),
    /// It is there but the run failed; the reason.
    Failed(String),
}

/// The reference interpreter runs a workload only when its work is at most this many
/// element-operations. It takes 15–25 ns per element-operation, so this is about a second per
/// run: W3 and the quick sizes run there; W1, W2 and W4 at full size are skipped.
const REFERENCE_WORK_LIMIT: f64 = 5e7;

fn workloads(quick: bool) -> Vec<Workload> {
    // Quick mode: lengths ÷ 16, matrix sides ÷ 4 (elements ÷ 16), matmul n ÷ 16 (its cost
    // grows as n^3: n ÷ 4 would still take minutes on a slow backend).
    let div = if quick { 16 } else { 1 };
    let side_div = if quick { 4 } else { 1 };
    let mut w = Vec::new();

    let n1 = (1usize << 24) / div;
    w.push(Workload {
        id: "W1",
        name: format!("W1 elementwise n={}", pow2(n1)),
        description: "y = relu(x*1.5+0.5) * sigmoid(x) + tanh(x), f32; 8 bytes/element".into(),
        metric: Metric::Bytes(8.0 * n1 as f64),
        work: 8.0 * n1 as f64,
        eager_bytes: None,
        setup: Box::new(move || vec![Tensor::randn([n1])]),
        run: Box::new(|t| {
            let x = &t[0];
            (x * 1.5 + 0.5).relu() * x.sigmoid() + x.tanh()
        }),
        part: None,
        torch: Some("W1".into()),
        limit: Limit::Copy,
    });

    let s2 = 4096 / side_div;
    w.push(Workload {
        id: "W2",
        name: format!("W2 softmax {s2}x{s2}"),
        description: "row softmax: e = exp(x - max(x, 1)); e / sum(e, 1); 8 bytes/element".into(),
        metric: Metric::Bytes(8.0 * (s2 * s2) as f64),
        work: 6.0 * (s2 * s2) as f64,
        eager_bytes: None,
        setup: Box::new(move || vec![Tensor::randn([s2, s2])]),
        run: Box::new(|t| {
            let x = &t[0];
            let m = x.max(1, true);
            let e = (x - &m).exp();
            let s = e.sum(1, true);
            &e / &s
        }),
        part: None,
        torch: Some("W2".into()),
        limit: Limit::Copy,
    });

    let n3 = (1usize << 24) / div;
    w.push(Workload {
        id: "W3",
        name: format!("W3 sum n={}", pow2(n3)),
        description: "sum of all elements to a scalar; 4 bytes/element read".into(),
        metric: Metric::Bytes(4.0 * n3 as f64 + 4.0),
        work: n3 as f64,
        eager_bytes: None,
        setup: Box::new(move || vec![Tensor::randn([n3])]),
        run: Box::new(|t| t[0].sum(0, false)),
        part: None,
        torch: Some("W3sum".into()),
        limit: Limit::Read,
    });

    let s3 = 4096 / side_div;
    w.push(Workload {
        id: "W3",
        name: format!("W3 colsum {s3}x{s3}"),
        description: "column sum over axis 0; 4 bytes/element read + 4 bytes/column written".into(),
        metric: Metric::Bytes(4.0 * (s3 * s3) as f64 + 4.0 * s3 as f64),
        work: (s3 * s3) as f64,
        eager_bytes: None,
        setup: Box::new(move || vec![Tensor::randn([s3, s3])]),
        run: Box::new(|t| t[0].sum(0, false)),
        part: None,
        torch: Some("W3colsum".into()),
        limit: Limit::Read,
    });

    for n in [512usize, 1024, 2048] {
        let n = n / div;
        let flops = 2.0 * (n as f64).powi(3);
        w.push(Workload {
            id: "W4",
            name: format!("W4 matmul {n}x{n}"),
            description: format!(
                "Tensor::matmul of two {n}x{n} f32 matrices; 2n^3 = {flops:.3e} flops"
            ),
            metric: Metric::Flops(flops),
            work: flops,
            // Eager matmul is one GEMM (three n×n buffers), not a materialised n³ product.
            eager_bytes: Some(3.0 * 4.0 * (n as f64).powi(2)),
            setup: Box::new(move || vec![Tensor::randn([n, n]), Tensor::randn([n, n])]),
            run: Box::new(|t| t[0].matmul(&t[1])),
            part: None,
            torch: Some(format!("W4-{n}")),
            limit: Limit::Gemm(n),
        });
    }

    // W5: conv2d forward (with bias, as nn.Conv2d), 3x3, stride 1, pad 1. It runs as one
    // padding copy and one GEMM per image and tap over the padded input read in place (k = C,
    // summed over the 9 taps; src/nn/conv.rs), then the bias add, which crops the padded
    // rows. The im2col GEMM of the same flops (rows = N·OH·OW, k = C·9, n = O) is timed alone
    // as a yardstick.
    let (cn, cc, side, co) = if quick {
        (2, 16, 14, 16)
    } else {
        (16, 64, 56, 64)
    };
    let (rows, k) = (cn * side * side, cc * 9);
    let conv_flops = 2.0 * (rows * k * co) as f64;
    w.push(Workload {
        id: "W5",
        name: format!("W5 conv2d {cn}x{cc}x{side}x{side}, {co} out, 3x3 pad 1"),
        description: format!(
            "F::conv2d forward with bias, {cn}x{cc}x{side}x{side} input, {co}x{cc}x3x3 weight, \
             stride 1, pad 1; 2·N·O·H·W·C·9 = {conv_flops:.3e} flops (the input padded \
             once, then a GEMM per image and kernel tap reading it in place, summed)"
        ),
        metric: Metric::Flops(conv_flops),
        work: conv_flops,
        // Eager materialises the padded input twice (the pad and its contiguous copy).
        eager_bytes: Some(2.0 * 4.0 * (cn * cc * (side + 3) * (side + 2)) as f64),
        setup: Box::new(move || {
            let bound = 1.0 / (k as f64).sqrt();
            vec![
                Tensor::randn([cn, cc, side, side]),
                Tensor::rand([co, cc, 3, 3]) * (2.0 * bound) - bound,
                Tensor::rand([co]) * (2.0 * bound) - bound,
            ]
        }),
        run: Box::new(|t| F::conv2d(&t[0], &t[1], Some(&t[2]), (1, 1), (1, 1), (1, 1), 1)),
        part: Some(Part {
            name: format!("GEMM {rows}x{k} @ {k}x{co}"),
            setup: Box::new(move || vec![Tensor::randn([rows, k]), Tensor::randn([co, k])]),
            // The conv's layout: the window rows times the transposed [O, C·9] weight.
            run: Box::new(|t| t[0].matmul(&t[1].t())),
        }),
        torch: Some("W5".into()),
        limit: Limit::Fma,
    });

    // W6 MLP: one training step (forward, backward, SGD update) realized as one schedule.
    let (batch, hidden) = if quick { (32, 128) } else { (128, 512) };
    let dims = [784usize, hidden, hidden, 10];
    // GEMM flops: 2·batch·weights forward, as much for the weight gradients, and as much for
    // the input gradients of every layer but the first (x needs none).
    let weights: Vec<f64> = dims.windows(2).map(|w| (w[0] * w[1]) as f64).collect();
    let mlp_flops = 2.0 * batch as f64 * (3.0 * weights.iter().sum::<f64>() - weights[0]);
    w.push(Workload {
        id: "W6",
        name: format!("W6 MLP train step 784-{hidden}-{hidden}-10 b{batch}"),
        description: format!(
            "forward + backward + SGD update of an MLP (relu, cross-entropy via logsumexp), \
             batch {batch}, realized together; {mlp_flops:.3e} GEMM flops. \
             lr = 1e-7 so the loss stays comparable across modes and runs"
        ),
        metric: Metric::Flops(mlp_flops),
        work: mlp_flops,
        eager_bytes: None,
        setup: Box::new(move || mlp_setup(&dims, batch)),
        run: Box::new(|t| mlp_step(t, 1e-7)),
        part: None,
        torch: Some("W6mlp".into()),
        limit: Limit::None,
    });

    // W6 LeNet-5: one training step of the crate's model and optimizer, as
    // examples/train_mnist.rs takes it. The model and optimizer live across runs (and modes).
    let lb = lenet_batch(quick);
    let flops = lenet_flops(lb);
    let state: Rc<RefCell<Option<(Sequential, Sgd)>>> = Rc::default();
    let made = state.clone();
    w.push(Workload {
        id: "W6",
        name: format!("W6 LeNet-5 train step b{lb}"),
        description: format!(
            "zero_grad, forward, cross-entropy, backward, SGD step (momentum 0.9) of \
             nn::lenet5() on a {lb}x1x28x28 batch (random, made once), realized together; \
             {flops:.3e} conv and GEMM flops. lr = 1e-7 so the loss stays comparable across \
             modes and runs"
        ),
        metric: Metric::Flops(flops),
        work: flops,
        eager_bytes: None,
        setup: Box::new(move || {
            let (x, y, net, opt) = lenet_setup(lb, 1e-7);
            *made.borrow_mut() = Some((net, opt));
            vec![x, y]
        }),
        run: Box::new(move |t| {
            let mut s = state.borrow_mut();
            let (net, opt) = s.as_mut().expect("the setup made the model");
            lenet_step(net, opt, &t[0], &t[1])
        }),
        part: None,
        torch: Some("W6lenet".into()),
        limit: Limit::None,
    });

    // W8 keeps its 1000 ops in quick mode: it measures dispatch, not data.
    let ops = 1000usize;
    w.push(Workload {
        id: "W8",
        name: format!("W8 dispatch {ops} adds"),
        description: format!(
            "{ops} dependent adds of 4-element tensors (t = &t + &one); us per op. In eager mode \
             each add runs at once; in compiled mode the chain is realized once at the end"
        ),
        metric: Metric::Ops(ops as f64),
        work: 4.0 * ops as f64,
        eager_bytes: None,
        setup: Box::new(|| vec![Tensor::zeros([4]), Tensor::ones([4])]),
        run: Box::new(move |t| {
            let one = &t[1];
            let mut x = t[0].clone();
            for _ in 0..ops {
                x = &x + one;
            }
            x
        }),
        part: None,
        torch: Some("W8".into()),
        limit: Limit::None,
    });

    w
}

/// The MLP's inputs: `x`, the labels, then (weight, bias) per layer, initialised as PyTorch's
/// `nn.Linear` (uniform within ±1/√fan_in), realized and marked as requiring grad.
fn mlp_setup(dims: &[usize], batch: usize) -> Vec<Tensor> {
    let x = Tensor::randn([batch, dims[0]]);
    let labels = (Tensor::rand([batch]) * dims[dims.len() - 1] as f64)
        .floor()
        .cast(metajit::DType::I64);
    let mut t = vec![x, labels];
    for w in dims.windows(2) {
        let bound = 1.0 / (w[0] as f64).sqrt();
        t.push(Tensor::rand([w[0], w[1]]) * (2.0 * bound) - bound);
        t.push(Tensor::rand([w[1]]) * (2.0 * bound) - bound);
    }
    let refs: Vec<&Tensor> = t.iter().collect();
    if let Err(e) = metajit::realize_all(&refs) {
        panic!("making the MLP's inputs failed: {e}");
    }
    t.into_iter()
        .enumerate()
        .map(|(k, v)| {
            if k >= 2 {
                v.detach().requires_grad_(true)
            } else {
                v
            }
        })
        .collect()
}

/// One SGD step of the MLP in `t` (see [`mlp_setup`]); realizes the loss and every new
/// parameter together and returns the loss.
fn mlp_step(t: &[Tensor], lr: f64) -> Tensor {
    let (x, labels, params) = (&t[0], &t[1], &t[2..]);
    let mut h = x.clone();
    for (k, wb) in params.chunks(2).enumerate() {
        h = h.matmul(&wb[0]) + &wb[1];
        if 2 * (k + 1) < params.len() {
            h = h.relu();
        }
    }
    let logp = &h - h.logsumexp(1, true);
    let loss = -logp.gather(1, &labels.unsqueeze(1)).mean_all();
    loss.backward();
    metajit::no_grad(|| {
        for p in params {
            if let Some(g) = p.grad() {
                p.assign(&(p - &g * lr));
            }
            p.zero_grad();
        }
    });
    let mut all: Vec<&Tensor> = vec![&loss];
    all.extend(params.iter());
    if let Err(e) = metajit::realize_all(&all) {
        panic!("the MLP step failed: {e}");
    }
    loss
}

/// Resident memory (MiB) after 50 and after 1000 MLP steps in compiled mode: a training loop
/// must keep memory flat.
fn mlp_rss(quick: bool) -> Option<(f64, f64, usize)> {
    let (batch, hidden) = if quick { (32, 128) } else { (128, 512) };
    let t = mlp_setup(&[784, hidden, hidden, 10], batch);
    let steps = if quick { 200 } else { 1000 };
    let mut at50 = None;
    for k in 1..=steps {
        drop(mlp_step(&t, 1e-7));
        if k == 50 {
            at50 = proc_kib("/proc/self/status", "VmRSS:");
        }
    }
    Some((
        at50? / MIB,
        proc_kib("/proc/self/status", "VmRSS:")? / MIB,
        steps,
    ))
}

/// The LeNet-5 batch of W6 and W7: DESIGN §9's 64, or 8 for a smoke run.
fn lenet_batch(quick: bool) -> usize {
    if quick { 8 } else { 64 }
}

/// Conv and GEMM flops of one LeNet-5 training step at `batch`: forward, as much again for the
/// weight gradients, and as much for the input gradients of every layer but the first conv
/// (the images need none). Pooling, activations, the loss and the update are not counted.
fn lenet_flops(batch: usize) -> f64 {
    // Per image: conv 1→6 5x5 on 28x28 (24x24 out), conv 6→16 5x5 on 12x12 (8x8 out), the
    // three linear layers.
    let conv1 = 2.0 * (24 * 24 * 6 * 25) as f64;
    let conv2 = 2.0 * (8 * 8 * 16 * 6 * 25) as f64;
    let linear = 2.0 * (256 * 120 + 120 * 84 + 84 * 10) as f64;
    let forward = conv1 + conv2 + linear;
    batch as f64 * (3.0 * forward - conv1)
}

/// A fresh LeNet-5 (`nn::lenet5`, seeded by the caller), its SGD optimizer (momentum 0.9,
/// learning rate `lr`) and a random batch: images `[batch, 1, 28, 28]` and labels.
fn lenet_setup(batch: usize, lr: f64) -> (Tensor, Tensor, Sequential, Sgd) {
    let net = lenet5();
    let params = net.parameters();
    if let Err(e) = metajit::realize_all(&params.iter().collect::<Vec<_>>()) {
        panic!("initialising LeNet-5 failed: {e}");
    }
    let opt = Sgd::new(
        params,
        SgdConfig {
            lr,
            momentum: 0.9,
            ..Default::default()
        },
    );
    let x = Tensor::randn([batch, 1, 28, 28]);
    let y = (Tensor::rand([batch]) * 10.0)
        .floor()
        .cast(metajit::DType::I64);
    (x, y, net, opt)
}

/// One LeNet-5 training step, as `examples/train_mnist.rs` takes it; returns the loss.
fn lenet_step(net: &Sequential, opt: &mut Sgd, x: &Tensor, y: &Tensor) -> Tensor {
    opt.zero_grad();
    let loss = F::cross_entropy(&net.forward(x), y, &Default::default());
    loss.backward();
    opt.step();
    if let Err(e) = opt.realize_with(&[&loss]) {
        panic!("the LeNet-5 step failed: {e}");
    }
    loss
}

/// PyTorch eager on the workloads named `keys` (`benches/torch_workloads.py`, one process for
/// all), with the interpreter `METAJIT_TORCH_PYTHON` (default `python3`); per key, what it
/// gave. Never fails the bench: a missing interpreter or torch is [`Peer::Unavailable`],
/// anything else that goes wrong [`Peer::Failed`].
fn run_torch(keys: &[String], settings: &Settings) -> HashMap<String, Peer> {
    let all = |p: &dyn Fn() -> Peer| keys.iter().map(|k| (k.clone(), p())).collect();
    if keys.is_empty() {
        return HashMap::new();
    }
    let python = std::env::var("METAJIT_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    eprintln!("bench: torch on {} ({python}) ...", keys.join(","));
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("benches").join("torch_workloads.py"))
        .args([
            "--runs",
            &settings.runs.to_string(),
            "--only",
            &keys.join(","),
        ])
        .current_dir(root);
    if settings.quick {
        cmd.arg("--quick");
    }
    let limit = if settings.quick { 300 } else { 1800 };
    let out = match run_capped(&mut cmd, Duration::from_secs(limit)) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = format!("torch: not installed (no {python})");
            return all(&|| Peer::Unavailable(why.clone()));
        }
        Err(e) => {
            let why = format!("torch: running {python} failed: {e}");
            return all(&|| Peer::Failed(why.clone()));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.lines().any(|l| l.trim() == "torch: not installed") {
        return all(&|| Peer::Unavailable("torch: not installed".into()));
    }
    // "torch-info\t<torch 2.5.1, 2 threads>", then per workload
    // "torch\t<key>\t<median seconds>" or "torch-failed\t<key>\t<why>".
    let info = stdout
        .lines()
        .find_map(|l| l.strip_prefix("torch-info\t"))
        .map_or("torch".to_string(), |i| format!("torch ({})", i.trim()));
    let mut got: HashMap<String, Peer> = HashMap::new();
    for l in stdout.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        match f.as_slice() {
            ["torch", key, secs] => {
                let p = match secs.trim().parse::<f64>() {
                    Ok(s) if s > 0.0 && s.is_finite() => Peer::Ok {
                        name: info.clone(),
                        median_s: s,
                    },
                    _ => Peer::Failed(format!("torch: cannot read the line {l:?}")),
                };
                got.insert(key.to_string(), p);
            }
            ["torch-failed", key, why] => {
                got.insert(key.to_string(), Peer::Failed(format!("torch: {why}")));
            }
            _ => {}
        }
    }
    let missing = if out.status.success() {
        "torch: benches/torch_workloads.py printed no line for it".to_string()
    } else {
        format!(
            "torch: benches/torch_workloads.py failed ({}){}",
            out.status,
            last_words(&out)
        )
    };
    keys.iter()
        .map(|k| {
            let p = got
                .remove(k)
                .unwrap_or_else(|| Peer::Failed(missing.clone()));
            (k.clone(), p)
        })
        .collect()
}

/// `": "` and the last non-empty line a failed child wrote to stderr, or nothing.
fn last_words(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or(String::new(), |l| format!(": {}", l.trim()))
}

/// Runs `cmd` to its end, capturing its output; kills it after `limit` (an error of kind
/// `TimedOut`).
fn run_capped(cmd: &mut Command, limit: Duration) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no result after {} s; stopped it", limit.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// `2^k` when `n` is a power of two, else `n`.
fn pow2(n: usize) -> String {
    if n.is_power_of_two() {
        format!("2^{}", n.trailing_zeros())
    } else {
        n.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// W7: cold and warm start, in fresh processes

/// The name `METAJIT_BENCH_FILTER` matches to select W7.
const W7_NAME: &str = "W7 compile latency cold/warm start";

/// What the `cold_start` example runs for W7, in this order: the LeNet-5 step first, so that
/// it compiles everything it needs (no kernel of W1 is shared with it).
const W7_ONLY: &str = "lenet,w1";

/// W7: per mode, the first calls the `cold_start` example timed in a cold and a warm process.
struct ColdStart {
    /// The example binary that ran.
    exe: PathBuf,
    /// Why its numbers may be out of date (a source is newer than the binary).
    stale: Option<String>,
    modes: Vec<(RunMode, Result<ColdRun, String>)>,
}

/// One mode's `cold_start` run.
struct ColdRun {
    lines: Vec<ColdLine>,
    /// The wall times of the cold and of the warm process, seconds, per repetition.
    process_s: Vec<(f64, f64)>,
}

/// One first call, cold and warm (the example's `result` lines), per repetition.
struct ColdLine {
    name: String,
    /// Seconds of the cold first call, one per repetition.
    cold_s: Vec<f64>,
    /// Seconds of the warm first call, one per repetition.
    warm_s: Vec<f64>,
    /// The fastest later call of any process.
    steady_s: f64,
    /// Kernels compiled during the cold first call.
    compiled_cold: u64,
    /// Kernels loaded from the disk cache during the warm first call.
    disk_hits_warm: u64,
    /// Kernels compiled during the warm first call (0 when the cache served them all).
    compiled_warm: u64,
}

/// The built `cold_start` example: `target/<profile>/examples/cold_start`, next to this
/// binary's `deps` folder.
fn cold_start_exe() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot locate this binary: {e}"))?;
    let dir = me.parent().ok_or("cannot locate this binary's folder")?;
    let profile = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let exe = profile
        .join("examples")
        .join(format!("cold_start{}", std::env::consts::EXE_SUFFIX));
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "not built: {} is missing (build it with `cargo build --release --example cold_start`)",
            exe.display()
        ))
    }
}

/// The newest modification time of the files under `path` (recursively) that `keep` accepts.
fn newest(path: &Path, keep: &dyn Fn(&Path) -> bool) -> Option<(SystemTime, PathBuf)> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        if !keep(path) {
            return None;
        }
        return meta.modified().ok().map(|t| (t, path.to_path_buf()));
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| newest(&e.path(), keep))
        .max_by_key(|(t, _)| *t)
}

/// Why `exe` may not run the current code: the newest source of the library or the example
/// that is newer than it, if any.
fn stale_note(exe: &Path) -> Option<String> {
    let built = std::fs::metadata(exe).ok()?.modified().ok()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rust = |p: &Path| p.extension().is_some_and(|e| e == "rs" || e == "toml");
    let (t, path) = [
        "src",
        "metaops/src",
        "codegen/src",
        "cache/src",
        "examples/cold_start.rs",
        "Cargo.toml",
        "Cargo.lock",
    ]
    .iter()
    .filter_map(|p| newest(&root.join(p), &|f| rust(f) || f.ends_with("Cargo.lock")))
    .max_by_key(|(t, _)| *t)?;
    (t > built).then(|| {
        format!(
            "{} is older than {}: rebuild it with `cargo build --release --example cold_start`",
            exe.display(),
            path.strip_prefix(root).unwrap_or(&path).display()
        )
    })
}

/// W7: the `cold_start` example `repeats` times per mode (compiled, eager), on the LeNet-5
/// step at `batch` and W1; `Err` when the example is not built. A first call is one sample per
/// process, so on a busy machine a single pair can come out upside down: the table shows the
/// median of the repetitions.
fn cold_start(batch: usize, repeats: usize) -> Result<ColdStart, String> {
    let exe = cold_start_exe()?;
    let stale = stale_note(&exe);
    let modes = [RunMode::Compiled, RunMode::Eager]
        .into_iter()
        .map(|m| {
            eprintln!("bench: {W7_NAME} [{}] x{repeats} ...", m.name());
            let runs = (0..repeats).map(|_| {
                let mut cmd = Command::new(&exe);
                cmd.args(["--tsv", "--only", W7_ONLY, "--batch", &batch.to_string()])
                    .env("METAJIT_MODE", m.name())
                    .env_remove("METAJIT_COLD_START_CHILD");
                cold_run(&mut cmd)
            });
            let merged = runs.reduce(|a, b| {
                let (mut a, b) = (a?, b?);
                for l in b.lines {
                    match a.lines.iter_mut().find(|k| k.name == l.name) {
                        Some(k) => {
                            k.cold_s.extend(l.cold_s);
                            k.warm_s.extend(l.warm_s);
                            k.steady_s = k.steady_s.min(l.steady_s);
                        }
                        None => a.lines.push(l),
                    }
                }
                a.process_s.extend(b.process_s);
                Ok(a)
            });
            (m, merged.unwrap_or_else(|| Err("not run".into())))
        })
        .collect();
    Ok(ColdStart { exe, stale, modes })
}

/// Runs the example (its two child processes take a fresh cache dir of their own) and reads
/// its `result` and `process` lines.
fn cold_run(cmd: &mut Command) -> Result<ColdRun, String> {
    let out = run_capped(cmd, Duration::from_secs(600)).map_err(|e| format!("failed: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("failed ({}){}", out.status, last_words(&out)));
    }
    let mut run = ColdRun {
        lines: Vec::new(),
        process_s: Vec::new(),
    };
    let secs = |v: &str| v.parse::<f64>().map(|ns| ns / 1e9).ok();
    for l in stdout.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        match f.as_slice() {
            ["result", name, cold, warm, steady, cc, dh, cw] => {
                let count = |v: &str| v.parse::<u64>().ok();
                let line = (|| {
                    Some(ColdLine {
                        name: name.to_string(),
                        cold_s: vec![secs(cold)?],
                        warm_s: vec![secs(warm)?],
                        steady_s: secs(steady)?,
                        compiled_cold: count(cc)?,
                        disk_hits_warm: count(dh)?,
                        compiled_warm: count(cw)?,
                    })
                })();
                run.lines
                    .push(line.ok_or_else(|| format!("cannot read the line {l:?}"))?);
            }
            ["process", cold, warm] => run.process_s.extend(secs(cold).zip(secs(warm))),
            _ => {}
        }
    }
    if run.lines.is_empty() {
        return Err(format!(
            "no result lines in the example's output {:?}",
            first_line(&stdout, 100)
        ));
    }
    Ok(run)
}

/// The distinct first-call names of `c`, in the order the example printed them.
fn cold_names(c: &ColdStart) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (_, r) in &c.modes {
        for l in r.iter().flat_map(|r| &r.lines) {
            if !names.contains(&l.name) {
                names.push(l.name.clone());
            }
        }
    }
    names
}

/// Mode `m`'s line `name` of `c`, or why there is none.
fn cold_line<'a>(c: &'a ColdStart, m: RunMode, name: &str) -> Result<&'a ColdLine, String> {
    match c.modes.iter().find(|(mm, _)| *mm == m) {
        Some((_, Ok(r))) => r
            .lines
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| "no such line".to_string()),
        Some((_, Err(e))) => Err(e.clone()),
        None => Err("not run".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

#[derive(Clone, Copy, PartialEq, Eq)]
enum RunMode {
    Compiled,
    Eager,
    Reference,
}

const MODES: [RunMode; 3] = [RunMode::Compiled, RunMode::Eager, RunMode::Reference];

impl RunMode {
    fn name(self) -> &'static str {
        match self {
            RunMode::Compiled => "compiled",
            RunMode::Eager => "eager",
            RunMode::Reference => "reference",
        }
    }
}

/// The mode and device the process started with (from `METAJIT_*`), restored after each run.
#[derive(Clone, Copy)]
struct Base {
    device: Device,
}

impl Base {
    fn apply(self, m: RunMode) {
        match m {
            RunMode::Compiled => {
                metajit::set_mode(Mode::Compiled);
                metajit::set_device(self.device);
            }
            RunMode::Eager => {
                metajit::set_mode(Mode::Eager);
                metajit::set_device(self.device);
            }
            RunMode::Reference => {
                metajit::set_mode(Mode::Compiled);
                metajit::set_device(Device::Reference);
            }
        }
    }
}

struct Cold {
    seconds: f64,
    kernels_compiled: u64,
    compile_ns: u64,
    kernel_runs: u64,
    plan_misses: u64,
}

struct Check {
    max_abs_diff: f64,
    scale: f64,
    tolerance: f64,
}

impl Check {
    fn ok(&self) -> bool {
        self.max_abs_diff <= self.tolerance
    }
}

struct Measurement {
    samples: Vec<f64>,
    kernel_runs: Vec<u64>,
    plan_misses: Vec<u64>,
    cold: Cold,
    check: Option<Check>,
    /// The process's peak resident set during this mode's runs (Linux), bytes.
    peak_rss: Option<f64>,
    /// The median seconds of the workload's [`Part`] alone, in this mode.
    part: Option<f64>,
}

enum Outcome {
    Ok(Measurement),
    Skipped(String),
    Failed(String),
}

struct Row {
    mode: RunMode,
    outcome: Outcome,
}

/// A workload with its rows (one per mode) and its peer's run.
struct Ran {
    w: Workload,
    rows: Vec<Row>,
    peer: Option<Peer>,
}

impl Ran {
    /// The median seconds of mode `m`, when it ran.
    fn median_of(&self, m: RunMode) -> Option<f64> {
        self.rows
            .iter()
            .find_map(|r| match (&r.outcome, r.mode == m) {
                (Outcome::Ok(x), true) => Some(median(&x.samples)),
                _ => None,
            })
    }

    /// The median of mode `m` over the peer's, when both ran.
    fn over_peer(&self, m: RunMode) -> Option<f64> {
        match &self.peer {
            Some(Peer::Ok { median_s, .. }) => self.median_of(m).map(|t| t / median_s),
            _ => None,
        }
    }
}

fn delta(a: &Stats, b: &Stats) -> Stats {
    b.since(a)
}

/// One run: record the graph, realize the output; returns the output and the seconds taken.
fn timed(w: &Workload, inputs: &[Tensor]) -> Result<(Tensor, f64), String> {
    let t0 = Instant::now();
    let out = (w.run)(inputs);
    out.realize().map_err(|e| e.to_string())?;
    // A realize on a device returns once its work is enqueued: the clock waits for it.
    metajit::synchronize().map_err(|e| e.to_string())?;
    let dt = t0.elapsed().as_secs_f64();
    Ok((out, dt))
}

fn measure(
    w: &Workload,
    inputs: &[Tensor],
    settings: &Settings,
    expected: Option<&[f32]>,
    with_part: bool,
) -> Result<(Measurement, Vec<f32>), String> {
    // Cold: the first run compiles; further warm-ups are not timed.
    let s0 = metajit::stats();
    let (out, seconds) = timed(w, inputs)?;
    let d = delta(&s0, &metajit::stats());
    let cold = Cold {
        seconds,
        kernels_compiled: d.kernels_compiled,
        compile_ns: d.compile_ns,
        kernel_runs: d.kernel_runs,
        plan_misses: d.plan_misses,
    };
    let values = out.to_vec::<f32>().map_err(|e| e.to_string())?;
    drop(out);
    let check = expected.map(|e| compare(&values, e, w));
    // Warm: a training loop's steady state is what matters (buffer pool, page mapping,
    // thread pool), and the peers get the same warm-up (`benches/timing.py`).
    let warm_start = Instant::now();
    let mut done = 1;
    while done < settings.warmups || warm_start.elapsed().as_secs_f64() < settings.warmup_seconds {
        drop(timed(w, inputs)?);
        done += 1;
    }

    let mut samples = Vec::with_capacity(settings.runs);
    let mut kernel_runs = Vec::with_capacity(settings.runs);
    let mut plan_misses = Vec::with_capacity(settings.runs);
    let mut total = 0.0;
    while samples.len() < settings.runs || (total < settings.min_seconds && samples.len() < 1000) {
        let s0 = metajit::stats();
        let (out, dt) = timed(w, inputs)?;
        let d = delta(&s0, &metajit::stats());
        drop(out);
        total += dt;
        samples.push(dt);
        kernel_runs.push(d.kernel_runs);
        plan_misses.push(d.plan_misses);
    }
    let part = match &w.part {
        Some(p) if with_part => Some(time_part(p, settings)?),
        _ => None,
    };
    Ok((
        Measurement {
            samples,
            kernel_runs,
            plan_misses,
            cold,
            check,
            peak_rss: None,
            part,
        },
        values,
    ))
}

/// The median seconds of `p` alone: its inputs made and realized, one untimed cold run, then
/// the timed runs.
fn time_part(p: &Part, settings: &Settings) -> Result<f64, String> {
    let inputs = (p.setup)();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    metajit::realize_all(&refs).map_err(|e| format!("{}: {e}", p.name))?;
    let once = || -> Result<f64, String> {
        let t0 = Instant::now();
        let out = (p.run)(&inputs);
        out.realize().map_err(|e| format!("{}: {e}", p.name))?;
        metajit::synchronize().map_err(|e| format!("{}: {e}", p.name))?;
        Ok(t0.elapsed().as_secs_f64())
    };
    once()?;
    let samples = (0..settings.runs)
        .map(|_| once())
        .collect::<Result<Vec<f64>, String>>()?;
    Ok(median(&samples))
}

/// The largest difference from the compiled mode's output, against a tolerance relative to the
/// output's magnitude (looser for long reductions, whose summation order differs by mode).
fn compare(got: &[f32], want: &[f32], w: &Workload) -> Check {
    let scale = want
        .iter()
        .fold(0f64, |m, v| m.max(f64::from(v.abs())))
        .max(1.0);
    let mut max_abs_diff = if got.len() == want.len() {
        0.0
    } else {
        f64::INFINITY
    };
    for (a, b) in got.iter().zip(want) {
        let d = if a.is_nan() && b.is_nan() {
            0.0
        } else {
            f64::from((a - b).abs())
        };
        max_abs_diff = if d.is_nan() {
            f64::INFINITY
        } else {
            max_abs_diff.max(d)
        };
    }
    let reduced = (w.work / got.len().max(1) as f64).max(1.0);
    let tolerance = scale * 1e-5 * reduced.sqrt().max(1.0) * 4.0;
    Check {
        max_abs_diff,
        scale,
        tolerance,
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

fn run_workload(w: &Workload, base: Base, settings: &Settings) -> Vec<Row> {
    base.apply(RunMode::Compiled);
    metajit::manual_seed(0x5eed);
    let setup = catch_unwind(AssertUnwindSafe(|| -> Result<Vec<Tensor>, String> {
        let inputs = (w.setup)();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        metajit::realize_all(&refs).map_err(|e| e.to_string())?;
        Ok(inputs)
    }));
    let inputs = match setup {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => return failed_all(format!("making the inputs failed: {e}")),
        Err(p) => return failed_all(format!("making the inputs panicked: {}", panic_text(p))),
    };

    let mut rows = Vec::new();
    let mut expected: Option<Vec<f32>> = None;
    for m in MODES {
        if m == RunMode::Reference && w.work > REFERENCE_WORK_LIMIT && !settings.reference_all {
            rows.push(Row {
                mode: m,
                outcome: Outcome::Skipped("skipped (too slow)".into()),
            });
            continue;
        }
        if m == RunMode::Eager
            && let Some(need) = w.eager_bytes
            && let Some(avail) = mem_available()
            && need > 0.8 * avail
        {
            rows.push(Row {
                mode: m,
                outcome: Outcome::Skipped(format!(
                    "skipped (eager needs ~{:.1} GiB, {:.1} GiB available)",
                    need / GIB,
                    avail / GIB
                )),
            });
            continue;
        }
        eprintln!("bench: {} [{}] ...", w.name, m.name());
        reset_peak_rss();
        base.apply(m);
        let r = catch_unwind(AssertUnwindSafe(|| {
            measure(
                w,
                &inputs,
                settings,
                expected.as_deref(),
                m != RunMode::Reference,
            )
        }));
        base.apply(RunMode::Compiled);
        let outcome = match r {
            Ok(Ok((mut meas, values))) => {
                meas.peak_rss = peak_rss();
                if m == RunMode::Compiled {
                    expected = Some(values);
                }
                Outcome::Ok(meas)
            }
            Ok(Err(e)) => Outcome::Failed(format!("failed: {e}")),
            Err(p) => Outcome::Failed(format!("failed (panic): {}", panic_text(p))),
        };
        if let Outcome::Ok(meas) = &outcome {
            eprintln!(
                "bench: {} [{}] median {}",
                w.name,
                m.name(),
                fmt_time(median(&meas.samples))
            );
        }
        rows.push(Row { mode: m, outcome });
    }
    rows
}

fn failed_all(reason: String) -> Vec<Row> {
    MODES
        .iter()
        .map(|&mode| Row {
            mode,
            outcome: Outcome::Failed(reason.clone()),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The `q`-quantile by linear interpolation between order statistics.
fn quantile(xs: &[f64], q: f64) -> f64 {
    let v = sorted(xs);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn median(xs: &[f64]) -> f64 {
    quantile(xs, 0.5)
}

fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn fmt_time(s: f64) -> String {
    if !s.is_finite() {
        "-".into()
    } else if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.2} us", s * 1e6)
    }
}

/// A min–max range in one unit (the larger value's).
fn fmt_range(lo: f64, hi: f64) -> String {
    let (div, unit) = if hi >= 1.0 {
        (1.0, "s")
    } else if hi >= 1e-3 {
        (1e-3, "ms")
    } else {
        (1e-6, "us")
    };
    format!("{:.3}–{:.3} {unit}", lo / div, hi / div)
}

fn fmt_count(xs: &[u64]) -> String {
    let lo = xs.iter().min().copied().unwrap_or(0);
    let hi = xs.iter().max().copied().unwrap_or(0);
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}–{hi}")
    }
}

// ---------------------------------------------------------------------------------------------
// The table

fn print_table(results: &[Ran], settings: &Settings, limits: &Limits) {
    let header = [
        "workload",
        "mode",
        "median",
        "spread (min–max)",
        "throughput",
        "of limit",
        "compiled/eager",
        "kernels/run",
        "compile/kernel (cold)",
        "vs torch",
    ];
    let mut lines: Vec<[String; 10]> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for ran in results {
        let (w, rows) = (&ran.w, &ran.rows);
        let med = |m: RunMode| ran.median_of(m);
        match &ran.peer {
            Some(Peer::Ok { name, median_s }) => {
                notes.push(format!("{}: {name} median {}", w.name, fmt_time(*median_s)))
            }
            Some(Peer::Failed(why)) => notes.push(format!("{}: {why}", w.name)),
            Some(Peer::Unavailable(_)) | None => {}
        }
        for r in rows {
            let mut cells: [String; 10] = Default::default();
            cells[0] = w.name.clone();
            cells[1] = r.mode.name().into();
            match &r.outcome {
                Outcome::Ok(x) => {
                    let md = median(&x.samples);
                    cells[2] = fmt_time(md);
                    cells[3] = fmt_range(min(&x.samples), max(&x.samples));
                    let tp = w.metric.throughput(md);
                    cells[4] = format!("{tp:.2} {}", w.metric.unit());
                    if r.mode != RunMode::Reference {
                        cells[5] = limits.share(w.limit, w.metric, md);
                    }
                    cells[6] = match (r.mode, med(RunMode::Compiled), med(RunMode::Eager)) {
                        (RunMode::Compiled, Some(c), Some(e)) => format!("{:.3}x", c / e),
                        _ => String::new(),
                    };
                    cells[7] = if r.mode == RunMode::Reference {
                        "- (interp)".into()
                    } else {
                        fmt_count(&x.kernel_runs)
                    };
                    cells[8] = if r.mode == RunMode::Reference {
                        "-".into()
                    } else if x.cold.kernels_compiled == 0 {
                        "none new".into()
                    } else {
                        format!(
                            "{} x{}",
                            fmt_time(
                                x.cold.compile_ns as f64 / 1e9 / x.cold.kernels_compiled as f64
                            ),
                            x.cold.kernels_compiled
                        )
                    };
                    if let Some(c) = &x.check
                        && !c.ok()
                    {
                        notes.push(format!(
                            "warning: {} [{}] differs from compiled mode: max |diff| {:.3e} > \
                             tolerance {:.3e} (output magnitude {:.3e})",
                            w.name,
                            r.mode.name(),
                            c.max_abs_diff,
                            c.tolerance,
                            c.scale
                        ));
                        cells[2].push_str(" (!)");
                    }
                    if let (Some(p), Some(name)) = (x.part, w.part.as_ref().map(|p| &p.name)) {
                        notes.push(format!(
                            "{} [{}]: {name} alone takes {}, {:.0}% of the median",
                            w.name,
                            r.mode.name(),
                            fmt_time(p),
                            100.0 * p / md
                        ));
                    }
                    cells[9] = match (&ran.peer, ran.over_peer(r.mode)) {
                        (_, Some(q)) if r.mode != RunMode::Reference => format!("{q:.2}x"),
                        (Some(Peer::Unavailable(why)), _) if r.mode == RunMode::Compiled => {
                            why.clone()
                        }
                        (Some(Peer::Failed(_)), _) if r.mode == RunMode::Compiled => {
                            "torch: failed".into()
                        }
                        _ => String::new(),
                    };
                    if x.plan_misses.iter().any(|&p| p > 0) {
                        notes.push(format!(
                            "note: {} [{}] scheduled again in a timed run (plan misses {})",
                            w.name,
                            r.mode.name(),
                            fmt_count(&x.plan_misses)
                        ));
                    }
                }
                Outcome::Skipped(why) => cells[2] = why.clone(),
                Outcome::Failed(why) => {
                    cells[2] = first_line(why, 100);
                    if cells[2] != *why {
                        notes.push(format!("{} [{}] {why}", w.name, r.mode.name()));
                    }
                }
            }
            lines.push(cells);
        }
    }
    let mut width = header.map(|h| h.chars().count());
    for l in &lines {
        for (i, c) in l.iter().enumerate() {
            // A long message in the median column spans the columns after it.
            if i == 2 && l[3].is_empty() {
                continue;
            }
            width[i] = width[i].max(c.chars().count());
        }
    }
    let pad = |s: &str, n: usize| format!("{s}{}", " ".repeat(n.saturating_sub(s.chars().count())));
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&pad(c, width[i]));
        }
        s.trim_end().to_string()
    };
    println!();
    println!(
        "metajit workloads: at least {} timed run(s) and {} s, after at least {} warm-up run(s) \
         and {} s, per mode{}",
        settings.runs,
        settings.min_seconds,
        settings.warmups,
        settings.warmup_seconds,
        if settings.quick {
            " (QUICK: data sizes ÷ 16, small conv and LeNet batches)"
        } else {
            ""
        }
    );
    let hs: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    println!("{}", line(&hs));
    println!(
        "{}",
        width
            .iter()
            .map(|&n| "-".repeat(n))
            .collect::<Vec<_>>()
            .join("  ")
    );
    let mut last = String::new();
    for l in &lines {
        if !last.is_empty() && l[0] != last {
            println!();
        }
        last = l[0].clone();
        println!("{}", line(l));
    }
    println!();
    println!(
        "compiled/eager: median time ratio (below 1: compiled is faster). kernels/run: kernel \
         launches per timed run. compile/kernel: compile time per kernel compiled in the cold run \
         (x count; \"none new\": every kernel was already compiled). The reference interpreter runs \
         whole graphs, not kernels. of limit: the throughput's share of the machine limit above \
         (copy or read bandwidth, the gemm crate called directly, the FMA peak of all cores). \
         vs torch: median time over PyTorch eager's on the same workload \
         (benches/torch_workloads.py; below 1: metajit is faster)."
    );
    for n in notes {
        println!("{n}");
    }
}

/// Prints `rows` (the first is the header) in left-aligned columns.
fn print_columns(rows: &[Vec<String>]) {
    let mut width: Vec<usize> = Vec::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            let n = c.chars().count();
            match width.get_mut(i) {
                Some(w) => *w = (*w).max(n),
                None => width.push(n),
            }
        }
    }
    for (k, r) in rows.iter().enumerate() {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let _ = write!(s, "{c:<w$}", w = width[i]);
        }
        println!("{}", s.trim_end());
        if k == 0 {
            let rule: Vec<String> = width.iter().map(|&n| "-".repeat(n)).collect();
            println!("{}", rule.join("  "));
        }
    }
}

/// The W7 table: per first call and mode, cold and warm times and kernel counts.
fn print_cold_start(c: &Result<ColdStart, String>) {
    println!();
    let c = match c {
        Ok(c) => c,
        Err(why) => {
            println!("{W7_NAME}: {why}");
            return;
        }
    };
    let repeats = c
        .modes
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|r| r.process_s.len())
        .max()
        .unwrap_or(0);
    println!(
        "W7: the first call in a fresh process with an empty kernel cache (cold), then in a \
         second one on the cache the first left (warm), median of {repeats} such pair(s); {} \
         (`--only {W7_ONLY}`)",
        c.exe.display()
    );
    let mut rows = vec![
        [
            "first call of",
            "mode",
            "cold",
            "warm",
            "cold/warm",
            "steady",
            "compiled (cold)",
            "from disk (warm)",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for name in cold_names(c) {
        for m in [RunMode::Compiled, RunMode::Eager] {
            let mut r = vec![name.clone(), m.name().to_string()];
            match cold_line(c, m, &name) {
                Ok(l) => r.extend([
                    fmt_time(median(&l.cold_s)),
                    fmt_time(median(&l.warm_s)),
                    format!("{:.2}x", median(&l.cold_s) / median(&l.warm_s)),
                    fmt_time(l.steady_s),
                    l.compiled_cold.to_string(),
                    if l.compiled_warm > 0 {
                        format!("{} (+{} compiled)", l.disk_hits_warm, l.compiled_warm)
                    } else {
                        l.disk_hits_warm.to_string()
                    },
                ]),
                Err(why) => r.push(first_line(&why, 100)),
            }
            rows.push(r);
        }
    }
    if rows.len() == 1 {
        for (m, r) in &c.modes {
            if let Err(why) = r {
                rows.push(vec![W7_NAME.into(), m.name().into(), first_line(why, 100)]);
            }
        }
    }
    print_columns(&rows);
    println!(
        "cold/warm: the cold first call's time over the warm one's. steady: the fastest later call. \
         compiled (cold): kernels compiled during the cold first call; from disk (warm): kernels \
         the warm first call loaded from the disk cache."
    );
    if let Some(why) = &c.stale {
        println!("note: {why}");
    }
}

// ---------------------------------------------------------------------------------------------
// Machine limits, measured in the same run as the workloads

/// Which measured limit a workload's throughput is a share of.
#[derive(Clone, Copy)]
enum Limit {
    /// Streams that read one buffer and write another (W1, W2): the copy bandwidth.
    Copy,
    /// Streams that only read (W3): the read bandwidth.
    Read,
    /// A GEMM of this `n`×`n` (W4): the direct `gemm` crate call on the shape, and the FMA peak.
    Gemm(usize),
    /// GEMM-bound work of other shapes (W5): the FMA peak of all cores.
    Fma,
    /// No meaningful limit (dispatch, small training steps).
    None,
}

/// Bandwidth and compute limits of this machine, measured by plain loops.
struct Limits {
    /// The buffer each bandwidth loop streams over, bytes.
    buffer_bytes: usize,
    /// Threads of the parallel loops (rayon's pool).
    threads: usize,
    /// GB/s of a copy (bytes read + bytes written), all cores and one core.
    copy_all: f64,
    copy_one: f64,
    /// GB/s of a read (sum) loop, all cores and one core.
    read_all: f64,
    read_one: f64,
    /// One core's FMA peak, GFLOP/s (2 flops per lane per FMA), and how it was measured; or
    /// why not.
    fma_one: Result<(f64, String), String>,
    /// The `gemm` crate called directly on W4's shapes: `(n, GFLOP/s)`.
    gemm: Vec<(usize, f64)>,
}

impl Limits {
    /// The FMA peak of all cores (one core's times the threads), GFLOP/s.
    fn fma_all(&self) -> Option<f64> {
        self.fma_one
            .as_ref()
            .ok()
            .map(|(g, _)| g * self.threads as f64)
    }

    fn gemm_at(&self, n: usize) -> Option<f64> {
        self.gemm.iter().find(|(m, _)| *m == n).map(|(_, g)| *g)
    }

    /// `throughput`'s share of `limit`, as table text (`62% of copy`), or nothing.
    fn share(&self, limit: Limit, metric: Metric, seconds: f64) -> String {
        let tp = metric.throughput(seconds);
        let pct = |of: f64| 100.0 * tp / of;
        match limit {
            Limit::Copy => format!("{:.0}% copy", pct(self.copy_all)),
            Limit::Read => format!("{:.0}% read", pct(self.read_all)),
            Limit::Gemm(n) => {
                let mut s = self
                    .gemm_at(n)
                    .map_or(String::new(), |g| format!("{:.0}% gemm", pct(g)));
                if let Some(f) = self.fma_all() {
                    if !s.is_empty() {
                        s.push_str(", ");
                    }
                    let _ = write!(s, "{:.0}% FMA", pct(f));
                }
                s
            }
            Limit::Fma => self
                .fma_all()
                .map_or(String::new(), |f| format!("{:.0}% FMA", pct(f))),
            Limit::None => String::new(),
        }
    }

    /// The share as a fraction for the JSON: (of what, fraction) pairs.
    fn shares(&self, limit: Limit, metric: Metric, seconds: f64) -> Vec<(&'static str, f64)> {
        let tp = metric.throughput(seconds);
        let mut v = Vec::new();
        match limit {
            Limit::Copy => v.push(("copy_all_cores", tp / self.copy_all)),
            Limit::Read => v.push(("read_all_cores", tp / self.read_all)),
            Limit::Gemm(n) => {
                if let Some(g) = self.gemm_at(n) {
                    v.push(("gemm_crate", tp / g));
                }
                if let Some(f) = self.fma_all() {
                    v.push(("fma_peak_all_cores", tp / f));
                }
            }
            Limit::Fma => {
                if let Some(f) = self.fma_all() {
                    v.push(("fma_peak_all_cores", tp / f));
                }
            }
            Limit::None => {}
        }
        v
    }
}

/// Measures the limits: bandwidth over a 256 MiB buffer (16 MiB when quick), one core's FMA
/// peak, and the `gemm` crate on each `n` of `gemm_sizes`. Each figure is the median of
/// `runs` timed repetitions after one untimed one.
fn measure_limits(quick: bool, runs: usize, gemm_sizes: &[usize]) -> Limits {
    eprintln!("bench: machine limits ...");
    let bytes = if quick { 16 << 20 } else { 256 << 20 };
    let len = bytes / 4;
    // Touch every page before timing (a fresh buffer's page faults are not bandwidth).
    let src: Vec<f32> = (0..len).map(|i| (i % 1024) as f32 * 1e-3).collect();
    let mut dst = vec![0f32; len];
    let time = |f: &mut dyn FnMut()| {
        f();
        let samples: Vec<f64> = (0..runs.max(11))
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64()
            })
            .collect();
        median(&samples)
    };
    // One contiguous part per thread (interleaved small chunks defeat the prefetchers).
    let threads = rayon::current_num_threads();
    let part = len.div_ceil(threads);
    let copy_all = 2.0 * bytes as f64
        / time(&mut || {
            dst.par_chunks_mut(part)
                .zip(src.par_chunks(part))
                .for_each(|(d, s)| d.copy_from_slice(s));
        })
        / 1e9;
    let copy_one = 2.0 * bytes as f64 / time(&mut || dst.copy_from_slice(&src)) / 1e9;
    std::hint::black_box(&dst);
    drop(dst);
    let read_all = bytes as f64
        / time(&mut || {
            let s: f32 = src.par_chunks(part).map(sum_f32).sum();
            std::hint::black_box(s);
        })
        / 1e9;
    let read_one = bytes as f64
        / time(&mut || {
            std::hint::black_box(sum_f32(&src));
        })
        / 1e9;
    drop(src);
    let fma_one = fma_peak(if quick { 1 << 22 } else { 1 << 25 }, runs);
    let gemm = gemm_sizes
        .iter()
        .map(|&n| (n, gemm_direct(n, runs, threads)))
        .collect();
    Limits {
        buffer_bytes: bytes,
        threads,
        copy_all,
        copy_one,
        read_all,
        read_one,
        fma_one,
        gemm,
    }
}

/// A plain sum with 32 independent accumulators (the compiler vectorises it; one accumulator
/// would be bound by the add latency, not by memory), built for AVX2 when the CPU has it (128-bit
/// loads alone fall short of the memory's read rate on one core).
fn sum_f32(x: &[f32]) -> f32 {
    #[inline(always)]
    fn body(x: &[f32]) -> f32 {
        let mut acc = [0f32; 32];
        let chunks = x.chunks_exact(32);
        let tail: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        acc.iter().sum::<f32>() + tail
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn body_avx2(x: &[f32]) -> f32 {
        body(x)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { body_avx2(x) };
    }
    body(x)
}

/// One core's FMA peak, GFLOP/s: `iters` rounds of 12 independent vector FMAs (enough to cover
/// the FMA latency on two pipes), on the widest vectors the CPU has (512-bit with AVX-512F,
/// else 256-bit with AVX2 + FMA); the median of `runs`.
fn fma_peak(iters: usize, runs: usize) -> Result<(f64, String), String> {
    #[cfg(target_arch = "x86_64")]
    {
        let (lanes, what, f): (usize, &str, fn(usize) -> f32) =
            if std::arch::is_x86_feature_detected!("avx512f") {
                (16, "f32x16 (AVX-512F)", |n| {
                    // SAFETY: the CPU has AVX-512F (checked above).
                    unsafe { fma_loop_512(n) }
                })
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                (8, "f32x8 (AVX2 + FMA)", |n| {
                    // SAFETY: the CPU has AVX and FMA (checked above).
                    unsafe { fma_loop_256(n) }
                })
            } else {
                return Err("no FMA vector unit detected (needs AVX2 + FMA)".into());
            };
        let rate = |lanes: usize, f: fn(usize) -> f32| {
            f(iters / 16);
            let samples: Vec<f64> = (0..runs)
                .map(|_| {
                    let t0 = Instant::now();
                    std::hint::black_box(f(std::hint::black_box(iters)));
                    t0.elapsed().as_secs_f64()
                })
                .collect();
            (iters * FMA_CHAINS * lanes * 2) as f64 / median(&samples) / 1e9
        };
        let mut how = format!("{FMA_CHAINS} independent {what} FMA chains");
        // With AVX-512, the 256-bit rate too (what AVX2 code, the gemm crate's included on
        // some shapes, can reach).
        if lanes == 16 && std::arch::is_x86_feature_detected!("fma") {
            let r = rate(8, |n| {
                // SAFETY: the CPU has AVX-512F (so AVX2) and FMA (checked above).
                unsafe { fma_loop_256(n) }
            });
            let _ = write!(how, "; f32x8: {r:.1}");
        }
        Ok((rate(lanes, f), how))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (iters, runs);
        Err("not measured on this architecture (x86-64 only)".into())
    }
}

/// Independent FMA chains in [`fma_peak`]'s loops.
const FMA_CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop_256(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    // Opaque values, distinct per chain: the compiler can neither fold the loop nor merge
    // the chains.
    let b = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let c = _mm256_set1_ps(std::hint::black_box(1e-6));
    let mut acc: [_; FMA_CHAINS] =
        std::array::from_fn(|i| _mm256_set1_ps(std::hint::black_box(1.0 + i as f32 * 1e-3)));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, b, c);
        }
    }
    let mut out = [0f32; 8];
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    // SAFETY: `out` holds 8 f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_loop_512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    // Opaque values, distinct per chain: the compiler can neither fold the loop nor merge
    // the chains.
    let b = _mm512_set1_ps(std::hint::black_box(0.999_999));
    let c = _mm512_set1_ps(std::hint::black_box(1e-6));
    let mut acc: [_; FMA_CHAINS] =
        std::array::from_fn(|i| _mm512_set1_ps(std::hint::black_box(1.0 + i as f32 * 1e-3)));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, b, c);
        }
    }
    let mut s = _mm512_setzero_ps();
    for a in acc {
        s = _mm512_add_ps(s, a);
    }
    _mm512_reduce_add_ps(s)
}

/// GFLOP/s of the `gemm` crate called directly on an `n`×`n` @ `n`×`n` row-major f32 product
/// with `threads` threads (what metajit's W4 calls underneath, without the framework); the
/// median of `runs` after one untimed call.
fn gemm_direct(n: usize, runs: usize, threads: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
    let mut c = vec![0f32; n * n];
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let mut once = || {
        let t0 = Instant::now();
        let ni = n as isize;
        // SAFETY: a, b and c are n×n row-major (column stride 1, row stride n), distinct.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                ni,
                false,
                a.as_ptr(),
                1,
                ni,
                b.as_ptr(),
                1,
                ni,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                par,
            )
        };
        t0.elapsed().as_secs_f64()
    };
    once();
    let samples: Vec<f64> = (0..runs).map(|_| once()).collect();
    std::hint::black_box(&c);
    2.0 * (n as f64).powi(3) / median(&samples) / 1e9
}

/// Prints the limits (before the table).
fn print_limits(l: &Limits) {
    println!();
    println!(
        "machine limits (this run; {} MiB buffers, {} threads on all cores):",
        l.buffer_bytes >> 20,
        l.threads
    );
    println!(
        "  copy  {:6.1} GB/s all cores, {:6.1} GB/s one core (bytes read + written)",
        l.copy_all, l.copy_one
    );
    println!(
        "  read  {:6.1} GB/s all cores, {:6.1} GB/s one core (a sum)",
        l.read_all, l.read_one
    );
    match &l.fma_one {
        Ok((g, how)) => println!(
            "  FMA peak {g:.1} GFLOP/s one core ({how}); x{} cores = {:.1}",
            l.threads,
            g * l.threads as f64
        ),
        Err(why) => println!("  FMA peak: not measured ({why})"),
    }
    for (n, g) in &l.gemm {
        println!(
            "  gemm crate {n}x{n} @ {n}x{n}: {g:.1} GFLOP/s ({} threads)",
            l.threads
        );
    }
}

/// The limits as a JSON object.
fn json_limits(l: &Limits) -> String {
    let (fma, how) = match &l.fma_one {
        Ok((g, how)) => (json_num(*g), json_str(how)),
        Err(why) => ("null".into(), json_str(why)),
    };
    let gemm: Vec<String> = l
        .gemm
        .iter()
        .map(|(n, g)| format!("{{ \"n\": {n}, \"gflops\": {} }}", json_num(*g)))
        .collect();
    format!(
        "{{ \"buffer_bytes\": {}, \"threads\": {}, \"copy_gbs_all_cores\": {}, \
         \"copy_gbs_one_core\": {}, \"read_gbs_all_cores\": {}, \"read_gbs_one_core\": {}, \
         \"fma_gflops_one_core\": {fma}, \"fma_how\": {how}, \"gemm_crate\": [{}] }}",
        l.buffer_bytes,
        l.threads,
        json_num(l.copy_all),
        json_num(l.copy_one),
        json_num(l.read_all),
        json_num(l.read_one),
        gemm.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// Machine info

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The 1-minute load average (other work on the machine makes timings noisy).
fn loadavg() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// A `kB` field of `/proc/self/status` or `/proc/meminfo`, in bytes.
fn proc_kib(file: &str, field: &str) -> Option<f64> {
    let s = std::fs::read_to_string(file).ok()?;
    let l = s.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = l[field.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024.0)
}

fn mem_available() -> Option<f64> {
    proc_kib("/proc/meminfo", "MemAvailable:")
}

/// Resets the peak resident set size (`VmHWM`; Linux 4.0+). Best effort.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss() -> Option<f64> {
    proc_kib("/proc/self/status", "VmHWM:")
}

fn mem_total_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let l = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

/// UTC date and time as ISO 8601, from the Unix time (days-to-civil, proleptic Gregorian).
fn iso_utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// ---------------------------------------------------------------------------------------------
// JSON (written by hand: no serde here)

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A number, or `null` when not finite (JSON has no NaN or infinity).
fn json_num(x: f64) -> String {
    if x.is_finite() {
        // `{:?}` round-trips and writes `1.0`, `1e-7`, `1.5e20`: all valid JSON numbers.
        format!("{x:?}")
    } else {
        "null".into()
    }
}

fn json_opt_str(s: Option<&str>) -> String {
    s.map(json_str).unwrap_or_else(|| "null".into())
}

fn json_nums(xs: impl IntoIterator<Item = f64>) -> String {
    let v: Vec<String> = xs.into_iter().map(json_num).collect();
    format!("[{}]", v.join(", "))
}

fn json_ints(xs: &[u64]) -> String {
    let v: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
    format!("[{}]", v.join(", "))
}

struct Machine {
    nproc: usize,
    cpu_model: String,
    mem_total_kib: Option<u64>,
    loadavg_start: Option<f64>,
    loadavg_end: Option<f64>,
    unix_time: u64,
    date: String,
    commit: Option<String>,
    dirty: Option<bool>,
}

fn write_json(
    results: &[Ran],
    w7: Option<&Result<ColdStart, String>>,
    settings: &Settings,
    machine: &Machine,
    device: Device,
    limits: &Limits,
) -> String {
    let mut j = String::new();
    j.push_str("{\n");
    let _ = writeln!(j, "  \"schema\": \"metajit-bench-workloads/3\",");
    let _ = writeln!(j, "  \"limits\": {},", json_limits(limits));
    let _ = writeln!(j, "  \"machine\": {{");
    let _ = writeln!(j, "    \"nproc\": {},", machine.nproc);
    let _ = writeln!(j, "    \"cpu_model\": {},", json_str(&machine.cpu_model));
    let _ = writeln!(
        j,
        "    \"mem_total_kib\": {},",
        machine
            .mem_total_kib
            .map_or("null".into(), |m| m.to_string())
    );
    let _ = writeln!(
        j,
        "    \"loadavg_1min_start\": {},",
        machine.loadavg_start.map_or("null".into(), json_num)
    );
    let _ = writeln!(
        j,
        "    \"loadavg_1min_end\": {},",
        machine.loadavg_end.map_or("null".into(), json_num)
    );
    let _ = writeln!(j, "    \"os\": {},", json_str(std::env::consts::OS));
    let _ = writeln!(j, "    \"arch\": {}", json_str(std::env::consts::ARCH));
    let _ = writeln!(j, "  }},");
    let _ = writeln!(j, "  \"date_utc\": {},", json_str(&machine.date));
    let _ = writeln!(j, "  \"unix_time\": {},", machine.unix_time);
    let _ = writeln!(
        j,
        "  \"git\": {{ \"commit\": {}, \"dirty\": {} }},",
        json_opt_str(machine.commit.as_deref()),
        machine.dirty.map_or("null".into(), |d| d.to_string())
    );
    let _ = writeln!(j, "  \"settings\": {{");
    let _ = writeln!(j, "    \"runs\": {},", settings.runs);
    let _ = writeln!(j, "    \"warmups\": {},", settings.warmups);
    let _ = writeln!(j, "    \"quick\": {},", settings.quick);
    let filters: Vec<String> = settings.filters.iter().map(|f| json_str(f)).collect();
    let _ = writeln!(j, "    \"filters\": [{}],", filters.join(", "));
    let _ = writeln!(j, "    \"device\": {},", json_str(&format!("{device:?}")));
    let _ = writeln!(
        j,
        "    \"reference_work_limit\": {}",
        json_num(REFERENCE_WORK_LIMIT)
    );
    let _ = writeln!(j, "  }},");
    j.push_str("  \"workloads\": [");
    let mut first = true;
    for ran in results {
        let (w, rows) = (&ran.w, &ran.rows);
        j.push_str(if first { "\n" } else { ",\n" });
        first = false;
        let med = |m: RunMode| ran.median_of(m);
        let ratio = match (med(RunMode::Compiled), med(RunMode::Eager)) {
            (Some(c), Some(e)) => json_num(c / e),
            _ => "null".into(),
        };
        let (kind, amount_key) = match w.metric {
            Metric::Bytes(_) => ("bandwidth", "bytes_per_run"),
            Metric::Flops(_) => ("flops", "flops_per_run"),
            Metric::Ops(_) => ("dispatch", "ops_per_run"),
        };
        let _ = writeln!(j, "    {{");
        let _ = writeln!(j, "      \"id\": {},", json_str(w.id));
        let _ = writeln!(j, "      \"name\": {},", json_str(&w.name));
        let _ = writeln!(j, "      \"description\": {},", json_str(&w.description));
        let _ = writeln!(j, "      \"status\": \"ran\",");
        let _ = writeln!(
            j,
            "      \"metric\": {{ \"kind\": {}, \"unit\": {}, {}: {} }},",
            json_str(kind),
            json_str(w.metric.unit()),
            json_str(amount_key),
            json_num(w.metric.per_run())
        );
        let _ = writeln!(j, "      \"ratio_compiled_over_eager\": {ratio},");
        let _ = writeln!(j, "      \"peer\": {},", json_peer(ran));
        j.push_str("      \"modes\": [");
        for (k, r) in rows.iter().enumerate() {
            j.push_str(if k == 0 { "\n" } else { ",\n" });
            j.push_str("        { ");
            let _ = write!(j, "\"mode\": {}, ", json_str(r.mode.name()));
            match &r.outcome {
                Outcome::Ok(x) => {
                    let md = median(&x.samples);
                    let _ = write!(j, "\"status\": \"ok\",\n          ");
                    let _ = write!(
                        j,
                        "\"median_s\": {}, \"min_s\": {}, \"max_s\": {}, \"q1_s\": {}, \"q3_s\": {},\n          ",
                        json_num(md),
                        json_num(min(&x.samples)),
                        json_num(max(&x.samples)),
                        json_num(quantile(&x.samples, 0.25)),
                        json_num(quantile(&x.samples, 0.75))
                    );
                    let _ = write!(
                        j,
                        "\"samples_s\": {},\n          ",
                        json_nums(x.samples.iter().copied())
                    );
                    let _ = write!(
                        j,
                        "\"throughput\": {}, \"throughput_unit\": {},\n          ",
                        json_num(w.metric.throughput(md)),
                        json_str(w.metric.unit())
                    );
                    let shares: Vec<String> = limits
                        .shares(w.limit, w.metric, md)
                        .into_iter()
                        .map(|(k, v)| format!("{}: {}", json_str(k), json_num(v)))
                        .collect();
                    let _ = write!(
                        j,
                        "\"share_of_limit\": {{ {} }},\n          ",
                        shares.join(", ")
                    );
                    let kernels = if r.mode == RunMode::Reference {
                        "null".to_string()
                    } else {
                        json_ints(&x.kernel_runs)
                    };
                    let _ = write!(
                        j,
                        "\"kernel_runs_per_run\": {kernels}, \"plan_misses_per_run\": {},\n          ",
                        json_ints(&x.plan_misses)
                    );
                    let per_kernel = if x.cold.kernels_compiled > 0 {
                        json_num(x.cold.compile_ns as f64 / x.cold.kernels_compiled as f64)
                    } else {
                        "null".into()
                    };
                    let _ = write!(
                        j,
                        "\"cold\": {{ \"time_s\": {}, \"kernels_compiled\": {}, \"compile_ns\": {}, \
                         \"compile_ns_per_kernel\": {}, \"kernel_runs\": {}, \"plan_misses\": {} }},\n          ",
                        json_num(x.cold.seconds),
                        x.cold.kernels_compiled,
                        x.cold.compile_ns,
                        per_kernel,
                        x.cold.kernel_runs,
                        x.cold.plan_misses
                    );
                    let _ = write!(
                        j,
                        "\"peak_rss_bytes\": {},\n          ",
                        x.peak_rss.map_or("null".into(), json_num)
                    );
                    let part = match (x.part, &w.part) {
                        (Some(p), Some(part)) => format!(
                            "{{ \"name\": {}, \"median_s\": {}, \"share_of_median\": {} }}",
                            json_str(&part.name),
                            json_num(p),
                            json_num(p / md)
                        ),
                        _ => "null".into(),
                    };
                    let _ = write!(j, "\"part\": {part},\n          ");
                    match &x.check {
                        Some(c) => {
                            let _ = write!(
                                j,
                                "\"check_vs_compiled\": {{ \"max_abs_diff\": {}, \"scale\": {}, \
                                 \"tolerance\": {}, \"ok\": {} }} }}",
                                json_num(c.max_abs_diff),
                                json_num(c.scale),
                                json_num(c.tolerance),
                                c.ok()
                            );
                        }
                        None => j.push_str("\"check_vs_compiled\": null }"),
                    }
                }
                Outcome::Skipped(why) => {
                    let _ = write!(
                        j,
                        "\"status\": \"skipped\", \"reason\": {} }}",
                        json_str(why)
                    );
                }
                Outcome::Failed(why) => {
                    let _ = write!(
                        j,
                        "\"status\": \"failed\", \"reason\": {} }}",
                        json_str(why)
                    );
                }
            }
        }
        j.push_str("\n      ]\n    }");
    }
    if let Some(w7) = w7 {
        for e in json_cold_start(w7) {
            j.push_str(if first { "\n" } else { ",\n" });
            first = false;
            j.push_str(&e);
        }
    }
    j.push_str("\n  ]\n}\n");
    j
}

/// A workload's peer run as JSON (`null` without one).
fn json_peer(ran: &Ran) -> String {
    let ratio = |m: RunMode| ran.over_peer(m).map_or("null".into(), json_num);
    match &ran.peer {
        None => "null".into(),
        Some(Peer::Ok { name, median_s }) => format!(
            "{{ \"name\": {}, \"status\": \"ok\", \"median_s\": {}, \
             \"compiled_over_peer\": {}, \"eager_over_peer\": {} }}",
            json_str(name),
            json_num(*median_s),
            ratio(RunMode::Compiled),
            ratio(RunMode::Eager)
        ),
        Some(Peer::Unavailable(why)) => format!(
            "{{ \"status\": \"unavailable\", \"reason\": {} }}",
            json_str(why)
        ),
        Some(Peer::Failed(why)) => format!(
            "{{ \"status\": \"failed\", \"reason\": {} }}",
            json_str(why)
        ),
    }
}

/// The W7 entries of the JSON `workloads` list: one per first call (its modes: cold and warm
/// times, kernel counts), or one saying why there are none.
fn json_cold_start(w7: &Result<ColdStart, String>) -> Vec<String> {
    let c = match w7 {
        Ok(c) => c,
        Err(why) => {
            return vec![format!(
                "    {{ \"id\": \"W7\", \"name\": {}, \"status\": \"skipped\", \"reason\": {}, \
                 \"modes\": [] }}",
                json_str(W7_NAME),
                json_str(why)
            )];
        }
    };
    let names = cold_names(c);
    let entry = |name: &str, title: &str, status: &str| {
        let mut e = String::new();
        let _ = writeln!(e, "    {{");
        let _ = writeln!(e, "      \"id\": \"W7\",");
        let _ = writeln!(e, "      \"name\": {},", json_str(title));
        let _ = writeln!(
            e,
            "      \"description\": {},",
            json_str(&format!(
                "the first call of {name} in a fresh process with an empty kernel cache (cold), \
                 then in a second fresh process on the cache the first left (warm); \
                 examples/cold_start --only {W7_ONLY}"
            ))
        );
        let _ = writeln!(e, "      \"status\": {},", json_str(status));
        let _ = writeln!(
            e,
            "      \"metric\": {{ \"kind\": \"latency\", \"unit\": \"s\" }},"
        );
        let _ = writeln!(
            e,
            "      \"example\": {},",
            json_str(&c.exe.display().to_string())
        );
        let _ = writeln!(e, "      \"stale\": {},", json_opt_str(c.stale.as_deref()));
        e.push_str("      \"modes\": [");
        for (k, (m, r)) in c.modes.iter().enumerate() {
            e.push_str(if k == 0 { "\n" } else { ",\n" });
            let _ = write!(e, "        {{ \"mode\": {}, ", json_str(m.name()));
            let line = match r {
                Ok(_) => cold_line(c, *m, name),
                Err(why) => Err(why.clone()),
            };
            match line {
                Ok(l) => {
                    let process = r.as_ref().map_or(&[][..], |r| &r.process_s[..]);
                    let pc = json_nums(process.iter().map(|p| p.0));
                    let pw = json_nums(process.iter().map(|p| p.1));
                    let (cold, warm) = (median(&l.cold_s), median(&l.warm_s));
                    let _ = write!(
                        e,
                        "\"status\": \"ok\",\n          \"cold_first_s\": {}, \"warm_first_s\": {}, \
                         \"cold_over_warm\": {}, \"steady_s\": {},\n          \
                         \"cold_first_samples_s\": {}, \"warm_first_samples_s\": {},\n          \
                         \"kernels_compiled_cold\": {}, \"disk_hits_warm\": {}, \
                         \"kernels_compiled_warm\": {},\n          \
                         \"process_cold_s\": {pc}, \"process_warm_s\": {pw} }}",
                        json_num(cold),
                        json_num(warm),
                        json_num(cold / warm),
                        json_num(l.steady_s),
                        json_nums(l.cold_s.iter().copied()),
                        json_nums(l.warm_s.iter().copied()),
                        l.compiled_cold,
                        l.disk_hits_warm,
                        l.compiled_warm
                    );
                }
                Err(why) => {
                    let _ = write!(
                        e,
                        "\"status\": \"failed\", \"reason\": {} }}",
                        json_str(&why)
                    );
                }
            }
        }
        e.push_str("\n      ]\n    }");
        e
    };
    if names.is_empty() {
        vec![entry("its first calls", W7_NAME, "failed")]
    } else {
        names
            .iter()
            .map(|n| entry(n, &format!("W7 first call: {n}"), "ran"))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// SVG (grouped horizontal bars, log scale)

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

fn write_svg(
    results: &[Ran],
    w7: Option<&Result<ColdStart, String>>,
    machine: &Machine,
    settings: &Settings,
) -> String {
    const COLORS: [(&str, &str); 4] = [
        ("compiled", "#3b6fb6"),
        ("eager", "#e07b28"),
        ("reference", "#8c8c8c"),
        ("torch", "#7b4ea3"),
    ];
    // Per workload, per mode (or peer): the median in ms, or why there is none.
    type Bar = (&'static str, Result<f64, String>);
    let positive = |s: f64| {
        let ms = s * 1e3;
        if ms > 0.0 && ms.is_finite() {
            Ok(ms)
        } else {
            Err("no time".to_string())
        }
    };
    let mut groups: Vec<(String, Vec<Bar>)> = results
        .iter()
        .map(|ran| {
            let mut bars: Vec<Bar> = ran
                .rows
                .iter()
                .map(|r| match &r.outcome {
                    Outcome::Ok(x) => (r.mode.name(), positive(median(&x.samples))),
                    Outcome::Skipped(why) | Outcome::Failed(why) => {
                        (r.mode.name(), Err(why.clone()))
                    }
                })
                .collect();
            match &ran.peer {
                Some(Peer::Ok { median_s, .. }) => bars.push(("torch", positive(*median_s))),
                Some(Peer::Unavailable(why) | Peer::Failed(why)) => {
                    bars.push(("torch", Err(why.clone())))
                }
                None => {}
            }
            (ran.w.name.clone(), bars)
        })
        .collect();
    // W7: a group for the cold first calls and one for the warm ones.
    if let Some(Ok(c)) = w7 {
        for name in cold_names(c) {
            for (label, warm) in [("cold", false), ("warm", true)] {
                let bars = [RunMode::Compiled, RunMode::Eager]
                    .into_iter()
                    .map(|m| {
                        let t = cold_line(c, m, &name).and_then(|l| {
                            positive(median(if warm { &l.warm_s } else { &l.cold_s }))
                        });
                        (m.name(), t)
                    })
                    .collect();
                groups.push((format!("W7 first {name}, {label}"), bars));
            }
        }
    }
    let all: Vec<f64> = groups
        .iter()
        .flat_map(|(_, b)| b.iter().filter_map(|x| x.1.as_ref().ok().copied()))
        .collect();
    let (lo, hi) = if all.is_empty() {
        (0, 1)
    } else {
        let lo = min(&all).log10().floor() as i32;
        let hi = max(&all).log10().ceil() as i32;
        (lo, hi.max(lo + 1))
    };
    let (right, top, bar_h, gap) = (110.0, 70.0, 14.0, 12.0);
    // Room for the longest workload name at 12 px (about 6.8 px a character).
    let longest = groups.iter().map(|(n, _)| n.chars().count()).max();
    let left = longest.map_or(230.0, |n| (n as f64 * 6.8 + 16.0).max(230.0));
    let plot_w = 600.0;
    let width = left + plot_w + right;
    let group_h = |n: usize| n as f64 * bar_h + gap;
    let plot_h: f64 = groups
        .iter()
        .map(|(_, b)| group_h(b.len()))
        .sum::<f64>()
        .max(bar_h);
    let height = top + plot_h + 60.0;
    let x_of = |ms: f64| left + (ms.log10() - f64::from(lo)) / f64::from(hi - lo) * plot_w;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        xml(&format!(
            "metajit workloads: median time per run (ms, log scale){}",
            if settings.quick { ", QUICK sizes" } else { "" }
        ))
    );
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"40\" fill=\"#555\">{}</text>",
        xml(&format!(
            "{} · {} cores · {} · {} runs",
            machine.cpu_model, machine.nproc, machine.date, settings.runs
        ))
    );
    // Legend.
    for (k, (label, color)) in COLORS.iter().enumerate() {
        let x = left + k as f64 * 110.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"50\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"60\">{label}</text>",
            x + 16.0
        );
    }
    // Decade grid lines and labels.
    for e in lo..=hi {
        let x = x_of(10f64.powi(e));
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            top + plot_h,
            top + plot_h + 16.0,
            xml(&fmt_ms_label(e))
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">median ms per run</text>",
        left + plot_w / 2.0,
        top + plot_h + 36.0
    );
    let mut y = top;
    for (name, bars) in &groups {
        let gh = group_h(bars.len());
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>",
            left - 8.0,
            y + (gh - gap) / 2.0,
            xml(name)
        );
        for (k, (m, bar)) in bars.iter().enumerate() {
            let color = COLORS
                .iter()
                .find(|(l, _)| l == m)
                .map_or("#000", |(_, c)| c);
            let by = y + k as f64 * bar_h;
            let ms = match bar {
                Ok(ms) => ms,
                Err(why) => {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#777\" \
                         dominant-baseline=\"middle\">{}</text>",
                        left + 4.0,
                        by + (bar_h - 2.0) / 2.0,
                        xml(&format!("{m}: {}", first_line(why, 90)))
                    );
                    continue;
                }
            };
            let x1 = x_of(*ms).max(left + 1.0);
            let _ = writeln!(
                s,
                "<rect x=\"{left}\" y=\"{by:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\">\
                 <title>{}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" dominant-baseline=\"middle\">{}</text>",
                x1 - left,
                bar_h - 2.0,
                xml(&format!("{name} [{m}]: {ms:.4} ms")),
                x1 + 4.0,
                by + (bar_h - 2.0) / 2.0,
                xml(&fmt_time(ms / 1e3))
            );
        }
        y += gh;
    }
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#333\"/>",
        top + plot_h
    );
    s.push_str("</svg>\n");
    s
}

/// The first line of `s`, at most `n` characters.
fn first_line(s: &str, n: usize) -> String {
    let l = s.lines().next().unwrap_or("");
    if l.chars().count() > n {
        format!("{}…", l.chars().take(n).collect::<String>())
    } else {
        l.to_string()
    }
}

fn fmt_ms_label(e: i32) -> String {
    let v = 10f64.powi(e);
    if e >= 0 {
        format!("{v:.0}")
    } else {
        format!("{v:.*}", (-e) as usize)
    }
}

// ---------------------------------------------------------------------------------------------

fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench")
}

fn main() {
    let settings = Settings::from_env();
    let device = match metajit::config::try_device() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = metajit::config::try_mode() {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let base = Base { device };
    // The cold runs compile: unless METAJIT_CACHE_DIR says otherwise, kernels go to a fresh
    // cache dir, not to kernels cached on disk by earlier runs.
    let fresh_cache = std::env::var_os("METAJIT_CACHE_DIR").is_none().then(|| {
        let dir = std::env::temp_dir().join(format!("metajit-bench-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        metajit::set_cache_dir(&dir);
        dir
    });
    let loadavg_start = loadavg();

    let selected: Vec<Workload> = workloads(settings.quick)
        .into_iter()
        .filter(|w| settings.selects(&w.name))
        .collect();
    let gemm_sizes: Vec<usize> = selected
        .iter()
        .filter_map(|w| match w.limit {
            Limit::Gemm(n) => Some(n),
            _ => None,
        })
        .collect();
    let limits = measure_limits(settings.quick, settings.runs, &gemm_sizes);

    let mut results = Vec::new();
    for w in selected {
        let rows = run_workload(&w, base, &settings);
        results.push(Ran {
            w,
            rows,
            peer: None,
        });
    }
    // PyTorch runs after metajit, in one process for every selected workload it has.
    let keys: Vec<String> = results.iter().filter_map(|r| r.w.torch.clone()).collect();
    let mut torch = run_torch(&keys, &settings);
    for r in &mut results {
        r.peer = r.w.torch.as_ref().and_then(|k| torch.remove(k));
    }
    let w7 = settings.selects(W7_NAME).then(|| {
        cold_start(
            lenet_batch(settings.quick),
            if settings.quick { 1 } else { 3 },
        )
    });
    if results.is_empty() && w7.is_none() {
        eprintln!(
            "bench: no workload matches the filter {:?}",
            settings.filters
        );
    }

    print_limits(&limits);
    if !results.is_empty() {
        print_table(&results, &settings, &limits);
    }
    if let Some(c) = &w7 {
        print_cold_start(c);
    }
    if settings.selects("W6 MLP rss") {
        base.apply(RunMode::Compiled);
        if let Some((a, b, n)) = mlp_rss(settings.quick) {
            println!(
                "W6 MLP training loop, compiled: RSS {a:.1} MiB after 50 steps, {b:.1} MiB after {n} ({:+.1} MiB)",
                b - a
            );
        }
    }

    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let machine = Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpu_model(),
        mem_total_kib: mem_total_kib(),
        loadavg_start,
        loadavg_end: loadavg(),
        unix_time,
        date: iso_utc(unix_time),
        commit: git(&["rev-parse", "HEAD"]),
        dirty: git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
    };
    if let Some(d) = fresh_cache {
        let _ = std::fs::remove_dir_all(d);
    }
    let dir = out_dir();
    let json = write_json(&results, w7.as_ref(), &settings, &machine, device, &limits);
    let svg = write_svg(&results, w7.as_ref(), &machine, &settings);
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("workloads.json"), json))
        .and_then(|()| std::fs::write(dir.join("workloads.svg"), svg));
    match written {
        Ok(()) => println!(
            "wrote {} and {}",
            dir.join("workloads.json").display(),
            dir.join("workloads.svg").display()
        ),
        Err(e) => {
            eprintln!("bench: cannot write {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
}
