"""convert: plan the whole output, then fill it in parallel, then commit it atomically."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from formats.ggml_types import type_name
from formats.gguf_container import GGUFFile, KVRecord, OutputTensor, ValueType, encode_kv, plan_layout
from formats.interleaved_layout import FILE_TYPE_REPACKED
from formats.layouts import AMX_N16_OPTION, RUNTIMES, Decision, compile_patterns, decide, select
from formats import tied_output

from . import __version__, metadata, original, shards, zst
from .checksum import XXH64
from .atomic import AtomicOutputFile, commit_all
from .errors import InputError, UsageError
from .families import FAMILIES, LAYOUT_VERSION
from .runner import ProgressCallback, default_threads, interruptible, run_tasks, scratch

LAYOUTS = ("amx", "interleaved", "none")
UNTIE_OUTPUT_OPTION = "--untie-output"
CHUNK_BYTES = 16 << 20   # work per task: big enough to amortise a call, small enough to balance
FILE_TYPE_KEY = "general.file_type"


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    type_id: int               # input type
    out_type_id: int
    nbytes: int
    out_nbytes: int
    decision: Decision | None  # None for --layout none
    added_from: str | None = None   # a tensor the input does not have: a packed copy of this one

    @property
    def repacked(self) -> bool:
        return self.out_type_id != self.type_id


@dataclass
class ConvertReport:
    input: str
    output: str
    layout: str
    threads: int
    tensors: list[TensorPlan]
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # kept tensors the user may want to know of
    outputs: list[str] = field(default_factory=list)   # every file written (shards)

    def __post_init__(self):
        self.outputs = self.outputs or [self.output]

    @property
    def bytes_in(self) -> int:
        return sum(t.nbytes for t in self.tensors if not t.added_from)

    @property
    def bytes_out(self) -> int:
        return sum(t.out_nbytes for t in self.tensors)

    @property
    def repacked(self) -> list[TensorPlan]:
        return [t for t in self.tensors if t.repacked and not t.added_from]

    @property
    def added(self) -> list[TensorPlan]:
        """Tensors written that the input does not have (--untie-output)."""
        return [t for t in self.tensors if t.added_from]

    @property
    def runtime(self) -> str:
        """The runtime that reads this layout's output (formats.layouts.RUNTIMES)."""
        return RUNTIMES[self.layout]

    @property
    def gb_per_s(self) -> float:
        return self.bytes_in / self.seconds / 1e9 if self.seconds else 0.0

    @classmethod
    def merge(cls, reports: list["ConvertReport"], output: str) -> "ConvertReport":
        """One report for the shards of a split model."""
        merged = cls(reports[0].input, output, reports[0].layout, reports[0].threads,
                     [t for r in reports for t in r.tensors])
        merged.outputs = [r.output for r in reports]
        merged.warnings = sorted({w for r in reports for w in r.warnings})
        merged.notes = sorted({n for r in reports for n in r.notes})
        return merged

    def by_type(self) -> list[tuple[str, str, int, int, int]]:
        """(input type, output type, tensor count, bytes in, bytes out), sorted."""
        acc: dict[tuple[str, str], list[int]] = {}
        for t in self.tensors:
            row = acc.setdefault((type_name(t.type_id), type_name(t.out_type_id)), [0, 0, 0])
            row[0] += 1
            row[1] += 0 if t.added_from else t.nbytes
            row[2] += t.out_nbytes
        return sorted((a, b, *v) for (a, b), v in acc.items())


def plan_tensors(src: GGUFFile, layout: str, include=(), exclude=(),
                 allow_amx_n16: bool = False) -> list[TensorPlan]:
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout '{layout}' (choose from {', '.join(LAYOUTS)})")
    if allow_amx_n16 and layout != "amx":
        raise UsageError(f"{AMX_N16_OPTION} applies to --layout amx only")
    try:
        inc = compile_patterns(include, "--include")
        exc = compile_patterns(exclude, "--exclude")
    except ValueError as e:
        raise UsageError(str(e)) from None
    plans = []
    for t in src.tensors:
        if layout == "none":
            plans.append(TensorPlan(t.name, t.shape, t.type_id, t.type_id, t.nbytes, t.nbytes, None))
            continue
        d = select(decide(layout, t, allow_amx_n16), t.name, inc, exc)
        if d.packs:
            out_bytes = d.target.tensor_bytes(t.shape)
            plans.append(TensorPlan(t.name, t.shape, t.type_id, d.target.id, t.nbytes, out_bytes, d))
        else:
            plans.append(TensorPlan(t.name, t.shape, t.type_id, t.type_id, t.nbytes, t.nbytes, d))
    return plans


def plan_untied_output(src: GGUFFile, plans: list[TensorPlan], allow_amx_n16: bool) -> TensorPlan:
    """--untie-output: the plan of an AMX-packed output.weight copied from token_embd.weight, or
    an InputError saying why this model cannot have one (formats/tied_output.py)."""
    if shards.KEY_SPLIT_COUNT in src.kv or shards.KEY_SPLIT_TENSORS in src.kv:
        raise InputError(f"{src.path}: {UNTIE_OUTPUT_OPTION} does not take split models (it "
                         f"would change the tensor count the shards record)")
    tensors = {t.name: t for t in src.tensors}
    arch_rec = src.kv.get(tied_output.ARCH_KEY)
    arch = arch_rec.value if arch_rec is not None and arch_rec.value_type == ValueType.STRING \
        else None
    problem = tied_output.untie_problem(arch, tensors, allow_amx_n16)
    if problem:
        raise InputError(f"{src.path}: cannot {UNTIE_OUTPUT_OPTION}: {problem}")
    source = tensors[tied_output.SOURCE_NAME]
    if next(p for p in plans if p.name == source.name).repacked:
        raise InputError(f"{src.path}: {UNTIE_OUTPUT_OPTION} keeps {source.name} unpacked for "
                         f"get_rows, but --include packs it: leave it out of --include")
    d = tied_output.untie_decision(source, allow_amx_n16)
    return TensorPlan(tied_output.OUTPUT_NAME, source.shape, source.type_id, d.target.id,
                      source.nbytes, d.target.tensor_bytes(source.shape), d, source.name)


def _output_metadata(src: GGUFFile, layout: str, plans: list[TensorPlan],
                     digests: list[str], recorded: metadata.OriginalRecords) -> list[KVRecord]:
    """The input's records (a few changed in place) followed by our own."""
    records = dict(src.kv)
    changed: dict[str, KVRecord] = {}
    added: list[str] = []
    if layout == "interleaved" and FILE_TYPE_KEY in records:
        # ik relabels general.file_type by the input's file type alone (interleaved.md §7)
        rec = records[FILE_TYPE_KEY]
        if rec.value_type not in metadata.INTEGER_VALUE_TYPES:
            raise InputError(f"{src.path}: '{FILE_TYPE_KEY}' is {rec.value_type.name.lower()}, "
                             f"expected an integer (a llama_ftype id)")
        new = FILE_TYPE_REPACKED.get(int(rec.value))
        if new is not None and new != rec.value:
            changed[FILE_TYPE_KEY] = rec
            # every relabelled id is above 255: a one-byte record becomes a u32, as ik writes it
            vtype = (ValueType.UINT32 if rec.value_type in (ValueType.INT8, ValueType.UINT8)
                     else rec.value_type)
            records[FILE_TYPE_KEY] = encode_kv(FILE_TYPE_KEY, vtype, new)
    ours = metadata.build_records(
        layout, LAYOUT_VERSION, __version__, [p.name for p in plans],
        [p.type_id for p in plans], digests, changed, added, recorded)
    return list(records.values()) + ours


def convert(input: str | os.PathLike, output: str | os.PathLike, layout: str = "amx",
            threads: int | None = None, include=(), exclude=(), force: bool = False,
            progress: ProgressCallback | None = None, compress: bool = False,
            allow_amx_n16: bool = False, untie_output: bool = False) -> ConvertReport:
    """Repack every eligible tensor of ``input`` into ``layout`` and write ``output`` atomically.

    ``layout`` is "amx", "interleaved", or "none" (a plain copy, byte-identical to the input).
    ``include`` / ``exclude`` are regular expressions searched in tensor names.
    ``allow_amx_n16`` (amx only) also packs tensors with ``ne1 % 16 == 0`` but ``ne1 % 32 != 0``,
    which the format holds but llama.cpp's AMX backend does not run (a warning says so).
    ``untie_output`` (amx only) adds an AMX-packed ``output.weight``, a copy of the tied
    ``token_embd.weight``, so that llama.cpp packs nothing at load (formats/tied_output.py); only
    for a model without output.weight whose architecture's loader takes one.
    ``progress`` is called with a byte count as work completes. ``compress`` writes ``output + ".zst"`` (a
    multi-threaded zstd stream); a ``.gguf.zst`` input is streamed, never held in memory.
    Raises a :class:`repack.errors.RepackError`.
    """
    input, output = os.fspath(input), os.fspath(output)
    threads = threads or default_threads()
    if threads < 1:
        raise UsageError("--threads must be at least 1")
    if untie_output and layout != "amx":
        raise UsageError(f"{UNTIE_OUTPUT_OPTION} applies to --layout amx only")
    started = time.perf_counter()

    def produce(src, in_path, out_path):
        r, out = _convert_open(src, in_path, out_path, layout, threads, include, exclude,
                               allow_amx_n16, progress, untie_output)
        if compress:
            out = zst.compress_output(out, zst.compressed_name(out_path), threads)
            r.output = r.outputs[0] = zst.compressed_name(out_path)
        return r, out

    reports = write_outputs(input, output, force, produce,
                            final_name=zst.compressed_name if compress else None)
    report = reports[0] if len(reports) == 1 else ConvertReport.merge(reports, output)
    report.seconds = time.perf_counter() - started
    return report


def write_outputs(input: str, output: str, force: bool, produce, final_name=None) -> list:
    """Run ``produce(src, in_path, out_path) -> (report, uncommitted output)`` for every file of
    the input model (each shard of a split model, output shards named after the same pattern)
    and return the reports. The outputs take their final names only once all of them are
    complete; on any error or interruption every temporary file is removed."""
    with shards.open_model(input, scratch_dir=os.path.dirname(os.path.abspath(output))) as model:
        out_paths = shards.output_shards(output, model.count) if model.count > 1 else [output]
        for a, b in zip(model.paths, out_paths):
            shards.check_output_path(a, final_name(b) if final_name else b, force)
        pending: list[AtomicOutputFile] = []
        try:
            with interruptible():
                reports = []
                for src, a, b in zip(model.files, model.paths, out_paths):
                    report, out = produce(src, a, b)
                    reports.append(report)
                    pending.append(out)
                # all or none, and without --force never in place of a file that appeared
                commit_all(pending, replace=force)
        except BaseException:
            for out in pending:
                out.abort()
            raise
    return reports


def refuse_repacked_input(src: GGUFFile, path: str) -> None:
    """A file that already carries amx_repack.* records cannot take ours as well (duplicate keys,
    and its original would be lost): convert its original instead."""
    ours = [k for k in src.kv if k.startswith(metadata.PREFIX)]
    if not ours:
        return
    if metadata.KEY_LAYOUT in src.kv:
        try:
            info = metadata.read_info(src.kv)
            what = f" (layout {info.layout})" if info and isinstance(info.layout, str) else ""
        except InputError:
            what = ""
        raise InputError(f"{path} is already repacked by amx-repack{what}: convert its original "
                         f"instead (amx-repack unpack gives it back)")
    raise InputError(f"{path} carries its own '{ours[0]}' metadata key; the '{metadata.PREFIX}' "
                     f"prefix is reserved for amx-repack's records, so it cannot be converted")


def _convert_open(src: GGUFFile, input: str, output: str, layout: str, threads: int,
                  include, exclude, allow_amx_n16: bool,
                  progress, untie_output: bool = False) -> tuple[ConvertReport, AtomicOutputFile]:
    if layout != "none":
        refuse_repacked_input(src, input)
    plans = plan_tensors(src, layout, include, exclude, allow_amx_n16)
    if untie_output:
        plans.append(plan_untied_output(src, plans, allow_amx_n16))
    report = ConvertReport(input, output, layout, threads, plans)
    if layout == "none":
        return report, _copy(src, input, output, threads, progress)
    # packed although a default would keep it (--include, --allow-amx-n16): a warning per cause
    _group(report.warnings, "repacked", [p for p in plans if p.repacked and p.decision.reason])
    # kept only because the runtime would not run it packed, and an option would pack it anyway
    _group(report.notes, "kept", [p for p in plans if not p.repacked and p.decision
                                  and p.decision.code == "shape_n"])
    if not report.repacked:
        report.warnings.append(f"no tensor is eligible for the {layout} layout; output is a copy "
                               f"with amx-repack metadata")
    # everything of the input that is not tensor data, recorded so that unpack rebuilds it
    recorded = original.capture(src, input)
    if recorded.filler:
        report.notes.append(original.describe_filler(src, recorded.filler))
    tensors = list(src.tensors)   # per plan: the input tensor its data is read from
    for p in report.added:
        # an added tensor's records are its source's: its values, type, shape and bytes
        source = src.tensor(p.added_from)
        tensors.append(source)
        recorded.shapes.append(source.shape)
        recorded.offsets.append(source.offset)
        recorded.added.append((p.name, p.added_from))
        report.notes.append(f"added {p.name} ({type_name(p.out_type_id)}, {p.out_nbytes:,} "
                            f"bytes): a packed copy of {p.added_from}, which stays unpacked for "
                            f"get_rows (unpack leaves it out)")

    digests = [metadata.DIGEST_PLACEHOLDER] * len(plans)
    outputs = [OutputTensor(p.name, p.shape, p.out_type_id, p.out_nbytes) for p in plans]
    # input tensors in their data order, then the added ones
    data_order = sorted(range(len(src.tensors)), key=lambda i: src.tensors[i].offset)
    data_order += range(len(src.tensors), len(plans))

    def layout_for(digest_list):
        return plan_layout(src.version, _output_metadata(src, layout, plans, digest_list, recorded),
                           outputs, src.alignment, data_order, src.tail_padded)

    out_layout = layout_for(digests)
    out = AtomicOutputFile(output, out_layout.total_size)
    try:
        _fill(src, input, out, out_layout, tensors, plans, layout, digests, threads, progress)
        header = layout_for(digests).header
        assert len(header) == out_layout.data_start
        out.pwrite(0, header)
    except BaseException:
        out.abort()
        raise
    return report, out   # the caller commits once every output of the command is complete


def _copy(src: GGUFFile, input: str, output: str, threads: int, progress) -> AtomicOutputFile:
    """--layout none: the input file byte for byte (header, tensor data, padding, gaps and
    trailing bytes alike), read and written by position in chunks."""
    size = src.file_size
    out = AtomicOutputFile(output, size)

    def task(a: int, b: int):
        def run():
            out.pwrite(a, original.read_at(src.fileno(), a, b - a, scratch("input", b - a),
                                           path=input))
        return run
    try:
        run_tasks([(task(a, min(a + CHUNK_BYTES, size)), min(CHUNK_BYTES, size - a))
                   for a in range(0, size, CHUNK_BYTES)], threads, progress)
    except BaseException:
        out.abort()
        raise
    return out


def _group(out: list[str], verb: str, plans: list[TensorPlan]) -> None:
    """One line per decision code: count, the first names, the first tensor's reason."""
    by_code: dict[str, list[TensorPlan]] = {}
    for p in plans:
        by_code.setdefault(p.decision.code, []).append(p)
    for group in by_code.values():
        names = ", ".join(p.name for p in group[:3]) + (", ..." if len(group) > 3 else "")
        out.append(f"{len(group)} {verb} tensor(s) ({names}): {group[0].decision.reason}"
                   + (" (and similar)" if len(group) > 1 else ""))


def _fill(src: GGUFFile, input: str, out: AtomicOutputFile, out_layout, tensors,
          plans: list[TensorPlan], layout: str, digests: list[str], threads: int,
          progress) -> None:
    """Write every tensor's data, one task per tensor, chunk by chunk through per-thread scratch
    buffers: read (pread), digest, repack, write (pwrite). No tensor data goes through a mapping,
    so resident memory is a few chunks per thread whatever the model size."""
    tasks = []
    for i, (t, p) in enumerate(zip(tensors, plans)):
        s0 = src.data_start + t.offset
        d0 = out_layout.data_start + out_layout.offsets[i]
        family = FAMILIES[layout] if p.repacked else None
        tasks.append((_tensor_task(src, input, out, t, family, s0, d0, digests, i), t.nbytes))
    run_tasks(tasks, threads, progress)


def _tensor_task(src: GGUFFile, input: str, out: AtomicOutputFile, t, family, s0: int, d0: int,
                 digests: list[str], i: int):
    def run():
        h = XXH64()
        if family is None:
            pieces = (((a, min(a + CHUNK_BYTES, t.nbytes)), None, 0)
                      for a in range(0, t.nbytes, CHUNK_BYTES))
        else:
            pieces = family.chunks(t.type_id, t, CHUNK_BYTES)
        for (a, b), dst_range, rows in pieces:
            data = original.read_at(src.fileno(), s0 + a, b - a, scratch("input", b - a),
                                    path=input)
            h.update(data)
            if family is None:
                out.pwrite(d0 + a, data)
            else:
                c, d = dst_range
                packed = scratch("packed", d - c)
                family.pack(t.type_id, t.ne0, rows, data, packed)
                out.pwrite(d0 + c, packed)
        digests[i] = h.hexdigest()
    return run
