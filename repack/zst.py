"""zstandard-compressed models (``.gguf.zst``), always as streams, never whole in memory.

* ``inspect`` decompresses only as much of the stream as the header takes.
* ``convert`` / ``verify`` / ``unpack`` need random access to tensor data, so a compressed input is
  first streamed into a temporary uncompressed copy (beside the output, or in the system's
  temporary folder for ``verify``), which is removed when the command ends, however it ends.
* ``convert --compress`` writes the finished (uncompressed, not yet renamed) output through a
  multi-threaded zstd stream into ``OUT.gguf.zst``, atomically, then drops the uncompressed copy.

A compressed input is hostile until proven otherwise: a few MB of zstd can expand to terabytes
(one 4-byte RLE block is 128 KiB of output). So decompression never asks for more than
``STREAM_CHUNK`` bytes of output at a time (memory stays bounded whatever the ratio), and the
frames are walked first, header by header (no decompression): a truncated stream is refused before
anything is written, and the content size the frames declare is checked against the free space;
without a declared size, writing stops cleanly when the output would outgrow the free space.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from formats.lazy import lazy_module


from formats.gguf_container import (MAX_HEADER_BYTES, GGUFFile, GGUFFormatError,
                                    check_data_section, open_regular, parse_header)

from .address_space import threads_that_fit
from .runner import start_phase, untrack_temporary
from .errors import InputError, OutOfMemory, OutputError, is_out_of_memory

if TYPE_CHECKING:
    from .atomic import AtomicOutputFile

# imported at first use: inspect of a plain .gguf (which asks is_zst) does not pay for them
zstandard = lazy_module("zstandard")
shutil = lazy_module("shutil")
tempfile = lazy_module("tempfile")
atomic = lazy_module("repack.atomic")     # inspect writes nothing

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
STREAM_CHUNK = 4 << 20
COMPRESSION_LEVEL = 3
# The largest zstd window accepted: zstd's own default limit is 128 MiB (--long=27); streams
# written with --long=28..30 need up to 1 GiB of memory to decompress, which is accepted; larger
# windows (--long=31) are refused naming this limit. Memory while decompressing: the window.
MAX_WINDOW_LOG = 30
MAX_WINDOW_BYTES = 1 << MAX_WINDOW_LOG

_FRAME_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = range(0x184D2A50, 0x184D2A60)
_MAX_FRAME_HEADER = 18
_SCAN_WINDOW = 4096            # bytes read at a time while walking block headers


def is_zst(path: str) -> bool:
    try:
        fd = open_regular(path)
    except (OSError, GGUFFormatError):
        return False   # the GGUF reader reports what is wrong with it
    try:
        magic = os.pread(fd, 4, 0)
        # a stream may start with skippable frames (pzstd writes one before every frame)
        return magic == ZSTD_MAGIC or (len(magic) == 4 and
                                       struct.unpack("<I", magic)[0] in _SKIPPABLE_MAGIC)
    except OSError:
        return False
    finally:
        os.close(fd)


SUFFIX = ".zst"


def compressed_name(output: str) -> str:
    return output if output.endswith(SUFFIX) else output + SUFFIX


# ------------------------------------------------------------------------------------------
# The frames of a stream, from their headers (RFC 8878 §3.1)


@dataclass
class StreamFrames:
    frames: int             # zstd frames (skippable frames not counted)
    content_size: int       # the decompressed size all frames declare together; -1: not declared
    compressed_size: int    # bytes of the stream (the whole file)


class _Window:
    """Small positional reads of a file through a little cache (block headers are 3 bytes)."""

    def __init__(self, fd: int):
        self.fd, self.start, self.data = fd, 0, b""

    def get(self, pos: int, n: int) -> bytes:
        if not (self.start <= pos and pos + n <= self.start + len(self.data)):
            self.start, self.data = pos, os.pread(self.fd, max(n, _SCAN_WINDOW), pos)
        return self.data[pos - self.start:pos - self.start + n]


def scan_frames(fd: int, path: str) -> StreamFrames:
    """Walk every frame header and block header of the zstd stream in ``fd`` without decompressing
    anything: refuse a stream whose last frame is cut short (a truncated download), reserved block
    types and trailing bytes that are no frame; add up the declared content sizes."""
    size = os.fstat(fd).st_size
    w = _Window(fd)
    pos, frames, declared = 0, 0, 0
    while pos < size:
        magic_bytes = w.get(pos, 4)
        if len(magic_bytes) < 4:
            raise InputError(f"{path}: truncated zstd stream ({size - pos} stray bytes at the end)")
        (magic,) = struct.unpack("<I", magic_bytes)
        if magic in _SKIPPABLE_MAGIC:
            head = w.get(pos, 8)
            if len(head) < 8:
                raise InputError(f"{path}: truncated zstd stream (skippable frame at offset {pos})")
            pos += 8 + struct.unpack_from("<I", head, 4)[0]
            if pos > size:
                raise InputError(f"{path}: truncated zstd stream (a skippable frame runs past the "
                                 f"end of the file)")
            continue
        if magic != _FRAME_MAGIC:
            raise InputError(f"{path}: not a valid zstd stream (no frame at offset {pos})")
        head = w.get(pos, _MAX_FRAME_HEADER)
        try:
            header_size = zstandard.frame_header_size(head)
            params = zstandard.get_frame_parameters(head)
            content_size = zstandard.frame_content_size(head)   # -1: not declared
        except zstandard.ZstdError as e:
            if len(head) < _MAX_FRAME_HEADER:
                raise InputError(f"{path}: truncated zstd stream (frame header at offset {pos})") \
                    from None
            raise InputError(f"{path}: not a valid zstd stream ({e})") from None
        frames += 1
        _check_window(path, frames, params.window_size)
        if content_size < 0 or declared < 0:
            declared = -1
        else:
            declared += content_size
        p = pos + header_size
        while True:
            block = w.get(p, 3)
            if len(block) < 3:
                raise InputError(f"{path}: truncated zstd stream (frame {frames} ends past the end "
                                 f"of the file)")
            header = int.from_bytes(block, "little")
            last, kind, block_size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                raise InputError(f"{path}: corrupt zstd stream (reserved block type at offset {p})")
            p += 3 + (1 if kind == 1 else block_size)   # an RLE block stores its byte once
            if p > size:
                raise InputError(f"{path}: truncated zstd stream (frame {frames} ends past the end "
                                 f"of the file)")
            if last:
                break
        if params.has_checksum:
            p += 4
            if p > size:
                raise InputError(f"{path}: truncated zstd stream (frame {frames} ends past the end "
                                 f"of the file)")
        pos = p
    if frames == 0:
        raise InputError(f"{path}: not a valid zstd stream (no frame)")
    return StreamFrames(frames, declared, size)


# ------------------------------------------------------------------------------------------
# inspect: the header only


def read_header(path: str) -> GGUFFile:
    """Parse the GGUF header at the start of a .zst stream, decompressing only that much."""
    with os.fdopen(open_regular(path), "rb") as fh:
        first = _first_frame_header(fh.fileno(), path)
        try:
            content_size = zstandard.frame_content_size(first)
            window = zstandard.get_frame_parameters(first).window_size
        except zstandard.ZstdError as e:
            raise InputError(f"{path}: not a valid zstd stream ({e})") from None
        _check_window(path, 1, window)
        fh.seek(0)
        reader = _decompressor().stream_reader(fh, read_across_frames=True, closefd=False)
        buf = bytearray()
        want = STREAM_CHUNK
        while True:
            chunk = _read(reader, path, want)   # at most `want` bytes, whatever the ratio
            buf += chunk
            try:
                parsed = parse_header(buf, len(buf), file_size=-1)
            except GGUFFormatError as e:
                if chunk and str(e).startswith("truncated file"):
                    # The header goes on past what was decompressed so far. A hostile stream can
                    # claim a header of terabytes (one huge string length) and decompress zeros
                    # for ever from a few KB: stop at a bound far above real headers, and read in
                    # doubling steps so that parsing again from the start stays linear overall.
                    if len(buf) >= MAX_HEADER_BYTES:
                        raise InputError(f"{path}: the GGUF header does not end within the first "
                                         f"{MAX_HEADER_BYTES >> 20} MiB of the stream") from None
                    want = min(len(buf), MAX_HEADER_BYTES - len(buf))
                    continue
                if not chunk:
                    scan_frames(fh.fileno(), path)   # a truncated stream is said to be one
                raise InputError(f"{path}: {e}") from None
            break
        del buf
        if content_size >= 0:
            try:
                check_data_section(parsed, content_size)
            except GGUFFormatError as e:
                # The first frame's size is the whole content only for a one-frame stream (pzstd
                # writes many): walk the frames (a few reads per frame, so only when needed) and
                # check against what they declare together, if they all declare a size.
                total = scan_frames(fh.fileno(), path).content_size
                if total == content_size:
                    raise InputError(f"{path}: {e}") from None
                if total >= 0:
                    try:
                        check_data_section(parsed, total)
                    except GGUFFormatError as e2:
                        raise InputError(f"{path}: {e2}") from None
    parsed.path = path
    return parsed


def _first_frame_header(fd: int, path: str) -> bytes:
    """The start of the first zstd frame, past any skippable frames before it."""
    pos = 0
    for _ in range(1 << 16):
        head = os.pread(fd, _MAX_FRAME_HEADER, pos)
        if len(head) >= 8 and struct.unpack_from("<I", head)[0] in _SKIPPABLE_MAGIC:
            pos += 8 + struct.unpack_from("<I", head, 4)[0]
            continue
        return head
    raise InputError(f"{path}: not a valid zstd stream (only skippable frames at its start)")


def _check_window(path: str, frame: int, window: int) -> None:
    if window > MAX_WINDOW_BYTES:
        raise InputError(f"{path}: zstd frame {frame} needs a {window >> 20:,} MiB window to "
                         f"decompress; at most {MAX_WINDOW_BYTES >> 20:,} MiB (window log "
                         f"{MAX_WINDOW_LOG}) is accepted: decompress it with zstd first")


def _decompressor():
    return zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)


def _read(reader, path: str, n: int) -> bytes:
    try:
        return reader.read(n)
    except zstandard.ZstdError as e:
        if is_out_of_memory(e):
            raise OutOfMemory(f"out of memory (zstd could not decompress {path}: {e})") from None
        raise InputError(f"{path}: corrupt zstd stream ({e})") from None



# ------------------------------------------------------------------------------------------
# convert, verify, unpack: a temporary plain copy


class _CountingReader:
    """The compressed file as the decompressor reads it, counting the bytes it took."""

    def __init__(self, fh):
        self.fh, self.count = fh, 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.count += len(data)
        return data


def decompress_to_temp(path: str, folder: str | None, progress=None) -> str:
    """Stream ``path`` into a temporary plain GGUF in ``folder``; the caller removes it.

    Every frame must be complete (a truncated download is an error, not a short file); the
    declared content size must fit in the free space of ``folder``, and the real output may never
    outgrow it (checked at every step, so a stream that declares nothing stops there too).
    Memory: one ``STREAM_CHUNK`` of output at a time, plus zstd's own window (at most 128 MiB,
    zstd's default limit; 2-8 MiB at the usual levels). ``progress`` counts compressed bytes
    read (the one total known up front, whether or not the frames declare their size)."""
    folder = folder or tempfile.gettempdir()
    with os.fdopen(open_regular(path), "rb") as src:
        shape, free = _room_to_decompress(src.fileno(), path, folder)
        try:
            temp, fd = atomic.create_temporary(folder, "input", 0o600)
        except OSError as e:
            raise OutputError(f"cannot create the decompressed copy of {path} in {folder}: "
                              f"{e.strerror}") from None
        try:
            start_phase(progress, "decompress", shape.compressed_size)
            with os.fdopen(fd, "wb", buffering=0) as dst:
                counted = _CountingReader(src)
                reported = 0
                reader = _decompressor().stream_reader(
                    counted, read_size=1 << 20, read_across_frames=True, closefd=False)
                written = 0
                while chunk := _read(reader, path, STREAM_CHUNK):
                    written += len(chunk)
                    if written > free:
                        raise OutputError(
                            f"not enough free space in {folder} to decompress {path}: the stream "
                            f"goes on past the {free:,} bytes available"
                            + ("" if shape.content_size >= 0 else " (it declares no size)"))
                    _write_all(dst, chunk, path, folder)
                    if progress is not None and counted.count > reported:
                        progress(counted.count - reported)
                        reported = counted.count
                if counted.count != shape.compressed_size or \
                        shape.content_size not in (-1, written):
                    raise InputError(f"{path}: the zstd stream changed while it was read, or its "
                                     f"frames end early")
        except BaseException:
            _remove(temp)
            raise
    return temp


def check_room_to_decompress(path: str, folder: str) -> None:
    """The refusal of decompress_to_temp for a stream whose declared size does not fit in
    ``folder`` (convert --dry-run says it without decompressing)."""
    fd = open_regular(path)
    try:
        _room_to_decompress(fd, path, folder)
    finally:
        os.close(fd)


def _room_to_decompress(fd: int, path: str, folder: str) -> tuple[StreamFrames, int]:
    shape = scan_frames(fd, path)
    try:
        free = shutil.disk_usage(folder).free
    except OSError as e:
        raise OutputError(f"cannot use {folder} for the decompressed copy of {path}: "
                          f"{e.strerror}") from None
    if shape.content_size > free:
        raise OutputError(f"not enough free space in {folder} to decompress {path}: its zstd "
                          f"frames declare {shape.content_size:,} bytes, {free:,} available")
    return shape, free


def _write_all(dst, data: bytes, path: str, folder: str) -> None:
    view = memoryview(data)
    while view:
        try:
            n = dst.write(view)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutputError(f"not enough free space in {folder} to decompress {path}: "
                                  f"{e.strerror}") from None
            if e.errno == errno.EFBIG:
                raise OutputError(f"the decompressed copy of {path} is too large for {folder} "
                                  f"(file size limit)") from None
            raise OutputError(f"cannot write the decompressed copy of {path} in {folder}: "
                              f"{e.strerror}") from None
        view = view[n:]


# ------------------------------------------------------------------------------------------
# convert --compress


def compress_output(out: AtomicOutputFile, dest: str, threads: int,
                    progress=None) -> AtomicOutputFile:
    """Compress a finished (uncommitted) output into an uncommitted ``dest`` and drop ``out``.
    ``progress`` receives the uncompressed bytes as they are compressed."""
    zout = atomic.AtomicOutputFile(dest, 0, "zst")
    try:
        # fewer workers under an address-space limit; never 0 (single-threaded zstd writes other
        # bytes than its multi-threaded mode, whose output is the same for any number of workers)
        cctx = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL, threads=threads_that_fit(threads),
                                        write_content_size=True, write_checksum=True)
        with open(out.temp, "rb") as src, os.fdopen(os.dup(zout.fd), "wb") as dst:
            with cctx.stream_writer(dst, size=out.size, write_size=STREAM_CHUNK,
                                    closefd=False) as writer:
                while chunk := src.read(STREAM_CHUNK):
                    writer.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
    except zstandard.ZstdError as e:
        zout.abort()
        if is_out_of_memory(e):    # zstd's allocation failures are errors of its own
            raise OutOfMemory(f"out of memory (zstd could not compress {dest}: {e})") from None
        raise OutputError(f"cannot compress {dest}: {e}") from None
    except BaseException:
        zout.abort()
        raise
    finally:
        out.abort()
    return zout


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    untrack_temporary(path)
