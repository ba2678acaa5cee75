"""llama-cpp-python on our files: the wheel `build.py --python` makes, installed in a fresh venv.

Two wheels of the pinned sdist (llama-cpp-python 0.3.36), each carrying the libraries of one
build.py flavour (the same builds test_llama_runtime uses, built once): ``emulate-amx`` (our
patch, emulated tiles) and ``emulate-amx-stock`` (upstream, same flags). The tests prove:
``llama_cpp.Llama`` from the patched wheel generates, from our AMX file of Gemma Q4_K_M, the same
greedy tokens as the stock wheel from the original, reading the packed tensors from the mapping
(nothing repacked); on our interleaved file both wheels refuse alike, on our plain file
(``--layout none``) both generate the original's tokens; on a CPU without AMX the patched wheel
refuses our file with the clear line; and the pipeline recipe of runtime/llama.cpp/README.md
runs as written (Python and shell), on the AMX path and on its fallback.

Skipped (with the reason) where test_llama_runtime is: no AVX-512 VNNI, no compiler or no package
index; under CI those are failures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import repack
from formats.gguf_container import read_gguf
from tests.llama_python_env import InstallError, build_wheels, install
from tests.test_llama_runtime import N_PREDICT, PROMPT, ROOT, _unavailable, runtime  # noqa: F401 (fixture)

FLAVOURS = {"patched": "emulate-amx", "stock": "emulate-amx-stock"}
RUNTIME_README = ROOT / "runtime" / "llama.cpp" / "README.md"
NO_AMX = {"AMX_TILE_EMULATION_DENY": "1"}  # the emulated build behaves as a CPU without AMX
REFUSAL = "is packed for Intel AMX"


@pytest.fixture(scope="session")
def wheels(runtime):
    return build_wheels(FLAVOURS)


@pytest.fixture(scope="session")
def llama_python(wheels, tmp_path_factory):
    """{"patched": PythonRuntime, "stock": PythonRuntime}"""
    try:
        return install(wheels["patched"], wheels["stock"], tmp_path_factory.mktemp("llama-python"))
    except InstallError as e:
        _unavailable(str(e))


@pytest.fixture(scope="session")
def gemma_files(gemma_path, tmp_path_factory):
    """Gemma Q4_K_M and our three files of it."""
    out = tmp_path_factory.mktemp("llama-python-models")
    files = {"original": gemma_path}
    for layout in ("amx", "interleaved", "none"):
        files[layout] = out / f"gemma-{layout}.gguf"
        repack.convert(gemma_path, files[layout], layout=layout)
    return files


@pytest.fixture(scope="session")
def stock_on_original(llama_python, gemma_files):
    result = llama_python["stock"].generate(gemma_files["original"], PROMPT, N_PREDICT)
    assert result["returncode"] == 0, result["stderr"][-2000:]
    assert len(result["tokens"]) == N_PREDICT
    return result


def test_wheel_is_labelled_and_carries_the_flavour_libraries(wheels, runtime):
    for role, flavour in FLAVOURS.items():
        wheel = wheels[role]
        assert wheel.name.startswith(f"llama_cpp_python-0.3.36+amxrepack.{flavour.replace('-', '.')}.")
        with zipfile.ZipFile(wheel) as zf:
            assert zf.testzip() is None
            # the libraries are the flavour's build, byte for byte but for the run path, cut to
            # $ORIGIN (the build's ends in an empty entry, the working directory)
            for name in ("libllama.so", "libggml.so.0", "libggml-base.so.0", "libggml-cpu.so.0"):
                built = (runtime[role] / name).resolve().read_bytes()
                shipped = zf.read(f"llama_cpp/lib/{name}")
                assert len(shipped) == len(built), name
                diff = np.flatnonzero(np.frombuffer(built, np.uint8) != np.frombuffer(shipped, np.uint8))
                if diff.size:
                    lo, hi = int(diff[0]), int(diff[-1]) + 1
                    assert hi - lo == diff.size and built[lo - 7:lo + 1] == b"$ORIGIN:", name
                    assert shipped[lo:hi] == bytes(hi - lo) and built[hi] == 0, name
    # the same build gives the same wheel (cached, and reproducible)
    assert build_wheels(FLAVOURS) == wheels


def test_installed_wheel_loads_its_own_libraries(llama_python):
    for role in FLAVOURS:
        proc = llama_python[role].run(["-c", "import llama_cpp, llama_cpp.llama_cpp as c; "
                                       "print(llama_cpp.__version__); print(c._lib._name)"])
        assert proc.returncode == 0, proc.stderr[-2000:]
        version, library = proc.stdout.split()
        assert version.startswith(f"0.3.36+amxrepack.{FLAVOURS[role].replace('-', '.')}.")
        assert library.startswith(str(llama_python[role].python.parents[1] if role == "patched"
                                      else llama_python[role].pythonpath[0]))
    # nothing in the installed libraries points back into the build cache
    lib_dir = next(llama_python["patched"].python.parents[1].glob("lib/python*/site-packages/llama_cpp/lib"))
    for lib in lib_dir.iterdir():
        dynamic = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True).stdout
        for path in re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*)\]", dynamic):
            assert path == "$ORIGIN", (lib.name, path)


def test_patched_wheel_generates_from_amx_file(llama_python, gemma_files, stock_on_original):
    patched = llama_python["patched"].generate(gemma_files["amx"], PROMPT, N_PREDICT)
    assert patched["returncode"] == 0, patched["stderr"][-2000:]
    assert patched["tokens"] == stock_on_original["tokens"]
    assert patched["text"] == stock_on_original["text"]
    # from the mapping: none of our packed tensors is repacked at load (only Gemma's tied
    # output matrix, which stays unpacked in the file, is packed into the AMX buffer)
    with read_gguf(gemma_files["amx"]) as f:
        packed = {t.name for t in f.tensors if t.type.origin == "amx"}
    repacked = set(re.findall(r"amx repack tensor (\S+) of type", patched["stderr"]))
    assert repacked <= {"token_embd.weight"} and not packed & repacked
    assert "CPU_Mapped model buffer size" in patched["stderr"]


def test_stock_wheel_refuses_amx_file(llama_python, gemma_files):
    result = llama_python["stock"].generate(gemma_files["amx"], PROMPT, N_PREDICT)
    assert result["returncode"] == 1 and result["tokens"] is None
    assert re.search(r"invalid ggml type 10\d\d", result["stderr"])
    assert "Failed to load model from file" in result["stderr"]


def test_patched_wheel_refuses_amx_file_without_amx(llama_python, gemma_files):
    result = llama_python["patched"].generate(gemma_files["amx"], PROMPT, N_PREDICT, env=NO_AMX)
    assert result["returncode"] == 1 and result["tokens"] is None
    assert f"{REFUSAL} (amx_" in result["stderr"] and "amx-repack unpack" in result["stderr"]


@pytest.mark.parametrize("role", list(FLAVOURS))
def test_interleaved_and_plain_files_as_stock(llama_python, gemma_files, stock_on_original, role):
    """Our interleaved file is ik_llama.cpp's: both wheels refuse its types as stock does. Our
    plain file is the original byte for byte: both generate the original's tokens."""
    interleaved = llama_python[role].generate(gemma_files["interleaved"], PROMPT, N_PREDICT)
    assert interleaved["returncode"] == 1 and interleaved["tokens"] is None
    assert re.search(r"invalid ggml type \d+", interleaved["stderr"])
    plain = llama_python[role].generate(gemma_files["none"], PROMPT, N_PREDICT)
    assert plain["returncode"] == 0, plain["stderr"][-2000:]
    assert plain["tokens"] == stock_on_original["tokens"]


# --------------------------------------------------------------------------------------------
# The recipe, as runtime/llama.cpp/README.md shows it


def recipe(language: str) -> str:
    """The code block that follows the README's ``<!-- recipe: LANGUAGE -->`` marker."""
    text = RUNTIME_README.read_text()
    match = re.search(rf"<!-- recipe: {language} -->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"no '<!-- recipe: {language} -->' code block in {RUNTIME_README}"
    return match.group(1)


@pytest.fixture
def recipe_dir(tmp_path, gemma_path):
    (tmp_path / "model.gguf").symlink_to(gemma_path)
    return tmp_path


def run_python_recipe(llama_python, recipe_dir: Path, env: dict | None = None) -> tuple[str, str, str]:
    """The README's Python block run by the patched wheel in recipe_dir: (the stock wheel's text
    for the original on the same CPU, the recipe's 'loaded ...' line, the recipe's text). The
    stock run gets the same ``env``: without AMX, stock runs the original on its plain CPU
    kernels, whose float sums differ from its AMX kernels' (a greedy text may part at a near
    tie), so only the same CPU is a fair baseline."""
    stock = llama_python["stock"].run(["-c", STOCK_COMPLETION, recipe_dir / "model.gguf"], env=env)
    assert stock.returncode == 0, stock.stderr[-2000:]
    proc = llama_python["patched"].run(["-c", recipe("python")], cwd=recipe_dir, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded, text = proc.stdout.split("\n", 1)
    return stock.stdout, loaded, text


@pytest.mark.parametrize("amx", [True, False], ids=["amx", "no-amx"])
def test_python_recipe_runs_as_documented(llama_python, recipe_dir, amx):
    stock_text, loaded, text = run_python_recipe(llama_python, recipe_dir, None if amx else NO_AMX)
    # on a CPU with AMX it runs our file, without AMX it falls back to the original
    assert loaded == f"loaded model{'-amx' if amx else ''}.gguf"
    assert text.rstrip("\n") == stock_text.rstrip("\n")
    assert (recipe_dir / "model-amx.gguf").exists()


# the stock wheel's completion of the recipe's prompt, for the same settings
STOCK_COMPLETION = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=2048, verbose=False)
print(llm.create_completion("The capital of France is", max_tokens=16, temperature=0)["choices"][0]["text"])
"""


def run_shell_recipe(runtime, recipe_dir: Path, env: dict | None = None):
    """The README's shell block run with BIN the patched build: (stock llama-simple's run on the
    original on the same CPU (``env``, as run_python_recipe), the recipe's run)."""
    stock = subprocess.run([runtime["stock"] / "llama-simple", "-m", recipe_dir / "model.gguf",
                            "-n", "16", "The capital of France is"], capture_output=True, text=True,
                           env={**os.environ, **(env or {})})
    assert stock.returncode == 0, stock.stderr[-2000:]
    # amx-repack as the tests run it (this interpreter's, this checkout's code)
    env = {**os.environ, "BIN": str(runtime["patched"]), "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe("sh")], cwd=recipe_dir, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return stock, proc


@pytest.mark.parametrize("amx", [True, False], ids=["amx", "no-amx"])
def test_shell_recipe_runs_as_documented(runtime, recipe_dir, amx):
    stock, proc = run_shell_recipe(runtime, recipe_dir, None if amx else NO_AMX)
    assert proc.stdout == stock.stdout
    assert (REFUSAL in proc.stderr) != amx
