"""amx-repack batch: a catalogue converted locally and on a Ray cluster, resumed, interrupted.

Every good job's output is proven with pair verify against its own input (not only the batch's
word for it); a bad input is reported and the other jobs still complete; a re-run skips what is
done; SIGTERM leaves no output and the next run redoes the job; on Ray, the same plan gives the
same bytes, and a worker killed mid-job is retried to a correct output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import repack
from tests.conftest import amx_repack_cli, stderr_lines
from tests.synthetic import big_model_tensors, sha256, small_model_tensors, write_model
from tests.test_split_moe import write_moe_model

POLL_TIMEOUT = 120


def _report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _compress(src: Path, dst: Path) -> Path:
    import zstandard
    with open(src, "rb") as f, open(dst, "wb") as out:
        zstandard.ZstdCompressor(level=1, write_content_size=True).copy_stream(
            f, out, size=src.stat().st_size)
    return dst


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, gemma_path):
    """A folder of models: Gemma (real), two synthetic ones (one in a subfolder), a split MoE model,
    a .gguf.zst, and one file that is no model at all."""
    folder = tmp_path_factory.mktemp("catalogue")
    os.symlink(gemma_path, folder / "gemma.gguf")
    write_model(folder / "small.gguf", small_model_tensors(), seed=3)
    (folder / "sub").mkdir()
    write_model(folder / "sub" / "other.gguf", small_model_tensors(), seed=4)
    write_moe_model(folder / "moe.gguf", split_max_tensors=4)
    plain = write_model(folder / "packed.gguf", small_model_tensors(), seed=5)
    _compress(plain, folder / "zipped.gguf.zst")
    plain.unlink()
    (folder / "broken.gguf").write_bytes(b"GGUF" + b"\xff" * 60)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


EXPECTED = {   # input (relative) -> output (relative to --out-dir) for --layout amx
    "gemma.gguf": "gemma-amx.gguf",
    "small.gguf": "small-amx.gguf",
    "sub/other.gguf": "sub/other-amx.gguf",
    "moe-00001-of-00003.gguf": "moe-amx-00001-of-00003.gguf",
    "zipped.gguf.zst": "zipped-amx.gguf",
    "broken.gguf": "broken-amx.gguf",
}


def test_local_batch_converts_reports_and_resumes(catalogue, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    proc = amx_repack_cli("batch", catalogue, "--out-dir", out, "--report", report)
    assert proc.returncode == 1, proc.stderr            # one bad input: the batch failed
    lines = {os.path.relpath(r["input"], catalogue): r for r in _report(report)}
    assert {k: os.path.relpath(v["output"], out) for k, v in lines.items()} == EXPECTED
    bad = lines.pop("broken.gguf")
    assert bad["status"] == "failed" and bad["exit_code"] == 2 and "broken.gguf" in bad["error"]
    assert not (out / "broken-amx.gguf").exists()
    for rel, r in lines.items():
        assert r["status"] == "converted", r
        written = Path(EXPECTED[rel])
        shards = sorted((out / written.parent).glob(written.name.replace("-00001-of-", "-*-of-")))
        assert r["bytes_out"] == sum(p.stat().st_size for p in shards) > 0
        verdict = repack.verify(catalogue / rel, out / EXPECTED[rel])
        assert verdict.ok, (rel, verdict.verdict)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.gguf")}
    # the summary counts what happened, on stderr; the table on stdout names every output
    assert "6 jobs: 5 converted, 1 failed" in proc.stderr
    assert all(os.fspath(out / rel) in proc.stdout for rel in list(EXPECTED.values())[:-1])

    again = amx_repack_cli("batch", catalogue, "--out-dir", out, "--json", "-q")
    assert again.returncode == 1
    statuses = {os.path.relpath(json.loads(line)["input"], catalogue): json.loads(line)["status"]
                for line in again.stdout.splitlines()}
    assert statuses == {rel: "failed" if rel == "broken.gguf" else "skipped" for rel in EXPECTED}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.gguf")} == stamps   # nothing rewritten


def test_damaged_output_is_redone_foreign_file_is_kept(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    write_model(models / "a.gguf", small_model_tensors(), seed=6)
    write_model(models / "b.gguf", small_model_tensors(), seed=7)
    out = tmp_path / "out"
    assert amx_repack_cli("batch", models, "--out-dir", out, "-q").returncode == 0
    # a.gguf's output damaged (one byte of tensor data): verify fails, the job is redone
    damaged = out / "a-amx.gguf"
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0x55
    damaged.write_bytes(data)
    # b.gguf's output replaced by a file that is not ours: never replaced without --force
    foreign = out / "b-amx.gguf"
    foreign.write_bytes(b"precious data of someone else")
    proc = amx_repack_cli("batch", models, "--out-dir", out, "--json", "-q")
    assert proc.returncode == 1
    results = {Path(json.loads(line)["input"]).name: json.loads(line) for line in proc.stdout.splitlines()}
    assert results["a.gguf"]["status"] == "redone"
    assert repack.verify(models / "a.gguf", damaged).ok
    assert results["b.gguf"]["status"] == "failed" and "not replaced" in results["b.gguf"]["error"]
    assert foreign.read_bytes() == b"precious data of someone else"
    proc = amx_repack_cli("batch", models, "--out-dir", out, "--json", "-q", "--force")
    assert proc.returncode == 0, proc.stdout
    assert repack.verify(models / "b.gguf", foreign).ok


def test_plan_file_jobs_options_and_api_callback(tmp_path):
    write_model(tmp_path / "m.gguf", small_model_tensors(), seed=8)
    plan = tmp_path / "plan.jsonl"
    plan.write_text(
        json.dumps({"input": "m.gguf", "output": "o/m-il.gguf", "layout": "interleaved"}) + "\n\n"
        + json.dumps({"input": "m.gguf", "output": "o/m-amx.gguf", "exclude": "ffn_up",
                      "compress": True}) + "\n"
        + json.dumps({"input": "m.gguf", "output": "o/m-cpu.gguf", "layout": "cpu-repack",
                      "target": "arm-i8mm"}) + "\n")
    seen = []
    report = repack.batch(plan, on_job=seen.append)
    assert report.ok and [r.status for r in report.results] == ["converted"] * 3
    cpu = repack.inspect(tmp_path / "o" / "m-cpu.gguf")
    assert (cpu.repacked_by["layout"], cpu.repacked_by["target"]) == ("cpu-repack", "arm-i8mm")
    assert repack.verify(tmp_path / "m.gguf", tmp_path / "o" / "m-cpu.gguf").ok
    assert sorted(r.output for r in seen) == sorted(r.output for r in report.results)
    assert repack.verify(tmp_path / "m.gguf", tmp_path / "o" / "m-il.gguf").ok
    compressed = tmp_path / "o" / "m-amx.gguf.zst"
    assert compressed.exists() and not (tmp_path / "o" / "m-amx.gguf").exists()
    assert repack.verify(tmp_path / "m.gguf", compressed).ok
    types = {t.name: t.type for t in repack.inspect(compressed).tensors}
    assert types["blk.0.ffn_up.weight"] == "q8_0"          # --exclude went through
    assert types["blk.0.ffn_down.weight"].startswith("amx_")
    # resumed: the compressed output is found under its .zst name
    assert [r.status for r in repack.batch(plan).results] == ["skipped"] * 3


@pytest.mark.parametrize("content, needle", [
    ('{"input": "a.gguf"', "plan.jsonl:1: not valid JSON"),
    ('{"input": "a.gguf", "output": "b.gguf", "colour": "red"}', "unknown key 'colour'"),
    ('{"input": "a.gguf", "output": "b.gguf", "layout": "tiles"}', "'layout' must be one of"),
    ('{"input": "a.gguf", "output": "b.gguf", "compress": "yes"}', "'compress' must be true or false"),
    ('{"input": "a.gguf", "output": "b.gguf"}\n{"input": "c.gguf", "output": "b.gguf"}',
     "plan.jsonl:2: writes"),
    ('{"input": "a.gguf", "output": "b.gguf"}\n{"input": "b.gguf", "output": "c.gguf"}',
     "reads"),
    ("", "holds no job"),
])
def test_bad_plans_are_refused_before_anything_runs(tmp_path, content, needle):
    plan = tmp_path / "plan.jsonl"
    plan.write_text(content)
    proc = amx_repack_cli("batch", plan)
    assert proc.returncode == 2
    [line] = stderr_lines(proc.stderr)
    assert line.startswith("amx-repack: error: ") and needle in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.jsonl"]


def test_folder_options_need_a_folder(tmp_path):
    plan = tmp_path / "plan.jsonl"
    plan.write_text('{"input": "a.gguf", "output": "b.gguf"}\n')
    proc = amx_repack_cli("batch", plan, "--out-dir", tmp_path)
    assert proc.returncode == 2 and "apply to a folder PLAN" in proc.stderr
    proc = amx_repack_cli("batch", tmp_path)
    assert proc.returncode == 2 and "needs --out-dir" in proc.stderr


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bigbatch")
    write_model(folder / "big.gguf", big_model_tensors(160 << 20), seed=9)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _wait_for(predicate, proc=None, timeout=POLL_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(0.02)
    return None


def test_sigterm_leaves_no_output_and_the_rerun_redoes_the_job(big_folder, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "repack", "batch", str(big_folder), "--out-dir",
                             str(out), "-t", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # the job's convert is writing its temporary output
    started = _wait_for(lambda: out.is_dir() and [p for p in out.iterdir()
                                                  if ".amx-repack-tmp-" in p.name], proc)
    assert started, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=POLL_TIMEOUT)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout and list(out.iterdir()) == [], list(out.iterdir())
    again = amx_repack_cli("batch", big_folder, "--out-dir", out, "--json", "-q")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "converted"
    assert repack.verify(big_folder / "big.gguf", out / "big-amx.gguf").ok


# ------------------------------------------------------------------------------------------
# Ray: a local cluster started by the test on 127.0.0.1, stopped however the test ends


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'amx-repack[ray]')")
    ray_cli = Path(sys.executable).parent / "ray"
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    # The test cluster runs on this machine only, for the length of the module: Ray's token
    # authentication is off for it and for the batches that connect to it (they inherit this)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH")]))
    start = subprocess.run([str(ray_cli), "start", "--head", "--node-ip-address", "127.0.0.1",
                            "--port", str(port), "--num-cpus", "2", "--include-dashboard=false",
                            "--disable-usage-stats", "--temp-dir", str(temp)],
                           capture_output=True, text=True, env=env, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], capture_output=True, env=env, timeout=120)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_ray_batch_gives_the_local_bytes(ray_cluster, catalogue, tmp_path):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    amx_repack_cli("batch", catalogue, "--out-dir", local, "-q")
    proc = amx_repack_cli("batch", catalogue, "--out-dir", on_ray, "--ray", ray_cluster, "--json", "-q")
    assert proc.returncode == 1, proc.stderr                  # the broken input, as locally
    results = {os.path.relpath(json.loads(line)["input"], catalogue): json.loads(line)
               for line in proc.stdout.splitlines()}
    assert results.pop("broken.gguf")["status"] == "failed"
    assert {r["status"] for r in results.values()} == {"converted"}
    written = sorted(p.relative_to(on_ray) for p in on_ray.rglob("*.gguf"))
    assert written == sorted(p.relative_to(local) for p in local.rglob("*.gguf"))
    for rel in written:
        assert sha256(on_ray / rel) == sha256(local / rel), rel


def test_ray_refuses_paths_a_worker_cannot_read(ray_cluster, tmp_path):
    plan = tmp_path / "plan.jsonl"
    plan.write_text(json.dumps({"input": "/nonexistent/shared/m.gguf", "output": "o.gguf"}) + "\n")
    proc = amx_repack_cli("batch", plan, "--ray", ray_cluster)
    assert proc.returncode == 2
    [line] = [l for l in stderr_lines(proc.stderr) if l.startswith("amx-repack:")]
    assert "cannot read /nonexistent/shared/m.gguf" in line and "storage all workers see" in line
    assert not (tmp_path / "o.gguf").exists()


def _job_process_under_ray() -> int | None:
    """The pid of a Ray worker running one of our jobs' convert process (its parent)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"repack" not in cmdline or b"convert" not in cmdline:
                continue
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent.startswith(b"ray::"):
            return ppid
    return None


def test_ray_worker_killed_mid_job_is_retried(ray_cluster, big_folder, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "repack", "batch", str(big_folder), "--out-dir",
                             str(out), "--ray", ray_cluster, "--json", "-q", "-t", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = _wait_for(_job_process_under_ray, proc)
    assert worker, proc.communicate()
    os.kill(worker, signal.SIGKILL)              # the worker dies; its convert dies with it
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["status"] == "converted"
    assert repack.verify(big_folder / "big.gguf", out / "big-amx.gguf").ok
    assert [p.name for p in out.iterdir()] == ["big-amx.gguf"]     # no temporary left behind
