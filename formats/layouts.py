"""Which tensors a layout family repacks, and into what: the eligibility rules in one place.

``convert`` uses these decisions to plan the output, ``inspect`` prints them (target type or the
reason a tensor stays as it is), ``verify`` and ``unpack`` use the reverse direction (which source
type a packed type came from).

A decision is *hard* when the format itself cannot hold the tensor (unsupported type, a shape that
is not a multiple of the tile/group height) and *soft* when it is a safety default that the user
may override with ``--include`` (token embeddings read by get_rows, row counts that a runtime's
kernels need, BF16_R16 that only AVX512-BF16 builds can use).
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

AMX_TILE_ROWS = 16
AMX_RUNTIME_ROWS = 32   # upstream's AMX supports_op requires ne1 % 32 (amx-vnni.md §9.2)


@dataclass(frozen=True)
class Decision:
    target: GGMLType | None    # the packed type the format gives this tensor; None: it cannot
    packs: bool                # whether it is packed (by default, or after --include/--exclude)
    reason: str = ""           # why it is kept; for a packed tensor an optional warning

    @property
    def soft(self) -> bool:
        """Kept only by a safety default, which --include may override."""
        return self.target is not None and not self.packs


def _cannot(reason: str) -> Decision:
    return Decision(None, False, reason)


def amx_decision(t: TensorInfo) -> Decision:
    """amx-vnni.md §9: seven source types, ne1 % 16 (hard), ne1 % 32 (warning), no embeddings."""
    params = amx_params_for_type_id(t.type_id)
    if params is not None and t.type_id == params.packed.id:
        return _cannot("already AMX-packed")
    if params is None:
        return _cannot(f"{t.type.name} has no AMX layout")
    if len(t.shape) < 2:
        return _cannot("1-D tensor")
    if t.ne1 % AMX_TILE_ROWS:
        return _cannot(f"ne1 = {t.ne1} is not a multiple of {AMX_TILE_ROWS} (AMX tile height)")
    if t.name in EMBEDDING_TENSOR_NAMES:
        return Decision(params.packed, False, "embedding, read by get_rows")
    warning = ""
    if t.ne1 % AMX_RUNTIME_ROWS:
        warning = f"ne1 = {t.ne1} is not a multiple of {AMX_RUNTIME_ROWS}: upstream's AMX kernels skip it"
    return Decision(params.packed, True, warning)


def interleaved_decision(t: TensorInfo) -> Decision:
    """interleaved.md §5: ik's own rules (hard) plus the runtime safe multiple (soft)."""
    il = INTERLEAVINGS.get(t.type_id)
    if il is None:
        if interleaving_for_type_id(t.type_id) is not None:
            return _cannot("already interleaved")
        return _cannot(f"{t.type.name} has no lossless interleaved type")
    if len(t.shape) < 2:
        return _cannot("1-D tensor")
    if t.ne1 % il.rows:
        return _cannot(f"ne1 = {t.ne1} is not a multiple of {il.rows} ({il.target.name} rows per group)")
    if t.name in EMBEDDING_TENSOR_NAMES:
        return Decision(il.target, False, "embedding, read by get_rows")
    if t.ne1 % il.runtime_row_multiple:
        return Decision(il.target, False, f"ne1 = {t.ne1} is not a multiple of "
                        f"{il.runtime_row_multiple}: ik's AVX-512 {il.target.name} kernel would abort")
    if t.type.name == "bf16":
        return Decision(il.target, False, "bf16_r16 runs only on AVX512-BF16 builds of ik_llama.cpp")
    return Decision(il.target, True)


DECIDERS = {"amx": amx_decision, "interleaved": interleaved_decision}


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
    packed despite a soft default); a tensor the format cannot hold is never forced. --exclude
    is applied last and wins.
    """
    if decision.target is None:
        return decision
    if include:
        if not any(p.search(name) for p in include):
            return Decision(decision.target, False, "not matched by --include")
        if not decision.packs:
            decision = Decision(decision.target, True, f"forced by --include ({decision.reason})")
    if decision.packs and any(p.search(name) for p in exclude):
        return Decision(decision.target, False, "matched by --exclude")
    return decision
