"""What Slack says of a user (admin, guest), asked once per user and remembered for a while."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

WORKSPACE_ADMIN = "workspace_admin"
GUEST = "guest"


def roles_of(user: dict[str, object]) -> frozenset[str]:
    """``users.info``'s flags as core roles: owners and admins are workspace admins; single- and
    multi-channel guests (restricted, ultra-restricted) are guests."""
    roles: set[str] = set()
    if user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"):
        roles.add(WORKSPACE_ADMIN)
    if user.get("is_restricted") or user.get("is_ultra_restricted"):
        roles.add(GUEST)
    return frozenset(roles)


class UserRoles:
    """Roles per user from ``users.info``, cached for ``ttl`` seconds, at most ``size`` users
    (the least recently fetched go first). A failed lookup is logged, gives no roles and is not
    cached, so the next message asks again."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl: float = 600.0,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, frozenset[str]]] = OrderedDict()

    async def roles(self, user_id: str) -> frozenset[str]:
        if not user_id:
            return frozenset()
        now = self._clock()
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            response = await self._client.users_info(user=user_id)
            user = response.get("user") or {}
            roles = roles_of(user if isinstance(user, dict) else {})
        except Exception as exc:
            log.warning("slack users.info failed user=%s error=%s; no roles", user_id, _error_of(exc))
            return frozenset()
        self._cache.pop(user_id, None)
        self._cache[user_id] = (now + self._ttl, roles)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return roles


def _error_of(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return str(response.get("error"))
        except Exception:
            pass
    return type(exc).__name__
