"""Thin wrapper over the native float decoders (``native/blocks.c``) used by ``amx-repack verify``.

Two decoders per type: one for the standard ggml layout (:func:`dequantize_rows`) and one that reads
ik_llama.cpp's row-interleaved ``_R4/_R8/_R16`` layout directly (:func:`dequantize_interleaved`). Both
write float32 values bit-identical to ``gguf.quants.dequantize`` of the source data (NaN payloads
included), so comparing their uint32 views is an exact check of a repack. For ik_llama.cpp's own
types, which gguf-py cannot decode (q6_0, iq2_k .. iq5_k, iq4_ks, iq5_ks, iq2_bn, q8_KV), the source
decoders follow ik's own dequantizers instead (bit-identical on finite scales; iq2_bn with the row
scale applied, which ik's plain decoder leaves out); bf16 is the exact upper half of a float32.

Every argument is checked here, before C runs: the C side trusts the buffer sizes it is given. (One
shape rule is left to C, which checks it before touching memory: bf16_r16 interleaves column pairs,
so its ne0 must be even although its ggml block size is 1.)
Buffers may be anything with the buffer protocol (bytes, bytearray, memoryview, mmap, numpy arrays);
they must be C-contiguous, and ``dst`` writable and exactly ``nrows * ne0`` float32 values
(``4 * nrows * ne0`` bytes). The C call releases the GIL, so threads working on disjoint row (or
group) ranges of one tensor run in parallel.
"""

from __future__ import annotations

from repack._blocks import ffi, lib
from repack.native_args import buffer_nbytes, expect_nbytes, shape_int, unit_range

from formats.ggml_types import TYPES, type_name

# Rows interleaved per group, for the _R types the native code decodes (spec interleaved.md §3).
ROWS_PER_GROUP: dict[int, int] = {
    202: 8,  # q4_0_r8
    206: 4,  # q5_0_r4
    208: 8,  # q8_0_r8
    210: 4, 211: 4, 212: 4, 213: 4, 214: 4,  # q2_k_r4 .. q6_k_r4
    216: 4, 217: 4, 218: 4,  # iq2_xxs_r4, iq2_xs_r4, iq3_xxs_r4
    220: 4,  # iq4_nl_r4
    221: 4, 222: 4,  # iq3_s_r4, iq2_s_r4
    223: 8,  # iq4_xs_r8
    353: 8,  # mxfp4_r8
    # ik_llama.cpp-only types
    230: 16,  # bf16_r16
    233: 4,  # q6_0_r4
    335: 4,  # iq2_bn_r4
    337: 4, 338: 4, 339: 4, 340: 4,  # iq2_k_r4 .. iq5_k_r4
    344: 4, 352: 4,  # iq4_ks_r4, iq5_ks_r4
    398: 8,  # q8_KV_r8
}


def can_dequantize(type_id: int) -> bool:
    """Whether a float decoder exists for this (source or interleaved) type id."""
    try:
        return bool(lib.blk_can_dequantize(int(type_id)))
    except (OverflowError, TypeError, ValueError):
        return False


def _check(type_id, src, dst, ne0, nrows, begin, end, rows_per_unit: int, unit: str):
    """Validate everything; return (name, begin, end) with end resolved."""
    type_id = int(type_id)
    name = type_name(type_id) if type_id in TYPES else f"type {type_id}"
    t = TYPES.get(type_id)
    ne0 = shape_int(ne0, f"{name}: ne0")
    nrows = shape_int(nrows, f"{name}: nrows")
    if t is None or not can_dequantize(type_id):
        raise ValueError(f"{name}: no float decoder for this type")
    if ne0 <= 0 or ne0 % t.block_size:
        raise ValueError(f"{name}: ne0 = {ne0} is not a positive multiple of {t.block_size}")
    if nrows < 0 or nrows % rows_per_unit:
        raise ValueError(f"{name}: nrows = {nrows} is not a multiple of {rows_per_unit}")
    nunits = nrows // rows_per_unit
    begin, end = unit_range(begin, end, nunits, f"{name}: {unit}")
    src_need = t.row_bytes(ne0) * nrows
    dst_need = 4 * ne0 * nrows
    expect_nbytes(src, src_need, f"{name}: src", context=f"ne0={ne0}, nrows={nrows}")
    expect_nbytes(dst, dst_need, f"{name}: dst", writable=True,
                  context=f"{nrows} x {ne0} float32")
    return name, ne0, begin, end


def _call(fn, type_id, src, dst, ne0, begin, end, name):
    if end == begin:
        return
    p_src = ffi.from_buffer(src)
    p_dst = ffi.from_buffer("float[]", dst, require_writable=True)
    rc = fn(int(type_id), ffi.cast("const uint8_t *", p_src), p_dst, ne0, begin, end)
    if rc != 0:  # the checks above make this unreachable, except bf16_r16 with an odd ne0
        raise ValueError(f"{name}: native decoder rejected the arguments (code {rc}"
                         + (f": ne0 = {ne0} must be even" if ne0 % 2 else "") + ")")


def dequantize_rows(type_id: int, src, dst_f32, ne0: int, nrows: int, row_begin: int = 0,
                    row_end: int | None = None) -> None:
    """Decode rows [row_begin, row_end) of a standard-layout tensor of ``nrows`` rows of ``ne0``
    columns into ``dst_f32`` (the whole ``nrows * ne0`` float32 output, row-major)."""
    if not can_dequantize(type_id) or int(type_id) in ROWS_PER_GROUP:
        raise ValueError(f"{type_name(int(type_id))}: no float decoder for the standard layout")
    name, ne0, b, e = _check(type_id, src, dst_f32, ne0, nrows, row_begin, row_end, 1, "row")
    _call(lib.blk_dequantize_rows, type_id, src, dst_f32, ne0, b, e, name)


def dequantize_interleaved(type_id: int, src, dst_f32, ne0: int, nrows: int, group_begin: int = 0,
                           group_end: int | None = None) -> None:
    """Decode row groups [group_begin, group_end) of an interleaved (``_R4``/``_R8``) tensor of
    ``nrows`` rows straight from its layout; rows come out in normal order in ``dst_f32``."""
    rows = ROWS_PER_GROUP.get(int(type_id))
    if rows is None or not can_dequantize(type_id):
        raise ValueError(f"{type_name(int(type_id))}: no float decoder for this interleaved type")
    name, ne0, b, e = _check(type_id, src, dst_f32, ne0, nrows, group_begin, group_end, rows,
                             "group")
    _call(lib.blk_dequantize_interleaved, type_id, src, dst_f32, ne0, b, e, name)


def first_difference(a, b) -> int | None:
    """Byte index of the first difference between two equally long buffers, or None."""
    na, nb = buffer_nbytes(a, "a"), buffer_nbytes(b, "b")
    if na != nb:
        raise ValueError(f"buffers differ in length: {na} and {nb} bytes")
    i = lib.blk_first_difference(ffi.from_buffer("uint8_t[]", a), ffi.from_buffer("uint8_t[]", b), na)
    return None if i < 0 else int(i)
