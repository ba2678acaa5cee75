"""``python -m repack`` and the ``amx-repack`` command.

Loading the program (numpy, click, the native kernels) takes a few tenths of a second. The
SIGINT/SIGTERM handlers are installed before any of that, from modules that import nothing
heavy (``repack`` itself is loaded lazily, runner.py and errors.py import no numpy), so a signal
at any moment of the start-up ends the command the same way as later: one line, exit 130, no
traceback and no silent death. Only the interpreter's own start-up (before this file runs) is
outside our reach.
"""

import sys


def main(argv=None) -> None:
    # numpy's OpenBLAS would start a thread per core that spins after start-up; no command does
    # linear algebra, and those spinning threads took CPU from the kernels' threads (perf: ~1.5%
    # of a convert). Only when the caller has not chosen.
    import os
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
