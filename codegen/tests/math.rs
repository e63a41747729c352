//! Accuracy and edge-case tests of the inline transcendentals (`metajit_codegen::cpu::math`).
//!
//! Every function is JIT-compiled into a loop `fn(src, dst, n)` over `f32x4` (and over `f32`,
//! for the scalar tail form) in two configurations: the host ISA with FMA when it has it, and
//! baseline x86-64 (SSE2, no FMA) with the multiply-add path. Results are compared with `f64`
//! references in ulps of the correctly rounded `f32` result. Run with `--nocapture` to see the
//! measured table.

use std::collections::HashMap;
use std::sync::OnceLock;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, BlockArg, InstBuilder, MemFlagsData, Type, types};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use metajit_codegen::cpu::math::{MathFn, const_table, emit_fma, emit_unary_with, isa_has_fma};
use proptest::prelude::*;

mod gpu_common;

/// `fn(src, dst, n, table)`: `table` is the address of `const_table()`'s entries.
type Kernel = unsafe extern "C" fn(*const f32, *mut f32, i64, *const u8);

/// A code-generation configuration.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Config {
    /// The host ISA, with FMA if the host has it.
    Native,
    /// Baseline x86-64 (or the host without inferred features), no FMA.
    Baseline,
}

const CONFIGS: [Config; 2] = [Config::Native, Config::Baseline];

fn make_isa(config: Config) -> OwnedTargetIsa {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").unwrap();
    let isa_builder = cranelift_native::builder_with_options(config == Config::Native).unwrap();
    isa_builder.finish(settings::Flags::new(flags)).unwrap()
}

struct Compiled {
    f: Kernel,
    /// Relocations in the function's code.
    relocs: usize,
    /// Machine instructions in the function.
    insts: usize,
    /// Of which instructions with a memory operand (constant loads, spills and reloads, and
    /// the kernel's own load and store).
    mem_operands: usize,
}

/// How a kernel is emitted.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Form {
    /// `f32x4`, constants from the constant table (as the kernels of `lower.rs` do).
    Vector,
    /// `f32x4`, constants from the function's constant pool.
    VectorPool,
    /// `f32` (the loop-tail form).
    Scalar,
}

const FORMS: [Form; 3] = [Form::Vector, Form::VectorPool, Form::Scalar];

struct Kernels {
    has_fma: HashMap<Config, bool>,
    /// (function or identity, form, config) -> kernel.
    table: HashMap<(Option<MathFn>, Form, Config), Compiled>,
}

/// Builds `fn(src: *const f32, dst: *mut f32, n: i64, table: *const u8)` applying `f`
/// (identity for `None`) to `n` elements (`n` a multiple of the lane count). With `table`, the
/// constants are loaded from `table`, carried around the loop as a block parameter (as
/// `lower.rs` does).
fn build_kernel(
    module: &mut JITModule,
    f: Option<MathFn>,
    ty: Type,
    has_fma: bool,
    table: bool,
    name: &str,
) -> (cranelift_module::FuncId, usize, usize, usize) {
    let frontend_config = module.isa().frontend_config();
    let mut ctx = module.make_context();
    ctx.set_disasm(true);
    let ptr = types::I64;
    for _ in 0..4 {
        ctx.func.signature.params.push(AbiParam::new(ptr));
    }
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        let header = b.create_block();
        let i = b.append_block_param(header, ptr);
        let t = b.append_block_param(header, ptr);
        let body = b.create_block();
        let exit = b.create_block();

        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let (src, dst, n, t0) = (params[0], params[1], params[2], params[3]);
        let zero = b.ins().iconst(ptr, 0);
        b.ins()
            .jump(header, &[BlockArg::Value(zero), BlockArg::Value(t0)]);

        b.switch_to_block(header);
        let more = b.ins().icmp(IntCC::SignedLessThan, i, n);
        b.ins().brif(more, body, &[], exit, &[]);

        b.switch_to_block(body);
        let off = b.ins().ishl_imm_u(i, 2);
        let s = b.ins().iadd(src, off);
        let d = b.ins().iadd(dst, off);
        let flags = MemFlagsData::trusted();
        let x = b.ins().load(ty, flags, s, 0);
        let y = match f {
            Some(f) => emit_unary_with(&mut b, f, ty, x, has_fma, table.then_some(t)),
            None => x,
        };
        b.ins().store(flags, y, d, 0);
        let next = b.ins().iadd_imm_s(i, i64::from(ty.lane_count()));
        // t + 0: a distinct value for Cranelift's constant-phi removal (see `emit_unary_with`).
        let t_next = b.ins().iadd_imm_s(t, 0);
        b.ins()
            .jump(header, &[BlockArg::Value(next), BlockArg::Value(t_next)]);

        b.switch_to_block(exit);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(frontend_config);
    }
    let id = module
        .declare_function(name, Linkage::Local, &ctx.func.signature)
        .unwrap();
    module.define_function(id, &mut ctx).unwrap();
    let code = ctx.compiled_code().unwrap();
    let relocs = code.buffer.relocs().len();
    let disasm = code.vcode.as_deref().unwrap_or("");
    let insts = count_insts(disasm);
    let mem_operands = disasm.lines().filter(|l| l.contains("(%")).count();
    if std::env::var("MATH_DISASM").is_ok_and(|v| name.starts_with(&v)) {
        println!("{name}:\n{}", code.vcode.as_deref().unwrap_or(""));
    }
    module.clear_context(&mut ctx);
    (id, relocs, insts, mem_operands)
}

/// Counts instruction lines in Cranelift's disassembly (labels and blank lines excluded).
fn count_insts(disasm: &str) -> usize {
    disasm
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.ends_with(':')
                && !l.starts_with(';')
                && !l.starts_with("uninit")
                && !l.starts_with("unwind")
        })
        .count()
}

fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(|| {
        let mut table = HashMap::new();
        let mut has_fma = HashMap::new();
        for config in CONFIGS {
            let isa = make_isa(config);
            let fma = isa_has_fma(&*isa);
            has_fma.insert(config, fma);
            let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
            let mut ids = Vec::new();
            let fns = std::iter::once(None).chain(MathFn::ALL.into_iter().map(Some));
            for f in fns {
                for form in FORMS {
                    let ty = if form == Form::Scalar {
                        types::F32
                    } else {
                        types::F32X4
                    };
                    let name =
                        format!("{}_{form:?}_{config:?}", f.map_or("identity", MathFn::name),);
                    let table = form == Form::Vector;
                    let (id, relocs, insts, mem_operands) =
                        build_kernel(&mut module, f, ty, fma, table, &name);
                    ids.push(((f, form, config), id, relocs, insts, mem_operands));
                }
            }
            module.finalize_definitions().unwrap();
            for (key, id, relocs, insts, mem_operands) in ids {
                let ptr = module.get_finalized_function(id);
                // SAFETY: the function was built with exactly this signature.
                let f: Kernel = unsafe { std::mem::transmute::<*const u8, Kernel>(ptr) };
                table.insert(
                    key,
                    Compiled {
                        f,
                        relocs,
                        insts,
                        mem_operands,
                    },
                );
            }
            // The code must outlive every test.
            std::mem::forget(module);
        }
        Kernels { has_fma, table }
    })
}

/// Runs `f` over `xs` with the given form (`f32x4` with the constant table, or `f32`) and
/// configuration.
fn run(f: MathFn, vector: bool, config: Config, xs: &[f32]) -> Vec<f32> {
    let form = if vector { Form::Vector } else { Form::Scalar };
    run_form(f, form, config, xs)
}

fn run_form(f: MathFn, form: Form, config: Config, xs: &[f32]) -> Vec<f32> {
    let k = &kernels().table[&(Some(f), form, config)];
    let n = xs.len().div_ceil(4) * 4;
    let mut src = xs.to_vec();
    src.resize(n, 0.0);
    let mut dst = vec![0.0f32; n];
    let table = const_table().entries().as_ptr().cast::<u8>();
    // SAFETY: src and dst hold n elements, a multiple of the lane count; table is the table.
    unsafe { (k.f)(src.as_ptr(), dst.as_mut_ptr(), n as i64, table) };
    dst.truncate(xs.len());
    dst
}

fn reference(f: MathFn, x: f32) -> f64 {
    let x = f64::from(x);
    match f {
        MathFn::Exp => x.exp(),
        MathFn::Log => x.ln(),
        MathFn::Sin => x.sin(),
        MathFn::Cos => x.cos(),
        MathFn::Tanh => x.tanh(),
        MathFn::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        MathFn::Erf => libm::erf(x),
    }
}

/// The error of `got` in units of the last place of the `f32` nearest `want` (subnormal ulp
/// below 2^-126; infinity counts as 2^128). NaN against NaN is 0, against a number infinite.
fn ulp_err(got: f32, want: f64) -> f64 {
    if want.is_nan() || got.is_nan() {
        return if want.is_nan() && got.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let want_f32 = want as f32;
    if want_f32.is_infinite() && got == want_f32 {
        return 0.0;
    }
    let g = if got.is_infinite() {
        got.signum() as f64 * 2f64.powi(128)
    } else {
        f64::from(got)
    };
    let w = if want.is_infinite() {
        want.signum() * 2f64.powi(128)
    } else {
        want
    };
    let a = w.abs().min(f64::from(f32::MAX));
    let ulp = if a < f64::from(f32::MIN_POSITIVE) {
        2f64.powi(-149)
    } else {
        2f64.powi(a.log2().floor() as i32 - 23)
    };
    (g - w).abs() / ulp
}

/// The documented bounds (ulps) asserted over the accurate ranges.
fn bound(f: MathFn, fma: bool) -> f64 {
    match (f, fma) {
        (MathFn::Sin | MathFn::Cos, false) => 2.5,
        _ => 2.0,
    }
}

/// `n` evenly spaced points in [lo, hi].
fn linspace(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f32> {
    (0..n).map(move |i| (lo + (hi - lo) * i as f64 / (n - 1) as f64) as f32)
}

/// `n` floats of both signs, evenly spaced in bit pattern (so evenly spread over binades) with
/// magnitudes in [lo, hi].
fn binades(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
    let (a, b) = (u64::from(lo.to_bits()), u64::from(hi.to_bits()));
    (0..n).flat_map(move |i| {
        let x = f32::from_bits((a + (b - a) * i as u64 / (n as u64 - 1)) as u32);
        [x, -x]
    })
}

/// The floats nearest to k·π/2 for k in `ks`, with two neighbours each side, both signs.
fn near_half_pi_multiples(ks: impl Iterator<Item = u32>) -> impl Iterator<Item = f32> {
    ks.flat_map(|k| {
        let x = (f64::from(k) * std::f64::consts::FRAC_PI_2) as f32;
        (-2i32..=2).flat_map(move |d| {
            let y = f32::from_bits((x.to_bits() as i32 + d) as u32);
            [y, -y]
        })
    })
}

/// The accuracy sweep for `f` (the ranges given in the module documentation).
fn sweep(f: MathFn) -> Vec<f32> {
    let scale = if cfg!(debug_assertions) { 4 } else { 1 };
    let n = 300_000 / scale;
    let m = 50_000 / scale;
    let xs: Vec<f32> = match f {
        MathFn::Exp => linspace(-104.0, 89.0, n)
            .chain(binades(1e-30, 104.0, m))
            .collect(),
        MathFn::Log => binades(f32::from_bits(1), f32::MAX, n)
            .map(f32::abs)
            .chain(linspace(0.5, 2.0, m))
            .chain([f32::from_bits(1), f32::MIN_POSITIVE, f32::MAX, 1.0])
            .collect(),
        MathFn::Sin | MathFn::Cos => linspace(-1e4, 1e4, n)
            .chain(binades(1e-30, 1e4, m))
            .chain(near_half_pi_multiples(1..=6366))
            .collect(),
        MathFn::Tanh | MathFn::Erf => linspace(-20.0, 20.0, n)
            .chain(binades(1e-30, 20.0, m))
            .collect(),
        MathFn::Sigmoid => linspace(-20.0, 20.0, n)
            .chain(linspace(-104.0, -20.0, m))
            .chain(binades(1e-30, 104.0, m))
            .collect(),
    };
    xs
}

#[derive(Default)]
struct Stat {
    max: f64,
    at: f32,
}

fn measure(f: MathFn, vector: bool, config: Config, xs: &[f32], want: &[f64]) -> Stat {
    let got = run(f, vector, config, xs);
    let mut s = Stat::default();
    for ((&x, &g), &w) in xs.iter().zip(&got).zip(want) {
        let e = ulp_err(g, w);
        if e > s.max || e.is_nan() {
            s = Stat { max: e, at: x };
        }
    }
    s
}

#[test]
fn accuracy_sweeps() {
    let k = kernels();
    let mut table = String::from("| function | points | FMA (vector) | no FMA (vector) |\n");
    let mut failures = Vec::new();
    for f in MathFn::ALL {
        let xs = sweep(f);
        let want: Vec<f64> = xs.iter().map(|&x| reference(f, x)).collect();
        let mut cells = HashMap::new();
        for config in CONFIGS {
            let fma = k.has_fma[&config];
            let vec_out = run(f, true, config, &xs);
            // The scalar tail form is the same code, and the constants are the same wherever
            // they come from: bit-identical results.
            for form in [Form::Scalar, Form::VectorPool] {
                let other = run_form(f, form, config, &xs);
                for ((&x, &v), &s) in xs.iter().zip(&vec_out).zip(&other) {
                    assert!(
                        v.to_bits() == s.to_bits() || (v.is_nan() && s.is_nan()),
                        "{}({x:e}) {config:?}: f32x4 gives {v:e}, {form:?} gives {s:e}",
                        f.name()
                    );
                }
            }
            let s = measure(f, true, config, &xs, &want);
            cells.insert(fma, format!("{:.2} (at {:e})", s.max, s.at));
            if s.max.is_nan() || s.max > bound(f, fma) {
                failures.push(format!(
                    "{} {config:?} (fma {fma}): {:.2} ulp at x = {:e} (bound {})",
                    f.name(),
                    s.max,
                    s.at,
                    bound(f, fma)
                ));
            }
        }
        table += &format!(
            "| {} | {} | {} | {} |\n",
            f.name(),
            xs.len(),
            cells.get(&true).map_or("-", String::as_str),
            cells.get(&false).map_or("-", String::as_str)
        );
    }
    println!("{table}");
    assert!(
        failures.is_empty(),
        "bounds exceeded:\n{}",
        failures.join("\n")
    );
}

/// With FMA the sin/cos reduction stays exact where it matters up to |x| = 1e6: every float
/// nearest a multiple of π/2 up to 1e5, every 16th up to 1e6, and uniform samples.
#[test]
fn sin_cos_extended_range_with_fma() {
    let k = kernels();
    let Some((&config, _)) = k.has_fma.iter().find(|&(_, &fma)| fma) else {
        eprintln!("no FMA on this host: skipped");
        return;
    };
    let scale = if cfg!(debug_assertions) { 4 } else { 1 };
    let xs: Vec<f32> = near_half_pi_multiples((1..=63_662).step_by(scale))
        .chain(near_half_pi_multiples(
            (63_662..=636_620).step_by(16 * scale),
        ))
        .chain(linspace(-1e6, 1e6, 200_000 / scale))
        .collect();
    for f in [MathFn::Sin, MathFn::Cos] {
        let want: Vec<f64> = xs.iter().map(|&x| reference(f, x)).collect();
        let s = measure(f, true, config, &xs, &want);
        println!(
            "{} |x| <= 1e6 with FMA: {:.2} ulp at {:e}",
            f.name(),
            s.max,
            s.at
        );
        assert!(
            s.max <= bound(f, true),
            "{}: {:.2} ulp at {:e}",
            f.name(),
            s.max,
            s.at
        );
    }
}

/// Without FMA, beyond |x| ≈ 1.3e4, the result is sin/cos of a point within 2 ulp of x.
#[test]
fn sin_cos_beyond_range_without_fma() {
    let k = kernels();
    let Some((&config, _)) = k.has_fma.iter().find(|&(_, &fma)| !fma) else {
        return;
    };
    let xs: Vec<f32> = linspace(1e4, 1e6, 100_000).collect();
    for f in [MathFn::Sin, MathFn::Cos] {
        let got = run(f, true, config, &xs);
        for (&x, &y) in xs.iter().zip(&got) {
            // |f'| ≤ 1: the absolute error is at most the argument perturbation.
            let ulp_x = f64::from(f32::from_bits(x.to_bits() + 1) - x);
            let err = (f64::from(y) - reference(f, x)).abs();
            assert!(
                err <= 2.0 * ulp_x + 1e-7,
                "{}({x:e}) = {y:e}, error {err:e}",
                f.name()
            );
        }
    }
}

/// For every finite input, however large, sin and cos stay in [-1, 1] and are never NaN.
#[test]
fn sin_cos_bounded_for_huge_inputs() {
    let xs: Vec<f32> = binades(1e4, f32::MAX, 100_000).collect();
    for config in CONFIGS {
        for f in [MathFn::Sin, MathFn::Cos] {
            for vector in [true, false] {
                for (&x, y) in xs.iter().zip(run(f, vector, config, &xs)) {
                    assert!(
                        (-1.0..=1.0).contains(&y),
                        "{}({x:e}) = {y} {config:?}",
                        f.name()
                    );
                }
            }
        }
    }
}

/// Through the CPU backend, whose lowering sends lanes beyond `math::sin_cos_inline_limit` to
/// the exact reduction (`math::emit_sin_cos_exact`), f32 `sin`/`cos` hold 2 ulp for every
/// magnitude: a sweep of all binades from 1e4 to `f32::MAX` (both signs), uniform samples over
/// [-1e7, 1e7], every exponent with a few mantissas, the floats nearest multiples of π/2 around
/// the limit, and every 1021st bit pattern from 1e5 to `f32::MAX`. Each result is also
/// within 2 ulp of the interpreter (the oracle, `f32::sin`/`f32::cos`). The lengths are not
/// multiples of four, so the scalar tail is covered too.
#[test]
fn sin_cos_huge_arguments_through_the_backend() {
    use metajit_codegen::Backend;
    use metajit_codegen::cpu::backend::Cpu;
    use metajit_metaops::kernel;
    use metajit_metaops::{DType, HostData, UnaryOp};
    let scale = if cfg!(debug_assertions) { 4 } else { 1 };
    let exponents = (-10..=127).flat_map(|e| {
        (0..8).flat_map(move |m| {
            let x = (2f64.powi(e) * (1.0 + f64::from(m) / 8.0 + 1e-3)) as f32;
            [x, -x]
        })
    });
    let xs: Vec<f32> = binades(1e4, f32::MAX, 200_000 / scale)
        .chain(linspace(-1e7, 1e7, 100_001 / scale))
        .chain(exponents)
        .chain(near_half_pi_multiples(60_000..70_000))
        .chain(
            (1e5f32.to_bits()..=f32::MAX.to_bits())
                .step_by(1021 * scale)
                .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)]),
        )
        .chain([
            1e7,
            3e9,
            -3e9,
            1e30,
            3.4e38,
            f32::MAX,
            -f32::MAX,
            1e5,
            -1e5,
            0.5,
        ])
        .collect();
    let n = xs.len();
    let dev = Cpu::new(1);
    for (op, f) in [(UnaryOp::Sin, MathFn::Sin), (UnaryOp::Cos, MathFn::Cos)] {
        let k = gpu_common::unary(op, DType::F32);
        let x = HostData::F32(xs.clone());
        let mut want = vec![x.clone(), HostData::zeros(DType::F32, n)];
        kernel::interpret(&k, &mut want, &[n as i64], 0..n as i64);
        let c = dev.compile(&k).expect("compile");
        let a = dev.upload(&x).expect("upload");
        let out = dev.alloc(DType::F32, n).expect("alloc");
        // SAFETY: an element-wise kernel over its declared extent.
        unsafe { dev.launch(&c, &k, &[&a, &out], &[n as i64]) }.expect("launch");
        let got = dev.download(&out).expect("download");
        let (mut worst, mut at, mut beyond) = (0.0f64, 0.0f32, 0.0f64);
        for (i, &x) in xs.iter().enumerate() {
            let g = got.get(i).to_f64() as f32;
            let e = ulp_err(g, reference(f, x));
            if e > worst {
                (worst, at) = (e, x);
            }
            if x.abs() > 1e5 {
                beyond = beyond.max(e);
            }
            let interp = want[1].get(i).to_f64();
            assert!(
                ulp_err(g, interp) <= 2.0,
                "{}({x:e}) = {g:e}, interpreter {interp:e}",
                f.name()
            );
        }
        println!(
            "{} through the backend, {n} inputs up to f32::MAX: {worst:.2} ulp at {at:e} \
             ({beyond:.2} where |x| > 1e5)",
            f.name()
        );
        assert!(worst <= 2.0, "{}: {worst:.2} ulp at {at:e}", f.name());
    }
}

/// Exact results at the edges (sign of zero included); `None` means NaN.
#[test]
fn special_values() {
    let inf = f32::INFINITY;
    let nan = f32::NAN;
    let tiny = f32::from_bits(1);
    #[rustfmt::skip]
    let cases: &[(MathFn, f32, Option<f32>)] = &[
        (MathFn::Exp, -inf, Some(0.0)),
        (MathFn::Exp, inf, Some(inf)),
        (MathFn::Exp, nan, None),
        (MathFn::Exp, 0.0, Some(1.0)),
        (MathFn::Exp, -0.0, Some(1.0)),
        (MathFn::Exp, 88.8, Some(inf)),
        (MathFn::Exp, 1000.0, Some(inf)),
        (MathFn::Exp, f32::MAX, Some(inf)),
        (MathFn::Exp, -104.0, Some(0.0)),
        (MathFn::Exp, -1000.0, Some(0.0)),
        (MathFn::Exp, -f32::MAX, Some(0.0)),
        (MathFn::Exp, -103.2789, Some(tiny)),
        (MathFn::Log, 0.0, Some(-inf)),
        (MathFn::Log, -0.0, Some(-inf)),
        (MathFn::Log, -1.0, None),
        (MathFn::Log, -tiny, None),
        (MathFn::Log, -inf, None),
        (MathFn::Log, inf, Some(inf)),
        (MathFn::Log, nan, None),
        (MathFn::Log, 1.0, Some(0.0)),
        (MathFn::Sin, inf, None),
        (MathFn::Sin, -inf, None),
        (MathFn::Sin, nan, None),
        (MathFn::Sin, 0.0, Some(0.0)),
        (MathFn::Sin, -0.0, Some(-0.0)),
        (MathFn::Sin, tiny, Some(tiny)),
        (MathFn::Sin, -tiny, Some(-tiny)),
        (MathFn::Cos, inf, None),
        (MathFn::Cos, -inf, None),
        (MathFn::Cos, nan, None),
        (MathFn::Cos, 0.0, Some(1.0)),
        (MathFn::Cos, -0.0, Some(1.0)),
        (MathFn::Tanh, inf, Some(1.0)),
        (MathFn::Tanh, -inf, Some(-1.0)),
        (MathFn::Tanh, nan, None),
        (MathFn::Tanh, 0.0, Some(0.0)),
        (MathFn::Tanh, -0.0, Some(-0.0)),
        (MathFn::Tanh, tiny, Some(tiny)),
        (MathFn::Tanh, -tiny, Some(-tiny)),
        (MathFn::Tanh, 1e-20, Some(1e-20)),
        (MathFn::Tanh, 50.0, Some(1.0)),
        (MathFn::Tanh, -50.0, Some(-1.0)),
        (MathFn::Tanh, f32::MAX, Some(1.0)),
        (MathFn::Sigmoid, -inf, Some(0.0)),
        (MathFn::Sigmoid, inf, Some(1.0)),
        (MathFn::Sigmoid, nan, None),
        (MathFn::Sigmoid, 0.0, Some(0.5)),
        (MathFn::Sigmoid, -0.0, Some(0.5)),
        (MathFn::Sigmoid, -f32::MAX, Some(0.0)),
        (MathFn::Sigmoid, f32::MAX, Some(1.0)),
        (MathFn::Sigmoid, -104.0, Some(0.0)),
        (MathFn::Sigmoid, 20.0, Some(1.0)),
        (MathFn::Erf, inf, Some(1.0)),
        (MathFn::Erf, -inf, Some(-1.0)),
        (MathFn::Erf, nan, None),
        (MathFn::Erf, 0.0, Some(0.0)),
        (MathFn::Erf, -0.0, Some(-0.0)),
        (MathFn::Erf, 4.0, Some(1.0)),
        (MathFn::Erf, -10.0, Some(-1.0)),
        (MathFn::Erf, f32::MAX, Some(1.0)),
    ];
    for config in CONFIGS {
        for vector in [true, false] {
            for &(f, x, want) in cases {
                let got = run(f, vector, config, &[x])[0];
                let ok = match want {
                    None => got.is_nan(),
                    Some(w) => got.to_bits() == w.to_bits(),
                };
                assert!(
                    ok,
                    "{}({x:e}) {config:?} vector {vector}: got {got:e}, want {want:?}",
                    f.name()
                );
            }
        }
    }
    // Relative accuracy at the bottom: sigmoid(x) ≈ e^x for x ≪ 0, into the subnormals.
    for config in CONFIGS {
        for x in [-30.0f32, -80.0, -87.0, -88.0, -90.0, -100.0, -103.0] {
            for f in [MathFn::Exp, MathFn::Sigmoid] {
                let got = run(f, true, config, &[x])[0];
                let e = ulp_err(got, reference(f, x));
                assert!(
                    e <= 2.0,
                    "{}({x}) {config:?}: {got:e}, {e:.2} ulp",
                    f.name()
                );
            }
        }
    }
}

/// No kernel contains a relocation (no libcalls, no external data), in either configuration.
#[test]
fn kernels_are_relocation_free() {
    for (key, c) in &kernels().table {
        assert_eq!(c.relocs, 0, "{key:?} has relocations");
    }
}

/// Without FMA in the ISA flags, Cranelift lowers `fma` to a libcall on x86-64 — which is why
/// `emit_fma` takes `has_fma` — and `isa_has_fma` reports the host's features.
#[cfg(target_arch = "x86_64")]
#[test]
fn fma_without_isa_support_is_a_libcall() {
    let baseline = make_isa(Config::Baseline);
    assert!(!isa_has_fma(&*baseline));
    let native = make_isa(Config::Native);
    assert_eq!(
        isa_has_fma(&*native),
        std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx")
    );
    for (isa, fused) in [(&baseline, true), (&baseline, false), (&native, true)] {
        let mut ctx = cranelift_codegen::Context::new();
        let ty = types::F32X4;
        ctx.func.signature.params.push(AbiParam::new(ty));
        ctx.func.signature.returns.push(AbiParam::new(ty));
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        let x = b.block_params(block)[0];
        let y = emit_fma(&mut b, ty, x, x, x, fused);
        b.ins().return_(&[y]);
        b.seal_all_blocks();
        b.finalize(isa.frontend_config());
        let code = ctx.compile(&**isa, &mut Default::default()).unwrap();
        let relocs = code.buffer.relocs().len();
        let expect_libcall = fused && !isa_has_fma(&**isa);
        assert_eq!(relocs > 0, expect_libcall, "fused {fused}, relocs {relocs}");
    }
}

/// Code size per function (machine instructions for one evaluation, loop overhead excluded);
/// guards against accidental blow-ups such as an `fmax` expansion or a libcall.
#[test]
fn instruction_counts() {
    let k = kernels();
    let mut counts = Vec::new();
    for config in CONFIGS {
        let base = |form| k.table[&(None, form, config)].insts;
        let mut line = format!("{config:?} (fma {}):", k.has_fma[&config]);
        for f in MathFn::ALL {
            let count = |form| k.table[&(Some(f), form, config)].insts - base(form);
            let (v, p, s) = (
                count(Form::Vector),
                count(Form::VectorPool),
                count(Form::Scalar),
            );
            let mem = |form| {
                k.table[&(Some(f), form, config)].mem_operands
                    - k.table[&(None, form, config)].mem_operands
            };
            let (mv, mp) = (mem(Form::Vector), mem(Form::VectorPool));
            line += &format!(" {} {v} ({mv} memory)/{p} ({mp})/{s},", f.name());
            counts.push((f, config, v.max(p)));
        }
        println!("{line}  (f32x4 table/f32x4 pool/f32)");
    }
    for (f, config, v) in counts {
        let cap = if k.has_fma[&config] { 100 } else { 140 };
        assert!(v <= cap, "{} {config:?}: {v} instructions", f.name());
    }
}

/// A strided sweep over every `f32` bit pattern, for documentation: run with
/// `cargo test --release -p metajit-codegen --test math -- --ignored --nocapture`
/// (`MATH_STRIDE`, default 61, sets the stride).
#[test]
#[ignore]
fn strided_exhaustive() {
    let k = kernels();
    let stride: u64 = std::env::var("MATH_STRIDE").map_or(61, |s| s.parse().unwrap());
    let accurate = |f: MathFn, x: f32| match f {
        MathFn::Sin | MathFn::Cos => x.abs() <= 1e4,
        _ => true,
    };
    for f in MathFn::ALL {
        for config in CONFIGS {
            let mut worst = Stat::default();
            let mut chunk = Vec::with_capacity(1 << 20);
            let mut bits = 0u64;
            while bits < 1 << 32 {
                chunk.clear();
                while chunk.len() < 1 << 20 && bits < 1 << 32 {
                    let x = f32::from_bits(bits as u32);
                    if accurate(f, x) {
                        chunk.push(x);
                    }
                    bits += stride;
                }
                let got = run(f, true, config, &chunk);
                for (&x, &g) in chunk.iter().zip(&got) {
                    let e = ulp_err(g, reference(f, x));
                    if e.is_nan() || e > worst.max {
                        worst = Stat { max: e, at: x };
                    }
                }
            }
            println!(
                "{} fma {}: {:.3} ulp at {:e}",
                f.name(),
                k.has_fma[&config],
                worst.max,
                worst.at
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random bit patterns: within the bound wherever the bound is claimed; NaN in, NaN out;
    /// sin/cos beyond 1e4 bounded.
    #[test]
    fn random_bit_patterns(bits in any::<u32>()) {
        let x = f32::from_bits(bits);
        for config in CONFIGS {
            let fma = kernels().has_fma[&config];
            for f in MathFn::ALL {
                let out = run(f, true, config, &[x, -x, x, x]);
                let scalar = run(f, false, config, &[x])[0];
                prop_assert!(out[0].to_bits() == scalar.to_bits() || (out[0].is_nan() && scalar.is_nan()));
                let got = out[0];
                if x.is_nan() {
                    prop_assert!(got.is_nan(), "{}(NaN) = {got}", f.name());
                } else if matches!(f, MathFn::Sin | MathFn::Cos) && x.abs() > 1e4 {
                    if x.is_finite() {
                        prop_assert!((-1.0..=1.0).contains(&got), "{}({x:e}) = {got}", f.name());
                    } else {
                        prop_assert!(got.is_nan());
                    }
                } else {
                    let e = ulp_err(got, reference(f, x));
                    prop_assert!(e <= bound(f, fma), "{}({x:e}) {config:?}: {got:e}, {e:.2} ulp", f.name());
                }
            }
        }
    }
}
