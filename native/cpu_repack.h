/* Upstream llama.cpp's CPU_REPACK layouts (ggml-cpu/repack.cpp, tensor_traits<block, INTER_SIZE,
   NB_COLS>): offline pack byte-identical to upstream's repack, its exact inverse, and a float decoder
   that reads the packed layout directly. Byte layout: docs/cpu-repack.md.
   A variant is (src_type, nb_cols, inter): nb_cols rows are packed together (a "row group"), their
   quants interleaved in runs of `inter` bytes; e.g. q4_0_8x8 = (2, 8, 8), q4_K_8x4 = (12, 8, 4).
   Packed data has the source's size; each call handles a chunk of whole row groups.
   Return codes: 0 ok, -1 unsupported variant, -2 bad shape (ne0 not a positive multiple of the
   source block, n_rows not a non-negative multiple of nb_cols).
   This header is also the cffi declaration: apart from preprocessor lines it holds only prototypes. */
#ifndef AMX_REPACK_CPU_REPACK_H
#define AMX_REPACK_CPU_REPACK_H
#include <stdint.h>

/* 1 if (src_type, nb_cols, inter) is one of upstream's variants implemented here, else 0. */
int cr_has_variant(int32_t src_type, int32_t nb_cols, int32_t inter);

/* Bytes of one source row (= one packed row's share) of ne0 elements; 0 for a type without
   variants or an ne0 that is not a positive multiple of its block. */
int64_t cr_row_bytes(int32_t src_type, int64_t ne0);

/* Pack n_rows source rows of ne0 elements (src: n_rows rows in ggml's standard layout) into dst
   (the same number of bytes), as upstream's repack writes them. */
int cr_pack(int32_t src_type, int32_t nb_cols, int32_t inter, const uint8_t *src, uint8_t *dst,
            int64_t ne0, int64_t n_rows);

/* Exact inverse of cr_pack: the source rows again, byte for byte. */
int cr_unpack(int32_t src_type, int32_t nb_cols, int32_t inter, const uint8_t *packed,
              uint8_t *dst, int64_t ne0, int64_t n_rows);

/* Decode packed data to float32, dst[row * ne0 + col] with rows in source order, bit-identical to
   the source decoder (blk_dequantize_rows, i.e. gguf-py's dequantize) of the unpacked rows. */
int cr_dequantize(int32_t src_type, int32_t nb_cols, int32_t inter, const uint8_t *packed,
                  float *dst, int64_t ne0, int64_t n_rows);

#endif
