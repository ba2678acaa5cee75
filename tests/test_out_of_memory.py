"""Out of memory is exit 2 with one line, for every command (issue 20, item 4).

Under ``ulimit -v`` the commands used to exit 3 (MemoryError, "can't start new thread", zstd's
allocation error) or 1 (OpenBLAS ending the process when numpy loads). Each command runs here
under a sweep of address-space limits (RLIMIT_AS, set in the child before it starts) from where
numpy cannot load to where the work itself runs short (many worker threads, each with its stack;
zstd's multi-threaded compressor): every run either succeeds with the right output or exits 2
with one line saying out of memory, and leaves no temporary file.
"""

from __future__ import annotations

import hashlib
import resource
import subprocess
import sys

import pytest

from tests.conftest import stderr_lines
from tests.synthetic import small_model_tensors, write_model

LIMITS_MB = [100, 160, 220, 280]


def limited(mb: int):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    return set_limit


def run_limited(mb: int, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repack", *map(str, args)], capture_output=True,
                          text=True, preexec_fn=limited(mb), timeout=120)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import repack
    folder = tmp_path_factory.mktemp("oom")
    model = folder / "m.gguf"
    write_model(model, small_model_tensors(), seed=1)
    packed = folder / "packed.gguf"
    repack.convert(model, packed)
    return model, packed


def test_every_command_under_ulimit_v(models, tmp_path):
    model, packed = models
    out = tmp_path / "o.gguf"
    commands = {
        "convert": (["convert", "-q", "-t", "32", model, out], out, sha(packed)),
        "convert --compress": (["convert", "-q", "-t", "32", "--compress", model, out],
                               tmp_path / "o.gguf.zst", None),
        "convert --dry-run": (["convert", "--dry-run", model, out], None, None),
        "verify": (["verify", "-q", "-t", "32", model, packed], None, None),
        "verify alone": (["verify", "-q", "-t", "32", packed], None, None),
        "unpack": (["unpack", "-q", "-t", "32", packed, out], out, sha(model)),
    }
    failures: dict[str, set[str]] = {}
    for mb in LIMITS_MB:
        for name, (args, written, want) in commands.items():
            proc = run_limited(mb, *args)
            assert proc.returncode in (0, 2), (name, mb, proc.returncode, proc.stderr)
            if proc.returncode == 2:
                lines = stderr_lines(proc.stderr)
                assert len(lines) == 1 and lines[0].startswith("amx-repack: error: out of "
                                                               "memory ("), (name, mb, proc.stderr)
                failures.setdefault(name, set()).add(lines[0])
                assert list(tmp_path.iterdir()) == [], (name, mb)
            elif written is not None:
                if want is not None:
                    assert sha(written) == want, (name, mb)
                written.unlink()
    # every command was refused at the lowest limit, and some of them later, in the work itself
    assert set(failures) == set(commands), failures
    details = {line for lines in failures.values() for line in lines}
    assert any("load numpy" in d for d in details), details
    assert any("load numpy" not in d for d in details), details


def test_inspect_under_ulimit_v(models):
    """inspect loads no numpy: it runs where the others cannot start; lower still, a module it
    loads cannot be mapped, which is out of memory too."""
    model, _ = models
    assert run_limited(100, "inspect", model).returncode == 0
    for mb in (28, 32, 36):
        proc = run_limited(mb, "inspect", model)
        assert proc.returncode in (0, 2), (mb, proc.stderr)
        if proc.returncode == 2:
            lines = stderr_lines(proc.stderr)
            assert len(lines) == 1 and "out of memory" in lines[0], proc.stderr


def test_thread_pool_shrinks_to_the_address_space_left():
    """A pool that would not fit under ulimit -v is made smaller before it starts (glibc ends the
    process, exit 127, when a started thread cannot have its thread-local data); without a limit
    it is left alone."""
    code = "from repack.address_space import threads_that_fit; print(threads_that_fit(32))"
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert free.returncode == 0 and free.stdout.strip() == "32", free.stderr
    limited_run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 preexec_fn=limited(160))
    assert limited_run.returncode == 0, limited_run.stderr
    assert 1 <= int(limited_run.stdout) < 32
