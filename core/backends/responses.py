"""The default backend: OpenAI Responses + Conversations (OpenAI and Azure OpenAI).

One Conversation (``conv_…``) per chat thread; one streamed response per turn with
``conversation=`` set, ``truncation="auto"`` and the profile's model, instructions and tools sent
every time (the API does not carry instructions over). Function calls are this client's job: the
calls of a response run concurrently, their outputs go back as ``function_call_output`` items, up
to ``max_tool_rounds`` times; the last round forbids more calls so no call is ever left unanswered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import openai

from core.backend import TurnInput
from core.backends.openai_errors import failure_from_code, failure_from_exception, reachability
from core.errors import BackendFailed, ConversationGone
from core.events import Citation, Event, Failure, FailureKind, Progress, TextDelta, Usage
from core.profiles import AssistantProfile
from core.tools import call_tool
from core.wording import tool_progress

log = logging.getLogger(__name__)

_LOCK_RETRIES = 5

_TOOL_ITEMS = {
    "code_interpreter_call": "code_interpreter",
    "file_search_call": "file_search",
    "web_search_call": "web_search",
    "image_generation_call": "image_generation",
}


class ResponsesBackend:
    """:class:`core.backend.Backend` over ``responses.create(stream=True, conversation=…)``."""

    name = "responses"

    def __init__(self, client: openai.AsyncOpenAI, *, max_tool_rounds: int = 8) -> None:
        self._client = client
        self._max_tool_rounds = max_tool_rounds

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
        items: list[dict[str, Any]] = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": turn.text}]}
        ]
        for round_no in range(self._max_tool_rounds + 1):
            last_round = round_no == self._max_tool_rounds
            calls: list[Any] = []
            failure: Failure | None = None
            try:
                stream = await self._create(
                    self._request(conversation_id, items, profile, allow_tools=not last_round)
                )
                async with stream:
                    async for event in stream:
                        for out in _translate(event, calls):
                            yield out
                            if isinstance(out, Failure):
                                failure = out
                        if failure:
                            break
            except openai.NotFoundError as exc:
                if round_no == 0 and "onversation" in str(exc):
                    raise ConversationGone(conversation_id) from exc
                failure = failure_from_exception(exc)
                yield failure
            except openai.OpenAIError as exc:
                failure = failure_from_exception(exc)
                yield failure
            if failure is not None:
                if round_no > 0:
                    await self._settle(conversation_id, items)
                return
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
        self, conversation_id: str, items: list[dict[str, Any]], profile: AssistantProfile, allow_tools: bool
    ) -> dict[str, Any]:
        tools = [*profile.hosted_tools, *(f.as_responses_tool() for f in profile.functions.values())]
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
        if profile.has_tool("code_interpreter"):
            request["include"] = ["code_interpreter_call.outputs"]
        if profile.max_output_tokens is not None:
            request["max_output_tokens"] = profile.max_output_tokens
        if profile.temperature is not None:
            request["temperature"] = profile.temperature
        return request

    async def check(self, profile: AssistantProfile) -> None:
        async with reachability(f"model or deployment {profile.model!r} not found"):
            await self._client.models.retrieve(profile.model or "")

    async def close(self) -> None:
        await self._client.close()


def _translate(event: Any, calls: list[Any]) -> list[Event]:
    """Map one Responses stream event to core events; collect finished function calls."""
    kind = getattr(event, "type", None)
    if kind in ("response.output_text.delta", "response.refusal.delta"):
        return [TextDelta(event.delta)] if event.delta else []
    if kind == "response.output_item.added":
        item = event.item
        if item.type == "function_call":
            return [Progress(tool_progress("function", item.name))]
        if item.type in _TOOL_ITEMS:
            return [Progress(tool_progress(_TOOL_ITEMS[item.type]))]
        return []
    if kind == "response.output_item.done":
        item = event.item
        if item.type == "function_call":
            calls.append(item)
        elif item.type in _TOOL_ITEMS:
            return [Progress(tool_progress(_TOOL_ITEMS[item.type]), done=True)]
        return []
    if kind == "response.output_text.annotation.added":
        citation = _citation(event.annotation)
        return [citation] if citation else []
    if kind == "response.completed":
        return _usage(event.response)
    if kind == "response.incomplete":
        response = event.response
        reason = getattr(response.incomplete_details, "reason", None)
        kinds = {
            "max_output_tokens": FailureKind.INCOMPLETE_OUTPUT_LIMIT,
            "content_filter": FailureKind.CONTENT_FILTERED,
        }
        failure = Failure(
            kinds.get(reason or "", FailureKind.INCOMPLETE_OTHER), f"incomplete reason={reason}"
        )
        return [*_usage(response), failure]
    if kind == "response.failed":
        error = event.response.error
        failure = failure_from_code(getattr(error, "code", None), getattr(error, "message", None))
        return [*_usage(event.response), failure]
    if kind == "error":
        return [failure_from_code(event.code, event.message)]
    return []


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
