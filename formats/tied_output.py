"""Tied output matrices: which models ``convert --layout amx --untie-output`` can give a packed
``output.weight`` of their own, and what that tensor is.

A model without ``output.weight`` computes its logits with ``token_embd.weight`` (a *tied* output
matrix). That tensor stays unpacked in an AMX file because ``get_rows`` reads it (layouts.py), so
llama.cpp's AMX backend packs a copy of it at every load. ``--untie-output`` writes that copy into
the file instead: a tensor ``output.weight`` with the embedding's values, shape and source type,
in the AMX layout, which the patched runtime reads in place from the mapped file.

The added tensor is described by the records (metadata.py: ``amx_repack.added_tensors`` and
``.added_tensor_sources``): verify checks it against the embedding, unpack leaves it out.
"""

from __future__ import annotations

from .family import Decision, LayoutFamily
from .gguf_container import TensorInfo

SOURCE_NAME = "token_embd.weight"
OUTPUT_NAME = "output.weight"
ARCH_KEY = "general.architecture"

# The architectures whose llama.cpp loader creates LLM_TENSOR_OUTPUT "weight" with
# TENSOR_NOT_REQUIRED and, when the file has none, falls back to token_embd.weight with
# TENSOR_DUPLICATED: only these load a file that has both tensors. Derived from llama.cpp commit
# 0c1e57098 (the source the runtime patch is pinned to, llama-cpp-python 0.3.36) by
# runtime/llama.cpp/tools/untie_output_archs.py, which reads every architecture's
# load_arch_tensors (src/models/*.cpp); tests/test_untie_output.py checks this table against it.
# The others either require output.weight (never tied) or never read it (gemma, gemma2,
# command-r, cohere2, openelm, plm, ...: their head is always the embedding, and llama.cpp would
# refuse a file with an extra tensor). Rederive it when the runtime patch moves to a new llama.cpp.
UNTIE_OUTPUT_ARCHITECTURES = frozenset({
    "afmoe", "arcee", "arctic", "bailingmoe3", "bloom", "chameleon", "chatglm", "cogvlm",
    "cohere2moe", "deci", "deepseek", "deepseek2", "deepseek2-ocr", "deepseek32", "dflash",
    "dots3note", "dream", "ernie4_5", "ernie4_5-moe", "exaone", "exaone4", "falcon", "falcon-h1",
    "gemma-embedding", "gemma3", "gemma3n", "gemma4", "glm-dsa", "glm4", "glm4moe", "gpt2",
    "granite", "granite_swa", "granitehybrid", "granitemoe", "graniteswitch", "grok", "grovemoe",
    "hrm_text", "hunyuan-dense", "hunyuan-moe", "hunyuan_vl", "hy_v3", "jais2", "jamba", "laguna",
    "lfm2", "lfm2moe", "llada", "llama", "llama-embed", "llama4", "maincoder", "mamba", "mamba2",
    "minicpm", "minicpm3", "minimax-01", "mistral3", "mistral4", "mpt", "nanbeige", "nemotron_h",
    "nemotron_h_moe", "olmo", "paddleocr", "pangu-embedded", "phi3", "plamo2", "plamo3", "qwen2",
    "qwen2vl", "qwen3", "qwen35", "qwen35moe", "qwen3moe", "qwen3next", "qwen3tts", "qwen3vl",
    "qwen3vlmoe", "qwen4exp", "refact", "rnd1", "seed_oss", "smallthinker", "smollm3", "spark2_5",
    "starcoder", "starcoder2", "t5", "t5encoder",
})


def untie_problem(family: LayoutFamily, arch, tensors: dict[str, TensorInfo],
                  overrides=frozenset()) -> str | None:
    """Why a model cannot get an untied output.weight packed by ``family`` (one with
    ``unties_output``; None: it can). ``arch``: the value of general.architecture (None when
    absent); ``tensors``: name -> TensorInfo."""
    if OUTPUT_NAME in tensors:
        return (f"the model already has its own {OUTPUT_NAME}: there is no tied output matrix "
                f"to untie")
    if not isinstance(arch, str):
        return (f"the model has no {ARCH_KEY} record (a string) to tell whether its loader "
                f"reads a separate {OUTPUT_NAME}")
    if arch not in UNTIE_OUTPUT_ARCHITECTURES:
        return (f"llama.cpp's loader for architecture '{arch}' does not take a separate "
                f"{OUTPUT_NAME} in place of {SOURCE_NAME}, so it would not load the file")
    source = tensors.get(SOURCE_NAME)
    if source is None:
        return f"the model has no {SOURCE_NAME} to untie"
    decision = untie_decision(family, source, overrides)
    if not decision.packs:
        return (f"{SOURCE_NAME} ({source.type.name}, {'x'.join(map(str, source.shape))}) cannot "
                f"run as an {family.title} output matrix: {decision.reason}")
    return None


def untie_decision(family: LayoutFamily, source: TensorInfo, overrides=frozenset()) -> Decision:
    """The family's decision for the output matrix made from ``source``: the embedding's type and
    shape under the name output.weight, decided by the same rules as every other tensor (the
    get_rows rule does not apply: nothing reads output.weight by rows)."""
    return family.decide(TensorInfo(OUTPUT_NAME, source.shape, source.type_id, 0, source.nbytes),
                         overrides)
