"""Issue 20, item 2: the layout a model declares agrees with every tensor's type and across its
shards, or verify (standalone and pair), unpack and inspect refuse it with one line (exit 2)."""

from __future__ import annotations

import pytest

import repack
from formats.gguf_container import read_gguf
from repack import metadata
from tests.conftest import amx_repack_cli, stderr_lines
from tests.forgery import mixed_shards, split_model
from tests.test_wrong_success import edit
from tests.ggufbuild import kv_str


def refused_everywhere(first, original, out, *pieces: str) -> None:
    for args in (("verify", first), ("verify", original, first), ("unpack", first, out),
                 ("inspect", first)):
        proc = amx_repack_cli(*args)
        lines = stderr_lines(proc.stderr)
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stdout, proc.stderr)
        assert lines[0].startswith("amx-repack: error: ")
        assert all(p in lines[0] for p in pieces), (args, lines[0])
    assert not out.exists() and list(out.parent.glob("*tmp*")) == []


def test_shards_of_different_layouts_are_refused(tmp_path):
    first = mixed_shards(tmp_path)
    with read_gguf(first) as a, read_gguf(str(first).replace("00001-of", "00002-of")) as b:
        # each shard on its own is a good conversion: amx types in one, interleaved in the other
        assert {t.type.origin for t in a.tensors} >= {"amx"}
        assert metadata.read_info(b.kv).layout == "interleaved"
    originals = tmp_path / "orig"
    originals.mkdir()
    original = split_model(originals)
    refused_everywhere(first, original, tmp_path / "out.gguf", "declares layout interleaved",
                       "declares amx", "one conversion")


@pytest.mark.parametrize("layout,wrong", [("amx", "interleaved"), ("interleaved", "amx")])
def test_a_wrong_declared_layout_is_refused(tmp_path, layout, wrong):
    folder = tmp_path / "m"
    folder.mkdir()
    original = split_model(folder)
    out = tmp_path / "r.gguf"
    repack.convert(original, out, layout=layout, threads=1)
    first = str(out).replace(".gguf", "-00001-of-00002.gguf")
    second = str(out).replace(".gguf", "-00002-of-00002.gguf")
    for shard in (first, second):   # both shards relabelled: they agree with each other
        bad = edit(shard, shard + ".bad", kv=lambda k: k.update(
            {metadata.KEY_LAYOUT: kv_str(metadata.KEY_LAYOUT, wrong)}))
        bad.replace(shard)
    refused_everywhere(first, original, tmp_path / "out.gguf", f"a type of the {layout} layout",
                       f"declares layout {wrong}", "'amx_repack.layout'")
