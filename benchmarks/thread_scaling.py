"""Thread scaling of `convert` (and `convert --verify`) against `cp`, on one synthetic Q4_K model.

    python benchmarks/thread_scaling.py [--gb 2] [--workdir /dev/shm/scale] [--threads 1,2,4,8]

Each line is the minimum wall time of 3 runs (with the user and system CPU of that run), the
input in the page cache, no dirty pages left before each run; `cp` of the same file in the same
run is the baseline. Shows where adding threads stops paying (on tmpfs: the writers' shared
inode lock and page-cache insertions, seen as system time).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import amx_repack, synthetic_model, warm  # noqa: E402  (run.py puts the checkout first)


def best_of_3(cmd: list[str], out: Path) -> tuple[float, float, float]:
    """(wall, user, system) seconds of the fastest of 3 runs of cmd, its output removed first."""
    best = None
    for _ in range(3):
        out.unlink(missing_ok=True)
        os.sync()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed")
        if best is None or wall < best[0]:
            best = (wall, usage.ru_utime, usage.ru_stime)
    out.unlink(missing_ok=True)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="synthetic Q4_K model size")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threads", default=None,
                    help="comma-separated thread counts (default: 1, 2, 4, ... up to the cores)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="amx-repack-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    threads = ([int(t) for t in args.threads.split(",")] if args.threads else
               sorted({min(2 ** i, cores) for i in range(cores.bit_length() + 1)}))
    src = synthetic_model(work / f"synthetic-q4k-{args.gb:g}gb.gguf", args.gb)[0]
    warm(src)
    out = work / "out.gguf"
    cp, _, cp_sys = best_of_3(["cp", str(src), str(out)], out)
    print(f"{src.stat().st_size / 1e9:.2f} GB, {cores} cores; cp: {cp:.2f} s ({cp_sys:.2f} s system)")
    print("| threads | command | seconds | vs cp | user CPU s | system CPU s |")
    print("|---|---|---|---|---|---|")
    for verify in (False, True):
        for t in threads:
            cmd = amx_repack("convert", *(["--verify"] if verify else []), "-q", "--layout", "amx",
                             "-t", t, src, out)
            wall, user, system = best_of_3(cmd, out)
            print(f"| {t} | convert{' --verify' if verify else ''} | {wall:.2f} | {cp / wall:.2f}x | "
                  f"{user:.2f} | {system:.2f} |", flush=True)


if __name__ == "__main__":
    main()
