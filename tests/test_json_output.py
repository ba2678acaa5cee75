"""The --json documents of convert, unpack, verify and inspect: docs/json.md, the key lists in
repack/report_json.py and real output, checked against each other (issue 12, item 5)."""

from __future__ import annotations

import json
import re

import pytest

from formats.layouts import CODES, SOFT_CODES
from repack.report_json import ENVELOPE_KEYS, KEYS, SCHEMA_VERSION
from tests.conftest import ROOT, amx_repack_cli
from tests.synthetic import write_model

DOC = ROOT / "docs" / "json.md"

TENSORS = [
    ("token_embd.weight", "q8_0", (64, 64)),
    ("output_norm.weight", "f32", (64,)),
    ("blk.0.attn_q.weight", "q4_0", (64, 64)),
    ("blk.0.attn_k.weight", "q4_0", (64, 48)),
    ("blk.0.ffn_down_exps.weight", "q8_0", (64, 64, 2)),      # amx: packed (MUL_MAT_ID)
    ("blk.0.ffn_gate_exps.weight", "q8_0", (64, 64, 2, 2)),   # amx: experts (4-D)
]


def documented() -> dict[str, dict[str, list[str]]]:
    """{section: {part: [keys]}} from the tables of docs/json.md: "## convert" is part "top",
    "### convert tensors[]" part "tensors"; "## Every document" is the envelope."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = part = None
    for line in DOC.read_text().splitlines():
        if m := re.match(r"## (.+)$", line):
            section, part = m[1].strip(), "top"
        elif m := re.match(r"### (\w+) (\w+)\[\]$", line):
            assert m[1] == section, line
            part = m[2]
        elif (m := re.match(r"\| `(\w+)` \|", line)) and section:
            sections.setdefault(section, {}).setdefault(part, []).append(m[1])
    return sections


def test_the_documentation_lists_exactly_the_keys_written():
    doc = documented()
    assert tuple(doc["Every document"]["top"]) == ENVELOPE_KEYS
    for command, parts in KEYS.items():
        assert tuple(doc["Every document"]["top"] + doc[command]["top"]) == parts["top"], command
        assert tuple(doc[command]["tensors"]) == parts["tensors"], command
        assert tuple(doc[command]["by_type"]) == parts["by_type"], command
    # every decision code, and which layout may override it
    assert doc["Decision codes"]["top"] == list(CODES)
    codes_table = DOC.read_text().split("## Decision codes")[1]
    soft = {m[1]: m[2] for m in re.finditer(r"\| `(\w+)` \| (\w+) \|", codes_table)}
    assert soft == {code: layout for layout, codes in SOFT_CODES.items() for code in codes}
    assert "docs/json.md" in (ROOT / "README.md").read_text()


def check(document: dict, command: str) -> None:
    keys = KEYS[command]
    assert list(document) == list(keys["top"])
    assert document["schema_version"] == SCHEMA_VERSION and document["command"] == command
    assert document["tensors"] and document["by_type"]
    for t in document["tensors"]:
        assert list(t) == list(keys["tensors"]), t
    for row in document["by_type"]:
        assert list(row) == list(keys["by_type"]), row
    assert isinstance(document["seconds"], float) and document["seconds"] >= 0


def run_json(*args) -> dict:
    proc = amx_repack_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)     # exactly one document: nothing else on stdout


@pytest.fixture
def model(tmp_path):
    return write_model(tmp_path / "m.gguf", TENSORS, seed=4)


def test_every_command_writes_its_documented_keys(model, tmp_path):
    out, back = tmp_path / "o.gguf", tmp_path / "back.gguf"
    plan = run_json("convert", "--dry-run", "--override", "shape_n", model, out)
    check(plan, "convert")
    done = run_json("convert", "--override", "shape_n", model, out)
    check(done, "convert")
    assert done["inputs"] == [str(model)] and done["outputs"] == [str(out)]
    assert done["layout"] == "amx" and done["dry_run"] is False and done["repacked"] == 3
    assert done["selection"] == {"include": [], "exclude": [], "overrides": ["shape_n"]}
    by_name = {t["name"]: t for t in done["tensors"]}
    assert by_name["blk.0.attn_q.weight"]["code"] is None
    assert by_name["blk.0.attn_k.weight"]["code"] == "override"
    assert by_name["blk.0.attn_k.weight"]["overridden"] == ["shape_n"]
    assert by_name["token_embd.weight"]["code"] == "embedding"
    assert by_name["blk.0.ffn_down_exps.weight"]["code"] is None
    assert by_name["blk.0.ffn_gate_exps.weight"]["code"] == "experts"
    assert all(t["code"] in CODES for t in done["tensors"] if t["code"])
    assert len(done["warnings"]) == 1 and "override 'shape_n'" in done["warnings"][0]
    assert sum(r["tensors"] for r in done["by_type"]) == len(TENSORS)
    assert sum(r["bytes_out"] for r in done["by_type"]) == done["bytes_out"]
    unpacked = run_json("unpack", out, back)
    check(unpacked, "unpack")
    assert unpacked["byte_identical"] is True and unpacked["foreign"] is False
    assert unpacked["unpacked"] == 3 and back.read_bytes() == model.read_bytes()
    verified = run_json("verify", model, out)
    check(verified, "verify")
    assert verified["ok"] and verified["verdict"] == "equivalent" and verified["failures"] == 0
    assert verified["inputs"] == [str(model), str(out)] and verified["outputs"] == []
    inspected = run_json("inspect", out)
    check(inspected, "inspect")
    assert inspected["repacked_by"]["layout"] == "amx"


def test_a_failed_verify_is_still_one_document(model, tmp_path):
    out = tmp_path / "o.gguf"
    amx_repack_cli("convert", "-q", model, out, check=True)
    other = write_model(tmp_path / "other.gguf", TENSORS, seed=5)
    proc = amx_repack_cli("verify", "--json", other, out)
    assert proc.returncode == 1
    d = json.loads(proc.stdout)
    check(d, "verify")
    assert d["ok"] is False and d["verdict"] == "mismatch" and d["failures"] > 0
    assert sum(r["failing"] for r in d["by_type"]) == d["failures"]


def test_unpack_refusal_is_still_one_document(model, tmp_path):
    """Issue 20, item 10: exit 1 with --json writes its document (docs/json.md)."""
    out, back = tmp_path / "o.gguf", tmp_path / "back.gguf"
    amx_repack_cli("convert", "-q", model, out, check=True)
    proc = amx_repack_cli("unpack", "--json", out, back, "--expect-sha256", "0" * 64)
    assert proc.returncode == 1 and not back.exists()
    d = json.loads(proc.stdout)
    assert list(d) == list(KEYS["unpack"]["top"]) and d["command"] == "unpack"
    assert d["outputs"] == [] and d["inputs"] == [str(out)] and d["byte_identical"] is False
    assert "sha256" in d["error"] and d["error"] in proc.stderr
    # the same command without the refusal: error null, sha256 checked
    want = __import__("hashlib").sha256(model.read_bytes()).hexdigest()
    ok = run_json("unpack", out, back, "--expect-sha256", want)
    check(ok, "unpack")
    assert ok["error"] is None and ok["sha256_checked"] is True and ok["digest"] == "sha256"


def _surrogates(value) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_surrogates(k) or _surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_surrogates(v) for v in value)
    return False


def test_non_utf8_paths_are_lossless(tmp_path):
    """Issue 20, item 12: a path that is not UTF-8 is valid Unicode in the document (no lone
    surrogates), and its exact bytes are in path_bytes (docs/json.md, "Paths")."""
    import base64
    import os
    folder = os.fsencode(tmp_path)
    src = write_model(os.fsdecode(folder + b"/model-\xff\xfe.gguf"), TENSORS, seed=4)
    out = os.fsdecode(folder + b"/out-\xe9.gguf")
    convert = run_json("convert", src, out)
    verify = run_json("verify", src, out)
    for d in (convert, verify, run_json("inspect", out)):
        assert not _surrogates(d)
        json.loads(json.dumps(d), strict=True)
        for written, encoded in d["path_bytes"].items():
            assert "\ufffd" in written and len(encoded) == 1
    assert convert["inputs"] == [os.fsencode(src).decode("utf-8", "replace")]
    raw = {base64.b64decode(v[0]) for v in convert["path_bytes"].values()}
    assert raw == {os.fsencode(src), os.fsencode(out)}
    assert base64.b64decode(verify["path_bytes"][verify["repacked"]][0]) == os.fsencode(out)
    # a UTF-8 path is written as it is, and path_bytes stays empty
    plain = tmp_path / "plain-é.gguf"
    plain.write_bytes(model_bytes := open(src, "rb").read())
    assert model_bytes and run_json("inspect", plain)["path_bytes"] == {}
