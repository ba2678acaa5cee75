"""The AMX VNNI tile layout of llama.cpp's AMX CPU backend, as readable numpy ("spec in code").

Specification: ``shared/spec/amx-vnni.md``; section numbers below refer to it. This module is the
reference the fast C kernels (``native/amx.c``, wrapped by ``repack.amx_kernels``) are tested
against, and the one place that holds the layout table (``AMX_PARAMS``).

How the layout is expressed here:

* ``_fields_<type>(blocks)`` reads the source blocks (section 3) into named per-row values: the
  element codes of section 6, the side data (fp16 bytes, scales, mins), each shaped
  ``[..., 16 rows, n]``;
* ``TILE_LAYOUTS[type]`` is the table of section 7: which field goes into which region, with which
  placement primitive of section 5 (``NIB``, ``VNNI8``, ``HB1``, ``HB2``, ``ROWVEC``, ``SCMAT``,
  ``MINPAIRS``), in tile order;
* ``_blocks_<type>(fields)`` re-encodes fields into source blocks (section 10.1).

``pack`` = fields -> primitives -> tiles, ``unpack`` = tiles -> primitives' inverse -> fields ->
blocks. Everything works on whole arrays; there is no Python loop over elements or tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .lazy import lazy_module
from formats.ggml_types import (AMX_EXTRA_BYTES, AMX_TYPE_ID_BASE, TYPES, TYPES_BY_NAME, GGMLType,
                                type_by_name)
from .family import EMBEDDING_TENSOR_NAMES, Decision, LayoutFamily, cannot, soft_defaults

if TYPE_CHECKING:   # annotations only: --help, which reads no file, loads no GGUF reader
    from .gguf_container import TensorInfo

np = lazy_module("numpy")   # only inside functions: not loaded by --help or inspect

TILE_N = 16  # weight rows per tile (section 2)

# IQ4_NL code table (section 6.6); only the dequantizer needs it, the layout moves indices.
IQ4_NL_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


@dataclass(frozen=True)
class AmxParams:
    source: GGMLType   # the ggml source type (e.g. q4_K, id 12)
    packed: GGMLType   # its AMX-packed type (amx_q4_K, id 1036), spec section 12.1
    qk: int            # elements per source block
    bs: int            # bytes per source block
    extra: int         # side bytes the packer adds per block (Q8_0 comp, K-quant scale expansion)
    tile_size: int     # 16 * (bs + extra)


def _params(name: str) -> AmxParams:
    source = type_by_name(name)
    packed = TYPES[AMX_TYPE_ID_BASE + source.id]
    extra = AMX_EXTRA_BYTES[name]
    assert packed.block_size == source.block_size and packed.type_size == source.type_size + extra
    return AmxParams(source, packed, source.block_size, source.type_size, extra,
                     TILE_N * (source.type_size + extra))


AMX_PARAMS: dict[str, AmxParams] = {name: _params(name) for name in AMX_EXTRA_BYTES}

_PARAMS_BY_ID: dict[int, AmxParams] = {
    **{p.source.id: p for p in AMX_PARAMS.values()},
    **{p.packed.id: p for p in AMX_PARAMS.values()},
}


def amx_params_for_type_id(type_id: int) -> AmxParams | None:
    """Parameters for a source type id (2) or its packed type id (1026); None if neither."""
    return _PARAMS_BY_ID.get(type_id)


# ------------------------------------------------------------------------------------------------
# Placement primitives (section 5). place(values [..., 16, n]) -> region bytes [..., size];
# take(region bytes [..., size]) -> values [..., 16, n]. Byte addresses are written as array axes:
# e.g. NIB's `(e>>3)*64 + 4*r + (e&3)` is the axis order [e>>3][r][e&3].
# ------------------------------------------------------------------------------------------------

def _rows_last(a: np.ndarray, *inner: int) -> np.ndarray:
    """[..., 16, n] -> [..., 16, *inner]"""
    return a.reshape(*a.shape[:-1], *inner)


@dataclass(frozen=True)
class Nib:
    """4-bit codes: byte (e>>3)*64 + 4r + (e&3), low nibble if ((e>>2)&1) == 0 else high."""
    def nbytes(self, qk: int) -> int:
        return qk * 8

    def place(self, codes: np.ndarray) -> np.ndarray:
        c = _rows_last(codes, codes.shape[-1] // 8, 2, 4)           # [.., r, e>>3, (e>>2)&1, e&3]
        b = c[..., 0, :] | (c[..., 1, :] << 4)                      # [.., r, e>>3, e&3]
        return np.swapaxes(b, -3, -2).reshape(*b.shape[:-3], -1)    # [.., e>>3, r, e&3]

    def take(self, region: np.ndarray) -> np.ndarray:
        b = np.swapaxes(region.reshape(*region.shape[:-1], -1, TILE_N, 4), -3, -2)
        c = np.stack([b & 0xF, b >> 4], axis=-2)                    # [.., r, e>>3, half, e&3]
        return c.reshape(*c.shape[:-3], -1)


@dataclass(frozen=True)
class Vnni8:
    """8-bit codes: byte (e>>2)*64 + 4r + (e&3)."""
    def nbytes(self, qk: int) -> int:
        return qk * 16

    def place(self, codes: np.ndarray) -> np.ndarray:
        c = _rows_last(codes, codes.shape[-1] // 4, 4)              # [.., r, e>>2, e&3]
        return np.swapaxes(c, -3, -2).reshape(*c.shape[:-3], -1)

    def take(self, region: np.ndarray) -> np.ndarray:
        c = np.swapaxes(region.reshape(*region.shape[:-1], -1, TILE_N, 4), -3, -2)
        return c.reshape(*c.shape[:-2], -1)                         # [.., r, e]


@dataclass(frozen=True)
class HighBits:
    """Extra high bits, `bits` per element, 8 // bits k-quads sharing one byte.
    HB1 (bits=1, Q5_K bit 4):   byte (e>>5)*64 + 4r + (e&3), bit (e>>2)&7.
    HB2 (bits=2, Q6_K bits 4-5): byte (e>>4)*64 + 4r + (e&3), bits 2*((e>>2)&3) and the next."""
    bits: int

    def nbytes(self, qk: int) -> int:
        return qk * 2 * self.bits

    def place(self, values: np.ndarray) -> np.ndarray:
        per_byte = 8 // self.bits
        v = _rows_last(values, -1, per_byte, 4)                     # [.., r, group, quad t, e&3]
        shifts = (self.bits * np.arange(per_byte, dtype=np.uint8)).reshape(per_byte, 1)
        b = np.bitwise_or.reduce(v << shifts, axis=-2)              # [.., r, group, e&3]
        return np.swapaxes(b, -3, -2).reshape(*b.shape[:-3], -1)

    def take(self, region: np.ndarray) -> np.ndarray:
        per_byte = 8 // self.bits
        b = np.swapaxes(region.reshape(*region.shape[:-1], -1, TILE_N, 4), -3, -2)
        shifts = (self.bits * np.arange(per_byte, dtype=np.uint8)).reshape(per_byte, 1)
        v = (b[..., None, :] >> shifts) & ((1 << self.bits) - 1)    # [.., r, group, t, e&3]
        return v.reshape(*v.shape[:-3], -1)


@dataclass(frozen=True)
class RowVec:
    """One w-byte little-endian value per row: bytes r*w .. r*w+w-1 (values given as bytes)."""
    width: int

    def nbytes(self, qk: int) -> int:
        return TILE_N * self.width

    def place(self, values: np.ndarray) -> np.ndarray:
        return values.reshape(*values.shape[:-2], -1)

    def take(self, region: np.ndarray) -> np.ndarray:
        return region.reshape(*region.shape[:-1], TILE_N, self.width)


@dataclass(frozen=True)
class ScMat:
    """J one-byte values per row, sub-block major: byte 16*j + r."""
    count: int

    def nbytes(self, qk: int) -> int:
        return TILE_N * self.count

    def place(self, values: np.ndarray) -> np.ndarray:
        return np.swapaxes(values, -2, -1).reshape(*values.shape[:-2], -1)

    def take(self, region: np.ndarray) -> np.ndarray:
        return np.swapaxes(region.reshape(*region.shape[:-1], self.count, TILE_N), -2, -1)


@dataclass(frozen=True)
class MinPairs:
    """8 one-byte values per row in int16-VNNI order: byte 32*(j>>1) + 2r + (j&1)."""
    def nbytes(self, qk: int) -> int:
        return TILE_N * 8

    def place(self, values: np.ndarray) -> np.ndarray:
        v = _rows_last(values, 4, 2)                                # [.., r, j>>1, j&1]
        return np.swapaxes(v, -3, -2).reshape(*v.shape[:-3], -1)

    def take(self, region: np.ndarray) -> np.ndarray:
        v = np.swapaxes(region.reshape(*region.shape[:-1], 4, TILE_N, 2), -3, -2)
        return v.reshape(*v.shape[:-2], 8)


NIB, VNNI8, HB1, HB2 = Nib(), Vnni8(), HighBits(1), HighBits(2)
ROWVEC2, ROWVEC4, MINPAIRS = RowVec(2), RowVec(4), MinPairs()

# Section 7: the regions of one tile, in tile order: (field name, primitive).
TILE_LAYOUTS: dict[str, tuple[tuple[str, object], ...]] = {
    "q4_0": (("codes", NIB), ("d", ROWVEC2)),
    "q4_1": (("codes", NIB), ("d", ROWVEC2), ("m", ROWVEC2)),
    "q8_0": (("qs", VNNI8), ("d", ROWVEC2), ("comp", ROWVEC4)),
    "q4_K": (("codes", NIB), ("sc", ScMat(8)), ("mins", MINPAIRS), ("d", ROWVEC2),
             ("dmin", ROWVEC2)),
    "q5_K": (("codes", NIB), ("bit4", HB1), ("sc", ScMat(8)), ("mins", MINPAIRS), ("d", ROWVEC2),
             ("dmin", ROWVEC2)),
    "q6_K": (("codes", NIB), ("bits45", HB2), ("scales", ScMat(16)), ("d", ROWVEC2)),
    "iq4_xs": (("codes", NIB), ("ls_minus_32", ScMat(8)), ("d", ROWVEC2)),
}


# ------------------------------------------------------------------------------------------------
# Section 6 (source fields -> codes and side data) and section 10.1 (the inverse), per type.
# `blocks` is [..., BS] uint8; every field is [..., n] uint8 (the caller's leading axes end in 16
# rows). Low nibble = "& 0xF", high nibble = ">> 4".
# ------------------------------------------------------------------------------------------------

def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[..., n] -> [..., 2, n]: low nibbles, then high nibbles."""
    return np.stack([qs & 0xF, qs >> 4], axis=-2)


def _join_nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (lo & 0xF) | (hi << 4)


def _fields_q4_0(b: np.ndarray) -> dict[str, np.ndarray]:
    # 6.1: c(e) = qs[e] & 0xF for e < 16, qs[e-16] >> 4 for e >= 16
    return {"d": b[..., 0:2], "codes": _nibbles(b[..., 2:18]).reshape(*b.shape[:-1], 32)}


def _blocks_q4_0(f: dict[str, np.ndarray]) -> np.ndarray:
    c = f["codes"]
    return np.concatenate([f["d"], _join_nibbles(c[..., :16], c[..., 16:])], axis=-1)


def _fields_q4_1(b: np.ndarray) -> dict[str, np.ndarray]:
    return {"d": b[..., 0:2], "m": b[..., 2:4],
            "codes": _nibbles(b[..., 4:20]).reshape(*b.shape[:-1], 32)}


def _blocks_q4_1(f: dict[str, np.ndarray]) -> np.ndarray:
    c = f["codes"]
    return np.concatenate([f["d"], f["m"], _join_nibbles(c[..., :16], c[..., 16:])], axis=-1)


def _fields_q8_0(b: np.ndarray) -> dict[str, np.ndarray]:
    qs = b[..., 2:34]
    # 7.3: comp = 128 * sum of the signed quants, int32 little-endian
    comp = (128 * qs.view(np.int8).astype(np.int32).sum(axis=-1, keepdims=True)).astype("<i4")
    return {"d": b[..., 0:2], "qs": qs, "comp": comp.view(np.uint8)}


def _blocks_q8_0(f: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([f["d"], f["qs"]], axis=-1)   # comp is redundant (checked by amx_check)


def _k_scale_min(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """6.3: 12 scale bytes -> sc[8], m[8] (6-bit each)."""
    lo_sc, lo_m, mixed = S[..., 0:4], S[..., 4:8], S[..., 8:12]
    sc = np.concatenate([lo_sc & 63, (mixed & 0xF) | ((lo_sc >> 6) << 4)], axis=-1)
    mins = np.concatenate([lo_m & 63, (mixed >> 4) | ((lo_m >> 6) << 4)], axis=-1)
    return sc, mins


def _k_scale_bytes(sc: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """10.1: sc[8], m[8] -> 12 scale bytes (values masked to their 6 bits)."""
    sc, mins = sc & 63, mins & 63
    return np.concatenate([sc[..., :4] | ((sc[..., 4:] >> 4) << 6),
                           mins[..., :4] | ((mins[..., 4:] >> 4) << 6),
                           (sc[..., 4:] & 0xF) | ((mins[..., 4:] & 0xF) << 4)], axis=-1)


def _k_codes(qs: np.ndarray) -> np.ndarray:
    """6.3: 128 qs bytes -> 256 codes; e = 64p + 32*half + l reads nibble `half` of qs[32p + l]."""
    q = qs.reshape(*qs.shape[:-1], 4, 32)                           # [.., p, l]
    return _nibbles(q).reshape(*qs.shape[:-1], 256)                 # [.., p, half, l]


def _k_qs(codes: np.ndarray) -> np.ndarray:
    c = codes.reshape(*codes.shape[:-1], 4, 2, 32)
    return _join_nibbles(c[..., 0, :], c[..., 1, :]).reshape(*codes.shape[:-1], 128)


def _fields_q4_K(b: np.ndarray) -> dict[str, np.ndarray]:
    sc, mins = _k_scale_min(b[..., 4:16])
    return {"d": b[..., 0:2], "dmin": b[..., 2:4], "sc": sc, "mins": mins,
            "codes": _k_codes(b[..., 16:144])}


def _blocks_q4_K(f: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([f["d"], f["dmin"], _k_scale_bytes(f["sc"], f["mins"]), _k_qs(f["codes"])],
                          axis=-1)


def _fields_q5_K(b: np.ndarray) -> dict[str, np.ndarray]:
    f = _fields_q4_K(np.concatenate([b[..., :16], b[..., 48:176]], axis=-1))
    qh = b[..., 16:48]
    # 6.4: bit 4 of element e = (qh[e & 31] >> (e >> 5)) & 1, i.e. axes [e>>5][e&31]
    shifts = np.arange(8, dtype=np.uint8).reshape(8, 1)
    f["bit4"] = ((qh[..., None, :] >> shifts) & 1).reshape(*b.shape[:-1], 256)
    return f


def _blocks_q5_K(f: dict[str, np.ndarray]) -> np.ndarray:
    bit4 = f["bit4"].reshape(*f["bit4"].shape[:-1], 8, 32)          # [.., e>>5, e&31]
    shifts = np.arange(8, dtype=np.uint8).reshape(8, 1)
    qh = np.bitwise_or.reduce(bit4 << shifts, axis=-2)
    return np.concatenate([f["d"], f["dmin"], _k_scale_bytes(f["sc"], f["mins"]), qh,
                           _k_qs(f["codes"])], axis=-1)


def _fields_q6_K(b: np.ndarray) -> dict[str, np.ndarray]:
    lead = b.shape[:-1]
    ql = b[..., 0:128].reshape(*lead, 2, 64)                        # [.., h, (s&1, l)]
    qh = b[..., 128:192].reshape(*lead, 2, 1, 32)                   # [.., h, 1, l]
    # 6.5: low = nibble (s>>1) of ql[64h + 32(s&1) + l]; high = (qh[32h + l] >> 2s) & 3
    low = _nibbles(ql)                                              # [.., h, s>>1, (s&1, l)]
    high = (qh >> (2 * np.arange(4, dtype=np.uint8)).reshape(4, 1)) & 3   # [.., h, s, l]
    return {"codes": low.reshape(*lead, 256), "bits45": high.reshape(*lead, 256),
            "scales": b[..., 192:208], "d": b[..., 208:210]}


def _blocks_q6_K(f: dict[str, np.ndarray]) -> np.ndarray:
    lead = f["codes"].shape[:-1]
    low = f["codes"].reshape(*lead, 2, 2, 2, 32)                    # [.., h, s>>1, s&1, l]
    ql = _join_nibbles(low[..., 0, :, :], low[..., 1, :, :]).reshape(*lead, 128)
    high = f["bits45"].reshape(*lead, 2, 4, 32)                     # [.., h, s, l]
    shifts = (2 * np.arange(4, dtype=np.uint8)).reshape(4, 1)
    qh = np.bitwise_or.reduce(high << shifts, axis=-2).reshape(*lead, 64)
    return np.concatenate([ql, qh, f["scales"], f["d"]], axis=-1)


def _fields_iq4_xs(b: np.ndarray) -> dict[str, np.ndarray]:
    lead = b.shape[:-1]
    # 6.6: codes of sub-block j = low nibbles of qs[16j .. 16j+15], then their high nibbles
    codes = _nibbles(b[..., 8:136].reshape(*lead, 8, 16)).reshape(*lead, 256)
    scales_h = b[..., 2:4].astype(np.uint16)
    scales_h = scales_h[..., 0] | (scales_h[..., 1] << 8)
    j = np.arange(8)
    ls_lo = (b[..., 4:8][..., j >> 1] >> (4 * (j & 1)).astype(np.uint8)) & 0xF
    ls_hi = ((scales_h[..., None] >> (2 * j).astype(np.uint16)) & 3).astype(np.uint8)
    ls = ls_lo | (ls_hi << 4)
    return {"d": b[..., 0:2], "codes": codes, "ls_minus_32": (ls - np.uint8(32))}  # wraps: int8


def _blocks_iq4_xs(f: dict[str, np.ndarray]) -> np.ndarray:
    lead = f["codes"].shape[:-1]
    ls = (f["ls_minus_32"] + np.uint8(32)) & 63
    scales_l = _join_nibbles(ls[..., 0::2], ls[..., 1::2])
    shifts = (2 * np.arange(8)).astype(np.uint16)
    scales_h = np.bitwise_or.reduce((ls >> 4).astype(np.uint16) << shifts, axis=-1)
    scales_h = np.stack([scales_h & 0xFF, scales_h >> 8], axis=-1).astype(np.uint8)
    c = f["codes"].reshape(*lead, 8, 2, 16)
    qs = _join_nibbles(c[..., 0, :], c[..., 1, :]).reshape(*lead, 128)
    return np.concatenate([f["d"], scales_h, scales_l, qs], axis=-1)


_CODECS: dict[str, tuple[Callable, Callable]] = {
    "q4_0": (_fields_q4_0, _blocks_q4_0), "q4_1": (_fields_q4_1, _blocks_q4_1),
    "q8_0": (_fields_q8_0, _blocks_q8_0), "q4_K": (_fields_q4_K, _blocks_q4_K),
    "q5_K": (_fields_q5_K, _blocks_q5_K), "q6_K": (_fields_q6_K, _blocks_q6_K),
    "iq4_xs": (_fields_iq4_xs, _blocks_iq4_xs),
}

for _name, _p in AMX_PARAMS.items():  # the section 7 tables fill each tile exactly
    assert sum(prim.nbytes(_p.qk) for _, prim in TILE_LAYOUTS[_name]) == _p.tile_size, _name


# ------------------------------------------------------------------------------------------------
# pack / unpack (sections 4, 10, 13)
# ------------------------------------------------------------------------------------------------

def amx_params(type_name) -> AmxParams:
    """Parameters for a type name (any case: "q4_K", "Q4_K", "amx_q4_K") or a source/packed id."""
    if isinstance(type_name, (int, np.integer)):
        p = amx_params_for_type_id(int(type_name))
    else:
        t = TYPES_BY_NAME.get(str(type_name).lower())
        p = amx_params_for_type_id(t.id) if t is not None else None
    if p is None:
        raise ValueError(f"type {type_name!r} has no AMX layout (supported: {', '.join(AMX_PARAMS)})")
    return p


def _as_bytes(buf, nbytes: int, what: str) -> np.ndarray:
    a = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf.reshape(-1)
    if a.dtype != np.uint8:
        a = a.view(np.uint8)
    if a.size != nbytes:
        raise ValueError(f"{what} has {a.size} bytes, expected {nbytes}")
    return a


def _check_shape(p: AmxParams, n_rows: int, k: int) -> None:
    if n_rows < 0 or n_rows % TILE_N:
        raise ValueError(f"{p.source.name}: n_rows={n_rows} is not a multiple of {TILE_N}")
    if k < 0 or k % p.qk:
        raise ValueError(f"{p.source.name}: k={k} is not a multiple of {p.qk}")


def pack(type_name: str, src, n_rows: int, k: int) -> np.ndarray:
    """Pack an [n_rows, k] matrix in standard ggml layout; returns the packed bytes (uint8)."""
    p = amx_params(type_name)
    _check_shape(p, n_rows, k)
    kb = k // p.qk
    nb = n_rows // TILE_N
    blocks = _as_bytes(src, n_rows * kb * p.bs, "src").reshape(nb, TILE_N, kb, p.bs)
    blocks = blocks.transpose(0, 2, 1, 3)                            # [nb, kb, r, BS]: tile order
    fields_of, _ = _CODECS[p.source.name]
    fields = fields_of(blocks)
    regions = [prim.place(fields[name]) for name, prim in TILE_LAYOUTS[p.source.name]]
    return np.concatenate(regions, axis=-1).reshape(-1)


def unpack(type_name: str, packed, n_rows: int, k: int) -> np.ndarray:
    """Exact inverse of :func:`pack`: the standard ggml bytes (uint8) of the [n_rows, k] matrix."""
    p = amx_params(type_name)
    _check_shape(p, n_rows, k)
    kb = k // p.qk
    nb = n_rows // TILE_N
    tiles = _as_bytes(packed, n_rows * kb * (p.bs + p.extra), "packed").reshape(nb, kb, p.tile_size)
    fields, offset = {}, 0
    for name, prim in TILE_LAYOUTS[p.source.name]:
        size = prim.nbytes(p.qk)
        fields[name] = prim.take(tiles[..., offset:offset + size])
        offset += size
    _, blocks_of = _CODECS[p.source.name]
    blocks = blocks_of(fields)                                       # [nb, kb, r, BS]
    return np.ascontiguousarray(blocks.transpose(0, 2, 1, 3)).reshape(-1)


# ------------------------------------------------------------------------------------------------
# The family: which tensors the AMX layout packs (section 9), as the rest of the tool sees it
# ------------------------------------------------------------------------------------------------

AMX_TILE_ROWS = TILE_N  # the format's hard rule: ne1 % 16 (section 9.1)
AMX_RUNTIME_ROWS = 32   # llama.cpp's AMX supports_op requires ne1 % 32 (section 9.2)
# llama.cpp's AMX supports_op: K % 32 for Q4_0/Q4_1/Q8_0, K % 256 for the K-quants and IQ4_XS
# (section 9.2). Each equals the type's block size, so every valid tensor meets it; it is
# checked anyway so that the rule reads as the runtime states it.
AMX_RUNTIME_K = {"q4_0": 32, "q4_1": 32, "q8_0": 32,
                 "q4_K": 256, "q5_K": 256, "q6_K": 256, "iq4_xs": 256}


class AmxLayout(LayoutFamily):
    """llama.cpp's AMX backend tiles.

    Alignment: the AMX layout changes nothing about ``general.alignment``. The AMX kernels read
    tiles with unaligned loads and strided tile loads (no alignment requirement, section 12), and
    tiles (288 bytes for Q4_0, 608 for Q8_0, ...) are not multiples of 64 bytes, so only each
    tensor's start could be aligned further; keeping the input's own alignment (the GGUF default
    32) changes no metadata key and pads every tensor as the original does (same offsets wherever
    the packed size equals the source size: Q4_0, Q4_1, Q6_K).
    """

    name = "amx"
    title = "AMX"
    summary = "llama.cpp AMX VNNI tiles"
    # where to get it: a pip install has no runtime/ folder (the sdist and the repository do)
    runtime = ("llama.cpp with amx-repack's patch, on a CPU with AMX (build it from amx-repack's "
               "source, repository or sdist: python runtime/llama.cpp/build.py)")
    unit = "tile"
    kernels = "repack.amx_kernels"
    soft_codes = {
        "shape_n": ("ne1 (N) % 32 != 0: llama.cpp's AMX backend does not run it",
                    "llama.cpp's AMX backend will not run these tensors (it needs ne1 % 32 == 0)"),
        "experts": ("more than 3 dimensions: the AMX runtime runs 2-D weights (MUL_MAT) and 3-D "
                    "experts (MUL_MAT_ID) only",
                    "the AMX runtime has no kernel for weights of more than 3 dimensions, so it "
                    "will not run these tensors"),
    }
    validity_check = True      # Q8_0 sums, K-quant scale ranges (section 10.2)
    unties_output = True       # formats/tied_output.py

    def decide(self, t: TensorInfo, overrides=frozenset(), target: str | None = None
               ) -> Decision:
        """Section 9: exactly what llama.cpp's AMX backend runs, by default.

        Seven source types, at least 2-D, K as the runtime needs it, ne1 % 16 (hard: the
        format), never the get_rows embeddings (hard: the runtime), ne1 % 32 (soft ``shape_n``:
        llama.cpp's runtime). 3-D expert tensors follow the same N and K rules, slice by slice
        (section 11): the runtime patch runs their MUL_MAT_ID on the AMX kernels from the packed
        slices; a weight of more than 3 dimensions has no kernel there (soft ``experts``).
        """
        params = amx_params_for_type_id(t.type_id)
        if params is not None and t.type_id == params.packed.id:
            return cannot("packed", "already AMX-packed")
        if params is None:
            return cannot("type", f"{t.type.name} has no AMX layout")
        if len(t.shape) < 2:
            return cannot("shape_1d", "1-D tensor")
        k_multiple = AMX_RUNTIME_K[params.source.name]
        if t.ne0 <= 0 or t.ne0 % k_multiple:
            return cannot("shape_k", f"ne0 = {t.ne0} is not a positive multiple of {k_multiple} "
                          f"(K rule of the AMX format and of llama.cpp's AMX backend for "
                          f"{t.type.name})")
        if t.ne1 % AMX_TILE_ROWS:
            return cannot("shape_rows", f"ne1 = {t.ne1} is not a multiple of {AMX_TILE_ROWS} "
                          f"(AMX tile height)")
        if t.name in EMBEDDING_TENSOR_NAMES:
            return Decision(params.packed, False, "embedding, read by get_rows, which cannot read "
                            "packed rows", "embedding")
        kept = []
        if any(d > 1 for d in t.shape[3:]):
            kept.append(("experts", f"{len(t.shape)}-D tensor: the AMX runtime runs 2-D weights "
                                    f"and 3-D experts only"))
        if t.ne1 % AMX_RUNTIME_ROWS:
            kept.append(("shape_n", f"ne1 = {t.ne1} is not a multiple of {AMX_RUNTIME_ROWS}: "
                                    f"llama.cpp's AMX backend needs N % {AMX_RUNTIME_ROWS}"))
        return soft_defaults(params.packed, kept, overrides)

    def source_of(self, packed_type_id: int) -> GGMLType | None:
        p = amx_params_for_type_id(packed_type_id)
        return p.source if p is not None and packed_type_id == p.packed.id else None

    def source_types(self) -> list[GGMLType]:
        return [p.source for p in AMX_PARAMS.values()]

    def unit_rows(self, packed_type_id: int) -> int:
        return AMX_TILE_ROWS


LAYOUT = AmxLayout()
