"""The layout a repacked model declares (``amx_repack.layout``) against what it holds.

A file whose records name one layout family but whose tensors are of another (a wrong record, or
the shards of a split model converted with different ``--layout``) would verify and unpack tensor
by tensor, yet no runtime loads it, and inspect would name the wrong runtime. verify, unpack and
inspect refuse it up front (exit 2). Which family a packed type belongs to is asked of the
families' own tables (formats.layouts.FAMILY_TABLES), never named here.
"""

from __future__ import annotations

from formats.gguf_container import GGUFFile, TensorInfo
from formats.layouts import FAMILY_TABLES

from . import metadata
from .errors import InputError


def packed_family(t: TensorInfo) -> str | None:
    """The layout family whose packed type ``t`` has (None: a plain type)."""
    for name, family in FAMILY_TABLES.items():
        if family.source_of(t.type_id) is not None:
            return name
    return None


def _declared(f: GGUFFile) -> str | None:
    info = metadata.read_info(f.kv)
    return info.layout if info is not None else None


def check_declared_layout(files: list[GGUFFile]) -> str | None:
    """The layout every file of a model declares (None: no records), after checking that all of
    them declare the same one and that every packed tensor is of it; InputError otherwise."""
    layout = _declared(files[0])
    for f in files[1:]:
        other = _declared(f)
        if other != layout:
            raise InputError(f"{f.path} declares layout {_name(other)}, but {files[0].path} "
                             f"declares {_name(layout)}: the files of a model must come from one "
                             f"conversion")
    if layout is None:
        return None
    for f in files:
        for t in f.tensors:
            family = packed_family(t)
            if family is not None and family != layout:
                raise InputError(f"{f.path}: tensor '{t.name}' is {t.type.name}, a type of the "
                                 f"{family} layout, but the file declares layout {layout} "
                                 f"('{metadata.KEY_LAYOUT}')")
    return layout


def _name(layout: str | None) -> str:
    return layout if layout is not None else "none (no amx-repack records)"
