"""Disk full, file size limits and unwritable destinations: one clean line, exit 2, nothing left.

Small tmpfs mounts stand in for a full disk (we run as root; without the right to mount, those
tests skip). Each case checks the three promises: the exit status and the single
"amx-repack: error: ..." line (no traceback), no output and no temporary file, the input
unchanged.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import repack
from repack.atomic import TEMP_MARKER
from tests.conftest import stderr_lines, temporary_of
from tests.synthetic import fingerprint, small_model_tensors, write_model

COMMANDS = ["convert-amx", "convert-interleaved", "convert-none", "unpack"]
PAGE = os.sysconf("SC_PAGE_SIZE")


def cli(args, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "repack", *map(str, args)], capture_output=True,
                          text=True, env=env, **kw)


def assert_one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("amx-repack: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Inputs for every command: a ~4 MB model with many tensor kinds, its conversions (inputs of
    unpack), and a ~38 MB and a ~60 MB model for the 50 MB disk."""
    folder = tmp_path_factory.mktemp("inputs")
    small = write_model(folder / "small.gguf", small_model_tensors(), seed=7)
    mid = write_model(folder / "mid.gguf",
                      [(f"blk.{i}.ffn_up.weight", "q8_0", (4096, 1024)) for i in range(9)], seed=8)
    large = write_model(folder / "large.gguf",
                        [(f"blk.{i}.ffn_up.weight", "q4_K", (4096, 1024 + 512 * (i % 2)))
                         for i in range(27)], seed=9)
    out = {"small": small, "mid": mid, "large": large}
    for name in ("small", "mid", "large"):
        out[f"{name}-packed"] = folder / f"{name}-amx.gguf"
        repack.convert(out[name], out[f"{name}-packed"], layout="amx")
    return out


def command_args(models, command: str, size: str, out: Path) -> tuple[list, Path]:
    """(CLI arguments, input file) of a command on the model of the given size."""
    if command == "unpack":
        src = models[f"{size}-packed"]
        return ["unpack", "-q", src, out], src
    src = models[size]
    return ["convert", "-q", "--layout", command.split("-", 1)[1], src, out], src


def output_size(models, command: str, size: str, tmp_path: Path) -> int:
    """What the command writes for that input (measured by running it without any limit)."""
    probe = tmp_path / "probe"
    probe.mkdir(exist_ok=True)
    args, _ = command_args(models, command, size, probe / "o.gguf")
    proc = cli(args)
    assert proc.returncode == 0, proc.stderr
    n = (probe / "o.gguf").stat().st_size
    (probe / "o.gguf").unlink()
    probe.rmdir()
    return n


# ------------------------------------------------------------------------------------------
# (a) RLIMIT_FSIZE


@pytest.mark.parametrize("command", COMMANDS)
def test_file_size_limit(models, tmp_path, command):
    size = output_size(models, command, "small", tmp_path)
    out = tmp_path / "out.gguf"
    args, src = command_args(models, command, "small", out)
    before = fingerprint(src)

    def limit(n):
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))

    for n in (1 << 20, size - 1):                # far below, and one byte short
        proc = cli(args, preexec_fn=limit(n))
        assert_one_line_error(proc, "too large", str(out))
        assert leftovers(tmp_path) == []
    assert fingerprint(src) == before
    # control: exactly enough is enough (so what failed above was the limit, nothing else)
    proc = cli(args, preexec_fn=limit(size))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size == size and leftovers(tmp_path) == ["out.gguf"]


# ------------------------------------------------------------------------------------------
# (b) a small disk


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(size_bytes, readonly=False) -> a fresh tmpfs folder, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: int, readonly: bool = False, name: str = "disk") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        opts = f"size={size}" + (",ro" if readonly else "")
        try:
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)],
                                  capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("no mount command")
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


@pytest.mark.parametrize("command", COMMANDS)
def test_not_enough_space_is_refused_before_any_work(models, mount_tmpfs, command):
    disk = mount_tmpfs(50 << 20)
    out = disk / "out.gguf"
    args, src = command_args(models, command, "large", out)
    assert src.stat().st_size > free_bytes(disk)
    before = fingerprint(src)
    proc = cli(args)
    assert_one_line_error(proc, "not enough free space", str(disk))
    assert leftovers(disk) == []
    assert free_bytes(disk) == 50 << 20
    assert fingerprint(src) == before


@pytest.mark.parametrize("command", ["convert-amx", "convert-none"])
def test_space_just_around_the_output_size(models, mount_tmpfs, tmp_path, command):
    """A disk with exactly enough pages takes the output; one page less is refused up front."""
    size = output_size(models, command, "small", tmp_path)
    fits = -(-size // PAGE) * PAGE
    disk = mount_tmpfs(fits, name="fits")
    args, src = command_args(models, command, "small", disk / "out.gguf")
    proc = cli(args)
    assert proc.returncode == 0, proc.stderr
    assert leftovers(disk) == ["out.gguf"] and (disk / "out.gguf").stat().st_size == size
    disk = mount_tmpfs(fits - PAGE, name="short")
    args, src = command_args(models, command, "small", disk / "out.gguf")
    assert_one_line_error(cli(args), "not enough free space")
    assert leftovers(disk) == []


def _fill(folder: Path) -> Path:
    """Take every free byte of a filesystem with one file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, PAGE, 1):
            block = b"\xa5" * chunk
            try:
                while True:
                    f.write(block)
            except OSError:
                pass
    assert free_bytes(folder) == 0
    return filler


@pytest.mark.parametrize("command", COMMANDS)
def test_disk_fills_up_while_writing(models, mount_tmpfs, command):
    """The free-space check passes, then another writer takes the space: the output's pwrite
    fails with ENOSPC, which must end as one line naming the output, and no partial file."""
    disk = mount_tmpfs(50 << 20)
    out = disk / "out.gguf"
    args, src = command_args(models, command, "mid", out)
    before = fingerprint(src)
    assert 0 < src.stat().st_size < free_bytes(disk)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "repack", *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while proc.poll() is None and temporary_of(disk, proc.pid) is None:
            assert time.monotonic() < deadline
        # freeze it right after the check and the creation of its file; fill the disk; go on
        proc.send_signal(signal.SIGSTOP)
        filler = _fill(disk)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:        # it had written everything before it was frozen: again
            out.unlink()
            filler.unlink()
            continue
        proc.stderr = err
        assert_one_line_error(proc, "No space left on device", str(out))
        break
    else:
        pytest.fail("the command always finished before the disk could be filled")
    assert leftovers(disk) == ["filler"]
    filler.unlink()
    assert free_bytes(disk) == 50 << 20           # no hidden (unlinked but open) file either
    assert fingerprint(src) == before


# ------------------------------------------------------------------------------------------
# (c) unwritable or missing destination


@pytest.mark.parametrize("command", COMMANDS)
def test_unwritable_destination_folder(models, mount_tmpfs, tmp_path, command):
    if os.geteuid() == 0:          # root ignores permission bits: a read-only filesystem instead
        folder = mount_tmpfs(8 << 20, readonly=True)
        reason = "Read-only file system"
    else:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        reason = "Permission denied"
    args, src = command_args(models, command, "small", folder / "out.gguf")
    before = fingerprint(src)
    assert_one_line_error(cli(args), "cannot create output", reason)
    assert leftovers(folder) == []
    assert fingerprint(src) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_destination_folder(models, tmp_path, command):
    out = tmp_path / "no" / "such" / "folder" / "out.gguf"
    args, src = command_args(models, command, "small", out)
    before = fingerprint(src)
    assert_one_line_error(cli(args), "does not exist", str(out.parent))
    assert leftovers(tmp_path) == []
    # a destination "folder" that is a file is refused the same way
    args, _ = command_args(models, command, "small", src / "out.gguf")
    assert_one_line_error(cli(args))
    assert fingerprint(src) == before
