"""Modules imported on first use, so that a command which never needs them does not pay for them.

``amx-repack --help`` or ``inspect`` of a small file is dominated by start-up when numpy (about a
tenth of a second) is loaded up front; these modules use numpy only inside their functions.
``np = lazy_module("numpy")`` reads like the plain import at every place of use.
"""

from __future__ import annotations

import importlib


class _LazyModule:
    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def __getattr__(self, attr: str):
        value = getattr(importlib.import_module(self.__dict__["_name"]), attr)
        self.__dict__[attr] = value       # later look-ups skip this method
        return value


def lazy_module(name: str):
    """A stand-in for module ``name`` that imports it at the first attribute look-up."""
    return _LazyModule(name)
