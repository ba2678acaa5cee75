"""Issue 11, "wrong success" and SIGBUS: unpack writes the original or nothing, the records cover
every byte of the original, pair verify compares every byte of every tensor, repacked inputs are
refused, and a file shrinking under verify/unpack is a clean error.

Every hostile file here is written with tests.ggufbuild (independent of the product's writer)
from a real conversion, with one thing changed.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import repack
from formats.ggml_types import TYPES, type_by_name
from formats.gguf_container import read_gguf
from repack import amx_kernels, interleaved_kernels, metadata
from tests.conftest import ROOT, amx_repack_cli, stderr_lines
from tests.ggufbuild import RawGGUF, RawTensor, kv_str, kv_str_array, kv_u32
from tests.synthetic import sha256, write_model

V1 = Path(__file__).parent / "data" / "layout_v1"

TENSORS = [("token_embd.weight", "q8_0", (64, 16)), ("output_norm.weight", "f32", (64,)),
           ("blk.0.attn_q.weight", "q4_0", (64, 64)), ("blk.0.ffn_up.weight", "q4_K", (256, 32)),
           ("blk.0.attn_v.weight", "q4_0", (64, 40)),     # kept by both layouts (ne1 % 16)
           ("blk.0.ffn_norm.weight", "f32", (32, 4))]


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model(tmp_path / "model.gguf", TENSORS, seed=3)


def convert(src, layout, tmp_path, name=None) -> Path:
    out = tmp_path / (name or f"{Path(src).stem}-{layout}.gguf")
    repack.convert(src, out, layout=layout, threads=2)
    return out


# ------------------------------------------------------------------------------------------
# Rewriting a GGUF file with the independent writer: every KV record as raw bytes, every tensor
# with its data, laid out canonically (alignment 32).


def load(path) -> tuple[dict[str, bytes], list[list], int]:
    with read_gguf(path) as f:
        kvs = {k: r.raw for k, r in f.kv.items()}
        tensors = [[t.name, t.shape, t.type_id, bytes(f.tensor_data(t))] for t in f.tensors]
        return kvs, tensors, f.version


def save(path, kvs: dict[str, bytes], tensors: list[list], version: int = 3) -> Path:
    raw = RawGGUF(kvs=list(kvs.values()), version=version)
    data, offset = bytearray(), 0
    for name, shape, type_id, blob in tensors:
        data += bytes(-len(data) % 32)
        raw.tensors.append(RawTensor(name, tuple(shape), type_id, len(data)))
        data += blob
    raw.data = bytes(data) + bytes(-len(data) % 32)
    Path(path).write_bytes(raw.tobytes())
    return Path(path)


def edit(src, dst, kv=None, tensors=None, version=None) -> Path:
    kvs, ts, v = load(src)
    if kv is not None:
        kvs = kv(kvs) or kvs
    if tensors is not None:
        ts = tensors(ts) or ts
    return save(dst, kvs, ts, v if version is None else version)


def one_line_error(proc, code: int, *pieces: str) -> str:
    lines = stderr_lines(proc.stderr)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("amx-repack: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for piece in pieces:
        assert piece in lines[0], (piece, lines[0])
    return lines[0]


def assert_nothing_written(folder: Path, before: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == before


def unpack_refused(bad: Path, code: int, *pieces: str) -> str:
    folder = bad.parent
    before = {p.name for p in folder.iterdir()}
    fp = sha256(bad)
    proc = amx_repack_cli("unpack", bad, folder / "back.gguf")
    line = one_line_error(proc, code, *pieces)
    assert_nothing_written(folder, before)
    assert sha256(bad) == fp
    return line


def standalone_verify_fails(bad: Path, *pieces: str) -> None:
    proc = amx_repack_cli("verify", bad)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "MISMATCH" in proc.stdout and "Traceback" not in proc.stderr
    for piece in pieces:
        assert piece in proc.stdout, (piece, proc.stdout)


# ------------------------------------------------------------------------------------------
# 1. unpack writes the original or nothing


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_unpack_refuses_a_changed_metadata_value(model, tmp_path, layout):
    rep = convert(model, layout, tmp_path)
    bad = edit(rep, tmp_path / "bad.gguf",
               kv=lambda k: k.update({"general.architecture": kv_str("general.architecture",
                                                                      "gemma")}))
    unpack_refused(bad, 1, "general.architecture")
    standalone_verify_fails(bad, "general.architecture")


def test_unpack_refuses_a_removed_or_added_metadata_key(model, tmp_path):
    rep = convert(model, "amx", tmp_path)
    removed = edit(rep, tmp_path / "removed.gguf", kv=lambda k: k.pop("general.file_type") and None)
    unpack_refused(removed, 1, "'general.file_type' is missing")
    added = edit(rep, tmp_path / "added.gguf",
                 kv=lambda k: k.update({"general.name": kv_str("general.name", "x")}))
    unpack_refused(added, 1, "'general.name' was not in the original")


def test_unpack_refuses_forged_added_keys(model, tmp_path):
    """added_keys naming an original key: unpack would drop it from the output."""
    rep = convert(model, "amx", tmp_path)
    bad = edit(rep, tmp_path / "bad.gguf", kv=lambda k: k.update(
        {metadata.KEY_ADDED_KEYS: kv_str_array(metadata.KEY_ADDED_KEYS, ["general.file_type"])}))
    unpack_refused(bad, 1, "'general.file_type' is missing")
    standalone_verify_fails(bad, "general.file_type")


def test_unpack_refuses_forged_changed_keys(model, tmp_path):
    """changed_keys + original.<key> forged: unpack would put a value back that never was."""
    rep = convert(model, "amx", tmp_path)

    def forge(k):
        k[metadata.KEY_CHANGED_KEYS] = kv_str_array(metadata.KEY_CHANGED_KEYS,
                                                    ["general.file_type"])
        k[metadata.ORIGINAL_PREFIX + "general.file_type"] = kv_u32(
            metadata.ORIGINAL_PREFIX + "general.file_type", 7)
    unpack_refused(edit(rep, tmp_path / "bad.gguf", kv=forge), 1, "'general.file_type' differs")
    # ... and a forged original value of a key that really was changed (interleaved: file_type)
    rep = convert(model, "interleaved", tmp_path)
    key = metadata.ORIGINAL_PREFIX + "general.file_type"
    bad = edit(rep, tmp_path / "bad2.gguf", kv=lambda k: k.update({key: kv_u32(key, 14)}))
    unpack_refused(bad, 1, "'general.file_type' differs")


def test_unpack_missing_records_are_bad_input(model, tmp_path):
    rep = convert(model, "interleaved", tmp_path)
    for key in (metadata.KEY_METADATA_SHA256, metadata.KEY_ORIGINAL_DIGESTS_SHA256,
                metadata.KEY_HEADER_SHA256, metadata.KEY_LAYOUT_VERSION,
                metadata.ORIGINAL_PREFIX + "general.file_type"):
        bad = edit(rep, tmp_path / "bad.gguf", kv=lambda k: k.pop(key) and None)
        line = unpack_refused(bad, 2, key)
        assert "KeyError" not in line
        proc = amx_repack_cli("verify", bad)
        one_line_error(proc, 2, key)
        bad.unlink()


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_unpack_refuses_a_rewritten_shape(model, tmp_path, layout):
    """Same byte count, another shape: the tensor bytes and their digest are unchanged."""
    rep = convert(model, layout, tmp_path)

    def reshape(ts):
        for t in ts:
            if t[0] == "blk.0.ffn_norm.weight":      # f32 32x4 -> 16x8
                t[1] = (16, 8)
    bad = edit(rep, tmp_path / "bad.gguf", tensors=reshape)
    unpack_refused(bad, 1, "blk.0.ffn_norm.weight", "[16, 8]", "[32, 4]")
    standalone_verify_fails(bad, "blk.0.ffn_norm.weight")


def test_unpack_refuses_a_changed_tensor_with_exit_1(model, tmp_path):
    rep = convert(model, "amx", tmp_path)

    def flip(ts):
        t = next(t for t in ts if t[0] == "blk.0.attn_q.weight")
        t[3] = bytes([t[3][0] ^ 1]) + t[3][1:]
    bad = edit(rep, tmp_path / "bad.gguf", tensors=flip)
    unpack_refused(bad, 1, "blk.0.attn_q.weight", "digest")


def test_v1_file_unpack_checks_its_metadata_digest(tmp_path):
    """Layout version 1 records only the sha256 of the metadata: a changed value is caught."""
    bad = edit(V1 / "interleaved.gguf", tmp_path / "bad.gguf",
               kv=lambda k: k.update({"general.architecture": kv_str("general.architecture",
                                                                      "gemma")}))
    unpack_refused(bad, 1, "metadata")
    standalone_verify_fails(bad, "metadata")


# ------------------------------------------------------------------------------------------
# Layout version 1 files are still read


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_v1_files_verify_and_unpack(tmp_path, layout):
    rep = V1 / f"{layout}.gguf"
    assert metadata.read_info(read_gguf(rep).kv).layout_version == 1
    for args in ((rep,), (V1 / "original.gguf", rep)):
        proc = amx_repack_cli("verify", *args)
        assert proc.returncode == 0 and "EQUIVALENT" in proc.stdout, proc.stdout + proc.stderr
    back = tmp_path / "back.gguf"
    proc = amx_repack_cli("unpack", rep, back, check=True)
    assert sha256(back) == sha256(V1 / "original.gguf")
    # what version 1 records do not cover is said, not claimed
    assert "note: " in proc.stderr and "layout version 1" in proc.stderr
    assert "laid out canonically" in proc.stderr


def test_v1_pair_verify_says_a_non_canonical_original_would_not_come_back(tmp_path):
    """Version 1 records no filler: against an original with trailing bytes the pair check says
    unpack would not rebuild it (it used to say EQUIVALENT)."""
    orig = tmp_path / "original.gguf"
    orig.write_bytes((V1 / "original.gguf").read_bytes() + b"trailing")
    proc = amx_repack_cli("verify", orig, V1 / "amx.gguf")
    assert proc.returncode == 1 and "unpack would not rebuild the original" in proc.stdout


def test_convert_writes_layout_version_3(model, tmp_path):
    rep = convert(model, "amx", tmp_path)
    info = metadata.read_info(read_gguf(rep).kv)
    assert info.layout_version == 3 and not info.missing_records()
    assert metadata.KEY_ORIGINAL_DIGESTS_XXH64 not in read_gguf(rep).kv
    assert info.original_shapes == [s for _, _, s in TENSORS]


# ------------------------------------------------------------------------------------------
# 2. the records cover every byte of the original


def non_canonical(path: Path, kind: str) -> Path:
    """A valid GGUF that llama.cpp and gguf-py would not have written byte for byte."""
    rng = np.random.default_rng(1)
    blobs = [("a.weight", (64, 32), type_by_name("q4_0").id, rng.bytes(18 * 2 * 32)),
             ("d.weight", (5,), 0, rng.bytes(20)),     # 20 bytes: padding follows
             ("b.weight", (256, 16), type_by_name("q4_K").id, rng.bytes(144 * 16)),
             ("c.weight", (8,), 0, rng.bytes(32))]
    gap = 96 if kind == "gap" else 0
    order = [3, 0, 1, 2] if kind == "order" else [0, 1, 2, 3]
    offsets, data = {}, bytearray()
    for i in order:
        data += (b"\x5a" if kind == "padding" else b"\0") * (-len(data) % 32) + bytes(gap)
        offsets[i] = len(data)
        data += blobs[i][3]
    if kind != "no-tail-padding":
        data += b"\0" * (-len(data) % 32)
    data += {"trailing": b"appended by something", "trailing-zeros": bytes(100)}.get(kind, b"")
    name = ""
    while True:   # (header-padding: a header whose length is not a multiple of the alignment)
        raw = RawGGUF(kvs=[kv_str("general.architecture", "llama"), kv_u32("general.alignment", 32),
                           kv_str("general.name", "n" + name)],
                      version=2 if kind == "version2" else 3)
        raw.tensors = [RawTensor(n, shape, ty, offsets[i])
                       for i, (n, shape, ty, _) in enumerate(blobs)]
        plain = RawGGUF(kvs=raw.kvs, tensors=raw.tensors, version=raw.version,
                        alignment=1).header()
        if len(plain) % 32:
            break
        name += "n"
    header = raw.header()
    if kind == "header-padding":
        header = plain + b"\x7f" * (len(header) - len(plain))
    path.write_bytes(header + bytes(data))
    return path


NON_CANONICAL = ["padding", "gap", "order", "trailing", "trailing-zeros", "no-tail-padding",
                 "header-padding", "version2"]


@pytest.mark.parametrize("kind", NON_CANONICAL)
@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_non_canonical_inputs_round_trip_exactly(tmp_path, kind, layout):
    src = non_canonical(tmp_path / "src.gguf", kind)
    rep = tmp_path / "rep.gguf"
    proc = amx_repack_cli("convert", "--layout", layout, src, rep, check=True)
    if kind in ("padding", "trailing", "header-padding"):
        assert "is not a canonical GGUF file" in proc.stderr
        assert "unpack restores them" in proc.stderr
    else:
        assert "canonical" not in proc.stderr
    assert "repacked 0 of" not in proc.stdout
    for args in ((rep,), (src, rep)):
        proc = amx_repack_cli("verify", *args)
        assert proc.returncode == 0 and "EQUIVALENT" in proc.stdout, proc.stdout + proc.stderr
    back = tmp_path / "back.gguf"
    amx_repack_cli("unpack", rep, back, check=True)
    assert back.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("kind", NON_CANONICAL)
def test_layout_none_is_byte_identical_for_any_input(tmp_path, kind):
    src = non_canonical(tmp_path / "src.gguf", kind)
    out = tmp_path / "copy.gguf"
    amx_repack_cli("convert", "--layout", "none", src, out, check=True)
    assert out.read_bytes() == src.read_bytes()


def test_too_much_non_zero_filler_is_refused_not_dropped(tmp_path):
    src = tmp_path / "src.gguf"
    src.write_bytes(non_canonical(tmp_path / "base.gguf", "trailing").read_bytes()
                    + np.random.default_rng(0).bytes(2 << 20))
    before = {p.name for p in tmp_path.iterdir()}
    proc = amx_repack_cli("convert", src, tmp_path / "out.gguf")
    one_line_error(proc, 2, "not a canonical GGUF file", "after the last tensor's data",
                   "--layout none")
    assert_nothing_written(tmp_path, before)
    # the dry run refuses it the same way; the API's message names no flag
    proc = amx_repack_cli("convert", "--dry-run", src, tmp_path / "out.gguf")
    one_line_error(proc, 2, "not a canonical GGUF file", "--layout none")
    with pytest.raises(repack.TooMuchFiller) as e:
        repack.convert(src, tmp_path / "out.gguf")
    assert "--" not in str(e.value)
    assert_nothing_written(tmp_path, before)
    amx_repack_cli("convert", "--layout", "none", src, tmp_path / "copy.gguf", check=True)
    assert (tmp_path / "copy.gguf").read_bytes() == src.read_bytes()


def test_pair_verify_sees_bytes_outside_the_tensors(tmp_path):
    """The original differs from what the repacked file records only in filler or version."""
    src = non_canonical(tmp_path / "src.gguf", "trailing")
    rep = convert(src, "amx", tmp_path)
    other = tmp_path / "other.gguf"
    data = bytearray(src.read_bytes())
    data[-3] ^= 0xFF
    other.write_bytes(bytes(data))
    proc = amx_repack_cli("verify", other, rep)
    assert proc.returncode == 1 and f"offset {len(data) - 3}" in proc.stdout, proc.stdout
    other.write_bytes(bytes(src.read_bytes()[:-1]))
    proc = amx_repack_cli("verify", other, rep)
    assert proc.returncode == 1 and "file size" in proc.stdout, proc.stdout


def test_forged_version_and_filler_are_caught(tmp_path):
    src = non_canonical(tmp_path / "src.gguf", "trailing")
    rep = convert(src, "interleaved", tmp_path)
    # the GGUF version of the repacked file (3) is the one unpack writes: 2 is not the original's
    bad = tmp_path / "bad.gguf"
    data = bytearray(rep.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    bad.write_bytes(bytes(data))
    unpack_refused(bad, 1, "header")
    standalone_verify_fails(bad, "header")
    bad.unlink()
    # the recorded filler bytes: "appended by something" -> "appended by somethinG"
    data = bytearray(rep.read_bytes())
    at = data.index(b"appended by something") + len("appended by somethin")
    data[at] ^= 0x20
    bad.write_bytes(bytes(data))
    unpack_refused(bad, 1, "filler")
    standalone_verify_fails(bad, "filler")


# ------------------------------------------------------------------------------------------
# 3. pair verify compares every byte of every tensor


def _packed_with_tail(layout: str, src_type: str, rows: int, tail_rows: int, rng):
    """An original tensor of rows + tail_rows rows, and a 'repacked' one: the first rows packed
    properly, then (the packed type's size of) the tail rows' original bytes, one changed."""
    ty = type_by_name(src_type)
    ne0 = 256 if ty.block_size == 256 else 64
    orig = rng.bytes(ty.row_bytes(ne0) * (rows + tail_rows))
    head = np.frombuffer(orig[:ty.row_bytes(ne0) * rows], dtype=np.uint8)
    if layout == "amx":
        target = type_by_name("amx_" + ty.name)
        packed = np.empty(amx_kernels.packed_nbytes(ty.id, rows, ne0), dtype=np.uint8)
        amx_kernels.pack(ty.id, head, packed, rows, ne0)
    else:
        target = TYPES[interleaved_kernels.target_type_id(ty.id)]
        packed = np.empty(len(head), dtype=np.uint8)
        interleaved_kernels.interleave(ty.id, head, packed, ne0, rows)
    assert len(packed) == rows * target.row_bytes(ne0)
    tail = bytearray(orig[len(head):].ljust(tail_rows * target.row_bytes(ne0), b"\0"))
    tail[5] ^= 0x10
    return ne0, orig, target.id, packed.tobytes() + bytes(tail)


@pytest.mark.parametrize("layout,src_type,unit", [("amx", "q8_0", 16), ("amx", "q4_K", 16),
                                                  ("interleaved", "q4_0", 8),
                                                  ("interleaved", "q4_K", 4)])
def test_pair_verify_sees_rows_past_the_last_whole_unit(tmp_path, layout, src_type, unit):
    rng = np.random.default_rng(7)
    ne0, orig, target, fake = _packed_with_tail(layout, src_type, 2 * unit, unit // 2, rng)
    shape = (ne0, 2 * unit + unit // 2)
    kvs = {"general.architecture": kv_str("general.architecture", "llama")}
    a = save(tmp_path / "orig.gguf", kvs, [["w", shape, type_by_name(src_type).id, orig]])
    b = save(tmp_path / "fake.gguf", kvs, [["w", shape, target, fake]])
    proc = amx_repack_cli("verify", "--json", a, b)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "EQUIVALENT" not in proc.stdout and f"not a multiple of {unit}" in proc.stdout


def test_unpack_refuses_a_packed_tensor_with_rows_past_the_last_tile(model, tmp_path):
    rep = convert(model, "amx", tmp_path)

    def grow(ts):
        t = next(t for t in ts if t[0] == "blk.0.attn_q.weight")      # amx_q4_0, 64 rows
        t[1] = (64, 72)
        t[3] += bytes(len(t[3]) // 8)
    bad = edit(rep, tmp_path / "bad.gguf", tensors=grow)
    unpack_refused(bad, 2, "blk.0.attn_q.weight", "not a multiple of 16")


# ------------------------------------------------------------------------------------------
# 4. converting a repacked file, or one that carries amx_repack.* keys


@pytest.mark.parametrize("first", ["amx", "interleaved"])
@pytest.mark.parametrize("second", ["amx", "interleaved"])
def test_converting_a_repacked_file_is_refused(model, tmp_path, first, second):
    rep = convert(model, first, tmp_path)
    before = {p.name for p in tmp_path.iterdir()}
    proc = amx_repack_cli("convert", "--layout", second, rep, tmp_path / "again.gguf")
    one_line_error(proc, 2, "already repacked by amx-repack", f"layout {first}",
                   "convert its original")
    assert_nothing_written(tmp_path, before)
    # --layout none adds no record: a plain copy of it is fine
    amx_repack_cli("convert", "--layout", "none", rep, tmp_path / "copy.gguf", check=True)
    assert (tmp_path / "copy.gguf").read_bytes() == rep.read_bytes()


def test_an_input_with_its_own_amx_repack_keys_is_refused(model, tmp_path):
    bad = edit(model, tmp_path / "bad.gguf", kv=lambda k: k.update(
        {"amx_repack.note": kv_str("amx_repack.note", "mine")}))
    before = {p.name for p in tmp_path.iterdir()}
    for layout in ("amx", "interleaved"):
        proc = amx_repack_cli("convert", "--layout", layout, bad, tmp_path / "out.gguf")
        one_line_error(proc, 2, "'amx_repack.note'", "reserved")
    assert_nothing_written(tmp_path, before)


# ------------------------------------------------------------------------------------------
# 6. the input shrinks while verify / unpack read it

_SHRINK = """
import os, sys
from repack import shards
real = shards.open_model
def open_and_shrink(path, *a, **kw):
    model = real(path, *a, **kw)
    if os.path.abspath(path) == os.path.abspath(sys.argv[1]):
        os.truncate(path, model.files[0].data_start + 64)
    return model
shards.open_model = open_and_shrink
from repack.cli import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize("command", ["verify", "verify-pair", "unpack"])
def test_input_shrinking_while_read_is_a_clean_error(model, tmp_path, command):
    rep = convert(model, "amx", tmp_path)
    if command == "verify":
        args = ["verify", str(rep)]
    elif command == "verify-pair":
        args = ["verify", str(model), str(rep)]
    else:
        args = ["unpack", str(rep), str(tmp_path / "back.gguf")]
    before = {p.name for p in tmp_path.iterdir()}
    proc = subprocess.run([sys.executable, "-c", _SHRINK, str(rep), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)   # not -7 (SIGBUS)
    one_line_error(proc, 2, "unexpected end of file", "shrink")
    assert_nothing_written(tmp_path, before)
