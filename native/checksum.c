#include "checksum.h"

#include <string.h>

static const uint64_t P1 = 0x9E3779B185EBCA87ULL;
static const uint64_t P2 = 0xC2B2AE3D27D4EB4FULL;
static const uint64_t P3 = 0x165667B19E3779F9ULL;
static const uint64_t P4 = 0x85EBCA77C2B2AE63ULL;
static const uint64_t P5 = 0x27D4EB2F165667C5ULL;

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* unaligned little-endian loads (the digest is defined on little-endian words) */
static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t load32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t lane_round(uint64_t acc, uint64_t input) {
    acc += input * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static inline uint64_t merge_round(uint64_t acc, uint64_t lane) {
    acc ^= lane_round(0, lane);
    return acc * P1 + P4;
}

void xxh64_reset(xxh64_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->acc[0] = seed + P1 + P2;
    s->acc[1] = seed + P2;
    s->acc[2] = seed;
    s->acc[3] = seed - P1;
}

static void consume_stripes(uint64_t acc[4], const uint8_t *p, int64_t n_stripes) {
    uint64_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int64_t i = 0; i < n_stripes; i++, p += 32) {
        a0 = lane_round(a0, load64(p));
        a1 = lane_round(a1, load64(p + 8));
        a2 = lane_round(a2, load64(p + 16));
        a3 = lane_round(a3, load64(p + 24));
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
}

void xxh64_update(xxh64_state *s, const uint8_t *data, int64_t len) {
    if (len <= 0) return;
    s->total_len += (uint64_t)len;
    if (s->pending_len) {                       /* complete the pending stripe first */
        int64_t take = 32 - s->pending_len;
        if (take > len) take = len;
        memcpy(s->pending + s->pending_len, data, (size_t)take);
        s->pending_len += (uint32_t)take;
        data += take;
        len -= take;
        if (s->pending_len < 32) return;
        consume_stripes(s->acc, s->pending, 1);
        s->pending_len = 0;
    }
    int64_t stripes = len / 32;
    consume_stripes(s->acc, data, stripes);
    data += stripes * 32;
    len -= stripes * 32;
    memcpy(s->pending, data, (size_t)len);
    s->pending_len = (uint32_t)len;
}

uint64_t xxh64_digest(const xxh64_state *s) {
    uint64_t h;
    if (s->total_len >= 32) {
        const uint64_t *a = s->acc;
        h = rotl64(a[0], 1) + rotl64(a[1], 7) + rotl64(a[2], 12) + rotl64(a[3], 18);
        for (int i = 0; i < 4; i++) h = merge_round(h, a[i]);
    } else {
        h = s->seed + P5;
    }
    h += s->total_len;
    const uint8_t *p = s->pending;
    uint32_t left = s->pending_len;
    for (; left >= 8; left -= 8, p += 8) {
        h ^= lane_round(0, load64(p));
        h = rotl64(h, 27) * P1 + P4;
    }
    if (left >= 4) {
        h ^= (uint64_t)load32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        left -= 4;
        p += 4;
    }
    for (; left > 0; left--, p++) {
        h ^= (uint64_t)(*p) * P5;
        h = rotl64(h, 11) * P1;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}
