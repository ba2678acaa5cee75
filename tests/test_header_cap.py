"""One bound on the GGUF header for every command (issue 20, item 3).

A valid file whose one metadata value is a huge string made convert hold ~5x its size (a 512 MiB
string: 2.6 GB; the corpus's 32 KB bomb.gguf.zst, a 1 GiB string: 5.3 GB). The reader now refuses
any header past formats.gguf_container.MAX_HEADER_BYTES before it reads the value, naming the
key, whether the file is plain or .zst and whatever the command; peak RSS stays small.
"""

from __future__ import annotations

import struct

import pytest

from formats.gguf_container import MAX_HEADER_BYTES
from tests.conftest import stderr_lines
from tests.ggufbuild import STR, gstr, valid_small
from tests.rss import run_measured
from tests.zstframes import frame

# what any command needs for a tiny model, with a wide margin; the unbounded reader took GBs
PEAK_LIMIT = 150 << 20


def huge_string_model(path, nbytes: int) -> bytes:
    """valid_small with a metadata string of ``nbytes`` zero bytes (valid UTF-8), written as a
    sparse file so that the test costs no disk; returns the header up to the string's bytes."""
    g = valid_small()
    g.kvs.append(gstr("general.huge") + struct.pack("<IQ", STR, nbytes))
    head = g.header()
    cut = head.index(struct.pack("<IQ", STR, nbytes)) + 12
    rest = head[cut:].rstrip(b"\0")
    with open(path, "wb") as f:
        f.write(head[:cut])
        f.seek(cut + nbytes)
        f.write(rest + bytes(-(cut + nbytes + len(rest)) % 32) + g.data)
    return head[:cut]


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    folder = tmp_path_factory.mktemp("huge")
    plain = folder / "huge.gguf"
    huge_string_model(plain, MAX_HEADER_BYTES + 1)
    size = plain.stat().st_size
    # the same file as a stream: its first 4 KB raw, the zeros as RLE blocks (a few KB)
    with open(plain, "rb") as f:
        start = f.read(4096)
    compressed = folder / "huge.gguf.zst"
    compressed.write_bytes(frame(start, size, size))
    return plain, compressed


@pytest.mark.parametrize("which", ["plain", "zst"])
@pytest.mark.parametrize("command", ["inspect", "convert", "convert --dry-run", "convert --compress",
                                     "verify", "unpack"])
def test_header_past_the_bound_is_refused_naming_the_key(huge, tmp_path, which, command):
    src = huge[0] if which == "plain" else huge[1]
    words = command.split()
    args = words + [src] + ([tmp_path / "out.gguf"] if words[0] in ("convert", "unpack") else [])
    proc, peak = run_measured(*args, env=None)
    assert proc.returncode == 2, proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and "metadata 'general.huge'" in lines[0], proc.stderr
    assert "a GGUF header may take at most 128 MiB" in lines[0]
    assert peak < PEAK_LIMIT, f"{command}: peak RSS {peak >> 20} MiB"
    assert list(tmp_path.iterdir()) == []


def test_header_just_inside_the_bound_is_read(tmp_path):
    """The bound refuses only what lies past it: a 1 MiB string (and any real vocabulary) reads."""
    from formats.gguf_container import read_gguf
    path = tmp_path / "big.gguf"
    huge_string_model(path, 1 << 20)
    with read_gguf(path) as f:
        assert len(f.kv["general.huge"].value) == 1 << 20
