//! Learning-rate schedules (PyTorch's `torch.optim.lr_scheduler`), in closed form: the rate
//! at epoch `e` is a function of `e` alone, so it does not drift with rounding over a long
//! run. A schedule sets the optimizer's learning rate, which enters the step's graph as a
//! runtime value: a new rate compiles nothing.

use super::Optimizer;

/// A learning-rate schedule driving an [`Optimizer`].
///
/// As PyTorch's: constructing one reads the optimizer's learning rate as the base rate
/// (epoch 0); each [`step`](LrScheduler::step), called after the optimizer's step (once per
/// epoch, or once per iteration for a per-iteration schedule), advances the epoch and sets
/// the optimizer's rate to [`lr_at`](LrScheduler::lr_at) of it.
pub trait LrScheduler {
    /// The learning rate at `epoch`.
    fn lr_at(&self, epoch: usize) -> f64;

    /// The current epoch (0 after construction).
    fn epoch(&self) -> usize;

    /// Advances the epoch by one and sets `opt`'s learning rate for it.
    fn step(&mut self, opt: &mut dyn Optimizer);

    /// The rate of the current epoch (PyTorch's `get_last_lr()`).
    fn last_lr(&self) -> f64 {
        self.lr_at(self.epoch())
    }
}

/// Decays the learning rate by `gamma` every `step_size` epochs (PyTorch's `StepLR`):
/// `lr = base_lr * gamma^(epoch / step_size)` (integer division).
///
/// ```
/// use metajit::Tensor;
/// use metajit::optim::{LrScheduler, Optimizer, Sgd, SgdConfig, StepLr};
/// let w = Tensor::zeros([1]).requires_grad_(true);
/// let mut opt = Sgd::new([w], SgdConfig { lr: 1.0, ..Default::default() });
/// let mut sched = StepLr::new(&opt, 2, 0.5);
/// let mut lrs = vec![opt.lr()];
/// for _ in 0..4 {
///     sched.step(&mut opt);
///     lrs.push(opt.lr());
/// }
/// assert_eq!(lrs, vec![1.0, 1.0, 0.5, 0.5, 0.25]);
/// ```
#[doc(alias = "StepLR")]
#[derive(Clone, Debug)]
pub struct StepLr {
    base_lr: f64,
    step_size: usize,
    gamma: f64,
    epoch: usize,
}

impl StepLr {
    /// A schedule starting from `opt`'s learning rate.
    ///
    /// # Panics
    /// When `step_size` is 0 or `gamma` is negative or not finite.
    #[track_caller]
    pub fn new(opt: &dyn Optimizer, step_size: usize, gamma: f64) -> StepLr {
        if step_size == 0 {
            panic!("bad argument to StepLr::new: step_size must be > 0");
        }
        super::check_non_negative("StepLr::new", "gamma", gamma);
        StepLr {
            base_lr: opt.lr(),
            step_size,
            gamma,
            epoch: 0,
        }
    }
}

impl LrScheduler for StepLr {
    fn lr_at(&self, epoch: usize) -> f64 {
        let k = epoch / self.step_size;
        self.base_lr * self.gamma.powi(i32::try_from(k).unwrap_or(i32::MAX))
    }

    fn epoch(&self) -> usize {
        self.epoch
    }

    fn step(&mut self, opt: &mut dyn Optimizer) {
        self.epoch += 1;
        opt.set_lr(self.lr_at(self.epoch));
    }
}

/// Anneals the learning rate from its base to `eta_min` along a half cosine over `t_max`
/// epochs (PyTorch's `CosineAnnealingLR`, closed form, without restarts):
/// `lr = eta_min + (base_lr - eta_min) * (1 + cos(π * epoch / t_max)) / 2`. Past `t_max`
/// the cosine continues (the rate rises again), as PyTorch's closed form does.
///
/// ```
/// use metajit::Tensor;
/// use metajit::optim::{CosineAnnealingLr, LrScheduler, Optimizer, Sgd, SgdConfig};
/// let w = Tensor::zeros([1]).requires_grad_(true);
/// let mut opt = Sgd::new([w], SgdConfig { lr: 0.1, ..Default::default() });
/// let mut sched = CosineAnnealingLr::new(&opt, 10, 0.0);
/// for _ in 0..5 {
///     sched.step(&mut opt);
/// }
/// assert!((opt.lr() - 0.05).abs() < 1e-12);
/// ```
#[doc(alias = "CosineAnnealingLR")]
#[derive(Clone, Debug)]
pub struct CosineAnnealingLr {
    base_lr: f64,
    t_max: usize,
    eta_min: f64,
    epoch: usize,
}

impl CosineAnnealingLr {
    /// A schedule starting from `opt`'s learning rate.
    ///
    /// # Panics
    /// When `t_max` is 0 or `eta_min` is negative or not finite.
    #[track_caller]
    pub fn new(opt: &dyn Optimizer, t_max: usize, eta_min: f64) -> CosineAnnealingLr {
        if t_max == 0 {
            panic!("bad argument to CosineAnnealingLr::new: t_max must be > 0");
        }
        super::check_non_negative("CosineAnnealingLr::new", "eta_min", eta_min);
        CosineAnnealingLr {
            base_lr: opt.lr(),
            t_max,
            eta_min,
            epoch: 0,
        }
    }
}

impl LrScheduler for CosineAnnealingLr {
    fn lr_at(&self, epoch: usize) -> f64 {
        let phase = std::f64::consts::PI * epoch as f64 / self.t_max as f64;
        self.eta_min + (self.base_lr - self.eta_min) * (1.0 + phase.cos()) / 2.0
    }

    fn epoch(&self) -> usize {
        self.epoch
    }

    fn step(&mut self, opt: &mut dyn Optimizer) {
        self.epoch += 1;
        opt.set_lr(self.lr_at(self.epoch));
    }
}
