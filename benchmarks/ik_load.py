"""Model load time in ik_llama.cpp (the ik-llama-cpp-python wheel), one load per process.

    python benchmarks/ik_load.py MODEL.gguf mmap        # pre-repacked file: mmap, nothing to do
    python benchmarks/ik_load.py MODEL.gguf rtr         # original file: run-time repack (-rtr),
                                                        # which turns mmap off

Prints one line: "<seconds>". benchmarks/run.py calls it and reports peak RSS alongside.
"""

import sys
import time


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    from ik_llama_cpp import _ctypes_api as C

    C.llama_backend_init()
    params = C.llama_model_default_params()
    params.use_mmap = mode == "mmap"
    params.repack_tensors = mode == "rtr"
    t0 = time.perf_counter()
    model = C.llama_model_load_from_file(path.encode(), params)
    seconds = time.perf_counter() - t0
    if not model:
        sys.exit(f"failed to load {path}")
    C.llama_free_model(model)
    print(f"{seconds:.3f}")


if __name__ == "__main__":
    main()
