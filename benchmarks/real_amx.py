"""The patched llama.cpp on a CPU with real AMX, against stock llama.cpp: the check CI cannot run
(its machines have no AMX; the test suite runs the same comparisons on emulated tiles).

    python benchmarks/real_amx.py make-models DIR --quantizer BIN   # anywhere (test extras)
    python benchmarks/real_amx.py run DIR [--source LLAMA_CPP_DIR]  # on a CPU with AMX

make-models: tiny qwen3moe models built by tests/test_llama_moe.py's builder (4 layers, 8 experts,
top-2, a byte-fallback vocabulary, matrices quantized by ggml's own quantizer: BIN is the folder
of any runtime build with `amx-kernel-check`, e.g. `python runtime/llama.cpp/build.py --avx2
--stock`), in Q4_0 and Q4_K, each converted with `--layout amx` twice: experts left unpacked
(`-amx-2d`) and packed (`-amx`).

run: builds runtime/llama.cpp/build.py's `amx` and `amx-stock` flavours for this CPU
(-march=native), the library and amx-generate only (under a minute on 16 cores), then generates
12 tokens greedily from each model: stock on the original (it repacks the 2-D weights into its
AMX buffer at load, the experts into CPU_REPACK), the patched build on our files (mapped, nothing
repacked), stock on our file (it must refuse it), and, as the measure of rounding noise, stock
on its plain CPU kernels (`--no-repack`) teacher-forced on stock's own tokens. Exits 1 unless
the 2-D file gives stock's tokens and margins exactly, stock refuses our file, and the file with
packed experts (whose MUL_MAT_ID runs on the tiles, where stock runs experts on its CPU kernels)
stays within 1.5x that noise when teacher-forced on stock's tokens.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QTYPES = ("Q4_0", "Q4_K")
PROMPT = "The capital of France is"
N_PREDICT = 12
NOISE_FACTOR = 1.5   # as tests/test_llama_moe.py


def make_models(folder: Path, quantizer: Path) -> None:
    import tempfile
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import repack
    from tests.test_llama_moe import build_qwen3moe
    folder.mkdir(parents=True, exist_ok=True)
    for q in QTYPES:
        with tempfile.TemporaryDirectory() as tmp:
            original = build_qwen3moe(folder / f"moe-{q}.gguf", q, quantizer, Path(tmp))
        repack.convert(original, folder / f"moe-{q}-amx.gguf", layout="amx", force=True)
        repack.convert(original, folder / f"moe-{q}-amx-2d.gguf", layout="amx", force=True,
                       exclude=[r"_exps\."])
        print(f"{q}: {original} and its two AMX files")


def build_both(source: Path | None) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("runtime_build", ROOT / "runtime" / "llama.cpp" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    lacking = build.cpu_lacks_amx()
    if lacking:
        sys.exit(f"real_amx: this CPU has no AMX ({lacking})")
    flags = ["-DGGML_NATIVE=ON", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
             "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_COMMON=OFF", "-DLLAMA_BUILD_APP=OFF"]
    for flavour in ("amx", "amx-stock"):   # the library alone (own cache folders: own digests)
        build.FLAVOURS[flavour] = {**build.FLAVOURS[flavour], "flags": flags, "targets": ["llama"],
                                   "tools": ["amx-generate"]}
    return {"patched": build.build("amx", source), "stock": build.build("amx-stock", source)}


def generate(bin_dir: Path, model: Path, *extra: str) -> dict:
    proc = subprocess.run([bin_dir / "amx-generate", model, "-n", str(N_PREDICT), "-t", "8", *extra,
                           PROMPT], capture_output=True, text=True, errors="replace")
    if proc.returncode:
        return {"refused": True, "why": proc.stderr.strip().splitlines()[-1:]}
    field = lambda name: re.search(rf"^{name}:(.*)$", proc.stdout, re.M).group(1).split()  # noqa: E731
    return {"refused": False, "tokens": field("tokens"), "margins": [float(m) for m in field("margins")],
            "load_ms": float(field("load_ms")[0]), "load_anon_kib": int(field("load_anon_kib")[0]),
            "buffers": re.findall(r"(\w+) model buffer size", proc.stderr),
            "repacked_at_load": len(re.findall(r"amx repack tensor", proc.stderr))}


def deviation(a: dict, b: dict) -> float:
    return max(abs(x - y) for x, y in zip(a["margins"], b["margins"]))


def check_model(bins: dict[str, Path], q: str, original: Path, ours: Path, ours_2d: Path
                ) -> tuple[bool, list[str]]:
    """One model's comparisons (the module's docstring): (passed, the lines that report them)."""
    stock = generate(bins["stock"], original)
    if stock["refused"]:
        return False, [f"{q}: stock failed on the original: {' '.join(stock['why'])}"]
    forced = ["--force", ",".join(stock["tokens"])]
    rows = {"stock, original": stock,
            "patched, original": generate(bins["patched"], original),
            "patched, ours (2-D packed)": generate(bins["patched"], ours_2d),
            "patched, ours (experts packed too)": generate(bins["patched"], ours),
            "stock, ours": generate(bins["stock"], ours)}
    lines = []
    for name, r in rows.items():
        lines.append(f"{q} | {name} | " + ("refused: " + " ".join(r["why"]) if r["refused"] else
                     f"tokens {' '.join(r['tokens'])} | load {r['load_ms']:.1f} ms, {r['load_anon_kib']} KiB "
                     f"anonymous | buffers {', '.join(r['buffers'])} | {r['repacked_at_load']} tensors "
                     f"repacked into AMX at load"))
    if any(r["refused"] for name, r in rows.items() if name != "stock, ours"):
        return False, lines
    noise = deviation(stock, generate(bins["stock"], original, "--no-repack", *forced))
    experts = deviation(stock, generate(bins["patched"], ours, *forced))
    two_d = rows["patched, ours (2-D packed)"]
    exact = two_d["margins"] == stock["margins"] and two_d["tokens"] == stock["tokens"]
    lines.append(f"{q}: 2-D file, tokens and margins equal to stock's: {exact}; stock refuses our file: "
                 f"{rows['stock, ours']['refused']}; teacher-forced margin difference: packed experts "
                 f"{experts:.4f}, stock's own CPU vs AMX kernels (noise) {noise:.4f}")
    ok = (exact and rows["stock, ours"]["refused"] and experts <= NOISE_FACTOR * noise
          and stock["repacked_at_load"] > 0 and two_d["repacked_at_load"] == 0
          and rows["patched, ours (experts packed too)"]["repacked_at_load"] == 0)
    return ok, lines


def run(folder: Path, source: Path | None) -> int:
    bins = build_both(source)
    ok = True
    for q in QTYPES:
        passed, lines = check_model(bins, q, *(folder / f"moe-{q}{s}.gguf" for s in ("", "-amx", "-amx-2d")))
        print("\n".join(lines))
        ok &= passed
    print("real AMX check: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-models")
    mk.add_argument("folder", type=Path)
    mk.add_argument("--quantizer", type=Path, required=True,
                    help="bin folder of a runtime build with amx-kernel-check")
    rn = sub.add_parser("run")
    rn.add_argument("folder", type=Path)
    rn.add_argument("--source", type=Path, help="llama.cpp source tree (default: the pinned sdist)")
    args = ap.parse_args()
    if args.command == "make-models":
        make_models(args.folder, args.quantizer)
        return 0
    return run(args.folder, args.source)


if __name__ == "__main__":
    sys.exit(main())
