"""Output files that appear complete or not at all.

The file is created under a temporary name in the destination folder after checking that the
destination has room for it (so "disk full" is normally reported before any work), workers fill it by position with
``pwrite`` (each from its own scratch buffer: no mapping of the output, so resident memory stays
bounded whatever the model size), and only after everything succeeded is it fsync'd and renamed
into place. Any exception (including KeyboardInterrupt) removes the temporary file.
"""

from __future__ import annotations

import errno
import os
import shutil

from .errors import OutputError
from .runner import mark_committed, stop_signals_held, track_temporary, untrack_temporary

TEMP_MARKER = ".amx-repack-tmp-"


def temp_path_for(dest: str) -> str:
    folder, name = os.path.split(os.path.abspath(dest))
    return os.path.join(folder, f".{name}{TEMP_MARKER}{os.getpid()}")


class AtomicOutputFile:
    """A preallocated, position-addressed output file committed by rename."""

    def __init__(self, dest: str | os.PathLike, size: int):
        self.dest = os.path.abspath(os.fspath(dest))
        self.size = size
        self.temp = temp_path_for(self.dest)
        folder = os.path.dirname(self.dest)
        if not os.path.isdir(folder):
            raise OutputError(f"output folder does not exist: {folder}")
        free = shutil.disk_usage(folder).free
        if size > free:
            raise OutputError(f"not enough free space in {folder}: need {size:,} bytes, "
                              f"{free:,} available")
        with stop_signals_held():
            try:
                self.fd = os.open(self.temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                  0o644)
            except OSError as e:
                raise OutputError(f"cannot create output in {folder}: {e.strerror}") from None
            track_temporary(self.temp)
        try:
            self._reserve(size)
        except BaseException:
            self.abort()
            raise

    def _reserve(self, size: int) -> None:
        # The free space was checked above; the file is only sized (sparse), not fallocate'd:
        # on ext4 writing into fallocate'd (unwritten) extents made the whole write 8x slower.
        # Running out of space later is still a clean ENOSPC from pwrite (no mapping, no SIGBUS).
        try:
            os.ftruncate(self.fd, size)
        except OSError as e:
            if e.errno == errno.EFBIG:
                raise OutputError(f"output too large for this filesystem or limit: {self.dest} "
                                  f"({size:,} bytes)") from None
            raise OutputError(f"cannot size {self.dest} to {size:,} bytes: {e.strerror}") from None

    def pwrite(self, offset: int, data) -> None:
        """Write all of ``data`` at ``offset`` (safe from several threads at once)."""
        view = memoryview(data).cast("B")
        while view:
            try:
                n = os.pwrite(self.fd, view, offset)
            except OSError as e:
                # The disk filled up (or a quota was hit) after the free-space check: say which
                # file could not be written, not only "No space left on device".
                raise OutputError(f"cannot write {self.dest}: {e.strerror}") from None
            view, offset = view[n:], offset + n

    def commit(self) -> None:
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            # From here on an interruption must not claim that no output was written: a signal
            # handled after the rename (which cannot be undone) is ignored (see runner.py).
            mark_committed()
            os.replace(self.temp, self.dest)
            untrack_temporary(self.temp)
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot write {self.dest}: {e.strerror}") from None
        try:
            dfd = os.open(os.path.dirname(self.dest), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass  # the rename happened; a folder that cannot be fsync'd is not an error

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass
        untrack_temporary(self.temp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False
