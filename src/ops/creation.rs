//! Creation ops: constants, ranges, identity matrices and random tensors, all as meta-op
//! sources (`Const`, `Index`, `Random`) so they fuse into their consumers.
//!
//! Random tensors use a counter-based generator: each call takes a fresh seed from the global
//! generator ([`manual_seed`] resets it), and the values are a pure function of that seed.

use std::sync::atomic::{AtomicU64, Ordering};

use metajit_metaops::{DType, Distribution, Op, Scalar, Shape};

use crate::tensor::Tensor;

static SEED_BASE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
static SEED_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Resets the global random generator: the same seed gives the same sequence of random tensors.
pub fn manual_seed(seed: u64) {
    SEED_BASE.store(seed, Ordering::SeqCst);
    SEED_COUNTER.store(0, Ordering::SeqCst);
}

/// The next per-call seed (splitmix64 of base + counter).
pub(crate) fn next_seed() -> u64 {
    let n = SEED_COUNTER.fetch_add(1, Ordering::SeqCst);
    splitmix64_mix(
        SEED_BASE
            .load(Ordering::SeqCst)
            .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    )
}

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub(crate) fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Tensor {
    /// A tensor of `shape` filled with `value`, f32.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let t = Tensor::full([2, 2], 0.5);
    /// assert_eq!(t.to_vec::<f32>().unwrap(), vec![0.5; 4]);
    /// ```
    pub fn full(shape: impl Into<Shape>, value: f64) -> Tensor {
        Tensor::full_dtype(shape, value, DType::F32)
    }

    /// A tensor of `shape` filled with `value` converted to `dtype`.
    pub fn full_dtype(shape: impl Into<Shape>, value: f64, dtype: DType) -> Tensor {
        Tensor::constant(Scalar::F64(value).cast(dtype), shape.into())
    }

    /// Zeros, f32.
    pub fn zeros(shape: impl Into<Shape>) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// Ones, f32.
    pub fn ones(shape: impl Into<Shape>) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// Zeros of `dtype`.
    pub fn zeros_dtype(shape: impl Into<Shape>, dtype: DType) -> Tensor {
        Tensor::full_dtype(shape, 0.0, dtype)
    }

    /// Ones of `dtype`.
    pub fn ones_dtype(shape: impl Into<Shape>, dtype: DType) -> Tensor {
        Tensor::full_dtype(shape, 1.0, dtype)
    }

    /// Zeros with this tensor's shape and dtype.
    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros_dtype(self.shape().clone(), self.dtype())
    }

    /// Ones with this tensor's shape and dtype.
    pub fn ones_like(&self) -> Tensor {
        Tensor::ones_dtype(self.shape().clone(), self.dtype())
    }

    /// `value` with this tensor's shape and dtype.
    pub fn full_like(&self, value: f64) -> Tensor {
        Tensor::full_dtype(self.shape().clone(), value, self.dtype())
    }

    /// Uniform random numbers in [0, 1) with this tensor's shape (f32 unless it is f64).
    pub fn rand_like(&self) -> Tensor {
        Tensor::random(
            self.shape().clone(),
            Distribution::Uniform,
            float_of(self.dtype()),
        )
    }

    /// Standard normal random numbers with this tensor's shape (f32 unless it is f64).
    pub fn randn_like(&self) -> Tensor {
        Tensor::random(
            self.shape().clone(),
            Distribution::Normal,
            float_of(self.dtype()),
        )
    }

    /// `[start, start + step, ...)` up to `end` (exclusive), i64, as `torch.arange`.
    ///
    /// ```
    /// use metajit::Tensor;
    /// assert_eq!(Tensor::arange(1, 10, 3).to_vec::<i64>().unwrap(), vec![1, 4, 7]);
    /// ```
    ///
    /// # Panics
    /// When `step` is 0, or has the wrong sign for the range.
    #[track_caller]
    pub fn arange(start: i64, end: i64, step: i64) -> Tensor {
        if step == 0 || (end - start != 0 && (end - start > 0) != (step > 0)) {
            panic!("bad arguments to arange: step {step} cannot go from {start} to {end}");
        }
        let n = ((end - start) as i128 + step as i128 - step.signum() as i128) / step as i128;
        let n = n.max(0) as usize;
        Tensor::from_op(Op::Index { axis: 0 }, &[], DType::I64, Shape::new([n]))
            .mul(step)
            .add(start)
    }

    /// `[start, start + step, ...)` up to `end` (exclusive), f32; computed as
    /// `start + i * step` in f64 and rounded once, as PyTorch does.
    #[track_caller]
    pub fn arange_f32(start: f64, end: f64, step: f64) -> Tensor {
        if step == 0.0 || !step.is_finite() || (end != start && (end - start > 0.0) != (step > 0.0))
        {
            panic!("bad arguments to arange_f32: step {step} cannot go from {start} to {end}");
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        Tensor::from_op(Op::Index { axis: 0 }, &[], DType::F64, Shape::new([n]))
            .mul(step)
            .add(start)
            .cast(DType::F32)
    }

    /// `steps` evenly spaced values from `start` to `end` inclusive, f32. Like PyTorch, the
    /// first half counts up from `start` and the second half down from `end`, so both ends
    /// are exact.
    #[track_caller]
    pub fn linspace(start: f64, end: f64, steps: usize) -> Tensor {
        if steps == 0 {
            return Tensor::zeros([0]);
        }
        if steps == 1 {
            return Tensor::full([1], start);
        }
        let step = (end - start) / (steps.max(2) - 1) as f64;
        let i = Tensor::from_op(Op::Index { axis: 0 }, &[], DType::F64, Shape::new([steps]));
        let up = i.mul(step).add(start);
        let down = i.sub((steps - 1) as f64).mul(step).add(end);
        Tensor::where_(&i.lt((steps / 2) as f64), &up, &down).cast(DType::F32)
    }

    /// The `n × m` identity matrix (ones on the diagonal), f32.
    pub fn eye(n: usize, m: usize) -> Tensor {
        let shape = Shape::new([n, m]);
        let r = Tensor::from_op(Op::Index { axis: 0 }, &[], DType::I64, shape.clone());
        let c = Tensor::from_op(Op::Index { axis: 1 }, &[], DType::I64, shape);
        r.eq(&c).cast(DType::F32)
    }

    /// Uniform random numbers in [0, 1), f32.
    pub fn rand(shape: impl Into<Shape>) -> Tensor {
        Tensor::random(shape.into(), Distribution::Uniform, DType::F32)
    }

    /// Standard normal random numbers, f32.
    pub fn randn(shape: impl Into<Shape>) -> Tensor {
        Tensor::random(shape.into(), Distribution::Normal, DType::F32)
    }

    /// Random integers uniform in `[low, high)`, i64 (`torch.randint`): an f64 uniform number
    /// scaled and floored (exact for spans below 2^52).
    ///
    /// ```
    /// let labels = metajit::Tensor::randint(0, 10, [64]);
    /// let v = labels.to_vec::<i64>().unwrap();
    /// assert!(v.iter().all(|&c| (0..10).contains(&c)));
    /// ```
    ///
    /// # Panics
    /// When `high <= low`.
    #[track_caller]
    pub fn randint(low: i64, high: i64, shape: impl Into<Shape>) -> Tensor {
        if high <= low {
            panic!("bad arguments to randint: high {high} must exceed low {low}");
        }
        let span = (high as i128 - low as i128) as f64;
        Tensor::random(shape.into(), Distribution::Uniform, DType::F64)
            .mul(span)
            .floor()
            .minimum(span - 1.0)
            .cast(DType::I64)
            .add(low)
    }

    /// Random numbers of `dist` and a float `dtype` (f16/bf16 are drawn in f32 and rounded).
    pub fn random(shape: Shape, dist: Distribution, dtype: DType) -> Tensor {
        let gen_dtype = if dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        Tensor::from_op(
            Op::Random {
                seed: next_seed(),
                dist,
            },
            &[],
            gen_dtype,
            shape,
        )
        .cast(dtype)
    }
}

fn float_of(d: DType) -> DType {
    if d.is_float() { d } else { DType::F32 }
}
