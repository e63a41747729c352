//! Convolution and pooling, lowered Jittor-style: a window `reindex` (the im2col view: output
//! position × kernel offset → input element, padding read as the overflow value) and then a
//! matrix product (convolution, executed as GEMM) or a reduction over the window (pooling).
//! A stride-1 convolution of many channels reads shifted windows of its padded input in place
//! instead (one GEMM per kernel tap, summed), without the im2col copy.

use metajit_metaops::op::{BinaryOp, Op, ReduceOp};
use metajit_metaops::{DType, IndexExpr, Scalar, Shape};

use crate::tensor::Tensor;

/// Per spatial axis: kernel, stride, padding, dilation.
#[derive(Clone, Copy, Debug)]
struct Axis {
    k: usize,
    s: usize,
    p: usize,
    d: usize,
}

impl Axis {
    /// The two spatial axes from per-axis `(height, width)` pairs.
    fn pair(
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
    ) -> [Axis; 2] {
        [
            Axis {
                k: kernel.0,
                s: stride.0,
                p: padding.0,
                d: dilation.0,
            },
            Axis {
                k: kernel.1,
                s: stride.1,
                p: padding.1,
                d: dilation.1,
            },
        ]
    }

    /// The output extent for input extent `n` (with PyTorch's ceil_mode rule: the last
    /// window must start inside the input or the left padding).
    fn out(self, op: &str, n: usize, ceil: bool) -> usize {
        let span = self.d * (self.k - 1) + 1;
        let padded = n + 2 * self.p;
        if span > padded {
            panic!(
                "shape mismatch in {op}: input extent {n} with padding {} is smaller than the kernel span {span}",
                self.p
            );
        }
        let q = padded - span;
        let mut o = if ceil { q.div_ceil(self.s) } else { q / self.s } + 1;
        if ceil && (o - 1) * self.s >= n + self.p {
            o -= 1;
        }
        o
    }

    /// The input coordinate of output index `o` at kernel offset `k`.
    fn read(self, o: IndexExpr, k: IndexExpr) -> IndexExpr {
        let mut e = o * self.s as i64;
        let kk = if self.d == 1 { k } else { k * self.d as i64 };
        e = e + kk;
        if self.p > 0 { e - self.p as i64 } else { e }
    }
}

#[track_caller]
fn positive(op: &str, what: &str, v: (usize, usize)) {
    if v.0 == 0 || v.1 == 0 {
        panic!("bad argument to {op}: {what} {v:?} must be positive");
    }
}

/// The window map onto `[N, C, H, W]` from a space whose batch and channel coordinates are
/// `nc` and whose window position `(oh, ow)` and kernel offset `(kh, kw)` are the axes `at`:
/// `(n, c, oh·s + kh·d - p, ow·s + kw·d - p)`. A convolution reads its input through it
/// ([`windows`]); a transposed convolution scatters into its output through it
/// ([`conv_transpose2d`]).
fn window_map(ax: [Axis; 2], nc: [IndexExpr; 2], at: [usize; 4]) -> Vec<IndexExpr> {
    let [n, c] = nc;
    vec![
        n,
        c,
        ax[0].read(IndexExpr::Idx(at[0]), IndexExpr::Idx(at[2])),
        ax[1].read(IndexExpr::Idx(at[1]), IndexExpr::Idx(at[3])),
    ]
}

/// The windows of `x` (`[N, C, H, W]`): `[N, C, OH, OW, KH, KW]`, reading `fill` outside.
fn windows(x: &Tensor, ax: [Axis; 2], out: [usize; 2], fill: f64) -> Tensor {
    let d = x.dims();
    let shape = Shape::new([d[0], d[1], out[0], out[1], ax[0].k, ax[1].k]);
    x.reindex_raw(
        shape,
        window_map(ax, [IndexExpr::Idx(0), IndexExpr::Idx(1)], [2, 3, 4, 5]),
        Scalar::F64(fill).cast(x.dtype()),
        vec![],
        &[],
    )
}

/// Panics unless `bias` is absent or `[o]` (one value per output channel).
#[track_caller]
fn check_bias(op: &str, bias: Option<&Tensor>, o: usize, weight: &Tensor, groups: usize) {
    if let Some(b) = bias
        && b.dims() != [o]
    {
        panic!(
            "shape mismatch in {op}: bias {} for {o} output channels (weight {} with groups {groups})",
            b.shape(),
            weight.shape()
        );
    }
}

/// `y` `[N, O, H, W]` plus the per-channel `bias` `[O]`, if any.
fn add_channel_bias(y: Tensor, bias: Option<&Tensor>, o: usize, dtype: DType) -> Tensor {
    match bias {
        Some(b) => y.add(&b.cast(dtype).reshape([1, o, 1, 1])),
        None => y,
    }
}

#[track_caller]
fn rank4(op: &str, x: &Tensor) {
    if x.rank() != 4 {
        panic!(
            "shape mismatch in {op}: input {} must be [N, C, H, W]",
            x.shape()
        );
    }
}

/// 2-D convolution (PyTorch's `F.conv2d`): `x` `[N, C, H, W]`, `weight`
/// `[O, C / groups, KH, KW]`, optional `bias` `[O]`; stride, padding (zeros) and dilation
/// per spatial axis. Runs as GEMM: for stride 1, one group, two or more input channels and an
/// output at least 4/5 as wide as the padded input, one product per image and kernel tap over
/// the padded input read in place (the taps summed); otherwise the window view (im2col,
/// copied once) times the weight.
///
/// ```
/// use metajit::{Tensor, nn::functional as F};
/// let x = Tensor::ones([1, 1, 3, 3]);
/// let w = Tensor::ones([1, 1, 2, 2]);
/// let y = F::conv2d(&x, &w, None, (1, 1), (0, 0), (1, 1), 1);
/// assert_eq!(y.to_vec::<f32>().unwrap(), vec![4.0; 4]);
/// ```
///
/// # Panics
/// On shapes that do not fit (channels not divisible by groups, a kernel larger than the
/// padded input) or a zero stride or dilation.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Tensor {
    rank4("conv2d", x);
    positive("conv2d", "stride", stride);
    positive("conv2d", "dilation", dilation);
    let (n, c, h, w) = (x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]);
    if weight.rank() != 4
        || groups == 0
        || c % groups != 0
        || !weight.dims()[0].is_multiple_of(groups)
        || weight.dims()[1] * groups != c
    {
        panic!(
            "shape mismatch in conv2d: input {}, weight {} with groups {groups} (the weight must be [O, C / groups, KH, KW] with C and O divisible by groups)",
            x.shape(),
            weight.shape()
        );
    }
    let (o, kh, kw) = (weight.dims()[0], weight.dims()[2], weight.dims()[3]);
    check_bias("conv2d", bias, o, weight, groups);
    let ax = Axis::pair((kh, kw), stride, padding, dilation);
    let (oh, ow) = (ax[0].out("conv2d", h, false), ax[1].out("conv2d", w, false));
    let dtype = DType::promote(x.dtype(), weight.dtype());
    let (x, weight) = (x.cast(dtype), weight.cast(dtype));
    if shifted_fits(c, stride, groups, dtype, (ow, w + 2 * padding.1)) {
        let y = shifted_product(&x, &weight, ax, [oh, ow]);
        return add_channel_bias(y, bias, o, dtype);
    }
    let (cg, og) = (c / groups, o / groups);
    let k = cg * kh * kw;
    let p = oh * ow;
    // The windows as [N, C, KH, KW, OH, OW] -> [N, groups, k, OH·OW]: each image's columns
    // with the output position innermost, so the copy runs along contiguous rows. The window
    // view is materialised once (one copy kernel), so the product runs as GEMM. The view is
    // built in that order (not as a permute of [N, C, OH, OW, KH, KW]) so that its gradient,
    // the scatter-add of the columns' gradient back into the input (col2im), also iterates
    // with the output column innermost: contiguous loads of the GEMM's output and contiguous
    // targets, instead of a loop over KW reading at a stride of OH·OW.
    let cols = x
        .reindex_raw(
            Shape::new([n, c, kh, kw, oh, ow]),
            window_map(ax, [IndexExpr::Idx(0), IndexExpr::Idx(1)], [4, 5, 2, 3]),
            Scalar::zero(dtype),
            vec![],
            &[],
        )
        .contiguous()
        .reshape([n, groups, k, p]);
    // [groups, og, k] @ [N, groups, k, P] -> [N, groups, og, P]: one GEMM per image (and
    // group) with the weight shared, writing the output in NCHW order directly.
    let y = weight
        .reshape([groups, og, k])
        .matmul(&cols)
        .reshape([n, o, oh, ow]);
    add_channel_bias(y, bias, o, dtype)
}

/// Whether [`conv2d`] takes the shifted-GEMM form ([`shifted_product`]): stride 1, one group,
/// a float dtype the GEMM takes, at least [`SHIFTED_MIN_CHANNELS`] input channels, and extra
/// columns (`WP - OW`, computed and cropped) at most a quarter of the output width `ow`.
///
/// Measured (forward and a training step, alternating runs, minima): the shifted form is
/// faster for 3×3 kernels with padding 1 on 28×28 from one channel up (C = 1, 64 images: 0.46
/// against 0.82 ms forward; C = 32, 16 images: 2.1 against 5.5–5.7 ms, and a training step
/// 7.7–8.0 against 15.4–17.7 ms); it is slower where the extra columns
/// are many (LeNet's second conv, 5×5 on 12×12 without padding: 8 of 12 columns kept, 0.48
/// against 0.26 ms), and even for LeNet's first (C = 1, 5×5, 24 of 28 kept), where its 25
/// products of K = 1 per image do no better than im2col's one of K = 25.
fn shifted_fits(
    c: usize,
    stride: (usize, usize),
    groups: usize,
    dtype: DType,
    (ow, wp): (usize, usize),
) -> bool {
    stride == (1, 1)
        && groups == 1
        && matches!(dtype, DType::F32 | DType::F64)
        && c >= SHIFTED_MIN_CHANNELS
        && 4 * (wp - ow) <= ow
}

/// The fewest input channels for [`shifted_fits`]: with one, each tap's product has `K = 1`.
const SHIFTED_MIN_CHANNELS: usize = 2;

/// A stride-1 convolution without the im2col copy: `[N, O, OH, OW]` as a sum of one GEMM per
/// kernel tap over the padded input.
///
/// The input is padded once to `[N, C, HP + e, WP]` (`HP`, `WP`: the padded extents; `e = 1`
/// extra row when the kernel is wider than 1) and read flat, as `[N, C, L]`. Output position
/// `(oh, q)`, for `q < WP`, at tap `(kh, kw)` reads flat element
/// `(oh + kh·dh)·WP + q + kw·dw`: for `q < OW` that is the padded input at
/// `(oh + kh·dh, q + kw·dw)`, the element the convolution needs; for `q ≥ OW` (the `WP - OW`
/// extra columns of each row) it is some other element, and those columns are cropped. So the
/// window view `[N, KH, KW, C, OH, WP]` is a strided view of the padded buffer (a `Reindex`
/// whose coordinate is a sum of scaled indices, proven in range: the extra row keeps the last
/// taps' reads inside), and `Σ_{kh, kw, c} W[o, c, kh, kw] · view[n, kh, kw, c, oh, q]`
/// matches as a contraction: per image and tap one `[O, C] @ [C, OH·WP]` GEMM, the taps summed
/// into one output (`metajit_metaops::contraction`), reading the input in place. That costs
/// `WP / OW` of the flops and one padding copy, against a `KH·KW`-fold copy of the input.
///
/// The gradients come from the same graph: the weight's is a GEMM per tap summed over the
/// images (the view as a strided operand again), the input's a GEMM per tap into the
/// `[N, KH, KW, C, OH, WP]` columns scattered back through the view (as the im2col form's).
///
/// Measured against fewer, larger products: three shifted copies
/// `X3[n, c, kw, hp, w] = xpad[n, c, hp, w + kw]` (`w < OW`) give one product per image and
/// kernel row with `K = KW·C` and no extra columns, but on W5 (16×64×56×56, 64 out, 3×3, one
/// thread, minima over alternating runs) their product took 18.65 ms against these 18.10 ms,
/// their copy 3.7 ms against the padding's 1.3 ms (forward 24.2–24.6 against 20.7–21.5 ms),
/// and a 16×32×28×28 training step 7.5–8.4 against 7.3–7.5 ms; so the taps stay separate.
fn shifted_product(x: &Tensor, weight: &Tensor, ax: [Axis; 2], out: [usize; 2]) -> Tensor {
    let (d, wd) = (x.dims(), weight.dims());
    let (n, c, h, w) = (d[0], d[1], d[2], d[3]);
    let (o, kh, kw) = (wd[0], wd[2], wd[3]);
    let [oh, ow] = out;
    let (hp, wp) = (h + 2 * ax[0].p, w + 2 * ax[1].p);
    let extra = usize::from(ax[1].d * (kw - 1) > 0);
    let rows = hp + extra;
    let dtype = x.dtype();
    // [N, C, HP + e, WP], materialised (the GEMM reads a buffer), read flat.
    let padded = x
        .pad(&[(ax[1].p, ax[1].p), (ax[0].p, ax[0].p + extra)], 0.0)
        .contiguous()
        .reshape([n, c, rows * wp]);
    let scaled = |i: usize, by: usize| {
        if by == 1 {
            IndexExpr::Idx(i)
        } else {
            IndexExpr::Idx(i) * by as i64
        }
    };
    // (oh + kh·dh)·WP + q + kw·dw, with WP named as the view's last extent.
    let flat = (IndexExpr::Idx(4) + scaled(1, ax[0].d)) * IndexExpr::IterDim(5)
        + IndexExpr::Idx(5)
        + scaled(2, ax[1].d);
    let full = Shape::new([n, o, kh, kw, c, oh, wp]);
    let y = crate::ops::one_op(|| {
        let view = padded
            .reindex_raw(
                Shape::new([n, kh, kw, c, oh, wp]),
                vec![IndexExpr::Idx(0), IndexExpr::Idx(3), flat],
                Scalar::F64(0.0).cast(dtype),
                vec![],
                &[],
            )
            .view_as(Shape::new([n, 1, kh, kw, c, oh, wp]))
            .broadcast_as("conv2d", &full);
        let taps = weight
            .permute(&[0, 2, 3, 1])
            .view_as(Shape::new([1, o, kh, kw, c, 1, 1]))
            .broadcast_as("conv2d", &full);
        let prod = Tensor::from_op(
            Op::Binary(BinaryOp::Mul),
            &[&taps, &view],
            dtype,
            full.clone(),
        );
        Tensor::from_op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![2, 3, 4],
                keepdims: false,
            },
            &[&prod],
            dtype,
            Shape::new([n, o, oh, wp]),
        )
    });
    // The extra columns of each row hold no output.
    if wp == ow { y } else { y.narrow(3, 0, ow) }
}

/// Transposed 2-D convolution (PyTorch's `F.conv_transpose2d`, the gradient of [`conv2d`]
/// with respect to its input): `x` `[N, C, H, W]`, `weight` `[C, O / groups, KH, KW]`,
/// optional `bias` `[O]`; stride, padding, output padding, groups and dilation per spatial
/// axis, in PyTorch's argument order. Each input element, times each kernel tap, is added
/// into the output at `h·stride - padding + kh·dilation` (and the same for the width), where
/// that lands inside; the output extent is
/// `(H - 1)·stride - 2·padding + dilation·(KH - 1) + output_padding + 1`.
///
/// Lowering: one (batched) GEMM, `x` as `[N·H·W, C]` (one copy) times `weight` as
/// `[C, O · KH · KW]` (per group: `[groups, N·H·W, C / groups] @ [groups, C / groups,
/// O / groups · KH · KW]`), gives every product column; one `ReindexReduce` (sum) scatters the
/// columns into `[N, O, OH, OW]` through conv2d's window map (col2im), skipping targets
/// outside the output. The gradient of the scatter is the window gather (conv2d's im2col),
/// and those of the product are two GEMMs.
///
/// ```
/// use metajit::{Tensor, nn::functional as F};
/// // A 2×2 input, a 2×2 kernel of ones, stride 2: each input element fills its own 2×2 block.
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]);
/// let w = Tensor::ones([1, 1, 2, 2]);
/// let y = F::conv_transpose2d(&x, &w, None, (2, 2), (0, 0), (0, 0), 1, (1, 1));
/// assert_eq!(y.dims(), &[1, 1, 4, 4]);
/// assert_eq!(
///     y.to_vec::<f32>().unwrap(),
///     vec![
///         1.0, 1.0, 2.0, 2.0, //
///         1.0, 1.0, 2.0, 2.0, //
///         3.0, 3.0, 4.0, 4.0, //
///         3.0, 3.0, 4.0, 4.0,
///     ]
/// );
/// ```
///
/// # Panics
/// On shapes that do not fit (input channels not `weight`'s first extent or not divisible by
/// groups, a zero kernel extent, a bias not `[O]`), a zero stride, dilation or groups, an
/// output padding not smaller than the stride or the dilation, or an output extent below 1.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize),
    padding: (usize, usize),
    output_padding: (usize, usize),
    groups: usize,
    dilation: (usize, usize),
) -> Tensor {
    const OP: &str = "conv_transpose2d";
    rank4(OP, x);
    positive(OP, "stride", stride);
    positive(OP, "dilation", dilation);
    let (n, c, h, w) = (x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]);
    if weight.rank() != 4
        || groups == 0
        || weight.dims()[0] != c
        || !c.is_multiple_of(groups)
        || weight.dims()[2] == 0
        || weight.dims()[3] == 0
    {
        panic!(
            "shape mismatch in {OP}: input {}, weight {} with groups {groups} (the weight must be [C, O / groups, KH, KW] with C divisible by groups and a nonempty kernel)",
            x.shape(),
            weight.shape()
        );
    }
    let (og, kh, kw) = (weight.dims()[1], weight.dims()[2], weight.dims()[3]);
    let o = og * groups;
    check_bias(OP, bias, o, weight, groups);
    let pairs = [
        (output_padding.0, stride.0, dilation.0),
        (output_padding.1, stride.1, dilation.1),
    ];
    if pairs.iter().any(|&(op, s, d)| op >= s && op >= d) {
        panic!(
            "bad argument to {OP}: output padding {output_padding:?} must be smaller than the stride {stride:?} or the dilation {dilation:?}"
        );
    }
    let ax = Axis::pair((kh, kw), stride, padding, dilation);
    // (H - 1)·s - 2p + d·(K - 1) + output_padding + 1, which may be negative.
    let extent = |a: Axis, n: usize, op: usize| {
        (n as i64 - 1) * a.s as i64 - 2 * a.p as i64 + (a.d * (a.k - 1) + op + 1) as i64
    };
    let (oh, ow) = (
        extent(ax[0], h, output_padding.0),
        extent(ax[1], w, output_padding.1),
    );
    if oh < 1 || ow < 1 {
        panic!(
            "shape mismatch in {OP}: input {}, weight {} with stride {stride:?}, padding {padding:?}, output padding {output_padding:?} and dilation {dilation:?} give an output of {oh}×{ow}",
            x.shape(),
            weight.shape()
        );
    }
    let (oh, ow) = (oh as usize, ow as usize);
    let dtype = DType::promote(x.dtype(), weight.dtype());
    let (x, weight) = (x.cast(dtype), weight.cast(dtype));
    let (cg, kk, rows) = (c / groups, og * kh * kw, n * h * w);
    // [N, C, H, W] -> [N, H, W, C] -> [rows, groups, C / groups], materialised once (one copy
    // kernel) so that the product and both of its gradients run as GEMMs over all N·H·W rows.
    let xm = x
        .permute(&[0, 2, 3, 1])
        .contiguous()
        .reshape([rows, groups, cg]);
    let wm = weight.reshape([groups, cg, kk]);
    let cols = if groups == 1 {
        xm.reshape([rows, c]).matmul(&wm.reshape([c, kk]))
    } else {
        // [groups, rows, C / groups] @ [groups, C / groups, og·KH·KW].
        xm.permute(&[1, 0, 2]).matmul(&wm)
    };
    // Scatter (g, n, h, w, co, kh, kw) to (n, g·og + co, h·s + kh·d - p, w·s + kw·d - p).
    let cols = cols.reshape([groups, n, h, w, og, kh, kw]);
    let chan = if groups == 1 {
        IndexExpr::Idx(4)
    } else {
        IndexExpr::Idx(0) * og as i64 + IndexExpr::Idx(4)
    };
    let y = cols.reindex_reduce_raw(
        metajit_metaops::ReduceOp::Sum,
        Shape::new([n, o, oh, ow]),
        window_map(ax, [IndexExpr::Idx(1), chan], [2, 3, 5, 6]),
        vec![],
        &[],
    );
    add_channel_bias(y, bias, o, dtype)
}

/// 1-D convolution (`F.conv1d`): `x` `[N, C, L]`, `weight` `[O, C / groups, K]`; as
/// [`conv2d`] over a height of 1.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn conv1d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Tensor {
    if x.rank() != 3 || weight.rank() != 3 {
        panic!(
            "shape mismatch in conv1d: input {}, weight {} (must be [N, C, L] and [O, C / groups, K])",
            x.shape(),
            weight.shape()
        );
    }
    let y = conv2d(
        &x.unsqueeze(2),
        &weight.unsqueeze(2),
        bias,
        (1, stride),
        (0, padding),
        (1, dilation),
        groups,
    );
    y.squeeze(2)
}

/// Max pooling (`F.max_pool2d`): windows of `kernel`, `stride` (the kernel when `None`),
/// padding read as -inf, dilation, `ceil_mode`. NaN propagates; the gradient goes to the
/// window's (first) maximum, as PyTorch's.
///
/// Lowering: the window view `[N, C, OH, OW, KH·KW]`, the index of each window's first
/// maximum (an integer reduction, outside autograd), and the value as the sum over the window
/// of `where(offset == index, x, 0)`, so the gradient is that same `where`: element-wise, no
/// scatter into the windows. When the windows tile the input (stride = kernel, no padding or
/// dilation, the common case) the view is a reshape and permute of `x`, a one-to-one map, so
/// the gradient reaches `x` as a gather too and the whole backward pass fuses.
///
/// # Panics
/// On a zero kernel, stride or dilation, padding above half the kernel, or a kernel larger
/// than the padded input.
#[track_caller]
pub fn max_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: Option<(usize, usize)>,
    padding: (usize, usize),
    dilation: (usize, usize),
    ceil_mode: bool,
) -> Tensor {
    let (ax, out) = pool_geometry(
        "max_pool2d",
        x,
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
    );
    let d = x.dims();
    let (n, c, h, w) = (d[0], d[1], d[2], d[3]);
    // Windows that tile the input (the usual pooling): a reshape of `x` to
    // `[N, C, OH, KH, OW, KW]` (after cropping the ragged edge) holds every window.
    let tiles = ax.iter().all(|a| a.s == a.k && a.p == 0 && a.d == 1)
        && out[0] * kernel.0 <= h
        && out[1] * kernel.1 <= w;
    let tiled = || {
        let mut v = x.clone();
        if out[0] * kernel.0 < h {
            v = v.narrow(2, 0, out[0] * kernel.0);
        }
        if out[1] * kernel.1 < w {
            v = v.narrow(3, 0, out[1] * kernel.1);
        }
        v.reshape([n, c, out[0], kernel.0, out[1], kernel.1])
    };
    if kernel.0 * kernel.1 <= UNROLLED_TAPS {
        return max_pool_unrolled(x, ax, out, tiles.then(tiled));
    }
    // [N, C, OH, OW, KH, KW]. The window stays two axes (no flattening), so no index in the
    // kernels needs a division.
    let win = if tiles {
        tiled().permute(&[0, 1, 2, 4, 3, 5])
    } else {
        windows(x, ax, out, f64::NEG_INFINITY)
    };
    // The row-major offset of each window element, and the first maximum's (NaN counts as
    // the maximum, as in `argmax`).
    let axis = |a: usize| {
        Tensor::from_op(
            metajit_metaops::Op::Index { axis: a },
            &[],
            DType::I64,
            win.shape().clone(),
        )
    };
    let offset = axis(4).mul(kernel.1 as i64).add(&axis(5));
    let top = win.max([4, 5], true);
    let hit = win.eq(&top).logical_or(&win.isnan());
    let first = Tensor::where_(&hit, &offset, (kernel.0 * kernel.1) as i64).min([4, 5], true);
    Tensor::where_(&offset.eq(&first), &win, 0i64)
        .sum([4, 5], false)
        .cast(x.dtype())
}

/// Windows of at most this many elements are pooled element-wise, one strided view per
/// kernel offset, instead of by a reduction over a window axis.
const UNROLLED_TAPS: usize = 9;

/// Max pooling over small windows as element-wise ops on `[N, C, OH, OW]`: one strided view
/// of `x` per kernel offset (padding reads -inf; each view is one-to-one, so its gradient is a
/// gather), their maximum, the offset of the first maximum, and the value as a `where` chain
/// over the offsets — whose gradient sends `g` to the first maximum only. Everything fuses
/// into the producer's and the consumer's kernels, vectorised over the output row.
fn max_pool_unrolled(x: &Tensor, ax: [Axis; 2], out: [usize; 2], tiled: Option<Tensor>) -> Tensor {
    let d = x.dims();
    let shape = Shape::new([d[0], d[1], out[0], out[1]]);
    let fill = Scalar::F64(f64::NEG_INFINITY).cast(x.dtype());
    let (i2, i3) = (IndexExpr::Idx(2), IndexExpr::Idx(3));
    let taps: Vec<Tensor> = (0..ax[0].k)
        .flat_map(|i| (0..ax[1].k).map(move |j| (i, j)))
        .map(|(i, j)| {
            let (ci, cj) = (IndexExpr::Const(i as i64), IndexExpr::Const(j as i64));
            match &tiled {
                // A slice of the `[N, C, OH, KH, OW, KW]` view: its gradient is a masked copy
                // back into that view, which one reshape (one division per axis) maps to `x`.
                Some(v) => {
                    let exprs = vec![
                        IndexExpr::Idx(0),
                        IndexExpr::Idx(1),
                        i2.clone(),
                        ci,
                        i3.clone(),
                        cj,
                    ];
                    v.reindex_raw(shape.clone(), exprs, fill, vec![], &[])
                }
                None => {
                    let exprs = vec![
                        IndexExpr::Idx(0),
                        IndexExpr::Idx(1),
                        ax[0].read(i2.clone(), ci),
                        ax[1].read(i3.clone(), cj),
                    ];
                    x.reindex_raw(shape.clone(), exprs, fill, vec![], &[])
                }
            }
        })
        .collect();
    // The maximum only feeds comparisons: no gradient flows through it.
    let top =
        crate::autograd::no_grad(|| taps[1..].iter().fold(taps[0].clone(), |m, v| m.maximum(v)));
    // The first offset whose value is the maximum (or NaN, which is the maximum).
    // It is held as f32 (small integers are exact), which the CPU backend vectorises and
    // which takes half the memory of i64.
    let mut first: Option<Tensor> = None;
    for (t, v) in taps.iter().enumerate().rev() {
        let hit = v.eq(&top).logical_or(&v.isnan());
        first = Some(match first {
            None => Tensor::where_(&hit, t as f32, taps.len() as f32),
            Some(f) => Tensor::where_(&hit, t as f32, &f),
        });
    }
    let first = first.expect("a window has at least one element");
    let mut value = taps[0].clone();
    for (t, v) in taps.iter().enumerate().skip(1) {
        value = Tensor::where_(&first.eq(t as f32), v, &value);
    }
    value
}

#[track_caller]
fn pool_geometry(
    op: &str,
    x: &Tensor,
    kernel: (usize, usize),
    stride: Option<(usize, usize)>,
    padding: (usize, usize),
    dilation: (usize, usize),
    ceil_mode: bool,
) -> ([Axis; 2], [usize; 2]) {
    rank4(op, x);
    let stride = stride.unwrap_or(kernel);
    positive(op, "kernel", kernel);
    positive(op, "stride", stride);
    positive(op, "dilation", dilation);
    if 2 * padding.0 > kernel.0 || 2 * padding.1 > kernel.1 {
        panic!(
            "bad argument to {op}: padding {padding:?} must be at most half the kernel {kernel:?}"
        );
    }
    let ax = Axis::pair(kernel, stride, padding, dilation);
    let out = [
        ax[0].out(op, x.dims()[2], ceil_mode),
        ax[1].out(op, x.dims()[3], ceil_mode),
    ];
    (ax, out)
}

/// Average pooling (`F.avg_pool2d`): windows of `kernel`, `stride` (the kernel when `None`),
/// zero padding, `ceil_mode`; the divisor counts the padding when `count_include_pad` (but
/// not the part of a ceil-mode window past the padded input), as PyTorch.
///
/// # Panics
/// As [`max_pool2d`].
#[track_caller]
pub fn avg_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: Option<(usize, usize)>,
    padding: (usize, usize),
    ceil_mode: bool,
    count_include_pad: bool,
) -> Tensor {
    let (ax, out) = pool_geometry("avg_pool2d", x, kernel, stride, padding, (1, 1), ceil_mode);
    let x = x.to_float();
    let sums = windows(&x, ax, out, 0.0).sum([4, 5], false);
    // PyTorch's divisor per output position, from the geometry alone.
    let extent = |a: Axis, n: usize, o: usize| {
        let start = (o * a.s) as i64 - a.p as i64;
        let end = (start + a.k as i64).min((n + a.p) as i64);
        let padded = end - start;
        let clipped = end.min(n as i64) - start.max(0);
        if count_include_pad { padded } else { clipped }
    };
    let (h, w) = (x.dims()[2], x.dims()[3]);
    let div: Vec<f64> = (0..out[0])
        .flat_map(|i| (0..out[1]).map(move |j| (i, j)))
        .map(|(i, j)| (extent(ax[0], h, i) * extent(ax[1], w, j)) as f64)
        .collect();
    let div = Tensor::from_vec(div, out.to_vec()).cast(x.dtype());
    sums.div(&div)
}

/// Adaptive average pooling (`F.adaptive_avg_pool2d`) to `output` `(OH, OW)`: output `i`
/// averages input rows `[floor(i·H/OH), ceil((i+1)·H/OH))`, and the same for columns.
///
/// # Panics
/// When the input is not `[N, C, H, W]` or an output extent is 0.
#[track_caller]
pub fn adaptive_avg_pool2d(x: &Tensor, output: (usize, usize)) -> Tensor {
    rank4("adaptive_avg_pool2d", x);
    positive("adaptive_avg_pool2d", "output size", output);
    let x = x.to_float();
    let d = x.dims().to_vec();
    let (h, w) = (d[2], d[3]);
    let bins = |n: usize, o: usize| -> Vec<(usize, usize)> {
        (0..o)
            .map(|i| (i * n / o, ((i + 1) * n).div_ceil(o)))
            .collect()
    };
    let (bh, bw) = (bins(h, output.0), bins(w, output.1));
    let kmax = |b: &[(usize, usize)]| b.iter().map(|(s, e)| e - s).max().unwrap_or(1);
    let (kh, kw) = (kmax(&bh), kmax(&bw));
    // Start and length of each bin: index arithmetic on the output coordinate.
    let start = |i: IndexExpr, n: usize, o: usize| (i * n as i64) / o as i64;
    let end = |i: IndexExpr, n: usize, o: usize| ((i + 1) * n as i64 + (o as i64 - 1)) / o as i64;
    let exprs = vec![
        IndexExpr::Idx(0),
        IndexExpr::Idx(1),
        start(IndexExpr::Idx(2), h, output.0) + IndexExpr::Idx(4),
        start(IndexExpr::Idx(3), w, output.1) + IndexExpr::Idx(5),
    ];
    // Offsets past a bin's end read 0.
    let conds = vec![
        end(IndexExpr::Idx(2), h, output.0)
            .le(start(IndexExpr::Idx(2), h, output.0) + IndexExpr::Idx(4)),
        end(IndexExpr::Idx(3), w, output.1)
            .le(start(IndexExpr::Idx(3), w, output.1) + IndexExpr::Idx(5)),
    ];
    let win = x.reindex_raw(
        Shape::new([d[0], d[1], output.0, output.1, kh, kw]),
        exprs,
        Scalar::zero(x.dtype()),
        conds,
        &[],
    );
    let count: Vec<f64> = bh
        .iter()
        .flat_map(|&(hs, he)| {
            bw.iter()
                .map(move |&(ws, we)| ((he - hs) * (we - ws)) as f64)
        })
        .collect();
    let count = Tensor::from_vec(count, [output.0, output.1]).cast(x.dtype());
    win.sum([4, 5], false).div(&count)
}
