"""AMX VNNI tile layout: numpy reference and native kernels against upstream llama.cpp's packer.

Golden vectors: shared/golden/amx.npz (upstream's convert_B_packed_format, 7 types x 6 cases).
Beyond them: native == numpy on random shapes whose fp16 fields hold NaN/Inf/zero/subnormal
patterns, strip ranges (what threads run), the section 10.2 checks, and dequantize straight from
the packed layout bit-identical to gguf-py's dequantize of the original blocks.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType

from _paths import golden_cases, golden_file
from formats import amx_layout as layout
from formats.ggml_types import AMX_TYPE_ID_BASE, type_by_name
from repack import amx_kernels as kernels
from repack._amx import ffi, lib

GOLDEN_NAME = "amx.npz"   # in _paths.GOLDEN_DIR
TYPES = list(layout.AMX_PARAMS)

# Byte offsets of the fp16 fields inside one source block (spec section 3).
FP16_FIELDS = {"q4_0": (0,), "q4_1": (0, 2), "q8_0": (0,), "q4_K": (0, 2), "q5_K": (0, 2),
               "q6_K": (208,), "iq4_xs": (0,)}
# +/-Inf, quiet and signalling NaNs with payloads, +/-0, subnormals, largest finite.
SPECIAL_FP16 = np.array([0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0xFC01, 0x7D55, 0x7E3A, 0xFFFF,
                         0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x7BFF, 0xFBFF], dtype=np.uint16)
# Spec section 4.2 / 7: tile sizes.
TILE_SIZES = {"q4_0": 288, "q4_1": 320, "q8_0": 608, "q4_K": 2368, "q5_K": 2880, "q6_K": 3360,
              "iq4_xs": 2208}


def _golden_prefixes() -> list[str]:
    def cases(path):
        with np.load(path) as z:
            return sorted(k[: -len("_packed")] for k in z.files if k.endswith("_packed"))
    return golden_cases(GOLDEN_NAME, cases)


@pytest.fixture(scope="module")
def golden():
    with np.load(golden_file(GOLDEN_NAME)) as z:
        return {k: z[k] for k in z.files}


def _case(golden, prefix: str):
    """(type name, src, packed, n_rows, k); a 3-D case is flattened to n_rows = N * ne2."""
    type_name = prefix.rsplit("_", 1)[0]
    ne2 = int(golden[prefix + "_ne2"]) if prefix + "_ne2" in golden else 1
    return (type_name, golden[prefix + "_src"], golden[prefix + "_packed"],
            int(golden[prefix + "_N"]) * ne2, int(golden[prefix + "_K"]))


def random_blocks(type_name: str, n_rows: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Random source bytes; ~30% of the fp16 fields overwritten with special patterns."""
    p = layout.AMX_PARAMS[type_name]
    blocks = rng.integers(0, 256, (n_rows * (k // p.qk), p.bs), dtype=np.uint8)
    for offset in FP16_FIELDS[type_name]:
        field = blocks[:, offset:offset + 2].copy().view(np.uint16)[:, 0]
        special = rng.random(field.size) < 0.3
        field[special] = rng.choice(SPECIAL_FP16, special.sum())
        blocks[:, offset:offset + 2] = field.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(-1)


def gguf_dequantize(type_name: str, src: np.ndarray, n_rows: int) -> np.ndarray:
    qtype = GGMLQuantizationType[type_name.upper()]
    with np.errstate(invalid="ignore", over="ignore"):  # sNaN inputs and Inf*0 raise the flag
        return gguf.quants.dequantize(src.reshape(n_rows, -1), qtype)


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    a, e = actual.reshape(-1).view(np.uint32), expected.reshape(-1).view(np.uint32)
    bad = np.flatnonzero(a != e)
    assert bad.size == 0, (f"{bad.size} floats differ, first at {bad[0]}: "
                           f"{a[bad[0]]:#010x} != {e[bad[0]]:#010x}")


# ------------------------------------------------------------------------------------------------
# layout table
# ------------------------------------------------------------------------------------------------

def test_layout_table():
    assert set(TYPES) == {"q4_0", "q4_1", "q8_0", "q4_K", "q5_K", "q6_K", "iq4_xs"}
    for name, p in layout.AMX_PARAMS.items():
        assert p.source is type_by_name(name) and p.packed.id == AMX_TYPE_ID_BASE + p.source.id
        assert p.tile_size == TILE_SIZES[name] == 16 * (p.bs + p.extra)
        assert p.packed.type_size == p.bs + p.extra and p.packed.block_size == p.qk
        assert layout.amx_params_for_type_id(p.source.id) is p
        assert layout.amx_params_for_type_id(p.packed.id) is p
        assert lib.amx_packed_block_bytes(p.source.id) == p.bs + p.extra
    for not_amx in (0, 1, 6, 10, 20, 1030, 202):
        assert layout.amx_params_for_type_id(not_amx) is None
        assert lib.amx_packed_block_bytes(not_amx) == 0
    # section 4.2 example: Q4_K, N = K = 4096
    assert kernels.packed_nbytes("q4_K", 4096, 4096) == 9_699_328


# ------------------------------------------------------------------------------------------------
# golden vectors
# ------------------------------------------------------------------------------------------------

def test_golden_complete(golden):
    assert len(_golden_prefixes()) == 42


@pytest.mark.parametrize("prefix", _golden_prefixes())
def test_golden_numpy(golden, prefix):
    name, src, packed, n_rows, k = _case(golden, prefix)
    assert np.array_equal(layout.pack(name, src, n_rows, k), packed)
    assert np.array_equal(layout.unpack(name, packed, n_rows, k), src)


@pytest.mark.parametrize("prefix", _golden_prefixes())
def test_golden_native(golden, prefix):
    name, src, packed, n_rows, k = _case(golden, prefix)
    out = np.full(packed.size, 0xA5, dtype=np.uint8)   # every byte must be written
    kernels.pack(name, src.tobytes(), out, n_rows, k)
    assert np.array_equal(out, packed)
    back = bytearray(src.size)
    kernels.unpack(name, memoryview(packed), back, n_rows, k)
    assert bytes(back) == src.tobytes()
    assert kernels.check(name, packed, n_rows, k) is None


@pytest.mark.parametrize("prefix", _golden_prefixes())
def test_golden_dequantize(golden, prefix):
    name, src, packed, n_rows, k = _case(golden, prefix)
    out = kernels.dequantize(name, packed, None, n_rows, k)
    assert out.shape == (n_rows, k)
    assert_same_bits(out, gguf_dequantize(name, src, n_rows))


# ------------------------------------------------------------------------------------------------
# native == numpy on random data
# ------------------------------------------------------------------------------------------------

SHAPES = [(16, 1), (32, 2), (48, 3), (64, 5), (128, 2), (16, 9)]   # (n_rows, blocks per row)


@pytest.mark.parametrize("name", TYPES)
def test_native_matches_numpy_random(name):
    p = layout.AMX_PARAMS[name]
    rng = np.random.default_rng(1000 + p.source.id)
    for n_rows, kb in SHAPES:
        k = kb * p.qk
        src = random_blocks(name, n_rows, k, rng)
        packed = kernels.pack(name, src, None, n_rows, k)
        assert np.array_equal(packed, layout.pack(name, src, n_rows, k)), (n_rows, k)
        assert np.array_equal(kernels.unpack(name, packed, None, n_rows, k), src), (n_rows, k)
        assert np.array_equal(layout.unpack(name, packed, n_rows, k), src), (n_rows, k)
        assert kernels.check(name, packed, n_rows, k) is None
        # unpacking arbitrary bytes (invalid scales, wrong comp) is defined the same way in both
        noise = rng.integers(0, 256, packed.size, dtype=np.uint8)
        assert np.array_equal(kernels.unpack(name, noise, None, n_rows, k),
                              layout.unpack(name, noise, n_rows, k)), (n_rows, k)


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_random_specials(name):
    p = layout.AMX_PARAMS[name]
    rng = np.random.default_rng(2000 + p.source.id)
    for n_rows, kb in SHAPES[:4]:
        k = kb * p.qk
        src = random_blocks(name, n_rows, k, rng)
        packed = layout.pack(name, src, n_rows, k)
        assert_same_bits(kernels.dequantize(name, packed, None, n_rows, k),
                         gguf_dequantize(name, src, n_rows))


def test_dequantize_q4_1_nan_plus_nan():
    """(d*q) + m with both NaN: numpy keeps the NaN of d*q (the first operand), whatever m is."""
    n_rows, k = 16, 64
    blocks = np.random.default_rng(7).integers(0, 256, (n_rows * 2, 20), dtype=np.uint8)
    d = np.array([0x7C01, 0xFE77, 0x7D00, 0xFFFF], dtype=np.uint16)
    m = np.array([0xFC02, 0x7C3F, 0x7E01, 0x7C00], dtype=np.uint16)
    blocks[:, 0:2] = d[np.arange(n_rows * 2) % 4].view(np.uint8).reshape(-1, 2)
    blocks[:, 2:4] = m[np.arange(n_rows * 2) // 4 % 4].view(np.uint8).reshape(-1, 2)
    src = blocks.reshape(-1)
    packed = kernels.pack("q4_1", src, None, n_rows, k)
    expected = gguf_dequantize("q4_1", src, n_rows)
    # the case is exercised: d = 0xFE77 (-> 0xFFCEE000) wins over m = 0xFC02 (-> 0xFFC04000)
    assert (expected.view(np.uint32)[0, 32:] == 0xFFCEE000).all()
    assert_same_bits(kernels.dequantize("q4_1", packed, None, n_rows, k), expected)


# ------------------------------------------------------------------------------------------------
# strip ranges: what the threads of a convert run
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TYPES)
def test_strip_ranges(name):
    p = layout.AMX_PARAMS[name]
    n_rows, k = 96, 3 * p.qk
    strip_src, strip_packed = 16 * 3 * p.bs, 16 * 3 * (p.bs + p.extra)
    rng = np.random.default_rng(3000 + p.source.id)
    src = random_blocks(name, n_rows, k, rng)
    whole = kernels.pack(name, src, None, n_rows, k)
    whole_f32 = kernels.dequantize(name, whole, None, n_rows, k)
    for begin, end in [(0, 1), (2, 5), (5, 6), (1, 1), (0, 6)]:
        dst = np.full(whole.size, 0x5A, dtype=np.uint8)
        kernels.pack(name, src, dst, n_rows, k, begin, end)
        a, b = begin * strip_packed, end * strip_packed
        assert np.array_equal(dst[a:b], whole[a:b])
        assert (dst[:a] == 0x5A).all() and (dst[b:] == 0x5A).all()

        back = np.full(src.size, 0xC3, dtype=np.uint8)
        kernels.unpack(name, whole, back, n_rows, k, begin, end)
        a, b = begin * strip_src, end * strip_src
        assert np.array_equal(back[a:b], src[a:b])
        assert (back[:a] == 0xC3).all() and (back[b:] == 0xC3).all()

        f32 = np.full((n_rows, k), 0x7FC0DEAD, dtype=np.uint32).view(np.float32)
        kernels.dequantize(name, whole, f32, n_rows, k, begin, end)
        rows = slice(16 * begin, 16 * end)
        assert_same_bits(f32[rows], whole_f32[rows])
        outside = np.delete(f32.view(np.uint32), np.arange(16 * begin, 16 * end), axis=0)
        assert (outside == 0x7FC0DEAD).all()


def test_parallel_chunks_equal_whole():
    name, n_rows, k = "q4_K", 256, 4 * 256
    src = random_blocks(name, n_rows, k, np.random.default_rng(4))
    whole = kernels.pack(name, src, None, n_rows, k)
    dst = bytearray(whole.size)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda a: kernels.pack(name, src, dst, n_rows, k, a, min(a + 3, 16)),
                      range(0, 16, 3)))
    assert bytes(dst) == whole.tobytes()


# ------------------------------------------------------------------------------------------------
# section 10.2 checks
# ------------------------------------------------------------------------------------------------

def _packed_random(name, n_rows, kb, seed):
    p = layout.AMX_PARAMS[name]
    k = kb * p.qk
    src = random_blocks(name, n_rows, k, np.random.default_rng(seed))
    return kernels.pack(name, src, None, n_rows, k), k, p


def _tile(packed, p, kb_count, nb, kb):
    start = (nb * kb_count + kb) * p.tile_size
    return packed[start:start + p.tile_size]          # a view


def test_check_q8_0_comp():
    packed, k, p = _packed_random("q8_0", 64, 3, 11)
    assert kernels.check("q8_0", packed, 64, k) is None
    bad = packed.copy()
    _tile(bad, p, 3, 2, 1)[544 + 4 * 5 + 1] ^= 0x01                 # comp of row 2*16+5
    assert kernels.check("q8_0", bad, 64, k) == 37
    _tile(bad, p, 3, 3, 0)[544 + 4 * 0] ^= 0x80                     # a later row too
    assert kernels.check("q8_0", bad, 64, k) == 37
    assert kernels.check("q8_0", bad, 64, k, 3, 4) == 48
    assert kernels.check("q8_0", bad, 64, k, 0, 2) is None
    _tile(bad, p, 3, 2, 2)[64 * 3 + 4 * 2] ^= 0x04                  # a quant of row 34
    assert kernels.check("q8_0", bad, 64, k) == 34


@pytest.mark.parametrize("name,scmat,minpairs", [("q4_K", 2048, 2176), ("q5_K", 2560, 2688)])
def test_check_k_scales(name, scmat, minpairs):
    packed, k, p = _packed_random(name, 48, 2, 12)
    assert kernels.check(name, packed, 48, k) is None
    bad = packed.copy()
    _tile(bad, p, 2, 1, 1)[scmat + 16 * 3 + 9] = 64                  # sc[3] of row 16+9
    assert kernels.check(name, bad, 48, k) == 25
    bad = packed.copy()
    _tile(bad, p, 2, 2, 0)[minpairs + 32 * 2 + 2 * 4 + 1] = 0xC0     # m[5] of row 32+4
    assert kernels.check(name, bad, 48, k) == 36
    assert kernels.check(name, bad, 48, k, 0, 2) is None
    bad[:] = packed
    _tile(bad, p, 2, 0, 1)[scmat + 16 * 7 + 0] = 63                  # largest valid value
    assert kernels.check(name, bad, 48, k) is None


def test_check_iq4_xs_scales():
    packed, k, p = _packed_random("iq4_xs", 32, 2, 13)
    assert kernels.check("iq4_xs", packed, 32, k) is None
    for value, expect in [(32, 16 + 6), (0xDF, 16 + 6), (31, None), (0xE0, None)]:  # 0xDF = -33
        bad = packed.copy()
        _tile(bad, p, 2, 1, 1)[2048 + 16 * 4 + 6] = value
        assert kernels.check("iq4_xs", bad, 32, k) == expect


@pytest.mark.parametrize("name", ["q4_0", "q4_1", "q6_K"])
def test_check_types_without_constraints(name):
    p = layout.AMX_PARAMS[name]
    noise = np.random.default_rng(14).integers(0, 256, 32 * 2 * (p.bs + p.extra), dtype=np.uint8)
    assert kernels.check(name, noise, 32, 2 * p.qk) is None


# ------------------------------------------------------------------------------------------------
# bad arguments
# ------------------------------------------------------------------------------------------------

def test_type_lookup():
    src = random_blocks("q4_K", 16, 256, np.random.default_rng(5))
    expected = kernels.pack("q4_K", src, None, 16, 256)
    for spelling in ("Q4_K", "q4_k", 12, np.int32(12), 1036, "amx_q4_K"):
        assert np.array_equal(kernels.pack(spelling, src, None, 16, 256), expected)
        assert np.array_equal(layout.pack(spelling, src, 16, 256), expected)


def test_bad_arguments():
    p = layout.AMX_PARAMS["q4_0"]
    src = np.zeros(32 * 2 * p.bs, dtype=np.uint8)
    dst = np.zeros(32 * 2 * (p.bs + p.extra), dtype=np.uint8)
    for bad_type in ("q5_0", "nonsense", 6, 1030, 0):
        with pytest.raises(ValueError):
            kernels.pack(bad_type, src, dst, 32, 64)
        with pytest.raises(ValueError):
            layout.pack(bad_type, src, 32, 64)
    with pytest.raises(ValueError, match="bytes"):
        kernels.pack("q4_0", src[:-1], dst, 32, 64)
    with pytest.raises(ValueError, match="bytes"):
        kernels.pack("q4_0", src, np.zeros(dst.size + 1, np.uint8), 32, 64)
    with pytest.raises(ValueError, match="bytes"):
        kernels.unpack("q4_0", dst, np.zeros(src.size - 18, np.uint8), 32, 64)
    with pytest.raises(ValueError, match="read-only"):
        kernels.pack("q4_0", src, bytes(dst.size), 32, 64)
    with pytest.raises(ValueError, match="multiple of 16"):
        kernels.pack("q4_0", src[: 24 * 2 * p.bs], dst[: 24 * 2 * p.bs], 24, 64)
    with pytest.raises(ValueError, match="multiple of"):
        kernels.pack("q4_0", src, dst, 32, 48)
    with pytest.raises(ValueError, match="strip range"):
        kernels.pack("q4_0", src, dst, 32, 64, 1, 3)
    with pytest.raises(ValueError, match="strip range"):
        kernels.unpack("q4_0", dst, src.copy(), 32, 64, 2, 1)
    with pytest.raises(ValueError, match="multiple of 16"):
        layout.pack("q4_0", src[: 24 * 2 * p.bs], 24, 64)
    with pytest.raises(ValueError, match="bytes"):
        layout.unpack("q4_0", dst[:-2], 32, 64)
    with pytest.raises(ValueError):
        kernels.check("q4_0", dst[:-1], 32, 64)
    with pytest.raises(ValueError, match="float32"):
        kernels.dequantize("q4_0", dst, np.zeros((32, 64), np.float64), 32, 64)
    with pytest.raises(ValueError, match="bytes"):
        kernels.dequantize("q4_0", dst, np.zeros((32, 63), np.float32), 32, 64)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.dequantize("q4_0", dst, np.zeros((32, 128), np.float32)[:, ::2], 32, 64)


def test_native_argument_codes():
    """The C entry points validate on their own too (they are reachable without the wrapper)."""
    null = ffi.NULL
    assert lib.amx_pack(6, null, null, 16, 32, 0, 1) == -1
    assert lib.amx_pack(2, null, null, 24, 32, 0, 1) == -2
    assert lib.amx_pack(2, null, null, 16, 48, 0, 1) == -2
    assert lib.amx_pack(2, null, null, 16, 32, 0, 2) == -2
    assert lib.amx_pack(2, null, null, 16, 32, -1, 0) == -2
    assert lib.amx_pack(2, null, null, -16, 32, 0, 0) == -2
    assert lib.amx_pack(2, null, null, 1 << 40, 1 << 30, 0, 0) == -2   # byte offsets overflow
    assert lib.amx_unpack(23, null, null, 16, 128, 0, 1) == -2
    assert lib.amx_dequantize(99, null, null, 16, 32, 0, 1) == -1
    assert lib.amx_check(12, null, 16, 100, 0, 1) == -3
    assert lib.amx_check(7, null, 16, 32, 0, 1) == -3
    assert lib.amx_pack(2, null, null, 16, 32, 1, 1) == 0                 # empty range: no access
