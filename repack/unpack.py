"""unpack: rebuild the original file from a repacked one, byte for byte.

The header comes back from our own records (our keys dropped, changed values put back in place),
every packed tensor is decoded back to its source blocks by the family's unpack kernel, and each
tensor's bytes are checked against the sha256 recorded at conversion before the file is committed.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from formats.ggml_types import TYPES
from formats.gguf_container import OutputTensor, plan_layout

from . import metadata
from .atomic import AtomicOutputFile
from .errors import InputError
from .families import family_of_packed
from .pipeline import check_output_path, open_input
from .runner import ProgressCallback, default_threads, interruptible, run_tasks

CHUNK_BYTES = 16 << 20


@dataclass
class UnpackReport:
    input: str
    output: str
    tensors: int
    unpacked: int
    bytes_out: int
    seconds: float = 0.0


def unpack(input: str | os.PathLike, output: str | os.PathLike, threads: int | None = None,
           force: bool = False, progress: ProgressCallback | None = None) -> UnpackReport:
    """Write ``output``: the file ``input`` was converted from, byte-identical."""
    input, output = os.fspath(input), os.fspath(output)
    started = time.perf_counter()
    threads = threads or default_threads()
    src = open_input(input)
    try:
        check_output_path(input, output, force)
        with interruptible():
            report = _unpack_open(src, input, output, threads, progress)
    finally:
        src.close()
    report.seconds = time.perf_counter() - started
    return report


def _unpack_open(src, input: str, output: str, threads: int, progress) -> UnpackReport:
    info = metadata.read_info(src.kv)
    if info is None:
        raise InputError(f"{input} was not written by amx-repack (no amx_repack.* records)")
    if info.tensor_names != [t.name for t in src.tensors] or \
            len(info.original_types) != len(src.tensors) or len(info.original_sha256) != len(src.tensors):
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
    with AtomicOutputFile(output, layout.total_size) as out:
        out.write_at(0, layout.header)
        _fill(src, out, layout, plans, outputs, info, threads, progress)
        out.commit()
    unpacked = sum(1 for _, family, _ in plans if family is not None)
    return UnpackReport(input, output, len(plans), unpacked, layout.total_size)


def _fill(src, out, layout, plans, outputs, info, threads, progress) -> None:
    """Write every tensor's data; the views into both mappings die with this frame."""
    in_buf = memoryview(src.buffer)
    out_buf = memoryview(out.mm)
    tasks = []
    for i, (t, family, source) in enumerate(plans):
        s0 = src.data_start + t.offset
        d0 = layout.data_start + layout.offsets[i]
        packed = in_buf[s0:s0 + t.nbytes]
        dst = out_buf[d0:d0 + outputs[i].nbytes]
        tasks.append((_tensor_task(t, family, source, packed, dst, info.original_sha256[i]),
                      t.nbytes))
    run_tasks(tasks, threads, progress)


def _source_bytes(source_type_id: int, t) -> int:
    return TYPES[source_type_id].tensor_bytes(t.shape)


def _tensor_task(t, family, source: int, packed: memoryview, dst: memoryview, digest: str):
    def run():
        if family is None:
            for a in range(0, len(dst), CHUNK_BYTES):
                dst[a:a + CHUNK_BYTES] = packed[a:a + CHUNK_BYTES]
        else:
            for (s0, s1), (p0, p1), rows in family.chunks(source, t, CHUNK_BYTES):
                family.unpack(source, t.ne0, rows, packed[p0:p1], dst[s0:s1])
        if hashlib.sha256(dst).hexdigest() != digest:
            raise InputError(f"tensor '{t.name}' does not match the digest recorded at conversion: "
                             f"the repacked file is corrupt (run verify for details)")
    return run
