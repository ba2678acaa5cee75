"""zstd-compressed models: .gguf.zst inputs for every command, convert --compress."""

from __future__ import annotations

import hashlib

import pytest
import zstandard

import repack
from tests.conftest import amx_repack_cli


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def gemma_zst(gemma_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("zst") / "gemma.gguf.zst"
    with open(gemma_path, "rb") as src, open(path, "wb") as dst:
        zstandard.ZstdCompressor(level=1, threads=2).copy_stream(src, dst)   # no content size
    return path


def test_compress_output_equals_plain_output(gemma_path, tmp_path):
    plain = tmp_path / "plain.gguf"
    repack.convert(gemma_path, plain, layout="interleaved")
    report = repack.convert(gemma_path, tmp_path / "packed.gguf", layout="interleaved", compress=True)
    assert report.output.endswith("packed.gguf.zst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed.gguf.zst", "plain.gguf"]
    data = zstandard.ZstdDecompressor().stream_reader(open(tmp_path / "packed.gguf.zst", "rb")).read()
    assert sha256(data) == sha256(plain.read_bytes())
    # the frame records the content size, so a reader can check tensor ranges from the header
    head = open(tmp_path / "packed.gguf.zst", "rb").read(18)
    assert zstandard.frame_content_size(head) == plain.stat().st_size


def test_every_command_accepts_zst_input(gemma_path, gemma_zst, tmp_path):
    plain = tmp_path / "from-plain.gguf"
    from_zst = tmp_path / "from-zst.gguf"
    repack.convert(gemma_path, plain, layout="amx")
    repack.convert(gemma_zst, from_zst, layout="amx")
    assert sha256(plain.read_bytes()) == sha256(from_zst.read_bytes())
    packed_zst = tmp_path / "packed.gguf.zst"
    repack.convert(gemma_zst, tmp_path / "packed.gguf", layout="amx", compress=True)
    assert amx_repack_cli("verify", gemma_zst, packed_zst).returncode == 0
    assert amx_repack_cli("verify", packed_zst).returncode == 0
    info = amx_repack_cli("inspect", packed_zst, check=True).stdout
    assert "repacked by amx-repack" in info and "amx_q4_K" in info
    back = tmp_path / "back.gguf"
    amx_repack_cli("unpack", packed_zst, back, check=True)
    assert sha256(back.read_bytes()) == sha256(gemma_path.read_bytes())
    # the temporary decompressed copies are gone
    assert not [p for p in tmp_path.iterdir() if "amx-repack-tmp" in p.name]


def test_corrupt_stream_is_a_clean_error(gemma_zst, tmp_path):
    data = bytearray(gemma_zst.read_bytes()[:3_000_000])
    data[2_000_000] ^= 0xFF
    bad = tmp_path / "bad.gguf.zst"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.gguf"
    proc = amx_repack_cli("convert", bad, out)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "zstd" in proc.stderr or "truncated" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf.zst"]
