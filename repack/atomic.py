"""Output files that appear complete or not at all.

The file is created under a temporary name in the destination folder, its full size is reserved up
front (so "disk full" happens before any work, not half way), workers fill it by position through a
writable mapping, and only after everything succeeded is it flushed, fsync'd and renamed into place.
Any exception (including KeyboardInterrupt) removes the temporary file.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil

from .errors import OutputError

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
        try:
            self.fd = os.open(self.temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise OutputError(f"cannot create output in {folder}: {e.strerror}") from None
        self.mm: mmap.mmap | None = None
        try:
            self._reserve(size)
            if size:
                self.mm = mmap.mmap(self.fd, size, access=mmap.ACCESS_WRITE)
        except BaseException:
            self.abort()
            raise

    def _reserve(self, size: int) -> None:
        try:
            os.posix_fallocate(self.fd, 0, size) if size else None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OutputError(f"not enough free space for {self.dest} ({size:,} bytes)") from None
            if e.errno == errno.EFBIG:
                raise OutputError(f"output too large for this filesystem or limit: {self.dest} "
                                  f"({size:,} bytes)") from None
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise OutputError(f"cannot reserve {size:,} bytes for {self.dest}: {e.strerror}") from None
            os.ftruncate(self.fd, size)

    def write_at(self, offset: int, data) -> None:
        self.mm[offset:offset + len(data)] = data

    def commit(self) -> None:
        try:
            if self.mm is not None:
                self.mm.flush()
                self.mm.close()
                self.mm = None
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.temp, self.dest)
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
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:
                pass
            self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False
