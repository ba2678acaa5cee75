"""The hand-written AVX2 / AVX-512 float decoders (native/decode_simd*.c/h) against the portable C.

Every code path (portable, avx2, avx512) is forced in turn in each native module that decodes
(repack._blocks, repack._amx, repack._verify) and must give the same float32 bits, byte for byte,
as the portable path and as gguf-py: on every golden vector of the hot types (amx.npz: source and
AMX tiles; interleaved.npz: source and _R layouts) and on random blocks whose fp16 scales are often
edge values (Inf, quiet and signalling NaNs with payloads, +/-0, subnormals, max finite), including
Q4_1's NaN + NaN. A path this CPU lacks is skipped with its reason (the AVX-512 path needs an
AVX-512 machine). Also: AMX_REPACK_SIMD is read when a module loads, and the built modules contain
no fused multiply-add (gguf-py rounds the product and the sum separately).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from _paths import golden_file
from formats.ggml_types import type_by_name
from repack import amx_kernels, block_decoders as bd, interleaved_kernels
from repack import _amx, _blocks, _verify
from test_block_decoders import _random_blocks, _reference

PATHS = ["portable", "avx2", "avx512"]
MODULES = {"blocks": _blocks, "amx": _amx, "verify": _verify}
# the types with SIMD decoders: source type -> its interleaved type (None: no _R type here)
HOT = {"q4_0": "q4_0_r8", "q4_1": None, "q8_0": "q8_0_r8", "q4_K": "q4_k_r4", "q5_K": None,
       "q6_K": "q6_k_r4", "iq4_xs": "iq4_xs_r8"}


def _path_name(module) -> str:
    return module.ffi.string(module.lib.simd_path_name()).decode()


@pytest.fixture(params=PATHS)
def path(request):
    """Force one path in every decoding module; the path chosen at load is restored after."""
    before = {name: _path_name(m) for name, m in MODULES.items()}
    for name, m in MODULES.items():
        rc = m.lib.simd_force(request.param.encode())
        if rc == -2:
            for n, mm in MODULES.items():
                mm.lib.simd_force(before[n].encode())
            pytest.skip(f"this CPU lacks the {request.param} path")
        assert rc == 0, (name, rc)
        assert _path_name(m) == request.param
    yield request.param
    for name, m in MODULES.items():
        assert m.lib.simd_force(before[name].encode()) == 0


def _portable(fn):
    """fn() computed on the portable path (the reference), whatever path is forced now."""
    now = {name: _path_name(m) for name, m in MODULES.items()}
    for m in MODULES.values():
        m.lib.simd_force(b"portable")
    try:
        return fn()
    finally:
        for name, m in MODULES.items():
            m.lib.simd_force(now[name].encode())


def _assert_bytes_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    g, w = got.reshape(-1).view(np.uint32), want.reshape(-1).view(np.uint32)
    assert g.shape == w.shape, what
    bad = np.flatnonzero(g != w)
    assert bad.size == 0, (f"{what}: {bad.size} of {g.size} floats differ, first at {bad[0]}: "
                           f"{g[bad[0]]:#010x} != {w[bad[0]]:#010x}")


def _decode_source(name, src, nrows, ne0):
    out = np.empty(nrows * ne0, dtype=np.float32)
    bd.dequantize_rows(type_by_name(name).id, src, out, ne0, nrows)
    return out


def _decode_amx(name, packed, nrows, ne0):
    return amx_kernels.dequantize(name, packed, None, nrows, ne0).reshape(-1)


def _decode_interleaved(name, packed, nrows, ne0):
    out = np.empty(nrows * ne0, dtype=np.float32)
    bd.dequantize_interleaved(type_by_name(name).id, packed, out, ne0, nrows)
    return out


def _check_all_decoders(name, src, nrows, ne0, what):
    """Source, AMX and interleaved decoders of one tensor on the forced path: bit-equal to the
    portable path, and the source decoder to gguf-py."""
    want = _reference(name, src, nrows).reshape(-1)
    got = _decode_source(name, src, nrows, ne0)
    _assert_bytes_equal(got, want, f"{what}: {name} source")
    if nrows % 16 == 0:
        packed = np.empty(amx_kernels.packed_nbytes(name, nrows, ne0), dtype=np.uint8)
        amx_kernels.pack(name, src, packed, nrows, ne0)
        got = _decode_amx(name, packed, nrows, ne0)
        _assert_bytes_equal(got, _portable(lambda: _decode_amx(name, packed, nrows, ne0)),
                            f"{what}: {name} AMX tiles")
        _assert_bytes_equal(got, want, f"{what}: {name} AMX tiles vs gguf-py")
    il_name = HOT[name]
    if il_name and nrows % interleaved_kernels.rows_per_group(type_by_name(name).id) == 0:
        tid = type_by_name(name).id
        packed = np.empty(nrows // interleaved_kernels.rows_per_group(tid)
                          * interleaved_kernels._interleaving(tid).group_bytes(ne0), dtype=np.uint8)
        interleaved_kernels.interleave(tid, src, packed, ne0, nrows)
        got = _decode_interleaved(il_name, packed, nrows, ne0)
        _assert_bytes_equal(got, _portable(lambda: _decode_interleaved(il_name, packed, nrows, ne0)),
                            f"{what}: {il_name}")
        _assert_bytes_equal(got, want, f"{what}: {il_name} vs gguf-py")


@pytest.mark.parametrize("name", list(HOT))
def test_random_blocks_with_edge_scales(path, name):
    rng = np.random.default_rng(sum(map(ord, name + path)))
    qk = type_by_name(name).block_size
    for nrows, nb in [(16, 1), (32, 3), (16, 16 if qk == 256 else 70)]:
        for frac in (0.0, 0.3, 1.0):
            src = _random_blocks(name, nrows * nb, rng, frac=frac)
            _check_all_decoders(name, src, nrows, nb * qk, f"{path}, {nrows}x{nb} blocks, specials {frac}")


def test_q4_1_nan_plus_nan(path):
    """Q4_1 d * q + m with both operands NaN: gguf-py (numpy) returns the first one's NaN."""
    rng = np.random.default_rng(3)
    blocks = _random_blocks("q4_1", 32, rng, frac=0.0).reshape(32, 20)
    blocks[:, 0:2] = np.frombuffer(np.array([0x7E55], np.uint16).tobytes(), np.uint8)  # d: qNaN
    blocks[::2, 2:4] = np.frombuffer(np.array([0x7D01], np.uint16).tobytes(), np.uint8)  # m: sNaN
    blocks[1::2, 2:4] = np.frombuffer(np.array([0xFE2A], np.uint16).tobytes(), np.uint8)  # m: qNaN
    _check_all_decoders("q4_1", blocks.reshape(-1), 32, 32, f"{path} NaN + NaN")


def _golden_amx_prefixes(z):
    return sorted({k[:-4] for k in z.files if k.endswith("_src")})


def test_golden_amx(path):
    with np.load(golden_file("amx.npz")) as z:
        prefixes = _golden_amx_prefixes(z)
        assert {p.rsplit("_", 1)[0] for p in prefixes} == set(HOT)
        for prefix in prefixes:
            name = prefix.rsplit("_", 1)[0]
            ne2 = int(z[f"{prefix}_ne2"]) if f"{prefix}_ne2" in z else 1
            n_rows, k = int(z[f"{prefix}_N"]) * ne2, int(z[f"{prefix}_K"])
            src, packed = z[f"{prefix}_src"], z[f"{prefix}_packed"]
            want = _reference(name, src, n_rows).reshape(-1)
            _assert_bytes_equal(_decode_source(name, src, n_rows, k), want, f"{prefix} source")
            _assert_bytes_equal(_decode_amx(name, packed, n_rows, k), want, f"{prefix} AMX")


def test_golden_interleaved(path):
    with np.load(golden_file("interleaved.npz")) as z:
        cases = sorted(k[:-4] for k in z.files if k.endswith("_out"))
        cases = [c for c in cases if c.split("_to_")[1].rsplit("_", 1)[0] in HOT.values()]
        assert {c.split("_to_")[1].rsplit("_", 1)[0] for c in cases} == {v for v in HOT.values() if v}
        for case in cases:
            src_name, rest = case.split("_to_")
            il_name = rest.rsplit("_", 1)[0]
            ne0 = int(z[f"{case}_ne0"])
            nrows = int(z[f"{case}_ne1"]) * int(z[f"{case}_ne2"])
            src, out = z[f"{case}_src"], z[f"{case}_out"]
            want = _reference(src_name, src, nrows).reshape(-1)
            _assert_bytes_equal(_decode_source(src_name, src, nrows, ne0), want, f"{case} source")
            _assert_bytes_equal(_decode_interleaved(il_name, out, nrows, ne0), want, f"{case} {il_name}")


@pytest.mark.parametrize("name", list(HOT))
def test_amx_pack_and_unpack_equal_portable(path, name):
    """amx.c moves a whole tile's 4-bit codes with 128-bit vectors on the avx2 / avx512 paths:
    pack and unpack give the portable path's bytes, on random source blocks and on random packed
    bytes (invalid tiles included: unpack must still move every bit the same way), for whole
    tensors and for strip ranges of them."""
    t = type_by_name(name)
    rng = np.random.default_rng(sum(map(ord, name + path)) + 11)
    for nrows, nb in [(16, 1), (32, 3), (48, 8)]:
        k = nb * t.block_size
        src = rng.integers(0, 256, nrows * nb * t.type_size, dtype=np.uint8)
        n_packed = amx_kernels.packed_nbytes(name, nrows, k)
        packed_random = rng.integers(0, 256, n_packed, dtype=np.uint8)
        for sb, se in [(0, nrows // 16), (nrows // 16 - 1, nrows // 16)]:
            def pack():
                return amx_kernels.pack(name, src, np.zeros(n_packed, np.uint8), nrows, k, sb, se)

            def unpack():
                return amx_kernels.unpack(name, packed_random, np.zeros(src.size, np.uint8), nrows,
                                          k, sb, se)
            what = f"{path}: {name} {nrows}x{nb} blocks, strips {sb}..{se}"
            assert np.array_equal(pack(), _portable(pack)), f"{what}: pack"
            assert np.array_equal(unpack(), _portable(unpack)), f"{what}: unpack"
    with np.load(golden_file("amx.npz")) as z:     # and the reference packer's own bytes
        prefixes = [p for p in _golden_amx_prefixes(z) if p.rsplit("_", 1)[0] == name]
        assert prefixes, f"no golden AMX vector of {name}"
        for prefix in prefixes:
            ne2 = int(z[f"{prefix}_ne2"]) if f"{prefix}_ne2" in z else 1
            n_rows, k = int(z[f"{prefix}_N"]) * ne2, int(z[f"{prefix}_K"])
            src, want = z[f"{prefix}_src"], z[f"{prefix}_packed"]
            got = amx_kernels.pack(name, src, None, n_rows, k)
            assert np.array_equal(got, want), f"{path}: {prefix} pack"
            assert np.array_equal(amx_kernels.unpack(name, want, None, n_rows, k), src), \
                f"{path}: {prefix} unpack"


def test_verify_module_values_check(path):
    """The fused checks of repack._verify (layout and values checks on) run their two decoders
    on the forced path: on random tensors with edge-value scales, source and packed decoders
    agree (no mismatch), for the AMX tiles and the interleaved layouts of every hot type."""
    from repack._verify import ffi, lib
    rng = np.random.default_rng(8)
    for name, il_name in HOT.items():
        t = type_by_name(name)
        nrows, ne0 = 32, 2 * t.block_size if t.block_size == 256 else 8 * t.block_size
        src = _random_blocks(name, nrows * ne0 // t.block_size, rng, frac=0.3)
        rebuilt = np.empty_like(src)
        m = ffi.new("vf_mismatch *")
        packed = np.empty(amx_kernels.packed_nbytes(name, nrows, ne0), dtype=np.uint8)
        amx_kernels.pack(name, src, packed, nrows, ne0)
        rc = lib.vf_check_amx(t.id, t.block_size, t.type_size, ffi.from_buffer(packed),
                              ffi.from_buffer(src), ffi.from_buffer(rebuilt), nrows, ne0, 1, 1, m)
        assert (rc, m.kind) == (0, 0), (name, rc, m.kind, m.index)
        if il_name:
            packed = np.empty_like(src)
            interleaved_kernels.interleave(t.id, src, packed, ne0, nrows)
            rc = lib.vf_check_interleaved(t.id, type_by_name(il_name).id, ffi.from_buffer(packed),
                                          ffi.from_buffer(src), ffi.from_buffer(rebuilt), nrows, ne0,
                                          1, 1, m)
            assert (rc, m.kind) == (0, 0), (il_name, rc, m.kind, m.index)


def test_environment_variable_read_at_load():
    code = ("from repack import _blocks, _amx, _verify\n"
            "print(*[m.ffi.string(m.lib.simd_path_name()).decode() for m in (_blocks, _amx, _verify)])")
    best = None
    for want in PATHS:
        env = dict(os.environ, AMX_REPACK_SIMD=want)
        got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        assert len(set(got)) == 1, got
        supported = _blocks.lib.simd_force(want.encode()) == 0
        if supported:
            assert got[0] == want
            best = want
        else:  # falls back to the best path below it
            assert got[0] == best
    _blocks.lib.simd_force(best.encode())
    assert _blocks.lib.simd_force(b"sse9") == -1


def test_no_fused_multiply_add_in_built_modules():
    objdump = shutil.which("objdump")
    if objdump is None:
        reason = "objdump (binutils) not found: cannot inspect the built modules"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI is set, so this is a failure")
        pytest.skip(reason)
    for name, m in MODULES.items():
        text = subprocess.run([objdump, "-d", "--no-show-raw-insn", m.__file__], capture_output=True,
                              text=True, check=True).stdout
        fused = [line for line in text.splitlines() if "\tvfmadd" in line or "\tvfmsub" in line
                 or "\tvfnmadd" in line or "\tvfnmsub" in line]
        assert not fused, f"{name}: {len(fused)} fused multiply-add instructions, e.g. {fused[0]}"
        if sys.platform == "linux" and os.uname().machine == "x86_64":
            assert "vcvtph2ps" in text, f"{name}: no SIMD decoder compiled in"
