//! The C helpers every rendered program starts with: the part shared by both dialects.
//!
//! It is written against the names each dialect's head defines (see `render::Lang::head`):
//! the integer typedefs `u8 u16 u32 u64 i32 i64`, the function qualifier `FN`, the bit casts
//! `F32_OF BITS_F32 F64_OF BITS_F64`, and the f32 math names `SQRTF LOGF COSF FMODF`.
//! Every helper reproduces a rule of `metajit_metaops::interp` exactly, in C without undefined
//! behaviour: wrapping integer arithmetic goes through unsigned types, division guards its
//! divisor, float -> int casts saturate before converting.

/// The shared helpers (after the dialect's head).
pub const SHARED: &str = r#"
/* ---- f16 / bf16: stored as u16 bits, held in registers as the exact f32 value ---- */
FN float f16_to_f32(u16 h) {
    u32 s = ((u32)h & 0x8000u) << 16;
    u32 e = ((u32)h >> 10) & 0x1fu;
    u32 m = (u32)h & 0x3ffu;
    if (e == 0x1fu) return F32_OF(s | 0x7f800000u | (m << 13));
    if (e == 0u) {
        float v = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact */
        return s ? -v : v;
    }
    return F32_OF(s | ((e + 112u) << 23) | (m << 13));
}
/* f32 -> f16, round to nearest even (NaN stays a quiet NaN). */
FN u16 f32_to_f16(float f) {
    u32 x = BITS_F32(f);
    u32 s = (x >> 16) & 0x8000u;
    u32 a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return (u16)(s | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (u16)(s | 0x7c00u); /* >= 65520 (and inf) -> inf */
    if (a < 0x38800000u) { /* below 2^-14: an f16 subnormal or zero */
        u32 e = a >> 23;
        if (e < 102u) return (u16)s; /* below 2^-25 */
        u32 m = (a & 0x7fffffu) | 0x800000u;
        u32 sh = 126u - e; /* 14..24 */
        u32 q = m >> sh;
        u32 rem = m & ((1u << sh) - 1u);
        u32 halfway = 1u << (sh - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u))) q += 1u;
        return (u16)(s | q);
    }
    u32 q = (((a >> 23) - 112u) << 10) | ((a & 0x7fffffu) >> 13);
    u32 rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q += 1u;
    return (u16)(s | q);
}
FN float bf16_to_f32(u16 h) { return F32_OF((u32)h << 16); }
/* f32 -> bf16, round to nearest even (NaN stays a quiet NaN). */
FN u16 f32_to_bf16(float f) {
    u32 x = BITS_F32(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (u16)((x >> 16) | 0x40u);
    return (u16)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
/* Round an f32 to the nearest f16 / bf16 value (the result of every f16 / bf16 op). */
FN float rh(float x) { return f16_to_f32(f32_to_f16(x)); }
FN float rb(float x) { return bf16_to_f32(f32_to_bf16(x)); }
/* f64 -> f32 rounding to odd, so that a second rounding to f16/bf16 is the single correct one. */
FN float f64_to_f32_odd(double v) {
    float r = (float)v;
    if (v != v || (double)r == v || (BITS_F32(r) & 1u)) return r;
    u32 b = BITS_F32(r);
    return F32_OF(fabs((double)r) < fabs(v) ? b + 1u : b - 1u);
}
/* i64 -> f32 rounding to odd (the same purpose). */
FN float i64_to_f32_odd(i64 v) {
    u64 m = v < 0 ? (u64)0 - (u64)v : (u64)v;
    u32 sh = 0u;
    u64 sticky = 0;
    while (m >= ((u64)1 << 24)) { sticky |= m & (u64)1; m >>= 1; sh += 1u; }
    float r = (float)(u32)(m | sticky) * F32_OF((127u + sh) << 23);
    return v < 0 ? -r : r;
}

/* ---- float -> integer casts: truncate, saturate, NaN -> 0 ---- */
FN i64 f64_to_i64(double v) {
    if (v != v) return 0;
    if (v >= 9223372036854775808.0) return (i64)(((u64)1 << 63) - (u64)1);
    if (v <= -9223372036854775808.0) return (i64)((u64)1 << 63);
    return (i64)v;
}
FN i32 f64_to_i32(double v) {
    if (v != v) return 0;
    if (v >= 2147483647.0) return (i32)0x7fffffff;
    if (v <= -2147483648.0) return (i32)(-2147483647 - 1);
    return (i32)v;
}
FN u8 f64_to_u8(double v) {
    if (v != v || v <= 0.0) return (u8)0;
    if (v >= 255.0) return (u8)255;
    return (u8)v;
}

/* ---- integer arithmetic: wrapping, floor division / modulo, 0 when dividing by 0 ---- */
FN i64 wadd64(i64 a, i64 b) { return (i64)((u64)a + (u64)b); }
FN i64 wsub64(i64 a, i64 b) { return (i64)((u64)a - (u64)b); }
FN i64 wmul64(i64 a, i64 b) { return (i64)((u64)a * (u64)b); }
FN i32 wadd32(i32 a, i32 b) { return (i32)((u32)a + (u32)b); }
FN i32 wsub32(i32 a, i32 b) { return (i32)((u32)a - (u32)b); }
FN i32 wmul32(i32 a, i32 b) { return (i32)((u32)a * (u32)b); }
FN i64 fdiv64(i64 a, i64 b) {
    if (b == 0) return 0;
    if (b == -1) return (i64)((u64)0 - (u64)a);
    i64 q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
    return q;
}
FN i64 fmod64(i64 a, i64 b) {
    if (b == 0 || b == -1) return 0;
    i64 r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
}
FN i64 ipow64(i64 base, i64 e) {
    if (e < 0) return base == 1 ? 1 : (base == -1 ? ((e & 1) ? -1 : 1) : 0);
    u64 r = 1, b = (u64)base, x = (u64)e;
    while (x != 0) {
        if (x & (u64)1) r *= b;
        b *= b;
        x >>= 1;
    }
    return (i64)r;
}

/* ---- float helpers ---- */
FN float fmodpy32(float a, float b) {
    if (b == 0.0f) return F32_OF(0x7fc00000u);
    float r = FMODF(a, b);
    if (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) r += b;
    return r;
}
FN double fmodpy64(double a, double b) {
    if (b == 0.0) return F64_OF((u64)0x7ff8000000000000UL);
    double r = fmod(a, b);
    if (r != 0.0 && ((r < 0.0) != (b < 0.0))) r += b;
    return r;
}

/* ---- Philox4x32-10 (metajit_metaops::philox) ---- */
typedef struct { u32 w[4]; } philox_words;
FN philox_words philox(u64 seed, u64 k) {
    u32 c0 = (u32)k, c1 = (u32)(k >> 32), c2 = 0u, c3 = 0u;
    u32 k0 = (u32)seed, k1 = (u32)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        if (r > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        u64 p0 = (u64)0xD2511F53u * (u64)c0;
        u64 p1 = (u64)0xCD9E8D57u * (u64)c2;
        u32 n0 = (u32)(p1 >> 32) ^ c1 ^ k0;
        u32 n2 = (u32)(p0 >> 32) ^ c3 ^ k1;
        c1 = (u32)p1;
        c3 = (u32)p0;
        c0 = n0;
        c2 = n2;
    }
    philox_words out;
    out.w[0] = c0; out.w[1] = c1; out.w[2] = c2; out.w[3] = c3;
    return out;
}
FN float rand_uniform32(u64 seed, u64 k) {
    philox_words p = philox(seed, k);
    return (float)(p.w[0] >> 8) * 5.9604644775390625e-8f;
}
FN float rand_normal32(u64 seed, u64 k) {
    philox_words p = philox(seed, k);
    float u1 = (float)((p.w[0] >> 8) + 1u) * 5.9604644775390625e-8f;
    float u2 = (float)(p.w[1] >> 8) * 5.9604644775390625e-8f;
    return SQRTF(-2.0f * LOGF(u1)) * COSF(6.28318530717958647692f * u2);
}
FN u64 bits53(u32 a, u32 b) { return ((u64)a << 21) | ((u64)b >> 11); }
FN double rand_uniform64(u64 seed, u64 k) {
    philox_words p = philox(seed, k);
    return (double)bits53(p.w[0], p.w[1]) * 1.1102230246251565404e-16;
}
FN double rand_normal64(u64 seed, u64 k) {
    philox_words p = philox(seed, k);
    double u1 = (double)(bits53(p.w[0], p.w[1]) + (u64)1) * 1.1102230246251565404e-16;
    double u2 = (double)bits53(p.w[2], p.w[3]) * 1.1102230246251565404e-16;
    return sqrt(-2.0 * log(u1)) * cos(6.28318530717958647692 * u2);
}
"#;
