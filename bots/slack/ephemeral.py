"""Answers only the asking user sees: what the ``/assistant`` slash command says back."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.text import neutralise
from core.events import Done, Event, Failure, Notice, TextDelta

log = logging.getLogger(__name__)


@dataclass
class EphemeralReply:
    """A :class:`core.messages.Reply` that collects the turn's text (notices, text, failures) and
    posts it once, on :class:`Done`, with chat.postEphemeral to ``user`` in ``channel``.

    Slack refuses ephemeral messages where the bot is not a member (``channel_not_found``,
    ``not_in_channel``); then the text goes to the command's ``response_url`` instead, which
    works everywhere for 30 minutes."""

    client: AsyncWebClient
    channel: str
    user: str
    response_url: str | None = None
    _parts: list[str] = field(default_factory=list)
    _posted: bool = False

    async def emit(self, event: Event) -> None:
        if isinstance(event, Notice | TextDelta):
            if isinstance(event, Notice) or not self._parts:
                self._parts.append(event.text)
            else:
                self._parts[-1] += event.text
        elif isinstance(event, Failure):
            self._parts.append(f"⚠️ {event.user_message}")
        elif isinstance(event, Done) and not self._posted:
            self._posted = True
            await self._post(neutralise("\n\n".join(p for p in self._parts if p.strip())))

    async def _post(self, text: str) -> None:
        if not text:
            return
        try:
            await self.client.chat_postEphemeral(channel=self.channel, user=self.user, markdown_text=text)
            return
        except SlackApiError as exc:
            log.warning(
                "slack postEphemeral failed channel=%s error=%s", self.channel, exc.response.get("error")
            )
        except Exception:
            log.exception("slack postEphemeral failed channel=%s", self.channel)
        if not self.response_url or self.client.session is None:
            return
        try:
            payload = {"response_type": "ephemeral", "text": text}
            async with self.client.session.post(self.response_url, json=payload) as response:
                if response.status >= 400:
                    log.warning("slack response_url refused status=%s", response.status)
        except Exception:
            log.exception("slack response_url post failed")
