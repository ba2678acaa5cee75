"""The cpu-repack layout against the real runtime: llama.cpp reading upstream's own CPU_REPACK
layout from the mapped file (runtime patch 0003), against stock llama.cpp repacking at load.

Two builds of the pinned source for any AVX2 CPU (runtime/llama.cpp/build.py ``avx2`` patched and
``avx2-stock``, cached like test_llama_runtime.py's): upstream's x86 CPU_REPACK kernels run
natively, and its choice of variants is that of the ``x86-avx2`` target (the build's CPU features
are compile-time), whatever the machine beyond AVX2.

The tests prove:
* end to end (Gemma Q4_K_M, its pure Q4_0 and IQ4_NL requantizations, and a small qwen3moe whose
  3-D experts are repacked): the patched runtime on our file generates the same greedy tokens,
  with the same logit margins to the last printed digit, as stock on the original: both run the
  same kernels on the same bytes, ours from the mapped file, stock from its load-time copy;
* nothing is repacked at load: no CPU_REPACK buffer for the tensors our file holds repacked, and
  the private (anonymous) memory after the load is that of a plain mmap load (--no-repack), not
  that plus a repacked copy as in stock;
* refusals, each at load with exit 1 and one line: a file made for another CPU (arm-i8mm: Q4_0 as
  4x8), a file needing a CPU feature this build lacks (x86-avx512: Q2_K as 8x8), a repacked tensor
  used by an op the repack kernels do not compute (GET_ROWS), and the unpatched runtime on our file.

Skipped (with the reason) without AVX2 (hardware: also under CI, as test_llama_runtime.py skips
without AVX-512 VNNI), cmake / a C++ compiler or the package index (failures under CI, which
installs them).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

import repack
from formats.gguf_container import read_gguf
from tests.test_llama_runtime import _check_prerequisites, built_runtime, generate

TARGET = "x86-avx2"
# Gemma files whose weights upstream repacks on x86 (Q4_K_M: its Q4_K matrices)
E2E_TYPES = ["Q4_K_M", "Q4_0", "IQ4_NL"]
# private memory after the load, ours against a plain mmap load of the original: the same but for
# allocator noise (the goal: within 5%)
PRIVATE_TOLERANCE = 0.05
CPU_REPACK_BASE = 2048


@pytest.fixture(scope="session")
def cpu_runtime():
    """{"stock": bin dir, "patched": bin dir}: the AVX2 builds, made once and cached."""
    _check_prerequisites("avx2", "the AVX2 build")
    return built_runtime("avx2")


def convert_cpu_repack(original: Path, ours: Path, target: str = TARGET) -> Path:
    repack.convert(original, ours, layout="cpu-repack", target=target)
    return ours


@pytest.fixture(scope="session")
def cpu_repack_converted(tmp_path_factory, gemma_path, requantized):
    """cpu_repack_converted(qtype or "Q4_K_M", target) -> (original, ours), converted once."""
    out_dir = tmp_path_factory.mktemp("cpu-repack-converted")
    done: dict[tuple[str, str], tuple[Path, Path]] = {}

    def get(qtype: str, target: str = TARGET) -> tuple[Path, Path]:
        if (qtype, target) not in done:
            original = gemma_path if qtype == "Q4_K_M" else requantized(qtype)
            done[qtype, target] = (original, convert_cpu_repack(original, out_dir / f"{qtype}-{target}.gguf",
                                                                target))
        return done[qtype, target]

    return get


def repacked_tensors(path: Path) -> dict[str, int]:
    """name -> GGUF type id of each tensor the file holds in the cpu-repack layout."""
    with read_gguf(path) as f:
        return {t.name: t.type.id for t in f.tensors if t.type.id >= CPU_REPACK_BASE}


def load_anon_kib(result: dict) -> int:
    return int(re.search(r"^load_anon_kib: (\d+)$", result["stdout"], re.M).group(1))


def margins(result: dict) -> list[str]:
    return re.search(r"^margins:(.*)$", result["stdout"], re.M).group(1).split()


def assert_same_generation(stock: dict, patched: dict) -> None:
    assert stock["returncode"] == 0, stock["stderr"][-2000:]
    assert patched["returncode"] == 0, patched["stderr"][-2000:]
    assert len(stock["tokens"]) >= 4 and len(set(stock["tokens"])) > 1
    assert patched["tokens"] == stock["tokens"]
    # the same kernels on the same bytes: the same logits, not merely the same argmax
    assert margins(patched) == margins(stock)


# --------------------------------------------------------------------------------------------
# End to end


@pytest.mark.parametrize("qtype", E2E_TYPES)
def test_patched_runtime_generates_from_mapped_cpu_repack_file(cpu_runtime, cpu_repack_converted, qtype):
    original, ours = cpu_repack_converted(qtype)
    packed = repacked_tensors(ours)
    assert len(packed) >= 20, "the fixture's matrices of a type upstream repacks should be repacked"
    stock = generate(cpu_runtime["stock"], original)
    patched = generate(cpu_runtime["patched"], ours)
    assert_same_generation(stock, patched)

    # stock repacked at load into its CPU_REPACK buffer; ours computed from the mapped file. What
    # the patched runtime may still repack is only Gemma's tied output matrix: token_embd.weight,
    # which the file keeps plain because get_rows reads it.
    assert stock["buffers"]["CPU_REPACK"] > 0
    assert "CPU_Mapped" in patched["buffers"]
    with read_gguf(original) as f:
        embd = next(t for t in f.tensors if t.name == "token_embd.weight")
        embd_mib = embd.nbytes / 2**20
    assert patched["buffers"].get("CPU_REPACK", 0) <= embd_mib + 0.01
    assert stock["buffers"]["CPU_REPACK"] - patched["buffers"].get("CPU_REPACK", 0) > 10


def test_mapped_cpu_repack_file_has_no_private_copy(cpu_runtime, cpu_repack_converted):
    """Private memory after the load: stock = plain mmap + its repacked copy; ours = plain mmap."""
    original, ours = cpu_repack_converted("Q4_0")
    plain = generate(cpu_runtime["stock"], original, extra_args=["--no-repack"])
    stock = generate(cpu_runtime["stock"], original)
    patched = generate(cpu_runtime["patched"], ours)
    for r in (plain, stock, patched):
        assert r["returncode"] == 0, r["stderr"][-2000:]
    assert "CPU_REPACK" not in plain["buffers"]
    copy_kib = stock["buffers"]["CPU_REPACK"] * 1024
    # stock holds the repacked copy in private memory
    assert load_anon_kib(stock) >= load_anon_kib(plain) + 0.9 * copy_kib
    # ours holds only what the tied output matrix costs (its repacked copy), as stock does for it
    tied_kib = patched["buffers"].get("CPU_REPACK", 0) * 1024
    assert load_anon_kib(patched) <= (load_anon_kib(plain) + tied_kib) * (1 + PRIVATE_TOLERANCE)
    assert load_anon_kib(patched) < load_anon_kib(stock) - 0.9 * (copy_kib - tied_kib)


# --------------------------------------------------------------------------------------------
# MoE experts: MUL_MAT_ID on repacked 3-D experts from the mapped file


@pytest.fixture(scope="module")
def moe_q4_0(cpu_runtime, tmp_path_factory):
    from tests.test_llama_moe import N_LAYER, build_qwen3moe
    tmp = tmp_path_factory.mktemp("moe-cpu-repack")
    original = build_qwen3moe(tmp / "moe-q4_0.gguf", "Q4_0", cpu_runtime["stock"], tmp)
    ours = convert_cpu_repack(original, tmp / "moe-q4_0-cpu-repack.gguf")
    experts = [name for name in repacked_tensors(ours) if "_exps." in name]
    assert len(experts) == 3 * N_LAYER
    return original, ours


def test_moe_generates_from_mapped_repacked_experts(cpu_runtime, moe_q4_0):
    original, ours = moe_q4_0
    with read_gguf(ours) as f:
        assert any(t.type.id >= CPU_REPACK_BASE and len(t.shape) == 3 for t in f.tensors)
    stock = generate(cpu_runtime["stock"], original)
    patched = generate(cpu_runtime["patched"], ours)
    assert_same_generation(stock, patched)
    assert stock["buffers"]["CPU_REPACK"] > 0
    # every matrix of this model, experts included, is read from the mapped file
    assert "CPU_REPACK" not in patched["buffers"]


# --------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("qtype, target, packed, this_cpu", [
    # another CPU: arm-i8mm's Q4_0 is 4x8, this CPU computes Q4_0 as 8x8
    ("Q4_0", "arm-i8mm", "cpu_q4_0_4x8", "computes q4_0 weights of its shape as cpu_q4_0_8x8"),
    # a CPU feature this build lacks: upstream repacks Q2_K (8x8) only with AVX-512, as for an AVX2 CPU
    ("Q2_K", "x86-avx512", "cpu_q2_K_8x8", "computes q2_K weights of its shape without repacking"),
])
def test_file_for_another_cpu_is_refused(cpu_runtime, cpu_repack_converted, qtype, target, packed, this_cpu):
    original, ours = cpu_repack_converted(qtype, target)
    result = generate(cpu_runtime["patched"], ours)
    assert result["returncode"] == 1 and result["tokens"] is None
    line = re.search(rf"^.*is repacked as {packed}.*$", result["stderr"], re.M).group(0)
    assert re.fullmatch(
        rf"ggml_repack_supports_prepacked: tensor '\S+' is repacked as {packed} for the CPU target '{target}', "
        rf"but this CPU {this_cpu}: run the file on a CPU of that target, or restore the original model with "
        r"`amx-repack unpack` to run it here", line)
    assert "failed to find a compatible buffer type for tensor" in result["stderr"]
    # the same runtime runs the original (repacking at load what it repacks, as stock does)
    assert generate(cpu_runtime["patched"], original)["returncode"] == 0


def _retyped(path: Path, name: str, type_id: int, out: Path) -> Path:
    """A copy of a GGUF with one tensor's type id changed in its header (same byte size)."""
    with read_gguf(path) as f:
        header_end = f.data_start
    data = bytearray(path.read_bytes())
    encoded = struct.pack("<Q", len(name)) + name.encode()
    # the last occurrence in the header: the tensor infos follow the metadata (which lists names too)
    pos = data.rindex(encoded, 0, header_end) + len(encoded)
    n_dims = struct.unpack_from("<I", data, pos)[0]
    struct.pack_into("<i", data, pos + 4 + 8 * n_dims, type_id)
    out.write_bytes(bytes(data))
    return out


def test_repacked_tensor_in_another_op_is_refused(cpu_runtime, cpu_repack_converted, tmp_path):
    """token_embd.weight is read by GET_ROWS: as a repacked type it is refused, never computed."""
    _, ours = cpu_repack_converted("Q4_0")
    q4_0_8x8 = CPU_REPACK_BASE + 64 * 3 + 2
    bad = _retyped(ours, "token_embd.weight", q4_0_8x8, tmp_path / "embd-repacked.gguf")
    result = generate(cpu_runtime["patched"], bad)
    assert result["returncode"] == 1 and result["tokens"] is None
    assert ("ggml_repack_supports_prepacked: tensor 'token_embd.weight' is repacked (cpu_q4_0_8x8), which only "
            "the F32 MUL_MAT / MUL_MAT_ID kernels read, not GET_ROWS: restore the original model with "
            "`amx-repack unpack`") in result["stderr"]


def test_unpatched_runtime_refuses_cpu_repack_file(cpu_runtime, cpu_repack_converted):
    _, ours = cpu_repack_converted("Q4_0")
    assert set(repacked_tensors(ours).values()) == {CPU_REPACK_BASE + 64 * 3 + 2}   # q4_0_8x8
    result = generate(cpu_runtime["stock"], ours)
    assert result["returncode"] == 1  # a clean error exit, not a signal
    assert re.search(r"tensor '\S+' has invalid ggml type 2242\. should be in \[0, 43\)", result["stderr"])
    assert result["tokens"] is None


# ------------------------------------------------------------------------------------------
# The AMX refusals of patch 0001 on a build without AMX support: this AVX2 build is what a user
# without AMX gets, so it also proves what runtime/llama.cpp/README.md quotes for it, and the
# load-time refusal of a packed type outside a matrix multiplication (issue 20, item 13)


def test_amx_file_on_a_build_without_amx_is_refused_as_the_readme_quotes(cpu_runtime, gemma_path,
                                                                         tmp_path):
    from tests.test_first_hour import runtime_readme_refusals
    ours = tmp_path / "gemma-amx.gguf"
    repack.convert(gemma_path, ours, layout="amx")
    result = generate(cpu_runtime["patched"], ours)
    assert result["returncode"] == 1 and result["tokens"] is None, result["stderr"][-2000:]
    # the README's second block: the first line as a build without AMX support prints it
    [line] = runtime_readme_refusals()[1]
    assert line in result["stderr"].splitlines(), (line, result["stderr"][-3000:])


def test_packed_norm_is_refused_at_load_on_a_build_without_amx(cpu_runtime, gemma_path, tmp_path):
    from tests.test_llama_runtime import assert_packed_norm_refused
    assert_packed_norm_refused(cpu_runtime["patched"], gemma_path, tmp_path)


def test_shell_recipe_falls_back_to_the_original_without_amx(cpu_runtime, gemma_path, tmp_path):
    """The README's shell recipe, run as it stands with this build's llama-simple (what a user
    without AMX builds): it converts with --verify, the AMX file is refused, and the recipe's
    second command prints stock llama-simple's text for the original."""
    from tests.test_llama_python import REFUSAL, run_shell_recipe
    (tmp_path / "model.gguf").symlink_to(gemma_path)
    stock, proc = run_shell_recipe(cpu_runtime, tmp_path)
    assert (tmp_path / "model-amx.gguf").exists()
    assert REFUSAL in proc.stderr
    assert proc.stdout == stock.stdout and stock.stdout.strip()
