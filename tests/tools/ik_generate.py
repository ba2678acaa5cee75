"""Greedy generation with ik_llama.cpp (the ik-llama-cpp-python wheel), one model per process.

    python tests/tools/ik_generate.py MODEL.gguf N_TOKENS "prompt"

Prints one JSON line: {"tokens": [...], "load_s": ..., "text": ...}. The model is loaded with
mmap on; the decoding loop is the one users run (``python -m repack.ik_generate``).
"""

import json
import sys
import time

from repack.ik_generate import greedy_tokens, load


def main() -> None:
    model_path, n_tokens, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    t0 = time.perf_counter()
    llm = load(model_path, n_ctx=256, n_threads=2)
    load_s = time.perf_counter() - t0
    out = list(greedy_tokens(llm, prompt, n_tokens, stop_at_eog=False))   # always N tokens
    print(json.dumps({"tokens": out, "load_s": load_s, "text": llm.detokenize(out)}))


if __name__ == "__main__":
    main()
