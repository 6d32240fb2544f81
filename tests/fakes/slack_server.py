"""A loopback fake of the Slack Web API for offline tests.

`FakeSlack` is an aiohttp server on 127.0.0.1 (random port) that speaks the
real wire protocol, so the real `slack_sdk` `AsyncWebClient` can be pointed
at it with ``base_url=fake.base_url``. It records every call, keeps the bot's
messages (posted, updated and streamed) as a user would see them, serves
external file uploads and private file downloads, and can be told to fail or
rate-limit the next calls to a method.

It also fakes Socket Mode: ``apps.connections.open`` (app token only) hands out a
``ws://`` URL to the ``/link/`` WebSocket endpoint, which greets each client with
Slack's ``hello`` message; tests push ``events_api`` envelopes with
:meth:`FakeSlack.send_socket_event` and read the client's acks in
:attr:`FakeSlack.socket_acks`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from tests.fakes.loopback import LoopbackServer

MARKDOWN_LIMIT = 12_000
TEXT_LIMIT = 40_000

LOGIN_PAGE = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"


@dataclass
class Call:
    """One Web API call as the fake received it."""

    method: str
    args: dict[str, Any]
    token: str | None

    def json_arg(self, name: str, default: Any = None) -> Any:
        """Return ``args[name]``, decoding it first if the client sent it as a JSON string."""
        return _decode(self.args.get(name, default))


@dataclass
class Message:
    """A bot message as the user would now see it."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str
    streamed: bool
    stopped: bool
    updates: int = 0


@dataclass
class Ephemeral:
    """A message only ``user`` sees in ``channel`` (chat.postEphemeral)."""

    channel: str
    user: str
    text: str


class _MethodError(Exception):
    """Raised by a handler to answer ``{"ok": false, "error": <error>}``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _decode(value: Any) -> Any:
    """Decode a JSON-string argument (form or query args); leave anything else alone."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class FakeSlack(LoopbackServer):
    """Fake Slack Web API server; use as ``async with FakeSlack() as fake:``."""

    def __init__(
        self,
        bot_token: str = "xoxb-test",
        team_id: str = "T1",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        app_token: str = "xapp-test",
        app_id: str = "A1",
    ) -> None:
        self.bot_token = bot_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_token = app_token
        self.app_id = app_id
        self.calls: list[Call] = []
        self.uploads: dict[str, bytes] = {}
        self.delay: float = 0.0
        self.scopes: set[str] | None = None  # the token's scopes, sent as x-oauth-scopes when set
        self.failing_uploads = 0  # how many uploads to the upload URL answer 500 next
        self._messages: list[Message] = []
        self.ephemerals: list[Ephemeral] = []
        self.home_views: dict[str, dict[str, Any]] = {}  # user id -> last published home view
        self.command_responses: list[dict[str, Any]] = []  # JSON posted to response_url()
        self._users: dict[str, dict[str, Any]] = {}  # user id -> flags users.info reports
        self._files: dict[str, dict[str, Any]] = {}
        self._private: dict[str, tuple[bytes, str]] = {}
        self._unreadable: set[str] = set()
        self.file_downloads: list[tuple[str, str | None]] = []  # (path, bearer token) per download
        self._failures: dict[str, list[str]] = {}
        self._rate_limits: dict[str, list[int]] = {}
        self._ts_counter = 0
        self._file_counter = 0
        # Socket Mode: envelope ids the client acked; for each finished connection, in order, the
        # close code the client sent (its own close, or its answer to ours); issued tickets; and
        # the WebSocket connections still open (oldest first).
        self.socket_acks: list[str] = []
        self.socket_close_codes: list[int | None] = []
        self._tickets: set[str] = set()
        self._ticket_counter = 0
        self._sockets: list[web.WebSocketResponse] = []
        # method -> (handler, arguments it refuses to work without: "invalid_arguments")
        self._methods: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], tuple[str, ...]]] = {
            "auth.test": (self._auth_test, ()),
            "chat.postMessage": (self._chat_post_message, ("channel",)),
            "chat.update": (self._chat_update, ("channel", "ts")),
            "chat.postEphemeral": (self._chat_post_ephemeral, ("channel", "user")),
            "views.publish": (self._views_publish, ("user_id", "view")),
            "chat.startStream": (self._chat_start_stream, ("channel", "thread_ts")),
            "chat.appendStream": (self._chat_append_stream, ("channel", "ts")),
            "chat.stopStream": (self._chat_stop_stream, ("channel", "ts")),
            # status "" is allowed: it clears the indicator, as on real Slack.
            "assistant.threads.setStatus": (self._ok, ("channel_id", "thread_ts")),
            "assistant.threads.setSuggestedPrompts": (self._ok, ("channel_id", "prompts")),
            "assistant.threads.setTitle": (self._ok, ("channel_id", "thread_ts", "title")),
            "agents.sessions.setStatus": (self._ok, ("channel_id", "status")),
            "reactions.add": (self._ok, ("channel", "name", "timestamp")),
            "reactions.remove": (self._ok, ("name",)),
            "users.info": (self._users_info, ("user",)),
            "conversations.info": (self._conversations_info, ("channel",)),
            "files.getUploadURLExternal": (self._files_get_upload_url, ("filename", "length")),
            "files.completeUploadExternal": (self._files_complete_upload, ("files",)),
            "files.info": (self._files_info, ("file",)),
            "apps.connections.open": (self._apps_connections_open, ()),
        }
        # Methods called with the app-level token instead of the bot token.
        self._app_token_methods = {"apps.connections.open"}

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start listening on 127.0.0.1 on a free port."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._on_api)
        app.router.add_post("/upload/{file_id}", self._on_upload)
        app.router.add_get("/files-pri/{key}/download/{name}", self._on_private_file)
        app.router.add_get("/files-pri/{key}/{name}", self._on_private_file)
        app.router.add_get("/link/", self._on_socket)
        app.router.add_post("/commands/{id}", self._on_command_response)
        await self._serve(app, shutdown_timeout=1.0)

    async def close(self) -> None:
        """Close open Socket Mode connections cleanly (close code 1001), then stop the server."""
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
        await self._stop()

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        if not self._port:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """Web API base URL for ``AsyncWebClient(base_url=...)``, with its trailing slash."""
        return f"{self.root_url}/api/"

    # ------------------------------------------------------------- test helpers

    def calls_to(self, method: str) -> list[Call]:
        """Every recorded call to ``method``, in arrival order."""
        return [c for c in self.calls if c.method == method]

    def fail(self, method: str, error: str, times: int = 1) -> None:
        """Answer the next ``times`` calls to ``method`` with HTTP 200 ``{"ok": false, "error": error}``."""
        self._failures.setdefault(method, []).extend([error] * times)

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls to ``method`` with HTTP 429 and ``Retry-After``."""
        self._rate_limits.setdefault(method, []).extend([retry_after] * times)

    def messages(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """Copies of the bot's messages in ``channel`` (and thread ``thread_ts`` if given), in post order."""
        return [
            dataclasses.replace(m)
            for m in self._messages
            if m.channel == channel and (thread_ts is None or m.thread_ts == thread_ts)
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Poll ``predicate`` every 10 ms; after ``timeout`` s raise AssertionError listing recent calls."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() >= deadline:
                recent = "\n".join(f"  {c.method} {c.args!r}" for c in self.calls[-20:])
                raise AssertionError(
                    f"condition not met within {timeout}s; last calls:\n{recent or '  (none)'}"
                )
            await asyncio.sleep(0.01)

    def set_user(self, user_id: str, **flags: Any) -> None:
        """What users.info says of ``user_id`` from now on, e.g. ``is_admin=True`` or
        ``is_restricted=True`` (merged over the defaults: an ordinary member)."""
        self._users.setdefault(user_id, {}).update(flags)

    def response_url(self, command_id: str = "1") -> str:
        """A slash command's ``response_url`` served here (Slack's is on hooks.slack.com)."""
        return f"{self.root_url}/commands/{command_id}"

    def ephemerals_for(self, user: str, channel: str | None = None) -> list[str]:
        """Texts of the ephemeral messages ``user`` was shown (in ``channel`` if given), in order."""
        return [
            e.text for e in self.ephemerals if e.user == user and (channel is None or e.channel == channel)
        ]

    def add_private_file(
        self, file_id: str, content: bytes, name: str, mimetype: str, *, readable: bool = True
    ) -> str:
        """Register a file only the bot token may download (``readable=False``: not even the bot,
        which then gets the sign-in page); return its ``url_private_download``.

        Call after ``start()``: the URL embeds this server's port.
        """
        key = f"{self.team_id}-{file_id}"
        self._private[key] = (content, mimetype)
        if not readable:
            self._unreadable.add(key)
        url = f"{self.root_url}/files-pri/{key}/download/{name}"
        self._files[file_id] = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "size": len(content),
            "url_private": f"{self.root_url}/files-pri/{key}/{name}",
            "url_private_download": url,
        }
        return url

    # -------------------------------------------------------------- Socket Mode

    @property
    def socket_connected(self) -> bool:
        """True while at least one Socket Mode client is connected."""
        return any(not ws.closed for ws in self._sockets)

    async def wait_socket_connected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until a Socket Mode client is connected; AssertionError after ``timeout`` s."""
        await self.wait_for(lambda: self.socket_connected, timeout)

    async def send_socket_event(
        self, payload: dict[str, Any], retry_attempt: int = 0, *, retry_reason: str = ""
    ) -> str:
        """Deliver an Events API ``payload`` (an ``event_callback``) over Socket Mode, as Slack
        does, to the newest connection (waiting up to 5 s for one); return its envelope id.

        ``retry_attempt`` 0 is a first delivery; Slack counts redeliveries from 1 (and gives a
        ``retry_reason`` such as ``"timeout"`` with them)."""
        envelope_id = str(uuid.uuid4())
        await self._send_socket(
            {
                "envelope_id": envelope_id,
                "type": "events_api",
                "accepts_response_payload": False,
                "retry_attempt": retry_attempt,
                "retry_reason": retry_reason,
                "payload": payload,
            }
        )
        return envelope_id

    async def send_socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Send Slack's ``disconnect`` message, asking the client to reconnect on a fresh URL."""
        await self._send_socket(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-applink"}}
        )

    async def _send_socket(self, message: dict[str, Any]) -> None:
        await self.wait_socket_connected()
        ws = [ws for ws in self._sockets if not ws.closed][-1]
        await ws.send_json(message)

    async def _on_socket(self, request: web.Request) -> web.StreamResponse:
        """Serve ``/link/?ticket=<n>``: a Socket Mode WebSocket connection.

        Greets with ``hello``, answers pings (aiohttp's autoping) and records acks
        (``{"envelope_id": ...}``, optionally with a ``payload``) until either side closes.
        """
        if request.query.get("ticket") not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {
                        "host": "fake-applink",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.app_id},
                }
            )
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except ValueError:
                    continue
                if isinstance(data, dict) and isinstance(data.get("envelope_id"), str):
                    self.socket_acks.append(data["envelope_id"])
        finally:
            self._sockets.remove(ws)
            self.socket_close_codes.append(ws.close_code)
        return ws

    # --------------------------------------------------------------- HTTP layer

    async def _on_api(self, request: web.Request) -> web.Response:
        """Serve ``/api/<method>``: record the call, then answer like Slack."""
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            args.update((await request.post()).items())
        token = _bearer(request.headers.get("Authorization")) or args.get("token")
        self.calls.append(Call(method=method, args=args, token=token))

        if self.delay:
            await asyncio.sleep(self.delay)
        if self._rate_limits.get(method):
            retry_after = self._rate_limits[method].pop(0)
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(retry_after)}
            )
        if self._failures.get(method):
            return _error(self._failures[method].pop(0))
        if method not in self._methods:
            return _error("unknown_method")
        expected = self.app_token if method in self._app_token_methods else self.bot_token
        if token is None or token != expected:
            return _error("invalid_auth")
        handler, required = self._methods[method]
        if any(args.get(name) in (None, "") for name in required):
            return _error("invalid_arguments")
        try:
            headers = {"x-oauth-scopes": ",".join(sorted(self.scopes))} if self.scopes is not None else None
            return web.json_response({"ok": True, **handler(args)}, headers=headers)
        except _MethodError as e:
            return _error(e.error)

    async def _on_command_response(self, request: web.Request) -> web.Response:
        """A POST to a slash command's ``response_url``: record its JSON, answer ``ok``."""
        try:
            payload = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
            return web.Response(status=400, text="no_text")
        self.command_responses.append(payload)
        return web.Response(text="ok")

    async def _on_upload(self, request: web.Request) -> web.Response:
        """Serve the external upload URL: store the raw body under its file id."""
        file_id = request.match_info["file_id"]
        if file_id not in self._files:
            return web.Response(status=404, text="Not Found")
        data = await request.read()
        if self.failing_uploads:
            self.failing_uploads -= 1
            return web.Response(status=500, text="Internal Server Error")
        self.uploads[file_id] = data
        return web.Response(text=f"OK - {len(data)}")

    async def _on_private_file(self, request: web.Request) -> web.Response:
        """Serve a private file to the bot token; anyone else gets Slack's HTML login page (HTTP 200)."""
        entry = self._private.get(request.match_info["key"])
        token = _bearer(request.headers.get("Authorization"))
        self.file_downloads.append((request.path, token))
        if entry is None:
            return web.Response(status=404, text="Not Found")
        if token != self.bot_token or request.match_info["key"] in self._unreadable:
            return web.Response(text=LOGIN_PAGE, content_type="text/html")
        content, mimetype = entry
        return web.Response(body=content, headers={"Content-Type": mimetype})

    # ----------------------------------------------------------------- methods

    def _ok(self, args: dict[str, Any]) -> dict[str, Any]:
        """Methods whose success answer is just ``{"ok": true}``."""
        return {}

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        if not any(args.get(k) for k in ("text", "markdown_text", "blocks", "attachments")):
            raise _MethodError("no_text")
        text = _checked_text(args)
        message = Message(
            channel=str(args["channel"]),
            ts=self._next_ts(),
            thread_ts=args.get("thread_ts") or None,
            text=text,
            streamed=False,
            stopped=True,
        )
        self._messages.append(message)
        return {"channel": message.channel, "ts": message.ts, "message": self._message_json(message)}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args)
        if args.get("text") is not None or args.get("markdown_text") is not None:
            message.text = _checked_text(args)
        message.updates += 1
        return {
            "channel": message.channel,
            "ts": message.ts,
            "text": message.text,
            "message": self._message_json(message),
        }

    def _chat_start_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args["channel"])
        if channel[:1] in ("C", "G"):
            if not args.get("recipient_team_id"):
                raise _MethodError("missing_recipient_team_id")
            if not args.get("recipient_user_id"):
                raise _MethodError("missing_recipient_user_id")
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            thread_ts=str(args["thread_ts"]),
            text=_checked_markdown(args),
            streamed=True,
            stopped=False,
        )
        self._messages.append(message)
        return {"channel": message.channel, "ts": message.ts}

    def _chat_append_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find_streaming(args)
        message.text += _checked_markdown(args)
        return {"channel": message.channel, "ts": message.ts}

    def _chat_stop_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find_streaming(args)
        message.text += _checked_markdown(args)
        message.stopped = True
        return {"channel": message.channel, "ts": message.ts, "message": self._message_json(message)}

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        self._ticket_counter += 1
        ticket = str(self._ticket_counter)
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self._port}/link/?ticket={ticket}"}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args["user"])
        return {
            "user": {
                "id": user_id,
                "team_id": self.team_id,
                "name": user_id.lower(),
                "is_admin": False,
                "is_owner": False,
                "is_bot": user_id == self.bot_user_id,
                "is_restricted": False,
                "is_ultra_restricted": False,
                **self._users.get(user_id, {}),
            }
        }

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not any(args.get(k) for k in ("text", "markdown_text", "blocks", "attachments")):
            raise _MethodError("no_text")
        self.ephemerals.append(Ephemeral(str(args["channel"]), str(args["user"]), _checked_text(args)))
        return {"message_ts": self._next_ts()}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        view = _decode(args["view"])
        if (
            not isinstance(view, dict)
            or view.get("type") != "home"
            or not isinstance(view.get("blocks"), list)
        ):
            raise _MethodError("invalid_arguments")
        if len(view["blocks"]) > 100:
            raise _MethodError("invalid_blocks")
        self.home_views[str(args["user_id"])] = view
        return {"view": {"id": f"V{self._next_ts()}", **view}}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel_id = str(args["channel"])
        return {"channel": {"id": channel_id, "is_im": channel_id.startswith("D")}}

    def _files_get_upload_url(self, args: dict[str, Any]) -> dict[str, Any]:
        self._file_counter += 1
        file_id = f"F{self._file_counter}"
        name = str(args["filename"])
        self._files[file_id] = {"id": file_id, "name": name, "title": name, "size": int(args["length"])}
        return {"upload_url": f"{self.root_url}/upload/{file_id}", "file_id": file_id}

    def _files_complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        items = _decode(args["files"])
        if not isinstance(items, list) or not items:
            raise _MethodError("invalid_arguments")
        answer = []
        for item in items:
            info = self._files.get(str(item.get("id"))) if isinstance(item, dict) else None
            if info is None or info["id"] not in self.uploads:
                raise _MethodError("file_not_found")
            if item.get("title"):
                info["title"] = item["title"]
            answer.append(dict(info))
        return {"files": answer}

    def _files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        info = self._files.get(str(args["file"]))
        if info is None:
            raise _MethodError("file_not_found")
        return {"file": dict(info)}

    # ------------------------------------------------------------------ helpers

    def _next_ts(self) -> str:
        """A fresh, strictly increasing message ts like ``1700000000.000100``."""
        self._ts_counter += 1
        seconds, rest = divmod(self._ts_counter, 10_000)
        return f"{1_700_000_000 + seconds}.{rest * 100:06d}"

    def _find(self, args: dict[str, Any]) -> Message:
        """The message at (``channel``, ``ts``), else ``message_not_found``."""
        for message in self._messages:
            if message.channel == args["channel"] and message.ts == args["ts"]:
                return message
        raise _MethodError("message_not_found")

    def _find_streaming(self, args: dict[str, Any]) -> Message:
        """The streamed message at (``channel``, ``ts``) that is still streaming."""
        message = self._find(args)
        if not message.streamed or message.stopped:
            raise _MethodError("message_not_in_streaming_state")
        return message

    def _message_json(self, message: Message) -> dict[str, Any]:
        """The ``message`` object Slack echoes back."""
        data: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "team": self.team_id,
            "text": message.text,
            "ts": message.ts,
        }
        if message.thread_ts:
            data["thread_ts"] = message.thread_ts
        return data


def _bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if header and header.startswith("Bearer "):
        return header[len("Bearer ") :].strip() or None
    return None


def _checked_text(args: dict[str, Any]) -> str:
    """Visible text of a post/update (``markdown_text`` wins over ``text``), enforcing Slack's limits."""
    markdown = args.get("markdown_text")
    if markdown is not None:
        if len(str(markdown)) > MARKDOWN_LIMIT:
            raise _MethodError("msg_too_long")
        return str(markdown)
    text = str(args.get("text") or "")
    if len(text) > TEXT_LIMIT:
        raise _MethodError("msg_too_long")
    return text


def _checked_markdown(args: dict[str, Any]) -> str:
    """Markdown of a stream call (``markdown_text`` then ``markdown_text`` chunks), at most 12,000 chars."""
    parts = [str(args.get("markdown_text") or "")]
    chunks = _decode(args.get("chunks")) or []
    for chunk in chunks if isinstance(chunks, list) else []:
        if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
            parts.append(str(chunk.get("text") or ""))
    markdown = "".join(parts)
    if len(markdown) > MARKDOWN_LIMIT:
        raise _MethodError("msg_too_long")
    return markdown


def _error(error: str) -> web.Response:
    """Slack's HTTP 200 failure answer."""
    return web.json_response({"ok": False, "error": error})
