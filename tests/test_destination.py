"""What an output may replace, and when.

* ``--force`` replaces a regular file (or a symbolic link itself), nothing else: a folder, a
  device node, a FIFO or a socket, also behind a symbolic link, is refused for convert and
  unpack and for every output shard, before any work and again at the commit (exit 2, one line,
  the thing left as it was, nothing written).
* Without ``--force`` the commit never replaces a file that appeared while the command worked:
  of two commands writing the same output, exactly one wins; the other says so and leaves
  nothing behind. Whatever the commit mechanism (renameat2(RENAME_NOREPLACE), link + unlink).
* A temporary file of a run killed with SIGKILL is removed, with a warning, by the next command
  writing into that folder; one of a live process, or locked by one, is never touched.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import repack
from repack import atomic
from repack.atomic import TEMP_MARKER
from tests.conftest import amx_repack_cli, stderr_lines, temporary_of
from tests.synthetic import big_model_tensors, fingerprint, sha256, small_model_tensors, write_model

ROOT = Path(__file__).resolve().parents[1]


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TEMP_MARKER in p.name)


def _one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("amx-repack: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model(tmp_path / "in.gguf", small_model_tensors(), seed=3)


@pytest.fixture
def packed(model, tmp_path) -> Path:
    out = tmp_path / "packed.gguf"
    repack.convert(model, out, layout="amx")
    return out


# ------------------------------------------------------------------------------------------
# 9. --force replaces only regular files


def _make(kind: str, path: Path, keep: list):
    """Create a non-regular file of ``kind`` at ``path``."""
    if kind == "folder":
        path.mkdir()
        (path / "inside").write_text("kept")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        keep.append(s)
    elif kind == "char-device":
        # a copy of /dev/null: never the real one, which a regression would replace (as root)
        if os.geteuid() != 0:
            pytest.skip("creating a device node needs root")
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    elif kind == "link-to-dev-null":
        path.symlink_to("/dev/null")     # safe even if broken: a link is replaced, not followed
    elif kind.startswith("link-to-"):
        target = path.with_name(path.name + ".target")
        _make(kind[len("link-to-"):], target, keep)
        path.symlink_to(target)
    else:
        raise ValueError(kind)


def _identity(path: Path):
    st = os.lstat(path)
    return st.st_mode, st.st_ino, st.st_rdev, st.st_size


KINDS = ["folder", "fifo", "socket", "char-device", "link-to-fifo", "link-to-dev-null",
         "link-to-folder"]


@pytest.mark.parametrize("force", [True, False], ids=["force", "no-force"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["convert", "unpack"])
def test_only_a_regular_file_is_replaced(model, packed, tmp_path, command, kind, force):
    dest = tmp_path / "out.gguf"
    keep: list = []
    _make(kind, dest, keep)
    before = _identity(dest)
    listing = sorted(p.name for p in tmp_path.iterdir())
    source = model if command == "convert" else packed
    source_before = fingerprint(source)
    proc = amx_repack_cli(command, *(["--force"] if force else []), source, dest)
    _one_line_error(proc, "only a regular file can be replaced")
    assert _identity(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    assert fingerprint(source) == source_before


def test_force_replaces_a_regular_file_and_a_link_itself(model, tmp_path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"old")
    amx_repack_cli("convert", "--force", model, out, check=True)
    assert out.read_bytes()[:4] == b"GGUF"
    target = tmp_path / "elsewhere.gguf"
    target.write_bytes(b"old")
    link = tmp_path / "link.gguf"
    link.symlink_to(target)
    amx_repack_cli("convert", "--force", model, link, check=True)
    assert not link.is_symlink() and link.read_bytes()[:4] == b"GGUF"
    assert target.read_bytes() == b"old"                # a link is replaced, never followed
    dangling = tmp_path / "dangling.gguf"
    dangling.symlink_to(tmp_path / "nowhere")
    _one_line_error(amx_repack_cli("convert", model, dangling), "already exists", "--force")
    assert dangling.is_symlink()


@pytest.fixture
def split(tmp_path) -> list[Path]:
    from tests.test_split_moe import write_moe_model
    (tmp_path / "split").mkdir()
    shards = write_moe_model(tmp_path / "split" / "moe.gguf", split_max_tensors=4)
    assert len(shards) == 3
    return shards


@pytest.mark.parametrize("force", [True, False], ids=["force", "no-force"])
def test_every_output_shard_is_checked(split, tmp_path, force):
    out = tmp_path / "out.gguf"
    second = tmp_path / "out-00002-of-00003.gguf"
    os.mkfifo(second)
    proc = amx_repack_cli("convert", *(["--force"] if force else []), split[0], out)
    _one_line_error(proc, "out-00002-of-00003.gguf is a FIFO")
    assert stat.S_ISFIFO(os.lstat(second).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-00002-of-00003.gguf", "split"]


@pytest.fixture
def before_commit(monkeypatch):
    """before_commit(action): run ``action`` once, when the command's outputs are complete and
    about to be committed (at the first AtomicOutputFile.sync, the commit's first step)."""
    fired = []

    def install(action):
        sync = atomic.AtomicOutputFile.sync

        def hooked(self):
            if not fired:
                fired.append(self.dest)
                action()
            return sync(self)
        monkeypatch.setattr(atomic.AtomicOutputFile, "sync", hooked)
        return fired
    return install


def test_destination_that_turns_into_a_fifo_is_not_replaced(model, tmp_path, before_commit):
    """--force: OUT was a regular file at the start and is a FIFO at the commit."""
    out = tmp_path / "out.gguf"
    out.write_bytes(b"old")

    def swap():
        out.unlink()
        os.mkfifo(out)
    fired = before_commit(swap)
    with pytest.raises(repack.OutputError, match="is a FIFO .* now"):
        repack.convert(model, out, force=True)
    assert fired and stat.S_ISFIFO(os.lstat(out).st_mode)
    assert _temps(tmp_path) == []


# ------------------------------------------------------------------------------------------
# 10. Without --force, a file that appears while we work is never replaced


@pytest.fixture(params=["renameat2", "link", "check"])
def commit_mechanism(request, monkeypatch):
    """Each way of committing without replacing: renameat2(RENAME_NOREPLACE), link + unlink
    (no renameat2), and a last check before a plain rename (no hard links either)."""
    if request.param == "renameat2":
        if atomic._load_renameat2() is None:
            pytest.skip("no renameat2 in this C library")
    else:
        monkeypatch.setattr(atomic, "_renameat2", None)
    if request.param == "check":
        def no_link(src, dst):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(atomic.os, "link", no_link)
    return request.param


def test_output_that_appears_meanwhile_is_not_replaced(model, tmp_path, commit_mechanism,
                                                       before_commit):
    out = tmp_path / "out.gguf"
    fired = before_commit(lambda: out.write_bytes(b"precious"))
    with pytest.raises(repack.OutputError, match="appeared while amx-repack was writing it"):
        repack.convert(model, out)
    assert fired and out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.gguf", "out.gguf"]
    # and with nothing in the way the same mechanism commits
    out.unlink()
    repack.convert(model, out)
    assert out.read_bytes()[:4] == b"GGUF" and _temps(tmp_path) == []


def test_unpack_output_that_appears_meanwhile_is_not_replaced(packed, tmp_path, before_commit):
    out = tmp_path / "back.gguf"
    fired = before_commit(lambda: out.write_bytes(b"precious"))
    with pytest.raises(repack.OutputError, match="appeared"):
        repack.unpack(packed, out)
    assert fired and out.read_bytes() == b"precious" and _temps(tmp_path) == []


def test_split_output_is_all_or_nothing(split, tmp_path, before_commit):
    """The third output shard appears just before the commit: the first two, already in place,
    are taken back, so no half model is left, and the intruder is untouched."""
    out = tmp_path / "out.gguf"
    third = tmp_path / "out-00003-of-00003.gguf"
    fired = before_commit(lambda: third.write_bytes(b"precious"))
    with pytest.raises(repack.OutputError, match="out-00003-of-00003.gguf appeared"):
        repack.convert(split[0], out, layout="interleaved")
    assert fired
    assert third.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-00003-of-00003.gguf", "split"]


# Two real processes writing the same output, held just before their commit until both are
# there: they then race for the name.
_GATED = """
import os, runpy, sys, time
gate = sys.argv[1]
import repack.atomic as atomic
rename = atomic._rename_noreplace
def gated(src, dst):
    open(os.path.join(gate, f"ready-{os.getpid()}"), "w").close()
    while not os.path.exists(os.path.join(gate, "go")):
        time.sleep(0.001)
    return rename(src, dst)
atomic._rename_noreplace = gated
sys.argv = ["amx-repack", *sys.argv[2:]]
runpy.run_module("repack", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    folder = tmp_path_factory.mktemp("medium")
    model = write_model(folder / "model.gguf", big_model_tensors(48 << 20), seed=2)
    reference = folder / "reference.gguf"
    repack.convert(model, reference, layout="amx")
    return model, sha256(reference)


def _run_both(argvs: list[list[str]]) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT) for argv in argvs]
    results = []
    for p, argv in zip(procs, argvs):
        out, err = p.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(argv, p.returncode, out, err))
    return results


def test_two_processes_at_the_commit_exactly_one_wins(medium, tmp_path):
    model, reference = medium
    out = tmp_path / "out.gguf"
    gate = tmp_path / "gate"
    gate.mkdir()
    argv = [sys.executable, "-c", _GATED, str(gate), "convert", "-q", str(model), str(out)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT) for _ in range(2)]
    try:
        deadline = time.monotonic() + 300
        while len(list(gate.iterdir())) < 2:      # both complete, both past every check
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert len(_temps(tmp_path)) == 2 and not out.exists()
        (gate / "go").touch()
        results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    codes = sorted(rc for _, _, rc in results)
    assert codes == [0, 2], results
    loser = next(err for _, err, rc in results if rc == 2)
    assert len(loser.strip().splitlines()) == 1 and "appeared while amx-repack was writing it" \
        in loser, loser
    assert sha256(out) == reference
    assert _temps(tmp_path) == []


def test_two_concurrent_converts_without_gate(medium, tmp_path):
    """The same race, unaided: one succeeds, the other fails cleanly (the output appeared
    meanwhile, or already existed when it started), never two successes."""
    model, reference = medium
    out = tmp_path / "out.gguf"
    argv = [sys.executable, "-m", "repack", "convert", "-q", str(model), str(out)]
    results = _run_both([argv, argv])
    assert sorted(r.returncode for r in results) == [0, 2], [(r.returncode, r.stderr)
                                                              for r in results]
    loser = next(r for r in results if r.returncode == 2)
    line = _one_line_error(loser)
    assert "appeared" in line or "already exists" in line, line
    assert sha256(out) == reference and _temps(tmp_path) == []


# ------------------------------------------------------------------------------------------
# 11. Temporary files left by dead processes


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_temporary_of_a_killed_run_is_removed_by_the_next(medium, tmp_path):
    model, reference = medium
    out = tmp_path / "out.gguf"
    proc = subprocess.Popen([sys.executable, "-m", "repack", "convert", "-q", "-t", "1",
                             str(model), str(out)], stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + 120
    while (temp := temporary_of(tmp_path, proc.pid)) is None:
        assert proc.poll() is None and time.monotonic() < deadline, "no temporary file seen"
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and temp.exists() and not out.exists()
    done = amx_repack_cli("convert", "-q", model, out, check=True)
    assert done.stderr.splitlines() == [
        f"warning: removed {temp}, a temporary file left by amx-repack process {proc.pid}, "
        f"which is no longer running"]
    assert sha256(out) == reference and _temps(tmp_path) == []


def test_only_stale_temporaries_are_removed(model, packed, tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f".back.gguf{TEMP_MARKER}{dead}",
             tmp_path / f".other.gguf{TEMP_MARKER}{dead}",           # another output's
             tmp_path / f".in.gguf.zst{TEMP_MARKER}{dead}-input"]    # a .zst input's plain copy
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        alive = tmp_path / f".back.gguf{TEMP_MARKER}{sleeper.pid}"
        locked = tmp_path / f".locked.gguf{TEMP_MARKER}{dead}"     # e.g. a run on another host
        folder_named = tmp_path / f".dir.gguf{TEMP_MARKER}{dead}"
        unrelated = tmp_path / f"back.gguf{TEMP_MARKER}{dead}"    # not our pattern: no dot
        for p in stale + [alive, locked, unrelated]:
            p.write_bytes(b"partial")
        folder_named.mkdir()
        with open(locked, "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            proc = amx_repack_cli("unpack", "-q", packed, tmp_path / "back.gguf", check=True)
        warned = sorted(proc.stderr.splitlines())
        assert warned == sorted(f"warning: removed {p}, a temporary file left by amx-repack "
                                f"process {dead}, which is no longer running" for p in stale)
        assert not any(p.exists() for p in stale)
        assert alive.exists() and locked.exists() and folder_named.is_dir() and unrelated.exists()
        assert sha256(tmp_path / "back.gguf") == sha256(model)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_api_warns_about_removed_temporaries(model, tmp_path):
    dead = _dead_pid()
    temp = tmp_path / f".out.gguf{TEMP_MARKER}{dead}"
    temp.write_bytes(b"partial")
    with pytest.warns(RuntimeWarning, match="no longer running"):
        repack.convert(model, tmp_path / "out.gguf")
    assert not temp.exists()


def test_a_temporary_with_our_own_pid_but_not_ours_is_stale(model, tmp_path):
    """PIDs are reused: a file left by an earlier process that had this process's id would
    otherwise block the creation of our own temporary file (O_EXCL)."""
    temp = tmp_path / f".out.gguf{TEMP_MARKER}{os.getpid()}"
    temp.write_bytes(b"partial")
    with pytest.warns(RuntimeWarning, match="an earlier process with this process's id"):
        repack.convert(model, tmp_path / "out.gguf")
    assert (tmp_path / "out.gguf").read_bytes()[:4] == b"GGUF" and _temps(tmp_path) == []
