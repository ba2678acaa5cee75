"""cffi build script: one extension module per layout family.

``native/<family>.c`` with its header ``native/<family>.h`` becomes ``repack._<family>``; ``verify``
(the fused checks of verify and convert --verify) also links the kernels it runs. The header
doubles as the cffi declaration: its preprocessor lines are dropped and the rest (plain
prototypes) is given to ``cdef``. setuptools builds every family at install time (see setup.py);
``python native/build_native.py [family ...]`` builds them in place for development.

Extra compiler/linker flags come from ``AMX_REPACK_CFLAGS`` / ``AMX_REPACK_LDFLAGS`` (the sanitizer
build of the test suite uses them).
"""

import os
import shlex
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FAMILIES = ("amx", "interleaved", "blocks", "checksum", "verify")
# modules built from more than their own file: the kernels they call, linked in (their symbols
# stay private to each extension module)
LINKED = {"verify": ("amx", "interleaved", "blocks")}

CFLAGS = ["-O3", "-std=c11", "-fno-strict-aliasing", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Wno-unused-function"]


def _declarations(header: Path) -> str:
    return "\n".join(line for line in header.read_text().splitlines()
                     if not line.lstrip().startswith("#"))


def make_ffi(family: str) -> FFI:
    ffi = FFI()
    ffi.cdef(_declarations(HERE / f"{family}.h"))
    source_paths = []
    for name in (family, *LINKED.get(family, ())):
        source = HERE / f"{name}.c"
        try:  # setuptools wants paths relative to the project root
            source_paths.append(str(source.relative_to(Path.cwd())))
        except ValueError:
            source_paths.append(str(source))
    ffi.set_source(
        f"repack._{family}",
        f'#include "{family}.h"',
        sources=source_paths,
        include_dirs=[str(HERE)],
        extra_compile_args=CFLAGS + shlex.split(os.environ.get("AMX_REPACK_CFLAGS", "")),
        extra_link_args=shlex.split(os.environ.get("AMX_REPACK_LDFLAGS", "")),
    )
    return ffi


amx_ffi = make_ffi("amx")
interleaved_ffi = make_ffi("interleaved")
blocks_ffi = make_ffi("blocks")
checksum_ffi = make_ffi("checksum")
verify_ffi = make_ffi("verify")

if __name__ == "__main__":
    os.chdir(ROOT)
    for family in sys.argv[1:] or FAMILIES:
        make_ffi(family).compile(tmpdir=str(ROOT), verbose=False)
        print(f"built repack._{family}")
