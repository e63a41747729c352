//! The high-level ops of the Tensor API and their lowering to meta-ops.
//!
//! Each op checks its arguments (panicking at the caller's line with a message that names the
//! op, the shapes and the rule), then records meta-op nodes through `Tensor::from_op`. No op
//! computes anything by itself: all of them are graphs of meta-ops.
//!
//! | module | ops |
//! |---|---|
//! | [`creation`] | zeros, ones, full, arange, linspace, eye, rand, randn, `*_like` |
//! | [`elementwise`] | arithmetic, comparisons, math functions, activations, where, cast |
//! | [`linalg`] | matmul (batched, broadcasting), mm, bmm, linear |
//! | [`reduce`] | sum, mean, var, std, max, min, prod, argmax, argmin, logsumexp, all, any |
//! | [`shape`] | reshape, permute, slicing, cat, pad, gather, ... |

pub mod creation;
pub mod elementwise;
pub mod linalg;
mod meta;
pub mod reduce;
pub mod shape;

use metajit_metaops::{DType, Scalar, Shape};

use crate::tensor::Tensor;

/// Normalises a possibly negative axis against `rank`.
///
/// # Panics
/// When the axis is out of range, naming the op and the shape.
#[track_caller]
pub(crate) fn norm_axis(op: &str, axis: isize, rank: usize, shape: &Shape) -> usize {
    let r = rank as isize;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&a) {
        panic!(
            "bad axis in {op}: axis {axis} is out of range for shape {shape} (rank {rank}; valid axes are -{rank}..{rank})"
        );
    }
    a as usize
}

/// Normalises a list of axes: each in range, no duplicates, returned ascending.
#[track_caller]
pub(crate) fn norm_axes(op: &str, axes: &[isize], shape: &Shape) -> Vec<usize> {
    // A plain loop, not a closure: closures do not carry #[track_caller].
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        out.push(norm_axis(op, a, shape.rank(), shape));
    }
    out.sort_unstable();
    for w in out.windows(2) {
        if w[0] == w[1] {
            panic!(
                "bad axis in {op}: axis {} appears twice in {axes:?} for shape {shape}",
                w[0]
            );
        }
    }
    out
}

/// A set of axes: one axis (`1`, `-1`), several (`[0, 2]`, `&[0, 2]`, `vec![..]`), or
/// [`All`] for every axis. Negative axes count from the end.
pub trait Dims {
    /// The axes as written (not yet normalised); `None` means all axes.
    fn to_dims(&self) -> Option<Vec<isize>>;
}

/// Every axis.
#[derive(Clone, Copy, Debug)]
pub struct All;

impl Dims for All {
    fn to_dims(&self) -> Option<Vec<isize>> {
        None
    }
}

macro_rules! dims_impl {
    ($($t:ty),*) => {$(
        impl Dims for $t {
            fn to_dims(&self) -> Option<Vec<isize>> {
                Some(vec![*self as isize])
            }
        }
        impl<const N: usize> Dims for [$t; N] {
            fn to_dims(&self) -> Option<Vec<isize>> {
                Some(self.iter().map(|&a| a as isize).collect())
            }
        }
        impl Dims for &[$t] {
            fn to_dims(&self) -> Option<Vec<isize>> {
                Some(self.iter().map(|&a| a as isize).collect())
            }
        }
        impl Dims for Vec<$t> {
            fn to_dims(&self) -> Option<Vec<isize>> {
                Some(self.iter().map(|&a| a as isize).collect())
            }
        }
    )*};
}
dims_impl!(i32, i64, isize, usize);

/// Resolves `dims` against a shape: ascending, unique axes.
#[track_caller]
pub(crate) fn resolve_dims(op: &str, dims: &impl Dims, shape: &Shape) -> Vec<usize> {
    match dims.to_dims() {
        None => (0..shape.rank()).collect(),
        Some(d) => norm_axes(op, &d, shape),
    }
}

/// The right-hand side of a binary op: a tensor or a Rust number. Numbers are "weak": they take
/// the tensor's dtype unless their kind is higher (a float with an integer tensor gives f32; an
/// integer with a bool tensor gives i64), as in PyTorch.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    /// A tensor.
    Tensor(&'a Tensor),
    /// A float number.
    Float(f64),
    /// An integer number.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl<'a> From<&'a Tensor> for Operand<'a> {
    fn from(t: &'a Tensor) -> Self {
        Operand::Tensor(t)
    }
}
impl From<f64> for Operand<'_> {
    fn from(v: f64) -> Self {
        Operand::Float(v)
    }
}
impl From<f32> for Operand<'_> {
    fn from(v: f32) -> Self {
        Operand::Float(v as f64)
    }
}
impl From<i32> for Operand<'_> {
    fn from(v: i32) -> Self {
        Operand::Int(v as i64)
    }
}
impl From<i64> for Operand<'_> {
    fn from(v: i64) -> Self {
        Operand::Int(v)
    }
}
impl From<bool> for Operand<'_> {
    fn from(v: bool) -> Self {
        Operand::Bool(v)
    }
}

impl Operand<'_> {
    /// The dtype this operand asks for next to a tensor of dtype `other`.
    pub(crate) fn result_dtype(&self, other: DType) -> DType {
        match *self {
            Operand::Tensor(t) => DType::promote(t.dtype(), other),
            Operand::Float(_) if !other.is_float() => DType::F32,
            Operand::Int(_) if other.is_bool() => DType::I64,
            _ => other,
        }
    }

    /// The operand as a tensor of `dtype` (numbers become rank-0 constants).
    #[track_caller]
    pub(crate) fn to_tensor(self, dtype: DType) -> Tensor {
        match self {
            Operand::Tensor(t) => t.cast(dtype),
            Operand::Float(v) => Tensor::constant(Scalar::F64(v).cast(dtype), Shape::scalar()),
            Operand::Int(v) => Tensor::constant(Scalar::I64(v).cast(dtype), Shape::scalar()),
            Operand::Bool(v) => Tensor::constant(Scalar::Bool(v).cast(dtype), Shape::scalar()),
        }
    }
}

/// Records a high-level op built of several meta-ops (relu as `where(x <= 0, 0, x)`, ...) as
/// one unit: in eager mode it runs as one kernel when `f` returns, as PyTorch eager runs it,
/// and its backward runs as one unit too.
#[track_caller]
pub(crate) fn one_op(f: impl FnOnce() -> Tensor) -> Tensor {
    let t = crate::config::as_one_op(f);
    if crate::config::eager_now()
        && let Err(e) = t.realize()
    {
        panic!("eager execution failed: {e}");
    }
    t
}
