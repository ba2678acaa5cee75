"""Which tensors a layout family repacks, and into what: the eligibility rules in one place.

``convert`` uses these decisions to plan the output, ``inspect`` prints them (target type or the
reason a tensor stays as it is), ``verify`` and ``unpack`` use the reverse direction (which source
type a packed type came from).

A decision is *hard* when the format itself cannot hold the tensor (unsupported type, a shape that
is not a multiple of the tile/group height) and *soft* when it is a safety default that the user
may override with ``--include`` (token embeddings read by get_rows, row counts that a runtime's
kernels need, BF16_R16 that only AVX512-BF16 builds can use). One soft default has its own
explicit override instead of ``--include``: AMX tensors with ``ne1 % 32 != 0``, which the format
holds but llama.cpp's AMX backend never runs (``allow_amx_n16``, ``convert --allow-amx-n16``).

Every decision carries a short machine-readable ``code`` (see ``CODES``) beside its text.

Alignment: the AMX layout changes nothing about ``general.alignment``. The AMX kernels read tiles
with unaligned loads and strided tile loads (no alignment requirement, amx-vnni.md §12), and tiles
(288 bytes for Q4_0, 608 for Q8_0, ...) are not multiples of 64 bytes, so only each tensor's start
could be aligned further; keeping the input's own alignment (the GGUF default 32) changes no
metadata key and pads every tensor as the original does (same offsets wherever the packed size
equals the source size: Q4_0, Q4_1, Q6_K).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .amx_layout import amx_params_for_type_id
from .ggml_types import GGMLType
from .gguf_container import TensorInfo
from .interleaved_layout import INTERLEAVINGS, interleaving_for_type_id

# Read with get_rows (a row lookup), which cannot read packed rows (amx-vnni.md §9.3,
# interleaved.md §5.1). A tied output matrix is the same tensor, so it stays unpacked as well.
EMBEDDING_TENSOR_NAMES = frozenset({"token_embd.weight", "per_layer_token_embd.weight"})

AMX_TILE_ROWS = 16      # the format's hard rule: ne1 % 16 (amx-vnni.md §9.1)
AMX_RUNTIME_ROWS = 32   # llama.cpp's AMX supports_op requires ne1 % 32 (amx-vnni.md §9.2)
# llama.cpp's AMX supports_op: K % 32 for Q4_0/Q4_1/Q8_0, K % 256 for the K-quants and IQ4_XS
# (amx-vnni.md §9.2). Each equals the type's block size, so every valid tensor meets it; it is
# checked anyway so that the rule reads as the runtime states it.
AMX_RUNTIME_K = {"q4_0": 32, "q4_1": 32, "q8_0": 32,
                 "q4_K": 256, "q5_K": 256, "q6_K": 256, "iq4_xs": 256}
AMX_N16_OPTION = "--allow-amx-n16"   # the override's name on the command line

# The runtime that reads each layout's output (printed by inspect and convert).
RUNTIMES = {
    "amx": "llama.cpp built with runtime/llama.cpp (amx-repack's patch)",
    "interleaved": "ik_llama.cpp",
    "none": "any GGUF runtime (plain copy)",
}

# Decision codes: why a tensor is kept (or, for a packed one, what forced it).
CODES = {
    "type": "the type has no layout in this family",
    "packed": "already in a layout of this family",
    "shape_1d": "1-D tensor",
    "shape_k": "ne0 (K) is not a positive multiple of what the format and runtime need (amx: 32 "
               "or 256; interleaved: the block size, a column pair for bf16)",
    "shape_rows": "ne1 is not a multiple of the tile/group height the format needs",
    "shape_n": "ne1 (N) % 32 != 0: llama.cpp's AMX backend does not run it (--allow-amx-n16)",
    "embedding": "token embedding, read by get_rows",
    "experts": "more than 3 dimensions: the AMX runtime runs 2-D weights (MUL_MAT) and 3-D experts "
               "(MUL_MAT_ID) only",
    "runtime_rows": "ne1 is not ik_llama.cpp's safe row multiple",
    "bf16": "bf16_r16 runs only on AVX512-BF16 builds",
    "include": "not matched by --include",
    "forced": "packed because --include overrode a soft default",
    "exclude": "matched by --exclude",
    "allow_amx_n16": "packed with ne1 % 32 != 0 because of --allow-amx-n16",
}


@dataclass(frozen=True)
class Decision:
    target: GGMLType | None    # the packed type the format gives this tensor; None: it cannot
    packs: bool                # whether it is packed (by default, or after the user's options)
    reason: str = ""           # why it is kept; for a packed tensor an optional warning
    code: str = ""             # one of CODES ("" for a plain packed tensor)
    include_overrides: bool = True   # False: --include alone may not pack it (AMX ne1 % 32 != 0)

    @property
    def soft(self) -> bool:
        """Kept only by a safety default, which --include may override."""
        return self.target is not None and not self.packs and self.include_overrides


def _cannot(code: str, reason: str) -> Decision:
    return Decision(None, False, reason, code)


def amx_decision(t: TensorInfo, allow_n16: bool = False) -> Decision:
    """amx-vnni.md §9: exactly what llama.cpp's AMX backend runs, by default.

    Seven source types, at least 2-D, K as the runtime needs it, ne1 % 16 (hard: the format),
    ne1 % 32 (llama.cpp's runtime; lifted only by ``allow_n16``), never the get_rows embeddings
    (soft). 3-D expert tensors follow the same N and K rules, slice by slice (§11): the runtime
    patch runs their MUL_MAT_ID on the AMX kernels from the packed slices; a 4-D weight has no
    kernel there (soft).
    """
    params = amx_params_for_type_id(t.type_id)
    if params is not None and t.type_id == params.packed.id:
        return _cannot("packed", "already AMX-packed")
    if params is None:
        return _cannot("type", f"{t.type.name} has no AMX layout")
    if len(t.shape) < 2:
        return _cannot("shape_1d", "1-D tensor")
    k_multiple = AMX_RUNTIME_K[params.source.name]
    if t.ne0 <= 0 or t.ne0 % k_multiple:
        return _cannot("shape_k", f"ne0 = {t.ne0} is not a positive multiple of {k_multiple} (K "
                       f"rule of the AMX format and of llama.cpp's AMX backend for {t.type.name})")
    if t.ne1 % AMX_TILE_ROWS:
        return _cannot("shape_rows", f"ne1 = {t.ne1} is not a multiple of {AMX_TILE_ROWS} "
                       f"(AMX tile height)")
    runtime_rows = t.ne1 % AMX_RUNTIME_ROWS == 0
    if t.name in EMBEDDING_TENSOR_NAMES:
        reason = "embedding, read by get_rows"
        if not runtime_rows and not allow_n16:
            reason += (f"; ne1 = {t.ne1} is not a multiple of {AMX_RUNTIME_ROWS} either "
                       f"(--include packs it only with {AMX_N16_OPTION})")
        return Decision(params.packed, False, reason, "embedding",
                        include_overrides=runtime_rows or allow_n16)
    if any(d > 1 for d in t.shape[3:]):
        return Decision(params.packed, False, f"{len(t.shape)}-D tensor: the AMX runtime runs 2-D "
                        "weights and 3-D experts only", "experts")
    if not runtime_rows:
        if not allow_n16:
            return Decision(params.packed, False, f"ne1 = {t.ne1} is not a multiple of "
                            f"{AMX_RUNTIME_ROWS}: llama.cpp's AMX backend needs N % "
                            f"{AMX_RUNTIME_ROWS} (pack anyway with {AMX_N16_OPTION})", "shape_n",
                            include_overrides=False)
        return Decision(params.packed, True, f"ne1 = {t.ne1} is not a multiple of "
                        f"{AMX_RUNTIME_ROWS}, packed because of {AMX_N16_OPTION}: llama.cpp "
                        f"will not run it on AMX", "allow_amx_n16")
    return Decision(params.packed, True)


def interleaved_decision(t: TensorInfo) -> Decision:
    """interleaved.md §5: ik's own rules (hard) plus the runtime safe multiple (soft)."""
    il = INTERLEAVINGS.get(t.type_id)
    if il is None:
        if interleaving_for_type_id(t.type_id) is not None:
            return _cannot("packed", "already interleaved")
        return _cannot("type", f"{t.type.name} has no lossless interleaved type")
    if len(t.shape) < 2:
        return _cannot("shape_1d", "1-D tensor")
    if t.ne0 <= 0 or t.ne0 % il.column_multiple:
        return _cannot("shape_k", f"ne0 = {t.ne0} is not a positive multiple of "
                       f"{il.column_multiple} ({il.target.name} interleaves whole "
                       f"{'column pairs' if il.column_multiple == 2 else 'blocks'})")
    if t.ne1 % il.rows:
        return _cannot("shape_rows", f"ne1 = {t.ne1} is not a multiple of {il.rows} "
                       f"({il.target.name} rows per group)")
    if t.name in EMBEDDING_TENSOR_NAMES:
        return Decision(il.target, False, "embedding, read by get_rows", "embedding")
    if t.ne1 % il.runtime_row_multiple:
        return Decision(il.target, False, f"ne1 = {t.ne1} is not a multiple of "
                        f"{il.runtime_row_multiple}: ik's AVX-512 {il.target.name} kernel would "
                        f"abort", "runtime_rows")
    if t.type.name == "bf16":
        return Decision(il.target, False,
                        "bf16_r16 runs only on AVX512-BF16 builds of ik_llama.cpp", "bf16")
    return Decision(il.target, True)


# The default decisions (what inspect shows and convert does without overrides).
DECIDERS = {"amx": amx_decision, "interleaved": interleaved_decision}


def decide(layout: str, t: TensorInfo, allow_amx_n16: bool = False) -> Decision:
    """The decision for one tensor and layout family, with the explicit AMX N % 16 override."""
    if layout == "amx":
        return amx_decision(t, allow_amx_n16)
    return DECIDERS[layout](t)


def compile_patterns(patterns: Sequence[str], option: str) -> list[re.Pattern]:
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as e:
            raise ValueError(f"{option} {p!r} is not a valid regular expression: {e}") from None
    return compiled


def select(decision: Decision, name: str, include: Sequence[re.Pattern] = (),
           exclude: Sequence[re.Pattern] = ()) -> Decision:
    """Apply --include / --exclude (searched anywhere in the name) to a default decision.

    --include narrows (tensors it does not match are kept) and widens (a tensor it matches is
    packed despite a soft default); a tensor the format cannot hold is never forced, nor an AMX
    tensor with ne1 % 32 != 0 (only --allow-amx-n16 packs that). --exclude is applied last and
    wins.
    """
    if decision.target is None:
        return decision
    if include:
        if not any(p.search(name) for p in include):
            return Decision(decision.target, False, "not matched by --include", "include")
        if decision.soft:
            decision = Decision(decision.target, True, f"forced by --include ({decision.reason})",
                                "forced")
    if decision.packs and any(p.search(name) for p in exclude):
        return Decision(decision.target, False, "matched by --exclude", "exclude")
    return decision
