"""The native kernels under AddressSanitizer + UndefinedBehaviorSanitizer (tests/sanitize.sh).

Opt-in (it rebuilds the native modules and takes a little while): AMX_REPACK_SANITIZE=1.
The script builds into a scratch copy, never over the working tree's modules, and fails on any
sanitizer report; CI can also run it directly as ``bash tests/sanitize.sh``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("sanitize.sh")



def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash")


@pytest.mark.skipif(os.environ.get("AMX_REPACK_SANITIZE") != "1",
                    reason="set AMX_REPACK_SANITIZE=1 to build and run the sanitized kernels")
def test_kernels_are_clean_under_asan_and_ubsan():
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("no C compiler")
    modules = sorted(p.name for p in (SCRIPT.parents[1] / "repack").glob("_*.so"))
    before = {m: (SCRIPT.parents[1] / "repack" / m).stat().st_mtime_ns for m in modules}
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "canary caught" in proc.stdout and " passed" in proc.stdout
    # the working tree's own modules were not rebuilt
    after = {m: (SCRIPT.parents[1] / "repack" / m).stat().st_mtime_ns for m in modules}
    assert after == before
