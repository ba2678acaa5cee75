/* ik_llama.cpp row-interleaved types (_R4/_R8/_R16): offline repack and its exact inverse.
   Byte layout: shared/spec/interleaved.md (§3 type table, §4 placement, §9 inverse).
   This header is also the cffi declaration: apart from preprocessor lines it holds only prototypes. */
#ifndef AMX_REPACK_INTERLEAVED_H
#define AMX_REPACK_INTERLEAVED_H
#include <stdint.h>

/* The _R type id for a source type id, and its row count R; 0 when the source has no lossless repack. */
int32_t il_target_type(int32_t src_type);
int32_t il_rows_per_group(int32_t src_type);

/* The source type id whose repack produces this _R type id; 0 when none. */
int32_t il_source_type(int32_t target_type);

/* Bytes of one source row / one output group for ne0 columns; 0 for an unsupported type or bad ne0. */
int64_t il_source_row_bytes(int32_t src_type, int64_t ne0);
int64_t il_target_group_bytes(int32_t src_type, int64_t ne0);

/* Interleave the row groups [group_begin, group_end) of a tensor with ne0 columns. src = start of the
   whole source tensor (rows of row_size(src_type, ne0) bytes), dst = start of the whole output tensor.
   Only those groups' bytes are read/written, so threads can process disjoint group ranges at once.
   Q8_KV: output rows are 4 + ne0 bytes (canonical layout of spec §4.16), so output group g starts at
   g*8*(4+ne0). Returns 0, -1 unsupported type, -2 bad shape/range. */
int il_interleave(int32_t src_type, const uint8_t *src, uint8_t *dst, int64_t ne0,
                  int64_t group_begin, int64_t group_end);

/* Exact inverse (spec §9): rebuild the source rows of those groups. For Q8_KV recompute the per-row
   int32 sum = sum of the int8 quants. Same return codes. */
int il_deinterleave(int32_t src_type, const uint8_t *packed, uint8_t *dst, int64_t ne0,
                    int64_t group_begin, int64_t group_end);

#endif
