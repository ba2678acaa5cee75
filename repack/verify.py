"""verify: prove a repacked file holds exactly the original model.

For every repacked tensor two independent checks run, chunk by chunk:

1. *bytes*: the packed layout is decoded back to source blocks (the family's unpack kernel) and
   compared with the original bytes (or, given only the repacked file, hashed and compared with
   the digest recorded at conversion);
2. *values*: the original is dequantized by the source-type decoder and the packed tensor by a
   decoder that reads the packed layout directly; the float32 bit patterns must be equal.

Every other tensor is compared byte for byte (or by digest), and the metadata must equal the
original's apart from the keys the conversion is documented to change or add.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from formats.ggml_types import TYPES, type_name
from formats.gguf_container import GGUFFile, TensorInfo

from . import metadata, shards
from .errors import InputError
from .block_decoders import first_difference
from .checksum import XXH64
from .families import Family, dequantize_source, family_of_packed
from .runner import ProgressCallback, default_threads, interruptible, run_tasks, scratch

# Small chunks keep the float32 decodes (7-8x the packed size) in cache between decode and compare.
CHUNK_BYTES = 1 << 20
# Keys ik_llama.cpp's own --repack changes, accepted when a file carries no record of its changes.
IK_CHANGED_KEYS = ("general.file_type", "general.quantization_version")


@dataclass
class TensorResult:
    name: str
    status: str                 # "ok" | "mismatch" | "missing" | "shape"
    type_before: str
    type_after: str
    bytes: int
    checks: list[str] = field(default_factory=list)   # "bytes", "digest", "values", "valid"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class VerifyReport:
    original: str | None
    repacked: str
    layout: str | None
    tensors: list[TensorResult] = field(default_factory=list)
    metadata_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.metadata_problems and all(t.ok for t in self.tensors)

    @property
    def failures(self) -> list[TensorResult]:
        return [t for t in self.tensors if not t.ok]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


# ------------------------------------------------------------------------------------------


def _first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """Index of the first differing element (native memcmp on the raw bits; NaN-safe)."""
    i = first_difference(a, b)
    return None if i is None else i // a.itemsize


def _byte_location(t: TensorInfo, type_id: int, byte_index: int) -> str:
    """'row R, block B, byte i' for a byte index inside a tensor of the given (source) type."""
    ttype = TYPES[type_id]
    row_bytes = ttype.row_bytes(t.ne0)
    row, in_row = divmod(byte_index, row_bytes)
    if in_row < ttype.row_meta:
        return f"row {row}, row header byte {in_row}"
    block, in_block = divmod(in_row - ttype.row_meta, ttype.type_size)
    return f"row {row}, block {block}, byte {in_block}"


def _value_location(t: TensorInfo, type_id: int, index: int) -> str:
    row, col = divmod(index, t.ne0)
    return f"row {row}, block {col // TYPES[type_id].block_size}, element {col}"


class _Mismatch(Exception):
    pass


def _check_packed(family: Family, src_type: int, t_packed: TensorInfo, packed: memoryview,
                  original: memoryview | None, digest: str | None,
                  done=lambda packed_range, source_range: None) -> tuple[list[str], str]:
    """Run checks 1 and 2 over a packed tensor, chunk by chunk; returns (checks, problem)."""
    checks = ["bytes" if original is not None else "digest"]
    do_values = family.can_dequantize(src_type)
    if do_values:
        checks.append("values")
    hasher = XXH64() if original is None else None
    ne0 = t_packed.ne0
    if family.name == "amx":
        checks.append("valid")
    for (s0, s1), (p0, p1), rows in family.chunks(src_type, t_packed, CHUNK_BYTES):
        bad = family.first_invalid_row(src_type, ne0, rows, packed[p0:p1])
        if bad is not None:
            row = s0 // TYPES[src_type].row_bytes(ne0) + bad
            return checks, f"packed data is inconsistent (redundant sums or scale ranges) in row {row}"
        rebuilt = scratch("rebuilt", s1 - s0)
        family.unpack(src_type, ne0, rows, packed[p0:p1], rebuilt)
        if original is not None:
            want = np.frombuffer(original[s0:s1], dtype=np.uint8)
            i = _first_difference(rebuilt, want)
            if i is not None:
                return checks, (f"unpacked bytes differ at {_byte_location(t_packed, src_type, s0 + i)}"
                                f": original 0x{want[i]:02x}, repacked 0x{rebuilt[i]:02x}")
            source_blocks = want
        else:
            hasher.update(rebuilt)
            source_blocks = rebuilt
        if do_values:
            expect = scratch("expect", rows * ne0, np.float32)
            got = scratch("got", rows * ne0, np.float32)
            dequantize_source(src_type, ne0, rows, source_blocks, expect)
            family.dequantize_packed(src_type, ne0, rows, packed[p0:p1], got)
            i = _first_difference(expect.view(np.uint32), got.view(np.uint32))
            if i is not None:
                where = _value_location(t_packed, src_type, (s0 // TYPES[src_type].row_bytes(ne0)) * ne0 + i)
                return checks, (f"dequantized values differ at {where}: original {expect[i]!r} "
                                f"(0x{expect.view(np.uint32)[i]:08x}), repacked {got[i]!r} "
                                f"(0x{got.view(np.uint32)[i]:08x})")
        done((p0, p1), (s0, s1))
    if hasher is not None and hasher.hexdigest() != digest:
        return checks, "the unpacked tensor differs from the digest recorded at conversion"
    return checks, ""


def _check_plain(t: TensorInfo, data: memoryview, original: memoryview | None,
                 digest: str | None, done=lambda packed_range, source_range: None
                 ) -> tuple[list[str], str]:
    if original is not None:
        for a in range(0, len(data), CHUNK_BYTES):
            got = np.frombuffer(data[a:a + CHUNK_BYTES], dtype=np.uint8)
            want = np.frombuffer(original[a:a + CHUNK_BYTES], dtype=np.uint8)
            i = _first_difference(got, want)
            if i is not None:
                return ["bytes"], (f"bytes differ at {_byte_location(t, t.type_id, a + i)}: "
                                   f"original 0x{want[i]:02x}, repacked 0x{got[i]:02x}")
            done((a, a + len(got)), (a, a + len(got)))
        return ["bytes"], ""
    if digest is None:
        return [], "no digest recorded for this tensor"
    if XXH64(data).hexdigest() != digest:
        return ["digest"], "bytes differ from the digest recorded at conversion"
    return ["digest"], ""


def _metadata_problems(orig: GGUFFile | None, rep: GGUFFile, info) -> list[str]:
    problems = []
    if info is not None:
        names = [t.name for t in rep.tensors]
        if info.tensor_names != names or len(info.original_types) != len(names) \
                or len(info.original_digests) != len(names):
            problems.append("amx_repack.tensor.* records do not match the file's tensors")
        for key in info.changed_keys:
            if metadata.ORIGINAL_PREFIX + key not in rep.kv:
                problems.append(f"metadata key '{key}' is marked changed but its original value is missing")
    if orig is None:
        if info is not None and not problems and info.metadata_sha256 != \
                metadata.metadata_digest(metadata.original_records(rep.kv, info)):
            problems.append("metadata differs from the original's recorded sha256")
        return problems
    if info is not None and not problems:
        restored = {r.key: r for r in metadata.original_records(rep.kv, info)}
        allowed: tuple[str, ...] = ()
    else:
        restored = dict(rep.kv)
        allowed = IK_CHANGED_KEYS
    for key, rec in orig.kv.items():
        if key in allowed:
            continue
        if key not in restored:
            problems.append(f"metadata key '{key}' is missing")
        elif restored[key].raw != rec.raw:
            problems.append(f"metadata key '{key}' differs: original {rec.describe()}, "
                            f"repacked {restored[key].describe()}")
    for key in restored:
        if key not in orig.kv and key not in allowed and not key.startswith(metadata.PREFIX):
            problems.append(f"metadata key '{key}' was added")
    if [k for k in restored if k in orig.kv] != [k for k in orig.kv if k in restored]:
        problems.append("metadata keys are in a different order")
    return problems


def verify(original: str | os.PathLike | None, repacked: str | os.PathLike,
           threads: int | None = None, progress: ProgressCallback | None = None) -> VerifyReport:
    """Check that ``repacked`` is ``original`` in another layout (or, with ``original=None``,
    that it matches the types and digests it records). Returns a report; raises RepackError for
    unreadable input."""
    started = time.perf_counter()
    threads = threads or default_threads()
    with shards.open_model(os.fspath(repacked)) as rep:
        with (shards.open_model(os.fspath(original)) if original is not None
              else contextlib.nullcontext()) as orig:
            if orig is not None and orig.count != rep.count:
                raise InputError(f"the original has {orig.count} file(s), the repacked model "
                                 f"{rep.count}")
            with interruptible():
                reports = [_verify_open(orig.files[i] if orig else None, f, threads, progress)
                           for i, f in enumerate(rep.files)]
    report = reports[0]
    for r in reports[1:]:   # shards: one report for the model
        report.tensors += r.tensors
        report.metadata_problems += [f"{r.repacked}: {p}" for p in r.metadata_problems]
    report.seconds = time.perf_counter() - started
    return report


def _verify_open(orig: GGUFFile | None, rep: GGUFFile, threads: int, progress) -> VerifyReport:
    info = metadata.read_info(rep.kv)
    if orig is None and info is None:
        raise InputError(f"{rep.path} carries no amx-repack record; give the original file too: "
                         f"verify ORIGINAL REPACKED")
    report = VerifyReport(orig.path if orig else None, rep.path, info.layout if info else None)
    report.metadata_problems = _metadata_problems(orig, rep, info)
    recorded = {}
    if info is not None and len(info.tensor_names) == len(info.original_types) == len(info.original_digests):
        recorded = {n: (ty, d) for n, ty, d in zip(info.tensor_names, info.original_types,
                                                   info.original_digests)}
    orig_by_name = {t.name: t for t in orig.tensors} if orig else {}
    if orig is not None:
        names = {t.name for t in rep.tensors}
        for t in orig.tensors:
            if t.name not in names:
                report.tensors.append(TensorResult(t.name, "missing", t.type.name, "-", t.nbytes,
                                                   detail="tensor missing from the repacked file"))

    tasks = []
    results: list[TensorResult] = []
    for t in rep.tensors:
        family = family_of_packed(t.type_id)
        src_type = family.source_of(t.type_id).id if family else t.type_id
        rec_type, digest = recorded.get(t.name, (None, None))
        res = TensorResult(t.name, "ok", type_name(src_type), t.type.name, t.nbytes)
        results.append(res)
        o = orig_by_name.get(t.name)
        if orig is not None and o is None:
            res.status, res.detail = "missing", "tensor not in the original file"
            continue
        if rec_type is not None and rec_type != src_type:
            res.status = "mismatch"
            res.detail = f"recorded original type {type_name(rec_type)}, layout implies {type_name(src_type)}"
            continue
        if o is not None and (o.type_id != src_type or o.shape != t.shape):
            res.status = "shape"
            res.detail = (f"original is {o.type.name} {list(o.shape)}, repacked decodes to "
                          f"{type_name(src_type)} {list(t.shape)}")
            continue
        tasks.append((_tensor_task(res, family, src_type, t, rep, orig, o, digest), t.nbytes))
    run_tasks(tasks, threads, progress)
    report.tensors += results
    return report


def _tensor_task(res: TensorResult, family: Family | None, src_type: int, t: TensorInfo,
                 rep: GGUFFile, orig: GGUFFile | None, o: TensorInfo | None, digest: str | None):
    def run():
        data = rep.tensor_data(t)
        original = orig.tensor_data(o) if orig is not None else None

        def done(packed_range, source_range):   # keep resident memory bounded
            rep.release(rep.data_start + t.offset + packed_range[0],
                        rep.data_start + t.offset + packed_range[1])
            if orig is not None:
                orig.release(orig.data_start + o.offset + source_range[0],
                             orig.data_start + o.offset + source_range[1])

        if family is None:
            res.checks, problem = _check_plain(t, data, original, digest, done)
        else:
            res.checks, problem = _check_packed(family, src_type, t, data, original, digest, done)
        if problem:
            res.status, res.detail = "mismatch", problem
    return run
