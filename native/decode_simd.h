/* Hand-written AVX2 / AVX-512 float decoders for the hot types (decode_simd.c), looked up by the
   portable decoders of blocks.c and amx.c. Each lookup returns NULL when the selected path is the
   portable one (simd.h) or the type has no SIMD decoder: the caller then runs its portable C, which
   is the reference the SIMD decoders equal bit for bit. Not a cffi declaration (internal). */
#ifndef AMX_REPACK_DECODE_SIMD_H
#define AMX_REPACK_DECODE_SIMD_H
#include <stdint.h>

/* One row of nb standard-layout blocks -> y (as blocks.c's rows_* functions). */
typedef void (*simd_rows_fn)(const uint8_t *x, float *y, int64_t nb);
/* One row group of nb interleaved blocks -> rows y + k * ne0 (as blocks.c's group_* functions). */
typedef void (*simd_group_fn)(const uint8_t *x, float *y, int64_t ne0, int64_t nb);
/* One AMX tile (16 rows x one source block) -> y + r * ldy (r = 0..15). */
typedef void (*simd_tile_fn)(const uint8_t *tile, float *y, int64_t ldy);

simd_rows_fn simd_source_rows(int32_t type_id);
simd_group_fn simd_interleaved_group(int32_t type_id);
simd_tile_fn simd_amx_tile(int32_t src_type);

/* Nonzero when the selected path is not the portable one: amx.c then moves each tile's 4-bit codes
   with 128-bit vectors (SSE2, which every x86-64 has), a whole tile at a time. */
int simd_vector_moves(void);

#endif
