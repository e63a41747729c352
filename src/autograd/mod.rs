//! Reverse-mode automatic differentiation, defined once on the meta-operators.
//!
//! A node that needs a gradient keeps an autograd record beside its lazy state: a **leaf**
//! (a tensor the user marked with [`Tensor::requires_grad_`], where `.grad` accumulates) or
//! **backward edges** (the rule — its meta-op, or a high-level op's declared rule — and its
//! input nodes). The record survives realization, so printing a loss leaves `backward()` its
//! graph, and it is dropped without recursion with the node.
//!
//! `backward()` walks the recorded nodes from the output in reverse creation order (a valid
//! reverse topological order: inputs are always created before their users), applies each
//! node's rule ([`rules`]) to the gradient flowing into it, and sums the contributions per
//! input. Gradients are lazy tensors built from meta-ops with recording off, so they fuse with
//! the forward pass and the parameter update into one schedule when realized together
//! ([`crate::realize_all`]). In eager mode the backward of a high-level op recorded as one
//! unit (a matmul) runs as one unit too.
//!
//! A hand-written training loop (the README's):
//!
//! ```
//! use metajit::{Tensor, no_grad, realize_all};
//! # fn main() -> metajit::Result<()> {
//! let x = Tensor::randn([64, 784]);
//! let labels = Tensor::from_vec((0..64).map(|i| i % 10).collect::<Vec<i64>>(), [64]);
//! let w = Tensor::randn([784, 10]).mul(0.01).detach().requires_grad_(true);
//! let mut losses = Vec::new();
//! for _step in 0..10 {
//!     let logits = x.matmul(&w);
//!     let logp = &logits - logits.logsumexp(1, true);
//!     let loss = -logp.gather(1, &labels.unsqueeze(1)).mean_all();
//!     loss.backward();
//!     no_grad(|| w.assign(&(&w - w.grad().unwrap() * 0.1))); // every holder of w sees it
//!     w.zero_grad();
//!     realize_all(&[&loss, &w])?; // forward + backward + update: one schedule
//!     losses.push(loss.item::<f32>()?);
//! }
//! assert!(losses[9] < losses[0]);
//! # Ok(())
//! # }
//! ```
//!
//! In eager mode a failure to run a kernel during `backward()` panics, as it does for every
//! eager op (the value cannot be returned lazily); compiled mode reports it as an `Err` from
//! the realize that runs the gradient.
//!
//! Higher derivatives: [`grad_create_graph`] records the gradient computation itself, so its
//! result can be differentiated again (a gradient with no differentiable path to the inputs,
//! such as relu's mask, does not require grad: its derivative is zero).
//!
//! Semantics follow PyTorch, with two choices stated: the graph is kept after `backward()`
//! (as `retain_graph=True`; it is freed with the output), and [`grad`] returns zeros for an
//! input the outputs do not depend on (PyTorch raises unless `allow_unused`).

pub mod rules;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use metajit_metaops::{DType, Op};

pub(crate) use rules::{Custom, Rule};

use crate::config;
use crate::tensor::{NodeRef, Tensor, lock};

/// A node's autograd record.
pub(crate) enum Autograd {
    /// No gradient flows here.
    None,
    /// A leaf that requires grad: `.grad` accumulates in the cell, which the tensor's handle
    /// owns (kept across [`Tensor::assign`]). The node holds it weakly: a gradient usually
    /// reads the leaf's value, and a strong reference would make a cycle (node → cell →
    /// gradient → node) that nothing frees. With no handle left, no one can read the
    /// gradient, and backward skips it.
    Leaf(Weak<Leaf>),
    /// A result of a differentiable op with an input that requires grad.
    Fn(Box<GradFn>),
}

/// Where a leaf's gradient accumulates.
#[derive(Default)]
pub(crate) struct Leaf {
    pub(crate) grad: Mutex<Option<Tensor>>,
}

/// Backward edges: how to send a node's gradient to its inputs.
pub(crate) struct GradFn {
    pub(crate) rule: Rule,
    /// Every input (rules read their values).
    pub(crate) inputs: Vec<NodeRef>,
    /// Which inputs required grad when the op was recorded: only those get a gradient, so
    /// marking a tensor later does not change graphs recorded before (as in PyTorch).
    pub(crate) tracked: Vec<bool>,
    /// Where `backward()` also accumulates this node's own gradient ([`Tensor::retain_grad`];
    /// the handle owns the cell, as a leaf's).
    pub(crate) retain: Option<Weak<Leaf>>,
}

impl GradFn {
    /// The inputs a gradient flows to.
    fn tracked_inputs(&self) -> impl Iterator<Item = &NodeRef> {
        self.inputs
            .iter()
            .zip(&self.tracked)
            .filter_map(|(i, t)| t.then_some(i))
    }
}

thread_local! {
    static NO_GRAD_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` with gradient recording off (PyTorch's `torch.no_grad()`): ops inside create no
/// backward edges. Nests; recording resumes when the outermost call returns or unwinds.
///
/// ```
/// use metajit::Tensor;
/// let w = Tensor::ones([3]).requires_grad_(true);
/// let y = metajit::no_grad(|| &w * 2.0);
/// assert!(w.requires_grad() && !y.requires_grad());
/// ```
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            NO_GRAD_DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
    NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
    let _g = Guard;
    f()
}

/// Runs `f` with gradient recording on, even inside [`no_grad`] (PyTorch's
/// `torch.enable_grad()`).
///
/// ```
/// use metajit::Tensor;
/// let w = Tensor::ones([3]).requires_grad_(true);
/// let y = metajit::no_grad(|| metajit::autograd::enable_grad(|| &w * 2.0));
/// assert!(y.requires_grad());
/// ```
pub fn enable_grad<T>(f: impl FnOnce() -> T) -> T {
    struct Guard(u32);
    impl Drop for Guard {
        fn drop(&mut self) {
            NO_GRAD_DEPTH.with(|d| d.set(self.0));
        }
    }
    let _g = Guard(NO_GRAD_DEPTH.with(|d| d.replace(0)));
    f()
}

/// Whether ops recorded now on this thread create backward edges (false inside [`no_grad`]).
pub fn is_grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get()) == 0
}

/// The autograd record of a new node of `op` over `inputs`.
pub(crate) fn record(op: &Op, dtype: DType, inputs: &[NodeRef]) -> Autograd {
    record_rule(|| Rule::Meta(op.clone()), dtype, inputs)
}

fn record_rule(rule: impl FnOnce() -> Rule, dtype: DType, inputs: &[NodeRef]) -> Autograd {
    if !rules::differentiable(dtype)
        || !is_grad_enabled()
        || !inputs.iter().any(|n| n.requires_grad())
    {
        return Autograd::None;
    }
    Autograd::Fn(Box::new(GradFn {
        rule: rule(),
        inputs: inputs.to_vec(),
        tracked: inputs.iter().map(|n| n.requires_grad()).collect(),
        retain: None,
    }))
}

/// Gives `out` — a fresh node just computed from `inputs` with recording off — the declared
/// rule `custom`.
pub(crate) fn with_custom_rule(out: Tensor, custom: Custom, inputs: &[&Tensor]) -> Tensor {
    let nodes: Vec<NodeRef> = inputs.iter().map(|t| t.node()).collect();
    let rec = record_rule(|| Rule::Custom(custom), out.dtype(), &nodes);
    if matches!(rec, Autograd::None) {
        return out;
    }
    let node = out.node();
    let mut slot = lock(&node.autograd);
    debug_assert!(
        matches!(*slot, Autograd::None),
        "a custom rule goes on a fresh node"
    );
    node.set_autograd(&mut slot, rec);
    drop(slot);
    out
}

/// What a walk computes: the leaves' `.grad` (backward), or the gradients of given nodes.
enum Goal<'a> {
    Leaves,
    Nodes(&'a [NodeRef]),
}

/// Walks the recorded graph from `roots` (each with the gradient flowing into it).
/// Returns the gradients of the goal's nodes by node id (for `Goal::Nodes`); for
/// `Goal::Leaves` it accumulates into each leaf's `.grad` and returns nothing. With
/// `create_graph`, the rules are recorded for autograd too, so the gradients can be
/// differentiated again.
fn walk(roots: &[(NodeRef, Tensor)], goal: Goal<'_>, create_graph: bool) -> HashMap<u64, Tensor> {
    // 1. The nodes that carry a gradient, reachable from the roots.
    let mut seen: HashMap<u64, NodeRef> = HashMap::new();
    let mut stack: Vec<NodeRef> = roots.iter().map(|(n, _)| n.clone()).collect();
    while let Some(n) = stack.pop() {
        if seen.contains_key(&n.id) || !n.requires_grad() {
            continue;
        }
        if let Autograd::Fn(f) = &*lock(&n.autograd) {
            stack.extend(f.tracked_inputs().cloned());
        }
        seen.insert(n.id, n);
    }
    let mut nodes: Vec<NodeRef> = seen.into_values().collect();
    nodes.sort_by_key(|n| n.id);

    // 2. Which of them lead to a wanted gradient (inputs come first in id order).
    let targets: Vec<u64> = match goal {
        Goal::Leaves => Vec::new(),
        Goal::Nodes(t) => t.iter().map(|n| n.id).collect(),
    };
    let mut needed: HashMap<u64, bool> = HashMap::with_capacity(nodes.len());
    for n in &nodes {
        let need = match (&goal, &*lock(&n.autograd)) {
            (Goal::Leaves, Autograd::Leaf(_)) => true,
            (Goal::Leaves, Autograd::Fn(f)) if f.retain.is_some() => true,
            (Goal::Nodes(_), _) if targets.contains(&n.id) => true,
            (_, Autograd::Fn(f)) => f
                .tracked_inputs()
                .any(|i| needed.get(&i.id).copied().unwrap_or(false)),
            _ => false,
        };
        needed.insert(n.id, need);
    }

    // 3. Gradients, in reverse creation order.
    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    for (n, g) in roots {
        accumulate(&mut grads, n.id, g.clone());
    }
    let mut found: HashMap<u64, Tensor> = HashMap::new();
    let mut leaf_updates: Vec<(Arc<Leaf>, Tensor)> = Vec::new();
    // Gradients are stored as fresh handles: rules pass `g` through (add, reshape, ...), and
    // two gradients must never be one handle that an `assign` to one would change for both.
    let fresh = |t: &Tensor| Tensor::from_node(t.node());
    let eager = config::mode() == config::Mode::Eager;
    let mut unit = 0u64;
    let recording = |f: &mut dyn FnMut()| {
        if create_graph {
            enable_grad(f)
        } else {
            no_grad(f)
        }
    };
    recording(&mut || {
        for n in nodes.iter().rev() {
            if !needed[&n.id] || !grads.contains_key(&n.id) {
                continue;
            }
            // Eager mode: a unit (one high-level op) ends; compute what it left pending —
            // including this node's gradient — before anything reads it.
            if eager && n.group != unit {
                if unit != 0 {
                    flush(&grads, &found, &leaf_updates);
                }
                unit = n.group;
            }
            let Some(g) = grads.remove(&n.id) else {
                continue;
            };
            if targets.contains(&n.id) {
                found.insert(n.id, fresh(&g));
            }
            let (rule, inputs, tracked) = match &*lock(&n.autograd) {
                Autograd::Leaf(l) => {
                    if matches!(goal, Goal::Leaves)
                        && let Some(l) = l.upgrade()
                    {
                        leaf_updates.push((l, fresh(&g)));
                    }
                    continue;
                }
                Autograd::Fn(f) => {
                    if matches!(goal, Goal::Leaves)
                        && let Some(cell) = f.retain.as_ref().and_then(Weak::upgrade)
                    {
                        leaf_updates.push((cell, fresh(&g)));
                    }
                    (f.rule.clone(), f.inputs.clone(), f.tracked.clone())
                }
                Autograd::None => continue,
            };
            let want: Vec<bool> = inputs
                .iter()
                .zip(&tracked)
                .map(|(i, &t)| t && needed.get(&i.id).copied().unwrap_or(false))
                .collect();
            let out = Tensor::from_node(n.clone());
            let xs: Vec<Tensor> = inputs.iter().cloned().map(Tensor::from_node).collect();
            let apply = || rules::input_grads(&rule, &out, &xs, &g, &want);
            let gi = if eager && n.group != 0 {
                config::as_one_op(apply)
            } else {
                apply()
            };
            for (i, gi) in inputs.iter().zip(gi) {
                if let Some(gi) = gi {
                    debug_assert_eq!(gi.shape(), &i.shape, "gradient shape of {:?}", rule);
                    debug_assert!(i.id < n.id, "inputs are recorded before their users");
                    accumulate(&mut grads, i.id, fresh(&gi));
                }
            }
        }
        if eager && unit != 0 {
            flush(&grads, &found, &leaf_updates);
        }
        for (leaf, g) in leaf_updates.drain(..) {
            let mut slot = lock(&leaf.grad);
            let sum = match slot.take() {
                Some(old) => old.add(&g),
                None => g,
            };
            *slot = Some(sum);
        }
    });
    found
}

/// Adds `g` to the gradient collected for node `id`.
fn accumulate(grads: &mut HashMap<u64, Tensor>, id: u64, g: Tensor) {
    let sum = match grads.remove(&id) {
        Some(old) => old.add(&g),
        None => g,
    };
    grads.insert(id, sum);
}

/// Eager mode: computes the gradients that the unit just finished left pending.
fn flush(grads: &HashMap<u64, Tensor>, found: &HashMap<u64, Tensor>, leaf: &[(Arc<Leaf>, Tensor)]) {
    let mut pending: Vec<NodeRef> = grads
        .values()
        .chain(found.values())
        .chain(leaf.iter().map(|(_, g)| g))
        .map(|t| t.node())
        .collect();
    // A deterministic order, so that the same step gives the same graph (a plan-cache hit).
    pending.sort_by_key(|n| n.id);
    pending.dedup_by_key(|n| n.id);
    if let Err(e) = crate::exec::realize(&pending) {
        panic!("eager execution failed in backward: {e}");
    }
}

/// The gradients of `outputs` with respect to `inputs`, without touching any `.grad`
/// (PyTorch's `torch.autograd.grad`). `grad_outputs` gives the gradient flowing into each
/// output (`None`: ones, which needs one-element outputs). An input the outputs do not depend
/// on gets zeros (PyTorch raises unless `allow_unused`); that includes a tensor given a new
/// value by [`Tensor::assign`] after the outputs were recorded — they read its old value.
/// The gradients are lazy tensors that do not require grad.
///
/// ```
/// use metajit::Tensor;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], [3]).requires_grad_(true);
/// let y = (&x * &x).sum_all();
/// let g = metajit::autograd::grad(&[&y], &[&x], None);
/// assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![2.0, 4.0, 6.0]);
/// assert!(x.grad().is_none());
/// ```
///
/// # Panics
/// When an input or an output does not require grad, an output is not one element and no
/// `grad_outputs` is given, or a given gradient's shape or dtype differs from its output's.
#[track_caller]
pub fn grad(
    outputs: &[&Tensor],
    inputs: &[&Tensor],
    grad_outputs: Option<&[&Tensor]>,
) -> Vec<Tensor> {
    grad_impl(outputs, inputs, grad_outputs, false)
}

/// Like [`grad`], with the gradient computation itself recorded for autograd (PyTorch's
/// `create_graph=True`): the gradients require grad where they depend on inputs that do, and
/// can be differentiated again — second derivatives, Hessian-vector products, gradient
/// penalties.
///
/// ```
/// use metajit::Tensor;
/// use metajit::autograd::{grad, grad_create_graph};
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], [2]).requires_grad_(true);
/// let y = (&x * &x * &x).sum_all();                  // x³
/// let dy = grad_create_graph(&[&y], &[&x], None);    // 3x²
/// let d2y = grad(&[&dy[0].sum_all()], &[&x], None);  // 6x
/// assert_eq!(d2y[0].to_vec::<f64>().unwrap(), vec![6.0, 12.0]);
/// ```
///
/// # Panics
/// As [`grad`].
#[track_caller]
pub fn grad_create_graph(
    outputs: &[&Tensor],
    inputs: &[&Tensor],
    grad_outputs: Option<&[&Tensor]>,
) -> Vec<Tensor> {
    grad_impl(outputs, inputs, grad_outputs, true)
}

#[track_caller]
fn grad_impl(
    outputs: &[&Tensor],
    inputs: &[&Tensor],
    grad_outputs: Option<&[&Tensor]>,
    create_graph: bool,
) -> Vec<Tensor> {
    for (k, t) in inputs.iter().enumerate() {
        if !t.requires_grad() {
            panic!(
                "bad input to autograd::grad: input {k} (shape {}, dtype {}) does not require grad",
                t.shape(),
                t.dtype()
            );
        }
    }
    if let Some(g) = grad_outputs
        && g.len() != outputs.len()
    {
        panic!(
            "bad input to autograd::grad: {} output(s) but {} grad_output(s)",
            outputs.len(),
            g.len()
        );
    }
    let mut roots = Vec::new();
    for (k, o) in outputs.iter().enumerate() {
        if !o.requires_grad() {
            panic!(
                "bad input to autograd::grad: output {k} (shape {}) does not require grad (no input was marked with requires_grad_, or it was computed under no_grad)",
                o.shape()
            );
        }
        let g = match grad_outputs {
            Some(gs) => {
                check_seed("autograd::grad", o, gs[k]);
                gs[k].clone()
            }
            None => {
                if o.numel() != 1 {
                    panic!(
                        "bad input to autograd::grad: output {k} has shape {} ({} elements); a gradient can be implied only for one-element outputs, pass grad_outputs",
                        o.shape(),
                        o.numel()
                    );
                }
                o.ones_like()
            }
        };
        roots.push((o.node(), g));
    }
    let nodes: Vec<NodeRef> = inputs.iter().map(|t| t.node()).collect();
    let found = walk(&roots, Goal::Nodes(&nodes), create_graph);
    nodes
        .iter()
        .zip(inputs)
        .map(|(n, t)| match found.get(&n.id) {
            Some(g) => Tensor::from_node(g.node()),
            None => t.zeros_like(),
        })
        .collect()
}

/// Checks that `g` can be the gradient flowing into `out`.
#[track_caller]
fn check_seed(op: &str, out: &Tensor, g: &Tensor) {
    if g.shape() != out.shape() || g.dtype() != out.dtype() {
        panic!(
            "shape mismatch in {op}: the gradient has shape {} and dtype {}, the output {} and {}",
            g.shape(),
            g.dtype(),
            out.shape(),
            out.dtype()
        );
    }
}

impl Tensor {
    /// Marks this tensor as a leaf whose gradient `backward()` accumulates in
    /// [`grad`](Tensor::grad) (or unmarks it). Returns the tensor, for chaining.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let w = Tensor::randn([2, 3]).requires_grad_(true);
    /// assert!(w.requires_grad());
    /// ```
    ///
    /// # Panics
    /// When the dtype is not a float, or when unmarking a tensor computed from one that
    /// requires grad (use [`detach`](Tensor::detach)).
    #[track_caller]
    pub fn requires_grad_(&self, requires_grad: bool) -> Tensor {
        let node = self.node();
        let mut rec = lock(&node.autograd);
        let live_leaf = matches!(&*rec, Autograd::Leaf(w) if w.strong_count() > 0);
        match (&*rec, requires_grad) {
            (Autograd::Fn(_), false) => panic!(
                "bad use of requires_grad_: tensor of shape {} is computed from tensors that require grad; only leaves can be unmarked (use detach())",
                self.shape()
            ),
            (Autograd::Fn(_), true) => {}
            (Autograd::Leaf(_), true) if live_leaf => {}
            (_, false) => {
                node.set_autograd(&mut rec, Autograd::None);
                *lock(&self.0.leaf) = None;
            }
            (_, true) => {
                if !rules::differentiable(self.dtype()) {
                    panic!(
                        "dtype mismatch in requires_grad_: only float tensors can require gradients, got {} (shape {})",
                        self.dtype(),
                        self.shape()
                    );
                }
                let cell = Arc::new(Leaf::default());
                node.set_autograd(&mut rec, Autograd::Leaf(Arc::downgrade(&cell)));
                *lock(&self.0.leaf) = Some(cell);
            }
        }
        drop(rec);
        self.clone()
    }

    /// Whether a gradient flows to this tensor (a marked leaf, or a result of one).
    pub fn requires_grad(&self) -> bool {
        self.node().requires_grad()
    }

    /// Whether this tensor is a leaf: not the result of an op recorded for autograd.
    pub fn is_leaf(&self) -> bool {
        !matches!(*lock(&self.node().autograd), Autograd::Fn(_))
    }

    /// The gradient accumulated by `backward()` (a lazy tensor), or `None` before any, or for
    /// a tensor that is neither a leaf requiring grad nor marked with
    /// [`retain_grad`](Tensor::retain_grad).
    pub fn grad(&self) -> Option<Tensor> {
        self.grad_cell().and_then(|l| lock(&l.grad).clone())
    }

    /// Where this tensor's gradient accumulates, if anywhere.
    fn grad_cell(&self) -> Option<Arc<Leaf>> {
        match &*lock(&self.node().autograd) {
            Autograd::Leaf(l) => l.upgrade(),
            Autograd::Fn(f) => f.retain.as_ref().and_then(Weak::upgrade),
            Autograd::None => None,
        }
    }

    /// Makes `backward()` keep this non-leaf tensor's gradient in [`grad`](Tensor::grad) too
    /// (PyTorch's `retain_grad`); a no-op on a leaf.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).requires_grad_(true);
    /// let h = &x * 3.0;
    /// h.retain_grad();
    /// (&h * &h).sum_all().backward();
    /// assert_eq!(h.grad().unwrap().to_vec::<f32>().unwrap(), vec![6.0, 12.0]);
    /// ```
    ///
    /// # Panics
    /// When the tensor does not require grad.
    #[track_caller]
    pub fn retain_grad(&self) {
        let node = self.node();
        let mut rec = lock(&node.autograd);
        match &mut *rec {
            Autograd::None => panic!(
                "bad use of retain_grad: tensor of shape {} does not require grad",
                self.shape()
            ),
            Autograd::Leaf(_) => {}
            Autograd::Fn(f) => {
                if f.retain.as_ref().and_then(Weak::upgrade).is_none() {
                    let cell = Arc::new(Leaf::default());
                    f.retain = Some(Arc::downgrade(&cell));
                    *lock(&self.0.leaf) = Some(cell);
                }
            }
        }
    }

    /// Replaces the accumulated gradient (`None` clears it, as PyTorch's `zero_grad` does).
    ///
    /// # Panics
    /// When the tensor is not a leaf that requires grad (nor marked with `retain_grad`), or the
    /// gradient's shape or dtype differs from the tensor's.
    #[track_caller]
    pub fn set_grad(&self, grad: Option<Tensor>) {
        if let Some(g) = &grad {
            check_seed("set_grad", self, g);
        }
        match self.grad_cell() {
            Some(cell) => *lock(&cell.grad) = grad,
            None => {
                if grad.is_some() {
                    panic!(
                        "bad use of set_grad: tensor of shape {} is not a leaf that requires grad (nor marked with retain_grad)",
                        self.shape()
                    );
                }
            }
        }
    }

    /// Clears the accumulated gradient (PyTorch's `zero_grad(set_to_none=True)`).
    pub fn zero_grad(&self) {
        self.set_grad(None);
    }

    /// Computes the gradient of this one-element tensor with respect to every leaf that
    /// requires grad, accumulating into their [`grad`](Tensor::grad). Nothing runs yet: the
    /// gradients are lazy.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, -2.0], [2]).requires_grad_(true);
    /// let y = (&x * &x).sum_all();
    /// y.backward();
    /// assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), vec![2.0, -4.0]);
    /// ```
    ///
    /// # Panics
    /// When the tensor has more than one element (use [`backward_with`](Tensor::backward_with))
    /// or does not require grad.
    #[track_caller]
    pub fn backward(&self) {
        if self.numel() != 1 {
            panic!(
                "shape mismatch in backward: tensor of shape {} has {} elements; a gradient can be implied only for one element (use backward_with)",
                self.shape(),
                self.numel()
            );
        }
        self.backward_with(&self.ones_like());
    }

    /// Like [`backward`](Tensor::backward), with `grad` flowing into this tensor.
    ///
    /// # Panics
    /// When `grad`'s shape or dtype differs from the tensor's, or the tensor does not require
    /// grad.
    #[track_caller]
    pub fn backward_with(&self, grad: &Tensor) {
        check_seed("backward", self, grad);
        if !self.requires_grad() {
            panic!(
                "bad use of backward: tensor of shape {} does not require grad (no input was marked with requires_grad_, or it was computed under no_grad)",
                self.shape()
            );
        }
        walk(&[(self.node(), grad.clone())], Goal::Leaves, false);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::Tensor;

    #[test]
    fn a_leaf_and_its_unread_gradient_are_freed() {
        // The gradient of x·x reads x: with a strong cell in the node this was a cycle.
        let x = Tensor::from_vec(vec![1.0f32; 1024], [1024]).requires_grad_(true);
        (&x * &x).sum_all().backward();
        let node = Arc::downgrade(&x.node());
        drop(x);
        assert!(
            node.upgrade().is_none(),
            "the leaf's node outlived every handle"
        );
    }
}
