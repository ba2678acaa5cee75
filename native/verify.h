/* The fused checks of `amx-repack verify` and `convert --verify`, one chunk of a packed tensor per
   call: validity of the packed data (AMX), the inverse kernel back to the source bytes, the
   layout check (the packer run again on the source must give the packed bytes, every one of
   them), and optionally the float values of the source decoder against the packed-layout decoder;
   a tile or row group at a time in small buffers (no chunk-sized arrays).
   The kernels are those of amx.c, interleaved.c, cpu_repack.c and blocks.c, linked into the same module.
   This header is also the cffi declaration: apart from preprocessor lines it holds only
   declarations. */
#ifndef AMX_REPACK_VERIFY_H
#define AMX_REPACK_VERIFY_H
#include <stdint.h>

/* The first problem a check found. kind: 0 none; 1 the packed data is invalid (index = row);
   2 the rebuilt source bytes differ from the original (index = byte of the chunk's source bytes,
   original/repacked = the two bytes); 3 the float values differ (index = row * ne0 + column in the
   chunk, original/repacked = the two float32 bit patterns); 4 the packed bytes are not the layout's
   packing of the source (index = byte of the chunk's packed bytes, original = the byte the packer
   writes, repacked = the file's byte). */
typedef struct {
    int32_t kind;
    int64_t index;
    uint32_t original;
    uint32_t repacked;
} vf_mismatch;

/* One chunk of an AMX-packed tensor: n_rows (a multiple of 16) rows of k elements of source type
   src_type, whose blocks are qk elements in block_bytes bytes. `rebuilt` (n_rows source rows)
   receives the unpacked source bytes. `original` (NULL: none) is compared with them. With
   `layout`, the source (`original`, or `rebuilt` without one) is packed again, a unit at a time,
   and compared with `packed`. With `values`, both float decoders run on every element (the
   source decoder on the source). Returns 0 (m says what was found), -1 unsupported type, -2 bad
   shape, -4 out of memory. */
int vf_check_amx(int32_t src_type, int64_t qk, int64_t block_bytes, const uint8_t *packed,
                 const uint8_t *original, uint8_t *rebuilt, int64_t n_rows, int64_t k,
                 int32_t layout, int32_t values, vf_mismatch *m);

/* The same for a tensor of ik_llama.cpp's interleaved type packed_type (n_rows a multiple of its
   row group), made from src_type. */
int vf_check_interleaved(int32_t src_type, int32_t packed_type, const uint8_t *packed,
                         const uint8_t *original, uint8_t *rebuilt, int64_t n_rows, int64_t ne0,
                         int32_t layout, int32_t values, vf_mismatch *m);

/* The same for a tensor in one of upstream's CPU_REPACK layouts (variant src_type, nb_cols, inter;
   n_rows a multiple of nb_cols): cr_unpack for the bytes, cr_pack for the layout, cr_dequantize
   against the source decoder for the values, a row group at a time. */
int vf_check_cpu_repack(int32_t src_type, int32_t nb_cols, int32_t inter, const uint8_t *packed,
                        const uint8_t *original, uint8_t *rebuilt, int64_t n_rows, int64_t ne0,
                        int32_t layout, int32_t values, vf_mismatch *m);

#endif
