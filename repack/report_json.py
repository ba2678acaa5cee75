"""The JSON documents of `convert`, `unpack`, `verify` and `inspect` (``--json``).

Every document is one JSON object on stdout with the same envelope (``ENVELOPE_KEYS``), then the
command's own keys. ``KEYS`` below lists exactly the keys each command writes, at the top level,
per tensor and per type: docs/json.md documents each of them, and the tests check the two against
each other and against real output. Decision codes are formats.layouts.CODES. Adding a key is
compatible; renaming or removing one, or changing a meaning, bumps ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict

from . import __version__

SCHEMA_VERSION = 1

ENVELOPE_KEYS = ("schema_version", "command", "tool_version", "inputs", "outputs", "seconds",
                 "warnings", "notes", "by_type", "tensors", "path_bytes")
# the keys whose values are file paths (strings, or lists of them; original_sha256: its "file")
PATH_KEYS = ("inputs", "outputs", "original", "repacked", "path", "shards", "file")

KEYS = {
    "convert": {
        "top": ENVELOPE_KEYS + ("layout", "target", "runtime", "dry_run", "verified", "threads",
                                "selection", "bytes_in", "bytes_out", "repacked", "file_size_in",
                                "file_size_out", "error"),
        "tensors": ("name", "shape", "type", "output_type", "bytes_in", "bytes_out", "repacked",
                    "code", "reason", "overridden", "added_from"),
        "by_type": ("input_type", "output_type", "tensors", "bytes_in", "bytes_out", "added"),
    },
    "unpack": {
        "top": ENVELOPE_KEYS + ("foreign", "byte_identical", "changed_keys", "bytes_in",
                                "bytes_out", "unpacked", "digest", "sha256_checked", "error"),
        "tensors": ("name", "type", "output_type", "bytes_in", "bytes_out"),
        "by_type": ("input_type", "output_type", "tensors", "bytes_in", "bytes_out"),
    },
    "verify": {
        "top": ENVELOPE_KEYS + ("ok", "verdict", "original", "repacked", "layout", "target",
                                "metadata_problems", "failures", "digest", "proves",
                                "original_sha256"),
        "tensors": ("name", "status", "type_before", "type_after", "bytes", "checks", "detail",
                    "added_from"),
        "by_type": ("type_before", "type_after", "tensors", "bytes", "failing"),
    },
    "inspect": {
        "top": ENVELOPE_KEYS + ("path", "version", "file_size", "alignment", "data_start",
                                "metadata_count", "repacked_by", "shards", "runtimes",
                                "upstream_at_load", "bytes_by_type"),
        "tensors": ("name", "type", "shape", "bytes", "offset", "layouts", "original_type",
                    "shard", "added_from", "upstream_at_load"),
        "by_type": ("type", "tensors", "bytes"),
    },
}


def _envelope(command: str, inputs, outputs, seconds: float, warnings, notes, by_type,
              tensors) -> dict:
    return {"schema_version": SCHEMA_VERSION, "command": command, "tool_version": __version__,
            "inputs": list(inputs), "outputs": list(outputs), "seconds": round(seconds, 6),
            "warnings": list(warnings), "notes": list(notes), "by_type": by_type,
            "tensors": tensors, "path_bytes": {}}


def dumps(document: dict) -> str:
    """The document as JSON text, every string valid Unicode (docs/json.md, "Paths").

    A path that is not valid UTF-8 reaches us as Python's surrogate escapes (lone surrogates,
    which strict JSON readers refuse): it is written with each undecodable byte as U+FFFD, and its
    exact bytes (base64) are listed in ``path_bytes`` under that written form. Messages quoting
    such a path are written the same way."""
    path_bytes: dict[str, list[str]] = document["path_bytes"]

    def clean(value, is_path: bool):
        if isinstance(value, str):
            if not any("\udc80" <= c <= "\udcff" for c in value):
                return value
            raw = value.encode("utf-8", "surrogateescape")
            written = raw.decode("utf-8", "replace")
            if is_path:
                encoded = base64.b64encode(raw).decode("ascii")
                if encoded not in path_bytes.setdefault(written, []):
                    path_bytes[written].append(encoded)
            return written
        if isinstance(value, dict):
            return {clean(k, False): clean(v, is_path or k in PATH_KEYS) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, is_path) for v in value]
        return value

    # path_bytes keeps its place; it is filled while the keys after it are cleaned
    cleaned = {k: path_bytes if k == "path_bytes" else clean(v, k in PATH_KEYS)
               for k, v in document.items()}
    return json.dumps(cleaned, indent=2)


def _by_type(rows, keys) -> list[dict]:
    return [dict(zip(keys, row)) for row in rows]


def _grouped(items, key, sums) -> list[tuple]:
    """(key..., count, sum...) per distinct key, sorted."""
    acc: dict[tuple, list[int]] = {}
    for it in items:
        row = acc.setdefault(key(it), [0] * (1 + len(sums)))
        row[0] += 1
        for i, s in enumerate(sums, start=1):
            row[i] += s(it)
    return sorted((*k, *v) for k, v in acc.items())


def convert_document(r) -> dict:
    """convert (or ``convert --dry-run``): ``r`` is a repack.pipeline.ConvertReport."""
    tensors = [{"name": p.name, "shape": list(p.shape), "type": _type(p.type_id),
                "output_type": _type(p.out_type_id), "bytes_in": p.nbytes,
                "bytes_out": p.out_nbytes, "repacked": p.repacked,
                "code": p.decision.code or None, "reason": p.decision.reason or None,
                "overridden": list(p.decision.overridden), "added_from": p.added_from}
               for p in r.tensors]
    by_type = [(*row, added) for added in (False, True) for row in r.by_type(added)]
    d = _envelope("convert", r.inputs, r.outputs, r.seconds, r.warnings,
                  r.notes, _by_type(by_type, KEYS["convert"]["by_type"]), tensors)
    s = r.selection
    d.update({"layout": r.layout, "target": r.target, "runtime": r.runtime, "dry_run": r.dry_run,
              "verified": r.verified, "threads": r.threads,
              "selection": {"include": list(s.include) if s else [],
                            "exclude": list(s.exclude) if s else [],
                            "overrides": sorted(s.overrides) if s else []},
              "bytes_in": r.bytes_in, "bytes_out": r.bytes_out, "repacked": len(r.repacked),
              "file_size_in": r.file_size_in, "file_size_out": r.file_size_out,
              "error": None})
    return d


def refusal_document(command: str, error, input: str) -> dict:
    """convert --verify's mismatch, unpack's refusal (exit 1, nothing written): the command's
    document of what it had planned (unpack: nothing is known but the input), with no outputs,
    ``error`` the one line also printed on stderr."""
    if command == "convert":
        d = convert_document(error.report)
        d["verified"] = False
    else:
        from .unpack import UnpackReport
        d = unpack_document(UnpackReport(input, "", 0, 0, 0, inputs=[input]))
        d["byte_identical"] = False
    d.update({"outputs": [], "error": str(error)})
    return d


def unpack_document(r) -> dict:
    """unpack: ``r`` is a repack.unpack.UnpackReport."""
    keys = KEYS["unpack"]["tensors"]
    tensors = [dict(zip(keys, row)) for row in r.tensor_types]
    by_type = _grouped(r.tensor_types, lambda t: (t[1], t[2]), [lambda t: t[3], lambda t: t[4]])
    d = _envelope("unpack", r.inputs, r.outputs, r.seconds, r.warnings, r.notes,
                  _by_type(by_type, KEYS["unpack"]["by_type"]), tensors)
    d.update({"foreign": r.foreign, "byte_identical": r.byte_identical,
              "changed_keys": r.changed_keys, "bytes_in": sum(t[3] for t in r.tensor_types),
              "bytes_out": r.bytes_out, "unpacked": r.unpacked, "digest": r.digest,
              "sha256_checked": r.sha256_checked, "error": None})
    return d


def verify_document(r) -> dict:
    """verify: ``r`` is a repack.verify.VerifyReport."""
    tensors = [{**asdict(t), "added_from": t.added_from or None} for t in r.tensors]
    by_type = _grouped(r.tensors, lambda t: (t.type_before, t.type_after),
                       [lambda t: t.bytes, lambda t: 0 if t.ok else 1])
    d = _envelope("verify", [p for p in (r.original, r.repacked) if p], [], r.seconds, [],
                  r.notes, _by_type(by_type, KEYS["verify"]["by_type"]), tensors)
    d.update({"ok": r.ok, "verdict": "equivalent" if r.ok else "mismatch",
              "original": r.original, "repacked": r.repacked, "layout": r.layout,
              "target": r.target, "metadata_problems": list(r.metadata_problems), "failures": len(r.failures),
              "digest": r.digest, "proves": r.proves,
              "original_sha256": [dict(c) for c in r.sha256_checks] or None})
    return d


def inspect_document(r) -> dict:
    """inspect: ``r`` is a repack.inspect.InspectReport."""
    own = r.to_dict()
    tensors = own.pop("tensors")
    by_type = [{"type": k, **v} for k, v in r.bytes_by_type().items()]
    d = _envelope("inspect", r.shards or [r.path], [], r.seconds, [], [], by_type, tensors)
    d.update({k: own[k] for k in KEYS["inspect"]["top"] if k not in d})
    return d


def _type(type_id: int) -> str:
    from formats.ggml_types import type_name
    return type_name(type_id)
