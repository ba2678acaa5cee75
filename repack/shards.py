"""Opening models: one GGUF file, or the shards of a split model, and checking output paths.

Split GGUF files (llama.cpp's gguf-split) are ``NAME-00001-of-00005.gguf`` ... with ``split.*`` keys.
Every shard is a complete GGUF file of its own (the first holds the model's metadata, all hold
``split.no`` (0-based), ``split.count`` and ``split.tensors.count``), so each shard is converted,
verified and unpacked on its own; this module finds the shards, checks that they belong together,
and names the output shards after the same pattern.
"""

from __future__ import annotations

import errno
import os
import re

from dataclasses import dataclass, field

from formats.gguf_container import GGUFFile, read_gguf

from .errors import InputError, OutOfMemory, OutputError, UsageError
from .runner import untrack_temporary
from .metadata import INTEGER_VALUE_TYPES

KEY_SPLIT_NO = "split.no"
KEY_SPLIT_COUNT = "split.count"
KEY_SPLIT_TENSORS = "split.tensors.count"
_OWN_RECORDS = "amx_repack."   # our records describe each shard's own tensors: they differ
# a compressed split model's shards: NAME-00001-of-00005.gguf.zst ... (convert --compress)
_SHARD_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf(?P<zst>\.zst)?$")


def _split_int(f: GGUFFile, key: str, default):
    """An integer split.* record. A hostile or damaged file can give it any type (an array, a
    float NaN): refused in one line (InputError), not a TypeError/ValueError from int()."""
    rec = f.kv.get(key)
    if rec is None:
        return default
    if rec.value_type not in INTEGER_VALUE_TYPES:
        raise InputError(f"{f.path}: '{key}' is {rec.value_type.name.lower()}, expected an integer")
    return int(rec.value)


def shard_count(f: GGUFFile) -> int:
    """Number of shards the file says the model has (1 for an ordinary file)."""
    return _split_int(f, KEY_SPLIT_COUNT, 1)


def shard_name(prefix: str, no: int, count: int, suffix: str = "") -> str:
    return f"{prefix}-{no:05d}-of-{count:05d}.gguf{suffix or ''}"


def input_shards(first: str, first_file: GGUFFile) -> list[str]:
    """All shard paths of a split model, given its first shard."""
    count = shard_count(first_file)
    m = _SHARD_NAME.match(first)
    if m is None:
        raise InputError(f"{first} declares {count} shards, but its name does not follow the "
                         f"NAME-00001-of-{count:05d}.gguf pattern, so the other shards cannot be found")
    if int(m["no"]) != 1 or int(m["count"]) != count:
        raise UsageError(f"{first} is not the first shard of a {count}-shard model: give "
                         f"{shard_name(m['prefix'], 1, count, m['zst'])}")
    no = _split_int(first_file, KEY_SPLIT_NO, 0)
    if no != 0:
        raise InputError(f"{first}: split.no is {no}, expected 0 for the first shard")
    paths = [shard_name(m["prefix"], i, count, m["zst"]) for i in range(1, count + 1)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise InputError(f"missing shard {missing[0]} of a {count}-shard model"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return paths


def check_shard(path: str, f: GGUFFile, index: int, count: int, total_tensors: int | None,
                first: GGUFFile | None = None) -> None:
    """A shard must say it is shard `index` of `count` of the same model as the first shard
    ``first``: same split.count and split.tensors.count, same GGUF version, and every metadata
    record it shares with the first shard (gguf-split writes none but the split.* ones; other
    writers repeat some) with the same value."""
    if shard_count(f) != count:
        raise InputError(f"{path}: split.count is {shard_count(f)}, but the first shard says {count}")
    if _split_int(f, KEY_SPLIT_NO, -1) != index:
        raise InputError(f"{path}: split.no is {f.get(KEY_SPLIT_NO)}, expected {index}")
    if total_tensors is not None and KEY_SPLIT_TENSORS in f.kv and \
            _split_int(f, KEY_SPLIT_TENSORS, None) != total_tensors:
        raise InputError(f"{path}: split.tensors.count is {f.get(KEY_SPLIT_TENSORS)}, but the first "
                         f"shard says {total_tensors}: it belongs to another model")
    if first is None:
        return
    if f.version != first.version:
        raise InputError(f"{path}: GGUF version {f.version}, but the first shard has version "
                         f"{first.version}: it belongs to another model")
    for key, rec in f.kv.items():
        if key.startswith(("split.", _OWN_RECORDS)):
            continue
        mine = first.kv.get(key)
        if mine is not None and mine.raw != rec.raw:
            theirs, ours = _describe(rec), _describe(mine)
            detail = (f"is {theirs}, but the first shard has {ours}" if theirs != ours
                      else "differs from the first shard's")
            raise InputError(f"{path}: metadata '{key}' {detail}: it belongs to another model")


def _describe(rec) -> str:
    try:
        return rec.describe()
    except ValueError:    # GGUFFormatError: a value that does not decode (not UTF-8)
        return "undecodable"


def check_model(paths: list[str], files: list[GGUFFile]) -> None:
    """Across all files of a model: no tensor name twice, and as many tensors as the first file's
    split.tensors.count says (when it says)."""
    seen: dict[str, int] = {}
    for i, f in enumerate(files):
        for t in f.tensors:
            j = seen.setdefault(t.name, i)
            if j != i:
                raise InputError(f"{paths[i]}: tensor '{t.name}' is also in {paths[j]}: the shards "
                                 f"do not belong together (a shard of another model, or a copy)")
    declared = _split_int(files[0], KEY_SPLIT_TENSORS, None)
    if declared is not None and declared != len(seen):
        where = (f"the {len(files)} shards hold {len(seen)} "
                 f"({' + '.join(str(len(f.tensors)) for f in files)})" if len(files) > 1
                 else f"the file holds {len(seen)}")
        raise InputError(f"{paths[0]}: split.tensors.count is {declared}, but {where}: a shard is "
                         f"missing tensors or belongs to another model")


def output_shards(output: str, count: int) -> list[str]:
    """Output shard names: OUTPUT may itself be a first-shard name, else the pattern is added."""
    m = _SHARD_NAME.match(output)
    if m is not None:
        if int(m["no"]) != 1 or int(m["count"]) != count:
            raise UsageError(f"output {output} must name the first of {count} shards "
                             f"({shard_name(m['prefix'], 1, count)})")
        prefix = m["prefix"]
    else:
        prefix = output[:-len(".gguf")] if output.endswith(".gguf") else output
    return [shard_name(prefix, i, count) for i in range(1, count + 1)]


def open_input(path: str) -> GGUFFile:
    """Parse one GGUF file, turning every failure into a one-line InputError."""
    try:
        return read_gguf(path)
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a GGUF file") from None
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None
    except OSError as e:
        if e.errno == errno.ENOMEM:     # the mapping of the file, under ulimit -v
            raise OutOfMemory(f"out of memory (cannot map {path})") from None
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:   # GGUFFormatError
        raise InputError(f"{path}: {e}") from None


def check_output_path(input_path: str, output_path: str, force: bool) -> None:
    """Refuse to overwrite the input (also through a link), anything but a regular file (a
    folder, device, FIFO or socket, even with --force) or, without --force, anything at all."""
    from .atomic import check_destination   # here: inspect, which writes nothing, skips atomic.py

    if os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise OutputError(f"output {output_path} is the input file; choose another name")
    check_destination(output_path, force)


@dataclass
class Model:
    """The opened files of a model: one, or every shard in order."""

    paths: list[str]
    files: list[GGUFFile] = field(default_factory=list)
    temporaries: list[str] = field(default_factory=list)   # decompressed copies of .zst inputs

    @property
    def count(self) -> int:
        return len(self.paths)

    def close(self) -> None:
        for f in self.files:
            f.close()
        for path in self.temporaries:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            untrack_temporary(path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_model(path: str, scratch_dir: str | None = None, header_only: bool = False,
               progress=None) -> Model:
    """Open a GGUF file; given the first shard of a split model, open and check every shard.

    A zstd-compressed file is streamed: with ``header_only`` just far enough to parse the header,
    otherwise into a temporary plain copy in ``scratch_dir`` that ``close`` removes (a
    "decompress" phase of ``progress``, see runner.start_phase)."""
    if not header_only:
        from . import atomic     # inspect (header only) writes nothing: it skips atomic.py

        # temporary files of killed runs: where they are most likely, before making new ones
        atomic.remove_stale_at_start(scratch_dir)
    model = Model([path])
    try:
        first = _open_file(path, model, scratch_dir, header_only, progress)
        model.files.append(first)
        count = shard_count(first)
        if count > 1:
            model.paths = input_shards(path, first)
            total = _split_int(first, KEY_SPLIT_TENSORS, None)
            for i, shard in enumerate(model.paths[1:], start=1):
                model.files.append(_open_file(shard, model, scratch_dir, header_only, progress))
                check_shard(shard, model.files[-1], i, count, total, first)
        check_model(model.paths, model.files)
    except BaseException:
        model.close()
        raise
    return model


def _open_file(path: str, model: Model, scratch_dir: str | None, header_only: bool,
               progress) -> GGUFFile:
    """One file of a model; a zstd-compressed one through its header alone (``header_only``), or
    through a temporary plain copy (in ``scratch_dir``) that the model removes when closed. Its
    header is read first, so a hostile header is refused before anything is decompressed."""
    from . import zst

    if not zst.is_zst(path):
        return open_input(path)
    header = zst.read_header(path)
    if header_only:
        return header
    temp = zst.decompress_to_temp(path, scratch_dir, progress)
    model.temporaries.append(temp)
    try:
        f = open_input(temp)
    except InputError as e:   # name the user's file, not our temporary copy
        raise InputError(str(e).replace(temp, path)) from None
    f.path = path
    return f
