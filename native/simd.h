/* Which code path the float decoders of verify take: portable C, AVX2 or AVX-512 (decode_simd.c).
   The choice is made when the module loads: the best path the CPU supports, or the one named by the
   environment variable AMX_REPACK_SIMD (portable | avx2 | avx512; a path the CPU lacks falls back to
   the best one below it). Every path gives the same float32 bits. The non-portable paths also move
   AMX tiles' 4-bit codes a whole tile at a time (amx.c), with the same bytes.
   This header is also the cffi declaration (of every module that links decode_simd.c). */
#ifndef AMX_REPACK_SIMD_H
#define AMX_REPACK_SIMD_H

/* The path in use: "portable", "avx2" or "avx512". */
const char *simd_path_name(void);

/* Switch this module's decoders to a path (for tests and benchmarks; not while another thread
   decodes). Returns 0, -1 for an unknown name, -2 when this CPU (or this build) lacks the path. */
int simd_force(const char *name);

#endif
