"""The Assistants v2 backend (threads, messages, runs, run steps) for compatible servers.

OpenAI and Azure switched the Assistants API off on 2026-08-26; this backend serves self-hosted
compatible servers and teams migrating off it. One Assistants thread per chat thread. A turn adds
the user's message, then streams the run with the raw ``runs.create(stream=True)`` event stream
(the SDK's streaming helpers swallow ``error`` frames), answering ``requires_action`` with all tool
outputs in one ``submit_tool_outputs`` and streaming on. Profiles with ``stream = false`` poll the
run instead, starting at 100 ms and backing off, honouring ``openai-poll-after-ms``.

Files the user sent are uploaded (concurrently) before the message: images (purpose ``vision``)
become ``image_file`` parts of the message; the rest (purpose ``assistants``) ride as
``attachments`` for the code interpreter or for file search, which also stands in for file input
(attaching a document gives the thread its own vector store). A file that cannot be uploaded is
named in a notice and the rest of the message is still answered.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types import FilePurpose
from openai.types.beta.threads import MessageContentPartParam
from openai.types.beta.threads.message_create_params import Attachment, AttachmentTool

from core.backend import TurnInput
from core.backends.annotations import AnnotatedText
from core.backends.openai_errors import failure_from_code, failure_from_exception, reachability
from core.errors import BackendFailed, ConfigError, ConversationGone
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
from core.profiles import AssistantProfile, AssistantsSettings
from core.settings import secret_from_environment
from core.tools import call_tool
from core.wording import SHARED_STORE, UPLOAD_FAILED, file_refused, tool_progress

log = logging.getLogger(__name__)

# The SDK warns on every Assistants call; using this protocol on purpose is this module's job.
warnings.filterwarnings("ignore", message="The Assistants API is deprecated", category=DeprecationWarning)
warnings.filterwarnings("ignore", message="deprecated", category=DeprecationWarning, module=__name__)

_ACTIVE = {"queued", "in_progress", "requires_action", "cancelling"}
_STEP_TOOLS = {"code_interpreter": "code_interpreter", "file_search": "file_search"}
# Assistants has no file input: file_search reads documents (a vector store per thread).
_ATTACH_TOOL: dict[FileRoute, AttachmentTool] = {
    FileRoute.CODE_INTERPRETER: {"type": "code_interpreter"},
    FileRoute.FILE_SEARCH: {"type": "file_search"},
    FileRoute.FILE_INPUT: {"type": "file_search"},
}


@dataclass
class _Turn:
    """What one turn has shown so far: citations are numbered across the whole answer."""

    citations: list[Citation] = field(default_factory=list)
    file_names: dict[str, str] = field(default_factory=dict)
    text: dict[str, AnnotatedText] = field(default_factory=dict)
    images_sent: set[str] = field(default_factory=set)
    tools: set[str] = field(default_factory=set)  # hosted tools the message's attachments need


@dataclass
class _Message:
    """The user's message as the Assistants API takes it, and the files left out of it."""

    content: str | list[MessageContentPartParam]
    attachments: list[Attachment] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # notices, one per file
    tools: set[str] = field(default_factory=set)  # hosted tools the attachments need


class AssistantsBackend:
    """:class:`core.backend.Backend` over the Assistants v2 protocol."""

    name = "assistants"

    def __init__(
        self,
        default_client: openai.AsyncOpenAI | None,
        *,
        make_client: Callable[[str | None, str], openai.AsyncOpenAI] | None = None,
        rate_limit_retries: int = 2,
        max_tool_rounds: int = 8,
        rate_limit_backoff: float = 2.0,
        poll_start: float = 0.1,
        poll_max: float = 2.0,
    ) -> None:
        self._default = default_client
        self._make_client = make_client or _client_for
        self._clients: dict[tuple[str | None, str | None], openai.AsyncOpenAI] = {}
        self._rate_limit_retries = rate_limit_retries
        self._max_tool_rounds = max_tool_rounds
        self._rate_limit_backoff = rate_limit_backoff
        self._poll_start = poll_start
        self._poll_max = poll_max

    def _client(self, profile: AssistantProfile) -> openai.AsyncOpenAI:
        settings = _settings(profile)
        if settings.base_url is None and settings.api_key_env is None:
            if self._default is None:
                raise ConfigError(
                    "profile", profile.name, "set base_url and api_key_env for the assistants backend"
                )
            return self._default
        key = (settings.base_url, settings.api_key_env)
        if key not in self._clients:
            api_key = secret_from_environment(settings.api_key_env) if settings.api_key_env else None
            if settings.api_key_env and not api_key:
                raise ConfigError(
                    "environment", settings.api_key_env, f"not set (named by profile {profile.name})"
                )
            self._clients[key] = self._make_client(settings.base_url, api_key or "unused")
        return self._clients[key]

    async def open_conversation(self, profile: AssistantProfile) -> str:
        try:
            thread = await self._client(profile).beta.threads.create(
                metadata={"source": "assistant-bridge"}, **_thread_resources(profile)
            )
        except openai.OpenAIError as exc:
            raise BackendFailed(failure_from_exception(exc)) from exc
        return thread.id

    async def run_turn(
        self, conversation_id: str, turn: TurnInput, profile: AssistantProfile
    ) -> AsyncIterator[Event]:
        client = self._client(profile)
        message = await self._message(client, turn, profile)
        try:
            await self._add_message(client, conversation_id, message)
        except openai.NotFoundError as exc:
            raise ConversationGone(conversation_id) from exc
        except openai.OpenAIError as exc:
            yield failure_from_exception(exc)
            return
        for notice in message.refused:
            yield Notice(notice)
        state = _Turn(tools=message.tools)
        for attempt in range(self._rate_limit_retries + 1):
            run_id: str | None = None
            outcome: Failure | None = None
            shown = False  # a retry after visible output would show it twice
            try:
                async with aclosing(self._run(client, conversation_id, profile, state)) as events:
                    async for event in events:
                        if isinstance(event, str):
                            run_id = event
                            continue
                        if isinstance(event, Failure):
                            outcome = event
                            break
                        shown = shown or isinstance(event, TextDelta | ImageOut | FileOut)
                        yield event
            except asyncio.CancelledError:
                if run_id:
                    await asyncio.shield(self._cancel(client, conversation_id, run_id))
                raise
            except openai.OpenAIError as exc:
                outcome = failure_from_exception(exc)
            if outcome is None:
                return
            retry = not shown and attempt < self._rate_limit_retries
            if outcome.kind is FailureKind.RATE_LIMITED and retry:
                delay = outcome.retry_after or self._rate_limit_backoff * (2**attempt)
                log.info("assistants run rate limited; retry in %.1fs attempt=%d", delay, attempt + 1)
                await asyncio.sleep(delay)
                continue
            yield outcome
            return

    async def _message(
        self, client: openai.AsyncOpenAI, turn: TurnInput, profile: AssistantProfile
    ) -> _Message:
        """Upload the turn's files (all at once) and build the message that carries them."""
        message = _Message(content=turn.text)
        usable: list[int] = []  # indexes into turn.files
        for index, part in enumerate(turn.files):
            # A document attached for file_search joins the thread's vector store, which is the
            # profile's shared one when it names one: other users' threads would find the file.
            if part.route in (FileRoute.FILE_SEARCH, FileRoute.FILE_INPUT) and _thread_resources(profile):
                message.refused.append(file_refused(part.name, SHARED_STORE))
            else:
                usable.append(index)
        ids = await asyncio.gather(*(self._upload(client, turn, index) for index in usable))
        images: list[MessageContentPartParam] = []
        for index, file_id in zip(usable, ids, strict=True):
            part = turn.files[index]
            if file_id is None:
                message.refused.append(file_refused(part.name, UPLOAD_FAILED))
            elif part.route is FileRoute.VISION:
                images.append({"type": "image_file", "image_file": {"file_id": file_id, "detail": "auto"}})
            else:
                tool = _ATTACH_TOOL[part.route]
                message.attachments.append({"file_id": file_id, "tools": [tool]})
                message.tools.add(tool["type"])
        if images:
            message.content = [{"type": "text", "text": turn.text}, *images]
        return message

    async def _upload(self, client: openai.AsyncOpenAI, turn: TurnInput, index: int) -> str | None:
        if index in turn.uploaded:
            return turn.uploaded[index]
        part = turn.files[index]
        purpose: FilePurpose = "vision" if part.route is FileRoute.VISION else "assistants"
        try:
            uploaded = await client.files.create(
                file=(part.name, part.data, part.upload_mime_type), purpose=purpose
            )
        except openai.OpenAIError as exc:
            log.warning("could not upload %s (%d bytes): %s", part.name, len(part.data), exc)
            return None
        turn.uploaded[index] = uploaded.id
        return uploaded.id

    async def _add_message(self, client: openai.AsyncOpenAI, thread_id: str, message: _Message) -> None:
        extra: dict[str, Any] = {"attachments": message.attachments} if message.attachments else {}
        try:
            await client.beta.threads.messages.create(
                thread_id, role="user", content=message.content, **extra
            )
        except openai.BadRequestError as exc:
            if "while a run" not in str(exc):
                raise
            # A run left over (e.g. by a restart mid-turn) blocks the thread: end it, then add.
            await self._settle_active_run(client, thread_id)
            await client.beta.threads.messages.create(
                thread_id, role="user", content=message.content, **extra
            )

    async def _settle_active_run(self, client: openai.AsyncOpenAI, thread_id: str) -> None:
        runs = await client.beta.threads.runs.list(thread_id, limit=1)
        for run in runs.data:
            if run.status in _ACTIVE:
                await self._cancel(client, thread_id, run.id)

    async def _cancel(self, client: openai.AsyncOpenAI, thread_id: str, run_id: str) -> None:
        """Cancel a run and wait (bounded) until it has ended, so the thread takes messages again."""
        try:
            run = await client.beta.threads.runs.cancel(run_id, thread_id=thread_id)
            delay = self._poll_start
            for _ in range(50):
                if run.status not in _ACTIVE:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, self._poll_max)
                run = await client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        except openai.OpenAIError as exc:
            log.warning("could not cancel run %s: %s", run_id, exc)

    # One run, streamed or polled. Yields the run id (a str) first, then events; a Failure ends it.

    def _run(
        self, client: openai.AsyncOpenAI, thread_id: str, profile: AssistantProfile, state: _Turn
    ) -> AsyncGenerator[Event | str, None]:
        if _settings(profile).stream:
            return self._streamed_run(client, thread_id, profile, state)
        return self._polled_run(client, thread_id, profile, state)

    def _run_params(self, profile: AssistantProfile, state: _Turn) -> dict[str, Any]:
        settings = _settings(profile)
        params: dict[str, Any] = {"assistant_id": settings.assistant_id, **settings.run_controls}
        if profile.model:
            params["model"] = profile.model
        if profile.instructions:
            params["instructions"] = profile.instructions
        if profile.temperature is not None:
            params["temperature"] = profile.temperature
        tools = [
            *profile.hosted_tools_for_assistants(),
            *(f.as_assistants_tool() for f in profile.functions.values()),
        ]
        if tools:
            # ``tools`` replaces the assistant's own for the run: keep the ones attachments need.
            have = {tool["type"] for tool in tools}
            tools += [{"type": kind} for kind in sorted(state.tools - have)]
            params["tools"] = tools
        return params

    async def _streamed_run(
        self, client: openai.AsyncOpenAI, thread_id: str, profile: AssistantProfile, state: _Turn
    ) -> AsyncGenerator[Event | str, None]:
        stream: Any = await client.beta.threads.runs.create(
            thread_id, stream=True, **self._run_params(profile, state)
        )
        rounds = 0
        while stream is not None:
            next_stream: Any = None
            async with stream:
                async for event in stream:
                    kind = event.event
                    if kind == "thread.run.created":
                        yield event.data.id
                    elif kind == "thread.run.requires_action":
                        rounds += 1
                        if rounds > self._max_tool_rounds:
                            await self._cancel(client, thread_id, event.data.id)
                            yield Failure(FailureKind.TOO_MANY_TOOL_ROUNDS, f"rounds={rounds}")
                            return
                        outputs = await self._tool_outputs(event.data, profile)
                        for name in _call_names(event.data):
                            yield Progress(tool_progress("function", name), done=True)
                        next_stream = await client.beta.threads.runs.submit_tool_outputs(
                            event.data.id, thread_id=thread_id, tool_outputs=outputs, stream=True
                        )
                        break
                    else:
                        async for out in self._translate(client, kind, event.data, state, profile):
                            yield out
            stream = next_stream

    async def _polled_run(
        self, client: openai.AsyncOpenAI, thread_id: str, profile: AssistantProfile, state: _Turn
    ) -> AsyncGenerator[Event | str, None]:
        run = await client.beta.threads.runs.create(thread_id, **self._run_params(profile, state))
        yield run.id
        delay = self._poll_start
        rounds = 0
        while True:
            if run.status == "requires_action":
                rounds += 1
                if rounds > self._max_tool_rounds:
                    await self._cancel(client, thread_id, run.id)
                    yield Failure(FailureKind.TOO_MANY_TOOL_ROUNDS, f"rounds={rounds}")
                    return
                outputs = await self._tool_outputs(run, profile)
                for name in _call_names(run):
                    yield Progress(tool_progress("function", name), done=True)
                run = await client.beta.threads.runs.submit_tool_outputs(
                    run.id, thread_id=thread_id, tool_outputs=outputs
                )
                delay = self._poll_start
                continue
            if run.status not in _ACTIVE:
                break
            await asyncio.sleep(delay)
            response = await client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=thread_id)
            run = response.parse()
            hint = response.headers.get("openai-poll-after-ms")
            delay = float(hint) / 1000 if hint and hint.isdigit() else min(delay * 2, self._poll_max)
        if run.status in ("completed", "incomplete"):
            messages = await client.beta.threads.messages.list(
                thread_id, order="desc", limit=20, run_id=run.id
            )
            for message in reversed(messages.data):
                if message.role == "assistant":
                    async for out in self._translate(
                        client, "thread.message.completed", message, state, profile
                    ):
                        yield out
        async for out in self._translate(client, f"thread.run.{run.status}", run, state, profile):
            yield out

    async def _tool_outputs(self, run: Any, profile: AssistantProfile) -> list[Any]:
        """All calls of one requires_action, answered together and matched by call id."""
        calls = run.required_action.submit_tool_outputs.tool_calls
        functions = dict(profile.functions)
        outputs = await asyncio.gather(
            *(call_tool(functions, call.function.name, call.function.arguments) for call in calls)
        )
        return [
            {"tool_call_id": call.id, "output": output} for call, output in zip(calls, outputs, strict=True)
        ]

    async def _translate(
        self, client: openai.AsyncOpenAI, kind: str, data: Any, state: _Turn, profile: AssistantProfile
    ) -> AsyncIterator[Event]:
        if kind == "thread.message.delta":
            for block in data.delta.content or []:
                if block.type == "text" and block.text is not None:
                    text = state.text.setdefault(data.id, AnnotatedText())
                    for annotation in block.text.annotations or []:
                        async for out in self._annotation(client, annotation, text, state):
                            yield out
                    shown = text.feed(block.text.value or "")
                    if shown:
                        yield TextDelta(shown)
                elif block.type == "image_file" and block.image_file and block.image_file.file_id:
                    async for out in self._image(client, block.image_file.file_id, state):
                        yield out
        elif kind == "thread.message.completed":
            streamed = state.text.pop(data.id, None)
            text = streamed or AnnotatedText()
            shown = ""
            if streamed is None:  # polled: the whole message at once
                for block in data.content:
                    if block.type == "text":
                        for annotation in block.text.annotations:
                            async for out in self._annotation(client, annotation, text, state):
                                yield out
                        shown += text.feed(block.text.value)
                    elif block.type == "image_file":
                        async for out in self._image(client, block.image_file.file_id, state):
                            yield out
                    elif block.type == "refusal":
                        shown += text.feed(block.refusal)
            shown += text.flush()
            if shown:
                yield TextDelta(shown)
        elif kind in ("thread.run.step.created", "thread.run.step.completed"):
            details = data.step_details
            if details.type == "tool_calls":
                for call in details.tool_calls:
                    if call.type in _STEP_TOOLS:
                        yield Progress(tool_progress(_STEP_TOOLS[call.type]), done=kind.endswith("completed"))
                    elif call.type == "function" and kind.endswith("created"):
                        yield Progress(tool_progress("function", call.function.name))
        elif kind == "thread.run.completed":
            if data.usage:
                yield Usage(data.usage.prompt_tokens, data.usage.completion_tokens)
        elif kind == "thread.run.incomplete":
            if data.usage:
                yield Usage(data.usage.prompt_tokens, data.usage.completion_tokens)
            reason = getattr(data.incomplete_details, "reason", None)
            kind_ = (
                FailureKind.INCOMPLETE_OUTPUT_LIMIT
                if reason == "max_completion_tokens"
                else (
                    FailureKind.CONTEXT_TOO_LONG
                    if reason == "max_prompt_tokens"
                    else FailureKind.INCOMPLETE_OTHER
                )
            )
            yield Failure(kind_, f"incomplete reason={reason}")
        elif kind == "thread.run.failed":
            error = data.last_error
            yield failure_from_code(getattr(error, "code", None), getattr(error, "message", None))
        elif kind == "thread.run.cancelled":
            yield Failure(FailureKind.STOPPED, "run cancelled")
        elif kind == "thread.run.expired":
            yield Failure(FailureKind.TIMEOUT, "run expired")
        elif kind == "error":
            yield failure_from_code(getattr(data, "code", None), getattr(data, "message", None))

    async def _annotation(
        self, client: openai.AsyncOpenAI, annotation: Any, text: AnnotatedText, state: _Turn
    ) -> AsyncIterator[Event]:
        raw = annotation.text or ""
        if annotation.type == "file_citation" and annotation.file_citation:
            file_id = annotation.file_citation.file_id
            citation = Citation(title=await self._file_name(client, file_id, state), file_id=file_id)
            if citation not in state.citations:
                state.citations.append(citation)
                yield citation
            text.replace(raw, f"[{state.citations.index(citation) + 1}]")
        elif annotation.type == "file_path" and annotation.file_path:
            file_id = annotation.file_path.file_id
            name = posixpath.basename(raw) or await self._file_name(client, file_id, state)
            try:
                content = await client.files.content(file_id)
                yield FileOut(data=content.content, filename=name)
                text.replace(raw, f"attached: {name}")
            except openai.OpenAIError as exc:
                log.warning("could not download generated file %s: %s", file_id, exc)

    async def _image(self, client: openai.AsyncOpenAI, file_id: str, state: _Turn) -> AsyncIterator[Event]:
        if file_id in state.images_sent:
            return
        state.images_sent.add(file_id)
        try:
            content = await client.files.content(file_id)
        except openai.OpenAIError as exc:
            log.warning("could not download image %s: %s", file_id, exc)
            return
        yield ImageOut(data=content.content, filename=f"{file_id}.png")

    async def _file_name(self, client: openai.AsyncOpenAI, file_id: str, state: _Turn) -> str:
        if file_id not in state.file_names:
            try:
                state.file_names[file_id] = (await client.files.retrieve(file_id)).filename
            except openai.OpenAIError:
                state.file_names[file_id] = file_id
        return state.file_names[file_id]

    async def check(self, profile: AssistantProfile) -> None:
        settings = _settings(profile)
        async with reachability(f"assistant {settings.assistant_id!r} not found"):
            await self._client(profile).beta.assistants.retrieve(settings.assistant_id)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        if self._default is not None:
            await self._default.close()


def _settings(profile: AssistantProfile) -> AssistantsSettings:
    if profile.assistants is None:
        raise ConfigError("profile", profile.name, 'is not an assistants profile (backend = "assistants")')
    return profile.assistants


def _thread_resources(profile: AssistantProfile) -> dict[str, Any]:
    """file_search vector stores belong to the thread in Assistants v2, not to each run."""
    stores = [
        vs
        for tool in profile.hosted_tools
        if tool["type"] == "file_search"
        for vs in tool["vector_store_ids"]
    ]
    return {"tool_resources": {"file_search": {"vector_store_ids": stores}}} if stores else {}


def _call_names(run: Any) -> list[str]:
    return [call.function.name for call in run.required_action.submit_tool_outputs.tool_calls]


def _client_for(base_url: str | None, api_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key)
