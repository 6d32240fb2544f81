"""Per-channel administration: which assistant answers where, who may use the bot there, what it
may spend, and the admin commands that change it (each change audited)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from core import wording
from core.channels import AuditEntry, ChannelBook, ChannelSettings, channel_of, utc_day
from core.commands import ADMIN_COMMANDS, Command, CommandRequest
from core.messages import InboundMessage
from core.profiles import AssistantProfile, ProfileSet

log = logging.getLogger(__name__)


class ChannelAdmin:
    """Answers admin and information commands, and decides where the bot answers and whether a
    budget is spent. Settings an admin has made win over the profiles file's defaults."""

    def __init__(
        self, profiles: ProfileSet, book: ChannelBook, clock: Callable[[], float] = time.time
    ) -> None:
        self.profiles = profiles
        self.book = book
        self._clock = clock

    async def profile_for(self, message: InboundMessage) -> AssistantProfile:
        chosen = (await self.book.settings(channel_of(message.key))).profile
        return self.profiles.get(chosen or "") or self.profiles.default

    def is_admin(self, message: InboundMessage) -> bool:
        return self.profiles.policy.is_admin(message.key.platform, message.user_id, message.user_roles)

    async def refusal(self, message: InboundMessage) -> str | None:
        """Why the bot will not answer this message here, or None."""
        policy = self.profiles.policy
        settings = await self.book.settings(channel_of(message.key))
        if settings.answers is False:
            return wording.DENIED_HERE
        if message.place == "dm" and not policy.dms and settings.answers is not True:
            return wording.DMS_OFF
        if policy.channels and message.place != "dm" and settings.answers is not True:
            if message.key.channel not in policy.channels:
                return wording.NOT_ALLOWED_HERE
        if policy.users and message.user_id not in policy.users and not self.is_admin(message):
            return wording.NOT_FOR_YOU
        if "guest" in message.user_roles and not policy.guests:
            return wording.NO_GUESTS
        return None

    async def budget_refusal(self, message: InboundMessage) -> str | None:
        """Why no backend call may be made for this message today, or None."""
        day = utc_day(self._clock())
        limit = await self._channel_limit(channel_of(message.key))
        if limit and (await self.book.channel_usage(channel_of(message.key), day)).tokens >= limit:
            return wording.channel_budget_spent(limit)
        user_limit = self.profiles.policy.user_daily_tokens
        if user_limit and (await self.book.user_usage(self._user(message), day)).tokens >= user_limit:
            return wording.user_budget_spent(user_limit)
        return None

    async def record(self, message: InboundMessage, tokens: int) -> None:
        await self.book.add_usage(channel_of(message.key), self._user(message), tokens, self._clock())

    async def _channel_limit(self, channel: str) -> int:
        chosen = (await self.book.settings(channel)).daily_tokens
        return self.profiles.policy.channel_daily_tokens if chosen is None else chosen

    @staticmethod
    def _user(message: InboundMessage) -> str:
        return f"{message.key.platform}:{message.key.workspace}:{message.user_id}"

    async def answer(self, message: InboundMessage, request: CommandRequest) -> str:
        """The reply to show, list, use, limit, allow, deny or usage."""
        if request.command in ADMIN_COMMANDS and not self.is_admin(message):
            log.info("admin command refused command=%s user=%s", request.command.value, message.user_id)
            return wording.NOT_ADMIN
        channel = channel_of(message.key)
        if request.command is Command.SHOW:
            profile = await self.profile_for(message)
            used = (await self.book.channel_usage(channel, utc_day(self._clock()))).tokens
            model = profile.model or (profile.assistants.assistant_id if profile.assistants else "")
            return wording.show(
                profile.name, profile.description, model, await self._channel_limit(channel), used
            )
        if request.command is Command.LIST:
            current = (await self.profile_for(message)).name
            return wording.profile_list(
                [(p.name, p.description, p.name == current) for p in self.profiles.profiles.values()]
            )
        if request.command is Command.USAGE:
            day = utc_day(self._clock())
            today, month = (
                await self.book.channel_usage(channel, day),
                await self.book.channel_usage(channel, day[:7]),
            )
            return wording.usage(today.tokens, today.turns, month.tokens, month.turns)
        settings = await self.book.settings(channel)
        if request.command is Command.USE:
            if self.profiles.get(request.argument) is None:
                return wording.unknown_profile(request.argument, list(self.profiles.profiles))
            await self._change(message, "use", settings, replace(settings, profile=request.argument))
            return wording.switched(request.argument)
        if request.command is Command.LIMIT:
            tokens = 0 if request.argument == "off" else int(request.argument)
            await self._change(message, "limit", settings, replace(settings, daily_tokens=tokens))
            return wording.LIMIT_OFF if tokens == 0 else wording.limit_set(tokens)
        if request.command in (Command.ALLOW, Command.DENY):
            answers = request.command is Command.ALLOW
            await self._change(message, request.command.value, settings, replace(settings, answers=answers))
            return wording.ALLOWED_HERE if answers else wording.DENIED_NOW
        raise ValueError(f"not a channel command: {request.command}")  # help, reset, stop: the bridge's

    async def _change(
        self, message: InboundMessage, what: str, before: ChannelSettings, after: ChannelSettings
    ) -> None:
        channel = channel_of(message.key)
        await self.book.set_settings(channel, after)
        entry = AuditEntry(self._clock(), message.user_id, channel, what, _describe(before), _describe(after))
        await self.book.audit(entry)
        log.info("channel changed where=%s what=%s by=%s", channel, what, message.user_id)


def _describe(settings: ChannelSettings) -> str:
    answers = {None: "default", True: "allowed", False: "denied"}[settings.answers]
    limit = "default" if settings.daily_tokens is None else (settings.daily_tokens or "off")
    return f"profile={settings.profile or 'default'} limit={limit} answers={answers}"
