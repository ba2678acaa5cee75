"""GGUF container: a tolerant, fast reader and a planned, position-addressed writer.

Reader
    Parses the header of GGUF v2/v3 files straight from a read-only ``mmap``: every KV record is kept
    as its raw bytes (so it can be copied byte-exact) and decoded only when asked; big arrays (a
    262,144-entry vocabulary) are skipped by walking their lengths, never decoded element by element.
    Any type id of :mod:`formats.ggml_types` is accepted, so ik_llama.cpp files and our own AMX files
    open. Every malformed input raises :class:`GGUFFormatError` with a one-line message naming the
    problem (and the tensor or key where there is one). Only the header pages are touched.

Writer
    :func:`plan_layout` computes the whole output (header bytes, every tensor's offset, alignment
    padding, total size) before a byte is written, so workers can fill tensor ranges by position.
    The file itself is written by the application through :class:`repack.atomic.AtomicOutputFile`.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Iterable, Sequence

from .lazy import lazy_module

from .ggml_types import GGMLType, TYPES
from .text import printable   # noqa: F401 (also imported from here)

np = lazy_module("numpy")   # only inside functions: not loaded by --help or inspect

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
ALIGNMENT_KEY = "general.alignment"


class GGUFFormatError(ValueError):
    """The file is not a GGUF file this tool can read; the message is one line for the user."""

    def __init__(self, message: str):
        # Messages quote keys and tensor names from the file, which may hold newlines or terminal
        # escape sequences: escape every non-printable character, so the message stays one line.
        super().__init__(printable(str(message)))


class ValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size value types: struct format and numpy dtype (little-endian).
_SCALAR_FORMAT = {
    ValueType.UINT8: "<B", ValueType.INT8: "<b", ValueType.UINT16: "<H", ValueType.INT16: "<h",
    ValueType.UINT32: "<I", ValueType.INT32: "<i", ValueType.FLOAT32: "<f", ValueType.BOOL: "<?",
    ValueType.UINT64: "<Q", ValueType.INT64: "<q", ValueType.FLOAT64: "<d",
}
_SCALAR_SIZE = {t: struct.calcsize(f) for t, f in _SCALAR_FORMAT.items()}
_SCALAR_DTYPE = {
    ValueType.UINT8: "<u1", ValueType.INT8: "<i1", ValueType.UINT16: "<u2", ValueType.INT16: "<i2",
    ValueType.UINT32: "<u4", ValueType.INT32: "<i4", ValueType.FLOAT32: "<f4", ValueType.BOOL: "?",
    ValueType.UINT64: "<u8", ValueType.INT64: "<i8", ValueType.FLOAT64: "<f8",
}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# Smallest possible encodings, used to reject absurd counts before looping over them.
_MIN_KV_BYTES = 8 + 1 + 4 + 1          # key length, 1-char key, value type, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8   # name length, n_dims, one ne, type, offset
_INT64_MAX = (1 << 63) - 1
# Arrays of arrays are walked recursively: without a bound, a few KB of nested array headers
# (12 bytes a level) overflow Python's stack (RecursionError instead of GGUFFormatError).
# llama.cpp reads no nested arrays at all; gguf-py writes them one level deep.
MAX_ARRAY_NESTING = 16
# Every tensor info and metadata record becomes a few Python objects (a few hundred bytes, 5-10x
# its size in the file), and every command keeps a few more per tensor: a 64 MiB header of 1.7 M
# tensor infos took 3.4 GB to parse and 6.4 GB to convert. Real models have at most a few
# thousand tensors (experts are 3-D tensors; even one tensor per expert of a 256-expert, 60-layer
# model stays under 50,000) and a few dozen records (a vocabulary is one array record): larger
# counts are refused up front, which bounds every command's memory (about 300 MB at the limit).
MAX_TENSORS = 1 << 16
MAX_KV_RECORDS = 1 << 16
# amx-repack's convert appends a dozen records of its own (repack/metadata.py): they do not count
# against MAX_KV_RECORDS, so that every file convert accepts gives an output it reads back.
OWN_KEY_PREFIX = "amx_repack."
OWN_RECORDS_HEADROOM = 256
# The whole header (magic to the last tensor info) may take at most this much: real headers,
# vocabularies included, take a few MB (Gemma 3's 262k tokens: 4.6 MB). Without a bound one
# metadata string of 512 MiB made convert hold 2.6 GB (the record, its digests and the output
# header are each a copy); with it, every command's memory is bounded whatever the header says. A
# value that would end past it is refused before anything of it is read, naming its key.
MAX_HEADER_BYTES = 128 << 20
# A power-of-two alignment up to 2^31 is "valid", but a 57-byte file with no tensors and
# alignment 2^31 made `convert` write a 2 GiB header of padding (4 GB of memory). Real files use
# 32 (some 64..4096); 1 MiB leaves a wide margin.
MAX_ALIGNMENT = 1 << 20


def align_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


# --------------------------------------------------------------------------------------------
# Records


@dataclass(slots=True)
class KVRecord:
    """One metadata record, kept as the exact bytes it had in the file."""

    key: str
    value_type: ValueType
    raw: bytes                 # key string + value type + value, as in the file
    value_start: int           # offset of the value inside ``raw``
    array_type: ValueType | None = None
    array_count: int = 0

    @property
    def value(self):
        """Decoded value: int/float/bool/str, a numpy array for numeric arrays, a list of str."""
        return _decode_value(self.raw, self.value_start, self.value_type)

    def describe(self, limit: int = 60) -> str:
        """The value for a message. A value that cannot be decoded (a string that is not UTF-8)
        is named as such: the messages that describe a changed or damaged record must not fail
        on it."""
        if self.value_type == ValueType.ARRAY:
            return f"[{self.array_type.name.lower()} x {self.array_count}]"
        try:
            text = repr(self.value)
        except GGUFFormatError:
            return f"a {self.value_type.name.lower()} value that cannot be decoded"
        return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]     # ggml order: ne0 (contiguous) first
    type_id: int
    offset: int                # relative to the data section
    nbytes: int
    index: int = 0             # position among the tensor infos

    @property
    def type(self) -> GGMLType:
        return TYPES[self.type_id]

    @property
    def ne0(self) -> int:
        return self.shape[0]

    @property
    def rows(self) -> int:
        """ne1 * ne2 * ne3: the number of ne0-element rows."""
        n = 1
        for d in self.shape[1:]:
            n *= d
        return n

    @property
    def ne1(self) -> int:
        return self.shape[1] if len(self.shape) > 1 else 1


# --------------------------------------------------------------------------------------------
# Reading


class _Cursor:
    """Bounds-checked little-endian reads from a buffer; errors name what was being read."""

    __slots__ = ("buf", "pos", "end", "cap", "whole")

    def __init__(self, buf, pos: int, end: int, cap: int | None = None, whole: bool = True):
        self.buf, self.pos, self.end = buf, pos, end
        self.cap = cap       # the header bound (MAX_HEADER_BYTES); None: no bound (a record)
        self.whole = whole   # buf holds the whole file (not the start of a stream)

    def within_cap(self, n: int, what: str) -> None:
        """A value of ``n`` bytes from here must end inside the header bound (a value that runs
        past the end of a whole file is reported as that instead)."""
        if self.cap is not None and self.pos + n > self.cap and \
                not (self.whole and self.pos + n > self.end):
            raise GGUFFormatError(f"{what} takes {n:,} bytes from offset {self.pos:,}: a GGUF "
                                  f"header may take at most {self.cap >> 20} MiB (real ones, "
                                  f"vocabulary included, take a few MB)")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise GGUFFormatError(f"truncated file: {what} at offset {self.pos} runs past the end "
                                  f"of the file ({self.end} bytes)")

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self, what: str) -> str:
        n = self.u64(f"length of {what}")
        self.within_cap(n, what)
        if n > self.end - self.pos:
            raise GGUFFormatError(f"truncated file: {what} at offset {self.pos - 8} claims {n} bytes, "
                                  f"past the end of the file")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFFormatError(f"{what} at offset {self.pos - n - 8} is not valid UTF-8") from None

    def skip_value(self, vtype: int, what: str, depth: int = 0) -> tuple[ValueType | None, int]:
        """Move past one value; returns (array item type, array count) for arrays."""
        if vtype in _SCALAR_SIZE:
            self.need(_SCALAR_SIZE[vtype], what)
            self.pos += _SCALAR_SIZE[vtype]
            return None, 0
        if vtype == ValueType.STRING:
            n = self.u64(f"string length of {what}")
            self.within_cap(n, f"the string {what}")
            if n > self.end - self.pos:
                raise GGUFFormatError(f"truncated file: string of {what} claims {n} bytes, past the "
                                      f"end of the file")
            self.pos += n
            return None, 0
        if vtype == ValueType.ARRAY:
            if depth >= MAX_ARRAY_NESTING:
                raise GGUFFormatError(f"arrays nested more than {MAX_ARRAY_NESTING} deep in {what} "
                                      f"at offset {self.pos}")
            itype = self.u32(f"array type of {what}")
            count = self.u64(f"array length of {what}")
            if itype in _SCALAR_SIZE:
                size = _SCALAR_SIZE[itype]
                self.within_cap(count * size, f"the array {what}")
                if count > (self.end - self.pos) // size:
                    raise GGUFFormatError(f"truncated file: array {what} claims {count} items, past "
                                          f"the end of the file")
                self.pos += count * size
            elif itype == ValueType.STRING:
                self.within_cap(count * 8, f"the array {what}")
                if count > (self.end - self.pos) // 8:
                    raise GGUFFormatError(f"truncated file: array {what} claims {count} strings, "
                                          f"past the end of the file")
                self._skip_strings(count, what)
            elif itype == ValueType.ARRAY:
                self.within_cap(count * 12, f"the array {what}")
                if count > (self.end - self.pos) // 12:
                    raise GGUFFormatError(f"truncated file: array {what} claims {count} arrays, "
                                          f"past the end of the file")
                for _ in range(count):
                    self.skip_value(ValueType.ARRAY, what, depth + 1)
            else:
                raise GGUFFormatError(f"unknown array item type {itype} in {what}")
            return ValueType(itype), count
        raise GGUFFormatError(f"unknown value type {vtype} in {what}")

    def _skip_strings(self, count: int, what: str) -> None:
        # The hot loop of header parsing (a vocabulary has ~10^5 strings): in C when the native
        # helper is built (native/gguf_scan.c), else the same loop here with locals only. The
        # bound is the file's end or the header cap, whichever comes first; past it, the Python
        # loop below says which of the two was passed.
        end = self.end if self.cap is None else min(self.end, self.cap)
        scan = _native_scan()
        if scan is not None:
            ffi, lib = scan
            pos = lib.gguf_skip_strings(ffi.from_buffer(self.buf), self.pos, end, count)
            if pos >= 0:
                self.pos = pos
                return
        buf, pos, unpack = self.buf, self.pos, _U64.unpack_from
        short = 0
        for _ in range(count):
            if pos + 8 > end:
                short = 8        # the next string's length runs past the end (or the bound)
                break
            pos += 8 + unpack(buf, pos)[0]
        if not short and pos <= end:
            self.pos = pos
            return
        self.pos = pos
        self.within_cap(short, f"the array {what}")
        raise GGUFFormatError(f"truncated file: a string of array {what} runs past the end of "
                              f"the file")


_NATIVE_SCAN: list = []


def _native_scan():
    """(ffi, lib) of the native header scanner, or None where it is not built (this module
    stays usable as plain Python)."""
    if not _NATIVE_SCAN:
        try:
            from repack._gguf_scan import ffi, lib
            _NATIVE_SCAN.append((ffi, lib))
        except ImportError:
            _NATIVE_SCAN.append(None)
    return _NATIVE_SCAN[0]


def _decode_value(raw: bytes, pos: int, vtype: int):
    if vtype in _SCALAR_FORMAT:
        return struct.unpack_from(_SCALAR_FORMAT[vtype], raw, pos)[0]
    cur = _Cursor(raw, pos, len(raw))
    if vtype == ValueType.STRING:
        return cur.string("value")
    itype = cur.u32("array type")
    count = cur.u64("array length")
    if itype in _SCALAR_DTYPE:
        return np.frombuffer(raw, dtype=_SCALAR_DTYPE[itype], count=count, offset=cur.pos)
    if itype == ValueType.STRING:
        return [cur.string("array item") for _ in range(count)]
    out = []
    for _ in range(count):
        start = cur.pos
        cur.skip_value(itype, "array item")
        out.append(_decode_value(raw[start:cur.pos], 0, itype))
    return out


@dataclass
class GGUFFile:
    """A parsed GGUF header over a read-only mapping of the file."""

    path: str
    version: int
    kv: dict[str, KVRecord]
    tensors: list[TensorInfo]
    alignment: int
    data_start: int
    file_size: int
    tail_padded: bool            # the data section ends with padding to the alignment
    _mm: mmap.mmap | None = field(default=None, repr=False)
    _fd: int = field(default=-1, repr=False)

    # -- access --------------------------------------------------------------------------
    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def get(self, key: str, default=None):
        rec = self.kv.get(key)
        return default if rec is None else rec.value

    @property
    def buffer(self) -> mmap.mmap:
        if self._mm is None:
            raise ValueError("file is closed")
        return self._mm

    def tensor_data(self, t: TensorInfo) -> memoryview:
        start = self.data_start + t.offset
        return memoryview(self.buffer)[start:start + t.nbytes]

    def fileno(self) -> int:
        return self._fd

    def release(self, start: int, end: int) -> None:
        """Drop our mapping's pages of a processed file range (they stay in the page cache), so
        resident memory does not grow with the model while we stream through it."""
        if self._mm is None:
            return
        first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        last = end // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            self._mm.madvise(mmap.MADV_DONTNEED, first, last - first)

    @property
    def data_end(self) -> int:
        return max((self.data_start + t.offset + t.nbytes for t in self.tensors),
                   default=self.data_start)

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:   # a caller still holds a view; the mapping dies with it
                pass
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _refuse_non_regular(mode: int, path: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    raise GGUFFormatError(f"{kind}, not a regular file: only regular files (or links to one) are "
                          f"read")


def open_regular(path: str | os.PathLike) -> int:
    """A read-only descriptor of ``path``, which must be a regular file or a link to one.

    Opening a FIFO for reading blocks until some writer appears (for ever, as far as the user can
    tell), and devices or sockets are no model files either: the path is checked before it is
    opened, and the descriptor again after (the path may change in between), opened with
    O_NONBLOCK so that even that open cannot hang. Raises GGUFFormatError (IsADirectoryError for a
    folder) / OSError."""
    path = os.fspath(path)
    _refuse_non_regular(os.stat(path).st_mode, path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _refuse_non_regular(os.fstat(fd).st_mode, path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Open and parse a GGUF file (read-only). Raises GGUFFormatError / OSError."""
    path = os.fspath(path)
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size < 24:
            if size >= 4 and os.pread(fd, 4, 0) != GGUF_MAGIC:
                raise GGUFFormatError(f"not a GGUF file (magic {os.pread(fd, 4, 0)!r})")
            raise GGUFFormatError(f"truncated file: {size} bytes is shorter than a GGUF header")
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except BaseException:
        os.close(fd)
        raise
    try:
        parsed = parse_header(mm, size)
    except BaseException:
        mm.close()
        os.close(fd)
        raise
    parsed.path, parsed._mm, parsed._fd = path, mm, fd
    return parsed


def _check_count(count: int, what: str, min_bytes: int, remaining: int, size: int) -> None:
    """Reject counts that cannot fit in the file before looping over them."""
    if count <= remaining // min_bytes:
        return
    if count < 1 << 32:
        raise GGUFFormatError(f"truncated file: the header declares {count} {what} records, which "
                              f"cannot fit in the remaining {remaining} bytes")
    raise GGUFFormatError(f"absurd {what} count {count} for a file of {size} bytes")


def _too_many_records(n_kv: int) -> None:
    raise GGUFFormatError(f"absurd metadata count {n_kv:,}: at most {MAX_KV_RECORDS:,} records are "
                          f"supported (real models have a few dozen)")


def parse_header(buf, size: int, file_size: int | None = None) -> GGUFFile:
    """Parse everything up to the data section of a GGUF image whose first ``size`` bytes are in
    ``buf``. The tensors' data ranges are checked against ``file_size`` (default ``size``; -1
    when the total size is not known yet, as for a compressed stream)."""
    magic = bytes(buf[0:4])
    if magic != GGUF_MAGIC:
        raise GGUFFormatError(f"not a GGUF file (magic {magic!r}, expected b'GGUF')")
    cur = _Cursor(buf, 4, size, MAX_HEADER_BYTES, whole=file_size is None or file_size == size)
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
            raise GGUFFormatError("big-endian GGUF file: only little-endian files are supported")
        raise GGUFFormatError(f"unsupported GGUF version {version} (supported: 2, 3)")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    _check_count(n_kv, "metadata", _MIN_KV_BYTES, size - cur.pos, size)
    _check_count(n_tensors, "tensor", _MIN_TENSOR_INFO_BYTES, size - cur.pos, size)
    if n_tensors > MAX_TENSORS:
        raise GGUFFormatError(f"absurd tensor count {n_tensors:,}: at most {MAX_TENSORS:,} tensors "
                              f"are supported (real models have a few thousand)")
    if n_kv > MAX_KV_RECORDS + OWN_RECORDS_HEADROOM:
        _too_many_records(n_kv)

    kv: dict[str, KVRecord] = {}
    own = 0
    for i in range(n_kv):
        start = cur.pos
        key = cur.string(f"key of metadata record {i}")
        if key in kv:
            raise GGUFFormatError(f"duplicate metadata key '{key}'")
        if key.startswith(OWN_KEY_PREFIX):
            own += 1
        if i - own >= MAX_KV_RECORDS or own > OWN_RECORDS_HEADROOM:
            _too_many_records(n_kv)
        vtype = cur.u32(f"value type of '{key}'")
        if vtype not in ValueType.__members__.values():
            raise GGUFFormatError(f"unknown value type {vtype} for metadata key '{key}'")
        value_start = cur.pos - start
        itype, count = cur.skip_value(vtype, f"metadata '{key}'")
        kv[key] = KVRecord(key, ValueType(vtype), bytes(buf[start:cur.pos]), value_start, itype, count)

    alignment = DEFAULT_ALIGNMENT
    if ALIGNMENT_KEY in kv:
        rec = kv[ALIGNMENT_KEY]
        if rec.value_type != ValueType.UINT32:
            raise GGUFFormatError(f"'{ALIGNMENT_KEY}' must be a uint32, not {rec.value_type.name}")
        alignment = rec.value
        if alignment == 0 or alignment & (alignment - 1):
            raise GGUFFormatError(f"'{ALIGNMENT_KEY}' = {alignment} is not a power of two")
        if alignment > MAX_ALIGNMENT:
            raise GGUFFormatError(f"'{ALIGNMENT_KEY}' = {alignment} is absurd (at most "
                                  f"{MAX_ALIGNMENT} is accepted)")

    tensors: list[TensorInfo] = []
    names: set[str] = set()
    for i in range(n_tensors):
        name = cur.string(f"name of tensor {i}")
        if name in names:
            raise GGUFFormatError(f"duplicate tensor name '{name}'")
        names.add(name)
        n_dims = cur.u32(f"dimension count of tensor '{name}'")
        if not 1 <= n_dims <= GGML_MAX_DIMS:
            raise GGUFFormatError(f"tensor '{name}' has {n_dims} dimensions (1..{GGML_MAX_DIMS} allowed)")
        shape = tuple(cur.u64(f"shape of tensor '{name}'") for _ in range(n_dims))
        type_id = cur.u32(f"type of tensor '{name}'")
        offset = cur.u64(f"offset of tensor '{name}'")
        ttype = TYPES.get(type_id)
        if ttype is None:
            raise GGUFFormatError(f"tensor '{name}' has unknown type id {type_id} (its size is unknown)")
        elements = 1
        for d in shape:
            if d > _INT64_MAX:
                raise GGUFFormatError(f"tensor '{name}' has an absurd dimension {d}")
            elements *= d
        if elements > _INT64_MAX:
            raise GGUFFormatError(f"tensor '{name}' has an absurd element count {elements}")
        if shape[0] % ttype.block_size:
            raise GGUFFormatError(f"tensor '{name}': row length {shape[0]} is not a multiple of the "
                                  f"{ttype.name} block size {ttype.block_size}")
        if offset % alignment:
            raise GGUFFormatError(f"tensor '{name}': data offset {offset} is not aligned to {alignment}")
        tensors.append(TensorInfo(name, shape, type_id, offset, ttype.tensor_bytes(shape), i))

    cur.within_cap(0, "the tensor infos")
    data_start = align_up(cur.pos, alignment)
    parsed = GGUFFile("", version, kv, tensors, alignment, data_start, size, False)
    if file_size is None:
        file_size = size
    if file_size >= 0:
        check_data_section(parsed, file_size)
    return parsed


def check_data_section(f: GGUFFile, file_size: int) -> None:
    """Every tensor's data lies inside a file of ``file_size`` bytes, and no two overlap."""
    if f.data_start > file_size and f.tensors:
        raise GGUFFormatError(f"truncated file: the data section would start at {f.data_start}, "
                              f"past the end of the file ({file_size} bytes)")
    data_size = file_size - f.data_start
    previous = None
    for t in sorted(f.tensors, key=lambda t: (t.offset, t.nbytes)):
        if t.offset + t.nbytes > data_size:
            raise GGUFFormatError(f"tensor '{t.name}': data [{t.offset}, {t.offset + t.nbytes}) lies "
                                  f"beyond the end of the file (data section has {data_size} bytes)")
        if previous is not None and previous.offset + previous.nbytes > t.offset:
            raise GGUFFormatError(f"tensor '{t.name}' overlaps tensor '{previous.name}' in the data "
                                  f"section")
        previous = t
    end = max((f.data_start + t.offset + t.nbytes for t in f.tensors), default=f.data_start)
    f.file_size = file_size
    f.tail_padded = file_size == align_up(end, f.alignment) and file_size > end


# --------------------------------------------------------------------------------------------
# Encoding metadata


def _encode_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return _U64.pack(len(b)) + b


def encode_kv(key: str, value_type: ValueType, value, array_type: ValueType | None = None) -> KVRecord:
    """Build a KV record (its raw bytes) for a scalar, a string or a flat array."""
    head = _encode_string(key)
    body = _U32.pack(value_type)
    if value_type in _SCALAR_FORMAT:
        body += struct.pack(_SCALAR_FORMAT[value_type], value)
    elif value_type == ValueType.STRING:
        body += _encode_string(value)
    elif value_type == ValueType.ARRAY:
        items = list(value)
        body += _U32.pack(array_type) + _U64.pack(len(items))
        if array_type == ValueType.STRING:
            body += b"".join(_encode_string(s) for s in items)
        elif array_type in _SCALAR_DTYPE:
            body += np.asarray(items, dtype=_SCALAR_DTYPE[array_type]).tobytes()
        else:
            raise ValueError(f"unsupported array item type {array_type}")
    else:
        raise ValueError(f"unsupported value type {value_type}")
    raw = head + body
    count = len(value) if value_type == ValueType.ARRAY else 0
    return KVRecord(key, value_type, raw, len(head), array_type, count)


def rename_kv(record: KVRecord, new_key: str) -> KVRecord:
    """The same value (raw bytes, any type) under another key."""
    head = _encode_string(new_key)
    raw = head + record.raw[record.value_start - 4:]
    return KVRecord(new_key, record.value_type, raw, len(head) + 4, record.array_type,
                    record.array_count)


# --------------------------------------------------------------------------------------------
# Planning an output file


@dataclass(frozen=True)
class OutputTensor:
    name: str
    shape: tuple[int, ...]
    type_id: int
    nbytes: int


@dataclass
class GGUFLayout:
    header: bytes                 # magic .. tensor infos, plus padding up to the data section
    data_start: int
    offsets: list[int]            # per output tensor, relative to data_start
    total_size: int

    def tensor_range(self, i: int, nbytes: int) -> tuple[int, int]:
        start = self.data_start + self.offsets[i]
        return start, start + nbytes


def plan_layout(version: int, kv: Iterable[KVRecord], tensors: Sequence[OutputTensor],
                alignment: int, data_order: Sequence[int] | None = None,
                tail_padded: bool = True) -> GGUFLayout:
    """Compute the complete byte layout of an output file before anything is written.

    Tensor infos are written in the given order; tensor data follows ``data_order`` (indexes into
    ``tensors``; by default the same order), each tensor starting at the next multiple of
    ``alignment``, which is how llama.cpp and gguf-py lay files out.
    """
    kv = list(kv)
    order = list(range(len(tensors))) if data_order is None else list(data_order)
    offsets = [0] * len(tensors)
    pos = 0
    for i in order:
        pos = align_up(pos, alignment)
        offsets[i] = pos
        pos += tensors[i].nbytes
    data_size = align_up(pos, alignment) if tail_padded else pos

    parts = [GGUF_MAGIC, _U32.pack(version), _U64.pack(len(tensors)), _U64.pack(len(kv))]
    parts += [rec.raw for rec in kv]
    for t, off in zip(tensors, offsets):
        parts.append(_encode_string(t.name))
        parts.append(_U32.pack(len(t.shape)))
        parts += [_U64.pack(d) for d in t.shape]
        parts.append(_U32.pack(t.type_id))
        parts.append(_U64.pack(off))
    header = b"".join(parts)
    data_start = align_up(len(header), alignment)
    header += b"\0" * (data_start - len(header))
    return GGUFLayout(header, data_start, offsets, data_start + data_size)
