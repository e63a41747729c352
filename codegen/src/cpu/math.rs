//! Inline transcendental functions for the Cranelift CPU backend.
//!
//! [`emit_unary`] appends to a function under construction a branch-free instruction sequence
//! computing `exp`, `log`, `sin`, `cos`, `tanh`, `sigmoid` or `erf` of an `f32x4` or `f32` value.
//! One code path serves both types (constants are splatted in the vector case), so the scalar
//! form used for loop tails gives bit-for-bit the same results as the vector form. The sequences
//! call nothing. Their constants live in the function's own constant pool, or, for vectors in
//! a loop, in the static [`const_table`] whose address the caller passes at run time
//! ([`emit_unary_with`]; see "Constants" below), so the compiled kernels are relocation-free and
//! can be cached as bytes.
//!
//! # Method
//!
//! Cody–Waite range reduction, then a minimax polynomial fitted for this module (Lawson's
//! iteration for the weighted minimax problem, coefficients rounded to `f32`). Below,
//! `a = |x|`; odd functions are computed on `a` and take the sign of `x` at the end.
//!
//! | function | reduction and approximation |
//! |---|---|
//! | `exp` | `n = round(x/ln 2)` by adding a rounding constant `c`, `r = x - n·ln 2` (an exact head, then a rounded tail); `e^r = 1 + q`, `q = r + r²·P₄(r)`; `s = 2^(n+k)` is the bits of `x/ln 2 + c` shifted left by 23 (one instruction: `c` is chosen to leave `n + k + 127` in the low bits); `e^x = fma(q, s, s)·2^-k`, rounded once by the `fma`, with `k = 64` for `x < 0` (results down to 2^-150 stay normal until the last product, which rounds into the subnormals) and `k = -1` otherwise (2^128 overflows only in the last product) |
//! | `log` | subnormals scaled by 2²³; `x = 2^e·m`, `m ∈ [√½, √2)`, `f = m - 1`; `log1p(f) = f - (f²/2 - s(f²/2 + R₂(s²)))` with `s = f/(2+f)`; `e·ln 2` in two parts |
//! | `sin`, `cos` | `j = round(a·2/π)`, `r = a - j·π/2` (π/2 in three parts with FMA — each step exact where it matters — or in six 11-bit parts without); `sin r = r + r³S₂(r²)`, `cos r = 1 - r²/2 + r⁴C₂(r²)`, chosen and signed by `j mod 4` (and the sign of `x` for `sin`) |
//! | `tanh` | `a < 0.625`: `a + a³T₄(a²)`; else `1 - 2/(e^{2a} + 1)` with `e^{2a} + 1 = fma(q, s, s + 1)` rounded once (`exp`'s reduction, `k = 0`, `a` clamped to 10 where `tanh` rounds to 1); sign copied from `x` |
//! | `sigmoid` | `r = e/(1 + e)`, `e = e^{-a}` from `exp`'s reduction with `k = 64`: `E = fma(q, s, s)` and `D = E + 2^64` each rounded once, `r₀ = E/D`, then one correction step from the division's residual and the exact rounding errors of `E` and `D` (`1/D = (1 - r₀)·2^-64`); `r` where the sign bit of `x` is set, `1 - r` (≥ ½, no cancellation) otherwise, both as `fma(±1, r, 0 or 1)` with the operands from the sign bit |
//! | `erf` | `a < 1`: `a + a·E₆(a²)`; else `1 - e^{-x²}·Q₈(a - 1.75)` with `a` clamped to 4 (where `erf` rounds to 1) and `e^{-x²}` from `exp`'s reduction (`k = 0`); sign copied from `x` |
//!
//! Masks come from `fcmp` (or integer shifts) and are applied with `bitselect`; clamps are written
//! as the `bitselect(fcmp lt ..)` pattern that x64 lowers to a single `minps`/`maxps` that keeps a
//! NaN operand. Nothing branches. The scalar form widens its `fcmp` results with `bmask`, so it
//! is branch-free too.
//!
//! # Accuracy
//!
//! Maximum error in ulps of the correctly rounded result, against `f64` references (std's
//! `exp`/`ln`/`sin`/`cos`/`tanh`, `1/(1+exp(-x))`, `libm::erf`), measured on x86-64 by
//! `codegen/tests/math.rs`: every 5th `f32` bit pattern (≈ 8.6·10⁸ inputs per function, all
//! binades, subnormals included; `strided_exhaustive` with `MATH_STRIDE=5`, ignored by
//! default, about 5 minutes) and the dense sweeps
//! of the regular tests (e.g. exp over [-104, 89], sin/cos over [-1e4, 1e4] plus every float
//! nearest a multiple of π/2 there, tanh/sigmoid/erf over [-20, 20]). "FMA" is the path taken when
//! the target has fused multiply-add ([`isa_has_fma`]); "no FMA" multiplies and adds separately
//! (and was run on baseline SSE2 x86-64).
//!
//! | function | range | FMA | no FMA |
//! |---|---|---|---|
//! | `exp` | all `f32` | 1.01 | 0.97 |
//! | `log` | all `f32` | 0.82 | 0.82 |
//! | `sin` | \|x\| ≤ 1e4 | 1.57 | 2.47 |
//! | `cos` | \|x\| ≤ 1e4 | 1.57 | 2.38 |
//! | `tanh` | all `f32` | 1.18 | 1.18 |
//! | `sigmoid` | all `f32` | 0.99 | 1.45 |
//! | `erf` | all `f32` | 0.99 | 1.32 |
//!
//! The tests assert 2 ulp for every function (2.5 for sin/cos without FMA) on their sweeps, the
//! special values below, and 256 random bit patterns.
//!
//! `sin`/`cos` beyond 1e4: with FMA the bound holds up to |x| = 1e6 (1.5 ulp measured, near
//! every multiple of π/2 up to 1e5 and a sample up to 1e6). Past that, `|x|·2/π` rounds badly
//! enough that `r` leaves the fitted interval and accuracy decays; from |x| ≈ 6.6·10⁶ (where
//! `|x|·2/π` exceeds the round-to-integer trick) the result no longer approximates the function.
//! Without FMA the products `j·π/2` stop being exact past |x| ≈ 1.3·10⁴: from there the result is
//! the function at a point within 2 ulp of `x` (tested up to 1e6), so its absolute error grows
//! like `ulp(x)`. For every finite input, however large, the reduced argument is clamped to
//! [-1, 1]: the result stays in [-1, 1] and is never NaN.
//!
//! Kernels therefore do not rely on the inline code there: the CPU lowering (`lower.rs`) tests
//! each value against [`sin_cos_inline_limit`] (1e5 with FMA, 1e4 without; one compare and a
//! mask test, [`emit_sin_cos_beyond`]) and, only when some lane is beyond it, recomputes those
//! lanes in a cold block with [`emit_sin_cos_exact`] (Payne–Hanek reduction, `f64` polynomials,
//! no call). Through the backend, `codegen/tests/math.rs` measures at most 1.47 ulp over all
//! binades to `f32::MAX`, and 0.50 ulp beyond 1e5.
//!
//! # Edge cases (all tested)
//!
//! - `exp`: `exp(-inf) = 0`, `exp(inf) = inf`, `exp(NaN) = NaN`, overflow (x > 88.72283) gives
//!   `inf`; results in the subnormal range are computed with gradual underflow (no flushing) down
//!   to the smallest subnormal; below x ≈ -103.97 the result is 0.
//! - `log`: `log(±0) = -inf`, `log(x < 0) = NaN`, `log(inf) = inf`, `log(NaN) = NaN`; subnormal
//!   inputs are scaled exactly first and are as accurate as the rest.
//! - `sin`/`cos`: `±inf` and NaN give NaN; `sin(±0) = ±0`, `cos(±0) = 1`.
//! - `tanh(±inf) = ±1`, `tanh(NaN) = NaN`, `tanh(±0) = ±0`, relative accuracy near 0.
//! - `sigmoid(-inf) = 0`, `sigmoid(inf) = 1`, `sigmoid(NaN) = NaN`; relative accuracy for large
//!   negative `x`, with gradual underflow below x ≈ -87.3.
//! - `erf(±inf) = ±1`, `erf(NaN) = NaN`, `erf(±0) = ±0`, relative accuracy near 0.
//!
//! NaN results are NaN; which NaN (payload, sign) is not specified.
//!
//! # Constants
//!
//! Cranelift materialises a vector constant as a load from the function's constant pool and
//! hoists it out of loops; in a loop body as long as these functions that leaves more live
//! constants than x64's 16 vector registers, so most were spilled to the stack and reloaded on
//! every use (42 reloads and 7 spill stores per iteration of `relu(x·1.5 + 0.5)·sigmoid(x) +
//! tanh(x)`). [`emit_unary_with`] instead loads them from [`const_table`], a static table of
//! every constant these functions use, through an address the caller passes at run time
//! (`lower.rs` takes it from the word after the helper table, carried around the vector loop
//! so that the loads stay in it). The loads are pure, so Cranelift folds a single-use one into
//! the instruction using it. The constants, and so the results, are the same either way.
//!
//! # Cost
//!
//! x64 instructions for one `f32x4` evaluation in a loop (load, store and loop excluded), with
//! the constants from the table or from the constant pool; in parentheses, those with a memory
//! operand (constant loads, folded or not, and spills):
//!
//! | | exp | log | sin | cos | tanh | sigmoid | erf |
//! |---|---|---|---|---|---|---|---|
//! | AVX + FMA, table | 30 (15) | 47 (18) | 40 (17) | 41 (18) | 40 (20) | 48 (14) | 50 (30) |
//! | AVX + FMA, pool | 34 (14) | 50 (17) | 45 (17) | 46 (18) | 50 (20) | 49 (14) | 69 (30) |
//! | SSE2, no FMA, table | 46 (15) | 71 (18) | 67 (20) | 67 (21) | 62 (20) | 71 (14) | 89 (30) |
//! | SSE2, no FMA, pool | 51 (14) | 74 (17) | 72 (20) | 72 (21) | 72 (20) | 72 (14) | 108 (30) |
//!
//! The `f32` form is the same sequence on scalars, plus moves between register files for the bit
//! manipulations (67–99 instructions with FMA). Measured throughput on the development machine
//! (AMD EPYC, one core, `f32x4` loops over 2^16 elements in cache, kernels of `lower.rs`): `exp`
//! 0.50, `sigmoid` 1.00, `tanh` 0.79 ns per element.

use std::collections::HashMap;
use std::sync::OnceLock;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::{AbiParam, Function, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

/// A transcendental function that [`emit_unary`] can emit inline.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MathFn {
    /// `e^x`.
    Exp,
    /// The natural logarithm.
    Log,
    /// Sine (radians).
    Sin,
    /// Cosine (radians).
    Cos,
    /// Hyperbolic tangent.
    Tanh,
    /// The logistic function `1/(1 + e^-x)`.
    Sigmoid,
    /// The error function.
    Erf,
}

impl MathFn {
    /// Every function, in declaration order.
    pub const ALL: [MathFn; 7] = [
        MathFn::Exp,
        MathFn::Log,
        MathFn::Sin,
        MathFn::Cos,
        MathFn::Tanh,
        MathFn::Sigmoid,
        MathFn::Erf,
    ];

    /// The function's lower-case name (`exp`, `log`, ...).
    pub fn name(self) -> &'static str {
        match self {
            MathFn::Exp => "exp",
            MathFn::Log => "log",
            MathFn::Sin => "sin",
            MathFn::Cos => "cos",
            MathFn::Tanh => "tanh",
            MathFn::Sigmoid => "sigmoid",
            MathFn::Erf => "erf",
        }
    }
}

/// Whether `fma` compiles to a native fused multiply-add on `isa`.
///
/// On x86-64 Cranelift lowers `fma` natively only when both `has_avx` and `has_fma` are set;
/// otherwise it becomes a call to the `fmaf` libcall (four of them for `f32x4`), which would put a
/// relocation in the kernel. AArch64, s390x and riscv64 always have a native `fma`. Unknown
/// targets answer `false`, which only costs speed: [`emit_fma`] then multiplies and adds.
pub fn isa_has_fma(isa: &dyn TargetIsa) -> bool {
    match isa.name() {
        "x64" => {
            let flags = isa.isa_flags();
            let flag = |name: &str| {
                flags
                    .iter()
                    .any(|v| v.name == name && v.as_bool() == Some(true))
            };
            flag("has_fma") && flag("has_avx")
        }
        "aarch64" | "s390x" | "riscv64" => true,
        _ => false,
    }
}

/// Emits `a * x + c` of type `ty` (`f32`, `f32x4`, `f64`, ...): one fused `fma` when `has_fma`
/// (pass [`isa_has_fma`]), else `fmul` then `fadd` (two roundings). Cranelift never fuses a
/// multiply and an add by itself.
pub fn emit_fma(
    b: &mut FunctionBuilder<'_>,
    ty: Type,
    a: Value,
    x: Value,
    c: Value,
    has_fma: bool,
) -> Value {
    debug_assert_eq!(b.func.dfg.value_type(a), ty);
    if has_fma {
        b.ins().fma(a, x, c)
    } else {
        let p = b.ins().fmul(a, x);
        b.ins().fadd(p, c)
    }
}

/// Emits `f(x)` for `x` of type `ty`, which must be `f32x4` or `f32`, and returns the result
/// (same type). `has_fma` selects fused multiply-adds (pass [`isa_has_fma`] of the target).
/// Vector constants come from the function's constant pool; see [`emit_unary_with`].
///
/// The code calls nothing; see the module documentation for accuracy and edge-case semantics.
///
/// # Panics
///
/// If `ty` is neither `f32` nor `f32x4`, or `x` is not of type `ty`.
pub fn emit_unary(
    b: &mut FunctionBuilder<'_>,
    f: MathFn,
    ty: Type,
    x: Value,
    has_fma: bool,
) -> Value {
    emit_unary_with(b, f, ty, x, has_fma, None)
}

/// [`emit_unary`], with the `f32x4` constants loaded from [`const_table`] at `table` (an `i64`
/// holding its address) when `table` is given.
///
/// Cranelift hoists constant-pool vectors out of loops, where a function as long as these
/// spills most of them to the stack and reloads them on every use; loads from a table whose
/// base is loop-variant stay in the loop and are often folded into the instructions using
/// them. A caller emitting a loop should therefore pass a base that Cranelift cannot see is
/// loop-invariant (a loop-carried copy of the address, redefined in each iteration). The
/// results are bit-identical either way (`f32` code always uses the constant pool).
///
/// # Panics
///
/// As [`emit_unary`].
pub fn emit_unary_with(
    b: &mut FunctionBuilder<'_>,
    f: MathFn,
    ty: Type,
    x: Value,
    has_fma: bool,
    table: Option<Value>,
) -> Value {
    assert!(
        ty == types::F32 || ty == types::F32X4,
        "emit_unary({}): type {ty} is not f32 or f32x4",
        f.name()
    );
    assert_eq!(
        b.func.dfg.value_type(x),
        ty,
        "emit_unary({}): operand type differs from {ty}",
        f.name()
    );
    let mut e = Emitter {
        b,
        ty,
        ity: if ty.is_vector() {
            types::I32X4
        } else {
            types::I32
        },
        has_fma,
        table: if ty.is_vector() {
            table.map(|t| (t, const_table()))
        } else {
            None
        },
        record: None,
    };
    e.emit(f, x)
}

/// One 16-byte entry of [`const_table`]: a constant's bits in every lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct ConstEntry(pub [u32; 4]);

/// The table of every `f32x4` (and `i32x4`) constant that [`emit_unary_with`] loads, in the
/// order the functions first use them, with each constant's index by bits.
pub struct ConstTable {
    entries: Box<[ConstEntry]>,
    index: HashMap<u32, usize>,
}

impl ConstTable {
    /// The entries (their address is what kernels are given).
    pub fn entries(&self) -> &[ConstEntry] {
        &self.entries
    }

    fn offset(&self, bits: u32) -> Option<i32> {
        self.index.get(&bits).map(|&i| (i * 16) as i32)
    }
}

/// The constant table (built once, by emitting every function with and without FMA and
/// recording its constants: deterministic, so the offsets baked into cached kernels stay valid
/// in every process running the same code — a change bumps `jit::CODEGEN_VERSION` anyway).
pub fn const_table() -> &'static ConstTable {
    static TABLE: OnceLock<ConstTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut bits = Vec::new();
        for has_fma in [true, false] {
            for f in MathFn::ALL {
                let mut func = Function::new();
                func.signature.params.push(AbiParam::new(types::F32X4));
                let mut fctx = FunctionBuilderContext::new();
                let mut b = FunctionBuilder::new(&mut func, &mut fctx);
                let block = b.create_block();
                b.append_block_params_for_function_params(block);
                b.switch_to_block(block);
                let x = b.block_params(block)[0];
                let mut e = Emitter {
                    b: &mut b,
                    ty: types::F32X4,
                    ity: types::I32X4,
                    has_fma,
                    table: None,
                    record: Some(&mut bits),
                };
                e.emit(f, x);
                if f == MathFn::Sin {
                    e.sin_cos_beyond(x);
                }
            }
        }
        let mut index = HashMap::new();
        let mut entries = Vec::new();
        for b in bits {
            index.entry(b).or_insert_with(|| {
                entries.push(ConstEntry([b; 4]));
                entries.len() - 1
            });
        }
        ConstTable {
            entries: entries.into_boxed_slice(),
            index,
        }
    })
}

// ---- constants ----------------------------------------------------------------------------

/// 1.5·2²³: adding it to |v| < 2²² rounds v to an integer held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
const LOG2_E: f32 = f32::from_bits(0x3fb8_aa3b);
/// ln 2 = LN2_HI + LN2_LO, LN2_HI with 16 significant bits (so n·LN2_HI is exact for |n| < 2⁸).
const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);

/// `e^r ≈ 1 + r + r²·P(r)` on |r| ≤ 0.3466; relative error 2^-28.
const EXP_P: [f32; 5] = [
    0.49999994,
    0.16666521,
    0.04166839,
    0.008368716,
    0.0013814598,
];
/// exp's argument is clamped to [EXP_LO, EXP_HI]: e^-104 < 2^-150 rounds to 0, e^89 overflows.
const EXP_LO: f32 = -104.0;
const EXP_HI: f32 = 89.0;
/// exp scales by 2^(n+k), k = EXP_K_NEG for x < 0 (n ≥ -150) and EXP_K_POS otherwise (n ≤ 128).
const EXP_K_NEG: i32 = 64;
const EXP_K_POS: i32 = -1;
/// sigmoid scales e^-|x| and 1 + e^-|x| by 2^SIGMOID_K.
const SIGMOID_K: i32 = 64;

/// The constant that `exp_reduce` adds to `x/ln 2` to get `s = 2^(n+k)`: ROUND_MAGIC + 127 + k.
const fn exp_magic(k: i32) -> f32 {
    ROUND_MAGIC + (127 + k) as f32
}

/// 2^k for |k| ≤ 126.
const fn pow2(k: i32) -> f32 {
    f32::from_bits(((127 + k) as u32) << 23)
}

/// Bits of √½ (rounded down): mantissas are normalised into [√½, √2).
const SQRT_HALF_BITS: i32 = 0x3f35_04f3;
/// `log1p(f) = 2 atanh(s) = 2s + s·z·R(z)`, `z = s²` ≤ 0.02944; absolute error of z·R 2^-29.
const LOG_R: [f32; 3] = [0.66666776, 0.39977536, 0.29871896];

const TWO_OVER_PI: f32 = f32::from_bits(0x3f22_f983);
/// π/2 in three `f32` parts (for FMA reduction; π/2 - sum ≈ 1e-23).
const PIO2_FMA: [f32; 3] = [
    f32::from_bits(0x3fc9_0fdb),
    f32::from_bits(0xb33b_bd2e),
    f32::from_bits(0xa6f7_2ced),
];
/// π/2 in five 11-bit parts and a full tail (for reduction without FMA: j·part is exact for
/// j < 2¹³; π/2 - sum ≈ 3e-28).
const PIO2_PARTS: [f32; 6] = [
    f32::from_bits(0x3fc9_0000),
    f32::from_bits(0x39fd_a000),
    f32::from_bits(0x33a2_2000),
    f32::from_bits(0x2c34_6000),
    f32::from_bits(0x248d_2000),
    f32::from_bits(0x1f09_8cc5),
];
/// The largest |x| for which the inline `sin`/`cos` are within their tested bound: with FMA
/// every float nearest a multiple of π/2 up to 1e5 is tested (the reduction stays exact to
/// about 1e6); without FMA the products `j·π/2` are exact only for |x| below about 1.3e4 and
/// the tests cover 1e4. The CPU lowering (`lower.rs`) computes lanes beyond it with
/// [`emit_sin_cos_exact`], so every input is accurate.
pub fn sin_cos_inline_limit(has_fma: bool) -> f32 {
    if has_fma { 1e5 } else { 1e4 }
}

/// Emits, for an `f32x4` value `x`, the `i32x4` mask of the lanes where |x| exceeds
/// [`sin_cos_inline_limit`] (or is infinite; NaN lanes are clear). The limit comes from
/// [`const_table`] at `table` when given, as in [`emit_unary_with`].
///
/// # Panics
///
/// If `x` is not an `f32x4`.
pub fn emit_sin_cos_beyond(
    b: &mut FunctionBuilder<'_>,
    x: Value,
    has_fma: bool,
    table: Option<Value>,
) -> Value {
    assert_eq!(
        b.func.dfg.value_type(x),
        types::F32X4,
        "sin/cos mask of a non-f32x4"
    );
    let mut e = Emitter {
        b,
        ty: types::F32X4,
        ity: types::I32X4,
        has_fma,
        table: table.map(|t| (t, const_table())),
        record: None,
    };
    let m = e.sin_cos_beyond(x);
    e.int_bits(m)
}

/// The binary expansion of 2/π, 64 bits a word, after 64 zero bits (so that a window may
/// start before the binary point): word `i ≥ 1` holds bits `64(i-1)+1 ..= 64i` of the fraction.
const TWO_OVER_PI_BITS: [u64; 5] = [
    0,
    0xa2f9_836e_4e44_1529,
    0xfc27_57d1_f534_ddc0,
    0xdb62_9599_3c43_9041,
    0xfe51_63ab_debb_c561,
];
/// Taylor coefficients of `(sin r - r)/r³` in `z = r²` (|r| ≤ π/4: truncation 2^-45 relative).
const SIN_TAYLOR: [f64; 6] = [
    -1.0 / 6.0,
    1.0 / 120.0,
    -1.0 / 5040.0,
    1.0 / 362_880.0,
    -1.0 / 39_916_800.0,
    1.0 / 6_227_020_800.0,
];
/// Taylor coefficients of `cos r` in `z = r²` (|r| ≤ π/4: truncation 2^-49).
const COS_TAYLOR: [f64; 8] = [
    1.0,
    -0.5,
    1.0 / 24.0,
    -1.0 / 720.0,
    1.0 / 40_320.0,
    -1.0 / 3_628_800.0,
    1.0 / 479_001_600.0,
    -1.0 / 87_178_291_200.0,
];

/// Emits `sin x` (or `cos x` when `cos`) of the `f32` value `x` with an exact argument
/// reduction, for any |x| ≥ 1 (much smaller inputs would need bits before the table's start;
/// the CPU lowering uses it only beyond [`sin_cos_inline_limit`]). `±inf` and NaN give NaN.
///
/// Payne–Hanek: with `|x| = m·2^e` (`m` the 24-bit significand), `|x|·2/π mod 4` needs only the
/// bits of 2/π from position `e - 1` on; a 128-bit window of them times `m` gives the fraction
/// `|x|·2/π / 4 mod 1` to 2⁻¹⁰⁴, whose top two bits (rounded) are the quadrant and whose rest,
/// as a signed 64-bit fixed-point number, is the reduced argument (in units of π/2·2⁻⁶⁴,
/// converted to `f64`). Then `f64` Taylor polynomials and one rounding to `f32`: measured within
/// 0.50 ulp (`codegen/tests/math.rs`). Integer and `f64` scalar arithmetic only: no call, no
/// table in memory, so it can sit in a cold block of a vector loop without making the register
/// allocator spill around it.
pub fn emit_sin_cos_exact(b: &mut FunctionBuilder<'_>, x: Value, cos: bool) -> Value {
    use types::{F32, F64, I32, I64};
    assert_eq!(b.func.dfg.value_type(x), F32, "exact sin/cos of a non-f32");
    let xb = b.ins().bitcast(I32, MemFlagsData::new(), x);
    let ab = b.ins().band_imm_u(xb, 0x7fff_ffff);
    let ab = b.ins().uextend(I64, ab);
    let mant = b.ins().band_imm_u(ab, 0x7f_ffff);
    let m = b.ins().bor_imm_u(mant, 0x80_0000);
    // |x| = m·2^(E - 150); the window starts at bit q0 = E - 88 of TWO_OVER_PI_BITS (bit e - 1
    // of 2/π, with the 64 leading zero bits), in word w = q0/64 ≤ 2 at bit s.
    let be = b.ins().ushr_imm_u(ab, 23);
    let q0 = b.ins().iadd_imm_s(be, -88);
    let w = b.ins().sshr_imm_u(q0, 6);
    let s = b.ins().band_imm_u(q0, 63);
    let is0 = b.ins().icmp_imm_u(IntCC::Equal, w, 0);
    let is1 = b.ins().icmp_imm_u(IntCC::Equal, w, 1);
    let mut word = |k: usize| {
        let c: Vec<Value> = (0..3)
            .map(|i| b.ins().iconst(I64, TWO_OVER_PI_BITS[k + i] as i64))
            .collect();
        let t = b.ins().select(is1, c[1], c[2]);
        b.ins().select(is0, c[0], t)
    };
    let (w0, w1, w2) = (word(0), word(1), word(2));
    // The 64 bits from bit s of a, then of b: (a << s) | (b >> 1 >> (63 - s)) (no shift by 64).
    let c63 = b.ins().iconst(I64, 63);
    let ns = b.ins().isub(c63, s);
    let mut window = |a: Value, nx: Value| {
        let hi = b.ins().ishl(a, s);
        let lo = b.ins().ushr_imm_u(nx, 1);
        let lo = b.ins().ushr(lo, ns);
        b.ins().bor(hi, lo)
    };
    let hi = window(w0, w1);
    let lo = window(w1, w2);
    // Fraction of |x|·2/π/4, in units of 2^-64.
    let p_hi = b.ins().imul(m, hi);
    let p_lo = b.ins().umulhi(m, lo);
    let q = b.ins().iadd(p_hi, p_lo);
    // Quadrant: round(|x|·2/π) mod 4; reduced argument: the rest, signed, times π/2.
    let qr = b.ins().iadd_imm_s(q, 1 << 61);
    let mut j = b.ins().ushr_imm_u(qr, 62);
    let rr = b.ins().ishl_imm_u(q, 2);
    let r = b.ins().fcvt_from_sint(F64, rr);
    let k = b
        .ins()
        .f64const(std::f64::consts::FRAC_PI_2 * 2f64.powi(-64));
    let r = b.ins().fmul(r, k);
    let z = b.ins().fmul(r, r);
    let mut horner = |cs: &[f64]| {
        let mut p = b.ins().f64const(cs[cs.len() - 1]);
        for &c in cs[..cs.len() - 1].iter().rev() {
            let t = b.ins().fmul(p, z);
            let c = b.ins().f64const(c);
            p = b.ins().fadd(t, c);
        }
        p
    };
    let sp = horner(&SIN_TAYLOR);
    let cp = horner(&COS_TAYLOR);
    let rz = b.ins().fmul(r, z);
    let t = b.ins().fmul(rz, sp);
    let sin_r = b.ins().fadd(r, t);
    if cos {
        j = b.ins().iadd_imm_s(j, 1);
    }
    let odd = b.ins().band_imm_u(j, 1);
    let res = b.ins().select(odd, cp, sin_r);
    let neg = b.ins().band_imm_u(j, 2);
    let nres = b.ins().fneg(res);
    let res = b.ins().select(neg, nres, res);
    let res = b.ins().fdemote(F32, res);
    let res = if cos {
        res
    } else {
        // sin is odd: take the sign of x.
        let rb = b.ins().bitcast(I32, MemFlagsData::new(), res);
        let sx = b.ins().band_imm_s(xb, i64::from(i32::MIN));
        let rb = b.ins().bxor(rb, sx);
        b.ins().bitcast(F32, MemFlagsData::new(), rb)
    };
    // NaN for ±inf and NaN (x - x), +0 otherwise (the result is never zero).
    let nan = b.ins().fsub(x, x);
    b.ins().fadd(res, nan)
}

/// `sin r ≈ r + r³·S(r²)` on |r| ≤ 0.8; relative error 2^-26.8.
const SIN_S: [f32; 3] = [-0.16666654, 0.008332071, -0.00019503068];
/// `cos r ≈ 1 - r²/2 + r⁴·C(r²)` on |r| ≤ 0.8; relative error 2^-30.
const COS_C: [f32; 3] = [0.04166664, -0.0013887194, 2.4419196e-5];

/// Below this |x|, tanh uses its odd polynomial.
const TANH_SMALL: f32 = 0.625;
/// tanh(10) rounds to 1 (from 9.01 on); clamping there keeps e^{2|x|} finite.
const TANH_CLAMP: f32 = 10.0;
/// `tanh a ≈ a + a³·T(a²)` on a ≤ 0.625; relative error 2^-26.8.
const TANH_T: [f32; 5] = [
    -0.3333328,
    0.13331442,
    -0.053739715,
    0.020639086,
    -0.0057049864,
];

/// `erf a ≈ a + a·E(a²)` on a ≤ 1; relative error 2^-28.
const ERF_E: [f32; 7] = [
    0.12837917,
    -0.37612626,
    0.112835854,
    -0.026853811,
    0.0051883254,
    -0.00080101745,
    7.853798e-5,
];
/// `erfc a ≈ e^{-a²}·Q(a - ERF_Q_CENTER)` on [1, 4]; error relative to erf 2^-27.8.
const ERF_Q: [f32; 9] = [
    0.28497228,
    -0.130976,
    0.055761557,
    -0.022270251,
    0.008410545,
    -0.002971046,
    0.0010421092,
    -0.00041690128,
    0.00010816206,
];
const ERF_Q_CENTER: f32 = 1.75;
/// erfc(4) ≈ 1.5e-8 < 2^-25: erf rounds to 1 from here on.
const ERF_CLAMP: f32 = 4.0;

// ---- the emitter --------------------------------------------------------------------------

/// Emits type-generic (f32 / f32x4) arithmetic into a [`FunctionBuilder`].
///
/// Masks are values of the float type `ty` whose lanes are all-ones or all-zeros bits.
struct Emitter<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    /// `f32` or `f32x4`.
    ty: Type,
    /// The integer type of the same shape (`i32` or `i32x4`).
    ity: Type,
    has_fma: bool,
    /// Where vector constants are loaded from: the table's base value and the table.
    table: Option<(Value, &'static ConstTable)>,
    /// When building the table: every constant asked for, in order.
    record: Option<&'a mut Vec<u32>>,
}

impl Emitter<'_, '_> {
    fn emit(&mut self, f: MathFn, x: Value) -> Value {
        match f {
            MathFn::Exp => self.exp(x),
            MathFn::Log => self.log(x),
            MathFn::Sin => self.sin_cos(x, false),
            MathFn::Cos => self.sin_cos(x, true),
            MathFn::Tanh => self.tanh(x),
            MathFn::Sigmoid => self.sigmoid(x),
            MathFn::Erf => self.erf(x),
        }
    }

    /// A vector constant with the given bits, of type `ty` (from the table when there is one).
    fn vconst(&mut self, ty: Type, bits: u32) -> Option<Value> {
        if let Some(rec) = self.record.as_deref_mut() {
            rec.push(bits);
        }
        let (base, table) = self.table?;
        let off = table.offset(bits)?;
        // A pure load (read-only, never traps, movable): it stays in a loop only while its
        // base is loop-variant (see `emit_unary_with`).
        let flags = MemFlagsData::trusted().with_readonly().with_can_move();
        Some(self.b.ins().load(ty, flags, base, off))
    }

    fn is_vector(&self) -> bool {
        self.ty.is_vector()
    }

    /// A float constant of type `ty`.
    fn fc(&mut self, v: f32) -> Value {
        self.fc_bits(v.to_bits())
    }

    /// An integer constant of type `ity`.
    fn ic(&mut self, v: i32) -> Value {
        if self.is_vector()
            && let Some(c) = self.vconst(self.ity, v as u32)
        {
            return c;
        }
        let s = self.b.ins().iconst(types::I32, i64::from(v as u32));
        if self.is_vector() {
            self.b.ins().splat(self.ity, s)
        } else {
            s
        }
    }

    fn int_bits(&mut self, v: Value) -> Value {
        self.b.ins().bitcast(self.ity, MemFlagsData::new(), v)
    }

    fn float_bits(&mut self, v: Value) -> Value {
        self.b.ins().bitcast(self.ty, MemFlagsData::new(), v)
    }

    fn add(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fadd(x, y)
    }

    fn sub(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fsub(x, y)
    }

    fn mul(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fmul(x, y)
    }

    fn div(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().fdiv(x, y)
    }

    /// `a*x + c`, fused when the target has FMA.
    fn fma(&mut self, a: Value, x: Value, c: Value) -> Value {
        let ty = self.ty;
        emit_fma(self.b, ty, a, x, c, self.has_fma)
    }

    /// `a*x + c` with constant `a`.
    fn fma_kc(&mut self, a: f32, x: Value, c: Value) -> Value {
        let a = self.fc(a);
        self.fma(a, x, c)
    }

    /// Horner evaluation of `coeffs[0] + coeffs[1]·x + ...`.
    fn poly(&mut self, x: Value, coeffs: &[f32]) -> Value {
        let (&last, rest) = coeffs.split_last().expect("empty polynomial");
        let mut p = self.fc(last);
        for &c in rest.iter().rev() {
            let c = self.fc(c);
            p = self.fma(p, x, c);
        }
        p
    }

    /// The lane mask of `x cc y`.
    fn cmp(&mut self, cc: FloatCC, x: Value, y: Value) -> Value {
        let m = self.b.ins().fcmp(cc, x, y);
        if self.is_vector() {
            self.float_bits(m)
        } else {
            // Scalar `fcmp` gives an `i8` 0/1; widen it to an all-ones mask so that scalar code
            // is branch-free like the vector code.
            let m = self.b.ins().bmask(types::I32, m);
            self.float_bits(m)
        }
    }

    /// The lane mask of `x cc k`.
    fn cmp_k(&mut self, cc: FloatCC, x: Value, k: f32) -> Value {
        let k = self.fc(k);
        self.cmp(cc, x, k)
    }

    /// Per lane, `t` where `mask` is set, else `f`.
    fn select(&mut self, mask: Value, t: Value, f: Value) -> Value {
        self.b.ins().bitselect(mask, t, f)
    }

    /// `min(x, hi)`, keeping a NaN `x` (x64: one `minps`).
    fn clamp_hi(&mut self, x: Value, hi: f32) -> Value {
        let k = self.fc(hi);
        let m = self.cmp(FloatCC::LessThan, k, x);
        self.select(m, k, x)
    }

    /// `max(x, lo)`, keeping a NaN `x` (x64: one `maxps`).
    fn clamp_lo(&mut self, x: Value, lo: f32) -> Value {
        let k = self.fc(lo);
        let m = self.cmp(FloatCC::LessThan, x, k);
        self.select(m, k, x)
    }

    /// A float constant of type `ty` with the given bits.
    fn fc_bits(&mut self, bits: u32) -> Value {
        if self.is_vector()
            && let Some(c) = self.vconst(self.ty, bits)
        {
            return c;
        }
        let s = self.b.ins().f32const(Ieee32::with_bits(bits));
        if self.is_vector() {
            self.b.ins().splat(self.ty, s)
        } else {
            s
        }
    }

    /// `|x|` (one `and` with a constant; x64's `fabs` rebuilds the mask with two instructions).
    fn abs(&mut self, x: Value) -> Value {
        let m = self.fc_bits(0x7fff_ffff);
        self.b.ins().band(x, m)
    }

    /// `-|x|` (one `or` with the sign bit).
    fn neg_abs(&mut self, x: Value) -> Value {
        let m = self.fc(-0.0);
        self.b.ins().bor(x, m)
    }

    /// The sign bit of `x` alone (`x & -0.0`).
    fn sign_bit(&mut self, x: Value) -> Value {
        let m = self.fc(-0.0);
        self.b.ins().band(x, m)
    }

    /// `v` with `sign` (a value holding only a sign bit) or-ed in.
    fn or_sign(&mut self, v: Value, sign: Value) -> Value {
        self.b.ins().bor(v, sign)
    }

    /// Rounds `v` (|v| < 2²²) to the nearest integer: `(t, n)` where `n` is the integer as a
    /// float and `t` the float `v + ROUND_MAGIC` whose bits minus `ROUND_MAGIC`'s bits are the
    /// integer. `v = a*k`, fused when possible.
    fn round_scaled(&mut self, a: Value, k: f32) -> (Value, Value) {
        let magic = self.fc(ROUND_MAGIC);
        let t = self.fma_kc(k, a, magic);
        let n = self.sub(t, magic);
        (t, n)
    }

    /// The integer held by a `round_scaled` `t`.
    fn rounded_int(&mut self, t: Value) -> Value {
        let ti = self.int_bits(t);
        let m = self.ic(-(ROUND_MAGIC.to_bits() as i32));
        self.b.ins().iadd(ti, m)
    }

    // ---- exp ----------------------------------------------------------------------------

    /// `e^x`: `(1 + q)·2^(n+k)` rounded once by a fused multiply-add, then scaled back by
    /// `2^-k` (exact, but for results among the subnormals, which round a second time, or
    /// beyond `f32::MAX`, which become `inf`). `k` is 64 for `x < 0` and -1 otherwise, so that
    /// `2^(n+k)` is a normal number for every `n` the clamps allow.
    fn exp(&mut self, x: Value) -> Value {
        let x = self.clamp_hi(x, EXP_HI);
        let x = self.clamp_lo(x, EXP_LO);
        let neg = self.cmp_k(FloatCC::LessThan, x, 0.0);
        let m_neg = self.fc(exp_magic(EXP_K_NEG));
        let m_pos = self.fc(exp_magic(EXP_K_POS));
        let magic = self.select(neg, m_neg, m_pos);
        let (q, s) = self.exp_reduce(x, magic);
        let y = self.fma(q, s, s);
        let f_neg = self.fc(pow2(-EXP_K_NEG));
        let f_pos = self.fc(pow2(-EXP_K_POS));
        let f = self.select(neg, f_neg, f_pos);
        self.mul(y, f)
    }

    /// `e^x ≈ (1 + q)·s` with `s = 2^(n+k)`, for `magic = exp_magic(k)` (a constant or a
    /// per-lane choice). `n = round(x/ln 2)`; the caller keeps `n + k + 127` in [1, 254] for
    /// every lane whose result it uses (other lanes get a meaningless `s`). `|q| < 0.42`, with
    /// an absolute error below 2^-25.
    fn exp_reduce(&mut self, x: Value, magic: Value) -> (Value, Value) {
        // t = x/ln 2 + magic rounded to an integer: n = t - magic exactly, and the bits of t
        // are those of ROUND_MAGIC plus n + k + 127.
        let log2e = self.fc(LOG2_E);
        let t = self.fma(x, log2e, magic);
        let n = self.sub(t, magic);
        // r = x - n·ln 2: the first step is exact (n·LN2_HI is exact and cancels with x), the
        // second rounds once.
        let r = self.fma_kc(-LN2_HI, n, x);
        let r = self.fma_kc(-LN2_LO, n, r);
        // e^r = 1 + q, q = r + r²·P(r).
        let r2 = self.mul(r, r);
        let p = self.poly(r, &EXP_P);
        let q = self.fma(r2, p, r);
        // The low 9 bits of ROUND_MAGIC's bits are zero: shifting t's bits left by 23 leaves
        // (n + k + 127) << 23, the bits of 2^(n+k).
        let ti = self.int_bits(t);
        let si = self.b.ins().ishl_imm_u(ti, 23);
        let s = self.float_bits(si);
        (q, s)
    }

    // ---- log ----------------------------------------------------------------------------

    fn log(&mut self, x: Value) -> Value {
        // Scale subnormals (and, harmlessly, zeros and negatives) by 2^23.
        let tiny = self.cmp_k(FloatCC::LessThan, x, f32::MIN_POSITIVE);
        let big = self.fc(8_388_608.0);
        let xs = self.mul(x, big);
        let xs = self.select(tiny, xs, x);
        let c23 = self.fc(23.0);
        let zero = self.fc(0.0);
        let adj = self.select(tiny, c23, zero);
        // xs = 2^e·m with m ∈ [√½, √2): subtracting √½'s bits makes the exponent field e.
        let bits = self.int_bits(xs);
        let k = self.ic(-SQRT_HALF_BITS);
        let ix = self.b.ins().iadd(bits, k);
        let ei = self.b.ins().sshr_imm_u(ix, 23);
        let mant = self.ic(0x007f_ffff);
        let mbits = self.b.ins().band(ix, mant);
        let k = self.ic(SQRT_HALF_BITS);
        let mbits = self.b.ins().iadd(mbits, k);
        let m = self.float_bits(mbits);
        let one = self.fc(1.0);
        let f = self.sub(m, one); // exact
        let ef = self.b.ins().fcvt_from_sint(self.ty, ei);
        let e = self.sub(ef, adj);
        // log1p(f) = f - (hfsq - s·(hfsq + R)), s = f/(2+f), R = z·R3(z), z = s².
        let two = self.fc(2.0);
        let d = self.add(two, f);
        let s = self.div(f, d);
        let z = self.mul(s, s);
        let rp = self.poly(z, &LOG_R);
        let r = self.mul(z, rp);
        let half = self.fc(0.5);
        let half_f = self.mul(f, half);
        let hfsq = self.mul(half_f, f);
        let hr = self.add(hfsq, r);
        // log x = e·LN2_HI - ((hfsq - (s·(hfsq+R) + e·LN2_LO)) - f)
        let lo = self.mul_kc(LN2_LO, e);
        let t = self.fma(s, hr, lo);
        let t = self.sub(hfsq, t);
        let t = self.sub(t, f);
        let hi = self.mul_kc(LN2_HI, e); // exact
        let res = self.sub(hi, t);
        // Edge cases: +inf -> +inf, ±0 -> -inf, x < 0 or NaN -> NaN.
        let inf = self.fc(f32::INFINITY);
        let is_inf = self.cmp(FloatCC::Equal, x, inf);
        let res = self.select(is_inf, inf, res);
        let ninf = self.fc(f32::NEG_INFINITY);
        let is_zero = self.cmp_k(FloatCC::Equal, x, 0.0);
        let res = self.select(is_zero, ninf, res);
        let nan = self.fc(f32::NAN);
        let bad = self.cmp_k(FloatCC::UnorderedOrLessThan, x, 0.0);
        self.select(bad, nan, res)
    }

    fn mul_kc(&mut self, k: f32, x: Value) -> Value {
        let k = self.fc(k);
        self.mul(k, x)
    }

    // ---- sin, cos -----------------------------------------------------------------------

    fn sin_cos(&mut self, x: Value, cos: bool) -> Value {
        let a = self.abs(x);
        // j = round(a·2/π); r = a - j·π/2.
        let (t, j) = self.round_scaled(a, TWO_OVER_PI);
        let mut r = a;
        if self.has_fma {
            for p in PIO2_FMA {
                r = self.fma_kc(-p, j, r);
            }
        } else {
            for p in PIO2_PARTS {
                let jp = self.mul_kc(p, j);
                r = self.sub(r, jp);
            }
        }
        // Only for |x| beyond the accurate range does |r| exceed π/4 by much; keep the
        // polynomials in range there so results stay in [-1, 1] (NaN passes).
        let r = self.clamp_hi(r, 1.0);
        let r = self.clamp_lo(r, -1.0);
        let z = self.mul(r, r);
        // sin r = r + r³·S(z)
        let sp = self.poly(z, &SIN_S);
        let r3 = self.mul(r, z);
        let sin_r = self.fma(r3, sp, r);
        // cos r = (1 - z/2) + z²·C(z)
        let cp = self.poly(z, &COS_C);
        let z2 = self.mul(z, z);
        let one = self.fc(1.0);
        let c0 = self.fma_kc(-0.5, z, one);
        let cos_r = self.fma(z2, cp, c0);
        // Quadrant q = j (+1 for cos): bit 0 picks cos r, bit 1 negates.
        let mut q = self.rounded_int(t);
        if cos {
            let one = self.ic(1);
            q = self.b.ins().iadd(q, one);
        }
        let odd = self.b.ins().ishl_imm_u(q, 31);
        let odd = self.b.ins().sshr_imm_u(odd, 31);
        let odd = self.float_bits(odd);
        let res = self.select(odd, cos_r, sin_r);
        let neg = self.b.ins().ishl_imm_u(q, 30);
        let mut neg = self.float_bits(neg);
        if !cos {
            // sin is odd: sin x = sign(x)·sin |x|.
            neg = self.b.ins().bxor(neg, x);
        }
        let sign = self.sign_bit(neg);
        self.b.ins().bxor(res, sign)
    }

    /// The mask of the lanes whose |x| exceeds [`sin_cos_inline_limit`].
    fn sin_cos_beyond(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        self.cmp_k(FloatCC::GreaterThan, a, sin_cos_inline_limit(self.has_fma))
    }

    // ---- tanh, sigmoid, erf -------------------------------------------------------------

    fn tanh(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let sign = self.sign_bit(x);
        // Small: a + a³·T(a²).
        let z = self.mul(a, a);
        let p = self.poly(z, &TANH_T);
        let a3 = self.mul(a, z);
        let small = self.fma(a3, p, a);
        // Large: 1 - 2/(e^{2a} + 1), with e^{2a} + 1 = s·(1 + q) + 1 rounded once; a is
        // clamped to 10 (tanh rounds to 1 from 9.01 on), so 2^n ≤ 2^29 and s + 1 is exact
        // where it matters (n ≤ 23).
        let ac = self.clamp_hi(a, TANH_CLAMP);
        let a2 = self.add(ac, ac);
        let magic = self.fc(exp_magic(0));
        let (q, s) = self.exp_reduce(a2, magic);
        let one = self.fc(1.0);
        let s1 = self.add(s, one);
        let d = self.fma(q, s, s1);
        let two = self.fc(2.0);
        let y = self.div(two, d);
        let large = self.sub(one, y);
        let is_small = self.cmp_k(FloatCC::LessThan, a, TANH_SMALL);
        let res = self.select(is_small, small, large);
        self.or_sign(res, sign)
    }

    fn sigmoid(&mut self, x: Value) -> Value {
        // r = sigmoid(-|x|) = e/(1 + e) with e = e^-|x| = s·(1 + q)·2^-K (K = SIGMOID_K keeps s
        // normal down to e = 2^-150, so only the last step rounds into the subnormals). In
        // units of 2^-K: E = s·(1 + q) = e_hi + e_lo and 2^K + e_hi = d + d_lo, where e_hi and
        // d are rounded once and e_lo, d_lo are their (exact) errors. r0 = e_hi/d is corrected
        // once: r = r0 + ((e_hi - r0·d) - r0·d_lo + e_lo)/d, the residual e_hi - r0·d exact
        // with FMA and 1/d = (1 - r0)·2^-K. The result is r where x's sign bit is set and
        // 1 - r (≥ ½, no cancellation) otherwise.
        let na = self.neg_abs(x);
        let na = self.clamp_lo(na, EXP_LO);
        let magic = self.fc(exp_magic(SIGMOID_K));
        let (q, s) = self.exp_reduce(na, magic);
        let e_hi = self.fma(q, s, s);
        let k = self.fc(pow2(SIGMOID_K));
        let d = self.add(e_hi, k);
        let r0 = self.div(e_hi, d);
        // e_lo = s·(1 + q) - e_hi (s - e_hi is exact: e_hi/s ∈ [0.7, 1.42]).
        let se = self.sub(s, e_hi);
        let e_lo = self.fma(q, s, se);
        // d_lo = (2^K - d) + e_hi, exact (Fast2Sum: 2^K ≥ e_hi).
        let kd = self.sub(k, d);
        let d_lo = self.add(kd, e_hi);
        let nr0 = self.b.ins().fneg(r0);
        let res = self.fma(nr0, d, e_hi);
        let res = self.fma(nr0, d_lo, res);
        let res = self.add(res, e_lo);
        let one = self.fc(1.0);
        let w = self.sub(one, r0);
        let k_inv = self.fc(pow2(-SIGMOID_K));
        let inv = self.mul(w, k_inv);
        let r = self.fma(res, inv, r0);
        // r·1 + 0 where x's sign bit is set, r·(-1) + 1 (one rounding) where it is clear.
        let xi = self.int_bits(x);
        let m = self.b.ins().sshr_imm_u(xi, 31);
        let m = self.float_bits(m);
        let nz = self.fc(-0.0);
        let flip = self.b.ins().band_not(nz, m);
        let sgn = self.b.ins().bor(flip, one);
        let c = self.b.ins().band_not(one, m);
        self.fma(sgn, r, c)
    }

    fn erf(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let sign = self.sign_bit(x);
        // Small: a + a·E(a²).
        let z = self.mul(a, a);
        let p = self.poly(z, &ERF_E);
        let small = self.fma(a, p, a);
        // Large: 1 - e^{-a²}·Q(a - 1.75), a clamped to 4 (keeps NaN).
        let ac = self.clamp_hi(a, ERF_CLAMP);
        let center = self.fc(ERF_Q_CENTER);
        let u = self.sub(ac, center);
        let q = self.poly(u, &ERF_Q);
        let zc = self.mul(ac, ac);
        let nzc = self.b.ins().fneg(zc);
        // e^{-a²} with a² ≤ 16: 2^n ≥ 2^-24 is normal.
        let magic = self.fc(exp_magic(0));
        let (qe, s) = self.exp_reduce(nzc, magic);
        let e = self.fma(qe, s, s);
        let ne = self.b.ins().fneg(e);
        let one = self.fc(1.0);
        let large = self.fma(ne, q, one);
        let is_small = self.cmp_k(FloatCC::LessThan, a, 1.0);
        let res = self.select(is_small, small, large);
        self.or_sign(res, sign)
    }
}
