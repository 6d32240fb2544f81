"""Slack events in, core messages out: the Slack adapter on slack-bolt's AsyncApp."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.ephemeral import EphemeralReply
from bots.slack.files import SlackFile, files_of
from bots.slack.home import home_view
from bots.slack.reply import SlackReply, SlackThread
from bots.slack.users import UserRoles
from core.bridge import Bridge
from core.commands import Command, parse_command
from core.conversation import ConversationKey
from core.events import Done, Notice
from core.messages import InboundMessage
from core.settings import Settings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SLASH_COMMAND = "/assistant"
SLACK_API_URL = "https://slack.com/api/"
# What the bot's token must be granted (manifests/slack/): mentions, DMs and thread follow-ups,
# streaming and posting, the slash command, files both ways, and users.info for admins and guests.
BOT_SCOPES = frozenset(
    {
        "app_mentions:read",
        "assistant:write",
        "chat:write",
        "commands",
        "channels:history",
        "groups:history",
        "mpim:history",
        "im:history",
        "im:read",
        "files:read",
        "files:write",
        "users:read",
    }
)

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
        self.app.event("app_home_opened")(self._on_home_opened)
        self.app.command(SLASH_COMMAND)(self._on_slash_command)
        self.roles = UserRoles(self.client)
        # Threads with a message on its way to the core (waiting for users.info, say): a follow-up
        # there is for the bot, and goes to the core after the messages before it, in order.
        self._accepting: dict[ConversationKey, tuple[asyncio.Lock, list[int]]] = {}
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
        key = self._key(event, context)
        if thread_ts and (key in self._accepting or await self._bridge.answers_thread(key)):
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
        reply = SlackReply(self.client, thread)
        user = event.get("user") or ""
        async with self._in_order(key):
            message = InboundMessage(
                key=key,
                user_id=user,
                text=_strip_mention(event.get("text") or "", context.bot_user_id),
                delivery_ids=(
                    f"slack:event:{body.get('event_id')}",
                    f"slack:msg:{event['channel']}:{event['ts']}",
                ),
                files=self._files(event),
                place=_place(event.get("channel_type"), event["channel"]),
                user_roles=await self.roles.roles(user),
            )
            await self._bridge.accept(message, reply)

    @contextlib.asynccontextmanager
    async def _in_order(self, key: ConversationKey) -> AsyncIterator[None]:
        """Messages of one thread reach the core one after another, in the order they came."""
        lock, count = self._accepting.setdefault(key, (asyncio.Lock(), [0]))
        count[0] += 1
        try:
            async with lock:
                yield
        finally:
            count[0] -= 1
            if count[0] == 0:
                del self._accepting[key]

    async def _on_slash_command(self, ack: Any, command: dict[str, Any], context: AsyncBoltContext) -> None:
        """``/assistant <words>``: always a command (words that do not fit get the help text),
        about the channel it was typed in; the answer is ephemeral, for the user alone.

        Slack does not say which thread a slash command was typed in, so ``reset`` and ``stop``
        (which act on a thread) are not run from here: the user is told to say them in the thread.
        """
        await ack()
        channel, user = command.get("channel_id") or "", command.get("user_id") or ""
        workspace = context.team_id or context.enterprise_id or command.get("team_id") or ""
        reply = EphemeralReply(self.client, channel, user, command.get("response_url"))
        text = command.get("text") or ""
        request = parse_command(text, explicit=True)
        if request is not None and request.command in (Command.RESET, Command.STOP):
            await reply.emit(Notice(_in_thread(request.command.value)))
            await reply.emit(Done())
            return
        message = InboundMessage(
            key=ConversationKey("slack", workspace, channel, ""),
            user_id=user,
            text=text,
            delivery_ids=(f"slack:cmd:{command.get('trigger_id') or uuid.uuid4().hex}",),
            place=_place(None, channel, command.get("channel_name")),
            user_roles=await self.roles.roles(user),
            explicit_command=True,
        )
        await self._bridge.accept(message, reply)

    async def _on_home_opened(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        """The App Home tab was opened: publish this user's view of it."""
        if event.get("tab") != "home" or not event.get("user"):
            return
        user = event["user"]
        workspace = context.team_id or context.enterprise_id or ""
        try:
            view = await home_view(
                self._bridge.admin,
                team=workspace,
                user=user,
                dm_channel=event.get("channel"),
                roles=await self.roles.roles(user),
            )
            await self.client.views_publish(user_id=user, view=view)
        except Exception:
            log.exception("slack home tab not published user=%s", user)

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


def _in_thread(command: str) -> str:
    return (
        f"`{command}` works on one thread, and Slack does not tell me which thread a slash command "
        f"comes from. Say `{command}` in the thread itself (after mentioning me in a channel). "
        "Nothing was changed."
    )


def _place(channel_type: str | None, channel: str, channel_name: str | None = None) -> str:
    """``dm``, ``group`` or ``channel``, from an event's ``channel_type`` or, for slash commands
    (which have none), the channel's id and name."""
    if channel_type == "im" or (
        channel_type is None and (channel[:1] == "D" or channel_name == "directmessage")
    ):
        return "dm"
    if channel_type == "mpim" or (channel_type is None and (channel_name or "").startswith("mpdm-")):
        return "group"
    return "channel"


def _strip_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text)
    return text.strip()
