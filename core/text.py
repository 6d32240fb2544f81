"""Platform-neutral helpers for sizing model text into chat messages."""

from __future__ import annotations


def split_point(text: str, limit: int) -> int:
    """The best place to end a message within ``text[:limit]``: after the last paragraph break,
    else line break, else space. 0 when there is none."""
    for separator in ("\n\n", "\n", " "):
        cut = text.rfind(separator, 0, limit)
        if cut > 0:
            return cut + len(separator)
    return 0
