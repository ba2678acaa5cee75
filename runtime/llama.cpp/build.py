#!/usr/bin/env python3
"""Build llama.cpp with amx-repack's runtime patch, so it runs AMX-packed GGUF files from the mmap.

    python runtime/llama.cpp/build.py                  # for a CPU with AMX: llama-cli, llama-server,
                                                       #   llama-bench, llama-simple, amx-generate
    python runtime/llama.cpp/build.py --native         # for any CPU (AVX2 laptop, ARM server): the
                                                       #   same tools, for cpu-repack files
    python runtime/llama.cpp/build.py --emulate-amx    # test flavour for AVX-512 VNNI CPUs without AMX
    python runtime/llama.cpp/build.py --emulate-amx --stock   # unpatched upstream, same flags
    python runtime/llama.cpp/build.py --avx2 [--stock]  # test flavour of the cpu-repack layout (AVX2)
    python runtime/llama.cpp/build.py --arm dotprod    # cross-built for ARM (aarch64, Debian's
    python runtime/llama.cpp/build.py --arm i8mm-sve   #   g++-aarch64-linux-gnu), run under
                                                       #   qemu-aarch64: the ARM cpu-repack tests
    python runtime/llama.cpp/build.py --source DIR     # a llama.cpp checkout of your own instead of
                                                       #   the pinned one
    python runtime/llama.cpp/build.py --python         # also a llama-cpp-python wheel on that build's
                                                       #   libraries (any flavour; last line: the wheel)

The pinned source is llama.cpp as vendored by the PyPI sdist of llama-cpp-python (fetched with pip,
no git needed). Builds are cached under .cache/llama.cpp/ (or $AMX_REPACK_CACHE/llama.cpp): a build
whose inputs (source, patches, flags, tools) did not change is reused. The last line printed is the
folder holding the binaries and shared libraries. Standard library only, so it runs before (and
without) installing amx-repack.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# The pinned upstream: llama-cpp-python's sdist vendors llama.cpp at this commit (ggml 0.25.3).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e57098"

PATCHES = sorted((HERE / "patches").glob("*.patch"))
# fixes of upstream bugs that stop a build from running at all, not part of our feature: applied
# to every flavour, stock included, so that stock stays a baseline that runs
FIXES = sorted((HERE / "fixes").glob("*.patch"))
EMULATION_HEADER = HERE / "amx_tile_emulation.h"
TOOLS = {"amx-generate": HERE / "tools" / "amx-generate.cpp",
         "amx-kernel-check": HERE / "tools" / "amx-kernel-check.cpp",
         "cpu-repack-check": HERE / "tools" / "cpu-repack-check.cpp"}

# Everything but the CPU backend and the libraries stays off: no network, no GPU, no server TLS.
COMMON_FLAGS = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON",
                "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON", "-DLLAMA_CURL=OFF",
                "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DGGML_OPENMP=OFF"]
# AVX-512 with VNNI, spelled out (GGML_NATIVE off) so the test build is the same on every machine.
# Not GGML_AMX_*: those add real -mamx flags; the emulated build defines __AMX_INT8__ itself.
AVX512_VNNI_FLAGS = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON",
                     "-DGGML_F16C=ON", "-DGGML_AVX512=ON", "-DGGML_AVX512_VBMI=ON",
                     "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON"]

# AVX2 only, spelled out: upstream's CPU_REPACK picks its x86-avx2 variants (ggml_cpu_has_avx2 and
# _avx512 are compile-time), the same on every x86-64 CPU with AVX2.
AVX2_FLAGS = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON"]

# ARM, cross-compiled on any Linux machine with Debian's aarch64 toolchain into static binaries that
# qemu-aarch64 runs. ggml-cpu's ARM kernels are chosen at compile time (-march) and then by the CPU's
# features at run time (HWCAP, the SVE vector length): the dotprod build has no i8mm or SVE code, the
# other has both, and qemu's CPU options (-cpu max, its SVE vector length) select among them.
CROSS_AARCH64 = "aarch64-linux-gnu"
ARM_FLAGS = ["-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
             "-DLLAMA_BUILD_SERVER=OFF"]
ARM_BUILDS = {"dotprod": "armv8.2-a+dotprod", "i8mm-sve": "armv8.6-a+sve+i8mm"}

# The users' build: -march=native (AMX-INT8/TILE where the CPU has them) and the usual tools
NATIVE_USER_BUILD = {"emulate": False,
                     "flags": ["-DGGML_NATIVE=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_EXAMPLES=ON",
                               "-DLLAMA_BUILD_SERVER=ON"],
                     "targets": ["llama-cli", "llama-server", "llama-bench", "llama-simple"],
                     "tools": ["amx-generate"]}

# A flavour is the hardware (real AMX, or emulated tiles on AVX-512 VNNI) plus, for baselines,
# "-stock": the same source and flags without the patch.
HARDWARE = {
    # real AMX: -march=native turns on AMX-INT8/TILE where the CPU has them
    "amx": NATIVE_USER_BUILD,
    # any CPU: the same build; only main() tells them apart (the amx flavour stops on a CPU
    # without AMX). Runs cpu-repack files made for this CPU (and amx files where it has AMX)
    "native": NATIVE_USER_BUILD,
    # the test build: the same user tools as the real one (a user without AMX can try them, the
    # tests run them), plus our kernel checker
    "emulate-amx": {"emulate": True,
                    "flags": AVX512_VNNI_FLAGS + ["-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_EXAMPLES=ON",
                                                  "-DLLAMA_BUILD_SERVER=ON"],
                    "targets": ["llama", "llama-cli", "llama-server", "llama-simple"],
                    "tools": ["amx-generate", "amx-kernel-check"]},
    # the cpu-repack tests: upstream's x86 CPU_REPACK kernels running natively on any AVX2 CPU
    # (llama-server for the server tests, llama-simple for the README's shell recipe)
    "avx2": {"emulate": False, "flags": AVX2_FLAGS + ["-DLLAMA_BUILD_SERVER=ON"],
             "targets": ["llama", "llama-server", "llama-simple"],
             "tools": ["amx-generate", "amx-kernel-check"]},
    # the ARM cpu-repack tests: upstream's ARM CPU_REPACK kernels under qemu-aarch64; llama.cpp
    # itself (for the end-to-end test) only in the i8mm one, ggml alone is enough for the kernels
    **{f"arm-{name}": {"emulate": False, "cross": CROSS_AARCH64,
                       "flags": ARM_FLAGS + [f"-DGGML_CPU_ARM_ARCH={march}"],
                       "targets": ["llama"] if name == "i8mm-sve" else ["ggml"],
                       "tools": ["amx-generate", "cpu-repack-check"] if name == "i8mm-sve" else ["cpu-repack-check"]}
       for name, march in ARM_BUILDS.items()},
}
FLAVOURS = {**{name: {**spec, "patched": True} for name, spec in HARDWARE.items()},
            **{name + "-stock": {**spec, "patched": False} for name, spec in HARDWARE.items()}}


def cpu_lacks_amx() -> str | None:
    """Why this CPU cannot run the real AMX build, or None (it has AMX, or we cannot tell: not
    Linux). Read from /proc/cpuinfo's flags; AMX_REPACK_CPUINFO names another file to read (the
    tests use it to present a CPU with or without AMX)."""
    path = os.environ.get("AMX_REPACK_CPUINFO", "/proc/cpuinfo")
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    missing = [f for f in ("amx_tile", "amx_int8") if f not in flags]
    return f"no {' or '.join(missing)} flag in {path}" if missing else None


NO_AMX_ADVICE = ("llama.cpp built for it cannot run amx files: convert with --layout cpu-repack "
                 "and build with --native instead (see runtime/llama.cpp/README.md), or convert "
                 "with --layout interleaved and run that with ik_llama.cpp (python -m repack.ik_generate, see "
                 "docs/runtimes.md), or run the original model with any llama.cpp; "
                 "--emulate-amx is a slow build for the tests, --any-cpu builds this one anyway")


class BuildError(RuntimeError):
    """A step of the build failed; the message says which and why."""


def cache_root() -> Path:
    base = os.environ.get("AMX_REPACK_CACHE")
    return (Path(base) if base else REPO / ".cache") / "llama.cpp"


def log(msg: str) -> None:
    print(f"[runtime build] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], cwd: Path | None = None, logfile: Path | None = None,
        env: dict | None = None) -> None:
    """Run a command; on failure raise with the tail of its output."""
    env = {**os.environ, **(env or {})}
    if logfile is None:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
        output = proc.stdout + proc.stderr
    else:
        with open(logfile, "w") as out:
            proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        output = logfile.read_text(errors="replace")
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}):\n{output[-3000:]}")


def fetch_sdist() -> Path:
    """The pinned llama-cpp-python sdist, downloaded once with pip."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    sdist = root / name
    if not sdist.exists():
        log(f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} (sdist, ~77 MB) with pip")
        tmp = root / "download.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(tmp)])
        (tmp / name).rename(sdist)
        shutil.rmtree(tmp, ignore_errors=True)
    return sdist


def extract_vendored(sdist: Path, dest: Path) -> None:
    """vendor/llama.cpp of the sdist into dest."""
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            # the sdist's vendor/llama.cpp/.git points into a repository that is not there
            if m.name.startswith(prefix) and m.name[len(prefix):] not in ("", ".git"):
                m.name = m.name[len(prefix):]
                members.append(m)
        if not members:
            raise BuildError(f"{sdist.name} has no vendor/llama.cpp")
        try:
            tar.extractall(tmp, members=members, filter="data")
        except TypeError:  # Python before 3.11.4 has no extraction filters
            tar.extractall(tmp, members=members)
    tmp.rename(dest)


def apply_patches(src: Path, patches: list[Path]) -> None:
    for patch in patches:
        log(f"applying {patch.name}")
        # the ceiling keeps git from taking a repository around the cache (ours) as the target
        run(["git", "apply", "--whitespace=nowarn", str(patch)], cwd=src,
            env={"GIT_CEILING_DIRECTORIES": str(src.parent)})


def apply_fixes(src: Path) -> None:
    """FIXES where upstream's code is still as the pin has it. Where it has changed (a newer
    checkout given with --source, which may carry upstream's own fix) a fix is left out with a
    note instead of failing the build: our patches, not the fixes, must apply."""
    for fix in FIXES:
        try:
            run(["git", "apply", "--check", str(fix)], cwd=src,
                env={"GIT_CEILING_DIRECTORIES": str(src.parent)})
        except BuildError:
            log(f"not applying {fix.name}: upstream's code there has changed since the pin "
                f"(runtime/llama.cpp/README.md, 'Rebasing')")
            continue
        apply_patches(src, [fix])


def digest(parts: list, files: list[Path]) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def library_digest(flavour: str, source: Path | None) -> str:
    """What the cmake build depends on (the tools are linked on top, see tools_digest)."""
    spec = FLAVOURS[flavour]
    files = [EMULATION_HEADER] if spec["emulate"] else []
    files += FIXES + (PATCHES if spec["patched"] else [])
    library_spec = {k: v for k, v in spec.items() if k != "tools"}
    return digest([flavour, library_spec, COMMON_FLAGS, LLAMA_CPP_PYTHON_VERSION, str(source)], files)


def tools_digest(flavour: str) -> str:
    return digest(FLAVOURS[flavour]["tools"], [TOOLS[t] for t in FLAVOURS[flavour]["tools"]])


def source_ignore(root: Path):
    """copytree's ignore for a user's llama.cpp checkout: .git anywhere, and build folders at its
    top (build, build-*) only; a file such as cmake/build-info.cmake is source."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        at_top = Path(folder).resolve() == root.resolve()
        return {n for n in names if n == ".git"
                or (at_top and (n == "build" or n.startswith("build-")) and (Path(folder) / n).is_dir())}
    return ignore


def write_toolchain(work: Path, triple: str) -> Path:
    """A cmake toolchain file for Debian's cross compilers of this triple (aarch64-linux-gnu)."""
    path = work / f"toolchain-{triple}.cmake"
    path.write_text(f"""set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR {triple.split('-')[0]})
set(CMAKE_C_COMPILER {triple}-gcc)
set(CMAKE_CXX_COMPILER {triple}-g++)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
""")
    return path


def build(flavour: str = "amx", source: Path | None = None, jobs: int | None = None) -> Path:
    """Build (or reuse) one flavour; returns the folder with its binaries and libraries."""
    spec = FLAVOURS[flavour]
    work = cache_root() / f"{flavour}-{library_digest(flavour, source)}"
    src, bin_dir = work / "src", work / "build" / "bin"
    if not (work / "complete").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        if source is None:
            extract_vendored(fetch_sdist(), src)
        else:
            shutil.copytree(source, src, ignore=source_ignore(Path(source)))
        apply_fixes(src)
        if spec["patched"]:
            apply_patches(src, PATCHES)
        cxx_flags = f"-D__AMX_INT8__ -include {EMULATION_HEADER}" if spec["emulate"] else ""
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        # ccache, where installed: a flavour rebuilt in a new folder (its digest changed: new
        # targets, flags or tools) compiles only what changed, and two flavours compile once the
        # few objects they share (the patches change ggml.h, which nearly every file includes).
        # cmake passes absolute paths, which differ per folder, so ccache is told the folder the
        # builds share: it rewrites paths below it as relative ones before hashing.
        launcher = ([f"-DCMAKE_{lang}_COMPILER_LAUNCHER=ccache" for lang in ("C", "CXX")]
                    if shutil.which("ccache") else [])
        ccache_env = {"CCACHE_BASEDIR": str(cache_root()), "CCACHE_NOHASHDIR": "1"}
        jobs = jobs or os.cpu_count() or 2
        common = COMMON_FLAGS
        if spec.get("cross"):
            # static libraries: the tools become single static binaries that qemu runs as they are
            common = [f for f in COMMON_FLAGS if not f.startswith("-DBUILD_SHARED_LIBS")] + [
                "-DBUILD_SHARED_LIBS=OFF", f"-DCMAKE_TOOLCHAIN_FILE={write_toolchain(work, spec['cross'])}"]
        log(f"configuring {flavour} in {work}")
        run(["cmake", "-S", str(src), "-B", str(work / "build"), *generator, *common,
             *launcher, *spec["flags"], f"-DCMAKE_CXX_FLAGS={cxx_flags}"], logfile=work / "configure.log")
        log(f"building {', '.join(spec['targets'])} with {jobs} jobs (a few minutes)")
        run(["cmake", "--build", str(work / "build"), "-j", str(jobs), "--target", *spec["targets"]],
            logfile=work / "build.log", env=ccache_env)
        (work / "complete").write_text(f"{flavour}\n")
    # our tools are linked against the built libraries, and relinked alone when they change
    tools_stamp = work / f"tools-{tools_digest(flavour)}"
    if not tools_stamp.exists():
        bin_dir.mkdir(parents=True, exist_ok=True)
        for tool in spec["tools"]:
            log(f"building {tool}")
            if spec.get("cross"):
                lib_dirs = [work / "build" / "src", work / "build" / "ggml" / "src"]
                compiler = [f"{spec['cross']}-g++"]
                llama = ["-lllama"] if "llama" in spec["targets"] else []
                link = [*(f"-L{d}" for d in lib_dirs), *llama, "-lggml", "-lggml-cpu", "-lggml-base",
                        "-lpthread", "-lm", "-static"]
            else:
                compiler = [os.environ.get("CXX", "c++")]
                link = [f"-L{bin_dir}", "-lllama", "-lggml", "-lggml-base", "-lggml-cpu", "-ldl",
                        "-Wl,-rpath,$ORIGIN"]
            run([*compiler, "-O2", "-std=c++17", str(TOOLS[tool]), f"-I{src / 'include'}",
                 f"-I{src / 'ggml' / 'include'}", *link, "-o", str(bin_dir / tool)])
        tools_stamp.touch()
    return bin_dir


def build_python_wheel(flavour: str = "amx", jobs: int | None = None) -> Path:
    """The flavour's build, then a llama-cpp-python wheel of the pinned sdist's Python package with
    that build's shared libraries (python_wheel.py); cached beside the build."""
    spec = importlib.util.spec_from_file_location("python_wheel", HERE / "python_wheel.py")
    python_wheel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(python_wheel)
    bin_dir = build(flavour, None, jobs)
    out_dir = bin_dir.parents[1] / f"python-{digest([], [HERE / 'python_wheel.py'])}"
    try:
        return python_wheel.build_wheel(fetch_sdist(), LLAMA_CPP_PYTHON_VERSION, bin_dir, flavour,
                                        library_digest(flavour, None), out_dir)
    except python_wheel.WheelError as e:
        raise BuildError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emulate-amx", action="store_true",
                        help="test build for AVX-512 VNNI CPUs without AMX (emulated tiles, slow)")
    parser.add_argument("--avx2", action="store_true",
                        help="test build of the cpu-repack layout for any AVX2 CPU (no AMX)")
    parser.add_argument("--native", action="store_true",
                        help="build for this CPU, whatever it is (-march=native): runs cpu-repack "
                             "files made for it")
    parser.add_argument("--arm", choices=sorted(ARM_BUILDS),
                        help="test build of the cpu-repack layout for ARM, cross-compiled for "
                             "qemu-aarch64: dotprod (armv8.2-a+dotprod) or i8mm-sve "
                             "(armv8.6-a+sve+i8mm)")
    parser.add_argument("--stock", action="store_true", help="unpatched upstream, same flags (baseline)")
    parser.add_argument("--source", type=Path, help="a llama.cpp source tree to patch instead of the pinned one")
    parser.add_argument("--python", action="store_true",
                        help="also build a llama-cpp-python wheel on this build's libraries; "
                             "prints the wheel's path")
    parser.add_argument("-j", "--jobs", type=int, help="parallel compile jobs (default: all cores)")
    parser.add_argument("--any-cpu", action="store_true",
                        help="build for real AMX even where this CPU has none (it then refuses "
                             "amx files here)")
    args = parser.parse_args(argv)
    flavour = ("emulate-amx" if args.emulate_amx else "avx2" if args.avx2
               else f"arm-{args.arm}" if args.arm else "native" if args.native else "amx") + ("-stock" if args.stock else "")
    if args.python and args.source:
        # the sdist's ctypes bindings declare the pinned llama.cpp's API, no other
        parser.error(f"--python builds on the pinned source only (llama-cpp-python "
                     f"{LLAMA_CPP_PYTHON_VERSION}'s bindings match it); leave out --source")
    if args.arm and args.python:
        parser.error("--python builds a wheel for this machine; the --arm builds are for qemu-aarch64")
    cross = FLAVOURS[flavour].get("cross")
    if cross and not shutil.which(f"{cross}-g++"):
        print(f"runtime build: error: {cross}-g++ not found: install Debian's g++-{cross} "
              f"(and qemu-user to run the result)", file=sys.stderr)
        return 2
    # said before minutes of building: a real AMX build is of no use on a CPU without AMX
    # (only the real AMX flavour: the emulated and AVX2 builds are for CPUs without it)
    lacking = None if not flavour.startswith("amx") or args.any_cpu else cpu_lacks_amx()
    if lacking:
        print(f"runtime build: error: this CPU has no AMX ({lacking}), so {NO_AMX_ADVICE}",
              file=sys.stderr)
        return 2
    try:
        result = (build_python_wheel(flavour, args.jobs) if args.python
                  else build(flavour, args.source, args.jobs))
    except (BuildError, OSError) as e:
        print(f"runtime build: error: {e}", file=sys.stderr)
        return 1
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
