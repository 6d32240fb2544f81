"""The Responses backend through the core, with the real openai client against the fake server."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from core.backend import TurnInput
from core.backends.responses import ResponsesBackend
from core.bridge import Bridge
from core.conversation import ConversationKey
from core.deliveries import RecentDeliveries
from core.events import Citation, Done, Event, FailureKind, FileOut, ImageOut, Notice, Progress, Usage
from core.files import FilePart, FileRoute
from core.messages import InboundMessage
from core.profiles import ProfileSet, parse_profiles
from core.store import SqliteDictStore
from core.turns import TurnRunner
from tests.conftest import PROFILES
from tests.fakes.openai_server import (
    ErrorEvent,
    Failed,
    FakeOpenAI,
    FunctionCalls,
    HttpError,
    Incomplete,
    Reply,
    container_citation,
    file_citation,
)
from tests.recording import RecordingReply

KEY = ConversationKey("slack", "T1", "C1", "100.1")


def make_bridge(
    fake: FakeOpenAI, profiles: ProfileSet, tmp_path: Path, *, retries: int = 0, max_tool_rounds: int = 8
) -> Bridge:
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=retries)
    return Bridge(
        profiles=profiles,
        backends={"responses": ResponsesBackend(client, max_tool_rounds=max_tool_rounds)},
        store=SqliteDictStore(tmp_path / "store.sqlite"),
        deliveries=RecentDeliveries(),
        runner=TurnRunner(),
    )


_ids = iter(range(10**6))


@dataclass
class MemoryFile:
    """A file a user sent, already downloaded (the platforms' downloads have their own tests)."""

    name: str
    data: bytes
    mime_type: str = ""

    @property
    def size(self) -> int:
        return len(self.data)

    async def read(self, limit: int) -> bytes:
        return self.data


async def ask(
    bridge: Bridge, text: str, key: ConversationKey = KEY, files: tuple[MemoryFile, ...] = ()
) -> RecordingReply:
    reply = RecordingReply()
    message = InboundMessage(key=key, user_id="U1", text=text, delivery_ids=(f"id{next(_ids)}",), files=files)
    await bridge.accept(message, reply)
    return await reply.finished()


@pytest.fixture
async def core(fake_openai: FakeOpenAI, profiles: ProfileSet, tmp_path: Path):
    bridge = make_bridge(fake_openai, profiles, tmp_path)
    yield bridge
    await bridge.close()


async def test_streamed_text_usage_and_done(core: Bridge, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply("Four words in total.", chunks=4, usage=(12, 4)))
    reply = await ask(core, "hi")
    assert reply.text == "Four words in total."
    assert reply.of_type(Usage) == [Usage(12, 4)]
    assert isinstance(reply.events[0], Progress)  # "Thinking…" before anything else
    assert isinstance(reply.events[-1], Done) and len(reply.of_type(Done)) == 1
    assert reply.failures == []


async def test_function_tool_round_trip(core: Bridge, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(FunctionCalls([("get_weather", {"city": "Oslo"})]), Reply("It is 21 °C in Oslo."))
    reply = await ask(core, "weather in Oslo?")
    assert reply.text == "It is 21 °C in Oslo."
    second = fake_openai.requests[1]
    [output] = second["input"]
    assert output["type"] == "function_call_output"
    assert json.loads(output["output"]) == {"city": "Oslo", "temperature": 21, "unit": "C"}
    assert second["conversation"] == fake_openai.requests[0]["conversation"]
    tools = {t["name"]: t for t in fake_openai.requests[0]["tools"]}
    assert tools["get_weather"]["parameters"]["required"] == ["city"]
    assert tools["get_weather"]["description"] == "Current weather for a city."
    assert "Calling get_weather…" in [p.label for p in reply.of_type(Progress)]
    assert reply.of_type(Usage) == [Usage(10, 5), Usage(10, 5)]


async def test_parallel_calls_unknown_function_exception_and_timeout_become_error_outputs(
    core: Bridge, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        FunctionCalls(
            [
                ("get_weather", {"city": "A"}),
                ("get_weather", {"city": "B"}),
                ("no_such_function", {}),
                ("broken_tool", {}),
                ("slow_tool", {"seconds": 5}),
                ("get_weather", {"wrong": 1}),
            ]
        ),
        Reply("Done."),
    )
    reply = await ask(core, "do everything")
    assert reply.text == "Done."
    outputs = [json.loads(item["output"]) for item in fake_openai.requests[1]["input"]]
    assert outputs[0]["city"] == "A" and outputs[1]["city"] == "B"
    assert "unknown function" in outputs[2]["error"]
    assert "database is down" in outputs[3]["error"]
    assert "did not finish within 0.2 seconds" in outputs[4]["error"]
    assert "failed" in outputs[5]["error"]
    call_ids = [item["call_id"] for item in fake_openai.requests[1]["input"]]
    assert len(set(call_ids)) == 6


async def test_tool_rounds_are_bounded_and_last_round_forbids_tools(
    fake_openai: FakeOpenAI, profiles: ProfileSet, tmp_path: Path
) -> None:
    bridge = make_bridge(fake_openai, profiles, tmp_path, max_tool_rounds=2)
    fake_openai.enqueue(*[FunctionCalls([("get_weather", {"city": "X"})]) for _ in range(3)])
    reply = await ask(bridge, "loop forever")
    assert [f.kind for f in reply.failures] == [FailureKind.TOO_MANY_TOOL_ROUNDS]
    assert fake_openai.requests[2]["tool_choice"] == "none"
    # Every call was answered, so the conversation is still usable.
    followup = await ask(bridge, "still there?")
    assert followup.text == "You said: still there?"
    await bridge.close()


async def test_rate_limit_then_success_honours_retry_after(
    fake_openai: FakeOpenAI, profiles: ProfileSet, tmp_path: Path
) -> None:
    bridge = make_bridge(fake_openai, profiles, tmp_path, retries=2)
    fake_openai.enqueue(HttpError(429, headers={"retry-after-ms": "50"}), Reply("Made it."))
    reply = await ask(bridge, "hi")
    assert reply.text == "Made it." and reply.failures == []
    assert fake_openai.count("POST", "/v1/responses") == 2
    await bridge.close()


async def test_rate_limit_exhausted_tells_user_when_to_retry(core: Bridge, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(HttpError(429, headers={"retry-after": "20"}))
    reply = await ask(core, "hi")
    [failure] = reply.failures
    assert failure.kind is FailureKind.RATE_LIMITED and failure.retry_after == 20
    assert failure.user_message == (
        "The assistant is getting too many requests right now. Please try again in 20 seconds."
    )
    assert "Rate limit reached" not in failure.user_message


@pytest.mark.parametrize(
    ("plan", "kind"),
    [
        (Failed("server_error", "boom"), FailureKind.FAILED),
        (Failed("rate_limit_exceeded", "slow down"), FailureKind.RATE_LIMITED),
        (ErrorEvent("server_error", "broken"), FailureKind.FAILED),
        (Incomplete("max_output_tokens", "Partial"), FailureKind.INCOMPLETE_OUTPUT_LIMIT),
        (Incomplete("content_filter", "Par"), FailureKind.CONTENT_FILTERED),
        (
            HttpError(400, "context_length_exceeded", "too long", "invalid_request_error"),
            FailureKind.CONTEXT_TOO_LONG,
        ),
        (HttpError(500, "server_error", "oops", "server_error"), FailureKind.UNAVAILABLE),
        (HttpError(401, "invalid_api_key", "bad key", "invalid_request_error"), FailureKind.MISCONFIGURED),
    ],
)
async def test_backend_failures_end_in_one_clear_failure(
    core: Bridge, fake_openai: FakeOpenAI, plan, kind
) -> None:
    fake_openai.enqueue(plan)
    reply = await ask(core, "hi")
    assert [f.kind for f in reply.failures] == [kind]
    assert len(reply.of_type(Done)) == 1
    # The thread keeps working after a failure.
    assert (await ask(core, "again")).text == "You said: again"


async def test_incomplete_answer_keeps_partial_text(core: Bridge, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Incomplete("max_output_tokens", "The first half"))
    reply = await ask(core, "long story")
    assert reply.text == "The first half"
    assert reply.failures[0].user_message.startswith("(The answer was cut short")


async def test_citations_become_events(core: Bridge, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        Reply(
            "See the docs.",
            annotations=[
                {
                    "type": "url_citation",
                    "url": "https://example.com/a",
                    "title": "Docs",
                    "start_index": 0,
                    "end_index": 3,
                },
            ],
        )
    )
    reply = await ask(core, "cite")
    assert reply.of_type(Citation) == [Citation(title="Docs", url="https://example.com/a")]


async def test_hosted_tool_progress(core: Bridge, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply("ok", tool_progress=["code_interpreter", "file_search"]))
    reply = await ask(core, "analyse")
    labels = [(p.label, p.done) for p in reply.of_type(Progress)]
    assert ("Running code…", False) in labels and ("Running code…", True) in labels
    assert ("Searching files…", False) in labels


async def test_conversation_unknown_to_backend_starts_a_new_one(
    core: Bridge, fake_openai: FakeOpenAI
) -> None:
    await ask(core, "first")
    fake_openai.conversations.clear()  # the backend lost it (deleted, or another project's key)
    reply = await ask(core, "second")
    assert reply.text == "You said: second"
    assert fake_openai.count("POST", "/v1/conversations") == 2


async def test_restart_keeps_the_mapping(
    fake_openai: FakeOpenAI, profiles: ProfileSet, tmp_path: Path
) -> None:
    bridge = make_bridge(fake_openai, profiles, tmp_path)
    await ask(bridge, "before restart")
    await bridge.close()
    restarted = make_bridge(fake_openai, profiles, tmp_path)
    await ask(restarted, "after restart")
    await restarted.close()
    assert fake_openai.count("POST", "/v1/conversations") == 1
    assert len({r["conversation"] for r in fake_openai.requests}) == 1


async def test_conversation_create_failure_is_reported(core: Bridge, fake_openai: FakeOpenAI) -> None:
    await fake_openai.close()
    reply = await ask(core, "anyone there?")
    assert [f.kind for f in reply.failures] == [FailureKind.UNAVAILABLE]


async def test_failure_after_tool_calls_leaves_the_conversation_usable(
    core: Bridge, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        FunctionCalls([("get_weather", {"city": "Rome"})]),
        HttpError(500, "server_error", "down", "server_error"),
    )
    reply = await ask(core, "weather?")
    assert [f.kind for f in reply.failures] == [FailureKind.UNAVAILABLE]
    followup = await ask(core, "try again")
    assert followup.text == "You said: try again" and followup.failures == []


async def test_turns_cut_off_by_shutdown_tell_their_users(core: Bridge, fake_openai: FakeOpenAI) -> None:
    fake_openai.first_token_delay = 5
    running, queued = RecordingReply(), RecordingReply()
    await core.accept(InboundMessage(KEY, "U1", "slow", ("s1",)), running)
    await core.accept(InboundMessage(KEY, "U2", "waiting", ("s2",)), queued)
    await fake_openai_request_seen(fake_openai)
    assert await core.drain(0.2) == 1
    for reply in (running, queued):
        await reply.finished()
        assert [f.kind for f in reply.failures] == [FailureKind.SHUTTING_DOWN]
        assert reply.failures[0].user_message.startswith("The assistant is restarting")
    refused = RecordingReply()
    await core.accept(InboundMessage(KEY, "U3", "too late", ("s3",)), refused)
    assert [f.kind for f in (await refused.finished()).failures] == [FailureKind.SHUTTING_DOWN]


async def fake_openai_request_seen(fake: FakeOpenAI) -> None:
    for _ in range(500):
        if fake.requests:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no request reached the fake")


async def test_stop_cancels_the_running_turn_and_the_thread_goes_on(
    core: Bridge, fake_openai: FakeOpenAI
) -> None:
    fake_openai.first_token_delay = 5
    running = RecordingReply()
    await core.accept(InboundMessage(KEY, "U1", "write a novel", ("n1",)), running)
    await fake_openai_request_seen(fake_openai)
    stop_reply = RecordingReply()
    await core.accept(InboundMessage(KEY, "U1", "Stop", ("n2",)), stop_reply)
    await running.finished()
    assert [f.kind for f in running.failures] == [FailureKind.STOPPED]
    assert running.failures[0].user_message == "Stopped."
    assert stop_reply.events == []  # the stopped answer says it; the stop itself needs no reply
    fake_openai.first_token_delay = 0
    assert (await ask(core, "short one")).text == "You said: short one"


async def test_stop_with_nothing_running_says_so(core: Bridge) -> None:
    reply = await ask(core, "stop")
    assert [e.text for e in reply.of_type(Notice)] == ["Nothing is running in this thread."]


async def test_conversation_locked_is_waited_out_not_shown(core: Bridge, fake_openai: FakeOpenAI) -> None:
    locked = HttpError(
        400,
        "conversation_locked",
        "Another process is currently operating on this conversation.",
        "invalid_request_error",
    )
    fake_openai.enqueue(locked, locked, Reply("Got through."))
    reply = await ask(core, "hi")
    assert reply.text == "Got through." and reply.failures == []


# ---- files both ways ---------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n a chart"
CSV_IN = b"city,temp\nOslo,21\nRome,30\n"
CSV_OUT = b"city,mean\nOslo,21\n"
PDF = b"%PDF-1.7 handbook"


def profiles_with(*tools: dict[str, Any]) -> ProfileSet:
    general = {**PROFILES["assistants"]["general"], "tools": list(tools)}
    return parse_profiles({"default": "general", "assistants": {"general": general}})


@pytest.fixture
async def analyst(fake_openai: FakeOpenAI, tmp_path: Path):
    bridge = make_bridge(fake_openai, profiles_with({"type": "code_interpreter"}), tmp_path)
    yield bridge
    await bridge.close()


def tool(request: dict[str, Any], kind: str) -> dict[str, Any]:
    [found] = [t for t in request["tools"] if t["type"] == kind]
    return found


def user_parts(request: dict[str, Any]) -> list[dict[str, Any]]:
    [message] = [i for i in request["input"] if i.get("type") == "message"]
    return message["content"]


async def test_csv_in_goes_to_the_container_and_a_chart_and_a_csv_come_back(
    analyst: Bridge, fake_openai: FakeOpenAI
) -> None:
    link = "sandbox:/mnt/data/summary.csv"
    text = f"Here is the chart, and [the summary]({link}) too."
    fake_openai.add_container_file("cntr_1", "cfile_1", "summary.csv", CSV_OUT)
    fake_openai.enqueue(
        Reply(
            text,
            chunks=len(text),  # one character per delta: the link arrives in pieces
            images=[PNG],
            container_id="cntr_1",
            annotations=[container_citation(text, link, "cntr_1", "cfile_1")],
        )
    )
    reply = await ask(analyst, "chart the temperatures", files=(MemoryFile("temps.csv", CSV_IN, "text/csv"),))

    [upload] = fake_openai.files.values()
    assert (upload.filename, upload.purpose, upload.data) == ("temps.csv", "user_data", CSV_IN)
    [request] = fake_openai.requests
    assert tool(request, "code_interpreter")["container"] == {"type": "auto", "file_ids": [upload.id]}
    assert request["include"] == ["code_interpreter_call.outputs"]
    assert user_parts(request) == [{"type": "input_text", "text": "chart the temperatures"}]
    assert reply.of_type(ImageOut) == [ImageOut(PNG, "image-1.png", "image/png")]
    assert reply.of_type(FileOut) == [FileOut(CSV_OUT, "summary.csv", "text/csv")]
    assert reply.text == "Here is the chart, and the summary (attached: summary.csv) too."
    assert "Uploading temps.csv…" in [p.label for p in reply.of_type(Progress)]
    assert reply.failures == []


async def test_a_chart_both_drawn_and_cited_is_delivered_once(
    analyst: Bridge, fake_openai: FakeOpenAI
) -> None:
    link = "sandbox:/mnt/data/chart.png"
    text = f"![chart]({link})"
    fake_openai.add_container_file("cntr_2", "cfile_2", "chart.png", PNG)
    fake_openai.enqueue(
        Reply(
            text,
            images=[PNG],
            container_id="cntr_2",
            annotations=[container_citation(text, link, "cntr_2", "cfile_2")],
        )
    )
    reply = await ask(analyst, "plot it")
    assert reply.of_type(ImageOut) == [ImageOut(PNG, "chart.png", "image/png")]
    assert "sandbox:" not in reply.text


async def test_a_file_that_cannot_be_downloaded_is_named_not_linked(
    analyst: Bridge, fake_openai: FakeOpenAI
) -> None:
    link = "sandbox:/mnt/data/report.csv"
    text = f"Download [the report]({link})."
    # Never registered: the container expired before the download.
    fake_openai.enqueue(
        Reply(text, chunks=5, annotations=[container_citation(text, link, "cntr_x", "cfile_x")])
    )
    reply = await ask(analyst, "report please")
    assert reply.text == "Download the report (file report.csv could not be delivered)."
    assert reply.of_type(FileOut) == [] and reply.failures == []


async def test_a_failed_upload_is_named_and_the_text_still_answered(
    analyst: Bridge, fake_openai: FakeOpenAI
) -> None:
    fake_openai.fail_upload("broken.csv")
    files = (MemoryFile("broken.csv", b"x"), MemoryFile("fine.csv", CSV_IN))
    reply = await ask(analyst, "compare them", files=files)
    assert [n.text for n in reply.of_type(Notice)] == [
        "⚠️ I could not use broken.csv: the upload to the assistant failed."
    ]
    assert reply.text == "You said: compare them" and reply.failures == []
    [fine] = fake_openai.files.values()
    assert tool(fake_openai.requests[0], "code_interpreter")["container"]["file_ids"] == [fine.id]


async def test_a_pdf_is_indexed_once_per_conversation_and_searched_on_later_turns(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    profiles = profiles_with({"type": "file_search", "vector_store_ids": ["vs_team"]})
    bridge = make_bridge(fake_openai, profiles, tmp_path)
    reply = await ask(bridge, "summarise", files=(MemoryFile("handbook.pdf", PDF, "application/pdf"),))
    [store_id] = fake_openai.vector_stores
    labels = [(p.label, p.done) for p in reply.of_type(Progress)]
    assert ("Indexing handbook.pdf…", False) in labels and ("Indexing handbook.pdf…", True) in labels
    assert tool(fake_openai.requests[0], "file_search")["vector_store_ids"] == ["vs_team", store_id]
    assert user_parts(fake_openai.requests[0]) == [{"type": "input_text", "text": "summarise"}]

    await ask(bridge, "and this one?", files=(MemoryFile("policy.pdf", b"%PDF policy"),))
    assert fake_openai.calls.count(("POST", "/v1/vector_stores")) == 1
    assert fake_openai.calls.count(("POST", f"/v1/vector_stores/{store_id}/file_batches")) == 2
    assert len(fake_openai.vector_stores[store_id]["file_ids"]) == 2

    handbook = next(f for f in fake_openai.files.values() if f.filename == "handbook.pdf")
    fake_openai.enqueue(Reply("25 days.", annotations=[file_citation(handbook.id, "handbook.pdf", 8)]))
    followup = await ask(bridge, "how many holidays?")
    assert tool(fake_openai.requests[2], "file_search")["vector_store_ids"] == ["vs_team", store_id]
    assert followup.of_type(Citation) == [Citation("handbook.pdf", file_id=handbook.id)]
    assert followup.text == "25 days."
    await bridge.close()


async def test_the_vector_store_is_kept_in_the_turn_resources(fake_openai: FakeOpenAI) -> None:
    profile = profiles_with({"type": "file_search", "vector_store_ids": ["vs_team"]}).default
    backend = ResponsesBackend(openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="t", max_retries=0))
    conversation = await backend.open_conversation(profile)

    async def turn(resources: dict[str, str], name: str) -> list[Event]:
        part = FilePart(name, "application/pdf", PDF, FileRoute.FILE_SEARCH)
        turn = TurnInput("read it", "U1", files=(part,), resources=resources)
        return [event async for event in backend.run_turn(conversation, turn, profile)]

    resources: dict[str, str] = {}
    await turn(resources, "a.pdf")
    assert resources == {"vector_store_id": next(iter(fake_openai.vector_stores))}
    await turn(resources, "b.pdf")
    assert len(fake_openai.vector_stores) == 1 and fake_openai.calls.count(("POST", "/v1/vector_stores")) == 1
    await backend.close()


async def test_a_file_that_cannot_be_indexed_is_named(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    profiles = profiles_with({"type": "file_search", "vector_store_ids": ["vs_team"]})
    bridge = make_bridge(fake_openai, profiles, tmp_path)
    fake_openai.fail_indexing("scan.pdf")
    files = (MemoryFile("scan.pdf", b"%PDF scan"), MemoryFile("text.pdf", PDF))
    reply = await ask(bridge, "read both", files=files)
    assert [n.text for n in reply.of_type(Notice)] == [
        "⚠️ I could not use scan.pdf: it could not be prepared for search."
    ]
    assert reply.text == "You said: read both"
    await bridge.close()


async def test_a_pdf_without_file_search_is_a_file_input(
    fake_openai: FakeOpenAI, profiles: ProfileSet, tmp_path: Path
) -> None:
    bridge = make_bridge(fake_openai, profiles, tmp_path)
    await ask(bridge, "summarise", files=(MemoryFile("paper.pdf", PDF),))
    [upload] = fake_openai.files.values()
    assert upload.purpose == "user_data" and upload.content_type == "application/pdf"
    assert user_parts(fake_openai.requests[0])[1:] == [{"type": "input_file", "file_id": upload.id}]
    assert fake_openai.vector_stores == {}
    await bridge.close()


async def test_an_image_is_vision_input(
    fake_openai: FakeOpenAI, profiles: ProfileSet, tmp_path: Path
) -> None:
    bridge = make_bridge(fake_openai, profiles, tmp_path)
    reply = await ask(bridge, "what is this?", files=(MemoryFile("photo.png", PNG, "image/png"),))
    [upload] = fake_openai.files.values()
    assert user_parts(fake_openai.requests[0]) == [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "file_id": upload.id, "detail": "auto"},
    ]
    assert reply.text == "You said: what is this?"
    await bridge.close()
