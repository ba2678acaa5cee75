"""Names from a file never break the command line's output.

A tensor name (or key, or path) is a byte string the file chooses: it can hold a newline, a
carriage return, a tab or a terminal escape sequence. Tables keep one line per row and errors one
line; every such character is written as an escape, and none reaches the terminal raw.
"""

from __future__ import annotations

import re
import struct

import pytest

import repack
from tests.conftest import amx_repack_cli, stderr_lines
from tests.ggufbuild import RawGGUF, RawTensor, kv_str, kv_u32
from tests.synthetic import write_model

EVIL = ["blk.0.ffn_up\nweight", "blk.0.ffn_down\r\x1b[2Jweight", "blk.1.ffn\tup\u202eweight",
        "blk.1.ffn\x00down\x7f.weight"]
# a terminal control character anywhere but at the end of a line
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202e]")


def _escaped(name: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


@pytest.fixture
def evil_model(tmp_path):
    # 64-row Q4_0 tensors (packed by both layouts) and a 48-row one (kept by amx: code shape_n,
    # which convert's summary notes by name)
    tensors = [(EVIL[0], "q4_0", (256, 64)), (EVIL[1], "q8_0", (256, 64)),
               (EVIL[2], "q4_0", (256, 48)), (EVIL[3], "f32", (256,))]
    return write_model(tmp_path / "evil.gguf", tensors, seed=5)


def test_inspect_table_escapes_names(evil_model):
    proc = amx_repack_cli("inspect", evil_model, check=True)
    assert not RAW_CONTROL.search(proc.stdout), proc.stdout
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("tensor "))
    rows = lines[header + 2:header + 2 + len(EVIL)]
    assert [row.split("  ")[0] for row in rows] == [_escaped(n) for n in EVIL]
    assert lines[header + 2 + len(EVIL)] == ""      # the table has exactly one line per tensor
    # the API and --json give the names as they are
    assert [t.name for t in repack.inspect(evil_model).tensors] == EVIL
    assert '"blk.0.ffn_up\\nweight"' in amx_repack_cli("inspect", "--json", evil_model).stdout


def test_convert_summary_and_verify_table_escape_names(evil_model, tmp_path):
    out = tmp_path / "out.gguf"
    proc = amx_repack_cli("convert", evil_model, out, check=True)
    for stream in (proc.stdout, proc.stderr):
        assert not RAW_CONTROL.search(stream), stream
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and _escaped(EVIL[2]) in notes[0], proc.stderr
    assert all(line.startswith(("note: ", "runtime: ", "warning: "))
               for line in stderr_lines(proc.stderr)), proc.stderr
    proc = amx_repack_cli("verify", "--all", evil_model, out, check=True)
    assert not RAW_CONTROL.search(proc.stdout), proc.stdout
    listed = [line.split("  ")[0] for line in proc.stdout.splitlines()[2:2 + len(EVIL)]]
    assert sorted(listed) == sorted(_escaped(n) for n in EVIL), proc.stdout


def test_error_quoting_a_name_is_one_line(tmp_path):
    """The reader's error names the tensor: one line on stderr, the name escaped."""
    name = "blk.0.attn\n\x1b[31mq.weight"
    raw = RawGGUF(kvs=[kv_str("general.architecture", "test"), kv_u32("general.alignment", 32)],
                  tensors=[RawTensor(name, (32, 16), 8, 0), RawTensor(name, (8,), 0, 544)],
                  data=bytes(544) + struct.pack("<8f", *range(8)))
    path = tmp_path / "dup.gguf"
    path.write_bytes(raw.tobytes())
    for args in (["inspect", path], ["convert", path, tmp_path / "out.gguf"]):
        proc = amx_repack_cli(*args)
        assert proc.returncode == 2, proc.stderr
        lines = stderr_lines(proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("amx-repack: error: "), proc.stderr
        assert _escaped(name) in lines[0] and not RAW_CONTROL.search(proc.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.gguf"]


def test_path_with_a_newline_is_one_line(tmp_path):
    missing = tmp_path / "no\nsuch\x1b[2J.gguf"
    proc = amx_repack_cli("convert", missing, tmp_path / "out.gguf")
    assert proc.returncode == 2
    assert len(stderr_lines(proc.stderr)) == 1 and "no\\nsuch\\x1b[2J.gguf" in proc.stderr
