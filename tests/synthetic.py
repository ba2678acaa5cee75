"""Synthetic models of random quantized blocks, written straight to disk (no model needed).

The header is written with tests.ggufbuild (independent of the product's writer) and the tensor
data is streamed tensor by tensor, so a 400 MB model costs about a second and little memory.
Random bytes are valid blocks for packing (the layouts move bytes; they never interpret them).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from formats.ggml_types import type_by_name
from tests.ggufbuild import RawGGUF, RawTensor, kv_str, kv_u32

ALIGN = 32


def write_model(path: Path, tensors: list[tuple[str, str, tuple[int, ...]]], seed: int = 0,
                arch: str = "llama") -> Path:
    """Write a GGUF of random blocks: tensors = [(name, type name, shape in ggml order)]."""
    rng = np.random.default_rng(seed)
    raw = RawGGUF(kvs=[kv_str("general.architecture", arch), kv_u32("general.file_type", 15),
                       kv_u32("general.alignment", ALIGN)])
    sizes = []
    offset = 0
    for name, tname, shape in tensors:
        t = type_by_name(tname)
        offset += -offset % ALIGN
        raw.tensors.append(RawTensor(name, shape, t.id, offset))
        sizes.append(t.tensor_bytes(shape))
        offset += sizes[-1]
    with open(path, "wb") as f:
        f.write(raw.header())
        pos = 0
        for n in sizes:
            f.write(b"\0" * (-pos % ALIGN))
            pos += -pos % ALIGN
            f.write(rng.bytes(n))
            pos += n
    return Path(path)


def big_model_tensors(target_bytes: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """Llama-like layers of 4096x4096 Q4_K and Q8_0 matrices (both layouts repack them) plus a
    kept embedding and an f32 norm, adding up to about ``target_bytes``."""
    tensors = [("token_embd.weight", "q8_0", (4096, 512)), ("output_norm.weight", "f32", (4096,))]
    total, layer = 0, 0
    while total < target_bytes:
        for name, tname in (("ffn_up", "q4_K"), ("ffn_down", "q8_0")):
            tensors.append((f"blk.{layer}.{name}.weight", tname, (4096, 4096)))
            total += type_by_name(tname).tensor_bytes((4096, 4096))
        layer += 1
    return tensors


def small_model_tensors() -> list[tuple[str, str, tuple[int, ...]]]:
    """A few MB with several source types, a 3-D expert tensor and kept tensors, so every code path
    of both layouts (pack, copy, different unit heights) is exercised."""
    return [
        ("token_embd.weight", "q8_0", (512, 256)),
        ("output_norm.weight", "f32", (512,)),
        ("blk.0.attn_q.weight", "q4_0", (512, 512)),
        ("blk.0.attn_k.weight", "q4_K", (1024, 256)),
        ("blk.0.attn_v.weight", "q6_K", (1024, 128)),
        ("blk.0.ffn_up.weight", "q8_0", (1024, 1024)),
        ("blk.0.ffn_down.weight", "q5_K", (1024, 512)),
        ("blk.0.ffn_gate_exps.weight", "q4_K", (512, 64, 8)),
        ("blk.0.ffn_norm.weight", "f32", (1024,)),
        ("blk.1.attn_v.weight", "q4_0", (512, 40)),       # ne1 % 16 != 0: kept by both layouts
    ]


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def fingerprint(path) -> tuple[str, int, int]:
    """(sha256, size, mtime_ns): what 'the input is unchanged' means."""
    st = os.stat(path)
    return sha256(path), st.st_size, st.st_mtime_ns
