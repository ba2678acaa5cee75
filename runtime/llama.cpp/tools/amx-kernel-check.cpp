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
//   amx-kernel-check quantize TYPE N K X.bin OUT.bin
//       the N x K f32 matrix of X.bin quantized to TYPE by ggml (ggml_quantize_chunk) into OUT.bin.
//   amx-kernel-check mul_mat_id TYPE N K E NE11 NIDS T ORIG.bin PACKED.bin X.bin IDS.bin OUT.bin
//       MUL_MAT_ID of E experts (N x K each, ORIG.bin; PACKED.bin: the same packed slice by slice)
//       on activations X (T tokens x NE11 rows x K, f32; NE11 = 1: one row shared by a token's
//       slots) routed by IDS (T x NIDS int32 expert ids); out: 3 x T x NIDS x N f32, computed as
//       (1) upstream's own 2-D path: each expert's slice packed at load in an AMX buffer, one
//       MUL_MAT per expert on exactly the rows routed to it (in token order), scattered back;
//       (2) MUL_MAT_ID on PACKED.bin mapped read-only (amx_TYPE); (3) the stock CPU MUL_MAT_ID
//       on ORIG.bin. Prints the emulated tile-op count of each.
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

// a packed tensor read in place from a file, as the patched loader reads it from the model's mapping
struct mapped_file {
    int fd;
    void * data;
    size_t size;
    ggml_backend_buffer_t buf;

    void release() {
        ggml_backend_buffer_free(buf);
        munmap(data, size);
        close(fd);
    }
};

static mapped_file map_into(const std::string & path, ggml_tensor * t) {
    const int fd = open(path.c_str(), O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || (size_t) st.st_size != ggml_nbytes(t)) {
        die("PACKED.bin is missing or has the wrong size");
    }
    void * data = mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
        die("cannot map " + path);
    }
    ggml_backend_buffer_t buf = ggml_backend_cpu_buffer_from_ptr(data, st.st_size);
    ggml_backend_tensor_alloc(buf, t, data);
    return { fd, data, (size_t) st.st_size, buf };
}

// one graph with one result on the CPU backend; returns the tile ops it took
static long long compute(ggml_backend_t cpu, ggml_tensor * y, std::vector<char> & result) {
    ggml_context * ctx_graph = new_context(GGML_DEFAULT_GRAPH_SIZE + 16);
    ggml_cgraph * graph = ggml_new_graph(ctx_graph);
    ggml_build_forward_expand(graph, y);
    const long long before = tile_ops();
    if (ggml_backend_graph_compute(cpu, graph) != GGML_STATUS_SUCCESS) {
        die("graph compute failed");
    }
    const long long ops = before < 0 ? -1 : tile_ops() - before;
    result.resize(ggml_nbytes(y));
    ggml_backend_tensor_get(y, result.data(), 0, result.size());
    ggml_free(ctx_graph);
    return ops;
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

    mapped_file packed = map_into(packed_path, w_map);

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
        std::vector<char> result;
        const long long ops = compute(cpu, y, result);
        printf("tile_ops %s %lld\n", y == y_amx ? "amx_buffer" : y == y_map ? "mapped" : "stock_cpu", ops);
        out.write(result.data(), result.size());
    }
    if (!out.good()) {
        die("cannot write " + out_path);
    }
    ggml_backend_buffer_free(buf_rest);
    ggml_backend_buffer_free(buf_amx);
    packed.release();
    ggml_free(ctx);
    ggml_free(ctx_amx);
    ggml_backend_free(cpu);
}

static void quantize(const std::string & type_name, int64_t n, int64_t k, const std::string & x_path,
                     const std::string & out_path) {
    const ggml_type type = type_by_name(type_name);
    const std::vector<char> x = read_file(x_path);
    if (x.size() != (size_t) (n * k) * sizeof(float)) {
        die("X.bin has the wrong size");
    }
    std::vector<char> q(ggml_row_size(type, k) * n);
    ggml_quantize_chunk(type, (const float *) x.data(), q.data(), 0, n, k, nullptr);
    std::ofstream out(out_path, std::ios::binary);
    out.write(q.data(), q.size());
    if (!out.good()) {
        die("cannot write " + out_path);
    }
}

static void mul_mat_id(const std::string & type_name, int64_t n, int64_t k, int64_t n_exp, int64_t ne11,
                       int64_t n_ids, int64_t n_tok, const std::string & orig_path, const std::string & packed_path,
                       const std::string & x_path, const std::string & ids_path, const std::string & out_path) {
    const ggml_type type = type_by_name(type_name);
    const ggml_type packed_type = type_by_name("amx_" + type_name);
    ggml_backend_t cpu = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(cpu, 2);

    const std::vector<char> orig = read_file(orig_path);
    const std::vector<char> xs = read_file(x_path);
    const std::vector<char> id_bytes = read_file(ids_path);
    const size_t slice = ggml_row_size(type, k) * n;
    if (orig.size() != slice * n_exp || xs.size() != (size_t) (k * ne11 * n_tok) * sizeof(float) ||
        id_bytes.size() != (size_t) (n_ids * n_tok) * sizeof(int32_t)) {
        die("ORIG.bin, X.bin or IDS.bin has the wrong size");
    }
    const int32_t * ids_data = (const int32_t *) id_bytes.data();
    std::ofstream out(out_path, std::ios::binary);

    // (1) upstream's 2-D AMX path, per expert, on its load-time packing of that expert's slice
    {
        std::vector<float> y((size_t) (n * n_ids * n_tok), 0.0f);
        long long ops = 0;
        for (int64_t e = 0; e < n_exp; ++e) {
            std::vector<std::pair<int64_t, int64_t>> routed;   // (token, slot), token order
            for (int64_t t = 0; t < n_tok; ++t) {
                for (int64_t s = 0; s < n_ids; ++s) {
                    if (ids_data[t * n_ids + s] == e) {
                        routed.push_back({ t, s });
                    }
                }
            }
            if (routed.empty()) {
                continue;
            }
            const int64_t m = (int64_t) routed.size();
            ggml_context * ctx_amx = new_context(1);
            ggml_tensor * w = ggml_new_tensor_2d(ctx_amx, type, k, n);
            ggml_backend_buffer_t buf_amx = ggml_backend_alloc_ctx_tensors_from_buft(ctx_amx, amx_buffer_type());
            ggml_backend_tensor_set(w, orig.data() + e * slice, 0, slice);
            ggml_context * ctx = new_context(4);
            ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
            ggml_tensor * ye = ggml_mul_mat(ctx, w, x);
            ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, cpu);
            for (int64_t r = 0; r < m; ++r) {
                const int64_t row = routed[r].first * ne11 + routed[r].second % ne11;
                ggml_backend_tensor_set(x, xs.data() + row * k * sizeof(float), r * k * sizeof(float), k * sizeof(float));
            }
            std::vector<char> result;
            ops += compute(cpu, ye, result);
            for (int64_t r = 0; r < m; ++r) {
                memcpy(&y[(routed[r].first * n_ids + routed[r].second) * n], result.data() + r * n * sizeof(float),
                       n * sizeof(float));
            }
            ggml_backend_buffer_free(buf);
            ggml_free(ctx);
            ggml_backend_buffer_free(buf_amx);
            ggml_free(ctx_amx);
        }
        printf("tile_ops per_expert_2d %lld\n", ops);
        out.write((const char *) y.data(), y.size() * sizeof(float));
    }

    // (2) and (3): MUL_MAT_ID on the mapped packed experts, and on the originals by the stock CPU
    ggml_context * ctx = new_context(8);
    ggml_tensor * w_cpu = ggml_new_tensor_3d(ctx, type, k, n, n_exp);
    ggml_tensor * x = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, k, ne11, n_tok);
    ggml_tensor * ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_ids, n_tok);
    ggml_tensor * w_map = ggml_new_tensor_3d(ctx, packed_type, k, n, n_exp);

    mapped_file packed = map_into(packed_path, w_map);

    ggml_tensor * y_map = ggml_mul_mat_id(ctx, w_map, x, ids);
    ggml_tensor * y_cpu = ggml_mul_mat_id(ctx, w_cpu, x, ids);
    ggml_backend_buffer_t buf_rest = ggml_backend_alloc_ctx_tensors(ctx, cpu);
    ggml_backend_tensor_set(w_cpu, orig.data(), 0, orig.size());
    ggml_backend_tensor_set(x, xs.data(), 0, xs.size());
    ggml_backend_tensor_set(ids, id_bytes.data(), 0, id_bytes.size());
    for (ggml_tensor * y : { y_map, y_cpu }) {
        std::vector<char> result;
        const long long ops = compute(cpu, y, result);
        printf("tile_ops %s %lld\n", y == y_map ? "mapped" : "stock_cpu", ops);
        out.write(result.data(), result.size());
    }
    if (!out.good()) {
        die("cannot write " + out_path);
    }
    ggml_backend_buffer_free(buf_rest);
    packed.release();
    ggml_free(ctx);
    ggml_backend_free(cpu);
}

int main(int argc, char ** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "pack" && argc == 5) {
        pack(argv[2], argv[3], argv[4]);
    } else if (mode == "matmul" && argc == 10) {
        matmul(argv[2], atoll(argv[3]), atoll(argv[4]), atoll(argv[5]), argv[6], argv[7], argv[8], argv[9]);
    } else if (mode == "quantize" && argc == 7) {
        quantize(argv[2], atoll(argv[3]), atoll(argv[4]), argv[5], argv[6]);
    } else if (mode == "mul_mat_id" && argc == 14) {
        mul_mat_id(argv[2], atoll(argv[3]), atoll(argv[4]), atoll(argv[5]), atoll(argv[6]), atoll(argv[7]),
                   atoll(argv[8]), argv[9], argv[10], argv[11], argv[12], argv[13]);
    } else {
        fprintf(stderr, "usage: %s pack ORIGINAL.gguf MANIFEST OUT.bin\n"
                        "       %s matmul TYPE N K M ORIG.bin PACKED.bin X.bin OUT.bin\n"
                        "       %s quantize TYPE N K X.bin OUT.bin\n"
                        "       %s mul_mat_id TYPE N K E NE11 NIDS T ORIG.bin PACKED.bin X.bin IDS.bin OUT.bin\n",
                argv[0], argv[0], argv[0], argv[0]);
        return 2;
    }
    return 0;
}
