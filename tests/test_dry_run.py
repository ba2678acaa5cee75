"""convert --dry-run predicts the real run's refusal: the same exit status and the same line
(issue 20, item 9). It used to exit 0 for outputs the real run refuses even with --force (a folder,
a missing folder, not enough space, the input itself, /dev/null) and to suggest --force where it
would not help."""

from __future__ import annotations

import pytest

from tests.conftest import amx_repack_cli, stderr_lines
from tests.synthetic import write_model
from tests.test_disk_full import mount_tmpfs  # noqa: F401  (fixture)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path, [("blk.0.ffn_up.weight", "q4_0", (1024, 256)),
                       ("output_norm.weight", "f32", (256,))], seed=3)
    return path


def run_both(src, out, *flags):
    """(dry run, real run): each (exit status, its error line or None)."""
    results = []
    for dry in (["--dry-run"], []):
        proc = amx_repack_cli("convert", "-q", *dry, *flags, src, out)
        lines = [l for l in stderr_lines(proc.stderr) if not l.startswith("note: ")]
        assert "Traceback" not in proc.stderr
        results.append((proc.returncode, lines[0] if proc.returncode else None))
        if proc.returncode == 2:
            assert len(lines) == 1, proc.stderr
    return results


def outputs(tmp_path, model):
    folder = tmp_path / "folder"
    folder.mkdir()
    existing = tmp_path / "existing.gguf"
    existing.write_bytes(b"old")
    return {"a folder": (folder, "is a folder: only a regular file can be replaced"),
            "a missing folder": (tmp_path / "nowhere" / "o.gguf", "output folder does not exist"),
            "the input itself": (model, "is the input file"),
            "/dev/null": ("/dev/null", "is a character device"),
            "an existing file": (existing, "already exists (use --force to replace it)")}


@pytest.mark.parametrize("force", [False, True], ids=["", "force"])
def test_dry_run_refuses_what_the_real_run_refuses(model, tmp_path, force):
    flags = ["--force"] if force else []
    for case, (out, words) in outputs(tmp_path, model).items():
        dry, real = run_both(model, out, *flags)
        if case == "an existing file" and force:
            assert dry == real == (0, None), case      # --force helps here, and only here
            continue
        assert dry == real, (case, dry, real)
        assert dry[0] == 2 and words in dry[1], (case, dry)
        assert force or "--force" not in dry[1] or case == "an existing file", dry
    assert model.read_bytes()[:4] == b"GGUF"


def test_dry_run_refuses_too_little_space(model, tmp_path, mount_tmpfs):
    disk = mount_tmpfs(64 << 10)       # the output takes ~140 KB
    out = disk / "o.gguf"
    dry, real = run_both(model, out)
    assert dry == real and dry[0] == 2 and "not enough free space" in dry[1], (dry, real)
    # a compressed input whose plain copy would not fit in the output's folder
    import zstandard
    zsrc = tmp_path / "m.gguf.zst"
    zsrc.write_bytes(zstandard.ZstdCompressor().compress(model.read_bytes()))
    dry, real = run_both(zsrc, out)
    assert dry == real and dry[0] == 2 and "to decompress" in dry[1], (dry, real)
    assert list(disk.iterdir()) == []


def test_dry_run_of_a_writable_output_still_plans(model, tmp_path):
    proc = amx_repack_cli("convert", "--dry-run", model, tmp_path / "o.gguf")
    assert proc.returncode == 0 and "would repack 1 of 2 tensors" in proc.stdout, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
