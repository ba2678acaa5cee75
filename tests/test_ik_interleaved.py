"""The interleaved layout against the real thing: ik_llama.cpp's own `llama-quantize --repack`
output (byte reference) and its runtime (loads our file with mmap, generates the same tokens)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import repack
from formats.gguf_container import read_gguf
from tests.conftest import _fixture_dir, run_quantize

IK_FIXTURE_TYPES = ["Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ4_NL", "Q2_K", "Q3_K",
                    "Q5_0"]
GENERATE = Path(__file__).parent / "tools" / "ik_generate.py"
PROMPT = "The capital of France is"


def ik_repacked(llama_quantize, source: Path) -> Path:
    out = _fixture_dir() / (source.stem + "-ik-repack.gguf")
    # the type argument is required by llama-quantize but ignored with --repack
    return run_quantize(llama_quantize, ["--repack"], source, "Q8_0", out)


def assert_same_as_ik(ours_path: Path, ik_path: Path, check_file_type: bool = True) -> int:
    """Tensor for tensor: same names, types, shapes and data bytes. Returns tensors repacked."""
    ours, ik = read_gguf(ours_path), read_gguf(ik_path)
    assert [t.name for t in ours.tensors] == [t.name for t in ik.tensors]
    repacked = 0
    for a, b in zip(ours.tensors, ik.tensors):
        assert (a.type.name, a.shape) == (b.type.name, b.shape), a.name
        assert bytes(ours.tensor_data(a)) == bytes(ik.tensor_data(b)), a.name
        repacked += a.type.origin == "ik-interleaved"
    if check_file_type:
        assert ours.get("general.file_type") == ik.get("general.file_type")
    ours.close()
    ik.close()
    return repacked


def test_gemma_matches_ik_repack(gemma_path, llama_quantize, tmp_path):
    ours = tmp_path / "ours.gguf"
    repack.convert(gemma_path, ours, layout="interleaved")
    assert assert_same_as_ik(ours, ik_repacked(llama_quantize, gemma_path)) == 126


@pytest.mark.parametrize("qtype", IK_FIXTURE_TYPES)
def test_requantized_matches_ik_repack(requantized, llama_quantize, qtype, tmp_path):
    src = requantized(qtype)
    ours = tmp_path / "ours.gguf"
    repack.convert(src, ours, layout="interleaved")
    assert assert_same_as_ik(ours, ik_repacked(llama_quantize, src)) >= 36


def generate(model: Path, n: int = 32) -> dict:
    proc = subprocess.run([sys.executable, str(GENERATE), str(model), str(n), PROMPT],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("fixture", ["gemma", "Q4_0"])
def test_ik_runtime_generates_same_tokens(fixture, gemma_path, requantized, llama_quantize,
                                          tmp_path, record_property):
    src = gemma_path if fixture == "gemma" else requantized(fixture)
    ours = tmp_path / "ours.gguf"
    repack.convert(src, ours, layout="interleaved")
    from_ours = generate(ours)
    from_ik = generate(ik_repacked(llama_quantize, src))
    from_original = generate(src)
    assert len(from_ours["tokens"]) == 32
    assert from_ours["tokens"] == from_ik["tokens"]
    # reported, not asserted: interleaved kernels may round differently from the plain ones
    record_property("same_as_original", from_ours["tokens"] == from_original["tokens"])
    print(f"{fixture}: ours == ik --repack: True; == original: "
          f"{from_ours['tokens'] == from_original['tokens']}; text: {from_ours['text']!r}")


def test_verify_proves_iks_own_repack(gemma_path, llama_quantize):
    """verify needs no records of ours: given the original, it checks ik's own --repack file too
    (only general.file_type / quantization_version may differ, as ik documents)."""
    report = repack.verify(gemma_path, ik_repacked(llama_quantize, gemma_path))
    assert report.ok, [t.detail for t in report.failures] + report.metadata_problems
    assert sum(t.type_before != t.type_after for t in report.tensors) == 126
