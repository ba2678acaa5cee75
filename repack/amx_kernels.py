"""Python face of the native AMX kernels (``native/amx.c``, module ``repack._amx``).

Every function works on the 16-row strips ``[strip_begin, strip_end)`` of a whole tensor, so
threads can process disjoint strip ranges of the same buffers at once; cffi releases the GIL for
the duration of each C call. Buffers may be anything with the buffer protocol (bytes, bytearray,
memoryview, mmap, numpy arrays) but must be C-contiguous and exactly the tensor's size: lengths
are checked here, so the C code never reads or writes outside them.

A type is given by its name ("q4_K", any case, "amx_q4_K" too) or by its source or packed id.
A 3-D expert tensor [k, N, E] is passed with n_rows = N * E (spec section 11).
"""

from __future__ import annotations


import numpy as np

from formats.amx_layout import AmxParams, amx_params

from ._amx import ffi, lib
from .native_args import expect_nbytes, shape_int, unit_range

TILE_N = 16


def params(type_name_or_id) -> AmxParams:
    """The layout parameters of a type; ValueError if it has no AMX layout."""
    return amx_params(type_name_or_id)


def packed_nbytes(type_name_or_id, n_rows: int, k: int) -> int:
    p = params(type_name_or_id)
    return n_rows * (k // p.qk) * (p.bs + p.extra)


def _shape(p: AmxParams, n_rows: int, k: int, strip_begin: int, strip_end: int | None):
    n_rows, k = shape_int(n_rows, "n_rows"), shape_int(k, "k")
    if n_rows < 0 or n_rows % TILE_N:
        raise ValueError(f"{p.source.name}: n_rows={n_rows} is not a multiple of {TILE_N}")
    if k < 0 or k % p.qk:
        raise ValueError(f"{p.source.name}: k={k} is not a multiple of the block size {p.qk}")
    n_strips = n_rows // TILE_N
    strip_begin, strip_end = unit_range(strip_begin, strip_end, n_strips, f"{p.source.name}: strip")
    return n_rows, k, strip_begin, strip_end


def _buffer(obj, nbytes: int, what: str, writable: bool = False, ctype: str = "uint8_t[]"):
    expect_nbytes(obj, nbytes, what, writable)
    return ffi.from_buffer(ctype, obj, require_writable=writable)


def _status(rc: int, p: AmxParams, what: str) -> None:
    if rc == -1:
        raise ValueError(f"{what}: type {p.source.name} not supported by the native kernel")
    if rc != 0:
        raise ValueError(f"{what}: bad shape or strip range (native code {rc})")


def pack(type_name_or_id, src, dst, n_rows: int, k: int, strip_begin: int = 0,
         strip_end: int | None = None):
    """Pack strips of the standard-layout tensor ``src`` into ``dst`` (the whole packed tensor).

    ``dst=None`` allocates a zeroed numpy array. Returns ``dst``."""
    p = params(type_name_or_id)
    n_rows, k, sb, se = _shape(p, n_rows, k, strip_begin, strip_end)
    kb = k // p.qk
    if dst is None:
        dst = np.zeros(n_rows * kb * (p.bs + p.extra), dtype=np.uint8)
    src_c = _buffer(src, n_rows * kb * p.bs, "pack src")
    dst_c = _buffer(dst, n_rows * kb * (p.bs + p.extra), "pack dst", writable=True)
    _status(lib.amx_pack(p.source.id, src_c, dst_c, n_rows, k, sb, se), p, "pack")
    return dst


def unpack(type_name_or_id, packed, dst, n_rows: int, k: int, strip_begin: int = 0,
           strip_end: int | None = None):
    """Rebuild the standard ggml blocks of some strips of ``packed`` into ``dst``. Returns ``dst``."""
    p = params(type_name_or_id)
    n_rows, k, sb, se = _shape(p, n_rows, k, strip_begin, strip_end)
    kb = k // p.qk
    if dst is None:
        dst = np.zeros(n_rows * kb * p.bs, dtype=np.uint8)
    packed_c = _buffer(packed, n_rows * kb * (p.bs + p.extra), "unpack packed")
    dst_c = _buffer(dst, n_rows * kb * p.bs, "unpack dst", writable=True)
    _status(lib.amx_unpack(p.source.id, packed_c, dst_c, n_rows, k, sb, se), p, "unpack")
    return dst


def check(type_name_or_id, packed, n_rows: int, k: int, strip_begin: int = 0,
          strip_end: int | None = None) -> int | None:
    """Validity checks of spec section 10.2 on some strips: None when valid, else the first bad
    row (Q8_0 comp mismatch, Q4_K/Q5_K 6-bit scale or min >= 64, IQ4_XS scale outside -32..31)."""
    p = params(type_name_or_id)
    n_rows, k, sb, se = _shape(p, n_rows, k, strip_begin, strip_end)
    packed_c = _buffer(packed, n_rows * (k // p.qk) * (p.bs + p.extra), "check packed")
    row = lib.amx_check(p.source.id, packed_c, n_rows, k, sb, se)
    if row < -1:
        raise ValueError(f"check: bad arguments (native code {row})")
    return None if row == -1 else int(row)


def dequantize(type_name_or_id, packed, dst_f32, n_rows: int, k: int, strip_begin: int = 0,
               strip_end: int | None = None):
    """Dequantize some strips straight from the packed layout into ``dst_f32`` (float32, row-major
    [n_rows, k]; ``None`` allocates it). Bit-identical to gguf-py's dequantize of the original
    blocks. Returns ``dst_f32``."""
    p = params(type_name_or_id)
    n_rows, k, sb, se = _shape(p, n_rows, k, strip_begin, strip_end)
    if dst_f32 is None:
        dst_f32 = np.zeros((n_rows, k), dtype=np.float32)
    elif isinstance(dst_f32, np.ndarray) and dst_f32.dtype != np.float32:
        raise ValueError(f"dequantize dst: dtype {dst_f32.dtype}, expected float32")
    packed_c = _buffer(packed, n_rows * (k // p.qk) * (p.bs + p.extra), "dequantize packed")
    dst_c = _buffer(dst_f32, n_rows * k * 4, "dequantize dst", writable=True, ctype="float[]")
    _status(lib.amx_dequantize(p.source.id, packed_c, dst_c, n_rows, k, sb, se), p, "dequantize")
    return dst_f32


class _FamilyKernels:
    """The AMX family's kernels as repack.families calls them: one chunk of whole 16-row strips,
    the type given by its packed id."""

    verify_check = "vf_check_amx"

    def pack(self, packed_type_id: int, ne0: int, rows: int, src, dst) -> None:
        pack(packed_type_id, src, dst, rows, ne0)

    def unpack(self, packed_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        unpack(packed_type_id, packed, dst, rows, ne0)

    def first_invalid_row(self, packed_type_id: int, ne0: int, rows: int, packed) -> int | None:
        return check(packed_type_id, packed, rows, ne0)

    def verify_check_args(self, packed_type_id: int) -> tuple:
        source = params(packed_type_id).source
        return source.id, source.block_size, source.type_size

    def can_dequantize(self, packed_type_id: int) -> bool:
        return True     # native/amx.c decodes every AMX type

    def dequantize_packed(self, packed_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        dequantize(packed_type_id, packed, dst, rows, ne0)


KERNELS = _FamilyKernels()
