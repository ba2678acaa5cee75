"""The cpu-repack kernels (native/cpu_repack.c) against upstream's own repacking (the oracle built
from the pinned repack.cpp, tests/cpu_repack_oracle.py) and against gguf-py's decoders:

- pack == upstream's bytes, for every variant, on random blocks with edge cases (negative zero,
  Inf, NaN and subnormal fp16 scales, all-zero and all-one quants) and on real blocks of the
  requantized Gemma fixtures; 3-D experts (ne2 > 1) the same way upstream does them;
- unpack(pack(x)) == x (every variant is lossless);
- dequantize of the packed bytes == gguf.quants.dequantize of the source, bit for bit (Q1_0, which
  gguf-py cannot decode: ggml's dequantize_row_q1_0, written out in numpy below);
- packing in chunks of row groups == packing the whole; the fused verify check on the packed data.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

from formats.ggml_types import TYPES
from formats.gguf_container import read_gguf
from repack import chunk_checks
from repack import cpu_repack_kernels as kernels
from repack._blocks import ffi as blocks_ffi, lib as blocks_lib
from repack._cpu_repack import ffi, lib
from tests.cpu_repack_oracle import UpstreamRefused, upstream_repack

Q1_0, Q4_0, Q8_0, Q2_K, Q4_K, Q5_K, Q6_K, IQ4_NL, MXFP4 = 41, 2, 8, 10, 12, 13, 14, 20, 39

# Every tensor_traits<block, INTER_SIZE, NB_COLS> of the pinned repack.cpp, as (type, NB_COLS, INTER_SIZE).
VARIANTS = [
    (Q1_0, 4, 4), (Q1_0, 4, 8),
    (Q4_0, 4, 4), (Q4_0, 4, 8), (Q4_0, 8, 8), (Q4_0, 16, 1),
    (Q4_K, 8, 4), (Q4_K, 8, 8), (Q4_K, 16, 1),
    (Q5_K, 8, 4), (Q5_K, 8, 8),
    (Q6_K, 8, 4), (Q6_K, 8, 8),
    (Q2_K, 8, 8), (Q2_K, 16, 1),
    (IQ4_NL, 4, 4), (IQ4_NL, 8, 8), (IQ4_NL, 16, 1),
    (MXFP4, 4, 4), (MXFP4, 8, 8),
    (Q8_0, 4, 4), (Q8_0, 4, 8), (Q8_0, 16, 1),
]
IDS = [kernels.variant_name(*v) for v in VARIANTS]

# Byte offsets of the fp16 scales in each source block (ggml-common.h); MXFP4 has a one-byte e8m0.
FP16_FIELDS = {Q1_0: (0,), Q4_0: (0,), Q8_0: (0,), IQ4_NL: (0,), Q4_K: (0, 2), Q5_K: (0, 2),
               Q6_K: (208,), Q2_K: (80, 82), MXFP4: ()}
EDGE_FP16 = [0x8000, 0x0000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE01, 0x0001, 0x83FF, 0x7BFF]


def random_rows(src_type: int, ne0: int, n_rows: int, seed: int) -> np.ndarray:
    """n_rows rows of valid blocks (every bit pattern of these types is a valid block), with the
    edge cases placed in the first blocks of the rows."""
    t = TYPES[src_type]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (n_rows, ne0 // t.block_size, t.type_size), dtype=np.uint8)
    flat = blocks.reshape(-1, t.type_size)
    for i, value in enumerate(EDGE_FP16):
        if i < len(flat):
            for off in FP16_FIELDS[src_type]:
                flat[i, off:off + 2] = np.frombuffer(np.uint16(value).tobytes(), np.uint8)
    if src_type == MXFP4:
        flat[:4, 0] = [0, 1, 254, 255]
    scale_fields = {off for off in FP16_FIELDS[src_type]} | {off + 1 for off in FP16_FIELDS[src_type]}
    quant_bytes = [b for b in range(t.type_size) if b not in scale_fields and not (src_type == MXFP4 and b == 0)]
    if len(flat) > 3:   # extreme codes: all quant bits 0, all 1
        flat[-1, quant_bytes] = 0
        flat[-2, quant_bytes] = 0xFF
    return blocks.reshape(n_rows, -1)


def source_values(src_type: int, rows: np.ndarray) -> np.ndarray:
    """The reference decoder of the source rows: gguf-py; Q1_0 (not in gguf-py): ggml's
    dequantize_row_q1_0 (value = bit ? d : -d, d the fp16 scale)."""
    if src_type == Q1_0:
        blocks = rows.reshape(rows.shape[0], -1, 18)
        d = blocks[..., :2].copy().view(np.float16).astype(np.float32)          # (rows, nb, 1)
        bits = np.unpackbits(blocks[..., 2:], axis=-1, bitorder="little").astype(bool)
        return np.where(bits, d, -d).reshape(rows.shape[0], -1)
    with np.errstate(all="ignore"):   # the edge-case scales (Inf, NaN) are the point
        return gguf_quants.dequantize(rows, GGMLQuantizationType(src_type))


def pack(variant, src: np.ndarray, ne0: int) -> np.ndarray:
    out = np.zeros_like(src)
    kernels.pack(*variant, src, out, ne0, src.shape[0])
    return out


def check_variant(variant, src: np.ndarray, ne0: int, ne1: int, ne2: int = 1) -> None:
    """Every property of the kernels on one tensor (src: ne1 * ne2 rows)."""
    n_rows = ne1 * ne2
    packed = pack(variant, src, ne0)
    assert packed.tobytes() == upstream_repack(*variant, src, ne0, ne1, ne2), "pack differs from upstream"
    back = np.zeros_like(src)
    kernels.unpack(*variant, packed, back, ne0, n_rows)
    assert np.array_equal(back, src), "unpack(pack(x)) != x"
    want = source_values(variant[0], src).view(np.uint32)
    got = kernels.dequantize(*variant, packed, ne0, n_rows).view(np.uint32)
    bad = np.argwhere(want != got)
    assert len(bad) == 0, f"values differ at {bad[0]}: {want[tuple(bad[0])]:#x} vs {got[tuple(bad[0])]:#x}"


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_random_blocks_match_upstream(variant):
    src_type, nb_cols, _ = variant
    ne0 = 3 * TYPES[src_type].block_size
    src = random_rows(src_type, ne0, 2 * nb_cols, seed=nb_cols * 100 + src_type)
    check_variant(variant, src, ne0, 2 * nb_cols)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_experts_match_upstream(variant):
    """A 3-D tensor [ne0, ne1, ne2]: upstream repacks all ne1 * ne2 rows as one sequence."""
    src_type, nb_cols, _ = variant
    ne0, ne1, ne2 = 2 * TYPES[src_type].block_size, nb_cols, 3
    src = random_rows(src_type, ne0, ne1 * ne2, seed=7 + src_type)
    check_variant(variant, src, ne0, ne1, ne2)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_chunks_pack_independently(variant):
    src_type, nb_cols, _ = variant
    ne0 = TYPES[src_type].block_size * 2
    src = random_rows(src_type, ne0, 5 * nb_cols, seed=3)
    whole = pack(variant, src, ne0)
    rows_bytes = TYPES[src_type].row_bytes(ne0)
    for cut in (nb_cols, 3 * nb_cols):   # chunks [0, cut) and [cut, end)
        first, second = pack(variant, src[:cut], ne0), pack(variant, src[cut:], ne0)
        assert np.concatenate([first, second]).tobytes() == whole.tobytes()
        back = np.zeros_like(src[cut:])
        kernels.unpack(*variant, whole[cut:], back, ne0, src.shape[0] - cut)
        assert np.array_equal(back, src[cut:])
    assert whole.nbytes == rows_bytes * src.shape[0]


def test_upstream_refuses_what_it_would_leave_plain():
    """ne1 not a multiple of NB_COLS: upstream's repack returns -1 (the tensor stays plain)."""
    src = random_rows(Q4_0, 64, 12, seed=1)
    with pytest.raises(UpstreamRefused):
        upstream_repack(Q4_0, 8, 8, src, 64, 12)


def test_variant_set_is_upstreams():
    """The oracle exposes exactly the variants repack.cpp specializes; the kernels have the same."""
    for src_type in (Q1_0, Q4_0, Q8_0, Q2_K, Q4_K, Q5_K, Q6_K, IQ4_NL, MXFP4, 3, 11, 23):
        for nb_cols, inter in kernels.SHAPES:
            assert kernels.has_variant(src_type, nb_cols, inter) == ((src_type, nb_cols, inter) in VARIANTS)


def test_q1_0_source_decoder_is_ggmls():
    """blocks.c's Q1_0 source decoder (verify's reference side) against ggml's rule in numpy."""
    src = random_rows(Q1_0, 256, 6, seed=5)
    got = np.zeros((6, 256), np.float32)
    assert blocks_lib.blk_dequantize_rows(Q1_0, blocks_ffi.from_buffer(src),
                                          blocks_ffi.from_buffer("float[]", got), 256, 0, 6) == 0
    assert np.array_equal(got.view(np.uint32), source_values(Q1_0, src).view(np.uint32))


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_fused_check(variant):
    """vf_check_cpu_repack: clean on packed data; a flipped packed byte is a BYTES mismatch."""
    src_type, nb_cols, inter = variant
    ne0, rows = TYPES[src_type].block_size * 2, 2 * nb_cols
    src = random_rows(src_type, ne0, rows, seed=11)
    packed = pack(variant, src, ne0)
    packed_type = kernels.packed_type_id(*variant)
    rebuilt = np.zeros_like(src)
    for original in (src, None):
        assert chunk_checks.check_chunk("vf_check_cpu_repack", variant, src_type, packed_type,
                                        ne0, rows, packed, original, rebuilt, values=True) is None
    packed.reshape(-1)[packed.size // 2] ^= 0x10
    m = chunk_checks.check_chunk("vf_check_cpu_repack", variant, src_type, packed_type, ne0, rows,
                                 packed, src, rebuilt, values=True)
    assert m is not None and m.kind == chunk_checks.BYTES


def test_type_ids():
    assert kernels.packed_type_id(Q4_0, 8, 8) == 2242 and kernels.packed_type_id(Q4_K, 8, 4) == 2188
    for v in VARIANTS:
        assert kernels.variant_of(kernels.packed_type_id(*v)) == v
    with pytest.raises(ValueError):
        kernels.variant_of(1024 + 2)


def test_arguments_are_checked():
    src = random_rows(Q4_0, 64, 8, seed=2)
    out = np.zeros_like(src)
    with pytest.raises(ValueError, match="no cpu-repack variant"):
        kernels.pack(Q4_0, 8, 4, src, out, 64, 8)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        kernels.pack(Q4_0, 8, 8, src[:4], out[:4], 64, 4)
    with pytest.raises(ValueError, match="positive multiple of 32"):
        kernels.pack(Q4_0, 8, 8, src, out, 48, 8)
    with pytest.raises(ValueError, match="holds"):
        kernels.pack(Q4_0, 8, 8, src, out[:-1], 64, 8)
    with pytest.raises(ValueError, match="read-only"):
        kernels.unpack(Q4_0, 8, 8, src, src.tobytes(), 64, 8)
    with pytest.raises(ValueError, match="overlap"):
        kernels.pack(Q4_0, 8, 8, src, src, 64, 8)
    with pytest.raises(ValueError, match="integer"):
        kernels.pack(Q4_0, 8, 8, src, out, 64.0, 8)
    # the C entry points refuse on their own, too
    p_src, p_out = ffi.from_buffer(src), ffi.from_buffer(out)
    assert lib.cr_pack(Q4_0, 8, 4, p_src, p_out, 64, 8) == -1
    assert lib.cr_pack(Q4_0, 8, 8, p_src, p_out, 64, 4) == -2
    assert lib.cr_pack(Q4_0, 8, 8, p_src, p_out, 0, 8) == -2


# ---- real blocks: the requantized Gemma fixtures and the Q4_K_M original --------------------------

REAL = {"Q4_0": Q4_0, "Q8_0": Q8_0, "Q2_K": Q2_K, "Q4_K": Q4_K, "Q5_K": Q5_K, "Q6_K": Q6_K,
        "IQ4_NL": IQ4_NL}
MAX_ROWS = 64          # rows taken from each tensor (whole row groups of every variant)


def real_tensors(path, src_type: int, count: int = 2):
    """(rows, ne0) of the first `count` 2-D tensors of that type with distinct shapes: their first
    MAX_ROWS rows (upstream packs each row group on its own, so that is a tensor of its own)."""
    seen, out = set(), []
    with read_gguf(path) as f:
        for t in f.tensors:
            if t.type_id != src_type or len(t.shape) != 2 or t.shape in seen or t.ne1 % 16:
                continue
            seen.add(t.shape)
            row_bytes = t.type.row_bytes(t.ne0)
            data = f.tensor_data(t)[:row_bytes * min(MAX_ROWS, t.ne1)]
            out.append((np.frombuffer(data, np.uint8).reshape(-1, row_bytes).copy(), t.ne0))
            if len(out) == count:
                break
    assert out, f"no tensor of type {src_type} in {path}"
    return out


@pytest.mark.parametrize("qtype", sorted(REAL))
def test_requantized_fixture_blocks_match_upstream(qtype, requantized):
    src_type = REAL[qtype]
    for rows, ne0 in real_tensors(requantized(qtype), src_type):
        for variant in (v for v in VARIANTS if v[0] == src_type):
            check_variant(variant, rows, ne0, rows.shape[0])


@pytest.mark.parametrize("src_type", [Q4_K, Q6_K], ids=["q4_K", "q6_K"])
def test_gemma_q4_k_m_blocks_match_upstream(src_type, gemma_path):
    for rows, ne0 in real_tensors(gemma_path, src_type):
        for variant in (v for v in VARIANTS if v[0] == src_type):
            check_variant(variant, rows, ne0, rows.shape[0])
