/* AMX VNNI tile layout of llama.cpp's AMX backend: pack, unpack, check and dequantize.
 *
 * Specification: shared/spec/amx-vnni.md (section numbers below refer to it). The readable numpy
 * version of the same layout is formats/amx_layout.py; the tests hold the two byte-identical.
 *
 * Shape of the code: for each type one static function handles ONE ROW of ONE TILE (16 rows x one
 * source block) in each direction (pack_rest_*, unpack_rest_*: every field but the 4-bit codes;
 * dequantize_row_*), and one table (NIB_*, struct nib_moves) says where its 4-bit codes go, which
 * generic movers apply row by row or a whole tile at a time; a generic strip driver walks tiles in
 * file order (strip nb, then block kb, then row r) and is force-inlined per type so that block
 * sizes and the table are constants and the row function is a direct, inlined call.
 *
 * Speed: codes are never moved one element at a time. A NIB word (4 bytes of one 64-byte line)
 * always draws its 8 nibbles from one nibble half of 8 consecutive source bytes, so it is two
 * 32-bit loads and a few masks; HB1/HB2 words are small bit transposes of 32-bit words of qh.
 */
#include "amx.h"
#include "decode_simd.h"

#include <float.h>
#include <stddef.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "amx.c reads multi-byte fields with native loads; it needs a little-endian CPU"
#endif

/* Dequantize must round after every single operation, exactly like numpy does: no a*b+c fusion
   and no excess precision. (gcc already defaults to -ffp-contract=off under -std=c11.) */
#if FLT_EVAL_METHOD != 0
#error "dequantize needs float arithmetic evaluated in float (FLT_EVAL_METHOD == 0)"
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/* The pack driver reads 16 source rows side by side (16 streams, one block at a time); for the
   large K-quant blocks hardware prefetchers fall behind, so the driver asks for the block about
   PREFETCH_AHEAD bytes further along each row (measured: +20-30% for the K-quants, a loss for the
   18..34-byte legacy blocks, which therefore do without). */
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

/* One prefetch per started cache line of a block (the next blocks cover the rest). */
static inline void prefetch_block(const uint8_t *p, int64_t bs)
{
    for (int64_t i = 0; i < bs; i += 64) PREFETCH(p + i);
}

/* Fixed-count loops over the words of one row: unrolled, all addresses become constants. */
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define UNROLL _Pragma("GCC unroll 16")
#else
#define UNROLL
#endif

/* ---------------------------------------------------------------------------------------------
 * Constants (section 2) and source block fields (section 3): byte offsets inside one ggml block.
 * Blocks are addressed by byte offset, never through structs: in a tensor they are not aligned.
 * ------------------------------------------------------------------------------------------- */

enum { TILE_N = 16, LINE = 64 /* one B-tile line: 16 rows x 4 bytes */ };
enum { QK_LEGACY = 32, QK_K = 256, K_SCALE_SIZE = 12 };

enum { Q4_0_ID = 2, Q4_0_BS = 18, Q4_0_D = 0, Q4_0_QS = 2 };
enum { Q4_1_ID = 3, Q4_1_BS = 20, Q4_1_D = 0, Q4_1_M = 2, Q4_1_QS = 4 };
enum { Q8_0_ID = 8, Q8_0_BS = 34, Q8_0_D = 0, Q8_0_QS = 2 };
enum { Q4_K_ID = 12, Q4_K_BS = 144, Q4_K_D = 0, Q4_K_DMIN = 2, Q4_K_SCALES = 4, Q4_K_QS = 16 };
enum { Q5_K_ID = 13, Q5_K_BS = 176, Q5_K_D = 0, Q5_K_DMIN = 2, Q5_K_SCALES = 4, Q5_K_QH = 16,
       Q5_K_QS = 48 };
enum { Q6_K_ID = 14, Q6_K_BS = 210, Q6_K_QL = 0, Q6_K_QH = 128, Q6_K_SCALES = 192, Q6_K_D = 208 };
enum { IQ4_XS_ID = 23, IQ4_XS_BS = 136, IQ4_XS_D = 0, IQ4_XS_SCALES_H = 2, IQ4_XS_SCALES_L = 4,
       IQ4_XS_QS = 8 };

/* Same checks as ggml-common.h's static asserts on the block structs: the fields fill the block. */
_Static_assert(Q4_0_QS + QK_LEGACY / 2 == Q4_0_BS, "wrong q4_0 block size/padding");
_Static_assert(Q4_1_QS + QK_LEGACY / 2 == Q4_1_BS, "wrong q4_1 block size/padding");
_Static_assert(Q8_0_QS + QK_LEGACY == Q8_0_BS, "wrong q8_0 block size/padding");
_Static_assert(Q4_K_SCALES + K_SCALE_SIZE == Q4_K_QS && Q4_K_QS + QK_K / 2 == Q4_K_BS,
               "wrong q4_K block size/padding");
_Static_assert(Q5_K_SCALES + K_SCALE_SIZE == Q5_K_QH && Q5_K_QH + QK_K / 8 == Q5_K_QS &&
               Q5_K_QS + QK_K / 2 == Q5_K_BS, "wrong q5_K block size/padding");
_Static_assert(Q6_K_QL + QK_K / 2 == Q6_K_QH && Q6_K_QH + QK_K / 4 == Q6_K_SCALES &&
               Q6_K_SCALES + QK_K / 16 == Q6_K_D && Q6_K_D + 2 == Q6_K_BS,
               "wrong q6_K block size/padding");
_Static_assert(IQ4_XS_SCALES_L + QK_K / 64 == IQ4_XS_QS && IQ4_XS_QS + QK_K / 2 == IQ4_XS_BS,
               "wrong iq4_xs block size/padding");

/* ---------------------------------------------------------------------------------------------
 * Tile layouts (section 7): region offsets inside one tile, and the tile size 16 * (BS + EXTRA).
 * ------------------------------------------------------------------------------------------- */

enum { Q4_0_T_NIB = 0, Q4_0_T_D = 256, Q4_0_TS = 288 };
enum { Q4_1_T_NIB = 0, Q4_1_T_D = 256, Q4_1_T_M = 288, Q4_1_TS = 320 };
enum { Q8_0_T_VNNI = 0, Q8_0_T_D = 512, Q8_0_T_COMP = 544, Q8_0_TS = 608 };
enum { Q4_K_T_NIB = 0, Q4_K_T_SC = 2048, Q4_K_T_MIN = 2176, Q4_K_T_D = 2304, Q4_K_T_DMIN = 2336,
       Q4_K_TS = 2368 };
enum { Q5_K_T_NIB = 0, Q5_K_T_HB1 = 2048, Q5_K_T_SC = 2560, Q5_K_T_MIN = 2688, Q5_K_T_D = 2816,
       Q5_K_T_DMIN = 2848, Q5_K_TS = 2880 };
enum { Q6_K_T_NIB = 0, Q6_K_T_HB2 = 2048, Q6_K_T_SC = 3072, Q6_K_T_D = 3328, Q6_K_TS = 3360 };
enum { IQ4_XS_T_NIB = 0, IQ4_XS_T_SC = 2048, IQ4_XS_T_D = 2176, IQ4_XS_TS = 2208 };

/* Each region follows the previous one: NIB = QK*8 bytes, VNNI8 = QK*16, HB1 = QK*2, HB2 = QK*4,
   ROWVEC(w) = 16*w, SCMAT(J) = 16*J, MINPAIRS = 128. */
_Static_assert(Q4_0_T_D == QK_LEGACY * 8 && Q4_0_TS == Q4_0_T_D + 32, "q4_0 tile regions");
_Static_assert(Q4_0_TS == TILE_N * (Q4_0_BS + 0), "q4_0 tile size");
_Static_assert(Q4_1_T_D == QK_LEGACY * 8 && Q4_1_T_M == Q4_1_T_D + 32 && Q4_1_TS == Q4_1_T_M + 32,
               "q4_1 tile regions");
_Static_assert(Q4_1_TS == TILE_N * (Q4_1_BS + 0), "q4_1 tile size");
_Static_assert(Q8_0_T_D == QK_LEGACY * 16 && Q8_0_T_COMP == Q8_0_T_D + 32 &&
               Q8_0_TS == Q8_0_T_COMP + 64, "q8_0 tile regions");
_Static_assert(Q8_0_TS == TILE_N * (Q8_0_BS + 4), "q8_0 tile size");
_Static_assert(Q4_K_T_SC == QK_K * 8 && Q4_K_T_MIN == Q4_K_T_SC + 128 && Q4_K_T_D == Q4_K_T_MIN + 128
               && Q4_K_T_DMIN == Q4_K_T_D + 32 && Q4_K_TS == Q4_K_T_DMIN + 32, "q4_K tile regions");
_Static_assert(Q4_K_TS == TILE_N * (Q4_K_BS + 4), "q4_K tile size");
_Static_assert(Q5_K_T_HB1 == QK_K * 8 && Q5_K_T_SC == Q5_K_T_HB1 + QK_K * 2 &&
               Q5_K_T_MIN == Q5_K_T_SC + 128 && Q5_K_T_D == Q5_K_T_MIN + 128 &&
               Q5_K_T_DMIN == Q5_K_T_D + 32 && Q5_K_TS == Q5_K_T_DMIN + 32, "q5_K tile regions");
_Static_assert(Q5_K_TS == TILE_N * (Q5_K_BS + 4), "q5_K tile size");
_Static_assert(Q6_K_T_HB2 == QK_K * 8 && Q6_K_T_SC == Q6_K_T_HB2 + QK_K * 4 &&
               Q6_K_T_D == Q6_K_T_SC + 256 && Q6_K_TS == Q6_K_T_D + 32, "q6_K tile regions");
_Static_assert(Q6_K_TS == TILE_N * (Q6_K_BS + 0), "q6_K tile size");
_Static_assert(IQ4_XS_T_SC == QK_K * 8 && IQ4_XS_T_D == IQ4_XS_T_SC + 128 &&
               IQ4_XS_TS == IQ4_XS_T_D + 32, "iq4_xs tile regions");
_Static_assert(IQ4_XS_TS == TILE_N * (IQ4_XS_BS + 2), "iq4_xs tile size");

/* ---------------------------------------------------------------------------------------------
 * Tiny shared helpers
 * ------------------------------------------------------------------------------------------- */

#define NIBBLES_LO 0x0F0F0F0Fu
#define NIBBLES_HI 0xF0F0F0F0u

static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void store32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void copy_fp16(uint8_t *dst, const uint8_t *src) { memcpy(dst, src, 2); }
static inline uint16_t load16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* NIB (section 5). `row` is the tile start + 4*r, so line u of row r is at row + 64*u.
   An 8-byte span of a 4-bit code field holds, in each nibble half, 8 consecutive elements (the
   first 4 in bytes 0..3); its low nibbles form NIB word u_lo, its high nibbles NIB word u_hi. */
static inline void nib_pack_span(const uint8_t *span, uint8_t *row, int u_lo, int u_hi)
{
    const uint32_t a = load32(span), b = load32(span + 4);
    store32(row + LINE * u_lo, (a & NIBBLES_LO) | (b & NIBBLES_LO) << 4);
    store32(row + LINE * u_hi, (a >> 4 & NIBBLES_LO) | (b & NIBBLES_HI));
}

static inline void nib_unpack_span(const uint8_t *row, int u_lo, int u_hi, uint8_t *span)
{
    const uint32_t w_lo = load32(row + LINE * u_lo), w_hi = load32(row + LINE * u_hi);
    store32(span, (w_lo & NIBBLES_LO) | (w_hi & NIBBLES_LO) << 4);
    store32(span + 4, (w_lo >> 4 & NIBBLES_LO) | (w_hi & NIBBLES_HI));
}

/* Where a type keeps its 4-bit codes (one table per type, used by both movers below): source
   bytes qs.., tile region t_nib..; spans come in pairs 2p, 2p+1 (16 source bytes at qs + 16p), and
   for every nibble type the pair's low-nibble words are consecutive lines u, u+1
   (u = first_line[p]) and its high-nibble words lines u+delta, u+delta+1. pairs = 0: no 4-bit
   codes (Q8_0). */
struct nib_moves { int qs, t_nib, pairs, delta; uint8_t first_line[8]; };

/* Row-wise (the portable path and the reference): the codes of one tile row, `row` = the NIB
   region + 4*r. */
static ALWAYS_INLINE void nib_row_pack(const uint8_t *qs, uint8_t *row, const struct nib_moves *nib)
{
    UNROLL for (int p = 0; p < nib->pairs; p++)
        for (int c = 0; c < 2; c++)
            nib_pack_span(qs + 16 * p + 8 * c, row, nib->first_line[p] + c,
                          nib->first_line[p] + nib->delta + c);
}

static ALWAYS_INLINE void nib_row_unpack(const uint8_t *row, uint8_t *qs, const struct nib_moves *nib)
{
    UNROLL for (int p = 0; p < nib->pairs; p++)
        for (int c = 0; c < 2; c++)
            nib_unpack_span(row, nib->first_line[p] + c, nib->first_line[p] + nib->delta + c,
                            qs + 16 * p + 8 * c);
}

/* A whole tile at once, four rows per 128-bit vector (SSE2, part of every x86-64), used when the
   selected path (simd.h) is not the portable one; tests/test_decode_simd.py holds it
   byte-identical to the row-wise movers: 4 rows x 16 bytes transpose (4x4 words) into 4 lines x
   16 bytes, and back. */
#if defined(__SSE2__)
#define HAVE_VECTOR_MOVES 1
#include <emmintrin.h>

static inline __m128i load128(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }
static inline void store128(uint8_t *p, __m128i v) { _mm_storeu_si128((__m128i *)p, v); }

/* 4x4 transpose of 32-bit words: word i of v[k] <-> word k of v[i]. */
static inline void transpose_words_4x4(__m128i v[4])
{
    const __m128i t0 = _mm_unpacklo_epi32(v[0], v[1]), t1 = _mm_unpacklo_epi32(v[2], v[3]);
    const __m128i t2 = _mm_unpackhi_epi32(v[0], v[1]), t3 = _mm_unpackhi_epi32(v[2], v[3]);
    v[0] = _mm_unpacklo_epi64(t0, t1);
    v[1] = _mm_unpackhi_epi64(t0, t1);
    v[2] = _mm_unpacklo_epi64(t2, t3);
    v[3] = _mm_unpackhi_epi64(t2, t3);
}

/* qs of tile row r at qs0 + r * row_stride -> the NIB region `region`. */
static ALWAYS_INLINE void nib_tile_pack(const uint8_t *qs0, int64_t row_stride, uint8_t *region,
                                       const struct nib_moves *nib)
{
    const __m128i lo = _mm_set1_epi8(0x0F);
    for (int p = 0; p < nib->pairs; p++) {
        uint8_t *line = region + LINE * nib->first_line[p];
        for (int g = 0; g < TILE_N / 4; g++) {
            const uint8_t *q = qs0 + 4 * g * row_stride + 16 * p;
            __m128i v[4] = {load128(q), load128(q + row_stride), load128(q + 2 * row_stride),
                            load128(q + 3 * row_stride)};
            transpose_words_4x4(v);   /* v[0], v[1]: bytes 0-3, 4-7 of span 2p; v[2], v[3]: 2p+1 */
            for (int c = 0; c < 2; c++) {
                const __m128i a = v[2 * c], b = v[2 * c + 1];
                store128(line + LINE * c + 16 * g,
                         _mm_or_si128(_mm_and_si128(a, lo), _mm_slli_epi16(_mm_and_si128(b, lo), 4)));
                store128(line + LINE * (nib->delta + c) + 16 * g,
                         _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), lo), _mm_andnot_si128(lo, b)));
            }
        }
    }
}

/* The inverse: the NIB region `region` -> qs of every tile row. */
static ALWAYS_INLINE void nib_tile_unpack(const uint8_t *region, uint8_t *qs0, int64_t row_stride,
                                         const struct nib_moves *nib)
{
    const __m128i lo = _mm_set1_epi8(0x0F);
    for (int p = 0; p < nib->pairs; p++) {
        const uint8_t *line = region + LINE * nib->first_line[p];
        for (int g = 0; g < TILE_N / 4; g++) {
            __m128i v[4];
            for (int c = 0; c < 2; c++) {
                const __m128i w_lo = load128(line + LINE * c + 16 * g);
                const __m128i w_hi = load128(line + LINE * (nib->delta + c) + 16 * g);
                v[2 * c] = _mm_or_si128(_mm_and_si128(w_lo, lo), _mm_slli_epi16(_mm_and_si128(w_hi, lo), 4));
                v[2 * c + 1] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(w_lo, 4), lo),
                                            _mm_andnot_si128(lo, w_hi));
            }
            transpose_words_4x4(v);
            uint8_t *q = qs0 + 4 * g * row_stride + 16 * p;
            for (int k = 0; k < 4; k++) store128(q + k * row_stride, v[k]);
        }
    }
}
#endif

/* Swap the bits selected by `mask << shift` of *a with the bits selected by `mask` of *b. */
static inline void swap_bit_blocks(uint32_t *a, uint32_t *b, int shift, uint32_t mask)
{
    const uint32_t diff = ((*a >> shift) ^ *b) & mask;
    *b ^= diff;
    *a ^= diff << shift;
}

/* HB1 (Q5_K bit 4): in each byte lane, bit g of w[t] becomes bit t of w[g], in place: the
   usual 8x8 bit-matrix transpose by swapping 4x4, 2x2 and 1x1 blocks. Its own inverse. */
static inline void transpose_bits_8x8(uint32_t w[8])
{
    for (int t = 0; t < 4; t++) swap_bit_blocks(&w[t], &w[t + 4], 4, 0x0F0F0F0Fu);
    for (int half = 0; half < 8; half += 4)
        for (int t = half; t < half + 2; t++) swap_bit_blocks(&w[t], &w[t + 2], 2, 0x33333333u);
    for (int t = 0; t < 8; t += 2) swap_bit_blocks(&w[t], &w[t + 1], 1, 0x55555555u);
}

/* HB2 (Q6_K bits 4-5): in each byte lane, 2-bit field s of w[t] becomes 2-bit field t of w[s],
   in place (4x4 transpose of 2-bit fields). Its own inverse as well. */
static inline void transpose_pairs_4x4(uint32_t w[4])
{
    for (int t = 0; t < 2; t++) swap_bit_blocks(&w[t], &w[t + 2], 4, 0x0F0F0F0Fu);
    for (int t = 0; t < 4; t += 2) swap_bit_blocks(&w[t], &w[t + 1], 2, 0x33333333u);
}

/* Q4_K/Q5_K 12-byte scales <-> eight 6-bit scales and eight 6-bit mins (section 6.3, 10.1). */
static inline void k_scales_decode(const uint8_t *S, uint8_t sc[8], uint8_t mn[8])
{
    for (int j = 0; j < 4; j++) {
        sc[j] = S[j] & 63;
        mn[j] = S[j + 4] & 63;
        sc[j + 4] = (uint8_t)((S[j + 8] & 0xF) | (S[j] >> 6) << 4);
        mn[j + 4] = (uint8_t)((S[j + 8] >> 4) | (S[j + 4] >> 6) << 4);
    }
}

/* Masks to 6 bits so that invalid packed data (which amx_check reports) cannot spill into
   neighbouring fields. */
static inline void k_scales_encode(const uint8_t sc[8], const uint8_t mn[8], uint8_t *S)
{
    for (int i = 0; i < 4; i++) {
        S[i] = (uint8_t)((sc[i] & 63) | (sc[i + 4] & 63) >> 4 << 6);
        S[i + 4] = (uint8_t)((mn[i] & 63) | (mn[i + 4] & 63) >> 4 << 6);
        S[i + 8] = (uint8_t)((sc[i + 4] & 0xF) | (mn[i + 4] & 0xF) << 4);
    }
}

/* SCMAT(J) and MINPAIRS addresses (section 5) relative to their region. */
static inline int scmat_at(int j, int r) { return 16 * j + r; }
static inline int minpairs_at(int j, int r) { return 32 * (j >> 1) + 2 * r + (j & 1); }

/* fp16 -> fp32 by bits, exact for every input: subnormals are normalised, NaN payloads and the
   quiet bit are kept as they are (this is what numpy's float16 -> float32 cast does). */
static inline float fp16_to_fp32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = h >> 10 & 0x1Fu, mantissa = h & 0x3FFu, bits;
    if (exponent == 0x1F) {
        bits = sign | 0x7F800000u | mantissa << 13;
    } else if (exponent != 0) {
        bits = sign | (exponent + 112) << 23 | mantissa << 13;
    } else if (mantissa == 0) {
        bits = sign;
    } else {
        uint32_t e = 113; /* value = mantissa * 2^-24; shift the leading one to bit 10 */
        while (!(mantissa & 0x400u)) { mantissa <<= 1; e--; }
        bits = sign | e << 23 | (mantissa & 0x3FFu) << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float load_fp16(const uint8_t *p) { return fp16_to_fp32(load16(p)); }

/* Four-bit codes of a NIB region for one row, in element order (n_lines = QK / 8). */
static inline void nib_codes(const uint8_t *row, int n_lines, uint8_t *codes)
{
    for (int u = 0; u < n_lines; u++) { /* byte i of the word: element 8u+i low, 8u+4+i high */
        const uint32_t w = load32(row + LINE * u);
        store32(codes + 8 * u, w & 0x0F0F0F0Fu);
        store32(codes + 8 * u + 4, w >> 4 & 0x0F0F0F0Fu);
    }
}

static const int8_t IQ4_NL_VALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                         1, 13, 25, 38, 53, 69, 89, 113};

/* ---------------------------------------------------------------------------------------------
 * Q4_0 / Q4_1 (sections 6.1, 7.1, 7.2). qs span s (bytes 8s..8s+7): low nibbles are elements
 * 8s.. (NIB word s), high nibbles elements 16+8s.. (NIB word 2+s).
 * ------------------------------------------------------------------------------------------- */

static const struct nib_moves NIB_q4_0 = {Q4_0_QS, Q4_0_T_NIB, 1, 2, {0}};

static void pack_rest_q4_0(const uint8_t *blk, uint8_t *tile, int r)
{
    copy_fp16(tile + Q4_0_T_D + 2 * r, blk + Q4_0_D);
}

static void unpack_rest_q4_0(const uint8_t *tile, int r, uint8_t *blk)
{
    copy_fp16(blk + Q4_0_D, tile + Q4_0_T_D + 2 * r);
}

static void dequantize_row_q4_0(const uint8_t *tile, int r, float *y)
{
    uint8_t c[QK_LEGACY];
    nib_codes(tile + 4 * r, QK_LEGACY / 8, c);
    const float d = load_fp16(tile + Q4_0_T_D + 2 * r);
    for (int e = 0; e < QK_LEGACY; e++) y[e] = d * (float)((int)c[e] - 8);
}

static const struct nib_moves NIB_q4_1 = {Q4_1_QS, Q4_1_T_NIB, 1, 2, {0}};

static void pack_rest_q4_1(const uint8_t *blk, uint8_t *tile, int r)
{
    copy_fp16(tile + Q4_1_T_D + 2 * r, blk + Q4_1_D);
    copy_fp16(tile + Q4_1_T_M + 2 * r, blk + Q4_1_M);
}

static void unpack_rest_q4_1(const uint8_t *tile, int r, uint8_t *blk)
{
    copy_fp16(blk + Q4_1_D, tile + Q4_1_T_D + 2 * r);
    copy_fp16(blk + Q4_1_M, tile + Q4_1_T_M + 2 * r);
}

static void dequantize_row_q4_1(const uint8_t *tile, int r, float *y)
{
    uint8_t c[QK_LEGACY];
    nib_codes(tile + 4 * r, QK_LEGACY / 8, c);
    const float d = load_fp16(tile + Q4_1_T_D + 2 * r), m = load_fp16(tile + Q4_1_T_M + 2 * r);
    for (int e = 0; e < QK_LEGACY; e++) {
        const float dq = d * (float)c[e];
        /* numpy computes (d*q) + m; when both are NaN, x86 returns the first operand. An addition
           may be emitted with its operands swapped, so pick that NaN explicitly. */
        y[e] = dq != dq ? dq : dq + m;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Q8_0 (sections 6.2, 7.3): VNNI8 line q of row r = qs[4q .. 4q+3]; comp = 128 * sum(qs).
 * ------------------------------------------------------------------------------------------- */

static inline int32_t q8_0_comp(const uint8_t *qs)
{
    int32_t sum = 0;
    for (int e = 0; e < QK_LEGACY; e++) sum += (int8_t)qs[e];
    return sum * 128;
}

static void pack_rest_q8_0(const uint8_t *blk, uint8_t *tile, int r)
{
    for (int q = 0; q < QK_LEGACY / 4; q++)
        store32(tile + Q8_0_T_VNNI + LINE * q + 4 * r, load32(blk + Q8_0_QS + 4 * q));
    copy_fp16(tile + Q8_0_T_D + 2 * r, blk + Q8_0_D);
    store32(tile + Q8_0_T_COMP + 4 * r, (uint32_t)q8_0_comp(blk + Q8_0_QS));
}

static void unpack_rest_q8_0(const uint8_t *tile, int r, uint8_t *blk)
{
    for (int q = 0; q < QK_LEGACY / 4; q++)
        store32(blk + Q8_0_QS + 4 * q, load32(tile + Q8_0_T_VNNI + LINE * q + 4 * r));
    copy_fp16(blk + Q8_0_D, tile + Q8_0_T_D + 2 * r);
}

static const struct nib_moves NIB_q8_0 = {0, 0, 0, 0, {0}};   /* 8-bit codes: row-wise only */

static void dequantize_row_q8_0(const uint8_t *tile, int r, float *y)
{
    const float d = load_fp16(tile + Q8_0_T_D + 2 * r);
    uint8_t qs[QK_LEGACY];   /* the row's quants in element order, a word per line */
    for (int q = 0; q < QK_LEGACY / 4; q++) store32(qs + 4 * q, load32(tile + Q8_0_T_VNNI + LINE * q + 4 * r));
    for (int e = 0; e < QK_LEGACY; e++) y[e] = (float)(int8_t)qs[e] * d;
}

/* Bit set for every row r of the tile whose stored comp differs from the quants. */
static uint32_t bad_rows_q8_0(const uint8_t *tile)
{
    uint32_t bad = 0;
    for (int r = 0; r < TILE_N; r++) {
        int32_t sum = 0;
        for (int q = 0; q < QK_LEGACY / 4; q++)
            for (int i = 0; i < 4; i++) sum += (int8_t)tile[Q8_0_T_VNNI + LINE * q + 4 * r + i];
        if ((uint32_t)(sum * 128) != load32(tile + Q8_0_T_COMP + 4 * r)) bad |= 1u << r;
    }
    return bad;
}

/* ---------------------------------------------------------------------------------------------
 * Q4_K / Q5_K (sections 6.3, 6.4, 7.4, 7.5). qs span s = bytes 8s..8s+7 = l 8a..8a+7 of 64-element
 * group p (p = s/4, a = s%4): low nibbles are elements 64p+8a.. (NIB word 8p+a), high nibbles
 * elements 64p+32+8a.. (NIB word 8p+4+a).
 * Q5_K bit 4: qh word t (bytes 4t..4t+3) bit g = bit 4 of element 32g+4t+i; HB1 word g byte i
 * bit t holds that same bit, so the HB1 words are the bit transpose of the qh words.
 * ------------------------------------------------------------------------------------------- */

static inline void k_scales_pack(const uint8_t *S, uint8_t *tile_sc, uint8_t *tile_min, int r)
{
    uint8_t sc[8], mn[8];
    k_scales_decode(S, sc, mn);
    for (int j = 0; j < 8; j++) {
        tile_sc[scmat_at(j, r)] = sc[j];
        tile_min[minpairs_at(j, r)] = mn[j];
    }
}

static inline void k_scales_unpack(const uint8_t *tile_sc, const uint8_t *tile_min, int r,
                                   uint8_t *S)
{
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = tile_sc[scmat_at(j, r)];
        mn[j] = tile_min[minpairs_at(j, r)];
    }
    k_scales_encode(sc, mn, S);
}

/* Bit set for every row with a 6-bit scale or min byte >= 64 (section 10.2). */
static inline uint32_t k_bad_scale_rows(const uint8_t *tile_sc, const uint8_t *tile_min)
{
    /* first the common case, every byte of both regions below 64, in a loop the compiler vectorises */
    uint8_t high = 0;
    for (int i = 0; i < 128; i++) high |= (uint8_t)(tile_sc[i] | tile_min[i]);
    if (!(high & 0xC0)) return 0;
    uint32_t bad = 0;
    for (int j = 0; j < 8; j++)
        for (int r = 0; r < TILE_N; r++)
            if ((tile_sc[scmat_at(j, r)] | tile_min[minpairs_at(j, r)]) >= 64) bad |= 1u << r;
    return bad;
}

/* y = (d * sc[j]) * q - (dmin * m[j]), each product rounded to float, as gguf-py computes it. */
static inline void k_dequantize(const uint8_t *codes, const uint8_t *tile_sc, const uint8_t *tile_min,
                                int r, float d, float dmin, float *y)
{
    for (int j = 0; j < 8; j++) {
        const float dl = d * (float)tile_sc[scmat_at(j, r)];
        const float ml = dmin * (float)tile_min[minpairs_at(j, r)];
        for (int l = 0; l < 32; l++) y[32 * j + l] = dl * (float)codes[32 * j + l] - ml;
    }
}

static const struct nib_moves NIB_q4_K = {Q4_K_QS, Q4_K_T_NIB, 8, 4, {0, 2, 8, 10, 16, 18, 24, 26}};

static void pack_rest_q4_K(const uint8_t *blk, uint8_t *tile, int r)
{
    k_scales_pack(blk + Q4_K_SCALES, tile + Q4_K_T_SC, tile + Q4_K_T_MIN, r);
    copy_fp16(tile + Q4_K_T_D + 2 * r, blk + Q4_K_D);
    copy_fp16(tile + Q4_K_T_DMIN + 2 * r, blk + Q4_K_DMIN);
}

static void unpack_rest_q4_K(const uint8_t *tile, int r, uint8_t *blk)
{
    k_scales_unpack(tile + Q4_K_T_SC, tile + Q4_K_T_MIN, r, blk + Q4_K_SCALES);
    copy_fp16(blk + Q4_K_D, tile + Q4_K_T_D + 2 * r);
    copy_fp16(blk + Q4_K_DMIN, tile + Q4_K_T_DMIN + 2 * r);
}

static void dequantize_row_q4_K(const uint8_t *tile, int r, float *y)
{
    uint8_t c[QK_K];
    nib_codes(tile + Q4_K_T_NIB + 4 * r, QK_K / 8, c);
    k_dequantize(c, tile + Q4_K_T_SC, tile + Q4_K_T_MIN, r, load_fp16(tile + Q4_K_T_D + 2 * r),
                 load_fp16(tile + Q4_K_T_DMIN + 2 * r), y);
}

static uint32_t bad_rows_q4_K(const uint8_t *tile)
{
    return k_bad_scale_rows(tile + Q4_K_T_SC, tile + Q4_K_T_MIN);
}

static const struct nib_moves NIB_q5_K = {Q5_K_QS, Q5_K_T_NIB, 8, 4, {0, 2, 8, 10, 16, 18, 24, 26}};

static void pack_rest_q5_K(const uint8_t *blk, uint8_t *tile, int r)
{
    uint32_t w[8];
    for (int t = 0; t < 8; t++) w[t] = load32(blk + Q5_K_QH + 4 * t);
    transpose_bits_8x8(w);
    for (int g = 0; g < 8; g++) store32(tile + Q5_K_T_HB1 + LINE * g + 4 * r, w[g]);
    k_scales_pack(blk + Q5_K_SCALES, tile + Q5_K_T_SC, tile + Q5_K_T_MIN, r);
    copy_fp16(tile + Q5_K_T_D + 2 * r, blk + Q5_K_D);
    copy_fp16(tile + Q5_K_T_DMIN + 2 * r, blk + Q5_K_DMIN);
}

static void unpack_rest_q5_K(const uint8_t *tile, int r, uint8_t *blk)
{
    uint32_t w[8];
    for (int g = 0; g < 8; g++) w[g] = load32(tile + Q5_K_T_HB1 + LINE * g + 4 * r);
    transpose_bits_8x8(w);
    for (int t = 0; t < 8; t++) store32(blk + Q5_K_QH + 4 * t, w[t]);
    k_scales_unpack(tile + Q5_K_T_SC, tile + Q5_K_T_MIN, r, blk + Q5_K_SCALES);
    copy_fp16(blk + Q5_K_D, tile + Q5_K_T_D + 2 * r);
    copy_fp16(blk + Q5_K_DMIN, tile + Q5_K_T_DMIN + 2 * r);
}

static void dequantize_row_q5_K(const uint8_t *tile, int r, float *y)
{
    uint8_t c[QK_K];
    nib_codes(tile + Q5_K_T_NIB + 4 * r, QK_K / 8, c);
    for (int g = 0; g < 8; g++) { /* HB1 word g, byte i, bit t = bit 4 of element 32g+4t+i */
        const uint32_t w = load32(tile + Q5_K_T_HB1 + LINE * g + 4 * r);
        for (int t = 0; t < 8; t++)
            for (int i = 0; i < 4; i++) c[32 * g + 4 * t + i] |= (w >> (8 * i + t) & 1) << 4;
    }
    k_dequantize(c, tile + Q5_K_T_SC, tile + Q5_K_T_MIN, r, load_fp16(tile + Q5_K_T_D + 2 * r),
                 load_fp16(tile + Q5_K_T_DMIN + 2 * r), y);
}

static uint32_t bad_rows_q5_K(const uint8_t *tile)
{
    return k_bad_scale_rows(tile + Q5_K_T_SC, tile + Q5_K_T_MIN);
}

/* ---------------------------------------------------------------------------------------------
 * Q6_K (sections 6.5, 7.6). ql span s = bytes 8s..8s+7 (h = s/8, b = (s/4)%2, a = s%4): low
 * nibbles are elements 128h+32b+8a.. (NIB word 16h+4b+a), high nibbles elements 128h+32(b+2)+8a..
 * (NIB word 16h+4b+8+a).
 * Bits 4-5: for half h and c = 0..1, qh word t (bytes 32h+16c+4t ..+3) field s = high bits of
 * element 128h+32s+16c+4t+i; HB2 word g = 8h+2s+c holds it in field t: a 4x4 transpose.
 * ------------------------------------------------------------------------------------------- */

static const struct nib_moves NIB_q6_K = {Q6_K_QL, Q6_K_T_NIB, 8, 8, {0, 2, 4, 6, 16, 18, 20, 22}};

static void pack_rest_q6_K(const uint8_t *blk, uint8_t *tile, int r)
{
    for (int h = 0; h < 2; h++)
        for (int c = 0; c < 2; c++) {
            uint32_t w[4];
            for (int t = 0; t < 4; t++) w[t] = load32(blk + Q6_K_QH + 32 * h + 16 * c + 4 * t);
            transpose_pairs_4x4(w);
            for (int s = 0; s < 4; s++)
                store32(tile + Q6_K_T_HB2 + LINE * (8 * h + 2 * s + c) + 4 * r, w[s]);
        }
    for (int j = 0; j < 16; j++) tile[Q6_K_T_SC + scmat_at(j, r)] = blk[Q6_K_SCALES + j];
    copy_fp16(tile + Q6_K_T_D + 2 * r, blk + Q6_K_D);
}

static void unpack_rest_q6_K(const uint8_t *tile, int r, uint8_t *blk)
{
    for (int h = 0; h < 2; h++)
        for (int c = 0; c < 2; c++) {
            uint32_t w[4];
            for (int s = 0; s < 4; s++)
                w[s] = load32(tile + Q6_K_T_HB2 + LINE * (8 * h + 2 * s + c) + 4 * r);
            transpose_pairs_4x4(w);
            for (int t = 0; t < 4; t++) store32(blk + Q6_K_QH + 32 * h + 16 * c + 4 * t, w[t]);
        }
    for (int j = 0; j < 16; j++) blk[Q6_K_SCALES + j] = tile[Q6_K_T_SC + scmat_at(j, r)];
    copy_fp16(blk + Q6_K_D, tile + Q6_K_T_D + 2 * r);
}

static void dequantize_row_q6_K(const uint8_t *tile, int r, float *y)
{
    uint8_t c[QK_K];
    nib_codes(tile + Q6_K_T_NIB + 4 * r, QK_K / 8, c);
    for (int g = 0; g < 16; g++) { /* HB2 word g, byte i, field t = bits 4-5 of element 16g+4t+i */
        const uint32_t w = load32(tile + Q6_K_T_HB2 + LINE * g + 4 * r);
        for (int t = 0; t < 4; t++)   /* the 4 bytes' fields t at once: bits 2t..2t+1 of each byte */
            store32(c + 16 * g + 4 * t, load32(c + 16 * g + 4 * t) | (w >> (2 * t) & 0x03030303u) << 4);
    }
    const float d = load_fp16(tile + Q6_K_T_D + 2 * r);
    for (int j = 0; j < 16; j++) {
        const float dl = d * (float)(int8_t)tile[Q6_K_T_SC + scmat_at(j, r)];
        for (int l = 0; l < 16; l++) y[16 * j + l] = dl * (float)((int)c[16 * j + l] - 32);
    }
}

/* ---------------------------------------------------------------------------------------------
 * IQ4_XS (sections 6.6, 7.7). qs span s = bytes 8s..8s+7 of sub-block j = s/2 (c = s%2): low
 * nibbles are elements 32j+8c.. (NIB word 4j+c), high nibbles elements 32j+16+8c.. (word 4j+2+c).
 * The tile stores the 6-bit sub-block scale ls[j] as the int8 ls[j] - 32.
 * ------------------------------------------------------------------------------------------- */

static const struct nib_moves NIB_iq4_xs = {IQ4_XS_QS, IQ4_XS_T_NIB, 8, 2, {0, 4, 8, 12, 16, 20, 24, 28}};

static void pack_rest_iq4_xs(const uint8_t *blk, uint8_t *tile, int r)
{
    const uint16_t scales_h = load16(blk + IQ4_XS_SCALES_H);
    for (int j = 0; j < 8; j++) {
        const int ls = (blk[IQ4_XS_SCALES_L + j / 2] >> (4 * (j & 1)) & 0xF) |
                       (scales_h >> (2 * j) & 3) << 4;
        tile[IQ4_XS_T_SC + scmat_at(j, r)] = (uint8_t)(ls - 32);
    }
    copy_fp16(tile + IQ4_XS_T_D + 2 * r, blk + IQ4_XS_D);
}

static void unpack_rest_iq4_xs(const uint8_t *tile, int r, uint8_t *blk)
{
    uint16_t scales_h = 0;
    for (int i = 0; i < 4; i++) {
        /* (byte + 32) & 63 == ls for valid data; the mask keeps invalid data in its field */
        const int ls_lo = (tile[IQ4_XS_T_SC + scmat_at(2 * i, r)] + 32) & 63;
        const int ls_hi = (tile[IQ4_XS_T_SC + scmat_at(2 * i + 1, r)] + 32) & 63;
        blk[IQ4_XS_SCALES_L + i] = (uint8_t)((ls_lo & 0xF) | (ls_hi & 0xF) << 4);
        scales_h |= (uint16_t)((ls_lo >> 4) << (4 * i) | (ls_hi >> 4) << (4 * i + 2));
    }
    memcpy(blk + IQ4_XS_SCALES_H, &scales_h, 2);
    copy_fp16(blk + IQ4_XS_D, tile + IQ4_XS_T_D + 2 * r);
}

static void dequantize_row_iq4_xs(const uint8_t *tile, int r, float *y)
{
    uint8_t c[QK_K];
    nib_codes(tile + IQ4_XS_T_NIB + 4 * r, QK_K / 8, c);
    const float d = load_fp16(tile + IQ4_XS_T_D + 2 * r);
    for (int j = 0; j < 8; j++) {
        const float dl = d * (float)(int8_t)tile[IQ4_XS_T_SC + scmat_at(j, r)];
        for (int l = 0; l < 32; l++) y[32 * j + l] = dl * (float)IQ4_NL_VALUES[c[32 * j + l]];
    }
}

static uint32_t bad_rows_iq4_xs(const uint8_t *tile)
{
    /* first the common case, every int8 in -32..31 (that is, byte + 32 below 64), vectorised */
    uint8_t high = 0;
    for (int i = 0; i < 128; i++) high |= (uint8_t)(tile[IQ4_XS_T_SC + i] + 32);
    if (!(high & 0xC0)) return 0;
    uint32_t bad = 0;
    for (int j = 0; j < 8; j++)
        for (int r = 0; r < TILE_N; r++) {
            const int v = (int8_t)tile[IQ4_XS_T_SC + scmat_at(j, r)];
            if (v < -32 || v > 31) bad |= 1u << r;
        }
    return bad;
}

/* ---------------------------------------------------------------------------------------------
 * Strip drivers (section 4): tile (nb, kb) at (nb*KB + kb) * TS; its row r is block kb of source
 * row 16*nb + r. Force-inlined per type so BS/TS are constants and the row call is direct.
 * ------------------------------------------------------------------------------------------- */

enum { PREFETCH_AHEAD = 512 };

typedef void (*pack_row_fn)(const uint8_t *blk, uint8_t *tile, int r);
typedef void (*unpack_row_fn)(const uint8_t *tile, int r, uint8_t *blk);
typedef void (*dequantize_row_fn)(const uint8_t *tile, int r, float *y);
typedef uint32_t (*bad_rows_fn)(const uint8_t *tile);

/* The 4-bit codes (nib) of a tile move a whole tile at once with `vector` (on x86-64), else row by
   row; every other field moves row by row (pack_rest / unpack_rest). */
static ALWAYS_INLINE void pack_strips(const uint8_t *src, uint8_t *dst, int64_t kb_count,
                                      int64_t bs, int64_t ts, int64_t nb_begin, int64_t nb_end,
                                      pack_row_fn pack_rest, const struct nib_moves *nib, int vector)
{
    const int64_t row_stride = kb_count * bs;
#ifndef HAVE_VECTOR_MOVES
    vector = 0;
#endif
    for (int64_t nb = nb_begin; nb < nb_end; nb++)
        for (int64_t kb = 0; kb < kb_count; kb++) {
            uint8_t *tile = dst + (nb * kb_count + kb) * ts;
            const uint8_t *blk = src + (nb * TILE_N * kb_count + kb) * bs;
#ifdef HAVE_VECTOR_MOVES
            if (vector && nib->pairs) nib_tile_pack(blk + nib->qs, row_stride, tile + nib->t_nib, nib);
#endif
            for (int r = 0; r < TILE_N; r++) {
                const uint8_t *row = blk + r * row_stride;
                if (bs >= 64 && kb + PREFETCH_AHEAD / bs < kb_count)
                    prefetch_block(row + PREFETCH_AHEAD / bs * bs, bs);
                if (!vector && nib->pairs) nib_row_pack(row + nib->qs, tile + nib->t_nib + 4 * r, nib);
                pack_rest(row, tile, r);
            }
        }
}

static ALWAYS_INLINE void unpack_strips(const uint8_t *packed, uint8_t *dst, int64_t kb_count,
                                        int64_t bs, int64_t ts, int64_t nb_begin, int64_t nb_end,
                                        unpack_row_fn unpack_rest, const struct nib_moves *nib,
                                        int vector)
{
    const int64_t row_stride = kb_count * bs;
#ifndef HAVE_VECTOR_MOVES
    vector = 0;
#endif
    for (int64_t nb = nb_begin; nb < nb_end; nb++)
        for (int64_t kb = 0; kb < kb_count; kb++) {
            const uint8_t *tile = packed + (nb * kb_count + kb) * ts;
            uint8_t *blk = dst + (nb * TILE_N * kb_count + kb) * bs;
#ifdef HAVE_VECTOR_MOVES
            if (vector && nib->pairs) nib_tile_unpack(tile + nib->t_nib, blk + nib->qs, row_stride, nib);
#endif
            for (int r = 0; r < TILE_N; r++) {
                uint8_t *row = blk + r * row_stride;
                if (!vector && nib->pairs) nib_row_unpack(tile + nib->t_nib + 4 * r, row + nib->qs, nib);
                unpack_rest(tile, r, row);
            }
        }
}

static ALWAYS_INLINE void dequantize_strips(const uint8_t *packed, float *dst, int64_t kb_count,
                                            int64_t qk, int64_t ts, int64_t nb_begin,
                                            int64_t nb_end, dequantize_row_fn dequantize_row)
{
    const int64_t k = kb_count * qk;
    for (int64_t nb = nb_begin; nb < nb_end; nb++)
        for (int64_t kb = 0; kb < kb_count; kb++) {
            const uint8_t *tile = packed + (nb * kb_count + kb) * ts;
            for (int r = 0; r < TILE_N; r++)
                dequantize_row(tile, r, dst + (nb * TILE_N + r) * k + kb * qk);
        }
}

static ALWAYS_INLINE int64_t check_strips(const uint8_t *packed, int64_t kb_count, int64_t ts,
                                          int64_t nb_begin, int64_t nb_end, bad_rows_fn bad_rows)
{
    for (int64_t nb = nb_begin; nb < nb_end; nb++) {
        uint32_t bad = 0;
        for (int64_t kb = 0; kb < kb_count; kb++) bad |= bad_rows(packed + (nb * kb_count + kb) * ts);
        if (bad) {
            int r = 0;
            while (!(bad >> r & 1)) r++;
            return nb * TILE_N + r;
        }
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Public API
 * ------------------------------------------------------------------------------------------- */

typedef struct { int32_t id, qk, bs, extra; } amx_type;

static const amx_type AMX_TYPES[] = {
    {Q4_0_ID, QK_LEGACY, Q4_0_BS, 0}, {Q4_1_ID, QK_LEGACY, Q4_1_BS, 0},
    {Q8_0_ID, QK_LEGACY, Q8_0_BS, 4}, {Q4_K_ID, QK_K, Q4_K_BS, 4},
    {Q5_K_ID, QK_K, Q5_K_BS, 4},      {Q6_K_ID, QK_K, Q6_K_BS, 0},
    {IQ4_XS_ID, QK_K, IQ4_XS_BS, 2},
};

static const amx_type *find_type(int32_t id)
{
    for (size_t i = 0; i < sizeof AMX_TYPES / sizeof AMX_TYPES[0]; i++)
        if (AMX_TYPES[i].id == id) return &AMX_TYPES[i];
    return NULL;
}

int64_t amx_packed_block_bytes(int32_t src_type)
{
    const amx_type *t = find_type(src_type);
    return t ? t->bs + t->extra : 0;
}

/* 0 when the shape and strip range are valid and every byte offset (and n_rows*k floats) fits
   in int64, -2 otherwise. */
static int check_shape(const amx_type *t, int64_t n_rows, int64_t k, int64_t nb_begin,
                       int64_t nb_end)
{
    if (n_rows < 0 || k < 0 || n_rows % TILE_N != 0 || k % t->qk != 0) return -2;
    if (nb_begin < 0 || nb_begin > nb_end || nb_end > n_rows / TILE_N) return -2;
    if (n_rows > 0 && k > INT64_MAX / 8 / n_rows) return -2;
    return 0;
}

#define DISPATCH(src_type, CASE)                                                           \
    switch (src_type) {                                                                    \
    case Q4_0_ID: CASE(q4_0, QK_LEGACY, Q4_0_BS, Q4_0_TS); break;                          \
    case Q4_1_ID: CASE(q4_1, QK_LEGACY, Q4_1_BS, Q4_1_TS); break;                          \
    case Q8_0_ID: CASE(q8_0, QK_LEGACY, Q8_0_BS, Q8_0_TS); break;                          \
    case Q4_K_ID: CASE(q4_K, QK_K, Q4_K_BS, Q4_K_TS); break;                               \
    case Q5_K_ID: CASE(q5_K, QK_K, Q5_K_BS, Q5_K_TS); break;                               \
    case Q6_K_ID: CASE(q6_K, QK_K, Q6_K_BS, Q6_K_TS); break;                               \
    case IQ4_XS_ID: CASE(iq4_xs, QK_K, IQ4_XS_BS, IQ4_XS_TS); break;                       \
    default: return -1;                                                                    \
    }

int amx_pack(int32_t src_type, const uint8_t *src, uint8_t *dst, int64_t n_rows, int64_t k,
             int64_t strip_begin, int64_t strip_end)
{
    const amx_type *t = find_type(src_type);
    if (!t) return -1;
    if (check_shape(t, n_rows, k, strip_begin, strip_end)) return -2;
    const int vector = simd_vector_moves();
#define PACK_CASE(name, qk, bs, ts) \
    pack_strips(src, dst, k / (qk), bs, ts, strip_begin, strip_end, pack_rest_##name, \
                &NIB_##name, vector)
    DISPATCH(src_type, PACK_CASE)
#undef PACK_CASE
    return 0;
}

int amx_unpack(int32_t src_type, const uint8_t *packed, uint8_t *dst, int64_t n_rows, int64_t k,
               int64_t strip_begin, int64_t strip_end)
{
    const amx_type *t = find_type(src_type);
    if (!t) return -1;
    if (check_shape(t, n_rows, k, strip_begin, strip_end)) return -2;
    const int vector = simd_vector_moves();
#define UNPACK_CASE(name, qk, bs, ts) \
    unpack_strips(packed, dst, k / (qk), bs, ts, strip_begin, strip_end, unpack_rest_##name, \
                  &NIB_##name, vector)
    DISPATCH(src_type, UNPACK_CASE)
#undef UNPACK_CASE
    return 0;
}

int amx_dequantize(int32_t src_type, const uint8_t *packed, float *dst, int64_t n_rows, int64_t k,
                   int64_t strip_begin, int64_t strip_end)
{
    const amx_type *t = find_type(src_type);
    if (!t) return -1;
    if (check_shape(t, n_rows, k, strip_begin, strip_end)) return -2;
    const simd_tile_fn simd_tile = simd_amx_tile(src_type);  /* AVX2 / AVX-512: same bits */
    if (simd_tile) {
        const int64_t kb_count = k / t->qk, ts = TILE_N * (t->bs + t->extra);
        for (int64_t nb = strip_begin; nb < strip_end; nb++)
            for (int64_t kb = 0; kb < kb_count; kb++)
                simd_tile(packed + (nb * kb_count + kb) * ts, dst + nb * TILE_N * k + kb * t->qk, k);
        return 0;
    }
#define DEQUANTIZE_CASE(name, qk, bs, ts) \
    dequantize_strips(packed, dst, k / (qk), qk, ts, strip_begin, strip_end, dequantize_row_##name)
    DISPATCH(src_type, DEQUANTIZE_CASE)
#undef DEQUANTIZE_CASE
    return 0;
}

int64_t amx_check(int32_t src_type, const uint8_t *packed, int64_t n_rows, int64_t k,
                  int64_t strip_begin, int64_t strip_end)
{
    const amx_type *t = find_type(src_type);
    if (!t || check_shape(t, n_rows, k, strip_begin, strip_end)) return -3;
    const int64_t kb_count = k / t->qk;
    switch (src_type) { /* Q4_0, Q4_1 and Q6_K: every bit pattern is a valid tile */
    case Q8_0_ID: return check_strips(packed, kb_count, Q8_0_TS, strip_begin, strip_end, bad_rows_q8_0);
    case Q4_K_ID: return check_strips(packed, kb_count, Q4_K_TS, strip_begin, strip_end, bad_rows_q4_K);
    case Q5_K_ID: return check_strips(packed, kb_count, Q5_K_TS, strip_begin, strip_end, bad_rows_q5_K);
    case IQ4_XS_ID:
        return check_strips(packed, kb_count, IQ4_XS_TS, strip_begin, strip_end, bad_rows_iq4_xs);
    default: return -1;
    }
}
