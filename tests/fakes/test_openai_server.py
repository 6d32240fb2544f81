"""Tests of the fake OpenAI server, driven by the real `openai` SDK client."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseTextDeltaEvent,
)

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

pytestmark = pytest.mark.asyncio

MODEL = "gpt-test"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest_asyncio.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as sdk:
        yield sdk


async def collect(stream: openai.AsyncStream) -> list:
    """All events of a stream."""
    return [event async for event in stream]


def user(text: str) -> dict:
    """A user message input item."""
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def test_conversations_create_get_and_items(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    conv = await client.conversations.create(items=[user("seed")], metadata={"channel": "C1"})
    assert conv.id.startswith("conv_") and conv.object == "conversation"
    assert conv.metadata == {"channel": "C1"}
    assert (await client.conversations.retrieve(conv.id)).id == conv.id

    added = await client.conversations.items.create(conv.id, items=[user("more")])
    assert len(added.data) == 1
    listed = [item async for item in client.conversations.items.list(conv.id, order="asc")]
    assert [item.content[0].text for item in listed] == ["seed", "more"]
    assert fake.conversations[conv.id][1]["content"][0]["text"] == "more"

    with pytest.raises(openai.BadRequestError):
        await client.conversations.create(items=[user(str(n)) for n in range(21)])
    with pytest.raises(openai.NotFoundError) as info:
        await client.conversations.retrieve("conv_nope")
    assert info.value.body["message"] == "Conversation with id 'conv_nope' not found."
    assert fake.auth_headers[0] == "Bearer t"
    assert fake.count("POST", "/v1/conversations") == 3


async def test_streamed_reply(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    citation = {
        "type": "url_citation",
        "url": "https://x.test",
        "title": "X",
        "start_index": 0,
        "end_index": 5,
    }
    fake.enqueue(
        Reply(
            "Hello there, world",
            chunks=3,
            usage=(7, 3),
            annotations=[citation],
            tool_progress=["code_interpreter", "file_search"],
        )
    )
    conv = await client.conversations.create()
    stream = await client.responses.create(model=MODEL, conversation=conv.id, input=[user("hi")], stream=True)
    events = await collect(stream)

    deltas = [e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert len(deltas) == 3 and "".join(deltas) == "Hello there, world"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    types = [e.type for e in events]
    assert "response.code_interpreter_call.completed" in types
    assert "response.file_search_call.completed" in types
    assert "response.output_text.annotation.added" in types
    done = events[-1]
    assert isinstance(done, ResponseCompletedEvent)
    assert done.response.id == events[0].response.id
    assert done.response.usage is not None and done.response.usage.total_tokens == 10
    assert done.response.output_text == "Hello there, world"
    message = done.response.output[-1]
    assert message.type == "message" and message.content[0].annotations[0].url == "https://x.test"
    assert done.response.conversation is not None and done.response.conversation.id == conv.id
    stored = fake.conversations[conv.id]
    kinds = [item["type"] for item in stored]
    assert kinds == ["message", "code_interpreter_call", "file_search_call", "message"]
    assert fake.requests[0]["stream"] is True


async def test_stream_helper_accepts_the_events(client: AsyncOpenAI) -> None:
    async with client.responses.stream(model=MODEL, input="helper") as stream:
        final = await stream.get_final_response()
    assert final.output_text == "You said: helper"


async def test_echo_non_streamed(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    conv = await client.conversations.create()
    first = await client.responses.create(model=MODEL, conversation={"id": conv.id}, input="ping")
    assert first.output_text == "You said: ping" and first.status == "completed"
    assert first.model == MODEL and first.id.startswith("resp_")
    second = await client.responses.create(model=MODEL, conversation=conv.id, input=[user("a"), user("b")])
    assert second.output_text == "You said: b"
    assert len(fake.conversations[conv.id]) == 5


async def test_function_call_round(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.enqueue(FunctionCalls([("lookup", {"q": "x"}), ("clock", {})]), Reply("done"))
    conv = await client.conversations.create()
    events = await collect(
        await client.responses.create(model=MODEL, conversation=conv.id, input="use tools", stream=True)
    )
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    calls = [item for item in completed.response.output if item.type == "function_call"]
    assert [(c.name, c.arguments) for c in calls] == [("lookup", '{"q": "x"}'), ("clock", "{}")]
    assert len({c.call_id for c in calls}) == 2
    args_done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert args_done[0].arguments == '{"q": "x"}'

    with pytest.raises(openai.BadRequestError) as missing:  # must answer every call
        await client.responses.create(
            model=MODEL,
            conversation=conv.id,
            input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "1"}],
        )
    assert "No tool output found" in missing.value.message
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(
            model=MODEL, input=[{"type": "function_call_output", "call_id": "call_999", "output": "1"}]
        )

    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": "ok"} for c in calls]
    answer = await client.responses.create(model=MODEL, conversation=conv.id, input=outputs)
    assert answer.output_text == "done"
    with pytest.raises(openai.BadRequestError):  # already answered
        await client.responses.create(model=MODEL, conversation=conv.id, input=outputs[:1])
    kinds = [item["type"] for item in fake.conversations[conv.id]]
    assert kinds == [
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "message",
    ]


async def test_failed(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.enqueue(Failed(code="server_error", message="boom", text_before="Par"))
    conv = await client.conversations.create()
    events = await collect(
        await client.responses.create(model=MODEL, conversation=conv.id, input="x", stream=True)
    )
    assert "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)) == "Par"
    assert isinstance(events[-1], ResponseFailedEvent)
    assert events[-1].response.error is not None and events[-1].response.error.code == "server_error"
    assert events[-1].response.status == "failed"
    assert fake.conversations[conv.id] == []


async def test_incomplete(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.enqueue(Incomplete(reason="max_output_tokens", text="Partial answ"))
    events = await collect(await client.responses.create(model=MODEL, input="x", stream=True))
    last = events[-1]
    assert isinstance(last, ResponseIncompleteEvent)
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output_text == "Partial answ"


async def test_error_event(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.enqueue(ErrorEvent(code="server_error", message="Something broke"))
    conv = await client.conversations.create()
    events = await collect(
        await client.responses.create(model=MODEL, conversation=conv.id, input="x", stream=True)
    )
    assert isinstance(events[-1], ResponseErrorEvent)
    assert events[-1].code == "server_error" and events[-1].message == "Something broke"
    # The conversation is unlocked and usable afterwards.
    again = await client.responses.create(model=MODEL, conversation=conv.id, input="y")
    assert again.output_text == "You said: y"


async def test_http_error_and_retry(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.enqueue(HttpError())
    with pytest.raises(openai.RateLimitError) as info:
        await client.responses.create(model=MODEL, input="x", stream=True)
    assert info.value.code == "rate_limit_exceeded"

    fake.enqueue(HttpError(headers={"retry-after": "0.05"}), Reply("after retry"))
    async with AsyncOpenAI(base_url=fake.base_url, api_key="t", max_retries=1) as retrying:
        response = await retrying.responses.create(model=MODEL, input="x")
    assert response.output_text == "after retry"
    assert fake.count("POST", "/v1/responses") == 3 and len(fake.requests) == 3


async def test_conversation_locked_while_streaming(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.first_token_delay = 0.3
    conv = await client.conversations.create()
    first = await client.responses.create(model=MODEL, conversation=conv.id, input="one", stream=True)
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model=MODEL, conversation=conv.id, input="two", stream=True)
    assert info.value.code == "conversation_locked"
    assert "Another process is currently operating" in info.value.message
    events = await collect(first)
    assert isinstance(events[-1], ResponseCompletedEvent)
    fake.first_token_delay = 0.0
    third = await client.responses.create(model=MODEL, conversation=conv.id, input="three")
    assert third.status == "completed"


async def test_unknown_conversation(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model=MODEL, conversation="conv_missing", input="x", stream=True)


async def test_missing_bearer_and_models(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["gpt-test"]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.base_url}/responses", json={"model": MODEL, "input": "x"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "invalid_api_key"
    assert fake.requests[-1]["input"] == "x" and fake.auth_headers[-1] == ""


async def test_many_concurrent_streams_and_disconnect(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.delta_delay = 0.01

    async def one(n: int) -> str:
        conv = await client.conversations.create()
        events = await collect(
            await client.responses.create(model=MODEL, conversation=conv.id, input=f"n{n}", stream=True)
        )
        return events[-1].response.output_text

    assert await asyncio.gather(*(one(n) for n in range(100))) == [f"You said: n{n}" for n in range(100)]

    fake.enqueue(Reply("x" * 50, chunks=50))
    conv = await client.conversations.create()
    stream = await client.responses.create(model=MODEL, conversation=conv.id, input="bye", stream=True)
    async for event in stream:
        if isinstance(event, ResponseTextDeltaEvent):
            break
    await stream.close()
    for _ in range(50):  # the server notices the disconnect and unlocks the conversation
        await asyncio.sleep(0.05)
        try:
            await client.responses.create(model=MODEL, conversation=conv.id, input="again")
            break
        except openai.BadRequestError:
            continue
    else:
        pytest.fail("conversation stayed locked after the client disconnected")


# ---- files both ways ---------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n chart"


async def test_files_upload_retrieve_and_content(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    uploaded = await client.files.create(file=("temps.csv", b"a,b\n1,2\n", "text/csv"), purpose="user_data")
    assert uploaded.id.startswith("file-") and uploaded.filename == "temps.csv"
    assert uploaded.purpose == "user_data" and uploaded.bytes == 8
    stored = fake.files[uploaded.id]
    assert (stored.data, stored.content_type) == (b"a,b\n1,2\n", "text/csv")
    assert (await client.files.retrieve(uploaded.id)).filename == "temps.csv"
    assert (await client.files.content(uploaded.id)).content == b"a,b\n1,2\n"
    with pytest.raises(openai.BadRequestError):
        await client.files.create(file=("x.csv", b"x"), purpose="nonsense")
    fake.fail_upload("bad.csv")
    with pytest.raises(openai.InternalServerError):
        await client.files.create(file=("bad.csv", b"x"), purpose="user_data")


async def test_vector_store_batches_poll_and_report_failed_files(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    good = await client.files.create(file=("a.pdf", b"%PDF a"), purpose="user_data")
    bad = await client.files.create(file=("scan.pdf", b"%PDF scan"), purpose="user_data")
    fake.fail_indexing("scan.pdf")
    fake.index_polls = 2
    store = await client.vector_stores.create(name="conv store", metadata={"conversation": "conv_1"})
    assert store.id.startswith("vs_") and store.name == "conv store"
    batch = await client.vector_stores.file_batches.create_and_poll(
        store.id, file_ids=[good.id, bad.id], poll_interval_ms=10
    )
    assert batch.status == "completed"
    assert (batch.file_counts.completed, batch.file_counts.failed) == (1, 1)
    assert fake.count("GET", f"/v1/vector_stores/{store.id}/file_batches/") == 2
    failed = [
        f.id
        async for f in client.vector_stores.file_batches.list_files(
            batch.id, vector_store_id=store.id, filter="failed"
        )
    ]
    assert failed == [bad.id]
    assert fake.vector_stores[store.id]["file_ids"] == [good.id]
    with pytest.raises(openai.BadRequestError):
        await client.vector_stores.file_batches.create(store.id, file_ids=["file-nope"])


async def test_container_files_download_until_the_container_expires(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.add_container_file("cntr_1", "cfile_1", "out.csv", b"x,y\n")
    content = await client.containers.files.content.retrieve("cfile_1", container_id="cntr_1")
    assert content.content == b"x,y\n"
    fake.expire_container("cntr_1")
    with pytest.raises(openai.NotFoundError):
        await client.containers.files.content.retrieve("cfile_1", container_id="cntr_1")


async def test_code_interpreter_images_only_with_include_and_annotations_after_their_text(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    link = "sandbox:/mnt/data/out.csv"
    text = f"See [the file]({link}) and the doc."
    annotations = [
        container_citation(text, link, "cntr_9", "cfile_9"),
        file_citation("file-doc", "doc.pdf", len(text) - 1),
    ]
    tools = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    for include in ([], ["code_interpreter_call.outputs"]):
        fake.enqueue(Reply(text, chunks=4, images=[PNG], container_id="cntr_9", annotations=annotations))
        events = await collect(
            await client.responses.create(
                model=MODEL,
                input="x",
                tools=tools,
                include=include,
                stream=True,
            )
        )
        [call] = [
            e.item for e in events if e.type == "response.output_item.done" and e.item.type != "message"
        ]
        assert call.type == "code_interpreter_call" and call.container_id == "cntr_9"
        images = [o for o in call.outputs or [] if o.type == "image"]
        if include:
            assert [base64.b64decode(i.url.split(",", 1)[1]) for i in images] == [PNG]
            assert images[0].url.startswith("data:image/png;base64,")
        else:
            assert call.outputs is None
    shown, announced = "", {}
    for event in events:
        if event.type == "response.output_text.delta":
            shown += event.delta
        elif event.type == "response.output_text.annotation.added":
            announced[event.annotation.type] = shown
    # Each annotation comes right after the delta that completes the text it covers.
    assert link in announced["container_file_citation"] != text
    assert announced["file_citation"] == text
    final = events[-1].response.output[-1].content[0]
    assert [a.type for a in final.annotations] == ["container_file_citation", "file_citation"]
    assert final.annotations[0].filename == "out.csv"


async def test_requests_with_bad_files_or_tools_are_refused(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as no_container:
        await client.responses.create(model=MODEL, input="x", tools=[{"type": "code_interpreter"}])
    assert "container" in no_container.value.message
    image = {"type": "input_image", "file_id": "file-nope", "detail": "auto"}
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(
            model=MODEL,
            input=[{"type": "message", "role": "user", "content": [image]}],
        )
