"""The AMX layout on real AMX tiles, where the CPU has them: llama.cpp built for this CPU
(-march=native, runtime/llama.cpp/build.py's `amx` and `amx-stock` flavours, the library and
amx-generate only), patched against stock.

The other runtime tests run upstream's AMX code on emulated tiles, which any AVX-512 VNNI CPU can;
these run the hardware instructions themselves, as a user's build does: on Gemma-3-270M, the
patched build generates from our file exactly stock's tokens from the original with nothing
repacked at load; on tiny qwen3moe models (tests/test_llama_moe.py's), benchmarks/real_amx.py's
checks (the 2-D file gives stock's tokens and logit margins exactly, stock refuses our file, the
packed experts stay within stock's own CPU-vs-AMX rounding noise).

Skipped, with the reason, on a CPU without AMX or a kernel that does not grant it (no install
step can add either; CI's machine often has neither).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform

import pytest

from tests.test_llama_moe import moe_models  # noqa: F401 (fixture)
from tests.test_llama_runtime import (ROOT, _build_module, _check_prerequisites,  # noqa: F401
                                      amx_converted, generate, generates_as_stock, runtime)

ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 0x1023, 18


def _load(name: str, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


real_amx = _load("real_amx", ROOT / "benchmarks" / "real_amx.py")


def amx_unusable() -> str | None:
    """Why this machine cannot run AMX tiles (None when it can)."""
    lacking = _build_module().cpu_lacks_amx()
    if lacking:
        return f"this CPU has no AMX ({lacking})"
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return "AMX permission is requested from Linux on x86_64 only"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(158, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0:    # SYS_arch_prctl
        return f"the kernel does not grant AMX tile data ({os.strerror(ctypes.get_errno())})"
    return None


@pytest.fixture(scope="session")
def real_runtime():
    """{"patched": bin dir, "stock": bin dir}: both builds for this CPU, made once and cached."""
    why = amx_unusable()
    if why:
        pytest.skip(why)
    _check_prerequisites()
    return real_amx.build_both(None)


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q4_0"])
def test_patched_build_on_real_tiles_generates_stocks_tokens(real_runtime, amx_converted, qtype):
    original, ours = amx_converted(qtype)
    generates_as_stock(real_runtime, original, ours)
    refused = generate(real_runtime["stock"], ours)
    assert refused["returncode"] == 1 and refused["tokens"] is None    # an error exit, no signal


@pytest.mark.parametrize("qtype", real_amx.QTYPES)
def test_moe_on_real_tiles(real_runtime, moe_models, qtype):
    original, ours, no_exps = moe_models(qtype)
    passed, lines = real_amx.check_model(real_runtime, qtype, original, ours, no_exps)
    assert passed, "\n".join(lines)
