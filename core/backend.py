"""The seam between the core and an AI backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from core.events import Event
from core.files import FilePart
from core.profiles import AssistantProfile


@dataclass(frozen=True)
class TurnInput:
    """What the user said in one turn, and the files they sent with it (read, checked, routed).

    ``resources`` holds what the backend keeps beside the conversation between turns (e.g.
    ``{"vector_store_id": "vs_…"}``); the backend may add to it during the turn, and the core
    stores it with the thread when the turn is done. ``uploaded`` maps the index of each file
    the backend has uploaded to its id there, so that a turn retried in a new conversation does
    not upload its files again.
    """

    text: str
    user_id: str
    files: tuple[FilePart, ...] = ()
    resources: dict[str, str] = field(default_factory=dict)
    uploaded: dict[int, str] = field(default_factory=dict)


class Backend(Protocol):
    """Turns (conversation id, user input, assistant profile) into a stream of events.

    Contract:
    - ``open_conversation`` creates the backend's conversation (Responses ``conv_…``, Assistants
      ``thread_…``) for a chat thread's first turn; it may raise any exception, which the core
      reports to the user as a failure.
    - ``run_turn`` yields :mod:`core.events` (text, progress, images, files, citations, usage) and
      ends with at most one :class:`core.events.Failure`; it never yields ``Done`` (the core does).
      Expected backend problems (rate limits, failed or incomplete answers, timeouts) are yielded
      as ``Failure``, never raised. It raises :class:`core.errors.ConversationGone` when the
      conversation id is unknown to the backend, before yielding anything but progress (such as
      its uploads of the turn's files); the core then runs the turn again in a new conversation
      with the same ``uploaded``. It is called for one
      conversation at a time (the core serialises turns per thread).
    - ``check`` reaches the service with the given profile's settings and raises
      :class:`core.errors.BackendUnreachable` with a plain-words reason.
    """

    name: str

    async def open_conversation(self, profile: AssistantProfile) -> str: ...

    def run_turn(
        self, conversation_id: str, turn: TurnInput, profile: AssistantProfile
    ) -> AsyncIterator[Event]: ...

    async def check(self, profile: AssistantProfile) -> None: ...

    async def close(self) -> None: ...
