// Software emulation of the five Intel AMX tile intrinsics that upstream llama.cpp's AMX backend
// (ggml/src/ggml-cpu/amx/mmq.cpp) uses, so that its real AMX code can be compiled and run on
// AVX-512 VNNI machines without AMX.  FOR TESTS ONLY: it is orders of magnitude slower than the
// hardware and exists so a test suite can prove that upstream's kernels read our packed bytes
// correctly.  The user build (`build.sh` without --emulate-amx) never includes it.
//
// Force-included into the C++ sources of ggml-cpu (`-include amx_tile_emulation.h`) together with
// `-D__AMX_INT8__`, which is what upstream checks before compiling its AMX code.  No `-mamx-*`
// flags are passed, so the compiler can never emit a real tile instruction.
//
// Semantics follow the Intel SDM pseudocode (LDTILECFG, TILELOADD, TILESTORED, TILEZERO, TDPBSSD):
// 8 tiles of up to 16 rows x 64 bytes per thread; a load reads the configured rows x colsb and
// zeroes the rest of the tile; TDPBSSD accumulates signed-byte dot products of four into int32
// lanes with wrap-around, over the rows/colsb configured for its operands.
#pragma once

#ifdef __cplusplus

// Include everything whose declarations the macros below would otherwise rewrite.
#include <immintrin.h>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <sys/syscall.h>
#include <unistd.h>

namespace amx_tile_emulation {

struct tile_state {
    uint8_t  data[8][16][64];
    uint8_t  rows[8];
    uint16_t colsb[8];
    bool     configured;
};

inline tile_state & state() {
    static thread_local tile_state s = {};
    return s;
}

// Count of TDPBSSD executed in this process: lets a test prove the tile path really ran.
inline std::atomic<unsigned long long> & dpbssd_count() {
    static std::atomic<unsigned long long> count{0};
    return count;
}

[[noreturn]] inline void fault(const char * what) {
    // Real hardware raises #UD / #GP for these; a test build must fail loudly, not compute garbage.
    fprintf(stderr, "amx_tile_emulation: %s\n", what);
    abort();
}

inline void loadconfig(const void * config) {
    const uint8_t * cfg = (const uint8_t *) config;
    tile_state & s = state();
    if (cfg[0] != 1) {
        fault("LDTILECFG with a palette other than 1");
    }
    for (int t = 0; t < 8; ++t) {
        uint16_t colsb;
        memcpy(&colsb, cfg + 16 + 2 * t, sizeof(colsb));
        const uint8_t rows = cfg[48 + t];
        if (rows > 16 || colsb > 64) {
            fault("LDTILECFG with a shape beyond 16 rows x 64 bytes");
        }
        s.rows[t]  = rows;
        s.colsb[t] = colsb;
    }
    memset(s.data, 0, sizeof(s.data));
    s.configured = true;
}

inline void check(int t) {
    if (t < 0 || t > 7 || !state().configured) {
        fault("tile instruction without LDTILECFG or on a tile outside 0..7");
    }
}

inline void loadd(int t, const void * base, long stride) {
    check(t);
    tile_state & s = state();
    memset(s.data[t], 0, sizeof(s.data[t]));
    for (int r = 0; r < s.rows[t]; ++r) {
        memcpy(s.data[t][r], (const uint8_t *) base + r * stride, s.colsb[t]);
    }
}

inline void stored(int t, void * base, long stride) {
    check(t);
    const tile_state & s = state();
    for (int r = 0; r < s.rows[t]; ++r) {
        memcpy((uint8_t *) base + r * stride, s.data[t][r], s.colsb[t]);
    }
}

inline void zero(int t) {
    check(t);
    memset(state().data[t], 0, sizeof(state().data[t]));
}

inline void dpbssd(int dst, int a, int b) {
    check(dst); check(a); check(b);
    tile_state & s = state();
    const int m_rows = s.rows[dst];
    const int k_dwords = s.colsb[a] / 4;
    const int n_dwords = s.colsb[dst] / 4;
    for (int m = 0; m < m_rows; ++m) {
        uint32_t acc[16];
        memcpy(acc, s.data[dst][m], sizeof(acc));
        for (int k = 0; k < k_dwords; ++k) {
            const int8_t * av = (const int8_t *) &s.data[a][m][4 * k];
            const int8_t * brow = (const int8_t *) s.data[b][k];
            for (int n = 0; n < n_dwords; ++n) {
                const int8_t * bv = brow + 4 * n;
                const int32_t dot = av[0] * bv[0] + av[1] * bv[1] + av[2] * bv[2] + av[3] * bv[3];
                acc[n] += (uint32_t) dot;  // unsigned: wrap-around as the hardware does
            }
        }
        memset(s.data[dst][m], 0, 64);
        memcpy(s.data[dst][m], acc, 4 * n_dwords);
    }
    for (int m = m_rows; m < 16; ++m) {
        memset(s.data[dst][m], 0, 64);
    }
    dpbssd_count().fetch_add(1, std::memory_order_relaxed);
}

}  // namespace amx_tile_emulation

// Exported so that a test tool can read the count with dlsym() and prove the tiles were used.
extern "C" unsigned long long amx_tile_emulation_dpbssd_count(void);
extern "C" __attribute__((visibility("default"), used, weak))
unsigned long long amx_tile_emulation_dpbssd_count(void) {
    return amx_tile_emulation::dpbssd_count().load();
}

#undef _tile_loadconfig
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbssd
#define _tile_loadconfig(config)      amx_tile_emulation::loadconfig(config)
#define _tile_loadd(t, base, stride)  amx_tile_emulation::loadd((t), (base), (stride))
#define _tile_stored(t, base, stride) amx_tile_emulation::stored((t), (base), (stride))
#define _tile_zero(t)                 amx_tile_emulation::zero(t)
#define _tile_dpbssd(dst, a, b)       amx_tile_emulation::dpbssd((dst), (a), (b))

// The kernel grants AMX state only on CPUs that have it; the emulated tiles need no permission.
// AMX_TILE_EMULATION_DENY=1 makes the request fail as on a CPU without AMX, so tests can check
// how the runtime behaves there.
namespace amx_tile_emulation {
inline long request_permission() {
    const char * deny = getenv("AMX_TILE_EMULATION_DENY");
    return deny && deny[0] == '1' ? -1L : 0L;
}
}  // namespace amx_tile_emulation
#define syscall(nr, ...) ((nr) == SYS_arch_prctl ? amx_tile_emulation::request_permission() \
                                                 : syscall((nr), ##__VA_ARGS__))

#endif  // __cplusplus
