"""A new user's common mistakes (issue 21), each run as a user would run it: one clear line, the
documented exit status, nothing written, and the hint that gets them going."""

from __future__ import annotations

import pytest

from tests.conftest import amx_repack_cli, stderr_lines
from tests.synthetic import fingerprint, write_model

TENSORS = [("blk.0.attn_q.weight", "q4_0", (64, 64)), ("blk.0.ffn_up.weight", "q8_0", (64, 96))]


@pytest.fixture
def plain(tmp_path):
    return write_model(tmp_path / "plain.gguf", TENSORS)


@pytest.fixture
def repacked(tmp_path, plain):
    out = tmp_path / "amx.gguf"
    amx_repack_cli("convert", "-q", plain, out, check=True)
    return out


def one_error_line(proc, status: int = 2) -> str:
    lines = stderr_lines(proc.stderr)
    assert proc.returncode == status and len(lines) == 1, (proc.returncode, proc.stderr)
    assert lines[0].startswith("amx-repack: error: ") and "Traceback" not in proc.stderr
    return lines[0]


# --- item 4: verify with its two files the other way round ---

def test_verify_with_the_files_swapped_says_so_in_one_line(plain, repacked):
    before = fingerprint(plain), fingerprint(repacked)
    line = one_error_line(amx_repack_cli("verify", repacked, plain))
    assert "other way round" in line
    # the command it suggests is the right one, and it passes
    suggested = line.split("verify takes the original first: ")[1]
    assert suggested == f"verify {plain} {repacked}"
    proc = amx_repack_cli(*suggested.split())
    assert proc.returncode == 0 and "EQUIVALENT" in proc.stdout
    assert (fingerprint(plain), fingerprint(repacked)) == before


def test_verify_reports_another_type_as_a_type_mismatch(tmp_path, plain):
    # the same tensor names and shapes, another quantization of one of them
    other = write_model(tmp_path / "other.gguf",
                        [("blk.0.attn_q.weight", "q8_0", (64, 64)), TENSORS[1]])
    other_amx = tmp_path / "other-amx.gguf"
    amx_repack_cli("convert", "-q", other, other_amx, check=True)
    proc = amx_repack_cli("verify", plain, other_amx)
    assert proc.returncode == 1
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("blk.0.attn_q.weight")]
    assert row.split()[1] == "mismatch"
    assert "type differs: original is q4_0 [64, 64], repacked decodes to q8_0 [64, 64]" in row
    assert "MISMATCH" in proc.stdout.splitlines()[-1]


# --- item 5: unpack of a plain model ---

@pytest.mark.parametrize("foreign", [False, True])
def test_unpack_of_a_plain_model_has_nothing_to_unpack(tmp_path, plain, foreign):
    out = tmp_path / "out.gguf"
    line = one_error_line(amx_repack_cli("unpack", *(["--foreign"] if foreign else []),
                                         plain, out))
    assert line == (f"amx-repack: error: {plain} holds no packed tensor and no amx-repack "
                    f"records: it is a plain model already, with nothing to unpack")
    assert not out.exists() and list(tmp_path.iterdir()) == [plain]


# --- item 6: convert of a file another tool already repacked ---

@pytest.mark.parametrize("layout", ["amx", "interleaved"])
def test_convert_refuses_a_file_ik_repacked_and_points_to_unpack_foreign(tmp_path, layout):
    ik_file = write_model(tmp_path / "ik.gguf", [("blk.0.attn_q.weight", "q4_0_r8", (64, 64)),
                                                 ("blk.0.ffn_up.weight", "q8_0", (64, 96))])
    before = fingerprint(ik_file)
    for extra in ([], ["--dry-run"]):
        line = one_error_line(amx_repack_cli("convert", "--layout", layout, *extra, ik_file,
                                             tmp_path / "out.gguf"))
        assert "holds 1 tensor already in a packed layout (such as 'blk.0.attn_q.weight', " \
               "q4_0_r8) and no amx-repack records" in line
        assert line.endswith("(use unpack --foreign)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ik.gguf"]
    assert fingerprint(ik_file) == before
    # what it suggests works: unpack --foreign, then convert that
    plain = tmp_path / "plain.gguf"
    amx_repack_cli("unpack", "-q", "--foreign", ik_file, plain, check=True)
    amx_repack_cli("convert", "-q", "--layout", layout, plain, tmp_path / "out.gguf", check=True)
    # a plain copy stays possible
    amx_repack_cli("convert", "-q", "--layout", "none", ik_file, tmp_path / "copy.gguf",
                   check=True)
    assert fingerprint(tmp_path / "copy.gguf")[0] == before[0]
