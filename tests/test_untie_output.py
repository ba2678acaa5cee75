"""convert --layout amx --untie-output: a packed output.weight for models whose output matrix is
their token_embd.weight (formats/tied_output.py).

Proved here on the real Gemma-3-270M Q4_K_M (its output matrix is the tied Q8_0 embedding): the
added tensor is exactly the embedding in the AMX layout (upstream llama.cpp's own packer gives
its bytes), every other tensor is as a plain convert writes it, verify (pair and standalone)
checks it against the embedding and catches one changed byte, unpack gives the original back
byte for byte, inspect shows it; the patched llama.cpp generates the same tokens from it as stock
llama.cpp from the original with nothing packed at load (no AMX buffer); and the architecture
table is what llama.cpp's loader says. Refusals: an architecture whose loader ignores
output.weight, a model that has one, an embedding with no AMX layout or shape, other layouts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess

import pytest

import repack
from formats import tied_output
from formats.gguf_container import read_gguf
from repack import metadata
from tests.conftest import amx_repack_cli
from tests._paths import pinned_llama_cpp_sdist
from tests.synthetic import sha256, write_model
from tests.test_llama_runtime import ROOT, generate, runtime  # noqa: F401  (the runtime fixture)

EMBD, OUTPUT = tied_output.SOURCE_NAME, tied_output.OUTPUT_NAME


@pytest.fixture(scope="module")
def gemma_untied(tmp_path_factory, gemma_path):
    """(original, plain amx convert, --untie-output convert) of the Gemma fixture."""
    out = tmp_path_factory.mktemp("untie")
    plain, untied = out / "plain.gguf", out / "untied.gguf"
    repack.convert(gemma_path, plain, layout="amx")
    report = repack.convert(gemma_path, untied, layout="amx", untie_output=True)
    assert [p.name for p in report.added] == [OUTPUT]
    yield gemma_path, plain, untied
    shutil.rmtree(out, ignore_errors=True)


def test_untied_file_holds_the_packed_embedding(gemma_untied):
    original, plain, untied = gemma_untied
    with read_gguf(original) as o, read_gguf(plain) as p, read_gguf(untied) as u:
        assert OUTPUT not in {t.name for t in o.tensors}
        embd, out = u.tensor(EMBD), u.tensor(OUTPUT)
        # the embedding stays as it is (get_rows reads it); the output matrix is its AMX copy
        assert embd.type.name == "q8_0" and bytes(u.tensor_data(embd)) == bytes(o.tensor_data(o.tensor(EMBD)))
        assert out.type.name == "amx_q8_0" and out.type_id == 1024 + embd.type_id
        assert out.shape == embd.shape
        # every tensor the plain convert writes is written the same
        assert [t.name for t in u.tensors] == [t.name for t in p.tensors] + [OUTPUT]
        for t in p.tensors:
            assert (u.tensor(t.name).type_id, u.tensor(t.name).shape) == (t.type_id, t.shape)
            assert bytes(u.tensor_data(u.tensor(t.name))) == bytes(p.tensor_data(t)), t.name
        # the file grows by that tensor (and its records, a few hundred bytes)
        grown = u.file_size - p.file_size
        assert out.nbytes <= grown < out.nbytes + 4096
        info = metadata.read_info(u.kv)
        assert (info.added_tensors, info.added_sources) == ([OUTPUT], [EMBD])


def test_upstream_packer_gives_the_added_tensor(runtime, gemma_untied, tmp_path):  # noqa: F811
    """llama.cpp's own AMX packer (convert_B_packed_format), given the original embedding, writes
    exactly our output.weight: what the runtime would have packed at load is in the file."""
    original, _, untied = gemma_untied
    with read_gguf(original) as o, read_gguf(untied) as u:
        embd = o.tensor(EMBD)
        manifest = tmp_path / "manifest.txt"
        manifest.write_text(f"{embd.type.name} {embd.ne1} {embd.ne0} {o.data_start + embd.offset}\n")
        packed = tmp_path / "upstream.bin"
        proc = subprocess.run([runtime["stock"] / "amx-kernel-check", "pack", original, manifest,
                               packed], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert packed.read_bytes() == bytes(u.tensor_data(u.tensor(OUTPUT)))


def test_verify_unpack_inspect(gemma_untied, tmp_path):
    original, _, untied = gemma_untied
    for check in (repack.verify(original, untied, decode_values=True),
                  repack.verify(None, untied, decode_values=True)):
        assert check.ok, [(t.name, t.detail) for t in check.failures] + check.metadata_problems
        out = next(t for t in check.tensors if t.name == OUTPUT)
        assert out.added_from == EMBD
        # against the embedding's bytes (the original's, or this file's own), its packing and
        # decoded values
        assert {"bytes", "digest", "layout", "values"} <= set(out.checks)
    for args in ((original, untied), (untied,)):
        proc = amx_repack_cli("verify", *args, "--all")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "EQUIVALENT" in proc.stdout and f"a packed copy of '{EMBD}'" in proc.stdout

    back = tmp_path / "back.gguf"
    proc = amx_repack_cli("unpack", untied, back, check=True)
    assert sha256(back) == sha256(original)
    assert f"left out '{OUTPUT}'" in proc.stderr

    info = repack.inspect(untied)
    assert info.repacked_by["added_tensors"] == {OUTPUT: EMBD}
    row = next(t for t in info.tensors if t.name == OUTPUT)
    assert (row.added_from, row.type, row.original_type) == (EMBD, "amx_q8_0", "q8_0")
    assert next(t for t in info.tensors if t.name == EMBD).added_from is None
    text = amx_repack_cli("inspect", untied, check=True).stdout
    assert f"{OUTPUT} (added)" in text and f"added by convert --untie-output: {OUTPUT}" in text
    import json
    as_json = json.loads(amx_repack_cli("inspect", untied, "--json", check=True).stdout)
    assert as_json["repacked_by"]["added_tensors"] == {OUTPUT: EMBD}
    assert [t["added_from"] for t in as_json["tensors"] if t["name"] == OUTPUT] == [EMBD]


def _copy_with(src, dst, offset: int, new: bytes):
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        f.write(new)


def test_changed_byte_in_added_tensor_fails_verify(gemma_untied, tmp_path):
    original, _, untied = gemma_untied
    with read_gguf(untied) as u:
        out = u.tensor(OUTPUT)
        # a quant byte in the middle of the tensor (amx_q8_0: 16-row tiles of int8 quants)
        at = u.data_start + out.offset + out.nbytes // 2 + 7
        old = u.buffer[at]
    bad = tmp_path / "bad.gguf"
    _copy_with(untied, bad, at, bytes([old ^ 0x10]))
    for args in ((original, bad), (bad,)):
        proc = amx_repack_cli("verify", *args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        line = next(l for l in proc.stdout.splitlines() if l.startswith(OUTPUT))
        assert "mismatch" in line and f"checked against '{EMBD}'" in line
    # the original is still rebuilt exactly: unpack writes nothing of the added tensor
    back = tmp_path / "back.gguf"
    amx_repack_cli("unpack", bad, back, check=True)
    assert sha256(back) == sha256(original)


def test_unrecorded_output_weight_is_not_dropped(gemma_untied, tmp_path):
    """An output.weight the records do not name as added (here: both added-tensor records renamed,
    as if someone else had added the tensor) is part of the header unpack must rebuild: refused."""
    original, _, untied = gemma_untied
    forged = tmp_path / "forged.gguf"
    shutil.copyfile(untied, forged)
    with read_gguf(untied) as u:
        header = bytes(u.buffer[:u.data_start])
    with open(forged, "r+b") as f:
        for key in (metadata.KEY_ADDED_TENSORS, metadata.KEY_ADDED_SOURCES):
            f.seek(header.index(key.encode()) + len(key) - 1)
            f.write(b"z")
    proc = amx_repack_cli("unpack", forged, tmp_path / "back.gguf")
    assert proc.returncode == 1 and "header" in proc.stderr, proc.stderr
    assert not (tmp_path / "back.gguf").exists()
    for args in ((original, forged), (forged,)):
        assert amx_repack_cli("verify", *args).returncode == 1


def test_patched_runtime_loads_untied_file_with_nothing_packed(runtime, gemma_untied):  # noqa: F811
    original, plain, untied = gemma_untied
    stock = generate(runtime["stock"], original)
    on_plain = generate(runtime["patched"], plain)
    on_untied = generate(runtime["patched"], untied)
    for r in (stock, on_plain, on_untied):
        assert r["returncode"] == 0, r["stderr"][-2000:]
    assert on_untied["tokens"] == stock["tokens"] == on_plain["tokens"]
    assert len(stock["tokens"]) >= 4
    # the plain file still has the runtime pack the tied embedding; the untied one nothing
    assert on_plain["repacked"] == [EMBD] and on_plain["buffers"]["AMX"] > 100
    assert on_untied["repacked"] == []
    assert "AMX" not in on_untied["buffers"]
    assert on_untied["buffers"]["CPU_Mapped"] > on_plain["buffers"]["CPU_Mapped"] + 100


# --------------------------------------------------------------------------------------------
# Which models, and refusals


def test_architecture_table_is_llama_cpp_loaders():
    """The table equals what runtime/llama.cpp/tools/untie_output_archs.py derives from the pinned
    llama.cpp source (every architecture's load_arch_tensors)."""
    spec = importlib.util.spec_from_file_location(
        "untie_output_archs", ROOT / "runtime" / "llama.cpp" / "tools" / "untie_output_archs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    sdist = pinned_llama_cpp_sdist()
    derived = tool.derive(tool.read_source(sdist))
    assert set(derived) == tied_output.UNTIE_OUTPUT_ARCHITECTURES
    # spot checks of the rule: gemma3 falls back to the embedding, gemma2 always uses it
    assert "gemma3" in derived and "llama" in derived and "qwen3moe" in derived
    assert "gemma2" not in derived and "gemma" not in derived and "command-r" not in derived


TIED = [("token_embd.weight", "q8_0", (512, 256)), ("output_norm.weight", "f32", (512,)),
        ("blk.0.attn_q.weight", "q4_0", (512, 512))]


@pytest.mark.parametrize("arch, tensors, message", [
    ("gemma2", TIED, "loader for architecture 'gemma2' does not take a separate output.weight"),
    ("llama", TIED + [("output.weight", "q8_0", (512, 256))], "already has its own output.weight"),
    ("llama", [("token_embd.weight", "q5_0", (512, 256))] + TIED[1:],
     "token_embd.weight (q5_0, 512x256) cannot run as an AMX output matrix: q5_0 has no AMX layout"),
    ("llama", [("token_embd.weight", "q8_0", (512, 40))] + TIED[1:],
     "ne1 = 40 is not a multiple of 16"),
    ("llama", TIED[1:], "has no token_embd.weight"),
])
def test_refused(tmp_path, arch, tensors, message):
    model = write_model(tmp_path / "m.gguf", tensors, arch=arch)
    before = sha256(model)
    proc = amx_repack_cli("convert", model, tmp_path / "out.gguf", "--untie-output")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "cannot untie the output matrix" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == ["m.gguf"] and sha256(model) == before


@pytest.mark.parametrize("layout", ["interleaved", "none"])
def test_other_layouts_are_a_usage_error(tmp_path, layout):
    model = write_model(tmp_path / "m.gguf", TIED)
    proc = amx_repack_cli("convert", model, tmp_path / "out.gguf", "--layout", layout,
                          "--untie-output")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("amx-repack: error: untying the output matrix applies to the "
                                   "amx layout only")
    assert os.listdir(tmp_path) == ["m.gguf"]


def test_include_cannot_pack_the_embedding_it_copies(tmp_path):
    """--include only narrows: naming token_embd.weight packs the added output.weight, never the
    embedding itself (get_rows reads it)."""
    model = write_model(tmp_path / "m.gguf", TIED)
    out = tmp_path / "out.gguf"
    amx_repack_cli("convert", model, out, "--untie-output", "--include", "token_embd", check=True)
    with read_gguf(out) as f:
        types = {t.name: t.type.name for t in f.tensors}
    assert types["token_embd.weight"] == "q8_0" and types["output.weight"] == "amx_q8_0"
    assert repack.verify(model, out).ok


def test_synthetic_round_trip(tmp_path):
    """A llama-architecture model: convert, verify both ways, unpack byte for byte."""
    model = write_model(tmp_path / "m.gguf", TIED, seed=3)
    out = tmp_path / "out.gguf"
    proc = amx_repack_cli("convert", model, out, "--untie-output", "--verify", check=True)
    # --verify checked the added tensor too: blk.0.attn_q.weight and output.weight
    assert "the same float values (2 tensors)" in proc.stderr
    assert repack.verify(model, out).ok and repack.verify(None, out).ok
    amx_repack_cli("unpack", out, tmp_path / "back.gguf", check=True)
    assert sha256(tmp_path / "back.gguf") == sha256(model)
    # progress ends at its announced total: convert counts the added tensor it writes, unpack
    # does not count the one it leaves out
    for run in (lambda seen: repack.convert(model, tmp_path / "again.gguf", untie_output=True,
                                            progress=seen),
                lambda seen: repack.unpack(out, tmp_path / "back2.gguf", progress=seen)):
        seen = ProgressRecord()
        run(seen)
        assert seen.phases and all(done == total for _, total, done in seen.phases), seen.phases


class ProgressRecord:
    """A progress object as the CLI's: told of each phase and its total, then of bytes done."""

    def __init__(self):
        self.phases = []

    def phase(self, name, total):
        self.phases.append([name, total, 0])

    def __call__(self, n):
        self.phases[-1][2] += n


def test_dry_run_plans_the_added_tensor(tmp_path):
    """--dry-run --untie-output: the plan lists output.weight as added (JSON and text), writes
    nothing, and is what the real run then does."""
    model = write_model(tmp_path / "m.gguf", TIED, seed=5)
    out = tmp_path / "out.gguf"
    args = ("convert", "--untie-output", model, out)
    plan = json.loads(amx_repack_cli(*args[:1], "--dry-run", "--json", *args[1:], check=True).stdout)
    text = amx_repack_cli(*args[:1], "--dry-run", *args[1:], check=True).stdout
    assert os.listdir(tmp_path) == ["m.gguf"]
    (added,) = [t for t in plan["tensors"] if t["added_from"]]
    assert added["name"] == "output.weight" and added["added_from"] == "token_embd.weight"
    assert added["output_type"] == "amx_q8_0" and added["repacked"]
    line = next(l for l in text.splitlines() if l.startswith("output.weight "))
    assert "added" in line and "a packed copy of token_embd.weight" in line
    assert f"of {len(TIED)} tensors (and 1 added)" in text
    done = json.loads(amx_repack_cli(*args[:1], "--json", *args[1:], check=True).stdout)
    assert done["tensors"] == plan["tensors"] and done["by_type"] == plan["by_type"]
