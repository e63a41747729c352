//! Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay
//! (PyTorch's `torch.optim.SGD`).

use super::{Optimizer, Scalars, check_non_negative, collect_params, zeros_like_realized};
use crate::{Tensor, no_grad};

/// The hyper-parameters of [`Sgd`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (default 1e-3, as PyTorch 2).
    pub lr: f64,
    /// Momentum factor (default 0: plain SGD).
    pub momentum: f64,
    /// Dampening of the gradient's contribution to the momentum buffer (default 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient: `g + weight_decay * p` (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (default false; needs `momentum > 0` and `dampening == 0`).
    pub nesterov: bool,
    /// Maximize the objective instead of minimizing it (default false).
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

/// Stochastic gradient descent (PyTorch's `torch.optim.SGD`). For each parameter `p` with
/// gradient `g`, at learning rate `lr`:
///
/// ```text
/// g = -g                              if maximize
/// g = g + weight_decay * p            if weight_decay != 0
/// if momentum != 0:
///     b = g                           on the parameter's first step
///     b = momentum * b + (1 - dampening) * g   after
///     g = g + momentum * b            if nesterov, else g = b
/// p = p - lr * g
/// ```
///
/// ```
/// use metajit::Tensor;
/// use metajit::optim::{Optimizer, Sgd, SgdConfig};
/// let w = Tensor::from_vec(vec![1.0f32, -2.0], [2]).requires_grad_(true);
/// let mut opt = Sgd::new([w.clone()], SgdConfig { lr: 0.5, momentum: 0.9, ..Default::default() });
/// (&w * &w).sum_all().backward(); // gradient 2w
/// opt.step();
/// opt.realize_with(&[]).unwrap();
/// assert_eq!(w.to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
/// ```
#[doc(alias = "SGD")]
pub struct Sgd {
    params: Vec<Tensor>,
    config: SgdConfig,
    /// Momentum buffers (empty without momentum), realized zeros until a parameter's first
    /// step.
    buffers: Vec<Tensor>,
    /// Whether each parameter has taken a step (its buffer holds a value).
    started: Vec<bool>,
}

impl Sgd {
    /// An SGD optimizer over `params` (duplicates are dropped).
    ///
    /// # Panics
    /// When the list is empty or holds a non-float tensor, a hyper-parameter is negative or
    /// not finite, or `nesterov` is set without `momentum > 0` and `dampening == 0`.
    #[track_caller]
    pub fn new(params: impl IntoIterator<Item = Tensor>, config: SgdConfig) -> Sgd {
        const OP: &str = "Sgd::new";
        check_non_negative(OP, "lr", config.lr);
        check_non_negative(OP, "momentum", config.momentum);
        check_non_negative(OP, "dampening", config.dampening);
        check_non_negative(OP, "weight_decay", config.weight_decay);
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            panic!(
                "bad argument to {OP}: Nesterov momentum requires a momentum > 0 and zero dampening, got momentum {} and dampening {}",
                config.momentum, config.dampening
            );
        }
        let params = collect_params(OP, params);
        let buffers = if config.momentum != 0.0 {
            params.iter().map(zeros_like_realized).collect()
        } else {
            Vec::new()
        };
        Sgd {
            started: vec![false; params.len()],
            params,
            config,
            buffers,
        }
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) {
        let c = self.config;
        let mut scalars = Scalars::default();
        no_grad(|| {
            for (i, p) in self.params.iter().enumerate() {
                let Some(g) = p.grad() else { continue };
                let mut g = if c.maximize { g.neg() } else { g };
                if c.weight_decay != 0.0 {
                    g = g.add(&p.mul(c.weight_decay));
                }
                if c.momentum != 0.0 {
                    let b = &self.buffers[i];
                    // The buffer starts at zero: on the first step `momentum * 0 + 1 * g` is
                    // g exactly, as PyTorch's `clone(g)`.
                    let first = !self.started[i];
                    let keep = if first { 1.0 } else { 1.0 - c.dampening };
                    let keep = scalars.get(("sgd keep", first as u64), keep, p);
                    b.assign(&b.mul(c.momentum).add(&g.mul(&keep)));
                    g = if c.nesterov {
                        g.add(&b.mul(c.momentum))
                    } else {
                        b.clone()
                    };
                }
                let lr = scalars.get(("lr", 0), c.lr, p);
                p.assign(&p.sub(&g.mul(&lr)));
                self.started[i] = true;
            }
        });
    }

    fn params(&self) -> &[Tensor] {
        &self.params
    }

    fn state(&self) -> Vec<Tensor> {
        self.buffers.clone()
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    #[track_caller]
    fn set_lr(&mut self, lr: f64) {
        check_non_negative("Sgd::set_lr", "lr", lr);
        self.config.lr = lr;
    }
}
