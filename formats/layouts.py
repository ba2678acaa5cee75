"""Which tensors a layout family repacks, and into what: the eligibility rules in one place.

``convert`` uses these decisions to plan the output, ``inspect`` prints them (target type or the
reason a tensor stays as it is), ``verify`` and ``unpack`` use the reverse direction (which source
type a packed type came from).

A decision is *hard* when the tensor must stay as it is whatever the user asks: the format cannot
hold it (unsupported type, a shape that is not a multiple of the tile/group height), or the runtime
cannot use it packed at all (the token embeddings, read row by row with get_rows, which cannot read
packed rows: a packed tied embedding makes ik_llama.cpp generate zeros). It is *soft* when it is a
safety default for a tensor the format holds and some runtime build can run packed: AMX tensors with
``ne1 % 32 != 0`` and weights of more than 3 dimensions (the AMX runtime runs neither), tensors
whose ``ne1`` is not ik's AVX-512 safe multiple (AVX2/NEON builds run them), BF16_R16 (AVX512-BF16
builds only). The caller lifts a soft default only by naming it (``overrides``, ``convert --override
CODE``); the include/exclude patterns only narrow the selection (``select``).

Every decision carries a short machine-readable ``code`` (see ``CODES``) beside its text. The
codes a layout may override are ``SOFT_CODES[layout]``: data, so that moving a rule from one side
to the other is a one-line change.

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

from .ggml_types import GGMLType
from .gguf_container import TensorInfo

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
# convert --layout: the two packed layouts, and a plain copy
LAYOUTS = ("amx", "interleaved", "none")

# The runtime that reads each layout's output (printed by inspect and convert).
RUNTIMES = {
    # where to get each: a pip install has neither runtime/ nor ik_llama.cpp's tools
    "amx": ("llama.cpp with amx-repack's patch, on a CPU with AMX (build it from amx-repack's "
            "source, repository or sdist: python runtime/llama.cpp/build.py)"),
    "interleaved": ("ik_llama.cpp (with pip: pip install 'amx-repack[ik]', then "
                    "python -m repack.ik_generate FILE)"),
    "none": "any GGUF runtime (plain copy)",
}

# Decision codes: why a tensor is kept (or, for a packed one, what was overridden). Stable: they
# are part of the JSON outputs (docs/json.md).
CODES = {
    "type": "the type has no layout in this family",
    "packed": "already in a layout of this family",
    "shape_1d": "1-D tensor",
    "shape_k": "ne0 (K) is not a positive multiple of what the format and runtime need (amx: 32 "
               "or 256; interleaved: the block size, a column pair for bf16)",
    "shape_rows": "ne1 is not a multiple of the tile/group height the format needs",
    "embedding": "token embedding, read by get_rows, which cannot read packed rows",
    "shape_n": "ne1 (N) % 32 != 0: llama.cpp's AMX backend does not run it",
    "experts": "more than 3 dimensions: the AMX runtime runs 2-D weights (MUL_MAT) and 3-D experts "
               "(MUL_MAT_ID) only",
    "runtime_rows": "ne1 is not ik_llama.cpp's safe row multiple (its AVX-512 kernels abort)",
    "bf16": "bf16_r16 runs only on AVX512-BF16 builds",
    "include": "matched by no include pattern",
    "exclude": "matched by an exclude pattern",
    "override": "packed although a soft default keeps it: the caller overrode that default",
    "none": "layout none: a plain copy",
}

# Rules of the formats themselves (the tensor has no packed form at all).
FORMAT_CODES = ("type", "packed", "shape_1d", "shape_k", "shape_rows")
# The soft defaults of each layout: the only codes an override may name.
SOFT_CODES = {
    "amx": ("shape_n", "experts"),
    "interleaved": ("runtime_rows", "bf16"),
}
# What packing despite each soft default means for the runtime (the override's warning).
OVERRIDE_CONSEQUENCES = {
    "shape_n": "llama.cpp's AMX backend will not run these tensors (it needs ne1 % 32 == 0)",
    "experts": "the AMX runtime has no kernel for weights of more than 3 dimensions, so it will "
               "not run these tensors",
    "runtime_rows": "ik_llama.cpp's AVX-512 builds abort on these tensors (AVX2/NEON builds run "
                    "them)",
    "bf16": "only AVX512-BF16 builds of ik_llama.cpp run bf16_r16",
}


@dataclass(frozen=True)
class Decision:
    target: GGMLType | None    # the packed type the format gives this tensor; None: it cannot
    packs: bool                # whether it is packed (by default, or after the caller's options)
    reason: str = ""           # why it is kept; for a packed tensor, what was overridden
    code: str = ""             # one of CODES ("" for a tensor packed by default)
    soft: tuple[str, ...] = ()        # kept: the soft defaults keeping it (all overridable)
    overridden: tuple[str, ...] = ()  # packed: the soft defaults the caller overrode


def _cannot(code: str, reason: str) -> Decision:
    return Decision(None, False, reason, code)


def _soft(target: GGMLType, kept: list[tuple[str, str]], overrides) -> Decision:
    """A tensor the format holds, kept by the soft defaults in ``kept`` (code, reason) unless the
    caller overrides every one of them."""
    if not kept:
        return Decision(target, True)
    left = [(c, r) for c, r in kept if c not in overrides]
    if left:
        return Decision(target, False, "; ".join(r for _, r in left), left[0][0],
                        soft=tuple(c for c, _ in kept))
    return Decision(target, True, "; ".join(r for _, r in kept), "override",
                    overridden=tuple(c for c, _ in kept))


def amx_decision(t: TensorInfo, overrides=frozenset()) -> Decision:
    """amx-vnni.md §9: exactly what llama.cpp's AMX backend runs, by default.

    Seven source types, at least 2-D, K as the runtime needs it, ne1 % 16 (hard: the format),
    never the get_rows embeddings (hard: the runtime), ne1 % 32 (soft ``shape_n``: llama.cpp's
    runtime). 3-D expert tensors follow the same N and K rules, slice by slice (§11): the runtime
    patch runs their MUL_MAT_ID on the AMX kernels from the packed slices; a weight of more than 3
    dimensions has no kernel there (soft ``experts``).
    """
    from .amx_layout import amx_params_for_type_id   # here: `--help` needs none of the tables
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
    if t.name in EMBEDDING_TENSOR_NAMES:
        return Decision(params.packed, False, "embedding, read by get_rows, which cannot read "
                        "packed rows", "embedding")
    kept = []
    if any(d > 1 for d in t.shape[3:]):
        kept.append(("experts", f"{len(t.shape)}-D tensor: the AMX runtime runs 2-D weights and "
                                f"3-D experts only"))
    if t.ne1 % AMX_RUNTIME_ROWS:
        kept.append(("shape_n", f"ne1 = {t.ne1} is not a multiple of {AMX_RUNTIME_ROWS}: "
                                f"llama.cpp's AMX backend needs N % {AMX_RUNTIME_ROWS}"))
    return _soft(params.packed, kept, overrides)


def interleaved_decision(t: TensorInfo, overrides=frozenset()) -> Decision:
    """interleaved.md §5: ik's own rules (hard) plus the runtime safe multiple and BF16 (soft)."""
    from .interleaved_layout import INTERLEAVINGS, interleaving_for_type_id
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
        return Decision(il.target, False, "embedding, read by get_rows, which cannot read "
                        "interleaved rows", "embedding")
    kept = []
    if t.ne1 % il.runtime_row_multiple:
        kept.append(("runtime_rows", f"ne1 = {t.ne1} is not a multiple of "
                     f"{il.runtime_row_multiple}: ik's AVX-512 {il.target.name} kernel would "
                     f"abort"))
    if t.type.name == "bf16":
        kept.append(("bf16", "bf16_r16 runs only on AVX512-BF16 builds of ik_llama.cpp"))
    return _soft(il.target, kept, overrides)


# The default decisions (what inspect shows and convert does without overrides).
DECIDERS = {"amx": amx_decision, "interleaved": interleaved_decision}


def check_overrides(layout: str, overrides) -> frozenset[str]:
    """The override codes, checked against ``layout``'s soft defaults: a ValueError names one
    that is unknown, belongs to another layout, or is a hard rule (never overridable)."""
    for code in overrides:
        if code in SOFT_CODES.get(layout, ()):
            continue
        if code == "embedding":
            raise ValueError("'embedding' cannot be overridden: runtimes read the token "
                             "embeddings with get_rows, which cannot read packed rows (a packed "
                             "tied embedding makes the model generate garbage)")
        others = [name for name, codes in SOFT_CODES.items() if code in codes]
        if others:
            raise ValueError(f"'{code}' is a soft default of the {others[0]} layout, not of "
                             f"{layout}")
        if code in FORMAT_CODES:
            raise ValueError(f"'{code}' cannot be overridden: the layout cannot hold such "
                             f"tensors ({CODES[code]})")
        what = f"'{code}' is not a soft default" if code in CODES else f"unknown code '{code}'"
        choices = ", ".join(SOFT_CODES.get(layout, ())) or "none"
        raise ValueError(f"{what}: the {layout} layout can override only {choices}")
    return frozenset(overrides)


def decide(layout: str, t: TensorInfo, overrides=frozenset(), allow_amx_n16: bool = False
           ) -> Decision:
    """The decision for one tensor and layout family, with the caller's overrides (codes of
    ``SOFT_CODES[layout]``; ``allow_amx_n16`` is the older spelling of overriding "shape_n")."""
    overrides = frozenset(overrides) | ({"shape_n"} if allow_amx_n16 else set())
    return DECIDERS[layout](t, overrides)


def compile_patterns(patterns: Sequence[str], what: str) -> list[re.Pattern]:
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as e:
            raise ValueError(f"{what} pattern {p!r} is not a valid regular expression: {e}") \
                from None
    return compiled


def select(decision: Decision, name: str, include: Sequence[re.Pattern] = (),
           exclude: Sequence[re.Pattern] = ()) -> Decision:
    """Narrow a decision with the include / exclude patterns (searched anywhere in the name).

    They only narrow: a tensor that would be packed stays unpacked when include patterns are
    given and none matches it, or when an exclude pattern matches it. They never pack a tensor
    that a default keeps (only an explicit override lifts a soft default). A tensor kept by a
    soft default that the patterns deselect is labelled by the patterns (an override would not
    pack it either); one kept by a hard rule keeps that rule's code.
    """
    if not (decision.packs or decision.soft):
        return decision
    if include and not any(p.search(name) for p in include):
        return Decision(decision.target, False, "matched by no include pattern", "include")
    if any(p.search(name) for p in exclude):
        return Decision(decision.target, False, "matched by an exclude pattern", "exclude")
    return decision
