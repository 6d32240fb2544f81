"""Making model text safe, readable and sized for Teams messages.

Teams renders a subset of Markdown in text messages (``textFormat: markdown``): bold, italic,
links, lists, code and block quotes, but no headings and no tables. Headings become bold lines and
tables become preformatted blocks, so they stay readable. A message's payload is limited (100 KB,
counted by Teams in UTF-16 with images excluded); a message carries at most ``MESSAGE_LIMIT``
bytes of text in either encoding, which leaves room for the rest of the activity.
"""

from __future__ import annotations

import re

from core import wording
from core.events import Citation
from core.text import link_title, safe_url, split_point

MESSAGE_LIMIT = 80_000

# "<at>" in model text would render as a mention tag; a zero-width space after "<" keeps it text.
_MENTION_TAG = re.compile(r"<(/?at\b)", re.IGNORECASE)
_PARTIAL_TAG = re.compile(r"<(/?a?)$", re.IGNORECASE)
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def neutralise(text: str) -> str:
    """Model text with no ``<at>`` mention tags left (Teams only pings with a mention entity, which
    the bot never sends, but the tag would still render oddly)."""
    return _MENTION_TAG.sub("<\u200b\\1", text)


def safe_prefix(text: str) -> int:
    """How much of streamed ``text`` can be neutralised now: a trailing ``<a`` may become ``<at>``."""
    match = _PARTIAL_TAG.search(text)
    return match.start() if match else len(text)


def to_teams_markdown(text: str) -> str:
    """Headings as bold lines, tables as preformatted blocks; code blocks are left alone."""
    lines = text.split("\n")
    out: list[str] = []
    in_code = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code and _is_table_start(lines, index):
            end = index
            while end < len(lines) and _TABLE_ROW.match(lines[end]):
                end += 1
            out.extend(["```", *lines[index:end], "```"])
            index = end
            continue
        elif not in_code:
            line = _HEADING.sub(lambda m: f"**{m.group(1)}**", line)
        out.append(line)
        index += 1
    return "\n".join(out)


def _is_table_start(lines: list[str], index: int) -> bool:
    return (
        index + 1 < len(lines)
        and bool(_TABLE_ROW.match(lines[index]))
        and bool(re.match(r"^\s*\|?\s*:?-{3,}", lines[index + 1]))
    )


def sources(citations: list[Citation]) -> str:
    """Numbered sources for the end of an answer."""
    lines = [f"**{wording.SOURCES}**", ""]
    for number, citation in enumerate(citations, start=1):
        title, url = neutralise(link_title(citation.title)), safe_url(citation.url)
        lines.append(f"{number}. [{title}]({url})" if url else f"{number}. {title}")
    return "\n".join(lines)


def size(text: str) -> int:
    """Bytes ``text`` takes in a message: the larger of its UTF-8 and UTF-16 forms."""
    return max(len(text.encode("utf-8")), len(text.encode("utf-16-le")))


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """``text`` in parts of at most ``limit`` bytes, each ending at a paragraph, line or word
    break where there is one."""
    parts: list[str] = []
    while size(text) > limit:
        room = _fitting_prefix(text, limit)
        cut = split_point(text, room) or room
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip("\n")
    if text.strip() or not parts:
        parts.append(text)
    return parts


def _fitting_prefix(text: str, limit: int) -> int:
    """The longest prefix length of ``text`` within ``limit`` bytes."""
    n = min(len(text), limit // 2)
    while n > 1 and size(text[:n]) > limit:
        n -= max(1, (size(text[:n]) - limit) // 4)
    return n
