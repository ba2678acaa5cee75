/* Float decoders for `amx-repack verify`: standard ggml blocks and ik_llama.cpp _R4/_R8/_R16 layouts.
 *
 * Reference arithmetic: gguf-py's gguf/quants.py (`dequantize_blocks` of each class); for the
 * ik_llama.cpp-only types, which gguf-py cannot decode, ik's own dequantizers (see the section
 * "ik_llama.cpp source types"; the rules below hold there too). Every decoder
 * here performs the same float32 operations in the same order, so the results are bit-identical to
 * `gguf.quants.dequantize`, NaN payloads and signs included:
 *   - fp16 -> f32 is exact bit manipulation, keeping signalling NaNs signalling (as numpy's cast
 *     does); numpy's first float32 operation on a scale then quiets it, so the decoders quiet it on
 *     load (ldh), which gives the same bits and survives compiler folds like d * 1.0f -> d;
 *   - x86 semantics: an operation on one NaN returns it quieted; 0 * Inf gives the default NaN
 *     0xFFC00000 (what numpy gives on the same machine);
 *   - no FMA contraction and no reassociation (see the pragmas below; -ffast-math must never be used);
 *   - sign flips are multiplications by +/-1.0f, never negations (a multiplication keeps a NaN's
 *     sign, a negation would flip it);
 *   - where two NaNs can meet in an addition (Q4_1/Q5_1 `d*q + m`), the result is chosen
 *     explicitly (numpy returns the first operand's NaN; a C compiler may commute an addition).
 *     Subtractions (`d*q - m` of the K-quants) are never commuted, and x86 returns the first operand's
 *     NaN there, as numpy does.
 *
 * Structure. Each decoder first turns its bytes into per-element integer codes (`v[32]`, one byte
 * per element of a 32-element sub-block) plus its scale values, then calls an `emit_*` helper that
 * does the float arithmetic. Source-layout and interleaved-layout decoders of one type differ only
 * in where they read codes and scales from (the interleaved ones read the _R layout of
 * shared/spec/interleaved.md §4 directly, never via a rebuilt standard block) and share the
 * `emit_*` helper, which is what makes them agree bit for bit.
 *
 * Byte order: little-endian formats on a little-endian host (checked below); unaligned reads go
 * through memcpy.
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "blocks.h"

#include <float.h>
#include <stddef.h>
#include <string.h>

#include "blocks_arith.h"
#include "blocks_grids.h"
#include "decode_simd.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "blocks.c assumes a little-endian host (the GGUF block formats are little-endian)"
#endif
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "blocks.c needs float arithmetic evaluated in float (FLT_EVAL_METHOD == 0), e.g. SSE on x86"
#endif
#if defined(__FAST_MATH__)
#error "blocks.c must not be compiled with -ffast-math (results must be bit-exact)"
#endif

/* Bytes per block (ggml-common.h). */
enum {
    B_Q4_0 = 2 + 16, B_Q4_1 = 2 + 2 + 16, B_Q5_0 = 2 + 4 + 16, B_Q5_1 = 2 + 2 + 4 + 16, B_Q8_0 = 2 + 32,
    B_IQ4_NL = 2 + 16, B_MXFP4 = 1 + 16, B_Q1_0 = 2 + 16,
    B_Q2_K = 16 + 64 + 2 + 2, B_Q3_K = 32 + 64 + 12 + 2, B_Q4_K = 2 + 2 + 12 + 128,
    B_Q5_K = 2 + 2 + 12 + 32 + 128, B_Q6_K = 128 + 64 + 16 + 2, B_IQ4_XS = 2 + 2 + 4 + 128,
    B_IQ2_XXS = 2 + 64, B_IQ2_XS = 2 + 64 + 8, B_IQ2_S = 2 + 64 + 8 + 8, B_IQ3_XXS = 2 + 64 + 32,
    B_IQ3_S = 2 + 64 + 8 + 32 + 4,
    /* ik_llama.cpp types (ik's ggml-common.h); IQ4_KS/IQ5_KS/IQ2_BN rows start with an f32 scale
       (M_F32 bytes), Q8_KV rows with an f32 scale and an i32 sum (M_Q8_KV), Q8_KV_R8 rows carry only
       the scale (M_F32). BF16 has no blocks: B_BF16 is one value. */
    B_Q6_0 = 2 + 8 + 16, B_IQ2_K = 2 + 2 + 8 + 64, B_IQ3_K = 2 + 2 + 2 + 8 + 64 + 32,
    B_IQ4_K = 2 + 2 + 4 + 8 + 128, B_IQ5_K = 2 + 2 + 4 + 8 + 128 + 32, B_IQ4_KS = 8 + 128,
    B_IQ5_KS = 8 + 128 + 32, B_IQ2_BN = 16, B_Q8_KV = 32, B_BF16 = 2,
    M_F32 = 4, M_Q8_KV = 4 + 4,
};
_Static_assert(B_Q4_0 == 18 && B_Q4_1 == 20 && B_Q5_0 == 22 && B_Q5_1 == 24 && B_Q8_0 == 34,
               "legacy block sizes");
_Static_assert(B_IQ4_NL == 18 && B_MXFP4 == 17, "32-element block sizes");
_Static_assert(B_Q2_K == 84 && B_Q3_K == 110 && B_Q4_K == 144 && B_Q5_K == 176 && B_Q6_K == 210 &&
               B_IQ4_XS == 136, "K-quant block sizes");
_Static_assert(B_IQ2_XXS == 66 && B_IQ2_XS == 74 && B_IQ2_S == 82 && B_IQ3_XXS == 98 && B_IQ3_S == 110,
               "grid i-quant block sizes");
_Static_assert(B_Q6_0 == 26 && B_IQ2_K == 76 && B_IQ3_K == 110 && B_IQ4_K == 144 && B_IQ5_K == 176 &&
               B_IQ4_KS == 136 && B_IQ5_KS == 168 && B_IQ2_BN == 16 && B_Q8_KV == 32,
               "ik block sizes");
_Static_assert(sizeof(float) == 4 && sizeof(uint32_t) == 4, "float32");

/* ---------------------------------------------------------------------------------------------- */
/* Scalars (the loads, fp16/e8m0 conversions and K-quant scale fields are in blocks_arith.h)       */

/* Nibble + 2-bit split 6-bit scale fields of the _R layouts (spec §4.1): value with index n. */
static inline int split6(const uint8_t *sl, const uint8_t *sh, int n) {
    return ((sl[n % 32] >> (4 * (n / 32))) & 0xF) | ((sh[n % 16] >> (2 * (n / 16))) & 3) << 4;
}

/* Inverse of the spec's sign scrambling scr (prefix XOR): s = t ^ (t << 1), 7 bits. */
static inline int unscr(int t) { return (t ^ (t << 1)) & 127; }

static const float SIGN_F[2] = {1.0f, -1.0f};
/* ik_llama.cpp's non-linear tables (iq4k_values, iq5nl_values, iq2nl_values, iq3nl_values), read
   off ik's own dequantizers: a block's `extra` bit (IQ*_K) or the scale's bit 0 (IQ*_KS) selects
   the second half, the same values shifted. */
static const float KV_IQ4K[32] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
                                  -123, -100, -79, -61, -45, -31, -18, -6, 5, 17, 29, 42, 57, 73, 93, 117};
static const float KV_IQ5K[64] = {
    -126, -114, -103, -92, -83, -74, -65, -57, -50, -43, -36, -30, -24, -18, -12, -6,
    -1, 5, 11, 17, 23, 29, 36, 43, 51, 59, 68, 77, 87, 97, 109, 121,
    -124, -112, -101, -90, -81, -72, -63, -55, -48, -41, -34, -28, -22, -16, -10, -4,
    1, 7, 13, 19, 25, 31, 38, 45, 53, 61, 70, 79, 89, 99, 111, 123};
static const float KV_IQ2K[8] = {-31, -13, 1, 17, -26, -8, 6, 22};
static const float KV_IQ3K[16] = {-63, -40, -23, -10, 1, 13, 28, 47, -59, -36, -19, -6, 5, 17, 32, 51};

/* ---------------------------------------------------------------------------------------------- */
/* Float arithmetic, shared by the source and interleaved decoders of each type (the common emit  */
/* helpers are in blocks_arith.h, shared with cpu_repack.c)                                        */

/* y = d * table[v]                 ik's IQ*_K / IQ*_KS (d = d * scale), v already offset into the
   table half that `extra` selects; ik multiplies the float scale by the int8 table value. */
static inline void emit_lut(float *restrict y, const uint8_t *restrict v, int n, float d,
                            const float *restrict table) {
    for (int j = 0; j < n; ++j) y[j] = d * table[v[j]];
}
/* The same with the 32 products d * table[0..31] formed first and looked up (as in emit_table;
   each output is still exactly d * table[v]): faster for IQ4_KS/IQ5_KS's 32-element sub-blocks. */
static inline void emit_lut32(float *restrict y, const uint8_t *restrict v, float d,
                              const float *restrict table) {
    float p[32];
    for (int i = 0; i < 32; ++i) p[i] = d * table[i];
    for (int j = 0; j < 32; ++j) y[j] = p[v[j]];
}
/* y = (db * grid[j]) * sign(bit j)  grid i-quants, 8 elements (or 4, from a 4-wide grid) */
static inline void emit_grid(float *restrict y, const uint8_t *restrict grid, int n, float db, unsigned signs) {
    for (int j = 0; j < n; ++j) y[j] = db * (float)grid[j] * SIGN_F[(signs >> j) & 1];
}

/* ---------------------------------------------------------------------------------------------- */
/* Code extraction helpers                                                                        */

/* 5th bit of Q5_0/Q5_1: bit j of the 32-bit qh word. */
static inline void codes_add_bit4_word(uint8_t *v, uint32_t h) {
    for (int j = 0; j < 32; ++j) v[j] |= (uint8_t)(((h >> j) & 1) << 4);
}

/* The _R layouts move codes in runs of four consecutive elements (i = 0..3 at bytes 4k+i), so the
   code extraction below works on 32-bit words: a word of four bytes (one per i) turns into four
   consecutive codes v[base + 0..3] with one shift and mask. */
#define M1 0x01010101u
#define M2 0x03030303u
#define M4 0x0F0F0F0Fu

/* Code words: c[m] holds codes v[4m .. 4m+3] (one byte each, element 4m in the low byte); the
   pattern readers below fill c[8] and words_to_codes turns it into the v[32] the emit helpers take. */
static inline void words_to_codes(uint8_t *v, const uint32_t *c) { memcpy(v, c, 32); }

/* Pattern A (R = 4, 64-byte slab): the 32 4-bit codes of row k, bits 0-3.
   byte 4k+i: v[i] | v[i+8] << 4; 16+4k+i: v[i+16] | v[i+24] << 4; 32+4k+i: v[i+4] | v[i+12] << 4;
   48+4k+i: v[i+20] | v[i+28] << 4. */
static inline void pattern_a(uint32_t *c, const uint8_t *slab, int k) {
    static const uint8_t lo[4] = {0, 4, 1, 5};  /* word index of the low nibbles; high: +2 */
    for (int q = 0; q < 4; ++q) {
        const uint32_t w = ld32(slab + 16 * q + 4 * k);
        c[lo[q]] = w & M4;
        c[lo[q] + 2] = (w >> 4) & M4;
    }
}
/* Pattern B (R = 8, 128-byte slab): byte 32l+4k+i = v[8l+i] | v[8l+i+4] << 4. */
static inline void pattern_b(uint32_t *c, const uint8_t *slab, int k) {
    for (int l = 0; l < 4; ++l) {
        const uint32_t w = ld32(slab + 32 * l + 4 * k);
        c[2 * l] = w & M4;
        c[2 * l + 1] = (w >> 4) & M4;
    }
}
/* Pattern C (R = 4, 32-byte slab): byte 16h+4k+i, bits 2t..2t+1 = v[16h + i + 4t] (bits 0-1). */
static inline void pattern_c(uint32_t *c, const uint8_t *slab, int k) {
    for (int h = 0; h < 2; ++h) {
        const uint32_t w = ld32(slab + 16 * h + 4 * k);
        for (int t = 0; t < 4; ++t) c[4 * h + t] = (w >> (2 * t)) & M2;
    }
}
/* Bit-plane bytes (R = 4, 16 bytes): bit t of byte 4k+i = bit `bit` of v[i + order[t]]; the tables
   hold order[t] / 4 (a word index). */
static const uint8_t ORD_Q5K[8] = {0, 2, 1, 3, 4, 6, 5, 7};  /* 0, 8, 4, 12, 16, 24, 20, 28 */
static const uint8_t ORD_Q3K[8] = {0, 1, 2, 3, 4, 5, 6, 7};  /* 0, 4, 8, ..., 28 */
static const uint8_t ORD_Q50[8] = {0, 4, 1, 5, 2, 6, 3, 7};  /* 0, 16, 4, 20, 8, 24, 12, 28 */
static const uint8_t ORD_IQ5[8] = {0, 2, 4, 6, 1, 3, 5, 7};  /* 0, 8, 16, 24, 4, 12, 20, 28 */
static inline void bit_plane(uint32_t *c, const uint8_t *plane, int k, const uint8_t *order, int bit) {
    const uint32_t w = ld32(plane + 4 * k);
    for (int t = 0; t < 8; ++t) c[order[t]] |= ((w >> t) & M1) << bit;
}

/* ---------------------------------------------------------------------------------------------- */
/* Source (standard layout) block decoders: one block -> y[0 .. blck-1]                            */

static inline void src_q4_0(const uint8_t *restrict x, float *restrict y) {
    uint8_t v[32];
    codes_legacy(v, x + 2);
    emit_offset(y, v, 32, ldh(x), 8);
}
static inline void src_q4_1(const uint8_t *restrict x, float *restrict y) {
    uint8_t v[32];
    codes_legacy(v, x + 4);
    emit_add(y, v, 32, ldh(x), ldh(x + 2));
}
static inline void src_q5_0(const uint8_t *restrict x, float *restrict y) {
    uint8_t v[32];
    codes_legacy(v, x + 6);
    codes_add_bit4_word(v, ld32(x + 2));
    emit_offset(y, v, 32, ldh(x), 16);
}
static inline void src_q5_1(const uint8_t *restrict x, float *restrict y) {
    uint8_t v[32];
    codes_legacy(v, x + 8);
    codes_add_bit4_word(v, ld32(x + 4));
    emit_add(y, v, 32, ldh(x), ldh(x + 2));
}
static inline void src_q8_0(const uint8_t *restrict x, float *restrict y) {
    emit_i8(y, (const int8_t *)(x + 2), 32, ldh(x));
}
static inline void src_iq4_nl(const uint8_t *restrict x, float *restrict y) {
    uint8_t v[32];
    codes_legacy(v, x + 2);
    emit_table(y, v, 32, ldh(x), KV_IQ4NL);
}
/* Q1_0 (128 elements): d @0, qs[16] @2, element j = bit j % 8 of qs[j / 8]. */
static inline void src_q1_0(const uint8_t *restrict x, float *restrict y) {
    uint8_t v[128];
    for (int j = 0; j < 128; ++j) v[j] = (x[2 + j / 8] >> (j % 8)) & 1;
    emit_sign(y, v, 128, f16_f32(ld16(x)));
}
static inline void src_mxfp4(const uint8_t *restrict x, float *restrict y) {
    uint8_t v[32];
    codes_legacy(v, x + 1);
    emit_table(y, v, 32, e8m0_half(x[0]), KV_MXFP4);
}

/* Q2_K: scales[16] @0, qs[64] @16, d @80, dmin @82. Element 128h + 32p + j = (qs[32h+j] >> 2p) & 3. */
static inline void src_q2_k(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x + 80), dmin = ldh(x + 82);
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        const uint8_t *q = x + 16 + 32 * (ib / 4);
        const int sh = 2 * (ib % 4);
        for (int j = 0; j < 32; ++j) v[j] = (q[j] >> sh) & 3;
        q2k_emit16(y + 32 * ib, v, d, dmin, x[2 * ib]);
        q2k_emit16(y + 32 * ib + 16, v + 16, d, dmin, x[2 * ib + 1]);
    }
}

/* Q3_K: hmask[32] @0, qs[64] @32, scales[12] @96, d @108. 3-bit code v = low2 | hmask bit << 2;
   gguf-py's value low2 - 4*(1 - hbit) equals v - 4. Scales are 6-bit, biased by 32. */
static inline int q3k_scale(const uint8_t *s, int j) {
    const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    return lo | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4;
}
static inline void q3k_emit16(float *restrict y, const uint8_t *restrict v, float d, int sc6) {
    const float dl = d * (float)(sc6 - 32);
    emit_offset(y, v, 16, dl, 4);
}
static inline void src_q3_k(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x + 108);
    const uint8_t *hm = x, *s = x + 96;
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        const uint8_t *q = x + 32 + 32 * (ib / 4);
        const int sh = 2 * (ib % 4);
        for (int j = 0; j < 32; ++j) v[j] = ((q[j] >> sh) & 3) | ((hm[j] >> ib) & 1) << 2;
        q3k_emit16(y + 32 * ib, v, d, q3k_scale(s, 2 * ib));
        q3k_emit16(y + 32 * ib + 16, v + 16, d, q3k_scale(s, 2 * ib + 1));
    }
}

/* Q4_K: d @0, dmin @2, scales[12] @4, qs[128] @16. Q5_K: ... qh[32] @16, qs[128] @48. */
static inline void src_q4_k(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x), dmin = ldh(x + 2);
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        const uint8_t *q = x + 16 + 32 * (ib / 2);
        const int sh = 4 * (ib % 2);
        for (int j = 0; j < 32; ++j) v[j] = (q[j] >> sh) & 0xF;
        int sc, m;
        k4_scale_min(x + 4, ib, &sc, &m);
        k4_emit32(y + 32 * ib, v, d, dmin, sc, m);
    }
}
static inline void src_q5_k(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x), dmin = ldh(x + 2);
    const uint8_t *qh = x + 16;
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        const uint8_t *q = x + 48 + 32 * (ib / 2);
        const int sh = 4 * (ib % 2);
        for (int j = 0; j < 32; ++j) v[j] = ((q[j] >> sh) & 0xF) | ((qh[j] >> ib) & 1) << 4;
        int sc, m;
        k4_scale_min(x + 4, ib, &sc, &m);
        k4_emit32(y + 32 * ib, v, d, dmin, sc, m);
    }
}

/* Q6_K: ql[128] @0, qh[64] @128, scales[16] int8 @192, d @208. Value (d * scale) * (v - 32). */
static inline void src_q6_k(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x + 208);
    const int8_t *sc = (const int8_t *)(x + 192);
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        const int h = ib / 4, p = ib % 4;
        const uint8_t *ql = x + 64 * h + 32 * (p & 1), *qh = x + 128 + 32 * h;
        const int sl = 4 * (p >> 1), shh = 2 * p;
        for (int j = 0; j < 32; ++j) v[j] = ((ql[j] >> sl) & 0xF) | ((qh[j] >> shh) & 3) << 4;
        q6k_emit16(y + 32 * ib, v, d, sc[2 * ib]);
        q6k_emit16(y + 32 * ib + 16, v + 16, d, sc[2 * ib + 1]);
    }
}

/* IQ4_XS: d @0, scales_h u16 @2, scales_l[4] @4, qs[128] @8. Value (d * (sc - 32)) * kvalue. */
static inline void iq4xs_emit32(float *restrict y, const uint8_t *restrict v, float d, int sc6) {
    const float dl = d * (float)(sc6 - 32);
    emit_table(y, v, 32, dl, KV_IQ4NL);
}
static inline void src_iq4_xs(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x);
    const uint16_t sh = ld16(x + 2);
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        codes_legacy(v, x + 8 + 16 * ib);
        const int sc = ((x[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | ((sh >> (2 * ib)) & 3) << 4;
        iq4xs_emit32(y + 32 * ib, v, d, sc);
    }
}

/* Grid i-quants. Scales: db = d * (0.5 + s) * 0.25 (IQ2_*), d * (0.5 + s) * 0.5 (IQ3_XXS),
   d * (1 + 2s) (IQ3_S), evaluated left to right in float32 as gguf-py does. */
static inline float db_iq2(float d, int s) { return d * (0.5f + (float)s) * 0.25f; }
static inline float db_iq3xxs(float d, int s) { return d * (0.5f + (float)s) * 0.5f; }
static inline float db_iq3s(float d, int s) { return d * (float)(1 + 2 * s); }

/* IQ2_XXS: d @0; sub-block ib: 4 grid bytes @2+8ib, then u32 a (4 x 7-bit sign index, 4-bit scale). */
static inline void iq2xxs_emit32(float *y, const uint8_t *g, float db, const int *sidx) {
    for (int l = 0; l < 4; ++l) emit_grid(y + 8 * l, GRID_IQ2_XXS[g[l]], 8, db, KSIGNS[sidx[l]]);
}
static inline void src_iq2_xxs(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x);
    for (int ib = 0; ib < 8; ++ib) {
        const uint8_t *p = x + 2 + 8 * ib;
        const uint32_t a = ld32(p + 4);
        int sidx[4];
        for (int l = 0; l < 4; ++l) sidx[l] = (a >> (7 * l)) & 127;
        iq2xxs_emit32(y + 32 * ib, p, db_iq2(d, (int)(a >> 28)), sidx);
    }
}

/* IQ2_XS: d @0, qs u16[32] @2 (9-bit grid index | 7-bit sign index << 9), scales[8] @66
   (one 4-bit scale per 16 elements). */
static inline void src_iq2_xs(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x);
    for (int ib = 0; ib < 8; ++ib)
        for (int l = 0; l < 4; ++l) {
            const uint16_t w = ld16(x + 2 + 2 * (4 * ib + l));
            const float db = db_iq2(d, (x[66 + ib] >> (4 * (l / 2))) & 0xF);
            emit_grid(y + 32 * ib + 8 * l, GRID_IQ2_XS[w & 511], 8, db, KSIGNS[w >> 9]);
        }
}

/* IQ2_S: d @0, qs[32] @2 (grid low bytes), signs[32] @34, qh[8] @66, scales[8] @74. */
static inline void src_iq2_s(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x);
    for (int ib = 0; ib < 8; ++ib)
        for (int l = 0; l < 4; ++l) {
            const int g = 4 * ib + l;
            const int idx = x[2 + g] | ((x[66 + ib] >> (2 * l)) & 3) << 8;
            const float db = db_iq2(d, (x[74 + ib] >> (4 * (l / 2))) & 0xF);
            emit_grid(y + 8 * g, GRID_IQ2_S[idx], 8, db, x[34 + g]);
        }
}

/* IQ3_XXS: d @0, qs[64] @2 (grid indexes, 4 values each), 8 x u32 scale-and-sign words @66. */
static inline void iq3xxs_emit32(float *y, const uint8_t *g, float db, const int *sidx) {
    for (int l = 0; l < 4; ++l) {
        const unsigned s = KSIGNS[sidx[l]];
        emit_grid(y + 8 * l, GRID_IQ3_XXS[g[2 * l]], 4, db, s);
        emit_grid(y + 8 * l + 4, GRID_IQ3_XXS[g[2 * l + 1]], 4, db, s >> 4);
    }
}
static inline void src_iq3_xxs(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x);
    for (int ib = 0; ib < 8; ++ib) {
        const uint32_t a = ld32(x + 66 + 4 * ib);
        int sidx[4];
        for (int l = 0; l < 4; ++l) sidx[l] = (a >> (7 * l)) & 127;
        iq3xxs_emit32(y + 32 * ib, x + 2 + 8 * ib, db_iq3xxs(d, (int)(a >> 28)), sidx);
    }
}

/* IQ3_S: d @0, qs[64] @2, qh[8] @66, signs[32] @74, scales[4] @106 (one 4-bit scale per 32). */
static inline void iq3s_emit32(float *y, const uint8_t *qs, uint8_t qh, const uint8_t *signs, float db) {
    for (int m = 0; m < 8; ++m) {
        const int idx = qs[m] | ((qh >> m) & 1) << 8;
        emit_grid(y + 4 * m, GRID_IQ3_S[idx], 4, db, (unsigned)signs[m / 2] >> (4 * (m % 2)));
    }
}
static inline void src_iq3_s(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x);
    for (int ib = 0; ib < 8; ++ib) {
        const float db = db_iq3s(d, (x[106 + ib / 2] >> (4 * (ib % 2))) & 0xF);
        iq3s_emit32(y + 32 * ib, x + 2 + 8 * ib, x[66 + ib], x + 74 + 4 * ib, db);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* ik_llama.cpp source types (gguf-py cannot decode them). Reference arithmetic: ik's own
   dequantizers (the to_float of its libggml), which these match bit for bit, with finite and with
   special (Inf/NaN/zero/subnormal) scales alike (tests/test_block_decoders.py). Sub-block scales
   are formed first as float32 products `d * (float)integer_scale`, then multiplied by the table
   value, as ik does. IQ2_BN's value is d * (code - 1) with the row scale d: ik's plain IQ2_BN
   dequantizer leaves d out, its matrix multiply and its IQ2_BN_R4 dequantizer apply it. Codes are
   extracted into v[] as for the ggml types above.                                                 */

/* Q6_0: d @0, qh[8] @2, qs[16] @10. Codes: legacy nibbles, bits 4-5 from h = qh[j % 8] >> 4(j / 8)
   (bits 0-1 for element j, bits 2-3 for element j + 16), j = 0..15; i.e. qh[j] (j < 8) holds bits
   4-5 of elements j, j + 16, j + 8, j + 24 in that order. Value d * (v - 32). */
static inline void src_q6_0(const uint8_t *restrict x, float *restrict y) {
    uint8_t v[32];
    codes_legacy(v, x + 10);
    for (int j = 0; j < 8; ++j) {
        const int h = x[2 + j];
        v[j] |= (uint8_t)((h & 3) << 4);
        v[j + 16] |= (uint8_t)(((h >> 2) & 3) << 4);
        v[j + 8] |= (uint8_t)(((h >> 4) & 3) << 4);
        v[j + 24] |= (uint8_t)(((h >> 6) & 3) << 4);
    }
    emit_offset(y, v, 32, ldh(x), 32);
}

/* IQ*_K half-blocks (16 elements; h = 0: elements 0-15 of sub-block ib, h = 1: 16-31): scale
   dl = d * (float)s (s: the signed integer scale), value dl * table[e * TN + v] where e is the
   half-block's `extra` bit and TN the table half size. */
static inline void iq2k_emit16(float *restrict y, const uint8_t *restrict v, float d, int nib, int e) {
    emit_lut(y, v, 16, d * (float)(nib - 8), KV_IQ2K + 4 * e);
}
static inline void iq3k_emit16(float *restrict y, const uint8_t *restrict v, float d, int nib, int neg, int e) {
    emit_lut(y, v, 16, d * (float)((2 * nib + 1) * (neg ? -1 : 1)), KV_IQ3K + 8 * e);
}
static inline void iq4k_emit16(float *restrict y, const uint8_t *restrict v, float d, int sc6, int e) {
    emit_lut(y, v, 16, d * (float)(sc6 - 32), KV_IQ4K + 16 * e);
}
static inline void iq5k_emit16(float *restrict y, const uint8_t *restrict v, float d, int sc6, int e) {
    emit_lut(y, v, 16, d * (float)(sc6 - 32), KV_IQ5K + 32 * e);
}
/* IQ4_KS / IQ5_KS sub-block (32 elements): scale byte s, dl = d * (float)((s & 254) - 127), table
   half s & 1. */
static inline void iq4ks_emit32(float *restrict y, const uint8_t *restrict v, float d, uint8_t s) {
    emit_table(y, v, 32, d * (float)((s & 254) - 127), KV_IQ4K + 16 * (s & 1));
}
static inline void iq5ks_emit32(float *restrict y, const uint8_t *restrict v, float d, uint8_t s) {
    emit_lut32(y, v, d * (float)((s & 254) - 127), KV_IQ5K + 32 * (s & 1));
}

/* Source code orders (spec §4.1): 2-bit order (IQ2_K, IQ3_K: element 128h + 32p + j of qs[32h + j]
   bits 2p..2p+1) and K-quant 4-bit order (IQ5_K, IQ5_KS: nibble ib % 2 of qs[32(ib / 2) + j]),
   each with an optional extra bit `bit` taken from bit ib of qh[j]. */
static inline void codes_2bit(uint8_t *v, const uint8_t *qs, int ib) {
    const uint8_t *q = qs + 32 * (ib / 4);
    const int sh = 2 * (ib % 4);
    for (int j = 0; j < 32; ++j) v[j] = (q[j] >> sh) & 3;
}
static inline void codes_k4(uint8_t *v, const uint8_t *qs, int ib) {
    const uint8_t *q = qs + 32 * (ib / 2);
    const int sh = 4 * (ib % 2);
    for (int j = 0; j < 32; ++j) v[j] = (q[j] >> sh) & 0xF;
}
static inline void codes_add_qh(uint8_t *v, const uint8_t *qh, int ib, int bit) {
    for (int j = 0; j < 32; ++j) v[j] |= (uint8_t)(((qh[j] >> ib) & 1) << bit);
}

/* IQ2_K: d @0, extra u16 @2, scales[8] @4 (nibble h of scales[ib] = half h, biased by 8), qs[64] @12. */
static inline void src_iq2_k(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x);
    const uint16_t extra = ld16(x + 2);
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        codes_2bit(v, x + 12, ib);
        for (int h = 0; h < 2; ++h)
            iq2k_emit16(y + 32 * ib + 16 * h, v + 16 * h, d, (x[4 + ib] >> (4 * h)) & 0xF,
                        (extra >> (2 * ib + h)) & 1);
    }
}
/* IQ3_K: d @0, extra @2, scales_h u16 @4 (bit 2ib + h: the half's scale is negative), scales_l[8]
   @6 (nibble h: s, scale 2s + 1), qs[64] @14, qh[32] @78 (bit 2 of the code). */
static inline void src_iq3_k(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x);
    const uint16_t extra = ld16(x + 2), sh = ld16(x + 4);
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        codes_2bit(v, x + 14, ib);
        codes_add_qh(v, x + 78, ib, 2);
        for (int h = 0; h < 2; ++h)
            iq3k_emit16(y + 32 * ib + 16 * h, v + 16 * h, d, (x[6 + ib] >> (4 * h)) & 0xF,
                        (sh >> (2 * ib + h)) & 1, (extra >> (2 * ib + h)) & 1);
    }
}
/* IQ4_K / IQ5_K 6-bit half-block scale: nibble h of scales_l[ib] @8, bits 2..3 << 4 from
   scales_h[ib / 2] @4 at bit 4(ib % 2) + 2h. */
static inline int iq4k_scale(const uint8_t *x, int ib, int h) {
    return ((x[8 + ib] >> (4 * h)) & 0xF) | ((x[4 + ib / 2] >> (4 * (ib % 2) + 2 * h)) & 3) << 4;
}
/* IQ4_K: d @0, extra @2, scales_h[4] @4, scales_l[8] @8, qs[128] @16 (legacy nibbles per sub-block). */
static inline void src_iq4_k(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x);
    const uint16_t extra = ld16(x + 2);
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        codes_legacy(v, x + 16 + 16 * ib);
        for (int h = 0; h < 2; ++h)
            iq4k_emit16(y + 32 * ib + 16 * h, v + 16 * h, d, iq4k_scale(x, ib, h), (extra >> (2 * ib + h)) & 1);
    }
}
/* IQ5_K: as IQ4_K, qs[128] @16 in K-quant 4-bit order, qh[32] @144 (bit 4). */
static inline void src_iq5_k(const uint8_t *restrict x, float *restrict y) {
    const float d = ldh(x);
    const uint16_t extra = ld16(x + 2);
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        codes_k4(v, x + 16, ib);
        codes_add_qh(v, x + 144, ib, 4);
        for (int h = 0; h < 2; ++h)
            iq5k_emit16(y + 32 * ib + 16 * h, v + 16 * h, d, iq4k_scale(x, ib, h), (extra >> (2 * ib + h)) & 1);
    }
}
/* IQ4_KS block (after the row's f32 scale d): scales[8] @0 (bit 0: table half, bits 1-7: scale),
   qs[128] @8 (legacy nibbles per sub-block). */
static inline void src_iq4_ks(const uint8_t *restrict x, float *restrict y, float d) {
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        codes_legacy(v, x + 8 + 16 * ib);
        iq4ks_emit32(y + 32 * ib, v, d, x[ib]);
    }
}
/* IQ5_KS block: scales[8] @0, qs[128] @8 (K-quant 4-bit order), qh[32] @136 (bit 4). */
static inline void src_iq5_ks(const uint8_t *restrict x, float *restrict y, float d) {
    uint8_t v[32];
    for (int ib = 0; ib < 8; ++ib) {
        codes_k4(v, x + 8, ib);
        codes_add_qh(v, x + 136, ib, 4);
        iq5ks_emit32(y + 32 * ib, v, d, x[ib]);
    }
}
/* IQ2_BN block (16 bytes, 64 elements): element 16l + j = bits 2l..2l+1 of byte j; value
   d * (float)(code - 1) with the row's f32 scale d. (ik's plain IQ2_BN dequantizer leaves the
   scale out; its matrix multiply applies it to the integer dot product, i.e. to code - 1.) */
static inline void src_iq2_bn(const uint8_t *restrict x, float *restrict y, float d) {
    uint8_t v[64];
    for (int l = 0; l < 4; ++l)
        for (int j = 0; j < 16; ++j) v[16 * l + j] = (x[j] >> (2 * l)) & 3;
    emit_offset(y, v, 64, d, 1);
}

/* ---------------------------------------------------------------------------------------------- */
/* Interleaved block decoders (spec §4): one interleaved block of R rows -> y[k*ne0 + j]           */

/* The 32 4-bit codes of row k of an R8 block whose quants start at q: 4-byte chunk c of row k at
   q + 32c + 4k holds codes 4c..4c+3 (low nibbles) and 4c+16..4c+19 (high nibbles). Shared by
   Q4_0_R8 and MXFP4_R8, which differ only in their scale fields. */
static inline void r8_nibble_codes(uint8_t v[32], const uint8_t *restrict q, int k) {
    uint32_t c[8];
    for (int m = 0; m < 4; ++m) {
        const uint32_t w = ld32(q + 32 * m + 4 * k);
        c[m] = w & M4;
        c[m + 4] = (w >> 4) & M4;
    }
    words_to_codes(v, c);
}

/* §4.3 Q4_0_R8 (144 B): d_k @2k; @16 + 32c + 4k + i = qs[4c + i] of row k. */
static inline void il_q4_0_r8(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 8; ++k) {
        uint8_t v[32];
        r8_nibble_codes(v, x + 16, k);
        emit_offset(y + k * ne0, v, 32, ldh(x + 2 * k), 8);
    }
}
/* §4.2 Q8_0_R8 (272 B): d_k @2k; @16 + 32c + 4k + i = qs[4c + i] of row k (c = 0..7). */
static inline void il_q8_0_r8(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 8; ++k) {
        int8_t q[32];
        for (int c = 0; c < 8; ++c) memcpy(q + 4 * c, x + 16 + 32 * c + 4 * k, 4);
        emit_i8(y + k * ne0, q, 32, ldh(x + 2 * k));
    }
}
/* §4.4 MXFP4_R8 (136 B): e_k @k; @8 + 32c + 4k + i = qs[4c + i] of row k. */
static inline void il_mxfp4_r8(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 8; ++k) {
        uint8_t v[32];
        r8_nibble_codes(v, x + 8, k);
        emit_table(y + k * ne0, v, 32, e8m0_half(x[k]), KV_MXFP4);
    }
}
/* §4.5 IQ4_NL_R4 (72 B): d_k @2k; Pattern A @8. */
static inline void il_iq4_nl_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        uint32_t c[8];
        uint8_t v[32];
        pattern_a(c, x + 8, k);
        words_to_codes(v, c);
        emit_table(y + k * ne0, v, 32, ldh(x + 2 * k), KV_IQ4NL);
    }
}
/* §4.6 Q5_0_R4 (88 B): d_k @2k; bit-plane (bit 4, ORD_Q50) @8; Pattern A @24. */
static inline void il_q5_0_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        uint32_t c[8];
        uint8_t v[32];
        pattern_a(c, x + 24, k);
        bit_plane(c, x + 8, k, ORD_Q50, 4);
        words_to_codes(v, c);
        emit_offset(y + k * ne0, v, 32, ldh(x + 2 * k), 16);
    }
}
/* §4.8 IQ4_XS_R8 (1088 B): d_k @2k; SH @16, SL @32 (index 8ib + k); Pattern B @64 + 128ib. */
static inline void il_iq4_xs_r8(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 8; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_b(c, x + 64 + 128 * ib, k);
            words_to_codes(v, c);
            iq4xs_emit32(y + k * ne0 + 32 * ib, v, d, split6(x + 32, x + 16, 8 * ib + k));
        }
    }
}
/* §4.9 Q4_K_R4 / §4.10 Q5_K_R4 header: d_k @2k, dmin_k @8+2k, scales_h @16, scales_l @32. */
static inline void k4_r4_scale_min(const uint8_t *x, int n, int *sc, int *m) {
    const uint8_t l = x[32 + n], h = (x[16 + n % 16] >> (4 * (n / 16))) & 0xF;
    *sc = (l & 0xF) | (h & 3) << 4;
    *m = (l >> 4) | (h >> 2) << 4;
}
static inline void il_q4_k_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k), dmin = ldh(x + 8 + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_a(c, x + 64 + 64 * ib, k);
            words_to_codes(v, c);
            int sc, m;
            k4_r4_scale_min(x, 4 * ib + k, &sc, &m);
            k4_emit32(y + k * ne0 + 32 * ib, v, d, dmin, sc, m);
        }
    }
}
/* Q5_K_R4 (704 B): bit-plane (bit 4, ORD_Q5K) @64 + 16ib; Pattern A @192 + 64ib. */
static inline void il_q5_k_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k), dmin = ldh(x + 8 + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_a(c, x + 192 + 64 * ib, k);
            bit_plane(c, x + 64 + 16 * ib, k, ORD_Q5K, 4);
            words_to_codes(v, c);
            int sc, m;
            k4_r4_scale_min(x, 4 * ib + k, &sc, &m);
            k4_emit32(y + k * ne0 + 32 * ib, v, d, dmin, sc, m);
        }
    }
}
/* §4.11 Q6_K_R4 (840 B): d_k @2k; scales @8 + 8ib + k (first half), +4 (second half);
   high 2 bits @72 + 32ib; Pattern A of bits 0-3 @328 + 64ib. */
static inline void il_q6_k_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_a(c, x + 328 + 64 * ib, k);
            /* byte 4k+i: u(v[i]) | u(v[i+8]) << 2 | u(v[i+4]) << 4 | u(v[i+12]) << 6 (+16: v[i+16..]) */
            static const uint8_t pos[4] = {0, 2, 1, 3};  /* word index */
            for (int h = 0; h < 2; ++h) {
                const uint32_t w = ld32(x + 72 + 32 * ib + 16 * h + 4 * k);
                for (int t = 0; t < 4; ++t) c[4 * h + pos[t]] |= ((w >> (2 * t)) & M2) << 4;
            }
            words_to_codes(v, c);
            const int8_t s0 = (int8_t)x[8 + 8 * ib + k], s1 = (int8_t)x[8 + 8 * ib + 4 + k];
            q6k_emit16(y + k * ne0 + 32 * ib, v, d, s0);
            q6k_emit16(y + k * ne0 + 32 * ib + 16, v + 16, d, s1);
        }
    }
}
/* §4.12 Q2_K_R4 (336 B): d_k @2k, dmin_k @8+2k; scales[j] of row k @16 + 4j + k; Pattern C @80+32ib
   (read byte-wise here rather than with pattern_c: GCC vectorises this form better for Q2_K). */
static inline void il_q2_k_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k), dmin = ldh(x + 8 + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint8_t v[32];
            const uint8_t *slab = x + 80 + 32 * ib;
            for (int h = 0; h < 2; ++h)
                for (int t = 0; t < 4; ++t)
                    for (int i = 0; i < 4; ++i) v[16 * h + 4 * t + i] = (slab[16 * h + 4 * k + i] >> (2 * t)) & 3;
            q2k_emit16(y + k * ne0 + 32 * ib, v, d, dmin, x[16 + 4 * (2 * ib) + k]);
            q2k_emit16(y + k * ne0 + 32 * ib + 16, v + 16, d, dmin, x[16 + 4 * (2 * ib + 1) + k]);
        }
    }
}
/* Q3_K_R4 (440 B): d_k @2k; SH @8, SL @24 (scale j of row k at n = 8(j/2) + 4(j%2) + k);
   bit-plane (bit 2, ORD_Q3K) @56 + 16ib; Pattern C @184 + 32ib. */
static inline void il_q3_k_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_c(c, x + 184 + 32 * ib, k);
            bit_plane(c, x + 56 + 16 * ib, k, ORD_Q3K, 2);
            words_to_codes(v, c);
            q3k_emit16(y + k * ne0 + 32 * ib, v, d, split6(x + 24, x + 8, 8 * ib + k));
            q3k_emit16(y + k * ne0 + 32 * ib + 16, v + 16, d, split6(x + 24, x + 8, 8 * ib + 4 + k));
        }
    }
}

/* §4.14 grid i-quants (R = 4). conv() words: byte j = scr(sign index j) << 1 | scale bit j. */
static inline int conv_word_decode(uint32_t w, int *sidx) {
    int scale = 0;
    for (int j = 0; j < 4; ++j) {
        const int byte = (w >> (8 * j)) & 0xFF;
        sidx[j] = unscr(byte >> 1);
        scale |= (byte & 1) << j;
    }
    return scale;
}
/* IQ2_XXS_R4 (264 B): d_k @2k; conv(a) @8 + 4(4ib + k); grid byte i @136 + 16ib + 4k + i. */
static inline void il_iq2_xxs_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            int sidx[4];
            const int s = conv_word_decode(ld32(x + 8 + 4 * (4 * ib + k)), sidx);
            iq2xxs_emit32(y + k * ne0 + 32 * ib, x + 136 + 16 * ib + 4 * k, db_iq2(d, s), sidx);
        }
    }
}
/* IQ3_XXS_R4 (392 B): d_k @2k; conv(word ib) @8 + 4(4ib + k); qs[8ib + i] @136 + 32ib + 8k + i. */
static inline void il_iq3_xxs_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            int sidx[4];
            const int s = conv_word_decode(ld32(x + 8 + 4 * (4 * ib + k)), sidx);
            iq3xxs_emit32(y + k * ne0 + 32 * ib, x + 136 + 32 * ib + 8 * k, db_iq3xxs(d, s), sidx);
        }
    }
}
/* IQ2_XS_R4 (296 B): d_k @2k; u16 @8 + 2(16ib + 4k + i) = (w & 511) | scr(w >> 9) << 9;
   scales[ib] of row k @264 + 4ib + k. */
static inline void il_iq2_xs_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            const uint8_t sc = x[264 + 4 * ib + k];
            for (int l = 0; l < 4; ++l) {
                const uint16_t w = ld16(x + 8 + 2 * (16 * ib + 4 * k + l));
                const float db = db_iq2(d, (sc >> (4 * (l / 2))) & 0xF);
                emit_grid(y + k * ne0 + 32 * ib + 8 * l, GRID_IQ2_XS[w & 511], 8, db,
                          KSIGNS[unscr(w >> 9)]);
            }
        }
    }
}
/* IQ2_S_R4 (328 B): d_k @2k; qs[4ib+i] @8 + 16ib + 4k + i; qh[ib] @136 + 4ib + k;
   signs qs[32+4ib+i] @168 + 16ib + 4k + i; scales[ib] @296 + 4ib + k. */
static inline void il_iq2_s_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            const uint8_t qh = x[136 + 4 * ib + k], sc = x[296 + 4 * ib + k];
            for (int l = 0; l < 4; ++l) {
                const int idx = x[8 + 16 * ib + 4 * k + l] | ((qh >> (2 * l)) & 3) << 8;
                const float db = db_iq2(d, (sc >> (4 * (l / 2))) & 0xF);
                emit_grid(y + k * ne0 + 32 * ib + 8 * l, GRID_IQ2_S[idx], 8, db,
                          x[168 + 16 * ib + 4 * k + l]);
            }
        }
    }
}
/* IQ3_S_R4 (440 B): d_k @2k; qs[8ib + m] @8 + 32ib + k + 8(m%4) + 4(m/4); qh[ib] @264 + 4ib + k;
   signs @296 + 16ib + 4k + i (bit 2m = bit i, bit 2m+1 = bit 4+i of signs[4ib + m]);
   scale nibble of sub-block ib at n = 4ib + k of the 16 bytes @424 (nibble n/16 of byte n%16). */
static inline void il_iq3_s_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint8_t qs[8], signs[4] = {0, 0, 0, 0};
            for (int m = 0; m < 8; ++m) qs[m] = x[8 + 32 * ib + k + 8 * (m % 4) + 4 * (m / 4)];
            for (int i = 0; i < 4; ++i) {
                const uint8_t b = x[296 + 16 * ib + 4 * k + i];
                for (int m = 0; m < 4; ++m)
                    signs[m] |= (uint8_t)(((b >> (2 * m)) & 1) << i | ((b >> (2 * m + 1)) & 1) << (4 + i));
            }
            const int n = 4 * ib + k;
            const float db = db_iq3s(d, (x[424 + n % 16] >> (4 * (n / 16))) & 0xF);
            iq3s_emit32(y + k * ne0 + 32 * ib, qs, x[264 + 4 * ib + k], signs, db);
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* ik_llama.cpp interleaved types (spec §4.7, §4.13, §4.15-4.17), read directly.                   */

/* §4.7 Q6_0_R4 (104 B): d_k @2k; bits 4-5 of the codes in Pattern C arrangement @8 (32 B);
   Pattern A of bits 0-3 @40. */
static inline void il_q6_0_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        uint32_t c[8], hi[8];
        uint8_t v[32];
        pattern_a(c, x + 40, k);
        pattern_c(hi, x + 8, k);
        for (int m = 0; m < 8; ++m) c[m] |= hi[m] << 4;
        words_to_codes(v, c);
        emit_offset(y + k * ne0, v, 32, ldh(x + 2 * k), 32);
    }
}

/* §4.13 IQK _R4 header: d_k @2k; extra bit of (row k, sub-block ib, half h) = bit ib of byte
   @8 + k + 4h; half-block scales at index n = 8ib + 4h + k. */
static inline int iqk_r4_extra(const uint8_t *x, int k, int ib, int h) { return (x[8 + k + 4 * h] >> ib) & 1; }
static inline int nib32(const uint8_t *sl, int n) { return (sl[n % 32] >> (4 * (n / 32))) & 0xF; }

/* IQ2_K_R4 (304 B): scales (4-bit) @16 (32 B); Pattern C @48 + 32ib. */
static inline void il_iq2_k_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_c(c, x + 48 + 32 * ib, k);
            words_to_codes(v, c);
            for (int h = 0; h < 2; ++h)
                iq2k_emit16(y + k * ne0 + 32 * ib + 16 * h, v + 16 * h, d, nib32(x + 16, 8 * ib + 4 * h + k),
                            iqk_r4_extra(x, k, ib, h));
        }
    }
}
/* IQ3_K_R4 (440 B): sign bits @16 (8 B: bit n / 8 of byte n % 8), scales_l @24 (32 B);
   Pattern C @56 + 32ib; bit-plane (bit 2, ORD_Q3K) @312 + 16ib. */
static inline void il_iq3_k_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_c(c, x + 56 + 32 * ib, k);
            bit_plane(c, x + 312 + 16 * ib, k, ORD_Q3K, 2);
            words_to_codes(v, c);
            for (int h = 0; h < 2; ++h) {
                const int n = 8 * ib + 4 * h + k;
                iq3k_emit16(y + k * ne0 + 32 * ib + 16 * h, v + 16 * h, d, nib32(x + 24, n),
                            (x[16 + n % 8] >> (n / 8)) & 1, iqk_r4_extra(x, k, ib, h));
            }
        }
    }
}
/* IQ4_K_R4 (576 B): SH @16, SL @32 (6-bit scales, split6 at n); Pattern A @64 + 64ib. */
static inline void il_iq4_k_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_a(c, x + 64 + 64 * ib, k);
            words_to_codes(v, c);
            for (int h = 0; h < 2; ++h)
                iq4k_emit16(y + k * ne0 + 32 * ib + 16 * h, v + 16 * h, d,
                            split6(x + 32, x + 16, 8 * ib + 4 * h + k), iqk_r4_extra(x, k, ib, h));
        }
    }
}
/* IQ5_K_R4 (704 B): as IQ4_K_R4, plus bit-plane (bit 4, ORD_IQ5) @576 + 16ib. */
static inline void il_iq5_k_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0) {
    for (int k = 0; k < 4; ++k) {
        const float d = ldh(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_a(c, x + 64 + 64 * ib, k);
            bit_plane(c, x + 576 + 16 * ib, k, ORD_IQ5, 4);
            words_to_codes(v, c);
            for (int h = 0; h < 2; ++h)
                iq5k_emit16(y + k * ne0 + 32 * ib + 16 * h, v + 16 * h, d,
                            split6(x + 32, x + 16, 8 * ib + 4 * h + k), iqk_r4_extra(x, k, ib, h));
        }
    }
}
/* IQ4_KS_R4 block (544 B, after the 16-byte group header of row scales d[4]): scale byte of
   (row k, sub-block ib) @4ib + k; Pattern A @32 + 64ib. */
static inline void il_iq4_ks_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0, const float *d) {
    for (int k = 0; k < 4; ++k)
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_a(c, x + 32 + 64 * ib, k);
            words_to_codes(v, c);
            iq4ks_emit32(y + k * ne0 + 32 * ib, v, d[k], x[4 * ib + k]);
        }
}
/* IQ5_KS_R4 block (672 B): as IQ4_KS_R4, plus bit-plane (bit 4, ORD_IQ5) @544 + 16ib. */
static inline void il_iq5_ks_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0, const float *d) {
    for (int k = 0; k < 4; ++k)
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t c[8];
            uint8_t v[32];
            pattern_a(c, x + 32 + 64 * ib, k);
            bit_plane(c, x + 544 + 16 * ib, k, ORD_IQ5, 4);
            words_to_codes(v, c);
            iq5ks_emit32(y + k * ne0 + 32 * ib, v, d[k], x[4 * ib + k]);
        }
}
/* §4.15 IQ2_BN_R4 block (64 B per 64 columns, after the 16-byte header): bits 2m..2m+1 of byte
   16l + 4k + i = code of element 16l + 4m + i of row k. One shift and mask of the 16 bytes @16l
   gives 4 codes of each of the 4 rows, so all 4 rows are decoded together. */
static inline void il_iq2_bn_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0, const float *d) {
    uint8_t v[4][64];
    for (int l = 0; l < 4; ++l)
        for (int m = 0; m < 4; ++m) {
            uint8_t t[16];  /* byte 4k + i: code of element 16l + 4m + i of row k */
            for (int j = 0; j < 16; ++j) t[j] = (x[16 * l + j] >> (2 * m)) & 3;
            for (int k = 0; k < 4; ++k) memcpy(v[k] + 16 * l + 4 * m, t + 4 * k, 4);
        }
    for (int k = 0; k < 4; ++k) emit_offset(y + k * ne0, v[k], 64, d[k], 1);
}
/* §4.16 Q8_KV_R8, 32 columns (256 B, after the 32-byte group header of row scales d[8]):
   byte 32c + 4k + i = q_k[4c + i], c = 0..7. */
static inline void il_q8_kv_r8(const uint8_t *restrict x, float *restrict y, int64_t ne0, const float *d) {
    for (int k = 0; k < 8; ++k) {
        int8_t q[32];
        for (int c = 0; c < 8; ++c) memcpy(q + 4 * c, x + 32 * c + 4 * k, 4);
        emit_i8(y + k * ne0, q, 32, d[k]);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Type tables and drivers                                                                        */

typedef void (*src_rows_fn)(const uint8_t *x, float *y, int64_t nb);
typedef void (*il_group_fn)(const uint8_t *x, float *y, int64_t ne0, int64_t nb);

/* One row of nb source blocks / one group of nb interleaved blocks; the block decoders inline. */
#define SRC_ROWS(name, BLCK, BYTES)                                                  \
    static void rows_##name(const uint8_t *restrict x, float *restrict y, int64_t nb) {                \
        for (int64_t b = 0; b < nb; ++b) src_##name(x + b * (BYTES), y + b * (BLCK)); \
    }
#define IL_GROUP(name, BLCK, BYTES, R)                                                          \
    static void group_##name(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {              \
        for (int64_t b = 0; b < nb; ++b) il_##name(x + b * (R) * (BYTES), y + b * (BLCK), ne0);  \
    }

SRC_ROWS(q4_0, 32, B_Q4_0)
SRC_ROWS(q1_0, 128, B_Q1_0)
SRC_ROWS(q4_1, 32, B_Q4_1)
SRC_ROWS(q5_0, 32, B_Q5_0)
SRC_ROWS(q5_1, 32, B_Q5_1)
SRC_ROWS(q8_0, 32, B_Q8_0)
SRC_ROWS(iq4_nl, 32, B_IQ4_NL)
SRC_ROWS(mxfp4, 32, B_MXFP4)
SRC_ROWS(q2_k, 256, B_Q2_K)
SRC_ROWS(q3_k, 256, B_Q3_K)
SRC_ROWS(q4_k, 256, B_Q4_K)
SRC_ROWS(q5_k, 256, B_Q5_K)
SRC_ROWS(q6_k, 256, B_Q6_K)
SRC_ROWS(iq4_xs, 256, B_IQ4_XS)
SRC_ROWS(iq2_xxs, 256, B_IQ2_XXS)
SRC_ROWS(iq2_xs, 256, B_IQ2_XS)
SRC_ROWS(iq2_s, 256, B_IQ2_S)
SRC_ROWS(iq3_xxs, 256, B_IQ3_XXS)
SRC_ROWS(iq3_s, 256, B_IQ3_S)
SRC_ROWS(q6_0, 32, B_Q6_0)
SRC_ROWS(iq2_k, 256, B_IQ2_K)
SRC_ROWS(iq3_k, 256, B_IQ3_K)
SRC_ROWS(iq4_k, 256, B_IQ4_K)
SRC_ROWS(iq5_k, 256, B_IQ5_K)

IL_GROUP(q4_0_r8, 32, B_Q4_0, 8)
IL_GROUP(q8_0_r8, 32, B_Q8_0, 8)
IL_GROUP(mxfp4_r8, 32, B_MXFP4, 8)
IL_GROUP(iq4_nl_r4, 32, B_IQ4_NL, 4)
IL_GROUP(q5_0_r4, 32, B_Q5_0, 4)
IL_GROUP(iq4_xs_r8, 256, B_IQ4_XS, 8)
IL_GROUP(q2_k_r4, 256, B_Q2_K, 4)
IL_GROUP(q3_k_r4, 256, B_Q3_K, 4)
IL_GROUP(q4_k_r4, 256, B_Q4_K, 4)
IL_GROUP(q5_k_r4, 256, B_Q5_K, 4)
IL_GROUP(q6_k_r4, 256, B_Q6_K, 4)
IL_GROUP(iq2_xxs_r4, 256, B_IQ2_XXS, 4)
IL_GROUP(iq2_xs_r4, 256, B_IQ2_XS, 4)
IL_GROUP(iq2_s_r4, 256, B_IQ2_S, 4)
IL_GROUP(iq3_xxs_r4, 256, B_IQ3_XXS, 4)
IL_GROUP(iq3_s_r4, 256, B_IQ3_S, 4)
IL_GROUP(q6_0_r4, 32, B_Q6_0, 4)
IL_GROUP(iq2_k_r4, 256, B_IQ2_K, 4)
IL_GROUP(iq3_k_r4, 256, B_IQ3_K, 4)
IL_GROUP(iq4_k_r4, 256, B_IQ4_K, 4)
IL_GROUP(iq5_k_r4, 256, B_IQ5_K, 4)

/* ik row-scale types and BF16: one row = its metadata, then nb blocks; one group = R copies of
   the row metadata (the group header, row 0 first), then nb interleaved blocks. */
static void rows_iq4_ks(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    const float d = ldf(x);
    for (int64_t b = 0; b < nb; ++b) src_iq4_ks(x + M_F32 + b * B_IQ4_KS, y + 256 * b, d);
}
static void rows_iq5_ks(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    const float d = ldf(x);
    for (int64_t b = 0; b < nb; ++b) src_iq5_ks(x + M_F32 + b * B_IQ5_KS, y + 256 * b, d);
}
static void rows_iq2_bn(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    const float d = ldf(x);
    for (int64_t b = 0; b < nb; ++b) src_iq2_bn(x + M_F32 + b * B_IQ2_BN, y + 64 * b, d);
}
/* Q8_KV row: f32 d @0, i32 sum @4 (redundant, not read), int8 q[ne0] @8; value (float)q * d. */
static void rows_q8_kv(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    const float d = ldf(x);
    for (int64_t b = 0; b < nb; ++b) emit_i8(y + 32 * b, (const int8_t *)(x + M_Q8_KV + 32 * b), 32, d);
}
static void rows_bf16(const uint8_t *restrict x, float *restrict y, int64_t n) {
    for (int64_t j = 0; j < n; ++j) y[j] = bf16_f32(ld16(x + 2 * j));
}

static void group_iq4_ks_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {
    float d[4];
    for (int k = 0; k < 4; ++k) d[k] = ldf(x + M_F32 * k);
    for (int64_t b = 0; b < nb; ++b) il_iq4_ks_r4(x + 4 * M_F32 + b * 4 * B_IQ4_KS, y + 256 * b, ne0, d);
}
static void group_iq5_ks_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {
    float d[4];
    for (int k = 0; k < 4; ++k) d[k] = ldf(x + M_F32 * k);
    for (int64_t b = 0; b < nb; ++b) il_iq5_ks_r4(x + 4 * M_F32 + b * 4 * B_IQ5_KS, y + 256 * b, ne0, d);
}
static void group_iq2_bn_r4(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {
    float d[4];
    for (int k = 0; k < 4; ++k) d[k] = ldf(x + M_F32 * k);
    for (int64_t b = 0; b < nb; ++b) il_iq2_bn_r4(x + 4 * M_F32 + b * 4 * B_IQ2_BN, y + 64 * b, ne0, d);
}
/* §4.16 Q8_KV_R8 group: the 8 row scales (f32) @4k, then 256 bytes per 32 columns. */
static void group_q8_kv_r8(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {
    float d[8];
    for (int k = 0; k < 8; ++k) d[k] = ldf(x + M_F32 * k);
    for (int64_t b = 0; b < nb; ++b) il_q8_kv_r8(x + 8 * M_F32 + b * 8 * B_Q8_KV, y + 32 * b, ne0, d);
}
/* §4.17 BF16_R16 group: per column pair p (nb = ne0 / 2 of them), 16 x 4 bytes: row k's elements
   2p (low half of the word) and 2p + 1 (high half) @64p + 4k. */
static void group_bf16_r16(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {
    for (int k = 0; k < 16; ++k) {
        float *restrict yk = y + k * ne0;
        for (int64_t p = 0; p < nb; ++p) {
            const uint32_t w = ld32(x + 64 * p + 4 * k);
            yk[2 * p] = bf16_f32((uint16_t)w);
            yk[2 * p + 1] = bf16_f32((uint16_t)(w >> 16));
        }
    }
}

/* A row is `meta + (ne0 / blck) * bytes` bytes, a group `rows` times that (meta: row metadata,
   0 for all ggml types). BF16_R16 counts a column pair as its block (blck 2, 4 bytes per row), so
   that an odd ne0 is refused. */
struct src_type { int32_t id, blck, bytes, meta; src_rows_fn fn; };
struct il_type { int32_t id, blck, bytes, rows, meta; il_group_fn fn; };

/* Type ids: formats/ggml_types.py (ggml / ik_llama.cpp enum values). */
static const struct src_type SRC_TYPES[] = {
    {2, 32, B_Q4_0, 0, rows_q4_0},       {3, 32, B_Q4_1, 0, rows_q4_1},
    {6, 32, B_Q5_0, 0, rows_q5_0},       {7, 32, B_Q5_1, 0, rows_q5_1},
    {8, 32, B_Q8_0, 0, rows_q8_0},       {10, 256, B_Q2_K, 0, rows_q2_k},
    {11, 256, B_Q3_K, 0, rows_q3_k},     {12, 256, B_Q4_K, 0, rows_q4_k},
    {13, 256, B_Q5_K, 0, rows_q5_k},     {14, 256, B_Q6_K, 0, rows_q6_k},
    {16, 256, B_IQ2_XXS, 0, rows_iq2_xxs}, {17, 256, B_IQ2_XS, 0, rows_iq2_xs},
    {18, 256, B_IQ3_XXS, 0, rows_iq3_xxs}, {20, 32, B_IQ4_NL, 0, rows_iq4_nl},
    {21, 256, B_IQ3_S, 0, rows_iq3_s},   {22, 256, B_IQ2_S, 0, rows_iq2_s},
    {23, 256, B_IQ4_XS, 0, rows_iq4_xs}, {39, 32, B_MXFP4, 0, rows_mxfp4},
    {41, 128, B_Q1_0, 0, rows_q1_0},
    /* ik_llama.cpp */
    {30, 1, B_BF16, 0, rows_bf16},    {133, 32, B_Q6_0, 0, rows_q6_0},
    {135, 64, B_IQ2_BN, M_F32, rows_iq2_bn}, {137, 256, B_IQ2_K, 0, rows_iq2_k},
    {138, 256, B_IQ3_K, 0, rows_iq3_k}, {139, 256, B_IQ4_K, 0, rows_iq4_k},
    {140, 256, B_IQ5_K, 0, rows_iq5_k}, {144, 256, B_IQ4_KS, M_F32, rows_iq4_ks},
    {151, 32, B_Q8_KV, M_Q8_KV, rows_q8_kv}, {152, 256, B_IQ5_KS, M_F32, rows_iq5_ks},
};
static const struct il_type IL_TYPES[] = {
    {202, 32, B_Q4_0, 8, 0, group_q4_0_r8},       {206, 32, B_Q5_0, 4, 0, group_q5_0_r4},
    {208, 32, B_Q8_0, 8, 0, group_q8_0_r8},       {210, 256, B_Q2_K, 4, 0, group_q2_k_r4},
    {211, 256, B_Q3_K, 4, 0, group_q3_k_r4},      {212, 256, B_Q4_K, 4, 0, group_q4_k_r4},
    {213, 256, B_Q5_K, 4, 0, group_q5_k_r4},      {214, 256, B_Q6_K, 4, 0, group_q6_k_r4},
    {216, 256, B_IQ2_XXS, 4, 0, group_iq2_xxs_r4}, {217, 256, B_IQ2_XS, 4, 0, group_iq2_xs_r4},
    {218, 256, B_IQ3_XXS, 4, 0, group_iq3_xxs_r4}, {220, 32, B_IQ4_NL, 4, 0, group_iq4_nl_r4},
    {221, 256, B_IQ3_S, 4, 0, group_iq3_s_r4},    {222, 256, B_IQ2_S, 4, 0, group_iq2_s_r4},
    {223, 256, B_IQ4_XS, 8, 0, group_iq4_xs_r8},  {353, 32, B_MXFP4, 8, 0, group_mxfp4_r8},
    /* ik_llama.cpp */
    {230, 2, 2 * B_BF16, 16, 0, group_bf16_r16}, {233, 32, B_Q6_0, 4, 0, group_q6_0_r4},
    {335, 64, B_IQ2_BN, 4, M_F32, group_iq2_bn_r4}, {337, 256, B_IQ2_K, 4, 0, group_iq2_k_r4},
    {338, 256, B_IQ3_K, 4, 0, group_iq3_k_r4},   {339, 256, B_IQ4_K, 4, 0, group_iq4_k_r4},
    {340, 256, B_IQ5_K, 4, 0, group_iq5_k_r4},   {344, 256, B_IQ4_KS, 4, M_F32, group_iq4_ks_r4},
    {352, 256, B_IQ5_KS, 4, M_F32, group_iq5_ks_r4}, {398, 32, B_Q8_KV, 8, M_F32, group_q8_kv_r8},
};

static const struct src_type *find_src(int32_t id) {
    for (size_t i = 0; i < sizeof SRC_TYPES / sizeof SRC_TYPES[0]; ++i)
        if (SRC_TYPES[i].id == id) return &SRC_TYPES[i];
    return NULL;
}
static const struct il_type *find_il(int32_t id) {
    for (size_t i = 0; i < sizeof IL_TYPES / sizeof IL_TYPES[0]; ++i)
        if (IL_TYPES[i].id == id) return &IL_TYPES[i];
    return NULL;
}

int blk_can_dequantize(int32_t type_id) {
    return find_src(type_id) != NULL || find_il(type_id) != NULL;
}

int blk_dequantize_rows(int32_t type_id, const uint8_t *src, float *dst, int64_t ne0,
                        int64_t row_begin, int64_t row_end) {
    const struct src_type *t = find_src(type_id);
    if (!t) return -1;
    if (ne0 <= 0 || ne0 % t->blck || row_begin < 0 || row_end < row_begin) return -2;
    if (row_begin == row_end) return 0;
    if (!src || !dst) return -2;
    const int64_t nb = ne0 / t->blck, row_bytes = t->meta + nb * t->bytes;
    src_rows_fn fn = simd_source_rows(type_id);  /* AVX2 / AVX-512 when selected, same bits */
    if (!fn) fn = t->fn;
    for (int64_t r = row_begin; r < row_end; ++r) fn(src + r * row_bytes, dst + r * ne0, nb);
    return 0;
}

int blk_dequantize_interleaved(int32_t type_id, const uint8_t *src, float *dst, int64_t ne0,
                               int64_t group_begin, int64_t group_end) {
    const struct il_type *t = find_il(type_id);
    if (!t) return -1;
    if (ne0 <= 0 || ne0 % t->blck || group_begin < 0 || group_end < group_begin) return -2;
    if (group_begin == group_end) return 0;
    if (!src || !dst) return -2;
    const int64_t nb = ne0 / t->blck, group_bytes = (t->meta + nb * t->bytes) * t->rows;
    il_group_fn fn = simd_interleaved_group(type_id);  /* AVX2 / AVX-512 when selected */
    if (!fn) fn = t->fn;
    for (int64_t g = group_begin; g < group_end; ++g)
        fn(src + g * group_bytes, dst + g * t->rows * ne0, ne0, nb);
    return 0;
}

int64_t blk_first_difference(const uint8_t *a, const uint8_t *b, int64_t n) {
    /* memcmp on 4 KiB pieces finds the piece, a byte loop the position inside it */
    const int64_t piece = 4096;
    for (int64_t start = 0; start < n; start += piece) {
        int64_t len = n - start < piece ? n - start : piece;
        if (memcmp(a + start, b + start, (size_t)len) != 0) {
            for (int64_t i = start; i < start + len; i++)
                if (a[i] != b[i]) return i;
        }
    }
    return -1;
}
