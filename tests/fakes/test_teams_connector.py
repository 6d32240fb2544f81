"""Tests for the fake Bot Connector, driven by plain aiohttp and by the real Agents SDK ConnectorClient."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from microsoft_agents.activity import Activity, Attachment, ConversationAccount, StreamInfo
from microsoft_agents.hosting.core.connector.client import ConnectorClient
from PIL import Image

from tests.fakes.teams_connector import FakeConnector, loopback_session

PERSONAL = "a:1abc"
GROUP = "19:abc@thread.v2"
CHANNEL = "19:abc@thread.tacv2;messageid=1700000000000"


@pytest.fixture
async def fake() -> AsyncIterator[FakeConnector]:
    async with FakeConnector() as server:
        server.min_stream_interval = 0.0
        yield server


@pytest.fixture
async def client(fake: FakeConnector) -> AsyncIterator[ConnectorClient]:
    connector = ConnectorClient(fake.service_url, token="")
    yield connector
    await connector.close()


def typing(text: str, **stream: Any) -> Activity:
    return Activity(type="typing", text=text, entities=[StreamInfo(**stream)])


def final(text: str, stream_id: str, **extra: Any) -> Activity:
    return Activity(
        type="message", text=text, entities=[StreamInfo(stream_type="final", stream_id=stream_id, **extra)]
    )


def png(width: int, height: int, *, noise: bool = False) -> str:
    """A PNG data URI; ``noise`` makes it incompressible."""
    if noise:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        image = Image.new("RGB", (width, height), "red")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_message(url: str, text: str | None = None) -> Activity:
    return Activity(
        type="message", text=text, attachments=[Attachment(content_type="image/png", content_url=url)]
    )


def error_of(info: pytest.ExceptionInfo[aiohttp.ClientResponseError]) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(info.value.message)["error"]
    return error


async def test_service_url(fake: FakeConnector) -> None:
    assert fake.service_url.startswith("http://127.0.0.1:")
    assert fake.service_url.endswith("/")


@pytest.mark.parametrize("cid", [PERSONAL, GROUP, CHANNEL])
async def test_conversation_ids_round_trip_sdk(
    fake: FakeConnector, client: ConnectorClient, cid: str
) -> None:
    first = await client.conversations.send_to_conversation(cid, Activity(type="message", text="one"))
    reply = await client.conversations.reply_to_activity(cid, "1699", Activity(type="message", text="two"))
    updated = await client.conversations.update_activity(
        cid, first.id, Activity(type="message", id=first.id, text="one, edited")
    )
    assert updated.id == first.id and reply.id != first.id
    assert [s.conversation_id for s in fake.sent] == [cid, cid, cid]
    assert [s.reply_to_id for s in fake.sent] == [None, "1699", None]
    assert [s.status for s in fake.sent] == [200, 200, 200]
    assert [(v.id, v.text, v.reply_to_id) for v in fake.visible(cid)] == [
        (first.id, "one, edited", None),
        (reply.id, "two", "1699"),
    ]


@pytest.mark.parametrize("cid", [PERSONAL, GROUP, CHANNEL])
async def test_conversation_ids_round_trip_aiohttp(fake: FakeConnector, cid: str) -> None:
    async with aiohttp.ClientSession() as session:
        for path_id in (cid, quote(cid, safe="")):
            url = f"{fake.service_url}v3/conversations/{path_id}/activities"
            async with session.post(url, json={"type": "message", "text": "hi"}) as response:
                assert response.status == 200
                message_id = (await response.json())["id"]
            async with session.post(
                f"{url}/{message_id}", json={"type": "message", "text": "re"}
            ) as response:
                assert response.status == 200
    assert {s.conversation_id for s in fake.sent} == {cid}
    assert [v.text for v in fake.visible(cid)] == ["hi", "re", "hi", "re"]


async def test_authorization_recorded(fake: FakeConnector, client: ConnectorClient) -> None:
    await client.conversations.send_to_conversation(PERSONAL, Activity(type="message", text="anon"))
    with_token = ConnectorClient(fake.service_url, token="tok-123")
    try:
        await with_token.conversations.send_to_conversation(PERSONAL, Activity(type="message", text="t"))
    finally:
        await with_token.close()
    assert [s.authorization for s in fake.sent] == [None, "Bearer tok-123"]


async def test_stream_201_then_202_then_final(fake: FakeConnector, client: ConnectorClient) -> None:
    fake.min_stream_interval = 0.1
    conversations = client.conversations
    first = await conversations.send_to_conversation(
        PERSONAL, typing("Thinking…", stream_type="informative", stream_sequence=1)
    )
    assert fake.sent[-1].status == 201
    sid = first.id
    assert fake.visible(PERSONAL)[0].text == "Thinking…"
    await asyncio.sleep(0.1)
    second = await conversations.reply_to_activity(
        PERSONAL, "1699", typing("Hel", stream_type="streaming", stream_sequence=2, stream_id=sid)
    )
    assert fake.sent[-1].status == 202 and second.id == sid
    await asyncio.sleep(0.1)
    # The dict form validates into a StreamInfo entity too.
    third = Activity(
        type="typing",
        text="Hello",
        entities=[{"type": "streaminfo", "streamType": "streaming", "streamSequence": 3, "streamId": sid}],
    )
    assert isinstance(third.entities[0], StreamInfo)
    await conversations.send_to_conversation(PERSONAL, third)
    [visible] = fake.visible(PERSONAL)
    assert (visible.text, visible.streamed, visible.finished) == ("Hello", True, False)
    await asyncio.sleep(0.1)
    done = await conversations.send_to_conversation(PERSONAL, final("Hello world", sid))
    assert done.id == sid and fake.sent[-1].status == 200

    [visible] = fake.visible(PERSONAL)
    assert (visible.id, visible.text, visible.streamed, visible.finished) == (sid, "Hello world", True, True)
    assert [s.status for s in fake.stream_updates(PERSONAL)] == [201, 202, 202]
    assert fake.stream_updates(PERSONAL)[0].activity["entities"] == [
        {"type": "streaminfo", "streamType": "informative", "streamSequence": 1}
    ]
    assert fake.sent[-1].activity["entities"] == [
        {"type": "streaminfo", "streamType": "final", "streamId": sid}
    ]
    assert fake.protocol_errors == []


@pytest.mark.parametrize("cid", [GROUP, CHANNEL])
async def test_streaming_outside_personal_chats_is_405(
    fake: FakeConnector, client: ConnectorClient, cid: str
) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(cid, typing("Hi", stream_sequence=1))
    assert info.value.status == 405
    assert error_of(info)["code"] == "BadArgument"
    # What the SDK's StreamingResponse looks for to fall back to plain messages.
    assert "streaming api is not enabled" in str(info.value).lower()
    assert fake.visible(cid) == [] and fake.stream_updates(cid) == []
    assert fake.protocol_errors == []


async def test_conversation_type_in_body_wins(fake: FakeConnector, client: ConnectorClient) -> None:
    group = ConversationAccount(id=PERSONAL, conversation_type="groupChat")
    activity = typing("Hi", stream_sequence=1)
    activity.conversation = group
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(PERSONAL, activity)
    assert info.value.status == 405
    activity.conversation = ConversationAccount(id=GROUP, conversation_type="personal")
    await client.conversations.send_to_conversation(GROUP, activity)
    assert fake.sent[-1].status == 201


async def test_stop_streams_refuses_with_403(fake: FakeConnector, client: ConnectorClient) -> None:
    sid = (await client.conversations.send_to_conversation(PERSONAL, typing("Hel", stream_sequence=1))).id
    fake.stop_streams()
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(
            PERSONAL, typing("Hello", stream_sequence=2, stream_id=sid)
        )
    assert info.value.status == 403
    assert error_of(info) == {
        "code": "ContentStreamNotAllowed",
        "message": "Content stream was cancelled by user.",
    }
    assert fake.protocol_errors == []
    [visible] = fake.visible(PERSONAL)
    assert (visible.text, visible.finished) == ("Hel", False)
    # A bot that keeps going after the 403 breaks the protocol; the final is refused too.
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(PERSONAL, final("Hello", sid))
    assert info.value.status == 403
    assert len(fake.protocol_errors) == 1
    # New streams are not affected.
    await client.conversations.send_to_conversation(PERSONAL, typing("Again", stream_sequence=1))
    assert fake.sent[-1].status == 201


async def test_stream_time_limit(fake: FakeConnector, client: ConnectorClient) -> None:
    fake.stream_time_limit = 0.05
    sid = (await client.conversations.send_to_conversation(PERSONAL, typing("Hel", stream_sequence=1))).id
    await asyncio.sleep(0.1)
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(
            PERSONAL, typing("Hello", stream_sequence=2, stream_id=sid)
        )
    assert info.value.status == 403
    assert error_of(info)["message"] == "Content stream finished due to exceeded streaming time."
    # The SDK then edits the streamed message in place.
    await client.conversations.update_activity(
        PERSONAL, sid, Activity(type="message", id=sid, text="Hello, late")
    )
    assert [v.text for v in fake.visible(PERSONAL)] == ["Hello, late"]
    assert fake.protocol_errors == []


async def test_rate_limit_429(fake: FakeConnector, client: ConnectorClient) -> None:
    fake.rate_limit(times=2, retry_after=3)
    for _ in range(2):
        with pytest.raises(aiohttp.ClientResponseError) as info:
            await client.conversations.send_to_conversation(PERSONAL, Activity(type="message", text="hi"))
        assert info.value.status == 429
        assert info.value.headers is not None and info.value.headers["Retry-After"] == "3"
        assert error_of(info)["code"] == "TooManyRequests"
    await client.conversations.send_to_conversation(PERSONAL, Activity(type="message", text="hi"))
    assert [s.status for s in fake.sent] == [429, 429, 200]
    assert [v.text for v in fake.visible(PERSONAL)] == ["hi"]


async def test_fail_and_delay(fake: FakeConnector, client: ConnectorClient) -> None:
    fake.fail(502, "ServiceError")
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(PERSONAL, Activity(type="message", text="hi"))
    assert info.value.status == 502 and error_of(info)["code"] == "ServiceError"
    fake.delay = 0.2
    started = time.monotonic()
    await client.conversations.send_to_conversation(PERSONAL, Activity(type="message", text="hi"))
    assert time.monotonic() - started >= 0.2
    assert [s.status for s in fake.sent] == [502, 200]


async def test_message_size_limit_413(fake: FakeConnector, client: ConnectorClient) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(
            PERSONAL, Activity(type="message", text="x" * 100_001)
        )
    assert info.value.status == 413 and error_of(info)["code"] == "MessageSizeTooBig"
    assert fake.visible(PERSONAL) == []
    await client.conversations.send_to_conversation(PERSONAL, Activity(type="message", text="x" * 99_000))
    # Inline images do not count towards the 100 KB.
    big = png(300, 300, noise=True)
    assert len(big) > 200_000
    await client.conversations.send_to_conversation(PERSONAL, image_message(big))
    assert [s.status for s in fake.sent] == [413, 200, 200]
    assert fake.visible(PERSONAL)[1].attachments[0]["contentUrl"] == big
    assert fake.protocol_errors == []


async def test_inline_image_limits(fake: FakeConnector, client: ConnectorClient) -> None:
    await client.conversations.send_to_conversation(PERSONAL, image_message(png(1024, 1024)))
    assert fake.protocol_errors == []
    for url in (
        png(1025, 10),
        png(640, 640, noise=True),
        "data:text/plain;base64,aGk=",
        "data:image/png;base64,AAAA",
    ):
        with pytest.raises(aiohttp.ClientResponseError) as info:
            await client.conversations.send_to_conversation(PERSONAL, image_message(url))
        assert info.value.status == 400 and error_of(info)["code"] == "BadArgument"
    assert len(fake.protocol_errors) == 4
    reasons = ("1025x10", "bytes (max 1048576)", "not a PNG, JPEG or GIF", "does not decode")
    assert all(reason in error for reason, error in zip(reasons, fake.protocol_errors, strict=True))
    assert len(fake.visible(PERSONAL)) == 1


async def test_image_with_text_is_a_protocol_error(fake: FakeConnector, client: ConnectorClient) -> None:
    await client.conversations.send_to_conversation(PERSONAL, image_message(png(8, 8), text="look"))
    assert fake.sent[-1].status == 200
    assert len(fake.protocol_errors) == 1 and "own activity" in fake.protocol_errors[0]


async def test_too_fast_updates(fake: FakeConnector, client: ConnectorClient) -> None:
    fake.min_stream_interval = 0.3
    sid = (await client.conversations.send_to_conversation(PERSONAL, typing("a", stream_sequence=1))).id
    await asyncio.sleep(0.3)
    await client.conversations.send_to_conversation(PERSONAL, typing("ab", stream_sequence=2, stream_id=sid))
    assert fake.protocol_errors == []
    await client.conversations.send_to_conversation(PERSONAL, typing("abc", stream_sequence=3, stream_id=sid))
    assert fake.sent[-1].status == 202
    assert len(fake.protocol_errors) == 1 and "apart" in fake.protocol_errors[0]
    await client.conversations.send_to_conversation(PERSONAL, final("abc", sid))
    assert len(fake.protocol_errors) == 2


async def test_streamed_text_must_be_cumulative(fake: FakeConnector, client: ConnectorClient) -> None:
    sid = (await client.conversations.send_to_conversation(PERSONAL, typing("Hello", stream_sequence=1))).id
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(
            PERSONAL, typing(" world", stream_sequence=2, stream_id=sid)
        )
    assert info.value.status == 403
    assert len(fake.protocol_errors) == 1 and "text so far" in fake.protocol_errors[0]
    assert fake.visible(PERSONAL)[0].text == "Hello"


async def test_informative_text_need_not_be_repeated(fake: FakeConnector, client: ConnectorClient) -> None:
    sid = (
        await client.conversations.send_to_conversation(
            PERSONAL, typing("Searching…", stream_type="informative", stream_sequence=1)
        )
    ).id
    await client.conversations.send_to_conversation(
        PERSONAL, typing("Found", stream_sequence=2, stream_id=sid)
    )
    assert fake.sent[-1].status == 202 and fake.protocol_errors == []


async def test_sequence_must_increase(fake: FakeConnector, client: ConnectorClient) -> None:
    sid = (await client.conversations.send_to_conversation(PERSONAL, typing("a", stream_sequence=1))).id
    await client.conversations.send_to_conversation(PERSONAL, typing("ab", stream_sequence=3, stream_id=sid))
    await client.conversations.send_to_conversation(PERSONAL, typing("abc", stream_sequence=2, stream_id=sid))
    assert [s.status for s in fake.sent] == [201, 202, 202]
    assert fake.visible(PERSONAL)[0].text == "ab"  # the out-of-order update was dropped
    assert len(fake.protocol_errors) == 1 and "streamSequence 2 after 3" in fake.protocol_errors[0]


async def test_final_rules(fake: FakeConnector, client: ConnectorClient) -> None:
    sid = (await client.conversations.send_to_conversation(PERSONAL, typing("a", stream_sequence=1))).id
    await client.conversations.send_to_conversation(PERSONAL, final("a", sid, stream_sequence=2))
    assert fake.sent[-1].status == 200
    assert len(fake.protocol_errors) == 1 and "streamSequence" in fake.protocol_errors[0]
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(
            PERSONAL, typing("ab", stream_sequence=3, stream_id=sid)
        )
    assert info.value.status == 403 and "already completed" in error_of(info)["message"]
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(
            PERSONAL, typing("x", stream_sequence=2, stream_id="nope")
        )
    assert info.value.status == 400
    assert len(fake.protocol_errors) == 3
    # A final without a streamId (nothing was streamed) is a plain message.
    await client.conversations.send_to_conversation(
        GROUP, Activity(type="message", text="plain", entities=[StreamInfo(stream_type="final")])
    )
    [visible] = fake.visible(GROUP)
    assert (visible.text, visible.streamed, visible.finished) == ("plain", False, True)


async def test_typing_and_other_activities(fake: FakeConnector, client: ConnectorClient) -> None:
    await client.conversations.send_to_conversation(GROUP, Activity(type="typing"))
    await client.conversations.send_to_conversation(GROUP, Activity(type="typing"))
    await client.conversations.send_to_conversation(GROUP, Activity(type="event", name="x"))
    assert fake.typing_count(GROUP) == 2 and fake.typing_count(PERSONAL) == 0
    assert fake.visible(GROUP) == [] and fake.stream_updates(GROUP) == []


async def test_update_of_unknown_activity_is_404(client: ConnectorClient) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.update_activity(
            PERSONAL, "123", Activity(type="message", id="123", text="x")
        )
    assert info.value.status == 404


async def test_body_must_be_an_activity(fake: FakeConnector) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{fake.service_url}v3/conversations/{PERSONAL}/activities"
        async with session.post(url, data=b"not json") as response:
            assert response.status == 400
    assert fake.sent[0].activity == {} and fake.sent[0].status == 400


async def test_wait_for(fake: FakeConnector, client: ConnectorClient) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await client.conversations.send_to_conversation(PERSONAL, Activity(type="message", text="hi"))

    task = asyncio.create_task(later())
    await fake.wait_for(lambda: len(fake.visible(PERSONAL)) == 1)
    await task
    with pytest.raises(AssertionError, match="last requests"):
        await fake.wait_for(lambda: False, timeout=0.05)


# The file hosts around Teams


async def test_served_files_tokens_statuses_and_redirects(fake: FakeConnector) -> None:
    open_url = fake.add_file("a.csv", b"a,b\n", "text/csv")
    guarded = fake.add_file("original", b"img", "image/png", token="tok", host="smba.trafficmanager.net")
    broken = fake.add_file("b.csv", b"", status=500)
    bounce = fake.redirect_url(open_url, host="elsewhere.example")
    async with loopback_session() as session:
        async with session.get(open_url) as response:
            assert response.status == 200 and await response.read() == b"a,b\n"
            assert response.content_type == "text/csv"
        async with session.get(guarded) as response:
            assert response.status == 401
        async with session.get(guarded, headers={"Authorization": "Bearer tok"}) as response:
            assert response.status == 200 and await response.read() == b"img"
        async with session.get(broken) as response:
            assert response.status == 500
        async with session.get(bounce, allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == open_url
    assert [(d.host, d.authorization, d.status) for d in fake.downloads] == [
        ("127.0.0.1", None, 200),
        ("smba.trafficmanager.net", None, 401),
        ("smba.trafficmanager.net", "Bearer tok", 200),
        ("127.0.0.1", None, 500),
        ("elsewhere.example", None, 302),
    ]


async def test_upload_url_takes_one_put_with_its_content_range(fake: FakeConnector) -> None:
    info = fake.upload_info("report.csv")
    assert info["name"] == "report.csv" and info["fileType"] == "csv" and info["uniqueId"]
    bad = fake.upload_info("bad.csv")
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Range": "bytes 0-3/4"}
        async with session.put(info["uploadUrl"], data=b"abcd", headers=headers) as response:
            assert response.status == 201
        async with session.put(info["uploadUrl"], data=b"abcd", headers=headers) as response:
            assert response.status == 416  # a second PUT
        async with session.put(
            bad["uploadUrl"], data=b"abcd", headers={"Content-Range": "bytes 0-9/10"}
        ) as r:
            assert r.status == 416
    uploads = list(fake.uploads.values())
    assert [(u.name, u.data) for u in uploads] == [("report.csv", b"abcd"), ("bad.csv", None)]
    assert len(fake.protocol_errors) == 2
    fake.protocol_errors.clear()


async def test_file_cards_are_checked(fake: FakeConnector, client: ConnectorClient) -> None:
    consent = Attachment(
        content_type="application/vnd.microsoft.teams.card.file.consent",
        name="r.csv",
        content={"description": "r.csv", "sizeInBytes": 4, "acceptContext": {}, "declineContext": {}},
    )
    personal = Activity(type="message", attachments=[consent], conversation=ConversationAccount(id=PERSONAL))
    await client.conversations.send_to_conversation(PERSONAL, personal)
    assert fake.visible(PERSONAL)[0].attachments[0]["contentType"].endswith("file.consent")
    channel = Activity(
        type="message",
        attachments=[consent],
        conversation=ConversationAccount(id=CHANNEL, conversation_type="channel"),
    )
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await client.conversations.send_to_conversation(CHANNEL, channel)
    assert info.value.status == 400
    no_id = Attachment(
        content_type="application/vnd.microsoft.teams.card.file.info", name="r.csv", content={}
    )
    with pytest.raises(aiohttp.ClientResponseError):
        await client.conversations.send_to_conversation(
            PERSONAL, Activity(type="message", attachments=[no_id])
        )
    assert len(fake.protocol_errors) == 2
    fake.protocol_errors.clear()
