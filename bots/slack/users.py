"""What Slack says of a user (admin, guest), asked once per user and remembered for a while."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
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
    (the least recently fetched go first). A failed lookup gives no roles (the user is answered as
    a member: one Slack outage must not silence the bot) and is remembered for ``failure_ttl``
    seconds, so an outage or a missing ``users:read`` scope costs one call per user per minute,
    not one per message; a missing scope is logged once as an error."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl: float = 600.0,
        failure_ttl: float = 60.0,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._failure_ttl = failure_ttl
        self._told_scope = False
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
        ttl = self._ttl
        try:
            response = await self._client.users_info(user=user_id)
            user = response.get("user") or {}
            roles = roles_of(user if isinstance(user, dict) else {})
        except Exception as exc:
            error, ttl, roles = _error_of(exc), self._failure_ttl, frozenset()
            if error == "missing_scope" and not self._told_scope:
                self._told_scope = True
                log.error(
                    "slack users.info needs the users:read scope: reinstall the app from manifests/slack/"
                )
            else:
                log.warning("slack users.info failed user=%s error=%s; no roles", user_id, error)
        self._cache.pop(user_id, None)
        self._cache[user_id] = (now + ttl, roles)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return roles


def _error_of(exc: Exception) -> str:
    return str(exc.response.get("error")) if isinstance(exc, SlackApiError) else type(exc).__name__
