"""The layout families as the pipeline sees them: work units and native kernels.

(Which tensors each family packs, and its types, are its table in ``formats/*_layout.py``,
found by ``formats.layouts``.) A family here is that table plus its kernels: the ``KERNELS`` of
the wrapper module the table names (``repack/*_kernels.py`` over one ``native/*.c``), loaded on
first use, so that ``inspect`` and ``--help`` load none of them. Nothing here names a family.

A *unit* is the smallest independent piece of a tensor: a 16-row strip for the AMX layout, a group
of R rows for the interleaved one. A run of whole units occupies a contiguous byte range both in the
source and in the packed tensor (``units * unit_rows * row_bytes`` on each side), and packing it
needs nothing outside it. So every chunk is handed to the kernels as if it were a small tensor of
its own: threads process chunks in any order and the result is identical for any chunk size.

Every method takes the *packed* type id: it says which layout (and, for a family with CPU targets,
which variant) the bytes are in, and which source type they hold.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from formats.family import LayoutFamily
from formats.ggml_types import GGMLType, TYPES
from formats.gguf_container import TensorInfo
from formats.layouts import FAMILY_TABLES

from .errors import InputError

LAYOUT_VERSION = 3   # of our records (metadata.py); 1 and 2 are still read


class Kernels(Protocol):
    """What a family's kernel wrapper (its module's ``KERNELS``) provides, on one chunk: a whole
    number of units, seen as a tensor of ``rows`` rows of ``ne0`` columns."""

    # the fused check of verify in native/verify.c (repack/chunk_checks.py): its function name
    verify_check: str

    def pack(self, packed_type_id: int, ne0: int, rows: int, src, dst) -> None: ...

    def unpack(self, packed_type_id: int, ne0: int, rows: int, packed, dst) -> None: ...

    def first_invalid_row(self, packed_type_id: int, ne0: int, rows: int, packed) -> int | None:
        """Redundant fields a packed layout carries that do not match its data (None: all are
        consistent, or the layout carries none)."""

    def verify_check_args(self, packed_type_id: int) -> tuple:
        """The leading arguments of ``verify_check`` (those before the buffers)."""

    def can_dequantize(self, packed_type_id: int) -> bool:
        """Whether a float decoder reads the packed layout directly."""

    def dequantize_packed(self, packed_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        """float32 values straight from the packed layout (not via unpack), rows in source
        order."""


@dataclass(frozen=True)
class Family:
    table: LayoutFamily

    @property
    def name(self) -> str:
        return self.table.name

    @cached_property
    def kernels(self) -> Kernels:
        return importlib.import_module(self.table.kernels).KERNELS

    # -- type relations --------------------------------------------------------------------
    def source_of(self, packed_type_id: int) -> GGMLType | None:
        """The source type a packed type of this family came from (None: not one of ours)."""
        return self.table.source_of(packed_type_id)

    def unit_rows(self, packed_type_id: int) -> int:
        return self.table.unit_rows(packed_type_id)

    def shape_problem(self, t: TensorInfo) -> str | None:
        """Why tensor ``t`` of this family's packed type cannot hold its shape (None: it can).
        The layout stores whole units only: rows past the last whole unit would be in no unit, so
        no packed tensor has them (convert never writes one), and a file that claims one is
        damaged."""
        unit = self.unit_rows(t.type_id)
        if len(t.shape) < 2 or t.ne1 % unit:
            word = self.table.unit
            return (f"ne1 = {t.ne1} is not a multiple of {unit}, the {self.name} layout's "
                    f"{word} height: the rows past the last whole {word.split()[-1]} cannot be "
                    f"in that layout")
        return None

    # -- chunks ----------------------------------------------------------------------------
    def chunks(self, packed_type_id: int, t: TensorInfo, chunk_bytes: int):
        """Yield (source byte range, packed byte range, rows) covering the tensor of shape
        ``t.shape`` in whole units.

        Its ne0 must be a positive multiple of the family's column unit: nothing else can be
        packed (convert never packs such a tensor), and a packed tensor that claims another ne0
        (a damaged or hostile file) is refused here, before any kernel sees it."""
        multiple = self.table.column_multiple(packed_type_id)
        packed = TYPES[packed_type_id]
        if t.ne0 <= 0 or t.ne0 % multiple:
            raise InputError(f"tensor '{t.name}' ({t.type.name}): ne0 = {t.ne0} is not a positive "
                             f"multiple of {multiple}, which the {packed.name} layout needs")
        unit = self.unit_rows(packed_type_id)
        src_row = self.source_of(packed_type_id).row_bytes(t.ne0)
        dst_row = packed.row_bytes(t.ne0)
        units = t.rows // unit
        per_chunk = max(1, chunk_bytes // (unit * src_row))
        for a in range(0, units, per_chunk):
            b = min(a + per_chunk, units)
            r0, r1 = a * unit, b * unit
            yield (r0 * src_row, r1 * src_row), (r0 * dst_row, r1 * dst_row), r1 - r0

    # -- kernels on one chunk (a whole number of units, seen as a tensor of `rows` rows) ---
    def pack(self, packed_type_id: int, ne0: int, rows: int, src, dst) -> None:
        self.kernels.pack(packed_type_id, ne0, rows, src, dst)

    def unpack(self, packed_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        self.kernels.unpack(packed_type_id, ne0, rows, packed, dst)

    def first_invalid_row(self, packed_type_id: int, ne0: int, rows: int, packed) -> int | None:
        return self.kernels.first_invalid_row(packed_type_id, ne0, rows, packed)

    def check_chunk(self, packed_type_id: int, ne0: int, rows: int, packed, original, rebuilt,
                    values: bool, layout: bool = True):
        """verify's checks of one chunk, fused in native code (repack/chunk_checks.py): the
        packed data's validity, the inverse kernel into ``rebuilt`` against ``original`` (None:
        none), with ``layout`` the packer again on the source against every packed byte, and with
        ``values`` the two float decoders element by element. Returns the first Mismatch, or
        None."""
        from . import chunk_checks   # only verify and convert --verify need the fused checks
        k = self.kernels
        return chunk_checks.check_chunk(k.verify_check, k.verify_check_args(packed_type_id),
                                        self.source_of(packed_type_id).id, packed_type_id, ne0,
                                        rows, packed, original, rebuilt, values, layout)

    def can_dequantize(self, packed_type_id: int) -> bool:
        """Whether both float decoders (source layout and packed layout) exist for this type."""
        from . import block_decoders   # only verify needs the decoders
        return (block_decoders.can_dequantize(self.source_of(packed_type_id).id)
                and self.kernels.can_dequantize(packed_type_id))

    def dequantize_packed(self, packed_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        """float32 values straight from the packed layout (not via unpack)."""
        self.kernels.dequantize_packed(packed_type_id, ne0, rows, packed, dst)


def dequantize_source(type_id: int, ne0: int, rows: int, src, dst) -> None:
    from . import block_decoders
    block_decoders.dequantize_rows(type_id, src, dst, ne0, rows)


FAMILIES = {name: Family(table) for name, table in FAMILY_TABLES.items()}


def family_of_packed(type_id: int) -> Family | None:
    for f in FAMILIES.values():
        if f.source_of(type_id) is not None:
            return f
    return None
