//! Counter-based random numbers: Philox4x32-10 and the samples the `Random` op draws from it.
//!
//! Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
//! SC'11; the Random123 library) maps a 128-bit counter and a 64-bit key to 128 random bits.
//! It is a pure function, so element `k` of a `Random{seed, dist}` node is a pure function of
//! `(seed, k)`: the op fuses, runs in any order on any backend, and replays exactly.
//!
//! Guarantees (every backend must produce the same bits):
//! - element `k` (row-major) uses counter `[k as u32, (k >> 32) as u32, 0, 0]` and key
//!   `[seed as u32, (seed >> 32) as u32]`; `w = philox4x32_10(counter, key)`;
//! - uniform f32: `(w0 >> 8) as f32 * 2^-24`, in `[0, 1)`;
//! - uniform f64: `((w0 << 21) | (w1 >> 11)) as f64 * 2^-53` (53 bits), in `[0, 1)`;
//! - normal f32 (Box–Muller, computed in f32): `u1 = ((w0 >> 8) + 1) * 2^-24` in `(0, 1]`,
//!   `u2 = (w1 >> 8) * 2^-24`, `z = sqrt(-2 ln u1) * cos(2π u2)`;
//! - normal f64: the same in f64 with `u1 = (((w0 << 21) | (w1 >> 11)) + 1) * 2^-53` and
//!   `u2 = ((w2 << 21) | (w3 >> 11)) * 2^-53`.

use crate::dtype::{DType, Scalar};
use crate::op::Distribution;

/// Philox4x32 multiplier for counter word 0.
const M0: u32 = 0xD251_1F53;
/// Philox4x32 multiplier for counter word 2.
const M1: u32 = 0xCD9E_8D57;
/// Key schedule increment for key word 0 (the golden ratio).
const W0: u32 = 0x9E37_79B9;
/// Key schedule increment for key word 1 (sqrt(3) - 1).
const W1: u32 = 0xBB67_AE85;

/// The high and low 32 bits of the 64-bit product `a * b`.
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds, as Random123's `philox4x32(ctr, key)`: the key is bumped by
/// `(W0, W1)` (wrapping) between rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The four Philox words of element `k` of a `Random` node with seed `seed`.
pub fn random_words(seed: u64, k: u64) -> [u32; 4] {
    philox4x32_10(
        [k as u32, (k >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// 2^-24 as f32.
const F32_ULP24: f32 = 1.0 / 16_777_216.0;
/// 2^-53 as f64.
const F64_ULP53: f64 = 1.0 / 9_007_199_254_740_992.0;

/// 53 random bits from two words: the top 32 of `a` and the top 21 of `b`.
fn bits53(a: u32, b: u32) -> u64 {
    ((a as u64) << 21) | ((b as u64) >> 11)
}

/// Element `k` (row-major) of a `Random{seed, dist}` node of dtype `dtype`.
///
/// f32 and f64 follow the module's formulas exactly. Other dtypes (which the verifier rejects
/// for `Random`) get the f64 sample converted with [`Scalar::cast`].
pub fn random_scalar(seed: u64, k: u64, dist: Distribution, dtype: DType) -> Scalar {
    let w = random_words(seed, k);
    match (dtype, dist) {
        (DType::F32, Distribution::Uniform) => Scalar::F32((w[0] >> 8) as f32 * F32_ULP24),
        (DType::F32, Distribution::Normal) => {
            // (w0 >> 8) + 1 <= 2^24, exact in f32.
            let u1 = ((w[0] >> 8) + 1) as f32 * F32_ULP24;
            let u2 = (w[1] >> 8) as f32 * F32_ULP24;
            Scalar::F32((-2.0f32 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos())
        }
        (DType::F64, Distribution::Uniform) => Scalar::F64(bits53(w[0], w[1]) as f64 * F64_ULP53),
        (DType::F64, Distribution::Normal) => {
            // bits53 + 1 <= 2^53, exact in f64.
            let u1 = (bits53(w[0], w[1]) + 1) as f64 * F64_ULP53;
            let u2 = bits53(w[2], w[3]) as f64 * F64_ULP53;
            Scalar::F64((-2.0f64 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos())
        }
        (d, dist) => random_scalar(seed, k, dist, DType::F64).cast(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three `philox4x32 10` lines of Random123's `tests/kat_vectors`
    /// (columns: counter[4], key[2], expected[4]).
    #[test]
    fn known_answers_from_random123() {
        let kat: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0, 0, 0, 0],
                [0, 0],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [0xffffffff; 4],
                [0xffffffff; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, key, want) in kat {
            assert_eq!(philox4x32_10(ctr, key), want, "ctr {ctr:x?} key {key:x?}");
        }
    }

    #[test]
    fn samples_follow_the_word_formulas() {
        let (seed, k) = (0x0123_4567_89ab_cdef_u64, 5_000_000_123_u64);
        let w = philox4x32_10(
            [k as u32, (k >> 32) as u32, 0, 0],
            [seed as u32, (seed >> 32) as u32],
        );
        assert_eq!(w, random_words(seed, k));
        let u = random_scalar(seed, k, Distribution::Uniform, DType::F32);
        assert_eq!(u, Scalar::F32((w[0] >> 8) as f32 / 16_777_216.0));
        let u = random_scalar(seed, k, Distribution::Uniform, DType::F64);
        let bits = ((w[0] as u64) << 21) | ((w[1] as u64) >> 11);
        assert_eq!(u, Scalar::F64(bits as f64 / 9_007_199_254_740_992.0));
    }

    #[test]
    fn extreme_words_stay_in_range() {
        // The largest 24-/53-bit values give the largest uniforms, just below 1.
        assert!(((u32::MAX >> 8) as f32 * F32_ULP24) < 1.0);
        assert!((bits53(u32::MAX, u32::MAX) as f64 * F64_ULP53) < 1.0);
        // The +1 offset puts u1 at exactly 1 (ln = 0), never 0 (ln = -inf).
        assert_eq!(((u32::MAX >> 8) + 1) as f32 * F32_ULP24, 1.0);
        assert_eq!((bits53(u32::MAX, u32::MAX) + 1) as f64 * F64_ULP53, 1.0);
        assert!(F32_ULP24 > 0.0 && (F32_ULP24).ln().is_finite());
    }
}
