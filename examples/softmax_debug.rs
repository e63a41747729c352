//! Prints how a row softmax is scheduled: `METAJIT_DEBUG=2 cargo run --release --example softmax_debug`.
use metajit::Tensor;

fn main() -> metajit::Result<()> {
    let x = Tensor::randn([4, 8]);
    let m = x.max(-1, true);
    let e = (&x - &m).exp();
    let p = &e / e.sum(-1, true);
    p.realize()?;
    println!("{p}");
    Ok(())
}
