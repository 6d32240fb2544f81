"""Turning Assistants v2 message text into clean text: 【…】 citation markers become numbered
references and ``sandbox:/mnt/data/…`` links become the name of the delivered file.

Text arrives in deltas and a marker or link may be split across them, so text after an unclosed
``【`` or an unfinished sandbox link is held back until it closes (or the message ends).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

_SANDBOX_LINK = re.compile(r"!?\[([^\]\n]*)\]\((sandbox:[^)\s]*)\)")  # "!": a markdown image
_BARE_SANDBOX = re.compile(r"sandbox:/mnt/data/[^\s)\]]*")
_MARKER = re.compile(r"【[^】\n]*†[^】\n]*】")  # citation markers only (【4:0†source】), not CJK brackets


@dataclass
class AnnotatedText:
    """Per message: feed deltas and annotations, take text that is safe to show."""

    replacements: dict[str, str] = field(default_factory=dict)
    _held: str = ""

    def replace(self, raw: str, shown: str) -> None:
        """Show ``shown`` wherever the annotation's ``raw`` text (a marker or a sandbox URL) is."""
        self.replacements[raw] = shown

    def feed(self, delta: str) -> str:
        self._held += delta
        cut = min(_safe_end(self._held), self._first_unresolved(self._held))
        ready, self._held = self._held[:cut], self._held[cut:]
        return self._clean(ready)

    def _first_unresolved(self, text: str) -> int:
        """Where the first complete marker or sandbox link without its annotation yet starts:
        annotations may come a delta later than their text."""
        starts = [
            m.start()
            for pattern in (_SANDBOX_LINK, _BARE_SANDBOX, _MARKER)
            for m in pattern.finditer(text)
            if (m.group(2) if pattern is _SANDBOX_LINK else m.group(0)) not in self.replacements
        ]
        return min(starts, default=len(text))

    def flush(self) -> str:
        ready, self._held = self._held, ""
        return self._clean(ready)

    def _clean(self, text: str) -> str:
        for raw, shown in self.replacements.items():
            if raw.startswith("sandbox:"):
                link = re.compile(rf"!?\[([^\]\n]*)\]\({re.escape(raw)}\)")
                text = link.sub(lambda m, shown=shown: f"{m.group(1)} ({shown})", text)  # type: ignore[misc]
            text = text.replace(raw, shown)
        text = _SANDBOX_LINK.sub(lambda m: f"{m.group(1)} ({unavailable(m.group(2))})", text)
        text = _BARE_SANDBOX.sub(lambda m: unavailable(m.group(0)), text)
        return _MARKER.sub("", text)


def unavailable(url: str) -> str:
    return f"file {posixpath.basename(url)} could not be delivered"


def _safe_end(text: str) -> int:
    """How much of ``text`` cannot be part of a marker or sandbox link still being written."""
    end = len(text)
    open_marker = text.rfind("【")
    if open_marker != -1 and "】" not in text[open_marker:] and "\n" not in text[open_marker:]:
        end = min(end, open_marker)
    link = text.rfind("](sandbox:")
    if link != -1 and ")" not in text[link + 2 :]:
        end = min(end, text.rfind("[", 0, link) if text.rfind("[", 0, link) != -1 else link)
    bracket = text.rfind("[")
    if bracket != -1 and "]" not in text[bracket:] and "\n" not in text[bracket:]:
        end = min(end, bracket)  # maybe the label of a sandbox link
    tail = text[max(0, end - 20) : end]
    end -= max(
        (
            size
            for prefix in ("sandbox:/mnt/data/", "](sandbox:")
            for size in range(1, len(prefix))
            if tail.endswith(prefix[:size])
        ),
        default=0,
    )
    bare = text.rfind("sandbox:")
    if bare != -1 and not re.search(r"[\s)\]]", text[bare:]):
        end = min(end, bare)
    if text.startswith("]", end):
        label = text.rfind("[", 0, end)  # keep a link's label with its (possibly sandbox) URL
        end = label if label != -1 else end
    if 0 < end and text[end - 1] == "!" and (end == len(text) or text[end] == "["):
        end -= 1  # a "!" may open a markdown image: it stays with its link
    return end
