"""Tests of the fake Assistants v2 server, driven by the real `openai` SDK client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from openai.types.beta.assistant_stream_event import (
    ErrorEvent,
    ThreadMessageCompleted,
    ThreadMessageDelta,
    ThreadRunCancelled,
    ThreadRunCompleted,
    ThreadRunFailed,
    ThreadRunIncomplete,
    ThreadRunRequiresAction,
    ThreadRunStepCompleted,
)

from tests.fakes.assistants_server import (
    CallFunctions,
    Expire,
    Fail,
    FakeAssistants,
    Hang,
    Incomplete,
    Say,
    StreamError,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ASST = "asst_test"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeAssistants]:
    async with FakeAssistants() as server:
        yield server


@pytest_asyncio.fixture
async def client(fake: FakeAssistants) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as sdk:
        yield sdk


async def collect(stream: openai.AsyncStream) -> list:
    """All events of a stream."""
    return [event async for event in stream]


def text_of(events: list) -> str:
    """The concatenated text deltas of a stream."""
    return "".join(
        block.text.value or ""
        for event in events
        if isinstance(event, ThreadMessageDelta)
        for block in event.data.delta.content or []
        if block.type == "text" and block.text is not None
    )


async def new_thread(client: AsyncOpenAI, text: str = "hello") -> str:
    thread = await client.beta.threads.create()
    await client.beta.threads.messages.create(thread.id, role="user", content=text)
    return thread.id


async def test_threads_messages_and_echo_stream(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    thread = await client.beta.threads.create(metadata={"channel": "C1"})
    assert thread.id.startswith("thread_") and thread.object == "thread"
    assert (await client.beta.threads.retrieve(thread.id)).metadata == {"channel": "C1"}
    message = await client.beta.threads.messages.create(
        thread.id, role="user", content=[{"type": "text", "text": "hi there"}]
    )
    assert message.content[0].type == "text" and message.content[0].text.value == "hi there"

    stream = await client.beta.threads.runs.create(thread.id, assistant_id=ASST, stream=True)
    events = await collect(stream)
    names = [event.event for event in events]
    assert names[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    assert text_of(events) == "You said: hi there"
    assert isinstance(events[-1], ThreadRunCompleted)
    assert events[-1].data.usage is not None and events[-1].data.usage.total_tokens == 15
    assert names.count("thread.message.delta") == 4

    listed = [m async for m in client.beta.threads.messages.list(thread.id)]
    assert [m.role for m in listed] == ["assistant", "user"]  # desc by default
    assert listed[0].content[0].text.value == "You said: hi there"
    assert fake.threads[thread.id][-1]["status"] == "completed"
    assert fake.runs[events[-1].data.id]["status"] == "completed"
    assert fake.count("POST", "/v1/threads") == 3


async def test_run_controls_recorded_and_unknown_assistant(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    thread_id = await new_thread(client)
    stream = await client.beta.threads.runs.create(
        thread_id,
        assistant_id=ASST,
        stream=True,
        additional_instructions="Be brief.",
        max_prompt_tokens=2000,
        max_completion_tokens=500,
        truncation_strategy={"type": "last_messages", "last_messages": 10},
        include=["step_details.tool_calls[*].file_search.results[*].content"],
    )
    events = await collect(stream)
    run = events[-1].data
    assert run.truncation_strategy.last_messages == 10 and run.max_prompt_tokens == 2000
    assert fake.run_requests[0]["additional_instructions"] == "Be brief."
    assert fake.run_requests[0]["stream"] is True
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.runs.create(thread_id, assistant_id="asst_nope")
    assert (await client.beta.assistants.retrieve(ASST)).id == ASST


async def test_beta_header_required(fake: FakeAssistants) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer t"}
        async with http.post(f"{fake.base_url}/threads", json={}, headers=headers) as reply:
            assert reply.status == 400
            assert "OpenAI-Beta" in (await reply.json())["error"]["message"]


async def test_annotations_images_and_tool_steps(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    image = fake.add_file("chart.png", b"\x89PNG")
    text = "See the doc【4:0†source】 and [file](sandbox:/mnt/data/out.csv)."
    out = fake.add_file("out.csv", b"a,b\n")
    fake.enqueue(
        Say(
            text=text,
            annotations=[
                {"type": "file_citation", "text": "【4:0†source】", "file_citation": {"file_id": "file-doc"}},
                {"type": "file_path", "text": "sandbox:/mnt/data/out.csv", "file_path": {"file_id": out}},
            ],
            image_file_ids=[image],
            steps=["code_interpreter", "file_search"],
        )
    )
    thread_id = await new_thread(client)
    events = await collect(await client.beta.threads.runs.create(thread_id, assistant_id=ASST, stream=True))
    assert text_of(events) == text
    deltas = [b for e in events if isinstance(e, ThreadMessageDelta) for b in e.data.delta.content or []]
    annotations = [a for b in deltas if b.type == "text" and b.text for a in b.text.annotations or []]
    assert [(a.type, a.index) for a in annotations] == [("file_citation", 0), ("file_path", 1)]
    assert text[annotations[1].start_index : annotations[1].end_index] == "sandbox:/mnt/data/out.csv"
    assert [b.image_file.file_id for b in deltas if b.type == "image_file"] == [image]
    completed = next(e for e in events if isinstance(e, ThreadMessageCompleted)).data
    assert [block.type for block in completed.content] == ["text", "image_file"]
    assert len(completed.content[0].text.annotations) == 2
    steps = [e.data for e in events if isinstance(e, ThreadRunStepCompleted)]
    assert [s.type for s in steps] == ["tool_calls", "tool_calls", "message_creation"]
    assert steps[0].step_details.tool_calls[0].type == "code_interpreter"
    listed = [s async for s in client.beta.threads.runs.steps.list(events[-1].data.id, thread_id=thread_id)]
    assert len(listed) == 3


async def test_function_call_round(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    fake.enqueue(
        CallFunctions([("get_weather", {"city": "Oslo"}), ("get_time", {"tz": "CET"})]),
        Say(text="Sunny at noon."),
    )
    thread_id = await new_thread(client)
    events = await collect(await client.beta.threads.runs.create(thread_id, assistant_id=ASST, stream=True))
    assert isinstance(events[-1], ThreadRunRequiresAction)
    run = events[-1].data
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert calls[0].function.arguments == '{"city": "Oslo"}' and calls[0].id != calls[1].id

    with pytest.raises(openai.BadRequestError) as info:
        await client.beta.threads.messages.create(thread_id, role="user", content="more")
    assert "while a run" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        await client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread_id, tool_outputs=[{"tool_call_id": calls[0].id, "output": "sunny"}]
        )
    assert "Expected tool outputs for call_ids" in info.value.message

    stream = await client.beta.threads.runs.submit_tool_outputs(
        run.id,
        thread_id=thread_id,
        tool_outputs=[{"tool_call_id": c.id, "output": "ok"} for c in calls],
        stream=True,
    )
    events = await collect(stream)
    assert events[0].event == "thread.run.step.completed"
    assert text_of(events) == "Sunny at noon."
    assert isinstance(events[-1], ThreadRunCompleted) and events[-1].data.id == run.id
    assert fake.tool_output_requests[-1]["tool_outputs"][1]["tool_call_id"] == calls[1].id
    with pytest.raises(openai.BadRequestError) as info:
        await client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread_id, tool_outputs=[])
    assert 'status "completed"' in info.value.message


async def test_second_run_rejected_while_active(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    fake.enqueue(CallFunctions([("f", {})]))
    thread_id = await new_thread(client)
    await collect(await client.beta.threads.runs.create(thread_id, assistant_id=ASST, stream=True))
    with pytest.raises(openai.BadRequestError) as info:
        await client.beta.threads.runs.create(thread_id, assistant_id=ASST)
    assert "already has an active run" in info.value.message


async def test_stream_error_event(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    fake.enqueue(StreamError(code="server_error", message="boom"))
    thread_id = await new_thread(client)
    events = await collect(await client.beta.threads.runs.create(thread_id, assistant_id=ASST, stream=True))
    assert isinstance(events[-1], ErrorEvent) and events[-1].event == "error"
    assert events[-1].data.message == "boom"


async def test_failed_incomplete_expired(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    fake.enqueue(Fail(code="rate_limit_exceeded", message="slow down"), Incomplete(), Expire())
    thread_id = await new_thread(client)
    events = await collect(await client.beta.threads.runs.create(thread_id, assistant_id=ASST, stream=True))
    assert isinstance(events[-1], ThreadRunFailed)
    assert events[-1].data.last_error.code == "rate_limit_exceeded"
    events = await collect(await client.beta.threads.runs.create(thread_id, assistant_id=ASST, stream=True))
    assert isinstance(events[-1], ThreadRunIncomplete) and text_of(events) == "Partial"
    assert events[-1].data.incomplete_details.reason == "max_completion_tokens"
    assert "thread.message.incomplete" in [e.event for e in events]
    events = await collect(await client.beta.threads.runs.create(thread_id, assistant_id=ASST, stream=True))
    assert events[-1].event == "thread.run.expired"


async def test_hang_then_cancel(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    fake.enqueue(Hang())
    thread_id = await new_thread(client)
    stream = await client.beta.threads.runs.create(thread_id, assistant_id=ASST, stream=True)
    consumer = asyncio.create_task(collect(stream))
    for _ in range(100):
        if any(run["status"] == "in_progress" for run in fake.runs.values()):
            break
        await asyncio.sleep(0.01)
    (run_id,) = fake.runs
    cancelling = await client.beta.threads.runs.cancel(run_id, thread_id=thread_id)
    assert cancelling.status == "cancelling"
    events = await asyncio.wait_for(consumer, 5)
    assert [e.event for e in events[-2:]] == ["thread.run.cancelling", "thread.run.cancelled"]
    assert isinstance(events[-1], ThreadRunCancelled)
    assert (await client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)).status == "cancelled"
    await client.beta.threads.messages.create(thread_id, role="user", content="unlocked")


async def test_non_streaming_run_polled(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    fake.poll_after_ms = 10
    fake.enqueue(Say(text="polled"))
    thread_id = await new_thread(client)
    run = await client.beta.threads.runs.create(thread_id, assistant_id=ASST)
    assert run.status == "queued"
    seen = [run.status]
    for _ in range(50):
        raw = await client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=thread_id)
        assert raw.headers["openai-poll-after-ms"] == "10"
        run = raw.parse()
        seen.append(run.status)
        if run.status == "completed":
            break
        await asyncio.sleep(0.01)
    assert seen[:2] == ["queued", "in_progress"] and seen[-1] == "completed"
    listed = await client.beta.threads.messages.list(thread_id, limit=1)
    assert listed.data[0].content[0].text.value == "polled"


async def test_non_streaming_tool_round_with_poll_helper(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    fake.poll_after_ms = 10
    fake.enqueue(CallFunctions([("lookup", {"q": "x"})]))
    fake.enqueue(Say(text="done"))
    thread_id = await new_thread(client)
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=ASST)
    assert run.status == "requires_action"
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    run = await client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread_id, tool_outputs=[{"tool_call_id": call.id, "output": "42"}]
    )
    assert run.status == "completed" and run.usage is not None
    steps = [s async for s in client.beta.threads.runs.steps.list(run.id, thread_id=thread_id, order="asc")]
    assert steps[0].step_details.tool_calls[0].function.output == "42"


async def test_files(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    file_id = fake.add_file("report.csv", b"a,b\n1,2\n")
    info = await client.files.retrieve(file_id)
    assert (info.filename, info.bytes, info.purpose, info.status) == (
        "report.csv",
        8,
        "assistants_output",
        "processed",
    )
    content = await client.files.content(file_id)
    assert content.content == b"a,b\n1,2\n"
    with pytest.raises(openai.NotFoundError):
        await client.files.content("file-nope")
    uploaded = await client.files.create(file=("in.txt", b"user data"), purpose="assistants")
    assert fake.files[uploaded.id] == ("in.txt", b"user data")
    with pytest.raises(openai.BadRequestError):
        await client.files.content(uploaded.id)


async def test_uploads_record_purpose_and_can_be_made_to_fail(
    fake: FakeAssistants, client: AsyncOpenAI
) -> None:
    image = await client.files.create(file=("cat.png", b"png", "image/png"), purpose="vision")
    assert (image.filename, image.purpose, image.bytes, image.object) == ("cat.png", "vision", 3, "file")
    assert fake.uploads == [
        {
            "id": image.id,
            "filename": "cat.png",
            "purpose": "vision",
            "content_type": "image/png",
            "data": b"png",
        }
    ]
    with pytest.raises(openai.BadRequestError, match="purpose"):
        await client.files.create(file=("x.txt", b"x"), purpose="nonsense")  # type: ignore[arg-type]
    fake.fail_uploads = 1
    with pytest.raises(openai.BadRequestError, match="Invalid file format"):
        await client.files.create(file=("bad.csv", b"x"), purpose="assistants")
    assert (await client.files.create(file=("ok.csv", b"x"), purpose="assistants")).filename == "ok.csv"
    assert [u["filename"] for u in fake.uploads] == ["cat.png", "ok.csv"]


async def test_messages_carry_image_parts_and_attachments(fake: FakeAssistants, client: AsyncOpenAI) -> None:
    image = await client.files.create(file=("cat.png", b"png", "image/png"), purpose="vision")
    csv = await client.files.create(file=("a.csv", b"a\n1\n"), purpose="assistants")
    pdf = await client.files.create(file=("q3.pdf", b"%PDF"), purpose="assistants")
    thread = await client.beta.threads.create()
    assert thread.tool_resources is None or thread.tool_resources.file_search is None
    message = await client.beta.threads.messages.create(
        thread.id,
        role="user",
        content=[
            {"type": "text", "text": "look"},
            {"type": "image_file", "image_file": {"file_id": image.id, "detail": "auto"}},
        ],
        attachments=[
            {"file_id": csv.id, "tools": [{"type": "code_interpreter"}]},
            {"file_id": pdf.id, "tools": [{"type": "file_search"}]},
        ],
    )
    assert [block.type for block in message.content] == ["text", "image_file"]
    assert message.content[1].image_file.file_id == image.id  # type: ignore[union-attr]
    assert [(a.file_id, [t.type for t in a.tools or []]) for a in message.attachments or []] == [
        (csv.id, ["code_interpreter"]),
        (pdf.id, ["file_search"]),
    ]
    # attaching for file_search gave the thread a vector store of its own
    resources = (await client.beta.threads.retrieve(thread.id)).tool_resources
    assert resources is not None and resources.file_search is not None
    [store] = resources.file_search.vector_store_ids or []
    assert fake.vector_stores == {store: [pdf.id]}
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=ASST)
    assert run.status == "completed"
    with pytest.raises(openai.BadRequestError, match="file-nope"):
        await client.beta.threads.messages.create(
            thread.id,
            role="user",
            content="x",
            attachments=[{"file_id": "file-nope", "tools": [{"type": "file_search"}]}],
        )


async def test_attachments_join_a_store_the_thread_already_has(
    fake: FakeAssistants, client: AsyncOpenAI
) -> None:
    thread = await client.beta.threads.create(
        tool_resources={"file_search": {"vector_store_ids": ["vs_shared"]}}
    )
    pdf = await client.files.create(file=("q3.pdf", b"%PDF"), purpose="assistants")
    await client.beta.threads.messages.create(
        thread.id,
        role="user",
        content="x",
        attachments=[{"file_id": pdf.id, "tools": [{"type": "file_search"}]}],
    )
    assert fake.vector_stores == {"vs_shared": [pdf.id]}
