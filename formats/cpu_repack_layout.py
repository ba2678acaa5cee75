"""upstream llama.cpp's own repacked layouts (its CPU_REPACK buffer type), offline: the table.

Spec: ``docs/cpu-repack.md``. Upstream repacks a weight at load, in ``set_tensor``, into the
layout ``ggml_repack_get_optimal_repack_type`` (ggml-cpu/repack.cpp, pinned commit 0c1e57098)
picks for the CPU it runs on: a *variant* (source type, NB_COLS, INTER_SIZE) of its
``tensor_traits``, or none. This module restates that function as data (``RULES``), per *target*
(a CPU feature set, ``TARGET_FEATURES``): the cpu-repack layout of a file made for a target holds
exactly the tensors upstream would repack on such a CPU, in exactly the bytes its repack writes
(the kernels: ``native/cpu_repack.c``, wrapper ``repack.cpu_repack_kernels``). Every other tensor
stays plain, as upstream leaves it.

Which tensors upstream ever places in CPU_REPACK: its ``supports_op`` takes MUL_MAT on a 2-D
weight and MUL_MAT_ID on a 3-D one (the experts), so never a token embedding (read by GET_ROWS)
nor a weight of more than 3 dimensions; the same rules as the amx family's for the same question.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from .family import EMBEDDING_TENSOR_NAMES, Decision, LayoutFamily, cannot
from .ggml_types import (CPU_REPACK_SHAPES, CPU_REPACK_TYPE_ID_BASE, CPU_REPACK_VARIANTS, TYPES,
                         GGMLType, type_by_name)

if TYPE_CHECKING:   # annotations only: --help, which reads no file, loads no GGUF reader
    from .gguf_container import TensorInfo

# The CPU features upstream's choice reads (ggml_cpu_has_*), as each target has them. "sve256":
# SVE with 256-bit vectors (ggml_cpu_has_sve() && ggml_cpu_get_sve_cnt() == QK8_0); "rvv256":
# the RISC-V vector extension with VLEN 256, built with zvfh (__riscv_zvfh, __riscv_vlenb() == 32).
TARGET_FEATURES: dict[str, frozenset[str]] = {
    "x86-avx2": frozenset({"avx2"}),
    "x86-avx512": frozenset({"avx2", "avx512"}),
    "arm-dotprod": frozenset({"neon", "dotprod"}),
    "arm-i8mm": frozenset({"neon", "dotprod", "i8mm"}),
    "arm-sve256": frozenset({"neon", "dotprod", "i8mm", "sve256"}),
    "rvv256": frozenset({"rvv256"}),
}
AUTO = "auto"

# ggml_repack_get_optimal_repack_type, branch by branch in its order: per source type, the
# (features all required, (NB_COLS, INTER_SIZE)) it tries; the first whose features the CPU has
# and whose ne[1] % NB_COLS == 0 (upstream's rule for every variant) is the one. s390x's VXE
# branch (Q4_0 4x4) is not a target here.
RULES: dict[str, tuple[tuple[frozenset[str], tuple[int, int]], ...]] = {
    "q4_0": ((frozenset({"avx2"}), (8, 8)),
             (frozenset({"sve256", "i8mm"}), (8, 8)),
             (frozenset({"neon", "i8mm"}), (4, 8)),
             (frozenset({"neon", "dotprod"}), (4, 4)),
             (frozenset({"rvv256"}), (16, 1))),
    "q4_K": ((frozenset({"avx2"}), (8, 8)),
             (frozenset({"neon", "i8mm"}), (8, 8)),
             (frozenset({"neon", "dotprod"}), (8, 4)),
             (frozenset({"rvv256"}), (16, 1))),
    "q2_K": ((frozenset({"avx512"}), (8, 8)),
             (frozenset({"rvv256"}), (16, 1))),
    "q5_K": ((frozenset({"neon", "i8mm"}), (8, 8)),
             (frozenset({"neon", "dotprod"}), (8, 4))),
    "q6_K": ((frozenset({"neon", "i8mm"}), (8, 8)),
             (frozenset({"neon", "dotprod"}), (8, 4))),
    "iq4_nl": ((frozenset({"avx2"}), (8, 8)),
               (frozenset({"neon", "dotprod"}), (4, 4)),
               (frozenset({"rvv256"}), (16, 1))),
    "mxfp4": ((frozenset({"avx2"}), (8, 8)),
              (frozenset({"neon", "dotprod"}), (4, 4))),
    "q8_0": ((frozenset({"neon", "i8mm"}), (4, 8)),
             (frozenset({"neon", "dotprod"}), (4, 4)),
             (frozenset({"rvv256"}), (16, 1))),
    "q1_0": ((frozenset({"neon", "i8mm"}), (4, 8)),
             (frozenset({"neon", "dotprod"}), (4, 4))),
}
assert all(shape in CPU_REPACK_VARIANTS[src] for src, rules in RULES.items() for _, shape in rules)


@dataclass(frozen=True)
class Variant:
    """One of upstream's tensor_traits<block, INTER_SIZE, NB_COLS>: a packed type."""
    source: GGMLType
    nb_cols: int      # rows interleaved together (upstream's NB_COLS): the unit of the layout
    inter: int        # bytes (or elements) taken from each row in turn (INTER_SIZE)
    packed: GGMLType

    @property
    def name(self) -> str:
        """Upstream's name (q4_0_8x8: NB_COLS 8, INTER_SIZE 8)."""
        return f"{self.source.name}_{self.nb_cols}x{self.inter}"


def _variant(source: str, shape: tuple[int, int]) -> Variant:
    s = type_by_name(source)
    packed = TYPES[CPU_REPACK_TYPE_ID_BASE + 64 * CPU_REPACK_SHAPES.index(shape) + s.id]
    return Variant(s, shape[0], shape[1], packed)


VARIANTS: dict[int, Variant] = {v.packed.id: v for v in (
    _variant(src, shape) for src, shapes in CPU_REPACK_VARIANTS.items() for shape in shapes)}
_SOURCES = {v.source.id: v.source for v in VARIANTS.values()}


def variant_for_type_id(type_id: int) -> Variant | None:
    """The variant a packed type id stands for (None: not a cpu-repack type)."""
    return VARIANTS.get(type_id)


def choose(source: GGMLType, ne1: int, features: frozenset[str]) -> tuple[Variant | None, str]:
    """What ggml_repack_get_optimal_repack_type returns for a tensor of this type and ne[1] on a
    CPU with these features: (variant, "") or (None, why not)."""
    rules = RULES.get(source.name, ())
    tried = [shape for need, shape in rules if need <= features]
    for nb_cols, inter in tried:
        if ne1 % nb_cols == 0:
            return _variant(source.name, (nb_cols, inter)), ""
    if not tried:
        return None, "cpu"
    cols = sorted({c for c, _ in tried})
    return None, " or ".join(map(str, cols))


# -- this machine ---------------------------------------------------------------------------------

def _cpuinfo_flags(text: str) -> set[str]:
    """The feature words of /proc/cpuinfo ("flags" on x86, "Features" on ARM)."""
    words: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            words.update(value.split())
    return words


def _sve_vector_bytes() -> int:
    """The SVE vector length in bytes of this thread (prctl PR_SVE_GET_VL; 0 when unknown)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        vl = libc.prctl(51, 0, 0, 0, 0)        # PR_SVE_GET_VL
        return vl & 0xFFFF if vl > 0 else 0    # PR_SVE_VL_LEN_MASK
    except (OSError, AttributeError):
        return 0


def machine_features(cpuinfo: str | None = None, machine: str | None = None,
                     sve_bytes: int | None = None) -> frozenset[str]:
    """The features upstream's choice reads, on this machine (Linux: /proc/cpuinfo). Arguments
    stand in for the machine in tests."""
    machine = (machine or platform.machine()).lower()
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    flags = _cpuinfo_flags(cpuinfo)
    found = set()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        if "avx2" in flags:
            found.add("avx2")
        if "avx512f" in flags:
            found.add("avx512")
    elif machine in ("aarch64", "arm64"):
        found.add("neon")                     # every AArch64 CPU has Advanced SIMD
        if "asimddp" in flags:
            found.add("dotprod")
        if "i8mm" in flags:
            found.add("i8mm")
        if "sve" in flags:
            vl = _sve_vector_bytes() if sve_bytes is None else sve_bytes
            if vl == 32:
                found.add("sve256")
    elif machine.startswith("riscv"):
        # VLEN is not in /proc/cpuinfo: only a build for this machine knows it (rvv256 by name)
        pass
    return frozenset(found)


@lru_cache(maxsize=None)
def _this_machine_features() -> frozenset[str]:
    # read once per process: inspect and convert ask for every tensor, and /proc/cpuinfo is long
    # on a machine with many cores (hundreds of kB)
    return machine_features()


def machine_target(features: frozenset[str] | None = None) -> str | None:
    """What ``auto`` means here: the target whose features upstream would find on this CPU (the
    richest one this CPU has all features of), None when none fits."""
    features = _this_machine_features() if features is None else features
    fitting = [name for name, need in TARGET_FEATURES.items() if need <= features]
    return max(fitting, key=lambda name: len(TARGET_FEATURES[name])) if fitting else None


class CpuRepackLayout(LayoutFamily):
    """upstream llama.cpp's CPU_REPACK layouts, made offline for one CPU target."""

    name = "cpu-repack"
    title = "cpu-repack"
    summary = "upstream llama.cpp's CPU_REPACK layouts for a CPU (--target)"
    runtime = ("llama.cpp built with runtime/llama.cpp (amx-repack's patch), on a CPU of the "
               "file's target")
    unit = "row group"
    kernels = "repack.cpu_repack_kernels"
    hard_codes = {
        "cpu": "the target CPU has no CPU_REPACK variant of this type (upstream keeps it plain "
               "there)",
        "dims": "more than 3 dimensions: upstream's CPU_REPACK runs 2-D weights (MUL_MAT) and "
                "3-D experts (MUL_MAT_ID) only",
    }
    targets = (*TARGET_FEATURES, AUTO)

    def machine_target(self) -> str | None:
        return machine_target()

    def variant_name(self, packed_type_id: int) -> str:
        return VARIANTS[packed_type_id].name

    def resolve_target(self, target: str | None) -> str | None:
        if target is None or target == AUTO:
            found = machine_target()
            if found is None:
                raise ValueError(f"target auto: this machine ({platform.machine()}) has none of "
                                 f"the CPU features upstream's CPU_REPACK layouts need; name a "
                                 f"target ({', '.join(TARGET_FEATURES)})")
            return found
        if target not in TARGET_FEATURES:
            raise ValueError(f"unknown target '{target}' for the {self.name} layout (choose from "
                             f"{', '.join(self.targets)})")
        return target

    def decide(self, t: TensorInfo, overrides=frozenset(), target: str | None = None
               ) -> Decision:
        """What upstream's CPU_REPACK does with ``t`` at load on ``target`` (None: this
        machine, which may fit no target: then nothing is repacked)."""
        if t.type_id in VARIANTS:
            return cannot("packed", f"already in a cpu-repack layout ({VARIANTS[t.type_id].name})")
        if t.type.name not in RULES:
            return cannot("type", f"{t.type.name} has no CPU_REPACK layout upstream")
        if target is None or target == AUTO:
            target = machine_target()
        features = TARGET_FEATURES[target] if target is not None else frozenset()
        where = target or "this machine's CPU"
        if len(t.shape) < 2:
            return cannot("shape_1d", "1-D tensor")
        if t.ne0 <= 0 or t.ne0 % t.type.block_size:
            return cannot("shape_k", f"ne0 = {t.ne0} is not a positive multiple of "
                          f"{t.type.block_size} (the {t.type.name} block)")
        if any(d > 1 for d in t.shape[3:]):
            return cannot("dims", f"{len(t.shape)}-D tensor: upstream's CPU_REPACK runs 2-D "
                          f"weights and 3-D experts only")
        variant, why = choose(t.type, t.ne1, features)
        if variant is None:
            if why == "cpu":
                return cannot("cpu", f"upstream has no {t.type.name} CPU_REPACK variant on "
                              f"{where}")
            return cannot("shape_rows", f"ne1 = {t.ne1} is not a multiple of {why}: upstream "
                          f"does not repack it on {where}")
        if t.name in EMBEDDING_TENSOR_NAMES:
            return Decision(variant.packed, False, "embedding, read by get_rows, which upstream "
                            "never places in CPU_REPACK", "embedding")
        return Decision(variant.packed, True)

    def source_of(self, packed_type_id: int) -> GGMLType | None:
        v = VARIANTS.get(packed_type_id)
        return v.source if v is not None else None

    def source_types(self) -> list[GGMLType]:
        return list(_SOURCES.values())

    def unit_rows(self, packed_type_id: int) -> int:
        return VARIANTS[packed_type_id].nb_cols


LAYOUT = CpuRepackLayout()
