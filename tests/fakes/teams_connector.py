"""A loopback fake of the Bot Framework / Teams Bot Connector REST API for offline tests.

`FakeConnector` is an aiohttp server on 127.0.0.1 (random port) serving the
``v3/conversations/{id}/activities[/{activityId}]`` routes that the real Agents SDK
``ConnectorClient`` calls, so a bot under test can be handed activities whose
``serviceUrl`` is ``fake.service_url``. It records every request in
:attr:`FakeConnector.sent`, keeps what a user now sees in each conversation
(:meth:`FakeConnector.visible`), plays Teams' streaming protocol (201 then 202 then a
final message; 405 outside personal chats; 403 after Stop or the two-minute cap),
enforces the 100 KB message limit and the inline-image limits, and can be told to
rate-limit, fail or slow down the next requests. Breaches of the protocol land in
:attr:`FakeConnector.protocol_errors`: tests assert it stays empty.

It also stands in for the file hosts around Teams: :meth:`FakeConnector.add_file` serves a file
(optionally only with ``Authorization: Bearer <token>``, like pasted images on the connector's
attachment service), :meth:`FakeConnector.redirect_url` answers 302 to another URL, and
:meth:`FakeConnector.upload_info` hands out a OneDrive-style ``uploadUrl`` that takes one ``PUT``
with ``Content-Range`` (recorded in :attr:`FakeConnector.uploads`). Files may be served under any
host name (``host=``): a session built with :func:`loopback_session` resolves every name to
127.0.0.1, so a test can stand in for ``smba.trafficmanager.net`` and for a foreign host.

``GET v3/conversations/{id}/members/{userId}`` answers a ``TeamsChannelAccount`` whose
``userRole`` is ``"user"`` unless :meth:`FakeConnector.set_member_role` says otherwise (``"guest"``);
each lookup is recorded in :attr:`FakeConnector.member_lookups`, and
:meth:`FakeConnector.fail_members` makes the next lookups fail.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import io
import json
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image

from tests.fakes.loopback import LoopbackServer

MESSAGE_LIMIT = 100_000
IMAGE_BYTES_LIMIT = 1_048_576
IMAGE_SIDE_LIMIT = 1024
NOT_PERSONAL = "Streaming API is not enabled for non personal scope."
CANCELLED = "Content stream was cancelled by user."
TIMED_OUT = "Content stream finished due to exceeded streaming time."
COMPLETED = "Content stream is not allowed on an already completed streamed message"
NOT_CUMULATIVE = "Request streamed content should contain the previously streamed content"
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif);base64,(.*)", re.DOTALL)
_JITTER = 0.05
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
CONSENT_CARD = "application/vnd.microsoft.teams.card.file.consent"
FILE_INFO_CARD = "application/vnd.microsoft.teams.card.file.info"


@dataclass
class Sent:
    """One request as the fake received it, with the status it answered."""

    conversation_id: str
    reply_to_id: str | None
    activity: dict[str, Any]
    authorization: str | None
    status: int
    at: float


@dataclass
class Visible:
    """A message (or a stream, as one message) as the user now sees it."""

    id: str
    text: str
    attachments: list[dict[str, Any]]
    streamed: bool
    finished: bool
    reply_to_id: str | None


@dataclass
class _Stream:
    conversation_id: str
    entry: Visible
    started: float
    last_at: float
    sequence: int
    streamed_text: str
    state: str = "open"  # open | finished | stopped | timed_out
    refusals: int = 0


@dataclass
class Upload:
    """An upload URL handed out by :meth:`FakeConnector.upload_info`, and what was PUT to it."""

    name: str
    data: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Download:
    """One GET of a served file (or redirect), as the fake received it."""

    host: str
    path: str
    authorization: str | None
    status: int


@dataclass
class MemberLookup:
    """One GET of a conversation member, as the fake received it."""

    conversation_id: str
    user_id: str
    authorization: str | None
    status: int


@dataclass
class _File:
    data: bytes
    content_type: str
    token: str | None
    status: int


class _Refused(Exception):
    """Raised while answering a request: reply ``status`` with a Bot Framework error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class FakeConnector(LoopbackServer):
    """Fake Bot Connector service; use as ``async with FakeConnector() as fake:``."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.protocol_errors: list[str] = []
        self.delay: float = 0.0
        self.min_stream_interval: float = 1.0
        self.stream_time_limit: float = 120.0
        self.message_limit: int = MESSAGE_LIMIT
        self._conversations: dict[str, list[Visible]] = {}
        self._streams: dict[str, _Stream] = {}
        self._rate_limits: list[int] = []
        self._failures: list[tuple[int, str]] = []
        self._id_counter = 0
        self.uploads: dict[str, Upload] = {}
        self.downloads: list[Download] = []
        self._files: dict[str, _File] = {}
        self._redirects: dict[str, str] = {}
        self.member_lookups: list[MemberLookup] = []
        self._member_roles: dict[str, str] = {}
        self._member_failures: list[int] = []

    async def start(self) -> None:
        """Start listening on 127.0.0.1 on a free port."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v3/conversations/{cid}/activities", self._on_activity)
        app.router.add_post("/v3/conversations/{cid}/activities/{aid}", self._on_activity)
        app.router.add_put("/v3/conversations/{cid}/activities/{aid}", self._on_activity)
        app.router.add_get("/v3/conversations/{cid}/members/{uid}", self._on_member)
        app.router.add_get("/files/{fid}/{name}", self._on_file)
        app.router.add_get("/redirect/{rid}", self._on_redirect)
        app.router.add_put("/upload/{uid}", self._on_upload)
        await self._serve(app, shutdown_timeout=1.0)

    @property
    def service_url(self) -> str:
        """The ``serviceUrl`` to put in inbound activities: ``http://127.0.0.1:<port>/``."""
        if not self._port:
            raise RuntimeError("FakeConnector is not started")
        return f"http://127.0.0.1:{self._port}/"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """``http://<host>:<port><path>``; a host other than 127.0.0.1 needs :func:`loopback_session`."""
        if not self._port:
            raise RuntimeError("FakeConnector is not started")
        return f"http://{host}:{self._port}{path}"

    # ------------------------------------------------------------- test helpers

    def add_file(
        self,
        name: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        token: str | None = None,
        status: int = 200,
        host: str = "127.0.0.1",
    ) -> str:
        """Serve ``data`` at the returned URL; with ``token`` only to ``Authorization: Bearer
        <token>`` (else 401); with ``status`` other than 200, answer that status instead."""
        fid = secrets.token_hex(6)
        self._files[fid] = _File(data, content_type, token, status)
        return self.url(f"/files/{fid}/{name}", host)

    def redirect_url(self, target: str, host: str = "127.0.0.1") -> str:
        """A URL that answers ``302 Location: target``."""
        rid = secrets.token_hex(6)
        self._redirects[rid] = target
        return self.url(f"/redirect/{rid}", host)

    def upload_info(self, name: str, host: str = "127.0.0.1") -> dict[str, Any]:
        """The ``uploadInfo`` Teams sends with an accepted file consent card: a fresh ``uploadUrl``
        (one PUT, recorded in :attr:`uploads` under the id at the end of the URL) and the file's
        ``contentUrl`` in the user's OneDrive."""
        uid = secrets.token_hex(6)
        self.uploads[uid] = Upload(name)
        return {
            "name": name,
            "uploadUrl": self.url(f"/upload/{uid}", host),
            "contentUrl": f"https://contoso-my.sharepoint.com/personal/user/Documents/Applications/{name}",
            "uniqueId": f"unique-{uid}",
            "fileType": name.rsplit(".", 1)[-1] if "." in name else "",
        }

    def rate_limit(self, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` requests with 429, ``Retry-After: retry_after``."""
        self._rate_limits.extend([retry_after] * times)

    def fail(self, status: int, code: str, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` and ``{"error": {"code": code, ...}}``."""
        self._failures.extend([(status, code)] * times)

    def stop_streams(self) -> None:
        """The user presses Stop: open streams refuse further updates and finals with 403."""
        for stream in self._streams.values():
            if stream.state == "open":
                stream.state = "stopped"

    def visible(self, conversation_id: str) -> list[Visible]:
        """Copies of what the user now sees in ``conversation_id``, in post order."""
        return [
            dataclasses.replace(v, attachments=list(v.attachments))
            for v in self._conversation(conversation_id)
        ]

    def typing_count(self, conversation_id: str) -> int:
        """How many plain typing activities (no streaminfo) were accepted in ``conversation_id``."""
        return sum(
            1
            for s in self.sent
            if s.conversation_id == conversation_id
            and s.activity.get("type") == "typing"
            and _stream_info(s.activity) is None
            and s.status == 200
        )

    def stream_updates(self, conversation_id: str) -> list[Sent]:
        """Accepted streaming typing updates (201 or 202) in ``conversation_id``, in arrival order."""
        return [
            s
            for s in self.sent
            if s.conversation_id == conversation_id
            and s.activity.get("type") == "typing"
            and _stream_info(s.activity) is not None
            and s.status in (201, 202)
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll ``predicate`` every 10 ms; after ``timeout`` s raise AssertionError listing recent requests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() >= deadline:
                recent = "\n".join(
                    f"  {s.status} {s.conversation_id} {s.activity.get('type')} {s.activity.get('text')!r:.80}"
                    for s in self.sent[-20:]
                )
                raise AssertionError(
                    f"condition not met within {timeout}s; last requests:\n{recent or '  (none)'}"
                )
            await asyncio.sleep(0.01)

    # --------------------------------------------------------------- members

    def set_member_role(self, user_id: str, role: str) -> None:
        """``userRole`` for this user (by ``29:`` id or Entra object id): user, guest or anonymous."""
        self._member_roles[user_id] = role

    def fail_members(self, status: int = 500, times: int = 1) -> None:
        self._member_failures.extend([status] * times)

    async def _on_member(self, request: web.Request) -> web.Response:
        cid, uid = request.match_info["cid"], request.match_info["uid"]
        status = self._member_failures.pop(0) if self._member_failures else 200
        self.member_lookups.append(MemberLookup(cid, uid, request.headers.get("Authorization"), status))
        if self.delay:
            await asyncio.sleep(self.delay)
        if status != 200:
            return web.json_response({"error": {"code": "Failed", "message": "member lookup"}}, status=status)
        return web.json_response(
            {
                "id": uid,
                "name": "Test User",
                "aadObjectId": uid if not uid.startswith("29:") else f"aad-{uid[3:]}",
                "userRole": self._member_roles.get(uid, "user"),
                "tenantId": "tenant-1",
            }
        )

    # --------------------------------------------------------------- file hosts

    def _downloaded(self, request: web.Request, status: int) -> None:
        host = (request.host or "").rsplit(":", 1)[0]
        self.downloads.append(Download(host, request.path, request.headers.get("Authorization"), status))

    async def _on_file(self, request: web.Request) -> web.StreamResponse:
        served = self._files.get(request.match_info["fid"])
        status = 404 if served is None else served.status
        if (
            served is not None
            and served.token
            and request.headers.get("Authorization") != f"Bearer {served.token}"
        ):
            status = 401
        self._downloaded(request, status)
        if served is None or status != 200:
            return web.json_response({"error": {"code": "Failed", "message": "no file"}}, status=status)
        return web.Response(body=served.data, content_type=served.content_type)

    async def _on_redirect(self, request: web.Request) -> web.Response:
        target = self._redirects.get(request.match_info["rid"])
        self._downloaded(request, 404 if target is None else 302)
        if target is None:
            return web.Response(status=404)
        return web.Response(status=302, headers={"Location": target})

    async def _on_upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["uid"])
        if upload is None:
            return web.json_response({"error": {"code": "itemNotFound"}}, status=404)
        if upload.data is not None:
            self._protocol_error(f"second PUT to the upload URL of {upload.name}")
            return web.json_response({"error": {"code": "invalidRange"}}, status=416)
        data = await request.read()
        upload.headers = dict(request.headers)
        if "Authorization" in request.headers:
            self._protocol_error(f"a token was sent with the upload of {upload.name}")
        match = _RANGE.fullmatch(request.headers.get("Content-Range", ""))
        size = len(data)
        if match is None or (int(match[1]), int(match[2]), int(match[3])) != (0, size - 1, size):
            self._protocol_error(
                f"upload of {upload.name}: Content-Range {request.headers.get('Content-Range')!r}"
            )
            return web.json_response({"error": {"code": "invalidRange"}}, status=416)
        upload.data = data
        return web.json_response(
            {"id": f"item-{request.match_info['uid']}", "name": upload.name, "size": size}, status=201
        )

    # --------------------------------------------------------------- HTTP layer

    async def _on_activity(self, request: web.Request) -> web.Response:
        """Record the request, wait ``delay``, then answer like the Bot Connector."""
        cid = request.match_info["cid"]
        aid = request.match_info.get("aid")
        try:
            body = await request.json()
        except ValueError:
            body = None
        activity: dict[str, Any] = body if isinstance(body, dict) else {}
        put = request.method == "PUT"
        sent = Sent(
            cid, None if put else aid, activity, request.headers.get("Authorization"), 0, time.monotonic()
        )
        self.sent.append(sent)
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            if not activity:
                raise _Refused(400, "BadArgument", "The request body is not an Activity")
            sent.status, payload = self._answer(cid, aid, put, activity, sent.at)
            return web.json_response(payload, status=sent.status)
        except _Refused as e:
            sent.status = e.status
            error = {"error": {"code": e.code, "message": e.message}}
            return web.json_response(error, status=e.status, headers=e.headers)

    def _answer(
        self, cid: str, aid: str | None, put: bool, activity: dict[str, Any], at: float
    ) -> tuple[int, dict[str, Any]]:
        if self._rate_limits:
            retry_after = str(self._rate_limits.pop(0))
            raise _Refused(429, "TooManyRequests", "API calls quota exceeded", {"Retry-After": retry_after})
        if self._failures:
            status, code = self._failures.pop(0)
            raise _Refused(status, code, f"Injected failure {status} {code}")
        info = _stream_info(activity)
        if put:
            return self._update(cid, str(aid), activity)
        if info is not None and (info.get("streamType") != "final" or info.get("streamId")):
            return self._stream(cid, aid, activity, info, at)
        if activity.get("type") != "message":
            return 200, {"id": self._next_id()}  # typing, events...: nothing to show
        self._check_message(activity)
        entry = Visible(
            id=self._next_id(),
            text=activity.get("text") or "",
            attachments=list(activity.get("attachments") or []),
            streamed=False,
            finished=True,
            reply_to_id=aid or activity.get("replyToId"),
        )
        self._conversation(cid).append(entry)
        return 200, {"id": entry.id}

    def _update(self, cid: str, aid: str, activity: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """PUT: replace the text and attachments of a message (or stream) the user sees."""
        entry = next((v for v in self._conversation(cid) if v.id == aid), None)
        if entry is None:
            raise _Refused(404, "ActivityNotFound", f"Unknown activity {aid}")
        self._check_message(activity)
        entry.text = activity.get("text") or ""
        entry.attachments = list(activity.get("attachments") or [])
        return 200, {"id": aid}

    # ---------------------------------------------------------------- streaming

    def _stream(
        self, cid: str, aid: str | None, activity: dict[str, Any], info: dict[str, Any], at: float
    ) -> tuple[int, dict[str, Any]]:
        # A missing streamType means "streaming" (the schema default; the SDK's StreamInfo omits it when unset).
        kind, stream_type, stream_id = (
            activity.get("type"),
            info.get("streamType") or "streaming",
            info.get("streamId"),
        )
        if kind == "message" and stream_type == "final":
            stream = self._open_stream(cid, str(stream_id), at)
            if "streamSequence" in info:
                self._protocol_error(f"final message of stream {stream_id} carries a streamSequence")
            self._check_message(activity)
            stream.state = "finished"
            stream.entry.text = activity.get("text") or ""
            stream.entry.attachments = list(activity.get("attachments") or [])
            stream.entry.finished = True
            return 200, {"id": stream.entry.id}
        if kind != "typing" or stream_type not in ("informative", "streaming"):
            raise self._bad_request(f"a {kind!r} activity with streamType {stream_type!r}")
        sequence, text = info.get("streamSequence"), activity.get("text") or ""
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            raise self._bad_request(f"streaming update without an integer streamSequence: {info}")
        if not text:
            raise self._bad_request("Start streaming activities should include text")
        self._check_size(activity, streaming=True)
        if stream_id == "":
            self._protocol_error("first streaming update carries an empty streamId (leave it out)")
        if not stream_id:
            if not _is_personal(cid, activity):
                raise _Refused(405, "BadArgument", NOT_PERSONAL)
            if sequence != 1:
                self._protocol_error(f"first streaming update has streamSequence {sequence}, not 1")
            entry = Visible(self._next_id(), text, [], streamed=True, finished=False, reply_to_id=aid)
            streamed = text if stream_type == "streaming" else ""
            self._streams[entry.id] = _Stream(cid, entry, at, at, sequence, streamed)
            self._conversation(cid).append(entry)
            return 201, {"id": entry.id}
        stream = self._open_stream(cid, str(stream_id), at)
        if sequence <= stream.sequence:
            self._protocol_error(f"stream {stream_id}: streamSequence {sequence} after {stream.sequence}")
            return 202, {}  # Teams drops out-of-order updates
        if stream_type == "streaming":
            if not text.startswith(stream.streamed_text):
                self._protocol_error(f"stream {stream_id}: update {sequence} does not repeat the text so far")
                raise _Refused(403, "ContentStreamNotAllowed", NOT_CUMULATIVE)
            stream.streamed_text = text
        stream.sequence = sequence
        stream.entry.text = text
        return 202, {"id": stream.entry.id}

    def _open_stream(self, cid: str, stream_id: str, at: float) -> _Stream:
        """The open stream ``stream_id`` of ``cid``; checks the pace; refuses closed ones."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.conversation_id != cid:
            raise self._bad_request(f"update for unknown stream {stream_id} in {cid}")
        if stream.state == "finished":
            self._protocol_error(f"update for finished stream {stream_id}")
            raise _Refused(403, "ContentStreamNotAllowed", COMPLETED)
        if stream.state == "open" and at - stream.started > self.stream_time_limit:
            stream.state = "timed_out"
        if stream.state in ("stopped", "timed_out"):
            if stream.refusals:
                self._protocol_error(f"stream {stream_id} kept streaming after a 403 ContentStreamNotAllowed")
            stream.refusals += 1
            raise _Refused(
                403, "ContentStreamNotAllowed", CANCELLED if stream.state == "stopped" else TIMED_OUT
            )
        if at - stream.last_at < self.min_stream_interval - _JITTER:
            self._protocol_error(
                f"stream {stream_id}: updates {at - stream.last_at:.3f}s apart (min {self.min_stream_interval}s)"
            )
        stream.last_at = at
        return stream

    # ------------------------------------------------------------------- checks

    def _check_message(self, activity: dict[str, Any]) -> None:
        """Message size and inline images, as Teams enforces them."""
        self._check_size(activity, streaming=False)
        images = 0
        for attachment in activity.get("attachments") or []:
            url = attachment.get("contentUrl") if isinstance(attachment, dict) else None
            if isinstance(url, str) and url.startswith("data:"):
                self._check_image(url)
                images += 1
            if isinstance(attachment, dict):
                self._check_file_card(attachment, activity)
        if images and (activity.get("text") or "").strip():
            self._protocol_error("inline image sent with text: Teams wants images as their own activity")

    def _check_file_card(self, attachment: dict[str, Any], activity: dict[str, Any]) -> None:
        """File consent cards (personal chats only) and file info cards, as bots-filesv4 shapes them."""
        kind, content = attachment.get("contentType"), attachment.get("content") or {}
        if kind == CONSENT_CARD:
            if not _is_personal(str((activity.get("conversation") or {}).get("id", "")), activity):
                raise self._bad_request("a file consent card outside a personal chat")
            size = content.get("sizeInBytes")
            if not attachment.get("name") or not isinstance(size, int) or size <= 0:
                raise self._bad_request(f"file consent card without a name or sizeInBytes: {attachment}")
            if not isinstance(content.get("acceptContext"), dict) or "declineContext" not in content:
                raise self._bad_request("file consent card without acceptContext/declineContext")
        elif kind == FILE_INFO_CARD:
            if not attachment.get("contentUrl") or not content.get("uniqueId") or not attachment.get("name"):
                raise self._bad_request(f"file info card without contentUrl, name or uniqueId: {attachment}")

    def _check_size(self, activity: dict[str, Any], *, streaming: bool) -> None:
        size = _payload_size(activity)
        if size <= self.message_limit:
            return
        if streaming:
            raise _Refused(403, "ContentStreamNotAllowed", "Message size too large")
        raise _Refused(413, "MessageSizeTooBig", f"Message size {size} exceeds {self.message_limit} bytes")

    def _check_image(self, url: str) -> None:
        match = _DATA_IMAGE.fullmatch(url)
        if match is None:
            raise self._bad_request(f"inline attachment is not a PNG, JPEG or GIF data URI: {url[:40]}")
        try:
            data = base64.b64decode(match.group(2), validate=True)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                animated = bool(getattr(image, "is_animated", False))
        except (binascii.Error, ValueError, OSError) as e:
            raise self._bad_request(f"inline image does not decode: {e}") from None
        if len(data) > IMAGE_BYTES_LIMIT:
            raise self._bad_request(f"inline image of {len(data)} bytes (max {IMAGE_BYTES_LIMIT})")
        if width > IMAGE_SIDE_LIMIT or height > IMAGE_SIDE_LIMIT:
            raise self._bad_request(
                f"inline image of {width}x{height} (max {IMAGE_SIDE_LIMIT}x{IMAGE_SIDE_LIMIT})"
            )
        if animated:
            raise self._bad_request("inline image is an animated GIF")

    # ------------------------------------------------------------------ helpers

    def _protocol_error(self, message: str) -> None:
        self.protocol_errors.append(message)

    def _bad_request(self, message: str) -> _Refused:
        """Record ``message`` as a protocol error; return the 400 to raise."""
        self._protocol_error(message)
        return _Refused(400, "BadArgument", message)

    def _conversation(self, cid: str) -> list[Visible]:
        return self._conversations.setdefault(cid, [])

    def _next_id(self) -> str:
        """A fresh message id shaped like Teams' (milliseconds since the epoch)."""
        self._id_counter += 1
        return str(1_700_000_000_000 + self._id_counter)


class LoopbackResolver(AbstractResolver):
    """Resolves every host name to 127.0.0.1 (the fakes stand in for any host)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        return None


def loopback_session() -> aiohttp.ClientSession:
    """A client session whose every host name resolves to 127.0.0.1."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=LoopbackResolver()))


def _stream_info(activity: dict[str, Any]) -> dict[str, Any] | None:
    """The activity's ``streaminfo`` entity, if any."""
    for entity in activity.get("entities") or []:
        if isinstance(entity, dict) and str(entity.get("type", "")).lower() == "streaminfo":
            return entity
    return None


def _is_personal(cid: str, activity: dict[str, Any]) -> bool:
    conversation = activity.get("conversation")
    if isinstance(conversation, dict) and conversation.get("conversationType"):
        return bool(conversation["conversationType"] == "personal")
    return cid.startswith("a:")


def _payload_size(activity: dict[str, Any]) -> int:
    """UTF-8 size of the activity's JSON, not counting inline ``data:`` URIs."""
    stripped = dict(activity)
    if isinstance(activity.get("attachments"), list):
        stripped["attachments"] = [
            {**a, "contentUrl": ""}
            if isinstance(a, dict) and str(a.get("contentUrl", "")).startswith("data:")
            else a
            for a in activity["attachments"]
        ]
    return len(json.dumps(stripped, ensure_ascii=False, separators=(",", ":")).encode())
