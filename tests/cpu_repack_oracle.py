"""Upstream's own CPU_REPACK repacking as the test oracle of the cpu-repack family.

``tests/tools/cpu_repack_oracle.cpp`` #includes the pinned, unpatched ``ggml/src/ggml-cpu/repack.cpp``
(llama.cpp as vendored by the llama-cpp-python sdist that runtime/llama.cpp/build.py pins) and runs
its repack for a forced variant on raw bytes. Upstream's make_block_* functions are plain C++, so
every target's bytes (x86, ARM, RISC-V) come out of this one x86 build.

API (for any test; issue-19a's whole-file tests use it too)::

    from tests.cpu_repack_oracle import upstream_repack, UpstreamRefused

    packed = upstream_repack(src_type_id, nb_cols, inter, source_bytes, ne0, ne1, ne2=1)

``source_bytes``: the tensor in ggml's standard layout (anything with the buffer protocol),
``ne0 x ne1 x ne2`` (3-D experts: ne2 > 1; upstream repacks all ``ne1 * ne2`` rows). Returns the
bytes upstream's ``tensor_traits<...>::repack`` writes into its CPU_REPACK buffer (same size).
Raises ``UpstreamRefused`` when upstream's repack returns -1 (``ne1`` not a multiple of nb_cols).

The tool is built on first use, once per cache (``$AMX_REPACK_CACHE/llama.cpp/cpu-repack-oracle-
<digest>/``, digest over the pinned version, the tool's source and the compiler flags), from the
sdist build.py fetches (the extracted source is deleted after the build; only the binary stays).
Without a C++ compiler or the sdist the calling test skips with the reason, and fails under CI.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL_SOURCE = ROOT / "tests" / "tools" / "cpu_repack_oracle.cpp"
# -O1: the tool's speed does not matter, its compile time does; --gc-sections drops the parts of
# repack.cpp that are unreachable from main (matmul kernels, buffer type) and their symbols
FLAGS = ["-O1", "-std=c++17", "-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections", "-w"]


class UpstreamRefused(Exception):
    """Upstream's repack returned -1 for this shape (it would leave the tensor plain)."""


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"the upstream repack oracle cannot be built in CI: {reason}", pytrace=False)
    pytest.skip(f"upstream repack oracle unavailable: {reason}")


def _build_module():
    spec = importlib.util.spec_from_file_location("runtime_build", ROOT / "runtime" / "llama.cpp" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def _tool_or_reason() -> tuple[Path | None, str]:
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return None, f"no C++ compiler ({cxx})"
    build = _build_module()
    digest = hashlib.sha256("\n".join([build.LLAMA_CPP_PYTHON_VERSION, build.LLAMA_CPP_COMMIT, cxx,
                                       *FLAGS, TOOL_SOURCE.read_text()]).encode()).hexdigest()[:16]
    work = build.cache_root() / f"cpu-repack-oracle-{digest}"
    tool = work / "cpu-repack-oracle"
    if tool.exists():
        return tool, ""
    try:
        sdist = build.fetch_sdist()
    except build.BuildError as e:
        return None, f"cannot fetch llama-cpp-python=={build.LLAMA_CPP_PYTHON_VERSION}: {str(e).splitlines()[0]}"
    scratch = work.with_name(f"{work.name}.{os.getpid()}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        build.extract_vendored(sdist, scratch / "src")
        ggml = scratch / "src" / "ggml"
        proc = subprocess.run([cxx, *FLAGS, f"-I{ggml / 'include'}", f"-I{ggml / 'src'}",
                               f"-I{ggml / 'src' / 'ggml-cpu'}", str(TOOL_SOURCE),
                               "-o", str(scratch / tool.name)], capture_output=True, text=True)
        if proc.returncode != 0:
            # the pinned source and the tool are both fixed: a failure here is a real error
            raise RuntimeError(f"building the repack oracle failed:\n{proc.stderr[-3000:]}")
        shutil.rmtree(scratch / "src")
        try:
            scratch.rename(work)     # another process may have finished first: keep its build
        except OSError:
            pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return tool, ""


def oracle_tool() -> Path:
    """The built oracle binary (built on first use); skips or fails the test when it cannot be."""
    tool, reason = _tool_or_reason()
    if tool is None:
        _unavailable(reason)
    return tool


def upstream_repack(src_type_id: int, nb_cols: int, inter: int, data, ne0: int, ne1: int,
                    ne2: int = 1) -> bytes:
    """Upstream's CPU_REPACK bytes of a tensor for the variant (src_type_id, nb_cols, inter)."""
    proc = subprocess.run([str(oracle_tool()), str(int(src_type_id)), str(int(nb_cols)), str(int(inter)),
                           str(int(ne0)), str(int(ne1)), str(int(ne2))],
                          input=bytes(memoryview(data).cast("B")), capture_output=True)
    if proc.returncode == 3:
        raise UpstreamRefused(f"upstream does not repack {ne0}x{ne1}x{ne2} as {nb_cols}x{inter}")
    if proc.returncode != 0:
        raise RuntimeError(f"repack oracle failed (exit {proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return proc.stdout
