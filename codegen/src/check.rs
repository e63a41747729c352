//! The argument checks every backend runs before a launch or a GEMM, so that a safe caller
//! can never make a kernel index outside its buffers: buffer count, dtypes and element counts
//! against the kernel's declared extents, sizes, output aliasing; a GEMM layout's reach
//! against its buffers, and no element of the destination written twice.

use metajit_metaops::DType;
use metajit_metaops::contraction::{BatchAxis, GemmLayout};
use metajit_metaops::kernel::{BufParam, Extent, Kernel};

use crate::{BackendError, DeviceBuffer};

/// The checks of [`crate::Backend::launch`] (see there), for code compiled for the parameters
/// `params` and `n_sizes` size parameters.
pub fn launch_args<B: DeviceBuffer>(
    backend: &'static str,
    params: &[BufParam],
    n_sizes: usize,
    kernel: &Kernel,
    bufs: &[&B],
    sizes: &[i64],
) -> Result<(), BackendError> {
    let op = || kernel.text().lines().next().unwrap_or("kernel").to_string();
    let fail = |message: String| BackendError::Arguments {
        backend,
        op: op(),
        message,
    };
    if kernel.bufs != params || kernel.n_sizes != n_sizes {
        return Err(fail(
            "the kernel is not the one the code was compiled for".into(),
        ));
    }
    if bufs.len() != params.len() {
        return Err(fail(format!(
            "{} buffers passed for {} parameters",
            bufs.len(),
            params.len()
        )));
    }
    if sizes.len() < kernel.n_sizes {
        return Err(fail(format!(
            "{} sizes passed, the kernel reads {}",
            sizes.len(),
            kernel.n_sizes
        )));
    }
    if let Some((s, v)) = sizes[..kernel.n_sizes]
        .iter()
        .enumerate()
        .find(|(s, v)| **v < 0 && is_extent(kernel, *s))
    {
        return Err(fail(format!("size s{s} is negative ({v})")));
    }
    for (k, (b, p)) in bufs.iter().zip(params).enumerate() {
        if b.dtype() != p.dtype {
            return Err(fail(format!(
                "buffer b{k} holds {}, the parameter is {}",
                b.dtype(),
                p.dtype
            )));
        }
        let dims = || {
            let d: Vec<String> = p.dims.iter().map(|e| e.to_string()).collect();
            format!("[{}] at sizes {:?}", d.join(", "), &sizes[..kernel.n_sizes])
        };
        let Some(expected) = p.numel(sizes) else {
            return Err(fail(format!("buffer b{k}: extents {} overflow", dims())));
        };
        if b.numel() != expected {
            return Err(BackendError::BufferLength {
                backend,
                op: op(),
                param: format!("b{k}"),
                expected,
                actual: b.numel(),
                why: dims(),
            });
        }
        if p.output
            && let Some(j) = (0..bufs.len()).find(|&j| j != k && std::ptr::eq(bufs[j], *b))
        {
            return Err(fail(format!("output buffer b{k} is also passed as b{j}")));
        }
    }
    Ok(())
}

/// Whether size parameter `s` is used as an extent (a loop's or a buffer's), not only as a
/// scalar's bits (which may be negative).
fn is_extent(k: &Kernel, s: usize) -> bool {
    let ext = |e: &Extent| *e == Extent::Size(s);
    k.outer.iter().any(ext)
        || k.phases.iter().any(|p| p.inner.iter().any(ext))
        || k.bufs.iter().any(|b| b.dims.iter().any(ext))
}

/// The checks of [`crate::Backend::contraction`] (see there).
pub fn contraction_args<B: DeviceBuffer>(
    backend: &'static str,
    l: &GemmLayout,
    dtype: DType,
    dst: &B,
    lhs: &B,
    rhs: &B,
) -> Result<(), BackendError> {
    let op = || {
        format!(
            "GEMM m={} n={} k={} batch={}",
            l.m,
            l.n,
            l.k,
            l.batch_count()
        )
    };
    let fail = |message: String| BackendError::Arguments {
        backend,
        op: op(),
        message,
    };
    if !matches!(dtype, DType::F32 | DType::F64) {
        return Err(fail(format!("no GEMM for dtype {dtype}")));
    }
    for (name, b) in [("dst", dst), ("lhs", lhs), ("rhs", rhs)] {
        if b.dtype() != dtype {
            return Err(fail(format!("{name} holds {}, not {dtype}", b.dtype())));
        }
    }
    // (extent, stride) of every axis along which each matrix is indexed.
    let batch = |f: fn(&BatchAxis) -> isize| -> Vec<(usize, isize)> {
        l.batch.iter().map(|b| (b.extent, f(b))).collect()
    };
    let mut d_axes = batch(|b| b.dst);
    d_axes.extend([(l.m, l.dst.rs), (l.n, l.dst.cs)]);
    let mut l_axes = batch(|b| b.lhs);
    l_axes.extend([(l.m, l.lhs.rs), (l.k, l.lhs.cs)]);
    let mut r_axes = batch(|b| b.rhs);
    r_axes.extend([(l.k, l.rhs.rs), (l.n, l.rhs.cs)]);
    // dst is written when it has elements: m, n and every batch axis it moves along are
    // non-empty (an empty summed axis writes zeros); the operands are read when there is a
    // product to compute.
    let written = l.m > 0 && l.n > 0 && l.batch.iter().all(|b| b.dst == 0 || b.extent > 0);
    if !written {
        return Ok(()); // no pointer is accessed
    }
    let mut operands = vec![("dst", dst, &d_axes)];
    if l.k > 0 && l.batch_count() > 0 {
        operands.extend([("lhs", lhs, &l_axes), ("rhs", rhs, &r_axes)]);
    }
    for (name, b, axes) in operands {
        // The lowest and highest offsets reached, in i128 (no overflow for any usize/isize).
        let (lo, hi) = axes.iter().fold((0i128, 0i128), |(lo, hi), &(e, s)| {
            // An empty (summed) axis adds no offsets.
            let span = (e.max(1) as i128 - 1) * s as i128;
            (lo + span.min(0), hi + span.max(0))
        });
        if lo < 0 {
            return Err(fail(format!(
                "{name}: strides {axes:?} reach offset {lo}, before the buffer"
            )));
        }
        let expected = usize::try_from(hi + 1).unwrap_or(usize::MAX);
        if expected > b.numel() {
            return Err(BackendError::BufferLength {
                backend,
                op: op(),
                param: name.into(),
                expected,
                actual: b.numel(),
                why: format!("(extent, stride) axes {axes:?}"),
            });
        }
    }
    // No element of dst written twice, except along batch axes of dst stride 0 (products
    // summed into one matrix, one call after another): with the other axes of extent > 1
    // sorted by stride, each stride exceeds the farthest offset the smaller axes reach (a
    // sufficient condition).
    let summed = l.batch.len();
    let mut axes: Vec<(usize, u128)> = d_axes
        .iter()
        .enumerate()
        .filter(|&(i, &(e, s))| e > 1 && !(i < summed && s == 0))
        .map(|(_, &(e, s))| (e, s.unsigned_abs() as u128))
        .collect();
    axes.sort_by_key(|&(_, s)| s);
    let mut reach = 0u128;
    for &(e, s) in &axes {
        if s <= reach {
            return Err(fail(format!(
                "dst strides {d_axes:?} write some elements twice"
            )));
        }
        reach += (e as u128 - 1) * s;
    }
    Ok(())
}
