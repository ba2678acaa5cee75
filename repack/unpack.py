"""unpack: rebuild the original file from a repacked one, byte for byte, or write nothing.

Every piece of the original is rebuilt from the records convert wrote (metadata.py) and checked
against them before anything is committed: the header (KV records with our keys dropped and
changed values put back, tensor names, shapes, types and offsets) against the recorded per-key
digests and sha256s, the filler bytes against theirs, and every tensor, decoded back to its source
blocks by the family's unpack kernel, against the digest recorded at conversion. Any difference is
a VerificationFailed (exit 1) naming what differs; a missing or damaged record is an InputError
(exit 2). The input is read by position (pread), never through a mapping, so a file that shrinks
meanwhile is an error, not a SIGBUS.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from formats.ggml_types import TYPES, type_name
from formats.gguf_container import OutputTensor, encode_kv, plan_layout
from formats.layouts import FAMILY_TABLES

from . import metadata, original
from .atomic import AtomicOutputFile
from .checksum import XXH64
from .errors import InputError, NoRecords, VerificationFailed
from .families import family_of_packed
from .pipeline import write_outputs
from .runner import ProgressCallback, default_threads, run_tasks, scratch
from .wording import plural

CHUNK_BYTES = 16 << 20
FILE_TYPE_KEY = "general.file_type"


@dataclass
class UnpackReport:
    input: str
    output: str
    tensors: int
    unpacked: int
    bytes_out: int
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)   # every file written (shards)
    notes: list[str] = field(default_factory=list)
    foreign: bool = False          # no records: plain types back, metadata kept (not the original)
    # per tensor: (name, type in the input, type written, bytes in, bytes out)
    tensor_types: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changed_keys: dict[str, list] = field(default_factory=dict)   # foreign: key -> [was, now]
    inputs: list[str] = field(default_factory=list)    # every file read (shards)

    @property
    def byte_identical(self) -> bool:
        """Whether the output is the original file byte for byte (checked against its records)."""
        return not self.foreign


def unpack(input: str | os.PathLike, output: str | os.PathLike, threads: int | None = None,
           force: bool = False, progress: ProgressCallback | None = None,
           foreign: bool = False) -> UnpackReport:
    """Write ``output``: the file ``input`` was converted from, byte-identical.

    A file without amx-repack records (one that ik_llama.cpp's ``llama-quantize --repack``
    wrote, say) is refused with :class:`repack.errors.NoRecords` unless ``foreign`` is true: then
    its packed tensors are turned back into their plain types by the same inverse kernels (values
    unchanged; ``verify`` proves it), every metadata key is kept and ``general.file_type`` is
    relabelled back. That file is not byte-identical to an original amx-repack never saw, and the
    report says so (``foreign``, ``notes``)."""
    input, output = os.fspath(input), os.fspath(output)
    started = time.perf_counter()
    threads = threads or default_threads()
    reports = write_outputs(input, output, force,
                            lambda src, a, b: _unpack_open(src, a, b, threads, progress, foreign),
                            progress=progress, phase="unpack",
                            work=_unpack_work)
    report = reports[0]
    for r in reports[1:]:
        report.tensors += r.tensors
        report.unpacked += r.unpacked
        report.bytes_out += r.bytes_out
        report.foreign = report.foreign or r.foreign
        report.tensor_types += r.tensor_types
        report.notes += [n for n in r.notes if n not in report.notes]
        report.warnings += [w for w in r.warnings if w not in report.warnings]
        report.changed_keys.update({f"{r.output}: {k}": v for k, v in r.changed_keys.items()})
    report.outputs = [r.output for r in reports]
    report.inputs = [r.input for r in reports]
    report.seconds = time.perf_counter() - started
    return report


def _unpack_work(src) -> int:
    """The bytes of progress unpack reports for one file: every tensor but those convert added
    (--untie-output), which it leaves out."""
    try:
        info = metadata.read_info(src.kv)
    except InputError:
        info = None          # damaged records: the unpack itself refuses the file, saying why
    added = set(info.added_tensors) if info is not None else set()
    return sum(t.nbytes for t in src.tensors if t.name not in added)


def _plans(src, input: str) -> list:
    """(tensor, family or None, source type id) for every tensor; a packed tensor whose shape its
    layout cannot hold is an InputError (no kernel sees it)."""
    plans = []
    for t in src.tensors:
        family = family_of_packed(t.type_id)
        source = family.source_of(t.type_id).id if family else t.type_id
        problem = family.shape_problem(t) if family else None
        if problem:
            raise InputError(f"{input}: tensor '{t.name}' ({t.type.name}): {problem}")
        plans.append((t, family, source))
    return plans


def _tensor_types(plans) -> list[tuple[str, str, str, int, int]]:
    return [(t.name, t.type.name, type_name(source), t.nbytes,
             TYPES[source].tensor_bytes(t.shape) if family else t.nbytes)
            for t, family, source in plans]


def _unpack_open(src, input: str, output: str, threads: int, progress,
                 foreign: bool = False) -> tuple[UnpackReport, AtomicOutputFile]:
    info = metadata.read_info(src.kv)
    if info is None:
        if foreign:
            return _unpack_foreign(src, input, output, threads, progress)
        raise NoRecords(f"{input} was not written by amx-repack (no amx_repack.* records), so "
                        f"no original can be rebuilt byte for byte; unpacked as a foreign file, "
                        f"its packed tensors can still be turned back into plain types")
    plans = _plans(src, input)
    layout, problems = original.recorded_layout(src, info, [source for _, _, source in plans])
    if problems:
        raise VerificationFailed(mismatch_message(input, problems))
    out = AtomicOutputFile(output, layout.file_size)
    try:
        out.pwrite(0, layout.header)          # the padding up to the data is zero, or filler
        for offset, data in layout.filler:
            out.pwrite(offset, data)
        _fill(src, input, out, layout, plans, info, threads, progress)
    except BaseException:
        out.abort()
        raise
    written = [plans[i] for i in layout.rep_index]
    unpacked = sum(1 for _, family, _ in written if family is not None)
    report = UnpackReport(input, output, len(written), unpacked, layout.file_size,
                          tensor_types=_tensor_types(written))
    for name, source in zip(info.added_tensors, info.added_sources):
        report.notes.append(f"left out '{name}', which convert added (a packed copy of "
                            f"'{source}', --untie-output): the original has no such tensor")
    if info.layout_version == 1:
        report.notes.append(f"{input} has records of layout version 1, which do not cover the "
                            f"original's tensor shapes, padding, gaps or trailing bytes: the "
                            f"output is the original laid out canonically (byte-identical to it "
                            f"when it was; 'verify ORIGINAL {input}' says whether it was)")
    return report, out


def _unpack_foreign(src, input: str, output: str, threads: int,
                    progress) -> tuple[UnpackReport, AtomicOutputFile]:
    """A file without our records: every packed tensor back to its plain type (the same inverse
    kernels; each chunk is packed again and compared with the input before it counts), the
    input's metadata kept record for record except ``general.file_type``, relabelled back when it
    holds one of ik's repacked labels; laid out canonically with the input's alignment."""
    plans = _plans(src, input)
    records = dict(src.kv)
    report = UnpackReport(input, output, len(plans), sum(1 for _, f, _ in plans if f), 0,
                          foreign=True, tensor_types=_tensor_types(plans))
    key = FILE_TYPE_KEY
    rec = records.get(key)
    # a label some family's own tool writes (ik's llama-quantize --repack), and its plain type
    labelled = [] if rec is None or rec.value_type not in metadata.INTEGER_VALUE_TYPES else [
        (name, plain) for name, family in FAMILY_TABLES.items()
        for claimed, plain in [family.plain_file_type(int(rec.value))] if claimed]
    if labelled:
        (family, now), was = labelled[0], int(rec.value)
        if now is None:
            report.warnings.append(f"{input}: {key} {was} is one of the {family} layout's repacked "
                                   f"labels without a plain counterpart; left as it is")
        else:
            records[key] = encode_kv(key, rec.value_type, now)
            report.changed_keys[key] = [was, now]
    outputs = [OutputTensor(t.name, t.shape, source, out_bytes)
               for (t, _, source), (_, _, _, _, out_bytes) in zip(plans, report.tensor_types)]
    data_order = sorted(range(len(plans)), key=lambda i: src.tensors[i].offset)
    layout = plan_layout(src.version, records.values(), outputs, src.alignment, data_order,
                         src.tail_padded)
    report.bytes_out = layout.total_size
    relabelled = (f"{key} relabelled from {report.changed_keys[key][0]} to "
                  f"{report.changed_keys[key][1]}" if key in report.changed_keys
                  else f"{key} unchanged")
    report.notes.append(
        f"{input} carries no amx-repack records (a file repacked by another tool, such as "
        f"ik_llama.cpp's llama-quantize --repack): {plural(report.unpacked, 'packed tensor')} turned back "
        f"into plain types with their values unchanged, every metadata key kept as the file has "
        f"it ({relabelled}); the result cannot be byte-identical to an original amx-repack never "
        f"saw (verify OUTPUT {input} proves the tensor values equal)")
    out = AtomicOutputFile(output, layout.total_size)
    try:
        out.pwrite(0, layout.header)
        tasks = [(_foreign_task(src, input, out, t, family, source,
                                src.data_start + t.offset, layout.data_start + layout.offsets[i]),
                  t.nbytes) for i, (t, family, source) in enumerate(plans)]
        run_tasks(tasks, threads, progress)
    except BaseException:
        out.abort()
        raise
    return report, out


def _foreign_task(src, input: str, out, t, family, source: int, s0: int, d0: int):
    def run():
        if family is None:
            for a in range(0, t.nbytes, CHUNK_BYTES):
                n = min(CHUNK_BYTES, t.nbytes - a)
                out.pwrite(d0 + a, original.read_at(src.fileno(), s0 + a, n, scratch("input", n),
                                                    path=input))
            return
        for (a, b), (c, d), rows in family.chunks(t.type_id, t, CHUNK_BYTES):
            packed = original.read_at(src.fileno(), s0 + c, d - c, scratch("input", d - c),
                                      path=input)
            rebuilt = scratch("rebuilt", b - a)
            family.unpack(t.type_id, t.ne0, rows, packed, rebuilt)
            again = scratch("packed", d - c)
            family.pack(t.type_id, t.ne0, rows, rebuilt, again)
            if not np.array_equal(again, packed):
                row = a // TYPES[source].row_bytes(t.ne0)
                raise VerificationFailed(
                    f"{input}: tensor '{t.name}' ({t.type.name}), rows {row}..{row + rows - 1}: "
                    f"unpacked and packed again, they differ from the file's bytes (not a valid "
                    f"{t.type.name} layout); nothing was written")
            out.pwrite(d0 + a, rebuilt)
    return run


def mismatch_message(path: str, problems: list[str]) -> str:
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return (f"{path} does not match what convert recorded, so unpack would not give back the "
            f"original: {'; '.join(problems[:3])}{more}")


def _fill(src, input: str, out, layout, plans, info, threads, progress) -> None:
    tasks = []
    # the original's tensors only: a tensor the conversion added (--untie-output) is left out
    for k, i in enumerate(layout.rep_index):
        t, family, source = plans[i]
        s0 = src.data_start + t.offset
        d0 = layout.tensor_start(k)
        tasks.append((_tensor_task(src, input, out, t, family, source, s0, d0,
                                   info.original_digests[i]), t.nbytes))
    run_tasks(tasks, threads, progress)


def _tensor_task(src, input: str, out, t, family, source: int, s0: int, d0: int, digest: str):
    """Unpack one tensor chunk by chunk through scratch buffers, hashing what is written."""
    def run():
        h = XXH64()
        if family is None:
            for a in range(0, t.nbytes, CHUNK_BYTES):
                n = min(CHUNK_BYTES, t.nbytes - a)
                piece = original.read_at(src.fileno(), s0 + a, n, scratch("input", n), path=input)
                h.update(piece)
                out.pwrite(d0 + a, piece)
        else:
            for (a, b), (c, d), rows in family.chunks(t.type_id, t, CHUNK_BYTES):
                packed = original.read_at(src.fileno(), s0 + c, d - c, scratch("input", d - c),
                                          path=input)
                rebuilt = scratch("rebuilt", b - a)
                family.unpack(t.type_id, t.ne0, rows, packed, rebuilt)
                h.update(rebuilt)
                out.pwrite(d0 + a, rebuilt)
        if h.hexdigest() != digest:
            raise VerificationFailed(mismatch_message(
                input, [f"tensor '{t.name}' does not match the digest convert recorded (run "
                        f"verify for details)"]))
    return run
