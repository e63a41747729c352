//! Cache keys over random kernels: a key is a function of the kernel and the target, and
//! anything that could change the code changes it (DESIGN §6).

use std::collections::HashMap;

use metajit::kernel_cache_key;
use metajit::metaops::DType;
use metajit::metaops::r#gen::{GenConfig, random_graph};
use metajit::metaops::kernel::Kernel;
use metajit::metaops::schedule::{Step, schedule};
use metajit_codegen::cpu::jit::target_description;
use proptest::prelude::*;

/// The kernels of the compiled schedule of random graph `seed`.
fn kernels(seed: u64) -> Vec<Kernel> {
    let (g, _) = random_graph(seed, &GenConfig::default());
    let g = metajit::metaops::passes::simplify(&g, &Default::default());
    schedule(&g)
        .steps
        .into_iter()
        .filter_map(|s| match s {
            Step::Kernel { kernel, .. } => Some(kernel),
            _ => None,
        })
        .collect()
}

fn key(k: &Kernel) -> metajit::cache::Key {
    kernel_cache_key("cpu", &target_description(), k)
}

/// Another dtype of the same class, for mutating a buffer parameter.
fn other_dtype(d: DType) -> DType {
    match d {
        DType::F32 => DType::F64,
        DType::F64 => DType::F32,
        DType::I32 => DType::I64,
        DType::I64 => DType::I32,
        DType::Bool => DType::U8,
        _ => DType::F32,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Same kernel, same key; the key sees dtypes, loop structure, the backend and every ISA
    /// flag.
    #[test]
    fn keys_follow_the_kernel_and_the_target(seed in any::<u64>()) {
        let identity = target_description();
        for k in kernels(seed) {
            let base = key(&k);
            prop_assert_eq!(base, key(&k.clone()));
            prop_assert_ne!(base, kernel_cache_key("cuda", &identity, &k));
            // An ISA flag turned off, or one more: another key.
            let toggled = if identity.contains("=true") {
                identity.replacen("=true", "=false", 1)
            } else {
                format!("{identity} has_extra=true")
            };
            prop_assert_ne!(base, kernel_cache_key("cpu", &toggled, &k));
            if let Some(b) = k.bufs.first() {
                let mut m = k.clone();
                m.bufs[0].dtype = other_dtype(b.dtype);
                prop_assert_ne!(base, key(&m));
            }
            let mut m = k.clone();
            m.parallel = !m.parallel;
            prop_assert_ne!(base, key(&m));
            if !m.phases.is_empty() {
                let mut m = k.clone();
                m.phases.swap(0, k.phases.len() - 1);
                prop_assert_eq!(m == k, key(&m) == base);
            }
        }
    }
}

/// Across many random kernels: equal keys exactly for equal kernels (the key's text is a
/// faithful serialisation, so a key never names two different kernels).
#[test]
fn keys_are_injective_over_random_kernels() {
    let mut by_key: HashMap<metajit::cache::Key, Kernel> = HashMap::new();
    let mut kernels_seen = 0;
    for seed in 0..300u64 {
        for k in kernels(seed) {
            kernels_seen += 1;
            if let Some(prev) = by_key.get(&key(&k)) {
                assert_eq!(prev, &k, "two kernels share a key");
            } else {
                by_key.insert(key(&k), k);
            }
        }
    }
    assert!(
        by_key.len() > 100,
        "{} distinct kernels of {kernels_seen}",
        by_key.len()
    );
}

/// The eager schedule (one kernel per op) and the fused one differ in structure and in keys.
#[test]
fn fusion_structure_changes_the_key() {
    use metajit::metaops::{Graph, Node, Op, Shape, UnaryOp};
    let mut g = Graph::new();
    let shape = Shape::from(vec![8, 4]);
    let x = g
        .push(Node {
            op: Op::Input { slot: 0 },
            inputs: vec![],
            dtype: DType::F32,
            shape: shape.clone(),
        })
        .expect("input");
    let e = g
        .push(Node {
            op: Op::Unary(UnaryOp::Exp),
            inputs: vec![x],
            dtype: DType::F32,
            shape: shape.clone(),
        })
        .expect("exp");
    let t = g
        .push(Node {
            op: Op::Unary(UnaryOp::Tanh),
            inputs: vec![e],
            dtype: DType::F32,
            shape: shape.clone(),
        })
        .expect("tanh");
    let mut fused = g.clone();
    fused.outputs = vec![t];
    let mut split = g;
    split.outputs = vec![e, t];
    let keys = |g: &Graph| -> Vec<_> {
        schedule(g)
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Kernel { kernel, .. } => Some(key(kernel)),
                _ => None,
            })
            .collect()
    };
    let (kf, ks) = (keys(&fused), keys(&split));
    assert_eq!(kf.len(), 1);
    assert!(ks.iter().all(|k| !kf.contains(k)), "{kf:?} {ks:?}");
}
