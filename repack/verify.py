"""verify: prove a repacked file holds exactly the original model.

For every repacked tensor these checks run, chunk by chunk, over every byte (a packed tensor whose
rows do not fill whole tiles / row groups cannot be in its layout and fails):

1. *bytes*: the packed layout is decoded back to source blocks (the family's unpack kernel) and
   compared with the original bytes, and hashed and compared with the digest recorded at
   conversion (given only the repacked file, the digest alone);
2. *layout*: the original (given only the repacked file, the unpacked bytes the digest proved) is
   packed again by the family's packer, byte-identical to the reference implementations' own,
   and every packed byte must equal it: the file holds exactly what the runtime makes of the
   original when it repacks it at load, padding and redundant fields included;
3. *values* (``decode_values``, ``--decode-values``): the original is dequantized by the
   source-type decoder and the packed tensor by a decoder that reads the packed layout directly;
   the float32 bit patterns must be equal. Checks 1 and 2 already fix every packed byte, so this
   adds no power against a wrong file (tests/test_fused_checks.py: every planted corruption it
   finds, they find); it decodes every element twice, which took most of verify's time, and
   stays for those who want the proof in floats too.

Every other tensor is compared byte for byte (and by digest). A tensor the conversion added
(``--untie-output``: a packed copy of ``token_embd.weight``, which the original does not have) gets
the same checks against its source tensor: the original's, or, given only the repacked file, the
unpacked one in the same file. For a file with our records, the
records must describe exactly what unpack would write (repack/original.py): every metadata
record, tensor info, the header's sha256 and the filler bytes; given the original too, what they
describe must be the original, byte for byte. Without records (ik_llama.cpp's own output), the
metadata must equal the original's apart from the keys ik's --repack changes.

Files are read by position (pread), never through a mapping: one that shrinks meanwhile is an
InputError (exit 2), not a SIGBUS. The next chunk of both files is requested ahead
(posix_fadvise WILLNEED), so a cold disk reads them in parallel with the checks.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from formats.ggml_types import TYPES, type_name
from formats.gguf_container import GGUFFile, TensorInfo

from . import metadata, original, shards
from .errors import InputError
from .block_decoders import first_difference
from . import anchor
from .checksum import forgery_resistant, new_digest
from .families import Family, family_of_packed
from .layout_agreement import check_declared_layout
from .runner import (ProgressCallback, advance, interruptible, resolve_threads, run_tasks,
                     scratch, start_phase)
from .wording import plural

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
    checks: list[str] = field(default_factory=list)   # "bytes", "digest", "layout", "values", "valid"
    detail: str = ""
    added_from: str = ""        # added by convert (--untie-output): checked against this tensor

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class VerifyReport:
    original: str | None
    repacked: str
    layout: str | None
    tensors: list[TensorResult] = field(default_factory=list)
    target: str | None = None      # the CPU target the records name (cpu-repack), else None
    metadata_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    digest: str | None = None      # the kind of the recorded tensor digests (checksum.py)
    notes: list[str] = field(default_factory=list)
    # original_sha256 given: per file, {"file", "expected", "restored"} (restored: the sha256 of
    # the original rebuilt from the file; None when the file failed before it was rebuilt)
    sha256_checks: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.metadata_problems and all(t.ok for t in self.tensors)
                and all(c["restored"] == c["expected"] for c in self.sha256_checks))

    @property
    def proves(self) -> str:
        """What an ``ok`` result proves (README, "What each command proves"):
        "original_sha256": unpack rebuilds the file with the expected sha256 (against accidents
        and forgers); "original": equivalence with the original given; "records": the file as
        its sha256 records describe it (against accidents, and against a forger who did not
        rewrite the records too); "accidental_corruption": XXH64 records, against accidents
        only."""
        if self.sha256_checks:
            return "original_sha256"
        if self.original is not None:
            return "original"
        return "records" if self.digest is not None and forgery_resistant(self.digest) \
            else "accidental_corruption"

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


def _check_packed(family: Family, src_type: int, t_packed: TensorInfo, read_packed, read_original,
                  digest: str | None, digest_name: str, decode_values: bool = False
                  ) -> tuple[list[str], str]:
    """Run the checks over a packed tensor, chunk by chunk; returns (checks, problem).

    ``read_packed(a, b)`` / ``read_original(a, b)`` return the bytes [a, b) of the tensor in the
    repacked / original file (``read_original`` None: standalone, against ``digest``). All
    checks of a chunk run in one native call (Family.check_chunk), a tile or row group at a time."""
    packed_type = t_packed.type_id
    problem = family.shape_problem(t_packed)
    if problem:
        return [], problem
    checks = ["bytes"] if read_original is not None else []
    if digest is not None:
        checks.append("digest")
    checks.append("layout")
    do_values = decode_values and family.can_dequantize(packed_type)
    if do_values:
        checks.append("values")
    hasher = new_digest(digest_name) if digest is not None else None
    ne0 = t_packed.ne0
    if family.table.validity_check:
        checks.append("valid")
    covered = (0, 0)
    chunks = list(family.chunks(packed_type, t_packed, CHUNK_BYTES))
    for n, ((s0, s1), (p0, p1), rows) in enumerate(chunks):
        covered = (s1, p1)
        if n + 1 < len(chunks):   # both files' next chunks are read ahead while this one is checked
            (a, b), (c, d), _ = chunks[n + 1]
            read_packed.ahead(c, d)
            if read_original is not None:
                read_original.ahead(a, b)
        packed = read_packed(p0, p1)
        want = read_original(s0, s1) if read_original is not None else None
        rebuilt = scratch("rebuilt", s1 - s0)
        mismatch = family.check_chunk(packed_type, ne0, rows, packed, want, rebuilt, do_values)
        if mismatch is not None:
            return checks, describe_mismatch(mismatch, t_packed, src_type, packed_type, s0, p0,
                                             family)
        if hasher is not None:
            hasher.update(rebuilt)
        advance(p1 - p0)
    # every byte of both tensors went through the checks above (whole units, shape_problem)
    if covered != (TYPES[src_type].tensor_bytes(t_packed.shape), t_packed.nbytes):
        return checks, (f"internal: the checks covered {covered[1]} of the tensor's "
                        f"{t_packed.nbytes} bytes")
    if hasher is not None and hasher.hexdigest() != digest:
        return checks, ("the unpacked tensor differs from the digest recorded at conversion"
                        + (" (unpack would refuse the file)" if read_original is not None else ""))
    return checks, ""


def describe_mismatch(m, t: TensorInfo, src_type: int, packed_type: int, s0: int, p0: int,
                      family: Family) -> str:
    """The message for the first problem a chunk check found in tensor ``t`` (``s0`` / ``p0``:
    the chunk's first byte in the source tensor / in the packed tensor)."""
    from .chunk_checks import BYTES, INVALID, LAYOUT
    first_row = s0 // TYPES[src_type].row_bytes(t.ne0)
    if m.kind == INVALID:
        return (f"packed data is inconsistent (redundant sums or scale ranges) in row "
                f"{first_row + m.index}")
    if m.kind == BYTES:
        return (f"unpacked bytes differ at {_byte_location(t, src_type, s0 + m.index)}: "
                f"original 0x{m.original:02x}, repacked 0x{m.repacked:02x}")
    if m.kind == LAYOUT:
        # a packed unit (AMX tile strip, row group) holds unit_rows rows; name its rows
        unit_rows = family.unit_rows(packed_type)
        unit_bytes = TYPES[packed_type].row_bytes(t.ne0) * unit_rows
        unit, byte = divmod(p0 + m.index, unit_bytes)
        return (f"packed bytes are not the layout's packing of the original at rows "
                f"{unit * unit_rows}-{(unit + 1) * unit_rows - 1}, byte {byte} of their packed "
                f"bytes: packing the original gives 0x{m.original:02x}, the file has "
                f"0x{m.repacked:02x}")
    where = _value_location(t, src_type, first_row * t.ne0 + m.index)
    return (f"dequantized values differ at {where}: original {_float32(m.original)} "
            f"(0x{m.original:08x}), repacked {_float32(m.repacked)} (0x{m.repacked:08x})")


def _float32(bits: int) -> str:
    return str(np.uint32(bits).view(np.float32))


def _check_plain(t: TensorInfo, read_data, read_original, digest: str | None, digest_name: str
                 ) -> tuple[list[str], str]:
    checks = (["bytes"] if read_original is not None else []) + (["digest"] if digest else [])
    if read_original is None and digest is None:
        return [], "no digest recorded for this tensor"
    hasher = new_digest(digest_name) if digest is not None else None
    for a in range(0, t.nbytes, CHUNK_BYTES):
        b = min(a + CHUNK_BYTES, t.nbytes)
        got = np.frombuffer(read_data(a, b), dtype=np.uint8)
        if hasher is not None:
            hasher.update(got)
        if read_original is not None:
            want = np.frombuffer(read_original(a, b), dtype=np.uint8)
            i = _first_difference(got, want)
            if i is not None:
                return checks, (f"bytes differ at {_byte_location(t, t.type_id, a + i)}: "
                                f"original 0x{want[i]:02x}, repacked 0x{got[i]:02x}")
        advance(b - a)
    if hasher is not None and hasher.hexdigest() != digest:
        if read_original is not None:
            return checks, ("bytes equal the original's, but not the digest recorded at "
                            "conversion (unpack would refuse the file)")
        return checks, "bytes differ from the digest recorded at conversion"
    return checks, ""


def _metadata_problems(orig: GGUFFile, rep: GGUFFile, info) -> list[str]:
    """The metadata unpack would restore (or, for a file without our records, the file's own)
    against the original's, key by key."""
    problems = []
    if info is not None:
        try:
            restored = {r.key: r for r in metadata.original_records(rep.kv, info)}
        except InputError as e:
            return [str(e)]
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
           threads: int | None = None, progress: ProgressCallback | None = None,
           original_sha256=None, decode_values: bool = False) -> VerifyReport:
    """Check that ``repacked`` is ``original`` in another layout (or, with ``original=None``,
    that it matches the types and digests it records). Returns a report; raises RepackError for
    unreadable input.

    ``original_sha256`` (the published sha256 of the original; a sequence of them, in shard
    order, for a split model): also prove that the original unpack rebuilds from ``repacked``
    hashes to it (rebuilt and hashed in file order, nothing written; repack/anchor.py). This
    holds against a forger who rewrote the records together with the data.

    ``decode_values``: also decode every element of every packed tensor with both float decoders
    (check 3 above; about twice verify's time)."""
    started = time.perf_counter()
    threads = resolve_threads(threads)
    with shards.open_model(os.fspath(repacked), progress=progress) as rep:
        with (shards.open_model(os.fspath(original), progress=progress) if original is not None
              else contextlib.nullcontext()) as orig:
            if orig is not None and _swapped(orig, rep):
                raise InputError(f"the two files are the other way round: {os.fspath(original)} is "
                                 f"a file amx-repack repacked and {os.fspath(repacked)} a plain "
                                 f"model; verify takes the original first: verify "
                                 f"{os.fspath(repacked)} {os.fspath(original)}")
            if orig is not None and orig.count != rep.count:
                raise InputError(f"the original has {plural(orig.count, 'file')}, the repacked "
                                 f"model {rep.count}")
            check_declared_layout(rep.files)
            expected = (anchor.expected_digests(original_sha256, rep.count)
                        if original_sha256 is not None else [None] * rep.count)
            with interruptible():
                start_phase(progress, "verify", sum(t.nbytes for f in rep.files for t in f.tensors))
                reports = [_verify_open(orig.files[i] if orig else None, f, threads, progress,
                                        expected[i], decode_values)
                           for i, f in enumerate(rep.files)]
    report = reports[0]
    for r in reports[1:]:   # shards: one report for the model
        report.tensors += r.tensors
        report.metadata_problems += [f"{r.repacked}: {p}" for p in r.metadata_problems]
        report.sha256_checks += r.sha256_checks
        report.notes += r.notes
    report.seconds = time.perf_counter() - started
    return report


def _swapped(orig, rep) -> bool:
    """True when the "original" carries our records and the "repacked" file is plain (no records,
    no packed tensor): the arguments were given the other way round."""
    first, second = orig.files[0], rep.files[0]
    return (metadata.KEY_LAYOUT in first.kv and metadata.KEY_LAYOUT not in second.kv
            and not any(family_of_packed(t.type_id) for f in rep.files for t in f.tensors))


def _verify_open(orig: GGUFFile | None, rep: GGUFFile, threads: int, progress,
                 expected_sha256: str | None = None, decode_values: bool = False) -> VerifyReport:
    info = metadata.read_info(rep.kv)
    if orig is None and info is None:
        raise InputError(f"{rep.path} carries no amx-repack record; give the original file too: "
                         f"verify ORIGINAL REPACKED")
    if info is None and expected_sha256 is not None:
        raise InputError(f"{rep.path} carries no amx-repack record, so no original can be rebuilt "
                         f"from it whose sha256 could be checked")
    report = VerifyReport(orig.path if orig else None, rep.path, info.layout if info else None,
                          digest=info.digest_name if info else None,
                          target=info.target if info else None)
    if orig is None and expected_sha256 is None and info is not None \
            and not forgery_resistant(info.digest_name):
        report.notes.append(anchor.weak_digest_note(rep.path, info))
    families = [family_of_packed(t.type_id) for t in rep.tensors]
    sources = [f.source_of(t.type_id).id if f else t.type_id for f, t in zip(families, rep.tensors)]
    if orig is not None:
        report.metadata_problems += _metadata_problems(orig, rep, info)
    restorable = None   # the original as the records describe it (None: unpack would refuse)
    if info is not None:
        # the file against its own records: would unpack rebuild exactly what convert recorded?
        layout, problems = original.recorded_layout(rep, info, sources)
        restorable = layout
        if orig is not None:
            problems = [f"unpack would refuse the file: {p}" for p in problems]
            if layout is not None:   # and is what convert recorded the original itself?
                problems += [f"unpack would not rebuild the original: {p}"
                             for p in original.compare_with(layout, orig)]
        report.metadata_problems += problems
    recorded = {}
    if info is not None and len(info.tensor_names) == len(info.original_types) == len(info.original_digests):
        recorded = {n: (ty, d) for n, ty, d in zip(info.tensor_names, info.original_types,
                                                   info.original_digests)}
    orig_by_name = {t.name: t for t in orig.tensors} if orig else {}
    rep_by_name = {t.name: t for t in rep.tensors}
    # added tensors (--untie-output) the records describe consistently (else: a metadata problem)
    added = {}
    if info is not None and len(info.tensor_names) == len(rep.tensors):
        added = {rep.tensors[i].name: rep.tensors[j].name
                 for i, j in original.added_tensors(rep, info)[0].items()}
    if orig is not None:
        names = {t.name for t in rep.tensors}
        for t in orig.tensors:
            if t.name not in names:
                report.tensors.append(TensorResult(t.name, "missing", t.type.name, "-", t.nbytes,
                                                   detail="tensor missing from the repacked file"))

    tasks = []
    results: list[TensorResult] = []
    for t, family, src_type in zip(rep.tensors, families, sources):
        rec_type, digest = recorded.get(t.name, (None, None))
        res = TensorResult(t.name, "ok", type_name(src_type), t.type.name, t.nbytes)
        results.append(res)
        base, o = orig, orig_by_name.get(t.name)
        if t.name in added:
            res.added_from = added[t.name]
            res.detail = f"added by convert --untie-output: a packed copy of '{res.added_from}'"
            # against its source: the original's, or (standalone) the one in this file
            base, o = ((orig, orig_by_name.get(res.added_from)) if orig is not None else
                       (rep, rep_by_name[res.added_from]))
            if o is None:
                res.status = "missing"
                res.detail = f"added as a copy of '{res.added_from}', which the original lacks"
                continue
            if orig is None and o.type_id != src_type:
                res.status = "mismatch"
                res.detail = (f"added as a copy of '{res.added_from}', which this file holds "
                              f"as {o.type.name}, not {type_name(src_type)}")
                continue
        elif orig is not None and o is None:
            res.status, res.detail = "missing", "tensor not in the original file"
            continue
        if rec_type is not None and rec_type != src_type:
            res.status = "mismatch"
            res.detail = f"recorded original type {type_name(rec_type)}, layout implies {type_name(src_type)}"
            continue
        if o is not None and (o.type_id != src_type or o.shape != t.shape):
            # a different type is a mismatch of its own (another quantization), not a shape
            res.status = "mismatch" if o.type_id != src_type else "shape"
            what = ("type differs" if o.shape == t.shape else "shape differs"
                    if o.type_id == src_type else "type and shape differ")
            res.detail = (f"{what}: original is {o.type.name} {list(o.shape)}, repacked "
                          f"decodes to {type_name(src_type)} {list(t.shape)}")
            continue
        problem = family.shape_problem(t) if family else None
        if problem:
            res.status, res.detail = "shape", problem
            continue
        tasks.append((_tensor_task(res, family, src_type, t, rep, base, o, digest,
                                   report.digest, decode_values), t.nbytes))
    run_tasks(tasks, threads, progress)
    if progress is not None:    # tensors refused before any check count as done
        progress(sum(t.nbytes for t in rep.tensors) - sum(weight for _, weight in tasks))
    report.tensors += results
    if expected_sha256 is not None:
        restored = None
        if restorable is not None and report.ok:   # else unpack would refuse it: nothing to hash
            restored = anchor.rebuilt_sha256(rep, rep.path, restorable,
                                             list(zip(rep.tensors, families, sources)))
        report.sha256_checks.append({"file": rep.path, "expected": expected_sha256,
                                     "restored": restored})
    return report


def _reader(f: GGUFFile, t: TensorInfo, buffer: str):
    """Bytes [a, b) of tensor ``t`` of ``f``, read by position into a per-thread scratch buffer
    (no mapping: a file that shrinks meanwhile is an InputError, not a SIGBUS)."""
    base = f.data_start + t.offset

    def read(a: int, b: int):
        return original.read_at(f.fileno(), base + a, b - a, scratch(buffer, b - a), path=f.path)

    def ahead(a: int, b: int) -> None:
        """Ask the kernel to start reading [a, b) now (a no-op for pages already cached): the
        two files are then read in parallel with the checks, not one after the other."""
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(f.fileno(), base + a, b - a, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass   # only a hint
    read.ahead = ahead
    return read


def _tensor_task(res: TensorResult, family: Family | None, src_type: int, t: TensorInfo,
                 rep: GGUFFile, orig: GGUFFile | None, o: TensorInfo | None, digest: str | None,
                 digest_name: str, decode_values: bool = False):
    def run():
        read_data = _reader(rep, t, "repacked")
        read_original = _reader(orig, o, "original") if orig is not None else None
        if family is None:
            res.checks, problem = _check_plain(t, read_data, read_original, digest, digest_name)
        else:
            res.checks, problem = _check_packed(family, src_type, t, read_data, read_original,
                                                digest, digest_name, decode_values)
        if problem:
            res.status = "mismatch"
            res.detail = problem + (f" (added tensor, checked against '{res.added_from}')"
                                    if res.added_from else "")
    return run
