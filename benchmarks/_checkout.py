"""The benchmarks measure this checkout's code, in this process and in every command they start.

A checkout's ``repack/`` holds no compiled kernels until ``python native/build_native.py`` (or
``pip install -e .``) builds them in place, and running from the checkout puts its ``repack/``
ahead of any installed copy: without this, the first ``python -m repack`` failed with
"No module named 'repack._amx'". So: the checkout goes first on the path (for child processes
too), and its kernels are built in place when they are missing.
"""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the kernels' modules (native/build_native.py: every native/<name>.c with its header)
FAMILIES = tuple(sorted(p.stem for p in (ROOT / "native").glob("*.c")
                        if p.with_suffix(".h").exists()))


def _missing() -> list[str]:
    return [f for f in FAMILIES
            if not any((ROOT / "repack" / f"_{f}{suffix}").exists()
                       for suffix in importlib.machinery.EXTENSION_SUFFIXES)]


def use_checkout() -> None:
    missing = _missing()
    if missing:
        print(f"benchmarks: building this checkout's native kernels in place "
              f"(python native/build_native.py; missing: {', '.join(missing)})", file=sys.stderr)
        proc = subprocess.run([sys.executable, str(ROOT / "native" / "build_native.py")],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0 or _missing():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            sys.exit("benchmarks: cannot build the native kernels in place (a C compiler and cffi "
                     "are needed): run `pip install -e .` or `python native/build_native.py` in "
                     f"{ROOT}, then rerun\n" + "\n".join(tail))
    sys.path.insert(0, str(ROOT))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
