"""A new user's common mistakes (issue 21), each run as a user would run it: one clear line, the
documented exit status, nothing written, and the hint that gets them going."""

from __future__ import annotations

import re

import pytest

from tests.conftest import amx_repack_cli, stderr_lines
from tests.synthetic import fingerprint, write_model

TENSORS = [("blk.0.attn_q.weight", "q4_0", (64, 64)), ("blk.0.ffn_up.weight", "q8_0", (64, 96))]


@pytest.fixture
def plain(tmp_path):
    return write_model(tmp_path / "plain.gguf", TENSORS)


@pytest.fixture
def repacked(tmp_path, plain):
    out = tmp_path / "amx.gguf"
    amx_repack_cli("convert", "-q", plain, out, check=True)
    return out


def one_error_line(proc, status: int = 2) -> str:
    lines = stderr_lines(proc.stderr)
    assert proc.returncode == status and len(lines) == 1, (proc.returncode, proc.stderr)
    assert lines[0].startswith("amx-repack: error: ") and "Traceback" not in proc.stderr
    return lines[0]


# --- item 4: verify with its two files the other way round ---

def test_verify_with_the_files_swapped_says_so_in_one_line(plain, repacked):
    before = fingerprint(plain), fingerprint(repacked)
    line = one_error_line(amx_repack_cli("verify", repacked, plain))
    assert "other way round" in line
    # the command it suggests is the right one, and it passes
    suggested = line.split("verify takes the original first: ")[1]
    assert suggested == f"verify {plain} {repacked}"
    proc = amx_repack_cli(*suggested.split())
    assert proc.returncode == 0 and "EQUIVALENT" in proc.stdout
    assert (fingerprint(plain), fingerprint(repacked)) == before


def test_verify_reports_another_type_as_a_type_mismatch(tmp_path, plain):
    # the same tensor names and shapes, another quantization of one of them
    other = write_model(tmp_path / "other.gguf",
                        [("blk.0.attn_q.weight", "q8_0", (64, 64)), TENSORS[1]])
    other_amx = tmp_path / "other-amx.gguf"
    amx_repack_cli("convert", "-q", other, other_amx, check=True)
    proc = amx_repack_cli("verify", plain, other_amx)
    assert proc.returncode == 1
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("blk.0.attn_q.weight")]
    assert row.split()[1] == "mismatch"
    assert "type differs: original is q4_0 [64, 64], repacked decodes to q8_0 [64, 64]" in row
    assert "MISMATCH" in proc.stdout.splitlines()[-1]


# --- item 5: unpack of a plain model ---

@pytest.mark.parametrize("foreign", [False, True])
def test_unpack_of_a_plain_model_has_nothing_to_unpack(tmp_path, plain, foreign):
    out = tmp_path / "out.gguf"
    line = one_error_line(amx_repack_cli("unpack", *(["--foreign"] if foreign else []),
                                         plain, out))
    assert line == (f"amx-repack: error: {plain} holds no packed tensor and no amx-repack "
                    f"records: it is a plain model already, with nothing to unpack")
    assert not out.exists() and list(tmp_path.iterdir()) == [plain]


# --- item 6: convert of a file another tool already repacked ---

@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_convert_refuses_a_file_ik_repacked_and_points_to_unpack_foreign(tmp_path, layout):
    ik_file = write_model(tmp_path / "ik.gguf", [("blk.0.attn_q.weight", "q4_0_r8", (64, 64)),
                                                 ("blk.0.ffn_up.weight", "q8_0", (64, 96))])
    before = fingerprint(ik_file)
    for extra in ([], ["--dry-run"]):
        line = one_error_line(amx_repack_cli("convert", "--layout", layout, *extra, ik_file,
                                             tmp_path / "out.gguf"))
        assert "holds 1 tensor already in a packed layout (such as 'blk.0.attn_q.weight', " \
               "q4_0_r8) and no amx-repack records" in line
        assert line.endswith("(use unpack --foreign)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ik.gguf"]
    assert fingerprint(ik_file) == before
    # what it suggests works: unpack --foreign, then convert that
    plain = tmp_path / "plain.gguf"
    amx_repack_cli("unpack", "-q", "--foreign", ik_file, plain, check=True)
    amx_repack_cli("convert", "-q", "--layout", layout, plain, tmp_path / "out.gguf", check=True)
    # a plain copy stays possible
    amx_repack_cli("convert", "-q", "--layout", "none", ik_file, tmp_path / "copy.gguf",
                   check=True)
    assert fingerprint(tmp_path / "copy.gguf")[0] == before[0]


# --- item 8: one rule for threads, one for the code of a packed tensor ---

@pytest.mark.parametrize("threads", [0, -1, "x", 1.5, True])
def test_threads_is_at_least_1_or_none_in_every_function(tmp_path, plain, repacked, threads):
    import repack
    calls = {"convert": lambda: repack.convert(plain, tmp_path / "o.gguf", threads=threads),
             "verify": lambda: repack.verify(plain, repacked, threads=threads),
             "unpack": lambda: repack.unpack(repacked, tmp_path / "u.gguf", threads=threads)}
    for name, call in calls.items():
        with pytest.raises(repack.UsageError) as e:
            call()
        assert str(e.value) == (f"threads must be a whole number of at least 1, or None for "
                                f"every CPU (got {threads!r})"), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amx.gguf", "plain.gguf"]
    # the command line's rule is the same: --threads 0 is refused, exit 2, nothing written
    proc = amx_repack_cli("convert", "--threads", "0", plain, tmp_path / "o.gguf")
    assert proc.returncode == 2 and "0 is not in the range x>=1" in proc.stderr
    assert not (tmp_path / "o.gguf").exists()
    report = repack.convert(plain, tmp_path / "o.gguf", threads=None)
    assert report.threads >= 1


def test_inspect_and_convert_json_agree_on_codes(tmp_path):
    import json
    # one tensor packed by default, one kept (embedding), one kept by its type
    model = write_model(tmp_path / "m.gguf", [("token_embd.weight", "q8_0", (64, 64)),
                                              ("blk.0.attn_q.weight", "q4_0", (64, 64)),
                                              ("blk.0.attn_norm.weight", "f32", (64,))])
    inspected = json.loads(amx_repack_cli("inspect", "--json", model, check=True).stdout)
    converted = json.loads(amx_repack_cli("convert", "--json", "--dry-run", model,
                                          tmp_path / "o.gguf", check=True).stdout)
    by_inspect = {t["name"]: t["layouts"]["amx"] for t in inspected["tensors"]}
    by_convert = {t["name"]: t for t in converted["tensors"]}
    assert by_inspect["blk.0.attn_q.weight"]["packs"]
    for name, t in by_convert.items():
        assert by_inspect[name]["code"] == t["code"], name
        assert by_inspect[name]["reason"] == t["reason"], name
    assert by_convert["blk.0.attn_q.weight"]["code"] is None
    assert by_convert["token_embd.weight"]["code"] == "embedding"
    assert by_convert["blk.0.attn_norm.weight"]["code"] == "type"


# --- item 9: a plain progress line at each 10% step ---

PROGRESS = re.compile(r"^amx-repack: (\w+) (\d+)% \(([\d.]+) (\w+) of ([\d.]+) (\w+), \d+ s\)$")


def steps_of(stderr: str, phase: str) -> list[int]:
    percents = [int(m[2]) for m in map(PROGRESS.match, stderr.splitlines()) if m and m[1] == phase]
    assert percents == sorted(percents) and percents[-1] == 100, percents
    return percents


def assert_every_step(percents: list[int]) -> None:
    """A line in each 10% band: 10-19, 20-29, ... 90-99, then 100."""
    assert {p // 10 for p in percents} >= set(range(1, 11)), percents


@pytest.mark.parametrize("options", [[], ["--verify"], ["--untie-output"],
                                     ["--layout", "interleaved"]])
def test_gemma_progress_has_a_line_at_each_10_percent_step(gemma_path, tmp_path, options):
    out = tmp_path / "o.gguf"
    proc = amx_repack_cli("convert", *options, gemma_path, out, check=True)
    assert_every_step(steps_of(proc.stderr, "convert"))
    if options == ["--untie-output"]:
        assert_every_step(steps_of(amx_repack_cli("verify", gemma_path, out, check=True).stderr,
                                   "verify"))
        assert_every_step(steps_of(amx_repack_cli("unpack", out, tmp_path / "u.gguf",
                                                  check=True).stderr, "unpack"))


def test_one_tensor_model_still_has_a_line_at_each_step(tmp_path):
    # one task that ends in one update: the steps it passed are each said, with what was done
    # by then, and the last line is the real total
    model = write_model(tmp_path / "one.gguf", [("blk.0.attn_q.weight", "q4_0", (32, 32))])
    proc = amx_repack_cli("convert", model, tmp_path / "o.gguf", check=True)
    percents = steps_of(proc.stderr, "convert")
    assert percents == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


# --- item 10: the summary says file sizes, added tensors on their own row, where runtimes are ---

def test_summary_gives_file_sizes_and_added_tensors_on_their_own_row(tmp_path):
    import json
    import os
    from repack.cli import _human
    model = write_model(tmp_path / "m.gguf", [("token_embd.weight", "q8_0", (64, 64)),
                                              ("blk.0.attn_q.weight", "q8_0", (64, 64))])
    out = tmp_path / "o.gguf"
    proc = amx_repack_cli("convert", "--untie-output", model, out, check=True)
    lines = proc.stdout.splitlines()
    assert f"files {_human(os.path.getsize(model))} in, {_human(os.path.getsize(out))} out;" \
        in lines[-1]
    import repack
    size_in = {t.name: t.bytes for t in repack.inspect(model).tensors}
    size_out = {t.name: t.bytes for t in repack.inspect(out).tensors}
    rows = [line.split() for line in lines if line.startswith("q8_0")]
    assert rows == [
        f"q8_0 amx_q8_0 1 {_human(size_in['blk.0.attn_q.weight'])} "
        f"{_human(size_out['blk.0.attn_q.weight'])}".split(),
        f"q8_0 q8_0 1 {_human(size_in['token_embd.weight'])} "          # kept for get_rows
        f"{_human(size_out['token_embd.weight'])}".split(),
        f"q8_0 (added) amx_q8_0 1 - {_human(size_out['output.weight'])}".split()]
    doc = json.loads(amx_repack_cli("convert", "--json", "--force", "--untie-output", model, out,
                                    check=True).stdout)
    assert doc["file_size_in"] == os.path.getsize(model)
    assert doc["file_size_out"] == os.path.getsize(out)
    added = [row for row in doc["by_type"] if row["added"]]
    assert added == [{"input_type": "q8_0", "output_type": "amx_q8_0", "tensors": 1,
                      "bytes_in": 0, "bytes_out": doc["tensors"][-1]["bytes_out"], "added": True}]
    assert sum(row["bytes_out"] for row in doc["by_type"]) == doc["bytes_out"]
    dry = json.loads(amx_repack_cli("convert", "--json", "--dry-run", model, tmp_path / "d.gguf",
                                    check=True).stdout)
    assert dry["file_size_in"] == os.path.getsize(model) and dry["file_size_out"] is None


def test_convert_and_inspect_say_where_the_runtimes_come_from(plain, tmp_path):
    proc = amx_repack_cli("convert", plain, tmp_path / "o.gguf", check=True)
    assert "python runtime/llama.cpp/build.py" in proc.stderr
    assert "amx-repack's source, repository or sdist" in proc.stderr
    proc = amx_repack_cli("convert", "--layout", "interleaved", plain, tmp_path / "r.gguf",
                          check=True)
    assert "pip install 'amx-repack[ik]', then python -m repack.ik_generate FILE" in proc.stderr
    text = amx_repack_cli("inspect", plain, check=True).stdout
    assert "python runtime/llama.cpp/build.py" in text and "python -m repack.ik_generate" in text


# --- item 2: the runtime build says at once that a CPU without AMX cannot use it ---

def test_runtime_build_on_a_cpu_without_amx_says_so_at_once(tmp_path):
    import os
    import subprocess
    import sys
    import time
    from tests.conftest import ROOT
    cpuinfo = tmp_path / "cpuinfo"     # a CPU like this one: AVX-512 VNNI, no AMX
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n\n")
    env = {**os.environ, "AMX_REPACK_CPUINFO": str(cpuinfo),
           "AMX_REPACK_CACHE": str(tmp_path / "cache")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "runtime" / "llama.cpp" / "build.py")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert time.monotonic() - started < 30            # not after minutes of building
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and proc.stdout == "", proc
    assert lines[0].startswith("runtime build: error: this CPU has no AMX (no amx_tile or "
                               f"amx_int8 flag in {cpuinfo})")
    assert "convert with --layout cpu-repack and build with --native" in lines[0]
    assert "--layout interleaved" in lines[0] and "python -m repack.ik_generate" in lines[0]
    assert "--emulate-amx is a slow build for the tests" in lines[0]
    assert not (tmp_path / "cache").exists()          # nothing fetched, nothing built


def runtime_readme_refusals() -> list[list[str]]:
    """The fenced blocks of runtime/llama.cpp/README.md's "Without AMX" paragraph: what the
    runtime prints when it refuses an amx file."""
    from tests.conftest import ROOT
    text = (ROOT / "runtime" / "llama.cpp" / "README.md").read_text()
    section = text.split("**Without AMX**", 1)[1].split("\n### ", 1)[0]
    return [block.strip("\n").splitlines() for block in re.findall(r"```\n(.*?)```", section, re.S)]


def test_runtime_readme_quotes_the_refusal_the_patch_prints():
    """The quoted lines are the patch's own format string, rendered for the tensor they name, in
    both of its variants (CPU without AMX; build without AMX support), under the name of the
    function it is in (ggml prints __func__ first)."""
    from tests.conftest import ROOT
    patch = (ROOT / "runtime" / "llama.cpp" / "patches" /
             "0001-ggml-run-AMX-prepacked-weights-in-place.patch").read_text()
    at = patch.index("is packed for Intel AMX")
    function = re.findall(r"^@@ .* @@ .*?(\w+)\(", patch[:at], re.M)[-1]
    # the refusal: one GGML_LOG_ERROR whose format string takes the reason (`why`) and the operand
    call = patch[patch.rindex("GGML_LOG_ERROR(", 0, at):]
    call = call[:call.index(");")]
    literals = [bytes(s, "ascii").decode("unicode_escape") for s in re.findall(r'"((?:[^"\\]|\\.)*)"', call)]
    fmt = "".join(literals)
    assert fmt.endswith("\n"), literals
    # the two reasons a matrix multiplication's packed weight is refused: no AMX on this CPU, no
    # AMX in this build
    block = patch[patch.rindex("#if defined(__AMX_INT8__)", 0, at):at]
    variants = [v for v in re.findall(r'why = "([^"]*)"', block)]
    assert len(variants) == 2, block
    quoted = runtime_readme_refusals()
    first_lines = [block[0] for block in quoted]
    assert len(first_lines) == 2
    for line, variant in zip(first_lines, variants):
        name, type_name = re.search(r"tensor '([^']+)' is packed for Intel AMX \((\w+)\)", line).groups()
        assert line + "\n" == fmt % (function, name, type_name, variant, 0, "MUL_MAT")
    assert function == "ggml_backend_cpu_device_supports_op"
