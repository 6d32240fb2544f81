"""What admins set per channel, what each channel and user spends, and who changed what.

A "channel" is where a conversation lives: a Slack channel or DM, a Teams channel, group chat or
personal chat (a :class:`core.conversation.ConversationKey` without its thread). Days and months
are UTC.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlitedict import SqliteDict

from core.conversation import ConversationKey


def channel_of(key: ConversationKey) -> str:
    """``platform:workspace:channel``: the key of a conversation's channel."""
    return f"{key.platform}:{key.workspace}:{key.channel}"


def utc_day(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now if now is not None else time.time()))


@dataclass(frozen=True)
class ChannelSettings:
    """``None`` everywhere means "as the file says"."""

    profile: str | None = None
    daily_tokens: int | None = None  # 0: no limit here
    answers: bool | None = None  # allow / deny


@dataclass(frozen=True)
class Usage:
    tokens: int = 0
    turns: int = 0


@dataclass(frozen=True)
class AuditEntry:
    at: float
    who: str
    where: str
    what: str
    before: str
    after: str


class ChannelBook(Protocol):
    """Per-channel settings, token usage and the audit log. Safe from many tasks at once; never
    blocks the event loop."""

    async def settings(self, channel: str) -> ChannelSettings: ...

    async def set_settings(self, channel: str, settings: ChannelSettings) -> None: ...

    async def all_settings(self) -> dict[str, ChannelSettings]: ...

    async def add_usage(self, channel: str, user: str, tokens: int, now: float | None = None) -> None: ...

    async def channel_usage(self, channel: str, period: str) -> Usage: ...

    async def user_usage(self, user: str, period: str) -> Usage: ...

    async def audit(self, entry: AuditEntry) -> None: ...

    async def audit_entries(self) -> list[AuditEntry]: ...

    async def close(self) -> None: ...


class SqliteChannelBook:
    """:class:`ChannelBook` in a sqlitedict file (tables ``channels``, ``usage``, ``audit``).
    Usage is kept per day and per month; the audit log only grows. Settings are cached: this
    store is for one process (several replicas need a shared store)."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._settings = SqliteDict(str(path), tablename="channels", autocommit=True, outer_stack=False)
        self._usage = SqliteDict(str(path), tablename="usage", autocommit=False, outer_stack=False)
        self._audit = SqliteDict(str(path), tablename="audit", autocommit=True, outer_stack=False)
        self._lock = asyncio.Lock()  # usage is read-modify-write
        # Settings are read on every turn and written only by admins through this object: all of
        # them are loaded once (only the channels an admin changed are stored), so a turn reads
        # memory, and the cache holds no entry per channel merely seen.
        self._cache: dict[str, ChannelSettings] | None = None
        self._loading = asyncio.Lock()

    async def _loaded(self) -> dict[str, ChannelSettings]:
        async with self._loading:
            if self._cache is None:
                self._cache = await self.all_settings()
            return self._cache

    async def settings(self, channel: str) -> ChannelSettings:
        cache = self._cache if self._cache is not None else await self._loaded()
        return cache.get(channel) or ChannelSettings()

    async def set_settings(self, channel: str, settings: ChannelSettings) -> None:
        cache = await self._loaded()
        await asyncio.to_thread(self._settings.__setitem__, channel, asdict(settings))
        cache[channel] = settings

    async def all_settings(self) -> dict[str, ChannelSettings]:
        rows = await asyncio.to_thread(lambda: list(self._settings.items()))
        return {channel: ChannelSettings(**raw) for channel, raw in sorted(rows)}

    async def add_usage(self, channel: str, user: str, tokens: int, now: float | None = None) -> None:
        day = utc_day(now)
        keys = [f"{channel}|{day}", f"{channel}|{day[:7]}", f"user:{user}|{day}", f"user:{user}|{day[:7]}"]
        async with self._lock:
            await asyncio.to_thread(self._add, keys, tokens)

    def _add(self, keys: list[str], tokens: int) -> None:
        for key in keys:
            tokens_so_far, turns = self._usage.get(key, (0, 0))
            self._usage[key] = (tokens_so_far + tokens, turns + 1)
        self._usage.commit()  # one commit for the four counters

    async def channel_usage(self, channel: str, period: str) -> Usage:
        return Usage(*await asyncio.to_thread(self._usage.get, f"{channel}|{period}", (0, 0)))

    async def user_usage(self, user: str, period: str) -> Usage:
        return Usage(*await asyncio.to_thread(self._usage.get, f"user:{user}|{period}", (0, 0)))

    async def audit(self, entry: AuditEntry) -> None:
        key = f"{entry.at:020.6f}|{entry.where}|{uuid.uuid4().hex[:8]}"  # same instant: both kept
        await asyncio.to_thread(self._audit.__setitem__, key, asdict(entry))

    async def audit_entries(self) -> list[AuditEntry]:
        rows: list[tuple[str, dict[str, Any]]] = await asyncio.to_thread(lambda: list(self._audit.items()))
        return [AuditEntry(**row) for _, row in sorted(rows)]

    async def close(self) -> None:
        for table in (self._settings, self._usage, self._audit):
            await asyncio.to_thread(table.close)
