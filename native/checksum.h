/* XXH64 (xxHash, 64-bit), streaming: the per-tensor digest amx-repack records at conversion and
   checks in verify/unpack. Written from the published algorithm description; checked against the
   reference implementation (the `xxhash` package) in tests/test_checksum.py. */
#ifndef AMX_REPACK_CHECKSUM_H
#define AMX_REPACK_CHECKSUM_H
#include <stdint.h>

typedef struct {
    uint64_t acc[4];       /* the four lane accumulators */
    uint64_t total_len;    /* bytes consumed so far */
    uint8_t pending[32];   /* bytes not yet forming a whole 32-byte stripe */
    uint32_t pending_len;
    uint64_t seed;
} xxh64_state;

void xxh64_reset(xxh64_state *s, uint64_t seed);
void xxh64_update(xxh64_state *s, const uint8_t *data, int64_t len);
uint64_t xxh64_digest(const xxh64_state *s);

#endif
