/* Upstream llama.cpp's CPU_REPACK layouts: pack, exact inverse, and a direct float decoder.
 *
 * Specification: docs/cpu-repack.md. Facts from the pinned ggml/src/ggml-cpu/repack.cpp
 * (make_block_* and repack_*_to_*_bl): upstream takes nb_cols consecutive rows, and for each block
 * column x builds one packed block group from the nb_cols source blocks (row r's block x) at
 * offset (group * n_blocks + x) * nb_cols * block_bytes, so a chunk of whole row groups packs on
 * its own. A packed block group is a sequence of segments, each built from one field of the
 * nb_cols source blocks:
 *   - FIELD: the field (d, dmin, e) of row 0, row 1, ... one after another;
 *   - INTERLEAVE: the byte array in runs of `run` bytes, run i from row i % nb_cols at byte
 *     (i / nb_cols) * run, optionally XORed (q4_0: 0x88, a code c becomes the signed nibble c - 8);
 *   - and four re-encodings of scale fields (K4_SCALES_8/16, Q2K_SCALES_16) and Q1_0 4x4's bit
 *     shuffle (Q1_NIBBLES_4), each a bijection of the bits (lossless, see the spec).
 * Pack and unpack are driven by one table of segments per variant; the float decoder does NOT use
 * that table: it reads codes and scales at positions written out per type (dq_* below) and calls
 * the emit helpers of blocks_arith.h that the source decoders of blocks.c call, so it is an
 * independent reading of the layout and agrees with the source decoder bit for bit.
 */
#include "cpu_repack.h"

#include "blocks_arith.h"

#include <stddef.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cpu_repack.c assumes a little-endian host (the GGUF block formats are little-endian)"
#endif

enum { MAX_COLS = 16, MAX_SEGMENTS = 5 };

enum segment_kind { FIELD, INTERLEAVE, K4_SCALES_8, K4_SCALES_16, Q2K_SCALES_16, Q1_NIBBLES_4 };

/* One field of the source block (src_off, len bytes) and how it is spread over the packed group
   (len * nb_cols bytes there). */
struct segment {
    uint8_t kind, src_off, len, run, xor_mask;
};

typedef void dequantize_fn(const uint8_t *group, int n, int run, int r, float *y);

struct variant {
    int32_t src_type, nb_cols, inter;
    int32_t blck, bytes;   /* elements and bytes of one source block */
    int32_t run;           /* run length of the quant arrays (the decoder's view of `inter`) */
    dequantize_fn *dequantize;
    struct segment seg[MAX_SEGMENTS];
};

/* Q2_K 16x1 stores the 16 sub-block scales in this order (even low, odd low, even high, odd high);
   Q2K_POS is its inverse: the position of sub-block j. */
static const uint8_t Q2K_ORDER[16] = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};
static const uint8_t Q2K_POS[16] = {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15};

/* ---------------------------------------------------------------------------------------------- */
/* Scale encodings                                                                                 */

/* The 12-byte Q4_K/Q5_K scale field from 8 six-bit scales and 8 six-bit mins (inverse of
   k4_scale_min): bytes 0-3 scales 0-3 with the high bits of scales 4-7 on top, bytes 4-7 the same
   for the mins, bytes 8-11 the low nibbles of scale j+4 | min j+4. Upstream's packed scales use the
   same encoding with the 8 rows in place of the 8 sub-blocks. */
static void k4_encode(uint8_t *q, const int *sc, const int *m)
{
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        q[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        q[j + 8] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
}

/* K4_SCALES_16 (RVV 16x1): value index i = 16 * sub-block + row; byte i (i < 128) holds the low
   nibbles of scale | min << 4, byte 128 + i (i < 64) the high bit pairs of scale i, min i,
   scale 64 + i, min 64 + i. */
static void k4_16_get(const uint8_t *p, int sb, int r, int *sc, int *m)
{
    const int lo = p[16 * sb + r];
    const int hi = p[128 + 16 * (sb % 4) + r] >> (sb < 4 ? 0 : 4);
    *sc = (lo & 15) | (hi & 3) << 4;
    *m = (lo >> 4) | ((hi >> 2) & 3) << 4;
}

/* Q1_0 4x4: 4-bit run t (bits 4t..4t+3 of the 128) of row r. Byte 2t + h holds rows 2h (low
   nibble) and 2h + 1 (high nibble). */
static inline int q1_nibble(const uint8_t *qs, int t) { return (qs[t / 2] >> (4 * (t % 2))) & 15; }

/* ---------------------------------------------------------------------------------------------- */
/* Pack / unpack of one block group, segment by segment                                           */

static void pack_segment(const struct segment *s, int n, const uint8_t *const *in, uint8_t *out)
{
    switch (s->kind) {
    case FIELD:
        for (int r = 0; r < n; r++) memcpy(out + r * s->len, in[r] + s->src_off, s->len);
        break;
    case INTERLEAVE: {
        const int runs = s->len * n / s->run;
        for (int i = 0; i < runs; i++) {
            const uint8_t *from = in[i % n] + s->src_off + (i / n) * s->run;
            for (int b = 0; b < s->run; b++) out[i * s->run + b] = from[b] ^ s->xor_mask;
        }
        break;
    }
    case K4_SCALES_8: {
        int sc[8][8], m[8][8];   /* [sub-block][row] */
        for (int r = 0; r < 8; r++)
            for (int sb = 0; sb < 8; sb++) k4_scale_min(in[r] + s->src_off, sb, &sc[sb][r], &m[sb][r]);
        for (int sb = 0; sb < 8; sb++) k4_encode(out + 12 * sb, sc[sb], m[sb]);
        break;
    }
    case K4_SCALES_16: {
        int sc[8][16], m[8][16];
        for (int r = 0; r < 16; r++)
            for (int sb = 0; sb < 8; sb++) k4_scale_min(in[r] + s->src_off, sb, &sc[sb][r], &m[sb][r]);
        for (int i = 0; i < 128; i++)
            out[i] = (uint8_t)((sc[i / 16][i % 16] & 15) | (m[i / 16][i % 16] & 15) << 4);
        for (int i = 0; i < 64; i++) {
            const int sb = i / 16, r = i % 16;
            out[128 + i] = (uint8_t)((sc[sb][r] >> 4) | (m[sb][r] >> 4) << 2 | (sc[sb + 4][r] >> 4) << 4 |
                                     (m[sb + 4][r] >> 4) << 6);
        }
        break;
    }
    case Q2K_SCALES_16:
        for (int k = 0; k < 16; k++)
            for (int r = 0; r < 16; r++) out[16 * k + r] = in[r][s->src_off + Q2K_ORDER[k]];
        break;
    case Q1_NIBBLES_4:
        for (int t = 0; t < 32; t++)
            for (int h = 0; h < 2; h++)
                out[2 * t + h] = (uint8_t)(q1_nibble(in[2 * h] + s->src_off, t) |
                                           q1_nibble(in[2 * h + 1] + s->src_off, t) << 4);
        break;
    }
}

static void unpack_segment(const struct segment *s, int n, const uint8_t *p, uint8_t *const *out)
{
    switch (s->kind) {
    case FIELD:
        for (int r = 0; r < n; r++) memcpy(out[r] + s->src_off, p + r * s->len, s->len);
        break;
    case INTERLEAVE: {
        const int runs = s->len * n / s->run;
        for (int i = 0; i < runs; i++) {
            uint8_t *to = out[i % n] + s->src_off + (i / n) * s->run;
            for (int b = 0; b < s->run; b++) to[b] = p[i * s->run + b] ^ s->xor_mask;
        }
        break;
    }
    case K4_SCALES_8: {
        int sc[8][8], m[8][8];   /* [row][sub-block] */
        for (int sb = 0; sb < 8; sb++)
            for (int r = 0; r < 8; r++) k4_scale_min(p + 12 * sb, r, &sc[r][sb], &m[r][sb]);
        for (int r = 0; r < 8; r++) k4_encode(out[r] + s->src_off, sc[r], m[r]);
        break;
    }
    case K4_SCALES_16: {
        int sc[16][8], m[16][8];
        for (int sb = 0; sb < 8; sb++)
            for (int r = 0; r < 16; r++) k4_16_get(p, sb, r, &sc[r][sb], &m[r][sb]);
        for (int r = 0; r < 16; r++) k4_encode(out[r] + s->src_off, sc[r], m[r]);
        break;
    }
    case Q2K_SCALES_16:
        for (int k = 0; k < 16; k++)
            for (int r = 0; r < 16; r++) out[r][s->src_off + Q2K_ORDER[k]] = p[16 * k + r];
        break;
    case Q1_NIBBLES_4:
        for (int r = 0; r < 4; r++)
            for (int b = 0; b < 16; b++) {
                const int h = r / 2, shift = 4 * (r % 2);
                out[r][s->src_off + b] = (uint8_t)(((p[2 * (2 * b) + h] >> shift) & 15) |
                                                   ((p[2 * (2 * b + 1) + h] >> shift) & 15) << 4);
            }
        break;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Float decoders: row r (of n) of one packed block group -> y[0 .. blck-1]                        */

/* The `len` bytes of row r's array, interleaved over n rows in runs of `run` bytes (run i holds
   bytes (i / n) * run .. of row i % n), gathered into out in row order. */
#define GATHER_RUNS(RUN)                                                                        \
    for (int k = 0, i = r; k < len; k += RUN, i += n) memcpy(out + k, a + (size_t)i * RUN, RUN)
static inline void gather(const uint8_t *a, int n, int run, int r, int len, uint8_t *out)
{
    /* constant run lengths, so that each memcpy is a plain load and store */
    switch (run) {
    case 1: GATHER_RUNS(1); break;
    case 2: GATHER_RUNS(2); break;
    case 4: GATHER_RUNS(4); break;
    default: GATHER_RUNS(8); break;
    }
}

/* Q4_0: d[n] @0, qs @2n holding code ^ 8 (the signed nibble) in the legacy nibble order. */
static void dq_q4_0(const uint8_t *g, int n, int run, int r, float *y)
{
    uint8_t q[16], v[32];
    gather(g + 2 * n, n, run, r, 16, q);
    for (int k = 0; k < 16; k++) {
        v[k] = (q[k] & 15) ^ 8;
        v[k + 16] = (q[k] >> 4) ^ 8;
    }
    emit_offset(y, v, 32, ldh(g + 2 * r), 8);
}

/* Q8_0: d[n] @0, qs @2n. */
static void dq_q8_0(const uint8_t *g, int n, int run, int r, float *y)
{
    int8_t c[32];
    gather(g + 2 * n, n, run, r, 32, (uint8_t *)c);
    emit_i8(y, c, 32, ldh(g + 2 * r));
}

/* IQ4_NL: d[n] @0, qs @2n (codes unchanged). MXFP4: e[n] @0, qs @n. */
static void dq_iq4_nl(const uint8_t *g, int n, int run, int r, float *y)
{
    uint8_t q[16], v[32];
    gather(g + 2 * n, n, run, r, 16, q);
    codes_legacy(v, q);
    emit_table(y, v, 32, ldh(g + 2 * r), KV_IQ4NL);
}
static void dq_mxfp4(const uint8_t *g, int n, int run, int r, float *y)
{
    uint8_t q[16], v[32];
    gather(g + n, n, run, r, 16, q);
    codes_legacy(v, q);
    emit_table(y, v, 32, e8m0_half(g[r]), KV_MXFP4);
}

/* Q1_0: d[4] @0, qs @8: 4x8 (run 1) byte k of row r at 4k + r; 4x4 (run 4, Q1_NIBBLES_4) bits
   4t..4t+3 of row r in byte 2t + r/2, nibble r % 2. */
static void dq_q1_0(const uint8_t *g, int n, int run, int r, float *y)
{
    const uint8_t *q = g + 2 * n;
    uint8_t v[128];
    for (int j = 0; j < 128; j++) {
        const int byte = run == 1 ? q[4 * (j / 8) + r] >> (j % 8)
                                  : q[2 * (j / 4) + r / 2] >> (4 * (r % 2) + j % 4);
        v[j] = (uint8_t)(byte & 1);
    }
    emit_sign(y, v, 128, f16_f32(ld16(g + 2 * r)));
}

/* Q4_K / Q5_K scale and min of sub-block sb of row r from the packed scale field at s. */
static void k4_packed_scale_min(const uint8_t *s, int n, int sb, int r, int *sc, int *m)
{
    if (n == 8) k4_scale_min(s + 12 * sb, r, sc, m);   /* 12 bytes per sub-block, rows as "j" */
    else k4_16_get(s, sb, r, sc, m);
}

/* Q4_K: d[n] @0, dmin[n] @2n, scales @4n (12n bytes), qs @16n (128n bytes). */
static void dq_q4_K(const uint8_t *g, int n, int run, int r, float *y)
{
    const float d = ldh(g + 2 * r), dmin = ldh(g + 2 * n + 2 * r);
    uint8_t q[128], v[32];
    gather(g + 16 * n, n, run, r, 128, q);
    for (int ib = 0; ib < 8; ib++) {
        for (int j = 0; j < 32; j++) v[j] = (q[32 * (ib / 2) + j] >> (4 * (ib % 2))) & 15;
        int sc, m;
        k4_packed_scale_min(g + 4 * n, n, ib, r, &sc, &m);
        k4_emit32(y + 32 * ib, v, d, dmin, sc, m);
    }
}

/* Q5_K: d[n] @0, dmin[n] @2n, scales @4n, qh @16n (32n bytes), qs @48n (128n bytes). */
static void dq_q5_K(const uint8_t *g, int n, int run, int r, float *y)
{
    const float d = ldh(g + 2 * r), dmin = ldh(g + 2 * n + 2 * r);
    uint8_t qh[32], q[128], v[32];
    gather(g + 16 * n, n, run, r, 32, qh);
    gather(g + 48 * n, n, run, r, 128, q);
    for (int ib = 0; ib < 8; ib++) {
        for (int j = 0; j < 32; j++)
            v[j] = (uint8_t)(((q[32 * (ib / 2) + j] >> (4 * (ib % 2))) & 15) | ((qh[j] >> ib) & 1) << 4);
        int sc, m;
        k4_packed_scale_min(g + 4 * n, n, ib, r, &sc, &m);
        k4_emit32(y + 32 * ib, v, d, dmin, sc, m);
    }
}

/* Q6_K: d[n] @0, scales @2n (16n int8, scale j of row r at j*n + r), ql @18n (128n bytes),
   qh @146n (64n bytes). */
static void dq_q6_K(const uint8_t *g, int n, int run, int r, float *y)
{
    const float d = ldh(g + 2 * r);
    const int8_t *sc = (const int8_t *)(g + 2 * n);
    uint8_t ql[128], qh[64], v[32];
    gather(g + 18 * n, n, run, r, 128, ql);
    gather(g + 146 * n, n, run, r, 64, qh);
    for (int ib = 0; ib < 8; ib++) {
        const int h = ib / 4, p = ib % 4, sl = 4 * (p >> 1), shh = 2 * p;
        const uint8_t *l = ql + 64 * h + 32 * (p & 1), *hb = qh + 32 * h;
        for (int j = 0; j < 32; j++) v[j] = (uint8_t)(((l[j] >> sl) & 15) | ((hb[j] >> shh) & 3) << 4);
        q6k_emit16(y + 32 * ib, v, d, sc[(2 * ib) * n + r]);
        q6k_emit16(y + 32 * ib + 16, v + 16, d, sc[(2 * ib + 1) * n + r]);
    }
}

/* Q2_K: d[n] @0, dmin[n] @2n, scales @4n (16n bytes: 8x8 in runs of 2, 16x1 by Q2K_ORDER),
   qs @20n (64n bytes). */
static void dq_q2_K(const uint8_t *g, int n, int run, int r, float *y)
{
    const float d = ldh(g + 2 * r), dmin = ldh(g + 2 * n + 2 * r);
    const uint8_t *s = g + 4 * n;
    uint8_t q[64], v[32], sc[16];
    if (n == 8) gather(s, 8, 2, r, 16, sc);
    else for (int j = 0; j < 16; j++) sc[j] = s[16 * Q2K_POS[j] + r];
    gather(g + 20 * n, n, run, r, 64, q);
    for (int ib = 0; ib < 8; ib++) {
        for (int j = 0; j < 32; j++) v[j] = (q[32 * (ib / 4) + j] >> (2 * (ib % 4))) & 3;
        q2k_emit16(y + 32 * ib, v, d, dmin, sc[2 * ib]);
        q2k_emit16(y + 32 * ib + 16, v + 16, d, dmin, sc[2 * ib + 1]);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* The variants of the pinned repack.cpp                                                           */

#define F(off, len) {FIELD, off, len, 0, 0}
#define IL(off, len, run) {INTERLEAVE, off, len, run, 0}
#define ILX(off, len, run, x) {INTERLEAVE, off, len, run, x}

/* Source block layouts (ggml-common.h): q4_0/iq4_nl d@0 qs[16]@2; q8_0 d@0 qs[32]@2; mxfp4 e@0
   qs[16]@1; q1_0 d@0 qs[16]@2; q4_K d@0 dmin@2 scales[12]@4 qs[128]@16; q5_K ... qh[32]@16
   qs[128]@48; q6_K ql[128]@0 qh[64]@128 scales[16]@192 d@208; q2_K scales[16]@0 qs[64]@16 d@80
   dmin@82. */
static const struct variant VARIANTS[] = {
    {41, 4, 4, 128, 18, 4, dq_q1_0, {F(0, 2), {Q1_NIBBLES_4, 2, 16, 0, 0}}},
    {41, 4, 8, 128, 18, 1, dq_q1_0, {F(0, 2), IL(2, 16, 1)}},
    {2, 4, 4, 32, 18, 4, dq_q4_0, {F(0, 2), ILX(2, 16, 4, 0x88)}},
    {2, 4, 8, 32, 18, 8, dq_q4_0, {F(0, 2), ILX(2, 16, 8, 0x88)}},
    {2, 8, 8, 32, 18, 8, dq_q4_0, {F(0, 2), ILX(2, 16, 8, 0x88)}},
    {2, 16, 1, 32, 18, 1, dq_q4_0, {F(0, 2), ILX(2, 16, 1, 0x88)}},
    {12, 8, 4, 256, 144, 4, dq_q4_K, {F(0, 2), F(2, 2), {K4_SCALES_8, 4, 12, 0, 0}, IL(16, 128, 4)}},
    {12, 8, 8, 256, 144, 8, dq_q4_K, {F(0, 2), F(2, 2), {K4_SCALES_8, 4, 12, 0, 0}, IL(16, 128, 8)}},
    {12, 16, 1, 256, 144, 1, dq_q4_K, {F(0, 2), F(2, 2), {K4_SCALES_16, 4, 12, 0, 0}, IL(16, 128, 1)}},
    {13, 8, 4, 256, 176, 4, dq_q5_K,
     {F(0, 2), F(2, 2), {K4_SCALES_8, 4, 12, 0, 0}, IL(16, 32, 4), IL(48, 128, 4)}},
    {13, 8, 8, 256, 176, 8, dq_q5_K,
     {F(0, 2), F(2, 2), {K4_SCALES_8, 4, 12, 0, 0}, IL(16, 32, 8), IL(48, 128, 8)}},
    {14, 8, 4, 256, 210, 4, dq_q6_K, {F(208, 2), IL(192, 16, 1), IL(0, 128, 4), IL(128, 64, 4)}},
    {14, 8, 8, 256, 210, 8, dq_q6_K, {F(208, 2), IL(192, 16, 1), IL(0, 128, 8), IL(128, 64, 8)}},
    {10, 8, 8, 256, 84, 8, dq_q2_K, {F(80, 2), F(82, 2), IL(0, 16, 2), IL(16, 64, 8)}},
    {10, 16, 1, 256, 84, 1, dq_q2_K, {F(80, 2), F(82, 2), {Q2K_SCALES_16, 0, 16, 0, 0}, IL(16, 64, 1)}},
    {20, 4, 4, 32, 18, 4, dq_iq4_nl, {F(0, 2), IL(2, 16, 4)}},
    {20, 8, 8, 32, 18, 8, dq_iq4_nl, {F(0, 2), IL(2, 16, 8)}},
    {20, 16, 1, 32, 18, 1, dq_iq4_nl, {F(0, 2), IL(2, 16, 1)}},
    {39, 4, 4, 32, 17, 4, dq_mxfp4, {F(0, 1), IL(1, 16, 4)}},
    {39, 8, 8, 32, 17, 8, dq_mxfp4, {F(0, 1), IL(1, 16, 8)}},
    {8, 4, 4, 32, 34, 4, dq_q8_0, {F(0, 2), IL(2, 32, 4)}},
    {8, 4, 8, 32, 34, 8, dq_q8_0, {F(0, 2), IL(2, 32, 8)}},
    {8, 16, 1, 32, 34, 1, dq_q8_0, {F(0, 2), IL(2, 32, 1)}},
};

/* Segments end at the first one of length 0; their lengths add up to the source block. */
static int segment_count(const struct variant *v)
{
    int count = 0, total = 0;
    while (count < MAX_SEGMENTS && v->seg[count].len) total += v->seg[count++].len;
    return total == v->bytes ? count : 0;
}

static const struct variant *find_variant(int32_t src_type, int32_t nb_cols, int32_t inter)
{
    for (size_t i = 0; i < sizeof VARIANTS / sizeof VARIANTS[0]; i++) {
        const struct variant *v = &VARIANTS[i];
        if (v->src_type == src_type && v->nb_cols == nb_cols && v->inter == inter)
            return segment_count(v) && v->nb_cols <= MAX_COLS ? v : NULL;
    }
    return NULL;
}

int cr_has_variant(int32_t src_type, int32_t nb_cols, int32_t inter)
{
    return find_variant(src_type, nb_cols, inter) != NULL;
}

int64_t cr_row_bytes(int32_t src_type, int64_t ne0)
{
    for (size_t i = 0; i < sizeof VARIANTS / sizeof VARIANTS[0]; i++)
        if (VARIANTS[i].src_type == src_type)
            return ne0 > 0 && ne0 % VARIANTS[i].blck == 0 ? ne0 / VARIANTS[i].blck * VARIANTS[i].bytes : 0;
    return 0;
}

/* 0 and the variant, or -1 / -2 (see cpu_repack.h). */
static int lookup(int32_t src_type, int32_t nb_cols, int32_t inter, int64_t ne0, int64_t n_rows,
                  const void *in, const void *out, const struct variant **v)
{
    *v = find_variant(src_type, nb_cols, inter);
    if (!*v) return -1;
    if (ne0 <= 0 || ne0 % (*v)->blck || n_rows < 0 || n_rows % nb_cols) return -2;
    if (n_rows > 0 && (!in || !out)) return -2;
    return 0;
}

/* Pack (inverse 0: in = source rows, out = packed) or unpack (inverse 1: in = packed, out =
   source rows) every block group of a chunk: block x of the rows of group g <-> block group
   (g, x) at the same offset range (section 3 of the spec). */
static void convert_groups(const struct variant *v, const uint8_t *in, uint8_t *out, int64_t ne0,
                           int64_t n_rows, int inverse)
{
    const int n = v->nb_cols, nseg = segment_count(v);
    const int64_t nb = ne0 / v->blck, row_bytes = nb * v->bytes;
    const uint8_t *src_rows[MAX_COLS];
    uint8_t *dst_rows[MAX_COLS];
    for (int64_t g = 0; g < n_rows / n; g++)
        for (int64_t x = 0; x < nb; x++) {
            for (int r = 0; r < n; r++) {
                const int64_t block = (g * n + r) * row_bytes + x * v->bytes;
                src_rows[r] = in + block;
                dst_rows[r] = out + block;
            }
            const int64_t group = g * n * row_bytes + x * n * v->bytes;
            const uint8_t *p_in = in + group;
            uint8_t *p_out = out + group;
            for (int s = 0; s < nseg; s++) {
                if (inverse) unpack_segment(&v->seg[s], n, p_in, dst_rows);
                else pack_segment(&v->seg[s], n, src_rows, p_out);
                p_in += v->seg[s].len * n;
                p_out += v->seg[s].len * n;
            }
        }
}

static int convert(int32_t src_type, int32_t nb_cols, int32_t inter, const uint8_t *in, uint8_t *out,
                   int64_t ne0, int64_t n_rows, int inverse)
{
    const struct variant *v;
    const int rc = lookup(src_type, nb_cols, inter, ne0, n_rows, in, out, &v);
    if (!rc) convert_groups(v, in, out, ne0, n_rows, inverse);
    return rc;
}

int cr_pack(int32_t src_type, int32_t nb_cols, int32_t inter, const uint8_t *src, uint8_t *dst,
            int64_t ne0, int64_t n_rows)
{
    return convert(src_type, nb_cols, inter, src, dst, ne0, n_rows, 0);
}

int cr_unpack(int32_t src_type, int32_t nb_cols, int32_t inter, const uint8_t *packed,
              uint8_t *dst, int64_t ne0, int64_t n_rows)
{
    return convert(src_type, nb_cols, inter, packed, dst, ne0, n_rows, 1);
}

int cr_dequantize(int32_t src_type, int32_t nb_cols, int32_t inter, const uint8_t *packed,
                  float *dst, int64_t ne0, int64_t n_rows)
{
    const struct variant *v;
    const int rc = lookup(src_type, nb_cols, inter, ne0, n_rows, packed, dst, &v);
    if (rc) return rc;
    const int n = v->nb_cols;
    const int64_t nb = ne0 / v->blck, group_bytes = (int64_t)n * v->bytes;
    for (int64_t g = 0; g < n_rows / n; g++)
        for (int64_t x = 0; x < nb; x++) {
            const uint8_t *p = packed + (g * nb + x) * group_bytes;
            for (int r = 0; r < n; r++) v->dequantize(p, n, v->run, r, dst + (g * n + r) * ne0 + x * v->blck);
        }
    return 0;
}
