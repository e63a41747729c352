//! Times W2 (row softmax of 4096x4096, the bench's four-op form), W3 (sum of 2^24) and a sum
//! of 2^20 (in cache) in compiled mode: minimum and median of many runs, for A/B comparisons
//! on a busy machine (alternate two builds; `METAJIT_THREADS=1` steadies them):
//! `cargo run --release --example softmax_time [reps] [W2,W3,L3]`.

use std::time::Instant;

use metajit::Tensor;

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn time(reps: usize, f: &dyn Fn() -> Tensor) -> (f64, f64) {
    f().realize().unwrap_or_else(|e| panic!("{e}"));
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let y = f();
        let t0 = Instant::now();
        y.realize().unwrap_or_else(|e| panic!("{e}"));
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    stats(t)
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let which = std::env::args().nth(2).unwrap_or_else(|| "W2,W3,L3".into());
    if which.contains("W2") {
        let x = Tensor::randn([4096, 4096]);
        x.realize().unwrap_or_else(|e| panic!("{e}"));
        let (mn, md) = time(reps, &|| {
            let m = x.max(1, true);
            let e = (&x - &m).exp();
            let s = e.sum(1, true);
            &e / &s
        });
        println!("W2 softmax 4096x4096: min {mn:.3} ms  median {md:.3} ms");
    }
    if which.contains("L3") {
        let x = Tensor::randn([1usize << 20]);
        x.realize().unwrap_or_else(|e| panic!("{e}"));
        let (mn, md) = time(reps * 10, &|| x.sum(0, false));
        println!(
            "sum 2^20 (in cache): min {:.1} us  median {:.1} us",
            mn * 1e3,
            md * 1e3
        );
    }
    if which.contains("W3") {
        let x = Tensor::randn([1usize << 24]);
        x.realize().unwrap_or_else(|e| panic!("{e}"));
        let (mn, md) = time(reps, &|| x.sum(0, false));
        println!("W3 sum 2^24: min {mn:.3} ms  median {md:.3} ms");
    }
}
