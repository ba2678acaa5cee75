"""The two layout families as the pipeline sees them: native kernels, work units.

(Which tensors each family packs is decided in ``formats.layouts``.)

A *unit* is the smallest independent piece of a tensor: a 16-row strip for the AMX layout, a group
of R rows for the interleaved one. A run of whole units occupies a contiguous byte range both in the
source and in the packed tensor (``units * unit_rows * row_bytes`` on each side), and packing it
needs nothing outside it. So every chunk is handed to the kernels as if it were a small tensor of
its own: threads process chunks in any order and the result is identical for any chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass

from formats.amx_layout import amx_params_for_type_id
from formats.ggml_types import GGMLType, TYPES
from formats.gguf_container import TensorInfo
from formats.interleaved_layout import INTERLEAVINGS, interleaving_for_type_id
from formats.layouts import AMX_TILE_ROWS

from . import amx_kernels, interleaved_kernels
from .errors import InputError

LAYOUT_VERSION = 3   # of our records (metadata.py); 1 and 2 are still read


@dataclass(frozen=True)
class Family:
    name: str

    # -- type relations --------------------------------------------------------------------
    def source_of(self, packed_type_id: int) -> GGMLType | None:
        """The source type a packed type of this family came from (None: not one of ours)."""
        if self.name == "amx":
            p = amx_params_for_type_id(packed_type_id)
            return p.source if p is not None and packed_type_id == p.packed.id else None
        il = interleaving_for_type_id(packed_type_id)
        return il.source if il is not None and packed_type_id == il.target.id else None

    def target_of(self, source_type_id: int) -> GGMLType:
        if self.name == "amx":
            return amx_params_for_type_id(source_type_id).packed
        return INTERLEAVINGS[source_type_id].target

    def unit_rows(self, source_type_id: int) -> int:
        return AMX_TILE_ROWS if self.name == "amx" else INTERLEAVINGS[source_type_id].rows

    def shape_problem(self, source_type_id: int, t: TensorInfo) -> str | None:
        """Why a tensor of this family's packed type cannot hold its shape (None: it can). The
        layout stores whole units only: rows past the last whole unit would be in no unit, so no
        packed tensor has them (convert never writes one), and a file that claims one is damaged."""
        unit = self.unit_rows(source_type_id)
        if len(t.shape) < 2 or t.ne1 % unit:
            return (f"ne1 = {t.ne1} is not a multiple of {unit}, the {self.name} layout's "
                    f"{'tile' if self.name == 'amx' else 'row group'} height: the rows past the last "
                    f"whole {'tile' if self.name == 'amx' else 'group'} cannot be in that layout")
        return None

    def column_multiple(self, source_type_id: int) -> int:
        """ne0 of a packed tensor is a positive multiple of this: the source block size (for
        bf16, a column pair: interleaved.md §5.1)."""
        if self.name == "amx":
            return TYPES[source_type_id].block_size
        return INTERLEAVINGS[source_type_id].column_multiple

    # -- chunks ----------------------------------------------------------------------------
    def chunks(self, source_type_id: int, t: TensorInfo, chunk_bytes: int):
        """Yield (source byte range, packed byte range, rows) covering the tensor in whole units.

        Its ne0 must be a positive multiple of the family's column unit: nothing else can be
        packed (convert never packs such a tensor), and a packed tensor that claims another ne0
        (a damaged or hostile file) is refused here, before any kernel sees it."""
        multiple = self.column_multiple(source_type_id)
        if t.ne0 <= 0 or t.ne0 % multiple:
            raise InputError(f"tensor '{t.name}' ({t.type.name}): ne0 = {t.ne0} is not a positive "
                             f"multiple of {multiple}, which the "
                             f"{self.target_of(source_type_id).name} layout needs")
        unit = self.unit_rows(source_type_id)
        src_row = TYPES[source_type_id].row_bytes(t.ne0)
        dst_row = self.target_of(source_type_id).row_bytes(t.ne0)
        units = t.rows // unit
        per_chunk = max(1, chunk_bytes // (unit * src_row))
        for a in range(0, units, per_chunk):
            b = min(a + per_chunk, units)
            r0, r1 = a * unit, b * unit
            yield (r0 * src_row, r1 * src_row), (r0 * dst_row, r1 * dst_row), r1 - r0

    # -- kernels on one chunk (a whole number of units, seen as a tensor of `rows` rows) ---
    def pack(self, source_type_id: int, ne0: int, rows: int, src, dst) -> None:
        if self.name == "amx":
            amx_kernels.pack(source_type_id, src, dst, rows, ne0)
        else:
            interleaved_kernels.interleave(source_type_id, src, dst, ne0, rows)

    def unpack(self, source_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        if self.name == "amx":
            amx_kernels.unpack(source_type_id, packed, dst, rows, ne0)
        else:
            interleaved_kernels.deinterleave(source_type_id, packed, dst, ne0, rows)

    def first_invalid_row(self, source_type_id: int, ne0: int, rows: int, packed) -> int | None:
        """Redundant fields a packed layout carries (AMX Q8_0 sums, scale ranges) that do not
        match its data; None when all are consistent (interleaved layouts carry none)."""
        if self.name == "amx":
            return amx_kernels.check(source_type_id, packed, rows, ne0)
        return None

    def check_chunk(self, source_type_id: int, ne0: int, rows: int, packed, original, rebuilt,
                    values: bool):
        """Both checks of verify on one chunk, fused in native code (repack/chunk_checks.py):
        the packed data's validity, the inverse kernel into ``rebuilt`` against ``original``
        (None: none), and with ``values`` the two float decoders element by element. Returns the
        first Mismatch, or None."""
        from . import chunk_checks   # only verify and convert --verify need the fused checks
        return chunk_checks.check_chunk(self.name, source_type_id, self.target_of(source_type_id).id,
                                        ne0, rows, packed, original, rebuilt, values)

    def can_dequantize(self, source_type_id: int) -> bool:
        """Whether both float decoders (source layout and packed layout) exist for this type."""
        from . import block_decoders   # only verify needs the decoders
        if not block_decoders.can_dequantize(source_type_id):
            return False
        if self.name == "amx":
            return True
        return block_decoders.can_dequantize(self.target_of(source_type_id).id)

    def dequantize_packed(self, source_type_id: int, ne0: int, rows: int, packed, dst) -> None:
        """float32 values straight from the packed layout (not via unpack)."""
        from . import block_decoders
        if self.name == "amx":
            amx_kernels.dequantize(source_type_id, packed, dst, rows, ne0)
        else:
            block_decoders.dequantize_interleaved(self.target_of(source_type_id).id, packed, dst,
                                                  ne0, rows)


def dequantize_source(type_id: int, ne0: int, rows: int, src, dst) -> None:
    from . import block_decoders
    block_decoders.dequantize_rows(type_id, src, dst, ne0, rows)


FAMILIES = {name: Family(name) for name in ("amx", "interleaved")}


def family_of_packed(type_id: int) -> Family | None:
    for f in FAMILIES.values():
        if f.source_of(type_id) is not None:
            return f
    return None
