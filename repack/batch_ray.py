"""batch on a Ray cluster: one Ray task per job (``pip install amx-repack[ray]``).

Ray does the scheduling: each task asks for the CPUs its job's threads use, a task whose worker
dies is retried (``max_retries``), and results come back as tasks finish. Nothing here schedules.
Every path of the plan must name storage that every worker sees (a shared filesystem): before any
task starts, one probe task per alive node checks that it can read every input and write every
output folder, and the plan is refused, naming the node and the path, when one cannot.
"""

from __future__ import annotations

import contextlib
import os
import sys

from .batch import BatchReport, Job, JobResult, job_finished, run_job, split_cores
from .errors import InputError, UsageError

TASK_RETRIES = 3          # a job whose worker died (node lost, OOM-killed) runs again, up to 3 times


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("Ray is not installed (pip install 'amx-repack[ray]')") from None
    return ray


def _connect(ray, address: str):
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if address == "local":
            ray.init(address="local", **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
    return True


def _probe(jobs: list[tuple[str, str]]) -> list[str]:
    """On one node: the paths it cannot use (inputs to read, output folders to write)."""
    problems = []
    for input, output in jobs:
        if not os.access(input, os.R_OK):
            problems.append(f"cannot read {input}")
        folder = os.path.dirname(os.path.abspath(output)) or "."
        while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)      # convert creates no folder: the nearest one
        if not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"cannot write in {folder}")
    return problems


def _check_nodes(ray, jobs: list[Job]) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    probe = ray.remote(num_cpus=0)(_probe)
    pairs = [(j.input, j.final_output()) for j in jobs]
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(pairs) for n in nodes])
    for node, problems in zip(nodes, answers):
        if problems:
            raise InputError(f"Ray node {node.get('NodeManagerAddress', node['NodeID'])} "
                             f"{problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}:"
                             f" a Ray batch needs every input and output on storage all workers see")


def _job_task(job: Job, threads: int, force: bool) -> JobResult:
    return run_job(job, threads, force)


def run(jobs: list[Job], address: str, threads: int | None, force: bool, on_job, on_progress) -> BatchReport:
    # Ray's driver prints what its cluster reports (a worker that died, a retry) on stdout, which
    # belongs to the batch's report (--json): said on stderr instead
    with contextlib.redirect_stdout(sys.stderr):
        return _run(jobs, address, threads, force, on_job, on_progress)


def _run(jobs: list[Job], address: str, threads: int | None, force: bool, on_job, on_progress) -> BatchReport:
    ray = _import_ray()
    started_here = _connect(ray, address)
    try:
        cores = int(ray.cluster_resources().get("CPU", 1))
        # one job's threads never exceed the smallest node's CPUs, or its task could not be placed
        smallest = min(int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n.get("Alive"))
        _, per_job = split_cores(len(jobs), min(cores, smallest), None, threads)
        _check_nodes(ray, jobs)
        task = ray.remote(num_cpus=per_job, max_retries=TASK_RETRIES, retry_exceptions=False)(_job_task)
        pending = {task.remote(job, per_job, force): i for i, job in enumerate(jobs)}
        results: dict[int, JobResult] = {}
        report = BatchReport([], "ray", max(1, cores // per_job), per_job)
        waiting = list(pending)
        try:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                i = pending[done[0]]
                try:
                    results[i] = ray.get(done[0])
                except ray.exceptions.RayError as e:     # retries spent, or the task failed
                    job = jobs[i]
                    results[i] = JobResult(job.input, job.output, job.layout, "failed", exit_code=3,
                                           error=f"Ray task failed: {str(e).splitlines()[0]}")
                job_finished(results[i], results, len(jobs), on_job, on_progress)
        except KeyboardInterrupt:
            report.interrupted = True
            for ref in waiting:
                ray.cancel(ref, force=True)      # the job's process dies with its worker
            for ref in waiting:
                job = jobs[pending[ref]]
                results[pending[ref]] = JobResult(job.input, job.output, job.layout, "interrupted",
                                                  exit_code=130, error="interrupted")
        report.results = [results[i] for i in range(len(jobs))]
        return report
    finally:
        if started_here:
            ray.shutdown()
