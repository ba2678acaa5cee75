"""Start-up: `--help` and `inspect` load none of the heavy modules (numpy, tqdm, the kernels).

Pipelines inspect thousands of files, so start-up matters; its time is measured by
benchmarks/run.py. What is tested here is the cause: which modules a command imports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("numpy", "tqdm", "repack._amx", "repack._interleaved", "repack._blocks",
         "repack._verify")

# python -m repack ARGS, then report which heavy modules were loaded
_RUN = """
import runpy, sys
sys.argv = ["amx-repack", *sys.argv[1:]]
try:
    runpy.run_module("repack", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = [m for m in %r if m in sys.modules]
sys.stderr.write(f"\\nEXIT {code} LOADED {','.join(heavy)}\\n")
""" % (HEAVY,)


def _loaded(*args: str) -> tuple[str, list[str]]:
    proc = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("EXIT "), proc.stderr
    code, _, loaded = last[5:].partition(" LOADED")
    return code, [m for m in loaded.strip().split(",") if m]


@pytest.mark.parametrize("args", [["--help"], ["convert", "--help"], ["--version"]])
def test_help_loads_nothing_heavy(args):
    code, loaded = _loaded(*args)
    assert code in ("0", "None") and loaded == []


def test_inspect_loads_nothing_heavy(gemma_path):
    code, loaded = _loaded("inspect", str(gemma_path))
    assert code in ("0", "None") and loaded == []
    code, loaded = _loaded("inspect", "--json", str(gemma_path))
    assert code in ("0", "None") and loaded == []


def test_verify_loads_the_kernels_it_runs(gemma_path, tmp_path):
    """The other side: the lazy imports really happen where the work is (a fused check ran)."""
    import repack
    out = tmp_path / "amx.gguf"
    repack.convert(gemma_path, out, layout="amx")
    code, loaded = _loaded("verify", "-q", str(out))
    assert code in ("0", "None") and "repack._verify" in loaded and "numpy" in loaded
