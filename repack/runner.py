"""A pool of worker threads fed with small tasks, with byte-based progress and clean interruption.

The heavy work inside a task is a native call (cffi releases the GIL) or hashlib (which releases it
for large buffers), so threads give real parallelism. Tasks are submitted up front; the main thread
only collects results and advances the progress callback. On any exception, including SIGINT /
SIGTERM, pending tasks are cancelled and running ones are waited for before the exception
propagates, so no worker ever touches an output mapping that is being torn down.
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Callable, Iterable

from .errors import Interrupted

ProgressCallback = Callable[[int], None]


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_tasks(tasks: Iterable[tuple[Callable[[], object], int]], threads: int,
              progress: ProgressCallback | None = None) -> list:
    """Run ``(function, weight_in_bytes)`` tasks; returns results in submission order."""
    tasks = list(tasks)
    results: list = [None] * len(tasks)
    if threads <= 1:
        for i, (fn, weight) in enumerate(tasks):
            results[i] = fn()
            if progress:
                progress(weight)
        return results
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="amx-repack")
    futures: dict[Future, int] = {}
    try:
        for i, (fn, _) in enumerate(tasks):
            futures[pool.submit(fn)] = i
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                i = futures[f]
                results[i] = f.result()
                if progress:
                    progress(tasks[i][1])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


@contextmanager
def interruptible():
    """Turn SIGTERM into the same clean unwinding as Ctrl-C, and both into ``Interrupted``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted("interrupted; no output was written") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
