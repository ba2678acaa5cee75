"""The source distribution holds everything a build needs (issue 12, item 9: it lacked native/*.h
and native/build_native.py, so `pip wheel amx_repack-*.tar.gz` failed). CI goes further: it
installs the sdist in a fresh virtual environment, compiling the kernels, and runs the demo
(.ci/run)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from email.parser import Parser
from pathlib import Path

import pytest

import repack

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_reads_spdx_license() -> bool:
    try:
        from importlib.metadata import version
        return int(version("setuptools").split(".")[0]) >= 77
    except Exception:
        return False


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    if importlib.util.find_spec("build") is None:
        reason = "the 'build' package (test extras) is needed to build the sdist"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("sdist")
    # without network when this environment has what pyproject.toml asks (setuptools>=77, cffi);
    # otherwise in the isolated environment pip prepares
    isolation = ["--no-isolation"] if _setuptools_reads_spdx_license() else []
    cmd = [sys.executable, "-m", "build", "--sdist", *isolation, "--outdir", str(out), str(ROOT)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("amx_repack-*.tar.gz")
    return path


def _members(path: Path) -> tuple[str, set[str]]:
    with tarfile.open(path) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    return top, {n[len(top) + 1:] for n in names if n.startswith(top + "/")}


def test_sdist_holds_what_a_build_needs(sdist):
    top, members = _members(sdist)
    assert top == f"amx_repack-{repack.__version__}"
    native = {f"native/{p.name}" for p in (ROOT / "native").iterdir()
              if p.suffix in (".c", ".h")}
    assert {"native/amx.h", "native/blocks_grids.h", "native/amx.c"} <= native
    needed = native | {"native/build_native.py", "setup.py", "pyproject.toml", "README.md",
                       "LICENSE", "repack/py.typed", "formats/py.typed"}
    needed |= {f"{pkg}/{p.name}" for pkg in ("repack", "formats")
               for p in (ROOT / pkg).glob("*.py")}
    needed |= {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}   # the README links them
    # the llama.cpp patch and its build, which inspect and convert name for the amx layout
    needed |= {str(p.relative_to(ROOT)) for p in (ROOT / "runtime" / "llama.cpp").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert needed <= members, sorted(needed - members)
    built = [m for m in members if m.endswith((".o", ".so")) or m.startswith("repack/_")
             and not m.endswith(".py")]
    assert not built, built


def test_sdist_metadata(sdist):
    top, _ = _members(sdist)
    with tarfile.open(sdist) as tar:
        info = Parser().parsestr(tar.extractfile(f"{top}/PKG-INFO").read().decode())
    assert info["Version"] == repack.__version__            # one source: repack.__version__
    assert info["License-Expression"] == "MIT"
    assert info["License-File"] == "LICENSE"
    assert "Typing :: Typed" in info.get_all("Classifier")
    assert info.get_all("Project-URL")


def test_sdist_cffi_build_script_finds_its_sources(sdist, tmp_path):
    """setup.py's cffi_modules, run from the unpacked sdist: every family's declarations parse
    and its C sources and include folder are there (the compiler run itself is CI's)."""
    with tarfile.open(sdist) as tar:
        # the "data" filter (no links out, no special files) where tarfile has it: Python 3.11.4+
        # and the security releases of older ones; Debian 12's 3.11.2 has not
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (tree,) = tmp_path.iterdir()
    script = (
        "import os, sys\n"
        "sys.path.insert(0, 'native')\n"
        "import build_native as b\n"
        "for family in b.FAMILIES:\n"
        "    ffi = getattr(b, family + '_ffi')\n"
        "    kwds = ffi._assigned_source[3]\n"
        "    for path in kwds['sources'] + kwds['include_dirs']:\n"
        "        assert os.path.exists(path), path\n"
        "    ffi.emit_c_code(os.path.join(sys.argv[1], family + '.c'))\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=tree,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "ok", proc.stderr[-3000:]
