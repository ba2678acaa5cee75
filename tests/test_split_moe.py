"""Split GGUF models and MoE expert tensors: a Qwen3-MoE-shaped synthetic model written (and split)
by gguf-py's own writer, converted, verified and unpacked shard by shard; the interleaved layout of
its expert tensors checked against ik_llama.cpp's `llama-quantize --repack`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import repack
from formats.gguf_container import read_gguf
from tests.conftest import amx_repack_cli, run_quantize, stderr_lines
from tests.ggufbuild import kv_str
from tests.test_ik_interleaved import assert_same_as_ik

N_LAYERS, N_EXPERTS, D_MODEL, D_FF = 2, 16, 512, 256


def _quant_blocks(rng, qtype, shape):
    """Bytes for a tensor of ggml shape (ne0, ne1[, ne2]): real quantization where gguf-py can,
    otherwise random blocks with finite fp16 scales (ik's loader rejects NaN scales)."""
    import gguf
    ne0, rows = shape[0], int(np.prod(shape[1:]))
    try:
        data = gguf.quants.quantize(rng.standard_normal((rows, ne0)).astype(np.float32) * 0.02, qtype)
    except NotImplementedError:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        data = rng.integers(0, 256, (rows, ne0 // block, size), dtype=np.uint8)
        scale_at = {gguf.GGMLQuantizationType.Q6_K: [208]}.get(qtype, [0, 2])
        for at in scale_at:
            data[:, :, at:at + 2] = np.float16(0.01).tobytes()[0], np.float16(0.01).tobytes()[1]
        data = data.reshape(rows, -1)
    return data.reshape(*reversed(shape[1:]), -1)


def write_moe_model(path: Path, split_max_tensors: int = 0) -> list[Path]:
    """Qwen3-MoE-like: attention matrices plus 3-D expert tensors [ne0, ne1, n_expert]."""
    import gguf
    Q = gguf.GGMLQuantizationType
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    w.add_block_count(N_LAYERS)
    w.add_context_length(4096)
    w.add_embedding_length(D_MODEL)
    w.add_feed_forward_length(D_FF)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_expert_count(N_EXPERTS)
    w.add_expert_used_count(2)
    w.add_file_type(15)
    for i in range(N_LAYERS):
        for name, qtype, shape in [
            ("attn_q", Q.Q8_0, (D_MODEL, D_MODEL)), ("attn_v", Q.Q8_0, (D_MODEL, 128)),
            ("ffn_gate_exps", Q.Q4_K, (D_MODEL, D_FF, N_EXPERTS)),
            ("ffn_up_exps", Q.Q4_K, (D_MODEL, D_FF, N_EXPERTS)),
            ("ffn_down_exps", Q.Q6_K, (D_FF, D_MODEL, N_EXPERTS)),
        ]:
            w.add_tensor(f"blk.{i}.{name}.weight", _quant_blocks(rng, qtype, shape), raw_dtype=qtype)
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(D_MODEL, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if split_max_tensors:
        return sorted(path.parent.glob(f"{path.stem}-*-of-*.gguf"))
    return [path]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def split_model(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("split")
    shards = write_moe_model(folder / "moe.gguf", split_max_tensors=4)
    assert len(shards) == 3 and shards[0].name == "moe-00001-of-00003.gguf"
    return shards


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_split_convert_verify_unpack(split_model, layout, tmp_path):
    out = tmp_path / "moe-packed.gguf"
    # both families pack the experts by default, slice by slice (amx: spec §11; the runtime patch
    # runs their MUL_MAT_ID on the AMX kernels)
    report = repack.convert(split_model[0], out, layout=layout)
    outputs = [Path(p) for p in report.outputs]
    assert [p.name for p in outputs] == [f"moe-packed-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert len(report.repacked) == 5 * N_LAYERS        # 2 attention matrices + 3 expert tensors
    for i, (src, dst) in enumerate(zip(split_model, outputs)):
        with read_gguf(src) as a, read_gguf(dst) as b:
            for key in ("split.no", "split.count", "split.tensors.count"):   # still valid shards
                assert b.kv[key].raw == a.kv[key].raw
            assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    # experts: each 3-D tensor was repacked as a whole (all experts)
    with read_gguf(outputs[0]) as f:
        assert any(len(t.shape) == 3 and t.type.origin in ("amx", "ik-interleaved") for t in f.tensors)
    # verify follows the shards, given the first of each
    proc = amx_repack_cli("verify", "--json", split_model[0], outputs[0])
    assert proc.returncode == 0, proc.stdout[-1500:]
    assert len(json.loads(proc.stdout)["tensors"]) == 6 * N_LAYERS
    assert amx_repack_cli("verify", outputs[0]).returncode == 0
    # inspect lists every tensor of every shard
    info = json.loads(amx_repack_cli("inspect", "--json", outputs[0], check=True).stdout)
    assert len(info["tensors"]) == 6 * N_LAYERS and len(info["shards"]) == 3
    # unpack gives back every shard, byte for byte
    back = tmp_path / "moe-back-00001-of-00003.gguf"
    report = repack.unpack(outputs[0], back)
    assert [sha256(p) for p in report.outputs] == [sha256(p) for p in split_model]


def test_missing_and_inconsistent_shards(split_model, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for p in split_model:
        shutil.copy(p, folder / p.name)
    first = folder / split_model[0].name
    os.unlink(folder / split_model[2].name)
    proc = amx_repack_cli("convert", first, tmp_path / "o.gguf")
    assert proc.returncode == 2 and "missing shard" in proc.stderr and "00003-of-00003" in proc.stderr
    # a shard from another model (wrong split.no) in its place
    shutil.copy(split_model[1], folder / split_model[2].name)
    proc = amx_repack_cli("convert", first, tmp_path / "o.gguf")
    assert proc.returncode == 2 and "split.no is 1, expected 2" in proc.stderr
    proc = amx_repack_cli("convert", folder / split_model[1].name, tmp_path / "o.gguf")
    assert proc.returncode == 2 and "not the first shard" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_moe_experts_match_ik_repack(llama_quantize, tmp_path):
    (src,) = write_moe_model(tmp_path / "moe.gguf")
    ik = run_quantize(llama_quantize, ["--repack"], src, "Q8_0", tmp_path / "moe-ik.gguf")
    ours = tmp_path / "moe-ours.gguf"
    repack.convert(src, ours, layout="interleaved")
    # (general.file_type is not compared: on this vocabulary-less synthetic model ik writes 0
    # instead of its own table's 214; on real models the label matches, see test_ik_interleaved)
    assert assert_same_as_ik(ours, ik, check_file_type=False) == 5 * N_LAYERS


# ------------------------------------------------------------------------------------------
# Shards that do not belong together (issue 11, item 14)


def _raw_shard(path: Path, no: int, count: int, names: list[str], total: int | None,
               extra_kvs=(), version: int = 3) -> Path:
    import struct
    from tests.ggufbuild import RawGGUF, RawTensor, gstr
    kvs = [gstr("split.no") + struct.pack("<IH", 2, no),
           gstr("split.count") + struct.pack("<IH", 2, count)]
    if total is not None:
        kvs.append(gstr("split.tensors.count") + struct.pack("<Ii", 5, total))
    raw = RawGGUF(kvs=[*extra_kvs, *kvs], version=version,
                  tensors=[RawTensor(n, (8,), 0, 32 * i) for i, n in enumerate(names)],
                  data=b"".join(struct.pack("<8f", *range(8)) for _ in names))
    path.write_bytes(raw.tobytes())
    return path


def _raw_model(folder: Path, shards: list[list[str]], total: int | None, kvs_of=lambda i: (),
               version_of=lambda i: 3) -> list[Path]:
    folder.mkdir(exist_ok=True)
    count = len(shards)
    return [_raw_shard(folder / f"m-{i + 1:05d}-of-{count:05d}.gguf", i, count, names, total,
                       kvs_of(i), version_of(i)) for i, names in enumerate(shards)]


def _refused_everywhere(first: Path, tmp_path: Path, *needles: str) -> None:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    for args in (["inspect", first], ["convert", first, out / "o.gguf"], ["verify", first],
                 ["verify", first, first]):
        proc = amx_repack_cli(*args)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        lines = stderr_lines(proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("amx-repack: error: "), proc.stderr
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])
    assert os.listdir(out) == []


def test_a_shard_of_another_split_of_the_model_is_refused(split_model, tmp_path):
    """The same model split 5 tensors a shard instead of 4 has three shards as well, with the
    same split.count and split.tensors.count: its second shard in the place of ours repeats
    tensors of our third shard (and the total would be 13, not 12)."""
    (tmp_path / "other").mkdir()
    other = write_moe_model(tmp_path / "other" / "moe.gguf", split_max_tensors=5)
    assert len(other) == 3
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in split_model:
        shutil.copy(p, folder / p.name)
    shutil.copy(other[1], folder / split_model[1].name)
    third = folder / split_model[2].name
    _refused_everywhere(folder / split_model[0].name, tmp_path, str(third), "is also in",
                        str(folder / split_model[1].name))


def test_tensor_names_repeated_across_shards_are_refused(tmp_path):
    shards = _raw_model(tmp_path / "m", [["a", "b"], ["b", "c"]], 4)
    _refused_everywhere(shards[0], tmp_path, str(shards[1]), "tensor 'b' is also in",
                        str(shards[0]))


def test_split_tensors_count_must_match_the_real_total(tmp_path):
    shards = _raw_model(tmp_path / "m", [["a", "b"], ["c"]], 4)
    _refused_everywhere(shards[0], tmp_path, str(shards[0]), "split.tensors.count is 4",
                        "hold 3 (2 + 1)")
    # a single file (gguf-split's 1-shard output) is held to its count as well
    (single,) = _raw_model(tmp_path / "s", [["a", "b"]], 3)
    _refused_everywhere(single, tmp_path, "split.tensors.count is 3", "holds 2")


def test_a_shard_of_another_model_is_refused_by_what_it_repeats(tmp_path):
    """Writers that repeat metadata in every shard make another model's shard recognisable:
    a repeated record with another value, or another GGUF version, names the shard."""
    arch = lambda name: (lambda i: (kv_str("general.architecture", name if i else "llama"),))
    shards = _raw_model(tmp_path / "m", [["a", "b"], ["c", "d"]], 4, kvs_of=arch("qwen3"))
    _refused_everywhere(shards[0], tmp_path, str(shards[1]), "general.architecture",
                        "belongs to another model")
    shards = _raw_model(tmp_path / "v", [["a", "b"], ["c", "d"]], 4,
                        version_of=lambda i: 2 if i else 3)
    _refused_everywhere(shards[0], tmp_path, str(shards[1]), "GGUF version 2",
                        "belongs to another model")
    shards = _raw_model(tmp_path / "t", [["a", "b"], ["c", "d"]], 4)
    bad = _raw_shard(shards[1], 1, 2, ["c", "d"], 5)
    _refused_everywhere(shards[0], tmp_path, str(bad), "split.tensors.count is 5",
                        "belongs to another model")


def test_shards_that_belong_together_are_accepted(tmp_path):
    """Control: the same records repeated with the same values, and our own converted shards
    (whose amx_repack.* records differ from shard to shard by design)."""
    same = lambda i: (kv_str("general.architecture", "llama"),)
    shards = _raw_model(tmp_path / "m", [["a", "b"], ["c", "d"], ["e"]], 5, kvs_of=same)
    info = json.loads(amx_repack_cli("inspect", "--json", shards[0], check=True).stdout)
    assert len(info["tensors"]) == 5 and len(info["shards"]) == 3
    report = repack.convert(shards[0], tmp_path / "packed.gguf", layout="interleaved")
    assert amx_repack_cli("verify", report.outputs[0]).returncode == 0
    assert amx_repack_cli("verify", shards[0], report.outputs[0]).returncode == 0
