"""zstd frames built by hand (RFC 8878), for decompression bombs of any size in a few KB or MB.

An RLE block is 3 bytes of header and 1 byte of data and stands for up to 128 KiB of output, so
100 GiB of zeros take 3.2 MB, written in a blink (no compressor has to chew through 100 GiB).
"""

from __future__ import annotations

import struct

MAGIC = b"\x28\xb5\x2f\xfd"
BLOCK = 128 << 10       # Block_Maximum_Size with any window of at least 128 KiB


def _block_header(size: int, kind: int, last: bool) -> bytes:
    return ((size << 3) | (kind << 1) | int(last)).to_bytes(3, "little")


def frame(prefix: bytes, total: int, declared: int | None = None, fill: int = 0,
          window_log: int = 21) -> bytes:
    """One frame decompressing to ``prefix`` (raw blocks) followed by ``fill`` bytes up to
    ``total`` bytes (RLE blocks). ``declared``: the Frame_Content_Size written in the header
    (None: no size declared, as a streaming compressor writes it)."""
    assert len(prefix) <= total and 10 <= window_log <= 31
    descriptor = 0 if declared is None else 3 << 6      # 8-byte content size field, or none
    head = MAGIC + bytes([descriptor, (window_log - 10) << 3])
    if declared is not None:
        head += struct.pack("<Q", declared)
    parts = [head]
    pieces = [prefix[i:i + BLOCK] for i in range(0, len(prefix), BLOCK)]
    rest = total - len(prefix)
    n_rle, tail = divmod(rest, BLOCK)
    n_blocks = len(pieces) + n_rle + (1 if tail else 0)
    if n_blocks == 0:
        return head + _block_header(0, 0, True)
    done = 0
    for piece in pieces:
        done += 1
        parts.append(_block_header(len(piece), 0, done == n_blocks) + piece)
    rle = _block_header(BLOCK, 1, False) + bytes([fill])
    if n_rle:
        last_is_rle = not tail
        parts.append(rle * (n_rle - 1 if last_is_rle else n_rle))
        if last_is_rle:
            parts.append(_block_header(BLOCK, 1, True) + bytes([fill]))
    if tail:
        parts.append(_block_header(tail, 1, True) + bytes([fill]))
    return b"".join(parts)


def skippable(payload: bytes = b"") -> bytes:
    return struct.pack("<II", 0x184D2A50, len(payload)) + payload
