"""convert: plan the whole output, then fill it in parallel, then commit it atomically."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from formats.ggml_types import TYPES, type_name
from formats.gguf_container import (MAX_HEADER_BYTES, GGUFFile, KVRecord, OutputTensor, ValueType,
                                    encode_kv, plan_layout)
from formats import tied_output
from formats.layouts import (CODES, DEFAULT_LAYOUT, FAMILY_TABLES, LAYOUTS, OVERRIDE_CONSEQUENCES,
                             RUNTIMES, SOFT_CODES, Decision, check_overrides, compile_patterns,
                             decide, select)

from . import __version__, metadata, original, shards, zst
from .checksum import digest_of_version, new_digest
from .atomic import AtomicOutputFile, check_free_space, check_output_folder, commit_all
from .errors import ForeignPacked, InputError, UsageError, VerificationFailed
from .families import FAMILIES, LAYOUT_VERSION, family_of_packed
from .kernel_copy import copy_range, read_ahead
from .wording import plural
from .runner import (ProgressCallback, advance, interruptible, resolve_threads, run_tasks,
                     scratch, start_phase)

CHUNK_BYTES = 16 << 20   # work per task: big enough to amortise a call, small enough to balance
# convert --verify packs and checks a chunk in pieces of about this size: each piece's input, packed
# and rebuilt bytes are still in cache (L2) when the check reads them
VERIFY_PIECE_BYTES = 1 << 20
FILE_TYPE_KEY = "general.file_type"


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    type_id: int               # input type
    out_type_id: int
    nbytes: int
    out_nbytes: int
    decision: Decision         # why it is packed or kept (code "none" for the layout none)
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
    dry_run: bool = False            # planned only: nothing was written (outputs: the plan)
    inputs: list[str] = field(default_factory=list)    # every file read (shards)
    selection: "Selection | None" = None
    verified: bool = False     # convert --verify proved every repacked chunk
    target: str | None = None  # the CPU target of a family that has them (convert --target)
    file_size_in: int = 0      # the input file(s) on disk, every shard (a .zst input: its size)
    file_size_out: int | None = None   # the file(s) written (--compress: compressed); dry run: None

    def __post_init__(self):
        self.outputs = self.outputs or [self.output]
        self.inputs = self.inputs or [self.input]

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
        merged.inputs = [r.input for r in reports]
        merged.selection = reports[0].selection
        merged.target = reports[0].target
        merged.dry_run = reports[0].dry_run
        merged.warnings = sorted({w for r in reports for w in r.warnings})
        merged.notes = sorted({n for r in reports for n in r.notes})
        return merged

    def by_type(self, added: bool = False) -> list[tuple[str, str, int, int, int]]:
        """(input type, output type, tensor count, bytes in, bytes out), sorted, of the input's
        tensors; with ``added``, of the tensors convert adds (--untie-output: the input type is
        their source's, and their bytes in 0, as the input has no such tensor)."""
        acc: dict[tuple[str, str], list[int]] = {}
        for t in self.tensors:
            if bool(t.added_from) != added:
                continue
            row = acc.setdefault((type_name(t.type_id), type_name(t.out_type_id)), [0, 0, 0])
            row[0] += 1
            row[1] += 0 if t.added_from else t.nbytes
            row[2] += t.out_nbytes
        return sorted((a, b, *v) for (a, b), v in acc.items())


@dataclass(frozen=True)
class Selection:
    """What the caller asked for, checked: the layout, include / exclude patterns (they only
    narrow), the soft defaults to override (codes of formats.layouts.SOFT_CODES) and, for a family
    with CPU targets, the target (resolved: "auto" is this machine's)."""
    layout: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    overrides: frozenset[str] = frozenset()
    target: str | None = None

    @classmethod
    def make(cls, layout: str, include=(), exclude=(), overrides=(),
             allow_amx_n16: bool = False, target: str | None = None) -> "Selection":
        if layout not in LAYOUTS:
            raise UsageError(f"unknown layout '{layout}' (choose from {', '.join(LAYOUTS)})")
        if layout == "none" and target is not None:
            raise UsageError("layout none copies the file as it is: it takes no target")
        try:
            target = FAMILY_TABLES[layout].resolve_target(target) if layout != "none" else None
        except ValueError as e:
            raise UsageError(str(e)) from None
        include, exclude, overrides = tuple(include), tuple(exclude), list(overrides)
        if allow_amx_n16:
            if "shape_n" not in SOFT_CODES.get(layout, ()):
                owner = next(name for name, codes in SOFT_CODES.items() if "shape_n" in codes)
                raise UsageError(f"allowing ne1 % 32 != 0 (the 'shape_n' override) applies to "
                                 f"the {owner} layout only")
            overrides.append("shape_n")
        if layout == "none" and (include or exclude or overrides):
            raise UsageError("layout none copies the file as it is: include / exclude patterns "
                             "and overrides do not apply to it")
        try:
            compile_patterns(include, "include")
            compile_patterns(exclude, "exclude")
            codes = check_overrides(layout, overrides)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return cls(layout, include, exclude, codes, target)

    def check_matches(self, names: list[str]) -> None:
        """Every pattern must match some tensor name of the model: one that matches none is a
        typo or a wrong assumption about the model, not something to ignore silently."""
        for what, patterns in (("include", self.include), ("exclude", self.exclude)):
            for p, rx in zip(patterns, compile_patterns(patterns, what)):
                if not any(rx.search(n) for n in names):
                    raise UsageError(f"{what} pattern {p!r} matches no tensor of the model")

    def plan(self, src: GGUFFile) -> list[TensorPlan]:
        inc = compile_patterns(self.include, "include")
        exc = compile_patterns(self.exclude, "exclude")
        plans = []
        for t in src.tensors:
            if self.layout == "none":
                d = Decision(None, False, CODES["none"], "none")
            else:
                d = select(decide(self.layout, t, self.overrides, target=self.target), t.name,
                           inc, exc)
            out_type, out_bytes = ((d.target.id, d.target.tensor_bytes(t.shape)) if d.packs
                                   else (t.type_id, t.nbytes))
            plans.append(TensorPlan(t.name, t.shape, t.type_id, out_type, t.nbytes, out_bytes, d))
        return plans


def plan_untied_output(src: GGUFFile, plans: list[TensorPlan], layout: str,
                       overrides=frozenset()) -> TensorPlan:
    """--untie-output: the plan of a packed output.weight copied from token_embd.weight, or
    an InputError saying why this model cannot have one (formats/tied_output.py)."""
    if shards.KEY_SPLIT_COUNT in src.kv or shards.KEY_SPLIT_TENSORS in src.kv:
        raise InputError(f"{src.path}: untying the output matrix does not take split models (it "
                         f"would change the tensor count the shards record)")
    tensors = {t.name: t for t in src.tensors}
    arch_rec = src.kv.get(tied_output.ARCH_KEY)
    arch = arch_rec.value if arch_rec is not None and arch_rec.value_type == ValueType.STRING \
        else None
    problem = tied_output.untie_problem(FAMILY_TABLES[layout], arch, tensors, overrides)
    if problem:
        raise InputError(f"{src.path}: cannot untie the output matrix: {problem}")
    # token_embd.weight itself always stays unpacked (the embedding rule cannot be lifted)
    source = tensors[tied_output.SOURCE_NAME]
    d = tied_output.untie_decision(FAMILY_TABLES[layout], source, overrides)
    return TensorPlan(tied_output.OUTPUT_NAME, source.shape, source.type_id, d.target.id,
                      source.nbytes, d.target.tensor_bytes(source.shape), d, source.name)


def _output_metadata(src: GGUFFile, layout: str, plans: list[TensorPlan],
                     digests: list[str], recorded: metadata.OriginalRecords,
                     target: str | None = None) -> list[KVRecord]:
    """The input's records (a few changed in place) followed by our own."""
    records = dict(src.kv)
    changed: dict[str, KVRecord] = {}
    added: list[str] = []
    family = FAMILY_TABLES[layout]
    if family.relabels_file_type and FILE_TYPE_KEY in records:
        # as the family's own tool does (ik relabels by the input's file type alone,
        # interleaved.md §7)
        rec = records[FILE_TYPE_KEY]
        if rec.value_type not in metadata.INTEGER_VALUE_TYPES:
            raise InputError(f"{src.path}: '{FILE_TYPE_KEY}' is {rec.value_type.name.lower()}, "
                             f"expected an integer (a llama_ftype id)")
        new = family.repacked_file_type(int(rec.value))
        if new is not None and new != rec.value:
            changed[FILE_TYPE_KEY] = rec
            # every relabelled id is above 255: a one-byte record becomes a u32, as ik writes it
            vtype = (ValueType.UINT32 if rec.value_type in (ValueType.INT8, ValueType.UINT8)
                     else rec.value_type)
            records[FILE_TYPE_KEY] = encode_kv(FILE_TYPE_KEY, vtype, new)
    ours = metadata.build_records(
        layout, LAYOUT_VERSION, __version__, [p.name for p in plans],
        [p.type_id for p in plans], digests, changed, added, recorded, target)
    return list(records.values()) + ours


def convert(input: str | os.PathLike, output: str | os.PathLike, layout: str = DEFAULT_LAYOUT,
            threads: int | None = None, include=(), exclude=(), force: bool = False,
            progress: ProgressCallback | None = None, compress: bool = False,
            allow_amx_n16: bool = False, overrides=(), dry_run: bool = False,
            on_warning=None, verify: bool = False, untie_output: bool = False,
            target: str | None = None, decode_values: bool = False) -> ConvertReport:
    """Repack every eligible tensor of ``input`` into ``layout`` and write ``output`` atomically.

    ``layout`` is a layout family ("amx", "interleaved": ``formats.layouts.LAYOUTS``), or "none"
    (a plain copy, byte-identical to the input).
    ``include`` / ``exclude`` are regular expressions searched in tensor names; they only narrow
    the selection, and each must match some tensor. ``overrides`` names soft defaults to lift
    (``formats.layouts.SOFT_CODES[layout]``, e.g. "experts"): the tensors they keep are packed
    anyway, with a warning each; hard rules (the format, the get_rows embeddings) cannot be
    overridden. ``allow_amx_n16`` is the same as overriding "shape_n" (amx: tensors with
    ``ne1 % 16 == 0`` but ``ne1 % 32 != 0``, which llama.cpp's AMX backend does not run).
    ``dry_run`` plans without writing anything (only the header is read) and returns the report.
    ``verify`` proves every packed chunk while it is in memory, with verify's checks (the
    inverse kernel back to the input's bytes, and with ``decode_values`` the float values of the
    input's decoder against the packed layout's: repack/verify.py; not the layout check, whose
    packer is the one that just packed the chunk); any mismatch raises VerificationFailed and no
    output is committed.
    ``untie_output`` (a family with ``unties_output``: amx) adds a packed ``output.weight``, a
    copy of the tied ``token_embd.weight``, so that llama.cpp packs nothing at load
    (formats/tied_output.py); only for a model without output.weight whose architecture's loader
    takes one.
    ``target`` (a family with CPU targets, e.g. cpu-repack: ``formats.family.LayoutFamily
    .targets``) is the CPU the file is made for; None or "auto": this machine's. The file records
    it (``amx_repack.target``).
    ``progress`` is called with a byte count as work completes (phases: runner.start_phase).
    ``on_warning`` is called with each warning as it arises, before the work it concerns (the
    report lists them too). ``compress`` writes ``output + ".zst"`` (a multi-threaded zstd
    stream); a ``.gguf.zst`` input is streamed, never held in memory.
    Raises a :class:`repack.errors.RepackError`.
    """
    input, output = os.fspath(input), os.fspath(output)
    if output.endswith(zst.SUFFIX):
        # an output named .zst is compressed output, with or without the flag
        compress, output = True, output[:-len(zst.SUFFIX)]
    threads = resolve_threads(threads)
    selection = Selection.make(layout, include, exclude, overrides, allow_amx_n16, target)
    if untie_output and not (layout in FAMILY_TABLES and FAMILY_TABLES[layout].unties_output):
        raise UsageError(f"untying the output matrix applies to the "
                         f"{' and '.join(n for n, f in FAMILY_TABLES.items() if f.unties_output)} "
                         f"layout only")
    started = time.perf_counter()
    if dry_run:
        report = _plan_only(input, output, selection, threads, force, compress, untie_output)
        for w in report.warnings if on_warning is not None else ():
            on_warning(w)    # what the real run would say, as it would say it
        report.seconds = time.perf_counter() - started
        return report

    def produce(src, in_path, out_path):
        return _convert_open(src, in_path, out_path, selection, threads, progress, on_warning,
                             verify, untie_output, decode_values)

    def compress_all(reports, outs):
        """After every shard is converted: one "compress" phase over all of them."""
        start_phase(progress, "compress", sum(out.size for out in outs))
        for i, (r, out) in enumerate(zip(reports, outs)):
            outs[i] = zst.compress_output(out, zst.compressed_name(r.output), threads, progress)
            r.output = r.outputs[0] = zst.compressed_name(r.output)

    reports = write_outputs(input, output, force, produce,
                            final_name=zst.compressed_name if compress else None,
                            check=lambda model: selection.check_matches(_names(model)),
                            progress=progress, phase="convert",
                            work=lambda src: src.file_size if layout == "none"
                            else sum(p.nbytes for p in _plan_file(src, selection, untie_output)),
                            finish=compress_all if compress else None)
    report = reports[0] if len(reports) == 1 else ConvertReport.merge(reports, output)
    report.verified = verify and layout != "none"
    report.file_size_in = sum(os.path.getsize(p) for p in report.inputs)
    report.file_size_out = sum(os.path.getsize(p) for p in report.outputs)
    report.seconds = time.perf_counter() - started
    return report


def _names(model) -> list[str]:
    return [t.name for f in model.files for t in f.tensors]


def _plan_only(input: str, output: str, selection: Selection, threads: int, force: bool,
               compress: bool, untie_output: bool) -> ConvertReport:
    """convert's plan for every file of the model, from the headers alone; nothing is written.
    What the real run would refuse before its work (an output it cannot write, too little free
    space for the output or a compressed input's plain copy) is refused here in its words."""
    check_output_folder(output)
    with shards.open_model(input, header_only=True) as model:
        selection.check_matches(_names(model))
        out_paths = shards.output_shards(output, model.count) if model.count > 1 else [output]
        if compress:
            out_paths = [zst.compressed_name(p) for p in out_paths]
        check_outputs(model, out_paths, force)
        reports = []
        for src, a, b in zip(model.files, model.paths, out_paths):
            folder = os.path.dirname(os.path.abspath(b))
            compressed = zst.is_zst(a)
            if compressed:
                zst.check_room_to_decompress(a, folder)
            r = _planned(src, a, b, selection, threads, untie_output)
            r.dry_run = True
            if selection.layout == "none":
                size = src.file_size
            else:
                # the bytes outside the tensors, as the conversion records them (a compressed
                # input's are only known once it is decompressed, in the real run)
                recorded = original.describe_header(src) if compressed else \
                    original.capture(src, a)
                if recorded.filler:
                    r.notes.append(original.describe_filler(src, recorded.filler))
                size = _output_layout(src, r, recorded)[0].total_size
            check_free_space(folder, size)
            reports.append(r)
    report = reports[0] if len(reports) == 1 else ConvertReport.merge(reports, output)
    report.dry_run = True
    report.file_size_in = sum(os.path.getsize(p) for p in report.inputs)
    return report


def check_outputs(model, out_paths: list[str], force: bool) -> None:
    """Refuse, before any work, outputs the conversion could not write: the input itself, a
    folder, a device, a missing folder, and without ``force`` anything that exists."""
    for a, b in zip(model.paths, out_paths):
        shards.check_output_path(a, b, force)


def write_outputs(input: str, output: str, force: bool, produce, final_name=None, check=None,
                  progress=None, phase: str = "", work=None, finish=None) -> list:
    """Run ``produce(src, in_path, out_path) -> (report, uncommitted output)`` for every file of
    the input model (each shard of a split model, output shards named after the same pattern)
    and return the reports. ``check(model)``, when given, runs on the opened model before
    anything is written. ``work(src)`` is the bytes of progress ``produce`` reports for one
    file: one ``phase`` covers all of them. ``finish(reports, outputs)`` may then replace the
    outputs in place (--compress). The outputs take their final names only once all of them are
    complete; on any error or interruption every temporary file is removed."""
    check_output_folder(output)     # also the folder of a compressed input's plain copy
    with shards.open_model(input, scratch_dir=os.path.dirname(os.path.abspath(output)),
                           progress=progress) as model:
        if check is not None:
            check(model)
        out_paths = shards.output_shards(output, model.count) if model.count > 1 else [output]
        check_outputs(model, [final_name(b) if final_name else b for b in out_paths], force)
        pending: list[AtomicOutputFile] = []
        try:
            with interruptible():
                reports = []
                if work is not None:
                    start_phase(progress, phase, sum(work(src) for src in model.files))
                for src, a, b in zip(model.files, model.paths, out_paths):
                    report, out = produce(src, a, b)
                    reports.append(report)
                    pending.append(out)
                if finish is not None:
                    finish(reports, pending)
                # all or none, and without --force never in place of a file that appeared
                commit_all(pending, replace=force)
        except BaseException:
            for out in pending:
                out.abort()
            raise
    return reports


def refuse_repacked_input(src: GGUFFile, path: str) -> None:
    """A file that already carries amx_repack.* records cannot take ours as well (duplicate keys,
    and its original would be lost): convert its original instead. One that another tool packed
    (no records) would only be copied, its packed tensors kept as they are: unpack it first."""
    ours = [k for k in src.kv if k.startswith(metadata.PREFIX)]
    if not ours:
        packed = [t for t in src.tensors if family_of_packed(t.type_id) is not None]
        if packed:
            raise ForeignPacked(
                f"{path} holds {plural(len(packed), 'tensor')} already in a packed layout "
                f"(such as '{packed[0].name}', {packed[0].type.name}) and no amx-repack records: "
                f"another tool repacked it (ik_llama.cpp's llama-quantize, say); turn "
                f"them back into plain types with a foreign unpack, then convert that")
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


def _convert_open(src: GGUFFile, input: str, output: str, selection: Selection, threads: int,
                  progress, on_warning=None, verify: bool = False,
                  untie_output: bool = False, decode_values: bool = False
                  ) -> tuple[ConvertReport, AtomicOutputFile]:
    layout = selection.layout
    report = _planned(src, input, output, selection, threads, untie_output)
    plans = report.tensors
    if layout == "none":
        return report, _copy(src, input, output, threads, progress)
    # everything of the input that is not tensor data, recorded so that unpack rebuilds it
    recorded = original.capture(src, input)
    if recorded.filler:
        report.notes.append(original.describe_filler(src, recorded.filler))
    out_layout, tensors, layout_for, digests = _output_layout(src, report, recorded)
    out = AtomicOutputFile(output, out_layout.total_size)
    try:
        if on_warning is not None:
            # said before the work, not after it (a long job's log shows them first), and only
            # once the input is accepted and the output has its space: none for a refused job
            for w in report.warnings:
                on_warning(w)
        _fill(src, input, out, out_layout, tensors, plans, layout, digests, threads, progress,
              verify, decode_values)
        header = layout_for(digests).header
        assert len(header) == out_layout.data_start
        out.pwrite(0, header)
    except BaseException as e:
        out.abort()
        if isinstance(e, VerificationFailed):
            e.report = report     # what was planned: the CLI's --json document of the refusal
        raise
    return report, out   # the caller commits once every output of the command is complete


def _output_layout(src: GGUFFile, report: ConvertReport, recorded: metadata.OriginalRecords):
    """The output file of one input file, with placeholder digests (the real ones take the same
    bytes): (its layout, per plan the input tensor its data comes from, the layout as a function
    of the digests, the digest list to fill)."""
    plans = report.tensors
    tensors = list(src.tensors)   # per plan: the input tensor its data is read from
    for p in report.added:
        # an added tensor's records are its source's: its values, type, shape and bytes
        source = src.tensor(p.added_from)
        tensors.append(source)
        recorded.shapes.append(source.shape)
        recorded.offsets.append(source.offset)
        recorded.added.append((p.name, p.added_from))

    digests = [metadata.digest_placeholder(LAYOUT_VERSION)] * len(plans)
    outputs = [OutputTensor(p.name, p.shape, p.out_type_id, p.out_nbytes) for p in plans]
    # input tensors in their data order, then the added ones
    data_order = sorted(range(len(src.tensors)), key=lambda i: src.tensors[i].offset)
    data_order += range(len(src.tensors), len(plans))

    def layout_for(digest_list):
        return plan_layout(src.version,
                           _output_metadata(src, report.layout, plans, digest_list, recorded,
                                            report.target),
                           outputs, src.alignment, data_order, src.tail_padded)

    out_layout = layout_for(digests)
    if out_layout.data_start > MAX_HEADER_BYTES:
        # its own reader (and ours) would refuse it: every output must read back
        raise InputError(f"{src.path}: the repacked header would take {out_layout.data_start:,} "
                         f"bytes (the input's and amx-repack's records): a GGUF header may take "
                         f"at most {MAX_HEADER_BYTES >> 20} MiB")
    return out_layout, tensors, layout_for, digests


def _copy(src: GGUFFile, input: str, output: str, threads: int, progress) -> AtomicOutputFile:
    """--layout none: the input file byte for byte (header, tensor data, padding, gaps and
    trailing bytes alike), read and written by position in chunks."""
    size = src.file_size
    out = AtomicOutputFile(output, size)

    def task(a: int, b: int):
        def run():
            copy_range(src.fileno(), a, out, a, b - a, input)   # in the kernel where it can
        return run
    try:
        run_tasks([(task(a, min(a + CHUNK_BYTES, size)), min(CHUNK_BYTES, size - a))
                   for a in range(0, size, CHUNK_BYTES)], threads, progress)
    except BaseException:
        out.abort()
        raise
    return out


def _planned(src: GGUFFile, input: str, output: str, selection: Selection, threads: int,
             untie_output: bool) -> ConvertReport:
    """The report of one file's conversion before any data is read, for the conversion and its
    dry run alike: the input accepted, every tensor planned, the warnings and notes of the plan."""
    if selection.layout != "none":
        refuse_repacked_input(src, input)
    report = ConvertReport(input, output, selection.layout, threads,
                           _plan_file(src, selection, untie_output), selection=selection,
                           target=selection.target)
    _explain(report)
    return report


def _plan_file(src: GGUFFile, selection: Selection, untie_output: bool) -> list[TensorPlan]:
    """What convert does with every tensor of one file, and the tensor it adds (--untie-output)."""
    plans = selection.plan(src)
    if untie_output:
        plans.append(plan_untied_output(src, plans, selection.layout, selection.overrides))
    return plans


def _explain(report: ConvertReport) -> None:
    """The report's warnings (packed despite a soft default: one per overridden code, even with
    --quiet) and notes (kept only by a soft default that an override would lift; added tensors)."""
    if report.layout == "none":
        return
    plans = report.tensors
    for p in report.added:
        report.notes.append(f"added {p.name} ({type_name(p.out_type_id)}, {p.out_nbytes:,} "
                            f"bytes): a packed copy of {p.added_from}, which stays unpacked for "
                            f"get_rows (unpack leaves it out)")
    for code in sorted({c for p in plans if p.repacked for c in p.decision.overridden}):
        group = [p for p in plans if p.repacked and code in p.decision.overridden]
        report.warnings.append(
            f"override '{code}': {plural(len(group), 'repacked tensor')} ({_names_of(group)}) that the "
            f"{report.layout} layout keeps by default ({group[0].decision.reason}"
            f"{' and similar' if len(group) > 1 else ''}): {OVERRIDE_CONSEQUENCES[code]}")
    for code in sorted({p.decision.code for p in plans if not p.repacked and p.decision.soft}):
        group = [p for p in plans if not p.repacked and p.decision.code == code]
        report.notes.append(f"{plural(len(group), 'kept tensor')} ({_names_of(group)}): "
                            f"{group[0].decision.reason}" + (" (and similar)" if len(group) > 1
                                                             else "")
                            + f"; the override '{code}' packs them anyway")
    if not report.repacked and not report.added:
        report.warnings.append(f"no tensor is eligible for the {report.layout} layout; output is "
                               f"a copy with amx-repack metadata")


def _names_of(plans: list[TensorPlan]) -> str:
    return ", ".join(p.name for p in plans[:3]) + (", ..." if len(plans) > 3 else "")


def _fill(src: GGUFFile, input: str, out: AtomicOutputFile, out_layout, tensors,
          plans: list[TensorPlan], layout: str, digests: list[str], threads: int, progress,
          verify: bool = False, decode_values: bool = False) -> None:
    """Write every tensor's data, one task per tensor, chunk by chunk through per-thread scratch
    buffers: read (pread), digest, repack, (with ``verify``: check), write (pwrite). No tensor data goes through a mapping,
    so resident memory is a few chunks per thread whatever the model size."""
    tasks = []
    read_ahead(src.fileno(), sequential=True)
    for i, (t, p) in enumerate(zip(tensors, plans)):
        s0 = src.data_start + t.offset
        d0 = out_layout.data_start + out_layout.offsets[i]
        family = FAMILIES[layout] if p.repacked else None
        tasks.append((_tensor_task(src, input, out, t, family, p.out_type_id, s0, d0, digests, i,
                                   verify, decode_values), t.nbytes))
    run_tasks(tasks, threads, progress)


def _tensor_task(src: GGUFFile, input: str, out: AtomicOutputFile, t, family, packed_type: int,
                 s0: int, d0: int, digests: list[str], i: int, verify: bool = False,
                 decode_values: bool = False):
    values = (verify and decode_values and family is not None
              and family.can_dequantize(packed_type))

    def run():
        h = new_digest(digest_of_version(LAYOUT_VERSION))
        if family is None:
            pieces = (((a, min(a + CHUNK_BYTES, t.nbytes)), None, 0)
                      for a in range(0, t.nbytes, CHUNK_BYTES))
        else:
            pieces = family.chunks(packed_type, t, CHUNK_BYTES)
        for (a, b), dst_range, rows in pieces:
            if b < t.nbytes:     # the next chunk is read from disk while this one is worked on
                read_ahead(src.fileno(), s0 + b, min(CHUNK_BYTES, t.nbytes - b))
            if family is None:
                # unchanged bytes: copied in the kernel (a clone on XFS / btrfs), then hashed as
                # the output holds them, so the digest is the output's whatever the input does
                copy_range(src.fileno(), s0 + a, out, d0 + a, b - a, input)
                h.update(original.read_at(out.fd, d0 + a, b - a, scratch("input", b - a),
                                          path=out.temp))
                advance(b - a)
                continue
            data = original.read_at(src.fileno(), s0 + a, b - a, scratch("input", b - a),
                                    path=input)
            h.update(data)
            c, d = dst_range
            packed = scratch("packed", d - c)
            if verify:
                _pack_and_check(family, packed_type, t, input, rows, a, c, data, packed, values)
            else:
                family.pack(packed_type, t.ne0, rows, data, packed)
            out.pwrite(d0 + c, packed)
            advance(b - a)
        digests[i] = h.hexdigest()
    return run


def _pack_and_check(family, packed_type: int, t, input: str, rows: int, s0: int, p0: int, data,
                    packed, values: bool) -> None:
    """convert --verify: pack a chunk piece by piece, each piece checked right after it is packed
    while its input, packed and rebuilt bytes are still in cache, by verify's checks (the same
    native code, repack/chunk_checks.py) against the input bytes still in memory."""
    unit = family.unit_rows(packed_type)
    src_row = TYPES[t.type_id].row_bytes(t.ne0)
    dst_row = TYPES[packed_type].row_bytes(t.ne0)
    step = max(1, VERIFY_PIECE_BYTES // (unit * src_row)) * unit
    rebuilt = scratch("rebuilt", min(step, rows) * src_row)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        src = data[r0 * src_row:(r0 + n) * src_row]
        dst = packed[r0 * dst_row:(r0 + n) * dst_row]
        family.pack(packed_type, t.ne0, n, src, dst)
        # no layout check: it would run the packer that just wrote dst on the same input again
        # (the bytes check alone finds every changed packed byte: tests/test_fused_checks.py)
        mismatch = family.check_chunk(packed_type, t.ne0, n, dst, src, rebuilt[:n * src_row],
                                      values, layout=False)
        if mismatch is not None:
            from .verify import describe_mismatch
            problem = describe_mismatch(mismatch, t, t.type_id, packed_type, s0 + r0 * src_row,
                                        p0 + r0 * dst_row, family)
            raise VerificationFailed(f"{input}: tensor '{t.name}' ({type_name(t.type_id)} -> "
                                     f"{TYPES[packed_type].name}): {problem}"
                                     f"; no output was written")
