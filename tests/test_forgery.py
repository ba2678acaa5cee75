"""Issue 20, item 1: no false success from a forger.

* records of version 2 (XXH64): the forgery from the issue (two floats of output_norm.weight
  edited, the word 32 bytes later compensating) keeps the digest: standalone verify and unpack
  still pass, and say that they prove only against accidental corruption; the published sha256
  (--original-sha256 / --expect-sha256) catches it;
* records of version 3 (sha256): the same edit is caught by the records alone;
* a forger who rewrites the records together with the data passes the records, and is caught by
  the published sha256.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xxhash

import repack
from repack import metadata
from formats.gguf_container import read_gguf
from repack.errors import VerificationFailed
from tests.conftest import amx_repack_cli, stderr_lines
from tests.forgery import EDIT, forge_data, rewrite_recorded_sha256
from tests.synthetic import sha256

DATA = Path(__file__).parent / "data"
ORIGINAL = DATA / "layout_v1" / "original.gguf"
V2 = DATA / "layout_v2" / "amx.gguf"
WEAK = "only against accidental corruption, not against a forger"


def verify_json(*args) -> tuple[int, dict]:
    proc = amx_repack_cli("verify", "--json", *args)
    return proc.returncode, json.loads(proc.stdout)


def assert_unpack_refused(path: Path, out: Path, digest: str) -> str:
    proc = amx_repack_cli("unpack", path, out, "--expect-sha256", digest)
    lines = stderr_lines(proc.stderr)
    assert proc.returncode == 1 and len(lines) == 1 and "sha256" in lines[0], proc.stderr
    assert not out.exists() and list(out.parent.glob("*tmp*")) == []
    return lines[0]


def test_xxh64_forgery_passes_version_2_records_and_says_so(tmp_path):
    info = metadata.read_info(read_gguf(V2).kv)
    assert info.layout_version == 2 and info.digest_name == "xxh64"
    forged = tmp_path / "forged.gguf"
    old, new = forge_data(V2, forged)
    # a real forgery: the data differs (the two floats and the compensating word), XXH64 does not
    assert new[:8] == EDIT and new != old and sum(a != b for a, b in zip(old, new)) >= 8
    assert xxhash.xxh64(new).hexdigest() == xxhash.xxh64(old).hexdigest()
    # the records cannot tell: verify passes, but says what that proves ...
    code, doc = verify_json(forged)
    assert code == 0 and doc["digest"] == "xxh64" and doc["proves"] == "accidental_corruption"
    assert any(WEAK in n for n in doc["notes"])
    proc = amx_repack_cli("verify", forged)
    assert proc.returncode == 0 and WEAK in proc.stderr and "--original-sha256" in proc.stderr
    proc = amx_repack_cli("unpack", "-q", forged, tmp_path / "out.gguf")
    assert proc.returncode == 0 and WEAK in proc.stderr
    assert sha256(tmp_path / "out.gguf") != sha256(ORIGINAL)
    # ... and the published sha256 of the original catches it, with no original at hand
    want = sha256(ORIGINAL)
    code, doc = verify_json(forged, "--original-sha256", want)
    assert code == 1 and not doc["ok"] and doc["proves"] == "original_sha256"
    [check] = doc["original_sha256"]
    assert check["expected"] == want and check["restored"] not in (None, want)
    assert_unpack_refused(forged, tmp_path / "refused.gguf", want)
    # the genuine version 2 file passes the same checks
    code, doc = verify_json(V2, "--original-sha256", want)
    assert code == 0 and doc["original_sha256"][0]["restored"] == want and doc["notes"] == []
    report = repack.unpack(V2, tmp_path / "back.gguf", expect_sha256=want)
    assert report.sha256_checked and sha256(tmp_path / "back.gguf") == want


def test_version_3_records_catch_the_same_forgery(tmp_path):
    rep = tmp_path / "amx.gguf"
    repack.convert(ORIGINAL, rep, layout="amx", include=["."], threads=1)
    info = metadata.read_info(read_gguf(rep).kv)
    assert info.layout_version == 3 and info.digest_name == "sha256"
    forged = tmp_path / "forged.gguf"
    old, new = forge_data(rep, forged)
    assert xxhash.xxh64(new).hexdigest() == xxhash.xxh64(old).hexdigest()
    code, doc = verify_json(forged)
    assert code == 1 and doc["digest"] == "sha256" and doc["notes"] == []
    [bad] = [t for t in doc["tensors"] if t["status"] != "ok"]
    assert bad["name"] == "output_norm.weight" and "digest recorded" in bad["detail"]
    proc = amx_repack_cli("unpack", forged, tmp_path / "out.gguf")
    assert proc.returncode == 1 and "output_norm.weight" in proc.stderr
    assert not (tmp_path / "out.gguf").exists()
    # the genuine file: what it proves, and no note
    code, doc = verify_json(rep)
    assert code == 0 and doc["proves"] == "records" and doc["notes"] == []


def test_published_sha256_catches_a_forger_who_rewrites_records_and_data(tmp_path):
    rep = tmp_path / "amx.gguf"
    repack.convert(ORIGINAL, rep, layout="amx", include=["."], threads=1)
    forged = tmp_path / "forged.gguf"
    old, new = forge_data(rep, forged)
    rewrite_recorded_sha256(forged, old, new)
    # consistent with itself: the records alone cannot tell (the documented limit) ...
    assert amx_repack_cli("verify", forged).returncode == 0
    # ... the published sha256 can: verify (API and CLI) and unpack, which writes nothing
    want = sha256(ORIGINAL)
    report = repack.verify(None, forged, original_sha256=want)
    assert not report.ok and report.sha256_checks[0]["restored"] != want
    proc = amx_repack_cli("verify", forged, "--original-sha256", want.upper())
    assert proc.returncode == 1 and "MISMATCH" in proc.stdout
    line = assert_unpack_refused(forged, tmp_path / "out.gguf", want)
    assert "nothing was written" in line
    with pytest.raises(VerificationFailed):
        repack.unpack(forged, tmp_path / "out.gguf", expect_sha256=want)
    assert not (tmp_path / "out.gguf").exists()
    # the genuine file passes both
    assert amx_repack_cli("verify", rep, "--original-sha256", want).returncode == 0
    assert amx_repack_cli("unpack", rep, tmp_path / "ok.gguf", "--expect-sha256", want,
                          check=True).returncode == 0
    assert sha256(tmp_path / "ok.gguf") == want


@pytest.mark.parametrize("value,piece", [("xyz", "64 hex digits"),
                                         ("0" * 63, "64 hex digits")])
def test_bad_sha256_values_are_bad_input(tmp_path, value, piece):
    for args in (("verify", V2, "--original-sha256", value),
                 ("unpack", V2, tmp_path / "o.gguf", "--expect-sha256", value),
                 ("verify", V2, "--original-sha256", "0" * 64, "--original-sha256", "0" * 64)):
        proc = amx_repack_cli(*args)
        lines = stderr_lines(proc.stderr)
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("amx-repack: error")
        assert piece in lines[0] or "one per file" in lines[0], lines
    assert not (tmp_path / "o.gguf").exists()


@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_rebuilt_sha256_covers_filler_and_every_layout(tmp_path, layout):
    """The original rebuilt for --original-sha256 is every byte unpack writes: here an original
    with non-zero trailing bytes; version 1 files (canonical originals) too."""
    src = tmp_path / "m.gguf"
    src.write_bytes(ORIGINAL.read_bytes() + b"trailing bytes")
    rep = tmp_path / "r.gguf"
    repack.convert(src, rep, layout=layout, threads=1)
    assert repack.verify(None, rep, original_sha256=sha256(src)).ok
    assert not repack.verify(None, rep, original_sha256=sha256(ORIGINAL)).ok
    v1 = repack.verify(None, DATA / "layout_v1" / f"{layout}.gguf", original_sha256=sha256(ORIGINAL))
    assert v1.ok and v1.sha256_checks[0]["restored"] == sha256(ORIGINAL)
