//! Finite-difference gradient checks in f64 for every differentiable op of the Tensor API.
//!
//! Each check marks its f64 inputs as leaves, computes `L = sum(f(inputs) * w)` with fixed
//! random weights `w` (so every output element matters, with a different weight), takes the
//! analytic gradient with `autograd::grad`, and compares every element with the central
//! difference `(L(x + h) - L(x - h)) / 2h`, `h = 1e-6`. The tolerance is
//! `|analytic - numeric| <= 1e-6 + 1e-5·|numeric|`: the difference's truncation error is
//! `O(h²)` ≈ 1e-12 and its rounding error about `ε·|L|/h` ≈ 1e-10·|L|, far inside it, while a
//! wrong rule is off by O(1). Inputs stay away from kinks (|x| ≥ 0.1 from 0 or ties) unless a
//! test says otherwise. `backward()` must give the same gradients as `autograd::grad`.

mod common;

use metajit::{DType, Tensor, autograd, no_grad};

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
    /// Away from 0: sign random, magnitude in [0.1, hi).
    fn away(&mut self, hi: f64) -> f64 {
        let m = self.uniform(0.1, hi);
        if self.next() & 1 == 0 { m } else { -m }
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn vec(&mut self, n: usize, f: impl Fn(&mut Rng) -> f64) -> Vec<f64> {
        (0..n).map(|_| f(self)).collect()
    }
}

/// An f64 input: its values and shape.
#[derive(Clone)]
struct In(Vec<f64>, Vec<usize>);

impl In {
    fn tensor(&self) -> Tensor {
        Tensor::from_vec(self.0.clone(), self.1.clone())
    }
}

fn rand_in(rng: &mut Rng, shape: &[usize], f: impl Fn(&mut Rng) -> f64) -> In {
    let n = shape.iter().product();
    In(rng.vec(n, f), shape.to_vec())
}

/// L = sum(y * w) for weights fixed by the output's shape.
fn weighted(y: &Tensor) -> Tensor {
    let mut rng = Rng(0x5eed ^ y.numel() as u64);
    let w = rng.vec(y.numel(), |r| r.away(1.5));
    let w = Tensor::from_vec(w, y.dims().to_vec());
    (y.cast(DType::F64) * &w).sum_all()
}

/// Checks the gradient of `f` at `inputs` against central differences.
#[track_caller]
fn check(name: &str, inputs: &[In], f: impl Fn(&[Tensor]) -> Tensor) {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|i| i.tensor().requires_grad_(true))
        .collect();
    let loss = weighted(&f(&leaves));
    let refs: Vec<&Tensor> = leaves.iter().collect();
    let analytic: Vec<Vec<f64>> = autograd::grad(&[&loss], &refs, None)
        .iter()
        .map(|g| g.to_vec::<f64>().unwrap())
        .collect();
    // backward() accumulates the same values into .grad (none for an input the loss does not
    // depend on differentiably, where autograd::grad gives zeros).
    loss.backward();
    for (k, l) in leaves.iter().enumerate() {
        let g = match l.grad() {
            Some(g) => g.to_vec::<f64>().unwrap(),
            None => vec![0.0; analytic[k].len()],
        };
        assert_eq!(g.len(), analytic[k].len());
        for (a, b) in g.iter().zip(&analytic[k]) {
            assert!(
                a == b || (a.is_nan() && b.is_nan()),
                "{name}: backward and autograd::grad differ for input {k}: {a} vs {b}"
            );
        }
    }
    let h = 1e-6;
    let eval = |k: usize, j: usize, d: f64| -> f64 {
        no_grad(|| {
            let xs: Vec<Tensor> = inputs
                .iter()
                .enumerate()
                .map(|(q, i)| {
                    let mut v = i.0.clone();
                    if q == k {
                        v[j] += d;
                    }
                    Tensor::from_vec(v, i.1.clone())
                })
                .collect();
            weighted(&f(&xs)).item::<f64>().unwrap()
        })
    };
    for (k, inp) in inputs.iter().enumerate() {
        assert_eq!(
            analytic[k].len(),
            inp.0.len(),
            "{name}: gradient {k} length"
        );
        for (j, &a) in analytic[k].iter().enumerate() {
            let numeric = (eval(k, j, h) - eval(k, j, -h)) / (2.0 * h);
            assert!(
                (a - numeric).abs() <= 1e-6 + 1e-5 * numeric.abs(),
                "{name}: d/d input {k}[{j}] (shape {:?}, value {}): analytic {a}, numeric {numeric}",
                inp.1,
                inp.0[j]
            );
        }
    }
}

fn one(
    name: &str,
    shape: &[usize],
    values: impl Fn(&mut Rng) -> f64,
    f: impl Fn(&Tensor) -> Tensor,
) {
    let mut rng = Rng(name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
    let x = rand_in(&mut rng, shape, values);
    check(name, &[x], |t| f(&t[0]));
}

#[test]
fn unary_math() {
    let any = |r: &mut Rng| r.away(2.0);
    let pos = |r: &mut Rng| r.uniform(0.2, 3.0);
    let s = [2, 3];
    one("neg", &s, any, |x| -x);
    one("abs", &s, any, |x| x.abs());
    one("recip", &s, any, |x| x.recip());
    one("sqrt", &s, pos, |x| x.sqrt());
    one("rsqrt", &s, pos, |x| x.rsqrt());
    one("exp", &s, any, |x| x.exp());
    one("log", &s, pos, |x| x.log());
    one("sin", &s, any, |x| x.sin());
    one("cos", &s, any, |x| x.cos());
    one("tanh", &s, any, |x| x.tanh());
    one("sigmoid", &s, any, |x| x.sigmoid());
    one("erf", &s, any, |x| x.erf());
    one("square", &s, any, |x| x.square());
    one("log1p", &s, |r| r.uniform(-0.9, 3.0), |x| x.log1p());
    one(
        "log1p tiny",
        &[4],
        |r| r.uniform(-1e-3, 1e-3),
        |x| x.log1p(),
    );
    one("expm1", &s, any, |x| x.expm1());
    one(
        "expm1 tiny",
        &[4],
        |r| r.uniform(-1e-3, 1e-3),
        |x| x.expm1(),
    );
    // floor/ceil/round are flat away from their steps.
    one(
        "floor",
        &s,
        |r| r.uniform(0.1, 0.9) + r.below(4) as f64,
        |x| x.floor(),
    );
    one(
        "round",
        &s,
        |r| r.uniform(0.1, 0.4) + r.below(4) as f64,
        |x| x.round(),
    );
}

#[test]
fn activations() {
    let any = |r: &mut Rng| r.away(3.0);
    let s = [3, 4];
    one("relu", &s, any, |x| x.relu());
    one("leaky_relu", &s, any, |x| x.leaky_relu(0.1));
    one("gelu", &s, any, |x| x.gelu());
    one("gelu_tanh", &s, any, |x| x.gelu_tanh());
    one("gelu_tanh (wide)", &s, |r| r.away(4.0), |x| x.gelu_tanh());
    one("silu", &s, any, |x| x.silu());
    one("softplus", &s, any, |x| x.softplus());
    one(
        "softplus wide",
        &[5],
        |r| r.uniform(-40.0, 40.0),
        |x| x.softplus(),
    );
    one("clamp", &s, any, |x| x.clamp(-1.0, 1.5));
    one("clamp_min", &s, any, |x| x.clamp_min(0.5));
    one("clamp_max", &s, any, |x| x.clamp_max(-0.5));
    one("sign", &s, any, |x| x.sign() * x);
}

#[test]
fn binary_with_broadcasting() {
    let mut rng = Rng(11);
    let any = |r: &mut Rng| r.away(2.0);
    let pos = |r: &mut Rng| r.uniform(0.3, 2.0);
    let a = rand_in(&mut rng, &[2, 3, 4], any);
    let b = rand_in(&mut rng, &[3, 1], any);
    check("add", &[a.clone(), b.clone()], |t| &t[0] + &t[1]);
    check("sub", &[a.clone(), b.clone()], |t| &t[0] - &t[1]);
    check("mul", &[a.clone(), b.clone()], |t| &t[0] * &t[1]);
    check("div", &[a.clone(), b.clone()], |t| &t[0] / &t[1]);
    check("maximum", &[a.clone(), b.clone()], |t| t[0].maximum(&t[1]));
    check("minimum", &[a.clone(), b.clone()], |t| t[0].minimum(&t[1]));
    check("remainder", &[a.clone(), b.clone()], |t| {
        t[0].remainder(&t[1])
    });
    let p = rand_in(&mut rng, &[2, 3], pos);
    let e = rand_in(&mut rng, &[3], any);
    check("pow", &[p.clone(), e], |t| t[0].pow(&t[1]));
    check("pow scalar", std::slice::from_ref(&p), |t| t[0].pow(2.5));
    check("scalar ops", std::slice::from_ref(&a), |t| {
        (&t[0] * 3.0 - 1.0) / 2.0 + 1.0 / &t[0]
    });
    // A tensor used twice: the contributions add.
    check("used twice", std::slice::from_ref(&a), |t| {
        &t[0] * &t[0] + t[0].exp()
    });
    let c = rand_in(&mut rng, &[2, 3, 4], any);
    check("where", &[a.clone(), b.clone(), c], |t| {
        Tensor::where_(&t[2].gt(0.0), &t[0], &t[1])
    });
    check("where scalar branch", &[a], |t| {
        Tensor::where_(&t[0].gt(0.0), &t[0], 0.5)
    });
}

#[test]
fn casts_between_float_types() {
    // f64 -> f32 -> f64: the gradient is cast back at each step. (Central differences cannot
    // see through f32 rounding, so the values are checked exactly instead.)
    let x = Tensor::from_vec(vec![1.25f64, -0.5, 3.0], [3]).requires_grad_(true);
    let y = x
        .cast(DType::F32)
        .mul(3.0)
        .cast(DType::F64)
        .mul(&x.cast(DType::F32).cast(DType::F64));
    let g = autograd::grad(&[&y.sum_all()], &[&x], None);
    assert_eq!(g[0].dtype(), DType::F64);
    // d/dx (3x · x) = 6x.
    assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![7.5, -3.0, 18.0]);
    // f32 leaf through f64 math: the gradient comes back as f32.
    let w = Tensor::from_vec(vec![2.0f32], [1]).requires_grad_(true);
    w.cast(DType::F64).exp().sum_all().backward();
    let gw = w.grad().unwrap();
    assert_eq!(gw.dtype(), DType::F32);
    assert_eq!(gw.to_vec::<f32>().unwrap(), vec![(2.0f64).exp() as f32]);
}

#[test]
fn reductions() {
    let any = |r: &mut Rng| r.away(2.0);
    for (shape, dims, keep) in [
        (vec![3, 4], vec![1], false),
        (vec![3, 4], vec![0], true),
        (vec![2, 3, 4], vec![0, 2], false),
        (vec![2, 3, 4], vec![0, 1, 2], true),
    ] {
        let d = dims.clone();
        one("sum", &shape, any, |x| x.sum(d.clone(), keep));
        one("mean", &shape, any, |x| x.mean(d.clone(), keep));
        one("prod", &shape, any, |x| x.prod(d.clone(), keep));
        one("var", &shape, any, |x| x.var(d.clone(), keep));
        one("std", &shape, any, |x| x.std(d.clone(), keep));
        one("std_correction(0)", &shape, any, |x| {
            x.std_correction(d.clone(), 0, keep)
        });
        one("std_correction(2)", &shape, any, |x| {
            x.std_correction(d.clone(), 2, keep)
        });
        one("logsumexp", &shape, any, |x| x.logsumexp(d.clone(), keep));
        // Distinct values (no ties) for max/min.
        let distinct = |r: &mut Rng| r.uniform(-3.0, 3.0);
        one("max", &shape, distinct, |x| x.max(d.clone(), keep));
        one("min", &shape, distinct, |x| x.min(d.clone(), keep));
    }
    let distinct = |r: &mut Rng| r.uniform(-3.0, 3.0);
    one("max_dim values", &[3, 5], distinct, |x| {
        x.max_dim(1, false).0
    });
    one("min_dim values", &[3, 5], distinct, |x| {
        x.min_dim(0, true).0
    });
    one("sum_all", &[2, 5], any, |x| x.sum_all());
    one("mean_all", &[2, 5], any, |x| x.mean_all());
    one("max_all", &[2, 5], distinct, |x| x.max_all());
}

#[test]
fn shape_ops() {
    let any = |r: &mut Rng| r.away(2.0);
    let s = [2, 3, 4];
    one("reshape", &s, any, |x| x.reshape([4, 6]).exp());
    one("flatten", &s, any, |x| x.flatten(1, 2) * 2.0);
    one("permute", &s, any, |x| x.permute(&[2, 0, 1]).sin());
    one("transpose", &s, any, |x| x.transpose(0, 2).contiguous());
    one("unsqueeze/squeeze", &s, any, |x| {
        x.unsqueeze(1).squeeze(1).square()
    });
    one("expand", &[3, 1], any, |x| x.expand([2, 3, 4]).tanh());
    one("slice step", &[7, 3], any, |x| x.slice(0, 1, 7, 2));
    one("slice negative", &[7, 3], any, |x| x.slice(1, -2, 3, 1));
    one("narrow", &[6, 2], any, |x| x.narrow(0, 2, 3));
    one("pad", &[2, 3], any, |x| x.pad(&[(1, 2), (0, 1)], 0.5).exp());
    one("pad (negative widths crop)", &[4, 5], any, |x| {
        x.pad(&[(-1, 2), (1, -2)], 0.5).exp()
    });
    one("pad (crop both sides)", &[4, 5], any, |x| {
        x.pad(&[(-2, -1), (-1, -1)], 0.0).sin()
    });
    one("flip", &s, any, |x| x.flip([0, 2]).sin());
    one("repeat", &[2, 3], any, |x| x.repeat(&[2, 1, 2]).sin());
    one("tril", &[3, 4], any, |x| x.tril(0));
    one("triu", &[2, 3, 4], any, |x| x.triu(1));
    one("split", &[5, 2], any, |x| {
        let p = x.split(2, 0);
        &p[0].sum_all() * &p[2].sum_all() + p[1].exp().sum_all()
    });
    one("chunk", &[6, 2], any, |x| {
        let p = x.chunk(3, 0);
        &p[0] * &p[2]
    });
    let idx = Tensor::from_vec(vec![2i64, 0, 0, 1, 2, 2], [3, 2]);
    one("gather (collisions)", &[3, 3], any, move |x| {
        x.gather(1, &idx)
    });
    let sel = Tensor::from_slice(&[1i64, 1, 0, 3]);
    one("index_select (repeats)", &[4, 3], any, move |x| {
        x.index_select(0, &sel)
    });
    let mut rng = Rng(5);
    let a = rand_in(&mut rng, &[2, 3], any);
    let b = rand_in(&mut rng, &[4, 3], any);
    check("cat", &[a.clone(), b], |t| {
        Tensor::cat(&[&t[0], &t[1]], 0).exp()
    });
    let c = rand_in(&mut rng, &[2, 3], any);
    check("stack", &[a, c], |t| {
        Tensor::stack(&[&t[0], &t[1]], 1).sin()
    });
}

#[test]
fn non_contiguous_inputs() {
    let any = |r: &mut Rng| r.away(2.0);
    let mut rng = Rng(21);
    let a = rand_in(&mut rng, &[4, 3], any);
    let b = rand_in(&mut rng, &[4, 5], any);
    check("transposed operand", &[a.clone(), b.clone()], |t| {
        t[0].t().matmul(&t[1])
    });
    check("sliced operand", &[a.clone(), b.clone()], |t| {
        t[0].slice(0, 0, 4, 2).t().matmul(&t[1].slice(0, 1, 4, 2))
    });
    check("expanded operand", std::slice::from_ref(&a), |t| {
        t[0].expand([2, 4, 3]).sum(0, false) * &t[0]
    });
}

#[test]
fn matmul() {
    let any = |r: &mut Rng| r.away(2.0);
    let mut rng = Rng(31);
    for (sa, sb) in [
        (vec![3, 4], vec![4, 5]),
        (vec![2, 1, 3, 4], vec![3, 4, 2]),
        (vec![4], vec![4, 3]),
        (vec![2, 3, 4], vec![4]),
        (vec![4], vec![4]),
    ] {
        let a = rand_in(&mut rng, &sa, any);
        let b = rand_in(&mut rng, &sb, any);
        check(&format!("matmul {sa:?} @ {sb:?}"), &[a, b], |t| {
            t[0].matmul(&t[1])
        });
    }
    let x = rand_in(&mut rng, &[3, 4], any);
    let w = rand_in(&mut rng, &[5, 4], any);
    let bias = rand_in(&mut rng, &[5], any);
    check("linear", &[x, w, bias], |t| t[0].linear(&t[1], Some(&t[2])));
}

#[test]
fn compositions() {
    let any = |r: &mut Rng| r.away(2.0);
    one("softmax via logsumexp", &[3, 5], any, |x| {
        (x - x.logsumexp(1, true)).exp()
    });
    let mut rng = Rng(41);
    let x = rand_in(&mut rng, &[4, 6], any);
    let w1 = rand_in(&mut rng, &[6, 5], |r| r.away(0.8));
    let b1 = rand_in(&mut rng, &[5], any);
    let w2 = rand_in(&mut rng, &[5, 3], |r| r.away(0.8));
    let b2 = rand_in(&mut rng, &[3], any);
    let labels = Tensor::from_slice(&[0i64, 2, 1, 2]);
    check("two-layer MLP loss", &[x, w1, b1, w2, b2], move |t| {
        let h = (t[0].matmul(&t[1]) + &t[2]).tanh();
        let logits = h.matmul(&t[3]) + &t[4];
        let logp = &logits - logits.logsumexp(1, true);
        let picked = logp.gather(1, &labels.unsqueeze(1));
        -picked.mean_all()
    });
}

/// A random shape of rank 1–3 with extents 1–4.
fn rand_shape(rng: &mut Rng) -> Vec<usize> {
    let rank = 1 + rng.below(3);
    (0..rank).map(|_| 1 + rng.below(4)).collect()
}

/// A shape that broadcasts against `s`: some axes set to 1, maybe fewer leading axes.
fn broadcast_partner(rng: &mut Rng, s: &[usize]) -> Vec<usize> {
    let drop = rng.below(s.len());
    s[drop..]
        .iter()
        .map(|&d| if rng.below(3) == 0 { 1 } else { d })
        .collect()
}

#[test]
fn random_shapes_broadcasting_and_reductions() {
    let mut rng = Rng(0xb0a7);
    for case in 0..24 {
        let sa = rand_shape(&mut rng);
        let sb = broadcast_partner(&mut rng, &sa);
        let (sa, sb) = if rng.below(2) == 0 {
            (sa, sb)
        } else {
            (sb, sa)
        };
        let a = rand_in(&mut rng, &sa, |r| r.away(2.0));
        let b = rand_in(&mut rng, &sb, |r| r.uniform(0.5, 2.0));
        let op = rng.below(5);
        let rank = sa.len().max(sb.len());
        let axis = rng.below(rank);
        let keep = rng.below(2) == 0;
        let red = rng.below(4);
        let name = format!("case {case}: op {op} on {sa:?}, {sb:?}; reduction {red} over {axis}");
        check(&name, &[a, b], |t| {
            let y = match op {
                0 => &t[0] + &t[1],
                1 => &t[0] * &t[1],
                2 => &t[0] / &t[1],
                3 => t[0].maximum(&t[1]),
                _ => t[0].abs().pow(&t[1].mul(0.5)).mul(&t[0].sign()),
            };
            match red {
                0 => y.sum(axis, keep),
                1 => y.mean(axis, keep),
                2 => y.logsumexp(axis, keep),
                _ => y.square().sum_all().sqrt(),
            }
        });
    }
}

/// Meta-op graphs no Tensor op builds yet (scatter max/min/prod, a reindex with conditions),
/// written as IR text and replayed as tensors.
#[test]
fn scatter_reductions_and_conditional_reindex() {
    use metajit::metaops::parse::parse;
    let idx = Tensor::from_vec(vec![2i64, 0, 2, 1, 0, 2], [6]);
    let cases = [
        ("scatter sum", "sum %0 [i0/2, i1]"),
        ("scatter max (pooling)", "max %0 [i0/2, i1]"),
        ("scatter min", "min %0 [i0/2, i1]"),
        ("scatter prod", "prod %0 [i0/2, i1]"),
        ("scatter max, gathered rows", "max %0, %1 [e0[i0], i1]"),
        (
            "scatter sum, skipped rows",
            "sum %0, %1 [e0[i0], i1] if [i1 == 2]",
        ),
    ];
    for (name, op) in cases {
        let text = format!(
            "%0 = input #0 : f64[6, 4]\n%1 = input #1 : i64[6]\n%2 = reindex_reduce {op} : f64[3, 4]\nreturn %2\n"
        );
        let g = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let idx = idx.clone();
        one(
            name,
            &[6, 4],
            |r| r.uniform(0.5, 3.0),
            move |x| {
                metajit::replay_graph(&g, &[x.clone(), idx.clone()])
                    .pop()
                    .expect("one output")
            },
        );
    }
    let text = "%0 = input #0 : f64[3, 4]\n%1 = reindex %0 [i1-1, i0] if [i0 == 1] overflow=0.5 : f64[4, 5]\nreturn %1\n";
    let g = parse(text).unwrap();
    one(
        "reindex with a condition and overflow",
        &[3, 4],
        |r| r.away(2.0),
        move |x| {
            metajit::replay_graph(&g, std::slice::from_ref(x))
                .pop()
                .expect("one output")
        },
    );
}

/// Second derivatives: `d/dx sum(w2 · d/dx L(x))` through `grad_create_graph`, against central
/// differences of the first derivative (itself from `autograd::grad`). Same tolerance.
#[track_caller]
fn check_second(name: &str, input: &In, f: impl Fn(&Tensor) -> Tensor) {
    let w2 = {
        let mut rng = Rng(0x2d ^ input.0.len() as u64);
        Tensor::from_vec(rng.vec(input.0.len(), |r| r.away(1.5)), input.1.clone())
    };
    let first = |x: &Tensor, create: bool| {
        let loss = weighted(&f(x));
        let g = if create {
            autograd::grad_create_graph(&[&loss], &[x], None)
        } else {
            autograd::grad(&[&loss], &[x], None)
        };
        (&g[0] * &w2).sum_all()
    };
    let x = input.tensor().requires_grad_(true);
    let g2 = first(&x, true);
    // A gradient with no differentiable path to x (relu's is a mask times constants) does
    // not require grad: its derivative is zero.
    let analytic = if g2.requires_grad() {
        autograd::grad(&[&g2], &[&x], None)[0]
            .to_vec::<f64>()
            .unwrap()
    } else {
        vec![0.0; input.0.len()]
    };
    let h = 1e-6;
    for (j, &a) in analytic.iter().enumerate() {
        let at = |d: f64| {
            let mut v = input.0.clone();
            v[j] += d;
            let xj = Tensor::from_vec(v, input.1.clone()).requires_grad_(true);
            first(&xj, false).item::<f64>().unwrap()
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (a - numeric).abs() <= 1e-5 + 1e-4 * numeric.abs(),
            "{name}: second derivative [{j}]: analytic {a}, numeric {numeric}"
        );
    }
}

#[test]
fn second_derivatives() {
    let mut rng = Rng(77);
    let x = rand_in(&mut rng, &[2, 3], |r| r.away(1.5));
    let pos = rand_in(&mut rng, &[2, 3], |r| r.uniform(0.3, 2.0));
    check_second("cube", &x, |x| x * x * x);
    check_second("tanh, sin, exp", &x, |x| x.tanh() + x.sin() * x.exp());
    check_second("sigmoid, erf", &x, |x| x.sigmoid() * x.erf());
    check_second("div, sqrt, log", &pos, |x| x.sqrt() / (x.log() + 3.0));
    check_second("pow", &pos, |x| x.pow(2.5) + x.pow(x));
    check_second("relu (flat second derivative)", &x, |x| x.relu() * 2.0);
    check_second("relu times x", &x, |x| x.relu() * x);
    check_second("softmax", &x, |x| (x - x.logsumexp(1, true)).exp());
    check_second("log1p, softplus", &pos, |x| x.log1p() * x.softplus());
    check_second("transpose and matmul", &x, |x| x.matmul(&x.t()).square());
    check_second("max and sum", &x, |x| {
        x.max(1, false).square().sum_all() + x.sum(0, false).exp().sum_all()
    });
}

#[test]
fn nn_functional_ops() {
    use metajit::nn::functional::{self as F, ClassLossOptions, Reduction};
    let mut rng = Rng(99);
    let any = |r: &mut Rng| r.away(2.0);
    one("softmax", &[3, 4], any, |x| F::softmax(x, 1));
    one("log_softmax", &[3, 4], any, |x| F::log_softmax(x, 0));
    let labels = Tensor::from_slice(&[2i64, -100, 0, 1]);
    let weight = Tensor::from_vec(vec![0.5f64, 2.0, 1.5], [3]);
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let (l, w) = (labels.clone(), weight.clone());
        one(
            "cross_entropy, weights, ignore_index",
            &[4, 3],
            any,
            move |x| {
                let opts = ClassLossOptions {
                    weight: Some(&w),
                    reduction,
                    ..Default::default()
                };
                F::cross_entropy(x, &l, &opts)
            },
        );
    }
    let l4 = Tensor::from_vec(vec![0i64, 2, 1, 1, 2, 0, 0, 1], [2, 2, 2]);
    one("cross_entropy [N, C, H, W]", &[2, 3, 2, 2], any, move |x| {
        F::cross_entropy(x, &l4, &Default::default())
    });
    let l = Tensor::from_slice(&[1i64, 0, 2]);
    one("nll_loss", &[3, 3], any, move |x| {
        F::nll_loss(x, &l, &Default::default())
    });
    let t = rand_in(&mut rng, &[2, 3], any);
    check(
        "mse_loss",
        &[rand_in(&mut rng, &[2, 3], any), t.clone()],
        |v| F::mse_loss(&v[0], &v[1], Reduction::Mean),
    );
    let probs = rand_in(&mut rng, &[2, 3], |r| r.uniform(0.0, 1.0));
    let pw = Tensor::from_vec(vec![2.0f64, 0.5, 1.0], [3]);
    check(
        "bce_with_logits",
        &[rand_in(&mut rng, &[2, 3], any), probs],
        move |v| F::binary_cross_entropy_with_logits(&v[0], &v[1], Some(&pw), Reduction::Mean),
    );
    check(
        "layer_norm",
        &[
            rand_in(&mut rng, &[3, 2, 4], any),
            rand_in(&mut rng, &[2, 4], any),
            rand_in(&mut rng, &[2, 4], any),
        ],
        |v| F::layer_norm(&v[0], &[2, 4], Some(&v[1]), Some(&v[2]), 1e-5),
    );
    check(
        "batch_norm (train)",
        &[
            rand_in(&mut rng, &[3, 2, 4], any),
            rand_in(&mut rng, &[2], any),
            rand_in(&mut rng, &[2], any),
        ],
        |v| F::batch_norm(&v[0], None, None, Some(&v[1]), Some(&v[2]), true, 0.1, 1e-5),
    );
    let rm = Tensor::from_vec(vec![0.1f64, -0.2], [2]);
    let rv = Tensor::from_vec(vec![1.5f64, 0.7], [2]);
    one("batch_norm (eval)", &[3, 2, 4], any, move |x| {
        F::batch_norm(x, Some(&rm), Some(&rv), None, None, false, 0.1, 1e-5)
    });
    let idx = Tensor::from_vec(vec![3i64, 0, 1, 3, 0, 2], [2, 3]);
    // (With padding_idx the padding row's gradient is 0 by definition, not the derivative:
    // tests/nn_functional.rs checks that.)
    one("embedding", &[4, 3], any, move |w| {
        F::embedding(&idx, w, None)
    });
    one("dropout (a fixed mask)", &[4, 5], any, |x| {
        metajit::manual_seed(7);
        F::dropout(x, 0.4, true)
    });
}

#[test]
fn convolution_and_pooling() {
    use metajit::nn::functional as F;
    let mut rng = Rng(123);
    let any = |r: &mut Rng| r.away(1.5);
    for (k, (xs, o, kk, stride, pad, dil, g)) in [
        ([2, 2, 5, 4], 3, (3, 2), (1, 1), (1, 0), (1, 1), 1),
        ([1, 4, 6, 5], 2, (2, 2), (2, 1), (1, 1), (1, 2), 2),
        // 16 channels, stride 1: the shifted-GEMM form (padding, and a dilated kernel).
        ([2, 16, 4, 3], 2, (3, 2), (1, 1), (1, 1), (1, 1), 1),
        ([1, 16, 5, 5], 1, (2, 2), (1, 1), (0, 1), (2, 1), 1),
    ]
    .into_iter()
    .enumerate()
    {
        let x = rand_in(&mut rng, &xs, any);
        let w = rand_in(&mut rng, &[o, xs[1] / g, kk.0, kk.1], any);
        let b = rand_in(&mut rng, &[o], any);
        check(&format!("conv2d case {k}"), &[x, w, b], |t| {
            F::conv2d(&t[0], &t[1], Some(&t[2]), stride, pad, dil, g)
        });
    }
    let x = rand_in(&mut rng, &[2, 2, 7], any);
    let w = rand_in(&mut rng, &[3, 2, 3], any);
    check("conv1d", &[x, w], |t| {
        F::conv1d(&t[0], &t[1], None, 2, 1, 1, 1)
    });
    // Distinct values, so that no window has a tie (max is not differentiable at a tie).
    let distinct = |r: &mut Rng| r.uniform(-3.0, 3.0);
    one("max_pool2d", &[1, 2, 5, 6], distinct, |x| {
        F::max_pool2d(x, (3, 2), Some((2, 2)), (1, 1), (1, 1), true)
    });
    // Windows that tile the input (the reshape/permute path), cropping the ragged edge.
    one("max_pool2d tiled", &[2, 2, 5, 7], distinct, |x| {
        F::max_pool2d(x, (2, 3), None, (0, 0), (1, 1), false)
    });
    one("max_pool2d dilated", &[1, 1, 6, 6], distinct, |x| {
        F::max_pool2d(x, (2, 2), Some((1, 2)), (0, 1), (2, 1), false)
    });
    one("avg_pool2d", &[2, 1, 5, 6], any, |x| {
        F::avg_pool2d(x, (3, 3), Some((2, 2)), (1, 1), true, true)
    });
    one("avg_pool2d without the padding", &[1, 2, 5, 5], any, |x| {
        F::avg_pool2d(x, (2, 3), None, (1, 1), false, false)
    });
    one("adaptive_avg_pool2d", &[1, 2, 7, 5], any, |x| {
        F::adaptive_avg_pool2d(x, (3, 2))
    });
}

#[test]
fn conv_transpose2d() {
    use metajit::nn::functional as F;
    let mut rng = Rng(321);
    let any = |r: &mut Rng| r.away(1.5);
    // (x shape, O / groups, kernel, stride, padding, output padding, groups, dilation)
    type P = (usize, usize);
    type Case = ([usize; 4], usize, P, P, P, P, usize, P);
    #[rustfmt::skip]
    let cases: [Case; 3] = [
        ([2, 2, 3, 3], 3, (3, 2), (2, 1), (1, 0), (1, 0), 1, (1, 1)),
        ([1, 4, 3, 2], 1, (2, 2), (1, 2), (0, 1), (0, 1), 2, (2, 1)),
        ([1, 2, 2, 3], 2, (2, 3), (3, 1), (1, 1), (2, 0), 1, (1, 2)),
    ];
    for (k, (xs, og, kk, stride, pad, opad, g, dil)) in cases.into_iter().enumerate() {
        let x = rand_in(&mut rng, &xs, any);
        let w = rand_in(&mut rng, &[xs[1], og, kk.0, kk.1], any);
        let b = rand_in(&mut rng, &[og * g], any);
        check(&format!("conv_transpose2d case {k}"), &[x, w, b], |t| {
            F::conv_transpose2d(&t[0], &t[1], Some(&t[2]), stride, pad, opad, g, dil)
        });
    }
}
