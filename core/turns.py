"""Running one turn at a time per conversation."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from core.conversation import ConversationKey

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
Abandon = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class Admission(Enum):
    """What happened to a submitted job."""

    STARTED = "started"  # the conversation was idle; the job runs now
    QUEUED = "queued"  # it runs after the jobs ahead of it in this conversation
    QUEUE_FULL = "queue_full"  # too many jobs already wait in this conversation
    CLOSED = "closed"  # the runner is shutting down


@dataclass
class _Lane:
    pending: deque[tuple[Job, Abandon]] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None


class TurnRunner:
    """Runs jobs in order per conversation, conversations in parallel.

    A conversation's lane (its queue and worker task) exists only while it has work, so memory
    follows the number of busy threads, not the number ever seen. ``max_concurrent`` bounds how
    many turns run at once across all conversations; the rest wait their turn in order.
    """

    def __init__(self, max_pending: int = 20, max_concurrent: int = 64) -> None:
        self._max_pending = max_pending
        self._slots = asyncio.Semaphore(max_concurrent)
        self._lanes: dict[ConversationKey, _Lane] = {}
        self._accepting = True

    @property
    def busy_conversations(self) -> int:
        return len(self._lanes)

    def is_busy(self, key: ConversationKey) -> bool:
        return key in self._lanes

    def submit(self, key: ConversationKey, job: Job, on_abandon: Abandon = _nothing) -> Admission:
        """Queue ``job`` for ``key``. ``on_abandon`` runs instead of a job that never started
        because shutdown cancelled its conversation (so its user can be told)."""
        if not self._accepting:
            return Admission.CLOSED
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
            lane.pending.append((job, on_abandon))
            lane.worker = asyncio.create_task(self._work(key, lane), name=f"turns:{key}")
            return Admission.STARTED
        if len(lane.pending) >= self._max_pending:
            return Admission.QUEUE_FULL
        lane.pending.append((job, on_abandon))
        return Admission.QUEUED

    async def _work(self, key: ConversationKey, lane: _Lane) -> None:
        try:
            while lane.pending:
                job, _ = lane.pending[0]
                async with self._slots:
                    try:
                        await job()
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("turn job failed key=%s", key)
                lane.pending.popleft()
        except asyncio.CancelledError:
            # The running job saw the cancellation itself; tell the ones that never started.
            for _, abandon in list(lane.pending)[1:]:
                try:
                    await abandon()
                except Exception:
                    log.exception("abandon hook failed key=%s", key)
            raise
        finally:
            # No await between the emptiness check above and this removal: a submit cannot slip in.
            self._lanes.pop(key, None)

    def cancel_running(self, key: ConversationKey) -> bool:
        """Cancel the job running for ``key`` (queued ones still run). False if none runs."""
        lane = self._lanes.get(key)
        if lane is None or lane.worker is None or lane.worker.done():
            return False
        lane.worker.cancel()
        return True

    async def drain(self, grace: float) -> int:
        """Stop accepting jobs, let running and queued ones finish for up to ``grace`` seconds,
        then cancel what is left. Returns how many conversations were cancelled."""
        self._accepting = False
        workers = [lane.worker for lane in self._lanes.values() if lane.worker]
        if not workers:
            return 0
        _, still_running = await asyncio.wait(workers, timeout=grace)
        for task in still_running:
            task.cancel()
        if still_running:
            await asyncio.wait(still_running)
        return len(still_running)
