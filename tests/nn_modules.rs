//! `nn` modules: PyTorch's parameter names and initialisation, train/eval behaviour, and a
//! training loop over `Module::parameters`.

use metajit::nn::functional as F;
use metajit::nn::{
    Activation, BatchNorm2d, Dropout, Embedding, Flatten, LayerNorm, Linear, Module, Sequential,
};
use metajit::{Tensor, no_grad};

/// The random generator's seed counter is process-wide: the tests of this binary take turns,
/// so that `manual_seed` fixes what each one draws.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    SEEDED.lock().unwrap_or_else(|p| p.into_inner())
}

fn names(v: &[(String, Tensor)]) -> Vec<&str> {
    v.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn parameter_and_buffer_names_follow_pytorch() {
    let _turn = turn();
    let net = Sequential::new()
        .add(Linear::new(6, 4))
        .add(BatchNorm2d::new(4))
        .add(Activation::ReLU)
        .add(Flatten::default())
        .add(Linear::with_bias(4, 2, false));
    assert_eq!(
        names(&net.named_parameters()),
        ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight"]
    );
    assert_eq!(
        names(&net.named_buffers()),
        ["1.running_mean", "1.running_var"]
    );
    assert_eq!(net.state_dict().len(), 7);
    assert_eq!(net.parameters().len(), 5);
    assert!(
        net.parameters()
            .iter()
            .all(|p| p.requires_grad() && p.is_leaf() && p.is_realized())
    );
}

#[test]
fn linear_initialisation_is_pytorchs_and_seeded() {
    let _turn = turn();
    metajit::manual_seed(5);
    let a = Linear::new(400, 300);
    let w = a.weight.to_vec::<f32>().unwrap();
    let bound = 1.0 / 400f32.sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    let var = w.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / w.len() as f32;
    // U(-b, b): mean 0, variance b²/3.
    assert!(mean.abs() < 0.02 * bound, "mean {mean}");
    assert!(
        (var / (bound * bound / 3.0) - 1.0).abs() < 0.02,
        "variance {var}"
    );
    let b = a.bias.as_ref().unwrap().to_vec::<f32>().unwrap();
    assert!(b.iter().all(|v| v.abs() <= bound));
    metajit::manual_seed(5);
    let again = Linear::new(400, 300);
    assert_eq!(
        again.weight.to_vec::<f32>().unwrap(),
        w,
        "the same seed, the same init"
    );
}

#[test]
fn modules_match_their_functional_forms() {
    let _turn = turn();
    metajit::manual_seed(1);
    let x = Tensor::randn([3, 5]);
    let lin = Linear::new(5, 4);
    let got = lin.forward(&x).to_vec::<f32>().unwrap();
    let functional = F::linear(&x, &lin.weight, lin.bias.as_ref());
    assert_eq!(got, functional.to_vec::<f32>().unwrap());
    // And the definition, x @ Wᵀ + b (the GEMM may add in another order: within rounding).
    let want = x.matmul(&lin.weight.t()) + lin.bias.as_ref().unwrap();
    for (g, w) in got.iter().zip(want.to_vec::<f32>().unwrap()) {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
    }
    let ln = LayerNorm::new(&[5]);
    assert_eq!(
        ln.forward(&x).to_vec::<f32>().unwrap(),
        F::layer_norm(&x, &[5], None, None, 1e-5)
            .to_vec::<f32>()
            .unwrap()
    );
    let e = Embedding::new(6, 3, Some(2));
    let rows = e.weight.to_vec::<f32>().unwrap();
    assert_eq!(
        &rows[6..9],
        &[0.0, 0.0, 0.0],
        "the padding row starts at zero"
    );
    let y = e.forward(&Tensor::from_slice(&[2i64, 5]));
    assert_eq!(y.dims(), &[2, 3]);
}

#[test]
fn train_and_eval_modes() {
    let _turn = turn();
    let d = Dropout::new(0.5);
    let x = Tensor::ones([1000]);
    let dropped = d.forward(&x).to_vec::<f32>().unwrap();
    assert!(dropped.contains(&0.0) && dropped.contains(&2.0));
    d.eval();
    assert_eq!(d.forward(&x).to_vec::<f32>().unwrap(), vec![1.0; 1000]);

    metajit::manual_seed(3);
    let bn = BatchNorm2d::new(2);
    let x = Tensor::randn([4, 2, 3, 3]) * 2.0 + 1.0;
    let y = bn.forward(&x);
    // Training: per-channel batch statistics, and the running stats move towards them.
    let (rm, rv) = (bn.running_mean.clone(), bn.running_var.clone());
    metajit::realize_all(&[&y, &rm, &rv]).unwrap();
    let m = x.mean([0, 2, 3], false).to_vec::<f32>().unwrap();
    let got = rm.to_vec::<f32>().unwrap();
    for c in 0..2 {
        assert!((got[c] - 0.1 * m[c]).abs() < 1e-5, "{got:?} vs {m:?}");
    }
    let ym = y.mean([0, 2, 3], false).to_vec::<f32>().unwrap();
    assert!(ym.iter().all(|v| v.abs() < 1e-5), "normalised mean {ym:?}");
    // Evaluation: the running statistics.
    let net = Sequential::new().add(bn);
    net.eval();
    let z = net.forward(&x).to_vec::<f32>().unwrap();
    let want = F::batch_norm(&x, Some(&rm), Some(&rv), None, None, false, 0.1, 1e-5)
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(z, want);
}

#[test]
fn a_sequential_mlp_trains_with_a_hand_written_sgd_step() {
    let _turn = turn();
    metajit::manual_seed(11);
    let net = Sequential::new()
        .add(Linear::new(8, 16))
        .add(Activation::Tanh)
        .add(Linear::new(16, 3));
    let x = Tensor::randn([64, 8]);
    let labels = x.narrow(1, 0, 3).argmax(1, false);
    metajit::realize_all(&[&x, &labels]).unwrap();
    let params = net.parameters();
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = F::cross_entropy(&net.forward(&x), &labels, &Default::default());
        loss.backward();
        no_grad(|| {
            for p in &params {
                let g = p.grad().expect("a gradient");
                p.assign(&(p - &g * 0.5));
                p.zero_grad();
            }
        });
        let mut all: Vec<&Tensor> = vec![&loss];
        all.extend(params.iter());
        metajit::realize_all(&all).unwrap();
        losses.push(loss.item::<f32>().unwrap());
    }
    assert!(losses[29] < 0.5 * losses[0], "losses {losses:?}");
    // The module sees the updated parameters (the optimizer and it share the handles).
    assert_eq!(
        net.parameters()[0].to_vec::<f32>().unwrap(),
        params[0].to_vec::<f32>().unwrap()
    );
}

#[test]
fn a_small_cnn_has_pytorchs_names_and_init_and_trains() {
    let _turn = turn();
    use metajit::nn::{Conv2d, MaxPool2d};
    metajit::manual_seed(4);
    let net = Sequential::new()
        .add(Conv2d::new(1, 4, 3))
        .add(Activation::ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten::default())
        .add(Linear::new(4 * 3 * 3, 2));
    assert_eq!(
        names(&net.named_parameters()),
        ["0.weight", "0.bias", "4.weight", "4.bias"]
    );
    let w = net.parameters()[0].to_vec::<f32>().unwrap();
    assert!(
        w.iter().all(|v| v.abs() <= 1.0 / 3.0),
        "fan-in 9: bound 1/3"
    );
    // Two classes: a bright top half or a bright bottom half.
    let mut data = Vec::new();
    let mut labels = Vec::new();
    for i in 0..32 {
        let top = i % 2 == 0;
        for r in 0..8 {
            for _ in 0..8 {
                data.push(if (r < 4) == top { 1.0f32 } else { 0.0 });
            }
        }
        labels.push(i64::from(!top));
    }
    let x = Tensor::from_vec(data, [32, 1, 8, 8]);
    let y = Tensor::from_vec(labels, [32]);
    let params = net.parameters();
    let mut last = f32::INFINITY;
    for _ in 0..40 {
        let loss = F::cross_entropy(&net.forward(&x), &y, &Default::default());
        loss.backward();
        no_grad(|| {
            for p in &params {
                let g = p.grad().expect("a gradient");
                p.assign(&(p - &g * 0.2));
                p.zero_grad();
            }
        });
        let mut all: Vec<&Tensor> = vec![&loss];
        all.extend(params.iter());
        metajit::realize_all(&all).unwrap();
        last = loss.item::<f32>().unwrap();
    }
    assert!(last < 0.1, "final loss {last}");
}

#[test]
fn state_dicts_round_trip_through_safetensors_with_clear_errors() {
    let _turn = turn();
    use metajit::nn::BatchNorm2d;
    let dir = std::env::temp_dir().join(format!("metajit-nn-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("net.safetensors");
    metajit::manual_seed(8);
    let make = || {
        Sequential::new()
            .add(Linear::new(3, 4))
            .add(BatchNorm2d::new(4))
    };
    let a = make();
    a.save(&path).unwrap();
    let b = make(); // different values
    assert_ne!(
        a.parameters()[0].to_vec::<f32>().unwrap(),
        b.parameters()[0].to_vec::<f32>().unwrap()
    );
    b.load_state_dict(&path).unwrap();
    for ((na, ta), (nb, tb)) in a.state_dict().iter().zip(b.state_dict().iter()) {
        assert_eq!(na, nb);
        assert_eq!(
            ta.to_vec::<f32>().unwrap(),
            tb.to_vec::<f32>().unwrap(),
            "{na}"
        );
    }
    assert!(
        b.parameters()
            .iter()
            .all(|p| p.requires_grad() && p.is_leaf())
    );
    // A model with another shape: the error names the tensor and both shapes; nothing changes.
    let other = Sequential::new()
        .add(Linear::new(3, 5))
        .add(BatchNorm2d::new(5));
    let before = other.parameters()[0].to_vec::<f32>().unwrap();
    let e = other.load_state_dict(&path).unwrap_err().to_string();
    assert!(
        e.contains("0.weight") && e.contains("[4, 3]") && e.contains("[5, 3]"),
        "{e}"
    );
    assert_eq!(other.parameters()[0].to_vec::<f32>().unwrap(), before);
    // A missing file names the file.
    let e = a
        .load_state_dict(&dir.join("missing.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
