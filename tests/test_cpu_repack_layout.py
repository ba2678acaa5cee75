"""convert --layout cpu-repack: whole files byte-identical to upstream's own CPU_REPACK repacking.

For every target, real fixtures (Gemma Q4_K_M and its requantizations) are converted and every
tensor of the output is compared with the oracle: a repacked tensor with the bytes upstream's
``tensor_traits<...>::repack`` (compiled from the pinned repack.cpp, tests/cpu_repack_oracle.py)
writes for the original, every other tensor with the original's bytes. Which tensors are repacked
is checked against upstream's own choice in test_cpu_repack_eligibility.py; the kernels' bytes on
every variant and edge-case blocks in test_cpu_repack_kernels.py. Here: whole files, 3-D experts
(synthetic, split into shards), verify (pair and standalone), unpack byte-identical, --json,
--dry-run, .zst, the records (amx_repack.target) and the refusals.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import repack
from formats.cpu_repack_layout import VARIANTS, machine_target
from formats.gguf_container import read_gguf
from repack import metadata
from repack.families import LAYOUT_VERSION
from tests.conftest import amx_repack_cli
from tests.cpu_repack_oracle import upstream_repack
from tests.synthetic import sha256, write_model
from tests.test_split_moe import N_LAYERS, write_moe_model

# per target, one or two real fixtures whose types it repacks (None: the Gemma Q4_K_M itself),
# and variants the output must hold (llama-quantize --pure keeps a few tensors in other types)
FIXTURES = {
    "x86-avx2": [(None, {"q4_K_8x8"}), ("IQ4_NL", {"iq4_nl_8x8"})],
    "x86-avx512": [("Q2_K", {"q2_K_8x8"}), ("MXFP4", {"mxfp4_8x8"})],
    "arm-dotprod": [("Q5_K", {"q5_K_8x4"}), ("MXFP4", {"mxfp4_4x4"})],
    "arm-i8mm": [("Q6_K", {"q6_K_8x8"}), ("Q8_0", {"q8_0_4x8"})],
    "arm-sve256": [("Q4_0", {"q4_0_8x8"})],
    "rvv256": [("Q4_K", {"q4_K_16x1"}), ("IQ4_NL", {"iq4_nl_16x1"})],
}
CASES = [(target, qtype, variants) for target, cases in FIXTURES.items()
         for qtype, variants in cases]


def assert_upstream_bytes(originals: list[Path], outputs: list[Path]) -> set[str]:
    """Every tensor of every output shard: upstream's repack of the original's bytes (packed
    tensors) or the original's bytes; returns the variants found."""
    found = set()
    for original, output in zip(originals, outputs, strict=True):
        with read_gguf(original) as o, read_gguf(output) as r:
            assert [t.name for t in r.tensors] == [t.name for t in o.tensors]
            for t in r.tensors:
                src = o.tensor(t.name)
                assert t.shape == src.shape
                got = bytes(r.tensor_data(t))
                if t.type_id in VARIANTS:
                    v = VARIANTS[t.type_id]
                    assert v.source.id == src.type_id, t.name
                    want = upstream_repack(v.source.id, v.nb_cols, v.inter, o.tensor_data(src),
                                           src.ne0, src.ne1, src.rows // src.ne1)
                    found.add(v.name)
                else:
                    assert t.type_id == src.type_id, t.name
                    want = bytes(o.tensor_data(src))
                assert got == want, f"{output.name}: tensor {t.name} ({t.type.name})"
    return found


@pytest.mark.parametrize("target,qtype,variants", CASES,
                         ids=[f"{t}-{q or 'Q4_K_M'}" for t, q, _ in CASES])
def test_real_fixture_equals_upstreams_repack(gemma_path, requantized, tmp_path, target, qtype,
                                              variants):
    original = gemma_path if qtype is None else requantized(qtype)
    out = tmp_path / "cr.gguf"
    report = repack.convert(original, out, layout="cpu-repack", target=target)
    assert report.target == target and report.repacked
    assert assert_upstream_bytes([original], [out]) >= variants
    with read_gguf(out) as f:
        info = metadata.read_info(f.kv)
        assert (info.layout, info.target) == ("cpu-repack", target)
        assert f.kv["amx_repack.target"].value == target
    if (target, qtype) in (("x86-avx2", None), ("arm-i8mm", "Q8_0")):
        # verify (pair and standalone) and unpack byte for byte, on two of them
        assert repack.verify(original, out).ok and repack.verify(None, out).ok
        back = tmp_path / "back.gguf"
        repack.unpack(out, back)
        assert sha256(back) == sha256(original)


def test_experts_in_shards_verify_unpack_json(tmp_path):
    """3-D experts (Q4_K, Q6_K) and Q8_0 in a model split into three shards: upstream's bytes
    (all ne1 * ne2 rows), verify, unpack and the JSON report."""
    shards = write_moe_model(tmp_path / "moe.gguf", split_max_tensors=4)
    out = tmp_path / "moe-cr.gguf"
    proc = amx_repack_cli("convert", "--json", "--layout", "cpu-repack", "--target", "arm-i8mm",
                          shards[0], out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["layout"] == "cpu-repack" and doc["target"] == "arm-i8mm"
    assert doc["repacked"] == 5 * N_LAYERS
    outputs = [Path(p) for p in doc["outputs"]]
    assert len(outputs) == 3
    assert assert_upstream_bytes(shards, outputs) == {"q8_0_4x8", "q4_K_8x8", "q6_K_8x8"}
    with read_gguf(outputs[0]) as f:
        assert any(len(t.shape) == 3 and t.type_id in VARIANTS for t in f.tensors)
    proc = amx_repack_cli("verify", "--json", shards[0], outputs[0])
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"], proc.stdout[-1500:]
    assert json.loads(proc.stdout)["target"] == "arm-i8mm"
    proc = amx_repack_cli("verify", "--json", shards[0], shards[0])   # plain: no records, no target
    assert json.loads(proc.stdout)["target"] is None
    assert amx_repack_cli("verify", outputs[0]).returncode == 0
    back = tmp_path / "moe-back-00001-of-00003.gguf"
    report = repack.unpack(outputs[0], back)
    assert [sha256(p) for p in report.outputs] == [sha256(p) for p in shards]


def test_dry_run_is_the_plan_of_the_conversion(gemma_path, tmp_path):
    out = tmp_path / "cr.gguf"
    args = ["convert", "--json", "--layout", "cpu-repack", "--target", "arm-dotprod", gemma_path,
            out]
    plan = json.loads(amx_repack_cli(*args[:1], "--dry-run", *args[1:], check=True).stdout)
    assert plan["dry_run"] and not out.exists()
    done = json.loads(amx_repack_cli(*args, check=True).stdout)
    assert plan["tensors"] == done["tensors"] and plan["target"] == done["target"] == "arm-dotprod"
    # Gemma Q4_K_M on NEON dotprod: q4_K 8x4, q6_K 8x4, q8_0 4x4 except the embedding (get_rows)
    kinds = {(t["type"], t["output_type"]) for t in done["tensors"] if t["repacked"]}
    assert kinds == {("q4_K", "cpu_q4_K_8x4"), ("q6_K", "cpu_q6_K_8x4"), ("q8_0", "cpu_q8_0_4x4")}
    embd = next(t for t in done["tensors"] if t["name"] == "token_embd.weight")
    assert (embd["repacked"], embd["code"]) == (False, "embedding")
    text = amx_repack_cli(*args[:1], "--dry-run", *args[2:], "--force", check=True).stdout
    assert "(layout cpu-repack, target arm-dotprod) would repack" in text


def test_compressed_output_and_input(gemma_path, tmp_path):
    plain, packed = tmp_path / "plain.gguf", tmp_path / "packed.gguf"
    repack.convert(gemma_path, plain, layout="cpu-repack", target="x86-avx512")
    repack.convert(gemma_path, packed, layout="cpu-repack", target="x86-avx512", compress=True)
    zst = tmp_path / "packed.gguf.zst"
    assert zst.exists() and not packed.exists()
    assert repack.verify(gemma_path, zst).ok
    back = tmp_path / "back.gguf"
    repack.unpack(zst, back)
    assert sha256(back) == sha256(gemma_path)
    import zstandard
    with open(zst, "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f).read()
    assert data == plain.read_bytes()


def test_auto_is_this_machines_target(tmp_path):
    model = write_model(tmp_path / "m.gguf", [("blk.0.ffn_up.weight", "q4_0", (256, 64))])
    here = machine_target()
    proc = amx_repack_cli("convert", "--layout", "cpu-repack", model, tmp_path / "auto.gguf")
    if here is None:
        assert proc.returncode == 2 and "none of the CPU features" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    assert f"(layout cpu-repack, target {here}," in proc.stdout
    explicit = tmp_path / "explicit.gguf"
    repack.convert(model, explicit, layout="cpu-repack", target=here)
    assert sha256(explicit) == sha256(tmp_path / "auto.gguf")


def test_inspect_shows_what_upstream_repacks_at_load(gemma_path, tmp_path):
    doc = json.loads(amx_repack_cli("inspect", "--json", gemma_path, check=True).stdout)
    here = machine_target()
    load = doc["upstream_at_load"]["cpu-repack"]
    assert load["target"] == here
    tensors = {t["name"]: t for t in doc["tensors"]}
    at_load = {n: t["upstream_at_load"]["cpu-repack"] for n, t in tensors.items()}
    assert load["tensors"] == sum(v is not None for v in at_load.values())
    assert load["bytes"] == sum(tensors[n]["bytes"] for n, v in at_load.items() if v)
    assert at_load["token_embd.weight"] is None
    # q8_0: no variant on x86 ("cpu"), and read by get_rows on every CPU ("embedding")
    assert tensors["token_embd.weight"]["layouts"]["cpu-repack"]["code"] in ("cpu", "embedding")
    if here is not None:
        # exactly what a conversion for this machine packs
        out = tmp_path / "cr.gguf"
        report = repack.convert(gemma_path, out, layout="cpu-repack")
        assert {p.name: VARIANTS[p.out_type_id].name for p in report.repacked} == \
            {n: v for n, v in at_load.items() if v}
        text = amx_repack_cli("inspect", gemma_path, check=True).stdout
        assert (f"cpu-repack: this machine is {here}: stock llama.cpp repacks "
                f"{load['tensors']} tensors") in text
        # the converted file: nothing left to repack at load, the target named
        text = amx_repack_cli("inspect", out, check=True).stdout
        assert f"layout cpu-repack v{LAYOUT_VERSION}, target {here}," in text
        assert "stock llama.cpp repacks 0 tensors" in text


@pytest.mark.parametrize("args,message", [
    (["--layout", "amx", "--target", "x86-avx2"], "the amx layout takes no target"),
    (["--layout", "none", "--target", "x86-avx2"], "layout none copies the file as it is"),
    (["--layout", "cpu-repack", "--target", "arm-neon"], "Invalid value for '--target'"),
    (["--layout", "cpu-repack", "--target", "x86-avx2", "--override", "cpu"],
     "'cpu' cannot be overridden"),
    (["--layout", "cpu-repack", "--target", "x86-avx2", "--untie-output"],
     "untying the output matrix applies to the amx layout only"),
])
def test_refusals(tmp_path, args, message):
    model = write_model(tmp_path / "m.gguf", [("blk.0.ffn_up.weight", "q4_0", (256, 64))])
    proc = amx_repack_cli("convert", *args, model, tmp_path / "out.gguf")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.gguf").exists()


def test_damaged_target_record_is_refused(tmp_path):
    """A cpu-repack file whose amx_repack.target names no target: verify and unpack refuse it
    (exit 2) instead of trusting it."""
    model = write_model(tmp_path / "m.gguf", [("blk.0.ffn_up.weight", "q4_0", (256, 64))])
    out = tmp_path / "cr.gguf"
    repack.convert(model, out, layout="cpu-repack", target="x86-avx2")
    data = bytearray(out.read_bytes())
    at = data.index(b"x86-avx2")
    data[at:at + 8] = b"x86-avx9"
    out.write_bytes(bytes(data))
    for args in (["verify", out], ["unpack", out, tmp_path / "back.gguf"]):
        proc = amx_repack_cli(*args)
        assert proc.returncode == 2 and "unknown target 'x86-avx9'" in proc.stderr, proc.stderr
    assert not (tmp_path / "back.gguf").exists()
