//! Optimizers ([`Sgd`], [`Adam`], [`AdamW`]), learning-rate schedules ([`StepLr`],
//! [`CosineAnnealingLr`]) and gradient clipping ([`clip_grad_norm_`]), with PyTorch's
//! algorithms and defaults (`torch.optim`, single-tensor form).
//!
//! Guarantees:
//! - [`Optimizer::step`] computes nothing: it gives every parameter that has a gradient its
//!   new value, and the optimizer state its new value, through [`Tensor::assign`] under
//!   [`no_grad`](crate::no_grad). [`Optimizer::realize_with`] then realizes the loss (or
//!   anything else), every parameter and every state tensor as **one** schedule, after which
//!   all of them are realized: no lazy chain grows from step to step.
//! - A parameter whose gradient is `None` is skipped, its state untouched (as PyTorch).
//! - Values that change from step to step — the learning rate a schedule sets, Adam's bias
//!   corrections — enter the graph as rank-0 input buffers, not as constants: the graph of
//!   every step has the same structure, so steady-state steps compile no kernel and schedule
//!   no new plan. (A scalar constant would be a runtime kernel parameter too, but constant
//!   folding rewrites `x * 1` and `x / 1`, so a bias correction that rounds to 1 after a few
//!   hundred steps, or a learning rate of 1, would change the graph's structure.)
//! - State starts as realized zeros, so the first step's graph has the structure of every
//!   later one (SGD's first momentum buffer is the gradient itself, as PyTorch's: the
//!   gradient's factor `1 - dampening` is a runtime scalar that is 1 on that step).
//!
//! A training loop:
//!
//! ```
//! use metajit::Tensor;
//! use metajit::optim::{Adam, AdamConfig, CosineAnnealingLr, LrScheduler, Optimizer};
//! # fn main() -> metajit::Result<()> {
//! let x = Tensor::randn([32, 4]);
//! let y = x.matmul(&Tensor::from_vec(vec![1.0f32, -2.0, 0.5, 3.0], [4, 1]));
//! let w = Tensor::zeros([4, 1]).requires_grad_(true);
//! let mut opt = Adam::new([w.clone()], AdamConfig { lr: 0.1, ..Default::default() });
//! let mut sched = CosineAnnealingLr::new(&opt, 100, 0.0);
//! let mut first = None;
//! for _ in 0..100 {
//!     opt.zero_grad();
//!     let loss = (x.matmul(&w) - &y).square().mean_all();
//!     loss.backward();
//!     opt.step();
//!     opt.realize_with(&[&loss])?; // forward, backward and update: one schedule
//!     first.get_or_insert(loss.item::<f32>()?);
//!     sched.step(&mut opt);
//! }
//! let last = (x.matmul(&w) - &y).square().mean_all().item::<f32>()?;
//! assert!(last < 1e-3 * first.unwrap());
//! # Ok(())
//! # }
//! ```

mod adam;
mod clip;
mod lr_scheduler;
mod sgd;

use std::collections::HashMap;
use std::sync::Arc;

use metajit_metaops::{DType, HostData, Scalar, Shape};

pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use clip::clip_grad_norm_;
pub use lr_scheduler::{CosineAnnealingLr, LrScheduler, StepLr};
pub use sgd::{Sgd, SgdConfig};

use crate::Tensor;
use crate::error::Result;

/// What every optimizer offers: a lazy [`step`](Optimizer::step), clearing gradients, the
/// learning rate a schedule drives, and the tensors a step updates.
pub trait Optimizer {
    /// Records one update of every parameter that has a gradient (and of its state), lazily:
    /// nothing runs until [`realize_with`](Optimizer::realize_with) (or any realize).
    fn step(&mut self);

    /// The parameters, in the order given at construction (duplicates removed).
    fn params(&self) -> &[Tensor];

    /// The state tensors (momentum buffers, moment estimates), in a fixed order. A state
    /// tensor keeps its handle across steps (it takes new values by
    /// [`assign`](Tensor::assign)).
    fn state(&self) -> Vec<Tensor>;

    /// The learning rate the next [`step`](Optimizer::step) uses.
    fn lr(&self) -> f64;

    /// Sets the learning rate (a schedule calls this). It enters the graph as a runtime
    /// value: a new learning rate compiles nothing.
    ///
    /// # Panics
    /// When `lr` is negative or NaN.
    fn set_lr(&mut self, lr: f64);

    /// Clears every parameter's gradient (PyTorch's `zero_grad(set_to_none=True)`).
    fn zero_grad(&self) {
        for p in self.params() {
            p.set_grad(None);
        }
    }

    /// Every tensor a step updates: the parameters, then the state.
    fn tensors(&self) -> Vec<Tensor> {
        let mut all = self.params().to_vec();
        all.extend(self.state());
        all
    }

    /// Realizes `others` (the loss, metrics), every parameter and every state tensor together,
    /// as one schedule: after a [`step`](Optimizer::step), the forward pass, the backward pass
    /// and the update run as one fused graph.
    fn realize_with(&self, others: &[&Tensor]) -> Result<()> {
        let mine = self.tensors();
        let mut all: Vec<&Tensor> = others.to_vec();
        all.extend(mine.iter());
        crate::realize_all(&all)
    }
}

/// Checks a hyper-parameter that must be a finite number ≥ 0.
#[track_caller]
pub(crate) fn check_non_negative(op: &str, name: &str, v: f64) {
    if !(v >= 0.0 && v.is_finite()) {
        panic!("bad argument to {op}: {name} must be a finite number >= 0, got {v}");
    }
}

/// The parameters as given, without duplicates (a tied weight listed twice would be updated
/// twice).
#[track_caller]
pub(crate) fn collect_params(op: &str, params: impl IntoIterator<Item = Tensor>) -> Vec<Tensor> {
    let mut out: Vec<Tensor> = Vec::new();
    for p in params {
        if !p.dtype().is_float() {
            panic!(
                "dtype mismatch in {op}: parameters must be float tensors, got {} (shape {})",
                p.dtype(),
                p.shape()
            );
        }
        if !out.iter().any(|q| Arc::ptr_eq(&q.0, &p.0)) {
            out.push(p);
        }
    }
    if out.is_empty() {
        panic!("bad argument to {op}: the parameter list is empty");
    }
    out
}

/// Realized zeros shaped like `p`, on its device (state starts computed, so the first step's
/// graph has the structure of every later one).
pub(crate) fn zeros_like_realized(p: &Tensor) -> Tensor {
    Tensor::from_host_on(
        HostData::zeros(p.dtype(), p.numel()),
        p.shape().clone(),
        p.device(),
    )
}

/// Rank-0 input buffers for the values that change between steps, shared within a step by
/// role (a name and a discriminator such as a step count), never by value: two roles whose
/// values happen to coincide stay two inputs, so the graph's structure does not depend on
/// the values.
#[derive(Default)]
pub(crate) struct Scalars(HashMap<(&'static str, u64, DType, crate::Device), Tensor>);

impl Scalars {
    /// The value `v` of `role` as a computed rank-0 tensor of the dtype and on the device of
    /// the parameter `like` (the first value given for a role within a step is kept).
    pub(crate) fn get(&mut self, role: (&'static str, u64), v: f64, like: &Tensor) -> Tensor {
        let (dtype, device) = (like.dtype(), like.device());
        self.0
            .entry((role.0, role.1, dtype, device))
            .or_insert_with(|| {
                Tensor::from_host_on(
                    HostData::filled(Scalar::from_f64(v, dtype), 1),
                    Shape::scalar(),
                    device,
                )
            })
            .clone()
    }
}
