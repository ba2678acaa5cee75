"""The AMX layout against the real runtime: upstream llama.cpp, built from the pinned source.

Two builds of the same source (runtime/llama.cpp/build.py, cached in .cache/llama.cpp):
* ``emulate-amx-stock``: upstream unchanged, its AMX code compiled against the tile emulation, so its own
  load-time AMX packing and kernels run on this AVX-512 VNNI machine;
* ``emulate-amx``: the same plus our patch (runtime/llama.cpp/patches), which runs AMX-packed files
  from the mmap.

The tests prove: upstream's packer gives our bytes on every packed tensor of the real fixtures;
upstream's AMX matmul reading our mapped bytes equals, bit for bit, its matmul on its own load-time
packing; the patched runtime generates the same tokens from our file as stock upstream from the
original, with nothing repacked at load; the unpatched runtime and a CPU without AMX refuse the file.

Skipped (with the reason) without AVX-512 VNNI (a CPU without it cannot run the emulated build;
also under CI: no install step adds an instruction set), a compiler/cmake or the package index
(the last two are failures under CI, which installs them).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import repack
from formats.gguf_container import read_gguf
from tests.conftest import _fixture_dir, run_quantize

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The capital of France is"
N_PREDICT = 12
# every type upstream's AMX backend packs; the Gemma fixture itself mixes Q4_K, Q6_K and Q8_0
AMX_FIXTURE_TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]
# activation rows: the AVX-512 VNNI path (M = 1), partial and whole 16/32-row tile blocks
M_VALUES = [1, 2, 16, 31, 32, 33, 64]
# stock CPU matmul vs AMX matmul: both quantize the activations the same way, and differ only in
# the order of float accumulation; measured differences are ~1e-6 of the output's largest value
MATMUL_RTOL = 1e-4


def _build_module():
    spec = importlib.util.spec_from_file_location("runtime_build", ROOT / "runtime" / "llama.cpp" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"llama.cpp runtime tests cannot run in CI: {reason}")
    pytest.skip(reason)


def _check_prerequisites(cpu_flag: str = "avx512_vnni", build: str = "the emulated-AMX build") -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if cpu_flag not in cpuinfo.split():
        # hardware, not a missing tool: no install step can add it, so CI skips too (CI runs on
        # the submitting developer's machine, and not every one of them has AVX-512)
        pytest.skip(f"no {cpu_flag} on this CPU: {build} of llama.cpp needs it")
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} not found: needed to build llama.cpp")


@pytest.fixture(scope="session")
def runtime():
    """{"stock": bin dir, "patched": bin dir}: both builds, made once and cached."""
    _check_prerequisites()
    return built_runtime("emulate-amx")


def built_runtime(flavour: str) -> dict:
    """{"stock": bin dir, "patched": bin dir} of a flavour of runtime/llama.cpp/build.py."""
    build = _build_module()
    try:
        sdist = build.fetch_sdist()
    except build.BuildError as e:
        _unavailable(f"cannot fetch llama-cpp-python=={build.LLAMA_CPP_PYTHON_VERSION} "
                     f"from the package index: {str(e).splitlines()[0]}")
    assert sdist.exists()
    return {"stock": build.build(f"{flavour}-stock"), "patched": build.build(flavour)}


def upstream_loadable_q5_k(llama_quantize, gemma_path) -> Path:
    """Gemma with its K = 1024/2048 matrices in Q5_K and the rest in Q8_0. The --pure Q5_K fixture
    cannot serve here: ik's llama-quantize falls back to its own Q6_0 (id 133, unknown upstream)
    for the K = 640 matrices, which Q5_K's 256-element blocks cannot hold."""
    out = _fixture_dir() / "gemma-3-270m-q5_k-upstream.gguf"
    flags = ["--allow-requantize", "--token-embedding-type", "q8_0", "--attn-q-type", "q8_0",
             "--attn-k-type", "q8_0", "--attn-v-type", "q8_0", "--ffn-gate-type", "q8_0",
             "--ffn-up-type", "q8_0", "--attn-output-type", "q5_K", "--ffn-down-type", "q5_K"]
    return run_quantize(llama_quantize, flags, gemma_path, "Q5_K_S", out)


@pytest.fixture(scope="session")
def amx_converted(tmp_path_factory, gemma_path, requantized, llama_quantize):
    """amx_converted(qtype or "Q4_K_M") -> (original, ours): converted once per session."""
    out_dir = tmp_path_factory.mktemp("amx-converted")
    done: dict[str, tuple[Path, Path]] = {}

    def get(qtype: str) -> tuple[Path, Path]:
        if qtype not in done:
            original = (gemma_path if qtype == "Q4_K_M" else
                        upstream_loadable_q5_k(llama_quantize, gemma_path) if qtype == "Q5_K" else
                        requantized(qtype))
            ours = out_dir / f"{qtype}.gguf"
            repack.convert(original, ours, layout="amx")
            done[qtype] = (original, ours)
        return done[qtype]

    return get


def packed_pairs(original: Path, ours: Path):
    """(original tensor, our tensor) for every tensor our file holds in the AMX layout."""
    a, b = read_gguf(original), read_gguf(ours)
    pairs = [(a.tensor(t.name), t) for t in b.tensors if t.type.origin == "amx"]
    return a, b, pairs


# --------------------------------------------------------------------------------------------
# Upstream's packer is the oracle


@pytest.mark.parametrize("qtype", ["Q4_K_M", *AMX_FIXTURE_TYPES])
def test_upstream_packer_gives_our_bytes(runtime, amx_converted, qtype, tmp_path):
    original, ours = amx_converted(qtype)
    a, b, pairs = packed_pairs(original, ours)
    assert len(pairs) >= 36, "the fixture should have most of its weights packed"
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("".join(f"{s.type.name} {s.ne1} {s.ne0} {a.data_start + s.offset}\n"
                                for s, _ in pairs))
    packed = tmp_path / "upstream.bin"
    proc = subprocess.run([runtime["stock"] / "amx-kernel-check", "pack", original, manifest, packed],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    upstream = packed.read_bytes()
    pos = 0
    for s, t in pairs:
        assert upstream[pos:pos + t.nbytes] == bytes(b.tensor_data(t)), f"{t.name} ({s.type.name})"
        pos += t.nbytes
    assert pos == len(upstream)
    a.close()
    b.close()


# --------------------------------------------------------------------------------------------
# Kernel level: upstream's AMX matmul on our mapped bytes


def _run_matmul(bin_dir: Path, src, packed_bytes: bytes, orig_bytes: bytes, m: int, tmp: Path):
    n, k = src.ne1, src.ne0
    (tmp / "orig.bin").write_bytes(orig_bytes)
    (tmp / "packed.bin").write_bytes(packed_bytes)
    x = np.random.default_rng(1000 + m).standard_normal((m, k)).astype(np.float32)
    x.tofile(tmp / "x.bin")
    proc = subprocess.run([bin_dir / "amx-kernel-check", "matmul", src.type.name, str(n), str(k), str(m),
                           tmp / "orig.bin", tmp / "packed.bin", tmp / "x.bin", tmp / "y.bin"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tile_ops = {name: int(count) for name, count in re.findall(r"tile_ops (\w+) (-?\d+)", proc.stdout)}
    y = np.fromfile(tmp / "y.bin", dtype=np.float32).reshape(3, m, n)
    return y, tile_ops


@pytest.mark.parametrize("qtype", AMX_FIXTURE_TYPES)
def test_amx_matmul_on_mapped_file_bytes(runtime, amx_converted, qtype, tmp_path):
    original, ours = amx_converted(qtype)
    a, b, pairs = packed_pairs(original, ours)
    src, packed = next((s, t) for s, t in pairs if t.name == "blk.0.attn_output.weight")
    orig_bytes, packed_bytes = bytes(a.tensor_data(src)), bytes(b.tensor_data(packed))
    for m in M_VALUES:
        y, tile_ops = _run_matmul(runtime["patched"], src, packed_bytes, orig_bytes, m, tmp_path)
        y_load, y_mapped, y_stock = y
        # bit for bit the same as upstream's own load-time packing
        assert np.array_equal(y_mapped.view(np.uint32), y_load.view(np.uint32)), f"M={m}"
        assert np.all(np.isfinite(y_mapped))
        scale = np.abs(y_stock).max()
        assert np.abs(y_mapped - y_stock).max() <= MATMUL_RTOL * scale, f"M={m}"
        # the tile path really ran for M > 1 (M = 1 takes upstream's AVX-512 VNNI kernel)
        assert tile_ops["mapped"] == tile_ops["amx_buffer"]
        assert (tile_ops["mapped"] > 0) == (m > 1), f"M={m}: {tile_ops}"
        assert tile_ops["stock_cpu"] == 0
    a.close()
    b.close()


# --------------------------------------------------------------------------------------------
# End to end: generation from the mapped file


def generate(bin_dir: Path, model: Path, env: dict | None = None, extra_args: list[str] | None = None) -> dict:
    """Run amx-generate; returns exit code, tokens, stderr, the process's own peak RSS (KiB, its
    VmHWM: wait4's ru_maxrss would count the pytest process it was forked from) and what was
    repacked."""
    proc = subprocess.Popen([bin_dir / "amx-generate", model, "-n", str(N_PREDICT), "-t", "2", *(extra_args or []),
                             PROMPT],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            env={**os.environ, **(env or {})})
    out, err = proc.communicate()
    tokens = re.search(r"^tokens:(.*)$", out, re.M)
    rss = re.search(r"^peak_rss_kib: (\d+)$", out, re.M)
    buffers = {name: float(mib) for name, mib in
               re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", err)}
    return {"returncode": proc.returncode, "tokens": tokens.group(1).split() if tokens else None,
            "stdout": out,
            "peak_rss_kib": int(rss.group(1)) if rss else None,
            "stderr": err, "buffers": buffers,
            "repacked": re.findall(r"amx repack tensor (\S+) of type", err)}


@pytest.mark.parametrize("qtype", ["Q4_K_M", *AMX_FIXTURE_TYPES])
def test_patched_runtime_generates_from_mapped_file(runtime, amx_converted, qtype):
    generates_as_stock(runtime, *amx_converted(qtype))


def generates_as_stock(runtime: dict, original: Path, ours: Path) -> None:
    """The patched build on our file gives stock's tokens on the original, reading what we packed
    from the mapping (also tests/test_real_amx.py, on real tiles)."""
    stock = generate(runtime["stock"], original)
    patched = generate(runtime["patched"], ours)
    assert stock["returncode"] == 0, stock["stderr"][-2000:]
    assert patched["returncode"] == 0, patched["stderr"][-2000:]
    assert patched["tokens"] == stock["tokens"] and len(stock["tokens"]) >= 4

    # zero copy: nothing we packed is repacked or copied at load. What the runtime still repacks is
    # only the tied output matrix (Gemma reuses token_embd.weight, which stays unpacked for get_rows)
    with read_gguf(ours) as f:
        packed_names = {t.name for t in f.tensors if t.type.origin == "amx"}
    assert len(stock["repacked"]) > len(patched["repacked"])
    assert not packed_names & set(patched["repacked"])
    assert set(patched["repacked"]) <= {"token_embd.weight"}
    assert patched["buffers"].get("AMX", 0) < stock["buffers"]["AMX"]
    assert "CPU_Mapped" in patched["buffers"]


def test_patched_runtime_uses_less_memory(runtime, amx_converted):
    original, ours = amx_converted("Q4_K_M")
    stock = generate(runtime["stock"], original)["peak_rss_kib"]
    patched = generate(runtime["patched"], ours)["peak_rss_kib"]
    assert 0 < patched < stock, (patched, stock)


def test_unpatched_runtime_refuses_amx_file(runtime, amx_converted):
    _, ours = amx_converted("Q4_0")
    result = generate(runtime["stock"], ours)
    assert result["returncode"] == 1  # a clean error exit, not a signal
    assert "invalid ggml type 1026" in result["stderr"]
    assert result["tokens"] is None


def test_patched_runtime_refuses_without_amx(runtime, amx_converted):
    """On a CPU without AMX the packed tensors cannot run: refused at load, nothing computed."""
    original, ours = amx_converted("Q4_0")
    result = generate(runtime["patched"], ours, env={"AMX_TILE_EMULATION_DENY": "1"})
    assert result["returncode"] == 1
    assert "is packed for Intel AMX (amx_q4_0), but this CPU has no AMX" in result["stderr"]
    assert "failed to find a compatible buffer type for tensor" in result["stderr"]
    assert result["tokens"] is None
    # the same runtime still runs the original there, on the stock CPU kernels
    fallback = generate(runtime["patched"], original, env={"AMX_TILE_EMULATION_DENY": "1"})
    assert fallback["returncode"] == 0 and fallback["repacked"] == []


def with_packed_norm(original: Path, out: Path) -> Path:
    """``original`` with output_norm.weight typed amx_q8_0 (zero blocks of the packed size): a
    packed type that is not operand 0 of a matrix multiplication (llama.cpp multiplies the
    normalized activations by it, GGML_OP_MUL)."""
    from formats.ggml_types import type_by_name
    from tests.ggufbuild import RawGGUF, RawTensor
    packed = type_by_name("amx_q8_0")
    with read_gguf(original) as f:
        raw = RawGGUF(kvs=[r.raw for r in f.kv.values()], version=f.version, alignment=f.alignment)
        data = bytearray()
        for t in f.tensors:
            data += bytes(-len(data) % f.alignment)
            type_id, blob = ((packed.id, bytes(packed.tensor_bytes(t.shape)))
                             if t.name == "output_norm.weight" else (t.type_id, f.tensor_data(t)))
            raw.tensors.append(RawTensor(t.name, t.shape, type_id, len(data)))
            data += blob
        raw.data = bytes(data)
    out.write_bytes(raw.tobytes())
    return out


def assert_packed_norm_refused(bin_dir: Path, gemma_path: Path, tmp_path: Path) -> None:
    """Issue 20, item 13: a packed type anywhere but operand 0 of a matrix multiplication is
    refused at load with the clear line; it used to load and abort at the first compute
    (binary-ops.cpp: unsupported types). Any build of the patch (with AMX support or not)."""
    bad = with_packed_norm(gemma_path, tmp_path / "packed-norm.gguf")
    result = generate(bin_dir, bad)
    assert result["returncode"] == 1, result["stderr"][-2000:]   # a clean exit, not SIGABRT
    assert ("tensor 'output_norm.weight' is packed for Intel AMX (amx_q8_0), but packed weights "
            "are read only as operand 0 of a matrix multiplication (here: operand 1 of MUL)"
            in result["stderr"]), result["stderr"][-2000:]
    assert "failed to find a compatible buffer type for tensor output_norm.weight" in result["stderr"]
    assert "unsupported types" not in result["stderr"] and result["tokens"] is None


def test_patched_runtime_refuses_a_packed_norm_at_load(runtime, gemma_path, tmp_path):
    assert_packed_norm_refused(runtime["patched"], gemma_path, tmp_path)


def test_refusal_is_what_the_runtime_readme_quotes(runtime, amx_converted):
    """runtime/llama.cpp/README.md quotes the lines the patched runtime prints when it refuses an
    amx file on a CPU without AMX (Gemma-3-270M Q4_K_M); they are lines of its log, verbatim."""
    from tests.test_first_hour import runtime_readme_refusals
    _, ours = amx_converted("Q4_K_M")
    result = generate(runtime["patched"], ours, env={"AMX_TILE_EMULATION_DENY": "1"})
    assert result["returncode"] == 1
    quoted = runtime_readme_refusals()[0]
    assert len(quoted) == 2
    for line in quoted:
        assert line in result["stderr"].splitlines(), (line, result["stderr"][-3000:])
