/* ik_llama.cpp row-interleaved repack (_R4/_R8/_R16) and its exact inverse.
 *
 * Spec: shared/spec/interleaved.md. Section numbers below refer to it.
 *
 * How the code is organised. Every conversion moves the bits of block b of R source rows into one
 * interleaved block; each is one pair of static block functions, `X_fw` (source rows -> interleaved
 * block) and `X_bw` (its exact inverse), run over the column blocks of a group by BLOCK_LOOPS.
 *
 * Every placement rule of §4 moves codes in runs of four consecutive elements (i = 0..3), so all
 * work is done on 32-bit words holding 4 bytes of one row: Pattern A/B are two masks and a shift
 * per output word; Pattern C, the Q6_K high bits and IQ2_BN are a 4x4 transpose of 2-bit fields in
 * each byte lane; the bit-plane bytes are an 8x8 bit transpose in each byte lane of a high-bit mask;
 * per-sub-block scale bytes are 4x4 byte transposes across the 4 rows. The transposes are their own
 * inverses, which makes each `X_bw` a mirror of `X_fw`. Nothing in the hot path loops over single
 * elements or bits. Q5_0 and Q6_0, whose high bits are packed differently, go through "code words"
 * (the 32 codes of one sub-block, one per byte, c[m] = elements 4m..4m+3), the general form of the
 * same patterns.
 *
 * Byte order: the formats are little-endian and so is every host this is built for (checked below);
 * unaligned words go through memcpy, which compilers turn into plain loads/stores.
 */
#include "interleaved.h"

#include <stddef.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "interleaved.c assumes a little-endian host (the GGUF block formats are little-endian)"
#endif

/* Source block sizes (bytes per block), as in ggml-common.h / ik's ggml-common.h. */
enum {
    QK4_0_BYTES = 2 + 16, QK5_0_BYTES = 2 + 4 + 16, QK6_0_BYTES = 2 + 8 + 16, QK8_0_BYTES = 2 + 32,
    MXFP4_BYTES = 1 + 16, IQ4_NL_BYTES = 2 + 16,
    Q2_K_BYTES = 16 + 64 + 2 + 2, Q3_K_BYTES = 32 + 64 + 12 + 2, Q4_K_BYTES = 2 + 2 + 12 + 128,
    Q5_K_BYTES = 2 + 2 + 12 + 32 + 128, Q6_K_BYTES = 128 + 64 + 16 + 2,
    IQ2_XXS_BYTES = 2 + 64, IQ2_XS_BYTES = 2 + 64 + 8, IQ2_S_BYTES = 2 + 64 + 8 + 8,
    IQ3_XXS_BYTES = 2 + 64 + 32, IQ3_S_BYTES = 2 + 64 + 8 + 32 + 4, IQ4_XS_BYTES = 2 + 2 + 4 + 128,
    IQ2_BN_BYTES = 16, IQ2_K_BYTES = 2 + 2 + 8 + 64, IQ3_K_BYTES = 2 + 2 + 2 + 8 + 64 + 32,
    IQ4_K_BYTES = 2 + 2 + 4 + 8 + 128, IQ5_K_BYTES = 2 + 2 + 4 + 8 + 128 + 32,
    IQ4_KS_BYTES = 8 + 128, IQ5_KS_BYTES = 8 + 128 + 32,
};
_Static_assert(QK4_0_BYTES == 18 && QK5_0_BYTES == 22 && QK6_0_BYTES == 26 && QK8_0_BYTES == 34,
               "wrong legacy block size");
_Static_assert(MXFP4_BYTES == 17 && IQ4_NL_BYTES == 18, "wrong 32-block size");
_Static_assert(Q2_K_BYTES == 84 && Q3_K_BYTES == 110 && Q4_K_BYTES == 144 && Q5_K_BYTES == 176 &&
               Q6_K_BYTES == 210, "wrong K-quant block size");
_Static_assert(IQ2_XXS_BYTES == 66 && IQ2_XS_BYTES == 74 && IQ2_S_BYTES == 82 && IQ3_XXS_BYTES == 98 &&
               IQ3_S_BYTES == 110 && IQ4_XS_BYTES == 136, "wrong i-quant block size");
_Static_assert(IQ2_BN_BYTES == 16 && IQ2_K_BYTES == 76 && IQ3_K_BYTES == 110 && IQ4_K_BYTES == 144 &&
               IQ5_K_BYTES == 176 && IQ4_KS_BYTES == 136 && IQ5_KS_BYTES == 168,
               "wrong IQK block size");

/* ---------------------------------------------------------------------------------------------- */
/* Word access                                                                                    */

static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void or32(uint8_t *p, uint32_t v) { st32(p, ld32(p) | v); }
static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void cp2(uint8_t *d, const uint8_t *s) { memcpy(d, s, 2); }  /* fp16 scale, raw bits */
static inline void cp4(uint8_t *d, const uint8_t *s) { memcpy(d, s, 4); }

#define M1 0x01010101u  /* one bit per code byte */
#define M2 0x03030303u  /* two bits per code byte */
#define M4 0x0F0F0F0Fu  /* one nibble per code byte */

/* ---------------------------------------------------------------------------------------------- */
/* Code words -> interleaved patterns (§4.1) and back; c[m] = codes of elements 4m..4m+3 (Q5_0, Q6_0) */

/* Four 2-bit fields (bits shift..shift+1 of the codes of words w0..w3) into one output word:
   byte i = f(w0)[i] | f(w1)[i] << 2 | f(w2)[i] << 4 | f(w3)[i] << 6. */
static inline uint32_t pack2(const uint32_t *c, int w0, int w1, int w2, int w3, int shift) {
    return ((c[w0] >> shift) & M2) | ((c[w1] >> shift) & M2) << 2 |
           ((c[w2] >> shift) & M2) << 4 | ((c[w3] >> shift) & M2) << 6;
}
static inline void unpack2(uint32_t *c, int w0, int w1, int w2, int w3, int shift, uint32_t x) {
    c[w0] |= (x & M2) << shift;
    c[w1] |= (x >> 2 & M2) << shift;
    c[w2] |= (x >> 4 & M2) << shift;
    c[w3] |= (x >> 6 & M2) << shift;
}

/* Pattern A: 4-bit codes, R = 4, 64-byte slab. */
static inline void pattern_a_put(const uint32_t *c, uint8_t *slab, int k) {
    st32(slab + 4 * k,      (c[0] & M4) | (c[2] & M4) << 4);  /* v[i]    | v[i+8]  << 4 */
    st32(slab + 16 + 4 * k, (c[4] & M4) | (c[6] & M4) << 4);  /* v[i+16] | v[i+24] << 4 */
    st32(slab + 32 + 4 * k, (c[1] & M4) | (c[3] & M4) << 4);  /* v[i+4]  | v[i+12] << 4 */
    st32(slab + 48 + 4 * k, (c[5] & M4) | (c[7] & M4) << 4);  /* v[i+20] | v[i+28] << 4 */
}
static inline void pattern_a_get(uint32_t *c, const uint8_t *slab, int k) {
    static const int lo[4] = {0, 4, 1, 5}, hi[4] = {2, 6, 3, 7};
    for (int q = 0; q < 4; ++q) {
        uint32_t x = ld32(slab + 16 * q + 4 * k);
        c[lo[q]] |= x & M4;
        c[hi[q]] |= x >> 4 & M4;
    }
}

/* Bit-plane bytes: byte i, bit t = bit `bit` of v[i + ORDER[t]]; the tables hold ORDER[t] / 4,
   i.e. the code word (or mask word) that bit t comes from. */
static const uint8_t ORD_Q5K[8] = {0, 2, 1, 3, 4, 6, 5, 7};  /* 0, 8, 4, 12, 16, 24, 20, 28 */
static const uint8_t ORD_IQ5[8] = {0, 2, 4, 6, 1, 3, 5, 7};  /* 0, 8, 16, 24, 4, 12, 20, 28 */
static const uint8_t ORD_Q3K[8] = {0, 1, 2, 3, 4, 5, 6, 7};  /* 0, 4, 8, ..., 28 */
static const uint8_t ORD_Q50[8] = {0, 4, 1, 5, 2, 6, 3, 7};  /* 0, 16, 4, 20, 8, 24, 12, 28 */

static inline uint32_t bitplane_pack(const uint32_t *c, const uint8_t *order, int bit) {
    uint32_t x = 0;
    for (int t = 0; t < 8; ++t) x |= ((c[order[t]] >> bit) & M1) << t;
    return x;
}
static inline void bitplane_unpack(uint32_t *c, const uint8_t *order, int bit, uint32_t x) {
    for (int t = 0; t < 8; ++t) c[order[t]] |= ((x >> t) & M1) << bit;
}

/* ---------------------------------------------------------------------------------------------- */
/* Fast paths: the same patterns computed straight from the source words, several sub-blocks at   */
/* once. Each one is its own inverse or comes with its inverse right below it.                    */

/* Pattern A of a 16-byte run in legacy nibble order (words w0..w3: v[4m+i] = lo(w_m), v[16+4m+i] =
   hi(w_m)). Slab lines: v[i]|v[i+8]<<4, v[i+16]|v[i+24]<<4, v[i+4]|v[i+12]<<4, v[i+20]|v[i+28]<<4. */
static inline void pattern_a_legacy(const uint8_t *q, uint8_t *slab, int k) {
    const uint32_t w0 = ld32(q), w1 = ld32(q + 4), w2 = ld32(q + 8), w3 = ld32(q + 12);
    st32(slab + 4 * k,      (w0 & M4) | (w2 & M4) << 4);
    st32(slab + 16 + 4 * k, (w0 >> 4 & M4) | (w2 & ~M4));
    st32(slab + 32 + 4 * k, (w1 & M4) | (w3 & M4) << 4);
    st32(slab + 48 + 4 * k, (w1 >> 4 & M4) | (w3 & ~M4));
}
static inline void pattern_a_legacy_inv(const uint8_t *slab, int k, uint8_t *q) {
    const uint32_t l0 = ld32(slab + 4 * k), l1 = ld32(slab + 16 + 4 * k);
    const uint32_t l2 = ld32(slab + 32 + 4 * k), l3 = ld32(slab + 48 + 4 * k);
    st32(q,      (l0 & M4) | (l1 & M4) << 4);
    st32(q + 8,  (l0 >> 4 & M4) | (l1 & ~M4));
    st32(q + 4,  (l2 & M4) | (l3 & M4) << 4);
    st32(q + 12, (l2 >> 4 & M4) | (l3 & ~M4));
}

/* Pattern A of the two sub-blocks kept in the low (first) and high (second) nibbles of one 32-byte
   run (K-quant 4-bit order; Q6_K's ql). Code word m of either sub-block is a nibble of word m. */
static const uint8_t PATTERN_A_LINES[4][2] = {{0, 2}, {4, 6}, {1, 3}, {5, 7}};

static inline void pattern_a_nibble_pair(const uint8_t *q, uint8_t *slab_lo, uint8_t *slab_hi, int k) {
    uint32_t w[8];
    for (int m = 0; m < 8; ++m) w[m] = ld32(q + 4 * m);
    for (int l = 0; l < 4; ++l) {
        const uint32_t a = w[PATTERN_A_LINES[l][0]], b = w[PATTERN_A_LINES[l][1]];
        st32(slab_lo + 16 * l + 4 * k, (a & M4) | (b & M4) << 4);
        st32(slab_hi + 16 * l + 4 * k, (a >> 4 & M4) | (b & ~M4));
    }
}
static inline void pattern_a_nibble_pair_inv(const uint8_t *slab_lo, const uint8_t *slab_hi, int k,
                                             uint8_t *q) {
    for (int l = 0; l < 4; ++l) {
        const uint32_t x = ld32(slab_lo + 16 * l + 4 * k), y = ld32(slab_hi + 16 * l + 4 * k);
        st32(q + 4 * PATTERN_A_LINES[l][0], (x & M4) | (y & M4) << 4);
        st32(q + 4 * PATTERN_A_LINES[l][1], (x >> 4 & M4) | (y & ~M4));
    }
}

/* Pattern B (R = 8) of a 16-byte legacy run: lines v[8l+i] | v[8l+i+4] << 4, l = 0..3. */
static inline void pattern_b_legacy(const uint8_t *q, uint8_t *slab, int k) {
    const uint32_t w0 = ld32(q), w1 = ld32(q + 4), w2 = ld32(q + 8), w3 = ld32(q + 12);
    st32(slab + 4 * k,      (w0 & M4) | (w1 & M4) << 4);
    st32(slab + 32 + 4 * k, (w2 & M4) | (w3 & M4) << 4);
    st32(slab + 64 + 4 * k, (w0 >> 4 & M4) | (w1 & ~M4));
    st32(slab + 96 + 4 * k, (w2 >> 4 & M4) | (w3 & ~M4));
}
static inline void pattern_b_legacy_inv(const uint8_t *slab, int k, uint8_t *q) {
    const uint32_t l0 = ld32(slab + 4 * k), l1 = ld32(slab + 32 + 4 * k);
    const uint32_t l2 = ld32(slab + 64 + 4 * k), l3 = ld32(slab + 96 + 4 * k);
    st32(q,      (l0 & M4) | (l2 & M4) << 4);
    st32(q + 4,  (l0 >> 4 & M4) | (l2 & ~M4));
    st32(q + 8,  (l1 & M4) | (l3 & M4) << 4);
    st32(q + 12, (l1 >> 4 & M4) | (l3 & ~M4));
}

/* In each byte lane of r[0..3], transpose the 4x4 matrix of 2-bit fields (word m, field p at bits
   2p): afterwards field m of r[p] = old field p of r[m]. Its own inverse.
   Pattern C, Q6_K's high bits and IQ2_BN are all this transpose: the 2-bit fields of one sub-block
   (or bit pair) sit in the same position of four source words and go to the four fields of one
   output word. */
static inline void transpose_pairs4(uint32_t *r) {
    for (int j = 0; j < 2; ++j) {
        const uint32_t t = (r[j] >> 4 ^ r[j + 2]) & 0x0F0F0F0Fu;
        r[j] ^= t << 4;
        r[j + 2] ^= t;
    }
    for (int j = 0; j < 4; j += 2) {
        const uint32_t t = (r[j] >> 2 ^ r[j + 1]) & 0x33333333u;
        r[j] ^= t << 2;
        r[j + 1] ^= t;
    }
}

/* In each byte lane of r[0..7], transpose the 8x8 bit matrix (word t, bit j): afterwards bit j of
   r[t] = old bit t of r[j]. Its own inverse. The bit-plane bytes are this transpose of a 32-byte
   high-bit mask: with r[t] = mask word ORDER[t]/4, bit ib of r[t] byte i is the extra bit of
   v[i + ORDER[t]] of sub-block ib, so afterwards r[ib] is the bit-plane word of sub-block ib. */
static inline void transpose_bits8(uint32_t *r) {
    for (int j = 0; j < 4; ++j) {
        const uint32_t t = (r[j] >> 4 ^ r[j + 4]) & 0x0F0F0F0Fu;
        r[j] ^= t << 4;
        r[j + 4] ^= t;
    }
    static const int two_apart[4] = {0, 1, 4, 5};
    for (int x = 0; x < 4; ++x) {
        const int j = two_apart[x];
        const uint32_t t = (r[j] >> 2 ^ r[j + 2]) & 0x33333333u;
        r[j] ^= t << 2;
        r[j + 2] ^= t;
    }
    for (int j = 0; j < 8; j += 2) {
        const uint32_t t = (r[j] >> 1 ^ r[j + 1]) & 0x55555555u;
        r[j] ^= t << 1;
        r[j + 1] ^= t;
    }
}

/* Bit-plane words of all 8 sub-blocks of row k from a 32-byte mask (extra bit of element 32ib + j =
   bit ib of mask[j]), written at out + 16ib + 4k; and back. */
static inline void bitplanes_from_mask(const uint8_t *mask, const uint8_t *order, uint8_t *out, int k) {
    uint32_t r[8];
    for (int t = 0; t < 8; ++t) r[t] = ld32(mask + 4 * order[t]);
    transpose_bits8(r);
    for (int ib = 0; ib < 8; ++ib) st32(out + 16 * ib + 4 * k, r[ib]);
}
static inline void bitplanes_to_mask(const uint8_t *in, int k, const uint8_t *order, uint8_t *mask) {
    uint32_t r[8];
    for (int ib = 0; ib < 8; ++ib) r[ib] = ld32(in + 16 * ib + 4 * k);
    transpose_bits8(r);
    for (int t = 0; t < 8; ++t) st32(mask + 4 * order[t], r[t]);
}

/* Pattern C of the 4 sub-blocks of one 32-byte 2-bit run (sub-block p at bits 2p of qs[j]):
   sub-block p goes to slab + 32p. And back. */
static inline void pattern_c_twobit4(const uint8_t *q, uint8_t *slab, int k) {
    for (int half = 0; half < 2; ++half) {
        uint32_t r[4];
        for (int m = 0; m < 4; ++m) r[m] = ld32(q + 16 * half + 4 * m);
        transpose_pairs4(r);
        for (int p = 0; p < 4; ++p) st32(slab + 32 * p + 16 * half + 4 * k, r[p]);
    }
}
static inline void pattern_c_twobit4_inv(const uint8_t *slab, int k, uint8_t *q) {
    for (int half = 0; half < 2; ++half) {
        uint32_t r[4];
        for (int p = 0; p < 4; ++p) r[p] = ld32(slab + 32 * p + 16 * half + 4 * k);
        transpose_pairs4(r);
        for (int m = 0; m < 4; ++m) st32(q + 16 * half + 4 * m, r[m]);
    }
}

/* 4x4 byte transpose: afterwards byte k of x[j] = old byte j of x[k]. Its own inverse. Used where
   each of the 4 rows contributes one byte to every output word (per-sub-block scales). */
static inline void transpose_bytes4(uint32_t *x) {
    const uint32_t t0 = (x[0] & 0x00FF00FFu) | (x[1] & 0x00FF00FFu) << 8;  /* x0[0] x1[0] x0[2] x1[2] */
    const uint32_t t1 = (x[0] >> 8 & 0x00FF00FFu) | (x[1] & 0xFF00FF00u);  /* x0[1] x1[1] x0[3] x1[3] */
    const uint32_t t2 = (x[2] & 0x00FF00FFu) | (x[3] & 0x00FF00FFu) << 8;
    const uint32_t t3 = (x[2] >> 8 & 0x00FF00FFu) | (x[3] & 0xFF00FF00u);
    x[0] = (t0 & 0xFFFFu) | t2 << 16;
    x[1] = (t1 & 0xFFFFu) | t3 << 16;
    x[2] = t0 >> 16 | (t2 & 0xFFFF0000u);
    x[3] = t1 >> 16 | (t3 & 0xFFFF0000u);
}
/* out[4j + k] = byte j of row k's 4-byte field at offset off (rows 0..3 at stride rs); and back. */
static inline void interleave_bytes4(const uint8_t *s, size_t rs, size_t off, uint8_t *out) {
    uint32_t x[4];
    for (int k = 0; k < 4; ++k) x[k] = ld32(s + (size_t)k * rs + off);
    transpose_bytes4(x);
    for (int j = 0; j < 4; ++j) st32(out + 4 * j, x[j]);
}
static inline void deinterleave_bytes4(const uint8_t *in, uint8_t *s, size_t rs, size_t off) {
    uint32_t x[4];
    for (int j = 0; j < 4; ++j) x[j] = ld32(in + 4 * j);
    transpose_bytes4(x);
    for (int k = 0; k < 4; ++k) st32(s + (size_t)k * rs + off, x[k]);
}

/* ---------------------------------------------------------------------------------------------- */
/* Legacy nibble order -> code words and back (Q5_0, Q6_0)                                         */

/* Legacy nibble order, 16-byte run: v[j] = lo(q[j]), v[j+16] = hi(q[j]). */
static inline void legacy4_get(uint32_t *c, const uint8_t *q) {
    for (int m = 0; m < 4; ++m) {
        uint32_t w = ld32(q + 4 * m);
        c[m] = w & M4;
        c[m + 4] = w >> 4 & M4;
    }
}
static inline void legacy4_put(const uint32_t *c, uint8_t *q) {
    for (int m = 0; m < 4; ++m) st32(q + 4 * m, (c[m] & M4) | (c[m + 4] & M4) << 4);
}

/* ---------------------------------------------------------------------------------------------- */
/* Small scalar helpers for scale fields                                                          */

/* Even bits of a 16-bit word compacted into a byte, and the inverse spread. */
static inline uint8_t even_bits(uint32_t x) {
    x &= 0x5555;
    x = (x | x >> 1) & 0x3333;
    x = (x | x >> 2) & 0x0F0F;
    x = (x | x >> 4) & 0x00FF;
    return (uint8_t)x;
}
static inline uint32_t spread_even(uint32_t x) {
    x &= 0xFF;
    x = (x | x << 4) & 0x0F0F;
    x = (x | x << 2) & 0x3333;
    x = (x | x << 1) & 0x5555;
    return x;
}

/* Bit pairs 0-1, 4-5, 8-9, 12-13 of a 16-bit word packed into a byte (IQ4_XS scales_h), and back. */
static inline uint8_t pack_alternate_pairs(uint32_t x) {
    x &= 0x3333;
    x = (x | x >> 2) & 0x0F0F;
    return (uint8_t)(x | x >> 4);
}
static inline uint32_t spread_alternate_pairs(uint32_t x) {
    x = (x | x << 4) & 0x0F0F;
    return (x | x << 2) & 0x3333;
}

/* The 2-bit-per-sub-block "extra" fields of the IQK types (and IQ3_K's scale signs): bit 2ib of a
   row's u16 -> bit ib of out[k], bit 2ib+1 -> bit ib of out[k + 4]. */
static inline void pairbits_put(uint8_t *out, int k, uint16_t x) {
    out[k] = even_bits(x);
    out[k + 4] = even_bits((uint32_t)x >> 1);
}
static inline uint16_t pairbits_get(const uint8_t *in, int k) {
    return (uint16_t)(spread_even(in[k]) | spread_even(in[k + 4]) << 1);
}

/* Sign scrambling (§4.14): bit m of scr(s) = XOR of bits 0..m of s (7 bits). */
static inline uint32_t scr(uint32_t s) {
    s ^= s << 1;
    s ^= s << 2;
    s ^= s << 4;
    return s & 127;
}
static inline uint32_t unscr(uint32_t t) { return (t ^ t << 1) & 127; }

/* Scale-and-sign word: four 7-bit sign indexes + a 4-bit scale -> byte j = scr(s_j) << 1 | scale bit j. */
static inline uint32_t conv_scale_signs(uint32_t a) {
    uint32_t out = 0;
    for (int j = 0; j < 4; ++j)
        out |= (scr(a >> 7 * j & 127) << 1 | (a >> (28 + j) & 1)) << 8 * j;
    return out;
}
static inline uint32_t unconv_scale_signs(uint32_t x) {
    uint32_t a = 0;
    for (int j = 0; j < 4; ++j) {
        uint32_t b = x >> 8 * j & 0xFF;
        a |= unscr(b >> 1) << 7 * j | (b & 1) << (28 + j);
    }
    return a;
}

/* ---------------------------------------------------------------------------------------------- */
/* Block functions. s = block b of row 0, row k at s + k*rs; o = interleaved block b.               */

#define ROW(k) (s + (size_t)(k) * rs)

/* §4.2 Q8_0 -> Q8_0_R8: d's, then stripe c = 4-byte chunk c of rows 0..7. */
static inline void q8_0_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 8; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        for (int c = 0; c < 8; ++c) cp4(o + 16 + 32 * c + 4 * k, r + 2 + 4 * c);
    }
}
static inline void q8_0_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 8; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        for (int c = 0; c < 8; ++c) cp4(r + 2 + 4 * c, o + 16 + 32 * c + 4 * k);
    }
}

/* §4.3 Q4_0 -> Q4_0_R8. */
static inline void q4_0_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 8; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        for (int c = 0; c < 4; ++c) cp4(o + 16 + 32 * c + 4 * k, r + 2 + 4 * c);
    }
}
static inline void q4_0_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 8; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        for (int c = 0; c < 4; ++c) cp4(r + 2 + 4 * c, o + 16 + 32 * c + 4 * k);
    }
}

/* §4.4 MXFP4 -> MXFP4_R8: one E8M0 byte per row, then the quants as Q4_0_R8. */
static inline void mxfp4_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 8; ++k) {
        const uint8_t *r = ROW(k);
        o[k] = r[0];
        for (int c = 0; c < 4; ++c) cp4(o + 8 + 32 * c + 4 * k, r + 1 + 4 * c);
    }
}
static inline void mxfp4_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 8; ++k) {
        uint8_t *r = ROW(k);
        r[0] = o[k];
        for (int c = 0; c < 4; ++c) cp4(r + 1 + 4 * c, o + 8 + 32 * c + 4 * k);
    }
}

/* §4.5 IQ4_NL -> IQ4_NL_R4. */
static inline void iq4_nl_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        pattern_a_legacy(r + 2, o + 8, k);
    }
}
static inline void iq4_nl_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        pattern_a_legacy_inv(o + 8, k, r + 2);
    }
}

/* §4.6 Q5_0 -> Q5_0_R4. Bit 4 of v[4m+i] is bit 4m+i of qh. */
static inline uint32_t nibble_to_bytes(uint32_t x) { return (x & 0xF) * 0x00204081u & M1; }
static inline uint32_t bytes_to_nibble(uint32_t w) { return (w & M1) * 0x10204080u >> 28; }

static inline void q5_0_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        const uint32_t h = ld32(r + 2);
        uint32_t c[8];
        cp2(o + 2 * k, r);
        legacy4_get(c, r + 6);
        for (int m = 0; m < 8; ++m) c[m] |= nibble_to_bytes(h >> 4 * m) << 4;
        st32(o + 8 + 4 * k, bitplane_pack(c, ORD_Q50, 4));
        pattern_a_put(c, o + 24, k);
    }
}
static inline void q5_0_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        uint32_t c[8] = {0}, h = 0;
        cp2(r, o + 2 * k);
        bitplane_unpack(c, ORD_Q50, 4, ld32(o + 8 + 4 * k));
        pattern_a_get(c, o + 24, k);
        for (int m = 0; m < 8; ++m) h |= bytes_to_nibble(c[m] >> 4) << 4 * m;
        st32(r + 2, h);
        legacy4_put(c, r + 6);
    }
}

/* §4.7 Q6_0 -> Q6_0_R4. Bits 4-5 of v[4m+i]: qh[4(m&1) + i] >> (4((m&3)>>1) + 2(m>>2)). */
static inline int q6_0_qh_shift(int m) { return 4 * ((m & 3) >> 1) + 2 * (m >> 2); }

static inline void q6_0_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        uint32_t c[8];
        cp2(o + 2 * k, r);
        legacy4_get(c, r + 10);
        for (int m = 0; m < 8; ++m) c[m] |= (ld32(r + 2 + 4 * (m & 1)) >> q6_0_qh_shift(m) & M2) << 4;
        st32(o + 8 + 4 * k, pack2(c, 0, 1, 2, 3, 4));
        st32(o + 24 + 4 * k, pack2(c, 4, 5, 6, 7, 4));
        pattern_a_put(c, o + 40, k);
    }
}
static inline void q6_0_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        uint32_t c[8] = {0}, qh[2] = {0, 0};
        cp2(r, o + 2 * k);
        unpack2(c, 0, 1, 2, 3, 4, ld32(o + 8 + 4 * k));
        unpack2(c, 4, 5, 6, 7, 4, ld32(o + 24 + 4 * k));
        pattern_a_get(c, o + 40, k);
        for (int m = 0; m < 8; ++m) qh[m & 1] |= (c[m] >> 4 & M2) << q6_0_qh_shift(m);
        st32(r + 2, qh[0]);
        st32(r + 6, qh[1]);
        legacy4_put(c, r + 10);
    }
}

/* §4.8 IQ4_XS -> IQ4_XS_R8. */
static inline void iq4_xs_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 8; ++k) {
        const uint8_t *r = ROW(k);
        const uint32_t sl = ld32(r + 4), sh = ld16(r + 2);
        cp2(o + 2 * k, r);
        /* scales_l: SL[8q + k] = low nibble of sub-block q | low nibble of sub-block q+4 << 4, and
           source byte j holds sub-blocks 2j (low) and 2j+1 (high). */
        const uint32_t q02 = (sl & M4) | (sl >> 16 & M4) << 4;      /* bytes: q = 0, q = 2 */
        const uint32_t q13 = (sl >> 4 & M4) | (sl >> 16 & 0xF0F0u); /* bytes: q = 1, q = 3 */
        o[32 + k] = (uint8_t)q02;
        o[40 + k] = (uint8_t)q13;
        o[48 + k] = (uint8_t)(q02 >> 8);
        o[56 + k] = (uint8_t)(q13 >> 8);
        /* scales_h: SH[8e + k] bits 2d..2d+1 = high bits of sub-block 2d + e. */
        o[16 + k] = pack_alternate_pairs(sh);
        o[24 + k] = pack_alternate_pairs(sh >> 2);
        for (int ib = 0; ib < 8; ++ib) pattern_b_legacy(r + 8 + 16 * ib, o + 64 + 128 * ib, k);
    }
}
static inline void iq4_xs_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 8; ++k) {
        uint8_t *r = ROW(k);
        const uint8_t q0 = o[32 + k], q1 = o[40 + k], q2 = o[48 + k], q3 = o[56 + k];
        cp2(r, o + 2 * k);
        st16(r + 2, (uint16_t)(spread_alternate_pairs(o[16 + k]) | spread_alternate_pairs(o[24 + k]) << 2));
        r[4] = (uint8_t)((q0 & 0xF) | (q1 & 0xF) << 4);
        r[5] = (uint8_t)((q2 & 0xF) | (q3 & 0xF) << 4);
        r[6] = (uint8_t)(q0 >> 4 | (q1 & 0xF0));
        r[7] = (uint8_t)(q2 >> 4 | (q3 & 0xF0));
        for (int ib = 0; ib < 8; ++ib) pattern_b_legacy_inv(o + 64 + 128 * ib, k, r + 8 + 16 * ib);
    }
}

/* Q4_K_R4/Q5_K_R4 header @0..@63 from the rows' d @0, dmin @2, scales[12] @4: d @2k, dmin @8+2k,
   scales_h @16, scales_l @32 (§4.9). With a = scales[0..3], b = scales[4..7], c = scales[8..11] of
   a row, sub-block j < 4 has sc = a[j] & 63, m = b[j] & 63, and sub-block j + 4 has low nibbles
   c[j] and high bits a[j] >> 6, b[j] >> 6; so each output byte is a few masks of one source byte. */
static inline void kquant_header_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    uint32_t lo[4], hi[4], sh[4];
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        const uint32_t a = ld32(r + 4), b = ld32(r + 8);  /* scales[0..3], scales[4..7] */
        cp2(o + 2 * k, r);
        cp2(o + 8 + 2 * k, r + 2);
        lo[k] = (a & M4) | (b & M4) << 4;  /* (sc & 0xF) | (m & 0xF) << 4 of sub-blocks 0..3 */
        hi[k] = ld32(r + 12);              /* the same of sub-blocks 4..7: scales[8..11] as they are */
        sh[k] = (a >> 4 & M2) | (b >> 2 & 0x0C0C0C0Cu)            /* sc >> 4 | (m >> 4) << 2, 0..3 */
              | ((a >> 6 & M2) | (b >> 4 & 0x0C0C0C0Cu)) << 4;    /* 4..7, in the high nibble */
    }
    transpose_bytes4(lo);
    transpose_bytes4(hi);
    transpose_bytes4(sh);
    for (int j = 0; j < 4; ++j) {
        st32(o + 16 + 4 * j, sh[j]);
        st32(o + 32 + 4 * j, lo[j]);
        st32(o + 48 + 4 * j, hi[j]);
    }
}
static inline void kquant_header_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    uint32_t lo[4], hi[4], sh[4];
    for (int j = 0; j < 4; ++j) {
        sh[j] = ld32(o + 16 + 4 * j);
        lo[j] = ld32(o + 32 + 4 * j);
        hi[j] = ld32(o + 48 + 4 * j);
    }
    transpose_bytes4(lo);
    transpose_bytes4(hi);
    transpose_bytes4(sh);
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        cp2(r + 2, o + 8 + 2 * k);
        st32(r + 4, (lo[k] & M4) | (sh[k] & M2) << 4 | (sh[k] >> 4 & M2) << 6);
        st32(r + 8, (lo[k] >> 4 & M4) | (sh[k] >> 2 & M2) << 4 | (sh[k] >> 6 & M2) << 6);
        st32(r + 12, hi[k]);
    }
}

/* §4.9 Q4_K -> Q4_K_R4. */
static inline void q4_k_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    kquant_header_fw(s, rs, o);
    for (int k = 0; k < 4; ++k)
        for (int c = 0; c < 4; ++c)
            pattern_a_nibble_pair(ROW(k) + 16 + 32 * c, o + 64 + 128 * c, o + 128 + 128 * c, k);
}
static inline void q4_k_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    kquant_header_bw(o, s, rs);
    for (int k = 0; k < 4; ++k)
        for (int c = 0; c < 4; ++c)
            pattern_a_nibble_pair_inv(o + 64 + 128 * c, o + 128 + 128 * c, k, ROW(k) + 16 + 32 * c);
}

/* §4.10 Q5_K -> Q5_K_R4. */
static inline void q5_k_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    kquant_header_fw(s, rs, o);
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        bitplanes_from_mask(r + 16, ORD_Q5K, o + 64, k);
        for (int c = 0; c < 4; ++c)
            pattern_a_nibble_pair(r + 48 + 32 * c, o + 192 + 128 * c, o + 256 + 128 * c, k);
    }
}
static inline void q5_k_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    kquant_header_bw(o, s, rs);
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        bitplanes_to_mask(o + 64, k, ORD_Q5K, r + 16);
        for (int c = 0; c < 4; ++c)
            pattern_a_nibble_pair_inv(o + 192 + 128 * c, o + 256 + 128 * c, k, r + 48 + 32 * c);
    }
}

/* §4.11 Q6_K -> Q6_K_R4. Sub-block ib = 4h + p: low nibble of ql[64h + 32(p&1) + j] (p < 2) or high
   nibble (p >= 2); bits 4-5 = bits 2p..2p+1 of qh[32h + j]. Scales: o[8 + 4j + k] = scales[j]. */
/* Q6_K high bits: u(v[4m+i]) of sub-block 4h+p is field p of qh word m of half h; the first output
   word of a sub-block takes words 0, 2, 1, 3, the second 4, 6, 5, 7. */
static const uint8_t Q6_K_HIGH_WORDS[2][4] = {{0, 2, 1, 3}, {4, 6, 5, 7}};

static inline void q6_k_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r + 208);
        for (int h = 0; h < 2; ++h) {
            /* ql[64h + 32pp ..]: low nibbles = sub-block 4h + pp, high nibbles = 4h + pp + 2 */
            for (int pp = 0; pp < 2; ++pp)
                pattern_a_nibble_pair(r + 64 * h + 32 * pp, o + 328 + 64 * (4 * h + pp),
                                      o + 328 + 64 * (4 * h + pp + 2), k);
            for (int half = 0; half < 2; ++half) {
                uint32_t w[4];
                for (int x = 0; x < 4; ++x) w[x] = ld32(r + 128 + 32 * h + 4 * Q6_K_HIGH_WORDS[half][x]);
                transpose_pairs4(w);
                for (int p = 0; p < 4; ++p) st32(o + 72 + 32 * (4 * h + p) + 16 * half + 4 * k, w[p]);
            }
        }
    }
    for (int j = 0; j < 16; j += 4) interleave_bytes4(s, rs, 192 + j, o + 8 + 4 * j);  /* scales */
}
static inline void q6_k_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r + 208, o + 2 * k);
        for (int h = 0; h < 2; ++h) {
            for (int pp = 0; pp < 2; ++pp)
                pattern_a_nibble_pair_inv(o + 328 + 64 * (4 * h + pp), o + 328 + 64 * (4 * h + pp + 2), k,
                                          r + 64 * h + 32 * pp);
            for (int half = 0; half < 2; ++half) {
                uint32_t w[4];
                for (int p = 0; p < 4; ++p) w[p] = ld32(o + 72 + 32 * (4 * h + p) + 16 * half + 4 * k);
                transpose_pairs4(w);
                for (int x = 0; x < 4; ++x) st32(r + 128 + 32 * h + 4 * Q6_K_HIGH_WORDS[half][x], w[x]);
            }
        }
    }
    for (int j = 0; j < 16; j += 4) deinterleave_bytes4(o + 8 + 4 * j, s, rs, 192 + j);
}

/* §4.12 Q2_K -> Q2_K_R4. Scales: o[16 + 4j + k] = scales[j]. */
static inline void q2_k_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r + 80);
        cp2(o + 8 + 2 * k, r + 82);
        for (int h = 0; h < 2; ++h) pattern_c_twobit4(r + 16 + 32 * h, o + 80 + 128 * h, k);
    }
    for (int j = 0; j < 16; j += 4) interleave_bytes4(s, rs, j, o + 16 + 4 * j);  /* scales */
}
static inline void q2_k_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r + 80, o + 2 * k);
        cp2(r + 82, o + 8 + 2 * k);
        for (int h = 0; h < 2; ++h) pattern_c_twobit4_inv(o + 80 + 128 * h, k, r + 16 + 32 * h);
    }
    for (int j = 0; j < 16; j += 4) deinterleave_bytes4(o + 16 + 4 * j, s, rs, j);
}

/* §4.12 Q3_K -> Q3_K_R4. Scales: the nibble + 2 bits rule with n = 8(j/2) + 4(j%2) + k turns out to keep the source
   scale bytes whole: SL[4j + k] = scales[j] (j < 8) and SH[4q + k] = scales[8 + q]. */
static inline void q3_k_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r + 108);
        bitplanes_from_mask(r, ORD_Q3K, o + 56, k);
        for (int h = 0; h < 2; ++h) pattern_c_twobit4(r + 32 + 32 * h, o + 184 + 128 * h, k);
    }
    interleave_bytes4(s, rs, 104, o + 8);
    interleave_bytes4(s, rs, 96, o + 24);
    interleave_bytes4(s, rs, 100, o + 40);
}
static inline void q3_k_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r + 108, o + 2 * k);
        bitplanes_to_mask(o + 56, k, ORD_Q3K, r);
        for (int h = 0; h < 2; ++h) pattern_c_twobit4_inv(o + 184 + 128 * h, k, r + 32 + 32 * h);
    }
    deinterleave_bytes4(o + 8, s, rs, 104);
    deinterleave_bytes4(o + 24, s, rs, 96);
    deinterleave_bytes4(o + 40, s, rs, 100);
}

/* §4.13 IQK types. Half-block scale nibbles: first half at n = 8ib + k, second at n = 8ib + 4 + k,
   sl[n % 32] |= nib << 4(n / 32). */
static inline void halfnib_put(uint8_t *sl, int n, int nib) { sl[n & 31] |= (uint8_t)(nib << 4 * (n >> 5)); }
static inline int halfnib_get(const uint8_t *sl, int n) { return sl[n & 31] >> 4 * (n >> 5) & 0xF; }

/* IQ4_K/IQ5_K header: d @2k, extra @8, scales_h @16, scales_l @32 from rows' d @0, extra @2,
   scales_h[4] @4, scales_l[8] @8. */
static inline void iqk_header_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    uint8_t ex[8] = {0}, sh[16] = {0}, sl[32] = {0};
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        pairbits_put(ex, k, ld16(r + 2));
        for (int ib = 0; ib < 8; ++ib) {
            const int n1 = 8 * ib + k, n2 = n1 + 4;
            const int x = r[4 + ib / 2] >> 4 * (ib % 2);
            halfnib_put(sl, n1, r[8 + ib] & 0xF);
            halfnib_put(sl, n2, r[8 + ib] >> 4);
            sh[n1 & 15] |= (uint8_t)((x & 3) << 2 * (n1 >> 4));
            sh[n2 & 15] |= (uint8_t)((x >> 2 & 3) << 2 * (n2 >> 4));
        }
    }
    memcpy(o + 8, ex, 8);
    memcpy(o + 16, sh, 16);
    memcpy(o + 32, sl, 32);
}
static inline void iqk_header_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        st16(r + 2, pairbits_get(o + 8, k));
        memset(r + 4, 0, 4);
        for (int ib = 0; ib < 8; ++ib) {
            const int n1 = 8 * ib + k, n2 = n1 + 4;
            const int h1 = o[16 + (n1 & 15)] >> 2 * (n1 >> 4) & 3;
            const int h2 = o[16 + (n2 & 15)] >> 2 * (n2 >> 4) & 3;
            r[8 + ib] = (uint8_t)(halfnib_get(o + 32, n1) | halfnib_get(o + 32, n2) << 4);
            r[4 + ib / 2] |= (uint8_t)((h1 | h2 << 2) << 4 * (ib % 2));
        }
    }
}

static inline void iq4_k_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    iqk_header_fw(s, rs, o);
    for (int k = 0; k < 4; ++k)
        for (int ib = 0; ib < 8; ++ib) pattern_a_legacy(ROW(k) + 16 + 16 * ib, o + 64 + 64 * ib, k);
}
static inline void iq4_k_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    iqk_header_bw(o, s, rs);
    for (int k = 0; k < 4; ++k)
        for (int ib = 0; ib < 8; ++ib) pattern_a_legacy_inv(o + 64 + 64 * ib, k, ROW(k) + 16 + 16 * ib);
}

static inline void iq5_k_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    iqk_header_fw(s, rs, o);
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        for (int c = 0; c < 4; ++c)
            pattern_a_nibble_pair(r + 16 + 32 * c, o + 64 + 128 * c, o + 128 + 128 * c, k);
        bitplanes_from_mask(r + 144, ORD_IQ5, o + 576, k);
    }
}
static inline void iq5_k_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    iqk_header_bw(o, s, rs);
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        for (int c = 0; c < 4; ++c)
            pattern_a_nibble_pair_inv(o + 64 + 128 * c, o + 128 + 128 * c, k, r + 16 + 32 * c);
        bitplanes_to_mask(o + 576, k, ORD_IQ5, r + 144);
    }
}

static inline void iq2_k_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    uint8_t ex[8] = {0}, sl[32] = {0};
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        pairbits_put(ex, k, ld16(r + 2));
        for (int ib = 0; ib < 8; ++ib) {
            halfnib_put(sl, 8 * ib + k, r[4 + ib] & 0xF);
            halfnib_put(sl, 8 * ib + 4 + k, r[4 + ib] >> 4);
        }
        for (int h = 0; h < 2; ++h) pattern_c_twobit4(r + 12 + 32 * h, o + 48 + 128 * h, k);
    }
    memcpy(o + 8, ex, 8);
    memcpy(o + 16, sl, 32);
}
static inline void iq2_k_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        st16(r + 2, pairbits_get(o + 8, k));
        for (int ib = 0; ib < 8; ++ib)
            r[4 + ib] = (uint8_t)(halfnib_get(o + 16, 8 * ib + k) | halfnib_get(o + 16, 8 * ib + 4 + k) << 4);
        for (int h = 0; h < 2; ++h) pattern_c_twobit4_inv(o + 48 + 128 * h, k, r + 12 + 32 * h);
    }
}

static inline void iq3_k_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    uint8_t ex[8] = {0}, sh[8] = {0}, sl[32] = {0};
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        pairbits_put(ex, k, ld16(r + 2));
        pairbits_put(sh, k, ld16(r + 4));  /* scale signs: bit 2ib / 2ib+1 -> sh[k] / sh[k+4] bit ib */
        for (int ib = 0; ib < 8; ++ib) {
            halfnib_put(sl, 8 * ib + k, r[6 + ib] & 0xF);
            halfnib_put(sl, 8 * ib + 4 + k, r[6 + ib] >> 4);
        }
        for (int h = 0; h < 2; ++h) pattern_c_twobit4(r + 14 + 32 * h, o + 56 + 128 * h, k);
        bitplanes_from_mask(r + 78, ORD_Q3K, o + 312, k);
    }
    memcpy(o + 8, ex, 8);
    memcpy(o + 16, sh, 8);
    memcpy(o + 24, sl, 32);
}
static inline void iq3_k_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        st16(r + 2, pairbits_get(o + 8, k));
        st16(r + 4, pairbits_get(o + 16, k));
        for (int ib = 0; ib < 8; ++ib)
            r[6 + ib] = (uint8_t)(halfnib_get(o + 24, 8 * ib + k) | halfnib_get(o + 24, 8 * ib + 4 + k) << 4);
        for (int h = 0; h < 2; ++h) pattern_c_twobit4_inv(o + 56 + 128 * h, k, r + 14 + 32 * h);
        bitplanes_to_mask(o + 312, k, ORD_Q3K, r + 78);
    }
}

/* IQ4_KS / IQ5_KS blocks (the f32 row scales are the group header, handled by the driver). */
static inline void iq4_ks_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    interleave_bytes4(s, rs, 0, o);  /* scales: o[4ib + k] = scales[ib] */
    interleave_bytes4(s, rs, 4, o + 16);
    for (int k = 0; k < 4; ++k)
        for (int ib = 0; ib < 8; ++ib) pattern_a_legacy(ROW(k) + 8 + 16 * ib, o + 32 + 64 * ib, k);
}
static inline void iq4_ks_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    deinterleave_bytes4(o, s, rs, 0);
    deinterleave_bytes4(o + 16, s, rs, 4);
    for (int k = 0; k < 4; ++k)
        for (int ib = 0; ib < 8; ++ib) pattern_a_legacy_inv(o + 32 + 64 * ib, k, ROW(k) + 8 + 16 * ib);
}

static inline void iq5_ks_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    interleave_bytes4(s, rs, 0, o);
    interleave_bytes4(s, rs, 4, o + 16);
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        for (int c = 0; c < 4; ++c)
            pattern_a_nibble_pair(r + 8 + 32 * c, o + 32 + 128 * c, o + 96 + 128 * c, k);
        bitplanes_from_mask(r + 136, ORD_IQ5, o + 544, k);
    }
}
static inline void iq5_ks_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    deinterleave_bytes4(o, s, rs, 0);
    deinterleave_bytes4(o + 16, s, rs, 4);
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        for (int c = 0; c < 4; ++c)
            pattern_a_nibble_pair_inv(o + 32 + 128 * c, o + 96 + 128 * c, k, r + 8 + 32 * c);
        bitplanes_to_mask(o + 544, k, ORD_IQ5, r + 136);
    }
}

/* §4.15 IQ2_BN -> IQ2_BN_R4 (64 columns per block; row scales are the group header). Output byte
   16l + 4k + i = sum_m ((q[i + 4m] >> 2l) & 3) << 2m: word m of the block is "code word" m. */
static inline void iq2_bn_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        uint32_t w[4] = {ld32(r), ld32(r + 4), ld32(r + 8), ld32(r + 12)};
        transpose_pairs4(w);
        for (int l = 0; l < 4; ++l) st32(o + 16 * l + 4 * k, w[l]);
    }
}
static inline void iq2_bn_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        uint32_t w[4];
        for (int l = 0; l < 4; ++l) w[l] = ld32(o + 16 * l + 4 * k);
        transpose_pairs4(w);
        for (int m = 0; m < 4; ++m) st32(r + 4 * m, w[m]);
    }
}

/* §4.14 IQ2_XXS -> IQ2_XXS_R4. */
static inline void iq2_xxs_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        for (int ib = 0; ib < 8; ++ib) {
            st32(o + 8 + 4 * (4 * ib + k), conv_scale_signs(ld32(r + 2 + 8 * ib + 4)));
            cp4(o + 136 + 16 * ib + 4 * k, r + 2 + 8 * ib);
        }
    }
}
static inline void iq2_xxs_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            st32(r + 2 + 8 * ib + 4, unconv_scale_signs(ld32(o + 8 + 4 * (4 * ib + k))));
            cp4(r + 2 + 8 * ib, o + 136 + 16 * ib + 4 * k);
        }
    }
}

/* §4.14 IQ3_XXS -> IQ3_XXS_R4. */
static inline void iq3_xxs_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        for (int ib = 0; ib < 8; ++ib) {
            st32(o + 8 + 4 * (4 * ib + k), conv_scale_signs(ld32(r + 66 + 4 * ib)));
            memcpy(o + 136 + 32 * ib + 8 * k, r + 2 + 8 * ib, 8);
        }
    }
}
static inline void iq3_xxs_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            st32(r + 66 + 4 * ib, unconv_scale_signs(ld32(o + 8 + 4 * (4 * ib + k))));
            memcpy(r + 2 + 8 * ib, o + 136 + 32 * ib + 8 * k, 8);
        }
    }
}

/* §4.14 IQ2_XS -> IQ2_XS_R4: 9-bit grid index kept, 7-bit sign index scrambled. */
static inline void iq2_xs_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        for (int ib = 0; ib < 8; ++ib) {
            for (int i = 0; i < 4; ++i) {
                const uint32_t w = ld16(r + 2 + 2 * (4 * ib + i));
                st16(o + 8 + 2 * (16 * ib + 4 * k + i), (uint16_t)((w & 511) | scr(w >> 9) << 9));
            }
            o[264 + 4 * ib + k] = r[66 + ib];
        }
    }
}
static inline void iq2_xs_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            for (int i = 0; i < 4; ++i) {
                const uint32_t w = ld16(o + 8 + 2 * (16 * ib + 4 * k + i));
                st16(r + 2 + 2 * (4 * ib + i), (uint16_t)((w & 511) | unscr(w >> 9) << 9));
            }
            r[66 + ib] = o[264 + 4 * ib + k];
        }
    }
}

/* §4.14 IQ2_S -> IQ2_S_R4 (byte moves only). */
static inline void iq2_s_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        for (int ib = 0; ib < 8; ++ib) {
            cp4(o + 8 + 16 * ib + 4 * k, r + 2 + 4 * ib);
            o[136 + 4 * ib + k] = r[66 + ib];
            cp4(o + 168 + 16 * ib + 4 * k, r + 2 + 32 + 4 * ib);
            o[296 + 4 * ib + k] = r[74 + ib];
        }
    }
}
static inline void iq2_s_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            cp4(r + 2 + 4 * ib, o + 8 + 16 * ib + 4 * k);
            r[66 + ib] = o[136 + 4 * ib + k];
            cp4(r + 2 + 32 + 4 * ib, o + 168 + 16 * ib + 4 * k);
            r[74 + ib] = o[296 + 4 * ib + k];
        }
    }
}

/* §4.14 IQ3_S sign bytes: output byte i, bits 2m / 2m+1 = bits i / 4+i of sign byte m (S = the 4
   sign bytes of a sub-block as one word). */
static inline uint8_t iq3_s_signs_pack(uint32_t S, int i) {
    uint32_t x = S >> i & 0x11111111u;  /* bit i of byte m at 8m, bit 4+i at 8m+4 */
    x = (x | x >> 3) & M2;              /* byte m = b_i | b_{4+i} << 1 */
    x = (x | x >> 6) & 0x000F000Fu;
    x = (x | x >> 12) & 0xFFu;
    return (uint8_t)x;
}
static inline uint32_t iq3_s_signs_unpack(uint32_t y, int i) {
    y = (y | y << 12) & 0x000F000Fu;
    y = (y | y << 6) & M2;
    return ((y & M1) | (y & 0x02020202u) << 3) << i;
}
static inline void iq3_s_fw(const uint8_t *s, size_t rs, uint8_t *o) {
    uint8_t sc[16] = {0};
    for (int k = 0; k < 4; ++k) {
        const uint8_t *r = ROW(k);
        cp2(o + 2 * k, r);
        for (int ib = 0; ib < 8; ++ib) {
            const uint32_t S = ld32(r + 74 + 4 * ib);
            for (int i = 0; i < 4; ++i) {
                o[8 + 32 * ib + k + 8 * i] = r[2 + 8 * ib + i];
                o[8 + 32 * ib + k + 8 * i + 4] = r[2 + 8 * ib + i + 4];
                o[296 + 16 * ib + 4 * k + i] = iq3_s_signs_pack(S, i);
            }
            o[264 + 4 * ib + k] = r[66 + ib];
        }
        for (int ib = 0; ib < 4; ++ib) {
            const int n1 = 8 * ib + k, n2 = n1 + 4;
            sc[n1 & 15] |= (uint8_t)((r[106 + ib] & 0xF) << 4 * (n1 >> 4));
            sc[n2 & 15] |= (uint8_t)((r[106 + ib] >> 4) << 4 * (n2 >> 4));
        }
    }
    memcpy(o + 424, sc, 16);
}
static inline void iq3_s_bw(const uint8_t *o, uint8_t *s, size_t rs) {
    for (int k = 0; k < 4; ++k) {
        uint8_t *r = ROW(k);
        cp2(r, o + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t S = 0;
            for (int i = 0; i < 4; ++i) {
                r[2 + 8 * ib + i] = o[8 + 32 * ib + k + 8 * i];
                r[2 + 8 * ib + i + 4] = o[8 + 32 * ib + k + 8 * i + 4];
                S |= iq3_s_signs_unpack(o[296 + 16 * ib + 4 * k + i], i);
            }
            st32(r + 74 + 4 * ib, S);
            r[66 + ib] = o[264 + 4 * ib + k];
        }
        for (int ib = 0; ib < 4; ++ib) {
            const int n1 = 8 * ib + k, n2 = n1 + 4;
            r[106 + ib] = (uint8_t)((o[424 + (n1 & 15)] >> 4 * (n1 >> 4) & 0xF) |
                                    (o[424 + (n2 & 15)] >> 4 * (n2 >> 4) & 0xF) << 4);
        }
    }
}

#undef ROW

/* ---------------------------------------------------------------------------------------------- */
/* Conversion table and drivers                                                                   */

typedef void (*rows_fw_fn)(const uint8_t *s, size_t rs, uint8_t *o, int64_t nb);
typedef void (*rows_bw_fn)(const uint8_t *o, uint8_t *s, size_t rs, int64_t nb);

/* The R source rows are R separate read streams; touching each one a few blocks ahead keeps them
   in flight (the hardware prefetcher alone leaves the R-row gather memory-latency bound). Prefetching
   past the end of the tensor is harmless: prefetch never faults. */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 256  /* bytes ahead in each row (measured: 256 beat 0, 1024 and 4096) */
#endif
static inline void prefetch_rows(const uint8_t *p, size_t rs, int rows, int ts) {
#if defined(__GNUC__)
    for (int k = 0; k < rows; ++k)
        for (int off = 0; off < ts; off += 64) __builtin_prefetch(p + (size_t)k * rs + PREFETCH_AHEAD + off);
#else
    (void)p; (void)rs; (void)rows; (void)ts;
#endif
}

/* One loop over the column blocks of a group per conversion, so the block function is inlined. */
#define BLOCK_LOOPS(name, R, TS)                                                                  \
    static void name##_fw_rows(const uint8_t *s, size_t rs, uint8_t *o, int64_t nb) {             \
        for (int64_t b = 0; b < nb; ++b) {                                                        \
            prefetch_rows(s + (size_t)b * (TS), rs, R, TS);                                      \
            name##_fw(s + (size_t)b * (TS), rs, o + (size_t)b * (R) * (TS));                      \
        }                                                                                         \
    }                                                                                             \
    static void name##_bw_rows(const uint8_t *o, uint8_t *s, size_t rs, int64_t nb) {             \
        for (int64_t b = 0; b < nb; ++b) name##_bw(o + (size_t)b * (R) * (TS), s + (size_t)b * (TS), rs); \
    }

BLOCK_LOOPS(q4_0, 8, QK4_0_BYTES)
BLOCK_LOOPS(q5_0, 4, QK5_0_BYTES)
BLOCK_LOOPS(q6_0, 4, QK6_0_BYTES)
BLOCK_LOOPS(q8_0, 8, QK8_0_BYTES)
BLOCK_LOOPS(q2_k, 4, Q2_K_BYTES)
BLOCK_LOOPS(q3_k, 4, Q3_K_BYTES)
BLOCK_LOOPS(q4_k, 4, Q4_K_BYTES)
BLOCK_LOOPS(q5_k, 4, Q5_K_BYTES)
BLOCK_LOOPS(q6_k, 4, Q6_K_BYTES)
BLOCK_LOOPS(iq2_xxs, 4, IQ2_XXS_BYTES)
BLOCK_LOOPS(iq2_xs, 4, IQ2_XS_BYTES)
BLOCK_LOOPS(iq2_s, 4, IQ2_S_BYTES)
BLOCK_LOOPS(iq3_xxs, 4, IQ3_XXS_BYTES)
BLOCK_LOOPS(iq3_s, 4, IQ3_S_BYTES)
BLOCK_LOOPS(iq4_nl, 4, IQ4_NL_BYTES)
BLOCK_LOOPS(iq4_xs, 8, IQ4_XS_BYTES)
BLOCK_LOOPS(iq2_bn, 4, IQ2_BN_BYTES)
BLOCK_LOOPS(iq2_k, 4, IQ2_K_BYTES)
BLOCK_LOOPS(iq3_k, 4, IQ3_K_BYTES)
BLOCK_LOOPS(iq4_k, 4, IQ4_K_BYTES)
BLOCK_LOOPS(iq5_k, 4, IQ5_K_BYTES)
BLOCK_LOOPS(iq4_ks, 4, IQ4_KS_BYTES)
BLOCK_LOOPS(iq5_ks, 4, IQ5_KS_BYTES)
BLOCK_LOOPS(mxfp4, 8, MXFP4_BYTES)

enum layout_kind { BLOCKED, Q8_KV_ROWS, BF16_PAIRS };

struct conversion {
    int32_t src_type, dst_type;
    int rows;       /* R */
    int blck;       /* elements per block (columns ne0 must be a multiple) */
    int type_size;  /* bytes per block */
    int row_meta;   /* bytes in front of each source row (f32 row scale), 0 if none */
    enum layout_kind kind;
    rows_fw_fn fw;
    rows_bw_fn bw;
};

#define BLOCKED_CONV(src, dst, R, blck, ts, meta, name) \
    {src, dst, R, blck, ts, meta, BLOCKED, name##_fw_rows, name##_bw_rows}

/* §3; ids are ik's enum ggml_type values. */
static const struct conversion CONVERSIONS[] = {
    BLOCKED_CONV(2, 202, 8, 32, QK4_0_BYTES, 0, q4_0),
    BLOCKED_CONV(6, 206, 4, 32, QK5_0_BYTES, 0, q5_0),
    BLOCKED_CONV(133, 233, 4, 32, QK6_0_BYTES, 0, q6_0),
    BLOCKED_CONV(8, 208, 8, 32, QK8_0_BYTES, 0, q8_0),
    BLOCKED_CONV(10, 210, 4, 256, Q2_K_BYTES, 0, q2_k),
    BLOCKED_CONV(11, 211, 4, 256, Q3_K_BYTES, 0, q3_k),
    BLOCKED_CONV(12, 212, 4, 256, Q4_K_BYTES, 0, q4_k),
    BLOCKED_CONV(13, 213, 4, 256, Q5_K_BYTES, 0, q5_k),
    BLOCKED_CONV(14, 214, 4, 256, Q6_K_BYTES, 0, q6_k),
    BLOCKED_CONV(16, 216, 4, 256, IQ2_XXS_BYTES, 0, iq2_xxs),
    BLOCKED_CONV(17, 217, 4, 256, IQ2_XS_BYTES, 0, iq2_xs),
    BLOCKED_CONV(22, 222, 4, 256, IQ2_S_BYTES, 0, iq2_s),
    BLOCKED_CONV(18, 218, 4, 256, IQ3_XXS_BYTES, 0, iq3_xxs),
    BLOCKED_CONV(21, 221, 4, 256, IQ3_S_BYTES, 0, iq3_s),
    BLOCKED_CONV(20, 220, 4, 32, IQ4_NL_BYTES, 0, iq4_nl),
    BLOCKED_CONV(23, 223, 8, 256, IQ4_XS_BYTES, 0, iq4_xs),
    BLOCKED_CONV(135, 335, 4, 64, IQ2_BN_BYTES, 4, iq2_bn),
    BLOCKED_CONV(137, 337, 4, 256, IQ2_K_BYTES, 0, iq2_k),
    BLOCKED_CONV(138, 338, 4, 256, IQ3_K_BYTES, 0, iq3_k),
    BLOCKED_CONV(139, 339, 4, 256, IQ4_K_BYTES, 0, iq4_k),
    BLOCKED_CONV(140, 340, 4, 256, IQ5_K_BYTES, 0, iq5_k),
    BLOCKED_CONV(144, 344, 4, 256, IQ4_KS_BYTES, 4, iq4_ks),
    BLOCKED_CONV(152, 352, 4, 256, IQ5_KS_BYTES, 4, iq5_ks),
    BLOCKED_CONV(39, 353, 8, 32, MXFP4_BYTES, 0, mxfp4),
    /* Q8_KV: row = f32 d, i32 sum, int8 q[ne0]; ne0 % 32 as ggml's row size requires. */
    {151, 398, 8, 32, 32, 8, Q8_KV_ROWS, 0, 0},
    /* BF16: "block" = one column pair (4 bytes per row). */
    {30, 230, 16, 2, 4, 0, BF16_PAIRS, 0, 0},
};

static const struct conversion *find_conversion(int32_t src_type) {
    for (size_t i = 0; i < sizeof CONVERSIONS / sizeof CONVERSIONS[0]; ++i)
        if (CONVERSIONS[i].src_type == src_type) return &CONVERSIONS[i];
    return 0;
}

int32_t il_target_type(int32_t src_type) {
    const struct conversion *cv = find_conversion(src_type);
    return cv ? cv->dst_type : 0;
}

int32_t il_rows_per_group(int32_t src_type) {
    const struct conversion *cv = find_conversion(src_type);
    return cv ? cv->rows : 0;
}

int32_t il_source_type(int32_t target_type) {
    for (size_t i = 0; i < sizeof CONVERSIONS / sizeof CONVERSIONS[0]; ++i)
        if (CONVERSIONS[i].dst_type == target_type) return CONVERSIONS[i].src_type;
    return 0;
}

/* Largest ne0 accepted: keeps every byte count far inside int64/size_t. */
#define MAX_NE0 ((int64_t)1 << 40)

static int ne0_ok(const struct conversion *cv, int64_t ne0) {
    return ne0 > 0 && ne0 <= MAX_NE0 && ne0 % cv->blck == 0;
}

static int64_t source_row_bytes(const struct conversion *cv, int64_t ne0) {
    return cv->row_meta + ne0 / cv->blck * cv->type_size;
}

static int64_t target_group_bytes(const struct conversion *cv, int64_t ne0) {
    if (cv->kind == Q8_KV_ROWS) return (int64_t)cv->rows * (4 + ne0);
    return (int64_t)cv->rows * source_row_bytes(cv, ne0);
}

int64_t il_source_row_bytes(int32_t src_type, int64_t ne0) {
    const struct conversion *cv = find_conversion(src_type);
    return cv && ne0_ok(cv, ne0) ? source_row_bytes(cv, ne0) : 0;
}

int64_t il_target_group_bytes(int32_t src_type, int64_t ne0) {
    const struct conversion *cv = find_conversion(src_type);
    return cv && ne0_ok(cv, ne0) ? target_group_bytes(cv, ne0) : 0;
}

/* §4.16 Q8_KV group: d's of the 8 rows (32 B), then 4-byte chunk c of rows 0..7 at 32 + 32c. */
static void q8_kv_group_fw(const uint8_t *s, size_t rs, uint8_t *o, int64_t ne0) {
    for (int k = 0; k < 8; ++k) {
        const uint8_t *r = s + (size_t)k * rs;
        cp4(o + 4 * k, r);
        for (int64_t c = 0; c < ne0 / 4; ++c) cp4(o + 32 + 32 * c + 4 * k, r + 8 + 4 * c);
    }
}
static void q8_kv_group_bw(const uint8_t *o, uint8_t *s, size_t rs, int64_t ne0) {
    for (int k = 0; k < 8; ++k) {
        uint8_t *r = s + (size_t)k * rs;
        int32_t sum = 0;  /* |sum| <= 128 * ne0 fits easily for any real row; wraps like ik's int */
        cp4(r, o + 4 * k);
        for (int64_t c = 0; c < ne0 / 4; ++c) {
            cp4(r + 8 + 4 * c, o + 32 + 32 * c + 4 * k);
            for (int i = 0; i < 4; ++i) sum = (int32_t)((uint32_t)sum + (uint32_t)(int32_t)(int8_t)r[8 + 4 * c + i]);
        }
        memcpy(r + 4, &sum, 4);
    }
}

/* §4.17 BF16 group: 4 bytes (column pair p) of rows 0..15 at 64p. */
static void bf16_group_fw(const uint8_t *s, size_t rs, uint8_t *o, int64_t ne0) {
    for (int64_t p = 0; p < ne0 / 2; ++p)
        for (int k = 0; k < 16; ++k) cp4(o + 64 * p + 4 * k, s + (size_t)k * rs + 4 * p);
}
static void bf16_group_bw(const uint8_t *o, uint8_t *s, size_t rs, int64_t ne0) {
    for (int64_t p = 0; p < ne0 / 2; ++p)
        for (int k = 0; k < 16; ++k) cp4(s + (size_t)k * rs + 4 * p, o + 64 * p + 4 * k);
}

static int run(int32_t src_type, const uint8_t *in, uint8_t *out, int64_t ne0, int64_t group_begin,
               int64_t group_end, int inverse) {
    const struct conversion *cv = find_conversion(src_type);
    if (!cv) return -1;
    if (!ne0_ok(cv, ne0) || group_begin < 0 || group_end < group_begin) return -2;
    if (group_end == group_begin) return 0;
    if (!in || !out) return -2;

    const int R = cv->rows;
    const size_t rs = (size_t)source_row_bytes(cv, ne0);       /* source row stride */
    const size_t src_group = (size_t)R * rs;
    const size_t dst_group = (size_t)target_group_bytes(cv, ne0);
    const int64_t nb = ne0 / cv->blck;
    const uint8_t *src = inverse ? 0 : in;
    const uint8_t *packed = inverse ? in : 0;

    for (int64_t g = group_begin; g < group_end; ++g) {
        if (!inverse) {
            const uint8_t *s = src + (size_t)g * src_group;
            uint8_t *o = out + (size_t)g * dst_group;
            switch (cv->kind) {
            case BLOCKED:
                /* Row-scale types: a header of the R raw f32 row scales, then the blocks. */
                for (int k = 0; k < R && cv->row_meta; ++k) cp4(o + 4 * k, s + (size_t)k * rs);
                cv->fw(s + cv->row_meta, rs, o + (size_t)R * cv->row_meta, nb);
                break;
            case Q8_KV_ROWS: q8_kv_group_fw(s, rs, o, ne0); break;
            case BF16_PAIRS: bf16_group_fw(s, rs, o, ne0); break;
            }
        } else {
            const uint8_t *o = packed + (size_t)g * dst_group;
            uint8_t *s = out + (size_t)g * src_group;
            switch (cv->kind) {
            case BLOCKED:
                for (int k = 0; k < R && cv->row_meta; ++k) cp4(s + (size_t)k * rs, o + 4 * k);
                cv->bw(o + (size_t)R * cv->row_meta, s + cv->row_meta, rs, nb);
                break;
            case Q8_KV_ROWS: q8_kv_group_bw(o, s, rs, ne0); break;
            case BF16_PAIRS: bf16_group_bw(o, s, rs, ne0); break;
            }
        }
    }
    return 0;
}

int il_interleave(int32_t src_type, const uint8_t *src, uint8_t *dst, int64_t ne0,
                  int64_t group_begin, int64_t group_end) {
    return run(src_type, src, dst, ne0, group_begin, group_end, 0);
}

int il_deinterleave(int32_t src_type, const uint8_t *packed, uint8_t *dst, int64_t ne0,
                    int64_t group_begin, int64_t group_end) {
    return run(src_type, packed, dst, ne0, group_begin, group_end, 1);
}
