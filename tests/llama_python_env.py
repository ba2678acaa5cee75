"""llama-cpp-python wheels of the runtime builds, installed the way a user installs them.

The patched wheel goes into a fresh virtual environment with ``pip install --no-deps``; what it
needs besides (numpy, typing-extensions, and amx-repack for the recipe) comes from the test
interpreter's own site-packages, added after the venv's own by a ``.pth`` line, and the two it
needs that the test extras lack (diskcache, jinja2) are installed from the package index the suite
already uses. The stock wheel (same flags, no patch) is installed with ``--target`` into a folder
that runs put first on PYTHONPATH. Both are built once per flavour by build.py (cached).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATE = ROOT / "runtime" / "llama.cpp" / "tools" / "python_generate.py"
# not in the test extras; everything else llama_cpp imports is
EXTRA_DEPENDENCIES = ["diskcache>=5.6.1", "jinja2>=2.11.3"]


@dataclass
class PythonRuntime:
    """One llama_cpp installation: the interpreter to use and what to put on PYTHONPATH."""
    python: Path
    wheel: Path
    pythonpath: list[Path]

    def env(self, extra: dict | None = None) -> dict:
        # the llama_cpp under test must win over anything the calling environment puts first
        path = [str(p) for p in self.pythonpath] + [str(ROOT)]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(path), **(extra or {})}

    def run(self, args: list, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, *args], capture_output=True, text=True,
                              errors="replace", env=self.env(env), cwd=cwd, timeout=timeout)

    def generate(self, model: Path, prompt: str, n: int, env: dict | None = None) -> dict:
        """python_generate.py's JSON plus returncode and stderr; tokens None when refused."""
        proc = self.run([GENERATE, model, prompt, "-n", str(n)], env=env)
        result = json.loads(proc.stdout) if proc.returncode == 0 else {"tokens": None}
        return {**result, "returncode": proc.returncode, "stderr": proc.stderr}


class InstallError(RuntimeError):
    """pip could not install something (the package index unreachable, most likely)."""


def _pip(python: Path, *args: str) -> None:
    proc = subprocess.run([python, "-m", "pip", "--disable-pip-version-check", "install", "--quiet",
                           *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise InstallError(f"pip install {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")


def install(patched_wheel: Path, stock_wheel: Path, where: Path) -> dict[str, PythonRuntime]:
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # addsitedir (not a bare path) so the .pth files there (an editable amx-repack) apply too
    (purelib / "zz_test_interpreter.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in sorted(ours)))
    _pip(python, "--no-deps", str(patched_wheel))
    _pip(python, *EXTRA_DEPENDENCIES)
    stock_dir = where / "stock"
    _pip(python, "--no-deps", "--target", str(stock_dir), str(stock_wheel))
    return {"patched": PythonRuntime(python, patched_wheel, []),
            "stock": PythonRuntime(python, stock_wheel, [stock_dir])}


def build_module():
    spec = importlib.util.spec_from_file_location("runtime_build", ROOT / "runtime" / "llama.cpp" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_wheels(flavours: dict[str, str]) -> dict[str, Path]:
    """{role: wheel} from build.py --python, one per flavour (each build made once, cached)."""
    build = build_module()
    return {role: build.build_python_wheel(flavour) for role, flavour in flavours.items()}
