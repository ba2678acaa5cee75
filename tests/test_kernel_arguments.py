"""Shapes that are not block multiples, and buffers of the wrong size, never reach native code.

The C kernels trust the sizes they are given, so the Python wrappers (repack/amx_kernels.py,
repack/interleaved_kernels.py, repack/block_decoders.py) are what keeps them inside their buffers.
Here the wrappers' ``lib`` is replaced by a tripwire that fails the test if any kernel is entered
(pure look-ups such as "which _R type does this type become" stay allowed), and every function is
called, for every type it supports, with shapes that are not multiples of the block / tile /
row-group size (with buffers sized consistently for that wrong shape, so only the shape check can
stop it), with fractional or non-integer shapes (which int() would silently truncate), and with
buffers one byte or one value too short or too long. Each must raise ValueError.
The layout test files already cover one type per family of these; this covers all of them.
"""

from __future__ import annotations

import numpy as np
import pytest

from formats.amx_layout import AMX_PARAMS
from formats.ggml_types import TYPES
from formats.interleaved_layout import INTERLEAVINGS
from repack import amx_kernels, block_decoders, interleaved_kernels


class Tripwire:
    """Stands in for a cffi ``lib``: kernels fail the test, look-ups pass through."""

    def __init__(self, real, allowed=()):
        self._real, self._allowed = real, set(allowed)
        self.entered: list[str] = []

    def __getattr__(self, name):
        if name in self._allowed:
            return getattr(self._real, name)

        def kernel(*args):
            self.entered.append(name)
            raise AssertionError(f"native {name}{args[:1]}... was entered with bad arguments")
        return kernel


@pytest.fixture
def tripwires(monkeypatch):
    wires = {
        "amx": Tripwire(amx_kernels.lib),
        "interleaved": Tripwire(interleaved_kernels.lib, ["il_target_type"]),
        "blocks": Tripwire(block_decoders.lib, ["blk_can_dequantize"]),
    }
    monkeypatch.setattr(amx_kernels, "lib", wires["amx"])
    monkeypatch.setattr(interleaved_kernels, "lib", wires["interleaved"])
    monkeypatch.setattr(block_decoders, "lib", wires["blocks"])
    return wires


def assert_refused(call, *args):
    with pytest.raises(ValueError):
        call(*args)


NOT_INTEGERS = [32.5, 32.0, np.float64(32.0), "32", True, None]


# ------------------------------------------------------------------------------------------
# AMX: pack / unpack / check / dequantize on 16-row strips of qk-element blocks


def _amx_sizes(p, n_rows: int, k: int) -> tuple[int, int, int]:
    kb = k // p.qk
    return n_rows * kb * p.bs, n_rows * kb * (p.bs + p.extra), n_rows * k * 4


def _amx_calls(name, n_rows, k, sizes=None, strips=(0, None)):
    p = AMX_PARAMS[name]
    src_n, packed_n, f32_n = sizes or _amx_sizes(p, max(int(n_rows) if isinstance(n_rows, int) else 32, 0),
                                                 k if isinstance(k, int) and k > 0 else 2 * p.qk)
    src, packed = np.zeros(src_n, np.uint8), np.zeros(packed_n, np.uint8)
    f32 = np.zeros(f32_n // 4, np.float32)
    return [
        (amx_kernels.pack, name, src, packed, n_rows, k, *strips),
        (amx_kernels.unpack, name, packed, src.copy(), n_rows, k, *strips),
        (amx_kernels.check, name, packed, n_rows, k, *strips),
        (amx_kernels.dequantize, name, packed, f32, n_rows, k, *strips),
    ]


@pytest.mark.parametrize("name", sorted(AMX_PARAMS))
def test_amx_bad_shapes_never_reach_native(tripwires, name):
    qk = AMX_PARAMS[name].qk
    good_k = 2 * qk
    bad = [(24, good_k), (8, good_k), (1, good_k), (40, good_k), (-16, good_k),
           (32, qk // 2), (32, qk + qk // 2), (32, good_k + 1), (32, -qk)]
    bad += [(x, good_k) for x in NOT_INTEGERS] + [(32, float(good_k)), (32, str(good_k))]
    for n_rows, k in bad:
        for fn, *args in _amx_calls(name, n_rows, k):
            assert_refused(fn, *args)
    for strips in [(0, 3), (2, 1), (-1, 1), (0.5, None), (0, 1.5), (True, None)]:
        for fn, *args in _amx_calls(name, 32, good_k, strips=strips):
            assert_refused(fn, *args)
    assert tripwires["amx"].entered == []


@pytest.mark.parametrize("name", sorted(AMX_PARAMS))
def test_amx_wrong_buffer_sizes_never_reach_native(tripwires, name):
    p = AMX_PARAMS[name]
    n_rows, k = 32, 2 * p.qk
    src_n, packed_n, f32_n = _amx_sizes(p, n_rows, k)

    def u8(n):
        return np.zeros(n, np.uint8)

    for d in (-1, 1):
        assert_refused(amx_kernels.pack, name, u8(src_n + d), u8(packed_n), n_rows, k)
        assert_refused(amx_kernels.pack, name, u8(src_n), u8(packed_n + d), n_rows, k)
        assert_refused(amx_kernels.unpack, name, u8(packed_n + d), u8(src_n), n_rows, k)
        assert_refused(amx_kernels.unpack, name, u8(packed_n), u8(src_n + d), n_rows, k)
        assert_refused(amx_kernels.check, name, u8(packed_n + d), n_rows, k)
        assert_refused(amx_kernels.dequantize, name, u8(packed_n + d),
                       np.zeros(f32_n // 4, np.float32), n_rows, k)
        assert_refused(amx_kernels.dequantize, name, u8(packed_n),
                       np.zeros(f32_n // 4 + d, np.float32), n_rows, k)
    assert_refused(amx_kernels.pack, name, u8(src_n), bytes(packed_n), n_rows, k)   # read-only
    assert_refused(amx_kernels.pack, name, u8(2 * src_n)[::2], u8(packed_n), n_rows, k)
    assert tripwires["amx"].entered == []


def test_amx_tripwire_catches_a_valid_call(tripwires):
    """The control: with good arguments the wrapper does enter the (fake) kernel."""
    fn, *args = _amx_calls("q4_0", 32, 64)[0]
    with pytest.raises(AssertionError, match="amx_pack"):
        fn(*args)
    assert tripwires["amx"].entered == ["amx_pack"]


# ------------------------------------------------------------------------------------------
# Interleaved: interleave / deinterleave on groups of R rows


def _il_buffers(il, ne0: int, nrows: int):
    ok = ne0 > 0 and ne0 % il.column_multiple == 0 and nrows >= 0
    src_n = il.source.row_bytes(ne0) * nrows if ok else 4096
    packed_n = il.group_bytes(ne0) * (nrows // il.rows) if ok else 4096
    return bytes(src_n), bytearray(packed_n), bytes(packed_n), bytearray(src_n)


@pytest.mark.parametrize("src_id", sorted(INTERLEAVINGS), ids=lambda i: TYPES[i].name)
def test_interleaved_bad_shapes_never_reach_native(tripwires, src_id):
    il = INTERLEAVINGS[src_id]
    cm, r = il.column_multiple, il.rows
    bad = [(cm // 2, 2 * r), (cm + il.source.block_size, 2 * r), (cm + 1, 2 * r), (0, 2 * r),
           (-cm, 2 * r), (cm, r - 1), (cm, r + 1), (cm, 2 * r - 1), (cm, -r)]
    bad = [(ne0, nrows) for ne0, nrows in bad if (ne0, nrows) != (cm, 0) and ne0 != 2 * cm]
    for ne0, nrows in bad:
        src, dst, packed, back = _il_buffers(il, ne0, nrows)
        assert_refused(interleaved_kernels.interleave, src_id, src, dst, ne0, nrows)
        assert_refused(interleaved_kernels.deinterleave, src_id, packed, back, ne0, nrows)
    src, dst, packed, back = _il_buffers(il, cm, 2 * r)
    for value in NOT_INTEGERS:
        assert_refused(interleaved_kernels.interleave, src_id, src, dst, value, 2 * r)
        assert_refused(interleaved_kernels.interleave, src_id, src, dst, cm, value)
        if value is not None:           # group_end=None means "to the last group"
            assert_refused(interleaved_kernels.deinterleave, src_id, packed, back, cm, 2 * r, 0,
                           value)
    assert tripwires["interleaved"].entered == []


@pytest.mark.parametrize("src_id", sorted(INTERLEAVINGS), ids=lambda i: TYPES[i].name)
def test_interleaved_wrong_buffer_sizes_never_reach_native(tripwires, src_id):
    il = INTERLEAVINGS[src_id]
    ne0, nrows = il.column_multiple, 2 * il.rows
    src, dst, packed, back = _il_buffers(il, ne0, nrows)
    for delta in (-1, 1):
        assert_refused(interleaved_kernels.interleave, src_id, bytes(len(src) + delta), dst, ne0, nrows)
        assert_refused(interleaved_kernels.interleave, src_id, src, bytearray(len(dst) + delta), ne0,
                       nrows)
        assert_refused(interleaved_kernels.deinterleave, src_id, bytes(len(packed) + delta), back, ne0,
                       nrows)
        assert_refused(interleaved_kernels.deinterleave, src_id, packed, bytearray(len(back) + delta),
                       ne0, nrows)
    assert tripwires["interleaved"].entered == []
    with pytest.raises(AssertionError):     # control: good arguments do reach the kernel
        interleaved_kernels.interleave(src_id, src, dst, ne0, nrows)
    assert tripwires["interleaved"].entered == ["il_interleave"]


# ------------------------------------------------------------------------------------------
# Block decoders: dequantize_rows (standard layout) and dequantize_interleaved (_R layouts)

SOURCE_DECODERS = sorted(i for i, t in TYPES.items() if block_decoders.can_dequantize(i)
                         and i not in block_decoders.ROWS_PER_GROUP)
INTERLEAVED_DECODERS = sorted(block_decoders.ROWS_PER_GROUP)


def test_decoder_tables_are_what_we_think():
    assert len(SOURCE_DECODERS) >= 15 and len(INTERLEAVED_DECODERS) >= 15


def _decode_buffers(t, ne0: int, nrows: int):
    ok = ne0 > 0 and ne0 % t.block_size == 0 and nrows >= 0
    src_n = t.row_bytes(ne0) * nrows if ok else 4096
    return np.zeros(src_n, np.uint8), np.zeros(max(ne0 * nrows, 0) if ok else 1024, np.float32)


@pytest.mark.parametrize("type_id", SOURCE_DECODERS + INTERLEAVED_DECODERS,
                         ids=lambda i: TYPES[i].name)
def test_decoder_bad_shapes_and_sizes_never_reach_native(tripwires, type_id):
    t = TYPES[type_id]
    interleaved = type_id in block_decoders.ROWS_PER_GROUP
    fn = block_decoders.dequantize_interleaved if interleaved else block_decoders.dequantize_rows
    r = block_decoders.ROWS_PER_GROUP.get(type_id, 1)
    bs = t.block_size
    bad = [(bs // 2, 2 * r), (bs + 1, 2 * r), (0, 2 * r), (-bs, 2 * r), (bs, -r)]
    if r > 1:
        bad += [(bs, r - 1), (bs, r + 1)]
    for ne0, nrows in bad:
        if ne0 <= 0 or ne0 % bs or nrows < 0 or nrows % r:
            src, dst = _decode_buffers(t, ne0, nrows)
            assert_refused(fn, type_id, src, dst, ne0, nrows)
    ne0, nrows = bs, 2 * r
    src, dst = _decode_buffers(t, ne0, nrows)
    for value in NOT_INTEGERS[:-1]:
        assert_refused(fn, type_id, src, dst, value, nrows)
        assert_refused(fn, type_id, src, dst, ne0, value)
    for delta in (-1, 1):
        assert_refused(fn, type_id, np.zeros(src.size + delta, np.uint8), dst, ne0, nrows)
        assert_refused(fn, type_id, src, np.zeros(dst.size + delta, np.float32), ne0, nrows)
    assert tripwires["blocks"].entered == []
    with pytest.raises(AssertionError):     # control: good arguments do reach the kernel
        fn(type_id, src, dst, ne0, nrows)
    assert len(tripwires["blocks"].entered) == 1


# ------------------------------------------------------------------------------------------
# cpu-repack: pack / unpack / dequantize on chunks of NB_COLS-row groups

from repack import cpu_repack_kernels  # noqa: E402  (kept with its section)
from tests.test_cpu_repack_kernels import VARIANTS as CPU_REPACK_VARIANTS  # noqa: E402


@pytest.fixture
def cpu_repack_tripwire(monkeypatch):
    wire = Tripwire(cpu_repack_kernels.lib, ["cr_has_variant"])
    monkeypatch.setattr(cpu_repack_kernels, "lib", wire)
    return wire


def _cr_calls(variant, ne0, n_rows):
    t = TYPES[variant[0]]
    ok = isinstance(ne0, int) and isinstance(n_rows, int) and ne0 > 0 and ne0 % t.block_size == 0 \
        and n_rows >= 0
    n = t.row_bytes(ne0) * n_rows if ok else 4096
    f32 = np.zeros(max(ne0 * n_rows, 0) if ok else 1024, np.float32)
    return [(cpu_repack_kernels.pack, *variant, bytes(n), bytearray(n), ne0, n_rows),
            (cpu_repack_kernels.unpack, *variant, bytes(n), bytearray(n), ne0, n_rows),
            (cpu_repack_kernels.dequantize, *variant, bytes(n), ne0, n_rows, f32)]


@pytest.mark.parametrize("variant", CPU_REPACK_VARIANTS, ids=lambda v: cpu_repack_kernels.variant_name(*v))
def test_cpu_repack_bad_arguments_never_reach_native(cpu_repack_tripwire, variant):
    qk, n = TYPES[variant[0]].block_size, variant[1]
    bad = [(qk // 2, 2 * n), (qk + qk // 2, 2 * n), (qk + 1, 2 * n), (0, 2 * n), (-qk, 2 * n),
           (qk, n - 1), (qk, n + 1), (qk, 2 * n - 1), (qk, -n)]
    bad += [(v, 2 * n) for v in NOT_INTEGERS] + [(qk, v) for v in NOT_INTEGERS]
    for ne0, n_rows in bad:
        for fn, *args in _cr_calls(variant, ne0, n_rows):
            assert_refused(fn, *args)
    good = TYPES[variant[0]].row_bytes(qk) * 2 * n
    for d in (-1, 1):
        assert_refused(cpu_repack_kernels.pack, *variant, bytes(good + d), bytearray(good), qk, 2 * n)
        assert_refused(cpu_repack_kernels.pack, *variant, bytes(good), bytearray(good + d), qk, 2 * n)
        assert_refused(cpu_repack_kernels.unpack, *variant, bytes(good + d), bytearray(good), qk, 2 * n)
        assert_refused(cpu_repack_kernels.dequantize, *variant, bytes(good), qk, 2 * n,
                       np.zeros(qk * 2 * n + d, np.float32))
    assert_refused(cpu_repack_kernels.pack, *variant, bytes(good), bytes(good), qk, 2 * n)  # read-only
    assert_refused(cpu_repack_kernels.dequantize, *variant, bytes(good), qk, 2 * n,
                   np.zeros(qk * 2 * n, np.float64))
    assert cpu_repack_tripwire.entered == []
    with pytest.raises(AssertionError):     # control: good arguments do reach the kernel
        cpu_repack_kernels.pack(*variant, bytes(good), bytearray(good), qk, 2 * n)
    assert cpu_repack_tripwire.entered == ["cr_pack"]


def test_cpu_repack_unknown_variants_never_reach_native(cpu_repack_tripwire):
    for variant in [(2, 8, 4), (2, 16, 8), (3, 8, 8), (12, 4, 4), (23, 8, 8), (9999, 8, 8)]:
        for fn, *args in _cr_calls(variant if variant[0] in TYPES else (2, 8, 8), 256, 16):
            args[:3] = variant
            assert_refused(fn, *args)
    assert cpu_repack_tripwire.entered == []
