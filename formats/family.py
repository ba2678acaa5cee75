"""What a layout family is, on the formats side: the interface every ``formats/*_layout.py``
implements (its table and its eligibility rules) with one ``LAYOUT`` object.

``formats.layouts`` finds those modules and is the registry the rest of the tool reads (convert,
verify, unpack, inspect, the records, the command line); none of that code names a family. Its
kernels are one ``native/`` file wrapped by one ``repack/*_kernels.py`` module, named here by
``kernels`` and loaded only when a command runs them (``repack.families``).

Every question below is asked of a *packed* type id where the answer depends on the packed
layout (row unit, column multiple): a family may give one source type several packed types (one
per CPU target), never one packed type several sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .ggml_types import TYPES, GGMLType

if TYPE_CHECKING:   # annotations only: --help, which reads no file, loads no GGUF reader
    from .gguf_container import TensorInfo

# Read with get_rows (a row lookup), which cannot read packed rows (amx-vnni.md §9.3,
# interleaved.md §5.1). A tied output matrix is the same tensor, so it stays unpacked as well.
EMBEDDING_TENSOR_NAMES = frozenset({"token_embd.weight", "per_layer_token_embd.weight"})


@dataclass(frozen=True)
class Decision:
    target: GGMLType | None    # the packed type the format gives this tensor; None: it cannot
    packs: bool                # whether it is packed (by default, or after the caller's options)
    reason: str = ""           # why it is kept; for a packed tensor, what was overridden
    code: str = ""             # one of formats.layouts.CODES ("" for a tensor packed by default)
    soft: tuple[str, ...] = ()        # kept: the soft defaults keeping it (all overridable)
    overridden: tuple[str, ...] = ()  # packed: the soft defaults the caller overrode


def cannot(code: str, reason: str) -> Decision:
    """A tensor the layout cannot hold at all (a hard rule)."""
    return Decision(None, False, reason, code)


def soft_defaults(target: GGMLType, kept: list[tuple[str, str]], overrides) -> Decision:
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


class LayoutFamily:
    """One layout family's table and rules. Subclasses set the attributes and implement the
    methods that raise NotImplementedError; the others have defaults that fit most families."""

    name: str                  # --layout NAME, and amx_repack.layout in the files it writes
    title: str                 # in messages ("AMX", "interleaved")
    summary: str               # one phrase for --layout's help
    runtime: str               # the runtime that reads its output (printed by convert, inspect)
    unit: str                  # what unit_rows counts ("tile", "row group")
    kernels: str               # module of its kernel wrapper (see repack.families.Kernels)
    # its soft defaults, in the order docs/json.md lists them: code -> (meaning, what packing
    # despite it means for the runtime; the override's warning)
    soft_codes: dict[str, tuple[str, str]] = {}
    # its own hard rules beyond the shared ones (formats.layouts.FORMAT_CODES, "embedding"):
    # code -> meaning
    hard_codes: dict[str, str] = {}
    validity_check: bool = False   # its packed data carries redundant fields verify checks
    unties_output: bool = False    # convert --untie-output may add a packed output.weight
    relabels_file_type: bool = False   # its conversion rewrites general.file_type
    # CPU targets (convert --target): a family with targets packs for one of them, named in the
    # file's records; "auto" picks this machine's. Empty: the layout does not depend on the CPU.
    targets: tuple[str, ...] = ()

    # -- the decision ----------------------------------------------------------------------
    def decide(self, t: TensorInfo, overrides=frozenset(), target: str | None = None
               ) -> Decision:
        """What the family does with tensor ``t`` (for a family with targets: on ``target``,
        a name of ``targets``; None: this machine's)."""
        raise NotImplementedError

    def machine_target(self) -> str | None:
        """For a family with targets, which the stock runtime picks itself at load (upstream's
        CPU_REPACK): the target this machine is (what ``auto`` means here; None: none fits)."""
        return None

    def variant_name(self, packed_type_id: int) -> str:
        """A packed type as its runtime names it (upstream: q4_0_8x8)."""
        return TYPES[packed_type_id].name

    def resolve_target(self, target: str | None) -> str | None:
        """The target a conversion packs for, given what the caller asked (None: the default);
        ValueError for a name the family does not know. None for a family without targets."""
        if target is not None:
            raise ValueError(f"the {self.name} layout takes no target (it is the same on every "
                             f"CPU)")
        return None

    # -- the types -------------------------------------------------------------------------
    def source_of(self, packed_type_id: int) -> GGMLType | None:
        """The source type a packed type of this family holds (None: not one of its types)."""
        raise NotImplementedError

    def source_types(self) -> list[GGMLType]:
        """Every source type the family can pack (on some target)."""
        raise NotImplementedError

    def unit_rows(self, packed_type_id: int) -> int:
        """Rows of one unit of the packed layout (a tile, a row group): the smallest piece that
        packs independently."""
        raise NotImplementedError

    def column_multiple(self, packed_type_id: int) -> int:
        """ne0 of a packed tensor is a positive multiple of this (by default the source block
        size)."""
        return self.source_of(packed_type_id).block_size

    def packed_type(self, packed_type_id: int) -> GGMLType:
        return TYPES[packed_type_id]

    # -- general.file_type -----------------------------------------------------------------
    def repacked_file_type(self, file_type: int) -> int | None:
        """The general.file_type a conversion writes for an input's (None: left unchanged)."""
        return None

    def plain_file_type(self, file_type: int) -> tuple[bool, int | None]:
        """For a file without our records (unpack --foreign): whether ``file_type`` is a label
        this family's own tool writes, and the plain file type it stands for (None: unknown)."""
        return False, None
