"""Temporary files: unique per input, short whatever the output is called, and those of a killed
run removed when the next command starts, wherever they are (issue 20, items 6, 7 and 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import zstandard

import repack
from repack.atomic import TEMP_MARKER
from tests.conftest import amx_repack_cli, temporary_of
from tests.synthetic import write_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("temps") / "m.gguf"
    write_model(path, [("blk.0.ffn_up.weight", "q4_0", (256, 64)),
                       ("output_norm.weight", "f32", (256,))], seed=2)
    return path


def ours(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TEMP_MARKER in p.name)


def test_two_zst_inputs_of_the_same_name(model, tmp_path):
    """verify orig/model.gguf.zst amx/model.gguf.zst: both decompressed copies go to the
    temporary folder, and used to get the same name ("File exists")."""
    (tmp_path / "orig").mkdir()
    (tmp_path / "amx").mkdir()
    packed = tmp_path / "packed.gguf"
    repack.convert(model, packed)
    for folder, src in (("orig", model), ("amx", packed)):
        (tmp_path / folder / "model.gguf.zst").write_bytes(
            zstandard.ZstdCompressor().compress(src.read_bytes()))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    proc = amx_repack_cli("verify", tmp_path / "orig" / "model.gguf.zst",
                          tmp_path / "amx" / "model.gguf.zst", env=env)
    assert proc.returncode == 0 and "EQUIVALENT" in proc.stdout, proc.stderr
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("length", [237, 255])
def test_longest_legal_output_names(model, tmp_path, length):
    """Temporary names are short (.amx-repack-tmp-PID-XXXXXX), so every name the filesystem takes
    works as an output, also compressed (the name given ends in .zst)."""
    name = "m" * (length - len(".gguf")) + ".gguf"
    assert len(name.encode()) == length
    out = tmp_path / name
    proc = amx_repack_cli("convert", "-q", model, out)
    assert proc.returncode == 0, proc.stderr
    back = tmp_path / ("b" * (length - 5) + ".gguf")
    assert amx_repack_cli("unpack", "-q", out, back).returncode == 0
    assert back.read_bytes() == model.read_bytes()
    zname = "z" * (length - len(".gguf.zst")) + ".gguf.zst"
    proc = amx_repack_cli("convert", "-q", "--compress", model, tmp_path / zname)
    assert proc.returncode == 0, proc.stderr
    assert zstandard.ZstdDecompressor().decompress((tmp_path / zname).read_bytes()) \
        == out.read_bytes()
    assert ours(tmp_path) == []


def _killed_while_holding(args, folder, kind: str, env=None):
    """Start amx-repack, wait until its temporary file of ``kind`` exists in ``folder``, SIGKILL
    it; returns the file it left."""
    proc = subprocess.Popen([sys.executable, "-m", "repack", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while (temp := temporary_of(folder, proc.pid, kind)) is None:
        assert proc.poll() is None and time.monotonic() < deadline, "no temporary file seen"
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert temp.exists()
    return temp, proc.pid


@pytest.fixture
def big_zst(tmp_path):
    """A .zst input whose decompression takes long enough to be caught in the act."""
    path = tmp_path / "big.gguf"
    write_model(path, [("blk.0.ffn_up.weight", "q8_0", (4096, 8192))], seed=4)
    zpath = tmp_path / "big.gguf.zst"
    with open(path, "rb") as src, open(zpath, "wb") as dst:
        zstandard.ZstdCompressor(level=1).copy_stream(src, dst)
    path.unlink()
    return zpath


def test_copies_of_a_killed_run_are_removed_at_start_up(model, tmp_path, big_zst):
    """verify X.zst killed (SIGKILL) while its decompressed copy is in the temporary folder, and
    convert X.zst killed while its copy is beside its output (a folder the next commands never
    write to): the next command, whatever it is and wherever it writes, removes both, saying so;
    a live run's files are left alone."""
    scratch, elsewhere = tmp_path / "scratch", tmp_path / "elsewhere"
    scratch.mkdir()
    elsewhere.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    in_temp, _ = _killed_while_holding(["verify", "-q", big_zst], scratch, "input", env)
    beside, pid2 = _killed_while_holding(["convert", "-q", big_zst, elsewhere / "o.gguf"],
                                         elsewhere, "input", env)
    assert not in_temp.exists()     # the convert's start-up removed the verify's copy
    # the note in the temporary folder that names the copy made elsewhere
    assert [n for n in ours(scratch) if n.endswith("-where")]
    live = subprocess.Popen(["sleep", "60"])
    try:
        alive = scratch / f"{TEMP_MARKER}{live.pid}-abcdef-input"
        alive.write_bytes(b"in use")
        proc = amx_repack_cli("unpack", "-q", tmp_path / "nothing.gguf", tmp_path / "o.gguf",
                              env=env)
        assert proc.returncode == 2          # the command itself fails; the clean-up happened
        warned = sorted(line for line in proc.stderr.splitlines() if line.startswith("warning:"))
        assert warned == [f"warning: removed {beside}, a temporary file left by amx-repack "
                          f"process {pid2}, which is no longer running"]
        assert not beside.exists()
        assert ours(scratch) == [alive.name] and ours(elsewhere) == []
    finally:
        live.kill()
        live.wait()
