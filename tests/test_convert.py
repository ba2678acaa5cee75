"""convert on real and synthetic models, checked against the independent numpy re-pack."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import repack
from formats import amx_layout
from formats.ggml_types import AMX_TYPE_ID_BASE, TYPES, type_by_name
from formats.gguf_container import read_gguf
from repack import metadata
from tests.conftest import amx_repack_cli
from tests.ggufbuild import RawGGUF, RawTensor, kv_str, kv_u32

AMX_FIXTURE_TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]


def assert_amx_conversion_exact(original_path, converted_path) -> dict[str, int]:
    """Every repacked tensor equals the numpy reference packing of the original; every other
    tensor is byte-identical; names, shapes, order and metadata are as promised."""
    src, out = read_gguf(original_path), read_gguf(converted_path)
    repacked: dict[str, int] = {}
    assert [t.name for t in out.tensors] == [t.name for t in src.tensors]
    for a, b in zip(src.tensors, out.tensors):
        assert a.shape == b.shape
        data_a, data_b = bytes(src.tensor_data(a)), bytes(out.tensor_data(b))
        if b.type_id == a.type_id:
            assert data_a == data_b, a.name
            continue
        assert b.type_id == AMX_TYPE_ID_BASE + a.type_id, a.name
        expect = amx_layout.pack(a.type.name, data_a, a.rows, a.ne0)
        assert data_b == expect.tobytes(), a.name
        repacked[a.type.name] = repacked.get(a.type.name, 0) + 1
    info = metadata.read_info(out.kv)
    assert info.layout == "amx" and info.layout_version == 3
    assert info.tensor_names == [t.name for t in src.tensors]
    assert info.original_types == [t.type_id for t in src.tensors]
    # the recorded digests are sha256 of the original bytes (checked with hashlib directly)
    assert info.original_digests == [hashlib.sha256(src.tensor_data(t)).hexdigest()
                                     for t in src.tensors]
    # the input's own records are copied byte-exact, in order, before ours
    assert [r.raw for r in list(out.kv.values())[:len(src.kv)]] == [r.raw for r in src.kv.values()]
    src.close()
    out.close()
    return repacked


def test_gemma_amx_convert_matches_reference(gemma_path, tmp_path):
    out = tmp_path / "gemma-amx.gguf"
    proc = amx_repack_cli("convert", gemma_path, out, check=True)
    assert "repacked 45 of 236 tensors" in proc.stdout
    repacked = assert_amx_conversion_exact(gemma_path, out)
    assert repacked == {"q4_K": 27, "q6_K": 9, "q8_0": 9}
    # token_embd stays as it is (read by get_rows) and inspect shows AMX type names
    report = json.loads(amx_repack_cli("inspect", "--json", out, check=True).stdout)
    types = {r["name"]: r for r in report["tensors"]}
    assert types["token_embd.weight"]["type"] == "q8_0"
    assert types["blk.0.attn_output.weight"]["type"] == "amx_q4_K"
    assert types["blk.0.attn_output.weight"]["original_type"] == "q4_K"
    assert report["repacked_by"]["layout"] == "amx"


@pytest.mark.parametrize("qtype", AMX_FIXTURE_TYPES)
def test_requantized_amx_convert_matches_reference(requantized, qtype, tmp_path):
    src = requantized(qtype)
    out = tmp_path / "amx.gguf"
    amx_repack_cli("convert", "--layout", "amx", src, out, check=True)
    repacked = assert_amx_conversion_exact(src, out)
    # Gemma's 640-wide rows force llama-quantize to fall back from 256-blocks on most matrices:
    # K-quant/IQ4_XS fixtures keep 36 tensors of the type (attn_output, ffn_down), others 126
    expected = 36 if type_by_name(qtype).block_size == 256 else 126
    assert repacked.get(type_by_name(qtype).name, 0) == expected


def test_output_independent_of_threads(gemma_path, tmp_path):
    digests = set()
    for threads in (1, 2, 7):
        out = tmp_path / f"t{threads}.gguf"
        repack.convert(gemma_path, out, layout="amx", threads=threads)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def _synthetic(tmp_path, tensors: list[tuple[str, str, tuple[int, ...]]], seed: int = 0):
    """A GGUF of random blocks: [(name, type name, shape)]."""
    rng = np.random.default_rng(seed)
    raw = RawGGUF(kvs=[kv_str("general.architecture", "qwen3moe"), kv_u32("general.file_type", 15)])
    data = b""
    for name, tname, shape in tensors:
        t = type_by_name(tname)
        data += b"\0" * (-len(data) % 32)
        raw.tensors.append(RawTensor(name, shape, t.id, len(data)))
        data += rng.integers(0, 256, t.tensor_bytes(shape), dtype=np.uint8).tobytes()
    raw.data = data
    path = tmp_path / "synthetic.gguf"
    path.write_bytes(raw.tobytes())
    return path


def test_expert_tensors_pack_slice_by_slice(tmp_path):
    # Qwen3-MoE-like: 3-D expert tensors [ne0, ne1, n_expert]
    path = _synthetic(tmp_path, [
        ("blk.0.ffn_gate_exps.weight", "q4_K", (512, 64, 8)),
        ("blk.0.ffn_down_exps.weight", "q6_K", (256, 96, 8)),
        ("blk.0.ffn_up_exps.weight", "q8_0", (64, 32, 4)),
    ])
    out = tmp_path / "amx.gguf"
    # packed by default: the runtime patch runs their MUL_MAT_ID on the AMX kernels
    report = repack.convert(path, out, layout="amx")
    assert len(report.repacked) == 3
    src, dst = read_gguf(path), read_gguf(out)
    for a, b in zip(src.tensors, dst.tensors):
        params = amx_layout.AMX_PARAMS[a.type.name]
        data = bytes(src.tensor_data(a))
        per_slice = len(data) // a.shape[2]
        expect = b"".join(
            amx_layout.pack(a.type.name, data[e * per_slice:(e + 1) * per_slice], a.shape[1], a.ne0).tobytes()
            for e in range(a.shape[2]))
        assert b.type_id == params.packed.id and bytes(dst.tensor_data(b)) == expect


def test_include_exclude_and_shape_rules(tmp_path):
    path = _synthetic(tmp_path, [
        ("token_embd.weight", "q8_0", (64, 32)),
        ("blk.0.attn_q.weight", "q4_0", (64, 32)),
        ("blk.0.attn_k.weight", "q4_0", (64, 48)),       # ne1 % 32 != 0: only override shape_n
        ("blk.0.attn_v.weight", "q4_0", (64, 40)),       # ne1 % 16 != 0: never packed
        ("blk.0.ffn_up.weight", "q5_0", (64, 32)),       # no AMX layout
    ])

    def types(**kw):
        out = tmp_path / "o.gguf"
        report = repack.convert(path, out, layout="amx", force=True, **kw)
        with read_gguf(out) as f:
            return {t.name: TYPES[t.type_id].name for t in f.tensors}, report

    got, report = types()
    assert got == {"token_embd.weight": "q8_0", "blk.0.attn_q.weight": "amx_q4_0",
                   "blk.0.attn_k.weight": "q4_0", "blk.0.attn_v.weight": "q4_0",
                   "blk.0.ffn_up.weight": "q5_0"}
    assert not report.warnings and any("not a multiple of 32" in n for n in report.notes)
    got, report = types(allow_amx_n16=True)
    assert got["blk.0.attn_k.weight"] == "amx_q4_0" and got["blk.0.attn_v.weight"] == "q4_0"
    assert any("not a multiple of 32" in w for w in report.warnings)
    got, _ = types(exclude=["attn_k"], allow_amx_n16=True)
    assert got["blk.0.attn_k.weight"] == "q4_0" and got["blk.0.attn_q.weight"] == "amx_q4_0"
    got, _ = types(include=["attn_k"], allow_amx_n16=True)
    assert got["blk.0.attn_k.weight"] == "amx_q4_0" and got["blk.0.attn_q.weight"] == "q4_0"
    got, _ = types(include=["attn_k"])                      # --include does not lift N % 32
    assert got["blk.0.attn_k.weight"] == "q4_0" and got["blk.0.attn_q.weight"] == "q4_0"
    got, _ = types(include=["token_embd", "attn_v"])        # include only narrows: packs nothing
    assert set(got.values()) == {"q8_0", "q4_0", "q5_0"}
    with pytest.raises(repack.UsageError, match="not a valid regular expression"):
        repack.convert(path, tmp_path / "x.gguf", include=["("])
    for kw in (dict(include=["attn_z"]), dict(exclude=["attn_q", "ffn_down"])):
        with pytest.raises(repack.UsageError, match="pattern '(attn_z|ffn_down)' matches no tensor"):
            repack.convert(path, tmp_path / "x.gguf", **kw)
    for kw in (dict(include=["attn"]), dict(exclude=["attn"]), dict(overrides=["experts"])):
        with pytest.raises(repack.UsageError, match="layout none copies the file as it is"):
            repack.convert(path, tmp_path / "x.gguf", layout="none", **kw)
    assert not (tmp_path / "x.gguf").exists()
