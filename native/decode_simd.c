/* Run-time dispatch between the portable float decoders and hand-written AVX2 / AVX-512 ones for
 * the hot types (source Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS; their AMX tiles; interleaved
 * Q4_0_R8, Q8_0_R8, Q4_K_R4, Q6_K_R4, IQ4_XS_R8).
 *
 * One portable build: the SIMD functions are compiled for their instruction set by target pragmas
 * (no -march flags), and used only when the CPU reports it (__builtin_cpu_supports, which also
 * checks the OS saves the wider registers). The path is chosen when the module loads (a
 * constructor): the best one the CPU has, or AMX_REPACK_SIMD=portable|avx2|avx512 (see simd.h).
 * The portable C of blocks.c / amx.c stays the reference and the fallback; the SIMD decoders are
 * written to give the same bits (decode_simd_isa.h says how) and tests/test_decode_simd.py runs
 * every golden vector and random blocks with special scales through each path.
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "decode_simd.h"
#include "simd.h"

#include <stdlib.h>
#include <string.h>

enum { PATH_PORTABLE, PATH_AVX2, PATH_AVX512, PATH_COUNT };
static const char *const PATH_NAMES[PATH_COUNT] = {"portable", "avx2", "avx512"};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_SIMD 1
#include <immintrin.h>

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* AVX2 with F16C; FMA is deliberately not enabled (no contraction can occur). */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,f16c")
#endif
#define ISA(name) name##_avx2
#define ISA_WIDTH 8
#include "decode_simd_isa.h"
#undef ISA
#undef ISA_WIDTH
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* AVX-512 (F + BW + VL; the compiler may know FMA here, hence fp-contract off above). */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,f16c")
#endif
#define ISA(name) name##_avx512
#define ISA_WIDTH 16
#include "decode_simd_isa.h"
#undef ISA
#undef ISA_WIDTH
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

static int cpu_has(int path) {
    __builtin_cpu_init();
    switch (path) {
    case PATH_PORTABLE: return 1;
    case PATH_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    case PATH_AVX512:
        return cpu_has(PATH_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    default: return 0;
    }
}
#else
static int cpu_has(int path) { return path == PATH_PORTABLE; }
#endif

static int selected = PATH_PORTABLE;

static int path_by_name(const char *name) {
    for (int p = 0; p < PATH_COUNT; ++p)
        if (name && strcmp(name, PATH_NAMES[p]) == 0) return p;
    return -1;
}

/* At load: AMX_REPACK_SIMD names the path (unset, empty or unknown: automatic); a path this CPU
   lacks falls back to the best one below it. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((constructor))
#endif
static void simd_select_at_load(void) {
    int want = path_by_name(getenv("AMX_REPACK_SIMD"));
    if (want < 0) want = PATH_COUNT - 1;
    while (want > PATH_PORTABLE && !cpu_has(want)) --want;
    selected = want;
}

const char *simd_path_name(void) { return PATH_NAMES[selected]; }

int simd_force(const char *name) {
    const int p = path_by_name(name);
    if (p < 0) return -1;
    if (!cpu_has(p)) return -2;
    selected = p;
    return 0;
}

/* The selected path's decoder of a type (NULL: portable, or no SIMD decoder for it). */
#ifdef HAVE_X86_SIMD
#define SELECTED(lookup, id)                                           \
    (selected == PATH_AVX512 ? lookup##_avx512(id) :                   \
     selected == PATH_AVX2 ? lookup##_avx2(id) : NULL)
#else
#define SELECTED(lookup, id) ((void)(id), NULL)
#endif

simd_rows_fn simd_source_rows(int32_t type_id) { return SELECTED(source_rows, type_id); }
simd_group_fn simd_interleaved_group(int32_t type_id) { return SELECTED(interleaved_group, type_id); }
simd_tile_fn simd_amx_tile(int32_t src_type) { return SELECTED(amx_tile, src_type); }
int simd_vector_moves(void) { return selected != PATH_PORTABLE; }
