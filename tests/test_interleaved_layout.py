"""ik_llama.cpp row-interleaved repack: native kernels and numpy reference against ik's own output.

Golden vectors: shared/golden/interleaved.npz (ik's iqk_repack_tensor, 26 conversions x 4 shapes).
"""

from __future__ import annotations

import numpy as np
import pytest

from _paths import golden_cases, golden_file
from formats import interleaved_layout as layout
from formats.ggml_types import ggml_type, type_by_name
from repack import interleaved_kernels as kernels
from repack._interleaved import ffi, lib

GOLDEN_NAME = "interleaved.npz"   # in _paths.GOLDEN_DIR
Q8_KV = type_by_name("q8_KV").id


def _golden():
    return np.load(golden_file(GOLDEN_NAME))


def _golden_prefixes() -> list[str]:
    def cases(path):
        with np.load(path) as z:
            return sorted(k[: -len("_out")] for k in z.files if k.endswith("_out"))
    return golden_cases(GOLDEN_NAME, cases)


@pytest.fixture(scope="module")
def golden():
    z = _golden()
    yield {k: z[k] for k in z.files}
    z.close()


def _q8_kv_sums(src: bytes, ne0: int) -> tuple[np.ndarray, np.ndarray]:
    """(stored sums, sums of the int8 quants) per row of a Q8_KV tensor."""
    rows = np.frombuffer(src, np.uint8).reshape(-1, 8 + ne0)
    stored = rows[:, 4:8].copy().view("<i4")[:, 0]
    return stored, rows[:, 8:].view(np.int8).sum(axis=1, dtype=np.int64)


def _without_q8_kv_sums(src: bytes, ne0: int) -> bytes:
    rows = np.frombuffer(src, np.uint8).reshape(-1, 8 + ne0)
    return np.concatenate([rows[:, :4], rows[:, 8:]], axis=1).tobytes()


# ------------------------------------------------------------------------------------------------
# Layout table

def test_table_has_the_26_lossless_conversions_and_matches_native():
    assert len(layout.INTERLEAVINGS) == 26
    for src_id, il in layout.INTERLEAVINGS.items():
        assert il.source.id == src_id
        assert lib.il_target_type(src_id) == il.target.id
        assert lib.il_rows_per_group(src_id) == il.rows
        assert lib.il_source_type(il.target.id) == src_id
        assert il.target.origin == "ik-interleaved"
        assert il.runtime_row_multiple in (4, 8, 16) and il.runtime_row_multiple % il.rows == 0
        assert layout.interleaving_for_type_id(src_id) is il
        assert layout.interleaving_for_type_id(il.target.id) is il
        # §2.1: same block geometry except Q8_KV's row meta
        assert (il.target.block_size, il.target.type_size) == (il.source.block_size, il.source.type_size)
        ne0 = 4 * il.column_multiple if il.source.block_size > 1 else 64
        assert lib.il_target_group_bytes(src_id, ne0) == il.group_bytes(ne0)
        assert lib.il_source_row_bytes(src_id, ne0) == il.source.row_bytes(ne0)
    for not_repacked in ("q4_1", "q8_K", "f16", "f32", "iq1_s", "iq1_m", "iq6_k", "q8_0_r8"):
        t = type_by_name(not_repacked)
        assert lib.il_target_type(t.id) == 0 and lib.il_rows_per_group(t.id) == 0
        assert t.id not in layout.INTERLEAVINGS
    assert layout.interleaving_for_type_id(type_by_name("q4_1").id) is None


def test_table_details_from_spec():
    by = {il.source.name: il for il in layout.INTERLEAVINGS.values()}
    assert {n: il.rows for n, il in by.items() if il.rows != 4} == {
        "q4_0": 8, "q8_0": 8, "iq4_xs": 8, "mxfp4": 8, "q8_KV": 8, "bf16": 16}
    assert {n for n, il in by.items() if il.runtime_row_multiple == 16} == {"q4_0", "q8_0", "mxfp4", "bf16"}
    assert {n for n, il in by.items() if il.runtime_row_multiple == 8} == {
        "iq4_nl", "q5_0", "q6_0", "iq2_bn", "iq4_xs", "q4_K", "q5_K", "q8_KV"}
    assert layout.target_bytes(Q8_KV, 64, 16) == 16 * (4 + 64)
    assert layout.target_bytes(type_by_name("q4_K").id, 512, 8) == 8 * 2 * 144
    assert layout.target_bytes(type_by_name("iq4_ks").id, 256, 4) == 4 * (4 + 136)
    with pytest.raises(ValueError):
        layout.target_bytes(type_by_name("q4_1").id, 32, 8)
    ft = layout.FILE_TYPE_REPACKED
    assert ft[15] == 214 and ft[7] == 207 and ft[12] == 211 and ft[149] == 398 and ft[30] == 230
    assert 38 not in ft and len(ft) == 31
    assert all(v in layout.FILE_TYPE_REPACKED_RANGE for v in ft.values())


# ------------------------------------------------------------------------------------------------
# Golden vectors

def test_golden_covers_every_conversion(golden):
    src_ids = {int(golden[p + "_src_id"]) for p in _golden_prefixes()}
    assert src_ids == set(layout.INTERLEAVINGS)


@pytest.mark.parametrize("prefix", _golden_prefixes())
def test_golden(golden, prefix):
    src, out = golden[prefix + "_src"].tobytes(), golden[prefix + "_out"].tobytes()
    src_id, dst_id = int(golden[prefix + "_src_id"]), int(golden[prefix + "_dst_id"])
    ne0, nrows = int(golden[prefix + "_ne0"]), int(golden[prefix + "_rows"])
    assert nrows == int(golden[prefix + "_ne1"]) * int(golden[prefix + "_ne2"])
    assert ggml_type(src_id).name == prefix.split("_to_")[0]

    assert kernels.target_type_id(src_id) == dst_id
    assert layout.INTERLEAVINGS[src_id].target.id == dst_id
    assert layout.target_bytes(src_id, ne0, nrows) == len(out)

    packed = bytearray(len(out))
    kernels.interleave(src_id, src, packed, ne0, nrows)
    assert bytes(packed) == out

    back = bytearray(len(src))
    kernels.deinterleave(src_id, out, back, ne0, nrows)
    if src_id == Q8_KV:
        stored, quant_sums = _q8_kv_sums(src, ne0)
        rebuilt, _ = _q8_kv_sums(bytes(back), ne0)
        assert (rebuilt == quant_sums).all()          # the dropped sum is recomputed
        if (stored == quant_sums).all():
            assert bytes(back) == src
        else:  # the golden input has random sums: everything else must match
            assert _without_q8_kv_sums(bytes(back), ne0) == _without_q8_kv_sums(src, ne0)
    else:
        assert bytes(back) == src

    if src_id in layout.REFERENCE_TYPES:
        assert layout.interleave(src_id, src, ne0, nrows).tobytes() == out


# ------------------------------------------------------------------------------------------------
# Random data: round trip, chunking, reference vs native

def _shapes(il):
    """(ne0, nrows) pairs: 1..4 blocks of columns, 1..3 groups, and 3-D tensors as ne1 * ne2."""
    cols = [il.column_multiple * n for n in (1, 2, 3, 4)]
    if il.source.name == "bf16":
        cols += [32, 130]
    rows = [il.rows, 2 * il.rows, 3 * il.rows, il.rows * 2 * 3]  # the last: ne1 = 2R, ne2 = 3
    return [(c, r) for c in cols for r in rows]


def _random_source(il, ne0, nrows, rng) -> bytes:
    data = rng.integers(0, 256, il.source.row_bytes(ne0) * nrows, dtype=np.uint8)
    if il.source.id == Q8_KV:  # make the stored sums the real ones, so the round trip is exact
        rows = data.reshape(nrows, 8 + ne0)
        sums = rows[:, 8:].view(np.int8).sum(axis=1, dtype=np.int64).astype("<i4")
        rows[:, 4:8] = sums.view(np.uint8).reshape(nrows, 4)
    return data.tobytes()


IDS = sorted(layout.INTERLEAVINGS)


@pytest.mark.parametrize("src_id", IDS, ids=lambda i: ggml_type(i).name)
def test_random_round_trip_and_chunking(src_id):
    il = layout.INTERLEAVINGS[src_id]
    rng = np.random.default_rng(src_id)
    for ne0, nrows in _shapes(il):
        src = _random_source(il, ne0, nrows, rng)
        n_out = layout.target_bytes(src_id, ne0, nrows)
        packed = np.zeros(n_out, np.uint8)
        kernels.interleave(src_id, src, packed, ne0, nrows)

        back = bytearray(len(src))
        kernels.deinterleave(src_id, packed, back, ne0, nrows)
        assert bytes(back) == src, (ne0, nrows)

        if src_id in layout.REFERENCE_TYPES:
            assert layout.interleave(src_id, src, ne0, nrows).tobytes() == packed.tobytes()

        # one group range at a time: same bytes as the whole call, nothing outside the range touched
        ngroups = nrows // il.rows
        group = il.group_bytes(ne0)
        src_group = il.rows * il.source.row_bytes(ne0)
        for begin, end in ((0, 1), (ngroups - 1, ngroups), (1, ngroups), (0, 0)):
            if not 0 <= begin <= end <= ngroups:
                continue
            sentinel = rng.integers(0, 256, n_out, dtype=np.uint8)
            part = sentinel.copy()
            kernels.interleave(src_id, src, part, ne0, nrows, begin, end)
            inside = slice(begin * group, end * group)
            assert part[inside].tobytes() == packed[inside].tobytes()
            assert part[: begin * group].tobytes() == sentinel[: begin * group].tobytes()
            assert part[end * group:].tobytes() == sentinel[end * group:].tobytes()

            sentinel_src = bytearray(rng.integers(0, 256, len(src), dtype=np.uint8).tobytes())
            part_src = bytearray(sentinel_src)
            kernels.deinterleave(src_id, packed, part_src, ne0, nrows, begin, end)
            inside = slice(begin * src_group, end * src_group)
            assert part_src[inside] == src[inside]
            assert part_src[: begin * src_group] == sentinel_src[: begin * src_group]
            assert part_src[end * src_group:] == sentinel_src[end * src_group:]


def test_buffer_kinds_accepted():
    il = layout.INTERLEAVINGS[type_by_name("q4_K").id]
    src = _random_source(il, 256, 8, np.random.default_rng(1))
    expected = bytearray(layout.target_bytes(il.source.id, 256, 8))
    kernels.interleave(il.source.id, src, expected, 256, 8)
    for make_src in (bytes, bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8),
                     lambda b: np.frombuffer(b, np.uint32)):
        out = np.zeros(len(expected), np.uint8)
        kernels.interleave(il.source.id, make_src(src), memoryview(out), 256, 8)
        assert out.tobytes() == bytes(expected)
    out = np.zeros(len(expected), np.uint8)  # shapes as numpy integers (as read from a GGUF header)
    kernels.interleave(np.int32(il.source.id), src, out, np.int64(256), np.uint64(8), np.int64(0), np.int64(2))
    assert out.tobytes() == bytes(expected)


# ------------------------------------------------------------------------------------------------
# Bad arguments

def test_bad_arguments_raise_value_error():
    q4k = type_by_name("q4_K").id
    il = layout.INTERLEAVINGS[q4k]
    src = bytes(il.source.row_bytes(256) * 8)
    dst = bytearray(len(src))
    kernels.interleave(q4k, src, dst, 256, 8)  # the good call

    bad_calls = [
        (type_by_name("q4_1").id, src, dst, 256, 8, 0, None),     # no interleaved type
        (type_by_name("q8_K").id, src, dst, 256, 8, 0, None),     # lossy, not offered
        (9999, src, dst, 256, 8, 0, None),                        # unknown id
        (q4k, src, dst, 128, 8, 0, None),                         # ne0 not a multiple of 256
        (q4k, src, dst, 0, 8, 0, None),
        (q4k, src, dst, -256, 8, 0, None),
        (q4k, src, dst, 256, 6, 0, None),                         # nrows not a multiple of R
        (q4k, src, dst, 256, -4, 0, None),
        (q4k, src, dst, 256, 8, 0, 3),                            # group range past the end
        (q4k, src, dst, 256, 8, 2, 1),
        (q4k, src, dst, 256, 8, -1, 1),
        (q4k, src[:-1], dst, 256, 8, 0, None),                    # wrong buffer sizes
        (q4k, src + b"\0", dst, 256, 8, 0, None),
        (q4k, src, dst[:-1], 256, 8, 0, None),
        (q4k, src, bytes(dst), 256, 8, 0, None),                  # read-only output
        (q4k, src, 12345, 256, 8, 0, None),                       # not a buffer
        (q4k, src, dst, 256.0, 8, 0, None),                       # not an int
        (q4k, src, dst, 256, True, 0, None),
        (q4k, src, dst, 256, 8, 0, "2"),
    ]
    for args in bad_calls:
        with pytest.raises(ValueError):
            kernels.interleave(*args)
        with pytest.raises(ValueError):
            kernels.deinterleave(*args)

    # non-contiguous arrays and overlapping input/output are refused
    strided = np.zeros(2 * len(dst), np.uint8)[::2]
    with pytest.raises(ValueError, match="contiguous"):
        kernels.interleave(q4k, src, strided, 256, 8)
    shared = np.zeros(2 * len(src), np.uint8)
    with pytest.raises(ValueError, match="overlap"):
        kernels.interleave(q4k, shared[: len(src)], shared[len(src) // 2: len(src) // 2 + len(src)], 256, 8)

    # Q8_KV: the output is 4 bytes per row smaller
    q8kv = layout.INTERLEAVINGS[Q8_KV]
    src = bytes(q8kv.source.row_bytes(32) * 8)
    with pytest.raises(ValueError):
        kernels.interleave(Q8_KV, src, bytearray(len(src)), 32, 8)
    kernels.interleave(Q8_KV, src, bytearray(len(src) - 4 * 8), 32, 8)

    # the native layer refuses by itself too
    one = ffi.new("uint8_t[1]")
    assert lib.il_interleave(3, one, one, 32, 0, 1) == -1
    assert lib.il_interleave(q4k, one, one, 100, 0, 1) == -2
    assert lib.il_interleave(q4k, one, one, 256, 2, 1) == -2
    assert lib.il_deinterleave(q4k, one, one, 256, -1, 1) == -2
    assert lib.il_interleave(q4k, ffi.NULL, ffi.NULL, 256, 0, 1) == -2

    # the numpy reference checks its inputs as well
    with pytest.raises(ValueError):
        layout.interleave("q4_K", src, 256, 8)
    with pytest.raises(NotImplementedError):
        layout.interleave("iq2_xxs", bytes(66 * 4), 256, 4)
