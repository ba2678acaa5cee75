/* Scalar loads and float arithmetic shared by every float decoder: the source-block decoders and the
 * _R decoders of blocks.c, and the decoders of upstream's CPU_REPACK layouts in cpu_repack.c.
 *
 * Why a shared header: a decoder of a packed layout agrees bit for bit with the source decoder only
 * if both perform the same float32 operations in the same order; they differ only in where they
 * read codes and scales from and call the same emit helper (blocks.c's header comment gives the
 * rules these follow: no FMA contraction, quiet NaNs on load, +/-1 multiplications). Internal: not
 * a cffi declaration, included by the C files only.
 */
#ifndef AMX_REPACK_BLOCKS_ARITH_H
#define AMX_REPACK_BLOCKS_ARITH_H

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <float.h>
#include <stdint.h>
#include <string.h>

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "the decoders need float arithmetic evaluated in float (FLT_EVAL_METHOD == 0), e.g. SSE on x86"
#endif
#if defined(__FAST_MATH__)
#error "the decoders must not be compiled with -ffast-math (results must be bit-exact)"
#endif

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* IEEE fp16 bits -> float32, exact; NaN payload kept (<< 13) and not quieted, like numpy's cast. */
static inline float f16_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
    if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | man << 13);     /* Inf / NaN */
    if (exp != 0) return bits_f32(sign | (exp + 112) << 23 | man << 13);  /* normal: bias 15 -> 127 */
    if (man == 0) return bits_f32(sign);                                  /* +/- 0 */
    exp = 113;                                                            /* subnormal: normalise */
    while (!(man & 0x400u)) { man <<= 1; --exp; }
    return bits_f32(sign | exp << 23 | (man & 0x3FFu) << 13);
}
/* An fp16 scale as the decoders use it: f16_f32, with a signalling NaN quieted (bit 22 set). gguf-py
   multiplies every scale at least once before it reaches an output, which quiets it the same way;
   doing it here keeps the result independent of compiler folds such as d * 1.0f -> d (legal for
   GCC unless -fsignaling-nans), which would otherwise let an sNaN through unquieted. */
static inline float ldh(const uint8_t *p) {
    float f = f16_f32(ld16(p));
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) u |= 0x00400000u;
    return bits_f32(u);
}

/* An f32 row scale (IQ4_KS, IQ5_KS, IQ2_BN, Q8_KV): raw bits, a signalling NaN quieted for the
   same reason as in ldh (every decoder multiplies the scale before it reaches an output). */
static inline float ldf(const uint8_t *p) {
    uint32_t u = ld32(p);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) u |= 0x00400000u;
    return bits_f32(u);
}
/* bf16 bits -> float32: the upper half of the f32 pattern, exact (NaNs, signalling ones included,
   are copied unchanged: no arithmetic touches a bf16 value, in gguf-py or in ik). */
static inline float bf16_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* ggml_e8m0_to_fp32_half as gguf-py writes it (MXFP4): 2^(e-128) as a float32 bit pattern. */
static inline float e8m0_half(uint8_t e) {
    return bits_f32(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23);
}

/* 6-bit scale and min j (0..7) of Q4_K/Q5_K from the 12-byte field s. */
static inline void k4_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Non-linear 4-bit value tables (gguf-py: IQ4_NL.kvalues, MXFP4.kvalues = doubled e2m1). */
static const float KV_IQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1, 13, 25, 38, 53, 69, 89, 113};
static const float KV_MXFP4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* y = d * (float)(v - off)          Q4_0, Q5_0, Q3_K (off 4, d = d*scale), Q6_K (off 32) */
static inline void emit_offset(float *restrict y, const uint8_t *restrict v, int n, float d, int off) {
    for (int j = 0; j < n; ++j) y[j] = d * (float)((int)v[j] - off);
}
/* y = (float)x * d                  Q8_0 */
static inline void emit_i8(float *restrict y, const int8_t *restrict x, int n, float d) {
    for (int j = 0; j < n; ++j) y[j] = (float)x[j] * d;
}
/* y = d * (float)v + m              Q4_1, Q5_1 (NaN + NaN gives the first operand, as numpy) */
static inline void emit_add(float *restrict y, const uint8_t *restrict v, int n, float d, float m) {
    if (m == m) {
        for (int j = 0; j < n; ++j) y[j] = d * (float)v[j] + m;
    } else {
        for (int j = 0; j < n; ++j) {
            const float a = d * (float)v[j];
            y[j] = a != a ? a : a + m;
        }
    }
}
/* y = dl * (float)v - ml            Q2_K, Q4_K, Q5_K */
static inline void emit_sub(float *restrict y, const uint8_t *restrict v, int n, float dl, float ml) {
    for (int j = 0; j < n; ++j) y[j] = dl * (float)v[j] - ml;
}
/* y = d * (float)table[v]           IQ4_NL, IQ4_XS (d = d*scale), MXFP4. The 16 products d * t[i]
   are formed once and looked up: each output is still exactly the float32 product d * t[v]. */
static inline void emit_table(float *restrict y, const uint8_t *restrict v, int n, float d,
                              const float *table) {
    float p[16];
    for (int i = 0; i < 16; ++i) p[i] = d * table[i];
    for (int j = 0; j < n; ++j) y[j] = p[v[j] & 15];
}

/* Legacy nibble order: v[j] = lo(q[j]), v[j+16] = hi(q[j]). */
static inline void codes_legacy(uint8_t *v, const uint8_t *q) {
    for (int j = 0; j < 16; ++j) {
        v[j] = q[j] & 0xF;
        v[j + 16] = q[j] >> 4;
    }
}

static inline void q2k_emit16(float *restrict y, const uint8_t *restrict v, float d, float dmin, uint8_t sc) {
    const float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
    emit_sub(y, v, 16, dl, ml);
}

static inline void k4_emit32(float *restrict y, const uint8_t *restrict v, float d, float dmin, int sc, int m) {
    const float dl = d * (float)sc, ml = dmin * (float)m;
    emit_sub(y, v, 32, dl, ml);
}

static inline void q6k_emit16(float *restrict y, const uint8_t *restrict v, float d, int8_t sc) {
    const float dl = d * (float)sc;
    emit_offset(y, v, 16, dl, 32);
}

/* y = bit ? d : -d                  Q1_0, as ggml's dequantize_row_q1_0 (gguf-py has no Q1_0
   decoder): d is the plain fp16 value and -d a negation, exactly as there. */
static inline void emit_sign(float *restrict y, const uint8_t *restrict bit, int n, float d) {
    const float neg_d = -d;
    for (int j = 0; j < n; ++j) y[j] = bit[j] ? d : neg_d;
}

#endif
