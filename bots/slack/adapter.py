"""Slack events in, core messages out: the Slack adapter on slack-bolt's AsyncApp."""

from __future__ import annotations

import logging
import re
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.files import SlackFile, files_of
from bots.slack.reply import SlackReply, SlackThread
from bots.slack.text import neutralise
from core import wording
from core.bridge import Bridge
from core.conversation import ConversationKey
from core.messages import InboundMessage
from core.settings import Settings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SLACK_API_URL = "https://slack.com/api/"

# Message subtypes that are a person saying something new; edits, deletions, joins and bot
# posts are not.
_NEW_MESSAGE_SUBTYPES = {None, "file_share", "thread_broadcast"}


def build_web_client(settings: Settings) -> AsyncWebClient:
    """The one Slack Web API client. 429s are retried honouring Retry-After, here and only here."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    client = AsyncWebClient(token=token, base_url=settings.slack_api_url or SLACK_API_URL)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=3))
    return client


class SlackAdapter:
    """Translates Slack events into :class:`InboundMessage` and renders answers with
    :class:`SlackReply`. Answers app mentions in channels, DMs, and follow-ups without a mention in
    threads it already answers; ignores bots (itself included), edits and deletions."""

    def __init__(self, bridge: Bridge, settings: Settings, client: AsyncWebClient | None = None) -> None:
        self._bridge = bridge
        self._settings = settings
        self.client = client or build_web_client(settings)
        signing_secret = (
            settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
        )
        self.app = AsyncApp(client=self.client, signing_secret=signing_secret, logger=log)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.event("agent_session_stopped")(self._on_stop_button)
        self._socket_handler: Any = None
        self._own_session = False

    async def _on_mention(
        self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        await self._answer(event, body, context)

    async def _on_message(
        self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if event.get("subtype") not in _NEW_MESSAGE_SUBTYPES or event.get("bot_id"):
            return
        if event.get("channel_type") == "im":
            await self._answer(event, body, context)
            return
        # In channels the bot answers a mention (app_mention) and, without one, only follow-ups in
        # threads it is already part of.
        thread_ts = event.get("thread_ts")
        if thread_ts and await self._bridge.answers_thread(self._key(event, context)):
            await self._answer(event, body, context)

    async def _on_stop_button(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        """The stop button of Slack's agent UI: cancel the running turn in that thread."""
        if event.get("channel") and event.get("thread_ts"):
            self._bridge.stop(self._key({**event, "ts": event["thread_ts"]}, context))

    def _key(self, event: dict[str, Any], context: AsyncBoltContext) -> ConversationKey:
        workspace = context.team_id or context.enterprise_id or event.get("team") or ""
        return ConversationKey("slack", workspace, event["channel"], event.get("thread_ts") or event["ts"])

    async def _answer(self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext) -> None:
        key = self._key(event, context)
        thread = SlackThread(
            channel=event["channel"],
            thread_ts=key.thread,
            team_id=event.get("team") or context.team_id or context.enterprise_id,
            user_id=event.get("user"),
        )
        text = _strip_mention(event.get("text") or "", context.bot_user_id)
        files = self._files(event)
        if not text and not files:
            await self.client.chat_postMessage(
                channel=thread.channel, thread_ts=thread.thread_ts, markdown_text=neutralise(wording.HELLO)
            )
            return
        reply = SlackReply(self.client, thread)
        message = InboundMessage(
            key=key,
            user_id=event.get("user") or "",
            text=text,
            delivery_ids=(
                f"slack:event:{body.get('event_id')}",
                f"slack:msg:{event['channel']}:{event['ts']}",
            ),
            files=files,
        )
        await self._bridge.accept(message, reply)

    def _files(self, event: dict[str, Any]) -> tuple[SlackFile, ...]:
        if not event.get("files"):
            return ()
        assert self.client.session is not None, "start() opens the session"
        return files_of(event, self.client.session, self.client.token, self.client.base_url)

    # Lifecycle and transports

    async def start(self) -> None:
        """Share one HTTP connection pool for every Web API call (slack_sdk opens a new session
        per call otherwise). Needs the running loop, so it happens here, not in __init__."""
        if self.client.session is None:
            self.client.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.client.timeout)
            )
            self._own_session = True
        if self._settings.slack_socket_mode:
            await self._start_socket_mode()

    async def stop(self) -> None:
        """Stop taking events (Socket Mode), then release the connection pool."""
        if self._socket_handler is not None:
            await self._socket_handler.close_async()
            self._socket_handler = None

    async def close(self) -> None:
        if self._own_session and self.client.session is not None:
            await self.client.session.close()
            self.client.session = None

    async def handle_http(self, request: web.Request) -> web.Response:
        """POST /slack/events: Bolt verifies the signature (401 when wrong) and acks at once."""
        return await to_aiohttp_response(await self.app.async_dispatch(await to_bolt_request(request)))

    async def _start_socket_mode(self) -> None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        assert self._settings.slack_app_token is not None
        self._socket_handler = AsyncSocketModeHandler(
            self.app, self._settings.slack_app_token.get_secret_value()
        )
        await self._socket_handler.connect_async()
        log.info("slack socket mode connected")


def _strip_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text)
    return text.strip()
