"""Generate text from a GGUF file with ik_llama.cpp, through its Python bindings.

    pip install "amx-repack[ik]"            # or: pip install ".[ik]" in the source
    python -m repack.ik_generate MODEL.gguf -p "The capital of France is" -n 32

ik_llama.cpp reads an ``--layout interleaved`` file as it is (its own _R4/_R8 type ids), mapped
with mmap. Its prebuilt wheel (``ik-llama-cpp-python``) ships the library and Python bindings but
no ``llama-cli``, so this is the way to run such a file from what pip installs: greedy decoding
(argmax of the logits: the same text on every run), the prompt and then each new piece of text
printed to stdout as it is generated; ik_llama.cpp's own log goes to stderr.

Exit status as for ``amx-repack``: 2 with one line for a missing file, a file ik_llama.cpp does
not read (our ``amx`` layout) or bindings that are not installed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator

import click

INSTALL_HINT = "pip install \"amx-repack[ik]\" (or pip install ik-llama-cpp-python==0.1.5)"


def load(model_path: str, *, n_ctx: int = 512, n_threads: int = 0):
    """ik_llama.cpp's model and context for MODEL, mapped with mmap (``IkLlama``)."""
    from ik_llama_cpp import IkLlama
    # The wheel warns that it turns flash attention off unless the optional py-cpuinfo package
    # reports AVX-VNNI; that choice is the wheel's and the warning tells a user nothing to do.
    logging.getLogger("ik_llama_cpp").setLevel(logging.ERROR)
    # ik's ggml prints some warnings with printf: while it loads, its stdout is our stderr, so
    # that stdout carries only the text
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        return IkLlama(model_path, n_ctx=n_ctx, n_threads=n_threads, use_mmap=True, verbose=False)
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def greedy_tokens(llm, prompt: str, n_tokens: int, *, stop_at_eog: bool = True) -> Iterator[int]:
    """The next ``n_tokens`` token ids after ``prompt``, each the argmax of its logits, stopping
    early at an end-of-generation token unless ``stop_at_eog`` is false. The argmax is numpy's over the logits ik_llama.cpp
    returns (the wheel's own sampler walks the vocabulary in Python)."""
    import numpy as np
    from ik_llama_cpp import _ctypes_api as C
    from ik_llama_cpp._internals import make_batch_range, make_batch_single

    ctx = llm._context
    n_vocab = llm._model.n_vocab
    tokens = llm.tokenize(prompt)
    batch = make_batch_range(tokens, pos_start=0, logits_last=True)
    status = ctx.decode(batch)
    C.llama_batch_free(batch)
    if status != 0:
        raise RuntimeError(f"ik_llama.cpp could not decode the prompt (llama_decode: {status})")
    pos = len(tokens)
    for _ in range(n_tokens):
        logits = np.ctypeslib.as_array(C.llama_get_logits_ith(ctx.ctx, -1), shape=(n_vocab,))
        token = int(np.argmax(logits))
        if stop_at_eog and C.llama_token_is_eog(llm._model.model, token):
            return
        yield token
        batch = make_batch_single(token, pos)
        status = ctx.decode(batch)
        C.llama_batch_free(batch)
        if status != 0:
            raise RuntimeError(f"ik_llama.cpp could not decode a token (llama_decode: {status})")
        pos += 1


def _fail(message: str) -> None:
    click.echo(f"ik_generate: {message}", err=True)
    sys.exit(2)


def _refusal(model: str) -> str | None:
    """Why ik_llama.cpp cannot read MODEL, or None. Only the header is read."""
    from . import RepackError
    from . import inspect as inspect_file
    try:
        info = inspect_file(model)
    except RepackError as e:
        return str(e)
    recorded = info.repacked_by
    if recorded and recorded.get("layout") != "interleaved":
        return (f"{model} is in amx-repack's {recorded.get('layout')} layout, which ik_llama.cpp "
                f"does not read; it runs on {recorded.get('runtime')}. For ik_llama.cpp, convert "
                f"the original with --layout interleaved (amx-repack unpack gives it back)")
    return None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-p", "--prompt", default="The capital of France is", show_default=True,
              help="Text to continue.")
@click.option("-n", "--n-predict", "n_tokens", type=click.IntRange(min=1), default=32,
              show_default=True, help="Tokens to generate (fewer if the model ends the text).")
@click.option("-t", "--threads", type=click.IntRange(min=0), default=0,
              help="CPU threads (0: ik_llama.cpp's default).")
@click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=16), default=512,
              show_default=True, help="Context length in tokens.")
def main(model: str, prompt: str, n_tokens: int, threads: int, n_ctx: int) -> None:
    """Greedy text generation from MODEL (a GGUF file, e.g. one written by
    `amx-repack convert --layout interleaved`) with ik_llama.cpp's Python bindings."""
    if not os.path.isfile(model):
        _fail(f"{model}: no such file")
    reason = _refusal(model)
    if reason:
        _fail(reason)
    try:
        import ik_llama_cpp  # noqa: F401
    except ImportError:
        _fail(f"ik_llama.cpp's Python bindings are not installed: {INSTALL_HINT}")
    try:
        llm = load(model, n_ctx=n_ctx, n_threads=threads)
    except RuntimeError as e:       # the bindings' words for a file the library refused
        _fail(f"{e} (ik_llama.cpp's log above says why)")
    n_prompt = len(llm.tokenize(prompt))
    if n_prompt + n_tokens > n_ctx:
        _fail(f"the prompt ({n_prompt} tokens) and {n_tokens} new tokens do not fit a context "
              f"of {n_ctx}: raise --ctx-size")
    click.echo(prompt, nl=False)
    generated: list[int] = []
    shown = ""
    for token in greedy_tokens(llm, prompt, n_tokens):
        generated.append(token)
        text = llm.detokenize(generated)
        # a character split over two tokens decodes only once both are there
        if not text.endswith("\ufffd"):
            click.echo(text[len(shown):], nl=False)
            sys.stdout.flush()
            shown = text
    click.echo(llm.detokenize(generated)[len(shown):])


if __name__ == "__main__":
    main()
