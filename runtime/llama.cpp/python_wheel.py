"""A llama-cpp-python wheel whose llama.cpp libraries are those of one build.py flavour.

llama-cpp-python is pure Python over ctypes: at import it loads ``llama_cpp/lib/libllama.so``
(libggml*.so beside it, found through the libraries' ``$ORIGIN`` run path). Its sdist vendors the
very llama.cpp that build.py patches and builds, so the wheel is the sdist's ``llama_cpp`` package
plus the shared libraries of that build: the same files the sdist's own build would install, and
no second compile of llama.cpp. The version carries a local label (``0.3.36+amxrepack.FLAVOUR.
DIGEST``, in the wheel's metadata and ``llama_cpp.__version__``) so the patched build is never
mistaken for the one on the package index.

Standard library only, like build.py (which calls it for ``--python``).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import sysconfig
import tarfile
import zipfile
from pathlib import Path

DIST_NAME = "llama_cpp_python"
# what llama_cpp loads by file name with ctypes (llama_cpp.py: libllama, _ggml.py: libggml)
LOADED_BY_NAME = ("libllama.so", "libggml.so")
# every library those need at run time; the dynamic loader asks for each by its soname
LIBRARIES = ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so")
# zip entries get one fixed date, so the same inputs give the same wheel bytes
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class WheelError(RuntimeError):
    """The wheel cannot be made from these inputs; the message says why."""


def local_version(base_version: str, flavour: str, library_digest: str) -> str:
    """``0.3.36+amxrepack.emulate.amx.1a2b3c4d``: PEP 440 local segments are dot-separated."""
    return f"{base_version}+amxrepack.{flavour.replace('-', '.')}.{library_digest[:8]}"


def wheel_name(version: str) -> str:
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{DIST_NAME}-{version}-py3-none-{platform}.whl"


def _library_files(bin_dir: Path) -> dict[str, Path]:
    """{name in the wheel: real file}: each library under its soname (the name its dependants'
    DT_NEEDED entries give), and the ones ctypes opens also under their plain name. CMake lays
    out ``libX.so -> libX.so.MAJOR -> libX.so.MAJOR.MINOR.PATCH``: the middle link is the soname."""
    files = {}
    for plain in LIBRARIES:
        link = bin_dir / plain
        if not link.exists():
            raise WheelError(f"{link} is missing: the build has no {plain}")
        soname = os.readlink(link) if link.is_symlink() else plain
        real = link.resolve()
        files[Path(soname).name] = real
        if plain in LOADED_BY_NAME:
            files[plain] = real
    return files


def _runpath_origin_only(name: str, data: bytes) -> bytes:
    """The library with its run path cut to ``$ORIGIN``. CMake's build run path (what build.py
    builds with: ``CMAKE_BUILD_RPATH_USE_ORIGIN``) ends in an empty entry, ``$ORIGIN:``, and the
    dynamic loader reads an empty entry as the current directory: a ``libstdc++.so.6`` in the
    user's working directory would be loaded. The string is shortened in place (its tail set to
    NUL bytes), so no offset in the file moves; the sdist's own install sets exactly ``$ORIGIN``."""
    runpaths = list(re.finditer(rb"\$ORIGIN(:[^\x00]*)?\x00", data))
    if len(runpaths) > 1:
        raise WheelError(f"{name}: more than one $ORIGIN string, cannot tell which is the run path")
    if not runpaths or runpaths[0].group(1) is None:
        return data
    start, end = runpaths[0].start(1), runpaths[0].end(1)
    return data[:start] + bytes(end - start) + data[end:]


def _record_line(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def build_wheel(sdist: Path, base_version: str, bin_dir: Path, flavour: str, library_digest: str,
                out_dir: Path) -> Path:
    """Write the wheel into out_dir (under a temporary name, then renamed) and return its path;
    an existing one is reused (out_dir is keyed by the build's and this module's digests)."""
    version = local_version(base_version, flavour, library_digest)
    wheel = out_dir / wheel_name(version)
    if wheel.exists():
        return wheel
    root = f"llama_cpp_python-{base_version}/"
    dist_info = f"{DIST_NAME}-{version}.dist-info/"
    entries: dict[str, bytes] = {}
    metadata = None
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = member.name[len(root):] if member.name.startswith(root) else None
            if name is None or not member.isfile():
                continue
            if name.startswith("llama_cpp/") and not name.startswith("llama_cpp/lib/") \
                    and "__pycache__" not in name:
                entries[name] = tar.extractfile(member).read()
            elif name == "PKG-INFO":
                metadata = tar.extractfile(member).read().decode()
            elif name == "LICENSE.md":
                entries[dist_info + "LICENSE.md"] = tar.extractfile(member).read()
    init = entries.get("llama_cpp/__init__.py", b"").decode()
    if f'__version__ = "{base_version}"' not in init:
        raise WheelError(f"{sdist.name}: llama_cpp/__init__.py does not say __version__ = "
                         f'"{base_version}"')
    entries["llama_cpp/__init__.py"] = init.replace(
        f'__version__ = "{base_version}"', f'__version__ = "{version}"').encode()
    if metadata is None:
        raise WheelError(f"{sdist.name} has no PKG-INFO")
    # the sdist's PKG-INFO is the core metadata its wheel would carry; only the version differs
    metadata, count = re.subn(r"^Version: .*$", f"Version: {version}", metadata, count=1, flags=re.M)
    if count != 1:
        raise WheelError(f"{sdist.name}: PKG-INFO has no Version line")
    entries[dist_info + "METADATA"] = metadata.encode()
    for name, path in _library_files(bin_dir).items():
        entries[f"llama_cpp/lib/{name}"] = _runpath_origin_only(name, path.read_bytes())
    tag = wheel.name[:-len(".whl")].split("-", 2)[2]
    entries[dist_info + "WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: amx-repack "
                                    f"runtime/llama.cpp/python_wheel.py\nRoot-Is-Purelib: false\n"
                                    f"Tag: {tag}\n").encode()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name in sorted(entries):
        writer.writerow(_record_line(name, entries[name]))
    writer.writerow([dist_info + "RECORD", "", ""])
    entries[dist_info + "RECORD"] = record.getvalue().encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    partial = wheel.with_name(wheel.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # dist-info last, as wheel tools write it
        for name in sorted(entries, key=lambda n: (n.startswith(dist_info), n)):
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            is_library = name.startswith("llama_cpp/lib/")
            info.external_attr = (0o755 if is_library else 0o644) << 16
            zf.writestr(info, entries[name])
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    partial.rename(wheel)
    return wheel
