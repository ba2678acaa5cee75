"""Thin wrapper over the native ik_llama.cpp row-interleave kernels (``native/interleaved.c``).

Every argument is checked here, before C runs: the C side trusts the buffer sizes it is given, so
these checks are what keeps it inside the buffers. Buffers may be anything with the buffer protocol
(bytes, bytearray, memoryview, mmap, numpy arrays); they must be C-contiguous, and outputs writable.
The C call releases the GIL, so threads working on disjoint group ranges of one tensor run in
parallel.
"""

from __future__ import annotations


from repack._interleaved import ffi, lib
from repack.native_args import expect_nbytes, shape_int, unit_range

from formats.interleaved_layout import INTERLEAVINGS, LAYOUT, Interleaving
from formats.ggml_types import type_name


def _interleaving(src_type_id: int) -> Interleaving:
    il = INTERLEAVINGS.get(int(src_type_id))
    if il is None or lib.il_target_type(int(src_type_id)) != il.target.id:
        raise ValueError(f"{type_name(int(src_type_id))} has no lossless interleaved type")
    return il


def target_type_id(src_type_id: int) -> int:
    """The ``_R`` type id a source type id becomes (ValueError if none)."""
    return _interleaving(src_type_id).target.id


def rows_per_group(src_type_id: int) -> int:
    return _interleaving(src_type_id).rows


def _check(src_type_id: int, in_buf, out_buf, ne0: int, nrows: int, group_begin: int,
           group_end: int | None, inverse: bool):
    il = _interleaving(src_type_id)
    name = il.source.name
    ne0 = shape_int(ne0, f"{name}: ne0")
    nrows = shape_int(nrows, f"{name}: nrows")
    if ne0 <= 0 or ne0 % il.column_multiple:
        raise ValueError(f"{name}: ne0 = {ne0} is not a positive multiple of {il.column_multiple}")
    if nrows < 0 or nrows % il.rows:
        raise ValueError(f"{name}: nrows = {nrows} is not a multiple of {il.rows} "
                         f"({il.target.name} interleaves {il.rows} rows)")
    ngroups = nrows // il.rows
    group_begin, group_end = unit_range(group_begin, group_end, ngroups, f"{name}: group")
    src_bytes = il.source.row_bytes(ne0) * nrows
    packed_bytes = il.group_bytes(ne0) * ngroups
    in_need, out_need = (packed_bytes, src_bytes) if inverse else (src_bytes, packed_bytes)
    in_what = "packed" if inverse else "src"
    shape = f"ne0={ne0}, nrows={nrows}"
    expect_nbytes(in_buf, in_need, f"{name}: {in_what}", context=shape)
    expect_nbytes(out_buf, out_need, f"{name}: dst", writable=True, context=shape)
    return ne0, nrows, group_begin, group_end


def _call(fn, src_type_id, in_buf, out_buf, ne0, nrows, group_begin, group_end, inverse):
    ne0, nrows, group_begin, group_end = _check(src_type_id, in_buf, out_buf, ne0, nrows, group_begin,
                                                group_end, inverse)
    if group_end == group_begin:
        return
    p_in = ffi.from_buffer(in_buf)
    p_out = ffi.from_buffer(out_buf, require_writable=True)
    a_in, a_out = int(ffi.cast("uintptr_t", p_in)), int(ffi.cast("uintptr_t", p_out))
    if a_in < a_out + len(p_out) and a_out < a_in + len(p_in):
        raise ValueError("input and output buffers overlap (the repack is not in place)")
    rc = fn(int(src_type_id), p_in, p_out, ne0, group_begin, group_end)
    if rc != 0:  # the checks above should make this unreachable
        raise ValueError(f"native interleave kernel rejected the arguments (code {rc})")


def interleave(src_type_id: int, src, dst, ne0: int, nrows: int, group_begin: int = 0,
               group_end: int | None = None) -> None:
    """Write the interleaved groups [group_begin, group_end) of a tensor into ``dst``.

    ``src`` is the whole source tensor (``nrows`` rows of ``ne0`` columns; for 3-D tensors
    ``nrows = ne1 * ne2``), ``dst`` the whole output tensor (``target_bytes`` long); only the bytes
    of the chosen groups are read and written."""
    _call(lib.il_interleave, src_type_id, src, dst, ne0, nrows, group_begin, group_end, False)


def deinterleave(src_type_id: int, packed, dst, ne0: int, nrows: int, group_begin: int = 0,
                 group_end: int | None = None) -> None:
    """Exact inverse of :func:`interleave`: rebuild the source rows of those groups into ``dst``
    (the whole source tensor). Q8_KV's per-row sum, which the packed type drops, is recomputed."""
    _call(lib.il_deinterleave, src_type_id, packed, dst, ne0, nrows, group_begin, group_end, True)


class _FamilyKernels:
    """The interleaved family's kernels as repack.families calls them: one chunk of whole row
    groups, the type given by its packed (``_R``) id."""

    verify_check = "vf_check_interleaved"

    @staticmethod
    def _source(packed_type_id: int) -> int:
        return LAYOUT.source_of(packed_type_id).id

    def pack(self, packed_type_id: int, ne0: int, rows: int, src, dst) -> None:
        interleave(self._source(packed_type_id), src, dst, ne0, rows)

    def unpack(self, packed_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        deinterleave(self._source(packed_type_id), packed, dst, ne0, rows)

    def first_invalid_row(self, packed_type_id: int, ne0: int, rows: int, packed) -> int | None:
        return None     # interleaved layouts carry no redundant fields

    def verify_check_args(self, packed_type_id: int) -> tuple:
        return self._source(packed_type_id), packed_type_id

    def can_dequantize(self, packed_type_id: int) -> bool:
        from . import block_decoders
        return block_decoders.can_dequantize(packed_type_id)

    def dequantize_packed(self, packed_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        from . import block_decoders
        block_decoders.dequantize_interleaved(packed_type_id, packed, dst, ne0, rows)


KERNELS = _FamilyKernels()
