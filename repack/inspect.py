"""inspect: what a file holds and what each layout family would do with every tensor.

Reads only the header (the tensor data is never touched), so it is instant on any model size.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

from formats.ggml_types import type_name
from formats.layouts import FAMILY_TABLES, RUNTIMES

from . import metadata, shards


@dataclass
class TensorRow:
    name: str
    type: str
    shape: list[int]
    bytes: int
    offset: int
    layouts: dict[str, dict]      # family -> {"target": str|None, "packs": bool, "reason": str,
    #                                            "code": str (formats.layouts.CODES)}
    original_type: str | None = None   # for a repacked file: the type before conversion
    shard: int = 0                     # index of the file holding it (split models)
    added_from: str | None = None      # not in the original: convert --untie-output copied it from
    #                                    this tensor (recorded in the file; unpack removes it)


@dataclass
class InspectReport:
    path: str
    version: int
    file_size: int
    alignment: int
    data_start: int
    metadata_count: int
    repacked_by: dict | None                 # our self-description, if the file has one
    tensors: list[TensorRow] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)   # every file of the model
    # the runtime that reads each layout family's output (formats.layouts.RUNTIMES)
    runtimes: dict[str, str] = field(default_factory=lambda: {f: RUNTIMES[f] for f in FAMILY_TABLES})
    seconds: float = 0.0

    def bytes_by_type(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for t in self.tensors:
            row = out.setdefault(t.type, {"tensors": 0, "bytes": 0})
            row["tensors"] += 1
            row["bytes"] += t.bytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["bytes"]))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bytes_by_type"] = self.bytes_by_type()
        return d


def inspect(path: str | os.PathLike) -> InspectReport:
    """Parse the header of a GGUF file (every shard of a split model) and decide every tensor
    for every layout family."""
    path = os.fspath(path)
    started = time.perf_counter()
    with shards.open_model(path, header_only=True) as model:
        first = model.files[0]
        info = metadata.read_info(first.kv)
        repacked_by = None
        if info is not None:
            repacked_by = {"layout": info.layout, "layout_version": info.layout_version,
                           "tool_version": info.tool_version,
                           "runtime": RUNTIMES.get(info.layout, "unknown layout"),
                           "added_tensors": dict(zip(info.added_tensors, info.added_sources))}
        report = InspectReport(path, first.version, sum(f.file_size for f in model.files),
                               first.alignment, first.data_start, len(first.kv), repacked_by,
                               shards=model.paths)
        for shard, src in enumerate(model.files):
            shard_info = metadata.read_info(src.kv)
            originals = dict(zip(shard_info.tensor_names, shard_info.original_types)) if shard_info else {}
            added = dict(zip(shard_info.added_tensors, shard_info.added_sources)) if shard_info else {}
            for t in src.tensors:
                layouts = {}
                for family, table in FAMILY_TABLES.items():
                    d = table.decide(t)
                    layouts[family] = {"target": d.target.name if d.target else None,
                                       "packs": d.packs, "reason": d.reason, "code": d.code}
                orig = originals.get(t.name)
                report.tensors.append(TensorRow(
                    t.name, t.type.name, list(t.shape), t.nbytes, t.offset, layouts,
                    type_name(orig) if orig is not None and orig != t.type_id else None, shard,
                    added.get(t.name)))
    report.seconds = time.perf_counter() - started
    return report
