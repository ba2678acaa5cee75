"""Greedy generation through llama-cpp-python (what amx-generate is for the C++ build).

    python python_generate.py MODEL [-n N] [-t THREADS] PROMPT

Run with the interpreter that has the llama_cpp to test installed. Prints one JSON line: the
llama_cpp version and the library it loaded, the generated token ids and text, the time from
``Llama(...)`` to the model being loaded and to the first generated token, and the process's peak
RSS (VmHWM, KiB). llama.cpp's own log goes to stderr (``verbose=True``), so the buffers and a
refusal's reason can be read there. Exit 1 with ``error: ...`` when llama_cpp cannot load the model.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path


def peak_rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("prompt")
    parser.add_argument("-n", type=int, default=12, help="tokens to generate")
    parser.add_argument("-t", "--threads", type=int, default=2)
    args = parser.parse_args()

    import llama_cpp

    start = time.perf_counter()
    try:
        llm = llama_cpp.Llama(model_path=args.model, n_ctx=256, n_threads=args.threads,
                              n_threads_batch=args.threads, verbose=True)
    except ValueError as e:  # llama_cpp's word for any model llama.cpp did not load
        print(f"error: {e}", file=sys.stderr)
        return 1
    loaded = time.perf_counter()
    tokens, first = [], None
    for token in llm.generate(llm.tokenize(args.prompt.encode(), add_bos=True), temp=0.0):
        if first is None:
            first = time.perf_counter()
        tokens.append(token)
        if len(tokens) == args.n:
            break
    print(json.dumps({
        "version": llama_cpp.__version__,
        "library": llama_cpp.llama_cpp._lib._name,
        "tokens": tokens,
        "text": llm.detokenize(tokens).decode(errors="replace"),
        "load_s": loaded - start,
        "first_token_s": first - start,
        "peak_rss_kib": peak_rss_kib(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
