//! Autograd: the API (PyTorch's vocabulary and accumulation rules) and PyTorch's gradient at
//! corner points, each its own test. Expected values are PyTorch's (derivatives.yaml), written
//! out by hand.

mod common;

use common::panic_message;
use metajit::{DType, Tensor, autograd, no_grad};

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

/// The gradient of `sum(f(x))` at `x`.
fn grad_of(x: &[f32], f: impl Fn(&Tensor) -> Tensor) -> Vec<f32> {
    let x = Tensor::from_vec(x.to_vec(), [x.len()]).requires_grad_(true);
    f(&x).sum_all().backward();
    f32s(&x.grad().expect("x has a gradient"))
}

fn same(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()))
}

#[track_caller]
fn assert_grad(got: Vec<f32>, want: &[f32]) {
    assert!(same(&got, want), "gradient {got:?}, want {want:?}");
}

// ---- corner values ----

#[test]
fn maximum_minimum_split_ties_and_pass_nan_to_both() {
    let nan = f32::NAN;
    for (max, name) in [(true, "maximum"), (false, "minimum")] {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, nan, 1.0], [5]).requires_grad_(true);
        let b = Tensor::from_vec(vec![1.0f32, 5.0, 0.0, 1.0, nan], [5]).requires_grad_(true);
        let y = if max { a.maximum(&b) } else { a.minimum(&b) };
        y.sum_all().backward();
        let (ga, gb) = (f32s(&a.grad().unwrap()), f32s(&b.grad().unwrap()));
        let (wa, wb) = if max {
            ([0.5, 0.0, 1.0, 1.0, 1.0], [0.5, 1.0, 0.0, 1.0, 1.0])
        } else {
            ([0.5, 1.0, 0.0, 1.0, 1.0], [0.5, 0.0, 1.0, 1.0, 1.0])
        };
        assert!(same(&ga, &wa), "{name}: d/da {ga:?}, want {wa:?}");
        assert!(same(&gb, &wb), "{name}: d/db {gb:?}, want {wb:?}");
    }
}

#[test]
fn max_dim_sends_the_gradient_to_the_returned_index() {
    let x = Tensor::from_vec(vec![3.0f32, 1.0, 3.0, 2.0, 2.0, 0.0], [2, 3]).requires_grad_(true);
    let (v, i) = x.max_dim(1, false);
    assert_eq!(i.to_vec::<i64>().unwrap(), vec![0, 0]);
    v.sum_all().backward();
    assert_grad(f32s(&x.grad().unwrap()), &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    let x = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 4.0], [2, 2]).requires_grad_(true);
    let (v, _) = x.min_dim(0, true);
    v.sum_all().backward();
    assert_grad(f32s(&x.grad().unwrap()), &[0.0, 1.0, 1.0, 0.0]);
}

#[test]
fn full_max_splits_the_gradient_among_ties() {
    assert_grad(
        grad_of(&[3.0, 1.0, 3.0, 3.0], |x| x.max_all()),
        &[1.0 / 3.0, 0.0, 1.0 / 3.0, 1.0 / 3.0],
    );
    assert_grad(
        grad_of(&[0.0, -2.0, -2.0], |x| x.min_all()),
        &[0.0, 0.5, 0.5],
    );
    // Over a dim too (amax): per row.
    let x = Tensor::from_vec(vec![2.0f32, 2.0, 1.0, 5.0], [2, 2]).requires_grad_(true);
    x.max(1, false).sum_all().backward();
    assert_grad(f32s(&x.grad().unwrap()), &[0.5, 0.5, 0.0, 1.0]);
}

#[test]
fn relu_at_zero_and_nan() {
    assert_grad(
        grad_of(&[-1.0, 0.0, 2.0, f32::NAN], |x| x.relu()),
        &[0.0, 0.0, 1.0, 1.0],
    );
    // The forward keeps NaN.
    let y = Tensor::from_vec(vec![f32::NAN, -0.5], [2]).relu();
    let v = f32s(&y);
    assert!(v[0].is_nan() && v[1] == 0.0);
}

#[test]
fn leaky_relu_at_zero_is_the_slope() {
    assert_grad(
        grad_of(&[-1.0, 0.0, 2.0], |x| x.leaky_relu(0.25)),
        &[0.25, 0.25, 1.0],
    );
}

#[test]
fn abs_at_zero_is_zero() {
    assert_grad(grad_of(&[-3.0, 0.0, 2.0], |x| x.abs()), &[-1.0, 0.0, 1.0]);
}

#[test]
fn sqrt_at_zero_is_inf() {
    assert_grad(grad_of(&[0.0, 4.0], |x| x.sqrt()), &[f32::INFINITY, 0.25]);
}

#[test]
fn clamp_passes_at_its_bounds_and_stops_at_nan() {
    let x = [-2.0, -1.0, 0.0, 1.0, 2.0, f32::NAN];
    assert_grad(
        grad_of(&x, |x| x.clamp(-1.0, 1.0)),
        &[0.0, 1.0, 1.0, 1.0, 0.0, 0.0],
    );
    assert_grad(
        grad_of(&x, |x| x.clamp_min(0.0)),
        &[0.0, 0.0, 1.0, 1.0, 1.0, 0.0],
    );
    assert_grad(
        grad_of(&x, |x| x.clamp_max(0.0)),
        &[1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
    );
    // The forward keeps NaN and clamps.
    let v = f32s(&Tensor::from_vec(x.to_vec(), [6]).clamp(-1.0, 1.0));
    assert_eq!(&v[..5], &[-1.0, -1.0, 0.0, 1.0, 1.0]);
    assert!(v[5].is_nan());
}

#[test]
fn rounding_has_zero_gradient() {
    let x = [-1.5, 0.5, 2.7];
    assert_grad(grad_of(&x, |x| x.floor()), &[0.0; 3]);
    assert_grad(grad_of(&x, |x| x.ceil()), &[0.0; 3]);
    assert_grad(grad_of(&x, |x| x.round()), &[0.0; 3]);
    assert_grad(grad_of(&x, |x| x.sign()), &[0.0; 3]);
    assert_grad(grad_of(&x, |x| x.sign() + x), &[1.0; 3]);
}

#[test]
fn prod_with_zeros() {
    // A lone zero gets the product of the others; the others get 0.
    assert_grad(
        grad_of(&[2.0, 0.0, 3.0], |x| x.prod(0, false)),
        &[0.0, 6.0, 0.0],
    );
    // Two zeros: every gradient is 0.
    assert_grad(
        grad_of(&[2.0, 0.0, 0.0], |x| x.prod(0, false)),
        &[0.0, 0.0, 0.0],
    );
    // No zero: out / x.
    assert_grad(grad_of(&[2.0, 4.0], |x| x.prod(0, false)), &[4.0, 2.0]);
    // Per row.
    let x = Tensor::from_vec(vec![0.0f32, 5.0, 2.0, 3.0], [2, 2]).requires_grad_(true);
    x.prod(1, false).sum_all().backward();
    assert_grad(f32s(&x.grad().unwrap()), &[5.0, 0.0, 3.0, 2.0]);
}

#[test]
fn all_minus_inf_logsumexp_row_gives_nan() {
    let ninf = f32::NEG_INFINITY;
    let x = Tensor::from_vec(vec![ninf, ninf, 0.0, 0.0], [2, 2]).requires_grad_(true);
    let y = x.logsumexp(1, false);
    assert_eq!(f32s(&y), vec![ninf, 2.0f32.ln()]);
    y.sum_all().backward();
    let g = f32s(&x.grad().unwrap());
    assert!(g[0].is_nan() && g[1].is_nan(), "{g:?}");
    assert_eq!(&g[2..], &[0.5, 0.5]);
}

#[test]
fn logsumexp_is_stable_at_80() {
    let g = grad_of(&[80.0, -80.0, 80.0], |x| x.logsumexp(0, false));
    assert_grad(g, &[0.5, 0.0, 0.5]);
}

#[test]
fn remainder_gradient_wrt_divisor_is_minus_floor() {
    let a = Tensor::from_vec(vec![7.0f32, -7.0, 5.5], [3]).requires_grad_(true);
    let b = Tensor::from_vec(vec![2.0f32, 2.0, -2.0], [3]).requires_grad_(true);
    a.remainder(&b).sum_all().backward();
    assert_grad(f32s(&a.grad().unwrap()), &[1.0, 1.0, 1.0]);
    // -floor(a / b): -floor(3.5) = -3, -floor(-3.5) = 4, -floor(-2.75) = 3.
    assert_grad(f32s(&b.grad().unwrap()), &[-3.0, 4.0, 3.0]);
}

#[test]
fn pow_corners() {
    // d/da a^0 = 0 (even at a = 0); d/db 0^b = 0 for b >= 0.
    let a = Tensor::from_vec(vec![0.0f32, 0.0, 2.0], [3]).requires_grad_(true);
    let b = Tensor::from_vec(vec![0.0f32, 2.0, 3.0], [3]).requires_grad_(true);
    a.pow(&b).sum_all().backward();
    assert_grad(f32s(&a.grad().unwrap()), &[0.0, 0.0, 12.0]);
    assert_grad(f32s(&b.grad().unwrap()), &[0.0, 0.0, 8.0 * 2.0f32.ln()]);
}

#[test]
fn log1p_softplus_expm1_corners() {
    let g = grad_of(&[-1.0, 0.0, 1e-30], |x| x.log1p());
    assert_grad(g, &[f32::INFINITY, 1.0, 1.0]);
    // softplus' = sigmoid below the threshold, 1 above, 0 at -inf, no NaN anywhere.
    let g = grad_of(&[0.0, 30.0, f32::NEG_INFINITY, -100.0, 100.0], |x| {
        x.softplus()
    });
    assert_eq!(g[0], 0.5);
    assert_eq!(&g[1..3], &[1.0, 0.0]);
    assert!(
        g[3] > 0.0 && g[3] < 1e-40,
        "sigmoid(-100) is a subnormal: {}",
        g[3]
    );
    assert_eq!(g[4], 1.0);
    let g = grad_of(&[0.0, 1e-30, -100.0], |x| x.expm1());
    assert_grad(g, &[1.0, 1.0, 0.0]);
}

// ---- the API ----

#[test]
fn gradients_accumulate_across_backward_calls() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).requires_grad_(true);
    (&x * 3.0).sum_all().backward();
    (&x * &x).sum_all().backward();
    assert_eq!(f32s(&x.grad().unwrap()), vec![5.0, 7.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
    (&x * 2.0).sum_all().backward();
    assert_eq!(f32s(&x.grad().unwrap()), vec![2.0, 2.0]);
    x.set_grad(Some(Tensor::from_vec(vec![9.0f32, 9.0], [2])));
    assert_eq!(f32s(&x.grad().unwrap()), vec![9.0, 9.0]);
}

#[test]
fn realizing_the_loss_keeps_its_graph() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).requires_grad_(true);
    let loss = x.exp().sum_all();
    let printed = format!("{loss}");
    assert!(loss.is_realized() && !printed.is_empty());
    loss.backward();
    let want: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).collect();
    let got = f32s(&x.grad().unwrap());
    assert!(
        got.iter()
            .zip(&want)
            .all(|(a, b)| (a - b).abs() <= 1e-5 * b)
    );
}

#[test]
fn gradients_are_lazy() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).requires_grad_(true);
    let loss = (&x * &x).sum_all();
    loss.backward();
    let g = x.grad().unwrap();
    if metajit::config::mode() == metajit::Mode::Compiled {
        assert!(!g.is_realized(), "nothing runs until a value is needed");
    }
    assert_eq!(f32s(&g), vec![2.0, 4.0]);
}

#[test]
fn detach_and_no_grad_stop_gradients() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).requires_grad_(true);
    let y = (&x * &x.detach()).sum_all();
    y.backward();
    assert_eq!(f32s(&x.grad().unwrap()), vec![1.0, 2.0]);
    let z = no_grad(|| (&x * 2.0).sum_all());
    assert!(!z.requires_grad());
    assert!(metajit::is_grad_enabled());
    let nested = no_grad(|| no_grad(metajit::is_grad_enabled));
    assert!(!nested && metajit::is_grad_enabled());
    assert!(x.detach().is_leaf() && !x.detach().requires_grad());
}

#[test]
fn functional_grad_leaves_dot_grad_alone() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0], [2]).requires_grad_(true);
    let w = Tensor::from_vec(vec![3.0f64, 4.0], [2]).requires_grad_(true);
    let h = &x * &w;
    let y = h.sum_all();
    let g = autograd::grad(&[&y], &[&x, &h], None);
    assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![3.0, 4.0]);
    assert_eq!(g[1].to_vec::<f64>().unwrap(), vec![1.0, 1.0]); // a non-leaf input
    assert!(x.grad().is_none() && w.grad().is_none());
    // An unused input gets zeros; grad_outputs weight the outputs.
    let u = Tensor::zeros_dtype([3], DType::F64).requires_grad_(true);
    let seed = Tensor::from_vec(vec![2.0f64, -1.0], [2]);
    let g = autograd::grad(&[&h], &[&x, &u], Some(&[&seed]));
    assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![6.0, -4.0]);
    assert_eq!(g[1].to_vec::<f64>().unwrap(), vec![0.0; 3]);
}

#[test]
fn assign_swaps_the_value_without_disturbing_recorded_graphs() {
    let w = Tensor::from_vec(vec![1.0f32, 2.0], [2]).requires_grad_(true);
    let holder = w.clone(); // a module or an optimizer holding the same parameter
    let old = (&w * 10.0).sum_all();
    old.backward();
    let g = w.grad().unwrap();
    w.assign(&no_grad(|| &w - &g * 0.5));
    assert_eq!(f32s(&holder), vec![-4.0, -3.0]);
    assert_eq!(
        old.item::<f32>().unwrap(),
        30.0,
        "the old graph reads the old value"
    );
    assert!(holder.requires_grad() && holder.is_leaf());
    assert_eq!(
        f32s(&holder.grad().unwrap()),
        vec![10.0, 10.0],
        ".grad is kept"
    );
    holder.zero_grad();
    (&w * &w).sum_all().backward();
    assert_eq!(f32s(&w.grad().unwrap()), vec![-8.0, -6.0]);
}

#[test]
fn misuse_panics_with_clear_messages() {
    let m = panic_message(|| {
        Tensor::from_slice(&[1i64, 2]).requires_grad_(true);
    })
    .unwrap();
    assert!(m.contains("requires_grad_") && m.contains("i64"), "{m}");
    let x = Tensor::ones([2]).requires_grad_(true);
    let m = panic_message(|| (&x * 2.0).backward()).unwrap();
    assert!(m.contains("backward") && m.contains("[2]"), "{m}");
    let m = panic_message(|| Tensor::ones([1]).sum_all().backward()).unwrap();
    assert!(m.contains("does not require grad"), "{m}");
    let m = panic_message(|| x.assign(&Tensor::ones([3]))).unwrap();
    assert!(m.contains("assign") && m.contains("[3]"), "{m}");
    let y = &x * 2.0;
    let m = panic_message(|| {
        y.requires_grad_(false);
    })
    .unwrap();
    assert!(m.contains("detach"), "{m}");
    let m = panic_message(|| {
        autograd::grad(&[&y.sum_all()], &[&Tensor::ones([2])], None);
    })
    .unwrap();
    assert!(m.contains("does not require grad"), "{m}");
    assert!(y.grad().is_none() && !y.is_leaf());
}

#[test]
fn long_chains_drop_without_recursion() {
    let x = Tensor::from_vec(vec![1.0f32], [1]).requires_grad_(true);
    let mut y = x.clone();
    for _ in 0..100_000 {
        y = &y + 0.0;
    }
    assert!(y.requires_grad());
    drop(y); // would overflow the stack if dropped recursively
}

#[test]
fn scatter_prod_and_max_corners() {
    use metajit::metaops::parse::parse;
    // Groups of two along axis 0: [2, 0] has a lone zero, [0, 0] two, [3, 3] a tie for max.
    let x = || Tensor::from_vec(vec![2.0f32, 0.0, 0.0, 0.0, 3.0, 3.0], [6]).requires_grad_(true);
    let run = |op: &str, x: &Tensor| {
        let text = format!(
            "%0 = input #0 : f32[6]\n%1 = reindex_reduce {op} %0 [i0/2] : f32[3]\nreturn %1\n"
        );
        let g = parse(&text).unwrap();
        metajit::replay_graph(&g, std::slice::from_ref(x))
            .pop()
            .unwrap()
    };
    let t = x();
    run("prod", &t).sum_all().backward();
    assert_grad(f32s(&t.grad().unwrap()), &[0.0, 2.0, 0.0, 0.0, 3.0, 3.0]);
    let t = x();
    run("max", &t).sum_all().backward();
    assert_grad(f32s(&t.grad().unwrap()), &[1.0, 0.0, 0.5, 0.5, 0.5, 0.5]);
}

#[test]
fn repeated_inputs_each_get_the_gradient() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).requires_grad_(true);
    let y = (&x * &x).sum_all();
    let g = autograd::grad(&[&y], &[&x, &x], None);
    assert_eq!(f32s(&g[0]), vec![2.0, 4.0]);
    assert_eq!(f32s(&g[1]), vec![2.0, 4.0]);
}

#[test]
fn gradients_are_distinct_handles() {
    // Gradients pass through add and contiguous unchanged; each must still be its own handle,
    // so that assigning to one (clipping, a momentum buffer) leaves the others alone.
    let a = Tensor::from_vec(vec![1.0f32, 2.0], [2]).requires_grad_(true);
    let b = Tensor::from_vec(vec![3.0f32, 4.0], [2]).requires_grad_(true);
    let seed = Tensor::from_vec(vec![1.0f32, 1.0], [2]);
    (&a + &b).contiguous().backward_with(&seed);
    let ga = a.grad().unwrap();
    ga.assign(&(&ga * 10.0));
    seed.assign(&Tensor::from_vec(vec![7.0f32, 7.0], [2]));
    assert_eq!(f32s(&a.grad().unwrap()), vec![10.0, 10.0]);
    assert_eq!(f32s(&b.grad().unwrap()), vec![1.0, 1.0]);
}

#[test]
fn marking_a_tensor_later_does_not_change_recorded_graphs() {
    let a = Tensor::from_vec(vec![1.0f32, 2.0], [2]);
    let w = Tensor::from_vec(vec![3.0f32, 4.0], [2]).requires_grad_(true);
    let y = (&a * &w).sum_all();
    a.requires_grad_(true);
    y.backward();
    assert!(a.grad().is_none(), "a was not tracked when y was recorded");
    assert_eq!(f32s(&w.grad().unwrap()), vec![1.0, 2.0]);
}

#[test]
fn enable_grad_inside_no_grad() {
    let w = Tensor::ones([2]).requires_grad_(true);
    let y = no_grad(|| {
        let inner = autograd::enable_grad(|| (&w * 3.0).sum_all());
        assert!(
            !metajit::is_grad_enabled(),
            "no_grad resumes after enable_grad"
        );
        inner
    });
    y.backward();
    assert_eq!(f32s(&w.grad().unwrap()), vec![3.0, 3.0]);
}

#[test]
fn softplus_in_half_precision_does_not_overflow() {
    let x = Tensor::from_vec(vec![5.0f32, 12.0, 15.0, 19.0, 25.0], [5])
        .cast(DType::F16)
        .requires_grad_(true);
    let y = x.softplus();
    let v = y.cast(DType::F32).to_vec::<f32>().unwrap();
    for (got, want) in v.iter().zip([5.0067f32, 12.0, 15.0, 19.0, 25.0]) {
        assert!((got - want).abs() <= 0.02, "softplus f16 {v:?}");
    }
    y.sum_all().backward();
    let g = x.grad().unwrap().cast(DType::F32).to_vec::<f32>().unwrap();
    assert!(
        g.iter().all(|v| v.is_finite() && *v > 0.99 && *v <= 1.0),
        "{g:?}"
    );
}

#[test]
fn gradient_with_respect_to_a_reshaped_intermediate() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [4]).requires_grad_(true);
    let h = x.reshape([4, 1]);
    let y = (h.reshape([2, 2]) * 3.0).sum_all();
    let g = autograd::grad(&[&y], &[&h, &x], None);
    assert_eq!(f32s(&g[0]), vec![3.0; 4]);
    assert_eq!(f32s(&g[1]), vec![3.0; 4]);
}

#[test]
fn grad_of_an_output_that_does_not_require_grad_panics() {
    let x = Tensor::ones([2]).requires_grad_(true);
    let c = Tensor::ones([1]).sum_all();
    let m = panic_message(|| {
        autograd::grad(&[&c], &[&x], None);
    })
    .unwrap();
    assert!(
        m.contains("output 0") && m.contains("does not require grad"),
        "{m}"
    );
}

#[test]
fn injective_reindex_gradients_are_gathers_and_collisions_scatter() {
    use metajit::metaops::Op;
    if metajit::config::mode() == metajit::Mode::Eager {
        return; // the graph structure is a compiled-mode property (eager ran it already)
    }
    let scatters = |y: &Tensor, x: &Tensor| {
        let g = autograd::grad(&[&y.exp().sum_all()], &[x], None);
        let (graph, _) = metajit::pending_graph(&[&g[0]]);
        graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::ReindexReduce { .. }))
            .count()
    };
    let x = Tensor::randn([6, 5]).requires_grad_(true);
    let cases = [
        ("transpose", x.t()),
        ("permute", x.unsqueeze(0).permute(&[2, 0, 1])),
        ("slice with step", x.slice(0, 1, 6, 2)),
        ("narrow", x.narrow(1, 1, 3)),
        ("pad", x.pad(&[(1, 2), (0, 1)], 0.0)),
        ("flip", x.flip([0, 1])),
    ];
    for (name, y) in &cases {
        assert_eq!(
            scatters(y, &x),
            0,
            "{name}: the gradient should be a gather"
        );
    }
    // Rows read twice (a gather with repeats) need a scatter-add.
    let rows = Tensor::from_slice(&[1i64, 1, 4]);
    assert_eq!(scatters(&x.index_select(0, &rows), &x), 1);
}

#[test]
fn retain_grad_keeps_an_intermediate_gradient() {
    let x = Tensor::from_vec(vec![1.0f32, -2.0], [2]).requires_grad_(true);
    let h = x.exp();
    h.retain_grad();
    let y = (&h * 2.0).sum_all();
    y.backward();
    y.backward();
    assert_eq!(
        f32s(&h.grad().unwrap()),
        vec![4.0, 4.0],
        "accumulated over two calls"
    );
    assert!(!h.is_leaf());
    h.zero_grad();
    assert!(h.grad().is_none());
    let m = panic_message(|| Tensor::ones([2]).retain_grad()).unwrap();
    assert!(m.contains("retain_grad"), "{m}");
}
