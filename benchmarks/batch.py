"""A catalogue converted three ways, one table: a sequential shell loop of `convert --verify`,
`amx-repack batch` on this machine, and the same plan as Ray tasks on a local Ray cluster.

    python benchmarks/batch.py [--files 8] [--min-mb 200] [--max-mb 3000] [--workdir DIR] [--no-ray]

The catalogue is synthetic (random Q4_K/Q8_0 blocks in llama-like matrices, sizes spread evenly
from --min-mb to --max-mb). Every run starts from an empty output folder, with the inputs in the
page cache; wall time and the children's CPU time (user + system) are printed for each, and the
ratios are within this one run (the Ray row's CPU time is the driver's only: its workers are the
cluster's processes, not this script's children). The Ray row also gives the cluster's start-up and the overhead per
job against the local batch.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _checkout import use_checkout  # noqa: E402

use_checkout()

sys.path.insert(0, str(ROOT))
from tests.synthetic import big_model_tensors, write_model  # noqa: E402


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, env=None, shell=False) -> tuple[float, float]:
    os.sync()
    cpu0, t0 = children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, env=env, shell=shell, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, children_cpu() - cpu0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--min-mb", type=int, default=200)
    ap.add_argument("--max-mb", type=int, default=3000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="amx-repack-batch-bench-", dir=args.workdir))
    models, out = work / "models", work / "out"
    models.mkdir()
    try:
        step = (args.max_mb - args.min_mb) / max(1, args.files - 1)
        total = 0
        for i in range(args.files):
            size = int(args.min_mb + i * step) << 20
            path = write_model(models / f"model{i}.gguf", big_model_tensors(size), seed=i)
            total += path.stat().st_size
        for p in models.iterdir():          # into the page cache
            with open(p, "rb") as f:
                while f.read(16 << 20):
                    pass
        amx = [sys.executable, "-m", "repack"]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        rows = []

        def fresh():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()

        fresh()
        loop = " ; ".join(f"{' '.join(amx)} convert -q --verify {p} {out / (p.stem + '-amx.gguf')}"
                          for p in sorted(models.iterdir()))
        rows.append(("shell loop of convert --verify", *timed(loop, env=env, shell=True)))
        fresh()
        rows.append(("batch (local)", *timed([*amx, "batch", str(models), "--out-dir", str(out), "-q"], env=env)))
        if not args.no_ray:
            env_ray = dict(env, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
            ray_cli = str(Path(sys.executable).parent / "ray")
            t0 = time.perf_counter()
            start = subprocess.run([ray_cli, "start", "--head", "--port", "0", "--include-dashboard=false",
                                    "--disable-usage-stats"], env=env_ray, capture_output=True, text=True)
            started = time.perf_counter() - t0
            try:
                if start.returncode == 0:
                    fresh()
                    rows.append(("batch --ray (local cluster)",
                                 *timed([*amx, "batch", str(models), "--out-dir", str(out), "-q", "--ray"],
                                        env=env_ray)))
                else:
                    print("ray start failed:", start.stderr[-500:], file=sys.stderr)
            finally:
                subprocess.run([ray_cli, "stop", "--force"], env=env_ray, capture_output=True)
        base = rows[0][1]
        print(f"{args.files} files, {total / 1e9:.2f} GB, {os.cpu_count()} cores\n")
        print(f"{'run':32} {'wall s':>8} {'CPU s':>8} {'GB/s':>6} {'vs loop':>8}")
        for name, wall, cpu in rows:
            print(f"{name:32} {wall:8.1f} {cpu:8.1f} {total / wall / 1e9:6.2f} {base / wall:7.2f}x")
        if len(rows) == 3:
            print(f"\nRay: cluster start {started:.1f} s; overhead per job against the local batch "
                  f"{(rows[2][1] - rows[1][1]) / args.files:+.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
