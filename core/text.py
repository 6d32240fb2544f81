"""Platform-neutral helpers for sizing model text into chat messages and linking sources."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

# Kept as they are in a source's URL; everything else (spaces, <>()[]|"'`@ …) is percent-encoded,
# so that a URL cannot end the markdown link early, open a mention tag or ping anyone.
_URL_SAFE = ":/?#!$&*+,;=%~-._"


def safe_url(url: str | None) -> str | None:
    """``url`` fit to be a markdown link's target, or None when it is not an http(s) URL."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return quote(url.strip(), safe=_URL_SAFE)


def link_title(title: str) -> str:
    """A source's title fit to be a markdown link's text: one line, no brackets that could end
    the link text and start another link."""
    return " ".join(title.split()).replace("[", "(").replace("]", ")")


def split_point(text: str, limit: int) -> int:
    """The best place to end a message within ``text[:limit]``: after the last paragraph break,
    else line break, else space. 0 when there is none."""
    for separator in ("\n\n", "\n", " "):
        cut = text.rfind(separator, 0, limit)
        if cut > 0:
            return cut + len(separator)
    return 0
