/* Fused per-chunk checks for verify and convert --verify (see verify.h).
 *
 * Why here and not in Python: the values check decodes every element twice. Decoded into
 * chunk-sized float32 arrays (7-8x the packed size) it was bound by memory traffic and doubled the
 * resident memory; here each tile (AMX: 16 rows x a few blocks) or row group (interleaved) is
 * decoded into two small buffers that stay in cache, compared, and overwritten by the next.
 *
 * The checks stay independent: the bytes check runs the inverse kernel (amx_unpack /
 * il_deinterleave / cr_unpack) and compares with the original; the layout check runs the packer
 * (amx_pack / il_interleave / cr_pack) on the source again and compares every packed byte; the
 * values check runs the source decoder (blk_dequantize_rows, on the original's bytes when there is
 * an original) against the decoder that reads the packed layout directly (amx_dequantize /
 * blk_dequantize_interleaved / cr_dequantize). They run in that order, each over the whole chunk,
 * so the first problem reported does not depend on which later checks are asked for.
 *
 * Why the layout check makes the values check optional: bytes and layout together say the packed
 * bytes are exactly what the packer writes for the original (every byte, padding and redundant
 * fields included), and the packer is byte-identical to the reference implementations' own
 * (golden vectors), whose runtime reads those bytes as the original's values. The values check
 * decodes every element twice (most of verify's time) and sees only bytes a decoder reads; it
 * stays available for those who want the float proof too (tests/test_fused_checks.py shows every
 * planted corruption it finds is found without it).
 */
#include "verify.h"

#include "amx.h"
#include "blocks.h"
#include "cpu_repack.h"
#include "interleaved.h"

#include <stdlib.h>
#include <string.h>

enum { TILE_ROWS = 16, PIECE_COLUMNS = 1024 };  /* AMX values check: 2 x 16 x 1024 floats = 128 KiB */
enum { LAYOUT_PIECE_BYTES = 64 << 10 };  /* layout check: packed again this much at a time, in cache */

static void found(vf_mismatch *m, int32_t kind, int64_t index, uint32_t original, uint32_t repacked)
{
    m->kind = kind;
    m->index = index;
    m->original = original;
    m->repacked = repacked;
}

/* Bytes check: 1 (and m filled) when rebuilt and original differ. */
static int compare_bytes(const uint8_t *original, const uint8_t *rebuilt, int64_t n, vf_mismatch *m)
{
    if (!original) return 0;
    const int64_t i = blk_first_difference(original, rebuilt, n);
    if (i < 0) return 0;
    found(m, 2, i, original[i], rebuilt[i]);
    return 1;
}

static uint32_t bits(const float *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* First differing float (by bits) of two rows x cols buffers, as (row, col); 0 when equal. */
static int first_value_difference(const float *want, const float *got, int64_t rows, int64_t cols,
                                  int64_t *row, int64_t *col)
{
    if (memcmp(want, got, (size_t)(rows * cols) * sizeof(float)) == 0) return 0;
    const int64_t i = blk_first_difference((const uint8_t *)want, (const uint8_t *)got,
                                           rows * cols * (int64_t)sizeof(float)) / 4;
    *row = i / cols;
    *col = i % cols;
    return 1;
}

/* Layout check: the packer `pack` writes `units` whole units (AMX strips, row groups) of the
   source again, a piece of whole units at a time into a small buffer, compared with `packed`.
   1 (and m filled, kind 4) at the first packed byte that differs; 0 when all are equal; a negative
   kernel or allocation error. */
typedef int unit_packer(const void *how, const uint8_t *source, uint8_t *dst, int64_t units);

static int compare_layout(const uint8_t *source, const uint8_t *packed, int64_t units,
                          int64_t source_unit_bytes, int64_t packed_unit_bytes, unit_packer *pack,
                          const void *how, vf_mismatch *m)
{
    int64_t per_piece = LAYOUT_PIECE_BYTES / packed_unit_bytes;
    if (per_piece < 1) per_piece = 1;
    uint8_t *expected = malloc((size_t)(per_piece * packed_unit_bytes));
    if (!expected) return -4;
    int rc = 0;
    for (int64_t u = 0; u < units && !rc; u += per_piece) {
        const int64_t n = u + per_piece <= units ? per_piece : units - u;
        rc = pack(how, source + u * source_unit_bytes, expected, n);
        const uint8_t *got = packed + u * packed_unit_bytes;
        const int64_t i = rc ? -1 : blk_first_difference(expected, got, n * packed_unit_bytes);
        if (i >= 0) {
            found(m, 4, u * packed_unit_bytes + i, expected[i], got[i]);
            rc = 1;
        }
    }
    free(expected);
    return rc;
}

struct amx_packing { int32_t src_type; int64_t k; };

static int pack_amx(const void *how, const uint8_t *source, uint8_t *dst, int64_t strips)
{
    const struct amx_packing *a = how;
    return amx_pack(a->src_type, source, dst, strips * TILE_ROWS, a->k, 0, strips);
}

int vf_check_amx(int32_t src_type, int64_t qk, int64_t block_bytes, const uint8_t *packed,
                 const uint8_t *original, uint8_t *rebuilt, int64_t n_rows, int64_t k,
                 int32_t layout, int32_t values, vf_mismatch *m)
{
    const int64_t packed_block = amx_packed_block_bytes(src_type);
    memset(m, 0, sizeof *m);
    if (!packed_block) return -1;
    if (qk <= 0 || block_bytes <= 0 || n_rows < 0 || n_rows % TILE_ROWS || k <= 0 || k % qk)
        return -2;
    const int64_t strips = n_rows / TILE_ROWS, kb_count = k / qk;
    const int64_t row_bytes = kb_count * block_bytes, tile_bytes = TILE_ROWS * packed_block;

    const int64_t bad = amx_check(src_type, packed, n_rows, k, 0, strips);
    if (bad < -1) return -2;
    if (bad >= 0) {
        found(m, 1, bad, 0, 0);
        return 0;
    }
    int rc = amx_unpack(src_type, packed, rebuilt, n_rows, k, 0, strips);
    if (rc) return rc;
    if (compare_bytes(original, rebuilt, n_rows * row_bytes, m)) return 0;
    const uint8_t *source = original ? original : rebuilt;
    if (layout) {
        const struct amx_packing how = {src_type, k};
        rc = compare_layout(source, packed, strips, TILE_ROWS * row_bytes, kb_count * tile_bytes,
                            pack_amx, &how, m);
        if (rc) return rc > 0 ? 0 : rc;
    }
    if (!values) return 0;

    /* values: per strip, pieces of `per_piece` blocks (whole tiles) side by side */
    const int64_t per_piece = qk >= PIECE_COLUMNS ? 1 : PIECE_COLUMNS / qk;
    float *want = malloc((size_t)(TILE_ROWS * per_piece * qk) * sizeof(float) * 2);
    if (!want) return -4;
    float *got = want + TILE_ROWS * per_piece * qk;
    for (int64_t nb = 0; nb < strips && !m->kind; nb++) {
        /* the first difference in row-major order may lie in a later piece of the strip */
        int64_t best_row = 0, best_col = 0;
        uint32_t best_want = 0, best_got = 0;
        int any = 0;
        for (int64_t kb = 0; kb < kb_count && !rc; kb += per_piece) {
            const int64_t blocks = kb + per_piece <= kb_count ? per_piece : kb_count - kb;
            const int64_t cols = blocks * qk;
            for (int r = 0; r < TILE_ROWS && !rc; r++)
                rc = blk_dequantize_rows(src_type, source + (nb * TILE_ROWS + r) * row_bytes + kb * block_bytes,
                                         want + r * cols, cols, 0, 1);
            if (!rc)
                rc = amx_dequantize(src_type, packed + (nb * kb_count + kb) * tile_bytes, got,
                                    TILE_ROWS, cols, 0, 1);
            int64_t r, c;
            if (!rc && first_value_difference(want, got, TILE_ROWS, cols, &r, &c) &&
                (!any || r < best_row || (r == best_row && kb * qk + c < best_col))) {
                any = 1;
                best_row = r;
                best_col = kb * qk + c;
                best_want = bits(want + r * cols + c);
                best_got = bits(got + r * cols + c);
            }
        }
        if (any) found(m, 3, (nb * TILE_ROWS + best_row) * k + best_col, best_want, best_got);
        if (rc) break;
    }
    free(want);
    return rc;
}

/* Values check of the row-group families: per group of `rows` rows, the source decoder on the
   source bytes against the packed-layout decoder `decode` on the packed group; the first
   difference goes to m. */
struct packed_groups {
    int32_t type, nb_cols, inter;   /* interleaved: the _R type; cpu-repack: the variant */
    int32_t source_type;
    const uint8_t *packed;
    int64_t group_bytes, ne0;
};
typedef int group_decoder(const struct packed_groups *p, int64_t g, float *got, int64_t ne0);

static int decode_interleaved(const struct packed_groups *p, int64_t g, float *got, int64_t ne0)
{
    return blk_dequantize_interleaved(p->type, p->packed + g * p->group_bytes, got, ne0, 0, 1);
}

static int decode_cpu_repack(const struct packed_groups *p, int64_t g, float *got, int64_t ne0)
{
    return cr_dequantize(p->type, p->nb_cols, p->inter, p->packed + g * p->group_bytes, got, ne0,
                         p->nb_cols);
}

static int compare_groups(int32_t src_type, const uint8_t *source, int64_t rows, int64_t groups,
                          int64_t row_bytes, int64_t ne0, group_decoder *decode,
                          const struct packed_groups *p, vf_mismatch *m)
{
    float *want = malloc((size_t)(rows * ne0) * sizeof(float) * 2);
    if (!want) return -4;
    float *got = want + rows * ne0;
    int rc = 0;
    for (int64_t g = 0; g < groups && !rc; g++) {
        rc = blk_dequantize_rows(src_type, source + g * rows * row_bytes, want, ne0, 0, rows);
        if (!rc) rc = decode(p, g, got, ne0);
        int64_t r, c;
        if (!rc && first_value_difference(want, got, rows, ne0, &r, &c)) {
            found(m, 3, (g * rows + r) * ne0 + c, bits(want + r * ne0 + c), bits(got + r * ne0 + c));
            break;
        }
    }
    free(want);
    return rc;
}

static int pack_interleaved(const void *how, const uint8_t *source, uint8_t *dst, int64_t groups)
{
    const struct packed_groups *p = how;
    return il_interleave(p->source_type, source, dst, p->ne0, 0, groups);
}

static int pack_cpu_repack(const void *how, const uint8_t *source, uint8_t *dst, int64_t groups)
{
    const struct packed_groups *p = how;
    return cr_pack(p->type, p->nb_cols, p->inter, source, dst, p->ne0, groups * p->nb_cols);
}

int vf_check_interleaved(int32_t src_type, int32_t packed_type, const uint8_t *packed,
                         const uint8_t *original, uint8_t *rebuilt, int64_t n_rows, int64_t ne0,
                         int32_t layout, int32_t values, vf_mismatch *m)
{
    memset(m, 0, sizeof *m);
    const int64_t rows = il_rows_per_group(src_type);
    if (!rows || il_target_type(src_type) != packed_type) return -1;
    const int64_t row_bytes = il_source_row_bytes(src_type, ne0);
    const int64_t group_bytes = il_target_group_bytes(src_type, ne0);
    if (!row_bytes || !group_bytes || n_rows < 0 || n_rows % rows) return -2;
    const int64_t groups = n_rows / rows;

    int rc = il_deinterleave(src_type, packed, rebuilt, ne0, 0, groups);
    if (rc) return rc;
    if (compare_bytes(original, rebuilt, n_rows * row_bytes, m)) return 0;

    const uint8_t *source = original ? original : rebuilt;
    const struct packed_groups p = {packed_type, 0, 0, src_type, packed, group_bytes, ne0};
    if (layout) {
        rc = compare_layout(source, packed, groups, rows * row_bytes, group_bytes, pack_interleaved,
                            &p, m);
        if (rc) return rc > 0 ? 0 : rc;
    }
    if (!values) return 0;
    return compare_groups(src_type, source, rows, groups, row_bytes, ne0, decode_interleaved, &p, m);
}

int vf_check_cpu_repack(int32_t src_type, int32_t nb_cols, int32_t inter, const uint8_t *packed,
                        const uint8_t *original, uint8_t *rebuilt, int64_t n_rows, int64_t ne0,
                        int32_t layout, int32_t values, vf_mismatch *m)
{
    memset(m, 0, sizeof *m);
    if (!cr_has_variant(src_type, nb_cols, inter)) return -1;
    const int64_t row_bytes = cr_row_bytes(src_type, ne0);
    if (!row_bytes || n_rows < 0 || n_rows % nb_cols) return -2;

    int rc = cr_unpack(src_type, nb_cols, inter, packed, rebuilt, ne0, n_rows);
    if (rc) return rc;
    if (compare_bytes(original, rebuilt, n_rows * row_bytes, m)) return 0;

    /* a row group at a time (packed data has the source's size, so a group of packed data is
       nb_cols source rows' bytes) */
    const uint8_t *source = original ? original : rebuilt;
    const int64_t group_bytes = nb_cols * row_bytes, groups = n_rows / nb_cols;
    const struct packed_groups p = {src_type, nb_cols, inter, src_type, packed, group_bytes, ne0};
    if (layout) {
        rc = compare_layout(source, packed, groups, group_bytes, group_bytes, pack_cpu_repack, &p, m);
        if (rc) return rc > 0 ? 0 : rc;
    }
    if (!values) return 0;
    return compare_groups(src_type, source, nb_cols, groups, row_bytes, ne0, decode_cpu_repack,
                          &p, m);
}
