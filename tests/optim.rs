//! `metajit::optim` against independent implementations of PyTorch's algorithms written here
//! in plain f64 loops (`torch.optim.SGD`, `Adam`, `AdamW`, single-tensor form; the schedules'
//! closed forms; `clip_grad_norm_`), the one-schedule steady state of a training step, and
//! misuse.
//!
//! The tests of this binary take one lock: the executor's counters are process-wide, and the
//! steady-state test reads them.

mod common;

use common::counters;

use std::sync::{Mutex, MutexGuard};

use common::catch_quietly;
use metajit::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, CosineAnnealingLr, LrScheduler, Optimizer, Sgd,
    SgdConfig, StepLr, clip_grad_norm_,
};
use metajit::{DType, Tensor};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The problem: linear regression, loss = mean((X·w + b - y)²) over 8 samples of 3 features,
// plus 0.5·Σc² on even steps only (so `c` has no gradient on odd steps and must be skipped,
// and Adam's per-parameter step counts differ), and a parameter `u` no loss ever reads.

const N: usize = 8;
const D: usize = 3;

/// Deterministic values in [-1, 1).
fn lcg(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

struct Problem {
    x: Vec<f64>, // N×D
    y: Vec<f64>, // N
    init: Vec<Vec<f64>>,
}

fn problem() -> Problem {
    Problem {
        x: lcg(1, N * D),
        y: lcg(2, N),
        // w [D, 1], b [1], c [2], u [2]
        init: vec![lcg(3, D), lcg(4, 1), lcg(5, 2), lcg(6, 2)],
    }
}

/// The gradients of the loss of step `k` (1-based) at `p`, computed by hand; `None` for a
/// parameter the loss does not read.
#[allow(clippy::needless_range_loop)] // index loops read as the formulas
fn reference_grads(pr: &Problem, p: &[Vec<f64>], k: usize) -> Vec<Option<Vec<f64>>> {
    let (w, b) = (&p[0], p[1][0]);
    let mut gw = vec![0.0; D];
    let mut gb = 0.0;
    for i in 0..N {
        let mut pred = b;
        for j in 0..D {
            pred += pr.x[i * D + j] * w[j];
        }
        let r = 2.0 * (pred - pr.y[i]) / N as f64;
        for j in 0..D {
            gw[j] += r * pr.x[i * D + j];
        }
        gb += r;
    }
    let gc = k.is_multiple_of(2).then(|| p[2].clone());
    vec![Some(gw), Some(vec![gb]), gc, None]
}

/// The metajit loss of step `k`.
fn loss(x: &Tensor, y: &Tensor, p: &[Tensor], k: usize) -> Tensor {
    let mse = (x.matmul(&p[0]) + &p[1] - y).square().mean_all();
    if k.is_multiple_of(2) {
        mse + p[2].square().sum_all() * 0.5
    } else {
        mse
    }
}

/// Runs `steps` steps of the optimizer `make` builds over the problem's parameters in `dtype`,
/// and returns the parameters after each step.
fn run_metajit(
    dtype: DType,
    steps: usize,
    make: impl FnOnce(Vec<Tensor>) -> Box<dyn Optimizer>,
) -> Vec<Vec<Vec<f64>>> {
    let pr = problem();
    let x = Tensor::from_vec(pr.x.clone(), [N, D]).cast(dtype);
    let y = Tensor::from_vec(pr.y.clone(), [N, 1]).cast(dtype);
    metajit::realize_all(&[&x, &y]).unwrap();
    let shapes: [&[usize]; 4] = [&[D, 1], &[1], &[2], &[2]];
    let params: Vec<Tensor> = pr
        .init
        .iter()
        .zip(shapes)
        .map(|(v, s)| {
            let t = Tensor::from_vec(v.clone(), s).cast(dtype);
            t.realize().unwrap();
            t.detach().requires_grad_(true)
        })
        .collect();
    let mut opt = make(params.clone());
    let mut out = Vec::new();
    for k in 1..=steps {
        opt.zero_grad();
        let l = loss(&x, &y, &params, k);
        l.backward();
        opt.step();
        opt.realize_with(&[&l]).unwrap();
        out.push(params.iter().map(|p| p.to_f64_vec().unwrap()).collect());
    }
    out
}

/// Runs `steps` steps of a reference optimizer (`update(params, grads)`) and returns the
/// parameters after each step.
fn run_reference(
    steps: usize,
    mut update: impl FnMut(&mut [Vec<f64>], &[Option<Vec<f64>>]),
) -> Vec<Vec<Vec<f64>>> {
    let pr = problem();
    let mut p = pr.init.clone();
    let mut out = Vec::new();
    for k in 1..=steps {
        let g = reference_grads(&pr, &p, k);
        update(&mut p, &g);
        out.push(p.clone());
    }
    out
}

/// Asserts that every parameter after every step agrees within `tol` (relative, with an
/// absolute floor of `tol`).
fn assert_close(what: &str, got: &[Vec<Vec<f64>>], want: &[Vec<Vec<f64>>], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: step count");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: parameter count");
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert_eq!(a.len(), b.len(), "{what}: parameter {i} length");
            for (j, (&x, &y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= tol * y.abs().max(1.0),
                    "{what}: step {} parameter {i}[{j}]: metajit {x}, reference {y}",
                    k + 1
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reference implementations (PyTorch's single-tensor algorithms).

struct RefSgd {
    c: SgdConfig,
    bufs: Vec<Option<Vec<f64>>>,
}

impl RefSgd {
    fn step(&mut self, p: &mut [Vec<f64>], grads: &[Option<Vec<f64>>]) {
        let c = self.c;
        self.bufs.resize(p.len(), None);
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            for j in 0..p[i].len() {
                let mut d = if c.maximize { -g[j] } else { g[j] };
                if c.weight_decay != 0.0 {
                    d += c.weight_decay * p[i][j];
                }
                if c.momentum != 0.0 {
                    let buf = self.bufs[i].get_or_insert_with(|| vec![f64::NAN; p[i].len()]);
                    buf[j] = if buf[j].is_nan() {
                        d // the first step: clone(grad)
                    } else {
                        c.momentum * buf[j] + (1.0 - c.dampening) * d
                    };
                    d = if c.nesterov {
                        d + c.momentum * buf[j]
                    } else {
                        buf[j]
                    };
                }
                p[i][j] -= c.lr * d;
            }
        }
    }
}

struct RefAdam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    wd: f64,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    vmax: Vec<Vec<f64>>,
    t: Vec<u32>,
}

impl RefAdam {
    fn new(c: AdamConfig, decoupled: bool) -> RefAdam {
        RefAdam {
            lr: c.lr,
            betas: c.betas,
            eps: c.eps,
            wd: c.weight_decay,
            amsgrad: c.amsgrad,
            maximize: c.maximize,
            decoupled,
            m: Vec::new(),
            v: Vec::new(),
            vmax: Vec::new(),
            t: Vec::new(),
        }
    }

    fn step(&mut self, p: &mut [Vec<f64>], grads: &[Option<Vec<f64>>]) {
        let (b1, b2) = self.betas;
        for (i, g) in grads.iter().enumerate() {
            if self.m.len() <= i {
                let n = p[i].len();
                self.m.push(vec![0.0; n]);
                self.v.push(vec![0.0; n]);
                self.vmax.push(vec![0.0; n]);
                self.t.push(0);
            }
            let Some(g) = g else { continue };
            self.t[i] += 1;
            let t = self.t[i] as i32;
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            for j in 0..p[i].len() {
                let mut d = if self.maximize { -g[j] } else { g[j] };
                if self.wd != 0.0 {
                    if self.decoupled {
                        p[i][j] *= 1.0 - self.lr * self.wd;
                    } else {
                        d += self.wd * p[i][j];
                    }
                }
                let m = &mut self.m[i][j];
                *m += (1.0 - b1) * (d - *m);
                let v = &mut self.v[i][j];
                *v = b2 * *v + (1.0 - b2) * d * d;
                let vmax = &mut self.vmax[i][j];
                *vmax = vmax.max(*v);
                let vh = if self.amsgrad { *vmax } else { *v };
                let denom = vh.sqrt() / bc2.sqrt() + self.eps;
                p[i][j] -= self.lr / bc1 * *m / denom;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Optimizers against the references.

const STEPS: usize = 6;
/// f64 parameters: the only differences are the order of the matmul's sums and of a few
/// products, a few ulp amplified by at most the division by sqrt(v).
const TOL_F64: f64 = 1e-10;
/// f32 parameters against the f64 reference.
const TOL_F32: f64 = 2e-5;

#[test]
fn sgd_matches_the_reference_for_every_option_combination() {
    let _g = serial();
    let base = SgdConfig {
        lr: 0.1,
        ..Default::default()
    };
    let cases = [
        ("plain", base),
        (
            "weight decay",
            SgdConfig {
                weight_decay: 0.3,
                ..base
            },
        ),
        (
            "momentum",
            SgdConfig {
                momentum: 0.9,
                ..base
            },
        ),
        (
            "momentum + dampening",
            SgdConfig {
                momentum: 0.9,
                dampening: 0.25,
                ..base
            },
        ),
        (
            "nesterov",
            SgdConfig {
                momentum: 0.8,
                nesterov: true,
                ..base
            },
        ),
        (
            "nesterov + weight decay",
            SgdConfig {
                momentum: 0.8,
                nesterov: true,
                weight_decay: 0.05,
                ..base
            },
        ),
        (
            "momentum + dampening + weight decay + maximize",
            SgdConfig {
                momentum: 0.5,
                dampening: 0.5,
                weight_decay: 0.1,
                maximize: true,
                lr: 0.01,
                ..base
            },
        ),
    ];
    for (name, c) in cases {
        let mut r = RefSgd {
            c,
            bufs: Vec::new(),
        };
        let want = run_reference(STEPS, |p, g| r.step(p, g));
        let got = run_metajit(DType::F64, STEPS, |ps| Box::new(Sgd::new(ps, c)));
        assert_close(&format!("SGD {name} (f64)"), &got, &want, TOL_F64);
        let got = run_metajit(DType::F32, STEPS, |ps| Box::new(Sgd::new(ps, c)));
        assert_close(&format!("SGD {name} (f32)"), &got, &want, TOL_F32);
    }
}

#[test]
fn adam_matches_the_reference_with_and_without_weight_decay_and_amsgrad() {
    let _g = serial();
    let base = AdamConfig {
        lr: 0.05,
        ..Default::default()
    };
    let cases = [
        ("defaults", base),
        (
            "weight decay",
            AdamConfig {
                weight_decay: 0.2,
                ..base
            },
        ),
        (
            "amsgrad",
            AdamConfig {
                amsgrad: true,
                ..base
            },
        ),
        (
            "amsgrad + weight decay + betas + eps",
            AdamConfig {
                amsgrad: true,
                weight_decay: 0.1,
                betas: (0.3, 0.9),
                eps: 1e-3,
                ..base
            },
        ),
        (
            "maximize",
            AdamConfig {
                maximize: true,
                ..base
            },
        ),
    ];
    for (name, c) in cases {
        let mut r = RefAdam::new(c, false);
        let want = run_reference(STEPS, |p, g| r.step(p, g));
        let got = run_metajit(DType::F64, STEPS, |ps| Box::new(Adam::new(ps, c)));
        assert_close(&format!("Adam {name} (f64)"), &got, &want, TOL_F64);
        let got = run_metajit(DType::F32, STEPS, |ps| Box::new(Adam::new(ps, c)));
        assert_close(&format!("Adam {name} (f32)"), &got, &want, TOL_F32);
    }
}

#[test]
fn adamw_matches_the_reference_with_decoupled_weight_decay() {
    let _g = serial();
    assert_eq!(
        AdamWConfig::default().weight_decay,
        0.01,
        "PyTorch's default"
    );
    let cases = [
        (
            "defaults",
            AdamWConfig {
                lr: 0.05,
                ..Default::default()
            },
        ),
        (
            "strong decay + amsgrad",
            AdamWConfig {
                lr: 0.05,
                weight_decay: 0.5,
                amsgrad: true,
                ..Default::default()
            },
        ),
    ];
    for (name, c) in cases {
        let as_adam = AdamConfig {
            lr: c.lr,
            betas: c.betas,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
            maximize: c.maximize,
        };
        let mut r = RefAdam::new(as_adam, true);
        let want = run_reference(STEPS, |p, g| r.step(p, g));
        let got = run_metajit(DType::F64, STEPS, |ps| Box::new(AdamW::new(ps, c)));
        assert_close(&format!("AdamW {name} (f64)"), &got, &want, TOL_F64);
        let got = run_metajit(DType::F32, STEPS, |ps| Box::new(AdamW::new(ps, c)));
        assert_close(&format!("AdamW {name} (f32)"), &got, &want, TOL_F32);
    }
}

#[test]
fn eager_mode_steps_match_the_reference_too() {
    let _g = serial();
    struct Compiled;
    impl Drop for Compiled {
        fn drop(&mut self) {
            metajit::set_mode(metajit::Mode::Compiled);
        }
    }
    let _restore = Compiled;
    metajit::set_mode(metajit::Mode::Eager);
    let sgd = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut r = RefSgd {
        c: sgd,
        bufs: Vec::new(),
    };
    let want = run_reference(STEPS, |p, g| r.step(p, g));
    let got = run_metajit(DType::F64, STEPS, |ps| Box::new(Sgd::new(ps, sgd)));
    assert_close("SGD nesterov (eager)", &got, &want, TOL_F64);
    let adam = AdamConfig {
        lr: 0.05,
        weight_decay: 0.1,
        amsgrad: true,
        ..Default::default()
    };
    let mut r = RefAdam::new(adam, false);
    let want = run_reference(STEPS, |p, g| r.step(p, g));
    let got = run_metajit(DType::F64, STEPS, |ps| Box::new(Adam::new(ps, adam)));
    assert_close("Adam amsgrad (eager)", &got, &want, TOL_F64);
}

#[test]
fn a_parameter_without_a_gradient_is_skipped_with_its_state() {
    let _g = serial();
    let w = Tensor::from_vec(vec![1.0f64, 2.0], [2]).requires_grad_(true);
    let idle = Tensor::from_vec(vec![3.0f64], [1]).requires_grad_(true);
    let mut opt = Adam::new([w.clone(), idle.clone()], AdamConfig::default());
    for _ in 0..3 {
        opt.zero_grad();
        (&w * &w).sum_all().backward();
        opt.step();
        opt.realize_with(&[]).unwrap();
    }
    assert_eq!(opt.steps(), &[3, 0]);
    assert_eq!(idle.to_vec::<f64>().unwrap(), vec![3.0]);
    // State order: exp_avg of each parameter, then exp_avg_sq of each.
    let state = opt.state();
    assert_eq!(state.len(), 4);
    assert_eq!(state[1].to_vec::<f64>().unwrap(), vec![0.0]);
    assert_eq!(state[3].to_vec::<f64>().unwrap(), vec![0.0]);
}

#[test]
fn duplicate_parameters_are_updated_once() {
    let _g = serial();
    let w = Tensor::from_vec(vec![1.0f32], [1]).requires_grad_(true);
    let mut opt = Sgd::new(
        [w.clone(), w.clone()],
        SgdConfig {
            lr: 0.25,
            ..Default::default()
        },
    );
    assert_eq!(opt.params().len(), 1);
    (&w * &w).sum_all().backward();
    opt.step();
    opt.realize_with(&[]).unwrap();
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![0.5]);
}

// ---------------------------------------------------------------------------------------------
// Schedules.

#[test]
fn step_lr_follows_its_closed_form() {
    let _g = serial();
    let w = Tensor::zeros([1]).requires_grad_(true);
    let mut opt = Sgd::new(
        [w],
        SgdConfig {
            lr: 0.3,
            ..Default::default()
        },
    );
    let mut s = StepLr::new(&opt, 3, 0.1);
    assert_eq!((s.epoch(), s.last_lr(), opt.lr()), (0, 0.3, 0.3));
    for e in 1..=10usize {
        s.step(&mut opt);
        let want = 0.3 * 0.1f64.powi((e / 3) as i32);
        assert_eq!(s.epoch(), e);
        assert_eq!(opt.lr(), want, "epoch {e}");
        assert_eq!(s.last_lr(), want, "epoch {e}");
    }
}

#[test]
fn cosine_annealing_lr_follows_its_closed_form() {
    let _g = serial();
    let w = Tensor::zeros([1]).requires_grad_(true);
    let mut opt = AdamW::new(
        [w],
        AdamWConfig {
            lr: 0.1,
            ..Default::default()
        },
    );
    let (t_max, eta_min) = (8usize, 0.01);
    let mut s = CosineAnnealingLr::new(&opt, t_max, eta_min);
    let closed = |e: usize| {
        eta_min
            + (0.1 - eta_min) * (1.0 + (std::f64::consts::PI * e as f64 / t_max as f64).cos()) / 2.0
    };
    let mut seen = vec![opt.lr()];
    for e in 1..=2 * t_max {
        s.step(&mut opt);
        assert!((opt.lr() - closed(e)).abs() < 1e-15, "epoch {e}");
        seen.push(opt.lr());
    }
    assert_eq!(seen[0], 0.1);
    assert!(
        (seen[t_max] - eta_min).abs() < 1e-15,
        "reaches eta_min at t_max"
    );
    assert!((seen[t_max / 2] - (0.1 + eta_min) / 2.0).abs() < 1e-15);
    assert!(
        (seen[2 * t_max] - 0.1).abs() < 1e-15,
        "the cosine continues"
    );
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping.

/// Two parameters with gradients [3, 4] and [12] (total 2-norm 13).
fn clip_setup() -> (Tensor, Tensor, Tensor) {
    let a = Tensor::zeros_dtype([2], DType::F64).requires_grad_(true);
    let b = Tensor::zeros_dtype([1], DType::F64).requires_grad_(true);
    let none = Tensor::zeros_dtype([1], DType::F64).requires_grad_(true);
    a.set_grad(Some(Tensor::from_vec(vec![3.0f64, -4.0], [2])));
    b.set_grad(Some(Tensor::from_vec(vec![12.0f64], [1])));
    (a, b, none)
}

#[test]
fn clip_grad_norm_matches_pytorch() {
    let _g = serial();
    // 2-norm: 13; coefficient 6.5 / (13 + 1e-6).
    let (a, b, none) = clip_setup();
    let held = a.grad().unwrap();
    let total = clip_grad_norm_([&a, &b, &none], 6.5, 2.0);
    assert_eq!(total.item::<f64>().unwrap(), 13.0);
    let coef = 6.5 / (13.0 + 1e-6);
    let ga = a.grad().unwrap().to_vec::<f64>().unwrap();
    let gb = b.grad().unwrap().to_vec::<f64>().unwrap();
    assert_eq!(ga, vec![3.0 * coef, -4.0 * coef]);
    assert_eq!(gb, vec![12.0 * coef]);
    assert!(none.grad().is_none());
    assert_eq!(
        held.to_vec::<f64>().unwrap(),
        vec![3.0, -4.0],
        "a gradient handle held elsewhere keeps its value"
    );

    // Below the bound: scaled by min(1, ...) = 1.
    let (a, b, _) = clip_setup();
    let total = clip_grad_norm_([&a, &b], 100.0, 2.0);
    assert_eq!(total.item::<f64>().unwrap(), 13.0);
    assert_eq!(a.grad().unwrap().to_vec::<f64>().unwrap(), vec![3.0, -4.0]);

    // Other norms: 1 (3 + 4 + 12 = 19), infinity (12), 3 ((27 + 64 + 1728)^(1/3)).
    for (p, want) in [
        (1.0, 19.0),
        (f64::INFINITY, 12.0),
        (3.0, (27.0f64 + 64.0 + 1728.0).powf(1.0 / 3.0)),
    ] {
        let (a, b, _) = clip_setup();
        let total = clip_grad_norm_([&a, &b], 1.0, p).item::<f64>().unwrap();
        assert!((total - want).abs() < 1e-12, "norm {p}: {total} vs {want}");
        let gb = b.grad().unwrap().to_vec::<f64>().unwrap()[0];
        assert!((gb - 12.0 / (want + 1e-6)).abs() < 1e-12, "norm {p}");
    }

    // No gradients at all: total 0.
    let w = Tensor::zeros([2]).requires_grad_(true);
    assert_eq!(clip_grad_norm_([&w], 1.0, 2.0).item::<f32>().unwrap(), 0.0);
}

// ---------------------------------------------------------------------------------------------
// The training step: one schedule, steady state compiles nothing, everything realized.

/// A 2-layer MLP (16-32-2) on a separable problem: the class is whether x·u > 0.
struct Mlp {
    params: Vec<Tensor>,
}

impl Mlp {
    fn new() -> Mlp {
        metajit::manual_seed(11);
        let init = |shape: [usize; 2], fan_in: usize| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let t = Tensor::rand(shape) * (2.0 * bound) - bound;
            t.realize().unwrap();
            t.detach().requires_grad_(true)
        };
        Mlp {
            params: vec![
                init([16, 32], 16),
                init([1, 32], 16),
                init([32, 2], 32),
                init([1, 2], 32),
            ],
        }
    }

    fn logits(&self, x: &Tensor) -> Tensor {
        let p = &self.params;
        let h = (x.matmul(&p[0]) + &p[1]).relu();
        h.matmul(&p[2]) + &p[3]
    }

    fn loss(&self, x: &Tensor, labels: &Tensor) -> Tensor {
        let logits = self.logits(x);
        let logp = &logits - logits.logsumexp(1, true);
        -logp.gather(1, &labels.unsqueeze(1)).mean_all()
    }

    fn accuracy(&self, x: &Tensor, labels: &Tensor) -> f64 {
        let pred = metajit::no_grad(|| self.logits(x).argmax(1, false));
        let p = pred.to_vec::<i64>().unwrap();
        let l = labels.to_vec::<i64>().unwrap();
        assert_eq!(p.len(), l.len());
        p.iter().zip(&l).filter(|(a, b)| a == b).count() as f64 / l.len() as f64
    }
}

/// A batch of the separable problem: x ~ N(0, 1)^16, label = [x·u > 0] for a fixed u.
fn batch(n: usize, seed: u64) -> (Tensor, Tensor) {
    metajit::manual_seed(seed);
    let x = Tensor::randn([n, 16]);
    metajit::manual_seed(5);
    let u = Tensor::randn([16, 1]);
    let labels = x.matmul(&u).gt(0.0).cast(DType::I64).reshape([n]);
    metajit::realize_all(&[&x, &labels]).unwrap();
    (x, labels)
}

#[test]
fn a_training_step_is_one_schedule_and_steady_state_compiles_nothing() {
    let _g = serial();
    metajit::set_mode(metajit::Mode::Compiled);
    metajit::set_cache_mode(metajit::CacheMode::Memory);
    let model = Mlp::new();
    let mut opt = Adam::new(
        model.params.clone(),
        AdamConfig {
            lr: 0.01,
            weight_decay: 1e-4,
            amsgrad: true,
            ..Default::default()
        },
    );
    // A schedule changes the learning rate every step; clipping rides along.
    // Past t ≈ 160, where 1 - 0.9^t rounds to 1 in f32: a bias correction recorded as a
    // constant would fold away there (x / 1 -> x) and change the graph.
    let steps = 200;
    let mut sched = CosineAnnealingLr::new(&opt, steps, 1e-4);
    let batches: Vec<(Tensor, Tensor)> = (0..4).map(|k| batch(64, 100 + k)).collect();
    let mut per_step = None;
    for k in 0..steps {
        let (x, labels) = &batches[k % batches.len()];
        if k == 100 {
            // A learning rate of exactly 1 (a constant 1 would fold away: x * 1 -> x).
            opt.set_lr(1.0);
        }
        let c0 = counters();
        opt.zero_grad();
        let loss = model.loss(x, labels);
        loss.backward();
        let norm = clip_grad_norm_(opt.params(), 5.0, 2.0);
        opt.step();
        opt.realize_with(&[&loss, &norm]).unwrap();
        let c1 = counters();
        let runs = c1.0 - c0.0;
        assert_eq!(c1.2 - c0.2, 1 - (k > 0) as u64, "step {k}: plans scheduled");
        if k == 0 {
            assert!(c1.1 > c0.1, "the first step compiles its kernels");
            per_step = Some(runs);
            eprintln!("MLP 16-32-2 Adam(amsgrad, wd) + clip + cosine: {runs} kernels per step");
        } else {
            assert_eq!(c1.1 - c0.1, 0, "step {k} compiled kernels");
            assert_eq!(
                Some(runs),
                per_step,
                "step {k}: the same kernels every step"
            );
        }
        for t in opt.tensors().iter().chain([&loss, &norm]) {
            assert!(
                t.is_realized(),
                "step {k}: a parameter or state tensor is lazy"
            );
        }
        sched.step(&mut opt);
    }
    assert!(opt.lr() < 0.01);
}

#[test]
fn adam_trains_an_mlp_to_95_percent() {
    let _g = serial();
    let model = Mlp::new();
    let mut opt = Adam::new(
        model.params.clone(),
        AdamConfig {
            lr: 0.01,
            ..Default::default()
        },
    );
    let batches: Vec<(Tensor, Tensor)> = (0..8).map(|k| batch(64, 200 + k)).collect();
    let (test_x, test_labels) = batch(512, 999);
    let before = model.accuracy(&test_x, &test_labels);
    let mut acc = before;
    for epoch in 0..30 {
        for (x, labels) in &batches {
            opt.zero_grad();
            let loss = model.loss(x, labels);
            loss.backward();
            opt.step();
            opt.realize_with(&[&loss]).unwrap();
        }
        acc = model.accuracy(&test_x, &test_labels);
        if acc >= 0.95 {
            eprintln!(
                "MLP 16-32-2 with Adam: test accuracy {before:.3} -> {acc:.3} after {} steps",
                (epoch + 1) * batches.len()
            );
            break;
        }
    }
    assert!(acc >= 0.95, "test accuracy {acc} after 240 steps");
}

// ---------------------------------------------------------------------------------------------
// Misuse panics at the caller, naming the op.

fn param() -> Tensor {
    Tensor::zeros([2]).requires_grad_(true)
}

/// The message of `f`'s panic, which must point at this file.
fn misuse(f: impl FnOnce()) -> String {
    let caught = catch_quietly(f).expect("the call was expected to panic");
    let (file, _) = caught.location.clone().expect("a location");
    assert!(
        file.ends_with("optim.rs"),
        "the panic points at {file}, not the caller"
    );
    caught.message().unwrap_or_default()
}

#[test]
fn misuse_panics_name_the_op() {
    let _g = serial();
    let cases: Vec<(String, &str)> = vec![
        (
            misuse(|| {
                Sgd::new(
                    [param()],
                    SgdConfig {
                        lr: -0.1,
                        ..Default::default()
                    },
                );
            }),
            "bad argument to Sgd::new: lr must be a finite number >= 0, got -0.1",
        ),
        (
            misuse(|| {
                Sgd::new(
                    [param()],
                    SgdConfig {
                        nesterov: true,
                        ..Default::default()
                    },
                );
            }),
            "bad argument to Sgd::new: Nesterov momentum requires a momentum > 0 and zero dampening, got momentum 0 and dampening 0",
        ),
        (
            misuse(|| {
                Sgd::new(
                    [param()],
                    SgdConfig {
                        nesterov: true,
                        momentum: 0.9,
                        dampening: 0.1,
                        ..Default::default()
                    },
                );
            }),
            "Nesterov momentum requires a momentum > 0 and zero dampening, got momentum 0.9 and dampening 0.1",
        ),
        (
            misuse(|| {
                Adam::new(
                    [param()],
                    AdamConfig {
                        lr: f64::NAN,
                        ..Default::default()
                    },
                );
            }),
            "bad argument to Adam::new: lr must be a finite number >= 0, got NaN",
        ),
        (
            misuse(|| {
                AdamW::new(
                    [param()],
                    AdamWConfig {
                        betas: (0.9, 1.0),
                        ..Default::default()
                    },
                );
            }),
            "bad argument to AdamW::new: betas.1 must be in [0, 1), got 1",
        ),
        (
            misuse(|| {
                Adam::new(Vec::new(), AdamConfig::default());
            }),
            "bad argument to Adam::new: the parameter list is empty",
        ),
        (
            misuse(|| {
                Sgd::new([Tensor::zeros_dtype([2], DType::I64)], SgdConfig::default());
            }),
            "dtype mismatch in Sgd::new: parameters must be float tensors, got i64 (shape [2])",
        ),
        (
            misuse(|| {
                let mut opt = Adam::new([param()], AdamConfig::default());
                opt.set_lr(-1.0);
            }),
            "bad argument to Adam::set_lr: lr must be a finite number >= 0, got -1",
        ),
        (
            misuse(|| {
                let opt = Sgd::new([param()], SgdConfig::default());
                StepLr::new(&opt, 0, 0.1);
            }),
            "bad argument to StepLr::new: step_size must be > 0",
        ),
        (
            misuse(|| {
                clip_grad_norm_([&param()], 1.0, 0.0);
            }),
            "bad argument to clip_grad_norm_: norm_type must be a number > 0",
        ),
    ];
    for (got, want) in cases {
        assert!(got.contains(want), "panic message {got:?} lacks {want:?}");
    }
}
