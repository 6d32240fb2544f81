"""What an adapter hands the core, and how the core answers it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.conversation import ConversationKey
from core.events import Event
from core.files import FileSource


@dataclass(frozen=True)
class InboundMessage:
    """A user's message, already stripped of platform details.

    ``delivery_ids`` name this delivery in every way the platform may repeat it (Slack: the
    ``event_id`` and ``channel/ts``); if any of them was seen recently the message is a duplicate.
    ``files`` are the attached files, not yet downloaded (the core reads them in the turn).
    ``place`` is ``"dm"`` (a direct or personal chat), ``"group"`` or ``"channel"``;
    ``user_roles`` what the platform says of the user (``"workspace_admin"``, ``"guest"``);
    ``explicit_command`` marks text from a slash command (always a command, never a question).
    """

    key: ConversationKey
    user_id: str
    text: str
    delivery_ids: tuple[str, ...]
    files: tuple[FileSource, ...] = ()
    place: str = "channel"
    user_roles: frozenset[str] = frozenset()
    explicit_command: bool = False


class Reply(Protocol):
    """Renders one turn's events in the chat thread the message came from.

    The core calls :meth:`emit` with the turn's events in order, always ending with exactly one
    :class:`core.events.Done`; a :class:`core.events.Failure` may come before it and must be shown
    to the user. ``emit`` should not raise: a rendering problem is the adapter's to log and absorb.
    """

    async def emit(self, event: Event) -> None: ...
