"""The work every convert must do, and nothing else: each input read into user space, every byte
hashed with sha256 (what our records carry since layout version 3), and written back out.

    python benchmarks/floor.py OUTDIR FILE [FILE ...] [--threads N]

Same I/O as convert (16 MiB chunks, pread into a per-thread buffer, hashlib's sha256 with the GIL
released, pwrite by position, fsync at the end), on N threads, with no packing and no checks.
benchmarks/run.py times it beside `cp` and `convert`: convert against this floor is what the
pipeline adds; this floor against `cp` is what hashing and the trip through user space cost, which
no convert that records sha256 digests can avoid (convert may not map its input: it may shrink).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHUNK_BYTES = 16 << 20     # repack/pipeline.py's CHUNK_BYTES
_buffers = threading.local()


def copy_chunk(src: int, dst: int, offset: int, nbytes: int) -> str:
    buf = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)[:nbytes]
    done = 0
    while done < nbytes:
        n = os.preadv(src, [view[done:]], offset + done)
        if n == 0:
            raise SystemExit(f"unexpected end of file at {offset + done}")
        done += n
    digest = hashlib.sha256(view).hexdigest()
    done = 0
    while done < nbytes:
        done += os.pwrite(dst, view[done:], offset + done)
    return digest


def floor_copy(source: Path, dest: Path, threads: int) -> None:
    size = source.stat().st_size
    src = os.open(source, os.O_RDONLY)
    dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(dst, size)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda a: copy_chunk(src, dst, a, min(CHUNK_BYTES, size - a)),
                          range(0, size, CHUNK_BYTES)))
        os.fsync(dst)
    finally:
        os.close(src)
        os.close(dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    for f in args.files:
        floor_copy(f, args.outdir / f.name, args.threads)


if __name__ == "__main__":
    main()
