"""Where the shared spec and golden vectors live (override with AMX_REPACK_SHARED), and what a
test does when they are missing: fail under CI (a run that silently skips the byte-exactness
checks proves nothing), skip with a reason that says where they are expected elsewhere."""
import os
from pathlib import Path

import pytest

SHARED_DIR = Path(os.environ.get("AMX_REPACK_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
GOLDEN_DIR = SHARED_DIR / "golden"
GOLDEN_MISSING_ID = "golden-vectors-missing"


def missing_golden(path: Path) -> None:
    """Fail (CI set) or skip, naming where the vectors are expected."""
    reason = (f"golden vectors not found: {path} (expected in ../shared/golden beside the "
              f"checkout, or in $AMX_REPACK_SHARED/golden)")
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def golden_file(name: str) -> Path:
    """The path of a golden-vector file; fails or skips the calling test when it is missing."""
    path = GOLDEN_DIR / name
    if not path.exists():
        missing_golden(path)
    return path


def golden_cases(name: str, cases) -> list:
    """Parameters for one test per golden case: ``cases(path)`` lists them. When the file is
    missing, a single parameter whose test fails or skips (via ``golden_file``), instead of
    pytest's silent "got empty parameter set"."""
    path = GOLDEN_DIR / name
    if not path.exists():
        # conftest.pytest_runtest_setup fails or skips it before any fixture runs
        return [pytest.param(None, id=GOLDEN_MISSING_ID, marks=pytest.mark.golden_missing(path))]
    return cases(path)


def pinned_llama_cpp_sdist() -> Path:
    """The pinned llama-cpp-python sdist (its vendor/llama.cpp is the upstream source the runtime
    patch and the oracles are pinned to), fetched once by runtime/llama.cpp/build.py; fails (CI
    set) or skips the calling test when it cannot be fetched."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "runtime_build", Path(__file__).resolve().parents[1] / "runtime" / "llama.cpp" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    try:
        return build.fetch_sdist()
    except build.BuildError as e:
        if os.environ.get("CI"):
            pytest.fail(f"cannot fetch the pinned llama.cpp source: {e}", pytrace=False)
        pytest.skip(f"cannot fetch the pinned llama.cpp source: {str(e).splitlines()[0]}")
