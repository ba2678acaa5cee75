"""convert --verify, and the fused native chunk checks verify and convert --verify share.

The fused check (native/verify.c) must find exactly what verify's checks found when they ran
step by step in Python: the first invalid row of the packed data, else the first byte where the
inverse kernel's output differs from the original, else the first packed byte the packer run
again does not write, else (when asked) the first element whose float values differ. The
reference here is that step-by-step composition of the separate, separately tested kernels
(validity check, unpack, pack, both float decoders). The layout check must find every planted
corruption the float decoders find, for every packed type of every family (the reason verify can
leave them out by default). convert --verify must catch a kernel that writes one wrong byte, with
exit 1 and no output.
"""

from __future__ import annotations

import numpy as np
import pytest

import repack
from formats.ggml_types import TYPES, type_by_name
from repack import block_decoders, chunk_checks
from repack.errors import VerificationFailed
from formats.gguf_container import read_gguf
from repack.families import FAMILIES, family_of_packed
from tests.conftest import amx_repack_cli
from tests.synthetic import sha256, small_model_tensors, write_model

AMX_TYPES = ["q4_0", "q4_1", "q8_0", "q4_K", "q5_K", "q6_K", "iq4_xs"]
INTERLEAVED_TYPES = ["q4_0", "q8_0", "q4_K", "q6_K", "iq4_xs", "q5_0", "q2_K", "bf16"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("model") / "small.gguf", small_model_tensors())


def _packed_type(family, src_type: int) -> int:
    """The family's packed type of a source type (one per source for these two families)."""
    (packed,) = [i for i in TYPES if (s := family.source_of(i)) is not None and s.id == src_type]
    return packed


def _reference(family, packed_type, ne0, rows, packed, original):
    """What verify's step-by-step checks (layout and values) report first: (kind, index,
    original, repacked)."""
    src_type = family.source_of(packed_type).id
    bad = family.first_invalid_row(packed_type, ne0, rows, packed)
    if bad is not None:
        return chunk_checks.INVALID, bad, 0, 0
    rebuilt = np.empty(TYPES[src_type].row_bytes(ne0) * rows, np.uint8)
    family.unpack(packed_type, ne0, rows, packed, rebuilt)
    diff = np.flatnonzero(rebuilt != original)
    if diff.size:
        i = int(diff[0])
        return chunk_checks.BYTES, i, int(original[i]), int(rebuilt[i])
    expected = np.empty_like(packed)
    family.pack(packed_type, ne0, rows, original, expected)
    diff = np.flatnonzero(expected != packed)
    if diff.size:
        i = int(diff[0])
        return chunk_checks.LAYOUT, i, int(expected[i]), int(packed[i])
    want = np.empty(rows * ne0, np.float32)
    got = np.empty(rows * ne0, np.float32)
    block_decoders.dequantize_rows(src_type, original, want, ne0, rows)
    family.dequantize_packed(packed_type, ne0, rows, packed, got)
    diff = np.flatnonzero(want.view(np.uint32) != got.view(np.uint32))
    if diff.size:
        i = int(diff[0])
        return chunk_checks.VALUES, i, int(want.view(np.uint32)[i]), int(got.view(np.uint32)[i])
    return None


def _cases():
    for name in AMX_TYPES:
        yield "amx", name
    for name in INTERLEAVED_TYPES:
        yield "interleaved", name


@pytest.mark.parametrize("family_name,type_name", list(_cases()))
def test_fused_check_finds_what_the_separate_checks_find(family_name, type_name):
    family = FAMILIES[family_name]
    t = type_by_name(type_name)
    pt = _packed_type(family, t.id)
    unit = family.unit_rows(pt)
    ne0, rows = 3 * max(t.block_size, 256) if t.block_size > 1 else 1536, 2 * unit
    rng = np.random.default_rng(t.id)
    original = rng.integers(0, 256, t.row_bytes(ne0) * rows, dtype=np.uint8)
    packed = np.empty(TYPES[pt].row_bytes(ne0) * rows, np.uint8)
    family.pack(pt, ne0, rows, original, packed)
    rebuilt = np.empty_like(original)
    values = family.can_dequantize(pt)
    assert values, f"{type_name}: no float decoders"

    assert family.check_chunk(pt, ne0, rows, packed, original, rebuilt, values) is None
    assert np.array_equal(rebuilt, original)
    assert family.check_chunk(pt, ne0, rows, packed, None, rebuilt, values) is None

    kinds = set()
    for trial in range(24):   # one flipped bit in the packed tensor, or in the original
        p, o = packed.copy(), original.copy()
        target = p if trial % 3 else o
        pos = int(rng.integers(0, target.size))
        target[pos] ^= np.uint8(1 << int(rng.integers(0, 8)))
        got = family.check_chunk(pt, ne0, rows, p, o, rebuilt, values)
        want = _reference(family, pt, ne0, rows, p, o)
        if want is None:
            assert got is None
        else:
            assert got is not None, f"{type_name}: bit flip at {pos} not caught"
            assert (got.kind, got.index, got.original, got.repacked) == want
            kinds.add(got.kind)
    assert chunk_checks.BYTES in kinds


def test_chunk_check_arguments_never_reach_native_code(monkeypatch):
    class Tripwire:
        def __getattr__(self, name):
            raise AssertionError(f"native {name} entered with bad arguments")
    monkeypatch.setattr(chunk_checks, "lib", Tripwire())
    t = type_by_name("q4_K")
    packed_type = _packed_type(FAMILIES["amx"], t.id)
    native = ("vf_check_amx", (t.id, t.block_size, t.type_size))
    n = t.row_bytes(256) * 16
    good = np.zeros(n, np.uint8)
    for packed, original, rebuilt in [(np.zeros(n - 1, np.uint8), good, good.copy()),
                                      (good, np.zeros(n + 1, np.uint8), good.copy()),
                                      (good, good, np.zeros(n - 1, np.uint8)),
                                      (good, good, bytes(n))]:   # read-only output
        with pytest.raises(ValueError):
            chunk_checks.check_chunk(*native, t.id, packed_type, 256, 16, packed, original,
                                     rebuilt, True)
    for ne0, rows in [(255, 16), (256, 16.0), (0, 16), (256, -16)]:
        with pytest.raises(ValueError):
            chunk_checks.check_chunk(*native, t.id, packed_type, ne0, rows, good, good,
                                     good.copy(), True)


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_convert_verify_writes_the_same_file(model, tmp_path, layout):
    plain, checked = tmp_path / "plain.gguf", tmp_path / "checked.gguf"
    repack.convert(model, plain, layout=layout)
    proc = amx_repack_cli("convert", "--verify", "--layout", layout, model, checked)
    assert proc.returncode == 0, proc.stderr
    assert sha256(checked) == sha256(plain)
    assert "verified: every repacked chunk" in proc.stderr


@pytest.fixture
def one_wrong_byte(monkeypatch):
    """A pack kernel that writes one wrong byte into the second chunk it packs."""
    from repack.families import Family
    real = Family.pack
    calls = []

    def faulty(self, packed_type_id, ne0, rows, src, dst):
        real(self, packed_type_id, ne0, rows, src, dst)
        calls.append(self.name)
        if len(calls) == 2:
            view = memoryview(dst).cast("B")
            view[len(view) // 2] ^= 0x10
    monkeypatch.setattr(Family, "pack", faulty)
    return calls


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_convert_verify_catches_a_kernel_writing_one_wrong_byte(model, tmp_path, layout,
                                                                 one_wrong_byte):
    out = tmp_path / "out" / "model.gguf"
    out.parent.mkdir()
    with pytest.raises(VerificationFailed, match="unpacked bytes differ at row"):
        repack.convert(model, out, layout=layout, verify=True, threads=1)
    assert list(out.parent.iterdir()) == []          # nothing committed, no temporary left

    # the same fault without --verify writes a wrong file (so the check above caught a real one)
    one_wrong_byte.clear()
    repack.convert(model, out, layout=layout, threads=1)
    assert not repack.verify(model, out).ok


def test_convert_verify_fault_exits_1_on_the_command_line(model, tmp_path, one_wrong_byte, capsys):
    import signal
    from repack.__main__ import main
    out = tmp_path / "model.gguf"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ)}
    try:   # the command line, in this process (the faulty kernel is patched in here)
        with pytest.raises(SystemExit) as e:
            main(["convert", "--verify", "-q", "-t", "1", str(model), str(out)])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unpacked bytes differ" in err[0] and "no output was written" in err[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_convert_verify_fault_with_json_is_still_one_document(model, tmp_path, one_wrong_byte,
                                                             capsys):
    """Issue 20, item 10: convert --verify's mismatch (exit 1) with --json writes its document."""
    import json
    import signal
    from repack.__main__ import main
    from repack.report_json import KEYS
    out = tmp_path / "model.gguf"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ)}
    try:
        with pytest.raises(SystemExit) as e:
            main(["convert", "--verify", "--json", "-q", "-t", "1", str(model), str(out)])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert e.value.code == 1
    captured = capsys.readouterr()
    d = json.loads(captured.out)
    assert list(d) == list(KEYS["convert"]["top"]) and d["command"] == "convert"
    assert d["outputs"] == [] and d["verified"] is False and d["repacked"] > 0
    assert "unpacked bytes differ" in d["error"] and d["error"] in captured.err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _all_packed_types():
    for name, family in FAMILIES.items():
        for packed_type in sorted(TYPES):
            if family.source_of(packed_type) is not None:
                yield pytest.param(name, packed_type, id=f"{name}-{TYPES[packed_type].name}")


@pytest.mark.parametrize("family_name,packed_type", list(_all_packed_types()))
def test_layout_check_finds_every_corruption_the_value_check_finds(family_name, packed_type):
    """Every byte of a packed tensor (two row units of random source blocks), changed in turn:
    the default checks (bytes, layout) find each change given the original; given only the
    repacked file they find it or the bytes unpack gives back differ from the original (which the
    recorded digest catches). So whatever the checks with the float decoders find (bytes,
    values: printed, how many changes they miss), the default finds too."""
    family = FAMILIES[family_name]
    src = family.source_of(packed_type)
    unit = family.unit_rows(packed_type)
    ne0 = 2 * max(src.block_size, 256) if src.block_size > 1 else 512
    rows = 2 * unit
    rng = np.random.default_rng(packed_type)
    original = rng.integers(0, 256, src.row_bytes(ne0) * rows, dtype=np.uint8)
    if src.name == "q8_KV":   # each row: float scale, int32 sum of its int8 quants, the quants
        by_row = original.reshape(rows, -1)
        by_row[:, 4:8] = by_row[:, 8:].view(np.int8).sum(axis=1, dtype=np.int32).view(np.uint8) \
            .reshape(rows, 4)
    packed = np.empty(TYPES[packed_type].row_bytes(ne0) * rows, np.uint8)
    family.pack(packed_type, ne0, rows, original, packed)
    rebuilt = np.empty_like(original)
    values = family.can_dequantize(packed_type)
    assert family.check_chunk(packed_type, ne0, rows, packed, original, rebuilt, False) is None
    assert family.check_chunk(packed_type, ne0, rows, packed, None, rebuilt, False) is None

    missed_with_values = 0
    for pos in range(packed.size):
        p = packed.copy()
        p[pos] ^= np.uint8(rng.integers(1, 256))
        default = family.check_chunk(packed_type, ne0, rows, p, original, rebuilt, False)
        assert default is not None, f"change at packed byte {pos} not found"
        # convert --verify's checks (the packer it would run again is the one that just wrote p)
        in_convert = family.check_chunk(packed_type, ne0, rows, p, original, rebuilt, False,
                                        layout=False)
        assert in_convert is not None, f"change at packed byte {pos} not found by bytes alone"
        alone = family.check_chunk(packed_type, ne0, rows, p, None, rebuilt, False)
        assert alone is not None or not np.array_equal(rebuilt, original), \
            f"change at packed byte {pos} not found without the original"
        if values and family.check_chunk(packed_type, ne0, rows, p, original, rebuilt, True,
                                         layout=False) is None:
            missed_with_values += 1
    print(f"{TYPES[packed_type].name}: {packed.size} changes, all found; {missed_with_values} "
          f"missed by bytes + values")


def test_layout_mismatch_names_rows_and_packed_byte():
    """The layout check's report (kind LAYOUT): the rows of the packed unit (AMX: a 16-row tile
    strip) and the byte inside their packed bytes, with the byte the packer writes and the
    file's."""
    from formats.gguf_container import TensorInfo
    from repack.verify import describe_mismatch
    family = FAMILIES["amx"]
    q4_0 = type_by_name("q4_0")
    pt = _packed_type(family, q4_0.id)
    t = TensorInfo("blk.0.attn_q.weight", (256, 64), pt, 0, TYPES[pt].row_bytes(256) * 64)
    strip_bytes = TYPES[pt].row_bytes(256) * 16
    m = chunk_checks.Mismatch(chunk_checks.LAYOUT, 5, 0x12, 0x34)
    text = describe_mismatch(m, t, q4_0.id, pt, 0, strip_bytes, family)
    assert text == ("packed bytes are not the layout's packing of the original at rows 16-31, "
                    "byte 5 of their packed bytes: packing the original gives 0x12, the file has "
                    "0x34")


def test_decode_values_is_a_check_of_verify(model, tmp_path):
    out = tmp_path / "out.gguf"
    proc = amx_repack_cli("convert", "--decode-values", model, out)
    assert proc.returncode == 2 and "--decode-values is a check of --verify" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_decode_values_runs_the_float_decoders_and_finds_a_change(model, tmp_path, layout):
    out = tmp_path / "out.gguf"
    proc = amx_repack_cli("convert", "--verify", "--decode-values", "--layout", layout, model, out)
    assert proc.returncode == 0, proc.stderr
    for original in (model, None):
        v = repack.verify(original, out, decode_values=True)
        packed = [t for t in v.tensors if t.type_before != t.type_after]
        assert v.ok and packed and all({"layout", "values"} <= set(t.checks) for t in packed)
    with read_gguf(out) as f:   # the middle byte of the first packed tensor
        t = next(t for t in f.tensors if family_of_packed(t.type_id) is not None)
        offset = f.data_start + t.offset + t.nbytes // 2
    data = bytearray(out.read_bytes())
    data[offset] ^= 0x20
    out.write_bytes(bytes(data))
    for args in ((model, out), (out,)):
        for extra in ((), ("--decode-values",)):
            proc = amx_repack_cli("verify", *extra, *args)
            assert proc.returncode == 1, (extra, proc.stdout[-1000:])
            assert t.name in proc.stdout, proc.stdout[-1000:]
