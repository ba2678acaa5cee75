"""Byte ranges the conversion does not change, copied inside the kernel, and read-ahead hints.

``copy_range`` moves a range of the input into the output with ``copy_file_range``: no trip
through a user-space buffer (an in-kernel page copy; a reflink clone on XFS and btrfs). Where the
kernel refuses (another filesystem on kernels that do not copy across them, a special file, no
such system call) the range goes through ``read_at`` + ``pwrite`` as before. The guarantees stay
those of a pwrite: an input that shrinks meanwhile is an InputError (never a mapping, never a
SIGBUS), a full disk or a file size limit an OutputError naming the output, and the output is
still the temporary file that AtomicOutputFile commits by rename.
"""

from __future__ import annotations

import errno
import os

from .errors import InputError, OutputError
from .original import read_at
from .runner import scratch

PIECE_BYTES = 16 << 20              # the read/write fallback's buffer
CALL_BYTES = 64 << 20               # the most one copy_file_range call is asked for
# the output is what ran out: said as pwrite says it (AtomicOutputFile.pwrite)
_OUTPUT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_kernel_copies = [hasattr(os, "copy_file_range")]   # cleared once the kernel refuses


def copy_range(src_fd: int, src_offset: int, out, offset: int, nbytes: int,
               path: str = "input file") -> None:
    """Copy ``nbytes`` of ``src_fd`` at ``src_offset`` into ``out`` (an AtomicOutputFile) at
    ``offset``. Safe from several threads at once (positions are explicit)."""
    done = 0
    while done < nbytes and _kernel_copies[0]:
        try:
            # at most CALL_BYTES a call: an interruption is seen between calls, within moments
            n = os.copy_file_range(src_fd, out.fd, min(CALL_BYTES, nbytes - done),
                                   src_offset + done, offset + done)
        except OSError as e:
            if e.errno in _OUTPUT_ERRORS:
                raise OutputError(f"cannot write {out.dest}: {e.strerror}") from None
            # EXDEV, ENOSYS, EOPNOTSUPP, EINVAL, ...: this pair of files cannot be copied by the
            # kernel; the read/write path below copies the rest and reports a real I/O error
            # on the side it belongs to
            if e.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
                _kernel_copies[0] = False
            break
        if n == 0:
            raise InputError(f"{path}: unexpected end of file at offset {src_offset + done} (did "
                             f"it shrink while being read?)")
        done += n
    while done < nbytes:
        n = min(PIECE_BYTES, nbytes - done)
        out.pwrite(offset + done, read_at(src_fd, src_offset + done, n, scratch("input", n),
                                          path=path))
        done += n


def read_ahead(fd: int, offset: int = 0, nbytes: int = 0, sequential: bool = False) -> None:
    """Ask the kernel to start reading ``nbytes`` at ``offset`` now (or, with ``sequential``, to
    read the whole file ahead more aggressively), so the disk stays busy while the current chunk
    is worked on. Only a hint: a filesystem that ignores it changes nothing."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        os.posix_fadvise(fd, offset, nbytes,
                         os.POSIX_FADV_SEQUENTIAL if sequential else os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
