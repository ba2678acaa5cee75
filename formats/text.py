"""Text from a file, made safe to print on one line.

Its own module (not formats.gguf_container, which raises its errors with it) so that the command
line's ``--help``, which prints nothing from a file, does not load the GGUF reader.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every non-printable character (newline, ESC, ...) written as an escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
