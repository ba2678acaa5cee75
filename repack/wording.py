"""Counts in messages: "1 thread", "2 threads", never "1 threads" or "thread(s)"."""


def plural(n: int, noun: str, nouns: str | None = None, sep: str = "") -> str:
    """``n`` and the noun in the number it needs; ``nouns`` for an irregular plural; ``sep=","``
    groups the digits ("1,024 bytes")."""
    count = f"{n:,}" if sep == "," else str(n)
    return f"{count} {noun if n == 1 else (nouns or noun + 's')}"
