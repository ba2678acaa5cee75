"""Native float decoders (repack/block_decoders.py, native/blocks.c) against gguf-py.

* Source layouts: bit-identical (float32 viewed as uint32, NaN payloads included) to
  ``gguf.quants.dequantize`` on random blocks whose fp16 scales are often special values
  (Inf, quiet/signalling NaNs with payloads, +/-0, subnormals, max finite), and on the golden inputs.
* Interleaved layouts: decoding ik's repacked bytes (golden vectors) equals decoding the source; the
  same on random data interleaved by a small numpy implementation of spec §4.2-4.5 written here.
* ik_llama.cpp's own types (q6_0, iq2_k .. iq5_k, iq4_ks, iq5_ks, iq2_bn, q8_KV, bf16), which gguf-py
  cannot decode: the source decoders are bit-identical to ik's own dequantizers (its libggml's
  ``to_float``, loaded with ctypes from the ``ik-llama-cpp-python`` wheel; skipped without it), and
  their interleaved decoders equal the source decoders on ik's golden output and on random data
  (special scales included) interleaved by the project's native repack.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from _paths import golden_cases, golden_file
from formats.ggml_types import TYPES, type_by_name
from repack import block_decoders as bd

GOLDEN_NAME = "interleaved.npz"   # in _paths.GOLDEN_DIR

# Source types with a native decoder: name -> byte offsets of the fp16 scale fields in one block.
SOURCE_TYPES = {
    "q4_0": [0], "q8_0": [0], "q4_K": [0, 2], "q5_K": [0, 2], "q6_K": [208], "iq4_xs": [0],
    "iq4_nl": [0], "q5_0": [0], "q4_1": [0, 2], "q5_1": [0, 2], "q2_K": [80, 82], "q3_K": [108],
    "iq2_xxs": [0], "iq2_xs": [0], "iq2_s": [0], "iq3_xxs": [0], "iq3_s": [0], "mxfp4": [],
}
# Interleaved type -> source type.
INTERLEAVED = {
    "q4_0_r8": "q4_0", "q8_0_r8": "q8_0", "q4_k_r4": "q4_K", "q5_k_r4": "q5_K", "q6_k_r4": "q6_K",
    "iq4_xs_r8": "iq4_xs", "iq4_nl_r4": "iq4_nl", "q5_0_r4": "q5_0", "q2_k_r4": "q2_K",
    "q3_k_r4": "q3_K", "iq2_xxs_r4": "iq2_xxs", "iq2_xs_r4": "iq2_xs", "iq2_s_r4": "iq2_s",
    "iq3_xxs_r4": "iq3_xxs", "iq3_s_r4": "iq3_s", "mxfp4_r8": "mxfp4",
}

F16_SPECIALS = np.array([
    0x7C00, 0xFC00,                  # +/- Inf
    0x7E00, 0xFE00, 0x7E55, 0xFFFF,  # quiet NaNs (with payloads, negative)
    0x7C01, 0x7D55, 0xFC2A, 0x7DFF,  # signalling NaNs with payloads
    0x0000, 0x8000,                  # +/- 0
    0x0001, 0x8001, 0x03FF, 0x0200,  # subnormals
    0x7BFF, 0xFBFF, 0x0400,          # max finite, min normal
], dtype=np.uint16)
E8M0_SPECIALS = np.array([0, 1, 2, 127, 253, 254, 255], dtype=np.uint8)


def _id(name: str) -> int:
    return type_by_name(name).id


def _u32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1).view(np.uint32)


def _assert_bits_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    g, w = _u32(got), _u32(want)
    assert g.shape == w.shape, what
    bad = np.flatnonzero(g != w)
    if bad.size:
        i = bad[0]
        pytest.fail(f"{what}: {bad.size} of {g.size} values differ; first at {i}: "
                    f"got {g[i]:#010x}, want {w[i]:#010x}")


def _random_blocks(name: str, nblocks: int, rng: np.random.Generator, frac: float = 0.3) -> np.ndarray:
    """Random bytes for nblocks blocks, ~frac of the scale fields overwritten with special values."""
    t = type_by_name(name)
    data = rng.integers(0, 256, size=(nblocks, t.type_size), dtype=np.uint8)
    for off in SOURCE_TYPES[name]:
        hit = rng.random(nblocks) < frac
        vals = rng.choice(F16_SPECIALS, size=int(hit.sum()))
        data[hit, off] = (vals & 0xFF).astype(np.uint8)
        data[hit, off + 1] = (vals >> 8).astype(np.uint8)
    if name == "mxfp4":
        hit = rng.random(nblocks) < frac
        data[hit, 0] = rng.choice(E8M0_SPECIALS, size=int(hit.sum()))
    return data.reshape(-1)


def _reference(name: str, data: np.ndarray, nrows: int) -> np.ndarray:
    qtype = GGMLQuantizationType(_id(name))
    with np.errstate(all="ignore"):
        return quants.dequantize(np.asarray(data, dtype=np.uint8).reshape(nrows, -1), qtype)


def _decode_rows(name: str, data, ne0: int, nrows: int) -> np.ndarray:
    out = np.empty(nrows * ne0, dtype=np.float32)
    bd.dequantize_rows(_id(name), data, out, ne0, nrows)
    return out


def _golden():
    return np.load(golden_file(GOLDEN_NAME))


def _cases_of(path, decoders) -> list[str]:
    with np.load(path) as z:
        cases = sorted(k[:-4] for k in z.files if k.endswith("_out"))
    return [c for c in cases if c.split("_to_")[1].rsplit("_", 1)[0] in decoders]


def _golden_cases() -> list[str]:
    """Golden cases whose conversion has both decoders here (e.g. "q4_K_to_q4_k_r4_2")."""
    return golden_cases(GOLDEN_NAME, lambda path: _cases_of(path, INTERLEAVED))


# ---------------------------------------------------------------------------------------------
# Source layouts against gguf-py


def test_supported_types():
    for name in SOURCE_TYPES:
        assert bd.can_dequantize(_id(name)), name
    for name in INTERLEAVED:
        assert bd.can_dequantize(_id(name)), name
        assert bd.ROWS_PER_GROUP[_id(name)] == int(name[-1])
    for name in IK_SOURCE_TYPES:
        assert bd.can_dequantize(_id(name)), name
    for name in IK_INTERLEAVED:
        assert bd.can_dequantize(_id(name)), name
        assert bd.ROWS_PER_GROUP[_id(name)] == int(name.rsplit("_r", 1)[1])
    for tid in (0, 1, 9, 15, 19, 29, 134, 141, 145, 153, 219, 397, 399, 9999, -1, 2**40):
        assert not bd.can_dequantize(tid), tid


@pytest.mark.parametrize("name", list(SOURCE_TYPES))
def test_source_matches_gguf_py(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    blck = type_by_name(name).block_size
    shapes = [(1, 1), (3, 2), (5, 3)] + ([(64, 16)] if blck == 32 else [(24, 4)])
    for nrows, nb in shapes:
        ne0 = nb * blck
        data = _random_blocks(name, nrows * nb, rng)
        _assert_bits_equal(_decode_rows(name, data, ne0, nrows), _reference(name, data, nrows),
                           f"{name} {nrows}x{ne0}")


@pytest.mark.parametrize("name", ["q4_1", "q5_1", "q4_K", "q2_K"])
def test_two_nan_operands(name):
    """Blocks where both fp16 fields (d and m/dmin) are NaNs with different payloads: the result
    must carry the payload gguf-py's operation order gives (first operand of the add/subtract)."""
    rng = np.random.default_rng(7)
    blck, size = type_by_name(name).block_size, type_by_name(name).type_size
    nblocks = 64
    data = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    nans = np.array([0x7E01, 0xFE02, 0x7C03, 0xFC04, 0x7E00, 0xFDFF], dtype=np.uint16)
    for off in SOURCE_TYPES[name]:
        vals = rng.choice(nans, size=nblocks)
        data[:, off], data[:, off + 1] = vals & 0xFF, vals >> 8
    data = data.reshape(-1)
    _assert_bits_equal(_decode_rows(name, data, blck * 4, nblocks // 4),
                       _reference(name, data, nblocks // 4), name)


@pytest.mark.parametrize("case", _golden_cases())
def test_source_matches_gguf_py_on_golden_inputs(case):
    z = _golden()
    name = case.split("_to_")[0]
    src, ne0, rows = z[case + "_src"], int(z[case + "_ne0"]), int(z[case + "_rows"])
    _assert_bits_equal(_decode_rows(name, src, ne0, rows), _reference(name, src, rows), case)


def test_row_range_writes_only_those_rows():
    rng = np.random.default_rng(3)
    name, ne0, nrows = "q4_K", 512, 9
    data = _random_blocks(name, nrows * 2, rng)
    want = _reference(name, data, nrows).reshape(nrows, ne0)
    out = np.full((nrows, ne0), 12345.0, dtype=np.float32)
    bd.dequantize_rows(_id(name), data, out, ne0, nrows, 2, 5)
    _assert_bits_equal(out[2:5], want[2:5], "rows 2..4")
    assert (out[:2] == 12345.0).all() and (out[5:] == 12345.0).all()
    bd.dequantize_rows(_id(name), data, out, ne0, nrows, 5, 5)  # empty range: nothing happens
    assert (out[5:] == 12345.0).all()


def test_accepts_buffer_kinds():
    rng = np.random.default_rng(4)
    name, ne0, nrows = "q8_0", 64, 3
    data = _random_blocks(name, nrows * 2, rng)
    want = _u32(_reference(name, data, nrows))
    for src in (data, data.tobytes(), bytearray(data.tobytes()), memoryview(data.tobytes())):
        for dst in (np.empty(nrows * ne0, np.float32), bytearray(4 * nrows * ne0)):
            bd.dequantize_rows(_id(name), src, dst, ne0, nrows)
            assert (np.frombuffer(dst, np.uint32) == want).all()


# ---------------------------------------------------------------------------------------------
# Interleaved layouts


@pytest.mark.parametrize("case", _golden_cases())
def test_interleaved_golden(case):
    z = _golden()
    dst_id, src_id = int(z[case + "_dst_id"]), int(z[case + "_src_id"])
    ne0, rows = int(z[case + "_ne0"]), int(z[case + "_rows"])
    want = _decode_rows(TYPES[src_id].name, z[case + "_src"], ne0, rows)
    got = np.empty(rows * ne0, dtype=np.float32)
    bd.dequantize_interleaved(dst_id, z[case + "_out"], got, ne0, rows)
    _assert_bits_equal(got, want, case)


def test_every_interleaved_decoder_has_golden_vectors():
    cases = _cases_of(golden_file(GOLDEN_NAME), INTERLEAVED)
    assert {c.split("_to_")[1].rsplit("_", 1)[0] for c in cases} == set(INTERLEAVED)
    assert len(cases) == 4 * len(INTERLEAVED)


def _interleave_q8_like(src: np.ndarray, nrows: int, nb: int, scale_bytes: int, qbytes: int,
                        R: int = 8) -> np.ndarray:
    """Spec §4.2/4.3/4.4: R rows' scales first (raw), then the quants in 4-byte chunks: stripe c
    holds chunk c of rows 0..R-1."""
    bs = scale_bytes + qbytes
    blocks = src.reshape(nrows // R, R, nb, bs).transpose(0, 2, 1, 3)      # (groups, nb, R, bs)
    scales = blocks[..., :scale_bytes].reshape(nrows // R, nb, R * scale_bytes)
    q = blocks[..., scale_bytes:].reshape(nrows // R, nb, R, qbytes // 4, 4)
    q = q.transpose(0, 1, 3, 2, 4).reshape(nrows // R, nb, R * qbytes)    # (c, k, i) order
    return np.concatenate([scales, q], axis=-1).reshape(-1)


def _interleave_iq4_nl(src: np.ndarray, nrows: int, nb: int) -> np.ndarray:
    """Spec §4.5 (Pattern A), element by element."""
    blocks = src.reshape(nrows // 4, 4, nb, 18).transpose(0, 2, 1, 3)      # (groups, nb, 4, 18)
    qs = blocks[..., 2:]
    v = np.concatenate([qs & 0xF, qs >> 4], axis=-1)                       # (.., 4, 32) codes
    out = np.zeros(blocks.shape[:2] + (72,), dtype=np.uint8)
    out[..., :8] = blocks[..., :2].reshape(blocks.shape[:2] + (8,))
    for k in range(4):
        for i in range(4):
            out[..., 8 + 4 * k + i] = v[..., k, i] | v[..., k, i + 8] << 4
            out[..., 8 + 16 + 4 * k + i] = v[..., k, i + 16] | v[..., k, i + 24] << 4
            out[..., 8 + 32 + 4 * k + i] = v[..., k, i + 4] | v[..., k, i + 12] << 4
            out[..., 8 + 48 + 4 * k + i] = v[..., k, i + 20] | v[..., k, i + 28] << 4
    return out.reshape(-1)


RANDOM_INTERLEAVERS = {
    "q4_0_r8": lambda s, n, nb: _interleave_q8_like(s, n, nb, 2, 16),
    "q8_0_r8": lambda s, n, nb: _interleave_q8_like(s, n, nb, 2, 32),
    "mxfp4_r8": lambda s, n, nb: _interleave_q8_like(s, n, nb, 1, 16),
    "iq4_nl_r4": _interleave_iq4_nl,
}


@pytest.mark.parametrize("dst_name", list(RANDOM_INTERLEAVERS))
def test_interleaved_random(dst_name):
    src_name = INTERLEAVED[dst_name]
    rng = np.random.default_rng(sum(map(ord, dst_name)))
    R = int(dst_name[-1])
    for groups, nb in [(1, 1), (2, 3), (6, 7)]:
        nrows, ne0 = groups * R, nb * 32
        src = _random_blocks(src_name, nrows * nb, rng)
        packed = RANDOM_INTERLEAVERS[dst_name](src, nrows, nb)
        assert packed.size == src.size
        want = _reference(src_name, src, nrows)
        got = np.empty(nrows * ne0, dtype=np.float32)
        bd.dequantize_interleaved(_id(dst_name), packed, got, ne0, nrows)
        _assert_bits_equal(got, want, f"{dst_name} {nrows}x{ne0}")


def test_interleaved_random_via_project_interleaver():
    """All interleaved types on random data with special scales, interleaved by the project's own
    native repack (itself byte-checked against ik's golden output in test_interleaved_layout.py)."""
    kernels = pytest.importorskip("repack.interleaved_kernels")
    rng = np.random.default_rng(11)
    for dst_name, src_name in INTERLEAVED.items():
        t = type_by_name(src_name)
        R = int(dst_name[-1])
        nrows, nb = 2 * R, 3
        ne0 = nb * t.block_size
        src = _random_blocks(src_name, nrows * nb, rng)
        packed = np.empty_like(src)
        kernels.interleave(t.id, src, packed, ne0, nrows)
        got = np.empty(nrows * ne0, dtype=np.float32)
        bd.dequantize_interleaved(_id(dst_name), packed, got, ne0, nrows)
        _assert_bits_equal(got, _reference(src_name, src, nrows), dst_name)


def test_group_range_writes_only_those_groups():
    rng = np.random.default_rng(5)
    nrows, nb = 32, 2
    src = _random_blocks("q8_0", nrows * nb, rng)
    packed = RANDOM_INTERLEAVERS["q8_0_r8"](src, nrows, nb)
    want = _reference("q8_0", src, nrows).reshape(nrows, -1)
    out = np.full((nrows, 64), -7.0, dtype=np.float32)
    bd.dequantize_interleaved(_id("q8_0_r8"), packed, out, 64, nrows, group_begin=1, group_end=3)
    _assert_bits_equal(out[8:24], want[8:24], "groups 1..2")
    assert (out[:8] == -7.0).all() and (out[24:] == -7.0).all()


# ---------------------------------------------------------------------------------------------
# Argument checking


def test_bad_arguments_raise_value_error():
    q4k, r4 = _id("q4_K"), _id("q4_k_r4")
    src = np.zeros(144 * 4, np.uint8)
    dst = np.zeros(256 * 4, np.float32)
    bd.dequantize_rows(q4k, src, dst, 256, 4)           # the valid call
    bd.dequantize_interleaved(r4, src, dst, 256, 4)
    bad_calls = [
        lambda: bd.dequantize_rows(0, src, dst, 256, 4),               # f32: no decoder
        lambda: bd.dequantize_rows(9999, src, dst, 256, 4),            # unknown id
        lambda: bd.dequantize_rows(r4, src, dst, 256, 4),              # _R type as source layout
        lambda: bd.dequantize_interleaved(q4k, src, dst, 256, 4),      # source type as _R layout
        lambda: bd.dequantize_rows(q4k, src, dst, 128, 8),             # ne0 not a block multiple
        lambda: bd.dequantize_rows(q4k, src, dst, 0, 4),
        lambda: bd.dequantize_rows(q4k, src, dst, 256, -1),
        lambda: bd.dequantize_rows(q4k, src[:-1], dst, 256, 4),        # src too short
        lambda: bd.dequantize_rows(q4k, np.zeros(144 * 5, np.uint8), dst, 256, 4),  # too long
        lambda: bd.dequantize_rows(q4k, src, dst[:-1], 256, 4),        # dst too short
        lambda: bd.dequantize_rows(q4k, src, np.zeros(256 * 8, np.float32), 256, 4),
        lambda: bd.dequantize_rows(q4k, src, bytes(4 * 256 * 4), 256, 4),  # read-only dst
        lambda: bd.dequantize_rows(q4k, src, np.zeros((4, 512), np.float32)[:, ::2], 256, 4),
        lambda: bd.dequantize_rows(q4k, np.zeros(144 * 8, np.uint8)[::2], dst, 256, 4),
        lambda: bd.dequantize_rows(q4k, src, dst, 256, 4, 3, 2),       # reversed range
        lambda: bd.dequantize_rows(q4k, src, dst, 256, 4, 0, 5),       # past the end
        lambda: bd.dequantize_rows(q4k, src, dst, 256, 4, -1, 2),
        lambda: bd.dequantize_rows(q4k, src, dst, 256.0, 4),           # not an int
        lambda: bd.dequantize_rows(q4k, src, dst, 256, 4, 0, 2.0),
        lambda: bd.dequantize_rows(q4k, "x" * 576, dst, 256, 4),       # not a buffer
        lambda: bd.dequantize_interleaved(r4, src[:288], dst[:512], 256, 2),  # rows % R
        lambda: bd.dequantize_interleaved(r4, src, dst, 256, 4, 0, 2),  # only 1 group
        lambda: bd.dequantize_interleaved(r4, src, dst, 256, 4, 1, 0),
        lambda: bd.dequantize_interleaved(_id("q2_k_r4"), src, dst, 256, 4),  # size mismatch
    ]
    for i, call in enumerate(bad_calls):
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"bad call {i} did not raise")


def test_native_entry_points_reject_bad_ranges():
    """The C functions validate on their own too (defence in depth), without touching memory."""
    from repack._blocks import ffi, lib
    null_u8, null_f = ffi.NULL, ffi.NULL
    assert lib.blk_dequantize_rows(9999, null_u8, null_f, 32, 0, 1) == -1
    assert lib.blk_dequantize_rows(2, null_u8, null_f, 33, 0, 1) == -2
    assert lib.blk_dequantize_rows(2, null_u8, null_f, 32, 2, 1) == -2
    assert lib.blk_dequantize_rows(2, null_u8, null_f, 32, -1, 1) == -2
    assert lib.blk_dequantize_rows(2, null_u8, null_f, 32, 1, 1) == 0
    assert lib.blk_dequantize_interleaved(2, null_u8, null_f, 32, 0, 1) == -1
    assert lib.blk_dequantize_interleaved(202, null_u8, null_f, 0, 0, 1) == -2
    assert lib.blk_dequantize_interleaved(212, null_u8, null_f, 32, 0, 1) == -2


# ---------------------------------------------------------------------------------------------
# ik_llama.cpp's own types: source decoders against ik's dequantizers, interleaved decoders against
# the source decoders.

# Source type -> where its scales live: ("f16", byte offsets in each block), ("f32row",) for an f32
# scale at the start of every row (Q8_KV: followed by the i32 sum), ("bf16",) for bf16 values.
IK_SOURCE_TYPES = {
    "q6_0": ("f16", [0]), "iq2_k": ("f16", [0]), "iq3_k": ("f16", [0]), "iq4_k": ("f16", [0]),
    "iq5_k": ("f16", [0]), "iq4_ks": ("f32row",), "iq5_ks": ("f32row",), "iq2_bn": ("f32row",),
    "q8_KV": ("f32row",), "bf16": ("bf16",),
}
IK_INTERLEAVED = {
    "q6_0_r4": "q6_0", "iq2_k_r4": "iq2_k", "iq3_k_r4": "iq3_k", "iq4_k_r4": "iq4_k",
    "iq5_k_r4": "iq5_k", "iq4_ks_r4": "iq4_ks", "iq5_ks_r4": "iq5_ks", "iq2_bn_r4": "iq2_bn",
    "q8_KV_r8": "q8_KV", "bf16_r16": "bf16",
}
F32_SPECIALS = np.array([
    0x7F800000, 0xFF800000,                          # +/- Inf
    0x7FC00000, 0xFFC00000, 0x7FC12345, 0xFFFFFFFF,  # quiet NaNs
    0x7F800001, 0xFF812345, 0x7FBFFFFF,              # signalling NaNs
    0x00000000, 0x80000000, 0x00000001, 0x807FFFFF,  # +/- 0, subnormals
    0x7F7FFFFF, 0xFF7FFFFF, 0x00800000,              # max finite, min normal
], dtype=np.uint32)
BF16_SPECIALS = np.array([0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0xFFBF, 0x0000, 0x8000, 0x0001,
                          0x7F7F, 0xFF7F], dtype=np.uint16)


def _ik_ne0(name: str, nb: int) -> int:
    """nb blocks of the type (for bf16: nb pairs of columns, the unit bf16_r16 interleaves)."""
    return nb * max(type_by_name(name).block_size, 2)


def _ik_random_rows(name: str, nrows: int, ne0: int, rng: np.random.Generator,
                    specials: float = 0.3) -> np.ndarray:
    """nrows random rows; scales finite and moderate (specials=0), or ~specials of them replaced by
    special bit patterns (Inf, quiet/signalling NaNs with payloads, +/-0, subnormals, extremes)."""
    t = type_by_name(name)
    kind = IK_SOURCE_TYPES[name]
    rows = rng.integers(0, 256, size=(nrows, t.row_bytes(ne0)), dtype=np.uint8)
    if kind[0] == "f16":
        blocks = rows.reshape(nrows, -1, t.type_size)
        for off in kind[1]:
            d = (rng.standard_normal(blocks.shape[:2]) * 0.01).astype(np.float16).view(np.uint16)
            hit = rng.random(d.shape) < specials
            d[hit] = rng.choice(F16_SPECIALS, size=int(hit.sum()))
            blocks[..., off], blocks[..., off + 1] = d & 0xFF, d >> 8
    elif kind[0] == "f32row":
        d = (rng.standard_normal(nrows) * 0.05).astype(np.float32).view(np.uint32)
        hit = rng.random(nrows) < specials
        d[hit] = rng.choice(F32_SPECIALS, size=int(hit.sum()))
        rows[:, :4] = d.view(np.uint8).reshape(nrows, 4)
    else:  # bf16: every value is data; specials replace single values
        v = rows.view(np.uint16)
        hit = rng.random(v.shape) < specials / 4
        v[hit] = rng.choice(BF16_SPECIALS, size=int(hit.sum()))
    return rows.reshape(-1)


@pytest.fixture(scope="module")
def ik_to_float():
    """ik_llama.cpp's own dequantizer of a type: fn(type_id, row_bytes, ne0) -> float32[ne0], one row
    at a time (row metadata included, as ik's row-scale types expect)."""
    ik = pytest.importorskip("ik_llama_cpp")
    lib = ctypes.CDLL(str(Path(ik.__file__).parent / "lib" / "libggml.so"))
    to_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)

    class TypeTraits(ctypes.Structure):  # ggml_type_traits_t of ik's ggml.h
        _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                    ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                    ("is_quantized", ctypes.c_bool), ("to_float", to_float_t),
                    ("from_float", ctypes.c_void_p), ("from_float_ref", ctypes.c_void_p),
                    ("from_float_to_mat", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                    ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64),
                    ("ncols", ctypes.c_int64), ("gemv", ctypes.c_void_p), ("gemm", ctypes.c_void_p),
                    ("row_meta_size", ctypes.c_int64)]

    class InitParams(ctypes.Structure):
        _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p),
                    ("no_alloc", ctypes.c_bool)]

    lib.ggml_internal_get_type_traits.restype = TypeTraits
    lib.ggml_internal_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_init.restype = ctypes.c_void_p
    lib.ggml_init.argtypes = [InitParams]
    lib.ggml_free.argtypes = [ctypes.c_void_p]
    # ggml_init fills ggml's fp16 -> f32 table, which its dequantizers use: without it every fp16
    # scale reads as 0.
    ctx = lib.ggml_init(InitParams(1 << 16, None, True))
    traits = {}

    def to_float(type_id: int, row, ne0: int) -> np.ndarray:
        if type_id not in traits:
            traits[type_id] = lib.ggml_internal_get_type_traits(type_id)
            assert traits[type_id].to_float, type_id
        x = np.ascontiguousarray(row, dtype=np.uint8)
        y = np.empty(ne0, np.float32)
        traits[type_id].to_float(x.ctypes.data, y.ctypes.data, ne0)
        return y

    yield to_float
    lib.ggml_free(ctx)


def _ik_reference(ik_to_float, name: str, data: np.ndarray, ne0: int, nrows: int) -> np.ndarray:
    """ik's dequantization of nrows rows. IQ2_BN: ik's plain dequantizer reads the blocks from the
    pointer it is given (it does not skip the row's f32 scale) and leaves the scale out; its matrix
    multiply and its IQ2_BN_R4 dequantizer apply it. So the reference value is ik's code value
    (code - 1, an exact small integer) times the row scale, one float32 multiplication, which is
    what our decoder computes (d * (float)(code - 1); a single product is commutative bit for bit,
    NaN payloads included)."""
    t = type_by_name(name)
    rows = np.asarray(data, dtype=np.uint8).reshape(nrows, t.row_bytes(ne0))
    out = []
    for r in rows:
        if name == "iq2_bn":
            with np.errstate(all="ignore"):
                out.append(ik_to_float(t.id, r[4:], ne0) * r[:4].view(np.float32)[0])
        else:
            out.append(ik_to_float(t.id, r, ne0))
    return np.concatenate(out)


@pytest.mark.parametrize("name", list(IK_SOURCE_TYPES))
def test_ik_source_matches_ik_finite_scales(name, ik_to_float):
    """Bit-exact against ik's dequantizer on random blocks whose scales are finite."""
    rng = np.random.default_rng(sum(map(ord, name)) + 1)
    for nrows, nb in [(1, 1), (3, 2), (8, 5)]:
        ne0 = _ik_ne0(name, nb)
        data = _ik_random_rows(name, nrows, ne0, rng, specials=0.0)
        _assert_bits_equal(_decode_rows(name, data, ne0, nrows),
                           _ik_reference(ik_to_float, name, data, ne0, nrows), f"{name} {nrows}x{ne0}")


@pytest.mark.parametrize("name", list(IK_SOURCE_TYPES))
def test_ik_source_matches_ik_special_scales(name, ik_to_float):
    """Also bit-exact with Inf/NaN/zero/subnormal scales (NaN payloads and signs included): ik's
    dequantizers do the same float32 operations in the same order (x86 NaN rules on both sides).
    Not a requirement of verify, which only compares our two decoders; it documents that the
    source decoders are ik's arithmetic, not an approximation of it."""
    rng = np.random.default_rng(sum(map(ord, name)) + 2)
    for nrows, nb in [(16, 1), (16, 3)]:
        ne0 = _ik_ne0(name, nb)
        data = _ik_random_rows(name, nrows, ne0, rng, specials=0.5)
        _assert_bits_equal(_decode_rows(name, data, ne0, nrows),
                           _ik_reference(ik_to_float, name, data, ne0, nrows), f"{name} {nrows}x{ne0}")


def _ik_golden_cases() -> list[str]:
    return golden_cases(GOLDEN_NAME, lambda path: _cases_of(path, IK_INTERLEAVED))


@pytest.mark.parametrize("case", _ik_golden_cases())
def test_ik_source_matches_ik_on_golden_inputs(case, ik_to_float):
    z = _golden()
    name = case.split("_to_")[0]
    src, ne0, rows = z[case + "_src"], int(z[case + "_ne0"]), int(z[case + "_rows"])
    _assert_bits_equal(_decode_rows(name, src, ne0, rows),
                       _ik_reference(ik_to_float, name, src, ne0, rows), case)


def test_bf16_matches_gguf_py():
    rng = np.random.default_rng(30)
    data = _ik_random_rows("bf16", 5, 64, rng)
    _assert_bits_equal(_decode_rows("bf16", data, 64, 5), _reference("bf16", data, 5), "bf16")


@pytest.mark.parametrize("case", _ik_golden_cases())
def test_ik_interleaved_golden(case):
    """ik's repacked bytes decode to the source decoder's floats, bit for bit (specials included;
    for q8_KV the golden sums are random and must not matter)."""
    z = _golden()
    dst_id, src_id = int(z[case + "_dst_id"]), int(z[case + "_src_id"])
    ne0, rows = int(z[case + "_ne0"]), int(z[case + "_rows"])
    want = _decode_rows(TYPES[src_id].name, z[case + "_src"], ne0, rows)
    got = np.empty(rows * ne0, dtype=np.float32)
    bd.dequantize_interleaved(dst_id, z[case + "_out"], got, ne0, rows)
    _assert_bits_equal(got, want, case)


def test_every_ik_interleaved_decoder_has_golden_vectors():
    cases = _cases_of(golden_file(GOLDEN_NAME), IK_INTERLEAVED)
    assert {c.split("_to_")[1].rsplit("_", 1)[0] for c in cases} == set(IK_INTERLEAVED)
    assert len(cases) == 4 * len(IK_INTERLEAVED)


@pytest.mark.parametrize("dst_name", list(IK_INTERLEAVED))
def test_ik_interleaved_random_via_project_interleaver(dst_name):
    """Random rows with special scales (and bf16 values), interleaved by the project's native
    repack, decode to the source decoder's floats bit for bit; several shapes and group ranges."""
    kernels = pytest.importorskip("repack.interleaved_kernels")
    src_name = IK_INTERLEAVED[dst_name]
    src_t, dst_t = type_by_name(src_name), type_by_name(dst_name)
    R = bd.ROWS_PER_GROUP[dst_t.id]
    rng = np.random.default_rng(sum(map(ord, dst_name)))
    for groups, nb in [(1, 1), (2, 3), (3, 8)]:
        nrows, ne0 = groups * R, _ik_ne0(src_name, nb)
        src = _ik_random_rows(src_name, nrows, ne0, rng)
        packed = np.empty(dst_t.row_bytes(ne0) * nrows, np.uint8)
        kernels.interleave(src_t.id, src, packed, ne0, nrows)
        want = _decode_rows(src_name, src, ne0, nrows)
        got = np.empty(nrows * ne0, dtype=np.float32)
        bd.dequantize_interleaved(dst_t.id, packed, got, ne0, nrows)
        _assert_bits_equal(got, want, f"{dst_name} {nrows}x{ne0}")
        if groups > 1:  # one group alone lands at its rows and nowhere else
            part = np.full((nrows, ne0), -3.0, dtype=np.float32)
            bd.dequantize_interleaved(dst_t.id, packed, part, ne0, nrows, 1, 2)
            _assert_bits_equal(part[R:2 * R], want.reshape(nrows, ne0)[R:2 * R], f"{dst_name} group 1")
            assert (part[:R] == -3.0).all() and (part[2 * R:] == -3.0).all()


def test_q8_kv_ignores_the_sum():
    rng = np.random.default_rng(151)
    nrows, ne0 = 8, 64
    a = _ik_random_rows("q8_KV", nrows, ne0, rng)
    b = a.copy().reshape(nrows, -1)
    b[:, 4:8] = rng.integers(0, 256, size=(nrows, 4), dtype=np.uint8)
    _assert_bits_equal(_decode_rows("q8_KV", b.reshape(-1), ne0, nrows),
                       _decode_rows("q8_KV", a, ne0, nrows), "q8_KV sums")


def test_bf16_r16_needs_an_even_ne0():
    r16 = _id("bf16_r16")
    src, dst = np.zeros(16 * 3 * 2, np.uint8), np.zeros(16 * 3, np.float32)
    with pytest.raises(ValueError, match="even"):
        bd.dequantize_interleaved(r16, src, dst, 3, 16)
    bd.dequantize_rows(_id("bf16"), src, dst, 3, 16)   # the source layout takes any ne0
    assert (dst == 0).all()
