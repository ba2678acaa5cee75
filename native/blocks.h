/* Float decoders (dequantizers) for `amx-repack verify`: standard ggml block layouts and ik_llama.cpp's
   row-interleaved _R4/_R8/_R16 layouts, read directly. Results are float32, bit-identical to gguf-py's
   `gguf.quants.dequantize` (NaN payloads included); for ik_llama.cpp's own types (q6_0, iq*_k,
   iq*_ks, iq2_bn, q8_KV), which gguf-py cannot decode, bit-identical to ik's own dequantizers.
   Layouts: shared/spec/interleaved.md.
   This header is also the cffi declaration: apart from preprocessor lines it holds only prototypes. */
#ifndef AMX_REPACK_BLOCKS_H
#define AMX_REPACK_BLOCKS_H
#include <stdint.h>

/* 1 if this (source or interleaved) type id can be dequantized here, else 0. */
int blk_can_dequantize(int32_t type_id);

/* Dequantize rows [row_begin, row_end) of a tensor of type `type_id` in STANDARD ggml layout
   (rows of row_size(type, ne0) bytes, row metadata included, starting at src) into dst[row * ne0 + col] (dst = start of the
   whole float32 output). Returns 0, -1 unsupported type, -2 bad shape/range. */
int blk_dequantize_rows(int32_t type_id, const uint8_t *src, float *dst, int64_t ne0,
                        int64_t row_begin, int64_t row_end);

/* Dequantize row GROUPS [group_begin, group_end) of a tensor of an INTERLEAVED type (_R4/_R8/_R16 id;
   bf16_r16 needs an even ne0, -2 otherwise),
   reading the interleaved layout directly: dst[row * ne0 + col] in normal row order, bit-identical
   to blk_dequantize_rows of the original source tensor. Returns 0/-1/-2. */
int blk_dequantize_interleaved(int32_t type_id, const uint8_t *src, float *dst, int64_t ne0,
                               int64_t group_begin, int64_t group_end);

/* Index of the first byte where a and b differ, or -1 when the n bytes are equal. verify uses it
   on float32 bit patterns and on rebuilt blocks: memcmp speed, no temporary arrays. */
int64_t blk_first_difference(const uint8_t *a, const uint8_t *b, int64_t n);

#endif
