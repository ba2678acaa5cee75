"""The built-in example: a small model-shaped GGUF with real quantized blocks of every supported
source type, converted to both layout families, verified and unpacked.

Where gguf-py can quantize a type (Q4_0, Q4_1, Q5_0, Q8_0, MXFP4) the blocks come from quantizing
random float weights; for the others (K-quants, i-quants, ik's types) the quant bits are random and
the fp16/f32 scales are small finite values, which is what such blocks hold in a real model.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from formats.ggml_types import TYPES, type_by_name
from formats.gguf_container import OutputTensor, ValueType, encode_kv, plan_layout
from formats.layouts import FAMILY_TABLES

from .atomic import AtomicOutputFile
from .pipeline import convert
from .unpack import unpack
from .verify import verify

# (tensor name, shape ne0 x ne1 [x experts]) per source type; 3-D tensors are MoE experts.
_SHAPES = [(512, 64), (1024, 32), (256, 128, 4)]


def _source_types() -> list[str]:
    names = []
    for family in FAMILY_TABLES.values():
        names += [t.name for t in family.source_types() if t.name not in names and t.name != "bf16"]
    return names


def _blocks(type_name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Bytes of a tensor of this type: quantized floats where gguf-py can, valid random otherwise."""
    import gguf.quants
    from gguf import GGMLQuantizationType

    t = type_by_name(type_name)
    rows = int(np.prod(shape[1:]))
    weights = rng.standard_normal((rows, shape[0])).astype(np.float32) * 0.02
    try:
        qtype = GGMLQuantizationType(t.id)
        return gguf.quants.quantize(weights, qtype).reshape(rows, -1).view(np.uint8)
    except (ValueError, NotImplementedError):
        pass
    data = rng.integers(0, 256, (rows, t.row_bytes(shape[0])), dtype=np.uint8)
    # small positive fp16 scales in the usual places: the first 2 bytes of a block for most
    # types, the last 2 for q6_K/q3_K/q2_K-like layouts are left random (still valid encodings)
    scale = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
    blocks = data[:, t.row_meta:].reshape(rows, -1, t.type_size)
    if type_name not in ("q2_K", "q3_K", "q6_K"):
        blocks[:, :, 0:2] = scale
    if t.row_meta == 4:
        data[:, 0:4] = np.frombuffer(np.float32(1.0).tobytes(), dtype=np.uint8)
    if type_name == "q8_KV":
        # row header: f32 scale, then the i32 sum of the row's int8 quants (which q8_KV_r8 drops
        # because a valid file always has it equal to the sum)
        sums = data[:, 8:].view(np.int8).sum(axis=1, dtype=np.int32)
        data[:, 4:8] = sums.astype("<i4").view(np.uint8).reshape(rows, 4)
    return data


def build_demo_model(path: Path, seed: int = 0) -> list[str]:
    """Write the demo GGUF (with our own container writer, since gguf-py cannot write ik's
    types); returns the source types it holds."""
    rng = np.random.default_rng(seed)
    kv = [encode_kv("general.architecture", ValueType.STRING, "llama"),
          encode_kv("general.name", ValueType.STRING, "amx-repack demo"),
          encode_kv("general.file_type", ValueType.UINT32, 15),
          encode_kv("general.quantization_version", ValueType.UINT32, 2)]
    tensors: list[OutputTensor] = []
    blobs: list[bytes] = []

    def add(name, type_name, shape, data: np.ndarray):
        t = type_by_name(type_name)
        tensors.append(OutputTensor(name, shape, t.id, t.tensor_bytes(shape)))
        blobs.append(data.tobytes())
        assert len(blobs[-1]) == tensors[-1].nbytes

    add("token_embd.weight", "q8_0", (256, 64), _blocks("q8_0", (256, 64), rng))
    names = _source_types()
    for i, type_name in enumerate(names):
        block = type_by_name(type_name).block_size
        for shape, kind in zip(_SHAPES, ("attn_q", "ffn_down", "ffn_up_exps")):
            shape = (max(shape[0], block * 2), *shape[1:])
            add(f"blk.{i}.{kind}.weight", type_name, shape, _blocks(type_name, shape, rng))
        add(f"blk.{i}.attn_norm.weight", "f32", (256,), np.ones(256, dtype=np.float32))
    layout = plan_layout(3, kv, tensors, 32)
    with AtomicOutputFile(path, layout.total_size) as out:
        out.pwrite(0, layout.header)
        for i, blob in enumerate(blobs):
            out.pwrite(layout.data_start + layout.offsets[i], blob)
        out.commit(replace=True)    # demo --keep DIR: a second run rewrites its own files
    return names


@dataclass
class DemoRow:
    layout: str
    repacked: int
    tensors: int
    types: str
    convert_s: float
    verify: str
    unpack_identical: bool


def run_demo(folder: str | None = None, threads: int | None = None) -> tuple[Path, list[DemoRow]]:
    folder = Path(folder or tempfile.mkdtemp(prefix="amx-repack-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "demo.gguf"
    build_demo_model(model)
    original_sha = hashlib.sha256(model.read_bytes()).hexdigest()
    rows = []
    for layout in FAMILY_TABLES:
        out = folder / f"demo-{layout}.gguf"
        report = convert(model, out, layout=layout, threads=threads, force=True)
        v = verify(model, out, threads=threads)
        alone = verify(None, out, threads=threads)
        back = folder / f"demo-{layout}-unpacked.gguf"
        unpack(out, back, threads=threads, force=True)
        same = hashlib.sha256(back.read_bytes()).hexdigest() == original_sha
        kinds = sorted({TYPES[p.out_type_id].name for p in report.repacked})
        rows.append(DemoRow(layout, len(report.repacked), len(report.tensors), ", ".join(kinds),
                            report.seconds, "equivalent" if v.ok and alone.ok else "MISMATCH", same))
    return model, rows
