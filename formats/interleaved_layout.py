"""ik_llama.cpp's row-interleaved types (``_R4``/``_R8``/``_R16``): the layout table and a numpy reference.

Spec: ``shared/spec/interleaved.md``. The table here (which source type becomes which ``_R`` type, R
rows per group, the runtime-safe row multiple, the ``general.file_type`` relabelling) is the one place
the rest of the project reads it from. The fast kernels are in ``native/interleaved.c`` (wrapper:
``repack.interleaved_kernels``); the numpy functions below are a readable, vectorised restatement of
spec §4 for the most common types, used to cross-check the C code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .lazy import lazy_module

from .family import EMBEDDING_TENSOR_NAMES, Decision, LayoutFamily, cannot, soft_defaults
from .ggml_types import GGMLType, type_by_name, type_name

if TYPE_CHECKING:   # annotations only: --help, which reads no file, loads no GGUF reader
    from .gguf_container import TensorInfo

np = lazy_module("numpy")   # only inside functions: not loaded by --help or inspect


@dataclass(frozen=True)
class Interleaving:
    source: GGMLType
    target: GGMLType
    rows: int                  # R: rows interleaved together (4, 8 or 16)
    runtime_row_multiple: int  # spec §5.2 "safe multiple" of ne1 for ik's matrix multiply (16/8/4)

    @property
    def column_multiple(self) -> int:
        """ne0 must be a multiple of this (spec §5.1 rule 5; BF16 works on column pairs)."""
        return 2 if self.source.name == "bf16" else self.source.block_size

    def source_row_bytes(self, ne0: int) -> int:
        return self.source.row_bytes(ne0)

    def target_row_bytes(self, ne0: int) -> int:
        """Bytes per row of the output; differs from the source only for Q8_KV (4-byte row meta)."""
        return self.target.row_bytes(ne0)

    def group_bytes(self, ne0: int) -> int:
        """Bytes of one output group of R rows."""
        return self.rows * self.target_row_bytes(ne0)


# (source, target, R, runtime row multiple): spec §3 and §5.2.
_TABLE = [
    ("q4_0", "q4_0_r8", 8, 16),
    ("q5_0", "q5_0_r4", 4, 8),
    ("q6_0", "q6_0_r4", 4, 8),
    ("q8_0", "q8_0_r8", 8, 16),
    ("q2_K", "q2_k_r4", 4, 4),
    ("q3_K", "q3_k_r4", 4, 4),
    ("q4_K", "q4_k_r4", 4, 8),
    ("q5_K", "q5_k_r4", 4, 8),
    ("q6_K", "q6_k_r4", 4, 4),
    ("iq2_xxs", "iq2_xxs_r4", 4, 4),
    ("iq2_xs", "iq2_xs_r4", 4, 4),
    ("iq2_s", "iq2_s_r4", 4, 4),
    ("iq3_xxs", "iq3_xxs_r4", 4, 4),
    ("iq3_s", "iq3_s_r4", 4, 4),
    ("iq4_nl", "iq4_nl_r4", 4, 8),
    ("iq4_xs", "iq4_xs_r8", 8, 8),
    ("iq2_bn", "iq2_bn_r4", 4, 8),
    ("iq2_k", "iq2_k_r4", 4, 4),
    ("iq3_k", "iq3_k_r4", 4, 4),
    ("iq4_k", "iq4_k_r4", 4, 4),
    ("iq5_k", "iq5_k_r4", 4, 4),
    ("iq4_ks", "iq4_ks_r4", 4, 4),
    ("iq5_ks", "iq5_ks_r4", 4, 4),
    ("mxfp4", "mxfp4_r8", 8, 16),
    ("q8_KV", "q8_KV_r8", 8, 8),
    ("bf16", "bf16_r16", 16, 16),
]

INTERLEAVINGS: dict[int, Interleaving] = {}
for _src, _dst, _rows, _multiple in _TABLE:
    _s, _t = type_by_name(_src), type_by_name(_dst)
    INTERLEAVINGS[_s.id] = Interleaving(_s, _t, _rows, _multiple)
del _src, _dst, _rows, _multiple, _s, _t

_BY_TARGET: dict[int, Interleaving] = {il.target.id: il for il in INTERLEAVINGS.values()}


def interleaving_for_type_id(type_id: int) -> Interleaving | None:
    """The interleaving that reads or writes this type id (a source id or an ``_R`` target id)."""
    return INTERLEAVINGS.get(type_id) or _BY_TARGET.get(type_id)


# Spec §7: ik's `llama-quantize --repack` relabels general.file_type (ik llama_ftype ids) by this
# table, whatever tensors were actually repacked; any other value is left unchanged.
FILE_TYPE_REPACKED: dict[int, int] = {
    2: 202,                     # Q4_0
    7: 207,                     # Q8_0
    8: 208,                     # Q5_0
    10: 210,                    # Q2_K
    11: 211, 12: 211, 13: 211,  # Q3_K_S/M/L
    14: 214, 15: 214,           # Q4_K_S/M
    16: 216, 17: 216,           # Q5_K_S/M
    18: 218,                    # Q6_K
    19: 219,                    # IQ2_XXS
    20: 220,                    # IQ2_XS
    23: 223,                    # IQ3_XXS
    24: 224,                    # IQ1_S
    25: 225,                    # IQ4_NL
    26: 226,                    # IQ3_S
    29: 229,                    # IQ2_M
    30: 230,                    # IQ4_XS
    31: 231,                    # IQ1_M
    32: 232,                    # BF16
    135: 335,                   # Q6_0
    137: 337,                   # IQ2_BN
    138: 338,                   # IQ2_K
    139: 339,                   # IQ3_K
    140: 340,                   # IQ4_K
    141: 341,                   # IQ5_K
    145: 345,                   # IQ4_KS
    150: 350,                   # IQ5_KS
    149: 398,                   # Q8_KV
}

# The inverse, to turn a file that ik itself repacked back into plain types. ik gives the S, M
# and L variants of Q3_K, Q4_K and Q5_K one label each, so those labels do not say which variant
# the file was: the M variant is taken (what llama-quantize's Q3_K / Q4_K / Q5_K names mean).
FILE_TYPE_AMBIGUOUS_CHOICE = {211: 12, 214: 15, 216: 17}
FILE_TYPE_PLAIN: dict[int, int] = {
    **{r: p for p, r in FILE_TYPE_REPACKED.items()}, **FILE_TYPE_AMBIGUOUS_CHOICE}

# ik treats a file as already repacked when its file_type is in this range (spec §7).
FILE_TYPE_REPACKED_RANGE = range(202, 400)


def _lookup(src: int | str | GGMLType) -> Interleaving:
    if isinstance(src, GGMLType):
        src = src.id
    elif isinstance(src, str):
        src = type_by_name(src).id
    il = INTERLEAVINGS.get(int(src))
    if il is None:
        raise ValueError(f"{type_name(int(src))}: no lossless interleaved type")
    return il


def target_bytes(src_type_id: int, ne0: int, nrows: int) -> int:
    """Byte size of the interleaved tensor (same as the source except for Q8_KV)."""
    il = _lookup(src_type_id)
    return il.target.row_bytes(ne0) * nrows


# ------------------------------------------------------------------------------------------------
# numpy reference (spec §4), vectorised. Arrays of blocks are laid out (G, nb, R, ...) = group,
# column block, row in group; each function returns the interleaved bytes of every (group, block).

def _blocks(src: np.ndarray, rows: int, nrows: int, nb: int, type_size: int) -> np.ndarray:
    """Source bytes -> (G, nb, R, type_size): block b of row k of group g at [g, b, k]."""
    return src.reshape(nrows // rows, rows, nb, type_size).transpose(0, 2, 1, 3)


def _stripes(x: np.ndarray, chunk: int) -> np.ndarray:
    """(..., R, n*chunk) per-row bytes -> (..., n*R*chunk): chunk c of rows 0..R-1, then chunk c+1."""
    *lead, rows, n = x.shape
    return x.reshape(*lead, rows, n // chunk, chunk).swapaxes(-3, -2).reshape(*lead, rows * n)


def _flat(*parts: np.ndarray) -> np.ndarray:
    """Concatenate per-block parts (each (G, nb, ...)) into the output bytes."""
    g, nb = parts[0].shape[:2]
    return np.concatenate([p.reshape(g, nb, -1) for p in parts], axis=-1).reshape(-1)


def _legacy4_codes(q: np.ndarray) -> np.ndarray:
    """(..., 16) bytes in legacy nibble order -> (..., 32) codes: v[j] = lo(q[j]), v[j+16] = hi(q[j])."""
    return np.concatenate([q & 0xF, q >> 4], axis=-1)


def _pattern_a(v: np.ndarray) -> np.ndarray:
    """Pattern A (spec §4.1). v: (..., 4 rows, 32 codes) -> (..., 64) slab.
    Slab byte 16q + 4k + i = v_k[i + LO[q]] | v_k[i + HI[q]] << 4."""
    w = v.reshape(*v.shape[:-1], 8, 4)                   # (..., k, m, i): element 4m + i
    lo, hi = w[..., [0, 4, 1, 5], :], w[..., [2, 6, 3, 7], :]  # LO = 0, 16, 4, 20; HI = +8
    slab = (lo & 0xF) | (hi & 0xF) << 4                  # (..., k, q, i)
    return slab.swapaxes(-3, -2).reshape(*v.shape[:-2], 64)


def _pattern_b(v: np.ndarray) -> np.ndarray:
    """Pattern B (spec §4.1). v: (..., 8 rows, 32 codes) -> (..., 128) slab.
    Slab byte 32l + 4k + i = v_k[8l + i] | v_k[8l + i + 4] << 4."""
    w = v.reshape(*v.shape[:-1], 4, 2, 4)                # (..., k, l, half, i)
    slab = (w[..., 0, :] & 0xF) | (w[..., 1, :] & 0xF) << 4  # (..., k, l, i)
    return slab.swapaxes(-3, -2).reshape(*v.shape[:-2], 128)


def _split6(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """6-bit values t[..., n] (n = 0..63) -> (SL[32], SH[16]) with the nibble + 2 bits rule (§4.1)."""
    t = t.astype(np.uint8)
    sl = (t[..., :32] & 0xF) | (t[..., 32:] & 0xF) << 4
    hi = (t >> 4).reshape(*t.shape[:-1], 4, 16)
    sh = hi[..., 0, :] | hi[..., 1, :] << 2 | hi[..., 2, :] << 4 | hi[..., 3, :] << 6
    return sl, sh


def _kquant_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K 12-byte scale field (..., 12) -> 6-bit (scales, mins), each (..., 8)."""
    s = s.astype(np.uint8)
    a, b, c = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = np.concatenate([a & 63, (c & 0xF) | (a >> 6) << 4], axis=-1)
    mn = np.concatenate([b & 63, (c >> 4) | (b >> 6) << 4], axis=-1)
    return sc, mn


def _ref_q8_0(b: np.ndarray) -> np.ndarray:          # §4.2, b: (G, nb, 8, 34)
    return _flat(b[..., 0:2], _stripes(b[..., 2:], 4))


def _ref_q4_0(b: np.ndarray) -> np.ndarray:          # §4.3, b: (G, nb, 8, 18)
    return _flat(b[..., 0:2], _stripes(b[..., 2:], 4))


def _ref_mxfp4(b: np.ndarray) -> np.ndarray:         # §4.4, b: (G, nb, 8, 17)
    return _flat(b[..., 0:1], _stripes(b[..., 1:], 4))


def _ref_iq4_nl(b: np.ndarray) -> np.ndarray:        # §4.5, b: (G, nb, 4, 18)
    return _flat(b[..., 0:2], _pattern_a(_legacy4_codes(b[..., 2:])))


def _ref_iq4_xs(b: np.ndarray) -> np.ndarray:        # §4.8, b: (G, nb, 8, 136)
    g, nb = b.shape[:2]
    scales_h = b[..., 2].astype(np.uint16) | b[..., 3].astype(np.uint16) << 8    # (G, nb, k)
    ib = np.arange(8)
    lo = b[..., 4 + ib // 2] >> (4 * (ib % 2)) & 0xF                              # (G, nb, k, ib)
    sc = lo | (scales_h[..., None] >> (2 * ib) & 3).astype(np.uint8) << 4
    sl, sh = _split6(sc.swapaxes(-1, -2).reshape(g, nb, 64))                      # n = 8*ib + k
    codes = _legacy4_codes(b[..., 8:].reshape(g, nb, 8, 8, 16))                   # (G, nb, k, ib, 32)
    return _flat(b[..., 0:2], sh, sl, _pattern_b(codes.swapaxes(2, 3)))


def _kquant_header(b: np.ndarray) -> list[np.ndarray]:
    """Q4_K_R4/Q5_K_R4 bytes @0..@63: d's, dmin's, scales_h[16], scales_l[32] (n = 4*ib + k)."""
    g, nb = b.shape[:2]
    sc, mn = _kquant_scales(b[..., 4:16])                                          # (G, nb, k, ib)
    sc, mn = sc.swapaxes(-1, -2).reshape(g, nb, 32), mn.swapaxes(-1, -2).reshape(g, nb, 32)
    scales_l = (sc & 0xF) | (mn & 0xF) << 4
    hi = (sc >> 4) | (mn >> 4) << 2
    scales_h = hi[..., :16] | hi[..., 16:] << 4
    return [b[..., 0:2], b[..., 2:4], scales_h, scales_l]


def _kquant4_codes(qs: np.ndarray) -> np.ndarray:
    """(..., 128) K-quant qs -> (..., 8, 32) codes: sub-block 2c = lo(qs[32c..]), 2c+1 = hi."""
    q = qs.reshape(*qs.shape[:-1], 4, 1, 32)
    return np.concatenate([q & 0xF, q >> 4], axis=-2).reshape(*qs.shape[:-1], 8, 32)


def _ref_q4_k(b: np.ndarray) -> np.ndarray:          # §4.9, b: (G, nb, 4, 144)
    codes = _kquant4_codes(b[..., 16:144])                                         # (G, nb, k, ib, 32)
    return _flat(*_kquant_header(b), _pattern_a(codes.swapaxes(2, 3)))


def _ref_q6_k(b: np.ndarray) -> np.ndarray:          # §4.11, b: (G, nb, 4, 210)
    g, nb = b.shape[:2]
    ql = b[..., 0:128].reshape(g, nb, 4, 2, 1, 2, 32)   # (.., h, nibble, p & 1, l)
    ql = np.concatenate([ql & 0xF, ql >> 4], axis=-3)   # (.., h, p >> 1, p & 1, l) = (.., h, p, l)
    qh = b[..., 128:192].reshape(g, nb, 4, 2, 1, 32)
    hbits = qh >> (2 * np.arange(4, dtype=np.uint8))[:, None] & 3                  # (.., h, p, l)
    codes = (ql.reshape(g, nb, 4, 2, 4, 32) | hbits << 4).reshape(g, nb, 4, 8, 32)
    codes = codes.swapaxes(2, 3)                                                   # (G, nb, ib, k, 32)
    u = (codes >> 4 & 3).reshape(g, nb, 8, 4, 8, 4)                                # (.., ib, k, m, i)
    first = u[..., 0, :] | u[..., 2, :] << 2 | u[..., 1, :] << 4 | u[..., 3, :] << 6
    second = u[..., 4, :] | u[..., 6, :] << 2 | u[..., 5, :] << 4 | u[..., 7, :] << 6
    high = np.stack([first, second], axis=-3)                                      # (.., ib, half, k, i)
    scales = b[..., 192:208].reshape(g, nb, 4, 8, 2).transpose(0, 1, 3, 4, 2)      # (.., ib, 2, k)
    return _flat(b[..., 208:210], scales, high, _pattern_a(codes))


def _ref_bf16(b: np.ndarray) -> np.ndarray:          # §4.17, b: (G, pairs, 16, 4)
    return b.reshape(-1)


_REFERENCE = {
    "q8_0": _ref_q8_0, "q4_0": _ref_q4_0, "mxfp4": _ref_mxfp4, "iq4_nl": _ref_iq4_nl,
    "iq4_xs": _ref_iq4_xs, "q4_K": _ref_q4_k, "q6_K": _ref_q6_k,
}
REFERENCE_TYPES = frozenset(type_by_name(n).id for n in (*_REFERENCE, "bf16", "q8_KV"))


def interleave(src: int | str | GGMLType, data, ne0: int, nrows: int) -> np.ndarray:
    """Reference interleave (numpy) of a whole tensor for the types in REFERENCE_TYPES.

    ``data`` is the source tensor's bytes (any buffer); returns the interleaved bytes as uint8."""
    il = _lookup(src)
    name = il.source.name
    if il.source.id not in REFERENCE_TYPES:
        raise NotImplementedError(f"no numpy reference for {name}; use repack.interleaved_kernels")
    if ne0 <= 0 or ne0 % il.column_multiple or nrows < 0 or nrows % il.rows:
        raise ValueError(f"{name}: bad shape ne0={ne0}, nrows={nrows}")
    x = np.frombuffer(data, dtype=np.uint8)
    if x.size != il.source.row_bytes(ne0) * nrows:
        raise ValueError(f"{name}: {x.size} bytes, expected {il.source.row_bytes(ne0) * nrows}")
    if name == "q8_KV":   # §4.16: d's (f32) of the 8 rows, then 4-byte stripes; the sum is dropped
        rows = x.reshape(nrows // 8, 8, 8 + ne0)
        return np.concatenate([rows[..., 0:4].reshape(-1, 32), _stripes(rows[..., 8:], 4)],
                              axis=-1).reshape(-1)
    if name == "bf16":    # §4.17: a column pair = 4 bytes per row
        return _ref_bf16(_blocks(x, 16, nrows, ne0 // 2, 4))
    t = il.source
    return _REFERENCE[name](_blocks(x, il.rows, nrows, ne0 // t.block_size, t.type_size))


# ------------------------------------------------------------------------------------------------
# The family: which tensors become ik's _R types (spec §5), as the rest of the tool sees it
# ------------------------------------------------------------------------------------------------

class InterleavedLayout(LayoutFamily):
    """ik_llama.cpp's row-interleaved types; ik_llama.cpp loads the file directly."""

    name = "interleaved"
    title = "interleaved"
    summary = "ik_llama.cpp _R4/_R8 types"
    # from pip: the ik extra's bindings (ik-llama-cpp-python ships no llama-cli)
    runtime = ("ik_llama.cpp (with pip: pip install 'amx-repack[ik]', then "
               "python -m repack.ik_generate FILE)")
    unit = "row group"
    kernels = "repack.interleaved_kernels"
    soft_codes = {
        "runtime_rows": ("ne1 is not ik_llama.cpp's safe row multiple (its AVX-512 kernels "
                         "abort)",
                         "ik_llama.cpp's AVX-512 builds abort on these tensors (AVX2/NEON builds "
                         "run them)"),
        "bf16": ("bf16_r16 runs only on AVX512-BF16 builds",
                 "only AVX512-BF16 builds of ik_llama.cpp run bf16_r16"),
    }
    relabels_file_type = True   # as ik's llama-quantize --repack does (spec §7)

    def decide(self, t: TensorInfo, overrides=frozenset(), target: str | None = None
               ) -> Decision:
        """Spec §5: ik's own rules (hard) plus the runtime safe multiple and BF16 (soft)."""
        il = INTERLEAVINGS.get(t.type_id)
        if il is None:
            if interleaving_for_type_id(t.type_id) is not None:
                return cannot("packed", "already interleaved")
            return cannot("type", f"{t.type.name} has no lossless interleaved type")
        if len(t.shape) < 2:
            return cannot("shape_1d", "1-D tensor")
        if t.ne0 <= 0 or t.ne0 % il.column_multiple:
            return cannot("shape_k", f"ne0 = {t.ne0} is not a positive multiple of "
                          f"{il.column_multiple} ({il.target.name} interleaves whole "
                          f"{'column pairs' if il.column_multiple == 2 else 'blocks'})")
        if t.ne1 % il.rows:
            return cannot("shape_rows", f"ne1 = {t.ne1} is not a multiple of {il.rows} "
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
        return soft_defaults(il.target, kept, overrides)

    def source_of(self, packed_type_id: int) -> GGMLType | None:
        il = _BY_TARGET.get(packed_type_id)
        return il.source if il is not None else None

    def source_types(self) -> list[GGMLType]:
        return [il.source for il in INTERLEAVINGS.values()]

    def unit_rows(self, packed_type_id: int) -> int:
        return _BY_TARGET[packed_type_id].rows

    def column_multiple(self, packed_type_id: int) -> int:
        return _BY_TARGET[packed_type_id].column_multiple

    def repacked_file_type(self, file_type: int) -> int | None:
        return FILE_TYPE_REPACKED.get(file_type)

    def plain_file_type(self, file_type: int) -> tuple[bool, int | None]:
        return file_type in FILE_TYPE_REPACKED_RANGE, FILE_TYPE_PLAIN.get(file_type)


LAYOUT = InterleavedLayout()
