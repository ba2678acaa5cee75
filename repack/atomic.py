"""Output files that appear complete or not at all, and never in place of what they must not replace.

The file is created under a temporary name in the destination folder after checking that the
destination has room for it (so "disk full" is normally reported before any work), workers fill it by position with
``pwrite`` (each from its own scratch buffer: no mapping of the output, so resident memory stays
bounded whatever the model size), and only after everything succeeded is it fsync'd and renamed
into place. Any exception (including KeyboardInterrupt) removes the temporary file.

The destination:

* Only a regular file (or a symbolic link, which is replaced, not followed) is ever replaced, and
  only with ``--force``: a folder, device node, FIFO or socket is refused up front
  (:func:`check_destination`) and again at the commit.
* Without ``--force`` the commit never replaces anything, even a file that appeared while we
  worked (another amx-repack writing the same output): the rename is ``renameat2`` with
  ``RENAME_NOREPLACE``, or ``link`` + ``unlink`` where the filesystem lacks it, so exactly one of
  two concurrent commands wins and the other says so and removes its temporary file.
* Temporary names are short and random (``.amx-repack-tmp-PID-XXXXXX``, ``-input`` for the plain
  copy of a ``.zst`` input): unique per file whatever the inputs are called, and a few dozen bytes
  whatever the length of the output's name (any name the filesystem takes works).
* A temporary file left by a process that no longer exists (``kill -9``, a power cut) is removed,
  with a warning, when a later command starts (in the system's temporary folder, in the folder it
  writes to, and wherever a note in the temporary folder says one was created) or writes an
  output in that folder. One whose process is alive, which is locked (each run holds an
  ``flock`` on every temporary file of its own until it is renamed or removed), or which belongs
  to another user is never touched.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
import tempfile
import warnings

from . import runner
from .errors import OutputError, OutputExists
from .runner import (is_tracked_temporary, mark_committed, stop_signals_held, track_temporary,
                     untrack_temporary)

TEMP_MARKER = ".amx-repack-tmp-"
# .amx-repack-tmp-PID-TOKEN, with -input for zst.py's plain copy of an input, -where for the note
# in the temporary folder naming a temporary file created elsewhere
_TEMP_NAME = re.compile("^" + re.escape(TEMP_MARKER) +
                        r"(?P<pid>[0-9]{1,10})-(?P<token>[0-9a-f]{6})(?:-(?P<kind>[a-z]+))?$")
# older versions: .NAME.amx-repack-tmp-PID[-input]
_OLD_TEMP_NAME = re.compile(r"^\..+" + re.escape(TEMP_MARKER) + r"(?P<pid>[0-9]{1,10})(?:-[a-z]+)?$")
NOTE_KIND = "where"


def create_temporary(folder: str, kind: str = "", mode: int = 0o644) -> tuple[str, int]:
    """Create a new temporary file in ``folder`` (O_EXCL, read-write), lock it and track it until
    it is renamed or removed (runner.untrack_temporary); returns (path, descriptor). Outside the
    system's temporary folder a note there names it, so that a later command finds it should this
    process be killed. Raises OSError."""
    folder = os.path.abspath(folder)
    with stop_signals_held():   # created and tracked with no interruption in between
        for _ in range(16):
            token = secrets.token_hex(3)
            path = os.path.join(folder, f"{TEMP_MARKER}{os.getpid()}-{token}"
                                + (f"-{kind}" if kind else ""))
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        lock_fd = -1
        try:
            lock_fd = os.dup(fd)
            # held until the file is renamed or removed, however this process ends: how other
            # runs tell this file from one left by a dead process
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass    # a filesystem without locks: the process id in the name still protects it
        track_temporary(path, lock_fd, _write_note(folder, token, path))
    return path, fd


def _write_note(folder: str, token: str, path: str) -> str | None:
    home = os.path.abspath(tempfile.gettempdir())
    if folder == home:
        return None
    note = os.path.join(home, f"{TEMP_MARKER}{os.getpid()}-{token}-{NOTE_KIND}")
    try:
        fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return None     # no note: the file is still found beside the next output written there
    try:
        os.write(fd, os.fsencode(path))
    except OSError:
        pass
    finally:
        os.close(fd)
    return note


# --------------------------------------------------------------------------------------------
# What may be replaced


_KINDS = [(stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket")]


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def unreplaceable(path: str) -> str | None:
    """Why ``path`` must never be replaced by an output (None when it may be, or is absent):
    anything but a regular file, a symbolic link to one, or a dangling symbolic link."""
    try:
        st = os.stat(path)          # what a link points to: /dev/null through a link is refused
    except (FileNotFoundError, NotADirectoryError):
        return None                 # absent, or a dangling link (the link itself is replaced)
    except OSError as e:
        return f"cannot be examined ({e.strerror})"
    if stat.S_ISREG(st.st_mode):
        return None
    try:
        linked = stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        linked = False
    return ("is a symbolic link to " if linked else "is ") + _kind(st.st_mode)


def check_destination(path: str, force: bool) -> None:
    """Refuse an output path before any work: one that is not a regular file, whatever ``force``
    says, and, without ``force``, anything at all (a dangling symbolic link included)."""
    why = unreplaceable(path)
    if why is not None:
        raise OutputError(f"output {path} {why}: only a regular file can be replaced")
    if not force and os.path.lexists(path):
        raise OutputExists(f"output {path} already exists")


def check_output_folder(dest: str) -> str:
    """The folder an output goes to, which must exist (its path, absolute)."""
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise OutputError(f"output folder does not exist: {folder}")
    return folder


def check_free_space(folder: str, size: int) -> None:
    """Room for a file of ``size`` bytes in ``folder``, checked before it is written."""
    import shutil      # here: its import (bz2, lzma, ...) is not paid by inspect
    try:
        free = shutil.disk_usage(folder).free
    except OSError as e:
        raise OutputError(f"cannot use {folder}: {e.strerror}") from None
    if size > free:
        raise OutputError(f"not enough free space in {folder}: need {size:,} bytes, "
                          f"{free:,} available")


# --------------------------------------------------------------------------------------------
# Commit without replacing: renameat2(RENAME_NOREPLACE), else link + unlink

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _load_renameat2():
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2           # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_NOT_LOADED = object()
# renameat2 from the C library, looked up at the first commit (ctypes is not paid by commands
# that write nothing); None where the C library has none
_renameat2 = _NOT_LOADED


def _rename_noreplace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (FileExistsError then), atomically."""
    global _renameat2
    if _renameat2 is _NOT_LOADED:
        _renameat2 = _load_renameat2()
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                      _RENAME_NOREPLACE) == 0:
            return
        import ctypes
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), dst)
        # the filesystem (or kernel) has no RENAME_NOREPLACE: a hard link cannot replace either
    try:
        os.link(src, dst)                 # FileExistsError if dst exists, atomically
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        # no hard links here either (FAT, some FUSE filesystems): the best left is a check just
        # before the rename, which leaves a window of microseconds instead of the whole run
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def commit_all(outputs: list["AtomicOutputFile"], replace: bool = False) -> None:
    """Commit every output of a command, or none: each is fsync'd first, and when one cannot
    take its name (without ``replace``: something appeared there meanwhile) the ones this call
    already put in place are removed again, so a split model is never left half written."""
    for out in outputs:
        out.sync()
    done: list[AtomicOutputFile] = []
    try:
        for out in outputs:
            out.commit(replace=replace)
            done.append(out)
    except BaseException:
        if not replace:     # each was created by us, in a place that was free
            for out in done:
                out.withdraw()
        for out in outputs:
            out.abort()
        if not replace or not done:
            mark_committed(False)      # no output of this command is in place
        raise


# --------------------------------------------------------------------------------------------
# Temporary files of runs that died

def _say_stale(message: str) -> None:
    """The command line prints these as "warning: ..." lines (runner.on_stale_temporary); API
    users get a RuntimeWarning."""
    if runner.on_stale_temporary is not None:
        runner.on_stale_temporary(message)
    else:
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True      # not a process id we can test: never treat it as dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True      # alive, another user's
    except (OverflowError, OSError):
        return True
    return True


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the temporary files that runs which no longer exist left in ``folder``, and those
    that notes in ``folder`` (the system's temporary folder) say such runs created elsewhere;
    returns their paths. Untouched: those of a live process, those locked by any process (a run
    holds a lock on each of its temporary files, which also protects one written from another
    machine or PID namespace), another user's, and our own."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        m = _TEMP_NAME.match(name) or _OLD_TEMP_NAME.match(name)
        if not m:
            continue
        path = os.path.join(folder, name)
        pid = int(m.group("pid"))
        if m.re is _TEMP_NAME and m.group("kind") == NOTE_KIND:
            target = _read_note(path, pid, m.group("token"))
            if target is not None and not is_tracked_temporary(target) and _stale(target, pid):
                removed += _remove_stale(target, pid)
            if not _stale_note(path, pid, target):
                continue
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        if _stale(path, pid):
            removed += _remove_stale(path, pid)
    return removed


def _stale(path: str, pid: int) -> bool:
    if pid == os.getpid():
        return not is_tracked_temporary(path)
    return not _pid_alive(pid)


def _stale_note(note: str, pid: int, target: str | None) -> bool:
    """A note goes once its file is gone (or never was one of ours) and its process is over."""
    if target is not None and os.path.lexists(target):
        return False
    return not _pid_alive(pid) or (pid == os.getpid() and not is_tracked_temporary(target or ""))


def _read_note(note: str, pid: int, token: str) -> str | None:
    """The temporary file a note names, if the note is ours and names one of that run's files."""
    try:
        fd = os.open(note, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        target = os.fsdecode(os.read(fd, 4096))
    except OSError:
        return None
    finally:
        os.close(fd)
    m = _TEMP_NAME.match(os.path.basename(target))
    if not os.path.isabs(target) or m is None or int(m.group("pid")) != pid \
            or m.group("token") != token or m.group("kind") == NOTE_KIND:
        return None
    return target


def _remove_stale(path: str, pid: int) -> list[str]:
    """Remove one stale temporary file: a regular file of ours (this user's), unlocked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []                        # gone already, a link, or unreadable: leave it
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return []                    # a live run holds it
        try:
            same = os.lstat(path)
            if (same.st_dev, same.st_ino) != (st.st_dev, st.st_ino):
                return []
            os.unlink(path)
        except FileNotFoundError:
            return []
        except OSError as e:
            _say_stale(f"{path} was left by amx-repack process {pid}, which is no "
                       f"longer running, and cannot be removed: {e.strerror}")
            return []
    finally:
        os.close(fd)
    if pid == os.getpid():
        _say_stale(f"removed {path}, a temporary file left by an earlier process "
                   f"with this process's id ({pid})")
    else:
        _say_stale(f"removed {path}, a temporary file left by amx-repack process "
                   f"{pid}, which is no longer running")
    return [path]


def remove_stale_at_start(*folders: str | None) -> None:
    """At the start of a command that writes temporary files: stale ones in the system's
    temporary folder (where the notes are) and in the folders it will write to."""
    seen = set()
    for folder in (tempfile.gettempdir(), *folders):
        if folder is None:
            continue
        folder = os.path.abspath(folder)
        if folder not in seen:
            seen.add(folder)
            remove_stale_temporaries(folder)


# --------------------------------------------------------------------------------------------


class AtomicOutputFile:
    """A preallocated, position-addressed output file committed by rename."""

    def __init__(self, dest: str | os.PathLike, size: int, kind: str = ""):
        self.dest = os.path.abspath(os.fspath(dest))
        self.size = size
        self.temp = ""
        self.fd = -1
        self._identity = None      # (st_dev, st_ino) of the file, once synced
        folder = check_output_folder(self.dest)
        # (what lies at dest is checked by check_destination before any work, and by commit)
        remove_stale_temporaries(folder)
        check_free_space(folder, size)
        try:
            self.temp, self.fd = create_temporary(folder, kind)
        except OSError as e:
            raise OutputError(f"cannot create output in {folder}: {e.strerror}") from None
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

    def sync(self) -> None:
        """fsync and close the file (the first step of the commit)."""
        if self.fd < 0:
            return
        try:
            os.fsync(self.fd)
            st = os.fstat(self.fd)
            self._identity = (st.st_dev, st.st_ino)
            os.close(self.fd)
            self.fd = -1
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot write {self.dest}: {e.strerror}") from None

    def commit(self, replace: bool = False) -> None:
        """Give the file its final name. Without ``replace`` nothing that exists there (whenever
        it appeared) is replaced: OutputError, and the temporary file is removed. With it, only
        a regular file or a symbolic link is."""
        self.sync()
        try:
            if replace:
                why = unreplaceable(self.dest)
                if why is not None:
                    raise OutputError(f"output {self.dest} {why} now: only a regular file can be "
                                      f"replaced; nothing was written")
            # From here on an interruption must not claim that no output was written: a signal
            # handled after the rename (which cannot be undone) is ignored (see runner.py).
            mark_committed()
            if replace:
                os.replace(self.temp, self.dest)
            else:
                _rename_noreplace(self.temp, self.dest)
            untrack_temporary(self.temp)
        except FileExistsError:
            self.abort()
            raise OutputExists(f"output {self.dest} appeared while amx-repack was writing it "
                               f"(another process?); it was left as it is and nothing was "
                               f"written") from None
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot write {self.dest}: {e.strerror}") from None
        except BaseException:
            self.abort()
            raise
        try:
            dfd = os.open(os.path.dirname(self.dest), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass  # the rename happened; a folder that cannot be fsync'd is not an error

    def withdraw(self) -> None:
        """Remove a committed output again (commit_all, when a later output of the same command
        cannot be committed): only if the name still holds our file."""
        try:
            st = os.lstat(self.dest)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.dest)
        except OSError:
            pass

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self.temp:
            return
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
