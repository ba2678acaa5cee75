"""Every tensor type id that occurs in GGUF files in the wild, with its size rule.

One table, used by the container reader (to size and check every tensor), by the layouts (to map a
source type to its packed type) and by ``inspect`` (to print names).

The ids come from three enums that share one number space:

* upstream ggml / gguf-py (``GGMLQuantizationType``), including ids that were removed later but
  still occur in old files (31-33: the old ARM Q4_0_4_4/4_8/8_8 re-layouts);
* ik_llama.cpp's additions: its own quant types (133-158), its row-interleaved ``_R4/_R8/_R16``
  types (202-399) and internal formats that never should, but might, appear in a file;
* amx-repack's AMX-packed types, ``1024 + source id`` (spec ``amx-vnni.md`` §12.1);
* amx-repack's cpu-repack types, upstream's CPU_REPACK layouts, ``2048 + 64 * shape + source id``
  (``docs/cpu-repack.md``).

Size rule (ggml's ``ggml_row_size``): a row of ``ne0`` elements takes
``row_meta + ne0 / block_size * type_size`` bytes; a tensor takes that times ``ne1 * ne2 * ne3``.
``row_meta`` is non-zero only for ik's types with a per-row scale (f32 or fp16 before the blocks).
The numbers were cross-checked against the ``ggml_blck_size``/``ggml_type_size``/``ggml_row_size``
of ik_llama.cpp's own library (see ``tests/test_ggml_types.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

# The offset that turns a source type id into its AMX-packed type id (amx-vnni.md §12.1).
AMX_TYPE_ID_BASE = 1024


@dataclass(frozen=True)
class GGMLType:
    id: int
    name: str          # ggml's own spelling, as ggml_type_name prints it ("q4_K", "iq4_xs_r8")
    block_size: int    # elements per block
    type_size: int     # bytes per block
    row_meta: int = 0  # bytes in front of each row's blocks (ik row-scale types)
    origin: str = "ggml"  # "ggml", "ik", "ik-interleaved", "removed", "internal", "amx",
    #                       "cpu-repack"

    @property
    def is_quantized(self) -> bool:
        return self.block_size > 1

    def row_bytes(self, ne0: int) -> int:
        if ne0 % self.block_size:
            raise ValueError(f"{self.name}: row length {ne0} is not a multiple of {self.block_size}")
        return self.row_meta + ne0 // self.block_size * self.type_size

    def tensor_bytes(self, shape: tuple[int, ...]) -> int:
        rows = 1
        for n in shape[1:]:
            rows *= n
        return self.row_bytes(shape[0]) * rows


def _t(id: int, name: str, block_size: int, type_size: int, row_meta: int = 0,
       origin: str = "ggml") -> GGMLType:
    return GGMLType(id, name, block_size, type_size, row_meta, origin)


_BASE_TYPES = [
    # upstream ggml
    _t(0, "f32", 1, 4), _t(1, "f16", 1, 2),
    _t(2, "q4_0", 32, 18), _t(3, "q4_1", 32, 20),
    _t(6, "q5_0", 32, 22), _t(7, "q5_1", 32, 24),
    _t(8, "q8_0", 32, 34), _t(9, "q8_1", 32, 36, origin="internal"),
    _t(10, "q2_K", 256, 84), _t(11, "q3_K", 256, 110), _t(12, "q4_K", 256, 144),
    _t(13, "q5_K", 256, 176), _t(14, "q6_K", 256, 210),
    _t(15, "q8_K", 256, 292, origin="internal"),
    _t(16, "iq2_xxs", 256, 66), _t(17, "iq2_xs", 256, 74), _t(18, "iq3_xxs", 256, 98),
    _t(19, "iq1_s", 256, 50), _t(20, "iq4_nl", 32, 18), _t(21, "iq3_s", 256, 110),
    _t(22, "iq2_s", 256, 82), _t(23, "iq4_xs", 256, 136),
    _t(24, "i8", 1, 1), _t(25, "i16", 1, 2), _t(26, "i32", 1, 4), _t(27, "i64", 1, 8),
    _t(28, "f64", 1, 8), _t(29, "iq1_m", 256, 56), _t(30, "bf16", 1, 2),
    # removed upstream, still found in old files (runtime re-layouts of Q4_0 / IQ4_NL)
    _t(31, "q4_0_4x4", 32, 18, origin="removed"), _t(32, "q4_0_4x8", 32, 18, origin="removed"),
    _t(33, "q4_0_8x8", 32, 18, origin="removed"),
    _t(34, "tq1_0", 256, 54), _t(35, "tq2_0", 256, 66),
    # 36 is ik's I2_S (upstream's removed IQ4_NL_4_4 had the same id; ik files are the live ones)
    _t(36, "i2_s", 1, 1, origin="ik"),
    _t(37, "iq4_nl_4x8", 32, 18, origin="removed"), _t(38, "iq4_nl_8x8", 32, 18, origin="removed"),
    _t(39, "mxfp4", 32, 17), _t(40, "nvfp4", 64, 36),
    _t(41, "q1_0", 128, 18),
    # ik_llama.cpp internal activation formats (never written by its tools, listed to be tolerant)
    _t(97, "q8_0_x4", 32, 34, origin="internal"), _t(98, "q8_1_x4", 32, 36, origin="internal"),
    _t(99, "q8_2_x4", 32, 36, origin="internal"),
    # ik_llama.cpp quant types
    _t(133, "q6_0", 32, 26, origin="ik"),
    _t(134, "iq1_bn", 64, 13, 2, origin="ik"), _t(135, "iq2_bn", 64, 16, 4, origin="ik"),
    _t(136, "q8_K64", 64, 68, origin="internal"),
    _t(137, "iq2_k", 256, 76, origin="ik"), _t(138, "iq3_k", 256, 110, origin="ik"),
    _t(139, "iq4_k", 256, 144, origin="ik"), _t(140, "iq5_k", 256, 176, origin="ik"),
    _t(141, "iq6_k", 256, 212, origin="ik"),
    _t(144, "iq4_ks", 256, 136, 4, origin="ik"), _t(145, "iq2_ks", 256, 70, 2, origin="ik"),
    _t(146, "iq4_kss", 256, 128, 4, origin="ik"),
    _t(147, "q8_K16", 64, 64, 20, origin="internal"), _t(148, "q8_K32", 256, 296, origin="internal"),
    _t(149, "q8_KR8", 256, 296, origin="internal"), _t(150, "q8_K128", 128, 140, origin="internal"),
    _t(151, "q8_KV", 32, 32, 8, origin="ik"),
    _t(152, "iq5_ks", 256, 168, 4, origin="ik"),
    _t(153, "iq2_kt", 256, 68, 4, origin="ik"), _t(154, "iq3_kt", 256, 100, 4, origin="ik"),
    _t(155, "iq4_kt", 256, 128, 4, origin="ik"), _t(156, "iq3_ks", 256, 102, 2, origin="ik"),
    _t(157, "iq2_kl", 256, 86, 2, origin="ik"), _t(158, "iq1_kt", 256, 56, 4, origin="ik"),
]

# ik_llama.cpp's row-interleaved types: same block size and bytes per block as the source type
# (interleaved.md §3), except where noted.
_IK_INTERLEAVED = [
    _t(202, "q4_0_r8", 32, 18), _t(206, "q5_0_r4", 32, 22), _t(208, "q8_0_r8", 32, 34),
    _t(210, "q2_k_r4", 256, 84), _t(211, "q3_k_r4", 256, 110), _t(212, "q4_k_r4", 256, 144),
    _t(213, "q5_k_r4", 256, 176), _t(214, "q6_k_r4", 256, 210),
    _t(216, "iq2_xxs_r4", 256, 66), _t(217, "iq2_xs_r4", 256, 74), _t(218, "iq3_xxs_r4", 256, 98),
    _t(219, "iq1_s_r4", 32, 6, 2), _t(220, "iq4_nl_r4", 32, 18), _t(221, "iq3_s_r4", 256, 110),
    _t(222, "iq2_s_r4", 256, 82), _t(223, "iq4_xs_r8", 256, 136), _t(229, "iq1_m_r4", 32, 7, 2),
    _t(230, "bf16_r16", 1, 2), _t(233, "q6_0_r4", 32, 26),
    _t(335, "iq2_bn_r4", 64, 16, 4), _t(337, "iq2_k_r4", 256, 76), _t(338, "iq3_k_r4", 256, 110),
    _t(339, "iq4_k_r4", 256, 144), _t(340, "iq5_k_r4", 256, 176), _t(344, "iq4_ks_r4", 256, 136, 4),
    _t(352, "iq5_ks_r4", 256, 168, 4), _t(353, "mxfp4_r8", 32, 17),
    _t(397, "q8_k_r16", 256, 258), _t(398, "q8_KV_r8", 32, 32, 4), _t(399, "q8_k_r8", 256, 258),
]
_IK_INTERLEAVED = [GGMLType(t.id, t.name, t.block_size, t.type_size, t.row_meta,
                            "internal" if t.id == 397 else "ik-interleaved")
                   for t in _IK_INTERLEAVED]

# AMX-packed types (amx-vnni.md §12.1): block size of the source, bytes per block BS + EXTRA.
AMX_EXTRA_BYTES = {"q4_0": 0, "q4_1": 0, "q8_0": 4, "q4_K": 4, "q5_K": 4, "q6_K": 0, "iq4_xs": 2}

_BY_NAME_BASE = {t.name: t for t in _BASE_TYPES}
_AMX = [
    GGMLType(AMX_TYPE_ID_BASE + _BY_NAME_BASE[src].id, "amx_" + src, _BY_NAME_BASE[src].block_size,
             _BY_NAME_BASE[src].type_size + extra, 0, "amx")
    for src, extra in AMX_EXTRA_BYTES.items()
]

# cpu-repack types: upstream llama.cpp's CPU_REPACK layouts (ggml-cpu/repack.cpp), one per
# variant = (source type, NB_COLS, INTER_SIZE) of its tensor_traits, named as upstream names them
# (q4_0_4x8: NB_COLS 4, INTER_SIZE 8). Id 2048 + 64 * shape index + source id; the same block size
# and bytes per block as the source (the repacked tensor has the source's size).
CPU_REPACK_TYPE_ID_BASE = 2048
CPU_REPACK_SHAPES = ((4, 4), (4, 8), (8, 4), (8, 8), (16, 1))   # (NB_COLS, INTER_SIZE) by index
CPU_REPACK_VARIANTS = {   # every variant upstream's ggml_repack_get_optimal_repack_type returns
    "q1_0": ((4, 4), (4, 8)),
    "q4_0": ((4, 4), (4, 8), (8, 8), (16, 1)),
    "q4_K": ((8, 4), (8, 8), (16, 1)),
    "q5_K": ((8, 4), (8, 8)),
    "q6_K": ((8, 4), (8, 8)),
    "q2_K": ((8, 8), (16, 1)),
    "iq4_nl": ((4, 4), (8, 8), (16, 1)),
    "mxfp4": ((4, 4), (8, 8)),
    "q8_0": ((4, 4), (4, 8), (16, 1)),
}
_CPU_REPACK = [
    GGMLType(CPU_REPACK_TYPE_ID_BASE + 64 * CPU_REPACK_SHAPES.index(shape) + _BY_NAME_BASE[src].id,
             f"cpu_{src}_{shape[0]}x{shape[1]}", _BY_NAME_BASE[src].block_size,
             _BY_NAME_BASE[src].type_size, 0, "cpu-repack")
    for src, shapes in CPU_REPACK_VARIANTS.items() for shape in shapes
]

TYPES: dict[int, GGMLType] = {t.id: t for t in (*_BASE_TYPES, *_IK_INTERLEAVED, *_AMX,
                                                *_CPU_REPACK)}
TYPES_BY_NAME: dict[str, GGMLType] = {t.name.lower(): t for t in TYPES.values()}

assert len(TYPES) == (len(_BASE_TYPES) + len(_IK_INTERLEAVED) + len(_AMX)
                      + len(_CPU_REPACK)), "duplicate type id"
assert len(TYPES_BY_NAME) == len(TYPES), "duplicate type name"


def ggml_type(type_id: int) -> GGMLType:
    """The type with this id; KeyError when no known file format uses the id."""
    return TYPES[type_id]


def type_by_name(name: str) -> GGMLType:
    """Case-insensitive lookup ("Q4_K", "q4_k", "IQ4_XS_R8")."""
    return TYPES_BY_NAME[name.lower()]


def type_name(type_id: int) -> str:
    t = TYPES.get(type_id)
    return t.name if t else f"unknown({type_id})"
