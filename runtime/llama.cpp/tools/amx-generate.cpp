// amx-generate: greedy generation with llama.cpp, printing token ids and timings, so tests and the
// benchmark can compare a repacked model with its original exactly and measure load and first token.
//
//   amx-generate MODEL.gguf [-n N_PREDICT] [-t THREADS] [--load-mode mmap|none] [--no-repack]
//                [--force IDS] PROMPT
//
// --no-repack: no extra buffer types for the weights (llama-cli's --no-repack): the plain mmap load.
// --force ID,ID,...: teacher forcing: after each step the given token is fed instead of the
// greedy one ("tokens:" still lists each step's greedy choice), so two runtimes can be compared
// step by step on the same context.
//
// stdout: one line "tokens: id id ...", one "margins: m m ..." (each step's lead of the chosen
// logit over the runner-up), the text, then "load_ms: X", "first_token_ms: Y" (prompt
// processing plus the first sampled token), "decode_ms: Z", "peak_rss_kib: R" (VmHWM),
// "decode_cpu_ms: C" (the process's CPU time for the decode steps), "load_cpu_ms: L" (its CPU
// time up to the end of the load), "load_anon_kib: A" (private anonymous memory, RssAnon, right
// after the load: a repacked copy of the weights lives there) and "tile_ops_prompt: P",
// "tile_ops_decode: D": the emulated tile multiplications (TDPBSSD) of the prompt's decode and of
// the one-token decodes after it (-1: not an emulated-AMX build). Exit 1 when the model cannot be
// loaded.
#include "llama.h"

#include <dlfcn.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// a field of /proc/self/status in KiB, -1 if absent
static long status_kib(const char * field) {
    FILE * f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    const size_t len = strlen(field);
    while (f && fgets(line, sizeof(line), f)) {
        if (strncmp(line, field, len) == 0 && line[len] == ':' && sscanf(line + len + 1, "%ld", &kib) == 1) {
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    return kib;
}

// VmHWM: this process's own peak RSS. getrusage() would also count what the parent had mapped
// when it forked us (Linux keeps ru_maxrss across exec).
static long peak_rss_kib() {
    return status_kib("VmHWM");
}

// the tile emulation's counter (runtime/llama.cpp/amx_tile_emulation.h), -1 without it
static long long tile_ops() {
    auto count = (unsigned long long (*)()) dlsym(RTLD_DEFAULT, "amx_tile_emulation_dpbssd_count");
    return count ? (long long) count() : -1;
}

// how far the greedy choice is ahead of the runner-up: a step with a tiny margin may go either way
// between two correct kernels that only add in another order
static float top2_margin(const float * logits, int n) {
    float a = -INFINITY, b = -INFINITY;
    for (int i = 0; i < n; ++i) {
        if (logits[i] > a) {
            b = a;
            a = logits[i];
        } else if (logits[i] > b) {
            b = logits[i];
        }
    }
    return a - b;
}

// CPU time of the whole process: unlike wall time, hardly moved by other processes on the machine
static double process_cpu_ms() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    std::string model_path;
    std::string prompt;
    int n_predict = 16;
    int n_threads = 0;
    llama_load_mode load_mode = LLAMA_LOAD_MODE_MMAP;
    std::vector<llama_token> forced;
    bool use_extra_bufts = true;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "-n" && i + 1 < argc) {
            n_predict = atoi(argv[++i]);
        } else if (arg == "-t" && i + 1 < argc) {
            n_threads = atoi(argv[++i]);
        } else if (arg == "--load-mode" && i + 1 < argc) {
            const std::string mode = argv[++i];
            load_mode = mode == "none" ? LLAMA_LOAD_MODE_NONE : LLAMA_LOAD_MODE_MMAP;
        } else if (arg == "--no-repack") {
            use_extra_bufts = false;
        } else if (arg == "--force" && i + 1 < argc) {
            for (const char * p = argv[++i]; *p; ) {
                char * end;
                forced.push_back((llama_token) strtol(p, &end, 10));
                p = *end == ',' ? end + 1 : end + strlen(end);
            }
        } else if (model_path.empty()) {
            model_path = arg;
        } else {
            prompt += (prompt.empty() ? "" : " ") + arg;
        }
    }
    if (model_path.empty() || prompt.empty() || n_predict < 1) {
        fprintf(stderr, "usage: %s MODEL.gguf [-n N] [-t THREADS] [--load-mode mmap|none] [--no-repack] [--force IDS] PROMPT\n", argv[0]);
        return 2;
    }

    llama_backend_init();
    const auto t_load = std::chrono::steady_clock::now();
    llama_model_params model_params = llama_model_default_params();
    model_params.n_gpu_layers = 0;
    model_params.load_mode = load_mode;
    model_params.use_extra_bufts = use_extra_bufts;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), model_params);
    if (model == nullptr) {
        fprintf(stderr, "amx-generate: error: unable to load model %s\n", model_path.c_str());
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_prompt = -llama_tokenize(vocab, prompt.c_str(), prompt.size(), nullptr, 0, true, true);
    std::vector<llama_token> tokens(n_prompt);
    if (llama_tokenize(vocab, prompt.c_str(), prompt.size(), tokens.data(), tokens.size(), true, true) < 0) {
        fprintf(stderr, "amx-generate: error: failed to tokenize the prompt\n");
        return 1;
    }
    llama_context_params ctx_params = llama_context_default_params();
    ctx_params.n_ctx = n_prompt + n_predict;
    ctx_params.n_batch = n_prompt;
    if (n_threads > 0) {
        ctx_params.n_threads = n_threads;
        ctx_params.n_threads_batch = n_threads;
    }
    llama_context * ctx = llama_init_from_model(model, ctx_params);
    if (ctx == nullptr) {
        fprintf(stderr, "amx-generate: error: failed to create the context\n");
        return 1;
    }
    const double load_ms = ms_since(t_load);
    const long load_anon_kib = status_kib("RssAnon");
    const double load_cpu_ms = process_cpu_ms();

    llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());

    std::vector<llama_token> generated;
    std::vector<float> margins;
    const auto t_gen = std::chrono::steady_clock::now();
    double first_token_ms = 0.0;
    llama_batch batch = llama_batch_get_one(tokens.data(), tokens.size());
    llama_token next;
    const long long tile_ops_start = tile_ops();
    long long tile_ops_after_prompt = tile_ops_start;
    double cpu_ms_after_prompt = process_cpu_ms();
    for (int i = 0; i < n_predict; ++i) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "amx-generate: error: decode failed\n");
            return 1;
        }
        margins.push_back(top2_margin(llama_get_logits_ith(ctx, -1), llama_vocab_n_tokens(vocab)));
        next = llama_sampler_sample(smpl, ctx, -1);
        if (i == 0) {
            first_token_ms = ms_since(t_gen);
            tile_ops_after_prompt = tile_ops();
            cpu_ms_after_prompt = process_cpu_ms();
        }
        generated.push_back(next);
        if (i < (int) forced.size()) {
            next = forced[i];
        } else if (llama_vocab_is_eog(vocab, next)) {
            break;
        }
        batch = llama_batch_get_one(&next, 1);
    }
    const double decode_ms = ms_since(t_gen) - first_token_ms;
    const double decode_cpu_ms = process_cpu_ms() - cpu_ms_after_prompt;

    printf("tokens:");
    for (llama_token t : generated) {
        printf(" %d", t);
    }
    printf("\nmargins:");
    for (float m : margins) {
        printf(" %.6g", m);
    }
    printf("\ntext: ");
    for (llama_token t : generated) {
        char buf[256];
        const int n = llama_token_to_piece(vocab, t, buf, sizeof(buf), 0, true);
        if (n > 0) {
            fwrite(buf, 1, n, stdout);
        }
    }
    printf("\nload_ms: %.1f\nfirst_token_ms: %.1f\ndecode_ms: %.1f\npeak_rss_kib: %ld\n", load_ms,
           first_token_ms, decode_ms, peak_rss_kib());
    const long long tile_ops_end = tile_ops();
    printf("decode_cpu_ms: %.1f\nload_cpu_ms: %.1f\nload_anon_kib: %ld\n", decode_cpu_ms, load_cpu_ms, load_anon_kib);
    printf("tile_ops_prompt: %lld\ntile_ops_decode: %lld\n",
           tile_ops_start < 0 ? -1 : tile_ops_after_prompt - tile_ops_start,
           tile_ops_start < 0 ? -1 : tile_ops_end - tile_ops_after_prompt);

    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
