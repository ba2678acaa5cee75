"""zstd-compressed models: .gguf.zst inputs for every command, convert --compress."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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


def assert_converts_like_the_plain_file(zst: Path, plain: Path, folder: Path) -> None:
    """Converting the .zst input gives the same bytes as converting the plain file."""
    from_plain, from_zst = folder / "from-plain.gguf", folder / "from-zst.gguf"
    repack.convert(plain, from_plain, layout="amx")
    repack.convert(zst, from_zst, layout="amx")
    assert sha256(from_plain.read_bytes()) == sha256(from_zst.read_bytes())


def test_every_command_accepts_zst_input(gemma_path, gemma_zst, tmp_path):
    assert_converts_like_the_plain_file(gemma_zst, gemma_path, tmp_path)
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


# ------------------------------------------------------------------------------------------
# Bounded decompression (issue 11, item 5): bombs, free space, truncation, many frames

from tests.ggufbuild import RawGGUF, RawTensor, kv_str, kv_u32, valid_small  # noqa: E402
from tests.rss import run_measured                                        # noqa: E402
from tests.test_disk_full import assert_one_line_error, leftovers, mount_tmpfs  # noqa: E402,F401
from tests.synthetic import write_model                                   # noqa: E402
from tests.zstframes import frame, skippable                              # noqa: E402

BOMB = 100 << 30          # what the 3 MB frame declared
DISK = 48 << 20


def bomb_commands(src, disk):
    """Every command that decompresses its input, writing into the small disk `disk`."""
    env = dict(os.environ, TMPDIR=str(disk))      # verify's copy goes to the temporary folder
    return [(["convert", src, disk / "out.gguf"], None),
            (["convert", "--layout", "interleaved", src, disk / "out.gguf"], None),
            (["unpack", src, disk / "out.gguf"], None),
            (["verify", src], env)]


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_decompression_bomb_is_stopped_in_bounded_memory(tmp_path, mount_tmpfs, declared):
    """A 3 MB frame of 100 GiB of zeros (after a valid GGUF header): refused up front when it
    declares its size, stopped at the free space when it does not; memory stays bounded (the
    old code held a whole input chunk's output: ~23 GB resident before the kernel killed it)."""
    src = tmp_path / "bomb.gguf.zst"
    src.write_bytes(frame(valid_small().tobytes(), BOMB, BOMB if declared else None))
    assert src.stat().st_size < 4 << 20
    disk = mount_tmpfs(DISK)
    for args, env in bomb_commands(src, disk):
        proc, rss = run_measured(*args, env=env, timeout=120)
        line = assert_one_line_error(proc, "not enough free space", str(disk))
        assert ("107,374,182,400" in line) == declared, line
        assert rss < 160 << 20, (args, rss)         # measured: ~40 MiB declared, ~50 undeclared
        assert leftovers(disk) == []
    assert leftovers(tmp_path) == ["bomb.gguf.zst", "disk"]
    # inspect reads the header only, and says what the file is
    assert amx_repack_cli("inspect", src).returncode == 0


def test_real_output_outgrowing_its_declared_size_is_an_error(tmp_path):
    """A frame that declares 1 MiB and holds 1 GiB (or the other way round): zstd checks the
    frame content size itself; the command ends with one line and leaves nothing."""
    head = valid_small().tobytes()
    for name, data in (("lies-small.gguf.zst", frame(head, 1 << 30, 1 << 20)),
                       ("lies-big.gguf.zst", frame(head, 1 << 20, 1 << 30))):
        src = tmp_path / name
        src.write_bytes(data)
        out = tmp_path / "out.gguf"
        proc = amx_repack_cli("convert", src, out)
        assert_one_line_error(proc, "zstd")
        assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".zst") == []
        src.unlink()


def test_truncated_stream_is_refused_before_anything_is_written(tmp_path):
    """The frames are walked first: a cut download is refused at once (it was decompressed to
    the end before, into a temporary copy as large as the file claims)."""
    data = frame(valid_small().tobytes(), 512 << 20, None)
    for cut in (len(data) - 2, len(data) // 2, 9):
        src = tmp_path / "cut.gguf.zst"
        src.write_bytes(data[:cut])
        proc = amx_repack_cli("convert", src, tmp_path / "out.gguf")
        assert_one_line_error(proc, "truncated zstd stream")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf.zst"]
    # trailing bytes that are no frame
    src.write_bytes(data + b"junk")
    assert_one_line_error(amx_repack_cli("convert", src, tmp_path / "out.gguf"), "zstd")


def test_long_window_streams_are_accepted_up_to_the_stated_limit(tmp_path):
    """`zstd --long=30` streams (a 1 GiB window, beyond zstd's default 128 MiB decoder limit)
    decompress like any other; a larger window (--long=31) is refused in one line that names the
    limit, before anything is written."""
    plain = valid_small().tobytes()
    plain += bytes((1 << 20) - len(plain))
    (tmp_path / "plain.gguf").write_bytes(plain)
    wide = tmp_path / "wide.gguf.zst"
    wide.write_bytes(frame(plain[:4096], len(plain), None, window_log=30))
    assert zstandard.get_frame_parameters(wide.read_bytes()[:18]).window_size == 1 << 30
    assert_converts_like_the_plain_file(wide, tmp_path / "plain.gguf", tmp_path)
    assert amx_repack_cli("inspect", wide).returncode == 0
    wider = tmp_path / "wider.gguf.zst"
    wider.write_bytes(frame(plain[:4096], len(plain), None, window_log=31))
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (["convert", wider, tmp_path / "out.gguf"], ["inspect", wider],
                 ["convert", "--dry-run", wider, tmp_path / "out.gguf"], ["verify", wider],
                 ["unpack", wider, tmp_path / "back.gguf"]):
        assert_one_line_error(amx_repack_cli(*args), "2,048 MiB window",
                              "at most 1,024 MiB (window log 30)")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_stream_starting_with_a_skippable_frame(tmp_path):
    """pzstd writes a skippable frame before every frame: such a stream is a .gguf.zst like any
    other (zstd -t accepts it), for every command."""
    model = tmp_path / "m.gguf"
    write_model(model, [("blk.0.ffn_up.weight", "q4_0", (64, 32)),
                        ("output_norm.weight", "f32", (64,))], seed=5)
    data = model.read_bytes()
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=True)
    src = tmp_path / "pz.gguf.zst"
    src.write_bytes(skippable(b"\x00" * 4) + cctx.compress(data[:1000])
                    + skippable(b"pzstd") + cctx.compress(data[1000:]))
    assert zstandard.ZstdDecompressor().stream_reader(
        open(src, "rb"), read_across_frames=True).read() == data
    assert amx_repack_cli("inspect", src).returncode == 0
    assert_converts_like_the_plain_file(src, model, tmp_path)
    packed = tmp_path / "from-zst.gguf"
    assert amx_repack_cli("verify", src, packed).returncode == 0
    back = tmp_path / "back.gguf"
    amx_repack_cli("unpack", packed, back, check=True)
    assert back.read_bytes() == data
    dry = amx_repack_cli("convert", "--dry-run", src, tmp_path / "dry.gguf")
    assert dry.returncode == 0, dry.stderr


def test_output_named_zst_is_compressed(tmp_path):
    """An output named .zst is compressed output, with --compress or without it (the plain
    intermediate and the compressed file never share a temporary name)."""
    model = tmp_path / "m.gguf"
    write_model(model, [("blk.0.ffn_up.weight", "q8_0", (64, 32))], seed=6)
    ref = tmp_path / "ref.gguf"
    repack.convert(model, ref)
    for flags, name in ((["--compress"], "a.gguf.zst"), ([], "b.gguf.zst"), ([], "c.zst")):
        proc = amx_repack_cli("convert", "-q", *flags, model, tmp_path / name)
        assert proc.returncode == 0, proc.stderr
        data = (tmp_path / name).read_bytes()
        assert data[:4] == b"\x28\xb5\x2f\xfd"
        assert zstandard.ZstdDecompressor().decompress(data) == ref.read_bytes()
    report = repack.convert(model, tmp_path / "d.gguf.zst")
    assert report.output.endswith("d.gguf.zst") and (tmp_path / "d.gguf.zst").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.gguf.zst", "b.gguf.zst", "c.zst", "d.gguf.zst", "m.gguf", "ref.gguf"]


def test_compressed_split_model_every_command(tmp_path):
    """convert --compress of a split model writes .gguf.zst shards that verify, unpack, inspect
    and convert (and its dry run) all take, given the first shard."""
    shards = _split_model(tmp_path)
    out = tmp_path / "packed.gguf"
    proc = amx_repack_cli("convert", "-q", "--compress", shards[0], out)
    assert proc.returncode == 0, proc.stderr
    packed = [tmp_path / f"packed-0000{i}-of-00002.gguf.zst" for i in (1, 2)]
    assert all(p.exists() for p in packed)
    plain = tmp_path / "plain"
    plain.mkdir()
    repack.convert(shards[0], plain / "packed.gguf")
    for p, q in zip(packed, sorted(plain.iterdir())):
        assert zstandard.ZstdDecompressor().decompress(p.read_bytes()) == q.read_bytes()
    assert amx_repack_cli("verify", packed[0]).returncode == 0
    assert amx_repack_cli("verify", shards[0], packed[0]).returncode == 0
    info = amx_repack_cli("inspect", packed[0])
    assert info.returncode == 0 and "2 shards" in info.stdout, info.stderr
    back = tmp_path / "back.gguf"
    amx_repack_cli("unpack", "-q", packed[0], back, check=True)
    for i, shard in enumerate(shards, start=1):
        assert (tmp_path / f"back-0000{i}-of-00002.gguf").read_bytes() == shard.read_bytes()
    # compressed input shards, converted again (--layout none: the same model, plain)
    zshards = []
    for shard in shards:
        z = tmp_path / "zin" / (shard.name + ".zst")
        z.parent.mkdir(exist_ok=True)
        z.write_bytes(zstandard.ZstdCompressor().compress(shard.read_bytes()))
        zshards.append(z)
    dry = amx_repack_cli("convert", "--dry-run", zshards[0], tmp_path / "again.gguf")
    assert dry.returncode == 0 and "again-00002-of-00002.gguf" in dry.stdout, dry.stderr
    amx_repack_cli("convert", "-q", zshards[0], tmp_path / "again.gguf", check=True)
    for p, q in zip(sorted(plain.iterdir()), ("again-00001-of-00002.gguf",
                                             "again-00002-of-00002.gguf")):
        assert p.read_bytes() == (tmp_path / q).read_bytes()
    assert not [p for p in tmp_path.rglob("*") if "amx-repack-tmp" in p.name]


def _split_model(folder: Path) -> list[Path]:
    """A two-shard model as gguf-split writes it (split.* keys, the pattern's names)."""
    q8 = bytes(range(256)) * 2 + bytes(32)
    paths = []
    for no in range(2):
        kvs = ([kv_str("general.architecture", "llama")] if no == 0 else []) + [
            kv_u32("split.no", no), kv_u32("split.count", 2), kv_u32("split.tensors.count", 2)]
        g = RawGGUF(kvs=kvs, tensors=[RawTensor(f"blk.{no}.ffn_up.weight", (32, 32), 8, 0)],
                    data=q8 * 2)
        p = folder / f"m-0000{no + 1}-of-00002.gguf"
        p.write_bytes(g.tobytes())
        paths.append(p)
    return paths


def test_many_frames_and_skippable_frames(gemma_path, tmp_path):
    """pzstd-style streams (one frame per piece, each declaring its own size) with a skippable
    frame between them: convert gives the plain conversion; inspect checks the tensors against
    the sum of the frames' sizes, not the first frame's."""
    data = gemma_path.read_bytes()
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=True)
    piece = 64 << 20
    parts = [cctx.compress(data[i:i + piece]) for i in range(0, len(data), piece)]
    src = tmp_path / "frames.gguf.zst"
    src.write_bytes(parts[0] + skippable(b"metadata") + b"".join(parts[1:]))
    assert len(parts) > 2
    assert amx_repack_cli("inspect", src).returncode == 0
    assert_converts_like_the_plain_file(src, gemma_path, tmp_path)
    # a multi-frame stream whose frames declare less than the tensors need is still refused
    short = tmp_path / "short.gguf.zst"
    short.write_bytes(parts[0] + parts[1])
    proc = amx_repack_cli("inspect", short)
    assert_one_line_error(proc, "beyond the end of the file")
