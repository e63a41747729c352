//! Element types and scalar values.
//!
//! [`DType`] is the closed set of element types a graph may carry; [`Scalar`] is one value of any
//! of them. Scalars compare and hash by bit pattern, so a `Const(NaN)` node equals another
//! `Const(NaN)` node (common-subexpression elimination relies on that) and `0.0 != -0.0`.

use std::fmt;
use std::hash::{Hash, Hasher};

use half::{bf16, f16};

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// Boolean, stored as one byte holding 0 or 1.
    Bool,
    /// Unsigned 8-bit integer (wrapping arithmetic).
    U8,
    /// Signed 32-bit integer (wrapping arithmetic).
    I32,
    /// Signed 64-bit integer (wrapping arithmetic); the type of indices.
    I64,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single precision: the default float type.
    F32,
    /// IEEE double precision (used by gradient checks).
    F64,
}

impl DType {
    /// Every dtype, in promotion order.
    pub const ALL: [DType; 8] = [
        DType::Bool,
        DType::U8,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ];

    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::Bool | DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// True for f16, bf16, f32 and f64.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// True for u8, i32 and i64 (not bool).
    pub fn is_int(self) -> bool {
        matches!(self, DType::U8 | DType::I32 | DType::I64)
    }

    /// True for bool.
    pub fn is_bool(self) -> bool {
        self == DType::Bool
    }

    /// The short name used by the printer and parser (`f32`, `i64`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// Parses a name written by [`DType::name`].
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// PyTorch's type promotion for two tensor operands: bool < u8 < i32 < i64 < floats, the
    /// wider float wins, and f16 with bf16 gives f32.
    pub fn promote(a: DType, b: DType) -> DType {
        use DType::*;
        match (a, b) {
            (F16, BF16) | (BF16, F16) => F32,
            _ => a.max(b),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value of any [`DType`].
#[derive(Clone, Copy, Debug)]
pub enum Scalar {
    /// A bool.
    Bool(bool),
    /// A u8.
    U8(u8),
    /// An i32.
    I32(i32),
    /// An i64.
    I64(i64),
    /// An f16.
    F16(f16),
    /// A bf16.
    BF16(bf16),
    /// An f32.
    F32(f32),
    /// An f64.
    F64(f64),
}

impl Scalar {
    /// The dtype of this value.
    pub fn dtype(self) -> DType {
        match self {
            Scalar::Bool(_) => DType::Bool,
            Scalar::U8(_) => DType::U8,
            Scalar::I32(_) => DType::I32,
            Scalar::I64(_) => DType::I64,
            Scalar::F16(_) => DType::F16,
            Scalar::BF16(_) => DType::BF16,
            Scalar::F32(_) => DType::F32,
            Scalar::F64(_) => DType::F64,
        }
    }

    /// The zero of `dtype` (false for bool).
    pub fn zero(dtype: DType) -> Scalar {
        Scalar::F64(0.0).cast(dtype)
    }

    /// The one of `dtype` (true for bool).
    pub fn one(dtype: DType) -> Scalar {
        Scalar::F64(1.0).cast(dtype)
    }

    /// The value as f64 (bool: 0 or 1; i64 beyond 2^53 rounds).
    pub fn to_f64(self) -> f64 {
        match self {
            Scalar::Bool(v) => v as u8 as f64,
            Scalar::U8(v) => v as f64,
            Scalar::I32(v) => v as f64,
            Scalar::I64(v) => v as f64,
            Scalar::F16(v) => v.to_f64(),
            Scalar::BF16(v) => v.to_f64(),
            Scalar::F32(v) => v as f64,
            Scalar::F64(v) => v,
        }
    }

    /// The value as i64: integers exactly, bool as 0/1, floats truncated toward zero with
    /// saturation at the i64 range and NaN as 0 (Rust `as` semantics).
    pub fn to_i64(self) -> i64 {
        match self {
            Scalar::Bool(v) => v as i64,
            Scalar::U8(v) => v as i64,
            Scalar::I32(v) => v as i64,
            Scalar::I64(v) => v,
            other => other.to_f64() as i64,
        }
    }

    /// True when the value is nonzero (NaN counts as nonzero, as in PyTorch).
    pub fn is_truthy(self) -> bool {
        match self {
            Scalar::Bool(v) => v,
            Scalar::U8(v) => v != 0,
            Scalar::I32(v) => v != 0,
            Scalar::I64(v) => v != 0,
            other => other.to_f64() != 0.0 || other.to_f64().is_nan(),
        }
    }

    /// Converts to `dtype` with the cast semantics of the reference interpreter:
    /// - float → int: truncation toward zero; NaN → 0; out of range saturates to the target's
    ///   min/max (Rust `as`). For u8 the saturation is to 0..=255.
    /// - int → narrower int: wraps (two's complement), as C and PyTorch do.
    /// - anything → bool: `x != 0` (NaN → true). bool → number: 0 or 1.
    /// - float → narrower float, int → float: round to nearest even, once (to f16/bf16 through
    ///   an f32 rounded to odd, because `half`'s `from_f64` rounds twice).
    pub fn cast(self, dtype: DType) -> Scalar {
        if self.dtype() == dtype {
            return self;
        }
        if dtype == DType::Bool {
            return Scalar::Bool(self.is_truthy());
        }
        if self.dtype().is_float() {
            let v = self.to_f64();
            return match dtype {
                DType::U8 => Scalar::U8(v as u8),
                DType::I32 => Scalar::I32(v as i32),
                DType::I64 => Scalar::I64(v as i64),
                DType::F16 => Scalar::F16(f16::from_f32(f64_to_f32_round_odd(v))),
                DType::BF16 => Scalar::BF16(bf16::from_f32(f64_to_f32_round_odd(v))),
                DType::F32 => Scalar::F32(v as f32),
                DType::F64 => Scalar::F64(v),
                DType::Bool => unreachable!("handled above"),
            };
        }
        let v = self.to_i64();
        match dtype {
            DType::U8 => Scalar::U8(v as u8),
            DType::I32 => Scalar::I32(v as i32),
            DType::I64 => Scalar::I64(v),
            DType::F16 => Scalar::F16(f16::from_f32(i64_to_f32_round_odd(v))),
            DType::BF16 => Scalar::BF16(bf16::from_f32(i64_to_f32_round_odd(v))),
            // i64 → f32 directly (one rounding), not through f64 (two roundings).
            DType::F32 => Scalar::F32(v as f32),
            DType::F64 => Scalar::F64(v as f64),
            DType::Bool => unreachable!("handled above"),
        }
    }

    /// Builds a scalar of `dtype` from an f64 (with [`Scalar::cast`] semantics).
    pub fn from_f64(v: f64, dtype: DType) -> Scalar {
        Scalar::F64(v).cast(dtype)
    }

    /// The bit pattern, zero-extended to 64 bits (identity for hashing and equality).
    pub fn to_bits(self) -> u64 {
        match self {
            Scalar::Bool(v) => v as u64,
            Scalar::U8(v) => v as u64,
            Scalar::I32(v) => v as u32 as u64,
            Scalar::I64(v) => v as u64,
            Scalar::F16(v) => v.to_bits() as u64,
            Scalar::BF16(v) => v.to_bits() as u64,
            Scalar::F32(v) => v.to_bits() as u64,
            Scalar::F64(v) => v.to_bits(),
        }
    }

    /// Rebuilds a scalar from [`Scalar::to_bits`].
    pub fn from_bits(bits: u64, dtype: DType) -> Scalar {
        match dtype {
            DType::Bool => Scalar::Bool(bits != 0),
            DType::U8 => Scalar::U8(bits as u8),
            DType::I32 => Scalar::I32(bits as u32 as i32),
            DType::I64 => Scalar::I64(bits as i64),
            DType::F16 => Scalar::F16(f16::from_bits(bits as u16)),
            DType::BF16 => Scalar::BF16(bf16::from_bits(bits as u16)),
            DType::F32 => Scalar::F32(f32::from_bits(bits as u32)),
            DType::F64 => Scalar::F64(f64::from_bits(bits)),
        }
    }

    /// True when the value is a float NaN.
    pub fn is_nan(self) -> bool {
        self.dtype().is_float() && self.to_f64().is_nan()
    }
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        self.dtype() == other.dtype() && self.to_bits() == other.to_bits()
    }
}

impl Eq for Scalar {}

impl Hash for Scalar {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.dtype().hash(state);
        self.to_bits().hash(state);
    }
}

impl fmt::Display for Scalar {
    /// Writes the value so that the parser reads back the same bits: floats use Rust's
    /// shortest round-trip form plus `nan`, `inf`, `-inf`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Scalar::Bool(v) => write!(f, "{v}"),
            Scalar::U8(v) => write!(f, "{v}"),
            Scalar::I32(v) => write!(f, "{v}"),
            Scalar::I64(v) => write!(f, "{v}"),
            Scalar::F16(v) => write_float(f, v.to_f32() as f64, v.is_nan()),
            Scalar::BF16(v) => write_float(f, v.to_f32() as f64, v.is_nan()),
            Scalar::F32(v) => {
                if v.is_finite() {
                    write!(f, "{v:?}")
                } else {
                    write_float(f, v as f64, v.is_nan())
                }
            }
            Scalar::F64(v) => write_float(f, v, v.is_nan()),
        }
    }
}

/// `v` rounded to f32 *to odd*: exact when it can be, else whichever of the two f32s around `v`
/// has an odd last bit. Rounding that to a format of at most 22 significand bits (f16: 11,
/// bf16: 8) is the single correct rounding of `v`. `half`'s `f16::from_f64` goes through f32
/// (f16c) or drops the low 32 mantissa bits (software), and `bf16::from_f64` drops them too:
/// both round twice (`2049 + 2^-20` became 2048 instead of 2050 in f16).
fn f64_to_f32_round_odd(v: f64) -> f32 {
    let r = v as f32;
    if v.is_nan() || r as f64 == v || r.to_bits() & 1 == 1 {
        return r;
    }
    // `r` (possibly ±inf past the largest f32) is one neighbour of `v`; step to the other.
    let up = (r as f64).abs() < v.abs();
    f32::from_bits(if up { r.to_bits() + 1 } else { r.to_bits() - 1 })
}

/// [`f64_to_f32_round_odd`] for an i64 (whose f64 conversion would already round).
fn i64_to_f32_round_odd(v: i64) -> f32 {
    let r = v as f32;
    // `r` is an integer of magnitude at most 2^63: exact in i128.
    if r as i128 == v as i128 || r.to_bits() & 1 == 1 {
        return r;
    }
    let up = (r as i128).abs() < (v as i128).abs();
    f32::from_bits(if up { r.to_bits() + 1 } else { r.to_bits() - 1 })
}

fn write_float(f: &mut fmt::Formatter<'_>, v: f64, nan: bool) -> fmt::Result {
    if nan {
        f.write_str("nan")
    } else if v == f64::INFINITY {
        f.write_str("inf")
    } else if v == f64::NEG_INFINITY {
        f.write_str("-inf")
    } else {
        write!(f, "{v:?}")
    }
}

/// Rust element types that map to a [`DType`].
pub trait Element: Copy + Send + Sync + 'static + fmt::Debug {
    /// The dtype of this Rust type.
    const DTYPE: DType;
    /// Wraps a value as a scalar.
    fn to_scalar(self) -> Scalar;
    /// Converts a scalar (of any dtype) to this type with [`Scalar::cast`] semantics.
    fn from_scalar(s: Scalar) -> Self;
}

macro_rules! element {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn to_scalar(self) -> Scalar {
                Scalar::$d(self)
            }
            fn from_scalar(s: Scalar) -> Self {
                match s.cast(DType::$d) {
                    Scalar::$d(v) => v,
                    _ => unreachable!("cast returns the requested dtype"),
                }
            }
        }
    };
}
element!(bool, Bool);
element!(u8, U8);
element!(i32, I32);
element!(i64, I64);
element!(f16, F16);
element!(bf16, BF16);
element!(f32, F32);
element!(f64, F64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_follows_pytorch() {
        assert_eq!(DType::promote(DType::Bool, DType::U8), DType::U8);
        assert_eq!(DType::promote(DType::I32, DType::I64), DType::I64);
        assert_eq!(DType::promote(DType::I64, DType::F16), DType::F16);
        assert_eq!(DType::promote(DType::F16, DType::BF16), DType::F32);
        assert_eq!(DType::promote(DType::F32, DType::F64), DType::F64);
    }

    #[test]
    fn float_to_int_cast_truncates_and_saturates() {
        assert_eq!(Scalar::F32(-2.7).cast(DType::I32), Scalar::I32(-2));
        assert_eq!(Scalar::F32(2.7).cast(DType::I64), Scalar::I64(2));
        assert_eq!(Scalar::F32(f32::NAN).cast(DType::I32), Scalar::I32(0));
        assert_eq!(Scalar::F64(1e30).cast(DType::I32), Scalar::I32(i32::MAX));
        assert_eq!(Scalar::F64(-1e30).cast(DType::I64), Scalar::I64(i64::MIN));
        assert_eq!(Scalar::F32(300.0).cast(DType::U8), Scalar::U8(255));
        assert_eq!(Scalar::F32(-3.0).cast(DType::U8), Scalar::U8(0));
        assert_eq!(Scalar::I32(300).cast(DType::U8), Scalar::U8(44));
        assert_eq!(Scalar::I64(-1).cast(DType::U8), Scalar::U8(255));
        assert_eq!(Scalar::F32(f32::NAN).cast(DType::Bool), Scalar::Bool(true));
        assert_eq!(Scalar::F32(-0.0).cast(DType::Bool), Scalar::Bool(false));
    }

    #[test]
    fn scalars_compare_by_bits() {
        assert_eq!(Scalar::F32(f32::NAN), Scalar::F32(f32::NAN));
        assert_ne!(Scalar::F32(0.0), Scalar::F32(-0.0));
        assert_ne!(Scalar::F32(1.0), Scalar::F64(1.0));
        for d in DType::ALL {
            let s = Scalar::one(d);
            assert_eq!(Scalar::from_bits(s.to_bits(), d), s);
        }
    }
}
