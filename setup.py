# The native kernels are cffi extensions compiled at install time; setuptools needs this hook
# (``cffi_modules`` has no pyproject.toml spelling). Everything else is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["native/build_native.py:amx_ffi", "native/build_native.py:interleaved_ffi",
                     "native/build_native.py:blocks_ffi", "native/build_native.py:checksum_ffi",
                     "native/build_native.py:verify_ffi", "native/build_native.py:gguf_scan_ffi"])
