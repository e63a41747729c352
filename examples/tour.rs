//! A short tour of metajit's Tensor API: creation, broadcasting, math, reductions, printing,
//! and a look at the meta-op graph behind it.
//!
//! Run it with `cargo run --release --example tour`; add `METAJIT_DEBUG=3` to see each graph
//! as it is realized.

use metajit::{DType, Tensor};

fn main() -> metajit::Result<()> {
    metajit::manual_seed(0);

    // Creation: everything is lazy until a value is needed.
    let x = Tensor::arange_f32(-2.0, 2.0, 0.5).reshape([2, 4]);
    let w = Tensor::randn([4, 3]);
    println!("x =\n{x}\n");

    // Element-wise math with PyTorch broadcasting; the W1 workload of the benchmarks:
    let y = (&x * 1.5 + 0.5).relu() * x.sigmoid() + x.tanh();
    println!("relu(x*1.5+0.5) * sigmoid(x) + tanh(x) =\n{y}\n");

    // A matrix product: matmul lowers to reduce(sum, broadcast * broadcast), which the
    // scheduler recognises as a contraction and runs as one GEMM call.
    let prod = x.matmul(&w);
    println!("x @ w =\n{prod}\n");

    // Reductions with axes and keepdim; argmax; a stable logsumexp.
    println!("row sums      = {}", x.sum(1, false));
    println!("column means  = {}", x.mean(0, true));
    println!("argmax(row)   = {}", x.argmax(-1, false));
    println!(
        "logsumexp     = {}",
        Tensor::from_slice(&[80.0f32, -80.0, 0.0]).logsumexp(0, false)
    );

    // Shape ops are index rewrites (Reindex meta-ops), not copies.
    let t = x.transpose(0, 1).flip([0]);
    println!("flip(transpose(x)) =\n{t}\n");
    let parts = Tensor::cat(&[&x, &x.neg()], 0);
    println!("cat([x, -x]) has shape {:?}", parts.shape());

    // Integer tensors, casting and one-hot encoding.
    let labels = Tensor::from_vec(vec![3i64, 0, 2], [3]);
    println!("one_hot(labels, 4) =\n{}", labels.one_hot(4));
    println!("labels as f32 / 2 = {}", labels.cast(DType::F32).div(2.0));

    // Values come back to Rust as Vecs or scalars.
    let total: f32 = y.sum_all().item()?;
    println!("\nsum(y) = {total}");

    // What the executor did: graphs fused into kernels, each compiled once to native code and
    // kept in the kernel cache (a second run loads them from disk instead).
    let s = metajit::stats();
    let c = metajit::cache_stats();
    println!(
        "\n{} kernel launches, {} kernels compiled in {:.1} ms, {} loaded from the disk cache, {} plans reused",
        s.kernel_runs,
        s.kernels_compiled,
        s.compile_ns as f64 / 1e6,
        c.disk_hits,
        s.plan_hits
    );
    Ok(())
}
