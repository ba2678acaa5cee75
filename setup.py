# The native kernels are cffi extensions compiled at install time; setuptools needs this hook
# (``cffi_modules`` has no pyproject.toml spelling). Everything else is in pyproject.toml.
# One module per native/<name>.c with its native/<name>.h: native/build_native.py's FAMILIES.
import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent / "native"))
from build_native import FAMILIES  # noqa: E402

setup(cffi_modules=[f"native/build_native.py:{name}_ffi" for name in FAMILIES])
