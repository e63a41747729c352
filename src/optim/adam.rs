//! Adam and AdamW (PyTorch's `torch.optim.Adam` and `torch.optim.AdamW`): one algorithm, with
//! weight decay either added to the gradient (Adam's L2 penalty) or applied to the parameter
//! before the update (AdamW's decoupled decay).

use super::{Optimizer, Scalars, check_non_negative, collect_params, zeros_like_realized};
use crate::{Tensor, no_grad};

/// The hyper-parameters of [`Adam`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment estimates (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient: `g + weight_decay * p` (default 0).
    pub weight_decay: f64,
    /// Use the maximum of all second moment estimates so far (AMSGrad; default false).
    pub amsgrad: bool,
    /// Maximize the objective instead of minimizing it (default false).
    pub maximize: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
        }
    }
}

/// The hyper-parameters of [`AdamW`], with PyTorch's defaults: as [`AdamConfig`], but the
/// weight decay is decoupled and defaults to 0.01.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment estimates (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay: `p = p * (1 - lr * weight_decay)` before the update
    /// (default 0.01).
    pub weight_decay: f64,
    /// Use the maximum of all second moment estimates so far (AMSGrad; default false).
    pub amsgrad: bool,
    /// Maximize the objective instead of minimizing it (default false).
    pub maximize: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
            maximize: false,
        }
    }
}

/// The algorithm both optimizers run.
struct Core {
    params: Vec<Tensor>,
    /// The hyper-parameters (`lr` is the current learning rate); for AdamW, its own config's
    /// fields.
    config: AdamConfig,
    /// AdamW's decoupled decay instead of Adam's L2 penalty.
    decoupled: bool,
    /// First moment estimates (realized zeros before a parameter's first step).
    exp_avg: Vec<Tensor>,
    /// Second moment estimates.
    exp_avg_sq: Vec<Tensor>,
    /// Running maxima of the second moment estimates (AMSGrad only; else empty).
    max_exp_avg_sq: Vec<Tensor>,
    /// Steps taken by each parameter (a parameter without a gradient skips a step).
    steps: Vec<u64>,
}

impl Core {
    #[track_caller]
    fn new(
        op: &str,
        params: impl IntoIterator<Item = Tensor>,
        config: AdamConfig,
        decoupled: bool,
    ) -> Core {
        let AdamConfig {
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            ..
        } = config;
        check_non_negative(op, "lr", lr);
        check_non_negative(op, "eps", eps);
        check_non_negative(op, "weight_decay", weight_decay);
        for (k, b) in [betas.0, betas.1].into_iter().enumerate() {
            if !(0.0..1.0).contains(&b) {
                panic!("bad argument to {op}: betas.{k} must be in [0, 1), got {b}");
            }
        }
        let params = collect_params(op, params);
        let zeros = |on: bool| -> Vec<Tensor> {
            if on {
                params.iter().map(zeros_like_realized).collect()
            } else {
                Vec::new()
            }
        };
        Core {
            exp_avg: zeros(true),
            exp_avg_sq: zeros(true),
            max_exp_avg_sq: zeros(amsgrad),
            steps: vec![0; params.len()],
            params,
            config,
            decoupled,
        }
    }

    fn step(&mut self) {
        let AdamConfig {
            lr,
            betas: (beta1, beta2),
            eps,
            weight_decay,
            amsgrad,
            maximize,
        } = self.config;
        let mut scalars = Scalars::default();
        no_grad(|| {
            for (i, p) in self.params.iter().enumerate() {
                let Some(g) = p.grad() else { continue };
                self.steps[i] += 1;
                let t = self.steps[i];
                let mut g = if maximize { g.neg() } else { g };
                // The parameter the update starts from: AdamW decays it first.
                let mut base = p.clone();
                if weight_decay != 0.0 {
                    if self.decoupled {
                        let decay = 1.0 - lr * weight_decay;
                        base = p.mul(&scalars.get(("adamw decay", 0), decay, p));
                    } else {
                        g = g.add(&p.mul(weight_decay));
                    }
                }
                // m = lerp(m, g, 1 - beta1), as PyTorch's lerp computes it.
                let m = &self.exp_avg[i];
                let w = 1.0 - beta1;
                let diff = g.sub(m);
                let m_new = if w < 0.5 {
                    m.add(&diff.mul(w))
                } else {
                    g.sub(&diff.mul(1.0 - w))
                };
                m.assign(&m_new);
                let v = &self.exp_avg_sq[i];
                v.assign(&v.mul(beta2).add(&g.mul(&g).mul(1.0 - beta2)));
                let v_hat = if amsgrad {
                    let vmax = &self.max_exp_avg_sq[i];
                    vmax.assign(&vmax.maximum(v));
                    vmax
                } else {
                    v
                };
                let bias_correction1 = 1.0 - beta1.powf(t as f64);
                let bias_correction2 = 1.0 - beta2.powf(t as f64);
                let step_size = scalars.get(("adam step size", t), lr / bias_correction1, p);
                let bc2_sqrt = scalars.get(("adam bc2 sqrt", t), bias_correction2.sqrt(), p);
                let denom = v_hat.sqrt().div(&bc2_sqrt).add(eps);
                p.assign(&base.sub(&m.div(&denom).mul(&step_size)));
            }
        });
    }

    fn state(&self) -> Vec<Tensor> {
        let mut s = self.exp_avg.clone();
        s.extend(self.exp_avg_sq.iter().cloned());
        s.extend(self.max_exp_avg_sq.iter().cloned());
        s
    }
}

/// Adam (PyTorch's `torch.optim.Adam`). For each parameter `p` with gradient `g`, on its
/// `t`-th step:
///
/// ```text
/// g = -g                              if maximize
/// g = g + weight_decay * p            if weight_decay != 0
/// m = lerp(m, g, 1 - beta1)
/// v = beta2 * v + (1 - beta2) * g²
/// v̂ = max(v̂, v) if amsgrad, else v
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v̂) / sqrt(1 - beta2^t) + eps)
/// ```
///
/// ```
/// use metajit::Tensor;
/// use metajit::optim::{Adam, AdamConfig, Optimizer};
/// let w = Tensor::from_vec(vec![1.0f32, -2.0], [2]).requires_grad_(true);
/// let mut opt = Adam::new([w.clone()], AdamConfig { lr: 0.1, ..Default::default() });
/// (&w * &w).sum_all().backward();
/// opt.step();
/// opt.realize_with(&[]).unwrap();
/// let v = w.to_vec::<f32>().unwrap(); // the first step moves each weight by about lr
/// assert!((v[0] - 0.9).abs() < 1e-6 && (v[1] + 1.9).abs() < 1e-6);
/// ```
pub struct Adam(Core);

impl Adam {
    /// An Adam optimizer over `params` (duplicates are dropped).
    ///
    /// # Panics
    /// When the list is empty or holds a non-float tensor, `lr`, `eps` or `weight_decay` is
    /// negative or not finite, or a beta is outside `[0, 1)`.
    #[track_caller]
    pub fn new(params: impl IntoIterator<Item = Tensor>, config: AdamConfig) -> Adam {
        Adam(Core::new("Adam::new", params, config, false))
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> AdamConfig {
        self.0.config
    }

    /// How many steps each parameter has taken (PyTorch's `state[p]["step"]`).
    pub fn steps(&self) -> &[u64] {
        &self.0.steps
    }
}

/// AdamW (PyTorch's `torch.optim.AdamW`): Adam with decoupled weight decay. Each step first
/// decays the parameter, `p = p * (1 - lr * weight_decay)`, then applies Adam's update
/// (without an L2 term in the gradient).
///
/// ```
/// use metajit::Tensor;
/// use metajit::optim::{AdamW, AdamWConfig, Optimizer};
/// let w = Tensor::from_vec(vec![1.0f32], [1]).requires_grad_(true);
/// let mut opt = AdamW::new([w.clone()], AdamWConfig { lr: 0.1, weight_decay: 0.5, ..Default::default() });
/// (&w * &w).sum_all().backward();
/// opt.step();
/// opt.realize_with(&[]).unwrap();
/// // 1 * (1 - 0.1 * 0.5) - 0.1
/// assert!((w.to_vec::<f32>().unwrap()[0] - 0.85).abs() < 1e-6);
/// ```
#[doc(alias = "ADAMW")]
pub struct AdamW(Core);

impl AdamW {
    /// An AdamW optimizer over `params` (duplicates are dropped).
    ///
    /// # Panics
    /// When the list is empty or holds a non-float tensor, `lr`, `eps` or `weight_decay` is
    /// negative or not finite, or a beta is outside `[0, 1)`.
    #[track_caller]
    pub fn new(params: impl IntoIterator<Item = Tensor>, config: AdamWConfig) -> AdamW {
        let AdamWConfig {
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize,
        } = config;
        let config = AdamConfig {
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize,
        };
        AdamW(Core::new("AdamW::new", params, config, true))
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> AdamWConfig {
        let c = self.0.config;
        AdamWConfig {
            lr: c.lr,
            betas: c.betas,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
            maximize: c.maximize,
        }
    }

    /// How many steps each parameter has taken (PyTorch's `state[p]["step"]`).
    pub fn steps(&self) -> &[u64] {
        &self.0.steps
    }
}

macro_rules! adam_optimizer {
    ($t:ty, $name:literal) => {
        impl Optimizer for $t {
            fn step(&mut self) {
                self.0.step();
            }

            fn params(&self) -> &[Tensor] {
                &self.0.params
            }

            fn state(&self) -> Vec<Tensor> {
                self.0.state()
            }

            fn lr(&self) -> f64 {
                self.0.config.lr
            }

            #[track_caller]
            fn set_lr(&mut self, lr: f64) {
                check_non_negative(concat!($name, "::set_lr"), "lr", lr);
                self.0.config.lr = lr;
            }
        }
    };
}
adam_optimizer!(Adam, "Adam");
adam_optimizer!(AdamW, "AdamW");
