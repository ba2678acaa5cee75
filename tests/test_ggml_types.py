"""The type table against the two real references: ik_llama.cpp's libggml and gguf-py."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from formats.ggml_types import AMX_TYPE_ID_BASE, TYPES, type_by_name

# Known, deliberate differences (documented in formats/ggml_types.py):
# q8_K is an activation format never stored in files; we keep upstream's 292-byte block, ik's
# build pads it to 296. gguf-py still lists q8_1's old 40-byte block (upstream's is 36).
IK_DIFFERENT = {15}
GGUF_PY_DIFFERENT = {9}
# Same type, two spellings: upstream calls 41 "q1_0", ik "q1_0_g128".
IK_NAMED_DIFFERENTLY = {41}


@pytest.fixture(scope="module")
def libggml():
    ik = pytest.importorskip("ik_llama_cpp")
    lib = ctypes.CDLL(str(Path(ik.__file__).parent / "lib" / "libggml.so"))
    lib.ggml_type_name.restype = ctypes.c_char_p
    lib.ggml_type_name.argtypes = [ctypes.c_int]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


def test_sizes_match_ik_libggml(libggml):
    checked = 0
    for type_id in range(400):            # GGML_TYPE_COUNT of the wheel's build
        name = libggml.ggml_type_name(type_id)
        if not name or name == b"DEPRECATED" or type_id in IK_DIFFERENT:
            continue
        ours = TYPES[type_id]             # every id ik knows must be in our table
        if type_id not in IK_NAMED_DIFFERENTLY:
            assert ours.name == name.decode(), type_id
        assert ours.block_size == libggml.ggml_blck_size(type_id), ours.name
        assert ours.type_size == libggml.ggml_type_size(type_id), ours.name
        ne0 = ours.block_size * 8
        assert ours.row_bytes(ne0) == libggml.ggml_row_size(type_id, ne0), ours.name
        checked += 1
    assert checked >= 90


def test_sizes_match_gguf_py():
    from gguf.constants import GGML_QUANT_SIZES
    for qtype, (block, size) in GGML_QUANT_SIZES.items():
        if int(qtype) in GGUF_PY_DIFFERENT:
            continue
        ours = TYPES[int(qtype)]
        assert (ours.block_size, ours.type_size) == (block, size), qtype.name


def test_amx_type_ids_follow_spec_12_1():
    # amx-vnni.md §12.1: id 1024 + source id, bytes per block BS + EXTRA
    expected = {"q4_0": (1026, 18), "q4_1": (1027, 20), "q8_0": (1032, 38), "q4_K": (1036, 148),
                "q5_K": (1037, 180), "q6_K": (1038, 210), "iq4_xs": (1047, 138)}
    for src, (amx_id, packed_block) in expected.items():
        t = TYPES[amx_id]
        assert t.name == "amx_" + src and amx_id == AMX_TYPE_ID_BASE + type_by_name(src).id
        assert t.type_size == packed_block and t.block_size == type_by_name(src).block_size
