"""The `amx-repack` command: a thin layer over the Python API.

Every error the user can cause ends as one line on stderr and exit status 2 (1 for a failed
verification, 130 for an interruption); never a traceback. Set AMX_REPACK_DEBUG=1 to see one for
an internal error.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from typing import TYPE_CHECKING

import click

from formats.layouts import DEFAULT_LAYOUT, FAMILY_TABLES, LAYOUTS, SOFT_CODES
from formats.lazy import lazy_module
from formats.text import printable

from . import __version__, runner
from .errors import (ForeignPacked, NoRecords, OutOfMemory, OutputExists, RepackError,
                     TooMuchFiller, VerificationFailed, is_out_of_memory)
from .runner import install_signal_handlers, output_committed
from .wording import plural

if TYPE_CHECKING:
    from .pipeline import ConvertReport
    from .verify import VerifyReport

# Each command imports what it runs (numpy, tqdm, the kernels) when it runs: `--help` and
# `inspect` start in a fraction of the time (pipelines inspect thousands of files).

# only for --json (json, base64, the reports' modules): imported at first use
report_json = lazy_module("repack.report_json")

PROG = "amx-repack"
# convert --target: the CPU targets of the families that have them (formats/*_layout.py)
TARGETS = {name: f.targets for name, f in FAMILY_TABLES.items() if f.targets}
THREADS_HELP = "Worker threads (default: all cores)."
DECODE_VALUES_HELP = ("Also decode every element of each repacked tensor with both float decoders "
                      "(the original's type and the packed layout) and compare the bits; about "
                      "twice the time. The default checks already fix every packed byte.")


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _table(headers: list[str], rows: list[list], right: set[int] = frozenset()) -> str:
    # every cell escaped: a tensor name, key or path from a file can hold a newline or an escape
    # sequence, which must neither break the table nor reach the terminal
    cells = [[printable(str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def fmt(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells])


class _Progress:
    """Progress on stderr, phase by phase (runner.start_phase: decompress, convert, verify,
    unpack, compress), each with its own total: a tqdm bar on a terminal; elsewhere (a log, a
    pipe) a plain line every 10% or 30 s, so a pipeline's log shows a long job is alive.
    Nothing with --quiet. Warnings go through ``warn``, which never hides them."""

    LINE_EVERY_PERCENT = 10
    LINE_EVERY_SECONDS = 30.0

    def __init__(self, quiet: bool, desc: str):
        self.quiet, self.desc = quiet, desc
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.name = None
        self.total = self.done = 0

    def phase(self, name: str, total: int) -> None:
        self._end_bar()
        self.name, self.total, self.done = name, total, 0
        self.started = self.last_line = time.monotonic()
        self.next_percent = self.LINE_EVERY_PERCENT
        if not self.quiet and self.tty:
            # created when its work starts (not before the input is opened), so the first rate
            # and ETA it shows are those of this phase
            from tqdm import tqdm
            self.bar = tqdm(total=total or None, unit="B", unit_scale=True, desc=name, leave=False)

    def __call__(self, n: int) -> None:
        if self.name is None:       # a caller that announces no phase: one of unknown size
            self.phase(self.desc, 0)
        self.done += n
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        if not self.tty:
            self._plain_line()

    def _percent(self) -> int:
        return min(100, self.done * 100 // self.total) if self.total else 0

    def _plain_line(self) -> None:
        now = time.monotonic()
        percent = self._percent()
        if not (self.total and percent >= self.next_percent) \
                and now - self.last_line < self.LINE_EVERY_SECONDS:
            return
        self.last_line = now
        # a line at each 10% step, also when one update passed several (a small model, a big
        # tensor): each step passed says what was done by then, the last one what is done now
        while self.total and self.next_percent + self.LINE_EVERY_PERCENT <= percent:
            self._write_line(self.next_percent, self.total * self.next_percent // 100, now)
            self.next_percent += self.LINE_EVERY_PERCENT
        while self.total and self.next_percent <= percent:
            self.next_percent += self.LINE_EVERY_PERCENT
        self._write_line(percent, self.done, now)

    def _write_line(self, percent: int, done: int, now: float) -> None:
        size = (f"{_human(min(done, self.total))} of {_human(self.total)}" if self.total
                else _human(done))
        sys.stderr.write(f"{PROG}: {self.name} {f'{percent}%' if self.total else '...'} "
                         f"({size}, {now - self.started:.0f} s)\n")
        sys.stderr.flush()

    def warn(self, message: str) -> None:
        line = f"warning: {printable(message)}"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)     # above the bar, which stays intact
        else:
            click.echo(line, err=True)

    def _end_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self._end_bar()


def print_convert_report(r: ConvertReport) -> None:
    """The end-of-run summary: the table on stdout; what runs the output, and notes, on stderr."""
    target = f", target {r.target}" if r.target else ""
    click.echo(f"{printable(r.input)} -> {printable(r.output)}  (layout {r.layout}{target}, "
               f"{plural(r.threads, 'thread')})")
    click.echo(_by_type_table(r))
    click.echo(f"repacked {_repacked_count(r)}; files {_human(r.file_size_in)} in, "
               f"{_human(r.file_size_out)} out; {r.seconds:.2f} s, {r.gb_per_s:.2f} GB/s")
    if r.verified:
        click.echo(f"verified: every repacked chunk unpacks to the input's bytes and decodes to "
                   f"the same float values ({plural(len(r.repacked) + len(r.added), 'tensor')})",
                   err=True)
    click.echo(f"runtime: the {r.layout} layout is read by {r.runtime}", err=True)
    for n in r.notes:
        click.echo(f"note: {printable(n)}", err=True)


class _StdoutClosed(Exception):
    """The reader of stdout went away (``amx-repack inspect F | head -1``): not a failure."""


class _Group(click.Group):
    def invoke(self, ctx):
        # click's own EPIPE handling exits 1, the status that means "mismatch": take it over
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _StdoutClosed() from None


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered for the closed pipe is dropped
    silently when the interpreter flushes it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def cli():
    """Repack GGUF quantized weights offline into the layout CPU kernels consume."""


def _json_out(document: dict) -> None:
    click.echo(report_json.dumps(document))


def _by_type_table(r: ConvertReport) -> str:
    """Tensor bytes per type pair: the input's tensors, then each pair of added tensors on a row
    of its own (no bytes in: the input has no such tensor)."""
    rows = [[a, b, n, _human(bi), _human(bo)] for a, b, n, bi, bo in r.by_type()]
    rows += [[f"{a} (added)", b, n, "-", _human(bo)] for a, b, n, _, bo in r.by_type(added=True)]
    return _table(["input type", "output type", "tensors", "bytes in", "bytes out"], rows,
                  {2, 3, 4})


def _repacked_count(r: ConvertReport) -> str:
    """'45 of 236 tensors (and 1 added)': the input's tensors, then those convert adds."""
    added = f" (and {len(r.added)} added)" if r.added else ""
    return f"{len(r.repacked)} of {plural(len(r.tensors) - len(r.added), 'tensor')}{added}"


def print_plan(r: ConvertReport) -> None:
    """convert --dry-run: every tensor's target type or the reason (code and text) it stays."""
    rows = [[p.name, printable_type(p.type_id),
             printable_type(p.out_type_id) if p.repacked else "keep",
             p.decision.code or ("added" if p.added_from else ""),
             f"a packed copy of {p.added_from}" if p.added_from else p.decision.reason,
             _human(p.nbytes), _human(p.out_nbytes)]
            for p in r.tensors]
    click.echo(_table(["tensor", "type", "target", "code", "reason", "bytes in", "bytes out"],
                      rows, {5, 6}))
    click.echo("")
    click.echo(_by_type_table(r))
    target = f", target {r.target}" if r.target else ""
    click.echo(f"dry run, nothing written: {printable(r.input)} -> "
               f"{', '.join(printable(o) for o in r.outputs)} (layout {r.layout}{target}) would repack "
               f"{_repacked_count(r)}; tensor data {_human(r.bytes_in)} in, "
               f"{_human(r.bytes_out)} out")
    for n in r.notes:
        click.echo(f"note: {printable(n)}", err=True)


# Address space that loading numpy (and its OpenBLAS, one thread) takes, with a margin: ~75 MB
NUMPY_ADDRESS_SPACE = 128 << 20


def need_memory_for_numpy() -> None:
    """Before a command loads numpy: OpenBLAS, loaded with it, ends the process with exit 1 when
    it cannot have its memory (under ulimit -v), which no handler can turn into our one line. So
    the room is reserved once and given back (address space only, nothing touched)."""
    from .address_space import can_reserve
    if not can_reserve(NUMPY_ADDRESS_SPACE):
        raise OutOfMemory(f"out of memory (less than {NUMPY_ADDRESS_SPACE >> 20} MiB of address "
                          f"space left to load numpy: see ulimit -v)")


def printable_type(type_id: int) -> str:
    from formats.ggml_types import type_name
    return type_name(type_id)


@cli.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path())   # a folder: our one-line refusal
@click.option("--layout", type=click.Choice(LAYOUTS), default=DEFAULT_LAYOUT, show_default=True,
              help="; ".join(f"{name}: {f.summary}" for name, f in FAMILY_TABLES.items())
                   + "; none: plain copy.")
@click.option("--target", default=None,
              type=click.Choice(list(dict.fromkeys(t for ts in TARGETS.values() for t in ts))),
              help="The CPU the file is made for, for "
                   + "; ".join(f"--layout {name}: {', '.join(ts)}" for name, ts in TARGETS.items())
                   + " (auto, the default: this machine's CPU).")
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None,
              help=THREADS_HELP)
@click.option("--include", multiple=True, metavar="REGEX",
              help="Only repack tensors whose name matches (repeatable). Only narrows the "
                   "selection: never packs a tensor a default keeps. Must match some tensor.")
@click.option("--exclude", multiple=True, metavar="REGEX",
              help="Never repack tensors whose name matches (repeatable). Must match some tensor.")
@click.option("--override", "overrides", multiple=True, metavar="CODE",
              help="Pack despite the soft default CODE (repeatable; "
                   + "; ".join(f"{k}: {', '.join(v)}" for k, v in SOFT_CODES.items())
                   + "). A warning names every tensor it packs, even with --quiet. The embedding "
                     "and shape rules cannot be overridden.")
@click.option("--allow-amx-n16", "allow_amx_n16", is_flag=True,
              help="Same as --override shape_n: amx: also pack tensors whose ne1 is a multiple of "
                   "16 but not of 32, which llama.cpp's AMX backend does not run.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (per tensor: target type or why it stays; byte totals) and "
                   "write nothing; refuses what the conversion would refuse.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document on stdout instead of the summary (docs/json.md).")
@click.option("--untie-output", "untie_output", is_flag=True,
              help="amx: for a model whose output matrix is its token_embd.weight (no "
                   "output.weight), also write an AMX-packed copy of it as output.weight, so "
                   "llama.cpp packs nothing at load. The file grows by that tensor; unpack "
                   "removes it. Only for architectures whose llama.cpp loader takes a separate "
                   "output.weight.")
@click.option("--compress", is_flag=True,
              help="Write OUTPUT.zst (multi-threaded zstd stream) instead of OUTPUT. An OUTPUT "
                   "named .zst is always written compressed.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--verify", "verify_output", is_flag=True,
              help="Prove every repacked chunk while it is in memory with verify's checks "
                   "(unpack back to the input's bytes, which finds any changed packed byte); on "
                   "a mismatch exit 1 and write nothing.")
@click.option("--decode-values", is_flag=True, help="With --verify: " + DECODE_VALUES_HELP)
@click.option("--quiet", "-q", is_flag=True,
              help="No progress and no summary (warnings are still printed).")
def convert(input, output, layout, target, threads, include, exclude, overrides, allow_amx_n16,
            untie_output, dry_run, as_json, compress, force, verify_output, decode_values, quiet):
    """Convert INPUT.gguf into OUTPUT.gguf with its weights repacked."""
    if decode_values and not verify_output:
        raise click.UsageError("--decode-values is a check of --verify; give both")
    need_memory_for_numpy()
    from .pipeline import convert as convert_file
    progress = _Progress(quiet or dry_run, "convert")
    try:
        # warnings as they arise (from the plan, before the work), even with --quiet
        report = convert_file(input, output, layout=layout, threads=threads, include=include,
                              exclude=exclude, force=force, progress=progress,
                              compress=compress, allow_amx_n16=allow_amx_n16,
                              overrides=overrides, dry_run=dry_run, on_warning=progress.warn,
                              verify=verify_output, untie_output=untie_output, target=target,
                              decode_values=decode_values)
    except VerificationFailed as e:
        if as_json and e.report is not None:   # exit 1 still has its document (docs/json.md)
            _json_out(report_json.refusal_document("convert", e, input))
        raise
    finally:
        progress.close()
    if as_json:
        _json_out(report_json.convert_document(report))
    elif dry_run:
        print_plan(report)
    elif not quiet:
        print_convert_report(report)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(file, as_json):
    """Show every tensor of FILE and what each layout would do with it."""
    from .inspect import inspect as inspect_file
    r = inspect_file(file)
    if as_json:
        _json_out(report_json.inspect_document(r))
        return
    click.echo(f"{printable(r.path)}: GGUF v{r.version}, {plural(len(r.tensors), 'tensor')}, "
               f"{plural(r.metadata_count, 'metadata key')}, {_human(r.file_size)}, alignment {r.alignment}"
               + (f", {len(r.shards)} shards" if len(r.shards) > 1 else ""))
    if r.repacked_by:
        by = {k: printable(str(v)) for k, v in r.repacked_by.items()}   # values from the file
        target = f", target {by['target']}" if r.repacked_by.get("target") else ""
        click.echo(f"repacked by amx-repack {by['tool_version']}: layout {by['layout']} "
                   f"v{by['layout_version']}{target}, read by {by['runtime']}")
        for name, source in r.repacked_by["added_tensors"].items():
            click.echo(f"added by convert --untie-output: {printable(name)}, a packed copy of "
                       f"{printable(source)} (not in the original; unpack removes it)")
    rows = []
    for t in r.tensors:
        cells = [t.name + (" (added)" if t.added_from else ""), t.type + (f" (was {t.original_type})" if t.original_type else ""),
                 "x".join(map(str, t.shape)), t.bytes, t.offset]
        for d in t.layouts.values():
            cells.append(d["target"] if d["packs"] else f"keep: {d['reason']}")
        rows.append(cells)
    click.echo(_table(["tensor", "type", "shape", "bytes", "offset", *r.runtimes], rows, {3, 4}))
    click.echo("")
    for family, runtime in r.runtimes.items():
        click.echo(f"{family} layout runs in: {runtime}")
    for family, load in r.upstream_at_load.items():
        if load["target"] is None:
            click.echo(f"{family}: this machine is none of its targets: stock llama.cpp repacks "
                       f"nothing at load here (the {family} column: as if for no target)")
        else:
            click.echo(f"{family}: this machine is {load['target']}: stock llama.cpp repacks "
                       f"{plural(load['tensors'], 'tensor')} ({_human(load['bytes'])}) of this "
                       f"file at load, into a second, private copy (the {family} column: into "
                       f"what, or why not); convert --layout {family} writes them packed, read "
                       f"in place")
    click.echo("")
    summary = [[k, v["tensors"], v["bytes"], f"{100 * v['bytes'] / max(1, r.file_size):.1f}%"]
               for k, v in r.bytes_by_type().items()]
    click.echo(_table(["type", "tensors", "bytes", "share"], summary, {1, 2, 3}))


# added to the note of a file whose digests do not resist a forger (repack/anchor.py)
_WEAK_HINT = {"verify": " (give --original-sha256)", "unpack": " (give --expect-sha256)"}


def print_verify_report(r: VerifyReport, show_all: bool) -> None:
    rows = [[t.name, t.status, t.type_before, t.type_after, t.bytes, "+".join(t.checks), t.detail]
            for t in r.tensors if show_all or not t.ok]
    if rows:
        click.echo(_table(["tensor", "status", "before", "after", "bytes", "checks", "detail"], rows,
                          {4}))
    for problem in r.metadata_problems:
        click.echo(f"metadata: {printable(problem)}")
    for c in r.sha256_checks:
        restored = c["restored"] or "not rebuilt (the file fails the checks above)"
        click.echo(f"sha256 of the original rebuilt from {printable(c['file'])}: {restored}, "
                   f"expected {c['expected']}"
                   + ("" if c["restored"] == c["expected"] else " (MISMATCH)"))
    for n in r.notes:
        click.echo(f"note: {printable(n)}{_WEAK_HINT['verify']}", err=True)
    packed = sum(1 for t in r.tensors if t.type_before != t.type_after)
    verdict = "EQUIVALENT" if r.ok else "MISMATCH"
    against = (f"against {printable(r.original)}" if r.original
               else f"against its recorded {r.digest} digests")
    if r.sha256_checks:
        against += " and the original's sha256"
    click.echo(f"{verdict}: {printable(r.repacked)} {against}; {plural(len(r.tensors), 'tensor')} ({packed} repacked), "
               f"{len(r.failures)} failing, {plural(len(r.metadata_problems), 'metadata problem')}, "
               f"{r.seconds:.2f} s")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None,
              help=THREADS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--verbose", "-v", "--all", "show_all", is_flag=True,
              help="List every tensor (without it: only the failing ones, on a terminal or not).")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option("--original-sha256", "original_sha256", multiple=True, metavar="HEX",
              help="The original file's published sha256 (one per shard, in order): also prove "
                   "that the original rebuilt from REPACKED hashes to it (streamed; nothing "
                   "written). Holds against a forger, not only against corruption.")
@click.option("--decode-values", is_flag=True, help=DECODE_VALUES_HELP)
def verify(files, threads, as_json, show_all, quiet, original_sha256, decode_values):
    """Prove REPACKED equals ORIGINAL: verify [ORIGINAL] REPACKED.

    Exit status 0 when equivalent, 1 on any mismatch, 2 on bad input."""
    if len(files) > 2:
        raise click.UsageError("give REPACKED, or ORIGINAL and REPACKED")
    need_memory_for_numpy()
    original, repacked = (None, files[0]) if len(files) == 1 else files
    progress = _Progress(quiet or as_json, "verify")
    try:
        from .verify import verify as verify_file
        report = verify_file(original, repacked, threads=threads, progress=progress,
                             original_sha256=original_sha256 or None,
                             decode_values=decode_values)
    finally:
        progress.close()
    try:
        if as_json:
            _json_out(report_json.verify_document(report))
        else:
            print_verify_report(report, show_all)
    finally:
        if not report.ok:
            sys.exit(1)     # a mismatch stays one, even when the reader of stdout went away


@cli.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path())   # a folder: our one-line refusal
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None,
              help=THREADS_HELP)
@click.option("--foreign", is_flag=True,
              help="INPUT has no amx-repack records (e.g. ik_llama.cpp's llama-quantize --repack "
                   "wrote it): turn its packed tensors back into plain types, keeping its "
                   "metadata. Not byte-identical to any original; verify proves the values.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document on stdout instead of the summary (docs/json.md).")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display and no summary.")
@click.option("--expect-sha256", "expect_sha256", multiple=True, metavar="HEX",
              help="The original file's published sha256 (one per shard, in order): the file "
                   "written must hash to it, else exit 1 and nothing is written. Holds against a "
                   "forger, not only against corruption.")
def unpack(input, output, threads, foreign, as_json, force, quiet, expect_sha256):
    """Rebuild the original file (byte-identical) from a repacked INPUT."""
    need_memory_for_numpy()
    progress = _Progress(quiet, "unpack")
    try:
        from .unpack import unpack as unpack_file
        r = unpack_file(input, output, threads=threads, force=force, progress=progress,
                        foreign=foreign, expect_sha256=expect_sha256 or None)
    except VerificationFailed as e:
        if as_json:     # exit 1 still has its document (docs/json.md)
            _json_out(report_json.refusal_document("unpack", e, input))
        raise
    finally:
        progress.close()
    for w in r.warnings:
        click.echo(f"warning: {printable(w)}", err=True)
    if r.foreign:   # what the output is not: said even with --quiet
        for n in r.notes:
            click.echo(f"note: {printable(n)}", err=True)
    if as_json:
        _json_out(report_json.unpack_document(r))
        return
    if not quiet:
        click.echo(f"{printable(r.input)} -> {printable(r.output)}: {r.unpacked} of {plural(r.tensors, 'tensor')} unpacked, "
                   f"{_human(r.bytes_out)}, {r.seconds:.2f} s"
                   + ("" if r.byte_identical else " (plain types; not byte-identical to an "
                      "original)"))
        if not r.foreign:
            for n in r.notes:
                hint = _WEAK_HINT["unpack"] if n in r.weak_notes else ""
                click.echo(f"note: {printable(n)}{hint}", err=True)
    else:   # what the proof does not cover: said even with --quiet
        for n in r.weak_notes:
            click.echo(f"note: {printable(n)}{_WEAK_HINT['unpack']}", err=True)


@cli.command()
@click.option("--keep", type=click.Path(file_okay=False), default=None,
              help="Write the demo files into this folder (default: a temporary folder).")
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None,
              help=THREADS_HELP)
def demo(keep, threads):
    """Build a small model with every supported source type, convert, verify and unpack it."""
    need_memory_for_numpy()
    import shutil
    import tempfile

    from .demo import run_demo
    folder = keep or tempfile.mkdtemp(prefix="amx-repack-demo-")
    try:
        model, rows = run_demo(folder, threads)
        click.echo(f"demo model: {_human(model.stat().st_size)}, every supported source type, "
                   f"2-D and 3-D (expert) tensors" + (f", in {printable(folder)}" if keep else ""))
        table = [[r.layout, f"{r.repacked}/{r.tensors}", f"{r.convert_s:.2f}", r.verify,
                  "yes" if r.unpack_identical else "NO", len(r.types.split(", "))] for r in rows]
        click.echo(_table(["layout", "repacked", "convert s", "verify", "unpack == original",
                           "packed types"], table, {5}))
        for r in rows:
            click.echo(f"{r.layout}: {r.types}")
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    if not all(r.verify == "equivalent" and r.unpack_identical for r in rows):
        sys.exit(1)


@cli.command()
@click.argument("plan", type=click.Path())
@click.option("--layout", "layouts", multiple=True, type=click.Choice(LAYOUTS),
              help="For a folder PLAN: the layout of each job (repeat for several; default amx).")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="For a folder PLAN: where the outputs go (same subfolders, NAME-LAYOUT.gguf).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Jobs at once (default: the cores shared out, see --threads).")
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None,
              help="Threads per job (default: the cores divided by the jobs at once).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None,
              metavar="[ADDRESS]", help="Run each job as a Ray task on the cluster at ADDRESS "
              "(alone: the cluster this machine belongs to; 'local': a new one here).")
@click.option("--report", type=click.Path(dir_okay=False),
              help="Write the JSON-lines report (one line per job) to this file.")
@click.option("--json", "as_json", is_flag=True, help="The JSON-lines report on stdout, no table.")
@click.option("--force", is_flag=True,
              help="Replace existing outputs that are not verifiable amx-repack outputs.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def batch(plan, layouts, out_dir, jobs, threads, ray_address, report, as_json, force, quiet):
    """Convert every job of PLAN (a JSON-lines file, or a folder of models), each with --verify.

    A job whose output exists and verifies is skipped, so a re-run resumes. Exit status 0 when
    every job succeeded, 1 when one failed, 2 for a bad plan (nothing run), 130 interrupted."""
    from .batch import batch as run_batch

    if os.path.isdir(plan):
        if out_dir is None:
            raise click.UsageError("a folder PLAN needs --out-dir")
        layouts = layouts or ("amx",)
    elif layouts or out_dir is not None:
        raise click.UsageError("--layout and --out-dir apply to a folder PLAN; a plan file "
                               "names each job's layout and output")

    def progress_line(line: str) -> None:
        click.echo(f"{PROG}: {printable(line)}", err=True)

    def job_line(r) -> None:
        if not quiet:
            said = r.error if r.error else f"{_human(r.bytes_out)} in {r.seconds:.1f} s"
            click.echo(f"{PROG}: {r.status}: {printable(r.output)} ({printable(said)})", err=True)

    result = run_batch(plan, layouts=layouts, out_dir=out_dir, jobs=jobs, threads=threads,
                       force=force, ray=ray_address, on_job=job_line,
                       on_progress=None if quiet else progress_line)
    if report is not None:
        from .batch import write_report
        write_report(report, result.results)
    if as_json:
        import json
        for r in result.results:
            click.echo(json.dumps(r.document(), ensure_ascii=False))
    else:
        rows = [[r.status, f"{r.seconds:.1f}", _human(r.bytes_in), _human(r.bytes_out),
                 r.error if r.error else r.output] for r in result.results]
        click.echo(_table(["status", "s", "in", "out", "output or error"], rows, right={1, 2, 3}))
        counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n)
        click.echo(f"{plural(len(result.results), 'job')}: {counts} in {result.seconds:.1f} s "
                   f"({result.backend}: {plural(result.parallel_jobs, 'job')} at once, "
                   f"{plural(result.threads_per_job, 'thread')} each)", err=True)
    if result.interrupted:
        click.echo(f"{PROG}: interrupted", err=True)
        sys.exit(130)
    if not result.ok:
        sys.exit(1)


def _flag_hint(e: RepackError) -> str:
    if isinstance(e, OutputExists):
        return " (use --force to replace it)"
    if isinstance(e, (NoRecords, ForeignPacked)):
        return " (use unpack --foreign)"
    if isinstance(e, TooMuchFiller):
        return " (--layout none copies it as it is)"
    return ""


def main(argv=None) -> None:
    """The command line. A closed stdout (a pipe whose reader has exited) ends the command quietly:
    exit 0, as coreutils do, or the status it had already decided (verify's 1 for a mismatch)."""
    try:
        _main(argv)
        sys.stdout.flush()
    except (BrokenPipeError, _StdoutClosed):
        _discard_stdout()
        sys.exit(0)
    except SystemExit:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _discard_stdout()
        raise


def _main(argv) -> None:
    # Disk quotas (RLIMIT_FSIZE) must surface as EFBIG errors, not kill the process.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # SIGTERM like Ctrl-C from the start (exit 130, one line), and neither of them turns a command
    # whose output is already committed into an "interrupted" one (runner.py).
    install_signal_handlers()
    # temporary files of dead runs, removed beside an output: said on stderr, even with --quiet
    runner.on_stale_temporary = lambda message: click.echo(f"warning: {printable(message)}",
                                                           err=True)
    try:
        cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(f"{PROG}: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.message = printable(e.message)   # it may quote a path holding a newline
        e.show()
        sys.exit(e.exit_code)
    except RepackError as e:
        # one line, even when the message quotes a tensor name holding a newline; the API's
        # messages name no flag, so the one that helps is added here
        click.echo(f"{PROG}: error: {printable(str(e))}{_flag_hint(e)}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo(f"{PROG}: interrupted", err=True)
        sys.exit(130)
    except (BrokenPipeError, _StdoutClosed):
        raise                   # main: not a failure
    except Exception as e:
        _unexpected(e)
    if output_committed():
        # The output is in place and the command succeeded: a signal arriving while the interpreter
        # shuts down (which resets Python-level handlers) must not turn that into a kill.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _unexpected(e: Exception) -> None:
    """One line and its exit status for what no RepackError covers."""
    if is_out_of_memory(e):
        # a limit (ulimit -v, a cgroup) or a full machine: the user's to change, like disk space
        detail = ("a worker thread could not be started" if isinstance(e, RuntimeError)
                  else str(e).strip() or "an allocation failed")
        click.echo(f"{PROG}: error: out of memory ({printable(detail)})", err=True)
        sys.exit(2)
    if isinstance(e, OSError):
        click.echo(f"{PROG}: error: {printable(str(e.strerror or e))}"
                   + (f": {printable(os.fsdecode(e.filename))}" if getattr(e, "filename", None)
                      else ""), err=True)
        sys.exit(2)
    if os.environ.get("AMX_REPACK_DEBUG"):   # a bug: still one line, the traceback on request
        raise e
    click.echo(f"{PROG}: internal error: {type(e).__name__}: {printable(str(e))} "
               f"(set AMX_REPACK_DEBUG=1 for a traceback)", err=True)
    sys.exit(3)
