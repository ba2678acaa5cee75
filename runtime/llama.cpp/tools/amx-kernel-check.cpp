// amx-kernel-check: runs upstream llama.cpp's own AMX code on given bytes, for amx-repack's tests.
//
//   amx-kernel-check pack ORIGINAL.gguf MANIFEST OUT.bin
//       MANIFEST lines "TYPE N K OFFSET": the tensor of TYPE (ggml name, e.g. q4_K) with N rows of K
//       elements at byte OFFSET of ORIGINAL.gguf is packed by upstream's AMX buffer (set_tensor ->
//       ggml_backend_amx_convert_weight) and its packed bytes are appended to OUT.bin.
//   amx-kernel-check matmul TYPE N K M ORIG.bin PACKED.bin X.bin OUT.bin
//       Y = X (M x K, f32) times the weight (N x K), computed three ways and written to OUT.bin one
//       after the other (3 x M x N f32): the weight packed at load by the AMX buffer (upstream's
//       path), the pre-packed bytes of PACKED.bin mapped read-only and read in place (amx_TYPE),
//       and the stock CPU kernels on the original bytes. Prints the emulated tile-op count of each.
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

[[noreturn]] static void die(const std::string & msg) {
    fprintf(stderr, "amx-kernel-check: %s\n", msg.c_str());
    exit(1);
}

static ggml_type type_by_name(const std::string & name) {
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        if (ggml_type_name((ggml_type) t) == name) {
            return (ggml_type) t;
        }
    }
    die("unknown type " + name);
}

static ggml_backend_buffer_type_t amx_buffer_type() {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t)
        ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts");
    for (ggml_backend_buffer_type_t * b = get_extra ? get_extra(cpu) : nullptr; b && *b; ++b) {
        if (strcmp(ggml_backend_buft_name(*b), "AMX") == 0) {
            return *b;
        }
    }
    die("this ggml-cpu has no AMX buffer type (built without AMX, or the CPU lacks it)");
}

static long long tile_ops() {
    auto count = (unsigned long long (*)()) dlsym(RTLD_DEFAULT, "amx_tile_emulation_dpbssd_count");
    return count ? (long long) count() : -1;  // -1: real tiles, nothing counted
}

static std::vector<char> read_file(const std::string & path, size_t offset = 0, size_t size = SIZE_MAX) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        die("cannot open " + path);
    }
    if (size == SIZE_MAX) {
        f.seekg(0, std::ios::end);
        size = (size_t) f.tellg() - offset;
    }
    std::vector<char> data(size);
    f.seekg(offset);
    if (!f.read(data.data(), size)) {
        die("short read from " + path);
    }
    return data;
}

static ggml_context * new_context(int n_tensors) {
    ggml_init_params params = { ggml_tensor_overhead() * n_tensors + 1024, nullptr, true };
    return ggml_init(params);
}

// upstream's own packing: set_tensor into an AMX buffer, then read the buffer's bytes directly
// (the AMX buffer has no get_tensor; its memory is host memory)
static void pack(const std::string & model, const std::string & manifest, const std::string & out_path) {
    ggml_backend_buffer_type_t amx = amx_buffer_type();
    std::ifstream lines(manifest);
    std::ofstream out(out_path, std::ios::binary);
    std::string type_name;
    int64_t n, k;
    size_t offset;
    int count = 0;
    while (lines >> type_name >> n >> k >> offset) {
        ggml_context * ctx = new_context(1);
        ggml_tensor * w = ggml_new_tensor_2d(ctx, type_by_name(type_name), k, n);
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(ctx, amx);
        const std::vector<char> src = read_file(model, offset, ggml_nbytes(w));
        ggml_backend_tensor_set(w, src.data(), 0, src.size());
        out.write((const char *) w->data, ggml_backend_buft_get_alloc_size(amx, w));
        ggml_backend_buffer_free(buf);
        ggml_free(ctx);
        ++count;
    }
    if (!out.good()) {
        die("cannot write " + out_path);
    }
    printf("packed %d tensors\n", count);
}

static void matmul(const std::string & type_name, int64_t n, int64_t k, int64_t m, const std::string & orig_path,
                   const std::string & packed_path, const std::string & x_path, const std::string & out_path) {
    const ggml_type type = type_by_name(type_name);
    const ggml_type packed_type = type_by_name("amx_" + type_name);
    ggml_backend_t cpu = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(cpu, 2);

    // the weight three times: in an AMX buffer, mapped pre-packed, in a plain CPU buffer
    ggml_context * ctx_amx = new_context(1);
    ggml_tensor * w_amx = ggml_new_tensor_2d(ctx_amx, type, k, n);
    ggml_backend_buffer_t buf_amx = ggml_backend_alloc_ctx_tensors_from_buft(ctx_amx, amx_buffer_type());
    const std::vector<char> orig = read_file(orig_path);
    if (orig.size() != ggml_nbytes(w_amx)) {
        die("ORIG.bin has the wrong size");
    }
    ggml_backend_tensor_set(w_amx, orig.data(), 0, orig.size());

    ggml_context * ctx = new_context(8);
    ggml_tensor * w_cpu = ggml_new_tensor_2d(ctx, type, k, n);
    ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
    ggml_tensor * w_map = ggml_new_tensor_2d(ctx, packed_type, k, n);

    const int fd = open(packed_path.c_str(), O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || (size_t) st.st_size != ggml_nbytes(w_map)) {
        die("PACKED.bin is missing or has the wrong size");
    }
    void * mapped = mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) {
        die("cannot map " + packed_path);
    }
    ggml_backend_buffer_t buf_map = ggml_backend_cpu_buffer_from_ptr(mapped, st.st_size);
    ggml_backend_tensor_alloc(buf_map, w_map, mapped);

    ggml_tensor * y_amx = ggml_mul_mat(ctx, w_amx, x);
    ggml_tensor * y_map = ggml_mul_mat(ctx, w_map, x);
    ggml_tensor * y_cpu = ggml_mul_mat(ctx, w_cpu, x);
    ggml_backend_buffer_t buf_rest = ggml_backend_alloc_ctx_tensors(ctx, cpu);
    ggml_backend_tensor_set(w_cpu, orig.data(), 0, orig.size());
    const std::vector<char> xs = read_file(x_path);
    if (xs.size() != ggml_nbytes(x)) {
        die("X.bin has the wrong size");
    }
    ggml_backend_tensor_set(x, xs.data(), 0, xs.size());

    std::ofstream out(out_path, std::ios::binary);
    for (ggml_tensor * y : { y_amx, y_map, y_cpu }) {
        ggml_context * ctx_graph = new_context(GGML_DEFAULT_GRAPH_SIZE + 16);
        ggml_cgraph * graph = ggml_new_graph(ctx_graph);
        ggml_build_forward_expand(graph, y);
        const long long before = tile_ops();
        if (ggml_backend_graph_compute(cpu, graph) != GGML_STATUS_SUCCESS) {
            die("graph compute failed");
        }
        printf("tile_ops %s %lld\n", y == y_amx ? "amx_buffer" : y == y_map ? "mapped" : "stock_cpu",
               before < 0 ? -1 : tile_ops() - before);
        std::vector<char> result(ggml_nbytes(y));
        ggml_backend_tensor_get(y, result.data(), 0, result.size());
        out.write(result.data(), result.size());
        ggml_free(ctx_graph);
    }
    if (!out.good()) {
        die("cannot write " + out_path);
    }
    ggml_backend_buffer_free(buf_rest);
    ggml_backend_buffer_free(buf_map);
    ggml_backend_buffer_free(buf_amx);
    munmap(mapped, st.st_size);
    close(fd);
    ggml_free(ctx);
    ggml_free(ctx_amx);
    ggml_backend_free(cpu);
}

int main(int argc, char ** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "pack" && argc == 5) {
        pack(argv[2], argv[3], argv[4]);
    } else if (mode == "matmul" && argc == 10) {
        matmul(argv[2], atoll(argv[3]), atoll(argv[4]), atoll(argv[5]), argv[6], argv[7], argv[8], argv[9]);
    } else {
        fprintf(stderr, "usage: %s pack ORIGINAL.gguf MANIFEST OUT.bin\n"
                        "       %s matmul TYPE N K M ORIG.bin PACKED.bin X.bin OUT.bin\n", argv[0], argv[0]);
        return 2;
    }
    return 0;
}
