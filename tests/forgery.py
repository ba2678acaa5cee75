"""Forgeries of repacked files (issue 20, items 1 and 2), built by the tests and the fuzz corpus:
an XXH64 collision in a tensor's data, and a split model whose shards are of different layouts.

An XXH64 collision takes one line of algebra: XXH64 (seed 0) keeps four 64-bit lanes, and a
stripe's word enters its lane as ``acc = rotl(acc + word * P2, 31) * P1``. Replace one word, and
the word 32 bytes later (same lane, next stripe) can be chosen so that the lane's state, and so
the digest, is unchanged."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from formats.gguf_container import read_gguf

P1 = 0x9E3779B185EBCA87
P2 = 0xC2B2AE3D27D4EB4F
MASK = (1 << 64) - 1
LANE_START = (P1 + P2 & MASK, P2, 0, -P1 & MASK)   # seed 0


def _round(acc: int, word: int) -> int:
    acc = (acc + word * P2) & MASK
    acc = ((acc << 31) | (acc >> 33)) & MASK
    return acc * P1 & MASK


def xxh64_collision(data: bytes, offset: int, new_word: bytes) -> bytes:
    """``data`` with the 8 bytes at ``offset`` replaced by ``new_word`` and the 8 bytes at
    ``offset + 32`` rewritten so that XXH64 of the whole is unchanged. Both words must lie in
    the stripes XXH64 consumes whole (the first ``len // 32 * 32`` bytes)."""
    assert offset % 8 == 0 and offset + 40 <= len(data) // 32 * 32 and len(new_word) == 8
    word = lambda at: struct.unpack_from("<Q", data, at)[0]   # noqa: E731
    lane = offset % 32 // 8
    acc = LANE_START[lane]
    for at in range(lane * 8, offset, 32):
        acc = _round(acc, word(at))
    before, after = _round(acc, word(offset)), _round(acc, struct.unpack("<Q", new_word)[0])
    # rotl(after + w * P2, 31) * P1 == rotl(before + old * P2, 31) * P1, solved for w
    compensating = (before + word(offset + 32) * P2 - after) * pow(P2, -1, 1 << 64) & MASK
    out = bytearray(data)
    out[offset:offset + 8] = new_word
    struct.pack_into("<Q", out, offset + 32, compensating)
    return bytes(out)


TARGET = "output_norm.weight"
EDIT = struct.pack("<2f", 1000.0, -1000.0)     # the two floats the forger sets


def tensor_span(path: Path, name: str = TARGET) -> tuple[int, int]:
    """(file offset, size) of a tensor's data."""
    with read_gguf(path) as f:
        t = f.tensor(name)
        return f.data_start + t.offset, t.nbytes


def forge_data(path: Path, out: Path) -> tuple[bytes, bytes]:
    """Write ``out``: ``path`` with two floats of output_norm.weight edited and the word 32 bytes
    later compensating, so the tensor's XXH64 is unchanged. Returns (old data, forged data)."""
    image = bytearray(path.read_bytes())
    start, n = tensor_span(path)
    old = bytes(image[start:start + n])
    forged = xxh64_collision(old, 0, EDIT)
    image[start:start + n] = forged
    out.write_bytes(bytes(image))
    return old, forged


def split_model(folder: Path) -> Path:
    """A 2-shard model (llama.cpp's split keys), one q4_0 32x32 matrix and one f32 vector per
    shard, that both layout families pack. Returns its first shard."""
    import random
    from tests.ggufbuild import I32, U16, RawGGUF, RawTensor, gstr, kv_str
    rng = random.Random(20)
    paths = []
    for no in range(2):
        kvs = [kv_str("general.architecture", "llama"),
               gstr("split.no") + struct.pack("<IH", U16, no),
               gstr("split.count") + struct.pack("<IH", U16, 2),
               gstr("split.tensors.count") + struct.pack("<Ii", I32, 4)]
        q4 = bytes(rng.randrange(256) for _ in range(18 * 32))
        raw = RawGGUF(kvs=kvs, tensors=[RawTensor(f"blk.{no}.attn_q.weight", (32, 32), 2, 0),
                                        RawTensor(f"blk.{no}.attn_norm.weight", (8,), 0, 576)],
                      data=q4 + struct.pack("<8f", *range(8)))
        paths.append(folder / f"model-{no + 1:05d}-of-00002.gguf")
        paths[-1].write_bytes(raw.tobytes())
    return paths[0]


def mixed_shards(folder: Path) -> Path:
    """The shards of one model converted with different layouts: shard 1 amx, shard 2
    interleaved, named as one split model in ``folder``. Returns its first shard."""
    import shutil
    import tempfile

    import repack
    with tempfile.TemporaryDirectory() as tmp:
        first = split_model(Path(tmp))
        for layout in ("amx", "interleaved"):
            repack.convert(first, Path(tmp) / f"{layout}.gguf", layout=layout, threads=1)
        names = ["mixed-00001-of-00002.gguf", "mixed-00002-of-00002.gguf"]
        shutil.copyfile(Path(tmp) / "amx-00001-of-00002.gguf", folder / names[0])
        shutil.copyfile(Path(tmp) / "interleaved-00002-of-00002.gguf", folder / names[1])
    return folder / names[0]


def rewrite_recorded_sha256(path: Path, old: bytes, new: bytes) -> None:
    """The forger who rewrites the records too: the recorded sha256 of ``old`` replaced in place
    by that of ``new`` (same length: nothing else moves)."""
    image = path.read_bytes()
    was, now = hashlib.sha256(old).hexdigest().encode(), hashlib.sha256(new).hexdigest().encode()
    assert image.count(was) == 1
    path.write_bytes(image.replace(was, now))
