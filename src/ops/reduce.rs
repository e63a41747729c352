//! Reductions over any axes, with `keepdim`: sum, mean, prod, max, min, var, std, argmax,
//! argmin, logsumexp, all, any. Axes are given as [`Dims`] (`1`, `-1`, `[0, 2]`, [`All`]).
//!
//! Semantics follow PyTorch: sums and products of integers and bools are i64; `mean` needs a
//! float; max/min propagate NaN and refuse empty axes (no identity); argmax/argmin return the
//! first occurrence, with NaN counting as the maximum (and the minimum); `var`/`std` are
//! unbiased; `logsumexp` is computed stably (±inf and -inf-only rows included).

use metajit_metaops::{DType, Op, ReduceOp, Shape};

use super::{All, Dims, resolve_dims};
use crate::tensor::Tensor;

impl Tensor {
    /// Integers and bools accumulate in i64, as in PyTorch.
    fn accumulating(&self) -> Tensor {
        if self.dtype().is_float() || self.dtype() == DType::I64 {
            self.clone()
        } else {
            self.cast(DType::I64)
        }
    }

    /// Sum over `dims` (integers and bools give i64).
    ///
    /// ```
    /// use metajit::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]);
    /// assert_eq!(t.sum(1, false).to_vec::<f32>().unwrap(), vec![3.0, 7.0]);
    /// assert_eq!(t.sum(-1, true).shape().dims(), &[2, 1]);
    /// ```
    #[track_caller]
    pub fn sum(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        let axes = resolve_dims("sum", &dims, self.shape());
        self.accumulating()
            .reduce_raw("sum", ReduceOp::Sum, axes, keepdim)
    }

    /// Sum of every element, as a rank-0 tensor.
    #[track_caller]
    pub fn sum_all(&self) -> Tensor {
        self.sum(All, false)
    }

    /// Product over `dims` (integers and bools give i64).
    #[track_caller]
    pub fn prod(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        let axes = resolve_dims("prod", &dims, self.shape());
        self.accumulating()
            .reduce_raw("prod", ReduceOp::Prod, axes, keepdim)
    }

    /// Mean over `dims` (NaN over empty axes).
    ///
    /// # Panics
    /// When the tensor is not a float tensor (as PyTorch).
    #[track_caller]
    pub fn mean(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        if !self.dtype().is_float() {
            panic!(
                "dtype mismatch in mean: needs a float tensor, got {} (shape {}); cast first",
                self.dtype(),
                self.shape()
            );
        }
        let axes = resolve_dims("mean", &dims, self.shape());
        let n: usize = axes.iter().map(|&a| self.dims()[a]).product();
        self.reduce_raw("mean", ReduceOp::Sum, axes, keepdim)
            .div(n as f64)
    }

    /// Mean of every element.
    #[track_caller]
    pub fn mean_all(&self) -> Tensor {
        self.mean(All, false)
    }

    /// Maximum over `dims` (NaN if any element is NaN).
    ///
    /// # Panics
    /// When a reduced axis is empty.
    #[track_caller]
    pub fn max(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        let axes = resolve_dims("max", &dims, self.shape());
        self.reduce_raw("max", ReduceOp::Max, axes, keepdim)
    }

    /// Minimum over `dims` (NaN if any element is NaN).
    ///
    /// # Panics
    /// When a reduced axis is empty.
    #[track_caller]
    pub fn min(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        let axes = resolve_dims("min", &dims, self.shape());
        self.reduce_raw("min", ReduceOp::Min, axes, keepdim)
    }

    /// Maximum of every element.
    #[track_caller]
    pub fn max_all(&self) -> Tensor {
        self.max(All, false)
    }

    /// Minimum of every element.
    #[track_caller]
    pub fn min_all(&self) -> Tensor {
        self.min(All, false)
    }

    /// `torch.max(x, dim)`: the maxima along `dim` and their (first) indices.
    ///
    /// The values are read at the returned index (a gather), so their gradient goes to that
    /// one element, as PyTorch's; [`Tensor::max`] (`amax`) splits it among ties instead.
    #[track_caller]
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> (Tensor, Tensor) {
        self.extreme_dim("max_dim", dim, keepdim, true)
    }

    /// `torch.min(x, dim)`: the minima along `dim` and their (first) indices (the gradient of
    /// the values goes to the returned index, as in [`Tensor::max_dim`]).
    #[track_caller]
    pub fn min_dim(&self, dim: isize, keepdim: bool) -> (Tensor, Tensor) {
        self.extreme_dim("min_dim", dim, keepdim, false)
    }

    #[track_caller]
    fn extreme_dim(&self, name: &str, dim: isize, keepdim: bool, max: bool) -> (Tensor, Tensor) {
        let axis = super::norm_axis(name, dim, self.rank(), self.shape());
        let op = if max { ReduceOp::Max } else { ReduceOp::Min };
        if !self.dtype().is_float() {
            let values = self.reduce_raw(name, op, vec![axis], keepdim);
            return (values, self.arg_extreme(name, op, dim, keepdim));
        }
        let index = self.arg_extreme(name, op, dim, true);
        let values = self.gather(axis as isize, &index);
        if keepdim {
            (values, index)
        } else {
            let shape: Vec<usize> = (0..self.rank())
                .filter(|&a| a != axis)
                .map(|a| self.dims()[a])
                .collect();
            (
                values.view_as(Shape::new(shape.clone())),
                index.view_as(Shape::new(shape)),
            )
        }
    }

    /// Index of the first maximum along `dim` (NaN counts as the maximum), as i64.
    #[track_caller]
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Tensor {
        self.arg_extreme("argmax", ReduceOp::Max, dim, keepdim)
    }

    /// Index of the first minimum along `dim` (NaN counts as the minimum), as i64.
    #[track_caller]
    pub fn argmin(&self, dim: isize, keepdim: bool) -> Tensor {
        self.arg_extreme("argmin", ReduceOp::Min, dim, keepdim)
    }

    /// Index of the first maximum of the flattened tensor.
    #[track_caller]
    pub fn argmax_all(&self) -> Tensor {
        self.view_as(Shape::new([self.numel()]))
            .arg_extreme("argmax", ReduceOp::Max, 0, false)
    }

    /// Index of the first minimum of the flattened tensor.
    #[track_caller]
    pub fn argmin_all(&self) -> Tensor {
        self.view_as(Shape::new([self.numel()]))
            .arg_extreme("argmin", ReduceOp::Min, 0, false)
    }

    /// `min(where(x == extreme(x) or x is NaN, index, n))` along the axis.
    #[track_caller]
    fn arg_extreme(&self, name: &str, op: ReduceOp, dim: isize, keepdim: bool) -> Tensor {
        let axis = super::norm_axis(name, dim, self.rank(), self.shape());
        let m = self.reduce_raw(name, op, vec![axis], true);
        // If the extreme is NaN, only NaNs match (x != x); otherwise no x is NaN.
        let hit = self.eq(&m).logical_or(&self.isnan());
        let n = self.dims()[axis] as i64;
        let idx = Tensor::from_op(Op::Index { axis }, &[], DType::I64, self.shape().clone());
        Tensor::where_(&hit, &idx, n).reduce_raw(name, ReduceOp::Min, vec![axis], keepdim)
    }

    /// Variance over `dims` with Bessel's correction (divides by `n - 1`), as PyTorch's default.
    #[track_caller]
    pub fn var(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        self.var_correction(dims, 1, keepdim)
    }

    /// Variance dividing by `n - correction` (0: the biased estimator).
    #[track_caller]
    pub fn var_correction(&self, dims: impl Dims, correction: usize, keepdim: bool) -> Tensor {
        self.var_named("var", &dims, correction, keepdim)
    }

    #[track_caller]
    fn var_named(&self, name: &str, dims: &impl Dims, correction: usize, keepdim: bool) -> Tensor {
        if !self.dtype().is_float() {
            panic!(
                "dtype mismatch in {name}: needs a float tensor, got {} (shape {}); cast first",
                self.dtype(),
                self.shape()
            );
        }
        let axes = resolve_dims(name, dims, self.shape());
        let n: usize = axes.iter().map(|&a| self.dims()[a]).product();
        let mean = self
            .reduce_raw(name, ReduceOp::Sum, axes.clone(), true)
            .div(n as f64);
        let dev = self.sub(&mean);
        let denom = (n as f64 - correction as f64).max(0.0);
        dev.mul(&dev)
            .reduce_raw(name, ReduceOp::Sum, axes, keepdim)
            .div(denom)
    }

    /// Standard deviation (unbiased), `sqrt(var)`.
    #[track_caller]
    pub fn std(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        self.std_correction(dims, 1, keepdim)
    }

    /// Standard deviation dividing by `n - correction`: `sqrt(var_correction(..))`, as
    /// PyTorch's `std(dim, correction=c)` (0: the population standard deviation).
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_slice(&[1.0f32, 3.0]);
    /// assert_eq!(x.std_correction(0, 0, false).item::<f32>().unwrap(), 1.0);
    /// ```
    #[track_caller]
    pub fn std_correction(&self, dims: impl Dims, correction: usize, keepdim: bool) -> Tensor {
        self.var_named("std", &dims, correction, keepdim).sqrt()
    }

    /// `log(sum(exp(x)))` over `dims`, computed stably: the maximum is subtracted first (and
    /// replaced by 0 where it is infinite, so rows of -inf give -inf and +inf gives +inf).
    #[track_caller]
    pub fn logsumexp(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        let x = if self.dtype().is_float() {
            self.clone()
        } else {
            self.cast(DType::F32)
        };
        let axes = resolve_dims("logsumexp", &dims, x.shape());
        if axes.iter().any(|&a| x.dims()[a] == 0) {
            // log(sum of nothing) = log(0), as PyTorch.
            let shape: Vec<usize> = (0..x.rank())
                .filter_map(|a| match (axes.contains(&a), keepdim) {
                    (true, true) => Some(1),
                    (true, false) => None,
                    (false, _) => Some(x.dims()[a]),
                })
                .collect();
            let out = Tensor::full_dtype(shape, f64::NEG_INFINITY, x.dtype());
            return crate::autograd::with_custom_rule(out, crate::autograd::Custom::Zero, &[&x]);
        }
        // The shift carries no gradient (it cancels analytically), so that the gradient is
        // softmax exactly and an all -inf row gives NaN, as PyTorch.
        let m = x
            .reduce_raw("logsumexp", ReduceOp::Max, axes.clone(), true)
            .detach();
        let m = Tensor::where_(&m.isinf(), 0.0, &m);
        let s = x
            .sub(&m)
            .exp()
            .reduce_raw("logsumexp", ReduceOp::Sum, axes.clone(), keepdim)
            .log();
        let m_out = if keepdim {
            m
        } else {
            m.view_as(s.shape().clone())
        };
        s.add(&m_out)
    }

    /// True where every element over `dims` is nonzero.
    #[track_caller]
    pub fn all(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        let axes = resolve_dims("all", &dims, self.shape());
        self.cast(DType::Bool)
            .reduce_raw("all", ReduceOp::And, axes, keepdim)
    }

    /// True where any element over `dims` is nonzero.
    #[track_caller]
    pub fn any(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        let axes = resolve_dims("any", &dims, self.shape());
        self.cast(DType::Bool)
            .reduce_raw("any", ReduceOp::Or, axes, keepdim)
    }
}
