"""The per-tensor digests our records carry.

Records of layout version 3 carry sha256 (hashlib: SHA-NI where the CPU has it, and the GIL is
released while it hashes a chunk, so the per-tensor digests of a conversion run on every thread).
It resists deliberate collisions: a file whose tensor data was edited cannot keep its recorded
digests (issue 20: an XXH64 forgery takes milliseconds). Measured on the development machine
(2 cores, loaded, CPU time per GB): sha256 1.28 GB/s, the blake3 package 1.79 GB/s (one thread;
no AVX-512 there), blake2b 0.44 GB/s, our XXH64 5.9 GB/s. blake3's 1.4x did not justify a new
binary dependency; sha256 also is the hash model hubs publish for whole files
(``--original-sha256``), so one algorithm covers both.

Versions 1 and 2 carry XXH64 (native, ~10 GB/s per core): still read, they prove the data free of
accidental corruption, not of a forger.
"""

from __future__ import annotations

import hashlib

from ._checksum import ffi, lib

# the digest each layout version of our records carries (repack/metadata.py)
SHA256 = "sha256"
XXH64_NAME = "xxh64"
HEX_LENGTH = {SHA256: 64, XXH64_NAME: 16}


def digest_of_version(layout_version: int) -> str:
    return SHA256 if layout_version >= 3 else XXH64_NAME


def forgery_resistant(digest_name: str) -> bool:
    """Whether a digest of this kind also proves the data against a forger (not only against
    accidental corruption)."""
    return digest_name == SHA256


def new_digest(digest_name: str):
    """A fresh streaming hasher (``update``, ``hexdigest``) of the named kind."""
    return hashlib.sha256() if digest_name == SHA256 else XXH64()


class XXH64:
    """hashlib-style streaming digest; ``update`` releases the GIL."""

    def __init__(self, data=None, seed: int = 0):
        self._state = ffi.new("xxh64_state *")
        lib.xxh64_reset(self._state, seed)
        if data is not None:
            self.update(data)

    def update(self, data) -> None:
        with memoryview(data) as view:
            if not view.c_contiguous:
                raise ValueError("digest input must be a contiguous buffer")
            n = view.nbytes
        if n:
            lib.xxh64_update(self._state, ffi.from_buffer("uint8_t[]", data), n)

    def intdigest(self) -> int:
        return int(lib.xxh64_digest(self._state))

    def hexdigest(self) -> str:
        return f"{self.intdigest():016x}"
