"""The wheel `build.py --python` writes, checked as a file: what pip and the dynamic loader read.

Runs without a llama.cpp build (the libraries are stand-ins laid out as CMake lays them out), so it
runs on any machine that can fetch the pinned sdist; test_llama_python.py installs and runs the
real wheels. Skipped only without the package index (a failure under CI).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

from tests.llama_python_env import ROOT, build_module
from tests.test_llama_runtime import _unavailable

# a stand-in for a shared library: an ELF-looking prefix and a run path as CMake's build writes it
RUNPATH_AS_BUILT = b"$ORIGIN:"


def stand_in_library(name: str) -> bytes:
    return b"\x7fELF" + name.encode() + b"\x00" + RUNPATH_AS_BUILT + b"\x00tail\x00"


@pytest.fixture(scope="module")
def sdist():
    build = build_module()
    try:
        return build.fetch_sdist()
    except build.BuildError as e:
        _unavailable(f"cannot fetch llama-cpp-python=={build.LLAMA_CPP_PYTHON_VERSION}: "
                     f"{str(e).splitlines()[0]}")


@pytest.fixture
def bin_dir(tmp_path):
    """libX.so -> libX.so.0 -> libX.so.0.25.3, as CMake lays out a versioned shared library."""
    out = tmp_path / "bin"
    out.mkdir()
    for lib in ("llama", "ggml", "ggml-base", "ggml-cpu"):
        (out / f"lib{lib}.so.0.25.3").write_bytes(stand_in_library(lib))
        os.symlink(f"lib{lib}.so.0.25.3", out / f"lib{lib}.so.0")
        os.symlink(f"lib{lib}.so.0", out / f"lib{lib}.so")
    return out


def python_wheel():
    spec = importlib.util.spec_from_file_location("python_wheel", ROOT / "runtime" / "llama.cpp" / "python_wheel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wheel_contents(sdist, bin_dir, tmp_path):
    wheel = python_wheel().build_wheel(sdist, "0.3.36", bin_dir, "emulate-amx", "0123456789abcdef",
                                       tmp_path / "out")
    version = "0.3.36+amxrepack.emulate.amx.01234567"
    assert wheel.name == f"llama_cpp_python-{version}-py3-none-linux_x86_64.whl"
    dist_info = f"llama_cpp_python-{version}.dist-info/"
    with zipfile.ZipFile(wheel) as zf, tarfile.open(sdist) as tar:
        names = set(zf.namelist())
        # every file of the sdist's Python package, nothing else of it
        package = {m.name.split("/", 1)[1] for m in tar.getmembers()
                   if m.isfile() and m.name.split("/", 1)[1].startswith("llama_cpp/")}
        assert package <= names
        assert {n for n in names if not n.startswith(("llama_cpp/lib/", dist_info))} == package
        # the version, in the metadata and in the package, says what it is
        metadata = zf.read(dist_info + "METADATA").decode()
        assert f"\nVersion: {version}\n" in metadata and "Name: llama_cpp_python" in metadata
        assert "Requires-Dist: numpy>=1.20.0" in metadata
        assert f'__version__ = "{version}"' in zf.read("llama_cpp/__init__.py").decode()
        assert "Tag: py3-none-linux_x86_64" in zf.read(dist_info + "WHEEL").decode()
        # each library under the name its dependants ask for; libllama/libggml also as ctypes opens them
        libs = {n.rsplit("/", 1)[1] for n in names if n.startswith("llama_cpp/lib/")}
        assert libs == {"libllama.so", "libllama.so.0", "libggml.so", "libggml.so.0",
                        "libggml-base.so.0", "libggml-cpu.so.0"}
        shipped = zf.read("llama_cpp/lib/libggml-cpu.so.0")
        built = stand_in_library("ggml-cpu")
        # the run path cut to $ORIGIN in place: same length, nothing else changed
        assert shipped == built.replace(RUNPATH_AS_BUILT, b"$ORIGIN\x00")
        # RECORD lists every other file with its sha256 and size, as pip checks it
        rows = list(csv.reader(io.StringIO(zf.read(dist_info + "RECORD").decode())))
        assert {r[0] for r in rows} == names
        for name, digest, size in rows:
            if name == dist_info + "RECORD":
                assert digest == size == ""
                continue
            data = zf.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(
                hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)


def test_wheel_is_reproducible_and_reused(sdist, bin_dir, tmp_path):
    module = python_wheel()
    first = module.build_wheel(sdist, "0.3.36", bin_dir, "amx", "ab" * 8, tmp_path / "a")
    second = module.build_wheel(sdist, "0.3.36", bin_dir, "amx", "ab" * 8, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    mtime = first.stat().st_mtime_ns
    assert module.build_wheel(sdist, "0.3.36", bin_dir, "amx", "ab" * 8, tmp_path / "a") == first
    assert first.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "a").glob("*.partial"))


def test_missing_library_is_one_clear_error(sdist, bin_dir, tmp_path):
    module = python_wheel()
    (bin_dir / "libggml-cpu.so").unlink()
    with pytest.raises(module.WheelError, match="libggml-cpu.so is missing"):
        module.build_wheel(sdist, "0.3.36", bin_dir, "amx", "ab" * 8, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_build_py_python_refuses_a_foreign_source(tmp_path):
    """The sdist's ctypes bindings match the pinned llama.cpp only: --python --source is a usage
    error, before anything is built."""
    proc = subprocess.run([sys.executable, ROOT / "runtime" / "llama.cpp" / "build.py", "--python",
                           "--source", tmp_path], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--python builds on the pinned source only" in proc.stderr
    assert "Traceback" not in proc.stderr
