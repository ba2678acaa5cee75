"""The KV records by which a repacked file describes itself (all under one prefix).

    amx_repack.layout                 str    the layout family ("amx", "interleaved", ...)
    amx_repack.target                 str    only a family with CPU targets (cpu-repack): the
                                             target the file is made for ("x86-avx2", ...)
    amx_repack.layout_version         u32    version of these records (3; 1 and 2 are still read)
    amx_repack.tool_version           str    amx-repack version that wrote the file
    amx_repack.tensor.names           [str]  every tensor, in tensor-info order
    amx_repack.tensor.original_types  [u32]  its type id before conversion
    amx_repack.tensor.original_sha256 [str]  sha256 (64 hex digits) of its bytes before conversion
                                             (versions 1 and 2: .original_xxh64, XXH64, 16 hex
                                             digits: no proof against a forger, repack/checksum.py)
    amx_repack.changed_keys           [str]  other keys whose value the conversion changed ...
    amx_repack.original.<key>         any    ... with their original value, same type
    amx_repack.added_keys             [str]  other keys the conversion added
    amx_repack.metadata_sha256        str    sha256 of the original KV records (raw bytes, in order)

Version 2 adds what it takes to cover every byte of the original file, not only its KV records and
tensor data:

    amx_repack.tensor.original_n_dims [u32]  per tensor: number of dimensions ...
    amx_repack.tensor.original_dims   [u64]  ... and the dimensions, all tensors one after another
    amx_repack.tensor.original_offsets [u64] per tensor: data offset in the original
    amx_repack.metadata.keys          [str]  the original KV keys, in order ...
    amx_repack.metadata.xxh64         [str]  ... and XXH64 of each record's raw bytes (names a
                                             changed, added or removed key)
    amx_repack.header_sha256          str    sha256 of the original header: magic, version, counts,
                                             KV records, tensor infos (up to the alignment padding)
    amx_repack.file_size              u64    size of the original file
    amx_repack.filler.offsets         [u64]  the non-zero bytes outside the header and the tensor
    amx_repack.filler.lengths         [u64]  data (alignment padding, gaps, trailing bytes): file
    amx_repack.filler.bytes           [u8]   offset and length of each run, and the runs' bytes
                                             (every other such byte is zero)
    amx_repack.filler_sha256          str    sha256 of the file size and the three filler records

Version 3 is version 2 with the tensors' digests in sha256 (``tensor.original_sha256`` instead of
``tensor.original_xxh64``). The per-key ``metadata.xxh64`` only names which key differs; the
header they belong to is proved by ``header_sha256``.

Only in a file with tensors the conversion added (``convert --untie-output``), version 2 or 3:

    amx_repack.added_tensors          [str]  tensors of this file that the original does not have
    amx_repack.added_tensor_sources   [str]  per added tensor, the original tensor whose values it
                                             holds (its per-tensor records above are that
                                             tensor's: type, digest, shape, offset)

With these, ``verify REPACKED`` needs no other input, and ``unpack`` rebuilds the original
exactly: drop the prefix, put changed values back in place, drop added keys and added tensors,
write the tensor infos, data and filler bytes where the original had them, and check every piece against its
record before the output is committed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from formats.lazy import lazy_module

from formats.gguf_container import GGUFFormatError, KVRecord, ValueType, encode_kv, rename_kv
from formats.layouts import FAMILY_TABLES

from .errors import InputError

hashlib = lazy_module("hashlib")   # sha256 of the filler: not needed by inspect
# the digests (hashlib and the native XXH64): not needed to read the records (inspect)
checksum = lazy_module("repack.checksum")

PREFIX = "amx_repack."
ORIGINAL_PREFIX = PREFIX + "original."
KEY_LAYOUT = PREFIX + "layout"
KEY_TARGET = PREFIX + "target"          # only for a family with CPU targets
KEY_LAYOUT_VERSION = PREFIX + "layout_version"
KEY_TOOL_VERSION = PREFIX + "tool_version"
KEY_TENSOR_NAMES = PREFIX + "tensor.names"
KEY_ORIGINAL_TYPES = PREFIX + "tensor.original_types"
KEY_ORIGINAL_DIGESTS_XXH64 = PREFIX + "tensor.original_xxh64"      # versions 1 and 2
KEY_ORIGINAL_DIGESTS_SHA256 = PREFIX + "tensor.original_sha256"    # version 3
KEY_CHANGED_KEYS = PREFIX + "changed_keys"
KEY_ADDED_KEYS = PREFIX + "added_keys"
KEY_METADATA_SHA256 = PREFIX + "metadata_sha256"
# version 2
KEY_ORIGINAL_N_DIMS = PREFIX + "tensor.original_n_dims"
KEY_ORIGINAL_DIMS = PREFIX + "tensor.original_dims"
KEY_ORIGINAL_OFFSETS = PREFIX + "tensor.original_offsets"
KEY_METADATA_KEYS = PREFIX + "metadata.keys"
KEY_METADATA_DIGESTS = PREFIX + "metadata.xxh64"
KEY_HEADER_SHA256 = PREFIX + "header_sha256"
KEY_FILE_SIZE = PREFIX + "file_size"
KEY_FILLER_OFFSETS = PREFIX + "filler.offsets"
KEY_FILLER_LENGTHS = PREFIX + "filler.lengths"
KEY_FILLER_BYTES = PREFIX + "filler.bytes"
KEY_FILLER_SHA256 = PREFIX + "filler_sha256"
# version 2, present only when the conversion added tensors
KEY_ADDED_TENSORS = PREFIX + "added_tensors"
KEY_ADDED_SOURCES = PREFIX + "added_tensor_sources"

# The versions of these records this tool reads, and the keys each one must carry.
SUPPORTED_VERSIONS = (1, 2, 3)
_REQUIRED_V1 = (KEY_TENSOR_NAMES, KEY_ORIGINAL_TYPES, KEY_ORIGINAL_DIGESTS_XXH64,
                KEY_METADATA_SHA256)
_REQUIRED_V2 = _REQUIRED_V1 + (KEY_ORIGINAL_N_DIMS, KEY_ORIGINAL_DIMS, KEY_ORIGINAL_OFFSETS,
                               KEY_METADATA_KEYS, KEY_METADATA_DIGESTS, KEY_HEADER_SHA256,
                               KEY_FILE_SIZE, KEY_FILLER_OFFSETS, KEY_FILLER_LENGTHS,
                               KEY_FILLER_BYTES, KEY_FILLER_SHA256)
REQUIRED_KEYS = {
    1: _REQUIRED_V1,
    2: _REQUIRED_V2,
    3: tuple(KEY_ORIGINAL_DIGESTS_SHA256 if k == KEY_ORIGINAL_DIGESTS_XXH64 else k
             for k in _REQUIRED_V2),
}


def digests_key(layout_version: int) -> str:
    """The record holding the tensors' digests in records of this version."""
    return KEY_ORIGINAL_DIGESTS_SHA256 if layout_version >= 3 else KEY_ORIGINAL_DIGESTS_XXH64


def digest_placeholder(layout_version: int) -> str:
    """A digest of the right length: the header's size is fixed before the data is hashed."""
    return "0" * checksum.HEX_LENGTH[checksum.digest_of_version(layout_version)]


@dataclass
class OriginalRecords:
    """What convert records about the input file beyond its tensors' types and digests (v2)."""

    metadata_sha256: str
    metadata_keys: list[str]
    metadata_digests: list[str]
    shapes: list[tuple[int, ...]]
    offsets: list[int]
    header_sha256: str
    file_size: int
    filler: list[tuple[int, bytes]] = field(default_factory=list)   # (file offset, bytes) runs
    # tensors the conversion added: (name, the original tensor whose values it holds)
    added: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class RepackInfo:
    """What a repacked file says about itself (None: the record is absent)."""

    layout: str
    layout_version: int
    tool_version: str
    tensor_names: list[str]
    original_types: list[int]
    original_digests: list[str]
    changed_keys: list[str]
    added_keys: list[str]
    metadata_sha256: str | None
    present: frozenset = frozenset()          # every amx_repack.* key the file carries
    # version 2
    original_shapes: list[tuple[int, ...]] | None = None
    original_offsets: list[int] | None = None
    metadata_keys: list[str] | None = None
    metadata_digests: list[str] | None = None
    header_sha256: str | None = None
    file_size: int | None = None
    filler: list[tuple[int, bytes]] | None = None
    filler_sha256: str | None = None
    added_tensors: list[str] = field(default_factory=list)
    added_sources: list[str] = field(default_factory=list)
    target: str | None = None                 # the CPU target (a family with targets)

    @property
    def digest_name(self) -> str:
        """The kind of the recorded tensor digests: "sha256" (version 3) or "xxh64"."""
        return checksum.digest_of_version(self.layout_version)

    def original_type_of(self, name: str) -> int:
        return self.original_types[self.tensor_names.index(name)]

    def missing_records(self) -> list[str]:
        """The records this file's layout version requires and does not carry."""
        return [k for k in REQUIRED_KEYS.get(self.layout_version, ()) if k not in self.present]

    def check_readable(self, path: str) -> None:
        """Refuse (exit 2) a file whose records this tool cannot use: an unknown layout version,
        or a required record missing."""
        if KEY_LAYOUT_VERSION not in self.present:
            raise InputError(f"{path}: damaged amx-repack records: '{KEY_LAYOUT_VERSION}' is "
                             f"missing")
        if self.layout_version not in SUPPORTED_VERSIONS:
            newer = (" (written by a newer amx-repack?)"
                     if self.layout_version > max(SUPPORTED_VERSIONS) else "")
            raise InputError(f"{path}: amx-repack records of layout version "
                             f"{self.layout_version}{newer}; this version reads "
                             f"{', '.join(map(str, SUPPORTED_VERSIONS))}")
        if self.layout not in FAMILY_TABLES:
            raise InputError(f"{path}: damaged amx-repack records: unknown layout "
                             f"'{self.layout}'")
        targets = FAMILY_TABLES[self.layout].targets
        if targets and self.target not in targets:
            what = f"unknown target '{self.target}'" if self.target else f"'{KEY_TARGET}' is missing"
            raise InputError(f"{path}: damaged amx-repack records: {what} for the "
                             f"{self.layout} layout")
        missing = self.missing_records()
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(f"{path}: damaged amx-repack records: '{missing[0]}' is missing"
                             f"{more}")


def metadata_digest(records) -> str:
    """sha256 of KV records' raw bytes, in order: what the standalone verify checks."""
    h = hashlib.sha256()
    for rec in records:
        h.update(rec.raw)
    return h.hexdigest()


def record_digest(rec: KVRecord) -> str:
    """XXH64 of one KV record's raw bytes (key, type and value)."""
    return checksum.XXH64(rec.raw).hexdigest()


def filler_digest(file_size: int, filler: list[tuple[int, bytes]]) -> str:
    """sha256 of the original's size and its recorded non-zero filler runs."""
    h = hashlib.sha256(struct.pack("<QQ", file_size, len(filler)))
    for offset, data in filler:
        h.update(struct.pack("<QQ", offset, len(data)))
        h.update(data)
    return h.hexdigest()


def build_records(layout: str, layout_version: int, tool_version: str, names: list[str],
                  original_types: list[int], digests: list[str], changed: dict[str, KVRecord],
                  added: list[str], original: OriginalRecords,
                  target: str | None = None) -> list[KVRecord]:
    """Our records, in the order they are appended after the input's own records (``target``:
    a family with CPU targets; None writes no target record)."""
    records = [
        encode_kv(KEY_LAYOUT, ValueType.STRING, layout),
        *([encode_kv(KEY_TARGET, ValueType.STRING, target)] if target is not None else []),
        encode_kv(KEY_LAYOUT_VERSION, ValueType.UINT32, layout_version),
        encode_kv(KEY_TOOL_VERSION, ValueType.STRING, tool_version),
        encode_kv(KEY_TENSOR_NAMES, ValueType.ARRAY, names, ValueType.STRING),
        encode_kv(KEY_ORIGINAL_TYPES, ValueType.ARRAY, original_types, ValueType.UINT32),
        encode_kv(digests_key(layout_version), ValueType.ARRAY, digests, ValueType.STRING),
        encode_kv(KEY_CHANGED_KEYS, ValueType.ARRAY, list(changed), ValueType.STRING),
        encode_kv(KEY_ADDED_KEYS, ValueType.ARRAY, added, ValueType.STRING),
        encode_kv(KEY_METADATA_SHA256, ValueType.STRING, original.metadata_sha256),
    ]
    if layout_version >= 2:
        records += [
            encode_kv(KEY_ORIGINAL_N_DIMS, ValueType.ARRAY, [len(s) for s in original.shapes],
                      ValueType.UINT32),
            encode_kv(KEY_ORIGINAL_DIMS, ValueType.ARRAY, [d for s in original.shapes for d in s],
                      ValueType.UINT64),
            encode_kv(KEY_ORIGINAL_OFFSETS, ValueType.ARRAY, original.offsets, ValueType.UINT64),
            encode_kv(KEY_METADATA_KEYS, ValueType.ARRAY, original.metadata_keys,
                      ValueType.STRING),
            encode_kv(KEY_METADATA_DIGESTS, ValueType.ARRAY, original.metadata_digests,
                      ValueType.STRING),
            encode_kv(KEY_HEADER_SHA256, ValueType.STRING, original.header_sha256),
            encode_kv(KEY_FILE_SIZE, ValueType.UINT64, original.file_size),
            encode_kv(KEY_FILLER_OFFSETS, ValueType.ARRAY, [o for o, _ in original.filler],
                      ValueType.UINT64),
            encode_kv(KEY_FILLER_LENGTHS, ValueType.ARRAY, [len(d) for _, d in original.filler],
                      ValueType.UINT64),
            _u8_array(KEY_FILLER_BYTES, b"".join(d for _, d in original.filler)),
            encode_kv(KEY_FILLER_SHA256, ValueType.STRING,
                      filler_digest(original.file_size, original.filler)),
        ]
        if original.added:   # absent otherwise: files without added tensors are as before
            records += [
                encode_kv(KEY_ADDED_TENSORS, ValueType.ARRAY, [a for a, _ in original.added],
                          ValueType.STRING),
                encode_kv(KEY_ADDED_SOURCES, ValueType.ARRAY, [b for _, b in original.added],
                          ValueType.STRING),
            ]
    records += [rename_kv(rec, ORIGINAL_PREFIX + key) for key, rec in changed.items()]
    return records


def _u8_array(key: str, data: bytes) -> KVRecord:
    head = struct.pack("<Q", len(key.encode())) + key.encode()
    raw = head + struct.pack("<IIQ", ValueType.ARRAY, ValueType.UINT8, len(data)) + data
    return KVRecord(key, ValueType.ARRAY, raw, len(head) + 4, ValueType.UINT8, len(data))


def read_info(kv: dict[str, KVRecord]) -> RepackInfo | None:
    """Our description of a file, or None when the file was not written by amx-repack.

    Records of the wrong type are refused here (InputError); absent ones are None (or empty) and
    :meth:`RepackInfo.check_readable` says which a command needs."""
    if KEY_LAYOUT not in kv:
        return None

    def get(key, kind, default=None):
        # A hostile or damaged file can give our keys any type (or strings that are not UTF-8):
        # refuse with one line (InputError) instead of a TypeError/ValueError deep in a command.
        rec = kv.get(key)
        if rec is None:
            return default
        vt, it = rec.value_type, rec.array_type
        if kind == "int":
            ok = vt in INTEGER_VALUE_TYPES
        elif kind == "str":
            ok = vt == ValueType.STRING
        elif kind == "[u8]":
            ok = vt == ValueType.ARRAY and it == ValueType.UINT8
        else:   # "[int]" or "[str]"
            ok = vt == ValueType.ARRAY and (it == ValueType.STRING if kind == "[str]"
                                            else it in INTEGER_VALUE_TYPES)
        if not ok:
            found = vt.name.lower() + (f" of {it.name.lower()}" if vt == ValueType.ARRAY else "")
            raise InputError(f"damaged amx-repack records: '{key}' is {found}, expected "
                             f"{_KIND_NAMES[kind]}")
        try:
            value = rec.value
        except GGUFFormatError as e:
            raise InputError(f"damaged amx-repack records: '{key}': {e}") from None
        if kind == "[int]":
            return [int(x) for x in value.tolist()]
        if kind == "[u8]":
            return value.tobytes()
        if kind == "int":
            return int(value)
        return value

    layout_version = get(KEY_LAYOUT_VERSION, "int", 0)
    info = RepackInfo(
        layout=get(KEY_LAYOUT, "str"),
        layout_version=layout_version,
        tool_version=get(KEY_TOOL_VERSION, "str", ""),
        tensor_names=list(get(KEY_TENSOR_NAMES, "[str]", [])),
        original_types=get(KEY_ORIGINAL_TYPES, "[int]", []),
        original_digests=list(get(digests_key(layout_version), "[str]", [])),
        changed_keys=list(get(KEY_CHANGED_KEYS, "[str]", [])),
        added_keys=list(get(KEY_ADDED_KEYS, "[str]", [])),
        metadata_sha256=get(KEY_METADATA_SHA256, "str"),
        present=frozenset(k for k in kv if k.startswith(PREFIX)),
    )
    n_dims = get(KEY_ORIGINAL_N_DIMS, "[int]")
    dims = get(KEY_ORIGINAL_DIMS, "[int]")
    if n_dims is not None and dims is not None:
        info.original_shapes = _split_shapes(n_dims, dims)
    info.original_offsets = get(KEY_ORIGINAL_OFFSETS, "[int]")
    info.metadata_keys = get(KEY_METADATA_KEYS, "[str]")
    info.metadata_digests = get(KEY_METADATA_DIGESTS, "[str]")
    info.header_sha256 = get(KEY_HEADER_SHA256, "str")
    info.file_size = get(KEY_FILE_SIZE, "int")
    offsets, lengths = get(KEY_FILLER_OFFSETS, "[int]"), get(KEY_FILLER_LENGTHS, "[int]")
    data = get(KEY_FILLER_BYTES, "[u8]")
    if offsets is not None and lengths is not None and data is not None:
        info.filler = _split_filler(offsets, lengths, data)
    info.filler_sha256 = get(KEY_FILLER_SHA256, "str")
    info.added_tensors = list(get(KEY_ADDED_TENSORS, "[str]", []))
    info.added_sources = list(get(KEY_ADDED_SOURCES, "[str]", []))
    info.target = get(KEY_TARGET, "str")
    return info


def _split_shapes(n_dims: list[int], dims: list[int]) -> list[tuple[int, ...]]:
    if any(n < 1 or n > 4 for n in n_dims) or sum(n_dims) != len(dims):
        raise InputError(f"damaged amx-repack records: '{KEY_ORIGINAL_N_DIMS}' and "
                         f"'{KEY_ORIGINAL_DIMS}' do not agree")
    shapes, pos = [], 0
    for n in n_dims:
        shapes.append(tuple(dims[pos:pos + n]))
        pos += n
    return shapes


def _split_filler(offsets: list[int], lengths: list[int], data: bytes) -> list[tuple[int, bytes]]:
    if len(offsets) != len(lengths) or any(n <= 0 for n in lengths) or sum(lengths) != len(data) \
            or any(o < 0 for o in offsets):
        raise InputError(f"damaged amx-repack records: '{PREFIX}filler.*' do not agree")
    runs, pos = [], 0
    for o, n in zip(offsets, lengths):
        runs.append((o, data[pos:pos + n]))
        pos += n
    return runs


INTEGER_VALUE_TYPES = (ValueType.UINT8, ValueType.INT8, ValueType.UINT16, ValueType.INT16,
                  ValueType.UINT32, ValueType.INT32, ValueType.UINT64, ValueType.INT64)
_KIND_NAMES = {"int": "an integer", "str": "a string", "[int]": "an array of integers",
               "[str]": "an array of strings", "[u8]": "an array of uint8"}


def original_records(kv: dict[str, KVRecord], info: RepackInfo) -> list[KVRecord]:
    """The input's KV records as they were before conversion (for unpack and verify).

    Raises InputError when a key is marked changed but its original value is missing."""
    out = []
    for key, rec in kv.items():
        if key.startswith(PREFIX) or key in info.added_keys:
            continue
        if key in info.changed_keys:
            original = kv.get(ORIGINAL_PREFIX + key)
            if original is None:
                raise InputError(f"damaged amx-repack records: metadata key '{key}' is marked "
                                 f"changed but '{ORIGINAL_PREFIX + key}' is missing")
            rec = rename_kv(original, key)
        out.append(rec)
    return out
