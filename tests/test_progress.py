"""Progress on stderr where it is not a terminal (issue 12, item 6): plain lines whose totals are
right for split models and .zst inputs (the bar said 327% on a 3-shard model), a phase for
decompression and for --compress, warnings as they happen, nothing but warnings with --quiet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import zstandard

from tests.conftest import amx_repack_cli
from tests.synthetic import small_model_tensors, write_model
from tests.test_split_moe import write_moe_model

LINE = re.compile(r"^amx-repack: (\w+) (\d+)% \(([\d.]+ \w+) of ([\d.]+ \w+), \d+ s\)$")


def _phases(stderr: str) -> dict[str, list[int]]:
    """Percentages printed per phase, in order; every progress line must parse."""
    phases: dict[str, list[int]] = {}
    for line in stderr.splitlines():
        if line.startswith("amx-repack: ") and "%" in line:
            m = LINE.match(line)
            assert m, f"malformed progress line: {line!r}"
            phases.setdefault(m[1], []).append(int(m[2]))
    return phases


def _assert_complete(percents: list[int]) -> None:
    assert percents and all(0 <= p <= 100 for p in percents), percents
    assert percents == sorted(percents) and percents[-1] == 100, percents


@pytest.fixture(scope="module")
def split_model(tmp_path_factory) -> list[Path]:
    shards = write_moe_model(tmp_path_factory.mktemp("split") / "moe.gguf", split_max_tensors=4)
    assert len(shards) == 3
    return shards


@pytest.mark.parametrize("layout", ["amx", "interleaved", "none"])
def test_split_model_progress_ends_at_100(split_model, layout, tmp_path):
    out = tmp_path / "out.gguf"
    proc = amx_repack_cli("convert", "--layout", layout, "-t", "2", split_model[0], out,
                          check=True)
    phases = _phases(proc.stderr)
    assert list(phases) == ["convert"]
    _assert_complete(phases["convert"])
    packed = tmp_path / "out-00001-of-00003.gguf"
    if layout != "none":
        v = amx_repack_cli("verify", split_model[0], packed, check=True)
        assert list(_phases(v.stderr)) == ["verify"]
        _assert_complete(_phases(v.stderr)["verify"])
        u = amx_repack_cli("unpack", packed, tmp_path / "back.gguf", check=True)
        assert list(_phases(u.stderr)) == ["unpack"]
        _assert_complete(_phases(u.stderr)["unpack"])


def test_compress_shows_its_own_phase(split_model, tmp_path):
    proc = amx_repack_cli("convert", "--compress", split_model[0], tmp_path / "out.gguf",
                          check=True)
    phases = _phases(proc.stderr)
    assert list(phases) == ["convert", "compress"]
    for percents in phases.values():
        _assert_complete(percents)


@pytest.fixture(scope="module")
def small_zst(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("zst")
    plain = write_model(folder / "small.gguf", small_model_tensors())
    path = folder / "small.gguf.zst"
    with open(plain, "rb") as src, open(path, "wb") as dst:
        zstandard.ZstdCompressor(level=1).copy_stream(src, dst)   # declares no content size
    return path


def test_zst_input_shows_decompression_then_work(small_zst, tmp_path):
    proc = amx_repack_cli("convert", small_zst, tmp_path / "out.gguf", check=True)
    phases = _phases(proc.stderr)
    assert list(phases) == ["decompress", "convert"]
    for percents in phases.values():
        _assert_complete(percents)
    v = amx_repack_cli("verify", small_zst, tmp_path / "out.gguf", check=True)
    assert list(_phases(v.stderr)) == ["decompress", "verify"]


def test_quiet_hides_progress_never_warnings(tmp_path):
    model = write_model(tmp_path / "f32.gguf", [("output_norm.weight", "f32", (512,)),
                                                ("blk.0.ffn_norm.weight", "f32", (512,))])
    loud = amx_repack_cli("convert", model, tmp_path / "loud.gguf", check=True)
    assert "warning: no tensor is eligible for the amx layout" in loud.stderr
    assert _phases(loud.stderr)
    # the warning comes before the work it concerns, not after the summary
    lines = loud.stderr.splitlines()
    first_warning = next(i for i, line in enumerate(lines) if line.startswith("warning:"))
    progress_lines = [i for i, line in enumerate(lines) if LINE.match(line)]
    assert first_warning < progress_lines[0], lines
    quiet = amx_repack_cli("convert", "-q", model, tmp_path / "quiet.gguf", check=True)
    assert quiet.stdout == ""
    assert [line for line in quiet.stderr.splitlines()] == \
        ["warning: no tensor is eligible for the amx layout; output is a copy with amx-repack "
         "metadata"]
