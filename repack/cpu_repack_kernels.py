"""Thin wrapper over the native kernels of upstream llama.cpp's CPU_REPACK layouts
(``native/cpu_repack.c``, module ``repack._cpu_repack``; spec ``docs/cpu-repack.md``).

A variant is ``(src_type_id, nb_cols, inter)`` as in upstream's ``tensor_traits<block, INTER_SIZE,
NB_COLS>``: ``q4_0_8x8`` = ``(2, 8, 8)``, ``q4_K_8x4`` = ``(12, 8, 4)``, the RISC-V ones
``(.., 16, 1)``. Every function handles one chunk of whole row groups (``n_rows`` a multiple of
``nb_cols``; a 3-D expert tensor is ``ne1 * ne2`` rows, ``ne1`` a multiple of ``nb_cols``), so
callers pass the slices of a chunk and threads can work on disjoint chunks at once (cffi releases
the GIL for each C call). Packed data has exactly the source's size.

Every argument is checked here, before C runs: the C side trusts the buffer sizes it is given.
Buffers may be anything with the buffer protocol (bytes, bytearray, memoryview, mmap, numpy
arrays); they must be C-contiguous and exactly the chunk's size, outputs writable.

The packed type ids (decided for the family, see the spec): ``2048 + 64 * shape + source id``
with ``shape`` the index of ``(nb_cols, inter)`` in ``SHAPES``.
"""

from __future__ import annotations

import numpy as np

from formats.ggml_types import CPU_REPACK_SHAPES as SHAPES   # (nb_cols, inter), index = shape
from formats.ggml_types import CPU_REPACK_TYPE_ID_BASE as TYPE_ID_BASE
from formats.ggml_types import TYPES, type_name

from ._cpu_repack import ffi, lib
from .native_args import expect_nbytes, shape_int



def packed_type_id(src_type_id: int, nb_cols: int, inter: int) -> int:
    """The GGUF type id of a packed tensor of this variant."""
    return TYPE_ID_BASE + 64 * SHAPES.index((int(nb_cols), int(inter))) + int(src_type_id)


def variant_of(packed_type: int) -> tuple[int, int, int]:
    """(src_type_id, nb_cols, inter) of a packed type id; ValueError for an id outside the family."""
    offset = int(packed_type) - TYPE_ID_BASE
    if not 0 <= offset < 64 * len(SHAPES):
        raise ValueError(f"type id {packed_type} is not a cpu-repack type")
    nb_cols, inter = SHAPES[offset // 64]
    return offset % 64, nb_cols, inter


def variant_name(src_type_id: int, nb_cols: int, inter: int) -> str:
    """Upstream's spelling: ``q4_0_8x8``."""
    return f"{type_name(int(src_type_id))}_{nb_cols}x{inter}"


def has_variant(src_type_id: int, nb_cols: int, inter: int) -> bool:
    """True when the pinned repack.cpp has this variant (and so do the kernels)."""
    return bool(lib.cr_has_variant(int(src_type_id), int(nb_cols), int(inter)))


def _checked(src_type_id, nb_cols, inter, ne0, n_rows) -> tuple[int, int, int, int, int, int]:
    """The variant and shape as ints, and the chunk's byte size; ValueError for anything the C
    code would refuse or that would take it outside the buffers."""
    src_type_id = shape_int(src_type_id, "src_type")
    nb_cols, inter = shape_int(nb_cols, "nb_cols"), shape_int(inter, "inter")
    if src_type_id not in TYPES or not has_variant(src_type_id, nb_cols, inter):
        raise ValueError(f"{type_name(src_type_id)} has no cpu-repack variant {nb_cols}x{inter}")
    name = variant_name(src_type_id, nb_cols, inter)
    ne0, n_rows = shape_int(ne0, f"{name}: ne0"), shape_int(n_rows, f"{name}: n_rows")
    src = TYPES[src_type_id]
    if ne0 <= 0 or ne0 % src.block_size:
        raise ValueError(f"{name}: ne0 = {ne0} is not a positive multiple of {src.block_size}")
    if n_rows < 0 or n_rows % nb_cols:
        raise ValueError(f"{name}: n_rows = {n_rows} is not a multiple of {nb_cols} "
                         f"({name} packs {nb_cols} rows together)")
    return src_type_id, nb_cols, inter, ne0, n_rows, src.row_bytes(ne0) * n_rows


def _pointers(in_buf, out_buf, out_type: str = "uint8_t[]"):
    p_in = ffi.from_buffer("uint8_t[]", in_buf)
    p_out = ffi.from_buffer(out_type, out_buf, require_writable=True)
    a_in, a_out = int(ffi.cast("uintptr_t", p_in)), int(ffi.cast("uintptr_t", p_out))
    if a_in < a_out + ffi.sizeof(p_out) and a_out < a_in + len(p_in):
        raise ValueError("input and output buffers overlap (the kernels do not work in place)")
    return p_in, p_out


def _status(rc: int, what: str) -> None:
    if rc != 0:   # the checks above make this unreachable
        raise ValueError(f"{what}: the native kernel rejected the arguments (code {rc})")


def _convert(fn, what: str, src_type_id, nb_cols, inter, in_buf, out_buf, ne0, n_rows) -> None:
    t, n, i, ne0, n_rows, nbytes = _checked(src_type_id, nb_cols, inter, ne0, n_rows)
    shape = f"ne0={ne0}, n_rows={n_rows}"
    expect_nbytes(in_buf, nbytes, f"{variant_name(t, n, i)}: {what}", context=shape)
    expect_nbytes(out_buf, nbytes, f"{variant_name(t, n, i)}: dst", writable=True, context=shape)
    if n_rows:
        _status(fn(t, n, i, *_pointers(in_buf, out_buf), ne0, n_rows), fn.__name__)


def pack(src_type_id: int, nb_cols: int, inter: int, src, dst, ne0: int, n_rows: int) -> None:
    """Pack ``n_rows`` source rows (``src``, ggml's standard layout) into ``dst`` exactly as
    upstream's CPU_REPACK ``repack`` writes them."""
    _convert(lib.cr_pack, "src", src_type_id, nb_cols, inter, src, dst, ne0, n_rows)


def unpack(src_type_id: int, nb_cols: int, inter: int, packed, dst, ne0: int, n_rows: int) -> None:
    """Exact inverse of :func:`pack`: the source rows, byte for byte, into ``dst``."""
    _convert(lib.cr_unpack, "packed", src_type_id, nb_cols, inter, packed, dst, ne0, n_rows)


def dequantize(src_type_id: int, nb_cols: int, inter: int, packed, ne0: int, n_rows: int,
               dst=None):
    """Decode packed rows straight from the packed layout into ``dst`` (float32 [n_rows, ne0],
    rows in source order; ``None`` allocates it), bit-identical to gguf-py's dequantize of the
    source rows (Q1_0, which gguf-py cannot decode: to ggml's dequantize_row_q1_0). Returns dst."""
    t, n, i, ne0, n_rows, nbytes = _checked(src_type_id, nb_cols, inter, ne0, n_rows)
    shape = f"ne0={ne0}, n_rows={n_rows}"
    expect_nbytes(packed, nbytes, f"{variant_name(t, n, i)}: packed", context=shape)
    if dst is None:
        dst = np.zeros((n_rows, ne0), dtype=np.float32)
    elif isinstance(dst, np.ndarray) and dst.dtype != np.float32:
        raise ValueError(f"dequantize dst: dtype {dst.dtype}, expected float32")
    expect_nbytes(dst, n_rows * ne0 * 4, f"{variant_name(t, n, i)}: dst", writable=True,
                  context=shape)
    if n_rows:
        _status(lib.cr_dequantize(t, n, i, *_pointers(packed, dst, "float[]"), ne0, n_rows),
                "dequantize")
    return dst


class _FamilyKernels:
    """The cpu-repack family's kernels as repack.families calls them: one chunk of whole row
    groups, the variant given by its packed type id."""

    verify_check = "vf_check_cpu_repack"

    def pack(self, packed_type_id: int, ne0: int, rows: int, src, dst) -> None:
        pack(*variant_of(packed_type_id), src, dst, ne0, rows)

    def unpack(self, packed_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        unpack(*variant_of(packed_type_id), packed, dst, ne0, rows)

    def first_invalid_row(self, packed_type_id: int, ne0: int, rows: int, packed) -> int | None:
        return None     # upstream's layouts carry no redundant fields

    def verify_check_args(self, packed_type_id: int) -> tuple:
        return variant_of(packed_type_id)

    def can_dequantize(self, packed_type_id: int) -> bool:
        return True     # cr_dequantize decodes every variant

    def dequantize_packed(self, packed_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        dequantize(*variant_of(packed_type_id), packed, ne0, rows, dst)


KERNELS = _FamilyKernels()
