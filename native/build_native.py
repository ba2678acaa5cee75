"""cffi build script: one extension module per layout family (and the shared kernels).

``native/<family>.c`` with its header ``native/<family>.h`` becomes ``repack._<family>``; ``verify``
(the fused checks of verify and convert --verify) also links the kernels it runs (the modules whose
headers it includes). The header
doubles as the cffi declaration: its preprocessor lines are dropped and the rest (plain
prototypes) is given to ``cdef``. setuptools builds every family at install time (see setup.py);
``python native/build_native.py [family ...]`` builds them in place for development.

Extra compiler/linker flags come from ``AMX_REPACK_CFLAGS`` / ``AMX_REPACK_LDFLAGS`` (the sanitizer
build of the test suite uses them).
"""

import os
import re
import shlex
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Every native/<name>.c with its header native/<name>.h is a module (a new layout family's kernels
# are one more such pair: nothing here changes).
FAMILIES = tuple(sorted(p.stem for p in HERE.glob("*.c") if p.with_suffix(".h").exists()))


def _linked(module: str) -> tuple[str, ...]:
    """The other modules whose kernels ``module`` calls, linked in (their symbols stay private to
    each extension module): those whose header its C file includes."""
    included = re.findall(r'^#include "(\w+)\.h"', (HERE / f"{module}.c").read_text(), re.M)
    return tuple(name for name in included if name != module and name in FAMILIES)


CFLAGS = ["-O3", "-std=c11", "-fno-strict-aliasing", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Wno-unused-function"]


def _declarations(header: Path) -> str:
    return "\n".join(line for line in header.read_text().splitlines()
                     if not line.lstrip().startswith("#"))


def make_ffi(family: str) -> FFI:
    ffi = FFI()
    ffi.cdef(_declarations(HERE / f"{family}.h"))
    source_paths = []
    for name in (family, *_linked(family)):
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


# <name>_ffi: what setup.py's cffi_modules name
for _name in FAMILIES:
    globals()[f"{_name}_ffi"] = make_ffi(_name)

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
