"""What the command line prints and how it ends (issue 12, items 7 and 11): a closed pipe is not a
failure, counts are pluralised, every option has help text, verify lists tensors by one rule."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import amx_repack_cli
from tests.synthetic import small_model_tensors, write_model


@pytest.fixture(scope="module")
def many_tensors(tmp_path_factory):
    """3,000 tiny tensors: inspect prints ~400 kB, far more than a pipe buffer holds, so a reader
    that stops after one line makes our writes fail with EPIPE."""
    path = tmp_path_factory.mktemp("many") / "many.gguf"
    return write_model(path, [(f"blk.{i}.ffn_up.weight", "q8_0", (32, 32)) for i in range(3000)])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    model = write_model(folder / "small.gguf", small_model_tensors())
    packed = folder / "small-amx.gguf"
    amx_repack_cli("convert", "-q", "-t", "1", model, packed, check=True)
    return model, packed


def _piped_to_head(*args: str) -> tuple[int, str, bytes]:
    """Run amx-repack ARGS | head -1 with real pipes: our exit status, our stderr, head's output."""
    ours = subprocess.Popen([sys.executable, "-m", "repack", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-1"], stdin=ours.stdout, stdout=subprocess.PIPE)
    ours.stdout.close()     # only head holds the read end: when it exits, the pipe is closed
    first, _ = head.communicate(timeout=120)
    err = ours.stderr.read().decode()
    ours.stderr.close()
    return ours.wait(timeout=120), err, first


@pytest.mark.parametrize("json_output", [False, True], ids=["table", "json"])
def test_closed_pipe_exits_0_quietly(many_tensors, json_output):
    status, err, first = _piped_to_head("inspect", *(["--json"] if json_output else []),
                                        many_tensors)
    assert first.startswith(b"{" if json_output else str(many_tensors).encode())
    assert (status, err) == (0, "")


def test_closed_pipe_keeps_verify_mismatch_status(small, tmp_path):
    """A reader that stops early does not turn a mismatch into success."""
    model, packed = small
    broken = tmp_path / "broken.gguf"
    data = bytearray(packed.read_bytes())
    data[-100] ^= 0xFF           # the last tensor's data (kept, f32 or packed): verify fails
    broken.write_bytes(bytes(data))
    status, err, first = _piped_to_head("verify", "-v", model, broken)
    assert first and status == 1 and "Traceback" not in err


def test_counts_are_pluralised(small, tmp_path):
    model, _ = small
    one = amx_repack_cli("convert", "-t", "1", model, tmp_path / "one.gguf", check=True)
    assert "(layout amx, 1 thread)" in one.stdout and "1 threads" not in one.stdout
    two = amx_repack_cli("convert", "-t", "2", model, tmp_path / "two.gguf", check=True)
    assert "(layout amx, 2 threads)" in two.stdout
    single = write_model(tmp_path / "single.gguf", [("blk.0.ffn_up.weight", "q8_0", (32, 32))])
    out = amx_repack_cli("inspect", single, check=True).stdout
    assert ", 1 tensor, " in out and "1 tensors" not in out


@pytest.mark.parametrize("command", ["convert", "verify", "unpack", "inspect", "demo"])
def test_every_option_has_help_text(command):
    """Every option of every command says what it does in --help (``-t`` of unpack and demo had
    no text), and the help text is what --help prints."""
    import click

    from repack.cli import cli
    options = [p for p in cli.commands[command].params if isinstance(p, click.Option)]
    assert options
    text = amx_repack_cli(command, "--help", check=True).stdout
    for option in options:
        assert option.help, f"{command}: {'/'.join(option.opts)} has no help text"
        assert option.help.split()[0] in text


@pytest.mark.parametrize("flag", [None, "-v", "--verbose", "--all"])
def test_verify_listing_rule_is_the_same_in_a_pipe(small, flag):
    """Without -v only failures are listed (none here); with -v (or --all) every tensor, whether
    stdout is a terminal or a pipe (these runs are pipes; the rule no longer asks)."""
    model, packed = small
    out = amx_repack_cli("verify", *([flag] if flag else []), model, packed, check=True).stdout
    names = [name for name, _, _ in small_model_tensors()]
    listed = [n for n in names if any(line.startswith(n + " ") for line in out.splitlines())]
    assert listed == (names if flag else [])
    assert out.splitlines()[-1].startswith("EQUIVALENT:")


def test_verify_listing_rule_is_the_same_on_a_terminal(small):
    """On a terminal (a pseudo-terminal here) the same rule: no tensor rows without -v."""
    pty = pytest.importorskip("pty")
    model, packed = small
    env = dict(os.environ, COLUMNS="200")
    main, sub = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "repack", "verify", "-q", str(model),
                             str(packed)], stdout=sub, stderr=subprocess.DEVNULL, env=env)
    os.close(sub)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:          # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=120) == 0
    out = b"".join(chunks).decode()
    assert "EQUIVALENT:" in out
    assert not any(line.startswith("blk.0.attn_q.weight") for line in out.splitlines())


def test_shell_completion_as_the_readme_gives_it():
    """`_AMX_REPACK_COMPLETE=bash_source amx-repack` prints the bash script; the script asks the
    command itself for completions (bash_complete), which names our commands and options."""
    env = dict(os.environ, _AMX_REPACK_COMPLETE="bash_source")
    script = subprocess.run([sys.executable, "-m", "repack"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert script.returncode == 0 and "_AMX_REPACK_COMPLETE=bash_complete" in script.stdout
    for words, cword, want in (("amx-repack con", "1", "plain,convert"),
                               ("amx-repack convert --la", "2", "plain,--layout")):
        env = dict(os.environ, _AMX_REPACK_COMPLETE="bash_complete", COMP_WORDS=words,
                   COMP_CWORD=cword)
        proc = subprocess.run([sys.executable, "-m", "repack"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert (proc.returncode, proc.stdout.split()) == (0, [want]), proc.stderr
