"""Typed events a turn produces, in the order the user should see them.

Backends yield these; adapters render them. Adapters never see backend JSON and backends never
see a platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class TextDelta:
    """More answer text (Markdown), to append to what was shown so far."""

    text: str


@dataclass(frozen=True)
class Progress:
    """A tool started (``done=False``) or finished (``done=True``); ``label`` is user-facing."""

    label: str
    done: bool = False


@dataclass(frozen=True)
class ImageOut:
    """An image the assistant produced."""

    data: bytes
    filename: str
    mime_type: str = "image/png"


@dataclass(frozen=True)
class FileOut:
    """A file the assistant produced."""

    data: bytes
    filename: str
    mime_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Citation:
    """A source the answer cites: a file (``file_id``) or a web page (``url``)."""

    title: str
    url: str | None = None
    file_id: str | None = None


@dataclass(frozen=True)
class Usage:
    """Tokens one backend call used."""

    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class FailureKind(Enum):
    """Why a turn did not end with a complete answer. Wording lives in :mod:`core.wording`."""

    RATE_LIMITED = "rate_limited"
    CONTEXT_TOO_LONG = "context_too_long"
    CONTENT_FILTERED = "content_filtered"
    INCOMPLETE_OUTPUT_LIMIT = "incomplete_output_limit"
    INCOMPLETE_OTHER = "incomplete_other"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    TOO_MANY_TOOL_ROUNDS = "too_many_tool_rounds"
    QUEUE_FULL = "queue_full"
    MISCONFIGURED = "misconfigured"
    SHUTTING_DOWN = "shutting_down"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Failure:
    """The turn ended without a (complete) answer. ``detail`` is for the log only."""

    kind: FailureKind
    detail: str = ""
    retry_after: float | None = None

    @property
    def user_message(self) -> str:
        from core.wording import failure_message

        return failure_message(self)


@dataclass(frozen=True)
class Notice:
    """A sentence from the bridge itself (not the model), e.g. the answer to a command."""

    text: str


@dataclass(frozen=True)
class Done:
    """The turn is over; nothing follows."""


Event = TextDelta | Progress | ImageOut | FileOut | Citation | Usage | Failure | Notice | Done
