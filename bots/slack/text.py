"""Making model text safe and sized for Slack."""

from __future__ import annotations

import re

# Markdown text per chat.postMessage/update/appendStream call is capped at 12,000 characters;
# we keep a margin for the footnotes and failure notes appended at the end.
MESSAGE_LIMIT = 11_000
# Within this many characters of the limit, a message ends at the next paragraph or line break.
SOFT_MARGIN = 2_000

_BROADCAST = re.compile(r"@(?=(channel|here|everyone)\b)", re.IGNORECASE)
_PARTIAL_BROADCAST = re.compile(r"@[A-Za-z]{0,8}$")


def neutralise(text: str) -> str:
    """Make model output inert: no ``<!here>``, ``<@U…>``, ``<!subteam^…>`` or ``@channel`` pings.

    ``&``, ``<`` and ``>`` become entities (Slack's own rule for untrusted text), and a word joiner
    after ``@`` keeps ``@here``-style words from being read as broadcasts.
    """
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub("@\u2060", text)


def safe_prefix(text: str) -> int:
    """How much of streamed ``text`` can be neutralised now: a trailing ``@he`` may become ``@here``."""
    match = _PARTIAL_BROADCAST.search(text)
    return match.start() if match else len(text)
