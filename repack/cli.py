"""The `amx-repack` command: a thin layer over the Python API.

Every error the user can cause ends as one line on stderr and exit status 2 (1 for a failed
verification, 130 for an interruption); never a traceback. Set AMX_REPACK_DEBUG=1 to see one for
an internal error.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import click
from tqdm import tqdm

from formats.gguf_container import printable
from formats.layouts import AMX_N16_OPTION

from . import __version__, atomic
from .errors import RepackError
from .inspect import inspect as inspect_file
from .pipeline import LAYOUTS, ConvertReport, convert as convert_file
from .runner import install_signal_handlers, output_committed
from .unpack import unpack as unpack_file
from .verify import VerifyReport, verify as verify_file

PROG = "amx-repack"


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
    """tqdm in bytes on a terminal; silent otherwise or with --quiet."""

    def __init__(self, total: int, quiet: bool, desc: str):
        self.bar = None
        if not quiet and sys.stderr.isatty():
            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def print_convert_report(r: ConvertReport) -> None:
    """The end-of-run summary: the table on stdout; what runs the output, and notes, on stderr."""
    click.echo(f"{printable(r.input)} -> {printable(r.output)}  (layout {r.layout}, {r.threads} threads)")
    rows = [[a, b, n, _human(bi), _human(bo)] for a, b, n, bi, bo in r.by_type()]
    click.echo(_table(["input type", "output type", "tensors", "bytes in", "bytes out"], rows,
                      {2, 3, 4}))
    added = f" (and {len(r.added)} added)" if r.added else ""
    click.echo(f"repacked {len(r.repacked)} of {len(r.tensors) - len(r.added)} tensors{added}; "
               f"{_human(r.bytes_in)} in, "
               f"{_human(r.bytes_out)} out, {r.seconds:.2f} s, {r.gb_per_s:.2f} GB/s")
    click.echo(f"runtime: the {r.layout} layout is read by {r.runtime}", err=True)
    for n in r.notes:
        click.echo(f"note: {printable(n)}", err=True)


def print_warnings(r: ConvertReport) -> None:
    """Warnings go to stderr even with --quiet."""
    for w in r.warnings:
        click.echo(f"warning: {printable(w)}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def cli():
    """Repack GGUF quantized weights offline into the layout CPU kernels consume."""


@cli.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path())   # a folder: our one-line refusal
@click.option("--layout", type=click.Choice(LAYOUTS), default="amx", show_default=True,
              help="amx: llama.cpp AMX VNNI tiles; interleaved: ik_llama.cpp _R4/_R8 types; "
                   "none: plain copy.")
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None,
              help="Worker threads (default: all cores).")
@click.option("--include", multiple=True, metavar="REGEX",
              help="Only repack tensors whose name matches (repeatable); also overrides the soft "
                   "defaults (embeddings, runtime row multiples) for matching tensors.")
@click.option("--exclude", multiple=True, metavar="REGEX",
              help="Never repack tensors whose name matches (repeatable).")
@click.option(AMX_N16_OPTION, "allow_amx_n16", is_flag=True,
              help="amx: also pack tensors whose row count ne1 is a multiple of 16 but not of 32. "
                   "The format holds them, but llama.cpp will not run such tensors on AMX (its "
                   "AMX backend needs ne1 % 32 == 0); a warning names every use.")
@click.option("--untie-output", "untie_output", is_flag=True,
              help="amx: for a model whose output matrix is its token_embd.weight (no "
                   "output.weight), also write an AMX-packed copy of it as output.weight, so "
                   "llama.cpp packs nothing at load. The file grows by that tensor; unpack "
                   "removes it. Only for architectures whose llama.cpp loader takes a separate "
                   "output.weight.")
@click.option("--compress", is_flag=True,
              help="Write OUTPUT.zst (multi-threaded zstd stream) instead of OUTPUT.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bar and no summary (warnings are still printed).")
def convert(input, output, layout, threads, include, exclude, allow_amx_n16, untie_output,
            compress, force, quiet):
    """Convert INPUT.gguf into OUTPUT.gguf with its weights repacked."""
    progress = _Progress(_input_size(input), quiet, "convert")
    try:
        report = convert_file(input, output, layout=layout, threads=threads, include=include,
                              exclude=exclude, force=force, progress=progress,
                              compress=compress, allow_amx_n16=allow_amx_n16,
                              untie_output=untie_output)
    finally:
        progress.close()
    if not quiet:
        print_convert_report(report)
    print_warnings(report)


def _input_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(file, as_json):
    """Show every tensor of FILE and what each layout would do with it."""
    r = inspect_file(file)
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
        return
    click.echo(f"{printable(r.path)}: GGUF v{r.version}, {len(r.tensors)} tensors, {r.metadata_count} "
               f"metadata keys, {_human(r.file_size)}, alignment {r.alignment}"
               + (f", {len(r.shards)} shards" if len(r.shards) > 1 else ""))
    if r.repacked_by:
        by = {k: printable(str(v)) for k, v in r.repacked_by.items()}   # values from the file
        click.echo(f"repacked by amx-repack {by['tool_version']}: layout {by['layout']} "
                   f"v{by['layout_version']}, read by {by['runtime']}")
        for name, source in r.repacked_by["added_tensors"].items():
            click.echo(f"added by convert --untie-output: {printable(name)}, a packed copy of "
                       f"{printable(source)} (not in the original; unpack removes it)")
    rows = []
    for t in r.tensors:
        cells = [t.name + (" (added)" if t.added_from else ""), t.type + (f" (was {t.original_type})" if t.original_type else ""),
                 "x".join(map(str, t.shape)), t.bytes, t.offset]
        for family in ("amx", "interleaved"):
            d = t.layouts[family]
            cells.append(d["target"] if d["packs"] else f"keep: {d['reason']}")
        rows.append(cells)
    click.echo(_table(["tensor", "type", "shape", "bytes", "offset", "amx", "interleaved"], rows,
                      {3, 4}))
    click.echo("")
    for family, runtime in r.runtimes.items():
        click.echo(f"{family} layout runs in: {runtime}")
    click.echo("")
    summary = [[k, v["tensors"], v["bytes"], f"{100 * v['bytes'] / max(1, r.file_size):.1f}%"]
               for k, v in r.bytes_by_type().items()]
    click.echo(_table(["type", "tensors", "bytes", "share"], summary, {1, 2, 3}))


def print_verify_report(r: VerifyReport, show_all: bool) -> None:
    rows = [[t.name, t.status, t.type_before, t.type_after, t.bytes, "+".join(t.checks), t.detail]
            for t in r.tensors if show_all or not t.ok]
    if rows:
        click.echo(_table(["tensor", "status", "before", "after", "bytes", "checks", "detail"], rows,
                          {4}))
    for problem in r.metadata_problems:
        click.echo(f"metadata: {printable(problem)}")
    packed = sum(1 for t in r.tensors if t.type_before != t.type_after)
    verdict = "EQUIVALENT" if r.ok else "MISMATCH"
    against = f"against {printable(r.original)}" if r.original else "against its recorded digests"
    click.echo(f"{verdict}: {printable(r.repacked)} {against}; {len(r.tensors)} tensors ({packed} repacked), "
               f"{len(r.failures)} failing, {len(r.metadata_problems)} metadata problems, "
               f"{r.seconds:.2f} s")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None,
              help="Worker threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--all", "show_all", is_flag=True, help="List every tensor, not only failures.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def verify(files, threads, as_json, show_all, quiet):
    """Prove REPACKED equals ORIGINAL: verify [ORIGINAL] REPACKED.

    Exit status 0 when equivalent, 1 on any mismatch, 2 on bad input."""
    if len(files) > 2:
        raise click.UsageError("give REPACKED, or ORIGINAL and REPACKED")
    original, repacked = (None, files[0]) if len(files) == 1 else files
    progress = _Progress(_input_size(repacked), quiet or as_json, "verify")
    try:
        report = verify_file(original, repacked, threads=threads, progress=progress)
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_verify_report(report, show_all or sys.stdout.isatty() and len(report.tensors) < 50)
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path())   # a folder: our one-line refusal
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def unpack(input, output, threads, force, quiet):
    """Rebuild the original file (byte-identical) from a repacked INPUT."""
    progress = _Progress(_input_size(input), quiet, "unpack")
    try:
        r = unpack_file(input, output, threads=threads, force=force, progress=progress)
    finally:
        progress.close()
    if not quiet:
        click.echo(f"{printable(r.input)} -> {printable(r.output)}: {r.unpacked} of {r.tensors} tensors unpacked, "
                   f"{_human(r.bytes_out)}, {r.seconds:.2f} s")
        for n in r.notes:
            click.echo(f"note: {printable(n)}", err=True)


@cli.command()
@click.option("--keep", type=click.Path(file_okay=False), default=None,
              help="Write the demo files into this folder (default: a temporary folder).")
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None)
def demo(keep, threads):
    """Build a small model with every supported source type, convert, verify and unpack it."""
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


def main(argv=None) -> None:
    # Disk quotas (RLIMIT_FSIZE) must surface as EFBIG errors, not kill the process.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # SIGTERM like Ctrl-C from the start (exit 130, one line), and neither of them turns a command
    # whose output is already committed into an "interrupted" one (runner.py).
    install_signal_handlers()
    # temporary files of dead runs, removed beside an output: said on stderr, even with --quiet
    atomic.on_stale_temporary = lambda message: click.echo(f"warning: {printable(message)}",
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
        # one line, even when the message quotes a tensor name holding a newline
        click.echo(f"{PROG}: error: {printable(str(e))}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo(f"{PROG}: interrupted", err=True)
        sys.exit(130)
    except OSError as e:
        click.echo(f"{PROG}: error: {printable(str(e.strerror or e))}"
                   + (f": {printable(os.fsdecode(e.filename))}" if getattr(e, "filename", None)
                      else ""), err=True)
        sys.exit(2)
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("AMX_REPACK_DEBUG"):
            raise
        click.echo(f"{PROG}: internal error: {type(e).__name__}: {printable(str(e))} "
                   f"(set AMX_REPACK_DEBUG=1 for a traceback)", err=True)
        sys.exit(3)
    if output_committed():
        # The output is in place and the command succeeded: a signal arriving while the interpreter
        # shuts down (which resets Python-level handlers) must not turn that into a kill.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
