"""zstandard-compressed models (``.gguf.zst``), always as streams, never whole in memory.

* ``inspect`` decompresses only as much of the stream as the header takes.
* ``convert`` / ``verify`` / ``unpack`` need random access to tensor data, so a compressed input is
  first streamed into a temporary uncompressed copy (beside the output, or in the system's
  temporary folder for ``verify``), which is removed when the command ends, however it ends.
* ``convert --compress`` writes the finished (uncompressed, not yet renamed) output through a
  multi-threaded zstd stream into ``OUT.gguf.zst``, atomically, then drops the uncompressed copy.
"""

from __future__ import annotations

import os
import tempfile

import zstandard

from formats.gguf_container import GGUFFile, GGUFFormatError, check_data_section, parse_header

from .atomic import AtomicOutputFile, temp_path_for
from .runner import stop_signals_held, track_temporary, untrack_temporary
from .errors import InputError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
STREAM_CHUNK = 4 << 20
COMPRESSION_LEVEL = 3
MAX_HEADER_BYTES = 128 << 20   # real headers, vocabularies included, take a few MB


def is_zst(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ZSTD_MAGIC
    except OSError:
        return False


def compressed_name(output: str) -> str:
    return output if output.endswith(".zst") else output + ".zst"


def read_header(path: str) -> GGUFFile:
    """Parse the GGUF header at the start of a .zst stream, decompressing only that much."""
    with open(path, "rb") as fh:
        first = fh.read(18)
        try:
            content_size = zstandard.frame_content_size(first)
        except zstandard.ZstdError as e:
            raise InputError(f"{path}: not a valid zstd stream ({e})") from None
        fh.seek(0)
        reader = zstandard.ZstdDecompressor().stream_reader(fh)
        buf = bytearray()
        want = STREAM_CHUNK
        while True:
            chunk = _read(reader, path, want)
            buf += chunk
            try:
                parsed = parse_header(bytes(buf), len(buf), file_size=-1)
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
                raise InputError(f"{path}: {e}") from None
            break
    if content_size >= 0:
        try:
            check_data_section(parsed, content_size)
        except GGUFFormatError as e:
            raise InputError(f"{path}: {e}") from None
    parsed.path = path
    return parsed


def _read(reader, path: str, n: int) -> bytes:
    try:
        return reader.read(n)
    except zstandard.ZstdError as e:
        raise InputError(f"{path}: corrupt zstd stream ({e})") from None


def decompress_to_temp(path: str, folder: str | None) -> str:
    """Stream ``path`` into a temporary plain GGUF in ``folder``; the caller removes it.
    Every frame must be complete (a truncated download is an error, not a short file)."""
    folder = folder or tempfile.gettempdir()
    temp = temp_path_for(os.path.join(folder, os.path.basename(path))) + "-input"
    dctx = zstandard.ZstdDecompressor()
    with stop_signals_held():   # created and tracked with no interruption in between
        dst = open(temp, "xb")
        track_temporary(temp)
    try:
        with open(path, "rb") as src, dst:
            frame, frame_open = dctx.decompressobj(), False
            while chunk := src.read(STREAM_CHUNK):
                while chunk:
                    dst.write(frame.decompress(chunk))
                    frame_open, chunk = True, b""
                    if frame.eof:   # the next frame of a multi-frame stream (pzstd) follows
                        chunk = frame.unused_data
                        frame, frame_open = dctx.decompressobj(), False
            if frame_open:
                raise InputError(f"{path}: truncated zstd stream")
    except zstandard.ZstdError as e:
        _remove(temp)
        raise InputError(f"{path}: corrupt zstd stream ({e})") from None
    except BaseException:
        _remove(temp)
        raise
    return temp


def compress_output(out: AtomicOutputFile, dest: str, threads: int) -> AtomicOutputFile:
    """Compress a finished (uncommitted) output into an uncommitted ``dest`` and drop ``out``."""
    zout = AtomicOutputFile(dest, 0)
    try:
        cctx = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL, threads=threads,
                                        write_content_size=True, write_checksum=True)
        with open(out.temp, "rb") as src, os.fdopen(os.dup(zout.fd), "wb") as dst:
            cctx.copy_stream(src, dst, size=out.size, read_size=STREAM_CHUNK,
                             write_size=STREAM_CHUNK)
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
