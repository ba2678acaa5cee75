"""MoE on the runtime: a qwen3moe model (built as tests/test_llama_moe.py builds it, here larger)
run by stock llama.cpp on the original, and by the patched runtime on our AMX file with the
experts kept and with them packed (patch 0002, MUL_MAT_ID on the tiles).

    python benchmarks/moe_runtime.py [--type Q4_K] [--embd 512] [--ff 512] [--experts 16] [--runs 3]

Per row (median of --runs, amx-generate -n 32 -t 1): load time, peak RSS, emulated tile ops of
the prompt and per decode token, and the process's CPU time per decode token (one thread, so other
processes on a shared machine move it less than wall time). On the emulated build, the tile counts
and load/RSS are what it measures; prompt times are not (tiles are emulated). The decode steps run
no tiles (one row per expert takes the AVX-512 VNNI kernel), so their CPU time is real.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import repack  # noqa: E402
import tests.test_llama_moe as moe  # noqa: E402
from benchmarks.runtime import load_build_module  # noqa: E402

FIELDS = ("load_ms", "decode_cpu_ms", "peak_rss_kib", "tile_ops_prompt", "tile_ops_decode")


def generate(bin_dir: Path, model: Path) -> dict:
    out = subprocess.run([bin_dir / "amx-generate", model, "-n", "32", "-t", "1", moe.PROMPT],
                         capture_output=True, text=True, errors="replace", check=True).stdout
    result = {k: float(re.search(rf"^{k}: (\S+)", out, re.M).group(1)) for k in FIELDS}
    result["steps"] = len(re.search(r"^tokens:(.*)$", out, re.M).group(1).split()) - 1
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--type", default="Q4_K", choices=moe.AMX_TYPES)
    ap.add_argument("--embd", type=int, default=512)
    ap.add_argument("--ff", type=int, default=512)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    moe.N_EMBD, moe.N_FF_EXP, moe.N_EXPERTS = args.embd, args.ff, args.experts
    build = load_build_module()
    stock, patched = build.build("emulate-amx-stock"), build.build("emulate-amx")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        original = moe.build_qwen3moe(work / "moe.gguf", args.type, stock, work)
        packed, kept = work / "amx.gguf", work / "amx-experts-kept.gguf"
        repack.convert(original, packed, layout="amx")
        repack.convert(original, kept, layout="amx", exclude=[r"_exps\."])
        print(f"qwen3moe {args.type}: n_embd {args.embd}, n_ff_exp {args.ff}, {args.experts} experts, "
              f"top-{moe.N_EXPERT_USED}, {moe.N_LAYER} layers, {original.stat().st_size / 2**20:.1f} MiB")
        print("| run | load ms | peak RSS MiB | tile ops, prompt | tile ops / decode token | decode CPU ms / token |")
        print("|---|---|---|---|---|---|")
        for label, bin_dir, model in (("stock, original (experts on CPU kernels)", stock, original),
                                      ("patched, amx file, experts kept", patched, kept),
                                      ("patched, amx file, experts packed", patched, packed)):
            runs = [generate(bin_dir, model) for _ in range(args.runs)]
            med = {k: statistics.median(r[k] for r in runs) for k in (*FIELDS, "steps")}
            print(f"| {label} | {med['load_ms']:.1f} | {med['peak_rss_kib'] / 1024:.1f} | "
                  f"{med['tile_ops_prompt']:.0f} | {med['tile_ops_decode'] / med['steps']:.0f} | "
                  f"{med['decode_cpu_ms'] / med['steps']:.2f} |")


if __name__ == "__main__":
    main()
