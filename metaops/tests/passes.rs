//! Properties of the text form and the simplification passes over random graphs
//! (`r#gen::random_graph`): the printer and parser round-trip, `simplify` yields a verified
//! graph that is its own fixpoint, and the reference interpreter computes the same outputs
//! before and after (bitwise, except that any NaN equals any NaN).

use std::cell::RefCell;

use metajit_metaops::r#gen::{GenConfig, random_graph};
use metajit_metaops::interp;
use metajit_metaops::parse::parse;
use metajit_metaops::passes::{PassCx, simplify};
use metajit_metaops::print::print;
use metajit_metaops::{Graph, HostData, verify};
use proptest::prelude::*;

fn checked() -> PassCx<'static> {
    PassCx {
        verify: true,
        trace: None,
    }
}

/// Runs `g` on the interpreter.
fn run(g: &Graph, inputs: &[HostData]) -> Vec<HostData> {
    let refs: Vec<&HostData> = inputs.iter().collect();
    interp::run(g, &refs).unwrap_or_else(|e| panic!("interp failed: {e}\n{g}"))
}

/// Why two buffers differ, if they do: dtypes, lengths, or the first element whose bits differ
/// (two NaNs are equal whatever their payloads).
fn difference(a: &HostData, b: &HostData) -> Option<String> {
    if a.dtype() != b.dtype() || a.len() != b.len() {
        return Some(format!(
            "{} x {} vs {} x {}",
            a.dtype(),
            a.len(),
            b.dtype(),
            b.len()
        ));
    }
    (0..a.len()).find_map(|i| {
        let (x, y) = (a.get(i), b.get(i));
        let same = x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        (!same).then(|| format!("element {i}: {x} vs {y}"))
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn print_then_parse_is_identity(seed in any::<u64>()) {
        let (g, _) = random_graph(seed, &GenConfig::default());
        let text = print(&g);
        let back = parse(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        prop_assert_eq!(back, g, "seed {}:\n{}", seed, text);
    }

    #[test]
    fn simplify_verifies_shrinks_and_is_a_fixpoint(seed in any::<u64>()) {
        let (g, _) = random_graph(seed, &GenConfig::default());
        let s = simplify(&g, &checked());
        if let Err(e) = verify(&s) {
            panic!("seed {seed}: {e}");
        }
        prop_assert!(s.nodes.len() <= g.nodes.len(), "seed {}", seed);
        prop_assert_eq!(s.outputs.len(), g.outputs.len());
        prop_assert_eq!(&simplify(&s, &checked()), &s, "seed {}: not a fixpoint", seed);
        // Folded NaNs are canonical, so the simplified graph's text is faithful too.
        prop_assert_eq!(&parse(&print(&s)).expect("simplified graph parses"), &s);
    }

    #[test]
    fn simplify_preserves_values(seed in any::<u64>()) {
        let (g, inputs) = random_graph(seed, &GenConfig::default());
        let s = simplify(&g, &checked());
        let (before, after) = (run(&g, &inputs), run(&s, &inputs));
        prop_assert_eq!(before.len(), g.outputs.len(), "seed {}", seed);
        prop_assert_eq!(after.len(), before.len(), "seed {}", seed);
        for (k, (a, b)) in before.iter().zip(&after).enumerate() {
            if let Some(d) = difference(a, b) {
                panic!("seed {seed}, output {k}: {d}\nbefore:\n{g}after:\n{s}");
            }
        }
    }
}

#[test]
fn trace_sees_every_pass_of_every_round() {
    let text = "\
%0 = input #0 : f32[4]
%1 = const 1.0 : f32[4]
%2 = mul %0, %1 : f32[4]
%3 = abs %2 : f32[4]
%4 = abs %0 : f32[4]
%5 = add %3, %4 : f32[4]
return %5
";
    let g = parse(text).expect("parses");
    let seen = RefCell::new(Vec::new());
    let hook = |t: &metajit_metaops::passes::PassTrace<'_>| {
        seen.borrow_mut()
            .push((t.round, t.pass, t.changed, t.graph.to_string()));
    };
    let cx = PassCx {
        verify: true,
        trace: Some(&hook),
    };
    let s = simplify(&g, &cx);
    let seen = seen.into_inner();
    let names: Vec<_> = seen.iter().map(|(r, p, c, _)| (*r, *p, *c)).collect();
    assert_eq!(
        names,
        [
            (0, "fold constants", true),
            (0, "cse", true),
            (0, "dce", true),
            (1, "fold constants", false),
            (1, "cse", false),
            (1, "dce", false),
        ]
    );
    assert_eq!(seen.last().map(|t| t.3.clone()), Some(s.to_string()));
    assert_eq!(
        s.to_string(),
        "%0 = input #0 : f32[4]\n%1 = abs %0 : f32[4]\n%2 = add %1, %1 : f32[4]\nreturn %2\n"
    );
}

#[test]
#[should_panic(expected = "pass `break outputs` changed the graph's interface")]
fn the_driver_catches_a_pass_that_breaks_the_interface() {
    struct BreakOutputs;
    impl metajit_metaops::passes::Pass for BreakOutputs {
        fn name(&self) -> &'static str {
            "break outputs"
        }
        fn run(&self, g: &Graph) -> Option<Graph> {
            let mut g = g.clone();
            g.outputs.pop();
            Some(g)
        }
    }
    let g = parse("%0 = input #0 : f32[2]\nreturn %0, %0\n").expect("parses");
    metajit_metaops::passes::run_pipeline(&g, &[&BreakOutputs], &checked());
}
