"""Hostile input files: no hang, no exhaustion, no internal error (issue 11).

* A FIFO, a socket or a device given as any input file of any command (or as one shard of a split
  model) is refused at once, exit 2, instead of hanging in open() for ever (item 8).

Every refusal is checked the way a user sees it: the real command line in a child process, one
``amx-repack: error:`` line, no traceback, nothing left beside the output, the input unchanged.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import repack
from tests.synthetic import fingerprint, write_model


def run_cli(*args, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repack", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kw)


def assert_refused(rc: int, stderr: str, *needles: str) -> str:
    assert rc == 2, (rc, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amx-repack: error: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------
# Item 8: only regular files (or links to one) are read


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model(tmp_path / "model.gguf", [("blk.0.ffn_up.weight", "q4_0", (64, 32))], seed=3)


@pytest.fixture
def packed(model, tmp_path) -> Path:
    out = tmp_path / "packed.gguf"
    repack.convert(model, out, layout="amx")
    return out


def special_file(folder: Path, kind: str) -> tuple[Path, str]:
    """A non-regular file of the given kind, and the word the refusal must use for it."""
    if kind == "fifo":
        path = folder / "pipe.gguf"
        os.mkfifo(path)
        return path, "FIFO"
    if kind == "fifo-zst":
        path = folder / "pipe.gguf.zst"
        os.mkfifo(path)
        return path, "FIFO"
    if kind == "link-to-fifo":
        os.mkfifo(folder / "target-pipe")
        path = folder / "link.gguf"
        path.symlink_to(folder / "target-pipe")
        return path, "FIFO"
    if kind == "socket":
        path = folder / "sock.gguf"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()                   # the socket file stays
        return path, "socket"
    if kind == "char-device":
        return Path("/dev/null"), "character device"
    raise ValueError(kind)


SPECIAL_KINDS = ["fifo", "fifo-zst", "link-to-fifo", "socket", "char-device"]


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_non_regular_input_is_refused_by_every_command(tmp_path, model, packed, kind):
    folder = tmp_path / "special"
    folder.mkdir()
    path, word = special_file(folder, kind)
    out = tmp_path / "out"
    out.mkdir()
    before = [fingerprint(model), fingerprint(packed)]
    for args in (["inspect", path], ["convert", path, out / "o.gguf"],
                 ["convert", "--layout", "interleaved", path, out / "o.gguf"],
                 ["verify", path], ["verify", path, packed], ["verify", model, path],
                 ["unpack", path, out / "o.gguf"]):
        start = time.monotonic()
        proc = run_cli(*args, timeout=30)     # a hang in open() would fail here
        assert time.monotonic() - start < 20
        assert_refused(proc.returncode, proc.stderr, str(path), word, "not a regular file")
        assert leftovers(out) == []
    assert [fingerprint(model), fingerprint(packed)] == before


def test_fifo_as_one_shard_is_refused_naming_it(tmp_path):
    from tests.test_split_moe import write_moe_model
    shards = write_moe_model(tmp_path / "moe.gguf", split_max_tensors=4)
    os.unlink(shards[1])
    os.mkfifo(shards[1])
    for args in (["inspect", shards[0]], ["convert", shards[0], tmp_path / "o.gguf"],
                 ["verify", shards[0]], ["unpack", shards[0], tmp_path / "o.gguf"]):
        proc = run_cli(*args, timeout=30)
        assert_refused(proc.returncode, proc.stderr, str(shards[1]), "FIFO")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("o", ".o"))]


def test_links_to_regular_files_are_read(tmp_path, model):
    link = tmp_path / "link.gguf"
    link.symlink_to(model)
    assert run_cli("inspect", link).returncode == 0
    proc = run_cli("convert", link, tmp_path / "o.gguf")
    assert proc.returncode == 0, proc.stderr
