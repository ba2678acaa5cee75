"""cpu-repack eligibility = upstream's own choice, compiled from the pinned source.

``ggml_repack_get_optimal_repack_type`` (ggml-cpu/repack.cpp) is cut out of the pinned llama.cpp
text, its CPU probes (``ggml_cpu_has_avx2()``, ..., ``__riscv_vlenb()``) turned into switches and
its ``tensor_traits`` instances into their names, then compiled and run for every target's
features, every source type and ne[1] from 1 to 96: formats/cpu_repack_layout.py must pick the
same variant (or none) every time. Also: the CPU features of ``auto`` from /proc/cpuinfo.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile

import pytest

from formats import cpu_repack_layout as cr
from formats.ggml_types import TYPES, type_by_name
from formats.gguf_container import TensorInfo
from formats.layouts import decide
from tests._paths import pinned_llama_cpp_sdist

REPACK_CPP = "ggml/src/ggml-cpu/repack.cpp"
FUNCTION = "ggml_repack_get_optimal_repack_type"
# upstream's probes -> the features of formats/cpu_repack_layout.py that set them
PROBES = {"ggml_cpu_has_avx2": "avx2", "ggml_cpu_has_avx512": "avx512", "ggml_cpu_has_neon": "neon",
          "ggml_cpu_has_dotprod": "dotprod", "ggml_cpu_has_matmul_int8": "i8mm",
          "ggml_cpu_has_sve": "sve256", "ggml_cpu_has_riscv_v": "rvv256",
          "ggml_cpu_has_vxe": None}
NE1 = range(1, 97)


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(what)


def _pinned_repack_cpp() -> str:
    sdist = pinned_llama_cpp_sdist()
    with tarfile.open(sdist) as tar:
        for m in tar:
            if m.name.endswith("/vendor/llama.cpp/" + REPACK_CPP):
                return tar.extractfile(m).read().decode()
    pytest.fail(f"{sdist.name} has no {REPACK_CPP}")


def _function(text: str) -> str:
    """The function's definition, as a standalone C++ function of our stand-ins."""
    start = text.index(f"static const ggml::cpu::tensor_traits * {FUNCTION}(")
    i, depth = text.index("{", start), 0
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
        if depth == 0:
            break
    body = text[start:i]
    body = body.replace("static const ggml::cpu::tensor_traits *", "static const char *", 1)
    # each instance becomes its name; the compile-time RISC-V guard holds (rvv256 is built
    # with zvfh)
    body = re.sub(r"static const ggml::cpu::repack::tensor_traits<[^;]*>\s+(\w+);",
                  r'static const char * \1 = "\1";', body)
    body = re.sub(r"return &(\w+);", r"return \1;", body)
    body = body.replace("#if defined __riscv_zvfh", "#if 1")
    return body


def _program(body: str) -> str:
    types = sorted(set(re.findall(r"GGML_TYPE_(\w+)", body)))
    defines = "\n".join(f"#define GGML_TYPE_{name} {type_by_name(name).id}" for name in types)
    probes = "\n".join(f"static int {p}() {{ return feature[{i}]; }}"
                       for i, p in enumerate(PROBES))
    return f"""
#include <cstdio>
#include <cstdlib>
#include <cstdint>
{defines}
#define QK8_0 32
struct ggml_tensor {{ int type; int64_t ne[4]; }};
static int feature[{len(PROBES)}];
static int sve_cnt, vlenb;
{probes}
static int ggml_cpu_get_sve_cnt() {{ return sve_cnt; }}
static int __riscv_vlenb() {{ return vlenb; }}
{body}
int main(int argc, char ** argv) {{
    // argv: the {len(PROBES)} probes, sve_cnt, vlenb, then the type ids
    for (int i = 0; i < {len(PROBES)}; i++) feature[i] = atoi(argv[1 + i]);
    sve_cnt = atoi(argv[{len(PROBES) + 1}]);
    vlenb = atoi(argv[{len(PROBES) + 2}]);
    for (int a = {len(PROBES) + 3}; a < argc; a++) {{
        for (int ne1 = {NE1.start}; ne1 < {NE1.stop}; ne1++) {{
            struct ggml_tensor t = {{ atoi(argv[a]), {{256, ne1, 1, 1}} }};
            const char * v = {FUNCTION}(&t);
            printf("%s %d %s\\n", argv[a], ne1, v ? v : "-");
        }}
    }}
    return 0;
}}
"""


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        _missing("no C++ compiler (c++ or g++) to build upstream's choice")
    folder = tmp_path_factory.mktemp("choice")
    body = _function(_pinned_repack_cpp())
    (folder / "choice.cpp").write_text(_program(body))
    proc = subprocess.run([cxx, "-O0", "-o", str(folder / "choice"), str(folder / "choice.cpp")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    type_ids = sorted({type_by_name(n).id for n in re.findall(r"GGML_TYPE_(\w+)", body)})

    def run(features: frozenset[str]) -> dict[tuple[int, int], str | None]:
        probes = [int(f is not None and f in features) for f in PROBES.values()]
        args = [*map(str, probes), "32" if "sve256" in features else "0",
                "32" if "rvv256" in features else "0", *map(str, type_ids)]
        out = subprocess.run([str(folder / "choice"), *args], capture_output=True, text=True,
                             check=True).stdout
        picks = {}
        for line in out.splitlines():
            type_id, ne1, name = line.split()
            # upstream's instance names end in the activation type: q4_0_8x8_q8_0
            picks[int(type_id), int(ne1)] = None if name == "-" else name.rsplit("_q8_", 1)[0]
        return picks
    return run, type_ids


@pytest.mark.parametrize("target", list(cr.TARGET_FEATURES) + ["no-feature"])
def test_choice_is_upstreams_for_every_type_and_ne1(upstream, target):
    run, type_ids = upstream
    features = cr.TARGET_FEATURES.get(target, frozenset())
    want = run(features)
    assert set(type_ids) == {type_by_name(n).id for n in cr.RULES}   # every type it branches on
    repacked = 0
    for (type_id, ne1), name in want.items():
        variant, _ = cr.choose(TYPES[type_id], ne1, features)
        assert (variant.name if variant else None) == name, (target, TYPES[type_id].name, ne1)
        if target in cr.TARGET_FEATURES:
            d = decide("cpu-repack", TensorInfo("blk.0.ffn_up.weight", (256, ne1), type_id, 0, 0),
                       target=target)
            assert d.packs == (name is not None)
            assert (d.target.name if d.packs else None) == (f"cpu_{name}" if name else None)
        repacked += name is not None
    assert repacked or target == "no-feature"


def test_every_variant_is_reachable_from_some_target(upstream):
    run, _ = upstream
    seen = {name for t in cr.TARGET_FEATURES.values() for name in run(t).values() if name}
    assert seen == {v.name for v in cr.VARIANTS.values()}


X86 = "processor : 0\nflags : fpu sse sse2 avx avx2 fma{}\n"
ARM = "processor : 0\nFeatures : fp asimd evtstrm aes crc32 atomics{}\n"


@pytest.mark.parametrize("cpuinfo,machine,sve,target", [
    (X86.format(""), "x86_64", 0, "x86-avx2"),
    (X86.format(" avx512f avx512bw avx512_vnni"), "x86_64", 0, "x86-avx512"),
    ("processor : 0\nflags : fpu sse sse2 avx\n", "x86_64", 0, None),
    (ARM.format(""), "aarch64", 0, None),
    (ARM.format(" asimddp"), "aarch64", 0, "arm-dotprod"),
    (ARM.format(" asimddp i8mm"), "aarch64", 0, "arm-i8mm"),
    (ARM.format(" asimddp i8mm sve"), "aarch64", 16, "arm-i8mm"),    # 128-bit SVE: not 8x8
    (ARM.format(" asimddp i8mm sve"), "aarch64", 32, "arm-sve256"),
    ("processor : 0\nisa : rv64imafdcv_zvfh\n", "riscv64", 0, None),   # VLEN unknown
])
def test_auto_reads_the_cpu_features(cpuinfo, machine, sve, target):
    assert cr.machine_target(cr.machine_features(cpuinfo, machine, sve)) == target
