/* The SIMD decoders of one instruction set, included twice by decode_simd.c: once with
   ISA(name) = name##_avx2 (8-wide float arithmetic) and once with ISA(name) = name##_avx512
   (16-wide), each under its own target pragma. Integer code extraction is 128/256-bit and the same
   in both; only the float stage (emit_*) differs in width.

   Bit-identity with the portable decoders (blocks.c, amx.c), which are themselves bit-identical to
   gguf-py: every output is formed by the same float32 operations in the same order, one rounding
   each (no FMA: the file is compiled with fp-contract off, and tests/test_decode_simd.py checks the
   built modules contain no fused multiply-add); integer -> float conversions are exact; scales are
   computed as scalars exactly as the portable code does (d * (float)integer) and broadcast. fp16
   scales are converted by F16C (exact; a signalling NaN comes out quiet, as with the portable ldh,
   and every scale is multiplied before it reaches an output anyway). */

/* ---- float stage: 16 codes (one byte each, element order) -> 16 floats ---------------------- */
#if ISA_WIDTH == 16
/* y = d * (float)(c - off) */
static inline void ISA(emit_offset16)(float *y, __m128i c, float d, int off) {
    const __m512i v = _mm512_sub_epi32(_mm512_cvtepu8_epi32(c), _mm512_set1_epi32(off));
    _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(v)));
}
/* y = (float)q * d, q signed */
static inline void ISA(emit_i8_16)(float *y, __m128i q, float d) {
    _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), _mm512_set1_ps(d)));
}
/* y = d * (float)kv, kv signed: the product d * table[code] of the table decoders */
static inline void ISA(emit_scaled_i8_16)(float *y, __m128i kv, float d) {
    _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(kv))));
}
/* y = dl * (float)c - ml */
static inline void ISA(emit_sub16)(float *y, __m128i c, float dl, float ml) {
    const __m512 a = _mm512_mul_ps(_mm512_set1_ps(dl), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c)));
    _mm512_storeu_ps(y, _mm512_sub_ps(a, _mm512_set1_ps(ml)));
}
/* y = d * (float)c + m; where d * c is NaN that NaN (numpy's first operand), chosen explicitly
   since the compiler may commute the addition */
static inline void ISA(emit_add16)(float *y, __m128i c, float d, float m) {
    const __m512 a = _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c)));
    const __m512 s = _mm512_add_ps(a, _mm512_set1_ps(m));
    _mm512_storeu_ps(y, _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), s, a));
}
#else
static inline __m256 ISA(u8_to_ps)(__m128i c) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)); }
static inline __m256 ISA(i8_to_ps)(__m128i c) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)); }
static inline void ISA(emit_offset16)(float *y, __m128i c, float d, int off) {
    const __m256 vd = _mm256_set1_ps(d);
    const __m256i vo = _mm256_set1_epi32(off);
    const __m256i a = _mm256_sub_epi32(_mm256_cvtepu8_epi32(c), vo);
    const __m256i b = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(c, c)), vo);
    _mm256_storeu_ps(y, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(a)));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(b)));
}
static inline void ISA(emit_i8_16)(float *y, __m128i q, float d) {
    const __m256 vd = _mm256_set1_ps(d);
    _mm256_storeu_ps(y, _mm256_mul_ps(ISA(i8_to_ps)(q), vd));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(ISA(i8_to_ps)(_mm_unpackhi_epi64(q, q)), vd));
}
static inline void ISA(emit_scaled_i8_16)(float *y, __m128i kv, float d) {
    const __m256 vd = _mm256_set1_ps(d);
    _mm256_storeu_ps(y, _mm256_mul_ps(vd, ISA(i8_to_ps)(kv)));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(vd, ISA(i8_to_ps)(_mm_unpackhi_epi64(kv, kv))));
}
static inline void ISA(emit_sub16)(float *y, __m128i c, float dl, float ml) {
    const __m256 vd = _mm256_set1_ps(dl), vm = _mm256_set1_ps(ml);
    _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(vd, ISA(u8_to_ps)(c)), vm));
    _mm256_storeu_ps(y + 8, _mm256_sub_ps(_mm256_mul_ps(vd, ISA(u8_to_ps)(_mm_unpackhi_epi64(c, c))), vm));
}
static inline void ISA(emit_add16)(float *y, __m128i c, float d, float m) {
    const __m256 vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);
    for (int h = 0; h < 2; ++h) {
        const __m256 a = _mm256_mul_ps(vd, ISA(u8_to_ps)(h ? _mm_unpackhi_epi64(c, c) : c));
        const __m256 s = _mm256_add_ps(a, vm);
        _mm256_storeu_ps(y + 8 * h, _mm256_blendv_ps(s, a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q)));
    }
}
#endif

/* y = d * table[c] for IQ4_NL's table: the table value looked up as int8 (exact), then scaled */
static inline void ISA(emit_iq4nl16)(float *y, __m128i c, float d) {
    const __m128i table = _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10,
                                        1, 13, 25, 38, 53, 69, 89, 113);
    ISA(emit_scaled_i8_16)(y, _mm_shuffle_epi8(table, c), d);
}

/* ---- integer helpers -------------------------------------------------------------------------- */
static inline float ISA(h2f)(const uint8_t *p) { return _cvtsh_ss(ld16(p)); }
static inline __m128i ISA(lo4)(__m128i q) { return _mm_and_si128(q, _mm_set1_epi8(0x0F)); }
static inline __m128i ISA(hi4)(__m128i q) { return _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F)); }
static inline __m128i ISA(load128)(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }

/* 4 x 8 dword transpose: dword k of the 32-byte vector at base + c * stride (c = 0..3) becomes
   dword c of row[k]. The _R8 layouts and the AMX tiles keep one dword per row side by side. */
static inline void ISA(transpose4x8)(const uint8_t *base, int64_t stride, __m128i row[8]) {
    const __m256i a0 = _mm256_loadu_si256((const __m256i *)base);
    const __m256i a1 = _mm256_loadu_si256((const __m256i *)(base + stride));
    const __m256i a2 = _mm256_loadu_si256((const __m256i *)(base + 2 * stride));
    const __m256i a3 = _mm256_loadu_si256((const __m256i *)(base + 3 * stride));
    const __m256i t0 = _mm256_unpacklo_epi32(a0, a1), t1 = _mm256_unpackhi_epi32(a0, a1);
    const __m256i t2 = _mm256_unpacklo_epi32(a2, a3), t3 = _mm256_unpackhi_epi32(a2, a3);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    row[0] = _mm256_castsi256_si128(u0); row[4] = _mm256_extracti128_si256(u0, 1);
    row[1] = _mm256_castsi256_si128(u1); row[5] = _mm256_extracti128_si256(u1, 1);
    row[2] = _mm256_castsi256_si128(u2); row[6] = _mm256_extracti128_si256(u2, 1);
    row[3] = _mm256_castsi256_si128(u3); row[7] = _mm256_extracti128_si256(u3, 1);
}
/* 4 x 4 dword transpose of the 16-byte vectors at base + 16c: the _R4 Pattern A slabs. */
static inline void ISA(transpose4x4)(const uint8_t *base, __m128i row[4]) {
    const __m128i s0 = ISA(load128)(base), s1 = ISA(load128)(base + 16);
    const __m128i s2 = ISA(load128)(base + 32), s3 = ISA(load128)(base + 48);
    const __m128i t0 = _mm_unpacklo_epi32(s0, s1), t1 = _mm_unpackhi_epi32(s0, s1);
    const __m128i t2 = _mm_unpacklo_epi32(s2, s3), t3 = _mm_unpackhi_epi32(s2, s3);
    row[0] = _mm_unpacklo_epi64(t0, t2);
    row[1] = _mm_unpackhi_epi64(t0, t2);
    row[2] = _mm_unpacklo_epi64(t1, t3);
    row[3] = _mm_unpackhi_epi64(t1, t3);
}
/* Words W0..W3 whose low nibbles are elements 8u..8u+3 and high nibbles 8u+4..8u+7 (AMX NIB rows,
   _R8 Pattern B): the 32 codes in element order, as two 16-code halves. */
static inline void ISA(nib_words)(__m128i w, __m128i *first, __m128i *second) {
    const __m128i lo = ISA(lo4)(w), hi = ISA(hi4)(w);
    *first = _mm_unpacklo_epi32(lo, hi);
    *second = _mm_unpackhi_epi32(lo, hi);
}
/* _R4 Pattern A row [W0, W1, W2, W3] (blocks.c pattern_a) -> the 32 codes in element order. */
static inline void ISA(pattern_a_row)(__m128i w, __m128i *first, __m128i *second) {
    const __m128i lo = _mm_shuffle_epi32(ISA(lo4)(w), _MM_SHUFFLE(3, 1, 2, 0));
    const __m128i hi = _mm_shuffle_epi32(ISA(hi4)(w), _MM_SHUFFLE(3, 1, 2, 0));
    *first = _mm_unpacklo_epi64(lo, hi);
    *second = _mm_unpackhi_epi64(lo, hi);
}
/* Bit 4 of 16 codes from 16 bytes: bytes whose bit `bit` is set give 0x10. */
static inline __m128i ISA(bit_to_16)(__m128i h, __m128i bit) {
    return _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h, bit), bit), _mm_set1_epi8(0x10));
}
/* Q4_K / Q5_K 6-bit scale and min j of the 12-byte field s (blocks.c k4_scale_min). */
static inline void ISA(k4_scale_min)(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* ---- source (standard layout) rows ------------------------------------------------------------ */
static void ISA(rows_q4_0)(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, x += 18, y += 32) {
        const float d = ISA(h2f)(x);
        const __m128i q = ISA(load128)(x + 2);
        ISA(emit_offset16)(y, ISA(lo4)(q), d, 8);
        ISA(emit_offset16)(y + 16, ISA(hi4)(q), d, 8);
    }
}
static void ISA(rows_q4_1)(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, x += 20, y += 32) {
        const float d = ISA(h2f)(x), m = ISA(h2f)(x + 2);
        const __m128i q = ISA(load128)(x + 4);
        ISA(emit_add16)(y, ISA(lo4)(q), d, m);
        ISA(emit_add16)(y + 16, ISA(hi4)(q), d, m);
    }
}
static void ISA(rows_q8_0)(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, x += 34, y += 32) {
        const float d = ISA(h2f)(x);
        ISA(emit_i8_16)(y, ISA(load128)(x + 2), d);
        ISA(emit_i8_16)(y + 16, ISA(load128)(x + 18), d);
    }
}
/* Q4_K (144 B: d, dmin, scales[12] @4, qs @16) and Q5_K (176 B: ... qh[32] @16, qs @48):
   y = (d * sc) * q - (dmin * m) per 32-element sub-block; Q5_K's bit 4 of element j of sub-block
   ib is bit ib of qh[j]. */
static inline void ISA(rows_k4)(const uint8_t *restrict x, float *restrict y, int64_t nb, int q5) {
    const int bytes = q5 ? 176 : 144, qs = q5 ? 48 : 16;
    for (int64_t b = 0; b < nb; ++b, x += bytes, y += 256) {
        const float d = ISA(h2f)(x), dmin = ISA(h2f)(x + 2);
        const __m128i h0 = ISA(load128)(x + 16), h1 = ISA(load128)(x + 32);
        for (int ib = 0; ib < 8; ++ib) {
            const uint8_t *q = x + qs + 32 * (ib / 2);
            __m128i q0 = ISA(load128)(q), q1 = ISA(load128)(q + 16);
            q0 = ib % 2 ? ISA(hi4)(q0) : ISA(lo4)(q0);
            q1 = ib % 2 ? ISA(hi4)(q1) : ISA(lo4)(q1);
            if (q5) {
                const __m128i bit = _mm_set1_epi8((char)(1 << ib));
                q0 = _mm_or_si128(q0, ISA(bit_to_16)(h0, bit));
                q1 = _mm_or_si128(q1, ISA(bit_to_16)(h1, bit));
            }
            int sc, m;
            ISA(k4_scale_min)(x + 4, ib, &sc, &m);
            const float dl = d * (float)sc, ml = dmin * (float)m;
            ISA(emit_sub16)(y + 32 * ib, q0, dl, ml);
            ISA(emit_sub16)(y + 32 * ib + 16, q1, dl, ml);
        }
    }
}
static void ISA(rows_q4_k)(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    ISA(rows_k4)(x, y, nb, 0);
}
static void ISA(rows_q5_k)(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    ISA(rows_k4)(x, y, nb, 1);
}
static void ISA(rows_q6_k)(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    const __m128i m2 = _mm_set1_epi8(3);
    for (int64_t b = 0; b < nb; ++b, x += 210, y += 256) {
        const float d = ISA(h2f)(x + 208);
        const int8_t *sc = (const int8_t *)(x + 192);
        for (int ib = 0; ib < 8; ++ib) {
            const int h = ib / 4, p = ib % 4;
            const uint8_t *ql = x + 64 * h + 32 * (p & 1), *qh = x + 128 + 32 * h;
            __m128i q0 = ISA(load128)(ql), q1 = ISA(load128)(ql + 16);
            q0 = p >> 1 ? ISA(hi4)(q0) : ISA(lo4)(q0);
            q1 = p >> 1 ? ISA(hi4)(q1) : ISA(lo4)(q1);
            const __m128i s = _mm_cvtsi32_si128(2 * p);
            const __m128i u0 = _mm_and_si128(_mm_srl_epi16(ISA(load128)(qh), s), m2);
            const __m128i u1 = _mm_and_si128(_mm_srl_epi16(ISA(load128)(qh + 16), s), m2);
            q0 = _mm_or_si128(q0, _mm_slli_epi16(u0, 4));
            q1 = _mm_or_si128(q1, _mm_slli_epi16(u1, 4));
            ISA(emit_offset16)(y + 32 * ib, q0, d * (float)sc[2 * ib], 32);
            ISA(emit_offset16)(y + 32 * ib + 16, q1, d * (float)sc[2 * ib + 1], 32);
        }
    }
}
static void ISA(rows_iq4_xs)(const uint8_t *restrict x, float *restrict y, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, x += 136, y += 256) {
        const float d = ISA(h2f)(x);
        const uint16_t sh = ld16(x + 2);
        for (int ib = 0; ib < 8; ++ib) {
            const __m128i q = ISA(load128)(x + 8 + 16 * ib);
            const int sc = ((x[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | ((sh >> (2 * ib)) & 3) << 4;
            const float dl = d * (float)(sc - 32);
            ISA(emit_iq4nl16)(y + 32 * ib, ISA(lo4)(q), dl);
            ISA(emit_iq4nl16)(y + 32 * ib + 16, ISA(hi4)(q), dl);
        }
    }
}

/* ---- interleaved (_R4 / _R8) row groups; layouts: shared/spec/interleaved.md §4 ---------------- */
/* §4.3 Q4_0_R8 (144 B): d_k @2k; @16 + 32c + 4k = qs[4c..4c+3] of row k. */
static void ISA(group_q4_0_r8)(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, x += 8 * 18, y += 32) {
        __m128i row[8];
        ISA(transpose4x8)(x + 16, 32, row);
        for (int k = 0; k < 8; ++k) {
            const float d = ISA(h2f)(x + 2 * k);
            ISA(emit_offset16)(y + k * ne0, ISA(lo4)(row[k]), d, 8);
            ISA(emit_offset16)(y + k * ne0 + 16, ISA(hi4)(row[k]), d, 8);
        }
    }
}
/* §4.2 Q8_0_R8 (272 B): d_k @2k; @16 + 32c + 4k = qs[4c..4c+3] of row k (c = 0..7). */
static void ISA(group_q8_0_r8)(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, x += 8 * 34, y += 32) {
        __m128i first[8], second[8];
        ISA(transpose4x8)(x + 16, 32, first);
        ISA(transpose4x8)(x + 16 + 128, 32, second);
        for (int k = 0; k < 8; ++k) {
            const float d = ISA(h2f)(x + 2 * k);
            ISA(emit_i8_16)(y + k * ne0, first[k], d);
            ISA(emit_i8_16)(y + k * ne0 + 16, second[k], d);
        }
    }
}
/* §4.8 IQ4_XS_R8 (1088 B): d_k @2k; SH @16, SL @32 (index 8ib + k); Pattern B @64 + 128ib. */
static void ISA(group_iq4_xs_r8)(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, x += 8 * 136, y += 256) {
        float d[8];
        for (int k = 0; k < 8; ++k) d[k] = ISA(h2f)(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            __m128i row[8];
            ISA(transpose4x8)(x + 64 + 128 * ib, 32, row);
            for (int k = 0; k < 8; ++k) {
                const int n = 8 * ib + k;
                const int sc = ((x[32 + n % 32] >> (4 * (n / 32))) & 0xF) |
                               ((x[16 + n % 16] >> (2 * (n / 16))) & 3) << 4;
                const float dl = d[k] * (float)(sc - 32);
                __m128i c0, c1;
                ISA(nib_words)(row[k], &c0, &c1);
                ISA(emit_iq4nl16)(y + k * ne0 + 32 * ib, c0, dl);
                ISA(emit_iq4nl16)(y + k * ne0 + 32 * ib + 16, c1, dl);
            }
        }
    }
}
/* §4.9 Q4_K_R4 (576 B): d_k @2k, dmin_k @8 + 2k, scales_h @16, scales_l @32; Pattern A @64 + 64ib. */
static void ISA(group_q4_k_r4)(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, x += 4 * 144, y += 256) {
        float d[4], dmin[4];
        for (int k = 0; k < 4; ++k) {
            d[k] = ISA(h2f)(x + 2 * k);
            dmin[k] = ISA(h2f)(x + 8 + 2 * k);
        }
        for (int ib = 0; ib < 8; ++ib) {
            __m128i row[4];
            ISA(transpose4x4)(x + 64 + 64 * ib, row);
            for (int k = 0; k < 4; ++k) {
                const int n = 4 * ib + k;
                const uint8_t l = x[32 + n], h = (x[16 + n % 16] >> (4 * (n / 16))) & 0xF;
                const int sc = (l & 0xF) | (h & 3) << 4, m = (l >> 4) | (h >> 2) << 4;
                const float dl = d[k] * (float)sc, ml = dmin[k] * (float)m;
                __m128i c0, c1;
                ISA(pattern_a_row)(row[k], &c0, &c1);
                ISA(emit_sub16)(y + k * ne0 + 32 * ib, c0, dl, ml);
                ISA(emit_sub16)(y + k * ne0 + 32 * ib + 16, c1, dl, ml);
            }
        }
    }
}
/* §4.11 Q6_K_R4 (840 B): d_k @2k; scales @8 + 8ib + k (first half), +4 (second half); high 2 bits
   @72 + 32ib (byte 4k+i: u(v[i]) | u(v[i+8]) << 2 | u(v[i+4]) << 4 | u(v[i+12]) << 6; +16: v[i+16..]);
   Pattern A of bits 0-3 @328 + 64ib. */
static void ISA(group_q6_k_r4)(const uint8_t *restrict x, float *restrict y, int64_t ne0, int64_t nb) {
    const __m128i shifts = _mm_setr_epi32(0, 4, 2, 6), m2 = _mm_set1_epi8(3);
    for (int64_t b = 0; b < nb; ++b, x += 4 * 210, y += 256) {
        float d[4];
        for (int k = 0; k < 4; ++k) d[k] = ISA(h2f)(x + 2 * k);
        for (int ib = 0; ib < 8; ++ib) {
            __m128i row[4];
            ISA(transpose4x4)(x + 328 + 64 * ib, row);
            for (int k = 0; k < 4; ++k) {
                __m128i c0, c1;
                ISA(pattern_a_row)(row[k], &c0, &c1);
                const __m128i h0 = _mm_set1_epi32((int)ld32(x + 72 + 32 * ib + 4 * k));
                const __m128i h1 = _mm_set1_epi32((int)ld32(x + 72 + 32 * ib + 16 + 4 * k));
                c0 = _mm_or_si128(c0, _mm_slli_epi16(_mm_and_si128(_mm_srlv_epi32(h0, shifts), m2), 4));
                c1 = _mm_or_si128(c1, _mm_slli_epi16(_mm_and_si128(_mm_srlv_epi32(h1, shifts), m2), 4));
                const int8_t s0 = (int8_t)x[8 + 8 * ib + k], s1 = (int8_t)x[8 + 8 * ib + 4 + k];
                ISA(emit_offset16)(y + k * ne0 + 32 * ib, c0, d[k] * (float)s0, 32);
                ISA(emit_offset16)(y + k * ne0 + 32 * ib + 16, c1, d[k] * (float)s1, 32);
            }
        }
    }
}

/* ---- AMX tiles (shared/spec/amx-vnni.md §7): 16 rows of one block each ------------------------ */
/* NIB row r, lines 4s..4s+3 (elements 32s..32s+31) of the 8 rows 8h..8h+7: transposed. */
static inline void ISA(nib_lines)(const uint8_t *tile, int s, int h, __m128i row[8]) {
    ISA(transpose4x8)(tile + 256 * s + 32 * h, 64, row);
}
/* Q4_0 (d @256: d * (q - 8)) and Q4_1 (d @256, m @288: d * q + m): one NIB line group. */
static inline void ISA(tile_legacy4)(const uint8_t *restrict tile, float *restrict y, int64_t ldy,
                                     int with_min) {
    for (int h = 0; h < 2; ++h) {
        __m128i row[8];
        ISA(nib_lines)(tile, 0, h, row);
        for (int k = 0; k < 8; ++k) {
            const int r = 8 * h + k;
            __m128i c0, c1;
            ISA(nib_words)(row[k], &c0, &c1);
            const float d = ISA(h2f)(tile + 256 + 2 * r);
            if (with_min) {
                const float m = ISA(h2f)(tile + 288 + 2 * r);
                ISA(emit_add16)(y + r * ldy, c0, d, m);
                ISA(emit_add16)(y + r * ldy + 16, c1, d, m);
            } else {
                ISA(emit_offset16)(y + r * ldy, c0, d, 8);
                ISA(emit_offset16)(y + r * ldy + 16, c1, d, 8);
            }
        }
    }
}
static void ISA(tile_q4_0)(const uint8_t *restrict tile, float *restrict y, int64_t ldy) {
    ISA(tile_legacy4)(tile, y, ldy, 0);
}
static void ISA(tile_q4_1)(const uint8_t *restrict tile, float *restrict y, int64_t ldy) {
    ISA(tile_legacy4)(tile, y, ldy, 1);
}
/* Q8_0: VNNI line q holds row r's qs[4q..4q+3] at 64q + 4r; d @512. */
static void ISA(tile_q8_0)(const uint8_t *restrict tile, float *restrict y, int64_t ldy) {
    for (int h = 0; h < 2; ++h) {
        __m128i first[8], second[8];
        ISA(transpose4x8)(tile + 32 * h, 64, first);
        ISA(transpose4x8)(tile + 256 + 32 * h, 64, second);
        for (int k = 0; k < 8; ++k) {
            const int r = 8 * h + k;
            const float d = ISA(h2f)(tile + 512 + 2 * r);
            ISA(emit_i8_16)(y + r * ldy, first[k], d);
            ISA(emit_i8_16)(y + r * ldy + 16, second[k], d);
        }
    }
}
/* Q4_K / Q5_K: y = (d * sc[s]) * q - (dmin * m[s]); sc @sc_off + 16s + r, min @min_off +
   32(s/2) + 2r + s%2, d @d_off + 2r, dmin @d_off + 32 + 2r; Q5_K's bit 4 from HB1 word s @2048. */
static inline void ISA(tile_k4)(const uint8_t *restrict tile, float *restrict y, int64_t ldy, int q5) {
    const int sc_off = q5 ? 2560 : 2048, min_off = sc_off + 128, d_off = sc_off + 256;
    const __m128i bits_lo = _mm_setr_epi32(0x01010101, 0x02020202, 0x04040404, 0x08080808);
    const __m128i bits_hi = _mm_setr_epi32(0x10101010, 0x20202020, 0x40404040, (int)0x80808080u);
    for (int h = 0; h < 2; ++h) {
        float d[8], dmin[8];
        for (int k = 0; k < 8; ++k) {
            d[k] = ISA(h2f)(tile + d_off + 2 * (8 * h + k));
            dmin[k] = ISA(h2f)(tile + d_off + 32 + 2 * (8 * h + k));
        }
        for (int s = 0; s < 8; ++s) {
            __m128i row[8];
            ISA(nib_lines)(tile, s, h, row);
            for (int k = 0; k < 8; ++k) {
                const int r = 8 * h + k;
                __m128i c0, c1;
                ISA(nib_words)(row[k], &c0, &c1);
                if (q5) {
                    const __m128i w = _mm_set1_epi32((int)ld32(tile + 2048 + 64 * s + 4 * r));
                    c0 = _mm_or_si128(c0, ISA(bit_to_16)(w, bits_lo));
                    c1 = _mm_or_si128(c1, ISA(bit_to_16)(w, bits_hi));
                }
                const float dl = d[k] * (float)tile[sc_off + 16 * s + r];
                const float ml = dmin[k] * (float)tile[min_off + 32 * (s >> 1) + 2 * r + (s & 1)];
                ISA(emit_sub16)(y + r * ldy + 32 * s, c0, dl, ml);
                ISA(emit_sub16)(y + r * ldy + 32 * s + 16, c1, dl, ml);
            }
        }
    }
}
static void ISA(tile_q4_k)(const uint8_t *restrict tile, float *restrict y, int64_t ldy) {
    ISA(tile_k4)(tile, y, ldy, 0);
}
static void ISA(tile_q5_k)(const uint8_t *restrict tile, float *restrict y, int64_t ldy) {
    ISA(tile_k4)(tile, y, ldy, 1);
}
/* Q6_K: bits 4-5 of element 16g + 4t + i in field t of byte i of HB2 word g @2048 + 64g + 4r;
   int8 scale j @3072 + 16j + r; d @3328 + 2r; y = (d * sc) * (q - 32). */
static void ISA(tile_q6_k)(const uint8_t *restrict tile, float *restrict y, int64_t ldy) {
    const __m128i shifts = _mm_setr_epi32(0, 2, 4, 6), m2 = _mm_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
        float d[8];
        for (int k = 0; k < 8; ++k) d[k] = ISA(h2f)(tile + 3328 + 2 * (8 * h + k));
        for (int s = 0; s < 8; ++s) {
            __m128i row[8];
            ISA(nib_lines)(tile, s, h, row);
            for (int k = 0; k < 8; ++k) {
                const int r = 8 * h + k;
                __m128i c[2];
                ISA(nib_words)(row[k], &c[0], &c[1]);
                for (int half = 0; half < 2; ++half) {
                    const int g = 2 * s + half;
                    const __m128i w = _mm_set1_epi32((int)ld32(tile + 2048 + 64 * g + 4 * r));
                    c[half] = _mm_or_si128(c[half], _mm_slli_epi16(_mm_and_si128(_mm_srlv_epi32(w, shifts), m2), 4));
                    const float dl = d[k] * (float)(int8_t)tile[3072 + 16 * g + r];
                    ISA(emit_offset16)(y + r * ldy + 16 * g, c[half], dl, 32);
                }
            }
        }
    }
}
/* IQ4_XS: int8 scale (ls - 32) j @2048 + 16j + r; d @2176 + 2r. */
static void ISA(tile_iq4_xs)(const uint8_t *restrict tile, float *restrict y, int64_t ldy) {
    for (int h = 0; h < 2; ++h) {
        float d[8];
        for (int k = 0; k < 8; ++k) d[k] = ISA(h2f)(tile + 2176 + 2 * (8 * h + k));
        for (int s = 0; s < 8; ++s) {
            __m128i row[8];
            ISA(nib_lines)(tile, s, h, row);
            for (int k = 0; k < 8; ++k) {
                const int r = 8 * h + k;
                __m128i c0, c1;
                ISA(nib_words)(row[k], &c0, &c1);
                const float dl = d[k] * (float)(int8_t)tile[2048 + 16 * s + r];
                ISA(emit_iq4nl16)(y + r * ldy + 32 * s, c0, dl);
                ISA(emit_iq4nl16)(y + r * ldy + 32 * s + 16, c1, dl);
            }
        }
    }
}

static simd_rows_fn ISA(source_rows)(int32_t id) {
    switch (id) {
    case 2: return ISA(rows_q4_0);
    case 3: return ISA(rows_q4_1);
    case 8: return ISA(rows_q8_0);
    case 12: return ISA(rows_q4_k);
    case 13: return ISA(rows_q5_k);
    case 14: return ISA(rows_q6_k);
    case 23: return ISA(rows_iq4_xs);
    default: return NULL;
    }
}
static simd_group_fn ISA(interleaved_group)(int32_t id) {
    switch (id) {
    case 202: return ISA(group_q4_0_r8);
    case 208: return ISA(group_q8_0_r8);
    case 212: return ISA(group_q4_k_r4);
    case 214: return ISA(group_q6_k_r4);
    case 223: return ISA(group_iq4_xs_r8);
    default: return NULL;
    }
}
static simd_tile_fn ISA(amx_tile)(int32_t id) {
    switch (id) {
    case 2: return ISA(tile_q4_0);
    case 3: return ISA(tile_q4_1);
    case 8: return ISA(tile_q8_0);
    case 12: return ISA(tile_q4_k);
    case 13: return ISA(tile_q5_k);
    case 14: return ISA(tile_q6_k);
    case 23: return ISA(tile_iq4_xs);
    default: return NULL;
    }
}
