"""Same input, same output, byte for byte; and no command ever modifies its input.

The output of convert (both layouts) and unpack must not depend on the thread count, on the size
of the work chunks the pipeline cuts tensors into (``CHUNK_BYTES``), on the run, or on whether
the API or the command line wrote it. Chunk sizes go from one tile strip / row group per task
(4096 bytes) to whole tensors per task (64 MiB).
"""

from __future__ import annotations

import importlib
import os
import shutil

import pytest

import repack
from formats.gguf_container import read_gguf
from repack.families import Family
from tests.conftest import amx_repack_cli
from tests.synthetic import fingerprint, sha256, small_model_tensors, write_model

pipeline = importlib.import_module("repack.pipeline")
unpack_module = importlib.import_module("repack.unpack")   # repack.unpack is the function

THREADS = (1, 2, 7)
CHUNKS = (4096, 1 << 20, 64 << 20)


def _tensors():
    # the small model's kinds of tensors, plus two of ~4.5 MB that 1 MiB chunks cut in pieces
    return small_model_tensors() + [("blk.2.ffn_up.weight", "q8_0", (4096, 1024)),
                                    ("blk.2.ffn_down.weight", "q4_K", (4096, 2048))]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("det")
    path = write_model(folder / "model.gguf", _tensors(), seed=5)
    return path


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    """Default settings, through the command line: layout -> sha256 of the output."""
    folder = tmp_path_factory.mktemp("ref")
    refs = {}
    for layout in ("amx", "interleaved"):
        out = folder / f"{layout}.gguf"
        amx_repack_cli("convert", "-q", "--layout", layout, model, out, check=True)
        refs[layout] = sha256(out)
    return refs


@pytest.fixture
def pack_calls(monkeypatch):
    """Count the kernel calls (one per chunk) to prove the chunk size really changed."""
    calls = []
    original = Family.pack

    def counting(self, *args, **kw):
        calls.append(args[2])          # rows of the chunk
        return original(self, *args, **kw)

    monkeypatch.setattr(Family, "pack", counting)
    return calls


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_convert_identical_for_any_threads_and_chunk_size(model, reference, tmp_path, monkeypatch,
                                                          pack_calls, layout, chunk):
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", chunk)
    before = fingerprint(model)
    calls_per_run = []
    for threads in THREADS:
        out = tmp_path / f"t{threads}.gguf"
        pack_calls.clear()
        report = repack.convert(model, out, layout=layout, threads=threads)
        calls_per_run.append(len(pack_calls))
        assert sha256(out) == reference[layout], (layout, threads, chunk)
        out.unlink()
    assert fingerprint(model) == before
    # the same chunking whatever the threads, and the chunk size did change it
    n_packed = len(report.repacked)
    assert len(set(calls_per_run)) == 1
    if chunk == 4096:
        assert calls_per_run[0] > 4 * n_packed
    elif chunk == 64 << 20:
        assert calls_per_run[0] == n_packed


def test_convert_twice_is_identical_and_none_is_a_copy(model, reference, tmp_path):
    for layout in ("amx", "interleaved"):
        a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
        repack.convert(model, a, layout=layout)
        repack.convert(model, b, layout=layout)
        assert a.read_bytes() == b.read_bytes()
        assert sha256(a) == reference[layout]
        a.unlink()
        b.unlink()
    copy = tmp_path / "copy.gguf"
    repack.convert(model, copy, layout="none", threads=7)
    assert sha256(copy) == sha256(model)


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_unpack_identical_for_any_threads_and_chunk_size(model, tmp_path, monkeypatch, layout):
    packed = tmp_path / "packed.gguf"
    repack.convert(model, packed, layout=layout)
    want = sha256(model)
    before = fingerprint(packed)
    for chunk in CHUNKS:
        monkeypatch.setattr(unpack_module, "CHUNK_BYTES", chunk)
        for threads in THREADS:
            back = tmp_path / "back.gguf"
            repack.unpack(packed, back, threads=threads)
            assert sha256(back) == want, (chunk, threads)
            back.unlink()
    assert fingerprint(packed) == before


# ------------------------------------------------------------------------------------------
# The input is never modified, by any command, successful or failed


def _flip_tensor_byte(path, name: str) -> None:
    with read_gguf(path) as f:
        at = f.data_start + f.tensor(name).offset + 10
    with open(path, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)[0]
        fh.seek(at)
        fh.write(bytes([b ^ 0x10]))


def test_no_command_modifies_its_inputs(model, tmp_path):
    packed = tmp_path / "packed.gguf"
    repack.convert(model, packed, layout="amx")
    bad = tmp_path / "bad.gguf"
    shutil.copyfile(packed, bad)
    _flip_tensor_byte(bad, "blk.2.ffn_up.weight")
    existing = tmp_path / "existing.gguf"
    existing.write_bytes(b"keep")
    files = [model, packed, bad, existing]
    before = {p: fingerprint(p) for p in files}

    runs = [
        (["convert", "-q", model, tmp_path / "o1.gguf"], 0),
        (["convert", "-q", "--layout", "interleaved", "-t", "1", model, tmp_path / "o2.gguf"], 0),
        (["convert", "-q", "--layout", "none", model, tmp_path / "o3.gguf"], 0),
        (["convert", "-q", model, existing], 2),                        # exists, no --force
        (["convert", "-q", model, model], 2),                           # output is the input
        (["convert", "-q", "--include", "(", model, tmp_path / "o4.gguf"], 2),   # bad regex
        (["verify", model, packed], 0),
        (["verify", packed], 0),
        (["verify", model, bad], 1),                                    # mismatching pair
        (["verify", bad], 1),
        (["unpack", "-q", model, tmp_path / "o5.gguf"], 2),             # not a repacked file
        (["unpack", "-q", bad, tmp_path / "o6.gguf"], 1),               # differs from its records
        (["unpack", "-q", packed, existing], 2),
        (["inspect", model], 0),
        (["inspect", "--json", packed], 0),
    ]
    for args, status in runs:
        proc = amx_repack_cli(*args)
        assert proc.returncode == status, (args, proc.returncode, proc.stderr)
        if status == 2:
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        for p in files:
            assert fingerprint(p) == before[p], (args, p)
    # and the failed ones left nothing behind
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["packed.gguf", "bad.gguf", "existing.gguf", "o1.gguf", "o2.gguf",
                           "o3.gguf"]), left
    # the Python API as well, including a failure inside the pipeline
    with pytest.raises(repack.RepackError):
        repack.unpack(bad, tmp_path / "o7.gguf")
    assert not (tmp_path / "o7.gguf").exists()
    for p in files:
        assert fingerprint(p) == before[p]
    assert os.path.exists(model)
