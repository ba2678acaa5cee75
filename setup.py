# The native kernels are cffi extensions compiled at install time; setuptools needs this hook
# (``cffi_modules`` has no pyproject.toml spelling). Everything else is in pyproject.toml.
# One module per native/<name>.c with its native/<name>.h (native/build_native.py's FAMILIES).
from pathlib import Path

from setuptools import setup

setup(cffi_modules=[f"native/build_native.py:{c.stem}_ffi"
                    for c in sorted(Path(__file__).resolve().parent.glob("native/*.c"))
                    if c.with_suffix(".h").exists()])
