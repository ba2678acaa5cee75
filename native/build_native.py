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
FAMILIES = ("amx", "interleaved", "blocks", "checksum", "verify", "gguf_scan")
# modules built from more than their own file: the kernels they call, linked in (their symbols
# stay private to each extension module)
LINKED = {"verify": ("amx", "interleaved", "blocks", "decode_simd"),
          "amx": ("decode_simd",), "blocks": ("decode_simd",)}
# headers declared to cffi beside the module's own: simd.h for every module with decode_simd.c
EXTRA_DECLARATIONS = {"decode_simd": "simd.h"}

# -ffp-contract=off: the float decoders must round after every operation, as gguf-py does (their
# files also say so by pragma; tests/test_decode_simd.py checks the built modules hold no FMA)
CFLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall", "-Wextra",
          "-Wno-unused-parameter", "-Wno-unused-function"]


def _declarations(header: Path) -> str:
    return "\n".join(line for line in header.read_text().splitlines()
                     if not line.lstrip().startswith("#"))


def make_ffi(family: str) -> FFI:
    ffi = FFI()
    headers = [f"{family}.h", *(EXTRA_DECLARATIONS[name] for name in LINKED.get(family, ())
                                if name in EXTRA_DECLARATIONS)]
    ffi.cdef("\n".join(_declarations(HERE / header) for header in headers))
    source_paths = []
    for name in (family, *LINKED.get(family, ())):
        source = HERE / f"{name}.c"
        try:  # setuptools wants paths relative to the project root
            source_paths.append(str(source.relative_to(Path.cwd())))
        except ValueError:
            source_paths.append(str(source))
    ffi.set_source(
        f"repack._{family}",
        "\n".join(f'#include "{header}"' for header in headers),
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
gguf_scan_ffi = make_ffi("gguf_scan")

def build_in_place(family: str) -> Path:
    """Compile repack._<family> in a scratch folder and move it into repack/. Not in the project
    folder itself: cffi's compile step reads the setuptools configuration of the folder it runs
    in, and pyproject.toml's SPDX ``license`` string needs setuptools>=77, which an install gets
    from [build-system] but a development environment may not have. Renamed into place (a new
    file, not overwritten), so a process that has the old module loaded keeps a valid mapping."""
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory(prefix="amx-repack-build-") as scratch:
        previous = os.getcwd()
        os.chdir(scratch)            # sources outside it: make_ffi gives absolute paths
        try:
            built = Path(make_ffi(family).compile(tmpdir=scratch, verbose=False))
        finally:
            os.chdir(previous)
        dest = ROOT / "repack" / built.name
        temp = dest.with_name(dest.name + ".tmp")
        shutil.copy2(built, temp)
        os.replace(temp, dest)
    return dest


if __name__ == "__main__":
    for family in sys.argv[1:] or FAMILIES:
        build_in_place(family)
        print(f"built repack._{family}")
