//! Laziness and realization: nothing runs until a value is needed; realizing stores results,
//! computes values the user still holds once, and frees inputs; deep graphs neither overflow
//! the stack when dropped nor when realized.

use metajit::Tensor;

#[test]
fn ops_are_recorded_not_run() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]);
    let y = x.exp().add(1.0);
    assert!(x.is_realized(), "from_vec holds data");
    assert!(!y.is_realized(), "ops are lazy");
    assert_eq!(format!("{y:?}"), "Tensor[f32; 3] (lazy)");
    y.realize().unwrap();
    assert!(y.is_realized());
    assert_eq!(format!("{y:?}"), "Tensor[f32; 3] (realized)");
}

#[test]
fn only_the_requested_value_is_computed() {
    let x = Tensor::from_vec(vec![1.0f32, -2.0], [2]);
    let h = x.mul(2.0); // the user keeps `h`
    let out = h.relu().sum_all();
    assert_eq!(out.item::<f32>().unwrap(), 2.0);
    assert!(!h.is_realized(), "intermediates are fused, not stored");
    // Reading it later computes it then.
    assert_eq!(h.to_vec::<f32>().unwrap(), vec![2.0, -4.0]);
    assert!(h.is_realized());
}

#[test]
fn temporaries_are_not_stored() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]);
    let out = x.mul(2.0).add(1.0).sum_all(); // temporaries dropped at the end of the statement
    assert_eq!(out.item::<f32>().unwrap(), 8.0);
}

#[test]
fn realize_all_computes_shared_work_once() {
    let x = Tensor::from_vec(vec![3.0f32, 4.0], [2]);
    let sq = x.square();
    let a = sq.sum_all();
    let b = sq.max_all();
    let before = metajit::stats().kernel_runs;
    metajit::realize_all(&[&a, &b]).unwrap();
    assert!(a.is_realized() && b.is_realized());
    // One graph: `sq` is fused into the kernels, not stored.
    assert!(!sq.is_realized());
    assert!(metajit::stats().kernel_runs > before);
    assert_eq!(a.item::<f32>().unwrap(), 25.0);
    assert_eq!(b.item::<f32>().unwrap(), 16.0);
}

#[test]
fn deep_lazy_chains_drop_and_realize_without_overflow() {
    // Run in a thread with a small stack so that a recursive drop would fail here.
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let one = Tensor::scalar(1.0f32);
            let mut total = Tensor::scalar(0.0f32);
            for _ in 0..100_000 {
                total = total.add(&one);
            }
            drop(total);
            let mut total = Tensor::scalar(0i64);
            for _ in 0..20_000 {
                total = total.add(1);
            }
            assert_eq!(total.item::<i64>().unwrap(), 20_000);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn tensors_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tensor>();
    let x = Tensor::arange(0, 4, 1);
    let h = std::thread::spawn(move || x.sum_all().item::<i64>().unwrap());
    assert_eq!(h.join().unwrap(), 6);
}

/// Simplified graphs are remembered by the exact graph, constants' bits included: graphs that
/// differ only in a constant (even +0.0 against -0.0) are simplified apart.
#[test]
fn graphs_differing_only_in_a_constant_are_not_confused() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]);
    let pos = (&x * 0.0f64).recip().exp();
    let neg = (&x * -0.0f64).recip().exp();
    assert_eq!(pos.to_vec::<f32>().unwrap(), vec![f32::INFINITY; 2]);
    assert_eq!(neg.to_vec::<f32>().unwrap(), vec![0.0; 2]);
    // The same graph again (a remembered simplification) gives the same values.
    let again = (&x * -0.0f64).recip().exp();
    assert_eq!(again.to_vec::<f32>().unwrap(), vec![0.0; 2]);
    for c in [1.0f64, 2.0, 0.5] {
        let y = (&x * c + 1.0).sqrt();
        let want: Vec<f32> = [1.0f32, 2.0]
            .iter()
            .map(|v| (v * c as f32 + 1.0).sqrt())
            .collect();
        assert_eq!(y.to_vec::<f32>().unwrap(), want, "c = {c}");
    }
}
