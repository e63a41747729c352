//! Times a narrow + element-wise kernel on a large tensor against the same element-wise kernel
//! on a contiguous tensor of the narrowed size (ratios, measured in one run), and counts
//! compiles and plan misses when the narrow's start moves:
//! `cargo run --release --example narrow_bench`.

use std::time::Instant;

use metajit::Tensor;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn f(x: &Tensor) -> Tensor {
    (x * 1.5 + 0.5).relu()
}

fn run(t: Tensor) {
    t.realize().unwrap_or_else(|e| panic!("{e}"));
}

fn main() {
    metajit::set_cache_mode(metajit::CacheMode::Memory);
    let (rows, cols, take) = (8192usize, 2048usize, 4096usize);
    let x = Tensor::randn([rows, cols]);
    let y = Tensor::randn([take, cols]);
    let yt = Tensor::randn([rows, take / 4]);
    metajit::realize_all(&[&x, &y, &yt]).unwrap_or_else(|e| panic!("{e}"));
    let reps = 31;
    let time = |g: &dyn Fn(usize) -> Tensor| {
        run(g(reps)); // warm up: compile
        let mut t = Vec::new();
        for r in 0..reps {
            let t0 = Instant::now();
            run(g(r));
            t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        median(t)
    };
    let row_start = |r: usize| (r * 37 % (rows - take)) as isize;
    let col_start = |r: usize| (r * 13 % (cols - take / 4)) as isize;
    let contiguous = time(&|_| f(&y));
    let rows_fixed = time(&|_| f(&x.narrow(0, 1024, take)));
    let before = metajit::stats();
    let rows_moving = time(&|r| f(&x.narrow(0, row_start(r), take)));
    let after = metajit::stats();
    let contiguous_cols = time(&|_| f(&yt));
    let cols_moving = time(&|r| f(&x.narrow(1, col_start(r), take / 4)));
    // All of x (twice the elements): the same rows as the column narrow, read whole.
    let whole = time(&|_| f(&x)) / 2.0;
    // A minibatch of an MLP's input times its first weight: [128, 784] @ [784, 512].
    let data = Tensor::randn([1024, 784]);
    let batch = Tensor::randn([128, 784]);
    let w = Tensor::randn([784, 512]);
    metajit::realize_all(&[&data, &batch, &w]).unwrap_or_else(|e| panic!("{e}"));
    let mm_contiguous = time(&|_| batch.matmul(&w));
    let mm_narrow = time(&|r| data.narrow(0, (r % 8 * 128) as isize, 128).matmul(&w));
    let gbs = |ms: f64, n: usize| (2 * n * 4) as f64 / ms / 1e6;
    let n = take * cols;
    println!("{n} f32 elements per run, median of {reps} runs");
    let line = |what: &str, ms: f64, base: f64| {
        println!(
            "{what:34} {ms:8.3} ms {:6.1} GB/s  ratio {:.2}",
            gbs(ms, n),
            ms / base
        )
    };
    line("f(y) contiguous [4096, 2048]", contiguous, contiguous);
    line("f(x.narrow(0, 1024, 4096))", rows_fixed, contiguous);
    line("f(x.narrow(0, moving, 4096))", rows_moving, contiguous);
    line(
        "f(yt) contiguous [8192, 1024]",
        contiguous_cols,
        contiguous_cols,
    );
    line("f(x.narrow(1, moving, 1024))", cols_moving, contiguous_cols);
    line("f(x) [8192, 2048], per 8M elements", whole, contiguous_cols);
    let gflops = |ms: f64| 2.0 * 128.0 * 784.0 * 512.0 / ms / 1e6;
    println!(
        "{:34} {mm_contiguous:8.3} ms {:6.1} GFLOP/s",
        "batch @ w [128,784]@[784,512]",
        gflops(mm_contiguous)
    );
    println!(
        "{:34} {mm_narrow:8.3} ms {:6.1} GFLOP/s  ratio {:.2}",
        "data.narrow(0, moving, 128) @ w",
        gflops(mm_narrow),
        mm_narrow / mm_contiguous
    );
    println!(
        "moving row start: {} kernels compiled, {} plan misses, {} plan hits",
        after.kernels_compiled - before.kernels_compiled,
        after.plan_misses - before.plan_misses,
        after.plan_hits - before.plan_hits
    );
}
