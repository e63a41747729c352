//! Element-wise ops: arithmetic with NumPy/PyTorch broadcasting and type promotion,
//! comparisons, logic, math functions and activations, `where`, casts. Operators (`+ - * / %`
//! and unary `-`) work on `Tensor`, `&Tensor` and Rust numbers on either side.

use std::ops;

use metajit_metaops::{BinaryOp, DType, Op, Scalar, UnaryOp, broadcast_shapes};

use super::Operand;
use crate::tensor::Tensor;

/// The dtype an operand pair computes in: two tensors promote; a number next to a tensor is
/// weak (see [`Operand`]).
fn pair_dtype(a: &Operand<'_>, b: &Operand<'_>) -> DType {
    match (a, b) {
        (Operand::Tensor(t), other) | (other, Operand::Tensor(t)) => other.result_dtype(t.dtype()),
        _ => unreachable!("binary ops always have a tensor operand"),
    }
}

/// Lowers `op(a, b)`: promote, broadcast, one `Binary` node. With `swap`, the node computes
/// `op(b, a)` (for `gt`/`ge`), while messages still name the operands in the caller's order.
#[track_caller]
fn binary(name: &str, op: BinaryOp, a: Operand<'_>, b: Operand<'_>, dtype: DType) -> Tensor {
    binary_swapped(name, op, a, b, dtype, false)
}

#[track_caller]
fn binary_swapped(
    name: &str,
    op: BinaryOp,
    a: Operand<'_>,
    b: Operand<'_>,
    dtype: DType,
    swap: bool,
) -> Tensor {
    let scalar = metajit_metaops::Shape::scalar();
    let (sa, sb) = (operand_shape(&a, &scalar), operand_shape(&b, &scalar));
    let shape = if sa == sb {
        sa.clone()
    } else {
        let Some(shape) = broadcast_shapes(sa, sb) else {
            panic!(
                "shape mismatch in {name}: lhs {sa}, rhs {sb} (broadcasting needs, for each axis aligned at the right, equal extents or an extent of 1)"
            )
        };
        shape
    };
    if !op.accepts(dtype) {
        panic!(
            "dtype mismatch in {name}: operands of dtype {dtype} are not supported (lhs {sa}, rhs {sb}){}",
            match op {
                BinaryOp::Sub => "; for bools use logical_xor",
                BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => {
                    "; bitwise ops need integers or bools"
                }
                _ => "",
            }
        );
    }
    let ta = operand_as(a, dtype, name, &shape);
    let tb = operand_as(b, dtype, name, &shape);
    let (x, y) = if swap { (&*tb, &*ta) } else { (&*ta, &*tb) };
    Tensor::from_op(Op::Binary(op), &[x, y], op.output_dtype(dtype), shape)
}

/// An operand as a tensor of `dtype` and `shape`: the tensor itself when it already is one
/// (no handle is cloned), else cast and broadcast.
#[track_caller]
fn operand_as<'a>(
    o: Operand<'a>,
    dtype: DType,
    name: &str,
    shape: &metajit_metaops::Shape,
) -> std::borrow::Cow<'a, Tensor> {
    match o {
        Operand::Tensor(t) if t.dtype() == dtype && t.shape() == shape => {
            std::borrow::Cow::Borrowed(t)
        }
        o => std::borrow::Cow::Owned(o.to_tensor(dtype).broadcast_as(name, shape)),
    }
}

/// The shape of an operand (`scalar` for a number).
fn operand_shape<'a>(
    o: &Operand<'a>,
    scalar: &'a metajit_metaops::Shape,
) -> &'a metajit_metaops::Shape {
    match *o {
        Operand::Tensor(t) => t.shape(),
        _ => scalar,
    }
}

impl Tensor {
    /// Converts to `dtype` (no node when it already is): float→int truncates toward zero and
    /// saturates (NaN → 0), int→narrower int wraps, anything→bool is `!= 0`.
    pub fn cast(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        Tensor::from_op(Op::Cast(dtype), &[self], dtype, self.shape().clone())
    }

    /// Same as [`Tensor::cast`] (PyTorch's `.to(dtype)`).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        self.cast(dtype)
    }

    #[track_caller]
    fn unary(&self, name: &str, op: UnaryOp) -> Tensor {
        assert!(
            op.accepts(self.dtype()),
            "dtype mismatch in {name}: dtype {} is not supported (shape {})",
            self.dtype(),
            self.shape()
        );
        Tensor::from_op(Op::Unary(op), &[self], self.dtype(), self.shape().clone())
    }

    /// Integer and bool tensors become f32, as PyTorch does for `exp`, `sqrt`, ...
    pub(crate) fn to_float(&self) -> Tensor {
        if self.dtype().is_float() {
            self.clone()
        } else {
            self.cast(DType::F32)
        }
    }

    /// A number as a rank-0 tensor of this tensor's dtype.
    pub(crate) fn scalar_like(&self, v: f64) -> Tensor {
        Tensor::constant(
            Scalar::F64(v).cast(self.dtype()),
            metajit_metaops::Shape::scalar(),
        )
    }

    /// `a + b` with broadcasting (bool + bool is logical or, as in PyTorch).
    #[track_caller]
    pub fn add<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("add", BinaryOp::Add, a, b, d)
    }

    /// `a - b` with broadcasting.
    #[track_caller]
    pub fn sub<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("sub", BinaryOp::Sub, a, b, d)
    }

    /// `a * b` with broadcasting.
    #[track_caller]
    pub fn mul<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("mul", BinaryOp::Mul, a, b, d)
    }

    /// True division `a / b`; integer operands give f32, as in PyTorch.
    #[track_caller]
    pub fn div<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let mut d = pair_dtype(&a, &b);
        if !d.is_float() {
            d = DType::F32;
        }
        binary("div", BinaryOp::Div, a, b, d)
    }

    /// Floor division (`//`): rounds toward -inf; integer division by zero gives 0. For floats it
    /// follows PyTorch (and Python): `a == b * (a // b) + a % b` holds up to rounding, so
    /// `1.0 // 0.1 == 9`.
    #[track_caller]
    pub fn floor_divide<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        if !d.is_float() {
            return binary("floor_divide", BinaryOp::Div, a, b, d);
        }
        // Validate shapes and dtypes once, with this op's name.
        let q = binary("floor_divide", BinaryOp::Div, a, b, d);
        let (x, y) = (a.to_tensor(d), b.to_tensor(d));
        let r = x.remainder(&y);
        let div = x.sub(&r).div(&y);
        let fl = div.floor();
        let rounded = Tensor::where_(&div.sub(&fl).gt(0.5), &fl.add(1.0), &fl);
        // A zero quotient takes the sign of a / b.
        let signed = Tensor::where_(&div.eq(0.0), &q.mul(0.0), &rounded);
        // Finite a over an infinite b: 0 (signed) when the signs agree or a is 0, else -1.
        let opposite = x.lt(0.0).ne(&y.lt(0.0)).logical_and(&x.ne(0.0));
        let by_inf = Tensor::where_(&opposite, -1.0, &q);
        let signed = Tensor::where_(&y.isinf().logical_and(&x.isfinite()), &by_inf, &signed);
        Tensor::where_(&y.eq(0.0), &q, &signed)
    }

    /// `torch.remainder`: the result has the divisor's sign (Python's `%`).
    #[track_caller]
    pub fn remainder<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("remainder", BinaryOp::Mod, a, b, d)
    }

    /// `a ^ b` element-wise.
    #[track_caller]
    pub fn pow<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("pow", BinaryOp::Pow, a, b, d)
    }

    /// Element-wise maximum; NaN if either is NaN.
    #[track_caller]
    pub fn maximum<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("maximum", BinaryOp::Max, a, b, d)
    }

    /// Element-wise minimum; NaN if either is NaN.
    #[track_caller]
    pub fn minimum<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("minimum", BinaryOp::Min, a, b, d)
    }

    /// `a == b` → bool.
    #[track_caller]
    pub fn eq<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("eq", BinaryOp::Eq, a, b, d)
    }

    /// `a != b` → bool.
    #[track_caller]
    pub fn ne<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("ne", BinaryOp::Ne, a, b, d)
    }

    /// `a < b` → bool.
    #[track_caller]
    pub fn lt<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("lt", BinaryOp::Lt, a, b, d)
    }

    /// `a <= b` → bool.
    #[track_caller]
    pub fn le<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("le", BinaryOp::Le, a, b, d)
    }

    /// `a > b` → bool.
    #[track_caller]
    pub fn gt<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary_swapped("gt", BinaryOp::Lt, a, b, d, true)
    }

    /// `a >= b` → bool.
    #[track_caller]
    pub fn ge<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary_swapped("ge", BinaryOp::Le, a, b, d, true)
    }

    /// Logical and of nonzero-ness → bool.
    #[track_caller]
    pub fn logical_and(&self, rhs: &Tensor) -> Tensor {
        let (a, b) = (self.cast(DType::Bool), rhs.cast(DType::Bool));
        binary(
            "logical_and",
            BinaryOp::And,
            (&a).into(),
            (&b).into(),
            DType::Bool,
        )
    }

    /// Logical or of nonzero-ness → bool.
    #[track_caller]
    pub fn logical_or(&self, rhs: &Tensor) -> Tensor {
        let (a, b) = (self.cast(DType::Bool), rhs.cast(DType::Bool));
        binary(
            "logical_or",
            BinaryOp::Or,
            (&a).into(),
            (&b).into(),
            DType::Bool,
        )
    }

    /// Logical xor of nonzero-ness → bool.
    #[track_caller]
    pub fn logical_xor(&self, rhs: &Tensor) -> Tensor {
        let (a, b) = (self.cast(DType::Bool), rhs.cast(DType::Bool));
        binary(
            "logical_xor",
            BinaryOp::Xor,
            (&a).into(),
            (&b).into(),
            DType::Bool,
        )
    }

    /// Logical not of nonzero-ness → bool.
    pub fn logical_not(&self) -> Tensor {
        self.cast(DType::Bool).unary("logical_not", UnaryOp::Not)
    }

    /// Bitwise and (integers and bools).
    #[track_caller]
    pub fn bitwise_and<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("bitwise_and", BinaryOp::And, a, b, d)
    }

    /// Bitwise or (integers and bools).
    #[track_caller]
    pub fn bitwise_or<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("bitwise_or", BinaryOp::Or, a, b, d)
    }

    /// Bitwise xor (integers and bools).
    #[track_caller]
    pub fn bitwise_xor<'a>(&self, rhs: impl Into<Operand<'a>>) -> Tensor {
        let (a, b) = (Operand::Tensor(self), rhs.into());
        let d = pair_dtype(&a, &b);
        binary("bitwise_xor", BinaryOp::Xor, a, b, d)
    }

    /// Bitwise not (integers; logical not for bools).
    #[track_caller]
    pub fn bitwise_not(&self) -> Tensor {
        self.unary("bitwise_not", UnaryOp::Not)
    }

    /// `where(cond, a, b)`: `a` where `cond` is true, else `b`, with broadcasting of all three.
    ///
    /// # Panics
    /// When `cond` is not bool, or the shapes do not broadcast.
    #[track_caller]
    pub fn where_<'a, 'b>(
        cond: &Tensor,
        a: impl Into<Operand<'a>>,
        b: impl Into<Operand<'b>>,
    ) -> Tensor {
        let (a, b) = (a.into(), b.into());
        assert!(
            cond.dtype() == DType::Bool,
            "dtype mismatch in where: the condition must be bool, got {} (shape {}); compare first, e.g. x.gt(0.0)",
            cond.dtype(),
            cond.shape()
        );
        let dtype = match (&a, &b) {
            (Operand::Tensor(_), _) | (_, Operand::Tensor(_)) => pair_dtype(&a, &b),
            (Operand::Float(_), _) | (_, Operand::Float(_)) => DType::F32,
            (Operand::Int(_), _) | (_, Operand::Int(_)) => DType::I64,
            _ => DType::Bool,
        };
        let shape_of = |o: &Operand<'_>| match o {
            Operand::Tensor(t) => t.shape().clone(),
            _ => metajit_metaops::Shape::scalar(),
        };
        let (sa, sb) = (shape_of(&a), shape_of(&b));
        let Some(shape) =
            broadcast_shapes(cond.shape(), &sa).and_then(|s| broadcast_shapes(&s, &sb))
        else {
            panic!(
                "shape mismatch in where: cond {}, a {sa}, b {sb} (the three must broadcast together)",
                cond.shape()
            )
        };
        let c = cond.broadcast_as("where", &shape);
        let ta = a.to_tensor(dtype).broadcast_as("where", &shape);
        let tb = b.to_tensor(dtype).broadcast_as("where", &shape);
        Tensor::from_op(Op::Where, &[&c, &ta, &tb], dtype, shape)
    }

    /// `value` where `mask` is true, else `self`; the result keeps `self`'s dtype (the value is
    /// converted to it), as in PyTorch.
    #[track_caller]
    pub fn masked_fill<'a>(&self, mask: &Tensor, value: impl Into<Operand<'a>>) -> Tensor {
        if mask.dtype() != DType::Bool {
            panic!(
                "dtype mismatch in masked_fill: the mask must be bool, got {} (mask {}, self {})",
                mask.dtype(),
                mask.shape(),
                self.shape()
            );
        }
        let v = value.into().to_tensor(self.dtype());
        Tensor::where_(mask, &v, self)
    }

    /// `-x`.
    #[track_caller]
    pub fn neg(&self) -> Tensor {
        self.unary("neg", UnaryOp::Neg)
    }

    /// `|x|`.
    #[track_caller]
    pub fn abs(&self) -> Tensor {
        if self.dtype().is_bool() {
            return self.clone();
        }
        self.unary("abs", UnaryOp::Abs)
    }

    /// `1 / x`.
    pub fn recip(&self) -> Tensor {
        self.to_float().unary("recip", UnaryOp::Recip)
    }

    /// `sqrt(x)` (NaN for negatives).
    pub fn sqrt(&self) -> Tensor {
        self.to_float().unary("sqrt", UnaryOp::Sqrt)
    }

    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Tensor {
        self.sqrt().recip()
    }

    /// `e^x`.
    pub fn exp(&self) -> Tensor {
        self.to_float().unary("exp", UnaryOp::Exp)
    }

    /// Natural logarithm (NaN for negatives, -inf at 0).
    pub fn log(&self) -> Tensor {
        self.to_float().unary("log", UnaryOp::Log)
    }

    /// Sine.
    pub fn sin(&self) -> Tensor {
        self.to_float().unary("sin", UnaryOp::Sin)
    }

    /// Cosine.
    pub fn cos(&self) -> Tensor {
        self.to_float().unary("cos", UnaryOp::Cos)
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        self.to_float().unary("tanh", UnaryOp::Tanh)
    }

    /// The logistic function `1 / (1 + e^-x)`.
    pub fn sigmoid(&self) -> Tensor {
        self.to_float().unary("sigmoid", UnaryOp::Sigmoid)
    }

    /// The error function.
    pub fn erf(&self) -> Tensor {
        self.to_float().unary("erf", UnaryOp::Erf)
    }

    /// Round toward -inf (identity on integers).
    #[track_caller]
    pub fn floor(&self) -> Tensor {
        self.unary("floor", UnaryOp::Floor)
    }

    /// Round toward +inf (identity on integers).
    #[track_caller]
    pub fn ceil(&self) -> Tensor {
        self.unary("ceil", UnaryOp::Ceil)
    }

    /// Round half to even (identity on integers).
    #[track_caller]
    pub fn round(&self) -> Tensor {
        self.unary("round", UnaryOp::Round)
    }

    /// `x * x`.
    #[track_caller]
    pub fn square(&self) -> Tensor {
        self.mul(self)
    }

    /// -1, 0 or 1 by the sign of `x` (NaN stays NaN).
    #[track_caller]
    pub fn sign(&self) -> Tensor {
        let pos = self.gt(0).cast(self.dtype());
        let neg = self.lt(0).cast(self.dtype());
        let s = pos.sub(&neg);
        if self.dtype().is_float() {
            // A NaN constant, not `self`: sign's gradient is 0 everywhere, NaN included.
            let out = crate::no_grad(|| Tensor::where_(&self.isnan(), f64::NAN, &s));
            crate::autograd::with_custom_rule(out, crate::autograd::Custom::Zero, &[self])
        } else {
            s
        }
    }

    /// True where `x` is NaN.
    pub fn isnan(&self) -> Tensor {
        // Only NaN differs from itself; for integers this is all false.
        self.ne(self)
    }

    /// True where `x` is +inf or -inf.
    pub fn isinf(&self) -> Tensor {
        if !self.dtype().is_float() {
            return self.ne(self);
        }
        self.abs().eq(f64::INFINITY)
    }

    /// True where `x` is neither NaN nor infinite.
    pub fn isfinite(&self) -> Tensor {
        if !self.dtype().is_float() {
            return self.eq(self);
        }
        self.abs().lt(f64::INFINITY)
    }

    /// `max(x, 0)` (NaN stays NaN).
    ///
    /// Lowered as `where(x <= 0, 0, x)`, not `maximum(x, 0)`: maximum's gradient splits 50/50
    /// at the tie x = 0, where PyTorch's relu'(0) is 0; the `where` also passes the gradient
    /// at NaN, as PyTorch does.
    #[track_caller]
    pub fn relu(&self) -> Tensor {
        super::one_op(|| Tensor::where_(&self.le(0), &self.scalar_like(0.0), self))
    }

    /// `x` where positive, else `slope * x`.
    #[track_caller]
    pub fn leaky_relu(&self, slope: f64) -> Tensor {
        let x = self.to_float();
        super::one_op(|| Tensor::where_(&x.gt(0.0), &x, &x.mul(slope)))
    }

    /// GELU, the exact form `x/2 * (1 + erf(x / sqrt(2)))` (PyTorch's default,
    /// `approximate='none'`); [`gelu_tanh`](Self::gelu_tanh) is the tanh approximation.
    pub fn gelu(&self) -> Tensor {
        let x = self.to_float();
        super::one_op(|| {
            x.mul(0.5)
                .mul(&x.mul(std::f64::consts::FRAC_1_SQRT_2).erf().add(1.0))
        })
    }

    /// GELU, the tanh approximation `x/2 * (1 + tanh(sqrt(2/π) * (x + 0.044715 x³)))`:
    /// PyTorch's `F.gelu(x, approximate='tanh')` (and the GELU of GPT-2 and BERT). It differs
    /// from the exact [`gelu`](Self::gelu) by at most about 4.7e-4 (near |x| ≈ 2.7); use it to
    /// match a model trained with it.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let y = Tensor::from_slice(&[-1.0f32, 0.0, 1.0]).gelu_tanh();
    /// let want = [-0.158_808, 0.0, 0.841_192];
    /// for (a, b) in y.to_vec::<f32>().unwrap().iter().zip(want) {
    ///     assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    /// }
    /// ```
    pub fn gelu_tanh(&self) -> Tensor {
        // sqrt(2/π)
        const K: f64 = 0.797_884_560_802_865_4;
        let x = self.to_float();
        super::one_op(|| {
            let inner = x.add(&x.mul(&x).mul(&x).mul(0.044715)).mul(K);
            x.mul(0.5).mul(&inner.tanh().add(1.0))
        })
    }

    /// SiLU (swish): `x * sigmoid(x)`.
    pub fn silu(&self) -> Tensor {
        let x = self.to_float();
        super::one_op(|| x.mul(&x.sigmoid()))
    }

    /// Softplus `log(1 + e^x)`, and `x` itself above 20 (PyTorch's threshold). Below it,
    /// `e^x` cannot overflow and `log1p` is accurate for tiny `e^x`.
    ///
    /// The double-`where` pattern: the branch not taken reads `where(x > 20, 0, x)`, so it is
    /// finite and its gradient (multiplied by 0) cannot turn into NaN; softplus'(x) is
    /// sigmoid(x) below the threshold and 1 above, as PyTorch.
    pub fn softplus(&self) -> Tensor {
        let x = self.to_float();
        if matches!(x.dtype(), DType::F16 | DType::BF16) {
            // e^x overflows f16 past x ≈ 11: compute in f32, as PyTorch does.
            return x.cast(DType::F32).softplus().cast(x.dtype());
        }
        super::one_op(|| {
            let above = x.gt(20.0);
            let safe = Tensor::where_(&above, 0.0, &x);
            Tensor::where_(&above, &x, &safe.exp().log1p())
        })
    }

    /// `log(1 + x)`, accurate for small `x` (Kahan's trick: `log(w) * x / (w - 1)` with
    /// `w = 1 + x`, and `x` itself where `w` rounds to 1).
    ///
    /// Its gradient is declared (`g / (1 + x)`, [`crate::autograd`]): the chain rule through
    /// the correction is NaN where `w` rounds to 1, overflows, or is 0.
    pub fn log1p(&self) -> Tensor {
        let x = self.to_float();
        let out = super::one_op(|| {
            crate::no_grad(|| {
                let w = x.add(1.0);
                let corrected = w.log().mul(&x).div(&w.sub(1.0));
                let r = Tensor::where_(&w.eq(1.0), &x, &corrected);
                // Infinite w: the correction is inf/inf; log(w) is right.
                Tensor::where_(&w.isinf(), &w.log(), &r)
            })
        });
        crate::autograd::with_custom_rule(out, crate::autograd::Custom::Log1p, &[&x])
    }

    /// `e^x - 1`, accurate for small `x` (`(w - 1) * x / log(w)` with `w = e^x`).
    ///
    /// Its gradient is declared (`g · (out + 1)`, as PyTorch): the chain rule through the
    /// correction is NaN where `w` is 1, 0 or infinite.
    pub fn expm1(&self) -> Tensor {
        let x = self.to_float();
        let out = super::one_op(|| {
            crate::no_grad(|| {
                let w = x.exp();
                let corrected = w.sub(1.0).mul(&x).div(&w.log());
                let r = Tensor::where_(&w.eq(1.0), &x, &corrected);
                let r = Tensor::where_(&w.sub(1.0).eq(-1.0), -1.0, &r);
                Tensor::where_(&w.isinf(), &w, &r)
            })
        });
        crate::autograd::with_custom_rule(out, crate::autograd::Custom::Expm1, &[&x])
    }

    /// Clamps into `[min, max]` (NaN stays NaN).
    ///
    /// Lowered as `where(min <= x <= max, x, bound)` rather than `maximum`/`minimum`, whose
    /// gradient splits at a tie: PyTorch's clamp passes the whole gradient at the bounds and
    /// none at NaN. `bound` is `min`, `max`, or a NaN constant for NaN inputs, so it carries
    /// no gradient.
    #[track_caller]
    pub fn clamp(&self, min: f64, max: f64) -> Tensor {
        if min > max {
            panic!("bad arguments to clamp: min {min} is greater than max {max}");
        }
        self.clamp_between(Some(min), Some(max))
    }

    /// `max(x, min)`, with clamp's gradient (passed at the bound, 0 at NaN).
    #[track_caller]
    pub fn clamp_min(&self, min: f64) -> Tensor {
        self.clamp_between(Some(min), None)
    }

    /// `min(x, max)`, with clamp's gradient (passed at the bound, 0 at NaN).
    #[track_caller]
    pub fn clamp_max(&self, max: f64) -> Tensor {
        self.clamp_between(None, Some(max))
    }

    #[track_caller]
    fn clamp_between(&self, min: Option<f64>, max: Option<f64>) -> Tensor {
        // The result dtype, as `maximum(x, min)` would give (a float bound makes ints f32).
        let dtype = Operand::Float(min.or(max).unwrap_or(0.0)).result_dtype(self.dtype());
        let x = self.cast(dtype);
        super::one_op(|| x.clamp_where(min, max))
    }

    /// [`Tensor::clamp_between`]'s lowering, on `self` of the result dtype.
    fn clamp_where(&self, min: Option<f64>, max: Option<f64>) -> Tensor {
        let (x, dtype) = (self, self.dtype());
        let nan = if dtype.is_float() { f64::NAN } else { 0.0 };
        let mut inside: Option<Tensor> = None;
        let mut bound = Tensor::constant(
            Scalar::F64(nan).cast(dtype),
            metajit_metaops::Shape::scalar(),
        );
        for (b, is_min) in [(max, false), (min, true)] {
            let Some(b) = b else { continue };
            let ok = if is_min { x.ge(b) } else { x.le(b) };
            let out = if is_min { x.lt(b) } else { x.gt(b) };
            bound = Tensor::where_(&out, b, &bound);
            inside = Some(match inside {
                Some(i) => i.logical_and(&ok),
                None => ok,
            });
        }
        match inside {
            Some(i) => Tensor::where_(&i, x, &bound),
            None => x.clone(),
        }
    }
}

macro_rules! binop_impls {
    ($tr:ident, $m:ident) => {
        impl ops::$tr<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, rhs: &Tensor) -> Tensor {
                Tensor::$m(self, rhs)
            }
        }
        impl ops::$tr<Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, rhs: Tensor) -> Tensor {
                Tensor::$m(self, &rhs)
            }
        }
        impl ops::$tr<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, rhs: &Tensor) -> Tensor {
                Tensor::$m(&self, rhs)
            }
        }
        impl ops::$tr<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, rhs: Tensor) -> Tensor {
                Tensor::$m(&self, &rhs)
            }
        }
        // Only f64 and i64: with more, a bare literal (`&x * 1.5`) would be ambiguous.
        binop_impls!(@scalar $tr, $m, f64, i64);
    };
    (@scalar $tr:ident, $m:ident, $($s:ty),*) => {$(
        impl ops::$tr<$s> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, rhs: $s) -> Tensor {
                Tensor::$m(self, rhs)
            }
        }
        impl ops::$tr<$s> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, rhs: $s) -> Tensor {
                Tensor::$m(&self, rhs)
            }
        }
        impl ops::$tr<&Tensor> for $s {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, rhs: &Tensor) -> Tensor {
                scalar_first(stringify!($m), self.into(), rhs)
            }
        }
        impl ops::$tr<Tensor> for $s {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, rhs: Tensor) -> Tensor {
                scalar_first(stringify!($m), self.into(), &rhs)
            }
        }
    )*};
}

/// `number op tensor` for the operators.
#[track_caller]
fn scalar_first(name: &str, a: Operand<'_>, b: &Tensor) -> Tensor {
    let bo = Operand::Tensor(b);
    let mut d = pair_dtype(&a, &bo);
    let op = match name {
        "add" => BinaryOp::Add,
        "sub" => BinaryOp::Sub,
        "mul" => BinaryOp::Mul,
        "div" => {
            if !d.is_float() {
                d = DType::F32;
            }
            BinaryOp::Div
        }
        _ => BinaryOp::Mod,
    };
    binary(name, op, a, bo, d)
}

binop_impls!(Add, add);
binop_impls!(Sub, sub);
binop_impls!(Mul, mul);
binop_impls!(Div, div);

impl ops::Rem<&Tensor> for &Tensor {
    type Output = Tensor;
    /// `torch.remainder` (the divisor's sign).
    #[track_caller]
    fn rem(self, rhs: &Tensor) -> Tensor {
        self.remainder(rhs)
    }
}

impl ops::Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

impl ops::Neg for Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}
