"""Greedy generation with ik_llama.cpp (the ik-llama-cpp-python wheel), one model per process.

    python tests/tools/ik_generate.py MODEL.gguf N_TOKENS "prompt"

Prints one JSON line: {"tokens": [...], "load_s": ..., "mmap": true}. The model is loaded with
mmap on; sampling is argmax over the logits (no Python loop over the vocabulary).
"""

import json
import sys
import time

import numpy as np


def main() -> None:
    model_path, n_tokens, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    from ik_llama_cpp import IkLlama
    from ik_llama_cpp import _ctypes_api as C
    from ik_llama_cpp._internals import make_batch_range, make_batch_single

    t0 = time.perf_counter()
    llm = IkLlama(model_path, n_ctx=256, n_threads=2, use_mmap=True, verbose=False)
    load_s = time.perf_counter() - t0
    ctx = llm._context
    n_vocab = llm._model.n_vocab
    tokens = llm.tokenize(prompt)
    batch = make_batch_range(tokens, pos_start=0, logits_last=True)
    assert ctx.decode(batch) == 0
    C.llama_batch_free(batch)
    out = []
    pos = len(tokens)
    for _ in range(n_tokens):
        logits = np.ctypeslib.as_array(C.llama_get_logits_ith(ctx.ctx, -1), shape=(n_vocab,))
        tok = int(np.argmax(logits))
        out.append(tok)
        batch = make_batch_single(tok, pos)
        assert ctx.decode(batch) == 0
        C.llama_batch_free(batch)
        pos += 1
    print(json.dumps({"tokens": out, "load_s": load_s, "text": llm.detokenize(out)}))


if __name__ == "__main__":
    main()
