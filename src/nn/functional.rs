//! Functional neural-network ops with PyTorch's semantics and argument order
//! (`torch.nn.functional`): activations over an axis, losses, normalisation, dropout,
//! embedding, linear. Each is lowered to meta-ops (no hand-written loop), so it is
//! differentiable through the meta-op rules and fuses with what surrounds it.
//!
//! Labels and indices are data, and a kernel cannot raise: the ops that take them
//! ([`nll_loss`], [`cross_entropy`], [`embedding`]) read them on the host first (computing
//! them if they are pending) and panic at the caller's line on a value out of range, naming
//! the op, the value and the range — never training silently on a wrong row.

use metajit_metaops::{DType, Shape};

use crate::ops::norm_axis;
use crate::tensor::Tensor;

pub use super::conv::{
    adaptive_avg_pool2d, avg_pool2d, conv_transpose2d, conv1d, conv2d, max_pool2d,
};
pub use crate::ops::linalg::linear;

/// How a loss reduces its per-element values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// One value per element.
    None,
    /// The (weighted) mean: PyTorch's default.
    #[default]
    Mean,
    /// The sum.
    Sum,
}

/// Options of [`nll_loss`] and [`cross_entropy`] (PyTorch's defaults).
#[derive(Clone, Copy, Debug)]
pub struct ClassLossOptions<'a> {
    /// A weight per class (`[C]`), or none (all 1).
    pub weight: Option<&'a Tensor>,
    /// Targets equal to this contribute nothing (and do not count in the mean); -100.
    pub ignore_index: i64,
    /// The reduction; mean.
    pub reduction: Reduction,
}

impl Default for ClassLossOptions<'_> {
    fn default() -> Self {
        ClassLossOptions {
            weight: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
        }
    }
}

/// `exp(x) / sum(exp(x))` along `dim`, computed stably (shifted by the maximum, which carries no
/// gradient): inputs of ±80 are fine, `-inf` elements give 0; a row of only `-inf`, or with
/// `+inf` or NaN, gives NaN, as PyTorch.
///
/// The row's `exp` is computed once: the fused kernel folds it into the sum and keeps it in the
/// output for the division (`schedule::keep_across_phases`).
///
/// ```
/// use metajit::{Tensor, nn::functional as F};
/// let p = F::softmax(&Tensor::from_vec(vec![0.0f32, 0.0], [1, 2]), -1);
/// assert_eq!(p.to_vec::<f32>().unwrap(), vec![0.5, 0.5]);
/// ```
#[track_caller]
pub fn softmax(x: &Tensor, dim: isize) -> Tensor {
    let a = norm_axis("softmax", dim, x.rank(), x.shape());
    let x = x.to_float();
    if x.dims()[a] == 0 {
        return (&x - x.logsumexp(a, true)).exp();
    }
    let e = (&x - x.max(a, true).detach()).exp();
    &e / e.sum(a, true)
}

/// `x - logsumexp(x)` along `dim`, computed stably as `(x - max) - log(sum(exp(x - max)))` (the
/// maximum carries no gradient: it cancels): a row of only `-inf`, or with `+inf` or NaN,
/// gives NaN, as PyTorch.
#[track_caller]
pub fn log_softmax(x: &Tensor, dim: isize) -> Tensor {
    let a = norm_axis("log_softmax", dim, x.rank(), x.shape());
    let x = x.to_float();
    if x.dims()[a] == 0 {
        return &x - x.logsumexp(a, true);
    }
    let d = &x - x.max(a, true).detach();
    &d - d.exp().sum(a, true).log()
}

/// Reads integer labels on the host and panics on one outside `0..n` (other than `allowed`).
#[track_caller]
fn check_labels(op: &str, labels: &Tensor, n: usize, allowed: Option<i64>) {
    if !labels.dtype().is_int() {
        panic!(
            "dtype mismatch in {op}: targets must be integers, got {} (shape {})",
            labels.dtype(),
            labels.shape()
        );
    }
    let values = match labels.cast(DType::I64).to_vec::<i64>() {
        Ok(v) => v,
        Err(e) => panic!("{op}: computing the targets failed: {e}"),
    };
    if let Some((k, &v)) = values
        .iter()
        .enumerate()
        .find(|&(_, &v)| Some(v) != allowed && (v < 0 || v >= n as i64))
    {
        panic!(
            "bad target in {op}: value {v} at flat position {k} is out of range 0..{n}{}",
            match allowed {
                Some(i) => format!(" (and is not ignore_index {i})"),
                None => String::new(),
            }
        );
    }
}

/// The negative log-likelihood loss of log-probabilities `input` (`[N, C]` or
/// `[N, C, d1, ...]`) at integer `target` (`[N]` or `[N, d1, ...]`), PyTorch's `nll_loss`:
/// `-w[t]·input[n, t]` per element, where `w` is `options.weight` (or 1) and targets equal to
/// `ignore_index` count 0; the mean divides by the sum of the counted targets' weights.
///
/// # Panics
/// On shapes that do not match, or a target outside `0..C` other than `ignore_index`.
#[track_caller]
pub fn nll_loss(input: &Tensor, target: &Tensor, options: &ClassLossOptions<'_>) -> Tensor {
    let (si, st) = (input.shape(), target.shape());
    let ok = si.rank() >= 2
        && st.rank() + 1 == si.rank()
        && si.dims()[0] == st.dims()[0]
        && si.dims()[2..] == st.dims()[1..];
    if !ok {
        panic!(
            "shape mismatch in nll_loss: input {si}, target {st} (input [N, C, d...] needs target [N, d...])"
        );
    }
    let c = si.dims()[1];
    if let Some(w) = options.weight
        && w.shape().dims() != [c]
    {
        panic!(
            "shape mismatch in nll_loss: weight {} for {c} classes (it must be [{c}])",
            w.shape()
        );
    }
    check_labels("nll_loss", target, c, Some(options.ignore_index));
    let input = input.to_float();
    let target = target.cast(DType::I64);
    let counted = target.ne(options.ignore_index);
    // Ignored targets read class 0, then count 0.
    let safe = Tensor::where_(&counted, &target, 0i64);
    let picked = input.gather(1, &safe.unsqueeze(1)).squeeze(1);
    let counted = counted.cast(input.dtype());
    let w = match options.weight {
        Some(w) => {
            let w = w.cast(input.dtype());
            let flat = w.index_select(0, &safe.flatten(0, -1));
            flat.reshape(safe.shape()).mul(&counted)
        }
        None => counted,
    };
    let loss = picked.mul(&w).neg();
    match options.reduction {
        Reduction::None => loss,
        Reduction::Sum => loss.sum_all(),
        Reduction::Mean => loss.sum_all().div(&w.sum_all()),
    }
}

/// Cross-entropy of unnormalised `input` logits (`[N, C]` or `[N, C, d1, ...]`) at integer
/// `target` classes: `nll_loss(log_softmax(input, 1), target)`, with its options.
///
/// ```
/// use metajit::{Tensor, nn::functional as F};
/// let logits = Tensor::from_vec(vec![2.0f32, 0.0, 0.0, 2.0], [2, 2]);
/// let labels = Tensor::from_slice(&[0i64, 1]);
/// let loss = F::cross_entropy(&logits, &labels, &Default::default());
/// let want = (1.0f32 + (-2.0f32).exp()).ln();
/// assert!((loss.item::<f32>().unwrap() - want).abs() < 1e-6);
/// ```
///
/// # Panics
/// As [`nll_loss`].
#[track_caller]
pub fn cross_entropy(input: &Tensor, target: &Tensor, options: &ClassLossOptions<'_>) -> Tensor {
    if input.rank() < 2 {
        panic!(
            "shape mismatch in cross_entropy: input {} needs [N, C, ...] (target {})",
            input.shape(),
            target.shape()
        );
    }
    nll_loss(&log_softmax(input, 1), target, options)
}

/// `reduce((input - target)²)`.
///
/// # Panics
/// When the shapes differ.
#[track_caller]
pub fn mse_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    if input.shape() != target.shape() {
        panic!(
            "shape mismatch in mse_loss: input {}, target {} (they must be equal)",
            input.shape(),
            target.shape()
        );
    }
    reduce(input.sub(target).square(), reduction)
}

fn reduce(loss: Tensor, reduction: Reduction) -> Tensor {
    match reduction {
        Reduction::None => loss,
        Reduction::Sum => loss.sum_all(),
        Reduction::Mean => loss.mean_all(),
    }
}

/// Binary cross-entropy of logits `input` against probabilities `target`, computed stably
/// as PyTorch: `(1 - t)·x + (1 + (p - 1)·t)·(log1p(e^-|x|) + max(-x, 0))`, where `p` is
/// `pos_weight` (broadcast along the last axis; 1 without it).
///
/// # Panics
/// When the shapes differ or `pos_weight` does not broadcast.
#[track_caller]
pub fn binary_cross_entropy_with_logits(
    input: &Tensor,
    target: &Tensor,
    pos_weight: Option<&Tensor>,
    reduction: Reduction,
) -> Tensor {
    if input.shape() != target.shape() {
        panic!(
            "shape mismatch in binary_cross_entropy_with_logits: input {}, target {} (they must be equal)",
            input.shape(),
            target.shape()
        );
    }
    let x = input.to_float();
    let t = target.cast(x.dtype());
    let softplus_neg = x.abs().neg().exp().log1p().add(&x.neg().relu());
    let weight = match pos_weight {
        Some(p) => p.cast(x.dtype()).sub(1.0).mul(&t).add(1.0),
        None => x.ones_like(),
    };
    let loss = t.neg().add(1.0).mul(&x).add(&weight.mul(&softplus_neg));
    reduce(loss, reduction)
}

/// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)` when
/// `training`; the identity otherwise. The mask is counter-based random numbers (seeded by
/// [`crate::manual_seed`]), so it fuses and replays exactly.
///
/// # Panics
/// When `p` is outside `[0, 1]`.
#[track_caller]
pub fn dropout(x: &Tensor, p: f64, training: bool) -> Tensor {
    if !(0.0..=1.0).contains(&p) {
        panic!("bad argument to dropout: p = {p} is outside [0, 1]");
    }
    if !training || p == 0.0 {
        return x.clone();
    }
    let x = x.to_float();
    if p == 1.0 {
        return x.mul(0.0);
    }
    let keep = x.rand_like().ge(p);
    Tensor::where_(&keep, &x.mul(1.0 / (1.0 - p)), 0.0)
}

/// Normalises over the trailing `normalized_shape` axes: `(x - mean) / sqrt(var + eps)`
/// (biased variance), then `· weight + bias` when given (each of `normalized_shape`).
///
/// # Panics
/// When `normalized_shape` is not the tensor's trailing extents, or a weight or bias has
/// another shape.
#[track_caller]
pub fn layer_norm(
    x: &Tensor,
    normalized_shape: &[usize],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Tensor {
    let r = x.rank();
    let k = normalized_shape.len();
    if k == 0 || k > r || x.dims()[r - k..] != *normalized_shape {
        panic!(
            "shape mismatch in layer_norm: input {}, normalized_shape {normalized_shape:?} (it must be the input's trailing extents)",
            x.shape()
        );
    }
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if let Some(t) = t
            && t.dims() != normalized_shape
        {
            panic!(
                "shape mismatch in layer_norm: {name} {}, normalized_shape {normalized_shape:?}",
                t.shape()
            );
        }
    }
    let x = x.to_float();
    let axes: Vec<usize> = (r - k..r).collect();
    let mean = x.mean(axes.clone(), true);
    let centered = &x - &mean;
    let var = centered.square().mean(axes, true);
    let mut y = centered.mul(&var.add(eps).rsqrt());
    if let Some(w) = weight {
        y = y.mul(w);
    }
    if let Some(b) = bias {
        y = y.add(b);
    }
    y
}

/// Batch normalisation of `x` (`[N, C, ...]`) per channel. In training it normalises with
/// the batch's biased variance and, when running statistics are given, gives them their new
/// values (`(1 - momentum)·old + momentum·batch`, the variance unbiased) through
/// [`Tensor::assign`] — lazily: realize them with the training step. In evaluation it
/// normalises with the running statistics. `weight` and `bias` (`[C]`) scale and shift.
///
/// # Panics
/// When the rank is below 2, a statistic, weight or bias is not `[C]`, evaluation has no
/// running statistics, or a batch has a single value per channel in training.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn batch_norm(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Tensor {
    if x.rank() < 2 {
        panic!(
            "shape mismatch in batch_norm: input {} needs [N, C, ...]",
            x.shape()
        );
    }
    let c = x.dims()[1];
    for (name, t) in [
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ] {
        if let Some(t) = t
            && t.dims() != [c]
        {
            panic!(
                "shape mismatch in batch_norm: {name} {} for input {} (it must be [{c}])",
                t.shape(),
                x.shape()
            );
        }
    }
    let x = x.to_float();
    let r = x.rank();
    // [C] -> [1, C, 1, ...] to broadcast against x.
    let per_channel = |t: &Tensor| {
        let mut d = vec![1usize; r];
        d[1] = c;
        t.cast(x.dtype()).reshape(Shape::new(d))
    };
    let axes: Vec<usize> = (0..r).filter(|&a| a != 1).collect();
    let count: usize = axes.iter().map(|&a| x.dims()[a]).product();
    let (mean, var) = if training {
        if count <= 1 {
            panic!(
                "bad input to batch_norm: input {} has {count} value per channel in training (need more than 1)",
                x.shape()
            );
        }
        let mean = x.mean(axes.clone(), true);
        let var = (&x - &mean).square().mean(axes.clone(), true);
        if let (Some(rm), Some(rv)) = (running_mean, running_var) {
            crate::no_grad(|| {
                let m = mean.reshape([c]).cast(rm.dtype());
                let unbiased = var.reshape([c]).mul(count as f64 / (count - 1) as f64);
                rm.assign(&rm.mul(1.0 - momentum).add(&m.mul(momentum)));
                rv.assign(
                    &rv.mul(1.0 - momentum)
                        .add(&unbiased.cast(rv.dtype()).mul(momentum)),
                );
            });
        }
        (mean, var)
    } else {
        match (running_mean, running_var) {
            (Some(rm), Some(rv)) => (per_channel(rm), per_channel(rv)),
            _ => panic!(
                "bad input to batch_norm: evaluation needs running_mean and running_var (input {})",
                x.shape()
            ),
        }
    };
    let mut y = (&x - &mean).mul(&var.add(eps).rsqrt());
    if let Some(w) = weight {
        y = y.mul(&per_channel(w));
    }
    if let Some(b) = bias {
        y = y.add(&per_channel(b));
    }
    y
}

/// The rows of `weight` (`[num_embeddings, dim]`) at integer `indices`: shape
/// `indices.shape() + [dim]`. Positions holding `padding_idx` read their row but send it no
/// gradient, as PyTorch.
///
/// # Panics
/// When `weight` is not 2-D, or an index is outside `0..num_embeddings`.
#[track_caller]
pub fn embedding(indices: &Tensor, weight: &Tensor, padding_idx: Option<i64>) -> Tensor {
    if weight.rank() != 2 {
        panic!(
            "shape mismatch in embedding: weight {} must be [num_embeddings, dim] (indices {})",
            weight.shape(),
            indices.shape()
        );
    }
    let (n, d) = (weight.dims()[0], weight.dims()[1]);
    check_labels("embedding", indices, n, None);
    let flat = indices.cast(DType::I64).flatten(0, -1);
    let flat = if indices.rank() == 0 {
        flat.reshape([1])
    } else {
        flat
    };
    let mut rows = weight.index_select(0, &flat);
    if let Some(p) = padding_idx {
        let frozen = weight.detach().index_select(0, &flat);
        let pad = flat.eq(p).unsqueeze(1);
        rows = Tensor::where_(&pad, &frozen, &rows);
    }
    let mut shape = indices.dims().to_vec();
    shape.push(d);
    rows.reshape(shape)
}
