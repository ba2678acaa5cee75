"""runtime/llama.cpp/build.py's own logic, without building: what --source copies, where the
fixes apply, and the refusals of the ARM and native flavours before anything is fetched or
compiled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT
from tests.test_llama_runtime import _build_module

BUILD_PY = ROOT / "runtime" / "llama.cpp" / "build.py"


def test_source_copy_keeps_build_named_sources(tmp_path):
    """--source DIR: a checkout's own build folders stay behind; llama.cpp's source files whose
    names start with "build" (cmake/build-info.cmake, common/build-info.cpp.in) are copied:
    without them cmake fails."""
    checkout = tmp_path / "llama.cpp"
    for path in ("CMakeLists.txt", "cmake/build-info.cmake", "common/build-info.cpp.in",
                 "build/CMakeCache.txt", "build-arm/x.o", ".git/HEAD", "ggml/.git",
                 "examples/build/keep.txt"):
        (checkout / path).parent.mkdir(parents=True, exist_ok=True)
        (checkout / path).write_text(path)
    copy = tmp_path / "copy"
    shutil.copytree(checkout, copy, ignore=_build_module().source_ignore(checkout))
    copied = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
    assert copied == ["CMakeLists.txt", "cmake/build-info.cmake", "common/build-info.cpp.in",
                      "examples/build/keep.txt"]


def test_fixes_apply_to_the_pinned_code_and_are_left_out_where_upstream_changed(tmp_path, capsys):
    """build.py's fixes (upstream bugs, applied to stock too) go where the code is as the pin has
    it; a checkout whose code there changed builds without them, with a note, not an error."""
    build = _build_module()
    assert build.FIXES, "runtime/llama.cpp/fixes/ holds the GCC 12 tile configuration fix"
    for fix in build.FIXES:
        lines = fix.read_text().splitlines()
        target = next(line[len("+++ b/"):] for line in lines if line.startswith("+++ b/"))
        hunk = lines[next(i for i, line in enumerate(lines) if line.startswith("@@")) + 1:]
        before = [line[1:] for line in hunk if line[:1] in (" ", "-")]
        after = [line[1:] for line in hunk if line[:1] in (" ", "+")]
        pinned, changed = tmp_path / "pinned" / "src", tmp_path / "changed" / "src"
        for src, text in ((pinned, before), (changed, ["// upstream rewrote this function"])):
            (src / target).parent.mkdir(parents=True, exist_ok=True)
            (src / target).write_text("\n".join(["// above"] * 5 + text + ["// below"] * 5) + "\n")
        build.apply_fixes(pinned)
        assert (pinned / target).read_text().splitlines()[5:-5] == after
        build.apply_fixes(changed)
        assert (changed / target).read_text().splitlines()[5] == "// upstream rewrote this function"
        assert f"not applying {fix.name}" in capsys.readouterr().err


def run_build_py(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BUILD_PY), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_arm_build_without_cross_compiler_is_one_line(tmp_path):
    bin_dir = tmp_path / "bin"        # a PATH with cmake and git but no aarch64 compiler
    bin_dir.mkdir()
    for tool in ("cmake", "git"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    proc = run_build_py("--arm", "dotprod", env={"PATH": str(bin_dir),
                                                  "AMX_REPACK_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "runtime build: error: aarch64-linux-gnu-g++ not found: install Debian's "
        "g++-aarch64-linux-gnu (and qemu-user to run the result)"]
    assert not (tmp_path / "cache").exists()


def test_arm_build_has_no_python_wheel(tmp_path):
    proc = run_build_py("--arm", "i8mm-sve", "--python", env={"AMX_REPACK_CACHE": str(tmp_path)})
    assert proc.returncode == 2 and "--python builds a wheel for this machine" in proc.stderr


def test_native_flavour_is_not_refused_without_amx():
    """The default flavour stops on a CPU without AMX; --native is for exactly those CPUs."""
    build = _build_module()
    native = build.FLAVOURS["native"]
    assert native["flags"][0] == "-DGGML_NATIVE=ON" and native["patched"]
    assert {"llama-cli", "llama-server"} <= set(native["targets"])
    assert "--native" in build.NO_AMX_ADVICE
