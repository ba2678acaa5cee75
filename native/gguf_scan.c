/* GGUF header scanning (see gguf_scan.h). */
#include "gguf_scan.h"

#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf_scan.c reads little-endian lengths with native loads"
#endif

int64_t gguf_skip_strings(const uint8_t *buf, int64_t pos, int64_t end, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++) {
        if (pos < 0 || end - pos < 8) return -1;
        uint64_t n;
        memcpy(&n, buf + pos, 8);
        pos += 8;
        if (n > (uint64_t)(end - pos)) return -1;
        pos += (int64_t)n;
    }
    return pos;
}
