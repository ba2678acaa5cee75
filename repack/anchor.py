"""The trust anchor: the published sha256 of the original file.

A repacked file's records prove its data against accidental corruption, and (sha256 digests,
records version 3) against an edit of the data alone; but a forger who rewrites the records
together with the data makes a file that is consistent with itself. What no forger can change is
the sha256 that model hubs publish for every original file. ``verify REPACKED --original-sha256
HEX`` rebuilds the original in file order, chunk by chunk, exactly as unpack writes it, and hashes
it (nothing is written, no original is needed); ``unpack --expect-sha256 HEX`` hashes the file it
wrote before it takes its final name. A split model takes one value per shard, in shard order.
"""

from __future__ import annotations

import hashlib
import re

from .errors import UsageError
from .original import OriginalLayout, read_at
from .runner import scratch
from .wording import plural

CHUNK_BYTES = 16 << 20
_HEX = re.compile(r"[0-9a-fA-F]{64}")


def weak_digest_note(path: str, info) -> str:
    """What a file whose records carry XXH64 digests (versions 1 and 2) proves without the
    anchor: said by standalone verify and unpack alike."""
    return (f"{path} has records of layout version {info.layout_version}, whose tensor digests "
            f"(XXH64) prove the data only against accidental corruption, not against a forger; "
            f"only the original's published sha256 proves the rebuilt file against both")


def expected_digests(values, count: int) -> list[str]:
    """The given sha256 values (a string or a sequence of strings), checked: 64 hex digits each,
    one per file of the model. Lower case."""
    values = [values] if isinstance(values, str) else list(values)
    for v in values:
        if not isinstance(v, str) or not _HEX.fullmatch(v):
            raise UsageError(f"expected sha256 '{v}' is not a sha256 (64 hex digits)")
    if len(values) != count:
        raise UsageError(f"{plural(len(values), 'expected sha256', 'expected sha256s')} given "
                         f"for a model of {plural(count, 'file')} (one per file, in shard "
                         f"order)")
    return [v.lower() for v in values]


def written_sha256(fd: int, size: int, path: str) -> str:
    """sha256 of the first ``size`` bytes of an open file, read by position in chunks."""
    h = hashlib.sha256()
    for a in range(0, size, CHUNK_BYTES):
        n = min(CHUNK_BYTES, size - a)
        h.update(read_at(fd, a, n, scratch("anchor", n), path=path))
    return h.hexdigest()


def rebuilt_sha256(src, path: str, layout: OriginalLayout, plans) -> str:
    """sha256 of the file unpack would write from ``src`` (the original as its records describe
    it), rebuilt in file order: header, filler (zero but for the recorded runs), and each tensor
    decoded back to its source blocks. ``plans``: per tensor of ``src``, (tensor, family or None,
    source type id)."""
    h = hashlib.sha256()
    h.update(layout.header)
    pos = layout.header_end
    order = sorted(range(len(layout.names)), key=layout.tensor_start)
    for k in order:
        start = layout.tensor_start(k)
        _hash_filler(h, layout, pos, start)
        t, family, _ = plans[layout.rep_index[k]]
        base = src.data_start + t.offset
        if family is None:
            for a in range(0, t.nbytes, CHUNK_BYTES):
                n = min(CHUNK_BYTES, t.nbytes - a)
                h.update(read_at(src.fileno(), base + a, n, scratch("input", n), path=path))
        else:
            for (a, b), (c, d), rows in family.chunks(t.type_id, t, CHUNK_BYTES):
                packed = read_at(src.fileno(), base + c, d - c, scratch("input", d - c), path=path)
                rebuilt = scratch("rebuilt", b - a)
                family.unpack(t.type_id, t.ne0, rows, packed, rebuilt)
                h.update(rebuilt)
        pos = start + layout.nbytes[k]
    _hash_filler(h, layout, pos, layout.file_size)
    return h.hexdigest()


def _hash_filler(h, layout: OriginalLayout, a: int, b: int) -> None:
    """Bytes [a, b) outside the header and the tensors: zero, but for the recorded runs."""
    for c in range(a, b, CHUNK_BYTES):
        d = min(c + CHUNK_BYTES, b)
        piece = bytearray(d - c)
        for offset, data in layout.filler:
            lo, hi = max(offset, c), min(offset + len(data), d)
            if lo < hi:
                piece[lo - c:hi - c] = data[lo - offset:hi - offset]
        h.update(piece)
