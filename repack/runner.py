"""A pool of worker threads fed with small tasks, with byte-based progress and clean interruption.

The heavy work inside a task is a native call (cffi releases the GIL) or hashlib (which releases it
for large buffers), so threads give real parallelism. Tasks are submitted up front; the main thread
only collects results and advances the progress callback. On any exception, including SIGINT /
SIGTERM, pending tasks are cancelled and running ones are waited for before the exception
propagates, so no worker ever touches an output mapping that is being torn down.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
# concurrent.futures (with logging and traceback behind it) is imported by run_tasks: commands
# that run no tasks (inspect, --help) start faster without it
from contextlib import contextmanager
from typing import Callable, Iterable

from .address_space import threads_that_fit
from .errors import Interrupted, UsageError

# No numpy (nor anything heavy) at import time: the command line imports this module first, to
# install its SIGINT/SIGTERM handlers before the rest of the program is loaded (__main__.py).

ProgressCallback = Callable[[int], None]


def start_phase(progress: ProgressCallback | None, name: str, total: int) -> None:
    """A new phase of work begins ("decompress", "convert", "verify", "unpack", "compress"):
    the calls that follow, until the next phase, add up to ``total`` bytes. A plain callable (the
    API's ``progress=lambda nbytes: ...``) only receives the byte counts; an object that also has
    a ``phase(name, total)`` method (the command line's progress display) is told of each phase,
    so that its total is right for split models, ``.zst`` inputs and ``--compress``."""
    phase = getattr(progress, "phase", None)
    if phase is not None:
        phase(name, total)


def resolve_threads(threads) -> int:
    """The API's one rule for ``threads`` (the CLI's ``--threads N`` is the same, N >= 1): None
    for every CPU this process may run on, else a whole number of at least 1."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be a whole number of at least 1, or None for every CPU "
                         f"(got {threads!r})")
    return threads


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_scratch = threading.local()


def scratch(name: str, nbytes: int, dtype="uint8"):
    """A per-thread reusable buffer (a numpy array): workers pack/unpack into it and write it
    out, so memory use is a few chunks per thread whatever the model size."""
    import numpy as np
    buffers = _scratch.__dict__
    buf = buffers.get(name)
    need = nbytes * np.dtype(dtype).itemsize
    if buf is None or buf.nbytes < need:
        buf = buffers[name] = np.empty(max(need, 1 << 20), dtype=np.uint8)
    return buf[:need].view(dtype)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

# Temporary files not yet renamed into place or removed. A signal can land between a file's
# creation and the try-block that would remove it; whatever is still listed when a command is
# interrupted, or when the process exits, is removed here. With each: the descriptor that holds
# its lock (how other runs tell it from a dead run's file) and, for one outside the system's
# temporary folder, the note there that says where it is (repack/atomic.py), both dropped with it.
_temporaries: dict[str, tuple[int, str | None]] = {}


def track_temporary(path: str, lock_fd: int = -1, note: str | None = None) -> None:
    _temporaries[path] = (lock_fd, note)


def untrack_temporary(path: str) -> None:
    lock_fd, note = _temporaries.pop(path, (-1, None))
    if note is not None:
        try:
            os.unlink(note)
        except OSError:
            pass
    if lock_fd >= 0:
        try:
            os.close(lock_fd)
        except OSError:
            pass


def is_tracked_temporary(path: str) -> bool:
    return path in _temporaries


# Who hears that a command removed a temporary file of a dead run (repack/atomic.py); None: a
# RuntimeWarning, for API users. The command line sets its "warning: ..." line here rather than
# in atomic.py, which inspect and --help never load.
on_stale_temporary: Callable[[str], None] | None = None


def remove_temporaries() -> None:
    for path in list(_temporaries):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        untrack_temporary(path)


atexit.register(remove_temporaries)


# Holding SIGINT/SIGTERM back cannot rely on the signal mask alone: the kernel delivers a signal
# that the main thread blocks to any other thread that does not (numpy's OpenBLAS starts one at
# import, with nothing blocked), CPython's C handler then runs there, and the main thread runs the
# Python handler at its next instruction, inside the held block. So the handler itself defers:
# while the main thread holds the signals it only notes one arrived, and the hold's end raises.
_hold_depth = 0           # nesting of stop_signals_held in the main thread
_deferred = False         # a SIGINT/SIGTERM arrived while held


def _hold_stop_signals():
    return signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def _raise_deferred() -> None:
    global _deferred
    if _deferred and _hold_depth == 0:
        _deferred = False
        if not _committed:
            raise KeyboardInterrupt


def _let_stop_signals_through(previous: set) -> None:
    """A pending SIGINT/SIGTERM is delivered here, and its handler raises right after (signals
    the caller itself had blocked, or held in an enclosing block, stay held)."""
    global _hold_depth
    held = signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS - set(previous))
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    if _is_main() and _hold_depth == 1:
        _hold_depth = 0
        try:
            _raise_deferred()
        finally:
            _hold_depth = 1


def _is_main() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_signals_held():
    """SIGINT/SIGTERM wait until the block ends (e.g. while a temporary file is created and
    tracked, so that no interruption falls between the two)."""
    global _hold_depth
    main = _is_main()
    previous = _hold_stop_signals()
    if main:
        _hold_depth += 1
    try:
        yield previous
    finally:
        if main:
            _hold_depth -= 1
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if main:
            _raise_deferred()


# The task a worker thread runs now: where advance() counts its progress.
_running = threading.local()

# How often the main thread passes on the progress of the tasks still running: often enough that
# a plain progress line is printed at each 10% step of a model of a few big tensors (one task each).
PROGRESS_POLL_SECONDS = 0.05


def advance(nbytes: int) -> None:
    """Called by a task of run_tasks as it completes part of its work (a chunk of ``nbytes`` of
    its weight): the progress callback hears of it while the task runs, not only when it ends."""
    report = getattr(_running, "report", None)
    if report is not None:
        report(nbytes)


def run_tasks(tasks: Iterable[tuple[Callable[[], object], int]], threads: int,
              progress: ProgressCallback | None = None) -> list:
    """Run ``(function, weight_in_bytes)`` tasks; returns results in submission order. The
    progress callback is called in this (the main) thread only, with byte counts that add up to
    the weights: the parts a task reports with advance() as it goes, the rest when it ends."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
    tasks = list(tasks)
    results: list = [None] * len(tasks)
    partial = [0] * len(tasks)       # bytes each task has reported with advance() so far
    reported = [0] * len(tasks)      # of which passed on to the progress callback

    def pass_on(i: int, upto: int) -> None:
        n = min(upto, tasks[i][1]) - reported[i]
        if n > 0 and progress:
            progress(n)
            reported[i] += n

    def bound(i: int, fn, report):
        def run():
            _running.report = report
            try:
                return fn()
            finally:
                _running.report = None
        return run

    threads = threads_that_fit(threads)
    if threads <= 1:
        for i, (fn, weight) in enumerate(tasks):
            def report(n, i=i):
                partial[i] += n
                pass_on(i, partial[i])
            results[i] = bound(i, fn, report)()
            pass_on(i, weight)
        return results
    # SIGINT/SIGTERM are held back while the pool is used and let through only at one safe point
    # of the loop below: a KeyboardInterrupt raised inside ThreadPoolExecutor.submit (which holds
    # a non-reentrant lock) made the shutdown in `finally` wait on that lock for ever. The worker
    # threads inherit the held mask, so the signals always reach the main thread.
    with stop_signals_held() as previous:
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="amx-repack")
        futures: dict[Future, int] = {}
        active: set[int] = set()     # tasks that have reported some progress and not ended
        try:
            for i, (fn, _) in enumerate(tasks):
                def report(n, i=i):
                    partial[i] += n      # only this task's thread writes it; read below
                    active.add(i)
                futures[pool.submit(bound(i, fn, report))] = i
            pending = set(futures)
            while pending:
                _let_stop_signals_through(previous)
                done, pending = wait(pending, timeout=PROGRESS_POLL_SECONDS,
                                     return_when=FIRST_COMPLETED)
                for f in done:
                    i = futures[f]
                    results[i] = f.result()
                    active.discard(i)
                    pass_on(i, tasks[i][1])
                for i in list(active):
                    pass_on(i, partial[i])
        finally:
            _hold_stop_signals()
            pool.shutdown(wait=True, cancel_futures=True)
    return results


# The point of no return of the running command: AtomicOutputFile.commit sets it right before the
# rename that puts the output in place. A SIGINT/SIGTERM that arrives after it can no longer undo
# anything, and turning it into "interrupted; no output was written" (exit 130) would be false
# while the complete output is already there: such a late signal is ignored and the command
# finishes normally. Reset when a command starts; it stays set after the command returns so that
# the CLI, whose handlers are these same ones (see install_signal_handlers), does not report a
# finished command as interrupted either.
_in_command = False
_committed = False


def mark_committed(done: bool = True) -> None:
    """Called by AtomicOutputFile.commit just before its rename (no-op outside a command), and
    with False by commit_all when no output of the command stayed in place after all."""
    global _committed
    if _in_command:
        _committed = done


def output_committed() -> bool:
    return _committed


def _on_signal(signum, frame):
    global _deferred
    if _committed:
        return          # too late to interrupt: the output is in place; finish normally
    if _hold_depth:
        _deferred = True    # raised when the hold ends (stop_signals_held)
        return
    raise KeyboardInterrupt


def _install(sig) -> object:
    """Our handler for SIGINT/SIGTERM; a SIGINT that the parent set to be ignored (a background
    job of a shell script) or handled its own way stays as it is."""
    current = signal.getsignal(sig)
    if sig == signal.SIGINT and current not in (signal.default_int_handler, _on_signal):
        return current
    return signal.signal(sig, _on_signal)


def install_signal_handlers() -> None:
    """For the command line: SIGINT and SIGTERM unwind cleanly (exit 130) from the start."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            _install(sig)


@contextmanager
def interruptible():
    """Turn SIGTERM into the same clean unwinding as Ctrl-C, and both into ``Interrupted``."""
    global _in_command, _committed, _deferred
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = {sig: _install(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _in_command, _committed, _deferred = True, False, False
    try:
        yield
    except KeyboardInterrupt:
        remove_temporaries()
        raise Interrupted("interrupted; no output was written") from None
    finally:
        _in_command = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)
