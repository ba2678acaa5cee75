"""llama-cpp-python on cpu-repack files, on any AVX2 CPU: the wheels `build.py --python` makes of
the ``avx2`` builds (patched, and ``avx2-stock``), installed in a fresh venv as a user installs
them (tests/llama_python_env.py).

test_llama_python.py proves the same for amx files on the emulated-AMX build, which needs AVX-512
VNNI; this module runs wherever test_llama_cpu_repack.py runs. It proves: ``llama_cpp.Llama``
from the patched wheel generates, from our cpu-repack file of Gemma Q4_0 (x86-avx2), the same
greedy tokens and text as the stock wheel from the original, computing our tensors from the
mapping (no CPU_REPACK copy of them); the stock wheel refuses our file; the patched wheel refuses
a file made for another CPU with the runtime's one line, and the Python call fails cleanly;
the README's Python recipe, run as it stands, falls back to the original with this wheel (built without AMX).

Skipped (with the reason) where test_llama_cpu_repack.py is: no AVX2, no compiler or no package
index; under CI those are failures.
"""

from __future__ import annotations

import re
import zipfile

import pytest

from formats.gguf_container import read_gguf
from tests.llama_python_env import InstallError, build_wheels, install
from tests.test_llama_cpu_repack import CPU_REPACK_BASE, cpu_repack_converted, cpu_runtime  # noqa: F401
from tests.test_llama_runtime import N_PREDICT, PROMPT, _unavailable

FLAVOURS = {"patched": "avx2", "stock": "avx2-stock"}


@pytest.fixture(scope="session")
def cpu_wheels(cpu_runtime):  # noqa: F811 (fixture)
    return build_wheels(FLAVOURS)


@pytest.fixture(scope="session")
def cpu_llama_python(cpu_wheels, tmp_path_factory):
    """{"patched": PythonRuntime, "stock": PythonRuntime}"""
    try:
        return install(cpu_wheels["patched"], cpu_wheels["stock"], tmp_path_factory.mktemp("llama-python-cpu"))
    except InstallError as e:
        _unavailable(str(e))


def test_wheels_are_labelled_with_their_flavour(cpu_wheels, cpu_llama_python):
    for role, flavour in FLAVOURS.items():
        assert cpu_wheels[role].name.startswith(f"llama_cpp_python-0.3.36+amxrepack.{flavour.replace('-', '.')}.")
        with zipfile.ZipFile(cpu_wheels[role]) as zf:
            assert "llama_cpp/lib/libggml-cpu.so.0" in zf.namelist()
        proc = cpu_llama_python[role].run(["-c", "import llama_cpp; print(llama_cpp.__version__)"])
        assert proc.returncode == 0 and proc.stdout.strip().startswith(
            f"0.3.36+amxrepack.{flavour.replace('-', '.')}."), proc.stderr[-2000:]


def test_patched_wheel_generates_from_cpu_repack_file(cpu_llama_python, cpu_repack_converted):  # noqa: F811
    original, ours = cpu_repack_converted("Q4_0")
    with read_gguf(ours) as f:
        packed = [t for t in f.tensors if t.type.id >= CPU_REPACK_BASE]
        embd_mib = f.tensor("token_embd.weight").nbytes / 2**20
    assert len(packed) >= 100
    stock = cpu_llama_python["stock"].generate(original, PROMPT, N_PREDICT)
    patched = cpu_llama_python["patched"].generate(ours, PROMPT, N_PREDICT)
    assert stock["returncode"] == 0, stock["stderr"][-2000:]
    assert patched["returncode"] == 0, patched["stderr"][-2000:]
    assert len(stock["tokens"]) == N_PREDICT and len(set(stock["tokens"])) > 1
    assert patched["tokens"] == stock["tokens"] and patched["text"] == stock["text"]

    def repack_mib(stderr: str) -> float:
        found = re.search(r"CPU_REPACK model buffer size =\s+([\d.]+) MiB", stderr)
        return float(found[1]) if found else 0.0

    # stock repacked every matrix at load; the patched wheel computed ours from the mapping (what it
    # still repacks is Gemma's tied output matrix: token_embd.weight, kept plain for get_rows)
    assert "CPU_Mapped model buffer size" in patched["stderr"]
    assert repack_mib(stock["stderr"]) > embd_mib + 10
    assert repack_mib(patched["stderr"]) <= embd_mib + 0.01


def test_stock_wheel_refuses_cpu_repack_file(cpu_llama_python, cpu_repack_converted):  # noqa: F811
    _, ours = cpu_repack_converted("Q4_0")
    result = cpu_llama_python["stock"].generate(ours, PROMPT, N_PREDICT)
    assert result["returncode"] == 1 and result["tokens"] is None
    assert re.search(r"invalid ggml type 2\d\d\d", result["stderr"])


def test_patched_wheel_refuses_file_for_another_cpu(cpu_llama_python, cpu_repack_converted):  # noqa: F811
    _, ours = cpu_repack_converted("Q4_0", "arm-i8mm")
    result = cpu_llama_python["patched"].generate(ours, PROMPT, N_PREDICT)
    assert result["returncode"] == 1 and result["tokens"] is None
    line = next(l for l in result["stderr"].splitlines() if "is repacked as cpu_q4_0_4x8" in l)
    assert "for the CPU target 'arm-i8mm'" in line and "as cpu_q4_0_8x8" in line
    assert "`amx-repack unpack`" in line



# --------------------------------------------------------------------------------------------
# The README's Python recipe on a real CPU without AMX: test_llama_python.py runs it on the
# emulated build (which needs AVX-512 VNNI) with the tiles denied; here the patched AVX2 wheel is
# what a user without AMX installs, and the recipe must take its documented fallback with it.


def test_python_recipe_falls_back_to_the_original_without_amx(cpu_llama_python, gemma_path, tmp_path):
    from tests.test_llama_python import run_python_recipe
    (tmp_path / "model.gguf").symlink_to(gemma_path)
    stock_text, loaded, text = run_python_recipe(cpu_llama_python, tmp_path)
    # the AMX file was written (converted and verified), refused by this build, and the original run
    assert (tmp_path / "model-amx.gguf").exists()
    assert loaded == "loaded model.gguf"
    assert text.rstrip("\n") == stock_text.rstrip("\n") and text.strip()
