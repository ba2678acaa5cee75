"""MoE experts on AMX: MUL_MAT_ID from the packed slices of the mapped file (runtime patch 0002).

Same two builds as tests/test_llama_runtime.py (``emulate-amx`` patched, ``emulate-amx-stock``).
The tests prove:
* kernel level, for each of the seven packed types and unevenly routed tokens (an expert with no
  rows, one with all of them, one with a single row in a batch, top-k 1, 2 and 8, a token
  generation step): MUL_MAT_ID on our mapped packed experts equals, bit for bit, upstream's own
  2-D AMX path run expert by expert on its load-time packing of each slice (upstream cannot pack
  3-D experts at load: its AMX buffer packs 2-D weights only), and the stock CPU MUL_MAT_ID on the
  original experts within MOE_RTOL; and upstream's packer, slice by slice, gives our bytes;
* end to end: a small but complete qwen3moe model built here (4 layers, 8 experts, top-2, a
  byte-fallback SentencePiece vocabulary, weights quantized by ggml itself) converted with
  ``--layout amx`` (experts packed by default) generates the same greedy tokens from the mapped
  file as stock llama.cpp on the original wherever the choice is clearer than the model's rounding
  noise (measured: stock on its CPU vs its AMX kernels), and moves no margin more than that noise
  (x1.5); nothing is repacked at load; the experts' MUL_MAT_ID ran on the tiles: the prompt's
  tile-op count exceeds that of the same file with its experts left unpacked; one-token decode
  steps take the AVX-512 VNNI kernel (no tile ops from experts); swapping two experts' slices
  is detected;
* without AMX the patched runtime refuses packed experts, as it refuses packed 2-D weights.

Skipped only when test_llama_runtime.py's prerequisites are missing (see there which fail under CI).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import repack
from formats.gguf_container import read_gguf
from tests.test_llama_runtime import N_PREDICT, PROMPT, generate, runtime  # noqa: F401 (fixture)

gguf = pytest.importorskip("gguf")

AMX_TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]
# end to end: every type; all seven run in ~2 minutes on two cores
E2E_TYPES = AMX_TYPES

# stock CPU MUL_MAT_ID vs ours: both quantize the activations the same way and differ only in the
# order of float accumulation; measured at most 5e-7 of the output's largest value
MOE_RTOL = 1e-5
# kernel-level experts: N = 96 (a 64- and a 32-column VNNI block), K = 512 (two K-quant blocks)
N_EXPERTS, KERNEL_N, KERNEL_K = 8, 96, 512


def _tool(bin_dir: Path, *args) -> str:
    proc = subprocess.run([bin_dir / "amx-kernel-check", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def ggml_quantize(bin_dir: Path, qtype: str, w: np.ndarray, tmp: Path) -> bytes:
    """w (rows x K, f32) quantized by ggml's own quantizer (stock build)."""
    w.astype(np.float32).tofile(tmp / "w.f32")
    _tool(bin_dir, "quantize", qtype.lower().replace("_k", "_K"), w.shape[0], w.shape[1],
          tmp / "w.f32", tmp / "w.q")
    return (tmp / "w.q").read_bytes()


def _raw_tensor(writer, name: str, qtype: str, data: bytes, shape: tuple[int, ...]) -> None:
    """Add quantized bytes; shape in ggml order (ne0 first)."""
    qt = gguf.GGMLQuantizationType[qtype]
    block, size = gguf.GGML_QUANT_SIZES[qt]
    row_bytes = shape[0] // block * size
    arr = np.frombuffer(data, dtype=np.uint8).reshape(*reversed(shape[1:]), row_bytes)
    writer.add_tensor(name, arr, raw_dtype=qt)


def _write(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --------------------------------------------------------------------------------------------
# Kernel level

# name -> (tokens, slots per token, ne11, expert ids as a function of rng): uneven on purpose
def _routing(case: str, rng) -> tuple[np.ndarray, int]:
    if case == "top1_all_rows_to_one":        # expert 3 gets every row (37: a 32-row block + 5)
        return np.full((37, 1), 3, dtype=np.int32), 1
    if case == "top2_uneven":                 # expert 0 most rows, 7 exactly one, 5 none
        ids = np.stack([np.zeros(40, np.int32), rng.choice([1, 2, 4, 6], 40).astype(np.int32)], 1)
        ids[0] = [1, 0]
        ids[17, 1] = 7
        return ids, 2
    if case == "top8_all_experts":            # every token uses all 8 experts, in shuffled order
        return np.stack([rng.permutation(8) for _ in range(9)]).astype(np.int32), 1
    if case == "decode_top2":                 # token generation: one row per expert (VNNI path)
        return np.array([[6, 2]], dtype=np.int32), 2
    raise AssertionError(case)


@pytest.fixture(scope="module")
def packed_experts(runtime, tmp_path_factory):
    """qtype -> (original bytes, our packed bytes, original GGUF, data offset): one 3-D expert
    tensor per type, quantized by ggml, converted by `amx-repack convert --layout amx`."""
    tmp = tmp_path_factory.mktemp("moe-kernel")
    done = {}

    def get(qtype: str):
        if qtype not in done:
            rng = np.random.default_rng(7)
            w = rng.standard_normal((N_EXPERTS * KERNEL_N, KERNEL_K)).astype(np.float32)
            orig = ggml_quantize(runtime["stock"], qtype, w, tmp)
            src = tmp / f"{qtype}.gguf"
            writer = gguf.GGUFWriter(src, "qwen3moe")
            _raw_tensor(writer, "blk.0.ffn_down_exps.weight", qtype, orig, (KERNEL_K, KERNEL_N, N_EXPERTS))
            _write(writer)
            out = tmp / f"{qtype}-amx.gguf"
            report = repack.convert(src, out, layout="amx")
            assert [p.name for p in report.repacked] == ["blk.0.ffn_down_exps.weight"]
            with read_gguf(src) as a, read_gguf(out) as b:
                (t,) = b.tensors
                assert t.type.origin == "amx" and bytes(a.tensor_data(a.tensors[0])) == orig
                done[qtype] = (orig, bytes(b.tensor_data(t)), src, a.data_start + a.tensors[0].offset)
        return done[qtype]

    return get


@pytest.mark.parametrize("qtype", AMX_TYPES)
def test_upstream_packer_gives_our_expert_slices(runtime, packed_experts, qtype, tmp_path):
    """Upstream's AMX buffer, given each expert's slice as a 2-D weight, packs our bytes (§11)."""
    orig, packed, src, offset = packed_experts(qtype)
    slice_bytes = len(orig) // N_EXPERTS
    name = qtype.lower().replace("_k", "_K")
    (tmp_path / "manifest").write_text("".join(f"{name} {KERNEL_N} {KERNEL_K} {offset + e * slice_bytes}\n"
                                               for e in range(N_EXPERTS)))
    _tool(runtime["stock"], "pack", src, tmp_path / "manifest", tmp_path / "upstream.bin")
    assert (tmp_path / "upstream.bin").read_bytes() == packed


@pytest.mark.parametrize("case", ["top1_all_rows_to_one", "top2_uneven", "top8_all_experts", "decode_top2"])
@pytest.mark.parametrize("qtype", AMX_TYPES)
def test_mul_mat_id_on_mapped_experts(runtime, packed_experts, qtype, case, tmp_path):
    orig, packed, _, _ = packed_experts(qtype)
    rng = np.random.default_rng(11)
    ids, ne11 = _routing(case, rng)
    n_tok, n_ids = ids.shape
    x = rng.standard_normal((n_tok, ne11, KERNEL_K)).astype(np.float32)
    for name, data in (("orig.bin", orig), ("packed.bin", packed)):
        (tmp_path / name).write_bytes(data)
    x.tofile(tmp_path / "x.bin")
    ids.tofile(tmp_path / "ids.bin")
    out = _tool(runtime["patched"], "mul_mat_id", qtype.lower().replace("_k", "_K"), KERNEL_N, KERNEL_K,
                N_EXPERTS, ne11, n_ids, n_tok, tmp_path / "orig.bin", tmp_path / "packed.bin",
                tmp_path / "x.bin", tmp_path / "ids.bin", tmp_path / "y.bin")
    tile_ops = {k: int(v) for k, v in re.findall(r"tile_ops (\w+) (-?\d+)", out)}
    y_2d, y_mapped, y_stock = np.fromfile(tmp_path / "y.bin", dtype=np.float32).reshape(3, n_tok, n_ids, KERNEL_N)

    # bit for bit upstream's own 2-D AMX path on its load-time packing, expert by expert
    assert np.array_equal(y_mapped.view(np.uint32), y_2d.view(np.uint32))
    assert np.all(np.isfinite(y_mapped))
    # the stock CPU MUL_MAT_ID on the original experts: same activation quantization, only the
    # order of float accumulation differs
    assert np.abs(y_mapped - y_stock).max() <= MOE_RTOL * np.abs(y_stock).max()
    # the tile path ran exactly as the per-expert 2-D path did: for experts with more than one row
    # (a single row takes the AVX-512 VNNI kernel, as a 2-D MUL_MAT with M = 1 does)
    counts = np.bincount(ids.ravel(), minlength=N_EXPERTS)
    assert tile_ops["mapped"] == tile_ops["per_expert_2d"]
    assert (tile_ops["mapped"] > 0) == bool((counts > 1).any())
    assert tile_ops["stock_cpu"] == 0
    if case == "top2_uneven":
        assert counts[5] == 0 and counts[7] == 1 and counts[0] > 32


# --------------------------------------------------------------------------------------------
# End to end: a small qwen3moe model

N_VOCAB, N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, HEAD_DIM, N_FF_EXP, N_EXPERT_USED = 512, 256, 4, 4, 2, 64, 256, 2
# A random model amplifies rounding: two correct kernels differ by ~1e-7, which flips some Q8
# activation roundings downstream, and the flips grow through the layers (stock llama.cpp on its
# CPU kernels and on its AMX kernels pick different tokens on such a model with every scale 1).
# The test therefore measures that noise (stock CPU vs stock AMX, same tokens fed) and requires
# the same choice wherever the choice is clearer than the noise. The scales below keep the noise
# small while the layers still decide the tokens: the embedding carries the residual stream
# (x2), the layers' outputs are halved, the router logits spread wide (no near-tie top-2).
EMBEDDING_SCALE, LAYER_OUTPUT_SCALE, ROUTER_SCALE = 2.0, 0.5, 4.0


def _vocab() -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece ("llama") vocabulary: 3 specials, 256 byte-fallback tokens, then single
    characters and a few words, padded with two-letter pieces to N_VOCAB."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    pieces = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + \
             [chr(c) for c in range(ord("A"), ord("Z") + 1)] + \
             ["\u2581The", "\u2581capital", "\u2581of", "\u2581France", "\u2581is", "\u2581Paris"]
    letters = "etaoinshrdlucmfw"
    pieces += [f"\u2581{a}{b}" for a in letters for b in letters]
    pieces = list(dict.fromkeys(pieces))[:N_VOCAB - len(tokens)]   # unique, in order
    scores = [0.0] * len(tokens) + [-float(i) for i in range(len(pieces))]
    return tokens + pieces, scores, types + [1] * len(pieces)


def build_qwen3moe(path: Path, qtype: str, bin_dir: Path, tmp: Path) -> Path:
    """Every hyperparameter qwen3moe reads; matrices quantized to qtype by ggml (the embedding to
    Q8_0), norms and the router in F32. Scaled so activations stay O(1) and logits spread."""
    rng = np.random.default_rng(2024)
    w = gguf.GGUFWriter(path, "qwen3moe")
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF_EXP * N_EXPERT_USED)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_expert_count(N_EXPERTS)
    w.add_expert_used_count(N_EXPERT_USED)
    w.add_expert_feed_forward_length(N_FF_EXP)
    tokens, scores, types = _vocab()
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)

    def matrix(name: str, shape: tuple[int, ...], t: str = qtype, scale: float = 1.0) -> None:
        rows = int(np.prod(shape[1:]))
        data = (rng.standard_normal((rows, shape[0])) * scale / np.sqrt(shape[0])).astype(np.float32)
        _raw_tensor(w, name, t, ggml_quantize(bin_dir, t, data, tmp), shape)

    def f32(name: str, shape: tuple[int, ...], value=None, scale=1.0) -> None:
        data = np.full(tuple(reversed(shape)), value, np.float32) if value is not None else \
            (rng.standard_normal(tuple(reversed(shape))) * scale).astype(np.float32)
        w.add_tensor(name, data)

    matrix("token_embd.weight", (N_EMBD, N_VOCAB), "Q8_0", scale=np.sqrt(N_EMBD) * EMBEDDING_SCALE)
    f32("output_norm.weight", (N_EMBD,), 1.0)
    matrix("output.weight", (N_EMBD, N_VOCAB), scale=8.0)
    for i in range(N_LAYER):
        b = f"blk.{i}."
        f32(b + "attn_norm.weight", (N_EMBD,), 1.0)
        matrix(b + "attn_q.weight", (N_EMBD, N_HEAD * HEAD_DIM))
        matrix(b + "attn_k.weight", (N_EMBD, N_HEAD_KV * HEAD_DIM))
        matrix(b + "attn_v.weight", (N_EMBD, N_HEAD_KV * HEAD_DIM))
        matrix(b + "attn_output.weight", (N_HEAD * HEAD_DIM, N_EMBD), scale=LAYER_OUTPUT_SCALE)
        f32(b + "attn_q_norm.weight", (HEAD_DIM,), 1.0)
        f32(b + "attn_k_norm.weight", (HEAD_DIM,), 1.0)
        f32(b + "ffn_norm.weight", (N_EMBD,), 1.0)
        f32(b + "ffn_gate_inp.weight", (N_EMBD, N_EXPERTS), scale=ROUTER_SCALE)
        matrix(b + "ffn_gate_exps.weight", (N_EMBD, N_FF_EXP, N_EXPERTS))
        matrix(b + "ffn_up_exps.weight", (N_EMBD, N_FF_EXP, N_EXPERTS))
        matrix(b + "ffn_down_exps.weight", (N_FF_EXP, N_EMBD, N_EXPERTS), scale=LAYER_OUTPUT_SCALE)
    _write(w)
    return path


@pytest.fixture(scope="module")
def moe_models(runtime, tmp_path_factory):
    """qtype -> (original, converted, converted with the experts left unpacked)."""
    tmp = tmp_path_factory.mktemp("moe-e2e")
    done = {}

    def get(qtype: str):
        if qtype not in done:
            original = build_qwen3moe(tmp / f"moe-{qtype}.gguf", qtype, runtime["stock"], tmp)
            ours, no_exps = tmp / f"moe-{qtype}-amx.gguf", tmp / f"moe-{qtype}-amx-no-exps.gguf"
            report = repack.convert(original, ours, layout="amx")
            exps = {p.name for p in report.repacked if "_exps." in p.name}
            assert len(exps) == 3 * N_LAYER          # experts are packed by default
            repack.convert(original, no_exps, layout="amx", exclude=[r"_exps\."])
            done[qtype] = (original, ours, no_exps)
        return done[qtype]

    return get


def run(bin_dir: Path, model: Path, force: list[str] | None = None, env: dict | None = None) -> dict:
    """generate(), optionally teacher-forced on given tokens, plus each step's margin and the
    tile-op counts (amx-generate --force, margins:, tile_ops_*:)."""
    cmd = [bin_dir / "amx-generate", model, "-n", str(N_PREDICT), "-t", "2"]
    cmd += ["--force", ",".join(force)] if force else []
    proc = subprocess.run([*cmd, PROMPT], capture_output=True, text=True, errors="replace",
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-2000:]
    field = lambda name: re.search(rf"^{name}:(.*)$", proc.stdout, re.M).group(1).split()  # noqa: E731
    return {"tokens": field("tokens"), "margins": [float(m) for m in field("margins")],
            "tile_ops_prompt": int(field("tile_ops_prompt")[0]),
            "tile_ops_decode": int(field("tile_ops_decode")[0]), "stderr": proc.stderr}


def margin_deviation(a: dict, b: dict) -> float:
    return max(abs(x - y) for x, y in zip(a["margins"], b["margins"]))


@pytest.mark.parametrize("qtype", E2E_TYPES)
def test_moe_generates_from_mapped_experts(runtime, moe_models, qtype):
    original, ours, no_exps = moe_models(qtype)
    stock = run(runtime["stock"], original)
    patched = run(runtime["patched"], ours)
    assert len(stock["tokens"]) == N_PREDICT and len(set(stock["tokens"])) > 1

    # The rounding noise of this model: stock llama.cpp itself, on its CPU kernels instead of its
    # AMX ones (both correct), fed the same tokens; how far each step's margin moves.
    stock_cpu = run(runtime["patched"], original, force=stock["tokens"], env={"AMX_TILE_EMULATION_DENY": "1"})
    noise = margin_deviation(stock, stock_cpu)
    # ours, fed the same tokens: no more noise than stock's own choice of kernels brings (x1.5)
    forced = run(runtime["patched"], ours, force=stock["tokens"])
    assert margin_deviation(stock, forced) <= max(1.5 * noise, 1e-3)
    clear = [m > noise for m in stock["margins"]]
    assert sum(clear) >= N_PREDICT // 2
    for step, is_clear in enumerate(clear):
        if is_clear:
            assert forced["tokens"][step] == stock["tokens"][step], f"step {step}"
    # greedy generation: the same tokens as stock, at least up to the first step whose choice is
    # within the noise (for Q4_0, Q8_0 and IQ4_XS the noise is 0: every token)
    first_unclear = clear.index(False) if False in clear else N_PREDICT
    assert patched["tokens"][:first_unclear + 1] == stock["tokens"][:first_unclear + 1]

    # zero copy: nothing repacked at load, the packed experts stay in the mapped buffer
    assert "amx repack tensor" not in patched["stderr"]
    assert "CPU_Mapped model buffer size" in patched["stderr"]
    assert "AMX model buffer size" not in patched["stderr"]
    # the experts' MUL_MAT_ID ran on the tiles in the prompt (several rows per expert) ...
    baseline = run(runtime["patched"], no_exps)
    assert patched["tile_ops_prompt"] > baseline["tile_ops_prompt"] > 0
    # ... and one-token steps took the VNNI kernel for them, as upstream's 2-D M = 1 path does
    assert patched["tile_ops_decode"] == baseline["tile_ops_decode"]


def test_moe_check_sees_wrong_experts(runtime, moe_models, tmp_path):
    """The end-to-end check can fail: the same file with two experts' packed slices swapped in
    every ffn_down_exps (what reading the wrong slice would compute) moves the margins far
    beyond the noise (Q4_0: the noise is 0)."""
    original, ours, _ = moe_models("Q4_0")
    swapped = tmp_path / "swapped.gguf"
    data = bytearray(ours.read_bytes())
    with read_gguf(ours) as f:
        for t in f.tensors:
            if t.name.endswith("ffn_down_exps.weight"):
                start, size = f.data_start + t.offset, t.nbytes // N_EXPERTS
                e0, e1 = bytes(data[start:start + size]), bytes(data[start + size:start + 2 * size])
                data[start:start + size], data[start + size:start + 2 * size] = e1, e0
    swapped.write_bytes(bytes(data))
    stock = run(runtime["stock"], original)
    forced = run(runtime["patched"], swapped, force=stock["tokens"])
    assert margin_deviation(stock, forced) > 0.05


def test_moe_experts_refused_without_amx(runtime, moe_models):
    _, ours, _ = moe_models("Q4_0")
    with read_gguf(ours) as f:
        assert any(t.type.origin == "amx" and len(t.shape) == 3 for t in f.tensors)
    result = generate(runtime["patched"], ours, env={"AMX_TILE_EMULATION_DENY": "1"})
    assert result["returncode"] == 1 and result["tokens"] is None
    assert "is packed for Intel AMX (amx_q4_0), but this CPU has no AMX" in result["stderr"]
    assert "failed to find a compatible buffer type for tensor" in result["stderr"]
