"""Thin wrapper over the fused per-chunk checks (``native/verify.c``, module ``repack._verify``)
that verify and ``convert --verify`` run on every packed chunk.

Every argument is checked here, before C runs (the C side trusts the buffer sizes it is given).
The C call releases the GIL, so threads check chunks in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

from formats.ggml_types import TYPES

from ._verify import ffi, lib
from .native_args import expect_nbytes, shape_int

INVALID, BYTES, VALUES, LAYOUT = 1, 2, 3, 4   # vf_mismatch.kind


@dataclass(frozen=True)
class Mismatch:
    """The first problem in a chunk: ``kind`` INVALID (``index`` = row), BYTES (``index`` = byte
    of the chunk's source bytes, the two bytes), LAYOUT (``index`` = byte of the chunk's packed
    bytes; ``original`` = the byte the packer writes for the source, ``repacked`` = the file's)
    or VALUES (``index`` = row * ne0 + column, the two float32 bit patterns)."""
    kind: int
    index: int
    original: int
    repacked: int


def check_chunk(native: str, leading: tuple, src_type: int, packed_type: int, ne0: int, rows: int,
                packed, original, rebuilt, values: bool, layout: bool = True) -> Mismatch | None:
    """Check one chunk (``rows`` whole units of a packed tensor) with the family's fused check,
    the function ``native`` of native/verify.c called with the arguments ``leading`` and then the
    buffers: ``rebuilt`` receives the source bytes the inverse kernel gives back; ``original``
    (None: no original) must equal them; with ``layout``, the packer run again on the source must
    give every packed byte; with ``values``, both float decoders must give the same bits for every
    element."""
    src = TYPES[int(src_type)]
    ne0, rows = shape_int(ne0, "ne0"), shape_int(rows, "rows")
    if ne0 <= 0 or ne0 % src.block_size or rows < 0:
        raise ValueError(f"{src.name}: bad chunk shape ne0={ne0}, rows={rows}")
    src_bytes = src.row_bytes(ne0) * rows
    packed_bytes = TYPES[int(packed_type)].row_bytes(ne0) * rows
    shape = f"ne0={ne0}, rows={rows}"
    expect_nbytes(packed, packed_bytes, f"{src.name}: packed", context=shape)
    expect_nbytes(rebuilt, src_bytes, f"{src.name}: rebuilt", writable=True, context=shape)
    if original is not None:
        expect_nbytes(original, src_bytes, f"{src.name}: original", context=shape)
    if rows == 0:
        return None
    m = ffi.new("vf_mismatch *")
    p_packed = ffi.from_buffer("uint8_t[]", packed)
    p_original = ffi.from_buffer("uint8_t[]", original) if original is not None else ffi.NULL
    p_rebuilt = ffi.from_buffer("uint8_t[]", rebuilt, require_writable=True)
    rc = getattr(lib, native)(*leading, p_packed, p_original, p_rebuilt, rows, ne0, bool(layout),
                              bool(values), m)
    if rc == -4:
        raise MemoryError("out of memory for the check's buffers")
    if rc != 0:   # the checks above make this unreachable, except bf16_r16 with an odd ne0
        raise ValueError(f"{src.name}: native check rejected the arguments (code {rc})")
    return None if m.kind == 0 else Mismatch(m.kind, m.index, m.original, m.repacked)
