/* AMX VNNI tile layout of llama.cpp's AMX backend (spec: shared/spec/amx-vnni.md).
 *
 * This header is also the cffi declaration of module repack._amx: build_native.py drops the lines
 * starting with '#' and hands the rest to cdef, so only plain prototypes with stdint types below.
 *
 * Common arguments: src_type is the ggml id of the SOURCE type (Q4_0 = 2, Q4_1 = 3, Q8_0 = 8,
 * Q4_K = 12, Q5_K = 13, Q6_K = 14, IQ4_XS = 23); the matrix has n_rows rows (n_rows % 16 == 0) of
 * k elements (k % QK == 0); the functions touch only the 16-row strips [strip_begin, strip_end),
 * addressed inside whole-tensor buffers, so threads may work on disjoint strip ranges at once.
 * A 3-D expert tensor [k, N, E] is passed as n_rows = N * E (spec section 11).
 */
#ifndef AMX_REPACK_AMX_H
#define AMX_REPACK_AMX_H

#include <stdint.h>

/* Bytes per packed block (BS + EXTRA) for a ggml source type id, 0 if the type has no AMX layout. */
int64_t amx_packed_block_bytes(int32_t src_type);

/* Pack strips of a standard-layout tensor. Returns 0, -1 unsupported type, -2 bad shape/range. */
int amx_pack(int32_t src_type, const uint8_t *src, uint8_t *dst, int64_t n_rows, int64_t k,
             int64_t strip_begin, int64_t strip_end);

/* Exact inverse of amx_pack (spec section 10). Same return codes. */
int amx_unpack(int32_t src_type, const uint8_t *packed, uint8_t *dst, int64_t n_rows, int64_t k,
               int64_t strip_begin, int64_t strip_end);

/* Validity checks of spec section 10.2. Returns -1 when valid, the first bad row otherwise,
   -3 for bad arguments. */
int64_t amx_check(int32_t src_type, const uint8_t *packed, int64_t n_rows, int64_t k,
                  int64_t strip_begin, int64_t strip_end);

/* Dequantize straight from the packed layout to dst[row * k + col] (float32, bit-identical to
   gguf-py's dequantize of the original blocks). Same return codes as amx_pack. */
int amx_dequantize(int32_t src_type, const uint8_t *packed, float *dst, int64_t n_rows, int64_t k,
                   int64_t strip_begin, int64_t strip_end);

#endif
