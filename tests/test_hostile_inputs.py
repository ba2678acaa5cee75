"""Hostile input files: no hang, no exhaustion, no internal error (issue 11, items 7, 8 and 12).

* A FIFO, a socket or a device given as any input file of any command (or as one shard of a split
  model) is refused at once, exit 2, instead of hanging in open() for ever (item 8).
* Header memory stays proportional to the header, and counts beyond what any model has are
  refused up front: a 64 MiB header of 1.7 M tensor infos took 3.4 GB to parse, 6.4 GB to convert
  (item 7).
* Shapes the layouts cannot hold (a quantized tensor with ne0 == 0, an odd ne0 for BF16 or a
  hostile BF16_R16 tensor) and a non-integer ``general.file_type`` end as one line and exit 2, or
  the tensor is simply kept; never exit 3 (item 12).

Every refusal is checked the way a user sees it: the real command line in a child process, one
``amx-repack: error:`` line, no traceback, nothing left beside the output, the input unchanged.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import repack
from formats.gguf_container import MAX_KV_RECORDS, MAX_TENSORS, parse_header, read_gguf
from formats.layouts import FAMILY_TABLES, SOFT_CODES
from formats.gguf_container import TensorInfo
from tests.conftest import stderr_lines
from tests.ggufbuild import F32, STR, U8, U32, RawGGUF, RawTensor, gstr, kv_str
from tests.rss import run_measured
from tests.synthetic import fingerprint, write_model

STR_TYPE, ARR = 8, 9


def run_cli(*args, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repack", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kw)


def assert_refused(rc: int, stderr: str, *needles: str) -> str:
    assert rc == 2, (rc, stderr)
    assert "Traceback" not in stderr
    lines = stderr_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("amx-repack: error: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------
# Item 8: only regular files (or links to one) are read


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model(tmp_path / "model.gguf", [("blk.0.ffn_up.weight", "q4_0", (64, 32))], seed=3)


@pytest.fixture
def packed(model, tmp_path) -> Path:
    out = tmp_path / "packed.gguf"
    repack.convert(model, out, layout="amx")
    return out


def special_file(folder: Path, kind: str) -> tuple[Path, str]:
    """A non-regular file of the given kind, and the word the refusal must use for it."""
    if kind == "fifo":
        path = folder / "pipe.gguf"
        os.mkfifo(path)
        return path, "FIFO"
    if kind == "fifo-zst":
        path = folder / "pipe.gguf.zst"
        os.mkfifo(path)
        return path, "FIFO"
    if kind == "link-to-fifo":
        os.mkfifo(folder / "target-pipe")
        path = folder / "link.gguf"
        path.symlink_to(folder / "target-pipe")
        return path, "FIFO"
    if kind == "socket":
        path = folder / "sock.gguf"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()                   # the socket file stays
        return path, "socket"
    if kind == "char-device":
        return Path("/dev/null"), "character device"
    raise ValueError(kind)


SPECIAL_KINDS = ["fifo", "fifo-zst", "link-to-fifo", "socket", "char-device"]


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_non_regular_input_is_refused_by_every_command(tmp_path, model, packed, kind):
    folder = tmp_path / "special"
    folder.mkdir()
    path, word = special_file(folder, kind)
    out = tmp_path / "out"
    out.mkdir()
    before = [fingerprint(model), fingerprint(packed)]
    for args in (["inspect", path], ["convert", path, out / "o.gguf"],
                 ["convert", "--layout", "interleaved", path, out / "o.gguf"],
                 ["verify", path], ["verify", path, packed], ["verify", model, path],
                 ["unpack", path, out / "o.gguf"]):
        start = time.monotonic()
        proc = run_cli(*args, timeout=30)     # a hang in open() would fail here
        assert time.monotonic() - start < 20
        assert_refused(proc.returncode, proc.stderr, str(path), word, "not a regular file")
        assert leftovers(out) == []
    assert [fingerprint(model), fingerprint(packed)] == before


def test_fifo_as_one_shard_is_refused_naming_it(tmp_path):
    from tests.test_split_moe import write_moe_model
    shards = write_moe_model(tmp_path / "moe.gguf", split_max_tensors=4)
    os.unlink(shards[1])
    os.mkfifo(shards[1])
    for args in (["inspect", shards[0]], ["convert", shards[0], tmp_path / "o.gguf"],
                 ["verify", shards[0]], ["unpack", shards[0], tmp_path / "o.gguf"]):
        proc = run_cli(*args, timeout=30)
        assert_refused(proc.returncode, proc.stderr, str(shards[1]), "FIFO")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("o", ".o"))]


def test_links_to_regular_files_are_read(tmp_path, model):
    link = tmp_path / "link.gguf"
    link.symlink_to(model)
    assert run_cli("inspect", link).returncode == 0
    proc = run_cli("convert", link, tmp_path / "o.gguf")
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------
# Item 7: header memory


def many_tensors_header(n: int) -> bytes:
    """A GGUF header of n zero-size f32 tensors (40 bytes of tensor info each), built with numpy
    (1.7 M infos in a blink): the smallest tensor infos a file can hold."""
    head = (b"GGUF" + struct.pack("<IQQ", 3, n, 1) + kv_str("general.architecture", "llama"))
    info = np.zeros(n, dtype=np.dtype([("len", "<u8"), ("name", "S8"), ("n_dims", "<u4"),
                                       ("ne0", "<u8"), ("type", "<u4"), ("offset", "<u8")]))
    assert info.dtype.itemsize == 40
    info["len"] = 8
    info["name"] = np.char.add(b"t", np.char.zfill(np.arange(n).astype("S7"), 7))
    info["n_dims"] = 1
    data = head + info.tobytes()
    return data + b"\0" * (-len(data) % 32)


def many_records_header(n: int) -> bytes:
    recs = b"".join(gstr(f"k{i:07d}") + struct.pack("<IB", U8, i & 0xFF) for i in range(n))
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, n) + recs
    return data + b"\0" * (-len(data) % 32)


def test_absurd_tensor_count_is_refused_up_front_in_bounded_memory(tmp_path):
    """The issue's file: a 64 MiB header of 1.7 M tensor infos (3.4 GB to parse, MemoryError in
    convert) is refused before any tensor info is decoded."""
    path = tmp_path / "many.gguf"
    path.write_bytes(many_tensors_header(1_700_000))
    assert path.stat().st_size > 64 << 20
    for args in (["inspect", path], ["convert", path, tmp_path / "o.gguf"], ["verify", path],
                 ["unpack", path, tmp_path / "o.gguf"]):
        proc, rss = run_measured(*args, timeout=60)
        assert_refused(proc.returncode, proc.stderr, "absurd tensor count 1,700,000",
                       f"{MAX_TENSORS:,}")
        assert rss < 150 << 20, rss
    assert leftovers(tmp_path) == ["many.gguf"]


def test_at_the_tensor_limit_convert_and_inspect_stay_bounded(tmp_path):
    path = tmp_path / "limit.gguf"
    path.write_bytes(many_tensors_header(MAX_TENSORS))
    proc, rss = run_measured("convert", "-q", path, tmp_path / "o.gguf")
    assert proc.returncode == 0, proc.stderr
    assert rss < 450 << 20, rss           # measured ~285 MiB
    proc, rss = run_measured("inspect", tmp_path / "o.gguf")
    assert proc.returncode == 0, proc.stderr
    assert rss < 300 << 20, rss           # measured ~170 MiB
    img = many_tensors_header(MAX_TENSORS + 1)
    with pytest.raises(ValueError, match="absurd tensor count"):
        parse_header(img, len(img))


def test_parsing_memory_is_proportional_to_the_header():
    img = many_tensors_header(8192)
    tracemalloc.start()
    try:
        f = parse_header(img, len(img))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(f.tensors) == 8192
    assert peak < 10 * len(img), (peak, len(img))      # ~7x: a few small objects per tensor


def test_metadata_count_limit_leaves_room_for_our_own_records(tmp_path):
    """An input at the record limit converts, and its output (our dozen records added) reads back,
    verifies and unpacks to the input; one record more is refused up front."""
    path = tmp_path / "limit.gguf"
    path.write_bytes(many_records_header(MAX_KV_RECORDS))
    out = tmp_path / "o.gguf"
    repack.convert(path, out, layout="interleaved")
    with read_gguf(out) as f:
        assert len(f.kv) > MAX_KV_RECORDS
    assert repack.verify(None, out).ok
    repack.unpack(out, tmp_path / "back.gguf")
    assert (tmp_path / "back.gguf").read_bytes() == path.read_bytes()
    over = tmp_path / "over.gguf"
    over.write_bytes(many_records_header(MAX_KV_RECORDS + 1))
    proc = run_cli("inspect", over)
    assert_refused(proc.returncode, proc.stderr, "absurd metadata count 65,537")


# ------------------------------------------------------------------------------------------
# Item 12: shapes the layouts cannot hold, a non-integer general.file_type


def write_raw(path: Path, tensors: list[RawTensor], data: bytes, kvs: tuple[bytes, ...] = ()) -> Path:
    raw = RawGGUF(kvs=[kv_str("general.architecture", "llama"), *kvs], tensors=tensors, data=data)
    path.write_bytes(raw.tobytes())
    return path


def patch_ne0(path: Path, name: str, ne0: int) -> None:
    """Rewrite ne0 of tensor ``name`` in the file's tensor info (a hostile edit of a packed file)."""
    img = bytearray(path.read_bytes())
    info = gstr(name)
    at = img.rindex(info) + len(info) + 4   # the last copy (our records list names too); n_dims, ne0
    img[at:at + 8] = struct.pack("<Q", ne0)
    path.write_bytes(bytes(img))


def test_decisions_never_pack_an_ne0_the_layout_cannot_hold():
    for type_id, shape in [(2, (0, 32)), (12, (0, 16)), (30, (33, 16)), (30, (0, 16))]:
        t = TensorInfo("blk.0.ffn_up.weight", shape, type_id, 0, 0)
        amx, interleaved = FAMILY_TABLES["amx"], FAMILY_TABLES["interleaved"]
        for d in (amx.decide(t, {"shape_n", "experts"}), interleaved.decide(t)):
            assert not d.packs and d.target is None, (shape, d)
        if type_id != 30:
            assert amx.decide(t).code == "shape_k"
        assert interleaved.decide(t).code == "shape_k"


BAD_SOURCES = {
    # a quantized tensor with no columns: ZeroDivisionError in convert before
    "q4_0-ne0-zero": ([RawTensor("blk.0.ffn_up.weight", (0, 32), 2, 0)], b"", ()),
    "q8_0-ne0-zero-3d": ([RawTensor("blk.0.ffn_up_exps.weight", (0, 16, 4), 8, 0)], b"", ()),
    # BF16 rows of an odd length: interleaved packs column pairs (ValueError once forced)
    "bf16-odd-ne0": ([RawTensor("blk.0.ffn_up.weight", (33, 16), 30, 0)], bytes(33 * 16 * 2), ()),
}

FILE_TYPES = {   # general.file_type of another type than an integer: ValueError (NaN) before
    "float": struct.pack("<If", F32, 2.5),
    "nan": struct.pack("<If", F32, float("nan")),
    "string": struct.pack("<I", STR) + gstr("15"),
    "array": struct.pack("<IIQI", ARR, U32, 1, 15),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_shapes_no_layout_holds_are_kept(tmp_path, case):
    tensors, data, kvs = BAD_SOURCES[case]
    src = write_raw(tmp_path / "in.gguf", tensors, data, kvs)
    before = fingerprint(src)
    for layout in ("amx", "interleaved"):
        every_override = [a for code in SOFT_CODES[layout] for a in ("--override", code)]
        for extra in ([], ["--include", "."], ["--include", "."] + every_override):
            out = tmp_path / f"out-{layout}.gguf"
            proc = run_cli("convert", "-q", "--force", "--layout", layout, *extra, src, out)
            assert proc.returncode == 0, proc.stderr
            assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
            with read_gguf(out) as f:
                assert [t.type_id for t in f.tensors] == [t.type_id for t in tensors]
            assert repack.verify(src, out).ok
        proc = run_cli("inspect", "--json", src)
        assert proc.returncode == 0 and '"shape_k"' in proc.stdout
    assert fingerprint(src) == before


@pytest.mark.parametrize("kind", sorted(FILE_TYPES))
def test_non_integer_file_type_is_one_line(tmp_path, kind):
    src = write_raw(tmp_path / "in.gguf", [RawTensor("blk.0.ffn_up.weight", (32, 16), 2, 0)],
                    bytes(18 * 16), (gstr("general.file_type") + FILE_TYPES[kind],))
    before = fingerprint(src)
    out = tmp_path / "out.gguf"
    proc = run_cli("convert", "--layout", "interleaved", src, out)
    assert_refused(proc.returncode, proc.stderr, "general.file_type", "expected an integer")
    assert leftovers(tmp_path) == ["in.gguf"]
    # the amx layout leaves general.file_type alone: the file converts as it is
    proc = run_cli("convert", "-q", "--layout", "amx", src, out)
    assert proc.returncode == 0, proc.stderr
    assert fingerprint(src) == before


def test_one_byte_file_type_is_relabelled_as_a_u32(tmp_path):
    """ik's relabelled ids are above 255: an i8/u8 general.file_type became a struct.error."""
    for vtype, fmt in ((0, "<B"), (1, "<b")):
        src = write_raw(tmp_path / "in.gguf", [RawTensor("blk.0.ffn_up.weight", (32, 16), 2, 0)],
                        bytes(18 * 16), (gstr("general.file_type") + struct.pack("<I" + fmt[1], vtype, 15),))
        out = tmp_path / "out.gguf"
        repack.convert(src, out, layout="interleaved", force=True)
        with read_gguf(out) as f:
            assert f.get("general.file_type") == 214
        repack.unpack(out, tmp_path / "back.gguf", force=True)
        assert (tmp_path / "back.gguf").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("case", ["amx-ne0-zero", "interleaved-ne0-zero", "bf16_r16-odd-ne0"])
def test_hostile_packed_shapes_are_one_line(tmp_path, case):
    """A repacked file whose packed tensor claims an ne0 its layout cannot have (edited after
    conversion): verify and unpack refuse it in one line (ZeroDivisionError / ValueError before)."""
    if case == "bf16_r16-odd-ne0":
        src = write_raw(tmp_path / "in.gguf", [RawTensor("blk.0.ffn_up.weight", (34, 16), 30, 0)],
                        bytes(34 * 16 * 2))
        layout, extra, ne0 = "interleaved", dict(overrides=["bf16"]), 33
    else:
        src = write_model(tmp_path / "in.gguf", [("blk.0.ffn_up.weight", "q4_0", (64, 32))], seed=5)
        layout, extra, ne0 = case.split("-")[0], {}, 0
    packed = tmp_path / "packed.gguf"
    report = repack.convert(src, packed, layout=layout, **extra)
    assert len(report.repacked) == 1
    patch_ne0(packed, "blk.0.ffn_up.weight", ne0)
    out = tmp_path / "out"
    out.mkdir()
    for args in (["verify", packed], ["verify", src, packed], ["unpack", packed, out / "o.gguf"]):
        proc = run_cli(*args)
        assert proc.returncode in (1, 2), (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
        if proc.returncode == 2:     # (what names the problem first depends on the records)
            assert_refused(proc.returncode, proc.stderr)
    assert leftovers(out) == []
    assert run_cli("inspect", packed).returncode == 0


def test_no_packed_tensor_reaches_a_kernel_with_an_ne0_its_layout_cannot_have():
    """The last line of defence under verify and unpack: cutting a packed tensor into work units
    refuses such a shape (InputError, exit 2) before any kernel is called."""
    from repack.errors import InputError
    from repack.families import FAMILIES
    cases = [("amx", 2, 1024 + 2, (0, 32)), ("interleaved", 2, 202, (0, 32)),
             ("interleaved", 30, 230, (33, 16)), ("amx", 12, 1024 + 12, (128, 16))]
    for family, source, packed_type, shape in cases:
        t = TensorInfo("w", shape, packed_type, 0, 0)
        with pytest.raises(InputError, match=f"tensor 'w' .*ne0 = {shape[0]} is not a positive"):
            list(FAMILIES[family].chunks(packed_type, t, 1 << 20))
    ok = TensorInfo("w", (34, 16), 230, 0, 34 * 16 * 2)
    assert list(FAMILIES["interleaved"].chunks(230, ok, 1 << 20)) == [((0, 1088), (0, 1088), 16)]
