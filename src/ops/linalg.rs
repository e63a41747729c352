//! Matrix products: [`Tensor::matmul`] with PyTorch's semantics (vectors, matrices, batches
//! with broadcasting), the strict forms [`Tensor::mm`] and [`Tensor::bmm`], and
//! [`Tensor::linear`] (`x @ w.T + b`, also the free function [`linear`]).
//!
//! A product is a contraction of meta-ops, nothing more:
//!
//! | step | node | shape |
//! |---|---|---|
//! | lhs `a[.., M, K]` | `Reshape` (unsqueeze) + `BroadcastTo` | `[.., M, K, N]` |
//! | rhs `b[.., K, N]` | `Reshape` (unsqueeze) + `BroadcastTo` | `[.., M, K, N]` |
//! | product | `Binary(Mul)` | `[.., M, K, N]` |
//! | sum over K | `Reduce{Sum, axes=[rank-2]}` | `[.., M, N]` |
//!
//! Fusion never materialises the `[.., M, K, N]` product: the reduce kernel reads `a` and `b`
//! through index arithmetic, and backends recognise the pattern
//! (`metajit_metaops::contraction`) and call a GEMM instead. Sums accumulate in the operands'
//! dtype (promoted by [`DType::promote`]); integer products are allowed and wrap, as element-wise
//! integer arithmetic does; bool operands are refused (as PyTorch does).
//!
//! Vectors follow PyTorch: a 1-D lhs is a row `[1, K]`, a 1-D rhs a column `[K, 1]`, and the
//! added axis is removed from the result, so `[K] @ [K]` is a rank-0 dot product and
//! `[K] @ [B, K, N]` is `[B, N]`.

use metajit_metaops::{BinaryOp, DType, Op, ReduceOp, Shape, broadcast_shapes};

use crate::tensor::Tensor;

/// Lowers a matrix product, naming `op` in error messages.
#[track_caller]
fn matmul_named(op: &str, a: &Tensor, b: &Tensor) -> Tensor {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.rank() == 0 || sb.rank() == 0 {
        panic!(
            "shape mismatch in {op}: lhs {sa}, rhs {sb} (both operands need at least one axis; use mul for scalars)"
        );
    }
    let dtype = DType::promote(a.dtype(), b.dtype());
    if dtype.is_bool() {
        panic!(
            "dtype mismatch in {op}: bool operands are not supported (lhs {} {sa}, rhs {} {sb}); cast to an integer or float dtype first",
            a.dtype(),
            b.dtype()
        );
    }
    // Matrices of both (vectors promoted).
    let da: Vec<usize> = if sa.rank() == 1 {
        vec![1, sa.dims()[0]]
    } else {
        sa.dims().to_vec()
    };
    let db: Vec<usize> = if sb.rank() == 1 {
        vec![sb.dims()[0], 1]
    } else {
        sb.dims().to_vec()
    };
    let (ra, rb) = (da.len(), db.len());
    let (m, ka) = (da[ra - 2], da[ra - 1]);
    let (kb, n) = (db[rb - 2], db[rb - 1]);
    if ka != kb {
        panic!("shape mismatch in {op}: lhs {sa}, rhs {sb} (inner extents {ka} and {kb} differ)");
    }
    let (ba, bb) = (Shape::from(&da[..ra - 2]), Shape::from(&db[..rb - 2]));
    let Some(batch) = broadcast_shapes(&ba, &bb) else {
        panic!(
            "shape mismatch in {op}: lhs {sa}, rhs {sb} (batch shapes {ba} and {bb} do not broadcast: aligned at the right, extents must be equal or 1)"
        );
    };
    let mut full = batch.dims().to_vec();
    full.extend_from_slice(&[m, ka, n]);
    let full = Shape::new(full);
    let r = full.rank();

    // a[.., M, K] -> [.., M, K, 1] -> [.., M, K, N]; b[.., K, N] -> [.., 1, K, N] -> same.
    let mut a_view = da.clone();
    a_view.push(1);
    let mut b_view = db.clone();
    b_view.insert(rb - 2, 1);
    let c = super::one_op(|| {
        let x = a
            .cast(dtype)
            .view_as(Shape::new(a_view))
            .broadcast_as(op, &full);
        let y = b
            .cast(dtype)
            .view_as(Shape::new(b_view))
            .broadcast_as(op, &full);
        let mut out = batch.dims().to_vec();
        out.extend_from_slice(&[m, n]);
        // One unit in eager mode: the product alone would materialise [.., M, K, N].
        let prod = Tensor::from_op(Op::Binary(BinaryOp::Mul), &[&x, &y], dtype, full.clone());
        Tensor::from_op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![r - 2],
                keepdims: false,
            },
            &[&prod],
            dtype,
            Shape::new(out),
        )
    });
    // Drop the axes that promoted vectors.
    let mut result = batch.dims().to_vec();
    if sa.rank() > 1 {
        result.push(m);
    }
    if sb.rank() > 1 {
        result.push(n);
    }
    c.view_as(Shape::new(result))
}

/// `x[.., I] · weight[O, I]ᵀ` as the sum over `I` of the product broadcast to `[.., O, I]`,
/// with the weight read in its own layout: one GEMM forward, and the gradients — a sum over
/// the batch for the weight, over `O` for the input — come out as GEMMs writing the
/// weight's and the input's layouts directly. (Through `matmul(&weight.t())`, the weight
/// gradient came out transposed, and the optimizer read it with a stride of a row: a cache
/// miss per element.)
fn linear_product(x: &Tensor, weight: &Tensor) -> Tensor {
    let dtype = DType::promote(x.dtype(), weight.dtype());
    if dtype.is_bool() {
        panic!(
            "dtype mismatch in linear: bool operands are not supported (input {} {}, weight {} {}); cast to an integer or float dtype first",
            x.dtype(),
            x.shape(),
            weight.dtype(),
            weight.shape()
        );
    }
    let xd = x.dims();
    let lead = &xd[..xd.len() - 1];
    let (o, i) = (weight.dims()[0], weight.dims()[1]);
    let mut full = lead.to_vec();
    full.extend_from_slice(&[o, i]);
    let full = Shape::new(full);
    let mut x_view = lead.to_vec();
    x_view.extend_from_slice(&[1, i]);
    let mut w_view = vec![1; lead.len()];
    w_view.extend_from_slice(&[o, i]);
    let mut out = lead.to_vec();
    out.push(o);
    super::one_op(|| {
        let a = x
            .cast(dtype)
            .view_as(Shape::new(x_view))
            .broadcast_as("linear", &full);
        let b = weight
            .cast(dtype)
            .view_as(Shape::new(w_view))
            .broadcast_as("linear", &full);
        let prod = Tensor::from_op(Op::Binary(BinaryOp::Mul), &[&a, &b], dtype, full.clone());
        Tensor::from_op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![full.rank() - 1],
                keepdims: false,
            },
            &[&prod],
            dtype,
            Shape::new(out),
        )
    })
}

impl Tensor {
    /// The matrix product with PyTorch's rules (`torch.matmul`, Python's `@`):
    ///
    /// - `[K] @ [K]`: the dot product, rank 0;
    /// - `[M, K] @ [K, N]`: `[M, N]`;
    /// - a 1-D lhs `[K]` acts as `[1, K]` and a 1-D rhs `[K]` as `[K, 1]`, and that axis is
    ///   removed from the result;
    /// - otherwise the leading axes are batch axes, broadcast against each other:
    ///   `[B, 1, M, K] @ [C, K, N]` is `[B, C, M, N]`.
    ///
    /// The dtypes promote ([`DType::promote`]); sums accumulate in that dtype.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
    /// let b = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], [3, 2]);
    /// let c = a.matmul(&b);
    /// assert_eq!(c.dims(), &[2, 2]);
    /// assert_eq!(c.to_vec::<f32>().unwrap(), vec![4.0, 5.0, 10.0, 11.0]);
    /// let v = Tensor::from_vec(vec![1.0f32, 1.0, 1.0], [3]);
    /// assert_eq!(a.matmul(&v).to_vec::<f32>().unwrap(), vec![6.0, 15.0]);
    /// ```
    ///
    /// # Panics
    /// When an operand has rank 0, the inner extents differ, the batch shapes do not broadcast,
    /// or the operands are bool.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        matmul_named("matmul", self, other)
    }

    /// The product of two matrices, `[M, K] @ [K, N]` (`torch.mm`: no vectors, no batches).
    ///
    /// # Panics
    /// When an operand is not 2-D or the inner extents differ.
    #[track_caller]
    pub fn mm(&self, other: &Tensor) -> Tensor {
        let (sa, sb) = (self.shape(), other.shape());
        if sa.rank() != 2 || sb.rank() != 2 {
            panic!(
                "shape mismatch in mm: lhs {sa}, rhs {sb} (mm needs two 2-D tensors; matmul takes other ranks)"
            );
        }
        matmul_named("mm", self, other)
    }

    /// Batched matrix product, `[B, M, K] @ [B, K, N]` → `[B, M, N]` (`torch.bmm`: the batch
    /// extents must be equal; no broadcasting).
    ///
    /// # Panics
    /// When an operand is not 3-D, the batch extents differ, or the inner extents differ.
    #[track_caller]
    pub fn bmm(&self, other: &Tensor) -> Tensor {
        let (sa, sb) = (self.shape(), other.shape());
        if sa.rank() != 3 || sb.rank() != 3 {
            panic!(
                "shape mismatch in bmm: lhs {sa}, rhs {sb} (bmm needs two 3-D tensors; matmul takes other ranks)"
            );
        }
        if sa.dims()[0] != sb.dims()[0] {
            panic!(
                "shape mismatch in bmm: lhs {sa}, rhs {sb} (batch extents {} and {} differ; bmm does not broadcast, matmul does)",
                sa.dims()[0],
                sb.dims()[0]
            );
        }
        matmul_named("bmm", self, other)
    }

    /// An affine map, `self @ weight.T + bias` (`torch.nn.functional.linear`): `self` is
    /// `[.., in]`, `weight` is `[out, in]` (or `[in]`, giving no output axis), `bias`
    /// broadcasts to the result `[.., out]`.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [1, 2]);
    /// let w = Tensor::from_vec(vec![1.0f32, 1.0, 0.0, 2.0, 3.0, 0.0], [3, 2]);
    /// let b = Tensor::from_vec(vec![0.5f32, 0.0, -1.0], [3]);
    /// let y = x.linear(&w, Some(&b));
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![3.5, 4.0, 2.0]);
    /// ```
    ///
    /// # Panics
    /// When `weight` is not 1-D or 2-D, `self` has rank 0, the feature extents differ, or the
    /// bias does not broadcast to the result.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let (sx, sw) = (self.shape(), weight.shape());
        if sw.rank() == 0 || sw.rank() > 2 {
            panic!(
                "shape mismatch in linear: input {sx}, weight {sw} (the weight must be [out_features, in_features] or [in_features])"
            );
        }
        if sx.rank() == 0 {
            panic!(
                "shape mismatch in linear: input {sx}, weight {sw} (the input needs at least one axis)"
            );
        }
        let (fx, fw) = (sx.dims()[sx.rank() - 1], sw.dims()[sw.rank() - 1]);
        if fx != fw {
            panic!(
                "shape mismatch in linear: input {sx}, weight {sw} (input features {fx} and weight in-features {fw} differ)"
            );
        }
        let y = if sw.rank() == 2 {
            linear_product(self, weight)
        } else {
            matmul_named("linear", self, &weight.t())
        };
        match bias {
            None => y,
            Some(b) => {
                if broadcast_shapes(y.shape(), b.shape()).as_ref() != Some(y.shape()) {
                    panic!(
                        "shape mismatch in linear: input {sx}, weight {sw}, bias {} (the bias must broadcast to the output {})",
                        b.shape(),
                        y.shape()
                    );
                }
                y.add(b)
            }
        }
    }
}

/// `x @ weight.T + bias`: the free-function form of [`Tensor::linear`].
#[track_caller]
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    x.linear(weight, bias)
}
