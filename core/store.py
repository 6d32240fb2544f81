"""Where each chat thread's backend conversation id and state live.

:class:`SqliteDictStore` is the default: one file, no server, survives restarts. A Redis store
for several replicas fills the same :class:`ConversationStore` protocol.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from sqlitedict import SqliteDict

from core.conversation import ConversationKey


@dataclass(frozen=True)
class ThreadState:
    """What the bridge remembers about one chat thread. An empty ``conversation_id`` means the
    thread was reset: the bot still answers in it, and its next turn opens a new conversation."""

    conversation_id: str
    backend: str
    profile: str
    created_at: float
    last_turn_at: float = 0.0
    turns: int = 0
    # What the backend keeps beside its conversation (e.g. the conversation's vector store).
    resources: dict[str, str] = field(default_factory=dict)

    def after_turn(self, resources: dict[str, str] | None = None, now: float | None = None) -> ThreadState:
        return replace(
            self,
            last_turn_at=now or time.time(),
            turns=self.turns + 1,
            resources=dict(self.resources if resources is None else resources),
        )

    def reset(self) -> ThreadState:
        return replace(self, conversation_id="", resources={})


class ConversationStore(Protocol):
    """Maps a conversation key to its :class:`ThreadState`.

    Calls are safe from many tasks at once and never block the event loop. ``put`` replaces the
    whole state; ``get`` returns ``None`` for a thread never seen (or deleted).
    """

    async def get(self, key: ConversationKey) -> ThreadState | None: ...

    async def put(self, key: ConversationKey, state: ThreadState) -> None: ...

    async def delete(self, key: ConversationKey) -> None: ...

    async def close(self) -> None: ...


class SqliteDictStore:
    """A :class:`ConversationStore` in one SQLite file through sqlitedict.

    sqlitedict serialises every statement through its own writer thread, so the store is safe under
    concurrent use; each call here runs in a worker thread to keep the event loop free. Values are
    stored as plain dicts (not pickled dataclasses) so the file outlives code changes.
    """

    def __init__(self, path: str | Path, table: str = "threads") -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = SqliteDict(str(path), tablename=table, autocommit=True, outer_stack=False)

    async def get(self, key: ConversationKey) -> ThreadState | None:
        raw: dict[str, Any] | None = await asyncio.to_thread(self._db.get, str(key))
        return ThreadState(**raw) if raw else None

    async def put(self, key: ConversationKey, state: ThreadState) -> None:
        await asyncio.to_thread(self._db.__setitem__, str(key), asdict(state))

    async def delete(self, key: ConversationKey) -> None:
        await asyncio.to_thread(self._db.pop, str(key), None)

    async def close(self) -> None:
        await asyncio.to_thread(self._db.close)
