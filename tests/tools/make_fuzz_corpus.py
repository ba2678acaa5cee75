"""Write tests/fuzz_corpus/: small hostile (and a few valid) GGUF files for test_fuzz_container.

expected.tsv lists, for every file, a piece of the one-line error that `amx-repack inspect` must
print ("ok" when the file must be accepted), and optionally, in further columns, COMMAND=PIECE: a
piece of the one-line error of another command of the replay (convert-amx, convert-interleaved,
verify, unpack; see test_fuzz_container.py), for files whose problem only that command meets
(exit 2; COMMAND/1=PIECE: exit 1, a mismatch).
Files the fuzzer found can be added to CASES (or dropped into the folder with a line in
expected.tsv). Run from the repository root: python tests/tools/make_fuzz_corpus.py [FOLDER]
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import zstandard  # noqa: E402

from tests.ggufbuild import (ARR, F32, I32, STR, U8, U16, U32, RawGGUF, RawTensor, gstr,  # noqa: E402
                             kv_str, kv_str_array, kv_u32, valid_small)
from tests.zstframes import frame  # noqa: E402

FOLDER = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "fuzz_corpus"
EXPECTED = "expected.tsv"


def kv_raw(key: str, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def with_kvs(*kvs: bytes) -> bytes:
    raw = valid_small()
    raw.kvs += list(kvs)
    return raw.tobytes()


def repacked(*kvs: bytes) -> bytes:
    """valid_small claiming to be written by amx-repack, with the given records of ours."""
    return with_kvs(kv_str("amx_repack.layout", "amx"), *kvs)


def tensors(*ts: RawTensor, data: bytes = b"") -> bytes:
    raw = valid_small()
    raw.tensors = list(ts)
    raw.data = data
    return raw.tobytes()


def nested(depth: int) -> bytes:
    return with_kvs(kv_raw("nested", ARR, struct.pack("<IQ", ARR, 1) * depth
                           + struct.pack("<IQ", U8, 0)))


def header_only(n_tensors: int, n_kv: int, body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19).compress(data)


def skippable_first() -> bytes:
    """A valid model as pzstd writes it: a skippable frame before the zstd frame."""
    return struct.pack("<II", 0x184D2A50, 4) + b"pz\0\0" + zst(valid_small().tobytes())


def zst_bomb() -> bytes:
    """A few KB of zstd that claims a 1 GiB string in the header and then streams 1 GiB of zeros:
    inspect must not decompress (and keep) the lot to find the end of the header."""
    head = header_only(0, 1, gstr("general.name")[:0] + struct.pack("<Q", 4) + b"name"
                       + struct.pack("<IQ", STR, 1 << 30))
    cctx = zstandard.ZstdCompressor(level=3)
    chunk = bytes(16 << 20)
    out = bytearray()
    obj = cctx.compressobj(size=len(head) + (1 << 30))
    out += obj.compress(head)
    for _ in range((1 << 30) // len(chunk)):
        out += obj.compress(chunk)
    out += obj.flush()
    return bytes(out)


def zst_declaring(data: bytes, declared: int) -> bytes:
    """``data`` and 8 MiB of zeros in one frame that declares ``declared`` bytes (inspect, which
    decompresses 4 MiB, does not reach the frame's end, where zstd would notice the lie)."""
    return frame(data, len(data) + (8 << 20), declared)


def counts_zst(n_tensors: int, n_kv: int) -> bytes:
    """A header declaring (and holding) that many identical tensor infos or records: the counts
    are refused before the duplicates are seen. A few KB of zstd; too big for the corpus plain."""
    body = (gstr("k") + struct.pack("<IB", U8, 1)) * n_kv
    body += (gstr("t") + struct.pack("<IQIQ", 1, 0, 0, 0)) * n_tensors
    return zst(header_only(n_tensors, n_kv, body))


def packed_v1(name: str, shape: tuple[int, ...], packed_type: int, original_type: int,
              data: bytes, layout: str) -> bytes:
    """A file claiming to be written by amx-repack (version 1 records, built by hand here), holding
    one packed tensor with the given shape, however hostile."""
    import hashlib
    import xxhash
    kvs = [kv_str("general.architecture", "test")]
    meta_sha = hashlib.sha256(b"".join(kvs)).hexdigest()
    ours = [kv_str("amx_repack.layout", layout),
            kv_u32("amx_repack.layout_version", 1),
            kv_str("amx_repack.tool_version", "0.1.0"),
            kv_str_array("amx_repack.tensor.names", [name]),
            gstr("amx_repack.tensor.original_types") + struct.pack("<IIQI", ARR, U32, 1,
                                                                   original_type),
            kv_str_array("amx_repack.tensor.original_xxh64", [xxhash.xxh64(data).hexdigest()]),
            kv_str_array("amx_repack.changed_keys", []),
            kv_str_array("amx_repack.added_keys", []),
            kv_str("amx_repack.metadata_sha256", meta_sha)]
    return RawGGUF(kvs=kvs + ours, tensors=[RawTensor(name, shape, packed_type, 0)],
                   data=data).tobytes()


def shard(no: int, count: int, names: list[str], total: int, arch: str = "test") -> bytes:
    """One shard of a split model (llama.cpp's gguf-split keys), 8-element f32 tensors."""
    kvs = [kv_str("general.architecture", arch),
           gstr("split.no") + struct.pack("<IH", U16, no),
           gstr("split.count") + struct.pack("<IH", U16, count),
           gstr("split.tensors.count") + struct.pack("<Ii", I32, total)]
    return RawGGUF(kvs=kvs, tensors=[RawTensor(n, (8,), 0, 32 * i) for i, n in enumerate(names)],
                   data=struct.pack("<8f", *range(8)) * len(names)).tobytes()


def repacked_v2(edit=None, layout: str = "amx") -> bytes:
    """A small model converted by amx-repack itself (records of layout version 2), then rewritten
    with ``edit(kvs: dict key -> raw record, tensors: [[name, shape, type, data]])`` applied."""
    import tempfile

    import repack
    from formats.gguf_container import read_gguf
    rng = __import__("random").Random(11)
    q4 = bytes(rng.randrange(256) for _ in range(18 * 32))
    raw = RawGGUF(kvs=[kv_str("general.architecture", "test"), kv_u32("general.alignment", 32)],
                  tensors=[RawTensor("blk.0.attn_q.weight", (32, 32), 2, 0),
                           RawTensor("blk.0.ffn_norm.weight", (4, 2), 0, 576)],
                  data=q4 + struct.pack("<8f", *range(8)))
    with tempfile.TemporaryDirectory() as folder:
        src, out = Path(folder) / "m.gguf", Path(folder) / "r.gguf"
        src.write_bytes(raw.tobytes())
        repack.convert(src, out, layout=layout, threads=1)
        if edit is None:
            return out.read_bytes()
        with read_gguf(out) as f:
            kvs = {k: r.raw for k, r in f.kv.items()}
            ts = [[t.name, t.shape, t.type_id, bytes(f.tensor_data(t))] for t in f.tensors]
    edit(kvs, ts)
    rewritten = RawGGUF(kvs=list(kvs.values()))
    data = b""
    for name, shape, type_id, blob in ts:
        data += bytes(-len(data) % 32)
        rewritten.tensors.append(RawTensor(name, tuple(shape), type_id, len(data)))
        data += blob
    rewritten.data = data
    return rewritten.tobytes()


def forge_added_keys(kvs, ts):
    kvs["amx_repack.added_keys"] = kv_str_array("amx_repack.added_keys", ["general.architecture"])


def drop_header_sha256(kvs, ts):
    del kvs["amx_repack.header_sha256"]


def reshape_kept(kvs, ts):
    ts[1][1] = (2, 4)          # f32 4x2 -> 2x4: same bytes, same digest


def rows_past_last_tile(kvs, ts):
    ts[0][1] = (32, 40)        # amx_q4_0, 32 rows -> 40: 8 rows in no tile
    ts[0][3] += bytes(18 * 8)


def forged_xxh64_v2() -> bytes:
    """Issue 20, item 1: tests/data/layout_v2/amx.gguf (records version 2, XXH64) with two floats
    of output_norm.weight edited and the word 32 bytes later compensating: the digest holds."""
    import tempfile

    from tests.forgery import forge_data
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "forged.gguf"
        forge_data(ROOT / "tests" / "data" / "layout_v2" / "amx.gguf", out)
        return out.read_bytes()


def mixed_layout_shards() -> tuple[bytes, bytes]:
    """Issue 20, item 2: a split model whose shard 1 is amx and shard 2 interleaved."""
    import tempfile

    from tests.forgery import mixed_shards
    with tempfile.TemporaryDirectory() as folder:
        first = mixed_shards(Path(folder))
        second = Path(str(first).replace("00001-of", "00002-of"))
        return first.read_bytes(), second.read_bytes()


MIXED = mixed_layout_shards()


def non_canonical() -> bytes:
    """valid_small with non-zero alignment padding and trailing bytes (restored by unpack)."""
    raw = valid_small()
    raw.tensors = [RawTensor("blk.0.ffn_up.weight", (32, 16), 8, 0),
                   RawTensor("output_norm.weight", (5,), 0, 576)]
    raw.data = raw.data[:544] + b"\xee" * 32 + raw.data[544:564] + b"trailing bytes"
    return raw.tobytes()


def too_much_filler_zst() -> bytes:
    """valid_small followed by 2 MiB of non-zero bytes: more than convert records."""
    return zst(valid_small().tobytes() + b"\x01" * (2 << 20))


CASES: dict[str, tuple[bytes, ...]] = {   # name: (bytes, inspect's piece[, COMMAND=piece])
    # accepted
    "valid-small.gguf": (valid_small().tobytes(), "ok"),
    "empty-model.gguf": (header_only(0, 0), "ok"),
    "nested-shallow.gguf": (nested(3), "ok"),
    "value-not-utf8.gguf": (with_kvs(kv_raw("general.name", STR, gstr(b"\xff\xfe"))), "ok"),
    "zero-dimension.gguf": (tensors(RawTensor("w", (32, 0), 8, 0)), "ok"),
    # refused by the header parser
    "nested-5000.gguf": (nested(5000), "nested more than"),
    "tensor-count-max.gguf": (header_only((1 << 64) - 1, 0), "absurd tensor count"),
    "kv-count-2p63.gguf": (header_only(0, 1 << 63), "absurd metadata count"),
    "array-count-max.gguf": (with_kvs(kv_raw("a", ARR, struct.pack("<IQ", U8, (1 << 64) - 1))),
                             "past the end"),
    "string-array-count-2p32.gguf": (
        with_kvs(kv_raw("a", ARR, struct.pack("<IQ", STR, 1 << 32) + gstr("x"))), "past the end"),
    "array-item-type-max.gguf": (with_kvs(kv_raw("a", ARR, struct.pack("<IQ", 0xFFFFFFFF, 1))),
                                 "unknown array item type"),
    "key-not-utf8.gguf": (with_kvs(gstr(b"\xc3\x28") + struct.pack("<IB", U8, 1)), "UTF-8"),
    "key-with-newline-and-escape.gguf": (with_kvs(gstr("evil\n\x1b[31mkey") + struct.pack("<I", 42)),
                                         "'evil\\n\\x1b[31mkey'"),
    "tensor-name-with-newline.gguf": (tensors(RawTensor("line1\nline2", (32, 1), 77, 0)),
                                      "tensor 'line1\\nline2' has unknown type id 77"),
    "dims-zero.gguf": (tensors(RawTensor("w", (), 0, 0)), "0 dimensions"),
    "dim-max.gguf": (tensors(RawTensor("w", (32, (1 << 64) - 1), 8, 0)), "absurd dimension"),
    "elements-overflow.gguf": (tensors(RawTensor("w", (1 << 40, 1 << 40), 0, 0)),
                               "absurd element count"),
    "type-id-max.gguf": (tensors(RawTensor("w", (32, 1), 0xFFFFFFFF, 0)), "unknown type id"),
    "offset-max.gguf": (tensors(RawTensor("w", (8,), 0, (1 << 64) - 32)), "beyond the end"),
    "huge-alignment-no-tensors.gguf": (   # convert used to write 2 GiB of header padding
        header_only(0, 1, kv_u32("general.alignment", 1 << 31)), "is absurd"),
    "alignment-string.gguf": (header_only(0, 1, kv_str("general.alignment", "32")),
                              "must be a uint32"),
    # parsed, then refused by what reads our own records or the split records
    "ours-layout-version-string.gguf": (repacked(kv_str("amx_repack.layout_version", "one")),
                                        "amx_repack.layout_version"),
    "ours-names-u32.gguf": (repacked(kv_u32("amx_repack.tensor.names", 7)),
                            "amx_repack.tensor.names"),
    "ours-types-strings.gguf": (
        repacked(kv_str_array("amx_repack.tensor.original_types", ["q4_0", "f32"])),
        "amx_repack.tensor.original_types"),
    "ours-layout-not-utf8.gguf": (
        with_kvs(kv_raw("amx_repack.layout", STR, gstr(b"\xff"))), "UTF-8"),
    "split-count-float.gguf": (with_kvs(kv_raw("split.count", F32, struct.pack("<f", float("nan")))),
                               "split.count"),
    "split-count-array.gguf": (
        with_kvs(kv_raw("split.count", ARR, struct.pack("<IQII", U32, 2, 2, 2))), "split.count"),
    # compressed
    "truncated-stream.gguf.zst": (zst(valid_small().tobytes())[:-9], "error: "),
    # issue 20, item 3: one header bound for every command, naming the key, before decompressing
    "bomb.gguf.zst": (zst_bomb(), "header", "convert-amx=metadata 'name' takes 1,073,741,824",
                      "verify=metadata 'name'", "unpack=metadata 'name'"),
    # item 5: pzstd's streams start with a skippable frame
    "skippable-first.gguf.zst": (skippable_first(), "ok"),
    # issue 11, item 5: a frame that declares 1 PiB; refused before anything is written
    "declares-1pib.gguf.zst": (zst_declaring(valid_small().tobytes(), 1 << 50), "ok",
                               "convert-amx=not enough free space"),
    # item 7: counts beyond what any model has, refused before a record is decoded
    "tensor-count-70k.gguf.zst": (counts_zst(70_000, 0), "absurd tensor count 70,000"),
    "kv-count-70k.gguf.zst": (counts_zst(0, 70_000), "absurd metadata count 70,000"),
    # item 12: shapes no layout holds (kept), a non-integer file type, a hostile packed tensor
    "q4_0-ne0-zero.gguf": (tensors(RawTensor("blk.0.ffn_up.weight", (0, 32), 2, 0)), "ok"),
    "bf16-odd-ne0.gguf": (tensors(RawTensor("blk.0.ffn_up.weight", (33, 16), 30, 0),
                                  data=bytes(33 * 16 * 2)), "ok"),
    "file-type-float.gguf": (with_kvs(kv_raw("general.file_type", F32, struct.pack("<f", 2.5))),
                             "ok", "convert-interleaved=expected an integer"),
    "bf16_r16-odd-ne0-packed.gguf": (
        packed_v1("blk.0.ffn_up.weight", (33, 16), 230, 30, bytes(33 * 16 * 2), "interleaved"),
        "ok", "unpack=ne0 = 33"),
    # item 14: shards that do not belong together (each refused naming a shard)
    "split-dup-00001-of-00002.gguf": (shard(0, 2, ["a", "b"], 4), "tensor 'b' is also in"),
    "split-dup-00002-of-00002.gguf": (shard(1, 2, ["b", "c"], 4), "not the first shard"),
    "split-total-00001-of-00002.gguf": (shard(0, 2, ["a", "b"], 4), "split.tensors.count is 4"),
    "split-total-00002-of-00002.gguf": (shard(1, 2, ["c"], 4), "not the first shard"),
    "split-other-00001-of-00002.gguf": (shard(0, 2, ["a", "b"], 4), "belongs to another model"),
    "split-other-00002-of-00002.gguf": (shard(1, 2, ["c", "d"], 4, arch="other"),
                                        "not the first shard"),
    # items 1-4: unpack writes the original or nothing (exit 1 naming what differs from the
    # records, exit 2 for a missing record), every byte of the original is recorded, packed
    # tensors hold whole tiles only, a repacked file is not converted again
    "ours-v2-forged-added-keys.gguf": (repacked_v2(forge_added_keys), "ok",
                                       "unpack/1='general.architecture' is missing",
                                       "convert-amx=already repacked"),
    "ours-v2-no-header-sha256.gguf": (repacked_v2(drop_header_sha256), "ok",
                                      "unpack='amx_repack.header_sha256' is missing",
                                      "verify='amx_repack.header_sha256' is missing"),
    "ours-v2-reshaped.gguf": (repacked_v2(reshape_kept), "ok",
                              "unpack/1=has shape [2, 4], convert recorded [4, 2]"),
    "ours-v2-rows-past-last-tile.gguf": (repacked_v2(rows_past_last_tile), "ok",
                                         "unpack=not a multiple of 16"),
    "ours-v2-interleaved.gguf": (repacked_v2(layout="interleaved"), "ok",
                                 "convert-amx=already repacked by amx-repack (layout interleaved)",
                                 "convert-interleaved=already repacked"),
    "own-amx-repack-key.gguf": (with_kvs(kv_str("amx_repack.note", "mine")), "ok",
                                "convert-amx=prefix is reserved"),
    "non-canonical-padding-trailing.gguf": (non_canonical(), "ok"),
    "filler-2mib.gguf.zst": (too_much_filler_zst(), "ok",
                             "convert-amx=not a canonical GGUF file"),
    # issue 20, item 1: an XXH64 forgery of a version-2 file passes its records, and says that they
    # prove against accidental corruption only; item 2: shards of different layouts are refused
    "ours-v2-forged-xxh64.gguf": (forged_xxh64_v2(), "ok",
                                  "verify/0=only against accidental corruption",
                                  "unpack/0=not against a forger"),
    "ours-mixed-layouts-00001-of-00002.gguf": (MIXED[0], "declares layout interleaved"),
    "ours-mixed-layouts-00002-of-00002.gguf": (MIXED[1], "not the first shard"),
}


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for old in FOLDER.iterdir():
        old.unlink()
    lines = []
    for name, (data, *expect) in CASES.items():
        (FOLDER / name).write_bytes(data)
        lines.append(name + "".join(f"\t{e}" for e in expect) + "\n")
    (FOLDER / EXPECTED).write_text("".join(lines))
    print(f"wrote {len(CASES)} files to {FOLDER}")


if __name__ == "__main__":
    main()
