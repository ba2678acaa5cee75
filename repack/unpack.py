"""unpack: rebuild the original file from a repacked one, byte for byte.

The header comes back from our own records (our keys dropped, changed values put back in place),
every packed tensor is decoded back to its source blocks by the family's unpack kernel, and each
tensor's bytes are checked against the digest recorded at conversion before the file is committed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from formats.ggml_types import TYPES
from formats.gguf_container import OutputTensor, plan_layout

from . import metadata
from .atomic import AtomicOutputFile
from .checksum import XXH64
from .errors import InputError
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
    report.outputs = [r.output for r in reports]
    report.seconds = time.perf_counter() - started
    return report


def _unpack_open(src, input: str, output: str, threads: int,
                 progress) -> tuple[UnpackReport, AtomicOutputFile]:
    info = metadata.read_info(src.kv)
    if info is None:
        raise InputError(f"{input} was not written by amx-repack (no amx_repack.* records)")
    if info.tensor_names != [t.name for t in src.tensors] or \
            len(info.original_types) != len(src.tensors) or len(info.original_digests) != len(src.tensors):
        raise InputError(f"{input}: amx_repack.tensor.* records do not match the file's tensors")
    plans = []
    for t, orig_type in zip(src.tensors, info.original_types):
        family = family_of_packed(t.type_id)
        source = family.source_of(t.type_id).id if family else t.type_id
        if source != orig_type:
            raise InputError(f"{input}: tensor '{t.name}' has type {t.type.name} but records "
                             f"original type id {orig_type}")
        plans.append((t, family, source))
    outputs = [OutputTensor(t.name, t.shape, source, _source_bytes(source, t))
               for t, _, source in plans]
    data_order = sorted(range(len(plans)), key=lambda i: src.tensors[i].offset)
    layout = plan_layout(src.version, metadata.original_records(src.kv, info), outputs,
                         src.alignment, data_order, src.tail_padded)
    out = AtomicOutputFile(output, layout.total_size)
    try:
        out.pwrite(0, layout.header)
        _fill(src, out, layout, plans, outputs, info, threads, progress)
    except BaseException:
        out.abort()
        raise
    unpacked = sum(1 for _, family, _ in plans if family is not None)
    return UnpackReport(input, output, len(plans), unpacked, layout.total_size), out


def _fill(src, out, layout, plans, outputs, info, threads, progress) -> None:
    tasks = []
    for i, (t, family, source) in enumerate(plans):
        s0 = src.data_start + t.offset
        d0 = layout.data_start + layout.offsets[i]
        tasks.append((_tensor_task(src, out, t, family, source, s0, d0, info.original_digests[i]),
                      t.nbytes))
    run_tasks(tasks, threads, progress)


def _source_bytes(source_type_id: int, t) -> int:
    return TYPES[source_type_id].tensor_bytes(t.shape)


def _tensor_task(src, out, t, family, source: int, s0: int, d0: int, digest: str):
    """Unpack one tensor chunk by chunk through a scratch buffer, hashing what is written."""
    def run():
        h = XXH64()
        if family is None:
            for a in range(0, t.nbytes, CHUNK_BYTES):
                piece = memoryview(src.buffer)[s0 + a:s0 + min(a + CHUNK_BYTES, t.nbytes)]
                h.update(piece)
                out.pwrite(d0 + a, piece)
                src.release(s0 + a, s0 + a + len(piece))
        else:
            for (a, b), (c, d), rows in family.chunks(source, t, CHUNK_BYTES):
                rebuilt = scratch("rebuilt", b - a)
                family.unpack(source, t.ne0, rows, memoryview(src.buffer)[s0 + c:s0 + d], rebuilt)
                h.update(rebuilt)
                out.pwrite(d0 + a, rebuilt)
                src.release(s0 + c, s0 + d)
        if h.hexdigest() != digest:
            raise InputError(f"tensor '{t.name}' does not match the digest recorded at conversion: "
                             f"the repacked file is corrupt (run verify for details)")
    return run
