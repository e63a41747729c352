//! Shape ops against independent direct implementations.
//!
//! Each property builds a tensor of distinct values (`0..n`, so a misplaced element shows),
//! runs the op through the lazy graph and the reference interpreter, and compares values and
//! shape with a naive implementation below that does its own index arithmetic over a flat
//! `Vec`. Shapes are small (rank 0–5, extents 0–4, with empty and size-1 axes) and axes are
//! drawn negative half the time. The second half checks the misuse panics.

mod common;

use common::unravel;
use metajit::{DType, Tensor};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Naive reference machinery: row-major index arithmetic over flat vectors.

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The row-major offset of a multi-index.
fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    let mut off = 0;
    let mut stride = 1;
    for k in (0..shape.len()).rev() {
        off += idx[k] * stride;
        stride *= shape[k];
    }
    off
}

/// Builds an output of `out_shape`: each element reads `data` at the input index `src(out)`
/// gives, or is `fill` where it gives `None`.
fn naive_map<T: Copy>(
    data: &[T],
    in_shape: &[usize],
    out_shape: &[usize],
    fill: T,
    src: impl Fn(&[usize]) -> Option<Vec<usize>>,
) -> Vec<T> {
    (0..numel(out_shape))
        .map(|lin| {
            let o = unravel(lin, out_shape);
            match src(&o) {
                Some(i) => data[ravel(&i, in_shape)],
                None => fill,
            }
        })
        .collect()
}

fn iota(shape: &[usize]) -> (Tensor, Vec<f32>) {
    let data: Vec<f32> = (0..numel(shape)).map(|v| v as f32).collect();
    (Tensor::from_vec(data.clone(), shape.to_vec()), data)
}

fn iota_i64(shape: &[usize], base: i64) -> (Tensor, Vec<i64>) {
    let data: Vec<i64> = (0..numel(shape) as i64).map(|v| base + v * 7).collect();
    (Tensor::from_vec(data.clone(), shape.to_vec()), data)
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

/// `axis` (any non-negative seed) as an axis of `rank`, negative when `neg`.
fn pick_axis(seed: usize, neg: bool, rank: usize) -> (usize, isize) {
    let a = seed % rank;
    (
        a,
        if neg {
            a as isize - rank as isize
        } else {
            a as isize
        },
    )
}

fn naive_permute<T: Copy>(data: &[T], shape: &[usize], perm: &[usize]) -> (Vec<T>, Vec<usize>) {
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    if data.is_empty() {
        return (Vec::new(), out); // nothing to read (and no fill value needed)
    }
    let v = naive_map(data, shape, &out, data[0], |o| {
        let mut i = vec![0; shape.len()];
        for (k, &p) in perm.iter().enumerate() {
            i[p] = o[k];
        }
        Some(i)
    });
    (v, out)
}

/// The positions Python's `range(n)[start:end:step]` selects, by walking the range.
fn py_slice(n: usize, start: isize, end: isize, step: usize) -> Vec<usize> {
    let n = n as i128;
    let fix = |v: isize| {
        let mut v = v as i128;
        if v < 0 {
            v += n;
        }
        v.max(0).min(n)
    };
    let (mut i, e) = (fix(start), fix(end));
    let mut out = Vec::new();
    while i < e {
        out.push(i as usize);
        i += step as i128;
    }
    out
}

/// Selects `positions` along axis `a`.
fn naive_take<T: Copy>(
    data: &[T],
    shape: &[usize],
    a: usize,
    positions: &[usize],
) -> (Vec<T>, Vec<usize>) {
    let mut out = shape.to_vec();
    out[a] = positions.len();
    let fill = if data.is_empty() { None } else { Some(data[0]) };
    let v = match fill {
        None => Vec::new(),
        Some(f) => naive_map(data, shape, &out, f, |o| {
            let mut i = o.to_vec();
            i[a] = positions[o[a]];
            Some(i)
        }),
    };
    (v, out)
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn shape_st(min_rank: usize, max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..=4, min_rank..=max_rank)
}

fn cfg() -> ProptestConfig {
    ProptestConfig::with_cases(48)
}

// ---------------------------------------------------------------------------------------------
// Views: reshape, flatten, squeeze, unsqueeze.

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn reshape_keeps_row_major_order(
        shape in shape_st(0, 5),
        cuts in prop::collection::vec(any::<bool>(), 5),
        infer in any::<bool>(),
        which in 0usize..8,
    ) {
        let (x, data) = iota(&shape);
        // Merge runs of adjacent extents (a different shape with the same element count).
        let mut merged: Vec<usize> = Vec::new();
        for (k, &d) in shape.iter().enumerate() {
            if k > 0 && cuts[k] {
                *merged.last_mut().unwrap() *= d;
            } else {
                merged.push(d);
            }
        }
        merged.reverse();
        if shape.is_empty() {
            merged = vec![1, 1];
        }
        let mut spec: Vec<isize> = merged.iter().map(|&d| d as isize).collect();
        let j = which % spec.len();
        let others: usize = merged.iter().enumerate().filter(|&(k, _)| k != j).map(|(_, &d)| d).product();
        if infer && others != 0 {
            spec[j] = -1;
        }
        let y = x.reshape(spec.as_slice());
        prop_assert_eq!(y.dims(), merged.as_slice());
        prop_assert_eq!(vals(&y), data.clone());
        let back = y.reshape(x.dims()).view([-1]);
        prop_assert_eq!(back.dims(), &[data.len()]);
        prop_assert_eq!(vals(&back), data);
    }

    #[test]
    fn flatten_merges_the_range(
        shape in shape_st(0, 5),
        s in 0usize..5, e in 0usize..5, neg_s in any::<bool>(), neg_e in any::<bool>(),
    ) {
        let (x, data) = iota(&shape);
        let r = shape.len().max(1);
        let (mut sa, mut ss) = pick_axis(s, neg_s, r);
        let (mut ea, mut es) = pick_axis(e, neg_e, r);
        if sa > ea {
            std::mem::swap(&mut sa, &mut ea);
            std::mem::swap(&mut ss, &mut es);
        }
        let y = x.flatten(ss, es);
        let expect: Vec<usize> = if shape.is_empty() {
            vec![1]
        } else {
            let mut v = shape[..sa].to_vec();
            v.push(shape[sa..=ea].iter().product());
            v.extend(&shape[ea + 1..]);
            v
        };
        prop_assert_eq!(y.dims(), expect.as_slice());
        prop_assert_eq!(vals(&y), data);
    }

    #[test]
    fn squeeze_and_unsqueeze(
        shape in prop::collection::vec(prop_oneof![Just(1usize), 0usize..=4], 0..=5),
        seed in 0usize..8, neg in any::<bool>(),
    ) {
        let (x, data) = iota(&shape);
        let r = shape.len();
        // unsqueeze at any of r + 1 positions
        let (ua, us) = pick_axis(seed, neg, r + 1);
        let u = x.unsqueeze(us);
        let mut expect = shape.clone();
        expect.insert(ua, 1);
        prop_assert_eq!(u.dims(), expect.as_slice());
        prop_assert_eq!(vals(&u), data.clone());
        // squeeze one axis (a no-op unless its extent is 1)
        let (sa, ss) = pick_axis(seed, neg, r.max(1));
        let s = x.squeeze(ss);
        let mut expect = shape.clone();
        if r > 0 && shape[sa] == 1 {
            expect.remove(sa);
        }
        prop_assert_eq!(s.dims(), expect.as_slice());
        prop_assert_eq!(vals(&s), data.clone());
        // squeeze every size-1 axis
        let all = x.squeeze_all();
        let expect: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
        prop_assert_eq!(all.dims(), expect.as_slice());
        prop_assert_eq!(vals(&all), data);
    }
}

// ---------------------------------------------------------------------------------------------
// Reorderings: permute, transpose, t, flip; broadcasting: expand.

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn permute_matches_naive(
        shape in shape_st(0, 5),
        keys in prop::collection::vec(any::<u32>(), 5),
        negs in prop::collection::vec(any::<bool>(), 5),
    ) {
        let (x, data) = iota(&shape);
        let r = shape.len();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.sort_by_key(|&k| keys[k]);
        let arg: Vec<isize> = perm
            .iter()
            .enumerate()
            .map(|(k, &p)| if negs[k] { p as isize - r as isize } else { p as isize })
            .collect();
        let y = x.permute(&arg);
        let (expect, out) = naive_permute(&data, &shape, &perm);
        prop_assert_eq!(y.dims(), out.as_slice());
        prop_assert_eq!(vals(&y), expect);
    }

    #[test]
    fn permute_i64_matches_naive(
        shape in shape_st(1, 4),
        keys in prop::collection::vec(any::<u32>(), 4),
    ) {
        prop_assume!(numel(&shape) > 0);
        let (x, data) = iota_i64(&shape, -50);
        let mut perm: Vec<usize> = (0..shape.len()).collect();
        perm.sort_by_key(|&k| keys[k]);
        let arg: Vec<isize> = perm.iter().map(|&p| p as isize).collect();
        let (expect, _) = naive_permute(&data, &shape, &perm);
        prop_assert_eq!(x.permute(&arg).to_vec::<i64>().unwrap(), expect);
    }

    #[test]
    fn transpose_and_t(
        shape in shape_st(1, 5),
        a in 0usize..5, b in 0usize..5, na in any::<bool>(), nb in any::<bool>(),
    ) {
        prop_assume!(numel(&shape) > 0);
        let (x, data) = iota(&shape);
        let r = shape.len();
        let (aa, asg) = pick_axis(a, na, r);
        let (ba, bsg) = pick_axis(b, nb, r);
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(aa, ba);
        let (expect, out) = naive_permute(&data, &shape, &perm);
        let y = x.transpose(asg, bsg);
        prop_assert_eq!(y.dims(), out.as_slice());
        prop_assert_eq!(vals(&y), expect);
        if r <= 2 {
            let perm: Vec<usize> = (0..r).rev().collect();
            let (expect, out) = naive_permute(&data, &shape, &perm);
            let t = x.t();
            prop_assert_eq!(t.dims(), out.as_slice());
            prop_assert_eq!(vals(&t), expect);
        }
    }

    #[test]
    fn flip_matches_naive(
        shape in shape_st(0, 5),
        mask in prop::collection::vec(any::<bool>(), 5),
        negs in prop::collection::vec(any::<bool>(), 5),
    ) {
        let (x, data) = iota(&shape);
        let r = shape.len();
        let axes: Vec<usize> = (0..r).filter(|&k| mask[k]).collect();
        let arg: Vec<isize> = axes
            .iter()
            .map(|&a| if negs[a] { a as isize - r as isize } else { a as isize })
            .collect();
        let y = x.flip(arg);
        prop_assert_eq!(y.dims(), shape.as_slice());
        let expect = naive_map(&data, &shape, &shape, 0.0, |o| {
            Some(
                o.iter()
                    .enumerate()
                    .map(|(k, &i)| if axes.contains(&k) { shape[k] - 1 - i } else { i })
                    .collect(),
            )
        });
        prop_assert_eq!(vals(&y), expect);
    }

    #[test]
    fn expand_matches_naive(
        base in prop::collection::vec(prop_oneof![Just(1usize), 0usize..=3], 0..=4),
        lead in prop::collection::vec(0usize..=3, 0..=2),
        picks in prop::collection::vec(0usize..5, 4),
        keep in prop::collection::vec(any::<bool>(), 4),
        use_broadcast_to in any::<bool>(),
    ) {
        let (x, data) = iota(&base);
        let mut spec: Vec<isize> = lead.iter().map(|&d| d as isize).collect();
        let mut out = lead.clone();
        for (k, &s) in base.iter().enumerate() {
            if keep[k] {
                spec.push(-1);
                out.push(s);
            } else if s == 1 {
                spec.push(picks[k] as isize - 1); // -1 ..= 3
                out.push(if picks[k] == 0 { 1 } else { picks[k] - 1 });
            } else {
                spec.push(s as isize);
                out.push(s);
            }
        }
        let y = if use_broadcast_to { x.broadcast_to(spec.as_slice()) } else { x.expand(spec.as_slice()) };
        prop_assert_eq!(y.dims(), out.as_slice());
        let off = out.len() - base.len();
        let expect = naive_map(&data, &base, &out, -1.0, |o| {
            Some((0..base.len()).map(|k| if base[k] == 1 { 0 } else { o[k + off] }).collect())
        });
        prop_assert_eq!(vals(&y), expect);
    }
}

// ---------------------------------------------------------------------------------------------
// Slicing: slice, narrow, split, split_sizes, chunk.

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn slice_matches_python(
        shape in shape_st(1, 5),
        seed in 0usize..5, neg in any::<bool>(),
        start in prop_oneof![-7isize..7, Just(isize::MIN), Just(isize::MAX)],
        end in prop_oneof![-7isize..7, Just(isize::MIN), Just(isize::MAX)],
        step in 1usize..5,
    ) {
        let (x, data) = iota(&shape);
        let (a, s) = pick_axis(seed, neg, shape.len());
        let y = x.slice(s, start, end, step);
        let positions = py_slice(shape[a], start, end, step);
        let (expect, out) = naive_take(&data, &shape, a, &positions);
        prop_assert_eq!(y.dims(), out.as_slice());
        prop_assert_eq!(vals(&y), expect);
    }

    #[test]
    fn narrow_matches_naive(
        shape in shape_st(1, 5),
        seed in 0usize..5, neg in any::<bool>(),
        start_seed in 0usize..16, len_seed in 0usize..16, neg_start in any::<bool>(),
    ) {
        let (x, data) = iota(&shape);
        let (a, s) = pick_axis(seed, neg, shape.len());
        let n = shape[a];
        let st = start_seed % (n + 1);
        let len = len_seed % (n - st + 1);
        // a negative start counts from the end: st - n names the same position
        let st_arg = if neg_start && st < n { st as isize - n as isize } else { st as isize };
        let y = x.narrow(s, st_arg, len);
        let positions: Vec<usize> = (st..st + len).collect();
        let (expect, out) = naive_take(&data, &shape, a, &positions);
        prop_assert_eq!(y.dims(), out.as_slice());
        prop_assert_eq!(vals(&y), expect);
    }

    #[test]
    fn split_and_chunk_match_naive(
        shape in shape_st(1, 4),
        seed in 0usize..4, neg in any::<bool>(),
        size in 1usize..6, chunks in 1usize..6,
        cuts in prop::collection::vec(0usize..5, 0..5),
    ) {
        let (x, data) = iota(&shape);
        let (a, s) = pick_axis(seed, neg, shape.len());
        let n = shape[a];
        let check = |pieces: Vec<Tensor>, sizes: Vec<usize>| -> Result<(), TestCaseError> {
            prop_assert_eq!(pieces.len(), sizes.len());
            let mut start = 0;
            for (p, &len) in pieces.iter().zip(&sizes) {
                let positions: Vec<usize> = (start..start + len).collect();
                let (expect, out) = naive_take(&data, &shape, a, &positions);
                prop_assert_eq!(p.dims(), out.as_slice());
                prop_assert_eq!(vals(p), expect);
                start += len;
            }
            Ok(())
        };
        // split: pieces of `size`, the last one shorter; an empty axis gives one empty piece.
        let mut sizes = Vec::new();
        let mut left = n;
        while left > 0 {
            sizes.push(left.min(size));
            left -= left.min(size);
        }
        if n == 0 {
            sizes.push(0);
        }
        check(x.split(size, s), sizes)?;
        // chunk: ceil(n / chunks) each, as torch; an empty axis gives `chunks` empty pieces.
        let per = n / chunks + usize::from(n % chunks != 0);
        let sizes: Vec<usize> = if n == 0 {
            vec![0; chunks]
        } else {
            let mut v = Vec::new();
            let mut s0 = 0;
            while s0 < n {
                v.push(per.min(n - s0));
                s0 += per;
            }
            v
        };
        check(x.chunk(chunks, s), sizes)?;
        // split_sizes: an arbitrary composition of n, zeros allowed.
        let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(n)).collect();
        points.push(0);
        points.push(n);
        points.sort();
        let sizes: Vec<usize> = points.windows(2).map(|w| w[1] - w[0]).collect();
        check(x.split_sizes(&sizes, s), sizes)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Joining: cat, stack.

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn cat_matches_naive(
        base in shape_st(1, 4),
        seed in 0usize..4, neg in any::<bool>(),
        extents in prop::collection::vec(0usize..=3, 1..=4),
        first_i64 in any::<bool>(),
        legacy_empty in any::<bool>(),
    ) {
        let (a, s) = pick_axis(seed, neg, base.len());
        let mut shapes = Vec::new();
        let mut datas = Vec::new();
        let mut tensors = Vec::new();
        for (p, &e) in extents.iter().enumerate() {
            let mut sh = base.clone();
            sh[a] = e;
            let n = numel(&sh);
            let base_val = 1000 * p as i64;
            if p == 0 && first_i64 {
                let (t, d) = iota_i64(&sh, base_val);
                datas.push(d.iter().map(|&v| v as f32).collect::<Vec<f32>>());
                tensors.push(t);
            } else {
                let d: Vec<f32> = (0..n).map(|v| (base_val + v as i64) as f32 + 0.5).collect();
                tensors.push(Tensor::from_vec(d.clone(), sh.clone()));
                datas.push(d);
            }
            shapes.push(sh);
        }
        let mut refs: Vec<&Tensor> = tensors.iter().collect();
        let skip = Tensor::from_vec(Vec::<f32>::new(), [0]);
        if legacy_empty {
            refs.insert(refs.len() / 2, &skip);
        }
        let y = Tensor::cat(&refs, s);
        let mut out = base.clone();
        out[a] = extents.iter().sum();
        prop_assert_eq!(y.dims(), out.as_slice());
        // i64 promotes to f32 next to any f32 piece (the skipped [0] piece counts, as in torch)
        let all_i64 = first_i64 && extents.len() == 1 && !legacy_empty;
        prop_assert_eq!(y.dtype(), if all_i64 { DType::I64 } else { DType::F32 });
        // Naive: walk the output; find the piece by the running offset along `a`.
        let expect: Vec<f64> = (0..numel(&out))
            .map(|lin| {
                let mut o = unravel(lin, &out);
                let mut p = 0;
                while o[a] >= extents[p] {
                    o[a] -= extents[p];
                    p += 1;
                }
                datas[p][ravel(&o, &shapes[p])] as f64
            })
            .collect();
        prop_assert_eq!(y.to_f64_vec().unwrap(), expect);
    }

    #[test]
    fn cat_i64_matches_naive(
        rows in prop::collection::vec(0usize..=3, 1..=3),
        cols in 0usize..=3,
    ) {
        let pieces: Vec<(Tensor, Vec<i64>)> = rows
            .iter()
            .enumerate()
            .map(|(p, &r)| iota_i64(&[r, cols], 100 * p as i64))
            .collect();
        let refs: Vec<&Tensor> = pieces.iter().map(|(t, _)| t).collect();
        let y = Tensor::cat(&refs, 0);
        prop_assert_eq!(y.dtype(), DType::I64);
        let expect: Vec<i64> = pieces.iter().flat_map(|(_, d)| d.clone()).collect();
        prop_assert_eq!(y.to_vec::<i64>().unwrap(), expect);
    }

    #[test]
    fn stack_matches_naive(
        shape in shape_st(0, 4),
        count in 1usize..4,
        seed in 0usize..5, neg in any::<bool>(),
    ) {
        let r = shape.len();
        let (a, s) = pick_axis(seed, neg, r + 1);
        let n = numel(&shape);
        let datas: Vec<Vec<f32>> = (0..count)
            .map(|p| (0..n).map(|v| (p * 1000 + v) as f32).collect())
            .collect();
        let tensors: Vec<Tensor> = datas.iter().map(|d| Tensor::from_vec(d.clone(), shape.clone())).collect();
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let y = Tensor::stack(&refs, s);
        let mut out = shape.clone();
        out.insert(a, count);
        prop_assert_eq!(y.dims(), out.as_slice());
        let expect: Vec<f32> = (0..numel(&out))
            .map(|lin| {
                let mut o = unravel(lin, &out);
                let p = o.remove(a);
                datas[p][ravel(&o, &shape)]
            })
            .collect();
        prop_assert_eq!(vals(&y), expect);
    }
}

// ---------------------------------------------------------------------------------------------
// Padding and repetition.

/// Padding of rows wide enough for the CPU backend's vector loop, where the masked read runs as
/// a vector load when a whole vector lies inside the input (and lane by lane at the edges):
/// pads narrower and wider than a vector, crops, every row tail, alone and fused into a
/// consumer (an element-wise op, a row sum), against a plain loop.
#[test]
fn wide_rows_pad_matches_naive() {
    for (k, (shape, pads)) in [
        (vec![2, 3, 9], vec![(1isize, 1isize), (1, 2)]),
        (vec![1, 2, 5, 30], vec![(1, 1), (1, 1)]),
        (vec![3, 17], vec![(5, 6), (0, 0)]),
        (vec![2, 4, 13], vec![(0, 3), (2, 0), (1, 1)]),
        (vec![4, 40], vec![(-3, 9), (1, -1)]),
        (vec![2, 8, 8], vec![(8, 8)]),
        (vec![3, 21], vec![(-2, -3)]),
    ]
    .into_iter()
    .enumerate()
    {
        let (x, data) = iota(&shape);
        let r = shape.len();
        let mut per_axis = vec![(0isize, 0isize); r];
        for (j, &p) in pads.iter().enumerate() {
            per_axis[r - 1 - j] = p;
        }
        let out: Vec<usize> = (0..r)
            .map(|a| (shape[a] as isize + per_axis[a].0 + per_axis[a].1) as usize)
            .collect();
        let expect = naive_map(&data, &shape, &out, -7.5, |o| {
            (0..r)
                .map(|a| {
                    let i = o[a] as isize - per_axis[a].0;
                    (0..shape[a] as isize).contains(&i).then_some(i as usize)
                })
                .collect()
        });
        let y = x.pad(&pads, -7.5);
        assert_eq!(y.dims(), out.as_slice(), "case {k}");
        assert_eq!(vals(&y), expect, "case {k}");
        let doubled: Vec<f32> = expect.iter().map(|v| v * 2.0 + 1.0).collect();
        assert_eq!(vals(&(x.pad(&pads, -7.5) * 2.0 + 1.0)), doubled, "case {k}");
        let row = out[r - 1];
        let sums: Vec<f32> = expect
            .chunks(row)
            .map(|c| c.iter().map(|&v| f64::from(v)).sum::<f64>() as f32)
            .collect();
        assert_eq!(vals(&x.pad(&pads, -7.5).sum(-1, false)), sums, "case {k}");
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn pad_matches_naive(
        shape in shape_st(0, 4),
        widths in prop::collection::vec((0usize..=2, 0usize..=2), 0..=4),
    ) {
        let (x, data) = iota(&shape);
        let r = shape.len();
        let pads: Vec<(usize, usize)> = widths.into_iter().take(r).collect();
        let y = x.pad(&pads, -7.5);
        // per axis (first axis first): (before, after)
        let mut per_axis = vec![(0, 0); r];
        for (j, &p) in pads.iter().enumerate() {
            per_axis[r - 1 - j] = p;
        }
        let out: Vec<usize> = (0..r).map(|k| shape[k] + per_axis[k].0 + per_axis[k].1).collect();
        prop_assert_eq!(y.dims(), out.as_slice());
        let expect = naive_map(&data, &shape, &out, -7.5, |o| {
            let mut i = Vec::with_capacity(r);
            for k in 0..r {
                let lo = per_axis[k].0;
                if o[k] < lo || o[k] - lo >= shape[k] {
                    return None;
                }
                i.push(o[k] - lo);
            }
            Some(i)
        });
        prop_assert_eq!(vals(&y), expect);
    }

    /// Negative widths crop (as `F.pad`): mixed with positive ones, per axis, against a plain
    /// loop. Output element o of an axis reads input o - before, or the fill when out of range.
    #[test]
    fn pad_with_negative_widths_matches_naive(
        shape in shape_st(1, 4),
        widths in prop::collection::vec((-3isize..=2, -3isize..=2), 1..=4),
    ) {
        let (x, data) = iota(&shape);
        let r = shape.len();
        let mut pads: Vec<(isize, isize)> = widths.into_iter().take(r).collect();
        // Keep the cases F.pad accepts: an axis's crops remove at most its extent.
        for (j, p) in pads.iter_mut().enumerate() {
            let extent = shape[r - 1 - j] as isize;
            if (-p.0).max(0) + (-p.1).max(0) > extent {
                *p = (p.0.max(0), p.1.max(0));
            }
        }
        let y = x.pad(&pads, -7.5);
        let mut per_axis = vec![(0isize, 0isize); r];
        for (j, &p) in pads.iter().enumerate() {
            per_axis[r - 1 - j] = p;
        }
        let out: Vec<usize> = (0..r)
            .map(|k| (shape[k] as isize + per_axis[k].0 + per_axis[k].1) as usize)
            .collect();
        prop_assert_eq!(y.dims(), out.as_slice());
        let expect = naive_map(&data, &shape, &out, -7.5, |o| {
            (0..r)
                .map(|k| {
                    let i = o[k] as isize - per_axis[k].0;
                    (0..shape[k] as isize).contains(&i).then_some(i as usize)
                })
                .collect()
        });
        prop_assert_eq!(vals(&y), expect);
    }

    #[test]
    fn pad_i64_uses_the_value(shape in shape_st(1, 3), lo in 0usize..3, hi in 0usize..3) {
        let (x, data) = iota_i64(&shape, 3);
        let y = x.pad(&[(lo, hi)], -2.0);
        let r = shape.len();
        let mut out = shape.clone();
        out[r - 1] += lo + hi;
        let expect = naive_map(&data, &shape, &out, -2i64, |o| {
            let last = o[r - 1];
            if last < lo || last - lo >= shape[r - 1] {
                return None;
            }
            let mut i = o.to_vec();
            i[r - 1] = last - lo;
            Some(i)
        });
        prop_assert_eq!(y.to_vec::<i64>().unwrap(), expect);
    }

    #[test]
    fn repeat_matches_naive(
        shape in shape_st(0, 4),
        reps in prop::collection::vec(0usize..=3, 0..=6),
    ) {
        let r = shape.len();
        let mut reps = reps;
        while reps.len() < r {
            reps.push(2);
        }
        reps.truncate(r + 2);
        let (x, data) = iota(&shape);
        let y = x.repeat(&reps);
        let off = reps.len() - r;
        let out: Vec<usize> = (0..reps.len())
            .map(|k| if k < off { reps[k] } else { reps[k] * shape[k - off] })
            .collect();
        prop_assert_eq!(y.dims(), out.as_slice());
        let expect = naive_map(&data, &shape, &out, 0.0, |o| {
            Some((0..r).map(|j| o[j + off] % shape[j]).collect())
        });
        prop_assert_eq!(vals(&y), expect);
    }
}

// ---------------------------------------------------------------------------------------------
// Indexing: gather, index_select, one_hot; triangles: tril, triu.

/// An integer index tensor of `dtype` holding `values` (u8 wraps negatives).
fn index_tensor(values: &[i64], shape: &[usize], dtype: u8) -> (Tensor, Vec<i64>) {
    match dtype % 3 {
        0 => (
            Tensor::from_vec(values.to_vec(), shape.to_vec()),
            values.to_vec(),
        ),
        1 => {
            let v: Vec<i32> = values.iter().map(|&v| v as i32).collect();
            (Tensor::from_vec(v, shape.to_vec()), values.to_vec())
        }
        _ => {
            let v: Vec<u8> = values.iter().map(|&v| v as u8).collect();
            let seen = v.iter().map(|&b| b as i64).collect();
            (Tensor::from_vec(v, shape.to_vec()), seen)
        }
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn gather_matches_naive(
        shape in shape_st(1, 4),
        seed in 0usize..4, neg in any::<bool>(),
        shrink in prop::collection::vec(0usize..=4, 4),
        along in 0usize..=4,
        raw in prop::collection::vec(-1i64..=5, 256),
        dtype in any::<u8>(),
        int_data in any::<bool>(),
    ) {
        let (a, s) = pick_axis(seed, neg, shape.len());
        let ishape: Vec<usize> = (0..shape.len())
            .map(|k| if k == a { along } else { shrink[k].min(shape[k]) })
            .collect();
        let (index, seen) = index_tensor(&raw[..numel(&ishape)], &ishape, dtype);
        let src = |o: &[usize]| -> Option<Vec<usize>> {
            let v = seen[ravel(o, &ishape)];
            if v < 0 || v as usize >= shape[a] {
                return None; // out of range reads 0 (documented)
            }
            let mut i = o.to_vec();
            i[a] = v as usize;
            Some(i)
        };
        if int_data {
            let (x, data) = iota_i64(&shape, 1);
            let y = x.gather(s, &index);
            prop_assert_eq!(y.dims(), ishape.as_slice());
            prop_assert_eq!(y.to_vec::<i64>().unwrap(), naive_map(&data, &shape, &ishape, 0, src));
        } else {
            let (x, data) = iota(&shape);
            let data: Vec<f32> = data.iter().map(|v| v + 1.0).collect();
            let x = x.add(1.0);
            let y = x.gather(s, &index);
            prop_assert_eq!(y.dims(), ishape.as_slice());
            prop_assert_eq!(vals(&y), naive_map(&data, &shape, &ishape, 0.0, src));
        }
    }

    #[test]
    fn index_select_matches_naive(
        shape in shape_st(1, 4),
        seed in 0usize..4, neg in any::<bool>(),
        raw in prop::collection::vec(-1i64..=5, 0..=6),
        dtype in any::<u8>(),
        scalar_index in any::<bool>(),
    ) {
        let (a, s) = pick_axis(seed, neg, shape.len());
        let (x, data) = iota(&shape);
        let data: Vec<f32> = data.iter().map(|v| v + 1.0).collect();
        let x = x.add(1.0);
        let (index, seen) = if scalar_index && !raw.is_empty() {
            index_tensor(&raw[..1], &[], dtype)
        } else {
            index_tensor(&raw, &[raw.len()], dtype)
        };
        let y = x.index_select(s, &index);
        let mut out = shape.clone();
        out[a] = seen.len();
        prop_assert_eq!(y.dims(), out.as_slice());
        let expect = naive_map(&data, &shape, &out, 0.0, |o| {
            let v = seen[o[a]];
            if v < 0 || v as usize >= shape[a] {
                return None;
            }
            let mut i = o.to_vec();
            i[a] = v as usize;
            Some(i)
        });
        prop_assert_eq!(vals(&y), expect);
    }

    #[test]
    fn one_hot_matches_naive(
        shape in shape_st(0, 3),
        classes in 0usize..=4,
        raw in prop::collection::vec(-1i64..=5, 64),
        use_i32 in any::<bool>(),
    ) {
        let n = numel(&shape);
        let values = &raw[..n];
        let x = if use_i32 {
            Tensor::from_vec(values.iter().map(|&v| v as i32).collect::<Vec<i32>>(), shape.clone())
        } else {
            Tensor::from_vec(values.to_vec(), shape.clone())
        };
        let y = x.one_hot(classes);
        let mut out = shape.clone();
        out.push(classes);
        prop_assert_eq!(y.dims(), out.as_slice());
        prop_assert_eq!(y.dtype(), DType::I64);
        let expect: Vec<i64> = (0..numel(&out))
            .map(|lin| {
                let o = unravel(lin, &out);
                let c = o[o.len() - 1] as i64;
                (values[ravel(&o[..o.len() - 1], &shape)] == c) as i64
            })
            .collect();
        prop_assert_eq!(y.to_vec::<i64>().unwrap(), expect);
    }

    #[test]
    fn tril_triu_match_naive(shape in shape_st(2, 4), k in -5i64..=5, int_data in any::<bool>()) {
        let r = shape.len();
        let keep_lower = |o: &[usize]| (o[r - 1] as i64 - o[r - 2] as i64) <= k;
        let keep_upper = |o: &[usize]| (o[r - 1] as i64 - o[r - 2] as i64) >= k;
        if int_data {
            let (x, data) = iota_i64(&shape, 1);
            let lo = naive_map(&data, &shape, &shape, 0, |o| keep_lower(o).then(|| o.to_vec()));
            let up = naive_map(&data, &shape, &shape, 0, |o| keep_upper(o).then(|| o.to_vec()));
            prop_assert_eq!(x.tril(k).to_vec::<i64>().unwrap(), lo);
            prop_assert_eq!(x.triu(k).to_vec::<i64>().unwrap(), up);
        } else {
            let (x, data) = iota(&shape);
            let data: Vec<f32> = data.iter().map(|v| v + 1.0).collect();
            let x = x.add(1.0);
            let lo = naive_map(&data, &shape, &shape, 0.0, |o| keep_lower(o).then(|| o.to_vec()));
            let up = naive_map(&data, &shape, &shape, 0.0, |o| keep_upper(o).then(|| o.to_vec()));
            let (tl, tu) = (x.tril(k), x.triu(k));
            prop_assert_eq!(tl.dims(), shape.as_slice());
            prop_assert_eq!(tu.dims(), shape.as_slice());
            prop_assert_eq!(vals(&tl), lo);
            prop_assert_eq!(vals(&tu), up);
        }
    }

    #[test]
    fn contiguous_is_the_identity(shape in shape_st(0, 4), keys in prop::collection::vec(any::<u32>(), 4)) {
        let (x, data) = iota(&shape);
        let mut perm: Vec<usize> = (0..shape.len()).collect();
        perm.sort_by_key(|&k| keys[k]);
        let arg: Vec<isize> = perm.iter().map(|&p| p as isize).collect();
        let y = x.permute(&arg).contiguous();
        let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        prop_assert_eq!(y.dims(), out.as_slice());
        prop_assert_eq!(vals(&y), naive_permute(&data, &shape, &perm).0);
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed cases: corners the properties do not pin down.

#[test]
fn cat_keeps_negative_zero_and_nan() {
    let a = Tensor::from_vec(vec![-0.0f32, f32::NAN], [2]);
    let b = Tensor::from_vec(vec![-0.0f32], [1]);
    let y = Tensor::cat(&[&a, &b], 0).to_vec::<f32>().unwrap();
    assert!(y[0] == 0.0 && y[0].is_sign_negative());
    assert!(y[1].is_nan());
    assert!(y[2] == 0.0 && y[2].is_sign_negative());
}

#[test]
fn cat_promotes_bool_and_int() {
    let a = Tensor::from_vec(vec![true, false], [2]);
    let b = Tensor::from_vec(vec![7i32], [1]);
    let y = Tensor::cat(&[&a, &b], -1);
    assert_eq!(y.dtype(), DType::I32);
    assert_eq!(y.to_vec::<i32>().unwrap(), vec![1, 0, 7]);
}

#[test]
fn views_of_scalars() {
    let s = Tensor::scalar(3.0f32);
    assert_eq!(s.flatten(0, -1).dims(), &[1]);
    assert_eq!(s.squeeze(0).dims(), &[] as &[usize]);
    assert_eq!(s.unsqueeze(0).dims(), &[1]);
    assert_eq!(s.reshape([1, 1]).dims(), &[1, 1]);
    assert_eq!(s.expand([2, 3]).to_vec::<f32>().unwrap(), vec![3.0; 6]);
    assert_eq!(s.transpose(0, -1).dims(), &[] as &[usize]);
    assert_eq!(s.t().item::<f32>().unwrap(), 3.0);
    let g = s.gather(0, &Tensor::scalar(0i64));
    assert_eq!(g.item::<f32>().unwrap(), 3.0);
}

#[test]
fn pad_value_casts_to_bool_and_int() {
    let x = Tensor::from_vec(vec![false], [1]);
    assert_eq!(
        x.pad(&[(1, 0)], 1.0).to_vec::<bool>().unwrap(),
        vec![true, false]
    );
    let x = Tensor::from_vec(vec![5u8], [1]);
    assert_eq!(x.pad(&[(0, 1)], 2.9).to_vec::<u8>().unwrap(), vec![5, 2]);
}

#[test]
fn shape_ops_compose() {
    // A conv-style transform: pad, slice with a stride, permute, flatten.
    let (x, _) = iota(&[2, 3, 4]);
    let y = x
        .pad(&[(1, 1)], 0.0)
        .slice(-1, 0, isize::MAX, 2)
        .permute(&[2, 0, 1])
        .flatten(1, 2);
    assert_eq!(y.dims(), &[3, 6]);
    assert_eq!(
        vals(&y),
        vec![
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, //
            1.0, 5.0, 9.0, 13.0, 17.0, 21.0, //
            3.0, 7.0, 11.0, 15.0, 19.0, 23.0,
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Misuse panics at the caller's line, naming the op, the shapes and the rule.

#[test]
#[should_panic(
    expected = "bad shape in reshape: cannot view [2, 3] (6 elements) as [4] (4 elements)"
)]
fn reshape_count_mismatch() {
    Tensor::zeros([2, 3]).reshape([4]);
}

#[test]
#[should_panic(expected = "bad shape in reshape: only one extent may be -1, got [-1, -1]")]
fn reshape_two_inferred() {
    Tensor::zeros([2, 3]).reshape([-1, -1]);
}

#[test]
#[should_panic(
    expected = "bad shape in reshape: cannot view [2, 3] (6 elements) as [4, -1]: 6 is not a multiple of 4"
)]
fn reshape_infer_not_divisible() {
    Tensor::zeros([2, 3]).reshape([4, -1]);
}

#[test]
#[should_panic(expected = "bad shape in reshape: cannot infer the -1 in [0, -1]")]
fn reshape_infer_ambiguous() {
    Tensor::zeros([0, 3]).reshape([0, -1]);
}

#[test]
#[should_panic(expected = "bad axis in permute: axis 0 appears twice in [0, -2]")]
fn permute_repeated_axis() {
    Tensor::zeros([2, 3]).permute(&[0, -2]);
}

#[test]
#[should_panic(expected = "bad axis in permute: 1 axes [0] given for shape [2, 3] (rank 2)")]
fn permute_wrong_length() {
    Tensor::zeros([2, 3]).permute(&[0]);
}

#[test]
#[should_panic(expected = "bad axis in unsqueeze: axis 3 is out of range for shape [2, 3]")]
fn unsqueeze_axis_out_of_range() {
    Tensor::zeros([2, 3]).unsqueeze(3);
}

#[test]
#[should_panic(
    expected = "bad axis in flatten: start_dim 2 (axis 2) comes after end_dim -2 (axis 1)"
)]
fn flatten_reversed_range() {
    Tensor::zeros([2, 3, 4]).flatten(2, -2);
}

#[test]
#[should_panic(expected = "bad shape in t: expects a tensor of rank <= 2, got shape [2, 3, 4]")]
fn t_of_rank_3() {
    Tensor::zeros([2, 3, 4]).t();
}

#[test]
#[should_panic(
    expected = "shape mismatch in expand: cannot expand [3, 1] to [4, 4]: axis 0 has extent 3, which is neither 4 nor 1"
)]
fn expand_non_unit_axis() {
    Tensor::zeros([3, 1]).expand([4, 4]);
}

#[test]
#[should_panic(
    expected = "shape mismatch in expand: cannot expand [3] to [-1, 3]: new leading axis 0 has extent -1"
)]
fn expand_new_axis_minus_one() {
    Tensor::zeros([3]).expand([-1, 3]);
}

#[test]
#[should_panic(expected = "bad slice in slice: step 0 along axis 1 of shape [2, 3]")]
fn slice_step_zero() {
    Tensor::zeros([2, 3]).slice(-1, 0, 2, 0);
}

#[test]
#[should_panic(expected = "bad axis in slice: axis 2 is out of range for shape [2, 3]")]
fn slice_bad_axis() {
    Tensor::zeros([2, 3]).slice(2, 0, 1, 1);
}

#[test]
#[should_panic(
    expected = "bad slice in narrow: start 2 + length 2 exceeds extent 3 of axis 1 (shape [2, 3])"
)]
fn narrow_past_the_end() {
    Tensor::zeros([2, 3]).narrow(1, 2, 2);
}

#[test]
#[should_panic(
    expected = "bad slice in narrow: start -4 is out of range for axis 1 of shape [2, 3]"
)]
fn narrow_start_out_of_range() {
    Tensor::zeros([2, 3]).narrow(1, -4, 0);
}

#[test]
#[should_panic(expected = "bad arguments in split: split_size 0 for axis 0 of shape [2, 3]")]
fn split_size_zero() {
    Tensor::zeros([2, 3]).split(0, 0);
}

#[test]
#[should_panic(
    expected = "bad arguments in split_sizes: sizes [1, 1] sum to 2, but axis 1 of shape [2, 3] has extent 3"
)]
fn split_sizes_wrong_sum() {
    Tensor::zeros([2, 3]).split_sizes(&[1, 1], 1);
}

#[test]
#[should_panic(expected = "bad arguments in chunk: chunks must be at least 1")]
fn chunk_zero() {
    Tensor::zeros([2, 3]).chunk(0, 0);
}

#[test]
#[should_panic(
    expected = "shape mismatch in cat: tensor 1 has shape [2, 4], expected [3, *] with axis 1 free"
)]
fn cat_shape_mismatch() {
    Tensor::cat(&[&Tensor::zeros([3, 2]), &Tensor::zeros([2, 4])], 1);
}

#[test]
#[should_panic(expected = "shape mismatch in cat: tensor 1 has shape [6], expected [2, *]")]
fn cat_rank_mismatch() {
    Tensor::cat(&[&Tensor::zeros([2, 3]), &Tensor::zeros([6])], -1);
}

#[test]
#[should_panic(expected = "bad arguments in cat: needs at least one tensor")]
fn cat_nothing() {
    Tensor::cat(&[], 0);
}

#[test]
#[should_panic(expected = "bad shape in cat: tensor 0 is zero-dimensional")]
fn cat_scalars() {
    Tensor::cat(&[&Tensor::scalar(1.0f32), &Tensor::scalar(2.0f32)], 0);
}

#[test]
#[should_panic(expected = "shape mismatch in stack: tensor 1 has shape [3, 2], expected [2, 3]")]
fn stack_shape_mismatch() {
    Tensor::stack(&[&Tensor::zeros([2, 3]), &Tensor::zeros([3, 2])], 0);
}

#[test]
#[should_panic(
    expected = "bad arguments in pad: 3 (before, after) pairs for shape [2, 3] (rank 2)"
)]
fn pad_too_many_pairs() {
    Tensor::zeros([2, 3]).pad(&[(1, 1), (1, 1), (1, 1)], 0.0);
}

#[test]
fn pad_crops_with_negative_widths() {
    let x = Tensor::from_vec((0..12).map(|v| v as f32).collect(), [3, 4]);
    // Last axis: drop 1 at the front, add 2 at the back; first axis: add 1, drop 2.
    let y = x.pad(&[(-1, 2), (1, -2)], 9.0);
    assert_eq!(y.dims(), &[2, 5]);
    assert_eq!(vals(&y), [9.0, 9.0, 9.0, 9.0, 9.0, 1.0, 2.0, 3.0, 9.0, 9.0]);
    // Cropping the whole axis leaves an empty one.
    assert_eq!(x.pad(&[(-2, -2)], 0.0).dims(), &[3, 0]);
    // i32 widths work too, and (0, 0) is the identity.
    assert_eq!(vals(&x.pad(&[(0i32, 0)], 0.0)), vals(&x));
}

#[test]
#[should_panic(
    expected = "bad arguments in pad: widths (-3, -2) for axis 1 of shape [3, 4] crop 5 element(s), but the axis has 4"
)]
fn pad_cropping_more_than_the_extent() {
    Tensor::zeros([3, 4]).pad(&[(-3, -2)], 0.0);
}

#[test]
#[should_panic(
    expected = "bad arguments in pad: widths (5, -4) for axis 0 of shape [3, 4] crop 4 element(s), but the axis has 3"
)]
fn pad_cropping_more_than_the_extent_even_when_padding_the_other_side() {
    // PyTorch refuses this too: the crop applies to the input, before the padding.
    Tensor::zeros([3, 4]).pad(&[(0, 0), (5, -4)], 0.0);
}

#[test]
#[should_panic(expected = "bad axis in flip: axis 1 appears twice")]
fn flip_repeated_axis() {
    Tensor::zeros([2, 3]).flip([1, -1]);
}

#[test]
#[should_panic(
    expected = "bad arguments in repeat: 1 repeat count(s) [2] for shape [2, 3] (rank 2)"
)]
fn repeat_too_few_counts() {
    Tensor::zeros([2, 3]).repeat(&[2]);
}

#[test]
#[should_panic(expected = "dtype mismatch in gather: index must be an integer tensor, got f32")]
fn gather_float_index() {
    Tensor::zeros([2, 3]).gather(1, &Tensor::zeros([2, 3]));
}

#[test]
#[should_panic(expected = "shape mismatch in gather: index has shape [2], input [2, 3]")]
fn gather_rank_mismatch() {
    Tensor::zeros([2, 3]).gather(1, &Tensor::from_slice(&[0i64, 1]));
}

#[test]
#[should_panic(
    expected = "shape mismatch in gather: index [3, 1] is larger than input [2, 3] at axis 0"
)]
fn gather_index_too_large() {
    Tensor::zeros([2, 3]).gather(1, &Tensor::from_vec(vec![0i64; 3], [3, 1]));
}

#[test]
#[should_panic(expected = "bad shape in index_select: index must have rank 1, got shape [1, 2]")]
fn index_select_matrix_index() {
    Tensor::zeros([2, 3]).index_select(0, &Tensor::from_vec(vec![0i64, 1], [1, 2]));
}

#[test]
#[should_panic(
    expected = "dtype mismatch in index_select: index must be an integer tensor, got bool"
)]
fn index_select_bool_index() {
    Tensor::zeros([2, 3]).index_select(0, &Tensor::from_slice(&[true]));
}

#[test]
#[should_panic(
    expected = "bad shape in tril: needs at least 2 axes (a matrix or a batch of them), got shape [3]"
)]
fn tril_of_a_vector() {
    Tensor::zeros([3]).tril(0);
}

#[test]
#[should_panic(expected = "dtype mismatch in one_hot: input must be an integer tensor, got f32")]
fn one_hot_of_floats() {
    Tensor::zeros([3]).one_hot(4);
}

// ---------------------------------------------------------------------------------------------
// Slices at many offsets: one structure, so after the first offset every realization reuses a
// plan built for another offset (the offset is a runtime parameter), fused with element-wise
// math, on vector-sized rows with scalar tails.

/// `x[.., start + k*step, ..]` along `axis` of a row-major `[rows, cols]` buffer, times 2 plus 1.
fn naive_slice_2d(
    data: &[f32],
    (rows, cols): (usize, usize),
    axis: usize,
    start: usize,
    len: usize,
    step: usize,
) -> Vec<f32> {
    let mut out = Vec::new();
    let (r_out, c_out) = if axis == 0 { (len, cols) } else { (rows, len) };
    for r in 0..r_out {
        for c in 0..c_out {
            let (sr, sc) = if axis == 0 {
                (start + r * step, c)
            } else {
                (r, start + c * step)
            };
            out.push(data[sr * cols + sc] * 2.0 + 1.0);
        }
    }
    out
}

#[test]
fn narrow_and_slice_at_every_offset_match_plain_rust() {
    let (rows, cols) = (13usize, 37usize);
    let (x, data) = iota(&[rows, cols]);
    for axis in 0..2 {
        let n = [rows, cols][axis];
        for len in [1, 5, n - 1, n] {
            for start in 0..=n - len {
                let y = x.narrow(axis as isize, start as isize, len) * 2.0 + 1.0;
                let want = naive_slice_2d(&data, (rows, cols), axis, start, len, 1);
                assert_eq!(vals(&y), want, "narrow axis {axis} start {start} len {len}");
                // The same through a negative start.
                let neg = start as isize - n as isize;
                if start < n {
                    let y = x.narrow(axis as isize - 2, neg, len) * 2.0 + 1.0;
                    assert_eq!(vals(&y), want, "narrow axis {axis} start {neg} len {len}");
                }
            }
        }
        for step in [2, 3] {
            for start in 0..n {
                let y = x.slice(axis as isize, start as isize, isize::MAX, step) * 2.0 + 1.0;
                let len = (n - start).div_ceil(step);
                let want = naive_slice_2d(&data, (rows, cols), axis, start, len, step);
                assert_eq!(vals(&y), want, "slice axis {axis} {start}::{step}");
            }
        }
    }
}
