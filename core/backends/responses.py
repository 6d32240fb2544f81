"""The default backend: OpenAI Responses + Conversations (OpenAI and Azure OpenAI).

One Conversation (``conv_…``) per chat thread; one streamed response per turn with
``conversation=`` set, ``truncation="auto"`` and the profile's model, instructions and tools sent
every time (the API does not carry instructions over). Function calls are this client's job: the
calls of a response run concurrently, their outputs go back as ``function_call_output`` items, up
to ``max_tool_rounds`` times; the last round forbids more calls so no call is ever left unanswered.

Files in: each file the user sent is uploaded (``purpose="user_data"``) and goes where the core
routed it: an ``input_image`` or ``input_file`` part of the user's message, the code interpreter's
container (``file_ids``), or the conversation's vector store, created on first use, kept in
``turn.resources`` and searched on every later turn. Files out: code interpreter images (data URLs,
sent only with ``include``) and ``container_file_citation`` files, downloaded at once because
containers expire; the dead ``sandbox:`` link becomes the delivered file's name. An image that
comes both ways is delivered once, preferring the cited file.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
import posixpath
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

import openai

from core.backend import TurnInput
from core.backends.annotations import _BARE_SANDBOX, AnnotatedText, unavailable
from core.backends.openai_errors import failure_from_code, failure_from_exception, reachability
from core.errors import BackendFailed, ConversationGone
from core.events import (
    Citation,
    Event,
    Failure,
    FailureKind,
    FileOut,
    ImageOut,
    Notice,
    Progress,
    TextDelta,
    Usage,
)
from core.files import FileRoute
from core.profiles import AssistantProfile
from core.tools import call_tool
from core.wording import (
    INDEX_FAILED,
    INDEX_SLOW,
    UPLOAD_FAILED,
    file_refused,
    indexing_file,
    tool_progress,
    uploading_file,
)

log = logging.getLogger(__name__)

_LOCK_RETRIES = 5
VECTOR_STORE = "vector_store_id"  # the conversation's vector store, in TurnInput.resources
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}


_TOOL_ITEMS = {
    "code_interpreter_call": "code_interpreter",
    "file_search_call": "file_search",
    "web_search_call": "web_search",
    "image_generation_call": "image_generation",
}


@dataclass
class _Turn:
    """What one turn has shown so far, across its responses."""

    calls: list[Any] = field(default_factory=list)
    text: dict[str, AnnotatedText] = field(default_factory=dict)  # per message item
    raw: dict[str, str] = field(default_factory=dict)  # per message item, as streamed
    citations: list[Citation] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # container file id -> text for its link
    links: dict[str, str] = field(default_factory=dict)  # file name -> text for its sandbox link
    cited_image_containers: set[str] = field(default_factory=set)
    images: list[tuple[str, ImageOut]] = field(default_factory=list)  # code outputs, held to the end


class ResponsesBackend:
    """:class:`core.backend.Backend` over ``responses.create(stream=True, conversation=…)``."""

    name = "responses"

    def __init__(
        self, client: openai.AsyncOpenAI, *, max_tool_rounds: int = 8, index_timeout: float = 60.0
    ) -> None:
        self._client = client
        self._max_tool_rounds = max_tool_rounds
        self._index_timeout = index_timeout

    async def open_conversation(self, profile: AssistantProfile) -> str:
        try:
            conversation = await self._client.conversations.create(
                metadata={"source": "assistant-bridge", "assistant": profile.name}
            )
        except openai.OpenAIError as exc:
            raise BackendFailed(failure_from_exception(exc)) from exc
        return conversation.id

    async def run_turn(
        self, conversation_id: str, turn: TurnInput, profile: AssistantProfile
    ) -> AsyncIterator[Event]:
        state = _Turn()
        failure: Failure | None = None
        async for out in self._rounds(conversation_id, turn, profile, state):
            if isinstance(out, Failure):
                failure = out  # the turn's files still come before it
            else:
                yield out
        for container_id, image in state.images:
            if container_id not in state.cited_image_containers:
                yield image
        if failure is not None:
            yield failure

    async def _rounds(
        self, conversation_id: str, turn: TurnInput, profile: AssistantProfile, state: _Turn
    ) -> AsyncIterator[Event]:
        content: list[dict[str, Any]] = [{"type": "input_text", "text": turn.text}]
        container_files: list[str] = []
        async for out in self._attach(conversation_id, turn, content, container_files):
            yield out
        tools = _tools(profile, container_files, turn.resources.get(VECTOR_STORE))
        items: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": content}]
        for round_no in range(self._max_tool_rounds + 1):
            last_round = round_no == self._max_tool_rounds
            state.calls = []
            failure: Failure | None = None
            try:
                stream = await self._create(
                    self._request(conversation_id, items, profile, tools, allow_tools=not last_round)
                )
                async with stream:
                    async for event in stream:
                        async for out in self._translate(event, state):
                            if isinstance(out, Failure):
                                failure = out
                            else:
                                yield out
                        if failure:
                            break
            except openai.NotFoundError as exc:
                if round_no == 0 and "onversation" in str(exc):
                    raise ConversationGone(conversation_id) from exc
                failure = failure_from_exception(exc)
            except openai.OpenAIError as exc:
                failure = failure_from_exception(exc)
            if failure is not None:
                for out in _flush(state):
                    yield out
                yield failure
                if round_no > 0:
                    await self._settle(conversation_id, items)
                return
            calls = state.calls
            if not calls:
                return
            outputs = await asyncio.gather(
                *(call_tool(dict(profile.functions), call.name, call.arguments) for call in calls)
            )
            items = [
                {"type": "function_call_output", "call_id": call.call_id, "output": output}
                for call, output in zip(calls, outputs, strict=True)
            ]
            for call in calls:
                yield Progress(tool_progress("function", call.name), done=True)
            if last_round:
                # The model ignored tool_choice="none"; answer the calls so the conversation stays usable.
                await self._settle(conversation_id, items)
                yield Failure(FailureKind.TOO_MANY_TOOL_ROUNDS, f"rounds={round_no + 1}")
                return

    # ---- files in -------------------------------------------------------------------

    async def _attach(
        self, conversation_id: str, turn: TurnInput, content: list[dict[str, Any]], container_files: list[str]
    ) -> AsyncIterator[Event]:
        """Upload the turn's files (concurrently) and put each where it was routed."""
        for index, part in enumerate(turn.files):
            if index not in turn.uploaded:
                yield Progress(uploading_file(part.name))
        file_ids = await asyncio.gather(*(self._upload(turn, index) for index in range(len(turn.files))))
        searchable: list[tuple[str, str]] = []
        for part, file_id in zip(turn.files, file_ids, strict=True):
            if file_id is None:
                yield Notice(file_refused(part.name, UPLOAD_FAILED))
            elif part.route is FileRoute.VISION:
                content.append({"type": "input_image", "file_id": file_id, "detail": "auto"})
            elif part.route is FileRoute.FILE_INPUT:
                content.append({"type": "input_file", "file_id": file_id})
            elif part.route is FileRoute.CODE_INTERPRETER:
                container_files.append(file_id)
            else:
                searchable.append((part.name, file_id))
        if searchable:
            async for out in self._index(conversation_id, turn.resources, searchable):
                yield out

    async def _upload(self, turn: TurnInput, index: int) -> str | None:
        if index in turn.uploaded:
            return turn.uploaded[index]
        part = turn.files[index]
        try:
            uploaded = await self._client.files.create(
                file=(part.name, part.data, part.upload_mime_type), purpose="user_data"
            )
        except openai.OpenAIError as exc:
            log.warning("upload failed file=%s error=%s", part.name, exc)
            return None
        turn.uploaded[index] = uploaded.id
        return uploaded.id

    async def _index(
        self, conversation_id: str, resources: dict[str, str], files: list[tuple[str, str]]
    ) -> AsyncIterator[Event]:
        """Add files to the conversation's vector store (made on first use) and wait until they
        can be searched: indexing has no stream, so the batch is polled."""
        for name, _ in files:
            yield Progress(indexing_file(name))
        problems: dict[str, str] = {}
        try:
            store_id = resources.get(VECTOR_STORE)
            if not store_id:
                store = await self._client.vector_stores.create(
                    name=f"assistant-bridge {conversation_id}", metadata={"conversation": conversation_id}
                )
                store_id = resources[VECTOR_STORE] = store.id
            batches = self._client.vector_stores.file_batches
            async with asyncio.timeout(self._index_timeout):
                batch = await batches.create_and_poll(
                    store_id, file_ids=[file_id for _, file_id in files], poll_interval_ms=250
                )
                if batch.file_counts.failed or batch.file_counts.cancelled:
                    async for vs_file in batches.list_files(batch.id, vector_store_id=store_id):
                        if vs_file.status in ("failed", "cancelled"):
                            problems[vs_file.id] = INDEX_FAILED
        except TimeoutError:
            log.warning("indexing still running after %.0fs", self._index_timeout)
            problems = {file_id: INDEX_SLOW for _, file_id in files}
        except openai.OpenAIError as exc:
            log.warning("indexing failed conversation=%s error=%s", conversation_id, exc)
            problems = {file_id: INDEX_FAILED for _, file_id in files}
        for name, file_id in files:
            if file_id in problems:
                yield Notice(file_refused(name, problems[file_id]))
            yield Progress(indexing_file(name), done=True)

    # ---- one response ---------------------------------------------------------------

    async def _create(self, request: dict[str, Any]) -> Any:
        """responses.create, waiting out ``conversation_locked``: the service may still hold the
        conversation for a moment after a stopped turn closed its stream (turns are serialised, so
        nothing else of ours holds it)."""
        delay = 0.25
        for attempt in range(_LOCK_RETRIES + 1):
            try:
                return await self._client.responses.create(**request, stream=True)
            except openai.BadRequestError as exc:
                if exc.code != "conversation_locked" or attempt == _LOCK_RETRIES:
                    raise
                log.info("conversation locked; retrying in %.2fs", delay)
                await asyncio.sleep(delay)
                delay *= 2

    async def _settle(self, conversation_id: str, outputs: list[dict[str, Any]]) -> None:
        """Store function outputs that no response took, so the conversation has no unanswered
        call (which would make every later turn fail)."""
        try:
            await self._client.conversations.items.create(conversation_id, items=outputs)  # type: ignore[arg-type]
        except openai.OpenAIError as exc:
            log.warning("could not store tool outputs conversation=%s error=%s", conversation_id, exc)

    def _request(
        self,
        conversation_id: str,
        items: list[dict[str, Any]],
        profile: AssistantProfile,
        tools: list[dict[str, Any]],
        allow_tools: bool,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": profile.model,
            "conversation": conversation_id,
            "input": items,
            "truncation": "auto",
        }
        if profile.instructions:
            request["instructions"] = profile.instructions
        if tools:
            request["tools"] = tools
            if not allow_tools:
                request["tool_choice"] = "none"
        if any(tool["type"] == "code_interpreter" for tool in tools):
            request["include"] = ["code_interpreter_call.outputs"]
        if profile.max_output_tokens is not None:
            request["max_output_tokens"] = profile.max_output_tokens
        if profile.temperature is not None:
            request["temperature"] = profile.temperature
        return request

    async def _translate(self, event: Any, state: _Turn) -> AsyncIterator[Event]:
        """Map one Responses stream event to core events; collect finished function calls."""
        kind = getattr(event, "type", None)
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            if event.delta:
                state.raw[event.item_id] = state.raw.get(event.item_id, "") + event.delta
                text = state.text.setdefault(event.item_id, AnnotatedText())
                _resolve_links(state, event.item_id)
                shown = text.feed(event.delta)
                if shown:
                    yield TextDelta(shown)
        elif kind == "response.output_text.annotation.added":
            if event.annotation is not None:
                async for out in self._annotation(event.annotation, event.item_id, state):
                    yield out
        elif kind == "response.output_item.added":
            item = event.item
            if item.type == "function_call":
                yield Progress(tool_progress("function", item.name))
            elif item.type in _TOOL_ITEMS:
                yield Progress(tool_progress(_TOOL_ITEMS[item.type]))
        elif kind == "response.output_item.done":
            item = event.item
            if item.type == "function_call":
                state.calls.append(item)
            elif item.type == "message":
                # Annotations the stream did not announce one by one are in the finished item.
                for part in item.content:
                    for annotation in getattr(part, "annotations", None) or []:
                        async for out in self._annotation(annotation, item.id, state):
                            yield out
                shown = state.text.pop(item.id).flush() if item.id in state.text else ""
                if shown:
                    yield TextDelta(shown)
            elif item.type in _TOOL_ITEMS:
                if item.type == "code_interpreter_call":
                    _collect_images(item, state)
                yield Progress(tool_progress(_TOOL_ITEMS[item.type]), done=True)
        elif kind == "response.completed":
            for out in [*_flush(state), *_usage(event.response)]:
                yield out
        elif kind == "response.incomplete":
            response = event.response
            reason = getattr(response.incomplete_details, "reason", None)
            kinds = {
                "max_output_tokens": FailureKind.INCOMPLETE_OUTPUT_LIMIT,
                "content_filter": FailureKind.CONTENT_FILTERED,
            }
            failure = Failure(
                kinds.get(reason or "", FailureKind.INCOMPLETE_OTHER), f"incomplete reason={reason}"
            )
            for out in [*_flush(state), *_usage(response), failure]:
                yield out
        elif kind == "response.failed":
            error = event.response.error
            failure = failure_from_code(getattr(error, "code", None), getattr(error, "message", None))
            for out in [*_flush(state), *_usage(event.response), failure]:
                yield out
        elif kind == "error":
            for out in [*_flush(state), failure_from_code(event.code, event.message)]:
                yield out

    # ---- files out ------------------------------------------------------------------

    async def _annotation(self, annotation: Any, item_id: str, state: _Turn) -> AsyncIterator[Event]:
        if annotation.type == "container_file_citation":
            if annotation.file_id not in state.files:
                file = await self._download(annotation.container_id, annotation.file_id, annotation.filename)
                if isinstance(file, ImageOut):
                    state.cited_image_containers.add(annotation.container_id)
                if file is not None:
                    yield file
                state.files[annotation.file_id] = (
                    f"attached: {annotation.filename}" if file else unavailable(annotation.filename)
                )
            state.links[annotation.filename] = state.files[annotation.file_id]
            _resolve_links(state, item_id)
            shown = state.text[item_id].feed("") if item_id in state.text else ""
            if shown:
                yield TextDelta(shown)
            return
        citation = _citation(annotation)
        if citation is not None and citation not in state.citations:
            state.citations.append(citation)
            yield citation

    async def _download(self, container_id: str, file_id: str, filename: str) -> ImageOut | FileOut | None:
        """A file the code interpreter wrote, fetched now: containers expire."""
        try:
            content = await self._client.containers.files.content.retrieve(file_id, container_id=container_id)
        except openai.OpenAIError as exc:
            log.warning("could not download container file %s/%s: %s", container_id, file_id, exc)
            return None
        mime_type = mimetypes.guess_type(filename)[0]
        if posixpath.splitext(filename.lower())[1] in _IMAGE_SUFFIXES:
            return ImageOut(content.content, filename, mime_type or "image/png")
        return FileOut(content.content, filename, mime_type or "application/octet-stream")

    async def check(self, profile: AssistantProfile) -> None:
        async with reachability(f"model or deployment {profile.model!r} not found"):
            await self._client.models.retrieve(profile.model or "")

    async def close(self) -> None:
        await self._client.close()


def _tools(
    profile: AssistantProfile, container_files: list[str], vector_store_id: str | None
) -> list[dict[str, Any]]:
    """The turn's tools: the profile's, the code interpreter's container holding the turn's files,
    file search also searching the conversation's own vector store."""
    tools: list[dict[str, Any]] = []
    for hosted in profile.hosted_tools:
        tool = dict(hosted)
        if tool["type"] == "code_interpreter":
            container = dict(tool.get("container") or {"type": "auto"})  # required by the API
            if container_files:
                container["file_ids"] = [*container.get("file_ids", []), *container_files]
            tool["container"] = container
        elif tool["type"] == "file_search" and vector_store_id:
            tool["vector_store_ids"] = [*tool["vector_store_ids"], vector_store_id]
        tools.append(tool)
    return tools + [f.as_responses_tool() for f in profile.functions.values()]


def _resolve_links(state: _Turn, item_id: str) -> None:
    """Point each sandbox link of a message at the file it names, once that file is known: the
    link and its citation may arrive in either order, and the link may be split across deltas."""
    text, raw = state.text.get(item_id), state.raw.get(item_id, "")
    if text is None or not state.links or "sandbox:" not in raw:
        return
    for match in _BARE_SANDBOX.finditer(raw):
        url = match.group(0)
        name = unquote(posixpath.basename(url))
        if url not in text.replacements and name in state.links:
            text.replace(url, state.links[name])


def _collect_images(item: Any, state: _Turn) -> None:
    """Keep the images a code interpreter call drew (data URLs) until the turn's end."""
    for output in item.outputs or []:
        if output.type != "image":
            continue
        header, _, payload = output.url.partition(",")
        if not header.startswith("data:"):
            log.warning("code interpreter image is not a data URL; skipped")
            continue
        mime_type = header[5:].split(";")[0] or "image/png"
        data = base64.b64decode(payload) if header.endswith(";base64") else unquote_to_bytes(payload)
        suffix = mimetypes.guess_extension(mime_type) or ".png"
        name = f"image-{len(state.images) + 1}{suffix}"
        state.images.append((item.container_id, ImageOut(data, name, mime_type)))


def _flush(state: _Turn) -> list[Event]:
    """Text still held back (a link without its citation) at the end of a response."""
    shown = "".join(text.flush() for text in state.text.values())
    state.text.clear()
    return [TextDelta(shown)] if shown else []


def _usage(response: Any) -> list[Event]:
    usage = getattr(response, "usage", None)
    if usage is None:
        return []
    return [Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)]


def _citation(annotation: Any) -> Citation | None:
    fields: dict[str, Any] = annotation if isinstance(annotation, dict) else vars(annotation)
    if fields.get("type") == "url_citation":
        return Citation(title=str(fields.get("title") or fields.get("url")), url=fields.get("url"))
    if fields.get("type") == "file_citation":
        return Citation(
            title=str(fields.get("filename") or fields.get("file_id")), file_id=fields.get("file_id")
        )
    return None
