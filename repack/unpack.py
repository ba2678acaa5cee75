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

from . import metadata, original
from .atomic import AtomicOutputFile
from .checksum import XXH64
from .errors import InputError, VerificationFailed
from .families import family_of_packed
from .pipeline import write_outputs
from .runner import ProgressCallback, default_threads, run_tasks, scratch

CHUNK_BYTES = 16 << 20


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


def unpack(input: str | os.PathLike, output: str | os.PathLike, threads: int | None = None,
           force: bool = False, progress: ProgressCallback | None = None) -> UnpackReport:
    """Write ``output``: the file ``input`` was converted from, byte-identical."""
    input, output = os.fspath(input), os.fspath(output)
    started = time.perf_counter()
    threads = threads or default_threads()
    reports = write_outputs(input, output, force,
                            lambda src, a, b: _unpack_open(src, a, b, threads, progress))
    report = reports[0]
    for r in reports[1:]:
        report.tensors += r.tensors
        report.unpacked += r.unpacked
        report.bytes_out += r.bytes_out
        report.notes += [n for n in r.notes if n not in report.notes]
    report.outputs = [r.output for r in reports]
    report.seconds = time.perf_counter() - started
    return report


def _unpack_open(src, input: str, output: str, threads: int,
                 progress) -> tuple[UnpackReport, AtomicOutputFile]:
    info = metadata.read_info(src.kv)
    if info is None:
        raise InputError(f"{input} was not written by amx-repack (no amx_repack.* records)")
    plans = []
    for t in src.tensors:
        family = family_of_packed(t.type_id)
        source = family.source_of(t.type_id).id if family else t.type_id
        problem = family.shape_problem(source, t) if family else None
        if problem:
            raise InputError(f"{input}: tensor '{t.name}' ({t.type.name}): {problem}")
        plans.append((t, family, source))
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
    report = UnpackReport(input, output, len(written), unpacked, layout.file_size)
    for name, source in zip(info.added_tensors, info.added_sources):
        report.notes.append(f"left out '{name}', which convert added (a packed copy of "
                            f"'{source}', --untie-output): the original has no such tensor")
    if info.layout_version == 1:
        report.notes.append(f"{input} has records of layout version 1, which do not cover the "
                            f"original's tensor shapes, padding, gaps or trailing bytes: the "
                            f"output is the original laid out canonically (byte-identical to it "
                            f"when it was; 'verify ORIGINAL {input}' says whether it was)")
    return report, out


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
            for (a, b), (c, d), rows in family.chunks(source, t, CHUNK_BYTES):
                packed = original.read_at(src.fileno(), s0 + c, d - c, scratch("input", d - c),
                                          path=input)
                rebuilt = scratch("rebuilt", b - a)
                family.unpack(source, t.ne0, rows, packed, rebuilt)
                h.update(rebuilt)
                out.pwrite(d0 + a, rebuilt)
        if h.hexdigest() != digest:
            raise VerificationFailed(mismatch_message(
                input, [f"tensor '{t.name}' does not match the digest convert recorded (run "
                        f"verify for details)"]))
    return run
