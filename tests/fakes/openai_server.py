"""A loopback fake of the OpenAI Responses + Conversations API for offline tests.

`FakeOpenAI` is a real aiohttp server on 127.0.0.1 that speaks the wire protocol the
`openai` SDK expects (see FACTS.md sections 2 and 7.1): JSON errors shaped like the real
service, server-sent events for `stream: true`, a conversation store and the
`conversation_locked` rule. Tests script each `POST /v1/responses` with a plan
(`Reply`, `FunctionCalls`, `Failed`, `Incomplete`, `ErrorEvent`, `HttpError`).

Files both ways: `POST /v1/files` (multipart) keeps uploads in `files`; vector stores index
file batches (completed on the first poll unless `fail_indexing` names the file); files the code
interpreter made are registered with `add_container_file` and served from
`GET /v1/containers/{cid}/files/{fid}/content`. A `Reply` can run code that draws `images`
(returned as data URLs only with `include=["code_interpreter_call.outputs"]`) and carry
annotations (`container_citation`, `file_citation`, `url_citation` …), each announced right
after the delta that completes the text it covers.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import posixpath
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer

JSON = dict[str, Any]

LOCKED_MESSAGE = "Another process is currently operating on this conversation. Please retry in a few seconds."
TOOL_KINDS = ("code_interpreter", "file_search")
MAX_ITEMS_PER_CALL = 20


@dataclass
class Reply:
    """Stream a normal assistant message (text=None echoes the last user text).

    ``images``: the code interpreter runs first (in ``container_id``, or a fresh container) and
    draws these PNGs; its ``outputs`` carry them as data URLs when the request asked for them.
    """

    text: str | None = None
    chunks: int = 4
    usage: tuple[int, int] = (10, 5)
    annotations: list[JSON] = field(default_factory=list)
    tool_progress: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    container_id: str | None = None


@dataclass
class FunctionCalls:
    """The model asks for function calls: (name, arguments) pairs."""

    calls: list[tuple[str, JSON]]
    usage: tuple[int, int] = (10, 5)


@dataclass
class Failed:
    """The stream ends with `response.failed` carrying `error{code, message}`."""

    code: str = "server_error"
    message: str = "The server had an error"
    text_before: str = ""


@dataclass
class Incomplete:
    """The stream ends with `response.incomplete` and `incomplete_details.reason`."""

    reason: str = "max_output_tokens"
    text: str = "Partial answ"


@dataclass
class ErrorEvent:
    """The stream ends with a top-level `error` event."""

    code: str = "server_error"
    message: str = "Something broke"


@dataclass
class HttpError:
    """`POST /v1/responses` is answered with a non-200 JSON error and no stream."""

    status: int = 429
    code: str = "rate_limit_exceeded"
    message: str = "Rate limit reached"
    type: str = "requests"
    headers: dict[str, str] = field(default_factory=dict)


Plan = Reply | FunctionCalls | Failed | Incomplete | ErrorEvent | HttpError


@dataclass
class StoredFile:
    """A file uploaded with `POST /v1/files`."""

    id: str
    filename: str
    purpose: str
    data: bytes
    content_type: str
    created_at: int = field(default_factory=lambda: int(time.time()))

    def as_json(self) -> JSON:
        """The `FileObject`."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


def container_citation(text: str, raw: str, container_id: str, file_id: str, filename: str = "") -> JSON:
    """A `container_file_citation` covering ``raw`` (a sandbox link) in ``text``."""
    start = text.index(raw)
    return {
        "type": "container_file_citation",
        "container_id": container_id,
        "file_id": file_id,
        "filename": filename or posixpath.basename(raw.rstrip(")")),
        "start_index": start,
        "end_index": start + len(raw),
    }


def file_citation(file_id: str, filename: str, index: int) -> JSON:
    """A `file_citation` (a file_search result) at ``index``."""
    return {"type": "file_citation", "file_id": file_id, "filename": filename, "index": index}


def _anchor(annotation: JSON) -> int | None:
    """Where in the text an annotation ends (None: unknown, announce it after all the text)."""
    value = annotation.get("end_index", annotation.get("index"))
    return value if isinstance(value, int) else None


FILE_PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}


def _hex() -> str:
    """A random hex id suffix."""
    return uuid.uuid4().hex


def _split(text: str, parts: int) -> list[str]:
    """Split `text` into `parts` contiguous non-empty pieces (fewer if the text is shorter)."""
    count = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _usage(usage: tuple[int, int]) -> JSON:
    """A `ResponseUsage` object."""
    inp, out = usage
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inp + out,
    }


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OpenAI-style JSON error response."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _not_found(conv_id: str) -> web.Response:
    """The 404 the real service gives for an unknown conversation."""
    return _error(404, f"Conversation with id '{conv_id}' not found.")


def _conversation_id(value: Any) -> str | None:
    """The conversation id of a request: a string or `{"id": ...}`."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


def _normalise_input(raw: str | list[Any] | None) -> list[JSON]:
    """Turn a request `input` into a list of items (a string becomes one user message)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    items: list[JSON] = []
    for entry in raw:
        item = dict(entry)
        if item.get("type", "message") == "message":
            item["type"] = "message"
            if isinstance(item.get("content"), str):
                kind = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [{"type": kind, "text": item["content"]}]
        items.append(item)
    return items


def _stored(item: JSON) -> JSON:
    """A copy of an input item as a conversation stores it: with an id and a status."""
    stored = copy.deepcopy(item)
    prefixes = {"message": "msg", "function_call_output": "fco", "function_call": "fc"}
    prefix = prefixes.get(item["type"], "item")
    stored.setdefault("id", f"{prefix}_{_hex()}")
    stored.setdefault("status", "completed")
    return stored


def _last_user_text(items: list[JSON]) -> str:
    """The text of the last user `input_text` part among `items` ("" if none)."""
    text = ""
    for item in items:
        if item.get("type") == "message" and item.get("role") == "user":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_text":
                    text = str(part.get("text", ""))
    return text


class _Turn:
    """One response being produced: its Response object, output items and event counter."""

    def __init__(
        self,
        server: FakeOpenAI,
        body: JSON,
        conv_id: str | None,
        items: list[JSON],
        sse: web.StreamResponse | None,
        on_end: Callable[[_Turn], None],
    ) -> None:
        self.server = server
        self.conv_id = conv_id
        self.items = items
        self.sse = sse
        self.on_end = on_end
        self.seq = 0
        self.output: list[JSON] = []
        self.include: list[str] = list(body.get("include") or [])
        self.response: JSON = {
            "id": f"resp_{_hex()}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "background": False,
            "completed_at": None,
            "conversation": {"id": conv_id} if conv_id else None,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None,
            "metadata": body.get("metadata") or {},
            "model": body.get("model"),
            "output": [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": 1.0,
            "truncation": body.get("truncation") or "disabled",
            "usage": None,
            "user": None,
        }

    def snapshot(self) -> JSON:
        """The Response object as it stands now."""
        return dict(self.response, output=copy.deepcopy(self.output))

    async def emit(self, type_: str, **fields: Any) -> None:
        """Send one stream event (a no-op for non-streamed requests)."""
        event = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        if self.sse is not None:
            await self.sse.write(f"event: {type_}\ndata: {json.dumps(event)}\n\n".encode())

    async def finish(self, status: str, usage: tuple[int, int] | None) -> None:
        """Settle the response (store, unlock) and then send its terminal event."""
        self.response["status"] = status
        self.response["usage"] = _usage(usage) if usage else None
        if status == "completed":
            self.response["completed_at"] = int(time.time())
        self.response["output"] = copy.deepcopy(self.output)
        self.on_end(self)
        await self.emit(f"response.{status}", response=self.snapshot())

    async def message(self, text: str, chunks: int, annotations: list[JSON], status: str | None) -> None:
        """Stream an assistant message; status None stops after the deltas (a failure)."""
        index, item_id = len(self.output), f"msg_{_hex()}"
        item: JSON = {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        await self.emit("response.output_item.added", output_index=index, item=item)
        part: JSON = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        await self.emit("response.content_part.added", **where, part=part)
        waiting, shown = list(enumerate(annotations)), 0
        pieces = _split(text, chunks) if text else []
        for number, piece in enumerate(pieces):
            if number and self.server.delta_delay > 0:
                await asyncio.sleep(self.server.delta_delay)
            await self.emit("response.output_text.delta", **where, delta=piece, logprobs=[])
            shown += len(piece)
            last = number == len(pieces) - 1
            due = [(n, a) for n, a in waiting if last or (_anchor(a) is not None and _anchor(a) <= shown)]
            for n, annotation in due:
                await self.emit(
                    "response.output_text.annotation.added",
                    **where,
                    annotation_index=n,
                    annotation=annotation,
                )
            waiting = [entry for entry in waiting if entry not in due]
        for n, annotation in waiting:  # no text at all
            await self.emit(
                "response.output_text.annotation.added", **where, annotation_index=n, annotation=annotation
            )
        if status is None:
            return
        await self.emit("response.output_text.done", **where, text=text, logprobs=[])
        part = dict(part, text=text, annotations=list(annotations))
        await self.emit("response.content_part.done", **where, part=part)
        item = dict(item, status=status, content=[part])
        await self.emit("response.output_item.done", output_index=index, item=item)
        self.output.append(item)

    async def tool_item(
        self, kind: str, images: list[bytes] | None = None, container_id: str | None = None
    ) -> None:
        """Show a built-in tool working: code_interpreter_call (drawing ``images``) or file_search_call."""
        index = len(self.output)
        if kind == "code_interpreter":
            item: JSON = {
                "id": f"ci_{_hex()}",
                "type": "code_interpreter_call",
                "code": "print('hello')",
                "container_id": container_id or f"cntr_{_hex()}",
                "outputs": None,
                "status": "in_progress",
            }
            steps, event = ("in_progress", "interpreting", "completed"), "response.code_interpreter_call"
            outputs: list[JSON] = [{"type": "logs", "logs": "hello\n"}]
            outputs += [
                {"type": "image", "url": "data:image/png;base64," + base64.b64encode(image).decode()}
                for image in images or []
            ]
            done = {"outputs": outputs} if "code_interpreter_call.outputs" in self.include else {}
        else:
            item = {
                "id": f"fs_{_hex()}",
                "type": "file_search_call",
                "status": "in_progress",
                "queries": [_last_user_text(self.items)],
                "results": None,
            }
            steps, event = ("in_progress", "searching", "completed"), "response.file_search_call"
            done = {"results": []} if "file_search_call.results" in self.include else {}
        await self.emit("response.output_item.added", output_index=index, item=item)
        for step in steps:
            await self.emit(f"{event}.{step}", item_id=item["id"], output_index=index)
        item = dict(item, status="completed", **done)
        await self.emit("response.output_item.done", output_index=index, item=item)
        self.output.append(item)

    async def function_call(self, call_id: str, name: str, arguments: JSON) -> None:
        """Stream one function_call output item."""
        index, item_id, args = len(self.output), f"fc_{_hex()}", json.dumps(arguments)
        item: JSON = {
            "type": "function_call",
            "id": item_id,
            "call_id": call_id,
            "name": name,
            "arguments": "",
            "status": "in_progress",
        }
        await self.emit("response.output_item.added", output_index=index, item=item)
        for piece in _split(args, 2):
            await self.emit(
                "response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece
            )
        await self.emit(
            "response.function_call_arguments.done",
            item_id=item_id,
            output_index=index,
            name=name,
            arguments=args,
        )
        item = dict(item, arguments=args, status="completed")
        await self.emit("response.output_item.done", output_index=index, item=item)
        self.output.append(item)


class FakeOpenAI(LoopbackServer):
    """Loopback impersonation of the OpenAI Responses + Conversations API.

    Every `POST /v1/responses` consumes one enqueued plan (FIFO; `Reply()` echo when empty).
    Requests, calls and Authorization headers are recorded for assertions; uploads in `files`,
    vector stores (with their file ids) in `vector_stores`.
    """

    def __init__(self, first_token_delay: float = 0.0, delta_delay: float = 0.0) -> None:
        self.first_token_delay = first_token_delay
        self.delta_delay = delta_delay
        self.requests: list[JSON] = []
        self.conversations: dict[str, list[JSON]] = {}
        self.calls: list[tuple[str, str]] = []
        self.auth_headers: list[str] = []
        self._conv_meta: dict[str, JSON] = {}
        self._plans: deque[Plan] = deque()
        self._busy: set[str] = set()
        self._open_calls: set[str] = set()
        self._pending: dict[str, list[str]] = {}
        self._call_numbers = itertools.count(1)
        self._active: set[asyncio.Task[Any]] = set()
        self.files: dict[str, StoredFile] = {}
        self.vector_stores: dict[str, JSON] = {}
        self.index_polls = 1  # the GET of a file batch that finds it done
        self._upload_errors: dict[str, HttpError] = {}
        self._index_failures: set[str] = set()
        self._batches: dict[str, JSON] = {}
        self._container_files: dict[tuple[str, str], tuple[str, bytes]] = {}

    def fail_upload(self, filename: str, error: HttpError | None = None) -> None:
        """Answer the upload of ``filename`` with an error (500 server_error unless given)."""
        self._upload_errors[filename] = error or HttpError(
            500, "server_error", "Upload failed", "server_error"
        )

    def fail_indexing(self, filename: str) -> None:
        """Vector store batches end with ``filename`` failed."""
        self._index_failures.add(filename)

    def add_container_file(self, container_id: str, file_id: str, filename: str, data: bytes) -> None:
        """A file the code interpreter wrote in a container (downloadable until it expires)."""
        self._container_files[(container_id, file_id)] = (filename, data)

    def expire_container(self, container_id: str) -> None:
        """The container expired: its files are gone."""
        for key in [key for key in self._container_files if key[0] == container_id]:
            del self._container_files[key]

    @property
    def base_url(self) -> str:
        """The SDK base URL, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self._port}/v1"

    def enqueue(self, *plans: Plan) -> None:
        """Queue plans for the next `POST /v1/responses` requests, in order."""
        for plan in plans:
            if isinstance(plan, Reply) and any(kind not in TOOL_KINDS for kind in plan.tool_progress):
                raise ValueError(f"tool_progress entries must be in {TOOL_KINDS}: {plan.tool_progress}")
        self._plans.extend(plans)

    def count(self, method: str, path_prefix: str) -> int:
        """How many requests with this method had a path starting with `path_prefix`."""
        return sum(1 for m, path in self.calls if m == method.upper() and path.startswith(path_prefix))

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve."""
        # Uploads may be up to 512 MB (aiohttp refuses bodies over 1 MB unless told).
        app = web.Application(middlewares=[self._middleware], client_max_size=512 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{id}", self._model)
        app.router.add_post("/v1/conversations", self._create_conversation)
        app.router.add_get("/v1/conversations/{id}", self._get_conversation)
        app.router.add_get("/v1/conversations/{id}/items", self._list_items)
        app.router.add_post("/v1/conversations/{id}/items", self._add_items)
        app.router.add_post("/v1/responses", self._create_response)
        app.router.add_post("/v1/files", self._upload_file)
        app.router.add_get("/v1/files/{id}", self._get_file)
        app.router.add_get("/v1/files/{id}/content", self._file_content)
        app.router.add_post("/v1/vector_stores", self._create_vector_store)
        app.router.add_get("/v1/vector_stores/{id}", self._get_vector_store)
        batch = "/v1/vector_stores/{id}/file_batches"
        app.router.add_post(batch, self._create_batch)
        app.router.add_get(batch + "/{batch}", self._get_batch)
        app.router.add_get(batch + "/{batch}/files", self._batch_files)
        app.router.add_get("/v1/containers/{cid}/files/{fid}/content", self._container_file)
        # handler_cancellation: a client that hangs up ends its response at once, as on the real service.
        await self._serve(app, shutdown_timeout=0.5, handler_cancellation=True)

    async def close(self) -> None:
        """Stop serving; responses still being produced are cancelled."""
        for task in list(self._active):
            task.cancel()
        await self._stop()

    # ---- plumbing -------------------------------------------------------------------

    @staticmethod
    async def _read_json(request: web.Request) -> JSON:
        """The request's JSON object body, or {} when absent or malformed."""
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Record every call, then demand a bearer token."""
        self.calls.append((request.method, request.path))
        auth = request.headers.get("Authorization", "")
        self.auth_headers.append(auth)
        if request.method == "POST" and request.path == "/v1/responses":
            self.requests.append(await self._read_json(request))
        if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
            return _error(401, "Missing bearer", code="invalid_api_key")
        return await handler(request)

    # ---- models and conversations ---------------------------------------------------

    async def _model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{id}: gpt-test exists, anything else is 404 model_not_found."""
        model_id = request.match_info["id"]
        if model_id != "gpt-test":
            return web.json_response(
                {
                    "error": {
                        "message": f"The model '{model_id}' does not exist",
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": "model_not_found",
                    }
                },
                status=404,
            )
        return web.json_response({"id": model_id, "object": "model", "created": 0, "owned_by": "fake"})

    async def _models(self, request: web.Request) -> web.Response:
        """GET /v1/models: one model, gpt-test."""
        model = {"id": "gpt-test", "object": "model", "created": 1700000000, "owned_by": "openai"}
        return web.json_response({"object": "list", "data": [model]})

    def _too_many(self, items: Any) -> web.Response | None:
        """The 400 for a non-list or over-long `items` array, else None."""
        if not isinstance(items, list):
            return _error(400, "Invalid type for 'items': expected an array.", param="items")
        if len(items) > MAX_ITEMS_PER_CALL:
            return _error(
                400,
                f"Invalid 'items': array too long. Expected an array with maximum length "
                f"{MAX_ITEMS_PER_CALL}, but got an array with length {len(items)} instead.",
                param="items",
                code="array_above_max_length",
            )
        return None

    async def _create_conversation(self, request: web.Request) -> web.Response:
        """POST /v1/conversations {items?, metadata?}."""
        body = await self._read_json(request)
        items = body.get("items") or []
        metadata = body.get("metadata") or {}
        problem = self._too_many(items)
        if problem is not None:
            return problem
        if len(metadata) > 16:
            return _error(400, "Invalid 'metadata': too many properties (max 16).", param="metadata")
        conv_id = f"conv_{_hex()}"
        self._conv_meta[conv_id] = {
            "id": conv_id,
            "object": "conversation",
            "created_at": int(time.time()),
            "metadata": metadata,
        }
        self.conversations[conv_id] = [_stored(item) for item in _normalise_input(items)]
        return web.json_response(self._conv_meta[conv_id])

    async def _get_conversation(self, request: web.Request) -> web.Response:
        """GET /v1/conversations/{id}."""
        conv_id = request.match_info["id"]
        if conv_id not in self._conv_meta:
            return _not_found(conv_id)
        return web.json_response(self._conv_meta[conv_id])

    async def _list_items(self, request: web.Request) -> web.Response:
        """GET /v1/conversations/{id}/items?limit&after&order (order defaults to desc, like the service)."""
        conv_id = request.match_info["id"]
        if conv_id not in self.conversations:
            return _not_found(conv_id)
        items = list(self.conversations[conv_id])
        if request.query.get("order", "desc") == "desc":
            items.reverse()
        after = request.query.get("after")
        if after:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = items[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "has_more": len(items) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )

    async def _add_items(self, request: web.Request) -> web.Response:
        """POST /v1/conversations/{id}/items {items}."""
        conv_id = request.match_info["id"]
        if conv_id not in self.conversations:
            return _not_found(conv_id)
        items = (await self._read_json(request)).get("items")
        problem = self._too_many(items)
        if problem is not None:
            return problem
        added = [_stored(item) for item in _normalise_input(items)]
        self.conversations[conv_id].extend(added)
        answered = {item.get("call_id") for item in added if item.get("type") == "function_call_output"}
        self._open_calls -= answered
        self._pending[conv_id] = [c for c in self._pending.get(conv_id, []) if c not in answered]
        return web.json_response(
            {
                "object": "list",
                "data": added,
                "has_more": False,
                "first_id": added[0]["id"] if added else None,
                "last_id": added[-1]["id"] if added else None,
            }
        )

    # ---- files, vector stores, containers --------------------------------------------

    async def _upload_file(self, request: web.Request) -> web.Response:
        """POST /v1/files (multipart: file, purpose)."""
        form = await request.post()
        upload, purpose = form.get("file"), str(form.get("purpose", ""))
        if not isinstance(upload, web.FileField):
            return _error(400, "Missing required parameter: 'file'.", param="file")
        if purpose not in FILE_PURPOSES:
            return _error(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose")
        error = self._upload_errors.get(upload.filename)
        if error is not None:
            return _error(
                error.status, error.message, type_=error.type, code=error.code, headers=error.headers
            )
        stored = StoredFile(
            f"file-{_hex()[:24]}", upload.filename, purpose, upload.file.read(), upload.content_type
        )
        self.files[stored.id] = stored
        return web.json_response(stored.as_json())

    async def _get_file(self, request: web.Request) -> web.Response:
        """GET /v1/files/{id}."""
        stored = self.files.get(request.match_info["id"])
        if stored is None:
            return _error(404, f"No such File object: {request.match_info['id']}", param="id")
        return web.json_response(stored.as_json())

    async def _file_content(self, request: web.Request) -> web.Response:
        """GET /v1/files/{id}/content."""
        stored = self.files.get(request.match_info["id"])
        if stored is None:
            return _error(404, f"No such File object: {request.match_info['id']}", param="id")
        return web.Response(body=stored.data, content_type="application/octet-stream")

    def _vector_store_json(self, store_id: str) -> JSON:
        store = self.vector_stores[store_id]
        count = len(store["file_ids"])
        return {
            "id": store_id,
            "object": "vector_store",
            "created_at": store["created_at"],
            "name": store["name"],
            "metadata": store["metadata"],
            "status": "completed",
            "usage_bytes": sum(len(self.files[f].data) for f in store["file_ids"] if f in self.files),
            "last_active_at": store["created_at"],
            "file_counts": {
                "in_progress": 0,
                "completed": count,
                "failed": 0,
                "cancelled": 0,
                "total": count,
            },
            "expires_after": store["expires_after"],
            "expires_at": None,
        }

    async def _create_vector_store(self, request: web.Request) -> web.Response:
        """POST /v1/vector_stores {name?, metadata?, expires_after?, file_ids?}."""
        body = await self._read_json(request)
        store_id = f"vs_{_hex()[:24]}"
        self.vector_stores[store_id] = {
            "name": body.get("name") or "",
            "metadata": body.get("metadata") or {},
            "expires_after": body.get("expires_after"),
            "created_at": int(time.time()),
            "file_ids": list(body.get("file_ids") or []),
        }
        return web.json_response(self._vector_store_json(store_id))

    async def _get_vector_store(self, request: web.Request) -> web.Response:
        """GET /v1/vector_stores/{id}."""
        store_id = request.match_info["id"]
        if store_id not in self.vector_stores:
            return _error(404, f"No vector store found with id '{store_id}'.")
        return web.json_response(self._vector_store_json(store_id))

    def _batch_json(self, batch_id: str) -> JSON:
        batch = self._batches[batch_id]
        files = batch["files"]
        done = batch["polls"] >= self.index_polls
        failed = sum(1 for status in files.values() if status == "failed") if done else 0
        counts = {
            "in_progress": 0 if done else len(files),
            "completed": len(files) - failed if done else 0,
            "failed": failed,
            "cancelled": 0,
            "total": len(files),
        }
        return {
            "id": batch_id,
            "object": "vector_store.files_batch",
            "created_at": batch["created_at"],
            "vector_store_id": batch["vector_store_id"],
            "status": "completed" if done else "in_progress",
            "file_counts": counts,
        }

    async def _create_batch(self, request: web.Request) -> web.Response:
        """POST /v1/vector_stores/{id}/file_batches {file_ids}: indexing starts."""
        store_id = request.match_info["id"]
        if store_id not in self.vector_stores:
            return _error(404, f"No vector store found with id '{store_id}'.")
        file_ids = (await self._read_json(request)).get("file_ids") or []
        missing = [file_id for file_id in file_ids if file_id not in self.files]
        if missing or not file_ids:
            return _error(
                400, f"Files not found: {missing}" if missing else "file_ids is empty.", param="file_ids"
            )
        files = {
            file_id: "failed" if self.files[file_id].filename in self._index_failures else "completed"
            for file_id in file_ids
        }
        batch_id = f"vsfb_{_hex()[:24]}"
        self._batches[batch_id] = {
            "vector_store_id": store_id,
            "created_at": int(time.time()),
            "files": files,
            "polls": 0,
        }
        self.vector_stores[store_id]["file_ids"].extend(
            f for f, status in files.items() if status == "completed"
        )
        return web.json_response(self._batch_json(batch_id))

    def _batch(self, request: web.Request) -> JSON | None:
        batch = self._batches.get(request.match_info["batch"])
        return batch if batch is not None and batch["vector_store_id"] == request.match_info["id"] else None

    async def _get_batch(self, request: web.Request) -> web.Response:
        """GET /v1/vector_stores/{id}/file_batches/{batch}: each GET is one poll."""
        batch = self._batch(request)
        if batch is None:
            return _error(404, f"No file batch found with id '{request.match_info['batch']}'.")
        batch["polls"] += 1
        return web.json_response(self._batch_json(request.match_info["batch"]))

    async def _batch_files(self, request: web.Request) -> web.Response:
        """GET /v1/vector_stores/{id}/file_batches/{batch}/files?filter=."""
        batch = self._batch(request)
        if batch is None:
            return _error(404, f"No file batch found with id '{request.match_info['batch']}'.")
        wanted = request.query.get("filter")
        data = [
            {
                "id": file_id,
                "object": "vector_store.file",
                "created_at": batch["created_at"],
                "vector_store_id": batch["vector_store_id"],
                "status": status,
                "usage_bytes": 0,
                "last_error": (
                    {"code": "unsupported_file", "message": "The file could not be parsed."}
                    if status == "failed"
                    else None
                ),
            }
            for file_id, status in batch["files"].items()
            if wanted in (None, status)
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def _container_file(self, request: web.Request) -> web.Response:
        """GET /v1/containers/{cid}/files/{fid}/content: 404 once the container expired."""
        key = (request.match_info["cid"], request.match_info["fid"])
        if key not in self._container_files:
            return _error(404, f"Container file {key[1]} not found in container {key[0]}.")
        return web.Response(body=self._container_files[key][1], content_type="application/octet-stream")

    def _check_request_files(self, body: JSON, items: list[JSON]) -> str | None:
        """Why the request's tools or inputs are invalid (a code_interpreter needs a container;
        file ids must be uploaded files), else None."""
        for index, tool in enumerate(body.get("tools") or []):
            if isinstance(tool, dict) and tool.get("type") == "code_interpreter":
                container = tool.get("container")
                if not container:
                    return f"Missing required parameter: 'tools[{index}].container'."
                for file_id in container.get("file_ids", []) if isinstance(container, dict) else []:
                    if file_id not in self.files:
                        return f"File {file_id} not found."
        for item in items:
            for part in item.get("content") or [] if item.get("type") == "message" else []:
                file_id = part.get("file_id") if isinstance(part, dict) else None
                if file_id is not None and file_id not in self.files:
                    return f"File {file_id} not found."
        return None

    # ---- responses ------------------------------------------------------------------

    def _check_tool_outputs(self, conv_id: str | None, items: list[JSON]) -> str | None:
        """An error message if function_call_output items don't match open calls, else None."""
        given = [item.get("call_id") for item in items if item.get("type") == "function_call_output"]
        replayed = {item.get("call_id") for item in items if item.get("type") == "function_call"}
        for call_id in given:
            if call_id not in self._open_calls and call_id not in replayed:
                return f"No tool call found for function call output with call_id {call_id}."
        for call_id in self._pending.get(conv_id or "", []):
            if call_id not in given:
                return f"No tool output found for function call {call_id}."
        return None

    def _end_turn(self, turn: _Turn) -> None:
        """Unlock the conversation; store a completed or incomplete turn and track its calls."""
        if turn.conv_id is not None:
            self._busy.discard(turn.conv_id)
        if turn.response["status"] not in ("completed", "incomplete"):
            return
        answered = {item.get("call_id") for item in turn.items if item.get("type") == "function_call_output"}
        self._open_calls -= answered
        new_calls = [item["call_id"] for item in turn.output if item["type"] == "function_call"]
        self._open_calls.update(new_calls)
        if turn.conv_id is not None:
            self._pending[turn.conv_id] = new_calls
            self.conversations[turn.conv_id].extend(_stored(item) for item in turn.items)
            self.conversations[turn.conv_id].extend(copy.deepcopy(turn.output))

    async def _create_response(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/responses: validate, consume a plan, then stream or return the Response."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        conv_id = _conversation_id(body.get("conversation"))
        if conv_id is not None and conv_id not in self.conversations:
            return _not_found(conv_id)
        if conv_id is not None and conv_id in self._busy:
            return _error(400, LOCKED_MESSAGE, code="conversation_locked")
        if not body.get("model"):
            return _error(
                400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
            )
        raw = body.get("input")
        if raw is not None and not isinstance(raw, (str, list)):
            return _error(400, "Invalid type for 'input': expected a string or an array.", param="input")
        items = _normalise_input(raw)
        problem = self._check_tool_outputs(conv_id, items) or self._check_request_files(body, items)
        if problem is not None:
            return _error(400, problem, param="input")
        plan = self._plans.popleft() if self._plans else Reply()
        if isinstance(plan, HttpError):
            return _error(plan.status, plan.message, type_=plan.type, code=plan.code, headers=plan.headers)
        if conv_id is not None:
            self._busy.add(conv_id)
        task = asyncio.current_task()
        assert task is not None
        self._active.add(task)
        try:
            return await self._respond(request, body, conv_id, items, plan)
        finally:
            self._active.discard(task)
            if conv_id is not None:
                self._busy.discard(conv_id)

    async def _respond(
        self, request: web.Request, body: JSON, conv_id: str | None, items: list[JSON], plan: Plan
    ) -> web.StreamResponse:
        """Play `plan` as an SSE stream or as one JSON Response."""
        sse: web.StreamResponse | None = None
        if body.get("stream"):
            headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            sse = web.StreamResponse(headers=headers)
            await sse.prepare(request)
        turn = _Turn(self, body, conv_id, items, sse, self._end_turn)
        try:
            await self._play(turn, plan)
            if sse is not None:
                await sse.write_eof()
        except ConnectionResetError:  # the client went away mid-stream
            pass
        if sse is not None:
            return sse
        if isinstance(plan, ErrorEvent):
            return _error(500, plan.message, type_="server_error", code=plan.code)
        return web.json_response(turn.snapshot())

    async def _play(self, turn: _Turn, plan: Plan) -> None:
        """Emit the event sequence of one plan."""
        await turn.emit("response.created", response=turn.snapshot())
        await turn.emit("response.in_progress", response=turn.snapshot())
        if self.first_token_delay > 0:
            await asyncio.sleep(self.first_token_delay)
        if isinstance(plan, Reply):
            if plan.images:
                await turn.tool_item("code_interpreter", plan.images, plan.container_id)
            for kind in plan.tool_progress:
                await turn.tool_item(kind, container_id=plan.container_id)
            text = plan.text if plan.text is not None else f"You said: {_last_user_text(turn.items)}"
            await turn.message(text, plan.chunks, plan.annotations, "completed")
            await turn.finish("completed", plan.usage)
        elif isinstance(plan, FunctionCalls):
            for name, arguments in plan.calls:
                await turn.function_call(f"call_{next(self._call_numbers)}", name, arguments)
            await turn.finish("completed", plan.usage)
        elif isinstance(plan, Failed):
            if plan.text_before:
                await turn.message(plan.text_before, 4, [], None)
            turn.response["error"] = {"code": plan.code, "message": plan.message}
            await turn.finish("failed", None)
        elif isinstance(plan, Incomplete):
            await turn.message(plan.text, 4, [], "incomplete")
            turn.response["incomplete_details"] = {"reason": plan.reason}
            await turn.finish("incomplete", (10, 5))
        elif isinstance(plan, ErrorEvent):
            turn.on_end(turn)
            await turn.emit("error", code=plan.code, message=plan.message, param=None)
