"""The GGUF container: our reader against gguf-py's, the byte-exact no-op copy, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from formats.ggml_types import TYPES
from formats.gguf_container import GGUFFormatError, parse_header, read_gguf
from tests.conftest import amx_repack_cli, stderr_lines
from tests.ggufbuild import RawTensor, gstr, kv_str, kv_u32, valid_small


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------
# Real file


@pytest.fixture(scope="module")
def gguf_py_reading(gemma_path):
    """gguf-py's own (slow) reader: the independent oracle."""
    from gguf import GGUFReader
    return GGUFReader(gemma_path)


def test_gemma_tensors_match_gguf_py(gemma_path, gguf_py_reading):
    ours = read_gguf(gemma_path)
    theirs = gguf_py_reading
    assert len(ours.tensors) == len(theirs.tensors) == 236
    assert ours.data_start == theirs.data_offset
    for a, b in zip(ours.tensors, theirs.tensors):
        assert a.name == b.name
        assert a.type_id == int(b.tensor_type)
        assert a.shape == tuple(int(x) for x in b.shape)
        assert a.nbytes == int(b.n_bytes)
        assert ours.data_start + a.offset == int(b.data_offset)
        # the bytes we point at are the bytes gguf-py points at
        assert bytes(ours.tensor_data(a)[:64]) == bytes(np.asarray(b.data).view(np.uint8).ravel()[:64])
    ours.close()


def test_gemma_metadata_matches_gguf_py(gemma_path, gguf_py_reading):
    ours = read_gguf(gemma_path)
    fields = gguf_py_reading.fields
    assert list(ours.kv) == [k for k in fields if not k.startswith("GGUF.")]
    for key, rec in ours.kv.items():
        f = fields[key]
        if rec.value_type == 9:          # arrays: count and a few items
            assert rec.array_count == len(f.data)
            if key == "tokenizer.ggml.tokens":
                assert rec.value[:5] == [f.contents(i) for i in range(5)]
        else:
            assert rec.value == f.contents(), key
        # raw record bytes are exactly the file's bytes for that field
        start = int(f.offset)
        assert bytes(ours.buffer[start:start + len(rec.raw)]) == rec.raw
    ours.close()


def test_inspect_json_matches_gguf_py(gemma_path, gguf_py_reading):
    proc = amx_repack_cli("inspect", gemma_path, "--json", check=True)
    report = json.loads(proc.stdout)
    rows = report["tensors"]
    assert [r["name"] for r in rows] == [t.name for t in gguf_py_reading.tensors]
    for r, t in zip(rows, gguf_py_reading.tensors):
        assert r["type"] == TYPES[int(t.tensor_type)].name
        assert r["shape"] == [int(x) for x in t.shape]
        assert r["bytes"] == int(t.n_bytes)
        assert r["offset"] + report["data_start"] == int(t.data_offset)
    by_type = report["bytes_by_type"]
    assert sum(v["bytes"] for v in by_type.values()) == sum(int(t.n_bytes) for t in gguf_py_reading.tensors)


def test_noop_copy_is_byte_identical(gemma_path, tmp_path):
    out = tmp_path / "copy.gguf"
    amx_repack_cli("convert", "--layout", "none", gemma_path, out, check=True)
    assert sha256(out) == sha256(gemma_path)


def test_inspect_text_names_layout_decisions(gemma_path):
    out = amx_repack_cli("inspect", gemma_path, check=True).stdout
    assert "token_embd.weight" in out and "keep: embedding, read by get_rows" in out
    assert "amx_q4_K" in out and "q4_k_r4" in out


# ------------------------------------------------------------------------------------------
# Reader details


def test_reader_accepts_every_known_type_id():
    for type_id, t in TYPES.items():
        raw = valid_small()
        raw.tensors = [RawTensor("w", (t.block_size * 2, 16), type_id, 0)]
        raw.data = bytes(t.tensor_bytes((t.block_size * 2, 16)))
        f = parse_header(raw.tobytes(), len(raw.tobytes()))
        assert f.tensors[0].nbytes == t.row_bytes(t.block_size * 2) * 16


def test_reader_version_2_and_tail_padding():
    raw = valid_small()
    raw.version = 2
    img = raw.tobytes() + bytes(32 - 576 % 32 if 576 % 32 else 0)
    f = parse_header(img, len(img))
    assert f.version == 2 and [t.name for t in f.tensors] == ["blk.0.ffn_up.weight", "output_norm.weight"]


# ------------------------------------------------------------------------------------------
# Bad input: one clear line, exit status 2, no output file, input untouched


def _forge(kind: str) -> bytes:
    raw = valid_small()
    if kind == "truncated-header":
        return raw.tobytes()[:60]
    if kind == "truncated-data":
        return raw.tobytes()[:-20]
    if kind == "wrong-magic":
        raw.magic = b"GGML"
    elif kind == "version-1":
        raw.version = 1
    elif kind == "version-99":
        raw.version = 99
    elif kind == "big-endian":
        raw.big_endian_version = True
    elif kind == "absurd-tensor-count":
        raw.n_tensors = 1 << 60
    elif kind == "absurd-kv-count":
        raw.n_kv = 1 << 60
    elif kind == "absurd-string":
        raw.kvs[0] = gstr("general.architecture") + struct.pack("<I", 8) + gstr(b"x", length=1 << 63)
    elif kind == "string-past-end":
        raw.kvs[0] = gstr("general.architecture") + struct.pack("<I", 8) + gstr(b"abc", length=5000)
    elif kind == "data-past-end":
        raw.tensors[1].offset = 1 << 20
    elif kind == "overlap":
        raw.tensors[1].offset = 512
    elif kind == "misaligned":
        raw.tensors[1].offset = 545
    elif kind == "duplicate-tensor":
        raw.tensors[1].name = raw.tensors[0].name
    elif kind == "duplicate-key":
        raw.kvs.append(kv_str("general.architecture", "again"))
    elif kind == "unknown-type":
        raw.tensors[1].type_id = 77
    elif kind == "bad-alignment":
        raw.kvs[1] = kv_u32("general.alignment", 24)
    elif kind == "too-many-dims":
        raw.tensors[1].shape = (8, 1, 1, 1, 1)
    elif kind == "ragged-row":
        raw.tensors[0].shape = (40, 16)
    elif kind == "bad-value-type":
        raw.kvs[0] = gstr("general.architecture") + struct.pack("<I", 42)
    else:
        raise AssertionError(kind)
    return raw.tobytes()


BAD_INPUTS = {
    "truncated-header": "truncated file",
    "truncated-data": "beyond the end of the file",
    "wrong-magic": "not a GGUF file",
    "version-1": "unsupported GGUF version 1",
    "version-99": "unsupported GGUF version 99",
    "big-endian": "big-endian",
    "absurd-tensor-count": "absurd tensor count",
    "absurd-kv-count": "absurd metadata count",
    "absurd-string": "past the end",
    "string-past-end": "past the end",
    "data-past-end": "tensor 'output_norm.weight'",
    "overlap": "overlaps",
    "misaligned": "not aligned",
    "duplicate-tensor": "duplicate tensor name 'blk.0.ffn_up.weight'",
    "duplicate-key": "duplicate metadata key 'general.architecture'",
    "unknown-type": "unknown type id 77",
    "bad-alignment": "not a power of two",
    "too-many-dims": "5 dimensions",
    "ragged-row": "not a multiple",
    "bad-value-type": "unknown value type 42",
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_reader_rejects(kind):
    img = _forge(kind)
    with pytest.raises(GGUFFormatError, match=BAD_INPUTS[kind].replace("(", r"\(")):
        parse_header(img, len(img))


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
@pytest.mark.parametrize("command", ["inspect", "convert-amx", "convert-none"])
def test_cli_rejects_bad_input_cleanly(kind, command, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_forge(kind))
    before = (sha256(bad), os.stat(bad).st_mtime_ns)
    out = tmp_path / "out.gguf"
    if command == "inspect":
        proc = amx_repack_cli("inspect", bad)
    else:
        proc = amx_repack_cli("convert", "--layout", command.split("-")[1], bad, out)
    assert proc.returncode == 2, proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("amx-repack: error: ") and BAD_INPUTS[kind] in lines[0]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]   # no output, no temp file
    assert (sha256(bad), os.stat(bad).st_mtime_ns) == before


def test_missing_input_and_existing_output(tmp_path):
    proc = amx_repack_cli("convert", tmp_path / "nope.gguf", tmp_path / "o.gguf")
    assert proc.returncode == 2 and "no such file" in proc.stderr
    good = tmp_path / "good.gguf"
    good.write_bytes(valid_small().tobytes())
    existing = tmp_path / "exists.gguf"
    existing.write_bytes(b"keep me")
    proc = amx_repack_cli("convert", good, existing)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert existing.read_bytes() == b"keep me"
    proc = amx_repack_cli("convert", good, good)
    assert proc.returncode == 2 and "is the input file" in proc.stderr
    amx_repack_cli("convert", "--force", good, existing, check=True)
    assert read_gguf(existing).tensors[0].type_id == 8          # 16 rows: kept by default
    amx_repack_cli("convert", "--force", "--allow-amx-n16", good, existing, check=True)
    assert read_gguf(existing).tensors[0].type_id == 1024 + 8


def test_small_file_roundtrip_through_reader(tmp_path):
    good = tmp_path / "good.gguf"
    good.write_bytes(valid_small().tobytes())
    out = tmp_path / "copy.gguf"
    amx_repack_cli("convert", "--layout", "none", good, out, check=True)
    assert out.read_bytes() == good.read_bytes()
