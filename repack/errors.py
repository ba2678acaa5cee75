"""Typed exceptions of the Python API. The CLI turns each into one line on stderr and an exit code.

Imports nothing heavy: the command line loads this module (through runner.py) to install its
signal handlers before numpy and the rest are imported (see __main__.py).
"""


class RepackError(Exception):
    """Base class: something the user can fix (bad input, bad arguments, no space...)."""

    exit_code = 2


class InputError(RepackError):
    """An input file is missing, unreadable or not a GGUF file we can read."""


class NoRecords(InputError):
    """The file carries no amx-repack records, so no original can be rebuilt from it byte for
    byte (a file repacked by another tool, or never repacked). ``unpack(..., foreign=True)`` still
    turns its packed tensors back into plain types."""


class ForeignPacked(InputError):
    """The file holds tensors another tool already packed (ik_llama.cpp's ``llama-quantize
    --repack``: _R4/_R8 types) and none of amx-repack's records: converting it again would only
    copy them. ``unpack(..., foreign=True)`` turns them back into plain types, which convert takes."""


class TooMuchFiller(InputError):
    """More non-zero bytes outside the header and tensor data than the records keep, so unpack
    could not give the file back: refused by the repacking layouts (layout "none" copies it)."""


class OutputError(RepackError):
    """The output cannot be written (exists, same as input, no space, not writable...)."""


class OutputExists(OutputError):
    """The output exists (or appeared meanwhile) and replacing it was not asked for (``force``).

    Like every message of the API, its text names no command-line flag: the CLI adds how to
    replace it."""


class OutOfMemory(RepackError):
    """Memory (or a thread) could not be had: a limit (``ulimit -v``, a cgroup) or a full machine.
    Exit status 2, like every other condition of the environment the user can change."""


def is_out_of_memory(e: BaseException) -> bool:
    """Memory refused, in any of the forms it takes: MemoryError (Python, numpy, cffi), a thread
    that cannot start (its stack is memory), zstd's allocation errors (its own exception type)."""
    if isinstance(e, (MemoryError, OutOfMemory)):
        return True
    text = str(e).lower()
    if isinstance(e, RuntimeError) and "start new thread" in text:
        return True
    if isinstance(e, ImportError) and ("failed to map segment" in text
                                       or "cannot allocate memory" in text):
        return True     # a native module that could not be mapped
    return type(e).__name__ == "ZstdError" and ("memory" in text or "allocat" in text)


class UsageError(RepackError):
    """Arguments that contradict each other or the file (bad regex, unknown layout...)."""


class Interrupted(RepackError):
    """SIGINT/SIGTERM arrived; partial output was removed."""

    exit_code = 130


class VerificationFailed(RepackError):
    """A check failed, nothing was written (unpack, convert --verify). ``report``, when set, is
    the report of what the command had planned (convert: its ConvertReport)."""

    exit_code = 1
    report = None


__all__ = ["RepackError", "InputError", "NoRecords", "ForeignPacked", "TooMuchFiller", "OutputError", "OutputExists", "OutOfMemory", "UsageError", "Interrupted",
           "VerificationFailed", "GGUFFormatError"]


def __getattr__(name):
    # GGUFFormatError lives with the container reader (which imports numpy): loaded on first use.
    if name == "GGUFFormatError":
        from formats.gguf_container import GGUFFormatError
        return GGUFFormatError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
