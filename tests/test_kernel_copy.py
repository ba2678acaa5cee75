"""repack/kernel_copy.py: unchanged byte ranges copied by copy_file_range, with the read/write
fallback wherever the kernel refuses, and the same errors as the pwrite path it replaces."""

from __future__ import annotations

import errno
import os

import pytest

from repack import kernel_copy
from repack.atomic import AtomicOutputFile
from repack.errors import InputError, OutputError


@pytest.fixture
def source(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 123)
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


def _copy_and_read(tmp_path, fd, data, src_offset, offset, n):
    out = AtomicOutputFile(tmp_path / "out.bin", len(data))
    try:
        kernel_copy.copy_range(fd, src_offset, out, offset, n, "in.bin")
        return os.pread(out.fd, len(data), 0)
    finally:
        out.abort()


@pytest.mark.parametrize("refusal", [None, errno.EXDEV, errno.EINVAL, errno.ENOSYS])
def test_copies_the_range_exactly(tmp_path, source, monkeypatch, refusal):
    """By the kernel, or (where it refuses: across filesystems, unsupported files, no system
    call) by read + pwrite: the same bytes at the same place, the rest of the file untouched."""
    fd, data = source
    calls = []
    real = os.copy_file_range

    def copy_file_range(*args):
        calls.append(args)
        if refusal is not None:
            raise OSError(refusal, os.strerror(refusal))
        return real(*args)
    monkeypatch.setattr(os, "copy_file_range", copy_file_range)
    monkeypatch.setattr(kernel_copy, "_kernel_copies", [True])
    n = len(data) - 2000
    got = _copy_and_read(tmp_path, fd, data, 1000, 77, n)
    assert got[77:77 + n] == data[1000:1000 + n]
    assert got[:77] == bytes(77) and not any(got[77 + n:])     # nothing else written
    assert calls, "copy_file_range was not tried"
    # no system call at all: the process stops asking
    assert kernel_copy._kernel_copies[0] == (refusal != errno.ENOSYS)


def test_input_that_ends_early_is_an_input_error(tmp_path, source):
    fd, data = source
    with pytest.raises(InputError, match="unexpected end of file"):
        _copy_and_read(tmp_path, fd, data, len(data) - 10, 0, 20)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_full_output_is_an_output_error(tmp_path, source, monkeypatch, code):
    fd, data = source

    def copy_file_range(*args):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "copy_file_range", copy_file_range)
    monkeypatch.setattr(kernel_copy, "_kernel_copies", [True])
    with pytest.raises(OutputError, match=f"cannot write .*out.bin: {os.strerror(code)}"):
        _copy_and_read(tmp_path, fd, data, 0, 0, 4096)


def test_read_ahead_is_only_a_hint(source):
    fd, _ = source
    kernel_copy.read_ahead(fd, 0, 4096)
    kernel_copy.read_ahead(fd, sequential=True)
    kernel_copy.read_ahead(-1, 0, 4096)      # a bad descriptor changes nothing, raises nothing
