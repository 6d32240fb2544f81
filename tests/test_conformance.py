"""One suite, both backends: the same scenarios through the core against each backend's fake.

A backend that cannot do a scenario says so with a skip and its reason, never by passing vacuously.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from core.backends.assistants import AssistantsBackend
from core.backends.responses import ResponsesBackend
from core.bridge import Bridge
from core.conversation import ConversationKey
from core.deliveries import RecentDeliveries
from core.events import Citation, FailureKind, FileOut, ImageOut, TextDelta
from core.messages import InboundMessage
from core.profiles import parse_profiles
from core.store import SqliteDictStore
from core.turns import TurnRunner
from tests.conftest import PROFILES
from tests.fakes import assistants_server as A
from tests.fakes import openai_server as R
from tests.recording import RecordingReply

KEY = ConversationKey("slack", "T1", "C1", "1.1")
PNG = b"\x89PNG\r\n\x1a\n fake image"
CSV = b"a,b\n1,2\n"


@dataclass
class World:
    """A bridge on one backend, and how to script that backend's fake for each scenario."""

    backend: str
    bridge: Bridge
    responses: R.FakeOpenAI | None = None
    assistants: A.FakeAssistants | None = None

    def skip_unless(self, backend: str, reason: str) -> None:
        if not self.backend.startswith(backend):
            pytest.skip(f"{self.backend}: {reason}")

    def text(self, text: str, **extra: Any) -> None:
        if self.responses:
            self.responses.enqueue(R.Reply(text, **extra))
        else:
            assert self.assistants
            self.assistants.enqueue(A.Say(text, **extra))

    def calls(self, calls: list[tuple[str, dict[str, Any]]], then: str) -> None:
        if self.responses:
            self.responses.enqueue(R.FunctionCalls(calls), R.Reply(then))
        else:
            assert self.assistants
            self.assistants.enqueue(A.CallFunctions(calls), A.Say(then))

    def tool_outputs(self) -> list[str]:
        if self.responses:
            return [
                i["output"]
                for r in self.responses.requests
                for i in r["input"]
                if i["type"] == "function_call_output"
            ]
        assert self.assistants
        return [o["output"] for r in self.assistants.tool_output_requests for o in r["tool_outputs"]]

    def failed(self) -> None:
        if self.responses:
            self.responses.enqueue(R.Failed("server_error", "secret internals"))
        else:
            assert self.assistants
            self.assistants.enqueue(A.Fail("server_error", "secret internals"))

    def rate_limited_then(self, text: str) -> None:
        if self.responses:
            self.responses.enqueue(R.HttpError(429, headers={"retry-after-ms": "20"}), R.Reply(text))
        else:
            assert self.assistants
            self.assistants.enqueue(A.Fail("rate_limit_exceeded", "slow down"), A.Say(text))

    def incomplete(self, partial: str) -> None:
        if self.responses:
            self.responses.enqueue(R.Incomplete("max_output_tokens", partial))
        else:
            assert self.assistants
            self.assistants.enqueue(A.Incomplete("max_completion_tokens", partial))

    def hang(self, on: bool) -> None:
        if self.responses:
            self.responses.first_token_delay = 30 if on else 0
        elif on:
            assert self.assistants
            self.assistants.enqueue(A.Hang())

    def backend_requests(self) -> int:
        if self.responses:
            return len(self.responses.requests)
        assert self.assistants
        return len(self.assistants.run_requests)


def bridge_for(backends: dict[str, Any], profile: dict[str, Any], tmp_path: Path) -> Bridge:
    raw = {"default": "general", "assistants": {"general": {**PROFILES["assistants"]["general"], **profile}}}
    return Bridge(
        profiles=parse_profiles(raw),
        backends=backends,
        store=SqliteDictStore(tmp_path / "store.sqlite"),
        deliveries=RecentDeliveries(),
        runner=TurnRunner(),
    )


@pytest.fixture(params=["responses", "assistants", "assistants-polled"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    if request.param == "responses":
        async with R.FakeOpenAI() as fake:
            client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=2)
            # With the code interpreter, as images and files out need it (assistants have it on their server).
            tools = [*PROFILES["assistants"]["general"]["tools"], {"type": "code_interpreter"}]
            bridge = bridge_for({"responses": ResponsesBackend(client)}, {"tools": tools}, tmp_path)
            yield World("responses", bridge, responses=fake)
            await bridge.close()
    else:
        async with A.FakeAssistants() as fake:
            fake.poll_after_ms = 20
            backend = AssistantsBackend(None, rate_limit_backoff=0.01, poll_start=0.01)
            profile = {
                "backend": "assistants",
                "assistant_id": "asst_test",
                "base_url": fake.base_url,
                "model": None,
                "stream": request.param == "assistants",
            }
            bridge = bridge_for({"assistants": backend}, profile, tmp_path)
            yield World(request.param, bridge, assistants=fake)
            await bridge.close()


_ids = iter(range(10**6))


async def say(world: World, text: str) -> RecordingReply:
    reply = RecordingReply()
    await world.bridge.accept(InboundMessage(KEY, "U1", text, (f"c{next(_ids)}",)), reply)
    return await reply.finished()


async def test_streamed_text(world: World) -> None:
    if world.backend == "assistants-polled":
        pytest.skip("assistants-polled: a polled run delivers the message whole, by design (stream = false)")
    world.text("Streaming works in four pieces.", chunks=4)
    reply = await say(world, "hi")
    assert reply.text == "Streaming works in four pieces."
    assert len(reply.of_type(TextDelta)) >= 2 and reply.failures == []


async def test_followup_keeps_the_conversation(world: World) -> None:
    await say(world, "first")
    reply = await say(world, "second")
    assert reply.text == "You said: second"
    if world.responses:
        assert len({r["conversation"] for r in world.responses.requests}) == 1
    else:
        assert world.assistants and len(world.assistants.threads) == 1


async def test_function_round_trip(world: World) -> None:
    world.calls([("get_weather", {"city": "Oslo"})], then="21 degrees in Oslo.")
    reply = await say(world, "weather?")
    assert reply.text == "21 degrees in Oslo."
    assert [json.loads(o) for o in world.tool_outputs()] == [{"city": "Oslo", "temperature": 21, "unit": "C"}]


async def test_two_parallel_calls_of_one_function_get_their_own_outputs(world: World) -> None:
    world.calls(
        [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome", "unit": "F"})], then="Both."
    )
    reply = await say(world, "two cities")
    assert reply.text == "Both." and reply.failures == []
    outputs = [json.loads(o) for o in world.tool_outputs()]
    assert [(o["city"], o["unit"]) for o in outputs] == [("Oslo", "C"), ("Rome", "F")]


async def test_image_out(world: World) -> None:
    if world.responses:
        world.text("Here is the chart.", images=[PNG])  # a code interpreter output (a data URL)
    else:
        assert world.assistants
        file_id = world.assistants.add_file("chart.png", PNG)
        world.text("Here is the chart.", image_file_ids=[file_id])
    reply = await say(world, "plot it")
    [image] = reply.of_type(ImageOut)
    assert image.data == PNG
    assert "Here is the chart." in reply.text


async def test_file_out_replaces_the_sandbox_link(world: World) -> None:
    link = "sandbox:/mnt/data/data.csv"
    text = f"Download [the data]({link}) now."
    if world.responses:
        world.responses.add_container_file("cntr_1", "cfile_1", "data.csv", CSV)
        citation = R.container_citation(text, link, "cntr_1", "cfile_1")
        world.text(text, chunks=6, container_id="cntr_1", annotations=[citation])
    else:
        assert world.assistants
        file_id = world.assistants.add_file("data.csv", CSV)
        world.text(text, chunks=6, annotations=[A.annotation("file_path", text, link, file_id)])
    reply = await say(world, "make a csv")
    [file] = reply.of_type(FileOut)
    assert file.data == CSV and file.filename == "data.csv"
    assert "sandbox:" not in reply.text
    assert reply.text == "Download the data (attached: data.csv) now."


async def test_citation(world: World) -> None:
    if world.responses:
        world.text(
            "See the handbook.",
            annotations=[
                {
                    "type": "url_citation",
                    "url": "https://example.com/h",
                    "title": "Handbook",
                    "start_index": 0,
                    "end_index": 3,
                }
            ],
        )
        reply = await say(world, "cite")
        assert reply.of_type(Citation) == [Citation("Handbook", url="https://example.com/h")]
        return
    assert world.assistants
    file_id = world.assistants.add_file("handbook.pdf", b"%PDF", purpose="assistants")
    marker = "【4:0†source】"
    text = f"Holidays are 25 days{marker}."
    world.text(text, chunks=5, annotations=[A.annotation("file_citation", text, marker, file_id)])
    reply = await say(world, "how many holidays?")
    assert reply.of_type(Citation) == [Citation("handbook.pdf", file_id=file_id)]
    assert reply.text == "Holidays are 25 days[1]."


async def test_failed_answer_is_one_clear_failure(world: World) -> None:
    world.failed()
    reply = await say(world, "hi")
    assert [f.kind for f in reply.failures] == [FailureKind.FAILED]
    assert "secret internals" not in reply.failures[0].user_message
    assert (await say(world, "again")).text == "You said: again"


async def test_rate_limit_then_success(world: World) -> None:
    world.rate_limited_then("Worth the wait.")
    reply = await say(world, "hi")
    assert reply.text == "Worth the wait." and reply.failures == []
    assert world.backend_requests() == 2


async def test_incomplete_answer_keeps_partial_text_and_says_why(world: World) -> None:
    world.incomplete("Half of it")
    reply = await say(world, "long")
    assert reply.text == "Half of it"
    assert [f.kind for f in reply.failures] == [FailureKind.INCOMPLETE_OUTPUT_LIMIT]


async def test_messages_arriving_mid_turn_are_answered_in_order(world: World) -> None:
    replies = [RecordingReply() for _ in range(3)]
    for n, reply in enumerate(replies):
        await world.bridge.accept(InboundMessage(KEY, "U1", f"message {n}", (f"m{n}{next(_ids)}",)), reply)
    for reply in replies:
        await reply.finished()
    assert [r.text for r in replies] == ["You said: message 0", "You said: message 1", "You said: message 2"]
    assert all(r.failures == [] for r in replies)


async def test_stop_cancels_and_the_thread_takes_new_messages(world: World) -> None:
    world.hang(True)
    running = RecordingReply()
    await world.bridge.accept(InboundMessage(KEY, "U1", "endless", (f"h{next(_ids)}",)), running)
    for _ in range(300):
        if world.backend_requests():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert world.bridge.stop(KEY)
    await running.finished()
    assert [f.kind for f in running.failures] == [FailureKind.STOPPED]
    world.hang(False)
    assert (await say(world, "after stop")).text == "You said: after stop"
    if world.assistants:
        assert world.assistants.count("POST", "/v1/threads/") and any(
            run["status"] == "cancelled" for run in world.assistants.runs.values()
        )
