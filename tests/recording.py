"""A test double for the adapter side: a Reply that records events, like errbot's TestBackend."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from core.events import Done, Event, Failure, TextDelta


@dataclass
class RecordingReply:
    events: list[Event] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def emit(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Done):
            self.done.set()

    async def finished(self, timeout: float = 5.0) -> RecordingReply:
        await asyncio.wait_for(self.done.wait(), timeout)
        return self

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    @property
    def failures(self) -> list[Failure]:
        return [e for e in self.events if isinstance(e, Failure)]

    def of_type(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]
