"""Sending into one Teams conversation from a background turn, through its conversation reference.

The reference is kept as plain Activity-protocol JSON (what ``Activity.get_conversation_reference``
serialises to: ``activityId``, ``user``, ``bot``, ``conversation``, ``channelId``, ``serviceUrl``),
so nothing outside this package depends on the Agents SDK's types.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from microsoft_agents.activity import Activity, ConversationReference
from microsoft_agents.hosting.core import ChannelServiceAdapter, TurnContext
from microsoft_agents.hosting.core.authorization import ClaimsIdentity

log = logging.getLogger(__name__)

# Teams asks bots to retry these (learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit).
_RETRYABLE = {412, 429, 502, 503, 504}
MAX_ATTEMPTS = 4
MAX_RETRY_WAIT = 30.0


class ConnectorRefused(Exception):
    """The Bot Connector refused an activity (after retries, where retrying made sense)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


class Outbound:
    """One conversation's outbound channel for the length of a turn.

    The first :meth:`send` opens a proactive turn context (``continue_conversation``): one
    connector client, one token, one connection pool for every activity of the turn; :meth:`close`
    releases it. Sends that Teams throttles (429) or fails transiently are retried, honouring
    ``Retry-After``.
    """

    def __init__(
        self,
        adapter: ChannelServiceAdapter,
        identity: ClaimsIdentity,
        reference: dict[str, Any],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.reference = reference
        self._adapter = adapter
        self._identity = identity
        self._sleep = sleep
        self._context: TurnContext | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self._stack: AsyncExitStack | None = None
        self._broken: ConnectorRefused | None = None  # opening failed: every send fails the same way

    async def send(self, activity: Activity) -> str | None:
        """Send ``activity`` into the conversation (as a reply to the user's message); the id
        Teams gave it (a stream id for the first streaming update)."""
        context = await self._open()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = await context.send_activity(activity)
                return response.id if response is not None else None
            except aiohttp.ClientResponseError as exc:
                wait = _retry_after(exc.headers) or _backoff(attempt)
                if exc.status not in _RETRYABLE or attempt == MAX_ATTEMPTS or wait > MAX_RETRY_WAIT:
                    raise _refused(exc) from None  # (retrying before Retry-After would be refused too)
                log.warning("teams send throttled status=%s; retrying in %.1fs", exc.status, wait)
                await self._sleep(wait)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == MAX_ATTEMPTS:
                    raise ConnectorRefused(0, "Unreachable", str(exc)) from None
                await self._sleep(_backoff(attempt))
        raise AssertionError("unreachable")

    async def _open(self) -> TurnContext:
        async with self._opening:
            if self._broken is not None:
                raise self._broken
            if self._context is None:
                stack = AsyncExitStack()
                try:
                    self._context = await stack.enter_async_context(self._proactive_context())
                except Exception as exc:  # e.g. no token for the bot: nothing can be sent
                    log.error("teams: cannot open the conversation: %s", type(exc).__name__, exc_info=exc)
                    self._broken = ConnectorRefused(0, "Unavailable", type(exc).__name__)
                    raise self._broken from None
                self._stack = stack
            return self._context

    def _proactive_context(self) -> _ProactiveContext:
        reference = ConversationReference.model_validate(self.reference)
        continuation = reference.get_continuation_activity()
        # Replies thread to the user's message rather than to a made-up continuation id.
        continuation.id = reference.activity_id or continuation.id
        return _ProactiveContext(self._adapter, self._identity, continuation)

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._context = None


class _ProactiveContext:
    """Holds ``continue_conversation``'s callback open so that its turn context can be used by
    the caller until ``__aexit__``."""

    def __init__(self, adapter: ChannelServiceAdapter, identity: ClaimsIdentity, continuation: Activity):
        self._adapter = adapter
        self._identity = identity
        self._continuation = continuation
        self._release = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> TurnContext:
        entered: asyncio.Future[TurnContext] = asyncio.get_running_loop().create_future()

        async def hold(context: TurnContext) -> None:
            entered.set_result(context)
            await self._release.wait()

        self._task = asyncio.create_task(
            self._adapter.continue_conversation_with_claims(self._identity, self._continuation, hold)
        )
        try:
            await asyncio.wait([entered, self._task], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while opening: continue_conversation must end too
            self._release.set()
            self._task.cancel()
            raise
        if not entered.done():
            self._task.result()  # raises what went wrong (e.g. no token could be had)
            raise RuntimeError("continue_conversation ended before its turn started")
        return entered.result()

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        if self._task is not None:
            await self._task


def _refused(exc: aiohttp.ClientResponseError) -> ConnectorRefused:
    code, message = "", exc.message
    try:
        error = json.loads(exc.message).get("error") or {}
        code, message = error.get("code", ""), error.get("message", message)
    except (ValueError, AttributeError):
        pass
    return ConnectorRefused(exc.status, code, message)


def _retry_after(headers: Any) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After"))) if headers else None
    except (TypeError, ValueError):
        return None


def _backoff(attempt: int) -> float:
    return float(0.5 * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
