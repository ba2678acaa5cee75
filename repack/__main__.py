"""``python -m repack`` and the ``amx-repack`` command.

Loading the program (numpy, click, the native kernels) takes a few tenths of a second. The
SIGINT/SIGTERM handlers are installed before any of that, from modules that import nothing
heavy (``repack`` itself is loaded lazily, runner.py and errors.py import no numpy), so a signal
at any moment of the start-up ends the command the same way as later: one line, exit 130, no
traceback and no silent death. Only the interpreter's own start-up (before this file runs) is
outside our reach.
"""

import os
import sys


def main(argv=None) -> None:
    # amx-repack calls no BLAS routine, but numpy's OpenBLAS reserves memory for a thread per core
    # when it is loaded, and ends the process itself (exit 1) when it cannot; its threads also spin
    # after start-up (perf: ~1.5% of a convert). One thread, unless the caller has chosen (see
    # cli.need_memory_for_numpy)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from .runner import install_signal_handlers
        install_signal_handlers()
        from .cli import main as cli_main
        cli_main(argv)      # handles interruptions itself; this covers its first and last lines
    except KeyboardInterrupt:
        sys.stderr.write("amx-repack: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
