/* GGUF header scanning helpers for formats/gguf_container.py (which falls back to the same loop in
   Python without this module): a vocabulary is ~10^5 - 2.6 x 10^5 strings to step over, the larger
   part of `inspect`'s own time when done one struct.unpack at a time.
   This header is also the cffi declaration: apart from preprocessor lines it holds only prototypes. */
#ifndef AMX_REPACK_GGUF_SCAN_H
#define AMX_REPACK_GGUF_SCAN_H
#include <stdint.h>

/* Step over `count` GGUF strings (u64 little-endian length, then the bytes) starting at byte pos
   of buf, which is valid up to byte end. Returns the position after the last string, or -1 when a
   string (its length field or its bytes) runs past end. */
int64_t gguf_skip_strings(const uint8_t *buf, int64_t pos, int64_t end, uint64_t count);

#endif
