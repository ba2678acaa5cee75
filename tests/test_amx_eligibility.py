"""--layout amx packs exactly what llama.cpp's AMX backend (with the runtime patch) runs: ne1 % 32,
the K rule, no get_rows tensors, 2-D weights and 3-D experts; ne1 % 16-only tensors only behind
--override shape_n (--allow-amx-n16), weights of more than 3 dimensions only behind --override
experts; inspect and convert name the runtime that reads each layout."""

from __future__ import annotations

import json

import pytest

import repack
from formats import amx_layout
from formats.ggml_types import TYPES, type_by_name
from formats.gguf_container import TensorInfo, read_gguf
from formats.layouts import CODES, FAMILY_TABLES, RUNTIMES, decide
from tests.conftest import amx_repack_cli
from tests.synthetic import sha256, write_model

AMX_RUNTIME = "llama.cpp built with runtime/llama.cpp (amx-repack's patch)"

TENSORS = [
    ("token_embd.weight", "q8_0", (64, 48)),            # embedding and ne1 % 32 != 0
    ("output_norm.weight", "f32", (64,)),
    ("blk.0.attn_k.weight", "q4_0", (64, 48)),          # ne1 % 16 == 0, ne1 % 32 != 0
    ("blk.0.attn_q.weight", "q4_0", (64, 64)),          # ne1 % 32 == 0
    ("blk.0.ffn_up.weight", "q4_K", (256, 32)),         # K = 256
    ("blk.0.ffn_down_exps.weight", "q8_0", (64, 64, 2)),  # 3-D experts: MUL_MAT_ID on AMX
    ("blk.0.ffn_gate_exps.weight", "q8_0", (64, 64, 2, 2)),  # 4-D: no AMX kernel
    ("blk.0.attn_v.weight", "q4_0", (64, 40)),          # ne1 % 16 != 0: never packed
]
N16 = {"blk.0.attn_k.weight"}


@pytest.fixture
def model(tmp_path):
    return write_model(tmp_path / "m.gguf", TENSORS, seed=3)


def out_types(path) -> dict[str, str]:
    with read_gguf(path) as f:
        return {t.name: TYPES[t.type_id].name for t in f.tensors}


def assert_packed_exactly(original, converted, names):
    """The named tensors equal the numpy reference packing (slice by slice); all others are
    byte-identical to the input."""
    with read_gguf(original) as src, read_gguf(converted) as out:
        for a, b in zip(src.tensors, out.tensors):
            data_a, data_b = bytes(src.tensor_data(a)), bytes(out.tensor_data(b))
            if a.name not in names:
                assert b.type_id == a.type_id and data_a == data_b, a.name
                continue
            assert b.type_id == amx_layout.AMX_PARAMS[a.type.name].packed.id, a.name
            slices = a.rows // a.ne1
            per = len(data_a) // slices
            expect = b"".join(amx_layout.pack(a.type.name, data_a[s * per:(s + 1) * per], a.ne1,
                                              a.ne0).tobytes() for s in range(slices))
            assert data_b == expect, a.name


def test_default_packs_what_llama_cpp_runs(model, tmp_path):
    out = tmp_path / "amx.gguf"
    proc = amx_repack_cli("convert", model, out, check=True)
    assert out_types(out) == {
        "token_embd.weight": "q8_0", "output_norm.weight": "f32",
        "blk.0.attn_k.weight": "q4_0", "blk.0.attn_q.weight": "amx_q4_0",
        "blk.0.ffn_up.weight": "amx_q4_K", "blk.0.ffn_down_exps.weight": "amx_q8_0",
        "blk.0.ffn_gate_exps.weight": "q8_0", "blk.0.attn_v.weight": "q4_0"}
    assert_packed_exactly(model, out, {"blk.0.attn_q.weight", "blk.0.ffn_up.weight",
                                       "blk.0.ffn_down_exps.weight"})
    # no warning: nothing was packed that the runtime will not run; a note names the override
    assert "warning" not in proc.stderr
    assert f"runtime: the amx layout is read by {AMX_RUNTIME}" in proc.stderr
    note = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(note) == 2, proc.stderr
    n16 = [n for n in note if "N % 32" in n]
    assert len(n16) == 1 and "1 kept tensor (" in n16[0] and "override 'shape_n'" in n16[0]
    assert any("override 'experts'" in n and "ffn_gate_exps" in n for n in note)
    # the same decisions through the API, and --include only narrows: it forces no rule
    report = repack.convert(model, out, force=True, include=["attn_k", "attn_q", "token_embd"])
    kept = {p.name: p.decision for p in report.tensors if not p.repacked}
    assert kept["blk.0.attn_k.weight"].code == "shape_n"
    assert kept["token_embd.weight"].code == "embedding"
    assert kept["blk.0.ffn_up.weight"].code == "include"
    types = out_types(out)
    assert types["blk.0.attn_k.weight"] == "q4_0" and types["token_embd.weight"] == "q8_0"
    assert types["blk.0.attn_q.weight"] == "amx_q4_0"


def test_allow_amx_n16_packs_them_with_a_warning(model, tmp_path):
    out, back = tmp_path / "amx16.gguf", tmp_path / "back.gguf"
    proc = amx_repack_cli("convert", "-q", "--allow-amx-n16", model, out, check=True)
    assert proc.stdout == ""                                 # --quiet: no summary ...
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, proc.stderr                   # ... but the warning is printed
    assert "override 'shape_n'" in warnings[0] and "1 repacked tensor (" in warnings[0]
    assert "will not run" in warnings[0] and "blk.0.attn_k.weight" in warnings[0]
    types = out_types(out)
    assert types["blk.0.attn_k.weight"] == "amx_q4_0"
    assert types["blk.0.ffn_down_exps.weight"] == "amx_q8_0"  # experts: as by default
    assert types["blk.0.ffn_gate_exps.weight"] == "q8_0"      # 4-D: as by default
    # still never the embedding (get_rows) nor a shape the format cannot hold
    assert types["token_embd.weight"] == "q8_0" and types["blk.0.attn_v.weight"] == "q4_0"
    assert_packed_exactly(model, out, {"blk.0.attn_q.weight", "blk.0.ffn_up.weight",
                                       "blk.0.ffn_down_exps.weight"} | N16)
    # verify (both checks) and unpack work on those tensors
    proc = amx_repack_cli("verify", "--json", model, out)
    assert proc.returncode == 0, proc.stdout[-2000:]
    checked = {t["name"]: t for t in json.loads(proc.stdout)["tensors"]}
    for name in N16:
        assert checked[name]["status"] == "ok" and "bytes" in checked[name]["checks"]
    assert amx_repack_cli("verify", out).returncode == 0
    amx_repack_cli("unpack", out, back, check=True)
    assert sha256(back) == sha256(model)
    # the Python API takes the same option
    report = repack.convert(model, out, force=True, allow_amx_n16=True)
    assert {p.name for p in report.repacked} >= N16
    assert any("override 'shape_n'" in w for w in report.warnings)
    assert repack.convert(model, out, force=True, overrides=["shape_n"]).warnings == \
        report.warnings                                      # the same override, by its code
    # never the embedding, not even with every override and an include that matches it
    report = repack.convert(model, out, force=True, overrides=["shape_n", "experts"],
                            include=["token_embd", "attn"])
    assert out_types(out)["token_embd.weight"] == "q8_0"
    assert {p.name: p.decision.code for p in report.tensors}["token_embd.weight"] == "embedding"


def test_experts_packed_by_default(model, tmp_path):
    """3-D expert tensors: packed slice by slice (spec §11) under the same N and K rules as a 2-D
    weight, since the runtime patch runs their MUL_MAT_ID on the AMX kernels; a 4-D weight has no
    AMX kernel and stays unless the override 'experts' packs it (with a warning)."""
    out = tmp_path / "exps.gguf"
    with pytest.raises(repack.UsageError, match="matches no tensor"):
        repack.convert(model, out, include=["no_such_tensor"])
    report = repack.convert(model, out)
    plans = {p.name: p for p in report.tensors}
    assert plans["blk.0.ffn_down_exps.weight"].repacked
    assert plans["blk.0.ffn_down_exps.weight"].decision.code == ""
    gate = plans["blk.0.ffn_gate_exps.weight"]
    assert not gate.repacked and gate.decision.code == "experts" and "4-D" in gate.decision.reason
    assert amx_repack_cli("verify", model, out).returncode == 0
    proc = amx_repack_cli("convert", "-q", "--force", "--include", "exps", "--override", "experts",
                          model, out, check=True)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "override 'experts'" in warnings[0], proc.stderr
    assert "ffn_gate_exps" in warnings[0] and "more than 3 dimensions" in warnings[0]
    report = repack.convert(model, out, force=True, include=["exps"], overrides=["experts"])
    plans = {p.name: p for p in report.tensors}
    plan = plans["blk.0.ffn_gate_exps.weight"]
    assert plan.repacked and plan.decision.code == "override" and "4-D" in plan.decision.reason
    assert plan.decision.overridden == ("experts",)
    assert plans["blk.0.ffn_down_exps.weight"].repacked
    assert_packed_exactly(model, out, {"blk.0.ffn_down_exps.weight", "blk.0.ffn_gate_exps.weight"})
    assert amx_repack_cli("verify", model, out).returncode == 0
    # a 3-D expert tensor whose N the runtime does not take stays, like a 2-D one
    narrow = write_model(tmp_path / "narrow.gguf", [("blk.0.ffn_up_exps.weight", "q4_0", (64, 48, 4))])
    (plan,) = repack.convert(narrow, tmp_path / "narrow-amx.gguf").tensors
    assert not plan.repacked and plan.decision.code == "shape_n"


def test_overrides_are_checked_against_the_layout(model, tmp_path):
    out = tmp_path / "o.gguf"
    for args, message in [
            (["--layout", "interleaved", "--allow-amx-n16"], "applies to the amx layout only"),
            (["--layout", "interleaved", "--override", "experts"],
             "'experts' is a soft default of the amx layout, not of interleaved"),
            (["--override", "embedding"], "'embedding' cannot be overridden: runtimes read the "
                                          "token embeddings with get_rows"),
            (["--override", "shape_rows"], "'shape_rows' cannot be overridden: the layout cannot "
                                           "hold such tensors"),
            (["--override", "nope"], "unknown code 'nope': the amx layout can override only "
                                     "shape_n, experts")]:
        proc = amx_repack_cli("convert", *args, model, out)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
        assert not out.exists()


def _tensor(name, tname, shape):
    t = type_by_name(tname)
    return TensorInfo(name, shape, t.id, 0, t.tensor_bytes(shape))


def test_k_rule():
    # A valid GGUF cannot hold a quantized row that is not whole blocks (the reader refuses it),
    # so the runtime's K rule (K % 256 for the K-quants and IQ4_XS, K % 32 for the others) is
    # checked on the decision itself.
    for tname in ("q4_K", "q5_K", "q6_K", "iq4_xs"):
        assert FAMILY_TABLES["amx"].decide(_tensor("w", tname, (256, 32))).packs
        d = FAMILY_TABLES["amx"].decide(TensorInfo("w", (128, 32), type_by_name(tname).id, 0, 0))
        assert d.target is None and not d.packs and d.code == "shape_k" and "256" in d.reason
    for tname in ("q4_0", "q4_1", "q8_0"):
        assert FAMILY_TABLES["amx"].decide(_tensor("w", tname, (32, 32))).packs
        d = FAMILY_TABLES["amx"].decide(TensorInfo("w", (48, 32), type_by_name(tname).id, 0, 0))
        assert d.code == "shape_k" and not d.packs
    # the override never lifts a rule other than N % 32
    d = decide("amx", TensorInfo("w", (128, 48), type_by_name("q4_K").id, 0, 0), allow_amx_n16=True)
    assert d.code == "shape_k" and not d.packs
    assert decide("amx", _tensor("w", "q4_0", (64, 48)), overrides={"shape_n"}).packs
    assert decide("amx", _tensor("w", "q4_0", (64, 40)), allow_amx_n16=True).code == "shape_rows"
    assert decide("amx", _tensor("w", "q4_0", (64, 48)), allow_amx_n16=True).packs


def test_inspect_names_the_runtime_and_the_reason(model, tmp_path):
    report = json.loads(amx_repack_cli("inspect", "--json", model, check=True).stdout)
    assert report["runtimes"] == {"amx": AMX_RUNTIME, "interleaved": "ik_llama.cpp"}
    assert report["runtimes"] == {k: RUNTIMES[k] for k in ("amx", "interleaved")}
    rows = {t["name"]: t["layouts"]["amx"] for t in report["tensors"]}
    assert all(d["code"] in CODES for t in report["tensors"] for d in t["layouts"].values()
               if not d["packs"])
    assert rows["blk.0.attn_k.weight"] == {
        "target": "amx_q4_0", "packs": False, "code": "shape_n",
        "reason": "ne1 = 48 is not a multiple of 32: llama.cpp's AMX backend needs N % 32"}
    assert rows["blk.0.attn_q.weight"]["packs"] and rows["blk.0.ffn_up.weight"]["packs"]
    assert rows["blk.0.attn_v.weight"]["code"] == "shape_rows"
    assert rows["token_embd.weight"]["code"] == "embedding"
    assert rows["blk.0.ffn_down_exps.weight"]["packs"]
    assert rows["blk.0.ffn_gate_exps.weight"]["code"] == "experts"
    assert "get_rows" in rows["token_embd.weight"]["reason"]
    assert rows["output_norm.weight"]["code"] == "type"
    # inspect agrees with what convert does, tensor for tensor
    out = tmp_path / "amx.gguf"
    repack.convert(model, out)
    types = out_types(out)
    for name, d in rows.items():
        assert (types[name] == d["target"]) == d["packs"], name

    text = amx_repack_cli("inspect", model, check=True).stdout
    assert f"amx layout runs in: {AMX_RUNTIME}" in text
    assert "interleaved layout runs in: ik_llama.cpp" in text
    for layout, runtime in (("amx", AMX_RUNTIME), ("interleaved", "ik_llama.cpp")):
        out = tmp_path / f"{layout}.gguf"
        repack.convert(model, out, layout=layout, force=True)
        report = json.loads(amx_repack_cli("inspect", "--json", out, check=True).stdout)
        assert report["repacked_by"]["layout"] == layout
        assert report["repacked_by"]["runtime"] == runtime
        assert f"layout {layout} v2, read by {runtime}" in amx_repack_cli("inspect", out).stdout
