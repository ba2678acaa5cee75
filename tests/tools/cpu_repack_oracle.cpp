// The oracle for amx-repack's cpu-repack family: upstream llama.cpp's own CPU_REPACK repacking, compiled
// from the pinned, unpatched ggml/src/ggml-cpu/repack.cpp, run on a raw buffer for a forced variant.
//
//   cpu-repack-oracle TYPE NB_COLS INTER NE0 NE1 NE2 < source-bytes > packed-bytes
//
// TYPE is a ggml type id (2 q4_0, 8 q8_0, 10 q2_K, 12 q4_K, 13 q5_K, 14 q6_K, 20 iq4_nl, 39 mxfp4,
// 41 q1_0); NB_COLS x INTER as in the variant names (q4_0_8x8 = 2 8 8, q4_K_8x4 = 12 8 4). The
// tensor is NE0 x NE1 x NE2 (3-D experts: NE2 > 1), its bytes in ggml's standard layout on stdin.
// The packed bytes go to stdout; exit 3 when upstream's repack refuses the shape (it returns -1),
// 2 on bad arguments.
//
// Built by tests/cpu_repack_oracle.py, which compiles this file with -I pointing into the pinned
// source. repack.cpp is #included so that its static make_block_* / repack_*_bl functions are
// callable; everything else it references (the matmul kernels, CPU feature queries, the buffer
// type) is unreachable from main, and the link drops it (-ffunction-sections -Wl,--gc-sections),
// which leaves ggml_nrows and ggml_abort to define below. The non-RISC-V
// variants go through upstream's own `repack<BLOCK, INTER_SIZE, NB_COLS>` specializations; the
// RISC-V 16x1 ones exist only under __riscv_zvfh, so their (unguarded) repack_*_16_bl functions are
// called with the interleave those specializations pass (1).
#include "ggml-cpu/repack.cpp"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <vector>

// The two libggml functions the repack path calls (ggml.c's, reduced to what they do here).
int64_t ggml_nrows(const struct ggml_tensor * t) {
    return t->ne[1] * t->ne[2] * t->ne[3];
}

void ggml_abort(const char * file, int line, const char * fmt, ...) {
    fprintf(stderr, "%s:%d: ", file, line);
    va_list args;
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    abort();
}

using ggml::cpu::repack::repack;

// Elements and bytes of one block (ggml-common.h), without libggml's type traits.
static bool block_info(int type, int64_t * qk, size_t * bytes) {
    switch (type) {
        case GGML_TYPE_Q1_0:   *qk = QK1_0;     *bytes = sizeof(block_q1_0);   return true;
        case GGML_TYPE_Q4_0:   *qk = QK4_0;     *bytes = sizeof(block_q4_0);   return true;
        case GGML_TYPE_Q8_0:   *qk = QK8_0;     *bytes = sizeof(block_q8_0);   return true;
        case GGML_TYPE_Q2_K:   *qk = QK_K;      *bytes = sizeof(block_q2_K);   return true;
        case GGML_TYPE_Q4_K:   *qk = QK_K;      *bytes = sizeof(block_q4_K);   return true;
        case GGML_TYPE_Q5_K:   *qk = QK_K;      *bytes = sizeof(block_q5_K);   return true;
        case GGML_TYPE_Q6_K:   *qk = QK_K;      *bytes = sizeof(block_q6_K);   return true;
        case GGML_TYPE_IQ4_NL: *qk = QK4_NL;    *bytes = sizeof(block_iq4_nl); return true;
        case GGML_TYPE_MXFP4:  *qk = QK_MXFP4;  *bytes = sizeof(block_mxfp4);  return true;
        default: return false;
    }
}

static int run(int type, int nb_cols, int inter, ggml_tensor * t, const void * data, size_t size) {
#define V(T, BLOCK, NC, IS) if (type == T && nb_cols == NC && inter == IS) return repack<BLOCK, IS, NC>(t, data, size)
    V(GGML_TYPE_Q1_0, block_q1_0, 4, 4);
    V(GGML_TYPE_Q1_0, block_q1_0, 4, 8);
    V(GGML_TYPE_Q4_0, block_q4_0, 4, 4);
    V(GGML_TYPE_Q4_0, block_q4_0, 4, 8);
    V(GGML_TYPE_Q4_0, block_q4_0, 8, 8);
    V(GGML_TYPE_Q4_K, block_q4_K, 8, 4);
    V(GGML_TYPE_Q4_K, block_q4_K, 8, 8);
    V(GGML_TYPE_Q5_K, block_q5_K, 8, 4);
    V(GGML_TYPE_Q5_K, block_q5_K, 8, 8);
    V(GGML_TYPE_Q6_K, block_q6_K, 8, 4);
    V(GGML_TYPE_Q6_K, block_q6_K, 8, 8);
    V(GGML_TYPE_Q2_K, block_q2_K, 8, 8);
    V(GGML_TYPE_IQ4_NL, block_iq4_nl, 4, 4);
    V(GGML_TYPE_IQ4_NL, block_iq4_nl, 8, 8);
    V(GGML_TYPE_MXFP4, block_mxfp4, 4, 4);
    V(GGML_TYPE_MXFP4, block_mxfp4, 8, 8);
    V(GGML_TYPE_Q8_0, block_q8_0, 4, 4);
    V(GGML_TYPE_Q8_0, block_q8_0, 4, 8);
#undef V
    if (nb_cols == 16 && inter == 1) {
        switch (type) {
            case GGML_TYPE_Q4_0:   return repack_q4_0_to_q4_0_16_bl(t, 1, data, size);
            case GGML_TYPE_Q4_K:   return repack_q4_K_to_q4_K_16_bl(t, 1, data, size);
            case GGML_TYPE_IQ4_NL: return repack_iq4_nl_to_iq4_nl_16_bl(t, 1, data, size);
            case GGML_TYPE_Q8_0:   return repack_q8_0_to_q8_0_16_bl(t, 1, data, size);
            case GGML_TYPE_Q2_K:   return repack_q2_K_to_q2_K_16_bl(t, 1, data, size);
            default: break;
        }
    }
    return -2;
}

int main(int argc, char ** argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s TYPE NB_COLS INTER NE0 NE1 NE2 < source > packed\n", argv[0]);
        return 2;
    }
    const int type = atoi(argv[1]), nb_cols = atoi(argv[2]), inter = atoi(argv[3]);
    ggml_tensor t = {};
    t.type = (ggml_type) type;
    t.ne[0] = atoll(argv[4]);
    t.ne[1] = atoll(argv[5]);
    t.ne[2] = atoll(argv[6]);
    t.ne[3] = 1;
    int64_t qk;
    size_t block_bytes;
    if (!block_info(type, &qk, &block_bytes) || t.ne[0] <= 0 || t.ne[1] <= 0 || t.ne[2] <= 0 ||
        t.ne[0] % qk) {
        fprintf(stderr, "bad shape or type\n");
        return 2;
    }
    const size_t size = (size_t) (t.ne[0] / qk) * block_bytes * t.ne[1] * t.ne[2];
    std::vector<uint8_t> src(size), dst(size);
    if (fread(src.data(), 1, size, stdin) != size || fgetc(stdin) != EOF) {
        fprintf(stderr, "expected exactly %zu bytes on stdin\n", size);
        return 2;
    }
    t.data = dst.data();
    const int rc = run(type, nb_cols, inter, &t, src.data(), size);
    if (rc == -2) {
        fprintf(stderr, "no such variant in repack.cpp\n");
        return 2;
    }
    if (rc != 0) return 3;
    return fwrite(dst.data(), 1, size, stdout) == size ? 0 : 1;
}
