"""The KV records by which a repacked file describes itself (all under one prefix).

    amx_repack.layout                 str    "amx" or "interleaved"
    amx_repack.layout_version         u32    version of our encoding of that layout family
    amx_repack.tool_version           str    amx-repack version that wrote the file
    amx_repack.tensor.names           [str]  every tensor, in tensor-info order
    amx_repack.tensor.original_types  [u32]  its type id before conversion
    amx_repack.tensor.original_xxh64  [str]  XXH64 (16 hex digits) of its bytes before conversion
    amx_repack.changed_keys           [str]  other keys whose value the conversion changed ...
    amx_repack.original.<key>         any    ... with their original value, same type
    amx_repack.added_keys             [str]  other keys the conversion added
    amx_repack.metadata_sha256        str    sha256 of the original KV records (raw bytes, in order)

With these, ``verify REPACKED`` needs no other input, and ``unpack`` rebuilds the original header
exactly: drop the prefix, put changed values back in place, drop added keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from formats.gguf_container import GGUFFormatError, KVRecord, ValueType, encode_kv, rename_kv

from .errors import InputError

PREFIX = "amx_repack."
ORIGINAL_PREFIX = PREFIX + "original."
KEY_LAYOUT = PREFIX + "layout"
KEY_LAYOUT_VERSION = PREFIX + "layout_version"
KEY_TOOL_VERSION = PREFIX + "tool_version"
KEY_TENSOR_NAMES = PREFIX + "tensor.names"
KEY_ORIGINAL_TYPES = PREFIX + "tensor.original_types"
KEY_ORIGINAL_DIGESTS = PREFIX + "tensor.original_xxh64"
KEY_CHANGED_KEYS = PREFIX + "changed_keys"
KEY_ADDED_KEYS = PREFIX + "added_keys"
KEY_METADATA_SHA256 = PREFIX + "metadata_sha256"

DIGEST_PLACEHOLDER = "0" * 16   # same length as an XXH64 hex digest: the header size is fixed up front


@dataclass
class RepackInfo:
    """What a repacked file says about itself."""

    layout: str
    layout_version: int
    tool_version: str
    tensor_names: list[str]
    original_types: list[int]
    original_digests: list[str]
    changed_keys: list[str]
    added_keys: list[str]
    metadata_sha256: str | None

    def original_type_of(self, name: str) -> int:
        return self.original_types[self.tensor_names.index(name)]


def metadata_digest(records) -> str:
    """sha256 of KV records' raw bytes, in order: what the standalone verify checks."""
    h = hashlib.sha256()
    for rec in records:
        h.update(rec.raw)
    return h.hexdigest()


def build_records(layout: str, layout_version: int, tool_version: str, names: list[str],
                  original_types: list[int], digests: list[str], changed: dict[str, KVRecord],
                  added: list[str], original_metadata_sha256: str) -> list[KVRecord]:
    """Our records, in the order they are appended after the input's own records."""
    records = [
        encode_kv(KEY_LAYOUT, ValueType.STRING, layout),
        encode_kv(KEY_LAYOUT_VERSION, ValueType.UINT32, layout_version),
        encode_kv(KEY_TOOL_VERSION, ValueType.STRING, tool_version),
        encode_kv(KEY_TENSOR_NAMES, ValueType.ARRAY, names, ValueType.STRING),
        encode_kv(KEY_ORIGINAL_TYPES, ValueType.ARRAY, original_types, ValueType.UINT32),
        encode_kv(KEY_ORIGINAL_DIGESTS, ValueType.ARRAY, digests, ValueType.STRING),
        encode_kv(KEY_CHANGED_KEYS, ValueType.ARRAY, list(changed), ValueType.STRING),
        encode_kv(KEY_ADDED_KEYS, ValueType.ARRAY, added, ValueType.STRING),
        encode_kv(KEY_METADATA_SHA256, ValueType.STRING, original_metadata_sha256),
    ]
    records += [rename_kv(rec, ORIGINAL_PREFIX + key) for key, rec in changed.items()]
    return records


def read_info(kv: dict[str, KVRecord]) -> RepackInfo | None:
    """Our description of a file, or None when the file was not written by amx-repack."""
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
        else:   # "[int]" or "[str]"
            ok = vt == ValueType.ARRAY and (it == ValueType.STRING if kind == "[str]"
                                            else it in INTEGER_VALUE_TYPES)
        if not ok:
            found = vt.name.lower() + (f" of {it.name.lower()}" if vt == ValueType.ARRAY else "")
            raise InputError(f"damaged amx-repack records: '{key}' is {found}, expected "
                             f"{_KIND_NAMES[kind]}")
        try:
            return rec.value
        except GGUFFormatError as e:
            raise InputError(f"damaged amx-repack records: '{key}': {e}") from None

    return RepackInfo(
        layout=get(KEY_LAYOUT, "str"),
        layout_version=int(get(KEY_LAYOUT_VERSION, "int", 0)),
        tool_version=get(KEY_TOOL_VERSION, "str", ""),
        tensor_names=list(get(KEY_TENSOR_NAMES, "[str]", [])),
        original_types=[int(x) for x in get(KEY_ORIGINAL_TYPES, "[int]", [])],
        original_digests=list(get(KEY_ORIGINAL_DIGESTS, "[str]", [])),
        changed_keys=list(get(KEY_CHANGED_KEYS, "[str]", [])),
        added_keys=list(get(KEY_ADDED_KEYS, "[str]", [])),
        metadata_sha256=get(KEY_METADATA_SHA256, "str"),
    )


INTEGER_VALUE_TYPES = (ValueType.UINT8, ValueType.INT8, ValueType.UINT16, ValueType.INT16,
                  ValueType.UINT32, ValueType.INT32, ValueType.UINT64, ValueType.INT64)
_KIND_NAMES = {"int": "an integer", "str": "a string", "[int]": "an array of integers",
               "[str]": "an array of strings"}


def original_records(kv: dict[str, KVRecord], info: RepackInfo) -> list[KVRecord]:
    """The input's KV records as they were before conversion (for unpack and verify)."""
    out = []
    for key, rec in kv.items():
        if key.startswith(PREFIX) or key in info.added_keys:
            continue
        if key in info.changed_keys:
            rec = rename_kv(kv[ORIGINAL_PREFIX + key], key)
        out.append(rec)
    return out
