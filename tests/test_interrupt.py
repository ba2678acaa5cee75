"""Atomic output under SIGINT / SIGTERM, and outputs that must never be written.

A real command line (a separate process) converts or unpacks a ~320 MB synthetic model and is
signalled at a chosen moment, found by watching its temporary output file fill up (st_blocks of
the sparse file grow as tensors are written):

  spawn  immediately after the process is created (it may still be starting Python)
  start  as soon as the temporary output exists (nothing or almost nothing written yet)
  mid    once 40% of the output has been written
  end    once 98% has been written (the last tensors, the header, fsync, rename)
  after  as soon as the final output exists (the commit is done; the process is winding down)

Whatever the moment: no temporary file is left, the input is unchanged (sha256, size, mtime), and
either the command was interrupted (exit 130, one line "amx-repack: ... interrupted ...", no
traceback, no output at all) or it had already committed (exit 0, the complete, correct output).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import repack
from repack.atomic import TEMP_MARKER
from tests.conftest import amx_repack_cli, stderr_lines, temporary_of
from tests.synthetic import big_model_tensors, fingerprint, sha256, write_model

BIG_BYTES = int(os.environ.get("AMX_REPACK_BIG_MB", "320")) << 20
POLL_TIMEOUT = 120
FRACTION = {"start": 0.0, "mid": 0.4, "end": 0.98}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """The big model, its AMX conversion (input of unpack), and lazily made references."""
    folder = tmp_path_factory.mktemp("big")
    model = write_model(folder / "model.gguf", big_model_tensors(BIG_BYTES), seed=1)
    packed = folder / "model-amx.gguf"
    repack.convert(model, packed, layout="amx")
    refs = {"convert-amx": sha256(packed), "unpack": sha256(model)}

    def reference(command: str) -> str:
        if command not in refs:   # only needed when a late signal let the command finish
            layout = command.split("-", 1)[1]
            out = folder / f"reference-{layout}.gguf"
            repack.convert(model, out, layout=layout)
            refs[command] = sha256(out)
            out.unlink()
        return refs[command]

    yield SimpleNamespace(folder=folder, model=model, packed=packed, reference=reference,
                          fingerprints={model: fingerprint(model), packed: fingerprint(packed)})
    shutil.rmtree(folder, ignore_errors=True)   # do not keep 700 MB in pytest's basetemp


def _command(big, command: str, out: Path, threads: int | None) -> tuple[list[str], Path]:
    extra = ["-t", str(threads)] if threads else []
    if command == "unpack":
        return ["unpack", "-q", *extra, str(big.packed), str(out)], big.packed
    layout = command.split("-", 1)[1]
    return ["convert", "-q", "--layout", layout, *extra, str(big.model), str(out)], big.model


def spawn_cli(args: list[str], sigint_ignored: bool = False, **kw) -> subprocess.Popen:
    """Start ``python -m repack ARGS`` with SIGINT at its default disposition, whatever the
    disposition of this test process: a non-interactive shell starts a background job
    (``pytest ... &``) with SIGINT ignored, every child inherits that, and the tool rightly keeps
    an ignored SIGINT ignored (test_ignored_sigint_stays_ignored), so the tests that interrupt it
    set the disposition of a command run from a terminal themselves. ``sigint_ignored`` starts
    it as a background job would be."""
    def preexec():
        signal.signal(signal.SIGINT, signal.SIG_IGN if sigint_ignored else signal.SIG_DFL)
    return subprocess.Popen([sys.executable, "-m", "repack", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec, **kw)


@contextlib.contextmanager
def reaped(proc: subprocess.Popen):
    """Yields proc; a child still running when the block ends (a failed wait or assertion) is
    killed and reaped, so no test leaves a converter running behind it."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_and_signal(args: list[str], out: Path, sig: int, moment: str,
                   sigint_ignored: bool = False):
    """Start the CLI, wait for `moment`, send `sig`; returns (returncode, stderr, still_running
    when the signal was sent)."""
    with reaped(spawn_cli(args, sigint_ignored=sigint_ignored)) as proc:
        deadline = time.monotonic() + POLL_TIMEOUT
        while moment != "spawn" and proc.poll() is None:
            if moment == "after":
                if out.exists():
                    break
            else:
                try:
                    st = os.stat(temporary_of(out.parent, proc.pid) or "")
                except FileNotFoundError:
                    pass
                else:
                    if moment == "start" or (st.st_size and
                                             st.st_blocks * 512 >= FRACTION[moment] * st.st_size):
                        break
            assert time.monotonic() < deadline, f"{moment} never reached"
            time.sleep(0.0005)
        running = proc.poll() is None
        proc.send_signal(sig)       # a no-op if it has already exited
        _, err = proc.communicate(timeout=POLL_TIMEOUT)
    return proc.returncode, err, running


def assert_interrupted_cleanly(rc: int, err: str, out: Path, sig: int) -> None:
    assert rc == 130, f"exit {rc}, stderr: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("amx-repack: ") and "interrupted" in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()


def assert_nothing_left(folder: Path, expected: set[str]) -> None:
    names = {p.name for p in folder.iterdir()}
    assert not [n for n in names if TEMP_MARKER in n], names
    assert names == expected, names


COMMANDS = ["convert-amx", "convert-interleaved", "unpack"]
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


@pytest.mark.parametrize("moment", ["start", "mid", "end"])
@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("command", COMMANDS)
def test_signal_leaves_no_output(big, tmp_path, command, sig, moment):
    out = tmp_path / "out.gguf"
    args, source = _command(big, command, out, threads=None)
    rc, err, running = run_and_signal(args, out, sig, moment)
    if moment == "end" and rc == 0:
        # the signal came after the rename: then the output must be complete and correct
        assert err == ""
        assert sha256(out) == big.reference(command)
        out.unlink()
    else:
        assert running, "the command finished before the moment was reached"
        assert_interrupted_cleanly(rc, err, out, sig)
    assert_nothing_left(tmp_path, set())
    assert fingerprint(source) == big.fingerprints[source]
    assert_nothing_left(big.folder, {"model.gguf", "model-amx.gguf"})


@pytest.mark.parametrize("command", COMMANDS)
def test_sigint_single_thread_mid_run(big, tmp_path, command):
    """With -t 1 the main thread runs the kernels itself (no pool): still interruptible."""
    out = tmp_path / "out.gguf"
    args, source = _command(big, command, out, threads=1)
    rc, err, running = run_and_signal(args, out, signal.SIGINT, "mid")
    assert running
    assert_interrupted_cleanly(rc, err, out, signal.SIGINT)
    assert_nothing_left(tmp_path, set())
    assert fingerprint(source) == big.fingerprints[source]


def test_ignored_sigint_stays_ignored(big, tmp_path):
    """Started with SIGINT ignored (a background job of a shell script), the command keeps it
    ignored: a SIGINT mid-run changes nothing and the output is complete (SIGTERM still stops
    it: test_signal_leaves_no_output)."""
    out = tmp_path / "out.gguf"
    args, source = _command(big, "convert-amx", out, threads=None)
    rc, err, running = run_and_signal(args, out, signal.SIGINT, "mid", sigint_ignored=True)
    assert running
    assert rc == 0 and err == "", (rc, err)
    assert sha256(out) == big.reference("convert-amx")
    assert_nothing_left(tmp_path, {"out.gguf"})
    assert fingerprint(source) == big.fingerprints[source]


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("command", ["convert-amx", "unpack"])
def test_signal_right_after_spawn(big, tmp_path, command, sig):
    """A signal before the command has even started leaves nothing either. The status says
    interrupted: 130 (one line) once the CLI's handlers are installed, which is before the
    program is loaded (test_signal_while_loading). Before that, in the interpreter's own start-up
    (a few tens of ms, no code of ours runs yet), the process dies of the signal itself (-SIG;
    a shell reports 128 + SIG), and for a SIGINT during site's imports Python may print its
    own KeyboardInterrupt traceback: a known limit."""
    out = tmp_path / "out.gguf"
    args, source = _command(big, command, out, threads=None)
    rc, err, _ = run_and_signal(args, out, sig, "spawn")
    assert rc in (130, -sig), (rc, err)
    if rc == 130:
        assert_interrupted_cleanly(rc, err, out, sig)
    assert_nothing_left(tmp_path, set())
    assert fingerprint(source) == big.fingerprints[source]


# The child of test_signal_while_loading: python -m repack, with an import hook that announces
# the start of a heavy module's import (numpy for the commands that process tensor data; click,
# the first one loaded after the handlers, for inspect, which never loads numpy) and holds it there
# for a while, so that the signal lands in the middle of the program's loading, every time.
_SLOW_IMPORT = """
import os, runpy, sys, time
ready, held = int(sys.argv[1]), sys.argv[2]

class HoldImport:
    def find_spec(self, name, path=None, target=None):
        if name == held:
            sys.meta_path.remove(self)
            os.write(ready, b"importing " + held.encode())
            os.close(ready)
            time.sleep(30)
        return None

sys.meta_path.insert(0, HoldImport())
sys.argv = ["amx-repack", *sys.argv[3:]]
runpy.run_module("repack", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("command", ["convert-amx", "unpack", "inspect"])
def test_signal_while_loading(big, tmp_path, command, sig):
    """A signal while Python is still importing the program (numpy, click, the kernels: the first
    ~0.25 s of every command) is an interruption like any other: exit 130, one line, no
    traceback, nothing written (the handlers are installed before the heavy imports)."""
    out = tmp_path / "out.gguf"
    if command == "inspect":
        args, source, held = ["inspect", str(big.model)], big.model, "click"
    else:
        args, source = _command(big, command, out, threads=None)
        held = "numpy"
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", _SLOW_IMPORT, str(w), held, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                pass_fds=(w,), cwd=Path(__file__).resolve().parents[1],
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        os.close(w)
        w = -1
        with reaped(proc):
            assert os.read(r, 100) == b"importing " + held.encode(), \
                proc.communicate(timeout=POLL_TIMEOUT)
            proc.send_signal(sig)
            stdout, err = proc.communicate(timeout=POLL_TIMEOUT)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert stdout == ""
    assert_interrupted_cleanly(proc.returncode, err, out, sig)
    assert_nothing_left(tmp_path, set())
    assert fingerprint(source) == big.fingerprints[source]


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("command", ["convert-amx", "unpack"])
def test_signal_after_commit_is_not_an_interruption(big, tmp_path, command, sig):
    """Once the output has its final name the command has succeeded: a signal in the last
    milliseconds (fsync of the folder, reporting, interpreter exit) must not report
    'interrupted; no output was written' (exit 130) next to a complete output."""
    out = tmp_path / "out.gguf"
    args, source = _command(big, command, out, threads=None)
    rc, err, _ = run_and_signal(args, out, sig, "after")
    assert rc == 0, f"exit {rc} with the output in place; stderr: {err!r}"
    assert err == ""
    assert sha256(out) == big.reference(command)
    assert_nothing_left(tmp_path, {"out.gguf"})
    assert fingerprint(source) == big.fingerprints[source]


def test_signal_inside_a_held_block_waits_for_its_end():
    """stop_signals_held (around creating and tracking a temporary file, and around the worker
    pool's bookkeeping) holds SIGINT/SIGTERM back even when the kernel delivers the signal to
    another thread, as it does whenever the main thread blocks it and another thread does not
    (numpy's OpenBLAS thread, in every command): the interruption comes at the end of the block.
    Without that a temporary file could be created and not yet tracked when the interruption
    came, and was left behind."""
    from repack import runner
    release = threading.Event()
    bystander = threading.Thread(target=release.wait)     # signals not blocked, like OpenBLAS's
    bystander.start()
    reached = []
    try:
        with pytest.raises(repack.Interrupted):
            with runner.interruptible():
                with runner.stop_signals_held():
                    os.kill(os.getpid(), signal.SIGTERM)
                    for _ in range(100):
                        # system calls that release the GIL: taking it back is where the main
                        # thread notices a signal another thread received (and created the
                        # temporary file, in the case this guards)
                        os.stat(".")
                        time.sleep(0.001)
                    reached.append("end of the held block")
                reached.append("after it")
    finally:
        release.set()
        bystander.join()
    assert reached == ["end of the held block"]


def test_api_interrupt_raises_interrupted_and_cleans_up(big, tmp_path):
    """The Python API: a KeyboardInterrupt in the middle of convert becomes repack.Interrupted
    (exit code 130) and the partial output is removed."""
    out = tmp_path / "out.gguf"
    calls = []

    def progress(n):
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(repack.Interrupted) as info:
        repack.convert(big.model, out, layout="amx", threads=2, progress=progress)
    assert info.value.exit_code == 130
    assert_nothing_left(tmp_path, set())


# ------------------------------------------------------------------------------------------
# Outputs that are refused before anything is written


def _small_model(folder: Path) -> Path:
    from tests.synthetic import small_model_tensors
    return write_model(folder / "in.gguf", small_model_tensors(), seed=3)


def _assert_refused(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("amx-repack: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("force", [False, True], ids=["", "force"])
@pytest.mark.parametrize("link", ["symlink", "hardlink", "symlinked-folder", "same-path"])
@pytest.mark.parametrize("command", ["convert", "unpack"])
def test_output_that_is_the_input_is_refused(tmp_path, command, link, force):
    src = _small_model(tmp_path)
    if command == "unpack":
        packed = tmp_path / "packed.gguf"
        repack.convert(src, packed, layout="interleaved")
        src.unlink()
        src = packed
    if link == "symlink":
        out = tmp_path / "link.gguf"
        out.symlink_to(src)
    elif link == "hardlink":
        out = tmp_path / "link.gguf"
        os.link(src, out)
    elif link == "symlinked-folder":
        (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
        out = tmp_path / "alias" / src.name
    else:
        out = src
    before = fingerprint(src)
    listing = sorted(p.name for p in tmp_path.iterdir())
    proc = amx_repack_cli(command, *(["--force"] if force else []), src, out)
    _assert_refused(proc, "is the input file")
    assert fingerprint(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing    # no temp file either
    if link == "symlink":
        assert out.is_symlink() and os.readlink(out) == str(src)


@pytest.mark.parametrize("command", ["convert", "unpack"])
def test_existing_output_without_force_is_left_alone(tmp_path, command):
    src = _small_model(tmp_path)
    if command == "unpack":
        packed = tmp_path / "packed.gguf"
        repack.convert(src, packed, layout="amx")
        src = packed
    out = tmp_path / "exists.gguf"
    out.write_bytes(b"precious")
    os.utime(out, ns=(1_000_000_000, 1_000_000_000))
    before_in, before_out = fingerprint(src), fingerprint(out)
    proc = amx_repack_cli(command, src, out)
    _assert_refused(proc, "already exists", "--force")
    assert fingerprint(out) == before_out and fingerprint(src) == before_in
    assert not [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]
    # and --force does replace it (with a complete file)
    amx_repack_cli(command, "--force", src, out, check=True)
    assert out.read_bytes()[:4] == b"GGUF"


# ------------------------------------------------------------------------------------------
# Compressed models: the temporary plain copy of a .zst input, and the --compress output


@pytest.fixture(scope="module")
def big_zst(big):
    zstandard = pytest.importorskip("zstandard")
    path = big.folder / "model.gguf.zst"
    cctx = zstandard.ZstdCompressor(level=1, threads=2, write_content_size=True)
    with open(big.model, "rb") as src, open(path, "wb") as dst:
        cctx.copy_stream(src, dst, size=big.model.stat().st_size)
    yield path
    path.unlink()


def _wait_for_growth(proc, folder: Path, prefix: str, suffix: str, min_bytes: int) -> bool:
    """Wait until a file `prefix...suffix` in `folder` holds `min_bytes`; False if it never did."""
    deadline = time.monotonic() + POLL_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        for p in folder.iterdir():
            if p.name.startswith(prefix) and p.name.endswith(suffix):
                try:
                    if p.stat().st_size >= min_bytes:
                        return True
                except FileNotFoundError:
                    pass
        time.sleep(0.0005)
    return False


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("stage", ["decompressing-input", "compressing-output"])
def test_signal_while_streaming_zstd(big, big_zst, tmp_path, stage, sig):
    if stage == "decompressing-input":   # the plain copy of the input grows beside the output
        args = ["convert", "-q", str(big_zst), str(tmp_path / "out.gguf")]
        prefix, suffix, source = TEMP_MARKER, "-input", big_zst
    else:                                 # OUT.zst grows once the plain output is complete
        args = ["convert", "-q", "--compress", str(big.model), str(tmp_path / "out.gguf")]
        prefix, suffix, source = TEMP_MARKER, "-zst", big.model
    before = fingerprint(source)
    with reaped(spawn_cli(args)) as proc:
        reached = _wait_for_growth(proc, tmp_path, prefix, suffix, 16 << 20)
        running = proc.poll() is None
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=POLL_TIMEOUT)
    assert reached and running, f"{stage} was over before the signal"
    assert_interrupted_cleanly(proc.returncode, err, tmp_path / "out.gguf", sig)
    assert_nothing_left(tmp_path, set())
    assert fingerprint(source) == before
