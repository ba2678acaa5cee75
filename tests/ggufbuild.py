"""A deliberately independent, bare-struct GGUF writer for tests.

It shares no code with ``formats.gguf_container`` so that tests of our reader and writer compare
against something else, and it can write the malformed files the reader must reject (any count,
length, offset or type id, valid or not).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def gstr(s: str | bytes, length: int | None = None) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b) if length is None else length) + b


def kv_u32(key: str, v: int) -> bytes:
    return gstr(key) + struct.pack("<II", U32, v)


def kv_str(key: str, v: str) -> bytes:
    return gstr(key) + struct.pack("<I", STR) + gstr(v)


def kv_str_array(key: str, items: list[str]) -> bytes:
    return gstr(key) + struct.pack("<IIQ", ARR, STR, len(items)) + b"".join(gstr(i) for i in items)


@dataclass
class RawTensor:
    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int


@dataclass
class RawGGUF:
    kvs: list[bytes] = field(default_factory=list)
    tensors: list[RawTensor] = field(default_factory=list)
    data: bytes = b""
    version: int = 3
    magic: bytes = b"GGUF"
    alignment: int = 32
    n_tensors: int | None = None     # override the counts to forge absurd headers
    n_kv: int | None = None
    big_endian_version: bool = False

    def header(self) -> bytes:
        version = struct.pack(">I" if self.big_endian_version else "<I", self.version)
        out = [self.magic, version,
               struct.pack("<QQ", len(self.tensors) if self.n_tensors is None else self.n_tensors,
                           len(self.kvs) if self.n_kv is None else self.n_kv)]
        out += self.kvs
        for t in self.tensors:
            out.append(gstr(t.name) + struct.pack("<I", len(t.shape))
                       + b"".join(struct.pack("<Q", d) for d in t.shape)
                       + struct.pack("<IQ", t.type_id, t.offset))
        h = b"".join(out)
        return h + b"\0" * (-len(h) % self.alignment)

    def tobytes(self) -> bytes:
        return self.header() + self.data


def valid_small() -> RawGGUF:
    """Two tensors: a 16x32 Q8_0 matrix (544 bytes) and an 8-element f32 vector."""
    q8 = bytes(range(256)) * 2 + bytes(32)
    return RawGGUF(
        kvs=[kv_str("general.architecture", "test"), kv_u32("general.alignment", 32)],
        tensors=[RawTensor("blk.0.ffn_up.weight", (32, 16), 8, 0),
                 RawTensor("output_norm.weight", (8,), 0, 544)],
        data=q8 + struct.pack("<8f", *range(8)),
    )
