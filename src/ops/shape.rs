//! Shape ops: views (reshape, flatten, squeeze, unsqueeze), reorderings (permute, transpose,
//! flip), slicing (slice, narrow, split, chunk), joining (cat, stack), padding, repetition,
//! broadcasting (expand), indexing (gather, index_select, one_hot) and triangles (tril, triu).
//! Semantics follow PyTorch; every axis argument may be negative (counting from the end).
//!
//! Every op is a small graph of meta-ops; none touches element values itself:
//!
//! | ops | lowering |
//! |---|---|
//! | reshape, flatten, squeeze, unsqueeze | `Reshape` (every graph value is row-major, so a view is a relabel) |
//! | permute, transpose, t, slice, narrow, split, chunk, flip, pad, repeat | one `Reindex`: an index expression per *input* axis over the output index `i<k>` |
//! | expand, broadcast_to | `Reshape` dropping size-1 axes + `BroadcastTo` |
//! | cat, stack | each piece `Reindex`ed into the output shape, selected with `Where` on an `Index` mask |
//! | gather, index_select | `Reindex` whose expression reads the index tensor as an extra |
//! | tril, triu | `Where(col - row <= k, x, 0)` over `Index` sources |
//! | one_hot | `Eq(x[..., None], Index)` cast to i64 |
//! | contiguous | `Contiguous` |
//!
//! Index expressions name extents symbolically (`m<k>`, the input's extent) where a size enters
//! the arithmetic (flip, repeat), so a kernel stays valid when a batch size changes; structural
//! parameters (slice step, pad widths) are constants. Offsets that are data — a slice's or
//! narrow's start (so also each piece of split and chunk), a piece's position in cat — are
//! runtime index parameters (`IndexExpr::Param`): taking a minibatch with
//! `x.narrow(0, i * b, b)` at a new `i` compiles nothing and reuses the plan.
//!
//! Indices read from tensors (gather, index_select, one_hot) are lazy values, so they cannot be
//! range-checked when the op is recorded: an out-of-range or negative index reads 0 (gather,
//! index_select) or gives an all-zero row (one_hot), where PyTorch raises.

use metajit_metaops::{DType, IndexExpr, Op, Scalar, Shape};

use super::{Dims, norm_axis, resolve_dims};
use crate::tensor::Tensor;

/// A target shape for [`Tensor::reshape`], [`Tensor::expand`] and [`Tensor::broadcast_to`]:
/// extents, where `-1` means "infer" (reshape) or "keep" (expand).
///
/// Built from arrays, slices and vectors of `usize`, `isize`, `i32` or `i64`, and from
/// [`Shape`]: `x.reshape([2, -1])`, `x.reshape(y.dims())`, `x.reshape(vec![6usize])`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeArg(pub Vec<isize>);

macro_rules! shape_arg_from {
    ($($t:ty),*) => {$(
        impl<const N: usize> From<[$t; N]> for ShapeArg {
            fn from(v: [$t; N]) -> ShapeArg {
                ShapeArg(v.iter().map(|&d| d as isize).collect())
            }
        }
        impl<const N: usize> From<&[$t; N]> for ShapeArg {
            fn from(v: &[$t; N]) -> ShapeArg {
                ShapeArg(v.iter().map(|&d| d as isize).collect())
            }
        }
        impl From<&[$t]> for ShapeArg {
            fn from(v: &[$t]) -> ShapeArg {
                ShapeArg(v.iter().map(|&d| d as isize).collect())
            }
        }
        impl From<Vec<$t>> for ShapeArg {
            fn from(v: Vec<$t>) -> ShapeArg {
                ShapeArg(v.iter().map(|&d| d as isize).collect())
            }
        }
    )*};
}
shape_arg_from!(usize, isize, i32, i64);

impl From<Shape> for ShapeArg {
    fn from(s: Shape) -> ShapeArg {
        ShapeArg::from(s.dims())
    }
}

impl From<&Shape> for ShapeArg {
    fn from(s: &Shape) -> ShapeArg {
        ShapeArg::from(s.dims())
    }
}

/// `[2, *, 4]`: a shape with one free axis, for messages.
fn pattern(dims: &[usize], free: usize) -> String {
    let parts: Vec<String> = dims
        .iter()
        .enumerate()
        .map(|(k, d)| {
            if k == free {
                "*".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// `[2, -1]`, for messages.
fn spec_text(spec: &[isize]) -> String {
    let parts: Vec<String> = spec.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Normalises an axis the way PyTorch does for ops that accept rank-0 tensors: a scalar takes
/// axes `-1` and `0` as if it had one axis.
#[track_caller]
fn norm_axis_scalar_ok(op: &str, axis: isize, shape: &Shape) -> usize {
    norm_axis(op, axis, shape.rank().max(1), shape)
}

/// Python's clamping of a slice bound into `0..=n` (negative counts from the end).
fn clamp_bound(i: isize, n: usize) -> usize {
    let n = n as isize;
    let i = if i < 0 { i + n } else { i };
    i.clamp(0, n) as usize
}

/// `Idx(k) * step + param(start)`: a slice along axis `k` whose start is a runtime parameter
/// (present even when 0, so every offset shares one kernel).
fn affine_at(k: usize, step: usize, start: i64) -> IndexExpr {
    let mut e = IndexExpr::Idx(k);
    if step != 1 {
        e = e * step as i64;
    }
    e + IndexExpr::Param(start)
}

/// A padding width for [`Tensor::pad`]: any primitive integer. Negative widths crop.
pub trait PadWidth: Copy {
    /// The width as an `i64` (saturating for `u64`/`usize` values beyond `i64::MAX`).
    fn width(self) -> i64;
}

macro_rules! pad_width_impl {
    ($($t:ty),*) => {$(
        impl PadWidth for $t {
            fn width(self) -> i64 {
                i64::try_from(self).unwrap_or(i64::MAX)
            }
        }
    )*};
}
pad_width_impl!(usize, isize, i64, u64, i32, u32, i16, u16, i8, u8);

/// `Idx(k) * step + start`, without the trivial parts (`start` is structure).
fn affine(k: usize, step: usize, start: i64) -> IndexExpr {
    let mut e = IndexExpr::Idx(k);
    if step != 1 {
        e = e * step as i64;
    }
    if start > 0 {
        e = e + start;
    } else if start < 0 {
        e = e - (-start);
    }
    e
}

/// One expression per axis of a rank-`rank` tensor: the output coordinate on every axis but
/// `a`, which reads `e`.
fn idx_except(rank: usize, a: usize, e: IndexExpr) -> Vec<IndexExpr> {
    let mut e = Some(e);
    (0..rank)
        .map(|k| {
            if k == a {
                e.take().expect("one axis a")
            } else {
                IndexExpr::Idx(k)
            }
        })
        .collect()
}

impl Tensor {
    /// The same row-major elements under a new shape; one extent may be `-1` (inferred).
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec((0..6).map(|v| v as f32).collect(), [2, 3]);
    /// let y = x.reshape([3, -1]);
    /// assert_eq!(y.dims(), &[3, 2]);
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    /// ```
    ///
    /// # Panics
    /// When the element counts differ, more than one extent is `-1`, an extent is below `-1`,
    /// or the `-1` cannot be inferred.
    #[track_caller]
    pub fn reshape(&self, shape: impl Into<ShapeArg>) -> Tensor {
        let shape = self.resolve_view_shape("reshape", &shape.into().0);
        self.view_as(shape)
    }

    /// Same as [`Tensor::reshape`] (every value is row-major, so a view always exists).
    #[track_caller]
    pub fn view(&self, shape: impl Into<ShapeArg>) -> Tensor {
        let shape = self.resolve_view_shape("view", &shape.into().0);
        self.view_as(shape)
    }

    /// Reshapes to `other`'s shape.
    #[track_caller]
    pub fn reshape_as(&self, other: &Tensor) -> Tensor {
        self.reshape(other.shape())
    }

    /// Resolves a reshape target with an optional `-1` against this tensor's element count.
    #[track_caller]
    fn resolve_view_shape(&self, op: &str, spec: &[isize]) -> Shape {
        let from = self.shape();
        let n = from.numel();
        let mut infer = None;
        let mut known: u128 = 1;
        for (k, &d) in spec.iter().enumerate() {
            if d == -1 {
                assert!(
                    infer.is_none(),
                    "bad shape in {op}: only one extent may be -1, got {}",
                    spec_text(spec)
                );
                infer = Some(k);
            } else {
                assert!(
                    d >= 0,
                    "bad shape in {op}: extent {d} in {} is negative (only -1, meaning 'infer', is allowed)",
                    spec_text(spec)
                );
                known = known.saturating_mul(d as u128);
            }
        }
        let mut dims: Vec<usize> = spec.iter().map(|&d| d.max(0) as usize).collect();
        if let Some(k) = infer {
            assert!(
                known != 0,
                "bad shape in {op}: cannot infer the -1 in {} for {from} ({n} elements): the other extents multiply to 0",
                spec_text(spec)
            );
            assert!(
                (n as u128).is_multiple_of(known),
                "bad shape in {op}: cannot view {from} ({n} elements) as {}: {n} is not a multiple of {known}",
                spec_text(spec)
            );
            dims[k] = (n as u128 / known) as usize;
            known = n as u128;
        }
        assert!(
            known == n as u128,
            "bad shape in {op}: cannot view {from} ({n} elements) as {} ({known} elements)",
            spec_text(spec)
        );
        Shape::new(dims)
    }

    /// Merges axes `start_dim..=end_dim` into one (a scalar becomes shape `[1]`).
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::zeros([2, 3, 4, 5]);
    /// assert_eq!(x.flatten(1, -1).dims(), &[2, 60]);
    /// assert_eq!(x.flatten(1, 2).dims(), &[2, 12, 5]);
    /// ```
    ///
    /// # Panics
    /// When an axis is out of range or `start_dim` comes after `end_dim`.
    #[track_caller]
    pub fn flatten(&self, start_dim: isize, end_dim: isize) -> Tensor {
        let s = norm_axis_scalar_ok("flatten", start_dim, self.shape());
        let e = norm_axis_scalar_ok("flatten", end_dim, self.shape());
        assert!(
            s <= e,
            "bad axis in flatten: start_dim {start_dim} (axis {s}) comes after end_dim {end_dim} (axis {e}) for shape {}",
            self.shape()
        );
        if self.rank() == 0 {
            return self.view_as(Shape::new([1]));
        }
        let d = self.dims();
        let mut dims = d[..s].to_vec();
        dims.push(d[s..=e].iter().product());
        dims.extend_from_slice(&d[e + 1..]);
        self.view_as(Shape::new(dims))
    }

    /// Removes axis `dim` if its extent is 1 (otherwise returns the tensor unchanged, as
    /// PyTorch does).
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::zeros([2, 1, 3]);
    /// assert_eq!(x.squeeze(1).dims(), &[2, 3]);
    /// assert_eq!(x.squeeze(0).dims(), &[2, 1, 3]);
    /// ```
    #[track_caller]
    pub fn squeeze(&self, dim: isize) -> Tensor {
        let a = norm_axis_scalar_ok("squeeze", dim, self.shape());
        if self.rank() == 0 || self.dims()[a] != 1 {
            return self.clone();
        }
        let mut dims = self.dims().to_vec();
        dims.remove(a);
        self.view_as(Shape::new(dims))
    }

    /// Removes every axis of extent 1.
    pub fn squeeze_all(&self) -> Tensor {
        let dims: Vec<usize> = self.dims().iter().copied().filter(|&d| d != 1).collect();
        self.view_as(Shape::new(dims))
    }

    /// Inserts an axis of extent 1 at `dim`, which ranges over `-(rank+1)..=rank`.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::zeros([2, 3]);
    /// assert_eq!(x.unsqueeze(0).dims(), &[1, 2, 3]);
    /// assert_eq!(x.unsqueeze(-1).dims(), &[2, 3, 1]);
    /// ```
    #[track_caller]
    pub fn unsqueeze(&self, dim: isize) -> Tensor {
        let a = norm_axis("unsqueeze", dim, self.rank() + 1, self.shape());
        let mut dims = self.dims().to_vec();
        dims.insert(a, 1);
        self.view_as(Shape::new(dims))
    }

    /// Reorders the axes: output axis `k` is input axis `dims[k]`.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec((0..6).map(|v| v as f32).collect(), [2, 3]);
    /// let y = x.permute(&[1, 0]);
    /// assert_eq!(y.dims(), &[3, 2]);
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    /// ```
    ///
    /// # Panics
    /// When `dims` is not a permutation of the axes.
    #[track_caller]
    pub fn permute(&self, dims: &[isize]) -> Tensor {
        let r = self.rank();
        assert!(
            dims.len() == r,
            "bad axis in permute: {} axes {dims:?} given for shape {} (rank {r}); permute needs each axis exactly once",
            dims.len(),
            self.shape()
        );
        let perm: Vec<usize> = dims
            .iter()
            .map(|&a| norm_axis("permute", a, r, self.shape()))
            .collect();
        let mut seen = vec![false; r];
        for &p in &perm {
            assert!(
                !seen[p],
                "bad axis in permute: axis {p} appears twice in {dims:?} for shape {}; permute needs each axis exactly once",
                self.shape()
            );
            seen[p] = true;
        }
        self.permute_raw(&perm)
    }

    /// Permutes by normalised axes (a valid permutation).
    fn permute_raw(&self, perm: &[usize]) -> Tensor {
        if perm.iter().enumerate().all(|(k, &p)| k == p) {
            return self.clone();
        }
        let out: Vec<usize> = perm.iter().map(|&p| self.dims()[p]).collect();
        let mut exprs = vec![IndexExpr::Const(0); perm.len()];
        for (k, &p) in perm.iter().enumerate() {
            exprs[p] = IndexExpr::Idx(k);
        }
        self.reindex_plain(Shape::new(out), exprs)
    }

    /// Swaps two axes.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::zeros([2, 3, 4]);
    /// assert_eq!(x.transpose(0, -1).dims(), &[4, 3, 2]);
    /// ```
    #[track_caller]
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Tensor {
        let a = norm_axis_scalar_ok("transpose", dim0, self.shape());
        let b = norm_axis_scalar_ok("transpose", dim1, self.shape());
        if self.rank() == 0 {
            return self.clone();
        }
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute_raw(&perm)
    }

    /// The matrix transpose of a tensor of rank ≤ 2 (ranks 0 and 1 are returned as they are).
    ///
    /// # Panics
    /// When the rank is above 2 (use [`Tensor::transpose`]).
    #[track_caller]
    pub fn t(&self) -> Tensor {
        assert!(
            self.rank() <= 2,
            "bad shape in t: expects a tensor of rank <= 2, got shape {} (use transpose(d0, d1))",
            self.shape()
        );
        if self.rank() < 2 {
            return self.clone();
        }
        self.permute_raw(&[1, 0])
    }

    /// Broadcasts to `shape` by PyTorch's `expand` rules: new axes may be added at the front;
    /// an existing axis keeps its extent (`-1` or the same extent) or, if it is 1, takes any
    /// extent.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [2, 1]);
    /// let y = x.expand([3, -1, 2]);
    /// assert_eq!(y.dims(), &[3, 2, 2]);
    /// assert_eq!(y.to_vec::<f32>().unwrap()[..4], [1.0, 1.0, 2.0, 2.0]);
    /// ```
    ///
    /// # Panics
    /// When the target has fewer axes, a non-1 extent would change, or a new axis is `-1`.
    #[track_caller]
    pub fn expand(&self, shape: impl Into<ShapeArg>) -> Tensor {
        self.expand_named("expand", &shape.into().0)
    }

    /// Same as [`Tensor::expand`] (`torch.broadcast_to`).
    #[track_caller]
    pub fn broadcast_to(&self, shape: impl Into<ShapeArg>) -> Tensor {
        self.expand_named("broadcast_to", &shape.into().0)
    }

    /// Expands to `other`'s shape.
    #[track_caller]
    pub fn expand_as(&self, other: &Tensor) -> Tensor {
        self.expand_named("expand_as", &ShapeArg::from(other.shape()).0)
    }

    #[track_caller]
    fn expand_named(&self, op: &str, spec: &[isize]) -> Tensor {
        let (src, r) = (self.shape(), spec.len());
        assert!(
            r >= src.rank(),
            "shape mismatch in {op}: cannot expand {src} to {} (the target has fewer axes)",
            spec_text(spec)
        );
        let off = r - src.rank();
        let mut dims = Vec::with_capacity(r);
        for (k, &t) in spec.iter().enumerate() {
            if k < off {
                assert!(
                    t >= 0,
                    "shape mismatch in {op}: cannot expand {src} to {}: new leading axis {k} has extent {t} (-1 only keeps an existing axis)",
                    spec_text(spec)
                );
                dims.push(t as usize);
                continue;
            }
            let s = src.dims()[k - off];
            let d = if t == -1 || t == s as isize {
                s
            } else {
                assert!(
                    t >= 0,
                    "shape mismatch in {op}: cannot expand {src} to {}: extent {t} at axis {k} is negative",
                    spec_text(spec)
                );
                assert!(
                    s == 1,
                    "shape mismatch in {op}: cannot expand {src} to {}: axis {k} has extent {s}, which is neither {t} nor 1 (only size-1 axes expand)",
                    spec_text(spec)
                );
                t as usize
            };
            dims.push(d);
        }
        self.broadcast_as(op, &Shape::new(dims))
    }

    /// Python slicing `x[.., start:end:step, ..]` along `dim`: negative bounds count from the
    /// end and out-of-range bounds are clamped (pass `isize::MAX` for "to the end").
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec((0..10).map(|v| v as f32).collect(), [10]);
    /// assert_eq!(x.slice(0, 1, -2, 3).to_vec::<f32>().unwrap(), vec![1.0, 4.0, 7.0]);
    /// assert_eq!(x.slice(0, -3, isize::MAX, 1).to_vec::<f32>().unwrap(), vec![7.0, 8.0, 9.0]);
    /// ```
    ///
    /// # Panics
    /// When `dim` is out of range or `step` is 0.
    #[track_caller]
    pub fn slice(&self, dim: isize, start: isize, end: isize, step: usize) -> Tensor {
        let a = norm_axis("slice", dim, self.rank(), self.shape());
        assert!(
            step >= 1,
            "bad slice in slice: step 0 along axis {a} of shape {} (step must be at least 1)",
            self.shape()
        );
        let n = self.dims()[a];
        let (s, e) = (clamp_bound(start, n), clamp_bound(end, n));
        let len = if e > s { (e - s).div_ceil(step) } else { 0 };
        self.slice_raw(a, s, len, step)
    }

    /// `len` elements along axis `a` from `start` with `step` (all in range).
    fn slice_raw(&self, a: usize, start: usize, len: usize, step: usize) -> Tensor {
        if start == 0 && (step == 1 || len <= 1) && len == self.dims()[a] {
            return self.clone();
        }
        let mut out = self.dims().to_vec();
        out[a] = len;
        let exprs = idx_except(self.rank(), a, affine_at(a, step, start as i64));
        self.reindex_plain(Shape::new(out), exprs)
    }

    /// `length` elements along `dim` from `start` (negative `start` counts from the end), as
    /// `torch.narrow`: unlike [`Tensor::slice`], the range must lie inside the axis.
    ///
    /// The start is a runtime parameter of the kernels, not part of them: minibatches taken
    /// with `x.narrow(0, i * b, b)` compile nothing and reuse one plan after the first `i`.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec((0..5).map(|v| v as f32).collect(), [5]);
    /// assert_eq!(x.narrow(0, 1, 3).to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    /// ```
    ///
    /// # Panics
    /// When the range leaves the axis.
    #[track_caller]
    pub fn narrow(&self, dim: isize, start: isize, length: usize) -> Tensor {
        let a = norm_axis("narrow", dim, self.rank(), self.shape());
        let n = self.dims()[a];
        assert!(
            start >= -(n as isize) && start <= n as isize,
            "bad slice in narrow: start {start} is out of range for axis {a} of shape {} (extent {n}; valid starts are -{n}..={n})",
            self.shape()
        );
        let s = if start < 0 { start + n as isize } else { start } as usize;
        assert!(
            length <= n - s,
            "bad slice in narrow: start {start} + length {length} exceeds extent {n} of axis {a} (shape {})",
            self.shape()
        );
        self.slice_raw(a, s, length, 1)
    }

    /// Splits along `dim` into pieces of `split_size` (the last may be smaller).
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::zeros([5, 2]);
    /// let dims: Vec<usize> = x.split(2, 0).iter().map(|p| p.dims()[0]).collect();
    /// assert_eq!(dims, vec![2, 2, 1]);
    /// ```
    ///
    /// # Panics
    /// When `split_size` is 0 and the axis is not empty.
    #[track_caller]
    pub fn split(&self, split_size: usize, dim: isize) -> Vec<Tensor> {
        let a = norm_axis("split", dim, self.rank(), self.shape());
        let n = self.dims()[a];
        assert!(
            split_size > 0 || n == 0,
            "bad arguments in split: split_size 0 for axis {a} of shape {} (extent {n}; only an empty axis takes split_size 0)",
            self.shape()
        );
        if n == 0 {
            return vec![self.clone()];
        }
        let sizes: Vec<usize> = (0..n)
            .step_by(split_size)
            .map(|s| split_size.min(n - s))
            .collect();
        self.split_raw(a, &sizes)
    }

    /// Splits along `dim` into pieces of the given sizes, which must sum to the extent.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::zeros([2, 6]);
    /// let p = x.split_sizes(&[1, 0, 5], -1);
    /// assert_eq!(p[2].dims(), &[2, 5]);
    /// ```
    #[track_caller]
    pub fn split_sizes(&self, sizes: &[usize], dim: isize) -> Vec<Tensor> {
        let a = norm_axis("split_sizes", dim, self.rank(), self.shape());
        let n = self.dims()[a];
        let total: u128 = sizes.iter().map(|&s| s as u128).sum();
        assert!(
            total == n as u128,
            "bad arguments in split_sizes: sizes {sizes:?} sum to {total}, but axis {a} of shape {} has extent {n}",
            self.shape()
        );
        self.split_raw(a, sizes)
    }

    /// Splits along `dim` into `chunks` pieces of `ceil(extent / chunks)` (fewer pieces when
    /// the extent runs out first, as `torch.chunk`).
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::zeros([5]);
    /// let dims: Vec<usize> = x.chunk(4, 0).iter().map(|p| p.dims()[0]).collect();
    /// assert_eq!(dims, vec![2, 2, 1]);
    /// ```
    ///
    /// # Panics
    /// When `chunks` is 0.
    #[track_caller]
    pub fn chunk(&self, chunks: usize, dim: isize) -> Vec<Tensor> {
        assert!(
            chunks > 0,
            "bad arguments in chunk: chunks must be at least 1, got 0 (shape {})",
            self.shape()
        );
        let a = norm_axis("chunk", dim, self.rank(), self.shape());
        let n = self.dims()[a];
        if n == 0 {
            return self.split_raw(a, &vec![0; chunks]);
        }
        self.split(n.div_ceil(chunks), a as isize)
    }

    fn split_raw(&self, a: usize, sizes: &[usize]) -> Vec<Tensor> {
        let mut start = 0;
        sizes
            .iter()
            .map(|&len| {
                let piece = self.slice_raw(a, start, len, 1);
                start += len;
                piece
            })
            .collect()
    }

    /// Concatenates along `dim`. Dtypes promote; shapes must agree on every other axis;
    /// pieces empty along `dim` are allowed, and (as in PyTorch) 1-D tensors of shape `[0]`
    /// are skipped whatever the others' shape.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], [1, 2]);
    /// let b = Tensor::from_vec(vec![3i64, 4, 5, 6], [2, 2]);
    /// let c = Tensor::cat(&[&a, &b], 0);
    /// assert_eq!(c.dims(), &[3, 2]);
    /// assert_eq!(c.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    /// ```
    ///
    /// # Panics
    /// When the list is empty, a tensor is rank 0, or the shapes disagree off `dim`.
    #[track_caller]
    pub fn cat(tensors: &[&Tensor], dim: isize) -> Tensor {
        assert!(
            !tensors.is_empty(),
            "bad arguments in cat: needs at least one tensor"
        );
        let dtype = tensors
            .iter()
            .map(|t| t.dtype())
            .reduce(DType::promote)
            .expect("non-empty");
        let mut pieces: Vec<(usize, &Tensor)> = tensors
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, t)| t.dims() != [0])
            .collect();
        if pieces.is_empty() {
            pieces = tensors.iter().copied().enumerate().collect();
        }
        let (i0, first) = pieces[0];
        assert!(
            first.rank() > 0,
            "bad shape in cat: tensor {i0} is zero-dimensional (shape []); cat needs at least one axis (use stack for scalars)"
        );
        let a = norm_axis("cat", dim, first.rank(), first.shape());
        let mut out = first.dims().to_vec();
        out[a] = 0;
        for &(i, t) in &pieces {
            let ok = t.rank() == first.rank()
                && (0..t.rank()).all(|k| k == a || t.dims()[k] == first.dims()[k]);
            assert!(
                ok,
                "shape mismatch in cat: tensor {i} has shape {}, expected {} with axis {a} free (cat needs equal extents on every other axis)",
                t.shape(),
                pattern(first.dims(), a)
            );
            out[a] += t.dims()[a];
        }
        let out = Shape::new(out);
        let nonempty: Vec<&Tensor> = pieces
            .iter()
            .map(|&(_, t)| t)
            .filter(|t| t.dims()[a] > 0)
            .collect();
        match nonempty.as_slice() {
            [] => return Tensor::constant(Scalar::zero(dtype), out),
            [only] => return only.cast(dtype),
            _ => {}
        }
        let idx = Tensor::from_op(Op::Index { axis: a }, &[], DType::I64, out.clone());
        let mut result: Option<Tensor> = None;
        let mut offset = 0usize;
        for t in nonempty {
            let exprs = idx_except(out.rank(), a, affine_at(a, 1, -(offset as i64)));
            let placed =
                t.cast(dtype)
                    .reindex_raw(out.clone(), exprs, Scalar::zero(dtype), vec![], &[]);
            result = Some(match result {
                None => placed,
                Some(prev) => Tensor::where_(&idx.ge(offset as i64), &placed, &prev),
            });
            offset += t.dims()[a];
        }
        result.expect("at least two pieces")
    }

    /// Stacks equal-shaped tensors along a new axis `dim` (in `-(rank+1)..=rank`).
    ///
    /// ```
    /// use metajit::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], [2]);
    /// let b = Tensor::from_vec(vec![3.0f32, 4.0], [2]);
    /// let s = Tensor::stack(&[&a, &b], 1);
    /// assert_eq!(s.dims(), &[2, 2]);
    /// assert_eq!(s.to_vec::<f32>().unwrap(), vec![1.0, 3.0, 2.0, 4.0]);
    /// ```
    ///
    /// # Panics
    /// When the list is empty or the shapes differ.
    #[track_caller]
    pub fn stack(tensors: &[&Tensor], dim: isize) -> Tensor {
        assert!(
            !tensors.is_empty(),
            "bad arguments in stack: needs at least one tensor"
        );
        let first = tensors[0];
        for (i, t) in tensors.iter().enumerate() {
            assert!(
                t.shape() == first.shape(),
                "shape mismatch in stack: tensor {i} has shape {}, expected {} (stack needs equal shapes)",
                t.shape(),
                first.shape()
            );
        }
        let a = norm_axis("stack", dim, first.rank() + 1, first.shape());
        let grown: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(a as isize)).collect();
        let refs: Vec<&Tensor> = grown.iter().collect();
        Tensor::cat(&refs, a as isize)
    }

    /// Pads with a constant, as `torch.nn.functional.pad`: `pads[0]` is (before, after) for
    /// the last axis, `pads[1]` for the one before it, and so on. A negative width crops
    /// instead: `(-1, 2)` removes the first element of the axis and appends two `value`s.
    /// Widths may be any integer type ([`PadWidth`]); unsigned ones only pad.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [1, 2]);
    /// let y = x.pad(&[(1, 0), (0, 1)], -1.0);
    /// assert_eq!(y.dims(), &[2, 3]);
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![-1.0, 1.0, 2.0, -1.0, -1.0, -1.0]);
    /// // Crop one from the front of the last axis, pad one at its end.
    /// let z = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).pad(&[(-1, 1)], 0.0);
    /// assert_eq!(z.to_vec::<f32>().unwrap(), vec![2.0, 3.0, 0.0]);
    /// ```
    ///
    /// # Panics
    /// When there are more pairs than axes, or when the negative widths of an axis together
    /// remove more elements than it has (PyTorch refuses these too).
    #[track_caller]
    pub fn pad<W: PadWidth>(&self, pads: &[(W, W)], value: f64) -> Tensor {
        let r = self.rank();
        assert!(
            pads.len() <= r,
            "bad arguments in pad: {} (before, after) pairs for shape {} (rank {r}); at most one pair per axis, starting from the last",
            pads.len(),
            self.shape()
        );
        let pads: Vec<(i64, i64)> = pads
            .iter()
            .map(|&(lo, hi)| (lo.width(), hi.width()))
            .collect();
        if pads.iter().all(|&(lo, hi)| lo == 0 && hi == 0) {
            return self.clone();
        }
        let mut out = self.dims().to_vec();
        let mut exprs: Vec<IndexExpr> = (0..r).map(IndexExpr::Idx).collect();
        for (j, &(lo, hi)) in pads.iter().enumerate() {
            let a = r - 1 - j;
            let extent = self.dims()[a] as i64;
            let cropped = (-lo).max(0).saturating_add((-hi).max(0));
            assert!(
                cropped <= extent,
                "bad arguments in pad: widths ({lo}, {hi}) for axis {a} of shape {} crop {cropped} element(s), but the axis has {extent}",
                self.shape()
            );
            let size = extent.saturating_add(lo).saturating_add(hi);
            out[a] = usize::try_from(size).unwrap_or_else(|_| {
                panic!(
                    "bad arguments in pad: widths ({lo}, {hi}) for axis {a} of shape {} give an axis of {size} elements",
                    self.shape()
                )
            });
            // Output element o reads input element o - lo (out of range: the fill value).
            exprs[a] = affine(a, 1, -lo);
        }
        let fill = Scalar::F64(value).cast(self.dtype());
        self.reindex_raw(Shape::new(out), exprs, fill, vec![], &[])
    }

    /// Reverses the order of elements along `dims` (one axis, several, or [`All`](super::All)).
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec((0..6).map(|v| v as f32).collect(), [2, 3]);
    /// assert_eq!(x.flip(-1).to_vec::<f32>().unwrap(), vec![2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
    /// ```
    #[track_caller]
    pub fn flip(&self, dims: impl Dims) -> Tensor {
        let axes = resolve_dims("flip", &dims, self.shape());
        if axes.is_empty() {
            return self.clone();
        }
        let exprs = (0..self.rank())
            .map(|k| {
                if axes.contains(&k) {
                    IndexExpr::TargetDim(k) - 1 - IndexExpr::Idx(k)
                } else {
                    IndexExpr::Idx(k)
                }
            })
            .collect();
        self.reindex_plain(self.shape().clone(), exprs)
    }

    /// Tiles the tensor `reps[k]` times along axis `k`, as `torch.Tensor.repeat`; extra
    /// leading counts add leading axes.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]);
    /// let y = x.repeat(&[2, 2]);
    /// assert_eq!(y.dims(), &[2, 4]);
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
    /// ```
    ///
    /// # Panics
    /// When there are fewer counts than axes.
    #[track_caller]
    pub fn repeat(&self, reps: &[usize]) -> Tensor {
        let r = self.rank();
        assert!(
            reps.len() >= r,
            "bad arguments in repeat: {} repeat count(s) {reps:?} for shape {} (rank {r}); repeat needs at least one per axis",
            reps.len(),
            self.shape()
        );
        let off = reps.len() - r;
        let out: Vec<usize> = reps
            .iter()
            .enumerate()
            .map(|(k, &n)| if k < off { n } else { n * self.dims()[k - off] })
            .collect();
        if out == self.dims() {
            return self.clone();
        }
        let exprs = (0..r)
            .map(|j| {
                if reps[j + off] == 1 {
                    IndexExpr::Idx(j + off)
                } else {
                    IndexExpr::Idx(j + off) % IndexExpr::TargetDim(j)
                }
            })
            .collect();
        self.reindex_plain(Shape::new(out), exprs)
    }

    /// `torch.gather`: `out[i][j][k] = x[i][index[i][j][k]][k]` for `dim = 1`. `index` has the
    /// tensor's rank, an integer dtype, and extents no larger than the tensor's off `dim`; the
    /// output has `index`'s shape.
    ///
    /// Indices are lazy, so they are not checked: an out-of-range (or negative) index reads 0,
    /// where PyTorch raises.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]);
    /// let i = Tensor::from_vec(vec![0i64, 0, 1, 0], [2, 2]);
    /// assert_eq!(x.gather(1, &i).to_vec::<f32>().unwrap(), vec![1.0, 1.0, 4.0, 3.0]);
    /// ```
    ///
    /// # Panics
    /// When `index` is not an integer tensor, its rank differs, or it is larger off `dim`.
    #[track_caller]
    pub fn gather(&self, dim: isize, index: &Tensor) -> Tensor {
        assert!(
            index.dtype().is_int(),
            "dtype mismatch in gather: index must be an integer tensor, got {} (shape {})",
            index.dtype(),
            index.shape()
        );
        let a = norm_axis_scalar_ok("gather", dim, self.shape());
        let r = self.rank();
        assert!(
            index.rank() == r,
            "shape mismatch in gather: index has shape {}, input {}; gather needs an index of the same rank ({r})",
            index.shape(),
            self.shape()
        );
        for k in 0..r {
            assert!(
                k == a || index.dims()[k] <= self.dims()[k],
                "shape mismatch in gather: index {} is larger than input {} at axis {k} (off axis {a}, index extents must not exceed the input's)",
                index.shape(),
                self.shape()
            );
        }
        let index = index.cast(DType::I64);
        let read = IndexExpr::Extra(0, (0..r).map(IndexExpr::Idx).collect());
        let zero = Scalar::zero(self.dtype());
        if r == 0 {
            // A scalar has one element: index 0 reads it, anything else overflows.
            let cond = read.ne_(IndexExpr::Const(0));
            return self.reindex_raw(Shape::scalar(), vec![], zero, vec![cond], &[&index]);
        }
        let exprs = idx_except(r, a, read);
        self.reindex_raw(index.shape().clone(), exprs, zero, vec![], &[&index])
    }

    /// `torch.index_select`: the entries `index[j]` along `dim`, in order (repeats allowed).
    /// `index` is an integer tensor of rank 1 (or 0, taken as one entry).
    ///
    /// Indices are lazy, so they are not checked: an out-of-range (or negative) index reads 0,
    /// where PyTorch raises.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec((0..6).map(|v| v as f32).collect(), [3, 2]);
    /// let i = Tensor::from_slice(&[2i64, 0, 2]);
    /// let y = x.index_select(0, &i);
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
    /// ```
    ///
    /// # Panics
    /// When `index` is not an integer tensor of rank ≤ 1.
    #[track_caller]
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Tensor {
        assert!(
            index.dtype().is_int(),
            "dtype mismatch in index_select: index must be an integer tensor, got {} (shape {})",
            index.dtype(),
            index.shape()
        );
        assert!(
            index.rank() <= 1,
            "bad shape in index_select: index must have rank 1, got shape {}",
            index.shape()
        );
        let a = norm_axis("index_select", dim, self.rank(), self.shape());
        let index = index.cast(DType::I64).view_as(Shape::new([index.numel()]));
        let mut out = self.dims().to_vec();
        out[a] = index.numel();
        let exprs = idx_except(self.rank(), a, IndexExpr::Extra(0, vec![IndexExpr::Idx(a)]));
        self.reindex_raw(
            Shape::new(out),
            exprs,
            Scalar::zero(self.dtype()),
            vec![],
            &[&index],
        )
    }

    /// Keeps the lower triangle of the last two axes: elements with `col - row <= k`; the
    /// rest become 0.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::ones([2, 3]);
    /// assert_eq!(x.tril(0).to_vec::<f32>().unwrap(), vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    /// ```
    ///
    /// # Panics
    /// When the rank is below 2.
    #[track_caller]
    pub fn tril(&self, k: i64) -> Tensor {
        self.triangle("tril", k, true)
    }

    /// Keeps the upper triangle of the last two axes: elements with `col - row >= k`; the
    /// rest become 0.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::ones([2, 3]);
    /// assert_eq!(x.triu(1).to_vec::<f32>().unwrap(), vec![0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
    /// ```
    ///
    /// # Panics
    /// When the rank is below 2.
    #[track_caller]
    pub fn triu(&self, k: i64) -> Tensor {
        self.triangle("triu", k, false)
    }

    #[track_caller]
    fn triangle(&self, op: &str, k: i64, lower: bool) -> Tensor {
        let r = self.rank();
        assert!(
            r >= 2,
            "bad shape in {op}: needs at least 2 axes (a matrix or a batch of them), got shape {}",
            self.shape()
        );
        let matrix = Shape::new(&self.dims()[r - 2..]);
        let row = Tensor::from_op(Op::Index { axis: 0 }, &[], DType::I64, matrix.clone());
        let col = Tensor::from_op(Op::Index { axis: 1 }, &[], DType::I64, matrix);
        let diff = col.sub(&row);
        let keep = if lower { diff.le(k) } else { diff.ge(k) };
        let zero = Tensor::constant(Scalar::zero(self.dtype()), Shape::scalar());
        Tensor::where_(&keep, self, &zero)
    }

    /// One-hot encoding of an integer tensor: a new last axis of `num_classes`, 1 at the
    /// tensor's value and 0 elsewhere, as i64.
    ///
    /// Values are lazy, so they are not checked: a value outside `0..num_classes` gives a row
    /// of zeros, where PyTorch raises.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let y = Tensor::from_slice(&[2i64, 0]).one_hot(3);
    /// assert_eq!(y.dims(), &[2, 3]);
    /// assert_eq!(y.to_vec::<i64>().unwrap(), vec![0, 0, 1, 1, 0, 0]);
    /// ```
    ///
    /// # Panics
    /// When the tensor is not an integer tensor.
    #[track_caller]
    pub fn one_hot(&self, num_classes: usize) -> Tensor {
        assert!(
            self.dtype().is_int(),
            "dtype mismatch in one_hot: input must be an integer tensor, got {} (shape {})",
            self.dtype(),
            self.shape()
        );
        let classes = Tensor::from_op(
            Op::Index { axis: 0 },
            &[],
            DType::I64,
            Shape::new([num_classes]),
        );
        self.cast(DType::I64)
            .unsqueeze(-1)
            .eq(&classes)
            .cast(DType::I64)
    }

    /// The same values, materialised (a `Contiguous` node: a fusion boundary).
    pub fn contiguous(&self) -> Tensor {
        Tensor::from_op(Op::Contiguous, &[self], self.dtype(), self.shape().clone())
    }
}
