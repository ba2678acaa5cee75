"""Which tensors a layout family repacks, and into what: the registry of the families and the
rules they share.

Each family is one ``formats/*_layout.py`` module whose ``LAYOUT`` (a ``formats.family
.LayoutFamily``) holds its table and its own eligibility rules; this module finds them
(``FAMILY_TABLES``) and holds what every family shares: the decision codes, the overrides, the
include/exclude selection. ``convert`` uses these decisions to plan the output, ``inspect`` prints
them (target type or the reason a tensor stays as it is), ``verify`` and ``unpack`` use the reverse
direction (which source type a packed type came from).

A decision is *hard* when the tensor must stay as it is whatever the user asks: the format cannot
hold it (unsupported type, a shape that is not a multiple of the tile/group height), or the runtime
cannot use it packed at all (the token embeddings, read row by row with get_rows, which cannot read
packed rows: a packed tied embedding makes ik_llama.cpp generate zeros). It is *soft* when it is a
safety default for a tensor the format holds and some runtime build can run packed (each family's
``soft_codes``: e.g. AMX tensors with ``ne1 % 32 != 0``, tensors whose ``ne1`` is not ik's AVX-512
safe multiple). The caller lifts a soft default only by naming it (``overrides``, ``convert
--override CODE``); the include/exclude patterns only narrow the selection (``select``).

Every decision carries a short machine-readable ``code`` (see ``CODES``) beside its text. The
codes a layout may override are ``SOFT_CODES[layout]``: data, so that moving a rule from one side
to the other is a one-line change.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import TYPE_CHECKING, Sequence

from .family import EMBEDDING_TENSOR_NAMES, Decision, LayoutFamily   # noqa: F401 (re-exported)

if TYPE_CHECKING:   # annotations only: --help, which reads no file, loads no GGUF reader
    from .gguf_container import TensorInfo


def _discover() -> dict[str, LayoutFamily]:
    """Every family: the ``LAYOUT`` of each ``formats/*_layout.py`` module, by name. A new family
    is a new module there (and its kernels); nothing here changes."""
    from . import __path__ as package_path
    found = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(package_path)):
        if module.endswith("_layout"):
            family = getattr(importlib.import_module(f"{__package__}.{module}"), "LAYOUT", None)
            if isinstance(family, LayoutFamily):
                found[family.name] = family
    return dict(sorted(found.items()))


FAMILY_TABLES: dict[str, LayoutFamily] = _discover()
DEFAULT_LAYOUT = "amx"
# convert --layout: the packed layouts, and a plain copy
LAYOUTS = (*FAMILY_TABLES, "none")

# The runtime that reads each layout's output (printed by inspect and convert).
RUNTIMES = {**{name: f.runtime for name, f in FAMILY_TABLES.items()},
            "none": "any GGUF runtime (plain copy)"}

# Decision codes: why a tensor is kept (or, for a packed one, what was overridden). Stable: they
# are part of the JSON outputs (docs/json.md).
# Rules of the formats themselves (the tensor has no packed form at all).
_FORMAT_RULES = {
    "type": "the type has no layout in this family",
    "packed": "already in a layout of this family",
    "shape_1d": "1-D tensor",
    "shape_k": "ne0 (K) is not a positive multiple of what the format and runtime need (the "
               "family's column unit: a block, or more)",
    "shape_rows": "ne1 is not a multiple of the tile/group height the format needs",
}
FORMAT_CODES = tuple(_FORMAT_RULES)
CODES = {
    **_FORMAT_RULES,
    "embedding": "token embedding, read by get_rows, which cannot read packed rows",
    # each family's own hard rules, then its soft defaults
    **{code: meaning for f in FAMILY_TABLES.values() for code, meaning in f.hard_codes.items()},
    **{code: meaning for f in FAMILY_TABLES.values()
       for code, (meaning, _) in f.soft_codes.items()},
    "include": "matched by no include pattern",
    "exclude": "matched by an exclude pattern",
    "override": "packed although a soft default keeps it: the caller overrode that default",
    "none": "layout none: a plain copy",
}

# The soft defaults of each layout: the only codes an override may name.
SOFT_CODES = {name: tuple(f.soft_codes) for name, f in FAMILY_TABLES.items()}
# What packing despite each soft default means for the runtime (the override's warning).
OVERRIDE_CONSEQUENCES = {code: consequence for f in FAMILY_TABLES.values()
                         for code, (_, consequence) in f.soft_codes.items()}


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
        if code in FORMAT_CODES or any(code in f.hard_codes for f in FAMILY_TABLES.values()):
            raise ValueError(f"'{code}' cannot be overridden: the layout cannot hold such "
                             f"tensors ({CODES[code]})")
        what = f"'{code}' is not a soft default" if code in CODES else f"unknown code '{code}'"
        choices = ", ".join(SOFT_CODES.get(layout, ())) or "none"
        raise ValueError(f"{what}: the {layout} layout can override only {choices}")
    return frozenset(overrides)


def decide(layout: str, t: TensorInfo, overrides=frozenset(), allow_amx_n16: bool = False,
           target: str | None = None) -> Decision:
    """The decision for one tensor and layout family, with the caller's overrides (codes of
    ``SOFT_CODES[layout]``; ``allow_amx_n16`` is the older spelling of overriding "shape_n") and,
    for a family with CPU targets, the target (None: this machine's)."""
    overrides = frozenset(overrides) | ({"shape_n"} if allow_amx_n16 else set())
    return FAMILY_TABLES[layout].decide(t, overrides, target)


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
