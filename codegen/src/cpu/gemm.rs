//! GEMM on the CPU: the `gemm` crate (0.19, AVX-512 kernels with feature `x86-v4`) behind two
//! entry points, [`gemm_f32`] and [`gemm_f64`], that run a whole (batched, strided) contraction
//! described by a [`GemmLayout`] — what `metajit_metaops::contraction` recognises and
//! [`Contraction::layout`](metajit_metaops::contraction::Contraction::layout) evaluates for a
//! graph's concrete shapes.
//!
//! Semantics: for every batch index `b` (row-major over `layout.batch`), `i < m`, `j < n`,
//! `dst[b][i, j] = Σ_{l<k} lhs[b][i, l] · rhs[b][l, j]`, where `x[b][i, j]` is the element at
//! offset `Σ_t b_t · batch[t].x + i · x.rs + j · x.cs` (elements, not bytes). Batch axes along
//! which dst has stride 0 are summed: `dst[i, j]` is then the sum over them of those products,
//! added one call after another in batch order. `dst` is overwritten (the first product into
//! each matrix does not read it): with `k = 0` it is filled with zeros. Sums accumulate in the element
//! type, in the blocked order of the `gemm` crate (results agree with a sequential sum within
//! rounding, not bitwise).
//!
//! Parallelism: a product of at least [`PARALLEL_OPS`] multiply-adds is split across `threads`
//! threads by the `gemm` crate itself (`Parallelism::Rayon`), unless there are enough output
//! matrices to keep the threads evenly busy: then each matrix (with the products summed into
//! it, along batch axes of dst stride 0) runs on one thread, the matrices in parallel on
//! rayon's global pool — as does a batch of smaller products whose total reaches that size.
//! One matrix summed over many small products (every batch axis of dst stride 0) splits the
//! products into per-thread partial sums, added into dst in order. Smaller work runs on the
//! calling thread.

use metajit_metaops::contraction::{BatchAxis, GemmLayout, batch_offsets};
use rayon::prelude::*;

/// Multiply-adds (`m · n · k`) from which work is worth spreading across threads (2^18).
pub const PARALLEL_OPS: usize = 1 << 18;

/// Computes the batched product described by `layout` in f32 (see the module docs).
///
/// `threads` caps the threads used (`0` or `1`: the calling thread only).
///
/// # Safety
/// - `lhs` is valid for reads of `f32` at every offset `Σ_t b_t·batch[t].lhs + i·lhs.rs +
///   l·lhs.cs` (`b_t < batch[t].extent`, `i < m`, `l < k`), and likewise `rhs` at
///   `Σ_t b_t·batch[t].rhs + l·rhs.rs + j·rhs.cs` (`l < k`, `j < n`);
/// - `dst` is valid for writes at every offset `Σ_t b_t·batch[t].dst + i·dst.rs + j·dst.cs`,
///   and distinct `(b, i, j)` give distinct offsets (no element is written twice);
/// - the written elements of `dst` overlap neither operand, and nothing else reads or writes
///   them during the call.
///
/// When `m`, `n` or the batch count is 0, no pointer is accessed; when `k` is 0, `lhs` and `rhs`
/// are not read.
pub unsafe fn gemm_f32(
    dst: *mut f32,
    lhs: *const f32,
    rhs: *const f32,
    layout: &GemmLayout,
    threads: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { gemm_batched(dst, lhs, rhs, layout, threads, 0.0f32, 1.0f32) }
}

/// Computes the batched product described by `layout` in f64; see [`gemm_f32`].
///
/// # Safety
/// As [`gemm_f32`], with `f64` elements.
pub unsafe fn gemm_f64(
    dst: *mut f64,
    lhs: *const f64,
    rhs: *const f64,
    layout: &GemmLayout,
    threads: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { gemm_batched(dst, lhs, rhs, layout, threads, 0.0f64, 1.0f64) }
}

/// A pointer that may cross threads (the caller's contract makes the accesses disjoint).
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: only used under the contract of `gemm_f32`: writes through it are disjoint per batch
// entry, and reads are of data nothing writes during the call.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

/// The sum over every batch entry of `lhs[b] @ rhs[b]` into the one matrix `dst` (every batch
/// axis has dst stride 0), in `parts` contiguous ranges of batch entries on rayon's pool: part
/// 0 sums into `dst`, part `p > 0` into a dense `m × n` scratch matrix, which is then added to
/// `dst` in part order.
///
/// # Safety
///
/// As [`gemm_f32`], with every batch axis of dst stride 0.
unsafe fn summed_in_parallel<T: Copy + Send + Sync + std::ops::Add<Output = T> + 'static>(
    dst: *mut T,
    lhs: *const T,
    rhs: *const T,
    l: &GemmLayout,
    parts: usize,
    zero: T,
    one: T,
) {
    let count = l.batch_count();
    let (m, n) = (l.m, l.n);
    let mut scratch: Vec<Vec<T>> = (1..parts).map(|_| vec![zero; m * n]).collect();
    let targets: Vec<(SendPtr<T>, isize, isize)> =
        std::iter::once((SendPtr(dst), l.dst.rs, l.dst.cs))
            .chain(
                scratch
                    .iter_mut()
                    .map(|v| (SendPtr(v.as_mut_ptr()), n as isize, 1)),
            )
            .collect();
    let (a, c) = (SendPtr(lhs.cast_mut()), SendPtr(rhs.cast_mut()));
    targets
        .par_iter()
        .enumerate()
        .for_each(|(p, &(d, rs, cs))| {
            let (a, c) = (a, c);
            for b in count * p / parts..count * (p + 1) / parts {
                let (_, ol, or) = batch_offsets(&l.batch, b);
                let first = b == count * p / parts;
                // SAFETY: the caller guarantees the operand offsets are in bounds and dst's
                // matrix; each part writes only its own matrix (dst or its scratch), one call
                // after another.
                unsafe {
                    product(
                        l,
                        d.0,
                        (rs, cs),
                        a.0.cast_const().wrapping_offset(ol),
                        c.0.cast_const().wrapping_offset(or),
                        !first,
                        (zero, one),
                        gemm::Parallelism::None,
                    )
                }
            }
        });
    for part in &scratch {
        for i in 0..m {
            for j in 0..n {
                let at = i as isize * l.dst.rs + j as isize * l.dst.cs;
                // SAFETY: (i, j) is inside dst's matrix (the caller's contract); the parts
                // are done.
                unsafe { *dst.wrapping_offset(at) = *dst.wrapping_offset(at) + part[i * n + j] };
            }
        }
    }
}

/// Every output matrix of a layout with free batch axes (`free`, dst stride ≠ 0) and summed
/// ones (`summed`, dst stride 0): the matrices spread over rayon's pool (on at most `threads`
/// threads), each matrix the sum of its products in row-major order of the summed axes (the
/// first overwrites), on one thread.
///
/// # Safety
///
/// As [`gemm_f32`]; `free` and `summed` partition the layout's batch axes, in order.
#[allow(clippy::too_many_arguments)]
unsafe fn matrices_in_parallel<T: Copy + Send + Sync + 'static>(
    dst: *mut T,
    lhs: *const T,
    rhs: *const T,
    l: &GemmLayout,
    (free, summed): (&[BatchAxis], &[BatchAxis]),
    threads: usize,
    zero: T,
    one: T,
) {
    let matrices: usize = free.iter().map(|b| b.extent).product();
    let terms: usize = summed.iter().map(|b| b.extent).product();
    let (d, a, c) = (
        SendPtr(dst),
        SendPtr(lhs.cast_mut()),
        SendPtr(rhs.cast_mut()),
    );
    // One matrix per task, so that a thread that falls behind (a core shared with other
    // work) leaves its matrices to the others; at most `threads` chunks when that is fewer
    // than the pool's threads.
    let chunk = if threads >= rayon::current_num_threads() {
        1
    } else {
        matrices.div_ceil(threads)
    };
    (0..matrices)
        .into_par_iter()
        .with_min_len(chunk)
        .with_max_len(chunk)
        .for_each(move |f| {
            let (d, a, c) = (d, a, c);
            let (od, fl, fr) = batch_offsets(free, f);
            for t in 0..terms {
                let (_, sl, sr) = batch_offsets(summed, t);
                // SAFETY: the caller guarantees every offset is in bounds; matrix `f` is
                // written by this task alone, its products one after another.
                unsafe {
                    product(
                        l,
                        d.0.wrapping_offset(od),
                        (l.dst.rs, l.dst.cs),
                        a.0.cast_const().wrapping_offset(fl + sl),
                        c.0.cast_const().wrapping_offset(fr + sr),
                        t > 0,
                        (zero, one),
                        gemm::Parallelism::None,
                    )
                }
            }
        });
}

/// Whether `tasks` equal tasks keep `threads` threads about equally busy: one each at least,
/// and either the same number each or at least four each (at most a quarter idle at the end).
fn spreads_evenly(tasks: usize, threads: usize) -> bool {
    tasks >= threads && (tasks.is_multiple_of(threads) || tasks >= 4 * threads)
}

/// Whether batch entry `b` (row-major over `batch`) has index 0 along every axis that dst does
/// not move along (a summed axis).
fn summed_indices_zero(batch: &[BatchAxis], mut b: usize) -> bool {
    let mut zero = true;
    for ax in batch.iter().rev() {
        let e = ax.extent.max(1);
        if ax.dst == 0 && !b.is_multiple_of(e) {
            zero = false;
        }
        b /= e;
    }
    zero
}

/// One product of the layout's shape, `dst := lhs · rhs` (or `dst += lhs · rhs` when
/// `accumulate`), with dst at row and column strides `dst_rs`, `dst_cs` and the operands at the
/// layout's strides.
///
/// # Safety
///
/// Every element offset the shape reaches from each pointer is in bounds, and nothing else
/// accesses the dst elements during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn product<T: Copy + 'static>(
    l: &GemmLayout,
    dst: *mut T,
    (dst_rs, dst_cs): (isize, isize),
    lhs: *const T,
    rhs: *const T,
    accumulate: bool,
    (zero, one): (T, T),
    par: gemm::Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            l.m,
            l.n,
            l.k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs,
            l.lhs.cs,
            l.lhs.rs,
            rhs,
            l.rhs.cs,
            l.rhs.rs,
            if accumulate { one } else { zero },
            one,
            false,
            false,
            false,
            par,
        )
    }
}

/// The shared body of [`gemm_f32`] and [`gemm_f64`]: `zero` and `one` are the element type's
/// 0 and 1 (`dst := 0·dst + 1·lhs·rhs`).
unsafe fn gemm_batched<T: Copy + Send + Sync + std::ops::Add<Output = T> + 'static>(
    dst: *mut T,
    lhs: *const T,
    rhs: *const T,
    l: &GemmLayout,
    threads: usize,
    zero: T,
    one: T,
) {
    let count = l.batch_count();
    if l.m == 0 || l.n == 0 {
        return;
    }
    if count == 0 {
        // An empty summed axis (and no empty free one): every matrix is an empty sum, 0.
        let free: Vec<BatchAxis> = l.batch.iter().filter(|b| b.dst != 0).copied().collect();
        let summed_empty = l.batch.iter().any(|b| b.dst == 0 && b.extent == 0);
        if summed_empty && free.iter().all(|b| b.extent > 0) {
            let matrices: usize = free.iter().map(|b| b.extent).product();
            for f in 0..matrices {
                let (od, _, _) = batch_offsets(&free, f);
                for i in 0..l.m as isize {
                    for j in 0..l.n as isize {
                        // SAFETY: the caller guarantees these dst offsets are in bounds.
                        unsafe { *dst.wrapping_offset(od + i * l.dst.rs + j * l.dst.cs) = zero };
                    }
                }
            }
        }
        return;
    }
    let per = l.m * l.n * l.k;
    let threads = threads.max(1);
    // A product split across the threads by the gemm crate itself, when it is large enough.
    let par = if per >= PARALLEL_OPS && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // Product `b` of the batch, added into dst when `accumulate`, else overwriting it.
    // SAFETY: the caller guarantees every offset formed here is in bounds for its pointer;
    // the callers below run products into the same matrix one at a time.
    let one_product = |b: usize, accumulate: bool| {
        let (od, ol, or) = batch_offsets(&l.batch, b);
        unsafe {
            product(
                l,
                dst.wrapping_offset(od),
                (l.dst.rs, l.dst.cs),
                lhs.wrapping_offset(ol),
                rhs.wrapping_offset(or),
                accumulate,
                (zero, one),
                par,
            )
        }
    };
    // Batch axes along which dst does not move are summed: the products are added into the
    // same matrix, one after the other, in batch order (the first overwrites).
    if l.batch.iter().any(|b| b.dst == 0 && b.extent > 1) {
        // One output matrix summed over many small products (a weight gradient over a batch
        // of images): split the products across threads, each summing into its own matrix,
        // then add those into dst.
        let single = l.batch.iter().all(|b| b.dst == 0 || b.extent <= 1);
        if single && threads > 1 && per < PARALLEL_OPS && per * count >= PARALLEL_OPS {
            // SAFETY: passed on from the caller.
            unsafe { summed_in_parallel(dst, lhs, rhs, l, threads.min(count), zero, one) };
            return;
        }
        let (free, summed): (Vec<BatchAxis>, Vec<BatchAxis>) =
            l.batch.iter().partition(|b| b.dst != 0);
        let matrices: usize = free.iter().map(|b| b.extent).product();
        if threads > 1 && spreads_evenly(matrices, threads) {
            // Several output matrices, each a sum of products (a convolution's taps per
            // image): the matrices in parallel, each one's products in order on one thread.
            // SAFETY: passed on from the caller; distinct free entries write distinct
            // matrices.
            unsafe { matrices_in_parallel(dst, lhs, rhs, l, (&free, &summed), threads, zero, one) };
            return;
        }
        for b in 0..count {
            // The first product into its matrix (every summed index 0) overwrites it.
            one_product(b, !summed_indices_zero(&l.batch, b));
        }
        return;
    }
    if threads > 1 && per >= PARALLEL_OPS && spreads_evenly(count, threads) {
        // Many large products (a convolution's input gradient, per image and tap): one per
        // task on one thread each, rather than each split across the threads in turn.
        // SAFETY: passed on from the caller; batch entries write disjoint matrices.
        unsafe { matrices_in_parallel(dst, lhs, rhs, l, (&l.batch, &[]), threads, zero, one) };
        return;
    }
    if per >= PARALLEL_OPS || count == 1 || threads == 1 || per * count < PARALLEL_OPS {
        for b in 0..count {
            one_product(b, false);
        }
    } else {
        // Many small products: one per task, at most `threads` chunks.
        let (d, a, c) = (
            SendPtr(dst),
            SendPtr(lhs.cast_mut()),
            SendPtr(rhs.cast_mut()),
        );
        (0..count)
            .into_par_iter()
            .with_min_len(count.div_ceil(threads))
            .for_each(move |b| {
                let (d, a, c) = (d, a, c);
                let (od, ol, or) = batch_offsets(&l.batch, b);
                // SAFETY: as above; batch entries write disjoint elements.
                unsafe {
                    product(
                        l,
                        d.0.wrapping_offset(od),
                        (l.dst.rs, l.dst.cs),
                        a.0.cast_const().wrapping_offset(ol),
                        c.0.cast_const().wrapping_offset(or),
                        false,
                        (zero, one),
                        gemm::Parallelism::None,
                    )
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metajit_metaops::contraction::MatStrides;

    /// Deterministic values in [-1, 1), multiples of 2^-10.
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) % 2048) as f64 / 1024.0 - 1.0
            })
            .collect()
    }

    /// One past the largest offset `x` reaches (0 when nothing is accessed).
    fn span(
        l: &GemmLayout,
        mat: MatStrides,
        rows: usize,
        cols: usize,
        pick: fn(&BatchAxis) -> isize,
    ) -> usize {
        if rows == 0 || cols == 0 || l.batch_count() == 0 {
            return 0;
        }
        let mut hi = (rows as isize - 1) * mat.rs + (cols as isize - 1) * mat.cs;
        for b in &l.batch {
            hi += (b.extent as isize - 1) * pick(b);
        }
        hi as usize + 1
    }

    /// The naive triple loop over the layout, in f64, with `Σ|a·b|` per written element
    /// (products along summed batch axes, of dst stride 0, add into the same elements).
    fn naive(l: &GemmLayout, dst_len: usize, a: &[f64], b: &[f64]) -> (Vec<Option<f64>>, Vec<f64>) {
        let summed = l.batch.iter().any(|b| b.dst == 0 && b.extent > 1);
        let mut out: Vec<Option<f64>> = vec![None; dst_len];
        let mut scale = vec![0.0; dst_len];
        for bi in 0..l.batch_count() {
            let (od, ol, or) = batch_offsets(&l.batch, bi);
            for i in 0..l.m as isize {
                for j in 0..l.n as isize {
                    let (mut acc, mut s) = (0.0, 0.0);
                    for p in 0..l.k as isize {
                        let x = a[(ol + i * l.lhs.rs + p * l.lhs.cs) as usize]
                            * b[(or + p * l.rhs.rs + j * l.rhs.cs) as usize];
                        acc += x;
                        s += x.abs();
                    }
                    let o = (od + i * l.dst.rs + j * l.dst.cs) as usize;
                    assert!(
                        summed || out[o].is_none(),
                        "the test layout writes {o} twice"
                    );
                    out[o] = Some(out[o].unwrap_or(0.0) + acc);
                    scale[o] += s;
                }
            }
        }
        (out, scale)
    }

    /// Runs `layout` through both wrappers and checks them against the naive loop; elements
    /// the layout does not write must keep their sentinel.
    fn check(l: &GemmLayout, threads: usize) {
        let la = span(l, l.lhs, l.m, l.k, |b| b.lhs).max(1);
        let lb = span(l, l.rhs, l.k, l.n, |b| b.rhs).max(1);
        let ld = span(l, l.dst, l.m, l.n, |b| b.dst).max(1);
        let a = values(la, 1 + la as u64);
        let b = values(lb, 2 + lb as u64);
        let (want, scale) = naive(l, ld, &a, &b);
        let sentinel = 12345.0;
        // f64.
        let mut d64 = vec![sentinel; ld];
        unsafe { gemm_f64(d64.as_mut_ptr(), a.as_ptr(), b.as_ptr(), l, threads) };
        // f32.
        let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        let mut d32 = vec![sentinel as f32; ld];
        unsafe { gemm_f32(d32.as_mut_ptr(), a32.as_ptr(), b32.as_ptr(), l, threads) };
        for o in 0..ld {
            match want[o] {
                None => {
                    assert_eq!(
                        d64[o], sentinel,
                        "f64 wrote outside the layout at {o}: {l:?}"
                    );
                    assert_eq!(
                        d32[o], sentinel as f32,
                        "f32 wrote outside the layout at {o}: {l:?}"
                    );
                }
                Some(w) => {
                    assert!(
                        (d64[o] - w).abs() <= 1e-12 * scale[o],
                        "f64 at {o}: {} vs {w}: {l:?}",
                        d64[o]
                    );
                    let g = d32[o] as f64;
                    assert!(
                        (g - w).abs() <= 1e-5 * scale[o] + 1e-30,
                        "f32 at {o}: {g} vs {w}: {l:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn row_major_products_of_many_sizes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (2, 3, 4),
            (1, 17, 9),
            (17, 1, 9),
            (5, 7, 1),
            (16, 16, 16),
            (33, 31, 65),
            (3, 130, 5),
        ] {
            check(&GemmLayout::row_major(m, n, k), 1);
        }
    }

    #[test]
    fn transposed_and_padded_strides() {
        let (m, n, k) = (13, 11, 7);
        let mut l = GemmLayout::row_major(m, n, k);
        // lhs stored [k, m] (transposed), rhs stored [n, k] (transposed), dst column-major.
        l.lhs = MatStrides {
            rs: 1,
            cs: m as isize,
        };
        l.rhs = MatStrides {
            rs: 1,
            cs: k as isize,
        };
        check(&l, 1);
        l.dst = MatStrides {
            rs: 1,
            cs: m as isize,
        };
        check(&l, 1);
        // Padded leading dimensions: untouched padding keeps its sentinel.
        let mut p = GemmLayout::row_major(m, n, k);
        p.dst = MatStrides {
            rs: n as isize + 3,
            cs: 1,
        };
        p.lhs = MatStrides {
            rs: k as isize + 5,
            cs: 1,
        };
        p.rhs = MatStrides {
            rs: n as isize + 2,
            cs: 1,
        };
        check(&p, 1);
        // Vectors with transposed strides (the gemv paths).
        for (m, n) in [(1, 9), (9, 1)] {
            let mut v = GemmLayout::row_major(m, n, k);
            v.lhs = MatStrides {
                rs: 1,
                cs: m as isize,
            };
            v.rhs = MatStrides {
                rs: 1,
                cs: k as isize,
            };
            check(&v, 1);
        }
    }

    #[test]
    fn empty_extents() {
        // k = 0: the sentinel is overwritten with zeros.
        for (m, n) in [(3, 4), (1, 5), (5, 1)] {
            let mut l = GemmLayout::row_major(m, n, 0);
            l.lhs.rs = 0;
            l.rhs.rs = 0;
            check(&l, 1);
        }
        // m = 0, n = 0, or an empty batch: nothing is written.
        check(&GemmLayout::row_major(0, 4, 3), 1);
        check(&GemmLayout::row_major(4, 0, 3), 1);
        let mut b = GemmLayout::row_major(2, 2, 2);
        b.batch = vec![BatchAxis {
            extent: 0,
            dst: 4,
            lhs: 4,
            rhs: 4,
        }];
        check(&b, 4);
        // Unit M or N described with zero strides (as a contraction without an M/N axis has).
        let mut u = GemmLayout::row_major(1, 6, 5);
        u.lhs.rs = 0;
        u.dst.rs = 0;
        check(&u, 1);
        let mut u = GemmLayout::row_major(6, 1, 5);
        u.rhs.cs = 0;
        u.dst.cs = 0;
        check(&u, 1);
    }

    #[test]
    fn batches_with_shared_and_broadcast_operands() {
        let (m, n, k) = (5, 6, 7);
        let mut l = GemmLayout::row_major(m, n, k);
        // [3, 2] batch: lhs broadcast over the outer axis, rhs over the inner one.
        l.batch = vec![
            BatchAxis {
                extent: 3,
                dst: (2 * m * n) as isize,
                lhs: 0,
                rhs: (n * k) as isize,
            },
            BatchAxis {
                extent: 2,
                dst: (m * n) as isize,
                lhs: (m * k) as isize,
                rhs: 0,
            },
        ];
        check(&l, 1);
        check(&l, 4);
        // Both broadcast (a repeated product).
        l.batch = vec![BatchAxis {
            extent: 4,
            dst: (m * n) as isize,
            lhs: 0,
            rhs: 0,
        }];
        check(&l, 1);
    }

    #[test]
    fn large_products_take_the_parallel_paths() {
        // One product above the threshold: split by the gemm crate.
        let l = GemmLayout::row_major(96, 80, 72);
        assert!(l.ops() >= PARALLEL_OPS);
        check(&l, 4);
        let mut t = l.clone();
        t.lhs = MatStrides { rs: 1, cs: 96 };
        check(&t, 4);
        // Many small products above the threshold together: split over the batch.
        let mut b = GemmLayout::row_major(16, 16, 16);
        b.batch = vec![BatchAxis {
            extent: 80,
            dst: 256,
            lhs: 256,
            rhs: 0,
        }];
        assert!(b.m * b.n * b.k < PARALLEL_OPS && b.ops() >= PARALLEL_OPS);
        check(&b, 4);
        // Several matrices, each summed over products (a convolution's taps per image, the
        // taps reading overlapping windows of one operand): the matrices in parallel.
        let mut t = GemmLayout::row_major(6, 40, 8);
        t.rhs = MatStrides { rs: 50, cs: 1 };
        t.batch = vec![
            BatchAxis {
                extent: 5,
                dst: 240,
                lhs: 0,
                rhs: 400,
            },
            BatchAxis {
                extent: 3,
                dst: 0,
                lhs: 48,
                rhs: 1,
            },
        ];
        for threads in [1, 2, 3, 8] {
            check(&t, threads);
        }
        // Large products, as many as the threads or more: one per task.
        let mut big = GemmLayout::row_major(70, 70, 60);
        assert!(big.ops() >= PARALLEL_OPS);
        big.batch = vec![BatchAxis {
            extent: 4,
            dst: 4900,
            lhs: 4200,
            rhs: 0,
        }];
        for threads in [2, 3, 4] {
            check(&big, threads);
        }
        assert!(spreads_evenly(4, 2) && spreads_evenly(9, 2) && !spreads_evenly(3, 2));
    }

    /// The whole path: a graph as `Tensor::matmul` records it → `match_contraction` →
    /// `Contraction::layout` → `gemm_f32`, against the reference interpreter.
    #[test]
    fn matched_graphs_run_through_gemm() {
        use metajit_metaops::contraction::match_contraction;
        use metajit_metaops::{HostData, NodeId, Op, interp, parse::parse};
        let graphs = [
            // [2, 1, 4, 3] @ [5, 3, 6]: batches broadcast both ways.
            "%0 = input #0 : f32[2, 1, 4, 3]
             %1 = input #1 : f32[5, 3, 6]
             %2 = reshape %0 : f32[2, 1, 4, 3, 1]
             %3 = reshape %2 : f32[2, 4, 3]
             %4 = broadcast %3 axes=[1, 4] : f32[2, 5, 4, 3, 6]
             %5 = reshape %1 : f32[5, 1, 3, 6]
             %6 = reshape %5 : f32[5, 3, 6]
             %7 = broadcast %6 axes=[0, 2] : f32[2, 5, 4, 3, 6]
             %8 = mul %4, %7 : f32[2, 5, 4, 3, 6]
             %9 = reduce sum %8 axes=[3] : f32[2, 5, 4, 6]
             return %9",
            // linear: x [70, 33] @ w [50, 33].T
            "%0 = input #0 : f32[70, 33]
             %1 = reshape %0 : f32[70, 33, 1]
             %2 = reshape %1 : f32[70, 33]
             %3 = broadcast %2 axes=[2] : f32[70, 33, 50]
             %4 = input #1 : f32[50, 33]
             %5 = reindex %4 [i1, i0] overflow=0.0 : f32[33, 50]
             %6 = reshape %5 : f32[1, 33, 50]
             %7 = reshape %6 : f32[33, 50]
             %8 = broadcast %7 axes=[0] : f32[70, 33, 50]
             %9 = mul %3, %8 : f32[70, 33, 50]
             %10 = reduce sum %9 axes=[1] : f32[70, 50]
             return %10",
            // [3, 4, 5] @ [5, 6]: the batch folds into M.
            "%0 = input #0 : f32[3, 4, 5]
             %1 = input #1 : f32[5, 6]
             %2 = broadcast %0 axes=[3] : f32[3, 4, 5, 6]
             %3 = broadcast %1 axes=[0, 1] : f32[3, 4, 5, 6]
             %4 = mul %2, %3 : f32[3, 4, 5, 6]
             %5 = reduce sum %4 axes=[2] : f32[3, 4, 6]
             return %5",
            // dot product.
            "%0 = input #0 : f32[9]
             %1 = input #1 : f32[9]
             %2 = reshape %0 : f32[1, 9, 1]
             %3 = reshape %1 : f32[1, 9, 1]
             %4 = mul %2, %3 : f32[1, 9, 1]
             %5 = reduce sum %4 axes=[1] : f32[1, 1]
             return %5",
        ];
        for text in graphs {
            let g = parse(text).unwrap();
            let out = g.outputs[0];
            let c = match_contraction(&g, out, &|n: NodeId| {
                matches!(g.node(n).op, Op::Input { .. })
            })
            .unwrap_or_else(|| panic!("no match:\n{text}"));
            let slot = |n: NodeId| match g.node(n).op {
                Op::Input { slot } => slot,
                _ => unreachable!(),
            };
            let inputs: Vec<Vec<f32>> = (0..2)
                .map(|s| {
                    let n = g
                        .nodes
                        .iter()
                        .find(|n| n.op == Op::Input { slot: s })
                        .unwrap();
                    values(n.shape.numel(), s as u64 + 3)
                        .into_iter()
                        .map(|v| v as f32)
                        .collect()
                })
                .collect();
            let data: Vec<HostData> = inputs
                .iter()
                .map(|v| HostData::from_vec(v.clone()))
                .collect();
            let refs: Vec<&HostData> = data.iter().collect();
            let want: Vec<f32> = interp::run(&g, &refs).unwrap()[0].to_vec();
            let l = c.layout(&g);
            let mut got = vec![f32::NAN; g.node(out).shape.numel()];
            unsafe {
                gemm_f32(
                    got.as_mut_ptr(),
                    inputs[slot(c.lhs)].as_ptr(),
                    inputs[slot(c.rhs)].as_ptr(),
                    &l,
                    2,
                )
            };
            for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{e}: {g} vs {w}\n{l:?}\n{text}"
                );
            }
        }
    }
}
