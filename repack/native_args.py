"""Argument checks shared by the thin wrappers over the native kernels.

Everything a C kernel relies on is checked here first (integer shapes, contiguous buffers of the
exact size, writable outputs), so native code never reads or writes out of bounds.
"""

from __future__ import annotations

import operator


def shape_int(value, what: str) -> int:
    """Python or numpy integers only: int() would truncate 32.5 rows to 32 (or parse "32") and
    the kernel would then run on a shape nobody asked for; bools are not shapes either."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, not {type(value).__name__}") from None


def buffer_nbytes(buf, what: str, writable: bool = False) -> int:
    """Size of a C-contiguous buffer (bytes, bytearray, memoryview, mmap, numpy array)."""
    try:
        view = memoryview(buf)
    except TypeError:
        raise ValueError(f"{what}: {type(buf).__name__} does not expose a buffer") from None
    with view:
        if not view.c_contiguous:
            raise ValueError(f"{what}: buffer is not C-contiguous")
        if writable and view.readonly:
            raise ValueError(f"{what}: buffer is read-only")
        return view.nbytes


def unit_range(begin, end, count: int, what: str) -> tuple[int, int]:
    """[begin, end) of whole units (strips, groups, rows) inside 0..count; end None means count."""
    begin = shape_int(begin, f"{what}_begin")
    end = count if end is None else shape_int(end, f"{what}_end")
    if not 0 <= begin <= end <= count:
        raise ValueError(f"{what} range [{begin}, {end}) is not inside [0, {count}]")
    return begin, end


def expect_nbytes(buf, need: int, what: str, writable: bool = False, context: str = "") -> int:
    """A buffer of exactly ``need`` bytes, or a ValueError naming both sizes."""
    have = buffer_nbytes(buf, what, writable)
    if have != need:
        raise ValueError(f"{what} holds {have} bytes, expected {need}"
                         + (f" ({context})" if context else ""))
    return have
