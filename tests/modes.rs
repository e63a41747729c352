//! Eager and compiled modes give the same results. (Its own test binary: the mode is a
//! process-wide setting.)

use std::sync::Mutex;

use metajit::{Mode, Tensor};

/// The mode is process-wide: the tests of this binary take turns.
static MODE: Mutex<()> = Mutex::new(());

fn workload() -> Vec<f32> {
    metajit::manual_seed(7);
    let x = Tensor::randn([5, 6]);
    let y = (&x * 1.5 + 0.5).relu() * x.sigmoid() + x.tanh();
    let z = (&y - y.logsumexp(-1, true)).exp().sum(0, false);
    let w = x.transpose(0, 1).flip([1]).slice(0, 1, 5, 2).mean(1, true);
    let mut out = z.to_vec::<f32>().unwrap();
    out.extend(w.to_vec::<f32>().unwrap());
    out
}

#[test]
fn eager_equals_compiled() {
    let _turn = MODE.lock().unwrap_or_else(|p| p.into_inner());
    metajit::set_mode(Mode::Compiled);
    let lazy = workload();
    metajit::set_mode(Mode::Eager);
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).exp();
    assert!(x.is_realized(), "eager mode runs each op at once");
    let eager = workload();
    // A matmul is one op in eager mode too (one GEMM), not a materialised broadcast product.
    let a = Tensor::randn([64, 32]);
    let b = Tensor::randn([32, 48]);
    let before = metajit::stats().kernel_runs;
    let c = a.matmul(&b);
    assert!(c.is_realized());
    let runs = metajit::stats().kernel_runs - before;
    assert_eq!(
        runs, 1,
        "eager matmul should be a single GEMM, ran {runs} kernels"
    );
    metajit::set_mode(Mode::Compiled);
    assert_eq!(lazy.len(), eager.len());
    for (a, b) in lazy.iter().zip(&eager) {
        assert_eq!(a.to_bits(), b.to_bits(), "{lazy:?} vs {eager:?}");
    }
}

/// A small model's gradients: `(loss, grads)`.
fn gradients() -> Vec<Vec<f32>> {
    metajit::manual_seed(11);
    let x = Tensor::randn([6, 5]);
    let w = Tensor::randn([5, 4]).requires_grad_(true);
    let b = Tensor::randn([4]).requires_grad_(true);
    let h = (x.matmul(&w) + &b).relu();
    let y = (&h - h.logsumexp(1, true))
        .exp()
        .transpose(0, 1)
        .slice(1, 1, 6, 2);
    let loss = (y.square().sum_all() + h.max_dim(1, false).0.mean_all()) * 0.5;
    loss.backward();
    vec![
        vec![loss.item::<f32>().unwrap()],
        w.grad().unwrap().to_vec::<f32>().unwrap(),
        b.grad().unwrap().to_vec::<f32>().unwrap(),
    ]
}

/// The gradient of an element-wise chain (no reduction anywhere, forward or backward).
fn elementwise_gradient() -> Vec<f32> {
    let x = Tensor::from_vec(vec![-2.0f32, -0.5, 0.0, 0.25, 1.0, 3.0], [6]).requires_grad_(true);
    let y = (&x * 1.5 + 0.5).relu() * x.sigmoid() + x.tanh() * x.exp() - x.softplus();
    y.backward_with(&Tensor::full([6], 0.75));
    x.grad().unwrap().to_vec::<f32>().unwrap()
}

#[test]
fn eager_backward_computes_each_gradient_once() {
    let _turn = MODE.lock().unwrap_or_else(|p| p.into_inner());
    metajit::set_mode(Mode::Eager);
    let x = Tensor::randn([64, 64]);
    let s = Tensor::randn([64, 64]).requires_grad_(true);
    let w = Tensor::randn([64, 64]).requires_grad_(true);
    let loss = (&x * &s).matmul(&w).relu().sum_all();
    let before = metajit::stats().kernel_runs;
    loss.backward();
    let runs = metajit::stats().kernel_runs - before;
    // Gradients are computed during backward, once each: nothing is left to run.
    let (gs, gw) = (s.grad().unwrap(), w.grad().unwrap());
    assert!(gs.is_realized() && gw.is_realized());
    metajit::set_mode(Mode::Compiled);
    // The relu's backward (a unit), the sum's broadcast, the matmul's two GEMMs, and the
    // product's gradient for s: no GEMM runs twice.
    assert!(runs <= 6, "eager backward ran {runs} kernels");
}

#[test]
fn eager_and_compiled_gradients_agree() {
    let _turn = MODE.lock().unwrap_or_else(|p| p.into_inner());
    metajit::set_mode(Mode::Compiled);
    let lazy = gradients();
    let lazy_ew = elementwise_gradient();
    metajit::set_mode(Mode::Eager);
    let eager = gradients();
    let eager_ew = elementwise_gradient();
    metajit::set_mode(Mode::Compiled);
    // Without reductions, bitwise.
    assert_eq!(lazy_ew.len(), eager_ew.len());
    for (a, b) in lazy_ew.iter().zip(&eager_ew) {
        assert_eq!(a.to_bits(), b.to_bits(), "{lazy_ew:?} vs {eager_ew:?}");
    }
    // Reductions may be reordered by fusion: within a few ulps, not bitwise.
    for (l, e) in lazy.iter().zip(&eager) {
        assert_eq!(l.len(), e.len());
        for (a, b) in l.iter().zip(e) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "compiled {lazy:?} vs eager {eager:?}"
            );
        }
    }
}

/// The losses of 20 training steps of a small CNN (a conv with padding, batch norm, relu, max
/// pool, a padded conv of 16 channels (the shifted-GEMM form), dropout off, linear; SGD with
/// momentum and weight decay) from one seed.
fn cnn_losses() -> Vec<f32> {
    use metajit::nn::{
        Activation, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Module, Sequential,
        functional as F,
    };
    use metajit::optim::{Optimizer, Sgd, SgdConfig};
    metajit::manual_seed(21);
    let net = Sequential::new()
        .add(Conv2d::with(1, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1, true))
        .add(BatchNorm2d::new(16))
        .add(Activation::ReLU)
        .add(MaxPool2d::new(2))
        // Stride 1, padding 1 on 8×8: conv2d's shifted-GEMM form, forward and backward.
        .add(Conv2d::with(16, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, true))
        .add(Activation::ReLU)
        .add(Flatten::default())
        .add(Linear::new(6 * 8 * 8, 3));
    let x = Tensor::randn([16, 1, 16, 16]);
    let y = Tensor::randint(0, 3, [16]);
    let mut opt = Sgd::new(
        net.parameters(),
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            ..Default::default()
        },
    );
    (0..20)
        .map(|_| {
            opt.zero_grad();
            let loss = F::cross_entropy(&net.forward(&x), &y, &Default::default());
            loss.backward();
            opt.step();
            opt.realize_with(&[&loss]).unwrap();
            loss.item::<f32>().unwrap()
        })
        .collect()
}

#[test]
fn a_small_cnn_trains_the_same_in_eager_and_compiled_mode() {
    let _turn = MODE.lock().unwrap_or_else(|p| p.into_inner());
    metajit::set_mode(Mode::Compiled);
    let compiled = cnn_losses();
    metajit::set_mode(Mode::Eager);
    let eager = cnn_losses();
    metajit::set_mode(Mode::Compiled);
    // Fusion changes the order of f32 roundings (and GEMM blocking is the same), so the losses
    // agree to a relative 1e-5 over 20 steps (measured: 1e-7), not bit for bit.
    for (k, (c, e)) in compiled.iter().zip(&eager).enumerate() {
        assert!(
            (c - e).abs() <= 1e-5 * c.abs().max(1.0),
            "step {k}: compiled {c}, eager {e}\n{compiled:?}\n{eager:?}"
        );
    }
    assert!(
        compiled[19] < compiled[0] * 0.5,
        "the CNN should learn: {compiled:?}"
    );
}
