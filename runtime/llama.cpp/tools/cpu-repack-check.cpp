// cpu-repack-check: runs upstream llama.cpp's own CPU_REPACK kernels on a cpu-repack file, for
// amx-repack's tests on CPUs the tests cannot run on natively (ARM under qemu-user).
//
//   cpu-repack-check ORIGINAL.gguf OURS.gguf [MAX_TENSORS]
//
// For each tensor OURS holds in a cpu-repack type (at most MAX_TENSORS, in file order), the same
// product is computed three ways on the same activations:
//   reference: the ORIGINAL tensor set into upstream's CPU_REPACK buffer, which repacks it at load
//              (stock llama.cpp's path);
//   ours:      the OURS tensor read in place from the file mapped read-only (patch 0003's path);
//   plain:     the ORIGINAL tensor in a plain CPU buffer (the generic kernels: a sanity bound).
// 2-D weights by MUL_MAT for 1 and 13 tokens (gemv, and gemm with a gemv tail); 3-D experts by
// MUL_MAT_ID, with the activations shared by a token's slots and with one row per slot.
// ours must equal reference bit for bit. Prints one line per product, then a summary; exit 0 when
// every product is bit-identical, 1 on a mismatch, 3 when this CPU refuses a tensor (the runtime's
// own line is on stderr), 2 on bad usage or input.
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

[[noreturn]] static void die(const std::string & msg, int code = 2) {
    fprintf(stderr, "cpu-repack-check: %s\n", msg.c_str());
    exit(code);
}

static ggml_backend_buffer_type_t cpu_repack_buffer_type() {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t)
        ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts");
    for (ggml_backend_buffer_type_t * b = get_extra ? get_extra(cpu) : nullptr; b && *b; ++b) {
        if (strcmp(ggml_backend_buft_name(*b), "CPU_REPACK") == 0) {
            return *b;
        }
    }
    die("this ggml-cpu has no CPU_REPACK buffer type");
}

static ggml_context * new_context(int n_tensors) {
    ggml_init_params params = { ggml_tensor_overhead() * n_tensors + 1024, nullptr, true };
    return ggml_init(params);
}

// a GGUF file's header (tensor infos as no_alloc ggml tensors) and its bytes mapped read-only
struct model_file {
    std::string path;
    gguf_context * gguf = nullptr;
    ggml_context * meta = nullptr;
    const char * data = nullptr;
    size_t size = 0;

    explicit model_file(const std::string & p) : path(p) {
        gguf_init_params params = { true, &meta };
        gguf = gguf_init_from_file(p.c_str(), params);
        if (!gguf) {
            die("cannot read " + p + " as GGUF");
        }
        const int fd = open(p.c_str(), O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            die("cannot open " + p);
        }
        size = (size_t) st.st_size;
        void * map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        if (map == MAP_FAILED) {
            die("cannot map " + p);
        }
        data = (const char *) map;
    }

    const char * tensor_data(const char * name) const {
        const int64_t id = gguf_find_tensor(gguf, name);
        const size_t offset = gguf_get_data_offset(gguf) + gguf_get_tensor_offset(gguf, id);
        if (offset + gguf_get_tensor_size(gguf, id) > size) {
            die(path + ": tensor " + name + " runs past the end of the file");
        }
        return data + offset;
    }
};

// deterministic activations in [-1, 1)
static void fill_activations(std::vector<float> & x, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1;
    for (float & v : x) {
        s ^= s << 13; s ^= s >> 17; s ^= s << 5;
        v = (float) ((double) s / 2147483648.0 - 1.0);
    }
}

static std::vector<float> compute(ggml_backend_t cpu, ggml_tensor * y) {
    ggml_context * ctx_graph = new_context(GGML_DEFAULT_GRAPH_SIZE + 16);
    ggml_cgraph * graph = ggml_new_graph(ctx_graph);
    ggml_build_forward_expand(graph, y);
    if (ggml_backend_graph_compute(cpu, graph) != GGML_STATUS_SUCCESS) {
        die("graph compute failed");
    }
    std::vector<float> result(ggml_nelements(y));
    ggml_backend_tensor_get(y, result.data(), 0, ggml_nbytes(y));
    ggml_free(ctx_graph);
    return result;
}

struct tally {
    int products = 0;
    int mismatches = 0;
};

// one product three ways; w_ref, w_ours and w_plain hold the same weight
static void check_product(ggml_backend_t cpu, const char * name, const char * what, ggml_tensor * w_ours,
                          ggml_tensor * y_ref, ggml_tensor * y_ours, ggml_tensor * y_plain, tally & t) {
    if (!ggml_backend_dev_supports_op(ggml_backend_get_device(cpu), y_ours)) {
        printf("refused %s %s\n", name, ggml_type_name(w_ours->type));
        die(std::string("this CPU refuses tensor ") + name + " (" + ggml_type_name(w_ours->type) + ")", 3);
    }
    const std::vector<float> ref = compute(cpu, y_ref);
    const std::vector<float> ours = compute(cpu, y_ours);
    const std::vector<float> plain = compute(cpu, y_plain);
    double scale = 0.0, diff = 0.0;
    bool finite = true;
    for (size_t i = 0; i < plain.size(); ++i) {
        finite = finite && std::isfinite(ref[i]);
        scale = std::fmax(scale, std::fabs(plain[i]));
        diff = std::fmax(diff, std::fabs((double) ref[i] - plain[i]));
    }
    const bool same = memcmp(ref.data(), ours.data(), ref.size() * sizeof(float)) == 0;
    printf("%s %s %s %s max|y|=%.6g rel_to_plain=%.3g%s\n", same ? "identical" : "MISMATCH", name,
           ggml_type_name(w_ours->type), what, scale, scale > 0 ? diff / scale : 0.0, finite ? "" : " not-finite");
    t.products++;
    t.mismatches += !same;
}

static void check_tensor(ggml_backend_t cpu, const model_file & original, const model_file & ours,
                         ggml_tensor * w_ours, tally & t) {
    const char * name = ggml_get_name(w_ours);
    ggml_tensor * w_orig = ggml_get_tensor(original.meta, name);
    if (!w_orig || !ggml_are_same_shape(w_orig, w_ours)) {
        die(std::string("tensor ") + name + " is missing from the original or has another shape");
    }
    const int n_dims = ggml_n_dims(w_ours);

    // reference: upstream repacks the original bytes at load, into its own buffer
    ggml_context * ctx_ref = new_context(1);
    ggml_tensor * w_ref = ggml_dup_tensor(ctx_ref, w_orig);
    ggml_set_name(w_ref, name);
    ggml_backend_buffer_t buf_ref = ggml_backend_alloc_ctx_tensors_from_buft(ctx_ref, cpu_repack_buffer_type());
    if (!w_ref->extra) {
        die(std::string("upstream does not repack tensor ") + name + " (" + ggml_type_name(w_orig->type) +
            ") on this CPU", 3);
    }
    ggml_backend_tensor_set(w_ref, original.tensor_data(name), 0, ggml_nbytes(w_ref));

    // ours: read in place from the mapping, as the patched loader does
    ggml_context * ctx_ours = new_context(1);
    ggml_tensor * w_map = ggml_dup_tensor(ctx_ours, w_ours);
    ggml_backend_buffer_t buf_ours = ggml_backend_cpu_buffer_from_ptr((void *) ours.data, ours.size);
    ggml_backend_tensor_alloc(buf_ours, w_map, (void *) ours.tensor_data(name));

    const int64_t k = w_ours->ne[0];
    ggml_context * ctx = new_context(32);
    ggml_tensor * w_plain = ggml_dup_tensor(ctx, w_orig);
    struct product { std::string what; ggml_tensor * ref, * ours, * plain; std::vector<float> x; ggml_tensor * xt;
                     std::vector<int32_t> ids; ggml_tensor * idt; };
    std::vector<product> products;
    if (n_dims == 2) {
        for (int64_t n_tok : { 1, 13 }) {
            ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, n_tok);
            products.push_back({ "mul_mat tokens=" + std::to_string(n_tok), ggml_mul_mat(ctx, w_ref, x),
                                 ggml_mul_mat(ctx, w_map, x), ggml_mul_mat(ctx, w_plain, x),
                                 std::vector<float>(k * n_tok), x, {}, nullptr });
        }
    } else if (n_dims == 3) {
        const int64_t n_exp = w_ours->ne[2];
        const int64_t n_used = n_exp < 2 ? n_exp : 2;
        const int64_t n_tok = 6;
        for (int64_t ne11 : { (int64_t) 1, n_used }) {
            ggml_tensor * x = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, k, ne11, n_tok);
            ggml_tensor * ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_used, n_tok);
            std::vector<int32_t> id_values;
            for (int64_t tok = 0; tok < n_tok; ++tok) {
                const int64_t first = (tok * 7 + 1) % n_exp;
                for (int64_t s = 0; s < n_used; ++s) {
                    // distinct experts per token, every expert reached over the tokens
                    id_values.push_back((int32_t) ((first + s * (1 + tok % (n_exp > 1 ? n_exp - 1 : 1))) % n_exp));
                }
            }
            products.push_back({ "mul_mat_id tokens=6 rows_per_token=" + std::to_string(ne11),
                                 ggml_mul_mat_id(ctx, w_ref, x, ids), ggml_mul_mat_id(ctx, w_map, x, ids),
                                 ggml_mul_mat_id(ctx, w_plain, x, ids), std::vector<float>(k * ne11 * n_tok), x,
                                 id_values, ids });
        }
    } else {
        die(std::string("tensor ") + name + " has " + std::to_string(n_dims) + " dimensions");
    }
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, cpu);
    ggml_backend_tensor_set(w_plain, original.tensor_data(name), 0, ggml_nbytes(w_plain));
    uint32_t seed = 1;
    for (product & p : products) {
        fill_activations(p.x, seed++);
        ggml_backend_tensor_set(p.xt, p.x.data(), 0, ggml_nbytes(p.xt));
        if (p.idt) {
            ggml_backend_tensor_set(p.idt, p.ids.data(), 0, ggml_nbytes(p.idt));
        }
        check_product(cpu, name, p.what.c_str(), w_map, p.ref, p.ours, p.plain, t);
    }
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    ggml_backend_buffer_free(buf_ours);
    ggml_free(ctx_ours);
    ggml_backend_buffer_free(buf_ref);
    ggml_free(ctx_ref);
}

int main(int argc, char ** argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s ORIGINAL.gguf OURS.gguf [MAX_TENSORS]\n", argv[0]);
        return 2;
    }
    const long max_tensors = argc == 4 ? atol(argv[3]) : -1;
    ggml_backend_load_all();
    const model_file original(argv[1]);
    const model_file ours(argv[2]);
    ggml_backend_t cpu = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
    if (!cpu) {
        die("no CPU backend");
    }
    ggml_backend_cpu_set_n_threads(cpu, 2);

    tally t;
    int tensors = 0;
    for (ggml_tensor * w = ggml_get_first_tensor(ours.meta); w; w = ggml_get_next_tensor(ours.meta, w)) {
        if (strncmp(ggml_type_name(w->type), "cpu_", 4) != 0) {
            continue;  // kept in its source type: the same bytes as the original
        }
        if (max_tensors >= 0 && tensors >= max_tensors) {
            break;
        }
        check_tensor(cpu, original, ours, w, t);
        tensors++;
    }
    printf("checked %d tensors, %d products: %d bit-identical, %d mismatched\n", tensors, t.products,
           t.products - t.mismatches, t.mismatches);
    ggml_backend_free(cpu);
    return tensors == 0 ? 2 : t.mismatches ? 1 : 0;
}
