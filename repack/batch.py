"""batch: convert a catalogue of models, resumably, on this machine or on a Ray cluster.

A *plan* is a list of jobs (input, output, layout, convert options), read from a JSON-lines file or
made from a folder of models. Every job is one ``amx-repack convert --verify`` in a process of its
own (``python -m repack``), so a job has the command line's guarantees as they are: atomic output,
one-line errors with their exit status, SIGTERM unwinding cleanly. Before converting, a job whose
output exists and passes standalone ``verify`` is skipped, so running a plan again resumes it.

Locally, jobs run in a pool of worker threads, each waiting on its own ``convert`` process; the
cores are split between parallel jobs and the threads of each job, never oversubscribed. With Ray,
every job is a Ray task (Ray schedules, retries a task whose worker died, and places it where its
CPUs are free); the job's process dies with the worker (PR_SET_PDEATHSIG), so a retried task never
races a leftover of its first attempt. Paths must then name storage every worker sees (a shared
filesystem): the plan is refused, before any task starts, when a node cannot read an input or
write an output folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from formats.layouts import LAYOUTS

from .errors import Interrupted, UsageError

# plan keys besides input/output/layout, and the convert flag each becomes
_FLAG_OPTIONS = {"untie_output": "--untie-output", "compress": "--compress",
                 "allow_amx_n16": "--allow-amx-n16"}
_LIST_OPTIONS = {"include": "--include", "exclude": "--exclude", "override": "--override"}
_STRING_OPTIONS = {"target": "--target"}
PLAN_KEYS = ("input", "output", "layout", *_STRING_OPTIONS, *_FLAG_OPTIONS, *_LIST_OPTIONS)

_SHARD = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_PROGRESS = re.compile(r"^amx-repack: (?P<phase>[a-z]+) (?P<percent>\d+%|\.\.\.) \((?P<rest>.*)\)$")
_ERROR = re.compile(r"^amx-repack: (?P<kind>error|internal error): (?P<message>.*)$")
STATUSES = ("converted", "redone", "skipped", "failed", "interrupted")


@dataclass(frozen=True)
class Job:
    """One conversion of the plan. ``options``: convert options by plan key (see PLAN_KEYS)."""

    input: str
    output: str
    layout: str = "amx"
    options: tuple = ()           # ((key, value), ...) so that a Job stays hashable
    where: str = ""               # where the plan gave it ("plan.jsonl:3"), for messages

    def convert_args(self) -> list[str]:
        args = [self.input, self.output, "--layout", self.layout]
        for key, value in self.options:
            if key in _FLAG_OPTIONS and value:
                args.append(_FLAG_OPTIONS[key])
            elif key in _STRING_OPTIONS:
                args += [_STRING_OPTIONS[key], value]
            elif key in _LIST_OPTIONS:
                for item in value:
                    args += [_LIST_OPTIONS[key], item]
        return args

    def final_output(self) -> str:
        """The file that exists once the job is done (its first shard for a split model)."""
        return (self.output if self.output.endswith(".zst") or not dict(self.options).get("compress")
                else self.output + ".zst")


@dataclass
class JobResult:
    input: str
    output: str
    layout: str
    status: str                   # one of STATUSES
    seconds: float = 0.0
    bytes_in: int = 0             # the input files' sizes (every shard)
    bytes_out: int = 0            # the output files' sizes
    exit_code: int = 0            # the failing command's exit status (2 bad input, 1 mismatch...)
    error: str | None = None      # its one-line message
    node: str | None = None       # the machine that ran it

    @property
    def ok(self) -> bool:
        return self.status in ("converted", "redone", "skipped")

    def document(self) -> dict:
        return asdict(self)


@dataclass
class BatchReport:
    results: list[JobResult]
    backend: str                  # "local" or "ray"
    parallel_jobs: int
    threads_per_job: int
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.ok for r in self.results)

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}


# --------------------------------------------------------------------------------------------
# Plans


def _plan_error(where: str, message: str) -> UsageError:
    return UsageError(f"plan {where}: {message}")


def job_from_dict(entry: dict, where: str, base: str = "") -> Job:
    """A job from one plan entry; relative paths are taken from ``base`` (the plan's folder)."""
    if not isinstance(entry, dict):
        raise _plan_error(where, "each line must be a JSON object")
    unknown = sorted(set(entry) - set(PLAN_KEYS))
    if unknown:
        raise _plan_error(where, f"unknown key {unknown[0]!r} (known: {', '.join(PLAN_KEYS)})")
    for key in ("input", "output"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise _plan_error(where, f"'{key}' must be a non-empty path")
    layout = entry.get("layout", "amx")
    if layout not in LAYOUTS:
        raise _plan_error(where, f"'layout' must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    options = []
    for key in _FLAG_OPTIONS:
        if key in entry:
            if not isinstance(entry[key], bool):
                raise _plan_error(where, f"'{key}' must be true or false")
            options.append((key, entry[key]))
    for key in _STRING_OPTIONS:
        if key in entry:
            if not isinstance(entry[key], str) or not entry[key]:
                raise _plan_error(where, f"'{key}' must be a non-empty string")
            options.append((key, entry[key]))
    for key in _LIST_OPTIONS:
        if key in entry:
            value = [entry[key]] if isinstance(entry[key], str) else entry[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _plan_error(where, f"'{key}' must be a string or a list of strings")
            options.append((key, tuple(value)))
    path = lambda p: os.path.normpath(os.path.join(base, p))   # noqa: E731 (absolute p wins)
    return Job(path(entry["input"]), path(entry["output"]), layout, tuple(options), where)


def read_plan(path: str) -> list[Job]:
    """The jobs of a JSON-lines plan: one object a line (blank lines allowed)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        raise UsageError(f"cannot read plan {path}: {e.strerror}") from None
    jobs = []
    base = os.path.dirname(os.path.abspath(path))
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"{os.path.basename(path)}:{number}"
        try:
            entry = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise _plan_error(where, f"not valid JSON ({e})") from None
        jobs.append(job_from_dict(entry, where, base))
    if not jobs:
        raise UsageError(f"plan {path} holds no job")
    return jobs


def _is_model(name: str) -> bool:
    if name.startswith("."):
        return False              # hidden files, our own temporaries among them
    m = _SHARD.match(name[:-4] if name.endswith(".gguf.zst") else name)
    if m is not None and int(m["no"]) != 1:
        return False              # the first shard stands for the model
    return name.endswith(".gguf") or name.endswith(".gguf.zst")


def output_name(input_name: str, layout: str) -> str:
    """model.gguf -> model-LAYOUT.gguf; model-00001-of-00003.gguf -> model-LAYOUT-00001-of-00003.gguf;
    a .gguf.zst input gives a plain .gguf output (--compress is an option of the plan)."""
    name = input_name[:-4] if input_name.endswith(".gguf.zst") else input_name
    m = _SHARD.match(name)
    if m is not None:
        return f"{m['stem']}-{layout}-{m['no']}-of-{m['count']}.gguf"
    return f"{name[:-len('.gguf')]}-{layout}.gguf"


def plan_folder(folder: str, layouts: Iterable[str], out_dir: str, options: dict | None = None) -> list[Job]:
    """One job per model file under ``folder`` (recursively; ``out_dir`` itself left out) and
    layout, writing ``out_dir/<same subfolder>/<name>-<layout>.gguf``."""
    layouts = list(dict.fromkeys(layouts))
    if not layouts:
        raise UsageError("a folder plan needs at least one layout")
    if not os.path.isdir(folder):
        raise UsageError(f"{folder} is not a folder")
    folder, out_dir = os.path.abspath(folder), os.path.abspath(out_dir)
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if os.path.join(root, d) != out_dir and not d.startswith("."))
        for name in sorted(files):
            if _is_model(name):
                entries.append((os.path.relpath(root, folder), name))
    if not entries:
        raise UsageError(f"no .gguf or .gguf.zst model under {folder}")
    jobs = []
    for sub, name in entries:
        for layout in layouts:
            entry = {"input": os.path.join(folder, sub, name),
                     "output": os.path.join(out_dir, sub, output_name(name, layout)),
                     "layout": layout, **(options or {})}
            jobs.append(job_from_dict(entry, os.path.join(sub, name) if sub != "." else name))
    return jobs


def check_plan(jobs: list[Job]) -> None:
    """Refuse plans whose jobs would collide: two jobs writing one output, or an output that is
    another job's input."""
    outputs = {}
    for job in jobs:
        key = os.path.abspath(job.final_output())
        if key in outputs:
            raise _plan_error(job.where, f"writes {job.final_output()}, as {outputs[key]} does")
        outputs[key] = job.where
    for job in jobs:
        if os.path.abspath(job.input) in outputs:
            raise _plan_error(job.where, f"reads {job.input}, which {outputs[os.path.abspath(job.input)]} writes")


# --------------------------------------------------------------------------------------------
# One job


def _die_with_parent() -> None:
    # Linux: the job's process is killed when the thread that started it dies (a Ray worker lost
    # mid-job), so a retry never runs beside a leftover of its first attempt
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


_LINUX = sys.platform.startswith("linux")


class _Processes:
    """The job processes running now, so that an interruption can stop them all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, args: list[str]) -> subprocess.Popen:
        with self.lock:
            if self.stopping:
                raise Interrupted("interrupted")
            proc = subprocess.Popen([sys.executable, "-m", "repack", *args], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    errors="replace", preexec_fn=_die_with_parent if _LINUX else None)
            self.running.add(proc)
            return proc

    def done(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.running.discard(proc)

    def stop_all(self) -> None:
        """SIGTERM to every job process: each removes its partial output and exits 130."""
        with self.lock:
            self.stopping = True
            for proc in self.running:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass


def _run(processes: _Processes, args: list[str], on_line: Callable[[str], None] | None):
    """Run ``amx-repack ARGS``; returns (exit status, stdout, its error line or None)."""
    proc = processes.start(args)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    error = None
    try:
        for line in proc.stderr:
            line = line.rstrip("\n")
            m = _ERROR.match(line)
            if m is not None:
                error = m["message"] if m["kind"] == "error" else f"{m['kind']}: {m['message']}"
            elif on_line is not None:
                on_line(line)
        reader.join()
        status = proc.wait()
    finally:
        processes.done(proc)
    return status, "".join(out), error


def _sizes(paths: Iterable[str]) -> int:
    total = 0
    for p in paths:
        try:
            total += os.stat(p).st_size
        except OSError:
            pass
    return total


def _shards_of(path: str) -> list[str]:
    """A file, or every shard of the split model whose first shard it is (by name)."""
    m = _SHARD.match(path)
    if m is None:
        return [path]
    count = int(m["count"])
    return [f"{m['stem']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def run_job(job: Job, threads: int, force: bool = False, processes: _Processes | None = None,
            on_line: Callable[[str], None] | None = None) -> JobResult:
    """Skip the job when its output exists and verifies; else convert with --verify."""
    processes = processes or _Processes()
    started = time.monotonic()
    result = JobResult(job.input, job.output, job.layout, "failed", node=os.uname().nodename)
    convert_flags = []
    if os.path.lexists(job.final_output()):
        status, _, error = _run(processes, ["verify", job.final_output(), "--quiet", "--threads",
                                            str(threads)], None)
        if status == 0:
            result.status = "skipped"
        elif status == 1 or force:
            convert_flags = ["--force"]        # ours but damaged (or --force): redone
        elif status == 130:
            result.status, result.exit_code, result.error = "interrupted", 130, "interrupted"
        else:
            result.exit_code = status
            result.error = (f"{job.final_output()} exists and is not a verifiable amx-repack "
                            f"output ({error or f'exit {status}'}); not replaced without force")
    if result.status == "failed" and result.error is None:
        try:    # a batch makes its output folders (convert itself never creates one)
            os.makedirs(os.path.dirname(os.path.abspath(job.output)), exist_ok=True)
        except OSError as e:
            result.exit_code, result.error = 2, f"cannot create the output folder: {e.strerror}"
            result.seconds = round(time.monotonic() - started, 3)
            return result
        status, stdout, error = _run(
            processes, ["convert", *job.convert_args(), "--verify", "--json", "--threads", str(threads),
                        *convert_flags], on_line)
        if status == 0:
            document = json.loads(stdout)
            result.status = "redone" if convert_flags else "converted"
            result.bytes_in = _sizes(document.get("inputs") or [document["input"]])
            result.bytes_out = _sizes(document.get("outputs") or [document["output"]])
        else:
            result.status = "interrupted" if status == 130 else "failed"
            result.exit_code, result.error = status, error or f"convert exited with status {status}"
    if result.status == "skipped":
        result.bytes_in = _sizes(_shards_of(job.input))
        result.bytes_out = _sizes(_shards_of(job.final_output()))
    result.seconds = round(time.monotonic() - started, 3)
    return result


# --------------------------------------------------------------------------------------------
# Running a plan


def split_cores(n_jobs: int, cores: int, jobs: int | None = None, threads: int | None = None):
    """(parallel jobs, threads per job): the cores shared out, never more threads than cores
    unless asked for."""
    if jobs is None:
        jobs = max(1, min(n_jobs, cores // threads if threads else cores))
    if threads is None:
        threads = max(1, cores // jobs)
    return jobs, threads


def batch(plan, *, layouts: Iterable[str] = (), out_dir: str | None = None, jobs: int | None = None,
          threads: int | None = None, force: bool = False, ray: str | None = None,
          on_job: Callable[[JobResult], None] | None = None,
          on_progress: Callable[[str], None] | None = None) -> BatchReport:
    """Run a plan: a JSON-lines file, a folder (with ``layouts`` and ``out_dir``), or a list of
    :class:`Job` (or plan dicts). ``on_job`` is called with each finished job's result, as it
    finishes; ``on_progress`` with progress lines (the jobs' own, prefixed with the job).
    ``ray``: the address of a Ray cluster ("auto": the one this machine belongs to; "local": a
    new one on this machine), None to run here. Raises UsageError for a bad plan (nothing runs);
    a job that fails is a result, not an exception."""
    job_list = _plan_jobs(plan, layouts, out_dir)
    check_plan(job_list)
    for j in (jobs, threads):
        if j is not None and (not isinstance(j, int) or isinstance(j, bool) or j < 1):
            raise UsageError("jobs and threads must be positive integers")
    started = time.monotonic()
    if ray is not None:
        from . import batch_ray
        report = batch_ray.run(job_list, ray, threads, force, on_job, on_progress)
    else:
        report = _run_local(job_list, jobs, threads, force, on_job, on_progress)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _plan_jobs(plan, layouts, out_dir) -> list[Job]:
    if isinstance(plan, (str, os.PathLike)):
        plan = os.fspath(plan)
        if os.path.isdir(plan):
            if out_dir is None:
                raise UsageError("a folder plan needs an output folder")
            return plan_folder(plan, layouts, out_dir)
        if layouts or out_dir is not None:
            raise UsageError("layouts and an output folder apply to a folder plan, not a plan file")
        return read_plan(plan)
    jobs = [j if isinstance(j, Job) else job_from_dict(j, f"job {i + 1}") for i, j in enumerate(plan)]
    if not jobs:
        raise UsageError("the plan holds no job")
    return jobs


def _run_local(job_list, jobs, threads, force, on_job, on_progress) -> BatchReport:
    from .runner import default_threads
    parallel, per_job = split_cores(len(job_list), default_threads(), jobs, threads)
    report = BatchReport([], "local", parallel, per_job)
    processes = _Processes()
    results: dict[int, JobResult] = {}

    def job_lines(i: int, job: Job):
        if on_progress is None:
            return None
        label = f"[{i + 1}/{len(job_list)} {os.path.basename(job.input)}]"
        return lambda line: on_progress(f"{label} {_strip_prog(line)}")

    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="batch-job")
    futures = {pool.submit(run_job, job, per_job, force, processes, job_lines(i, job)): i
               for i, job in enumerate(job_list)}
    try:
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except Interrupted:
                results[i] = _interrupted(job_list[i])
            job_finished(results[i], results, len(job_list), on_job, on_progress)
    except KeyboardInterrupt:
        # SIGINT/SIGTERM: every running job removes its partial output; the rest never start
        report.interrupted = True
        processes.stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        for future, i in futures.items():
            if i not in results:
                results[i] = future.result() if future.done() and not future.cancelled() \
                    and future.exception() is None else _interrupted(job_list[i])
    finally:
        pool.shutdown(wait=True)
    report.results = [results[i] for i in range(len(job_list))]
    return report


def write_report(path: str, results: list[JobResult]) -> None:
    """The JSON-lines report, one line per job in plan order, written atomically (replacing an
    earlier report of the same name)."""
    from .atomic import AtomicOutputFile
    data = "".join(json.dumps(r.document(), ensure_ascii=False) + "\n" for r in results).encode()
    out = AtomicOutputFile(path, len(data))
    with out:
        out.pwrite(0, data)
        out.commit(replace=True)


def _interrupted(job: Job) -> JobResult:
    return JobResult(job.input, job.output, job.layout, "interrupted", exit_code=130,
                     error="interrupted")


def _strip_prog(line: str) -> str:
    return line[len("amx-repack: "):] if line.startswith("amx-repack: ") else line


def job_finished(result: JobResult, results: dict, total: int, on_job, on_progress) -> None:
    """Tell the caller of a finished job, and how far the batch is."""
    if on_job is not None:
        on_job(result)
    if on_progress is not None:
        counts = {s: sum(r.status == s for r in results.values()) for s in STATUSES}
        said = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        on_progress(f"batch {len(results) * 100 // total}% ({len(results)} of {total} jobs: {said})")
