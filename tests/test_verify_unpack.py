"""verify and unpack on real models, and the mutations verify must catch."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

import repack
from formats.gguf_container import read_gguf
from tests.conftest import amx_repack_cli, stderr_lines

INTERLEAVED_FIXTURE_TYPES = ["Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ4_NL", "Q2_K",
                             "Q3_K", "Q5_0"]
AMX_FIXTURE_TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def gemma_converted(gemma_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("converted")
    out = {}
    for layout in ("amx", "interleaved"):
        out[layout] = folder / f"gemma-{layout}.gguf"
        repack.convert(gemma_path, out[layout], layout=layout)
    return out


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_gemma_verify_both_modes(gemma_path, gemma_converted, layout):
    repacked = gemma_converted[layout]
    for extra, checks in (((), {"bytes", "layout"}), (("--decode-values",), {"bytes", "layout", "values"})):
        proc = amx_repack_cli("verify", "--json", *extra, gemma_path, repacked)
        assert proc.returncode == 0, proc.stdout[-2000:]
        report = json.loads(proc.stdout)
        packed = [t for t in report["tensors"] if t["type_before"] != t["type_after"]]
        assert len(packed) == (45 if layout == "amx" else 126)
        # the independent checks ran on every repacked tensor of the Gemma file; the float
        # decoders only when asked for
        assert all(checks <= set(t["checks"]) and ("values" in t["checks"]) == ("values" in checks)
                   for t in packed)
    proc = amx_repack_cli("verify", repacked)
    assert proc.returncode == 0 and "EQUIVALENT" in proc.stdout


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_gemma_unpack_is_byte_identical(gemma_path, gemma_converted, layout, tmp_path):
    back = tmp_path / "back.gguf"
    amx_repack_cli("unpack", gemma_converted[layout], back, check=True)
    assert sha256(back) == sha256(gemma_path)


@pytest.mark.parametrize("layout,qtype", [("amx", q) for q in AMX_FIXTURE_TYPES]
                         + [("interleaved", q) for q in INTERLEAVED_FIXTURE_TYPES])
def test_requantized_roundtrip(requantized, layout, qtype, tmp_path):
    src = requantized(qtype)
    out, back = tmp_path / "r.gguf", tmp_path / "back.gguf"
    report = repack.convert(src, out, layout=layout)
    assert len(report.repacked) >= 36
    v = repack.verify(src, out)
    assert v.ok, [t.detail for t in v.failures] + v.metadata_problems
    repack.unpack(out, back)
    assert sha256(back) == sha256(src)


# ------------------------------------------------------------------------------------------
# Mutations


def _flip(path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ (1 << bit)]))


def _tensor_offset(path, name: str) -> int:
    with read_gguf(path) as f:
        t = f.tensor(name)
        return f.data_start + t.offset


def _verify_json(original, repacked):
    proc = amx_repack_cli("verify", "--json", *([original] if original else []), repacked)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr


@pytest.mark.parametrize("where", ["quants", "scale", "kept", "metadata"])
@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_verify_catches_one_flipped_bit(gemma_path, gemma_converted, tmp_path, where, layout):
    bad = tmp_path / "bad.gguf"
    shutil.copyfile(gemma_converted[layout], bad)
    name = "blk.3.attn_output.weight"          # q4_K in the original
    if where == "quants":
        # AMX q4_K tile: bytes 0..2047 are quants; q4_K_R4 block: bytes 64.. are quants
        _flip(bad, _tensor_offset(bad, name) + 100, bit=5)
    elif where == "scale":
        # AMX q4_K tile: d of row 0 at 2304; q4_K_R4: d of row 0 at byte 0
        _flip(bad, _tensor_offset(bad, name) + (2304 if layout == "amx" else 0), bit=3)
    elif where == "kept":
        name = "blk.5.ffn_norm.weight"
        _flip(bad, _tensor_offset(bad, name) + 8, bit=1)
    else:
        data = bad.read_bytes()
        key = b"gemma3.context_length"
        pos = data.index(key) + len(key) + 4   # past the value type: the u32 value itself
        _flip(bad, pos, bit=2)
    for original in (gemma_path, None):
        rc, report, err = _verify_json(original, bad)
        assert rc == 1, err
        assert not report["ok"]
        if where == "metadata":   # both modes name the key (standalone: its recorded digest)
            assert any("gemma3.context_length" in p for p in report["metadata_problems"])
            continue
        failing = [t for t in report["tensors"] if t["status"] != "ok"]
        assert [t["name"] for t in failing] == [name]
        assert failing[0]["detail"]


def test_standalone_verify_catches_a_tampered_digest(gemma_converted, tmp_path):
    bad = tmp_path / "bad.gguf"
    shutil.copyfile(gemma_converted["amx"], bad)
    with read_gguf(bad) as f:
        first_digest = f.get("amx_repack.tensor.original_sha256")[0]
        first_name = f.tensors[0].name
    data = bad.read_bytes()
    at = data.index(first_digest.encode(), data.index(b"amx_repack.tensor.original_sha256"))
    _flip(bad, at, bit=0)
    rc, report, _ = _verify_json(None, bad)
    assert rc == 1
    assert [t["name"] for t in report["tensors"] if t["status"] != "ok"] == [first_name]


def test_verify_truncated_file_is_bad_input(gemma_path, gemma_converted, tmp_path):
    bad = tmp_path / "bad.gguf"
    data = gemma_converted["amx"].read_bytes()
    bad.write_bytes(data[: len(data) - 1000])
    proc = amx_repack_cli("verify", gemma_path, bad)
    assert proc.returncode == 2 and "beyond the end of the file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unpack_refuses_a_corrupt_file(gemma_converted, tmp_path):
    bad = tmp_path / "bad.gguf"
    shutil.copyfile(gemma_converted["interleaved"], bad)
    _flip(bad, _tensor_offset(bad, "blk.2.ffn_down.weight") + 4000)
    out = tmp_path / "out.gguf"
    proc = amx_repack_cli("unpack", bad, out)
    # a tensor that differs from its recorded digest is a mismatch (exit 1), named, in one line
    assert proc.returncode == 1 and "blk.2.ffn_down.weight" in proc.stderr
    assert len(stderr_lines(proc.stderr)) == 1      # besides the progress lines before it
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]


def test_verify_reports_first_difference_location(gemma_path, gemma_converted, tmp_path):
    bad = tmp_path / "bad.gguf"
    shutil.copyfile(gemma_converted["amx"], bad)
    # AMX q4_K tile (0, 0): NIB byte 4*r + i of line 0 holds elements i and i+4 of row r
    _flip(bad, _tensor_offset(bad, "blk.3.attn_output.weight") + 4 * 5 + 2, bit=0)  # row 5, element 2
    r = repack.verify(gemma_path, bad)
    (fail,) = r.failures
    assert fail.name == "blk.3.attn_output.weight" and "row 5, block 0" in fail.detail
