"""The original file as convert recorded it: capture at convert time, rebuild and check at unpack
and verify time.

A GGUF file is its header (magic, version, counts, KV records, tensor infos), the tensors' data,
and *filler*: every other byte (the padding up to the data section, alignment padding between
tensors, gaps, trailing bytes). convert records all three (metadata.py, layout version 2): the
header by its sha256 plus the pieces it is rebuilt from (KV records, tensor names, shapes, types,
offsets), the data by a digest per tensor, and the filler by its non-zero runs (a canonical file
has none). unpack writes exactly that, and only after checking every piece against its record.

Files of layout version 1 record neither shapes, offsets nor filler: for them the original is
taken to be canonical (laid out as llama.cpp and gguf-py write files, all filler zero), which is
what convert of that version reproduced.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field

from formats.ggml_types import TYPES, type_name
from formats.lazy import lazy_module
from formats.gguf_container import (ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ALIGNMENT,
                                    GGUFFile, KVRecord, OutputTensor, ValueType, align_up,
                                    plan_layout)

from . import metadata
from .errors import InputError, TooMuchFiller
from .wording import plural

np = lazy_module("numpy")   # only inside functions: not loaded by --help or inspect

# Non-zero filler is kept in the header of the repacked file (metadata KEY_FILLER_BYTES): a few
# bytes in the rare file that has any. More than this is refused rather than dropped.
MAX_FILLER_BYTES = 1 << 20
# Runs of non-zero filler closer than this are recorded as one run (zeros included).
FILLER_MERGE_GAP = 64
SCAN_CHUNK = 4 << 20

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def read_at(fd: int, offset: int, nbytes: int, into=None, path: str = "input file"):
    """Read exactly ``nbytes`` at ``offset`` by position (no mapping: a file that shrinks while we
    read it is an error, not a SIGBUS). ``into``: a writable buffer of at least ``nbytes``."""
    buf = bytearray(nbytes) if into is None else into
    view = memoryview(buf).cast("B")[:nbytes]
    done = 0
    while done < nbytes:
        try:
            n = os.preadv(fd, [view[done:]], offset + done)
        except OSError as e:
            raise InputError(f"cannot read {path} at offset {offset + done}: "
                             f"{e.strerror or e}") from None
        if n == 0:
            raise InputError(f"{path}: unexpected end of file at offset {offset + done} (did it "
                             f"shrink while being read?)")
        done += n
    return buf


def encode_header(version: int, records, tensors) -> bytes:
    """Magic .. last tensor info of a GGUF file; ``tensors`` = (name, shape, type id, offset)."""
    records = list(records)
    tensors = list(tensors)
    parts = [GGUF_MAGIC, _U32.pack(version), _U64.pack(len(tensors)), _U64.pack(len(records))]
    parts += [rec.raw for rec in records]
    for name, shape, type_id, offset in tensors:
        b = name.encode("utf-8")
        parts.append(_U64.pack(len(b)) + b + _U32.pack(len(shape)))
        parts += [_U64.pack(d) for d in shape]
        parts.append(_U32.pack(type_id) + _U64.pack(offset))
    return b"".join(parts)


def filler_regions(header_end: int, ranges, file_size: int) -> list[tuple[int, int]]:
    """Every byte range of a file outside its header and its tensors' data, in file order:
    the padding up to the data section, between tensors, any gap, and trailing bytes."""
    regions = []
    pos = header_end
    for a, b in sorted((a, b) for a, b in ranges if b > a) + [(file_size, file_size)]:
        if a > pos:
            regions.append((pos, a))
        pos = max(pos, b)
    return regions


def _scan(fd: int, regions, path: str):
    """Yield (file offset, uint8 array) chunk by chunk over ``regions``."""
    for start, end in regions:
        for a in range(start, end, SCAN_CHUNK):
            b = min(a + SCAN_CHUNK, end)
            yield a, np.frombuffer(read_at(fd, a, b - a, path=path), dtype=np.uint8)


def nonzero_runs(fd: int, regions, path: str, limit: int = MAX_FILLER_BYTES
                 ) -> list[tuple[int, bytes]]:
    """The non-zero bytes of ``regions`` of a file, as (offset, bytes) runs (runs closer than
    FILLER_MERGE_GAP merged). Raises _TooMuchFiller once more than ``limit`` bytes would be kept."""
    spans: list[list[int]] = []
    total = 0
    for a, chunk in _scan(fd, regions, path):
        nz = np.flatnonzero(chunk)
        if not len(nz):
            continue
        # split where consecutive non-zero bytes are more than FILLER_MERGE_GAP apart
        breaks = np.flatnonzero(np.diff(nz) > FILLER_MERGE_GAP)
        firsts = np.concatenate(([nz[0]], nz[breaks + 1]))
        lasts = np.concatenate((nz[breaks], [nz[-1]]))
        for f, l in zip(firsts.tolist(), lasts.tolist()):
            f, l = a + f, a + l + 1
            if spans and f - spans[-1][1] <= FILLER_MERGE_GAP:
                total += l - spans[-1][1]
                spans[-1][1] = l
            else:
                total += l - f
                spans.append([f, l])
        if total > limit:
            raise _TooMuchFiller(spans[0][0], total)
    return [(s, bytes(read_at(fd, s, e - s, path=path))) for s, e in spans]


def first_filler_difference(fd: int, regions, runs: list[tuple[int, bytes]], path: str
                            ) -> tuple[int, int, int] | None:
    """(offset, byte in the file, byte the runs say) of the first difference between a file's
    filler and ``runs`` (zeros elsewhere); None when they are equal. Streams the file."""
    runs = sorted(runs)
    for a, chunk in _scan(fd, regions, path):
        b = a + len(chunk)
        want = np.zeros(len(chunk), dtype=np.uint8)
        for off, data in runs:
            lo, hi = max(off, a), min(off + len(data), b)
            if lo < hi:
                want[lo - a:hi - a] = np.frombuffer(data, dtype=np.uint8)[lo - off:hi - off]
        diff = np.flatnonzero(want != chunk)
        if len(diff):
            i = int(diff[0])
            return a + i, int(chunk[i]), int(want[i])
    # runs recorded outside the regions were reported by _placement_problems
    return None


class _TooMuchFiller(Exception):
    def __init__(self, first: int, nbytes: int):
        super().__init__(first, nbytes)
        self.first, self.nbytes = first, nbytes


def header_end(f: GGUFFile) -> int:
    return len(encode_header(f.version, f.kv.values(),
                             ((t.name, t.shape, t.type_id, t.offset) for t in f.tensors)))


def tensor_ranges(data_start: int, offsets, nbytes):
    return [(data_start + o, data_start + o + n) for o, n in zip(offsets, nbytes)]


# ----------------------------------------------------------------------------------------------
# convert: what to record


def capture(src: GGUFFile, path: str) -> metadata.OriginalRecords:
    """Read everything of ``src`` that is not tensor data and describe it for the records.
    Refuses (InputError) a header that would not be rebuilt byte for byte, or more non-zero
    filler than MAX_FILLER_BYTES."""
    header = encode_header(src.version, list(src.kv.values()), _tensor_rows(src))
    actual = read_at(src.fileno(), 0, len(header), path=path)
    if actual != header:   # cannot happen for a file our reader accepted; never record a lie
        at = next(i for i, (a, b) in enumerate(zip(actual, header)) if a != b)
        raise InputError(f"{path}: its header would not be rebuilt byte for byte (first "
                         f"difference at offset {at}); refusing to convert")
    del actual
    regions = filler_regions(len(header),
                             [(src.data_start + t.offset, src.data_start + t.offset + t.nbytes)
                              for t in src.tensors], src.file_size)
    try:
        runs = nonzero_runs(src.fileno(), regions, path)
    except _TooMuchFiller as e:
        raise TooMuchFiller(
            f"{path} is not a canonical GGUF file: more than {e.nbytes:,} of its bytes outside "
            f"the header and the tensor data are not zero (first at offset {e.first}: "
            f"{_where(src, e.first)}); amx-repack keeps at most "
            f"{MAX_FILLER_BYTES:,} such bytes, so unpack could not give this file back byte for "
            f"byte: refusing") from None
    return describe_header(src, header, runs)


def describe_header(src: GGUFFile, header: bytes | None = None,
                    filler: list[tuple[int, bytes]] | None = None) -> metadata.OriginalRecords:
    """The records of ``src`` from its parsed header alone (``filler``: the non-zero bytes outside
    it, which only a read of the file finds; a dry run of a compressed input plans without)."""
    kv = list(src.kv.values())
    if header is None:
        header = encode_header(src.version, kv, _tensor_rows(src))
    return metadata.OriginalRecords(
        metadata_sha256=metadata.metadata_digest(kv),
        metadata_keys=[r.key for r in kv],
        metadata_digests=[metadata.record_digest(r) for r in kv],
        shapes=[t.shape for t in src.tensors],
        offsets=[t.offset for t in src.tensors],
        header_sha256=hashlib.sha256(header).hexdigest(),
        file_size=src.file_size,
        filler=filler or [])


def _tensor_rows(src: GGUFFile):
    return [(t.name, t.shape, t.type_id, t.offset) for t in src.tensors]


def _where(src: GGUFFile, offset: int) -> str:
    """Which kind of filler a file offset is in, for messages."""
    if offset < src.data_start:
        return "padding after the header"
    before = [t for t in src.tensors if src.data_start + t.offset + t.nbytes <= offset]
    if not before:
        return "before the first tensor's data"
    last = max(before, key=lambda t: t.offset + t.nbytes)
    if all(src.data_start + t.offset + t.nbytes <= offset for t in src.tensors):
        return f"after the last tensor's data ('{last.name}')"
    return f"between tensors, after '{last.name}'"


def describe_filler(src: GGUFFile, runs: list[tuple[int, bytes]]) -> str:
    """A note for the convert summary when the input has non-zero filler (kept and restored)."""
    n = sum(len(d) for _, d in runs)
    return (f"{src.path} is not a canonical GGUF file: {plural(n, 'byte', sep=',')} outside its "
            f"header and tensor data {'is' if n == 1 else 'are'} not zero (first at offset {runs[0][0]}: "
            f"{_where(src, runs[0][0])}); they are recorded, and unpack restores them")


# ----------------------------------------------------------------------------------------------
# unpack / verify: the original as recorded


@dataclass
class OriginalLayout:
    """Every byte of the original as the records describe it: what unpack writes."""

    version: int
    records: list[KVRecord]
    names: list[str]
    shapes: list[tuple[int, ...]]
    types: list[int]
    offsets: list[int]                         # relative to data_start
    nbytes: list[int]
    header: bytes                              # [0, header_end)
    data_start: int
    file_size: int
    filler: list[tuple[int, bytes]] = field(default_factory=list)
    version_of_records: int = 2
    # per original tensor, its index in the repacked file (which may hold added tensors too)
    rep_index: list[int] = field(default_factory=list)

    @property
    def header_end(self) -> int:
        return len(self.header)

    def tensor_start(self, i: int) -> int:
        return self.data_start + self.offsets[i]

    def regions(self):
        ranges = tensor_ranges(self.data_start, self.offsets, self.nbytes)
        return filler_regions(self.header_end, ranges, self.file_size)


def _alignment(records: list[KVRecord]) -> int | str:
    for rec in records:
        if rec.key == ALIGNMENT_KEY:
            if rec.value_type != ValueType.UINT32:
                return f"'{ALIGNMENT_KEY}' is not a uint32"
            a = rec.value
            if a == 0 or a & (a - 1) or a > MAX_ALIGNMENT:
                return f"'{ALIGNMENT_KEY}' = {a} is not a usable alignment"
            return a
    return DEFAULT_ALIGNMENT


def recorded_layout(rep: GGUFFile, info: metadata.RepackInfo, source_types: list[int]
                    ) -> tuple[OriginalLayout | None, list[str]]:
    """The original file as ``rep``'s records describe it, and every way in which ``rep`` and its
    records disagree (empty: unpack would write exactly what convert recorded, tensor data aside,
    which is checked against the per-tensor digests while it is rebuilt).

    ``source_types``: per tensor of ``rep``, the type its layout decodes to. Raises InputError when
    a required record is missing (``info.check_readable``)."""
    info.check_readable(rep.path)
    problems: list[str] = []
    names = [t.name for t in rep.tensors]
    n = len(names)
    if info.tensor_names != names:
        problems.append(_names_problem(info.tensor_names, names))
    for key, values in ((metadata.KEY_ORIGINAL_TYPES, info.original_types),
                        (metadata.digests_key(info.layout_version), info.original_digests),
                        (metadata.KEY_ORIGINAL_N_DIMS, info.original_shapes),
                        (metadata.KEY_ORIGINAL_OFFSETS, info.original_offsets)):
        if values is not None and len(values) != n:
            problems.append(f"'{key}' lists {plural(len(values), 'tensor')}, the file has {n}")
    if problems:
        return None, problems
    added, problems = added_tensors(rep, info)
    if problems:
        return None, problems

    for t, src_type, rec_type in zip(rep.tensors, source_types, info.original_types):
        if src_type != rec_type:
            problems.append(f"tensor '{t.name}' is {t.type.name}, which decodes to "
                            f"{type_name(src_type)}, but convert recorded original type "
                            f"{type_name(rec_type)}")
    shapes = [t.shape for t in rep.tensors]
    if info.original_shapes is not None:
        for t, shape in zip(rep.tensors, info.original_shapes):
            if t.shape != shape:
                problems.append(f"tensor '{t.name}' has shape {list(t.shape)}, convert recorded "
                                f"{list(shape)}")
    records = metadata.original_records(rep.kv, info)
    problems += _metadata_problems(records, info)
    if problems:
        return None, problems

    # the original's tensors: the file's, less those the conversion added
    kept = [i for i in range(n) if i not in added]
    names = [names[i] for i in kept]
    shapes = [shapes[i] for i in kept]
    types = [info.original_types[i] for i in kept]
    nbytes = [TYPES[ty].tensor_bytes(s) for ty, s in zip(types, shapes)]
    alignment = _alignment(records)
    if isinstance(alignment, str):
        return None, [f"the rebuilt metadata is unusable: {alignment}"]

    if info.layout_version == 1:
        # canonical layout: tensor data in the repacked file's data order, aligned, no filler
        order = sorted(range(len(kept)), key=lambda i: rep.tensors[kept[i]].offset)
        plan = plan_layout(rep.version, records,
                           [OutputTensor(a, s, ty, b) for a, s, ty, b in
                            zip(names, shapes, types, nbytes)],
                           alignment, order, rep.tail_padded)
        offsets = plan.offsets
        header = encode_header(rep.version, records, zip(names, shapes, types, offsets))
        return OriginalLayout(rep.version, records, names, shapes, types, offsets, nbytes, header,
                              plan.data_start, plan.total_size, [], 1, kept), []

    offsets = [info.original_offsets[i] for i in kept]
    header = encode_header(rep.version, records, zip(names, shapes, types, offsets))
    data_start = align_up(len(header), alignment)
    layout = OriginalLayout(rep.version, records, names, shapes, types, offsets, nbytes, header,
                            data_start, info.file_size, list(info.filler), 2, kept)
    if hashlib.sha256(header).hexdigest() != info.header_sha256:
        problems.append(f"the rebuilt header (GGUF version {rep.version}, {len(records)} metadata "
                        f"records, {len(kept)} tensor infos) differs from the original's: its sha256 is "
                        f"not the one convert recorded")
    if metadata.filler_digest(info.file_size, info.filler) != info.filler_sha256:
        problems.append("the recorded file size or filler bytes differ from what convert "
                        "recorded (sha256)")
    problems += _placement_problems(layout, alignment)
    return (layout if not problems else None), problems


def added_tensors(rep: GGUFFile, info: metadata.RepackInfo) -> tuple[dict[int, int], list[str]]:
    """The tensors of ``rep`` the conversion added (convert --untie-output), as {index: index of
    the original tensor whose values it holds}, and every way the records of them disagree.

    Only a tensor the records name as added is left out of the original; its per-tensor records
    must be its source's (type, digest, shape, offset), so that dropping it changes nothing else,
    and marking an original tensor as added changes the rebuilt header (its sha256 fails)."""
    if not info.added_tensors and not info.added_sources:
        return {}, []
    names = [t.name for t in rep.tensors]
    if len(info.added_tensors) != len(info.added_sources):
        return {}, [f"'{metadata.KEY_ADDED_TENSORS}' lists {len(info.added_tensors)} tensors, "
                    f"'{metadata.KEY_ADDED_SOURCES}' {len(info.added_sources)}"]
    added: dict[int, int] = {}
    problems = []
    for name, source in zip(info.added_tensors, info.added_sources):
        if names.count(name) != 1 or names.count(source) != 1:
            problems.append(f"added tensor '{name}' or its source '{source}' is not (once) in "
                            f"the file")
            continue
        i, j = names.index(name), names.index(source)
        if i in added or j in added or source in info.added_tensors:
            problems.append(f"added tensor '{name}': listed twice, or its source is added too")
            continue
        fields = [("original type", info.original_types), ("digest", info.original_digests),
                  ("shape", info.original_shapes), ("offset", info.original_offsets)]
        differ = [what for what, values in fields
                  if values is not None and len(values) == len(names) and values[i] != values[j]]
        if differ or rep.tensors[i].shape != rep.tensors[j].shape:
            problems.append(f"added tensor '{name}' is recorded as a copy of '{source}', but its "
                            f"{(differ or ['shape'])[0]} differs from that tensor's")
            continue
        added[i] = j
    return added, problems


def _names_problem(recorded: list[str], names: list[str]) -> str:
    for i, (a, b) in enumerate(zip(recorded, names)):
        if a != b:
            return f"tensor {i} is '{b}' in the file, convert recorded '{a}'"
    if len(recorded) != len(names):
        return f"the file has {plural(len(names), 'tensor')}, convert recorded {len(recorded)}"
    return "tensor names differ from the recorded ones"


def _metadata_problems(records: list[KVRecord], info: metadata.RepackInfo) -> list[str]:
    """The rebuilt KV records against the recorded per-record digests (v2: named) and the
    recorded sha256 of all of them."""
    problems: list[str] = []
    if info.metadata_keys is not None:
        if info.metadata_digests is None or len(info.metadata_digests) != len(info.metadata_keys):
            return [f"'{metadata.KEY_METADATA_KEYS}' and '{metadata.KEY_METADATA_DIGESTS}' do not "
                    f"agree"]
        want = dict(zip(info.metadata_keys, info.metadata_digests))
        got = {r.key: r for r in records}
        for key in info.metadata_keys:
            if key not in got:
                problems.append(f"metadata key '{key}' is missing")
            elif metadata.record_digest(got[key]) != want[key]:
                problems.append(f"metadata key '{key}' differs from the original's "
                                f"(now {got[key].describe()})")
        for key in got:
            if key not in want:
                problems.append(f"metadata key '{key}' was not in the original")
        if not problems and [r.key for r in records] != list(info.metadata_keys):
            problems.append("metadata keys are in a different order than in the original")
    if not problems and metadata.metadata_digest(records) != info.metadata_sha256:
        problems.append("the rebuilt metadata differs from the original's (its sha256 is not the "
                        "one convert recorded)")
    return problems


def _placement_problems(layout: OriginalLayout, alignment: int) -> list[str]:
    """Recorded offsets, file size and filler runs that no valid original could have had."""
    problems = []
    spans = []
    for name, off, nb in zip(layout.names, layout.offsets, layout.nbytes):
        if off % alignment:
            problems.append(f"recorded offset {off} of tensor '{name}' is not aligned to "
                            f"{alignment}")
        spans.append((layout.data_start + off, layout.data_start + off + nb, name))
    spans.sort()
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        if a1 > b0:
            problems.append(f"recorded data of tensors '{an}' and '{bn}' overlap")
            break
    end = max([layout.data_start] + [b for _, b, _ in spans]) if spans else layout.header_end
    if layout.file_size < end:
        problems.append(f"recorded file size {layout.file_size} is smaller than the data it "
                        f"holds ({end} bytes)")
    regions = layout.regions()
    for off, data in layout.filler:
        if not any(a <= off and off + len(data) <= b for a, b in regions):
            problems.append(f"recorded filler bytes at offset {off} overlap the header or a "
                            f"tensor's data")
            break
    return problems


# ----------------------------------------------------------------------------------------------
# verify ORIGINAL REPACKED: does the recorded original equal the real one?


def compare_with(layout: OriginalLayout, orig: GGUFFile) -> list[str]:
    """Every way in which unpack's output (as recorded) would differ from ``orig``, tensor data
    aside (compared tensor by tensor)."""
    problems = []
    if orig.version != layout.version:
        problems.append(f"GGUF version: the original has {orig.version}, unpack would write "
                        f"{layout.version}")
    infos = [(t.name, t.shape, t.type_id, t.offset) for t in orig.tensors]
    rebuilt = list(zip(layout.names, layout.shapes, layout.types, layout.offsets))
    if [i[0] for i in infos] != [r[0] for r in rebuilt]:
        problems.append("tensor infos: the tensors are not the original's, in its order")
    else:
        for o, r in zip(infos, rebuilt):
            if o != r:
                what = ("shape" if o[1] != r[1] else "type" if o[2] != r[2] else "data offset")
                problems.append(f"tensor info of '{o[0]}': {what} differs (original "
                                f"{o[1:]}, unpack would write {r[1:]})")
                break
    if problems:
        return problems
    actual = read_at(orig.fileno(), 0, min(orig.file_size, layout.header_end), path=orig.path)
    if bytes(actual) != layout.header:
        at = next((i for i, (a, b) in enumerate(zip(actual, layout.header)) if a != b),
                  min(len(actual), layout.header_end))
        problems.append(f"header bytes differ from the original's at offset {at}")
        return problems
    if orig.file_size != layout.file_size:
        problems.append(f"file size: the original has {orig.file_size} bytes, unpack would write "
                        f"{layout.file_size}")
        return problems
    diff = first_filler_difference(orig.fileno(), layout.regions(), layout.filler, orig.path)
    if diff is not None:
        at, got, expected = diff
        problems.append(f"the byte at offset {at} outside the tensors' data is 0x{got:02x} in the "
                        f"original, unpack would write 0x{expected:02x}"
                        + ("" if layout.version_of_records > 1 else
                           " (files of layout version 1 record no such bytes: they must be zero)"))
    return problems
