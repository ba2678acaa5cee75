"""Selection that cannot produce a broken model (issue 12, items 1-3 and 8).

* --include / --exclude only narrow the selection; a pattern that matches no tensor is exit 2;
  with --layout none they are a usage error.
* --override CODE lifts a soft default, with a warning that --quiet does not hide; the embedding
  rule (get_rows) is not overridable.
* convert --dry-run prints the plan convert follows and writes nothing.
* The API's messages name no command-line flag; the CLI adds them.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

import repack
from formats.gguf_container import read_gguf
from tests.conftest import ROOT, amx_repack_cli
from tests.synthetic import fingerprint, write_model
from tests.test_ik_interleaved import generate

TENSORS = [
    ("token_embd.weight", "q8_0", (64, 64)),
    ("output_norm.weight", "f32", (64,)),
    ("blk.0.attn_q.weight", "q4_0", (64, 64)),
    ("blk.0.attn_k.weight", "q4_0", (64, 48)),            # amx: shape_n (soft)
    ("blk.0.ffn_up.weight", "q4_K", (256, 32)),
    ("blk.0.ffn_down_exps.weight", "q8_0", (64, 64, 2)),  # amx: packed (MUL_MAT_ID)
    ("blk.0.ffn_gate_exps.weight", "q8_0", (64, 64, 2, 2)),  # amx: experts (4-D, soft)
    ("blk.0.attn_v.weight", "bf16", (64, 16)),            # interleaved: bf16 (soft)
    ("blk.0.ffn_gate.weight", "q4_0", (64, 8)),           # interleaved: runtime_rows (soft)
]


@pytest.fixture
def model(tmp_path):
    return write_model(tmp_path / "m.gguf", TENSORS, seed=11)


def types(path) -> dict[str, str]:
    with read_gguf(path) as f:
        return {t.name: t.type.name for t in f.tensors}


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_gemma_include_everything_keeps_the_embedding_and_ik_generates_the_originals_tokens(
        gemma_path, tmp_path):
    """The issue's case: `--include .` packed the tied token_embd.weight and ik_llama.cpp
    generated token 0 over and over. Now the embedding stays, and ik generates the original's
    tokens from our file."""
    out = tmp_path / "inc.gguf"
    proc = amx_repack_cli("convert", "-q", "--layout", "interleaved", "--include", ".",
                          gemma_path, out, check=True)
    assert warnings_of(proc.stderr) == []
    got = types(out)
    assert got["token_embd.weight"] == "q8_0"
    assert sum(t.endswith(("_r4", "_r8")) for t in got.values()) == 126
    ours, original = generate(out, 16), generate(gemma_path, 16)
    assert ours["tokens"] == original["tokens"]
    assert len(set(ours["tokens"])) > 1, ours          # not one token repeated (it was 0)
    assert "France" in ours["text"]


@pytest.mark.parametrize("layout,code,tensor", [
    ("amx", "shape_n", "blk.0.attn_k.weight"),
    ("amx", "experts", "blk.0.ffn_gate_exps.weight"),
    ("interleaved", "bf16", "blk.0.attn_v.weight"),
    ("interleaved", "runtime_rows", "blk.0.ffn_gate.weight"),
])
def test_include_only_narrows_and_override_packs_with_a_warning(model, tmp_path, layout, code,
                                                                tensor):
    out = tmp_path / "o.gguf"
    before = fingerprint(model)
    # --include matching the tensor does not pack it: the soft default stays
    proc = amx_repack_cli("convert", "-q", "--layout", layout, "--include", re.escape(tensor),
                          model, out, check=True)
    assert types(out)[tensor] == types(model)[tensor]
    assert warnings_of(proc.stderr) == [f"warning: no tensor is eligible for the {layout} layout; "
                                        f"output is a copy with amx-repack metadata"]
    # --override CODE packs it, and says so even with --quiet
    proc = amx_repack_cli("convert", "-q", "--force", "--layout", layout, "--include",
                          re.escape(tensor), "--override", code, model, out, check=True)
    assert proc.stdout == ""
    assert types(out)[tensor] != types(model)[tensor]
    (warning,) = warnings_of(proc.stderr)
    assert f"override '{code}'" in warning and tensor in warning and "1 repacked" in warning
    assert "embedding" not in warning
    # what was packed is exact: verify proves it, unpack gives the original back
    assert amx_repack_cli("verify", model, out).returncode == 0
    back = tmp_path / "back.gguf"
    amx_repack_cli("unpack", "-q", out, back, check=True)
    assert back.read_bytes() == model.read_bytes()
    assert fingerprint(model) == before


def test_the_embedding_is_never_packed(model, tmp_path):
    out = tmp_path / "o.gguf"
    for layout in ("amx", "interleaved"):
        every = [a for code in repack_soft(layout) for a in ("--override", code)]
        amx_repack_cli("convert", "-q", "--force", "--layout", layout, "--include", ".", *every,
                       model, out, check=True)
        assert types(out)["token_embd.weight"] == "q8_0"
        proc = amx_repack_cli("convert", "--force", "--layout", layout, "--override",
                              "embedding", model, out)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "'embedding' cannot be overridden" in proc.stderr and "get_rows" in proc.stderr


def repack_soft(layout):
    from formats.layouts import SOFT_CODES
    return SOFT_CODES[layout]


@pytest.mark.parametrize("args,message", [
    (["--include", "attn_z"], "include pattern 'attn_z' matches no tensor of the model"),
    (["--include", "attn", "--exclude", "nothing_here"],
     "exclude pattern 'nothing_here' matches no tensor of the model"),
    (["--layout", "none", "--include", "attn"], "layout none copies the file as it is"),
    (["--layout", "none", "--exclude", "attn"], "layout none copies the file as it is"),
    (["--layout", "none", "--override", "experts"], "layout none copies the file as it is"),
    (["--layout", "none", "--allow-amx-n16"], "applies to the amx layout only"),
])
def test_selection_usage_errors(model, tmp_path, args, message):
    out = tmp_path / "out"
    out.mkdir()
    for dry in ([], ["--dry-run"]):
        proc = amx_repack_cli("convert", *dry, *args, model, out / "o.gguf")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == f"amx-repack: error: {message}\n" or (
            message in proc.stderr and proc.stderr.count("\n") == 1), proc.stderr
        assert list(out.iterdir()) == []


def test_patterns_must_match_in_some_shard(tmp_path):
    """A split model: a pattern matching a tensor of the last shard only is fine."""
    from tests.test_split_moe import write_moe_model
    shards = write_moe_model(tmp_path / "moe.gguf", split_max_tensors=4)
    with read_gguf(shards[-1]) as f:
        last = f.tensors[-1].name
    with read_gguf(shards[0]) as f:
        assert last not in {t.name for t in f.tensors}
    report = repack.convert(shards[0], tmp_path / "o.gguf", layout="interleaved",
                            include=[re.escape(last)], dry_run=True)
    assert {p.name for p in report.tensors if p.decision.code == "include"}
    assert not list(tmp_path.glob("o*"))


def test_dry_run_is_the_plan_convert_follows(model, tmp_path):
    out = tmp_path / "dest" / "o.gguf"
    out.parent.mkdir()
    before = fingerprint(model)
    for layout, extra in (("amx", ["--override", "experts"]),
                          ("interleaved", ["--exclude", "ffn_up"]), ("none", [])):
        args = ["--layout", layout, *extra, model]
        proc = amx_repack_cli("convert", "--dry-run", "--json", *args, out, check=True)
        plan = json.loads(proc.stdout)
        assert plan["dry_run"] is True and plan["outputs"] == [str(out)]
        assert list(out.parent.iterdir()) == [] and fingerprint(model) == before
        # the text form: every tensor with its target or its code and reason, and the totals
        text = amx_repack_cli("convert", "--dry-run", *args, out, check=True).stdout
        for t in plan["tensors"]:
            line = next(l for l in text.splitlines() if l.startswith(t["name"] + " "))
            assert (t["output_type"] if t["repacked"] else "keep") in line
            assert t["repacked"] or t["code"] in line
        assert "dry run, nothing written" in text and "would repack" in text
        assert list(out.parent.iterdir()) == []
        # the real run does exactly what the plan said
        done = json.loads(amx_repack_cli("convert", "--json", *args, out, check=True).stdout)
        assert done["dry_run"] is False
        assert done["tensors"] == plan["tensors"] and done["by_type"] == plan["by_type"]
        assert types(out) == {t["name"]: t["output_type"] for t in plan["tensors"]}
        assert done["warnings"] == plan["warnings"] and done["notes"] == plan["notes"]
        out.unlink()
    assert fingerprint(model) == before


def test_dry_run_over_an_existing_output_refuses_as_the_conversion_would(model, tmp_path):
    """The dry run predicts the real run (issue 20, item 9): an existing output is refused
    without force, with the same exception; with force it is planned over."""
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(repack.OutputExists) as e:
        repack.convert(model, out, dry_run=True)
    assert "already exists" in str(e.value) and "--force" not in str(e.value)
    report = repack.convert(model, out, dry_run=True, force=True)
    assert report.dry_run and not report.warnings
    assert out.read_bytes() == b"keep me"


# ------------------------------------------------------------------------------------------
# Item 8: the API names no command-line flag; the CLI adds the words


def test_output_exists_api_and_cli_messages(model, tmp_path):
    out = tmp_path / "o.gguf"
    out.write_bytes(b"x")
    with pytest.raises(repack.OutputExists) as e:
        repack.convert(model, out)
    assert str(e.value) == f"output {out} already exists"
    proc = amx_repack_cli("convert", model, out)
    assert proc.returncode == 2
    assert proc.stderr == f"amx-repack: error: output {out} already exists (use --force to " \
                          f"replace it)\n"


def test_no_records_api_and_cli_messages(tmp_path):
    # packed tensors (as ik's llama-quantize --repack writes them) and none of our records; a
    # plain model is refused earlier, with nothing to unpack (tests/test_first_hour.py)
    model = write_model(tmp_path / "ik.gguf", [("blk.0.attn_q.weight", "q4_0_r8", (64, 64))])
    with pytest.raises(repack.NoRecords) as e:
        repack.unpack(model, tmp_path / "o.gguf")
    assert "--" not in str(e.value) and "no amx_repack.* records" in str(e.value)
    proc = amx_repack_cli("unpack", model, tmp_path / "o.gguf")
    assert proc.returncode == 2 and proc.stderr.rstrip().endswith("(use unpack --foreign)")
    assert not (tmp_path / "o.gguf").exists()


def test_usage_errors_of_the_api_name_no_flag(model, tmp_path):
    for kw in (dict(include=["("]), dict(include=["zzz"]), dict(overrides=["embedding"]),
               dict(layout="interleaved", allow_amx_n16=True), dict(threads=-1),
               dict(layout="none", exclude=["attn"])):
        with pytest.raises(repack.UsageError) as e:
            repack.convert(model, tmp_path / "o.gguf", **kw)
        assert not re.search(r"--[a-z]", str(e.value)), str(e.value)


def _raised_strings(path: Path):
    """Every string literal inside a raise statement of a module (f-string parts included)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield sub.lineno, sub.value


def test_no_library_exception_mentions_a_flag():
    """Scans every raise of the library (all but the CLI module) for a '--flag'."""
    found = []
    for path in sorted([*(ROOT / "repack").glob("*.py"), *(ROOT / "formats").glob("*.py")]):
        if path.name == "cli.py":
            continue
        found += [f"{path.name}:{line}: {text!r}" for line, text in _raised_strings(path)
                  if re.search(r"--[a-z]", text)]
    assert found == []
