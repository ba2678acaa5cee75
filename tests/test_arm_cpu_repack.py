"""The cpu-repack layout on ARM: upstream llama.cpp's own ARM CPU_REPACK kernels, run under
qemu-aarch64 on our files, against the same kernels on the weights upstream repacks at load.

Two cross-built, patched, static builds of the pinned source (runtime/llama.cpp/build.py
``--arm dotprod`` and ``--arm i8mm-sve``, cached like the other flavours) and one stock build for
the end-to-end comparison. Which kernels upstream runs is decided by the build's -march and the
CPU's features at run time, so qemu's CPU options pick the target:

* ``arm-dotprod``: the dotprod build (no i8mm, no SVE code) on ``-cpu max``;
* ``arm-i8mm``: the i8mm+SVE build on ``-cpu max`` with 128-bit SVE (Neoverse N2, Graviton 4);
* ``arm-sve256``: the same build with 256-bit SVE (Neoverse V1, Graviton 3), where upstream takes
  Q4_0 as 8x8.

The tests prove, for each ARM target:
* kernel level, every variant upstream picks there (runtime/llama.cpp/tools/cpu-repack-check.cpp):
  MUL_MAT (gemv and gemm) and MUL_MAT_ID (3-D experts) on our tensors, read in place from the
  mapped file, equal bit for bit the same products on the original tensors set into upstream's
  CPU_REPACK buffer (which repacks them at load), and both agree with the generic kernels on the
  original blocks to float rounding; a flipped byte in our file is caught;
* end to end (arm-i8mm, Gemma Q4_0; ~35 s a generation under qemu): the patched runtime generates
  from our file the same greedy tokens, with the same logit margins, as the stock runtime on the
  original, which repacks at load;
* refusals: a file for another ARM target (and an x86 one) is refused with the runtime's one
  line naming the file's target and ``amx-repack unpack``, never computed.

Skipped (with the reason) when the aarch64 cross compiler or qemu-user is missing; CI installs
both (.ci/run), and under CI a missing tool is a failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import repack
from formats.gguf_container import read_gguf
from tests.synthetic import write_model
from tests.test_llama_cpu_repack import CPU_REPACK_BASE, assert_same_generation
from tests.test_llama_runtime import (N_PREDICT, PROMPT, _build_module, _unavailable,
                                      upstream_loadable_q5_k)
from tests.test_split_moe import write_moe_model

QEMU = "qemu-aarch64"
CROSS_CXX = "aarch64-linux-gnu-g++"
# target -> (build, qemu -cpu): see the module docstring
ARM_TARGETS = {
    "arm-dotprod": ("arm-dotprod", "max"),
    "arm-i8mm": ("arm-i8mm-sve", "max,sve-default-vector-length=16"),
    "arm-sve256": ("arm-i8mm-sve", "max,sve-default-vector-length=32"),
}
# per target: the fixtures (Gemma requantizations, "Q4_K_M" the Gemma file itself, "Q5_K" an
# upstream-loadable Q5_K mix, "Q1_0" and "MOE" synthetic) and the variants each must hold
FIXTURES = {
    "arm-dotprod": [("Q4_K_M", {"q4_K_8x4", "q6_K_8x4", "q8_0_4x4"}), ("Q4_0", {"q4_0_4x4"}),
                    ("IQ4_NL", {"iq4_nl_4x4"}), ("MXFP4", {"mxfp4_4x4"}), ("Q5_K", {"q5_K_8x4"}),
                    ("Q1_0", {"q1_0_4x4"}), ("MOE", {"q4_K_8x4", "q6_K_8x4", "q8_0_4x4"})],
    "arm-i8mm": [("Q4_K_M", {"q4_K_8x8", "q6_K_8x8", "q8_0_4x8"}), ("Q4_0", {"q4_0_4x8"}),
                 ("IQ4_NL", {"iq4_nl_4x4"}), ("MXFP4", {"mxfp4_4x4"}), ("Q5_K", {"q5_K_8x8"}),
                 ("Q1_0", {"q1_0_4x8"}), ("MOE", {"q4_K_8x8", "q6_K_8x8", "q8_0_4x8"})],
    "arm-sve256": [("Q4_0", {"q4_0_8x8"}), ("Q4_K_M", {"q4_K_8x8", "q6_K_8x8", "q8_0_4x8"}),
                   ("MOE", {"q4_K_8x8", "q6_K_8x8", "q8_0_4x8"})],
}
CASES = [(target, fixture, variants) for target, cases in FIXTURES.items() for fixture, variants in cases]
# the Gemma files: the first layers (every shape of the model) keep qemu's time down
MAX_TENSORS = 28
# ours and the reference run the same kernels; the generic kernels on the unrepacked blocks differ
# from both only by float summation order
PLAIN_TOLERANCE = 1e-4
QEMU_TIMEOUT = 900


def _check_tools() -> None:
    for tool, package in ((CROSS_CXX, "g++-aarch64-linux-gnu"), (QEMU, "qemu-user"), ("cmake", "cmake")):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} not found (Debian package {package}): needed for the ARM builds")


@pytest.fixture(scope="session")
def arm_builds():
    """{build name: bin dir} of the ARM builds, made once and cached."""
    _check_tools()
    build = _build_module()
    try:
        build.fetch_sdist()
    except build.BuildError as e:
        _unavailable(f"cannot fetch llama-cpp-python=={build.LLAMA_CPP_PYTHON_VERSION}: "
                     f"{str(e).splitlines()[0]}")
    names = sorted({b for b, _ in ARM_TARGETS.values()})
    return {name: build.build(name) for name in names}


@pytest.fixture(scope="session")
def arm_stock_build():
    _check_tools()
    return _build_module().build("arm-i8mm-sve-stock")


def qemu(bin_dir: Path, cpu: str, tool: str, *args, timeout: int = QEMU_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([QEMU, "-cpu", cpu, str(bin_dir / tool), *map(str, args)],
                          capture_output=True, text=True, errors="replace", timeout=timeout)


def write_q1_0_model(path: Path) -> Path:
    """Random Q1_0 blocks (gguf-py cannot quantize Q1_0) with finite, modest fp16 scales."""
    write_model(path, [("blk.0.attn_q.weight", "q1_0", (512, 64)), ("blk.0.ffn_up.weight", "q1_0", (256, 96)),
                       ("blk.0.ffn_down.weight", "q1_0", (384, 128))], seed=7)
    rng = np.random.default_rng(7)
    with read_gguf(path) as f:
        spans = [(f.data_start + t.offset, t.nbytes) for t in f.tensors]
    data = np.memmap(path, dtype=np.uint8, mode="r+")
    for start, nbytes in spans:
        blocks = data[start:start + nbytes].reshape(-1, 18)       # block_q1_0: fp16 d, 16 bytes of signs
        blocks[:, :2] = rng.uniform(0.005, 0.05, len(blocks)).astype(np.float16).view(np.uint8).reshape(-1, 2)
    data.flush()
    del data
    return path


@pytest.fixture(scope="session")
def arm_fixture(tmp_path_factory, gemma_path, requantized, llama_quantize):
    """arm_fixture(name) -> the original file of a fixture of FIXTURES."""
    folder = tmp_path_factory.mktemp("arm-fixtures")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            if name == "Q4_K_M":
                made[name] = gemma_path
            elif name == "Q5_K":
                made[name] = upstream_loadable_q5_k(llama_quantize, gemma_path)
            elif name == "Q1_0":
                made[name] = write_q1_0_model(folder / "q1_0.gguf")
            elif name == "MOE":
                made[name] = write_moe_model(folder / "moe.gguf")[0]
            else:
                made[name] = requantized(name)
        return made[name]

    return get


@pytest.fixture(scope="session")
def arm_converted(tmp_path_factory, arm_fixture):
    """arm_converted(fixture, target) -> (original, ours), converted once."""
    folder = tmp_path_factory.mktemp("arm-converted")
    done: dict[tuple[str, str], tuple[Path, Path]] = {}

    def get(fixture: str, target: str) -> tuple[Path, Path]:
        if (fixture, target) not in done:
            original = arm_fixture(fixture)
            ours = folder / f"{fixture}-{target}.gguf"
            repack.convert(original, ours, layout="cpu-repack", target=target)
            done[fixture, target] = (original, ours)
        return done[fixture, target]

    return get


def variants_in(path: Path) -> set[str]:
    with read_gguf(path) as f:
        return {t.type.name.removeprefix("cpu_") for t in f.tensors if t.type.id >= CPU_REPACK_BASE}


def check_lines(stdout: str) -> list[dict]:
    """cpu-repack-check's product lines, parsed."""
    return [{"verdict": m[1], "tensor": m[2], "type": m[3], "scale": float(m[4]), "rel": float(m[5])}
            for m in re.finditer(r"^(identical|MISMATCH) (\S+) (\S+) .* max\|y\|=(\S+) rel_to_plain=(\S+)",
                                 stdout, re.M)]


# --------------------------------------------------------------------------------------------
# Kernel level: every ARM variant


@pytest.mark.parametrize("target,fixture,variants", CASES, ids=[f"{t}-{f}" for t, f, _ in CASES])
def test_arm_kernels_on_our_bytes_equal_upstreams_repack(arm_builds, arm_converted, target, fixture, variants):
    original, ours = arm_converted(fixture, target)
    assert variants_in(ours) >= variants
    build, cpu = ARM_TARGETS[target]
    proc = qemu(arm_builds[build], cpu, "cpu-repack-check", original, ours, MAX_TENSORS)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = check_lines(proc.stdout)
    summary = re.search(r"^checked (\d+) tensors, (\d+) products: (\d+) bit-identical, 0 mismatched$",
                        proc.stdout, re.M)
    assert summary and int(summary[2]) == int(summary[3]) == len(lines) > 0
    assert all(line["verdict"] == "identical" for line in lines)
    # every variant the fixture must cover was computed, on real products
    assert {line["type"].removeprefix("cpu_") for line in lines} >= variants
    assert all(line["scale"] > 0 and line["rel"] < PLAIN_TOLERANCE for line in lines), proc.stdout
    if fixture == "MOE":
        assert "mul_mat_id tokens=6 rows_per_token=2" in proc.stdout


def test_arm_kernel_check_catches_a_changed_byte(arm_builds, arm_converted, tmp_path):
    """The check can fail: one byte of one packed tensor flipped in a copy of our file."""
    original, ours = arm_converted("Q4_0", "arm-i8mm")
    damaged = tmp_path / "damaged.gguf"
    shutil.copyfile(ours, damaged)
    with read_gguf(damaged) as f:
        t = next(t for t in f.tensors if t.type.id >= CPU_REPACK_BASE)
        at = f.data_start + t.offset + 1000
    with open(damaged, "r+b") as out:
        out.seek(at)
        byte = out.read(1)
        out.seek(at)
        out.write(bytes([byte[0] ^ 0x5A]))
    build, cpu = ARM_TARGETS["arm-i8mm"]
    proc = qemu(arm_builds[build], cpu, "cpu-repack-check", original, damaged, 1)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"MISMATCH {t.name} " in proc.stdout


# --------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("made_for,run_as,expected", [
    ("arm-sve256", "arm-i8mm", "as cpu_q4_0_4x8"),    # 8x8 needs 256-bit SVE
    ("arm-i8mm", "arm-dotprod", "as cpu_q4_0_4x4"),   # 4x8 needs i8mm
    ("arm-dotprod", "arm-i8mm", "as cpu_q4_0_4x8"),   # upstream prefers i8mm where it has it
    ("x86-avx2", "arm-dotprod", "as cpu_q4_0_4x4"),
])
def test_file_for_another_target_is_refused(arm_builds, arm_converted, made_for, run_as, expected):
    original, ours = arm_converted("Q4_0", made_for)
    build, cpu = ARM_TARGETS[run_as]
    proc = qemu(arm_builds[build], cpu, "cpu-repack-check", original, ours, 1)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "identical" not in proc.stdout and "MISMATCH" not in proc.stdout
    line = next(l for l in proc.stderr.splitlines() if "is repacked as" in l)
    assert f"for the CPU target '{made_for}'" in line and expected in line
    assert "`amx-repack unpack`" in line


# --------------------------------------------------------------------------------------------
# End to end: llama.cpp on ARM


def arm_generate(bin_dir: Path, cpu: str, model: Path) -> dict:
    proc = qemu(bin_dir, cpu, "amx-generate", model, "-n", N_PREDICT, "-t", 2, PROMPT)
    tokens = re.search(r"^tokens:(.*)$", proc.stdout, re.M)
    return {"returncode": proc.returncode, "tokens": tokens[1].split() if tokens else None,
            "stdout": proc.stdout, "stderr": proc.stderr,
            "buffers": {name: float(mib) for name, mib in
                        re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", proc.stderr)}}


def test_patched_runtime_on_arm_generates_as_stock(arm_builds, arm_stock_build, arm_converted):
    target = "arm-i8mm"
    original, ours = arm_converted("Q4_0", target)
    build, cpu = ARM_TARGETS[target]
    stock = arm_generate(arm_stock_build, cpu, original)
    patched = arm_generate(arm_builds[build], cpu, ours)
    assert_same_generation(stock, patched)
    # stock repacked the matrices at load; the patched runtime read ours from the mapping (what it
    # may still repack is Gemma's tied output matrix, token_embd.weight, kept plain for get_rows)
    with read_gguf(original) as f:
        embd_mib = f.tensor("token_embd.weight").nbytes / 2**20
    assert stock["buffers"]["CPU_REPACK"] > embd_mib + 10
    assert patched["buffers"].get("CPU_REPACK", 0) <= embd_mib + 0.01
    assert "CPU_Mapped" in patched["buffers"]
