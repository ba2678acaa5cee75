"""Hostile GGUF headers: the reader either parses them or refuses them with one clear line.

A hypothesis fuzzer mutates real headers (the small hand-made file, files written by
``repack.convert`` in both layouts, and the first 64 KB of the Gemma model when it is available)
with byte flips, insertions, deletions, duplications, truncations and overwrites of the header's
integer fields (counts, lengths, dimension counts, dimensions, type ids, offsets) with boundary
values (0, 2^31, 2^32-1, 2^63, 2^64-1, ...). For every input:

* ``parse_header`` returns a GGUFFile or raises GGUFFormatError whose message is one line;
  no other exception (IndexError, OverflowError, struct.error, RecursionError, MemoryError ...);
* what it returns is safe to use: every tensor's data lies inside the file, every record decodes
  (or raises GGUFFormatError), and ``repack.inspect`` (the whole header path of the CLI, our own
  amx_repack.* records included) returns a report or raises a RepackError with a one-line message;
* no example takes more than a few seconds (a hang fails it) or allocates more than 100 MB;
* every command (convert in both layouts, verify, unpack) on the file ends with exit 0, 1 or 2,
  and a one-line error: exit 3 (an internal error) is unreachable from any input file.

The default budget is about a minute (``AMX_REPACK_FUZZ_SECONDS``, split between the two fuzz
tests); ``AMX_REPACK_FUZZ_EXAMPLES=N`` runs exactly N examples per test instead. Inputs worth
keeping are in tests/fuzz_corpus/ (regenerate with ``python tests/tools/make_fuzz_corpus.py``),
replayed on every run through the parser, the real command line (inspect) and every command.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tempfile
import struct
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import repack
from formats.gguf_container import GGUFFile, GGUFFormatError, parse_header, read_gguf
from tests.conftest import amx_repack_cli, stderr_lines
from tests.ggufbuild import valid_small
from tests.synthetic import write_model

CORPUS = Path(__file__).parent / "fuzz_corpus"
SEED_PREFIX = 64 << 10
MEMORY_LIMIT = 100 << 20
HANG_SECONDS = 10
FUZZ_SECONDS = float(os.environ.get("AMX_REPACK_FUZZ_SECONDS", "60"))
FUZZ_EXAMPLES = int(os.environ.get("AMX_REPACK_FUZZ_EXAMPLES", "0"))
ROUND = 300          # examples per hypothesis run while the time budget lasts

# ------------------------------------------------------------------------------------------
# Seeds


def tiny_model_tensors():
    """A few KB: every record kind our converter writes, over packable and kept tensors."""
    return [("token_embd.weight", "q8_0", (32, 16)), ("output_norm.weight", "f32", (32,)),
            ("blk.0.attn_q.weight", "q4_0", (32, 32)), ("blk.0.ffn_up.weight", "q4_K", (256, 16)),
            ("blk.0.ffn_gate_exps.weight", "q8_0", (32, 16, 2))]


def make_seeds(folder: Path, gemma: Path | None = None) -> dict[str, bytes]:
    seeds = {"valid_small": valid_small().tobytes()}
    model = write_model(folder / "tiny.gguf", tiny_model_tensors(), seed=11)
    seeds["tiny"] = model.read_bytes()
    for layout in ("amx", "interleaved"):
        out = folder / f"tiny-{layout}.gguf"
        repack.convert(model, out, layout=layout)
        seeds[f"converted_{layout}"] = out.read_bytes()[:SEED_PREFIX]
    if gemma is not None:
        with open(gemma, "rb") as f:
            seeds["gemma_prefix"] = f.read(SEED_PREFIX)
    return seeds


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, request):
    gemma = None
    if os.environ.get("AMX_REPACK_FUZZ_GEMMA", "1") != "0":
        try:
            gemma = request.getfixturevalue("gemma_path")
        except pytest.skip.Exception:
            gemma = None
    return make_seeds(tmp_path_factory.mktemp("seeds"), gemma)


# ------------------------------------------------------------------------------------------
# The header's integer fields, found by an independent walk (not the parser under test)

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_SCALAR = {U8: 1, I8: 1, U16: 2, I16: 2, U32: 4, I32: 4, F32: 4, BOOL: 1, U64: 8, I64: 8, F64: 8}


def header_fields(img: bytes, limit: int = 400) -> list[tuple[int, int]]:
    """(offset, width) of the integer fields of a GGUF header: counts, lengths, value and item
    types, dimension counts, dimensions, tensor types and offsets (the first `limit`)."""
    fields: list[tuple[int, int]] = [(4, 4), (8, 8), (16, 8)]
    pos = 24

    def u32(p):
        return struct.unpack_from("<I", img, p)[0]

    def u64(p):
        return struct.unpack_from("<Q", img, p)[0]

    def string(p):
        fields.append((p, 8))
        return p + 8 + u64(p)

    def value(p, vtype, depth=0):
        if vtype in _SCALAR:
            return p + _SCALAR[vtype]
        if vtype == STR:
            return string(p)
        if vtype == ARR and depth < 4:
            itype, count = u32(p), u64(p + 4)
            fields.extend([(p, 4), (p + 4, 8)])
            p += 12
            if itype in _SCALAR:
                return p + count * _SCALAR[itype]
            for i in range(count):
                if i == 8:                      # a few items are enough; skip the rest quietly
                    n = len(fields)
                    for _ in range(count - i):
                        p = value(p, itype, depth + 1)
                    del fields[n:]
                    return p
                p = value(p, itype, depth + 1)
            return p
        raise ValueError("unknown type")

    try:
        n_tensors, n_kv = u64(8), u64(16)
        for _ in range(n_kv):
            pos = string(pos)
            fields.append((pos, 4))
            pos = value(pos + 4, u32(pos))
        for _ in range(n_tensors):
            pos = string(pos)
            n_dims = u32(pos)
            fields.append((pos, 4))
            pos += 4
            for _ in range(n_dims):
                fields.append((pos, 8))
                pos += 8
            fields.extend([(pos, 4), (pos + 4, 8)])
            pos += 12
    except (struct.error, ValueError, OverflowError, MemoryError):
        pass   # a truncated prefix: the fields found so far
    return [f for f in fields if f[0] + f[1] <= len(img)][:limit]


_FIELD_CACHE: dict[int, list[tuple[int, int]]] = {}


def fields_of(img: bytes) -> list[tuple[int, int]]:
    key = id(img)
    if key not in _FIELD_CACHE:
        _FIELD_CACHE[key] = header_fields(img)
    return _FIELD_CACHE[key]


# ------------------------------------------------------------------------------------------
# Mutations

BOUNDARY_U32 = [0, 1, 2, 4, 5, 8, 9, 12, 13, 31, 255, 1 << 16, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE,
                0xFFFFFFFF]
BOUNDARY_U64 = [0, 1, 2, 7, 8, 12, 0xFF, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, 1 << 40,
                (1 << 63) - 1, 1 << 63, (1 << 64) - 2, (1 << 64) - 1]

position = st.integers(0, 1 << 20)
mutation = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(0, 7)),
    st.tuples(st.just("byte"), position, st.integers(0, 255)),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("delete"), position, st.integers(1, 64)),
    st.tuples(st.just("duplicate"), position, st.integers(1, 256), position),
    st.tuples(st.just("truncate"), position),
    st.tuples(st.just("field"), position, st.integers(0, len(BOUNDARY_U64) - 1),
              st.integers(0, (1 << 64) - 1), st.booleans()),
    st.tuples(st.just("field"), position, st.integers(0, len(BOUNDARY_U64) - 1),
              st.integers(0, (1 << 64) - 1), st.booleans()),   # twice as likely as the others
)


def mutate(seed: bytes, ops) -> bytes:
    fields = fields_of(seed)
    img = bytearray(seed)
    for op in ops:
        n = max(1, len(img))
        kind = op[0]
        if kind == "flip":
            if img:
                img[op[1] % n] ^= 1 << op[2]
        elif kind == "byte":
            if img:
                img[op[1] % n] = op[2]
        elif kind == "insert":
            p = op[1] % (len(img) + 1)
            img[p:p] = op[2]
        elif kind == "delete":
            p = op[1] % n
            del img[p:p + op[2]]
        elif kind == "duplicate":
            a = op[1] % n
            chunk = img[a:a + op[2]]
            p = op[3] % (len(img) + 1)
            img[p:p] = chunk
        elif kind == "truncate":
            del img[op[1] % n:]
        elif kind == "field" and fields:
            offset, width = fields[op[1] % len(fields)]
            table = BOUNDARY_U32 if width == 4 else BOUNDARY_U64
            value = op[3] % (1 << (8 * width)) if op[4] else table[op[2] % len(table)]
            if offset + width <= len(img):
                img[offset:offset + width] = value.to_bytes(width, "little")
    return bytes(img)


# ------------------------------------------------------------------------------------------
# The properties


class Hang(Exception):
    pass


@contextlib.contextmanager
def bounded(seconds: float = HANG_SECONDS, memory: int = MEMORY_LIMIT):
    """Fail an example that runs for more than `seconds` or allocates more than `memory` bytes
    (traced only inside the block: tracing hypothesis itself would make it 6x slower)."""
    def on_alarm(signum, frame):
        raise Hang(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert peak < memory, f"allocated {peak:,} bytes"


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)


def check_parse(img: bytes) -> GGUFFile | None:
    """parse_header's contract on any input; returns the parsed file when it was accepted."""
    try:
        f = parse_header(img, len(img))
    except GGUFFormatError as e:
        assert_one_line(str(e))
        return None
    assert isinstance(f, GGUFFile)
    names = [t.name for t in f.tensors]
    assert len(set(names)) == len(names)
    assert f.alignment > 0 and f.alignment & (f.alignment - 1) == 0
    for t in f.tensors:
        assert 1 <= len(t.shape) <= 4 and t.nbytes >= 0 and t.offset % f.alignment == 0
        assert f.data_start + t.offset + t.nbytes <= len(img), t.name
    for rec in f.kv.values():          # values are decoded lazily: they must be safe too
        try:
            rec.value
            rec.describe()
        except GGUFFormatError as e:
            assert_one_line(str(e))
    return f


def check_inspect(path: Path) -> None:
    """The header path of the command line: inspect reports or refuses with one line."""
    try:
        report = repack.inspect(path)
    except repack.RepackError as e:
        assert e.exit_code == 2
        assert_one_line(str(e))
        return
    report.to_dict()


# The commands that read a whole model (inspect only reads the header), as the replay runs them:
# convert-interleaved with every override, so that the soft defaults (bf16, row multiples) are
# forced too.
COMMANDS = {
    "convert-amx": lambda src, out: ["convert", "-q", "-t", "1", src, out / "a.gguf"],
    "convert-interleaved": lambda src, out: ["convert", "-q", "-t", "1", "--layout", "interleaved",
                                             "--override", "bf16", "--override", "runtime_rows",
                                             src, out / "i.gguf"],
    "verify": lambda src, out: ["verify", "-q", "-t", "1", src],
    "unpack": lambda src, out: ["unpack", "-q", "-t", "1", src, out / "u.gguf"],
}
_HANDLED = [s for s in ("SIGINT", "SIGTERM", "SIGXFSZ") if hasattr(signal, s)]


def run_command(args) -> tuple[int, str]:
    """The command line in this process (fast enough for fuzzing): (exit status, stderr). The
    CLI's own handling of every exception decides the status, as in a child process."""
    from repack.cli import main
    saved = {name: signal.getsignal(getattr(signal, name)) for name in _HANDLED}
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)
    return code, err.getvalue()


def test_verify_names_a_changed_string_that_is_not_utf8(tmp_path):
    """Found by test_fuzz_commands: a converted file whose recorded metadata string has a byte
    that is not UTF-8 is a verify mismatch (exit 1, one line naming the key), not an internal
    error from describing the changed value."""
    seeds = make_seeds(tmp_path)
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(mutate(seeds["converted_amx"], [("byte", 64, 128)]))
    code, err = run_command(["verify", "-q", "-t", "1", path])
    assert code == 1, err
    assert "internal error" not in err, err
    f = read_gguf(path)
    assert [k for k, rec in f.kv.items() if "cannot be decoded" in rec.describe()], \
        "the damaged string should be described as such"
    f.close()


def check_commands(path: Path, out: Path) -> dict[str, tuple[int, str]]:
    """Every command on ``path``: exit 0, 1 (verify: a mismatch) or 2 with one line; never 3. The
    output folder ``out`` is emptied after each (and must hold no temporary file)."""
    results = {}
    for name, args in COMMANDS.items():
        code, err = run_command(args(path, out))
        assert code in (0, 1, 2), (name, code, err)
        assert "Traceback" not in err and "internal error" not in err, (name, err)
        if code:
            lines = err.strip().splitlines()
            assert len(lines) <= 1, (name, err)   # verify's mismatch report is on stdout
            if code == 2:
                assert lines and lines[0].startswith("amx-repack: error: "), (name, err)
        left = sorted(os.listdir(out))
        assert not [n for n in left if "amx-repack-tmp" in n], (name, left)
        assert code == 0 or left == [], (name, left)
        for n in left:
            os.unlink(out / n)
        results[name] = code, err
    return results


def run_with_budget(body, strategies, seconds: float) -> int:
    """Run ``body`` under @given(*strategies) in rounds until ``seconds`` have passed (or exactly
    FUZZ_EXAMPLES examples); returns the number of examples run."""
    common = dict(deadline=timedelta(seconds=HANG_SECONDS / 2), database=None,
                  suppress_health_check=list(HealthCheck))

    def run(n: int) -> None:
        settings(max_examples=n, **common)(given(*strategies)(body))()

    if FUZZ_EXAMPLES:
        run(FUZZ_EXAMPLES)
        return FUZZ_EXAMPLES
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        run(ROUND)
        done += ROUND
    return done


def test_fuzz_parse_header(seeds):
    names = sorted(seeds)
    for name in names:                  # the unmutated seeds parse (truncated prefixes refuse)
        f = check_parse(seeds[name])
        assert f is not None or len(seeds[name]) == SEED_PREFIX, name

    def one(name, ops):
        img = mutate(seeds[name], ops)
        with bounded():
            check_parse(img)

    ran = run_with_budget(one, (st.sampled_from(names), st.lists(mutation, min_size=1, max_size=6)),
                          FUZZ_SECONDS * 0.5)
    print(f"parse_header: {ran} examples from seeds {names}")


def test_fuzz_inspect(seeds, tmp_path):
    names = sorted(n for n in seeds if n != "gemma_prefix")
    path = tmp_path / "fuzzed.gguf"

    def one(name, ops):
        path.write_bytes(mutate(seeds[name], ops))
        with bounded():
            check_inspect(path)

    ran = run_with_budget(one, (st.sampled_from(names), st.lists(mutation, min_size=1, max_size=4)),
                          FUZZ_SECONDS * 0.2)
    print(f"inspect: {ran} examples")


def test_fuzz_commands(seeds, tmp_path):
    """convert (both layouts), verify and unpack on mutated headers: never exit 3."""
    names = sorted(n for n in seeds if n != "gemma_prefix")
    path = tmp_path / "fuzzed.gguf"
    out = tmp_path / "out"
    out.mkdir()

    def one(name, ops):
        path.write_bytes(mutate(seeds[name], ops))
        with bounded():
            check_commands(path, out)

    ran = run_with_budget(one, (st.sampled_from(names), st.lists(mutation, min_size=1, max_size=4)),
                          FUZZ_SECONDS * 0.3)
    print(f"commands: {ran} examples")


# ------------------------------------------------------------------------------------------
# Targeted inputs that random mutation rarely builds


def nested_arrays(depth: int) -> bytes:
    raw = valid_small()
    value = struct.pack("<I", ARR) + struct.pack("<IQ", ARR, 1) * depth + struct.pack("<IQ", U8, 0)
    raw.kvs.append(struct.pack("<Q", 6) + b"nested" + value)
    return raw.tobytes()


def test_deeply_nested_arrays_are_refused_not_a_recursion_error():
    img = nested_arrays(5000)          # 60 KB of array headers
    with pytest.raises(GGUFFormatError, match="nested more than"):
        parse_header(img, len(img))
    img = nested_arrays(3)             # shallow nesting stays readable
    f = parse_header(img, len(img))
    assert f.kv["nested"].describe() == "[array x 1]"
    v = f.kv["nested"].value
    assert len(v) == len(v[0]) == len(v[0][0]) == 1 and len(v[0][0][0]) == 0


# ------------------------------------------------------------------------------------------
# The corpus, replayed through the parser and the real command line


def corpus_rows() -> dict[str, list[str]]:
    """file name -> [a piece of the one line `inspect` must print ("ok": it must accept it),
    optionally "COMMAND=piece": a piece of the one-line error (exit 2) of that command of
    COMMANDS, or "COMMAND/1=piece": of its exit 1 (a mismatch: unpack's one line)]."""
    rows = (line.split("\t") for line in (CORPUS / "expected.tsv").read_text().splitlines())
    return {name: rest for name, *rest in rows}


def corpus_expectations() -> dict[str, str]:
    return {name: rest[0] for name, rest in corpus_rows().items()}


def test_corpus_is_small_and_listed():
    files = sorted(p.name for p in CORPUS.iterdir() if p.name != "expected.tsv")
    assert sorted(corpus_expectations()) == files
    assert 10 <= len(files) <= 60
    assert all((CORPUS / name).stat().st_size <= 80 << 10 for name in files)
    for rest in corpus_rows().values():
        assert all(extra.split("=", 1)[0].split("/")[0] in COMMANDS for extra in rest[1:]), rest


@pytest.fixture(scope="module")
def replay_disk(tmp_path_factory):
    """A 64 MiB tmpfs for the replay's outputs and decompressed copies (a bomb in the corpus
    stops at its free space); a plain folder where nothing can be mounted."""
    import subprocess
    folder = tmp_path_factory.mktemp("replay")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    yield folder, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.parametrize("name", sorted(corpus_rows()))
def test_corpus_every_command(name, replay_disk, monkeypatch):
    """Every corpus file through every command: exit 0, 1 or 2 with one line, never 3, nothing
    left, the file unchanged; and the error a row of expected.tsv names for a command."""
    disk, mounted = replay_disk
    if name.endswith(".zst") and not mounted:
        pytest.skip("decompression needs the small disk (no tmpfs here)")
    monkeypatch.setattr(tempfile, "tempdir", str(disk))     # verify's decompressed copy
    path = CORPUS / name
    before = path.read_bytes()
    with bounded(seconds=60, memory=400 << 20):
        results = check_commands(path, disk)
    assert path.read_bytes() == before
    for extra in corpus_rows()[name][1:]:
        command, piece = extra.split("=", 1)
        command, _, want = command.partition("/")
        code, err = results[command]
        assert code == int(want or 2) and piece in err, (command, code, err)


@pytest.mark.parametrize("name,want", sorted(corpus_expectations().items()))
def test_corpus_replay(name, want):
    path = CORPUS / name
    img = path.read_bytes()
    if not name.endswith(".zst"):
        with bounded():
            f = check_parse(img)
        if want == "ok":
            assert f is not None
    start = time.monotonic()
    proc = amx_repack_cli("inspect", path, timeout=60)
    assert time.monotonic() - start < 30
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:
        assert proc.stderr == "" and want == "ok", proc.stdout[-500:]
    else:
        assert proc.returncode == 2, (proc.returncode, proc.stderr)
        lines = stderr_lines(proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("amx-repack: error: "), proc.stderr
        assert want in lines[0], (want, lines[0])
