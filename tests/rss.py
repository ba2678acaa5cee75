"""Peak resident memory of one amx-repack command, measured in a child process.

``wait4``'s ``ru_maxrss`` is no good here: a child forked from a big pytest process carries the
parent's peak over exec (the kernel records the old address space's high-water mark). The
command's own address space is measured instead: its ``VmHWM`` (peak RSS since exec), read from
/proc by an atexit hook of the child just before it ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

_BOOT = """\
import atexit, sys
def _report(path=sys.argv[1]):
    with open('/proc/self/status') as f:
        kib = next(line.split()[1] for line in f if line.startswith('VmHWM:'))
    with open(path, 'w') as f:
        f.write(kib)
atexit.register(_report)
sys.argv = ['amx-repack'] + sys.argv[2:]
from repack.__main__ import main
main()
"""


def run_measured(*args, timeout: float = 300, env=None) -> tuple[subprocess.CompletedProcess, int]:
    """(the finished process, its peak RSS in bytes) of ``amx-repack ARGS`` in a child process."""
    fd, report = tempfile.mkstemp(prefix="amx-repack-rss-")
    os.close(fd)
    try:
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", _BOOT, report, *map(str, args)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, env=env)
        assert time.monotonic() - start < timeout
        with open(report) as f:
            text = f.read().strip()
        assert text, f"no memory report from amx-repack {' '.join(map(str, args))}: {proc.stderr}"
        return proc, int(text) * 1024
    finally:
        os.unlink(report)
