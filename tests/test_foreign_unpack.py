"""unpack --foreign: a file ik_llama.cpp's own `llama-quantize --repack` wrote (no amx-repack
records) back to plain types, read by gguf-py, its values proved equal by verify (issue 12,
item 4)."""

from __future__ import annotations

import json

import pytest

import repack
from formats.gguf_container import read_gguf
from tests.conftest import amx_repack_cli
from tests.synthetic import fingerprint, sha256
from tests.test_ik_interleaved import ik_repacked


@pytest.mark.parametrize("fixture", ["gemma", "IQ4_XS", "Q4_0"])
def test_ik_repack_output_back_to_plain_types(fixture, gemma_path, requantized, llama_quantize,
                                              tmp_path):
    original = gemma_path if fixture == "gemma" else requantized(fixture)
    foreign = ik_repacked(llama_quantize, original)
    before = fingerprint(foreign)
    out = tmp_path / "plain.gguf"
    # without the flag: refused in one line, nothing written
    proc = amx_repack_cli("unpack", foreign, out)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no amx_repack.* records" in proc.stderr and "--foreign" in proc.stderr
    assert not out.exists()

    proc = amx_repack_cli("unpack", "--foreign", "--json", foreign, out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["foreign"] is True and doc["byte_identical"] is False
    with read_gguf(foreign) as f:
        packed = sum(t.type.origin == "ik-interleaved" for t in f.tensors)
        file_type = f.get("general.file_type")
    assert packed >= 36 and doc["unpacked"] == packed
    # what the output is not, on stderr (also in the JSON), and what was done with the keys
    (note,) = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert "cannot be byte-identical" in note and "every metadata key kept" in note
    assert doc["notes"] == [note[len("note: "):]]
    with read_gguf(original) as f:
        assert doc["changed_keys"] == {"general.file_type": [file_type,
                                                             f.get("general.file_type")]}
    assert fingerprint(foreign) == before

    # plain types only, every tensor equal to the real original's, all metadata as the original
    with read_gguf(original) as a, read_gguf(out) as b:
        assert [(t.name, t.type_id, t.shape) for t in a.tensors] == \
            [(t.name, t.type_id, t.shape) for t in b.tensors]
        for ta, tb in zip(a.tensors, b.tensors):
            assert bytes(a.tensor_data(ta)) == bytes(b.tensor_data(tb)), ta.name
        assert {k: r.raw for k, r in a.kv.items()} == {k: r.raw for k, r in b.kv.items()}
    # ik changed only general.file_type and wrote a canonical layout, so here (not in general)
    # the result is even the original file
    assert sha256(out) == sha256(original)

    # gguf-py reads it
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(out))
    with read_gguf(original) as a:
        assert [(t.name, t.tensor_type.name.lower()) for t in reader.tensors] == \
            [(t.name, t.type.name.lower()) for t in a.tensors]

    # verify proves the values equal: our output as the original of ik's file
    proc = amx_repack_cli("verify", "--json", out, foreign)
    assert proc.returncode == 0, proc.stdout[-2000:]
    report = json.loads(proc.stdout)
    assert report["ok"] and sum(t["type_before"] != t["type_after"]
                                for t in report["tensors"]) == packed


def test_foreign_on_our_own_file_is_the_byte_identical_unpack(tmp_path, gemma_path):
    ours, back = tmp_path / "ours.gguf", tmp_path / "back.gguf"
    repack.convert(gemma_path, ours, layout="interleaved")
    report = repack.unpack(ours, back, foreign=True)
    assert report.byte_identical and not report.foreign
    assert sha256(back) == sha256(gemma_path)
