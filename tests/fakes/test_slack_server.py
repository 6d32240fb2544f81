"""Tests for the fake Slack Web API, driven by the real slack_sdk AsyncWebClient."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_server import FakeSlack

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=fake.base_url)


async def test_urls(fake: FakeSlack) -> None:
    assert fake.base_url.endswith("/api/")
    assert fake.base_url == fake.root_url + "/api/"
    assert fake.root_url.startswith("http://127.0.0.1:")


async def test_auth_test(fake: FakeSlack, client: AsyncWebClient) -> None:
    response = await client.auth_test()
    assert response["team_id"] == "T1"
    assert response["user_id"] == "UBOT"
    assert response["bot_id"] == "BBOT"
    assert response["is_enterprise_install"] is False
    [call] = fake.calls_to("auth.test")
    assert call.token == "xoxb-test"


async def test_bad_token_and_unknown_method(fake: FakeSlack) -> None:
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=fake.base_url)
    with pytest.raises(SlackApiError) as info:
        await wrong.auth_test()
    assert info.value.response["error"] == "invalid_auth"
    anonymous = AsyncWebClient(base_url=fake.base_url)
    with pytest.raises(SlackApiError) as info:
        await anonymous.auth_test()
    assert info.value.response["error"] == "invalid_auth"
    assert fake.calls[-1].token is None
    client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
    with pytest.raises(SlackApiError) as info:
        await client.api_call("no.such.method")
    assert info.value.response["error"] == "unknown_method"


async def test_post_then_update(fake: FakeSlack, client: AsyncWebClient) -> None:
    first = await client.chat_postMessage(channel="D1", text="hello", thread_ts="100.1")
    second = await client.chat_postMessage(channel="D1", markdown_text="**bold**", text="fallback")
    assert first["ts"] < second["ts"]
    assert first["message"]["text"] == "hello"
    await client.chat_update(channel="D1", ts=first["ts"], text="hello again")

    messages = fake.messages("D1")
    assert [m.text for m in messages] == ["hello again", "**bold**"]
    assert messages[0].updates == 1 and messages[0].thread_ts == "100.1"
    assert messages[0].stopped and not messages[0].streamed
    assert [m.ts for m in fake.messages("D1", thread_ts="100.1")] == [first["ts"]]
    assert fake.messages("D2") == []

    with pytest.raises(SlackApiError) as info:
        await client.chat_update(channel="D1", ts="1.2", text="x")
    assert info.value.response["error"] == "message_not_found"


async def test_message_length_limits(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel="D1", markdown_text="x" * 12_001)
    assert info.value.response["error"] == "msg_too_long"
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel="D1", text="x" * 40_001)
    assert info.value.response["error"] == "msg_too_long"
    await client.chat_postMessage(channel="D1", markdown_text="x" * 12_000)


async def test_stream_builds_one_message(fake: FakeSlack, client: AsyncWebClient) -> None:
    start = await client.chat_startStream(
        channel="C1",
        thread_ts="100.1",
        recipient_team_id="T1",
        recipient_user_id="U1",
        markdown_text="Hel",
    )
    ts = start["ts"]
    await client.chat_appendStream(channel="C1", ts=ts, markdown_text="lo ")
    await client.chat_appendStream(channel="C1", ts=ts, chunks=[{"type": "markdown_text", "text": "wor"}])
    assert fake.messages("C1")[0].stopped is False
    await client.chat_stopStream(channel="C1", ts=ts, chunks=[{"type": "markdown_text", "text": "ld"}])

    [message] = fake.messages("C1", thread_ts="100.1")
    assert message.text == "Hello world"
    assert message.streamed and message.stopped and message.ts == ts

    with pytest.raises(SlackApiError) as info:
        await client.chat_appendStream(channel="C1", ts=ts, markdown_text="late")
    assert info.value.response["error"] == "message_not_in_streaming_state"
    with pytest.raises(SlackApiError) as info:
        await client.chat_appendStream(channel="C1", ts="9.9", markdown_text="x")
    assert info.value.response["error"] == "message_not_found"


async def test_chat_stream_helper(fake: FakeSlack, client: AsyncWebClient) -> None:
    stream = await client.chat_stream(channel="D1", thread_ts="100.1", buffer_size=4)
    await stream.append(markdown_text="ab")
    await stream.append(markdown_text="cdef")
    await stream.stop(markdown_text="!")
    [message] = fake.messages("D1")
    assert message.text == "abcdef!" and message.stopped


async def test_stream_refusals(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as info:
        await client.chat_startStream(channel="C1", thread_ts="100.1", markdown_text="hi")
    assert info.value.response["error"] == "missing_recipient_team_id"
    with pytest.raises(SlackApiError) as info:
        await client.chat_startStream(channel="G1", thread_ts="100.1", recipient_team_id="T1")
    assert info.value.response["error"] == "missing_recipient_user_id"
    with pytest.raises(SlackApiError) as info:
        await client.api_call("chat.startStream", json={"channel": "D1"})
    assert info.value.response["error"] == "invalid_arguments"

    start = await client.chat_startStream(channel="D1", thread_ts="100.1")
    with pytest.raises(SlackApiError) as info:
        await client.chat_appendStream(channel="D1", ts=start["ts"], markdown_text="x" * 12_001)
    assert info.value.response["error"] == "msg_too_long"
    await client.chat_appendStream(channel="D1", ts=start["ts"], markdown_text="x" * 12_000)


async def test_fail(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail("chat.postMessage", "not_in_channel", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            await client.chat_postMessage(channel="C1", text="hi")
        assert info.value.response.status_code == 200
        assert info.value.response["error"] == "not_in_channel"
    await client.chat_postMessage(channel="C1", text="hi")
    assert len(fake.calls_to("chat.postMessage")) == 3
    assert [m.text for m in fake.messages("C1")] == ["hi"]


async def test_rate_limit_without_retry(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.rate_limit("chat.update", retry_after=7)
    with pytest.raises(SlackApiError) as info:
        await client.chat_update(channel="C1", ts="1.1", text="x")
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "7"
    assert info.value.response["error"] == "ratelimited"


async def test_rate_limit_with_retry_handler(fake: FakeSlack, client: AsyncWebClient) -> None:
    # The handler sleeps int(Retry-After) + random() seconds: under 1 s with retry_after=0.
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    fake.rate_limit("chat.postMessage", times=1, retry_after=0)
    started = time.monotonic()
    response = await client.chat_postMessage(channel="D1", text="hi")
    assert time.monotonic() - started < 2
    assert response["ok"] is True
    assert len(fake.calls_to("chat.postMessage")) == 2
    assert len(fake.messages("D1")) == 1


async def test_simple_methods(fake: FakeSlack, client: AsyncWebClient) -> None:
    await client.assistant_threads_setStatus(channel_id="D1", thread_ts="100.1", status="thinking...")
    await client.assistant_threads_setSuggestedPrompts(
        channel_id="D1", prompts=[{"title": "a", "message": "b"}]
    )
    await client.assistant_threads_setTitle(channel_id="D1", thread_ts="100.1", title="t")
    await client.agents_sessions_setStatus(channel_id="D1", thread_ts="100.1", status="processing")
    await client.reactions_add(channel="C1", name="eyes", timestamp="100.1")
    await client.reactions_remove(channel="C1", name="eyes", timestamp="100.1")
    user = await client.users_info(user="U1")
    assert user["user"]["id"] == "U1" and user["user"]["is_admin"] is False
    assert (await client.conversations_info(channel="D1"))["channel"]["is_im"] is True
    assert (await client.conversations_info(channel="C1"))["channel"]["is_im"] is False
    assert fake.calls_to("reactions.add")[0].args["name"] == "eyes"
    assert fake.calls_to("assistant.threads.setSuggestedPrompts")[0].json_arg("prompts")[0]["title"] == "a"


async def test_files_upload_v2(fake: FakeSlack, client: AsyncWebClient) -> None:
    response = await client.files_upload_v2(
        channel="C1", thread_ts="100.1", content=b"a,b\n1,2\n", filename="a.csv", initial_comment="here"
    )
    file_id = response["file"]["id"]
    assert fake.uploads == {file_id: b"a,b\n1,2\n"}
    assert response["file"]["name"] == "a.csv"

    [get_url] = fake.calls_to("files.getUploadURLExternal")
    assert get_url.args["filename"] == "a.csv" and get_url.args["length"] == "8"
    [complete] = fake.calls_to("files.completeUploadExternal")
    assert complete.args["channel_id"] == "C1" and complete.args["thread_ts"] == "100.1"
    assert complete.json_arg("files")[0]["id"] == file_id
    assert isinstance(complete.args["files"], str)
    assert (await client.files_info(file=file_id))["file"]["id"] == file_id


async def test_private_file_download(fake: FakeSlack, client: AsyncWebClient) -> None:
    url = fake.add_private_file("F9", b"\x89PNG data", "pic.png", "image/png")
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": "Bearer xoxb-test"}) as res:
            assert res.status == 200
            assert res.content_type == "image/png"
            assert await res.read() == b"\x89PNG data"
        async with session.get(url) as res:
            assert res.status == 200
            assert res.content_type == "text/html"
        async with session.get(url, headers={"Authorization": "Bearer xoxb-other"}) as res:
            assert res.content_type == "text/html"
    info = await client.files_info(file="F9")
    assert info["file"]["url_private_download"] == url


async def test_wait_for(fake: FakeSlack, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel="D1", text="hi")
    await fake.wait_for(lambda: len(fake.messages("D1")) == 1, timeout=1)
    with pytest.raises(AssertionError, match="chat.postMessage"):
        await fake.wait_for(lambda: False, timeout=0.05)


async def test_delay(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.delay = 0.1
    started = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - started >= 0.1


async def test_user_flags(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.set_user("UADMIN", is_admin=True)
    fake.set_user("UGUEST", is_restricted=True)
    assert (await client.users_info(user="UADMIN"))["user"]["is_admin"] is True
    guest = (await client.users_info(user="UGUEST"))["user"]
    assert guest["is_restricted"] is True and guest["is_admin"] is False
    plain = (await client.users_info(user="U1"))["user"]
    assert not plain["is_admin"] and not plain["is_restricted"] and not plain["is_ultra_restricted"]


async def test_post_ephemeral(fake: FakeSlack, client: AsyncWebClient) -> None:
    response = await client.chat_postEphemeral(channel="C1", user="U1", markdown_text="only *you*")
    assert response["message_ts"]
    assert fake.ephemerals_for("U1") == ["only *you*"] and fake.ephemerals_for("U1", "C2") == []
    assert fake.messages("C1") == []  # not a message in the channel
    with pytest.raises(SlackApiError) as info:
        await client.chat_postEphemeral(channel="C1", user="")
    assert info.value.response["error"] == "invalid_arguments"


async def test_views_publish(fake: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    response = await client.views_publish(user_id="U1", view={"type": "home", "blocks": blocks})
    assert response["view"]["type"] == "home"
    assert fake.home_views["U1"]["blocks"] == blocks
    with pytest.raises(SlackApiError) as info:
        await client.views_publish(user_id="U1", view={"type": "modal", "blocks": blocks})
    assert info.value.response["error"] == "invalid_arguments"


async def test_command_response_url(fake: FakeSlack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(fake.response_url(), json={"response_type": "ephemeral", "text": "hi"}) as r:
            assert r.status == 200 and await r.text() == "ok"
        async with http.post(fake.response_url(), json={"response_type": "ephemeral"}) as r:
            assert r.status == 400
    assert fake.command_responses == [{"response_type": "ephemeral", "text": "hi"}]
