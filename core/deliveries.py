"""Remembering recent deliveries, so a platform's retry or double delivery gets one answer."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol


class DeliveryLog(Protocol):
    """Answers "is this the first time any of these ids arrived?" and remembers them.

    ``first_sighting`` marks every id as seen in the same call, so concurrent deliveries of one
    message race to exactly one ``True``.
    """

    async def first_sighting(self, ids: Iterable[str]) -> bool: ...


class RecentDeliveries:
    """An in-memory :class:`DeliveryLog` bounded by a TTL and a maximum size."""

    def __init__(
        self, ttl: float = 3600.0, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    async def first_sighting(self, ids: Iterable[str]) -> bool:
        now = self._clock()
        self._forget_before(now - self._ttl)
        ids = list(ids)
        first = not any(i in self._seen for i in ids)
        for i in ids:
            self._seen[i] = now
            self._seen.move_to_end(i)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return first

    def _forget_before(self, cutoff: float) -> None:
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if seen_at >= cutoff:
                return
            del self._seen[oldest]
