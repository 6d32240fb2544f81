"""The Teams adapter: POST /api/messages on the Microsoft 365 Agents SDK, answered in the background.

Teams re-sends a request it has no answer to within about 15 seconds, so every activity is
acknowledged at once (202) and its turn runs in the background, answering through the saved
conversation reference (:class:`bots.teams.outbound.Outbound`). A re-sent activity (same id) is a
duplicate for the core and gets no second answer.

Files in a message become :class:`core.files.FileSource` objects (:mod:`bots.teams.files`); files
the assistant makes are offered in personal chats with a consent card, and the user's answer comes
back as a ``fileConsent/invoke``, answered 200 at once and handled in the background
(:mod:`bots.teams.uploads`). One HTTP session, owned here, does the downloads and uploads.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning
from microsoft_agents.activity import Activity, ActivityTypes, InvokeResponse
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import CloudAdapter, jwt_authorization_decorator
from microsoft_agents.hosting.core import AgentAuthConfiguration, OutboundHostValidator, TurnContext
from microsoft_agents.hosting.core.authorization import AuthTypes, ClaimsIdentity
from pydantic import ValidationError

from bots.teams.files import HostPolicy, files_of
from bots.teams.outbound import ConnectorRefused, Outbound
from bots.teams.reply import TeamsReply
from bots.teams.text import neutralise
from bots.teams.uploads import (
    FILE_CONSENT_INVOKE,
    PendingUploads,
    UploadFailed,
    file_info_card,
    put_file,
)
from core import wording
from core.bridge import Bridge
from core.conversation import ConversationKey
from core.events import Done, Notice
from core.messages import InboundMessage
from core.settings import Settings

log = logging.getLogger(__name__)

MESSAGES_PATH = "/api/messages"
_MESSAGE_ID = re.compile(r";messageid=(\d+)$")
# Where a conversation is, in the core's words (access rules and DMs on/off depend on it).
_PLACES = {"personal": "dm", "groupChat": "group", "channel": "channel"}
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=15, sock_read=60)
# Guest lookups: how long a user's role is remembered, and how long one lookup may take.
ROLE_TTL = 600.0
_ROLE_TIMEOUT = aiohttp.ClientTimeout(total=5)
_ROLES_KEPT = 10_000


def auth_configuration(settings: Settings) -> AgentAuthConfiguration:
    """The Agents SDK's connection settings from the bridge's (Bot Framework style) settings."""
    if settings.teams_app_id is None:
        return AgentAuthConfiguration(anonymous_allowed=True)
    password = settings.teams_app_password.get_secret_value() if settings.teams_app_password else None
    return AgentAuthConfiguration(
        auth_type=AuthTypes.client_secret
        if settings.teams_app_type == "SingleTenant"
        else AuthTypes.user_managed_identity,
        client_id=settings.teams_app_id,
        tenant_id=settings.teams_tenant_id,
        client_secret=password,
        anonymous_allowed=False,
        # Tokens must come from Bot Framework or the bot's own tenant, not only be for this app id.
        validate_issuer=True,
    )


def connection_manager(auth: AgentAuthConfiguration) -> MsalConnectionManager:
    return MsalConnectionManager(connections_configurations={"SERVICE_CONNECTION": auth})


def build_cloud_adapter(
    auth: AgentAuthConfiguration, connections: MsalConnectionManager | None = None
) -> CloudAdapter:
    """The SDK's adapter, sending with the bot's token (none when anonymous)."""
    adapter = CloudAdapter(
        connection_manager=connections or connection_manager(auth),
        # With an app id the bot holds real tokens: they go to Microsoft's own hosts only.
        host_validator=OutboundHostValidator(enabled=not auth.ANONYMOUS_ALLOWED),
    )
    adapter.on_turn_error = _on_turn_error
    return adapter


async def _on_turn_error(context: TurnContext, error: Exception) -> None:
    """Instead of the SDK's default, which posts the exception's text to the user."""
    log.error("teams turn failed: %s", type(error).__name__, exc_info=error)


class TeamsAdapter:
    """Translates Teams activities into :class:`core.messages.InboundMessage` and renders the
    answers with :class:`bots.teams.reply.TeamsReply`."""

    def __init__(self, bridge: Bridge, settings: Settings) -> None:
        self._bridge = bridge
        self._app_id = settings.teams_app_id
        self.auth = auth_configuration(settings)
        self._connections = connection_manager(self.auth)
        self.adapter = build_cloud_adapter(self.auth, self._connections)
        self.hosts = HostPolicy(strict=not self.anonymous)
        self.uploads = PendingUploads()
        # The bot's Bot Framework token for a service URL (pasted images need it); replaceable in tests.
        self.bot_token: Callable[[str], Awaitable[str | None]] = self._bot_token
        self.http: aiohttp.ClientSession | None = None
        # (tenant, user) -> (until, roles), least recently fetched first; and lookups in flight, so
        # that one user's quick messages share one lookup and reach the core in the order they came.
        self._roles: OrderedDict[tuple[str, str], tuple[float, frozenset[str]]] = OrderedDict()
        self._role_lookups: dict[tuple[str, str], asyncio.Future[frozenset[str]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def anonymous(self) -> bool:
        return self._app_id is None

    def install(self, app: web.Application) -> None:
        """Serve POST /api/messages on ``app``; the SDK checks each request's token first."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotAppKeyWarning)  # the SDK looks it up by this string
            app["agent_configuration"] = self.auth
        app.router.add_post(MESSAGES_PATH, jwt_authorization_decorator(self._handle))  # type: ignore[no-untyped-call]

    def announce(self) -> None:
        if self.anonymous:
            log.warning(
                "TEAMS IS OPEN TO ANYONE: no MicrosoftAppId is set and TEAMS_ALLOW_ANONYMOUS is on, so "
                "%s accepts requests WITHOUT A TOKEN. Use this for local testing only.",
                MESSAGES_PATH,
            )
        else:
            log.info("teams: %s checks tokens for app %s", MESSAGES_PATH, self._app_id)

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            response = await self.adapter.process(request, self)
        except ValidationError as exc:
            log.warning("teams: malformed activity (%d errors)", exc.error_count())
            return web.json_response({"error": "malformed activity"}, status=400)
        return response or web.Response(status=202)

    async def on_turn(self, context: TurnContext) -> None:
        """Called by the SDK for each inbound activity, within the HTTP request: hands the work to
        a background task and returns, so Teams gets its 202 at once."""
        activity = context.activity
        if activity.type == ActivityTypes.message:
            self._spawn(self._on_message(activity))
        elif activity.type == ActivityTypes.invoke and activity.name == FILE_CONSENT_INVOKE:
            # Teams wants the invoke answered in the request itself; the upload follows.
            await context.send_activity(
                Activity(type=ActivityTypes.invoke_response, value=InvokeResponse(status=200))
            )
            self._spawn(self._on_file_consent(activity))
        elif activity.type == ActivityTypes.conversation_update:
            self._spawn(self._on_conversation_update(activity))
        else:
            log.debug("teams: ignoring %s activity", activity.type)

    async def _on_message(self, activity: Activity) -> None:
        if (
            activity.from_property
            and activity.recipient
            and activity.from_property.id == activity.recipient.id
        ):
            return
        conversation_type = _conversation_type(activity)
        key = _key(activity)
        text = _text(activity)
        reply = self._reply(activity, conversation_type, key)
        service_url = activity.service_url or ""
        files = files_of(
            activity.attachments or [],
            conversation_type,
            self._http(),
            self.hosts,
            lambda: self.bot_token(service_url),
        )
        user = activity.from_property
        message = InboundMessage(
            key=key,
            user_id=(user.aad_object_id or user.id or "") if user else "",
            text=text,
            delivery_ids=(f"teams:{activity.conversation.id}:{activity.id}",),
            files=files,
            place=_PLACES.get(conversation_type, "group"),
            user_roles=await self._user_roles(activity),
        )
        await self._bridge.accept(message, reply)

    async def _user_roles(self, activity: Activity) -> frozenset[str]:
        """``{"guest"}`` for a Teams guest or anonymous user. Teams does not say so in the message,
        so the Bot Connector is asked (``GET v3/conversations/{id}/members/{user}``, ``userRole``),
        once per user per :data:`ROLE_TTL`, and only when the profiles file refuses guests. If the
        lookup fails the user is taken for a member (logged) and asked about again next time."""
        user = activity.from_property
        if self._bridge.profiles.policy.guests or user is None or not user.id:
            return frozenset()
        who = (_key(activity).workspace, user.id)
        cached = self._roles.get(who)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        lookup = self._role_lookups.get(who)
        if lookup is None:
            lookup = self._role_lookups[who] = asyncio.ensure_future(self._look_up_roles(activity, who))
            lookup.add_done_callback(lambda _: self._role_lookups.pop(who, None))
        return await asyncio.shield(lookup)

    async def _look_up_roles(self, activity: Activity, who: tuple[str, str]) -> frozenset[str]:
        role = await self._user_role(activity, who[1])
        if role is None:
            return frozenset()  # not remembered: asked again next time
        roles = frozenset({"guest"}) if role.lower() in ("guest", "anonymous") else frozenset()
        self._roles.pop(who, None)
        self._roles[who] = (time.monotonic() + ROLE_TTL, roles)
        while len(self._roles) > _ROLES_KEPT:
            self._roles.popitem(last=False)
        return roles

    async def _user_role(self, activity: Activity, user_id: str) -> str | None:
        """The member's ``userRole`` from the Bot Connector; in a channel, as a member of its team."""
        channel_data = _dict(activity.channel_data)
        team = _dict(channel_data.get("team")).get("id")
        conversation = str(team or _MESSAGE_ID.sub("", activity.conversation.id))
        service_url = (activity.service_url or "").rstrip("/")
        url = (
            f"{service_url}/v3/conversations/{quote(conversation, safe='')}/members/{quote(user_id, safe='')}"
        )
        try:
            token = None if self.anonymous else await self.bot_token(activity.service_url or "")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with self._http().get(url, headers=headers, timeout=_ROLE_TIMEOUT) as response:
                if response.status != 200:
                    log.warning(
                        "teams: member lookup refused status=%s; taking the user for a member",
                        response.status,
                    )
                    return None
                member = _dict(await response.json(content_type=None))
        except Exception as exc:  # unreachable, bad JSON, no token: answer rather than fail
            log.warning("teams: member lookup failed (%s); taking the user for a member", type(exc).__name__)
            return None
        return str(member.get("userRole") or "user")

    async def _on_file_consent(self, activity: Activity) -> None:
        """The user answered a consent card: upload the file and show it, or let it go."""
        value = _dict(activity.value)
        context = _dict(value.get("context"))
        info = _dict(value.get("uploadInfo"))
        file = self.uploads.take(str(context.get("upload", "")), activity.conversation.id)
        offered = file.filename if file else context.get("name") or info.get("name") or "That file"
        name = neutralise(str(offered))
        outbound = self._outbound(activity)
        try:
            if value.get("action") != "accept":
                await _say(outbound, wording.file_upload_declined(name))
            elif file is None:
                await _say(outbound, wording.file_upload_expired(name))
            else:
                await self._upload(outbound, file.data, name, info)
        finally:
            await outbound.close()

    async def _upload(self, outbound: Outbound, data: bytes, name: str, info: dict[str, Any]) -> None:
        try:
            await put_file(self._http(), str(info.get("uploadUrl") or ""), data, self.hosts.may_fetch)
        except UploadFailed as exc:
            log.warning("teams: upload of a file failed: %s", exc)
            await _say(outbound, f"⚠️ {wording.upload_failed(name)}")
            return
        try:
            await outbound.send(Activity(type="message", attachments=[file_info_card(info, name)]))
        except ConnectorRefused as exc:
            log.error("teams: file info card refused status=%s code=%s", exc.status, exc.code)

    async def _on_conversation_update(self, activity: Activity) -> None:
        """Say hello once when the bot is added to a personal chat."""
        bot = activity.recipient.id if activity.recipient else None
        added = [member.id for member in activity.members_added or []]
        if bot in added and _conversation_type(activity) == "personal":
            reply = self._reply(activity, "personal", _key(activity))
            await reply.emit(Notice(wording.HELLO))
            await reply.emit(Done())

    def _reply(self, activity: Activity, conversation_type: str, key: ConversationKey) -> TeamsReply:
        personal = conversation_type == "personal"
        conversation_id = activity.conversation.id
        return TeamsReply(
            self._outbound(activity),
            streaming=personal,
            typing=conversation_type in ("personal", "groupChat"),
            on_user_stop=lambda: self._bridge.stop(key),
            offer_file=(lambda file: self.uploads.add(conversation_id, file)) if personal else None,
        )

    def _outbound(self, activity: Activity) -> Outbound:
        reference = activity.get_conversation_reference().model_dump(
            by_alias=True, exclude_none=True, mode="json"
        )
        return Outbound(self.adapter, self._identity(), reference)

    def _identity(self) -> ClaimsIdentity:
        return self.adapter.create_claims_identity(self._app_id) if self._app_id else ClaimsIdentity()

    async def _bot_token(self, service_url: str) -> str | None:
        """The token the SDK's connector client sends to ``service_url`` (none when anonymous)."""
        if self.anonymous:
            return None
        identity = self._identity()
        provider = self._connections.get_token_provider(identity, service_url)
        return await provider.get_access_token(identity.get_token_audience(), identity.get_token_scope())

    def _http(self) -> aiohttp.ClientSession:
        """The session for file downloads and uploads; with an app id, the SDK's, which refuses
        hosts off Microsoft's list and private addresses."""
        if self.http is None:
            self.http = (
                aiohttp.ClientSession(timeout=_HTTP_TIMEOUT)
                if self.anonymous
                else OutboundHostValidator(enabled=True).client({"timeout": _HTTP_TIMEOUT})
            )
        return self.http

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("teams: handling an activity failed", exc_info=task.exception())

    async def close(self) -> None:
        """Wait for the activities being handed over (their turns belong to the bridge); what
        has not finished in 5 s is cancelled before the HTTP session closes under it."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=5)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self.http is not None:
            await self.http.close()
            self.http = None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def _say(outbound: Outbound, text: str) -> None:
    try:
        await outbound.send(Activity(type="message", text=text, text_format="markdown"))
    except ConnectorRefused as exc:
        log.error("teams message refused status=%s code=%s", exc.status, exc.code)


def _conversation_type(activity: Activity) -> str:
    conversation = activity.conversation
    if conversation.conversation_type:
        return conversation.conversation_type
    return "personal" if conversation.id.startswith("a:") else "groupChat"


def _key(activity: Activity) -> ConversationKey:
    """Tenant + conversation; in a channel each reply chain (``;messageid=<root>``) is its own."""
    conversation = activity.conversation
    channel_data: dict[str, Any] = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant = conversation.tenant_id or (channel_data.get("tenant") or {}).get("id") or ""
    match = _MESSAGE_ID.search(conversation.id)
    if match:
        return ConversationKey("teams", tenant, conversation.id[: match.start()], match.group(1))
    return ConversationKey("teams", tenant, conversation.id, "")


def _text(activity: Activity) -> str:
    """The user's words: the bot's mention removed, HTML entities decoded."""
    text = activity.remove_recipient_mention() if activity.text else ""
    text = re.sub(r"</?at>", "", text)
    return html.unescape(text).replace("\u00a0", " ").strip()
