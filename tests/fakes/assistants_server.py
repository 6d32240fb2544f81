"""A loopback fake of the OpenAI Assistants v2 API (threads, messages, runs, steps, files).

`FakeAssistants` is a real aiohttp server on 127.0.0.1 that speaks the wire protocol the
`openai` SDK expects (FACTS.md sections 3 and 7.1): `OpenAI-Beta: assistants=v2` required,
SSE frames with a mandatory `event:` line ending in `event: done` / `data: [DONE]`, one
active run per thread, `required_action` + `submit_tool_outputs` matched by call id, and
cancellation, user uploads (`POST /v1/files`, with `fail_uploads` to refuse some) and
message `attachments` (a `file_search` one lands in the thread's vector store, created on first
use as the real service does). Each run plays an enqueued plan (`Say`, `CallFunctions`, `Fail`,
`Incomplete`, `Expire`, `StreamError`, `Hang`); a non-streamed run progresses in the
background so that polling sees `queued`, `in_progress` and then the final status.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer

JSON = dict[str, Any]

TOOL_KINDS = ("code_interpreter", "file_search")
ACTIVE = ("queued", "in_progress", "requires_action", "cancelling")
IN_PROGRESS_HOLD = 0.2  # a non-streamed run stays in_progress until polled once, or this long
MODEL = "gpt-test"
INSTRUCTIONS = "You are a helpful test assistant."
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
ATTACHMENT_TOOLS = ("code_interpreter", "file_search")
BETA_MESSAGE = (
    "You must provide the 'OpenAI-Beta' header to access the Assistants API. "
    "Please try again by setting the header 'OpenAI-Beta: assistants=v2'."
)


@dataclass
class Say:
    """A run that streams an assistant text message, then completes (text None echoes)."""

    text: str | None = None
    chunks: int = 4
    annotations: list[JSON] = field(default_factory=list)
    image_file_ids: list[str] = field(default_factory=list)
    usage: tuple[int, int] = (10, 5)
    steps: list[str] = field(default_factory=list)


@dataclass
class CallFunctions:
    """The run goes requires_action with these (name, arguments) function calls."""

    calls: list[tuple[str, JSON]]


@dataclass
class Fail:
    """The run ends `failed` with `last_error{code, message}` (after an optional partial message)."""

    code: str = "server_error"
    message: str = "Sorry, something went wrong."
    text: str = ""


@dataclass
class Incomplete:
    """The run ends `incomplete` (after an optional partial message)."""

    reason: str = "max_completion_tokens"
    text: str = "Partial"


@dataclass
class Expire:
    """The run ends `expired`."""


@dataclass
class StreamError:
    """A bare `event: error` frame `{code, message}`, then done (the run is left failed)."""

    code: str = "server_error"
    message: str = "stream broke"


@dataclass
class Hang:
    """The run stays in_progress until cancelled."""


AssistantsPlan = Say | CallFunctions | Fail | Incomplete | Expire | StreamError | Hang


def annotation(kind: str, text: str, raw: str, file_id: str) -> JSON:
    """An Assistants v2 annotation (file_citation or file_path) covering ``raw`` in ``text``."""
    start = text.index(raw)
    return {
        "type": kind,
        "text": raw,
        "start_index": start,
        "end_index": start + len(raw),
        kind: {"file_id": file_id},
    }


class _Cancelled(Exception):
    """Raised inside a run's coroutine once the run has been cancelled."""


class _ApiError(Exception):
    """Raised by a handler; the middleware turns it into an OpenAI-style JSON error."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def _hex() -> str:
    return uuid.uuid4().hex[:24]


def _now() -> int:
    return int(time.time())


def _split(text: str, parts: int) -> list[str]:
    """Split `text` into `parts` contiguous pieces (fewer if the text is shorter, one if empty)."""
    count = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _text_block(value: str, annotations: list[JSON] | None = None) -> JSON:
    return {"type": "text", "text": {"value": value, "annotations": annotations or []}}


def _content(raw: Any) -> list[JSON]:
    """Message content from a string or a list of parts."""
    if isinstance(raw, str):
        return [_text_block(raw)]
    blocks: list[JSON] = []
    for part in raw if isinstance(raw, list) and raw else [{}]:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append(_text_block(str(part.get("text", ""))))
        elif kind in ("image_file", "image_url"):
            blocks.append(copy.deepcopy(part))
        else:
            raise _ApiError(400, "Invalid 'content': expected a string or an array of content parts.")
    return blocks


def _place(annotation: JSON, text: str) -> JSON:
    """An annotation with start_index/end_index filled in from where its `text` occurs."""
    marker = str(annotation.get("text", ""))
    start = annotation.get("start_index", max(text.find(marker), 0))
    end = annotation.get("end_index", start + len(marker))
    return dict(copy.deepcopy(annotation), start_index=start, end_index=end)


def _page(items: list[JSON], request: web.Request) -> web.Response:
    """A list page honouring `order` (default desc), `after` and `limit`."""
    items = list(reversed(items)) if request.query.get("order", "desc") == "desc" else list(items)
    ids = [item["id"] for item in items]
    after = request.query.get("after")
    if after:
        items = items[ids.index(after) + 1 :] if after in ids else []
    limit = int(request.query.get("limit", "20"))
    page, more = items[:limit], len(items) > limit
    first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
    return web.json_response(
        {"object": "list", "data": page, "first_id": first, "last_id": last, "has_more": more}
    )


class _Run:
    """One run: its Run object, remaining plans, open stream and cancellation state."""

    def __init__(self, data: JSON, plans: deque[AssistantsPlan]) -> None:
        self.data = data
        self.plans = plans
        self.sse: web.StreamResponse | None = None
        self.cancel = asyncio.Event()
        self.seen = asyncio.Event()
        self.driving = False
        self.pending: list[str] = []
        self.steps: list[JSON] = []
        self.open: list[JSON] = []  # message / step objects to settle if the run is cancelled

    async def emit(self, event: str, data: JSON) -> None:
        """Send one SSE frame if a stream is attached."""
        await self.write(f"event: {event}\ndata: {json.dumps(data)}\n\n")

    async def write(self, frame: str) -> None:
        """Write to the attached stream; a vanished client detaches it and the run goes on."""
        if self.sse is None:
            return
        try:
            await self.sse.write(frame.encode())
        except (ConnectionError, RuntimeError):
            self.sse = None

    def check(self) -> None:
        if self.cancel.is_set():
            raise _Cancelled

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (0 yields once), cut short by a cancel."""
        try:
            await asyncio.wait_for(self.cancel.wait(), seconds) if seconds > 0 else await asyncio.sleep(0)
        except TimeoutError:
            pass
        self.check()


class FakeAssistants(LoopbackServer):
    """Loopback impersonation of the OpenAI Assistants v2 API.

    Every run consumes one enqueued plan (FIFO; `Say()` echo when empty); a `CallFunctions`
    also takes the plan after it (or the next one queued by the time the outputs arrive),
    played within the same run once the tool outputs are submitted.
    """

    def __init__(self, first_token_delay: float = 0.0, delta_delay: float = 0.0) -> None:
        self.first_token_delay = first_token_delay
        self.delta_delay = delta_delay
        self.poll_after_ms: int | None = None
        self.assistants: set[str] = {"asst_test"}
        self.threads: dict[str, list[JSON]] = {}
        self.runs: dict[str, JSON] = {}
        self.run_requests: list[JSON] = []
        self.tool_output_requests: list[JSON] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        self.uploads: list[JSON] = []  # {id, filename, purpose, content_type, data} per upload
        self.fail_uploads = 0  # refuse this many of the next uploads with `upload_error`
        self.upload_error: tuple[int, str] = (400, "Invalid file format.")
        self.vector_stores: dict[str, list[str]] = {}  # thread vector stores: id -> file ids
        self.calls: list[tuple[str, str]] = []
        self._thread_meta: dict[str, JSON] = {}
        self._runs: dict[str, _Run] = {}
        self._file_meta: dict[str, JSON] = {}
        self._plans: deque[AssistantsPlan] = deque()
        self._call_numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        """The SDK base URL, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self._port}/v1"

    def enqueue(self, *plans: AssistantsPlan) -> None:
        """Queue plans for the next runs, in order."""
        for plan in plans:
            if isinstance(plan, Say):
                if any(kind not in TOOL_KINDS for kind in plan.steps):
                    raise ValueError(f"steps entries must be in {TOOL_KINDS}: {plan.steps}")
                for annotation in plan.annotations:
                    if plan.text is not None and str(annotation.get("text")) not in plan.text:
                        raise ValueError(f"annotation text {annotation.get('text')!r} not in {plan.text!r}")
            if isinstance(plan, CallFunctions) and not plan.calls:
                raise ValueError("CallFunctions needs at least one call")
        self._plans.extend(plans)

    def add_file(self, filename: str, data: bytes, purpose: str = "assistants_output") -> str:
        """Store a file (e.g. one code_interpreter generated) and return its id."""
        file_id = f"file-{_hex()}"
        self.files[file_id] = (filename, data)
        self._file_meta[file_id] = {"purpose": purpose, "created_at": _now()}
        return file_id

    def count(self, method: str, path_prefix: str) -> int:
        """How many requests with this method had a path starting with `path_prefix`."""
        return sum(1 for m, path in self.calls if m == method.upper() and path.startswith(path_prefix))

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve."""
        app = web.Application(middlewares=[self._middleware])
        thread, run = "/v1/threads/{tid}", "/v1/threads/{tid}/runs/{rid}"
        routes = [
            ("POST", "/v1/threads", self._create_thread),
            ("GET", thread, self._get_thread),
            ("POST", f"{thread}/messages", self._add_message),
            ("GET", f"{thread}/messages", self._list_messages),
            ("POST", f"{thread}/runs", self._create_run),
            ("GET", f"{thread}/runs", self._list_runs),
            ("GET", run, self._get_run),
            ("POST", f"{run}/submit_tool_outputs", self._submit),
            ("POST", f"{run}/cancel", self._cancel),
            ("GET", f"{run}/steps", self._list_steps),
            ("GET", "/v1/assistants/{aid}", self._get_assistant),
            ("POST", "/v1/files", self._upload_file),
            ("GET", "/v1/files/{fid}", self._get_file),
            ("GET", "/v1/files/{fid}/content", self._file_content),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        await self._serve(app, shutdown_timeout=0.5)

    async def close(self) -> None:
        """Stop serving; runs still being played are abandoned."""
        for task in list(self._tasks):
            task.cancel()
        await self._stop()

    # ---- plumbing -------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Record calls and bodies; check the bearer token, the beta header and path ids."""
        self.calls.append((request.method, request.path))
        if request.method == "POST" and request.path.endswith("/runs"):
            self.run_requests.append(await self._read_json(request))
        if request.method == "POST" and request.path.endswith("/submit_tool_outputs"):
            self.tool_output_requests.append(await self._read_json(request))
        auth = request.headers.get("Authorization", "")
        try:
            if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
                raise _ApiError(401, "Missing bearer", code="invalid_api_key")
            beta = request.path.startswith(("/v1/threads", "/v1/assistants"))
            if beta and "assistants=v2" not in request.headers.get("OpenAI-Beta", ""):
                raise _ApiError(400, BETA_MESSAGE, code="invalid_beta")
            thread_id, run_id = request.match_info.get("tid"), request.match_info.get("rid")
            if thread_id is not None and thread_id not in self.threads:
                raise _ApiError(404, f"No thread found with id '{thread_id}'.")
            run = self._runs.get(run_id or "")
            if run_id is not None and (run is None or run.data["thread_id"] != thread_id):
                raise _ApiError(404, f"No run found with id '{run_id}'.")
            return await handler(request)
        except _ApiError as exc:
            body = {
                "message": exc.message,
                "type": "invalid_request_error",
                "param": exc.param,
                "code": exc.code,
            }
            return web.json_response({"error": body}, status=exc.status)

    @staticmethod
    async def _read_json(request: web.Request) -> JSON:
        """The request's JSON object body, or {} when absent or malformed."""
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _active_run(self, thread_id: str) -> str | None:
        for run_id, run in self._runs.items():
            if run.data["thread_id"] == thread_id and run.data["status"] in ACTIVE:
                return run_id
        return None

    def _new_message(self, thread_id: str, body: Any, **extra: Any) -> JSON:
        """A stored Message from a create body {role, content, attachments?, metadata?}."""
        body = body if isinstance(body, dict) else {}
        role = body.get("role", "user")
        if role not in ("user", "assistant"):
            raise _ApiError(400, f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.")
        nulls = dict.fromkeys(
            ("completed_at", "incomplete_at", "incomplete_details", "assistant_id", "run_id")
        )
        return {
            "id": f"msg_{_hex()}",
            "object": "thread.message",
            "created_at": _now(),
            "thread_id": thread_id,
            "status": "completed",
            "role": role,
            "content": self._checked_files(_content(body.get("content"))),
            "attachments": self._attachments(body.get("attachments")),
            "metadata": body.get("metadata") or {},
            **nulls,
            **extra,
        }

    def _checked_files(self, blocks: list[JSON]) -> list[JSON]:
        """Content blocks whose image_file parts name uploaded files."""
        for block in blocks:
            if block["type"] == "image_file":
                file_id = (block.get("image_file") or {}).get("file_id")
                if file_id not in self.files:
                    raise _ApiError(400, f"Invalid 'image_file.file_id': no file with id '{file_id}'.")
        return blocks

    def _attachments(self, raw: Any) -> list[JSON]:
        """`attachments` as the API returns them: [{file_id, tools: [{type}]}], each file known."""
        attachments: list[JSON] = []
        for item in raw or []:
            file_id = item.get("file_id") if isinstance(item, dict) else None
            if file_id not in self.files:
                raise _ApiError(400, f"Invalid 'attachments.file_id': no file with id '{file_id}'.")
            tools = [t for t in item.get("tools") or [] if isinstance(t, dict)]
            if not tools or any(t.get("type") not in ATTACHMENT_TOOLS for t in tools):
                raise _ApiError(400, f"Invalid 'attachments.tools': expected types {ATTACHMENT_TOOLS}.")
            attachments.append({"file_id": file_id, "tools": [{"type": t["type"]} for t in tools]})
        return attachments

    def _index_attachments(self, thread_id: str, message: JSON) -> None:
        """file_search attachments go into the thread's vector store: the one it has, else a new one."""
        files = [a["file_id"] for a in message["attachments"] if {"type": "file_search"} in a["tools"]]
        if not files:
            return
        resources = self._thread_meta[thread_id]["tool_resources"]
        stores = resources.setdefault("file_search", {}).setdefault("vector_store_ids", [])
        if not stores:
            stores.append(f"vs_{_hex()}")
        self.vector_stores.setdefault(stores[0], []).extend(files)

    def _last_user_text(self, thread_id: str) -> str:
        for message in reversed(self.threads[thread_id]):
            if message["role"] == "user":
                return "".join(b["text"]["value"] for b in message["content"] if b.get("type") == "text")
        return ""

    # ---- threads, messages, assistants, files ----------------------------------------

    async def _create_thread(self, request: web.Request) -> web.Response:
        """POST /v1/threads {messages?, metadata?, tool_resources?}."""
        body = await self._read_json(request)
        thread_id = f"thread_{_hex()}"
        self.threads[thread_id] = [self._new_message(thread_id, m) for m in body.get("messages") or []]
        self._thread_meta[thread_id] = {
            "id": thread_id,
            "object": "thread",
            "created_at": _now(),
            "metadata": body.get("metadata") or {},
            "tool_resources": copy.deepcopy(body.get("tool_resources") or {}),
        }
        for message in self.threads[thread_id]:
            self._index_attachments(thread_id, message)
        return web.json_response(self._thread_meta[thread_id])

    async def _get_thread(self, request: web.Request) -> web.Response:
        return web.json_response(self._thread_meta[request.match_info["tid"]])

    async def _add_message(self, request: web.Request) -> web.Response:
        """POST /v1/threads/{tid}/messages: refused while a run is active on the thread."""
        thread_id = request.match_info["tid"]
        active = self._active_run(thread_id)
        if active is not None:
            raise _ApiError(400, f"Can't add messages to {thread_id} while a run {active} is active.")
        message = self._new_message(thread_id, await self._read_json(request))
        self.threads[thread_id].append(message)
        self._index_attachments(thread_id, message)
        return web.json_response(message)

    async def _list_messages(self, request: web.Request) -> web.Response:
        messages = self.threads[request.match_info["tid"]]
        if "run_id" in request.query:
            messages = [m for m in messages if m["run_id"] == request.query["run_id"]]
        return _page(messages, request)

    async def _get_assistant(self, request: web.Request) -> web.Response:
        assistant_id = request.match_info["aid"]
        if assistant_id not in self.assistants:
            raise _ApiError(404, f"No assistant found with id '{assistant_id}'.")
        fields = {"name": "Test assistant", "model": MODEL, "instructions": INSTRUCTIONS, "tools": []}
        return web.json_response(
            {"id": assistant_id, "object": "assistant", "created_at": 1700000000, "metadata": {}, **fields}
        )

    def _file_object(self, file_id: str) -> JSON:
        if file_id not in self.files:
            raise _ApiError(404, f"No such File object: {file_id}", param="id")
        filename, data = self.files[file_id]
        meta = self._file_meta.setdefault(file_id, {"purpose": "assistants_output", "created_at": _now()})
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "filename": filename,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
            **meta,
        }

    async def _upload_file(self, request: web.Request) -> web.Response:
        """POST /v1/files (multipart: file, purpose); refused while `fail_uploads` lasts."""
        form = await request.post()
        upload, purpose = form.get("file"), str(form.get("purpose", ""))
        if not isinstance(upload, web.FileField):
            raise _ApiError(400, "Missing required parameter: 'file'.", param="file")
        if purpose not in UPLOAD_PURPOSES:
            raise _ApiError(400, f"Invalid value for purpose: '{purpose}'.", param="purpose")
        if self.fail_uploads > 0:
            self.fail_uploads -= 1
            status, message = self.upload_error
            raise _ApiError(status, message, param="file")
        data = upload.file.read()
        file_id = self.add_file(upload.filename, data, purpose)
        self.uploads.append(
            {
                "id": file_id,
                "filename": upload.filename,
                "purpose": purpose,
                "content_type": upload.content_type,
                "data": data,
            }
        )
        return web.json_response(self._file_object(file_id))

    async def _get_file(self, request: web.Request) -> web.Response:
        return web.json_response(self._file_object(request.match_info["fid"]))

    async def _file_content(self, request: web.Request) -> web.Response:
        """GET /v1/files/{id}/content: user uploads (purpose `assistants`) cannot be downloaded."""
        file_id = request.match_info["fid"]
        purpose = self._file_object(file_id)["purpose"]
        if purpose == "assistants":
            raise _ApiError(400, f"Not allowed to download files of purpose: {purpose}")
        return web.Response(body=self.files[file_id][1], content_type="application/octet-stream")

    # ---- runs -----------------------------------------------------------------------

    async def _create_run(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/threads/{tid}/runs: validate, consume plans, then stream or run in the background."""
        body = await self._read_json(request)
        thread_id, assistant_id = request.match_info["tid"], body.get("assistant_id")
        if not assistant_id:
            raise _ApiError(400, "Missing required parameter: 'assistant_id'.", param="assistant_id")
        if assistant_id not in self.assistants:
            raise _ApiError(404, f"No assistant found with id '{assistant_id}'.")
        active = self._active_run(thread_id)
        if active is not None:
            raise _ApiError(400, f"Thread {thread_id} already has an active run {active}.")
        extra = [self._new_message(thread_id, m) for m in body.get("additional_messages") or []]
        self.threads[thread_id].extend(extra)
        for message in extra:
            self._index_attachments(thread_id, message)
        plans: deque[AssistantsPlan] = deque([self._plans.popleft() if self._plans else Say()])
        while isinstance(plans[-1], CallFunctions) and self._plans:
            plans.append(self._plans.popleft())
        instructions = body.get("instructions") or INSTRUCTIONS
        if body.get("additional_instructions"):
            instructions += "\n" + body["additional_instructions"]
        nulls = ("started_at", "cancelled_at", "failed_at", "completed_at", "required_action", "last_error")
        data: JSON = {
            "id": f"run_{_hex()}",
            "object": "thread.run",
            "created_at": _now(),
            "expires_at": _now() + 600,
            "assistant_id": assistant_id,
            "thread_id": thread_id,
            "status": "queued",
            "model": body.get("model") or MODEL,
            "instructions": instructions,
            "tools": body.get("tools") or [],
            "metadata": body.get("metadata") or {},
            "temperature": body.get("temperature", 1.0),
            "top_p": body.get("top_p", 1.0),
            "max_prompt_tokens": body.get("max_prompt_tokens"),
            "max_completion_tokens": body.get("max_completion_tokens"),
            "truncation_strategy": body.get("truncation_strategy") or {"type": "auto", "last_messages": None},
            "response_format": body.get("response_format") or "auto",
            "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            **dict.fromkeys((*nulls, "incomplete_details", "usage")),
        }
        run = self._runs[data["id"]] = _Run(data, plans)
        self.runs[data["id"]] = data
        opening = [("thread.run.created", data), ("thread.run.queued", data)]
        return await self._go(request, run, opening, bool(body.get("stream")))

    async def _list_runs(self, request: web.Request) -> web.Response:
        thread_id = request.match_info["tid"]
        return _page([r.data for r in self._runs.values() if r.data["thread_id"] == thread_id], request)

    async def _get_run(self, request: web.Request) -> web.Response:
        """GET a run; the first look at an in_progress non-streamed run lets it move on."""
        run = self._runs[request.match_info["rid"]]
        headers = (
            {"openai-poll-after-ms": str(self.poll_after_ms)} if self.poll_after_ms is not None else None
        )
        response = web.json_response(run.data, headers=headers)
        if run.data["status"] == "in_progress":
            run.seen.set()
        return response

    async def _list_steps(self, request: web.Request) -> web.Response:
        return _page(self._runs[request.match_info["rid"]].steps, request)

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        """POST .../submit_tool_outputs: all pending call ids in one request, then continue the run."""
        body = await self._read_json(request)
        run = self._runs[request.match_info["rid"]]
        status = run.data["status"]
        if status != "requires_action":
            raise _ApiError(400, f'Runs in status "{status}" do not accept tool outputs.')
        given = [o for o in body.get("tool_outputs") or [] if isinstance(o, dict)]
        outputs = {str(o.get("tool_call_id")): o.get("output") for o in given}
        if sorted(outputs) != sorted(run.pending):
            message = f"Expected tool outputs for call_ids {sorted(run.pending)}, got {sorted(outputs)}"
            raise _ApiError(400, message, param="tool_outputs")
        step = run.open.pop()
        for call in step["step_details"]["tool_calls"]:
            call["function"]["output"] = outputs[call["id"]]
        step.update(status="completed", completed_at=_now())
        run.pending = []
        run.data.update(status="queued", required_action=None)
        opening = [("thread.run.step.completed", step), ("thread.run.queued", run.data)]
        return await self._go(request, run, opening, bool(body.get("stream")))

    async def _cancel(self, request: web.Request) -> web.Response:
        """POST .../cancel: the run goes cancelling, then cancelled."""
        run = self._runs[request.match_info["rid"]]
        status = run.data["status"]
        if status not in ("queued", "in_progress", "requires_action"):
            raise _ApiError(400, f"Cannot cancel run with status '{status}'.")
        run.data["status"] = "cancelling"
        response = web.json_response(run.data)
        run.cancel.set()
        if not run.driving:
            self._spawn(self._cancelled(run))
        return response

    async def _go(
        self, request: web.Request, run: _Run, opening: list[tuple[str, JSON]], stream: bool
    ) -> web.StreamResponse:
        """Play the run into an SSE stream, or return the Run now and play it in the background."""
        run.driving = True  # before the task starts, so a cancel arriving first is left to it
        if not stream:
            response = web.json_response(run.data)
            self._spawn(self._drive(run, opening))
            return response
        sse = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await sse.prepare(request)
        run.sse = sse
        await asyncio.shield(self._spawn(self._drive(run, opening)))
        await run.write("event: done\ndata: [DONE]\n\n")
        run.sse = None
        try:
            await sse.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return sse

    async def _drive(self, run: _Run, opening: list[tuple[str, JSON]]) -> None:
        """Take the run from queued through in_progress to its next stop."""
        streamed = run.sse is not None
        try:
            for event, data in opening:
                await run.emit(event, data)
            await run.sleep(0)
            run.seen.clear()
            run.data.update(status="in_progress", started_at=run.data["started_at"] or _now())
            await run.emit("thread.run.in_progress", run.data)
            if not streamed:
                try:
                    await asyncio.wait_for(run.seen.wait(), IN_PROGRESS_HOLD)
                except TimeoutError:
                    pass
            await run.sleep(self.first_token_delay)
            plan = run.plans.popleft() if run.plans else (self._plans.popleft() if self._plans else Say())
            await self._play(run, plan)
            run.check()  # a cancel that arrived while the last frame was being written
        except _Cancelled:
            await self._cancelled(run)
        finally:
            run.driving = False

    async def _play(self, run: _Run, plan: AssistantsPlan) -> None:
        """Emit one plan's events and settle the run."""
        if isinstance(plan, Say):
            for kind in plan.steps:
                await self._tool_step(run, kind)
            echo = f"You said: {self._last_user_text(run.data['thread_id'])}"
            text = plan.text if plan.text is not None else echo
            await self._message(run, text, plan.chunks, plan.annotations, plan.image_file_ids, "completed")
            await self._finish(run, "completed", plan.usage)
        elif isinstance(plan, CallFunctions):
            await self._function_calls(run, plan)
        elif isinstance(plan, Fail):
            if plan.text:
                await self._message(run, plan.text, 2, [], [], "incomplete")
            await self._finish(run, "failed", None, last_error={"code": plan.code, "message": plan.message})
        elif isinstance(plan, Incomplete):
            if plan.text:
                await self._message(run, plan.text, 4, [], [], "incomplete")
            await self._finish(run, "incomplete", (10, 5), incomplete_details={"reason": plan.reason})
        elif isinstance(plan, Expire):
            await self._finish(run, "expired", None)
        elif isinstance(plan, StreamError):
            run.check()
            last_error = {"code": plan.code, "message": plan.message}
            run.data.update(status="failed", failed_at=_now(), last_error=last_error)
            await run.emit("error", dict(last_error))
        elif isinstance(plan, Hang):
            await run.cancel.wait()
            run.check()

    async def _finish(self, run: _Run, status: str, usage: tuple[int, int] | None, **fields: Any) -> None:
        """Set a terminal status (unless cancelled first) and emit thread.run.<status>."""
        run.check()
        stamp = {"completed": "completed_at", "failed": "failed_at"}.get(status)
        if stamp:
            fields[stamp] = _now()
        if usage:
            fields["usage"] = {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": sum(usage),
            }
        run.data.update(status=status, **fields)
        await run.emit(f"thread.run.{status}", run.data)

    async def _cancelled(self, run: _Run) -> None:
        """Emit cancelling, settle open messages/steps, then cancelled."""
        run.data["status"] = "cancelling"
        await run.emit("thread.run.cancelling", run.data)
        now = _now()
        for item in run.open:
            if item["object"] == "thread.message":
                item.update(
                    status="incomplete", incomplete_at=now, incomplete_details={"reason": "run_cancelled"}
                )
            else:
                item.update(status="cancelled", cancelled_at=now)
        run.open, run.pending = [], []
        run.data.update(status="cancelled", cancelled_at=now, required_action=None)
        await run.emit("thread.run.cancelled", run.data)

    def _step(self, run: _Run, details: JSON) -> JSON:
        """A new in_progress run step of the type in `details`."""
        nulls = ("cancelled_at", "completed_at", "expired_at", "failed_at", "last_error", "usage")
        step: JSON = {
            "id": f"step_{_hex()}",
            "object": "thread.run.step",
            "created_at": _now(),
            "assistant_id": run.data["assistant_id"],
            "thread_id": run.data["thread_id"],
            "run_id": run.data["id"],
            "type": details["type"],
            "status": "in_progress",
            "step_details": details,
            "metadata": {},
            **dict.fromkeys(nulls),
        }
        run.steps.append(step)
        run.open.append(step)
        return step

    async def _tool_step(self, run: _Run, kind: str) -> None:
        """A tool_calls step for a built-in tool: created, in_progress, completed."""
        body: JSON = {"input": "print('hello')", "outputs": []} if kind == "code_interpreter" else {}
        step = self._step(
            run, {"type": "tool_calls", "tool_calls": [{"id": f"call_{_hex()}", "type": kind, kind: body}]}
        )
        await run.emit("thread.run.step.created", step)
        await run.emit("thread.run.step.in_progress", step)
        await run.sleep(self.delta_delay)
        step.update(status="completed", completed_at=_now())
        run.open = []
        await run.emit("thread.run.step.completed", step)

    async def _function_calls(self, run: _Run, plan: CallFunctions) -> None:
        """A function tool_calls step, then requires_action (the stream ends there)."""
        calls: list[JSON] = []
        for name, arguments in plan.calls:
            function = {"name": name, "arguments": json.dumps(arguments)}
            calls.append({"id": f"call_{next(self._call_numbers)}", "type": "function", "function": function})
        details = [dict(c, function=dict(c["function"], output=None)) for c in calls]
        step = self._step(run, {"type": "tool_calls", "tool_calls": details})
        await run.emit("thread.run.step.created", step)
        await run.emit("thread.run.step.in_progress", step)
        run.check()
        run.pending = [c["id"] for c in calls]
        required = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}
        run.data.update(status="requires_action", required_action=required)
        await run.emit("thread.run.requires_action", run.data)

    async def _message(
        self, run: _Run, text: str, chunks: int, annotations: list[JSON], images: list[str], status: str
    ) -> None:
        """A message_creation step and an assistant message streamed as deltas, stored in the thread."""
        thread_id, run_id = run.data["thread_id"], run.data["id"]
        message = self._new_message(
            thread_id,
            {"role": "assistant", "content": ""},
            status="in_progress",
            run_id=run_id,
            assistant_id=run.data["assistant_id"],
            content=[],
        )
        self.threads[thread_id].append(message)
        run.open.append(message)
        step = self._step(
            run, {"type": "message_creation", "message_creation": {"message_id": message["id"]}}
        )
        await run.emit("thread.run.step.created", step)
        await run.emit("thread.run.step.in_progress", step)
        await run.emit("thread.message.created", message)
        await run.emit("thread.message.in_progress", message)
        placed = [_place(a, text) for a in annotations]
        pieces, end = _split(text, chunks), 0
        ends = list(itertools.accumulate(len(piece) for piece in pieces))
        # each annotation rides on the delta where its text ends
        where = [next(n for n, e in enumerate(ends) if min(a["end_index"], ends[-1]) <= e) for a in placed]
        for number, piece in enumerate(pieces):
            if number:
                await run.sleep(self.delta_delay)
            end = ends[number]
            here = [dict(a, index=i) for i, a in enumerate(placed) if where[i] == number]
            block = {"index": 0, "type": "text", "text": {"value": piece, "annotations": here}}
            await run.emit("thread.message.delta", self._delta(message, block))
            done = [a for i, a in enumerate(placed) if where[i] <= number]
            message["content"] = [_text_block(text[:end], copy.deepcopy(done))]
        for number, file_id in enumerate(images, start=1):
            image = {"type": "image_file", "image_file": {"file_id": file_id}}
            await run.emit("thread.message.delta", self._delta(message, dict(image, index=number)))
            message["content"].append(image)
        now = _now()
        if status == "completed":
            message.update(status="completed", completed_at=now)
        else:
            message.update(
                status="incomplete", incomplete_at=now, incomplete_details={"reason": "max_tokens"}
            )
        step.update(status="completed", completed_at=now)
        run.open = []
        await run.emit(f"thread.message.{status}", message)
        await run.emit("thread.run.step.completed", step)

    @staticmethod
    def _delta(message: JSON, block: JSON) -> JSON:
        return {"id": message["id"], "object": "thread.message.delta", "delta": {"content": [block]}}
