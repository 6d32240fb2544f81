"""TeamsReply against the fake Bot Connector, event by event: the stream's limits and keep-alive,
the user's Stop, oversized messages, and the text and image helpers."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator

import pytest
from microsoft_agents.hosting.core.authorization import ClaimsIdentity
from PIL import Image

from bots.teams.adapter import auth_configuration, build_cloud_adapter
from bots.teams.images import MAX_BYTES, UnusableImage, fit_for_teams
from bots.teams.outbound import Outbound
from bots.teams.reply import TeamsReply
from bots.teams.text import neutralise, safe_prefix, size, split_message, to_teams_markdown
from core.events import Citation, Done, Failure, FailureKind, FileOut, ImageOut, Notice, Progress, TextDelta
from core.settings import Settings
from tests import teams_activities as T
from tests.fakes.teams_connector import FakeConnector


@pytest.fixture
async def connector() -> AsyncIterator[FakeConnector]:
    async with FakeConnector() as fake:
        yield fake
        assert fake.protocol_errors == []


def reply_in(connector: FakeConnector, activity: dict, **options: object) -> TeamsReply:
    reference = {
        "activityId": activity["id"],
        "user": activity["from"],
        "bot": activity["recipient"],
        "conversation": activity["conversation"],
        "channelId": "msteams",
        "serviceUrl": activity["serviceUrl"],
    }
    adapter = build_cloud_adapter(auth_configuration(Settings(_env_file=None, teams_allow_anonymous=True)))
    personal = activity["conversation"]["conversationType"] == "personal"
    return TeamsReply(
        Outbound(adapter, ClaimsIdentity(), reference),
        streaming=personal,
        typing=personal or activity["conversation"]["conversationType"] == "groupChat",
        **options,  # type: ignore[arg-type]
    )


async def test_stream_is_closed_before_the_limit_and_the_answer_goes_on(connector: FakeConnector) -> None:
    connector.min_stream_interval = 0.2
    connector.stream_time_limit = 2.0
    chat = T.personal("x", service_url=connector.service_url)
    reply = reply_in(connector, chat, stream_interval=0.2, stream_limit=1.0, typing_interval=0.1)
    await reply.emit(Progress("Thinking…"))
    await reply.emit(TextDelta("Part one."))
    await asyncio.sleep(1.5)
    await reply.emit(TextDelta(" Part two."))
    await reply.emit(Done())
    stream, rest = connector.visible(chat["conversation"]["id"])
    assert stream.streamed and stream.finished and stream.text == "Part one."
    assert not rest.streamed and rest.text == "Part two."


async def test_a_quiet_stream_is_kept_alive(connector: FakeConnector) -> None:
    connector.min_stream_interval = 0.1
    chat = T.personal("x", service_url=connector.service_url)
    reply = reply_in(connector, chat, stream_interval=0.1, keepalive=0.3, typing_interval=0.05)
    await reply.emit(Progress("Thinking…"))
    await reply.emit(TextDelta("Waiting for a tool"))
    await asyncio.sleep(1.2)
    updates = connector.stream_updates(chat["conversation"]["id"])
    assert len([u for u in updates if u.activity["entities"][0]["streamType"] == "streaming"]) >= 3
    await reply.emit(Done())
    [answer] = connector.visible(chat["conversation"]["id"])
    assert answer.finished and answer.text == "Waiting for a tool"


async def test_stop_pressed_on_the_stream_calls_back_once(connector: FakeConnector) -> None:
    connector.min_stream_interval = 0.1
    stops: list[bool] = []
    chat = T.personal("x", service_url=connector.service_url)
    reply = reply_in(connector, chat, stream_interval=0.1, on_user_stop=lambda: stops.append(True))
    await reply.emit(Progress("Thinking…"))
    await reply.emit(TextDelta("one "))
    await asyncio.sleep(0.15)
    await reply.emit(TextDelta("two "))
    connector.stop_streams()
    await asyncio.sleep(0.15)
    await reply.emit(TextDelta("three "))
    await asyncio.sleep(0.15)
    await reply.emit(Failure(FailureKind.STOPPED))
    await reply.emit(Done())
    assert stops == [True]
    assert connector.visible(chat["conversation"]["id"])[-1].text.endswith("⚠️ Stopped.")


async def test_a_message_teams_finds_too_big_is_split_and_sent(connector: FakeConnector) -> None:
    connector.message_limit = 6_000
    post = T.channel("x", service_url=connector.service_url)
    reply = reply_in(connector, post)
    text = "\n\n".join(f"Paragraph {n}: " + "lorem ipsum " * 40 for n in range(20))
    await reply.emit(TextDelta(text))
    await reply.emit(Done())
    answers = connector.visible(post["conversation"]["id"])
    assert len(answers) >= 2
    assert " ".join(a.text for a in answers).split() == text.split()
    assert 413 in {s.status for s in connector.sent}


async def test_sources_and_notes_end_the_answer(connector: FakeConnector) -> None:
    post = T.group_chat("x", service_url=connector.service_url)
    reply = reply_in(connector, post)
    await reply.emit(TextDelta("See the report."))
    await reply.emit(Citation("Q3 report.pdf"))
    await reply.emit(Citation("Docs", url="https://example.com/docs"))
    await reply.emit(Failure(FailureKind.INCOMPLETE_OUTPUT_LIMIT))
    await reply.emit(Done())
    [answer] = connector.visible(post["conversation"]["id"])
    assert answer.text == (
        "See the report.\n\n**Sources**\n\n1. Q3 report.pdf\n2. [Docs](https://example.com/docs)\n\n"
        "⚠️ (The answer was cut short: it reached its length limit.)"
    )


async def test_an_unreadable_image_is_named_not_dropped(connector: FakeConnector) -> None:
    post = T.channel("x", service_url=connector.service_url)
    reply = reply_in(connector, post)
    await reply.emit(TextDelta("Here."))
    await reply.emit(ImageOut(b"not an image", "chart.png"))
    await reply.emit(Done())
    text, note = connector.visible(post["conversation"]["id"])
    assert text.text == "Here." and "chart.png" in note.text


async def test_the_answer_starts_a_paragraph_after_the_bridges_notes(connector: FakeConnector) -> None:
    post = T.channel("x", service_url=connector.service_url)
    reply = reply_in(connector, post)
    await reply.emit(TextDelta("Before <a"))
    await reply.emit(Notice("⚠️ I could not use a.csv: reason."))
    await reply.emit(TextDelta("After."))
    await reply.emit(Done())
    [answer] = connector.visible(post["conversation"]["id"])
    assert answer.text == "Before <a\n\n⚠️ I could not use a.csv: reason.\n\nAfter."


async def test_files_are_offered_after_the_answer_in_a_personal_chat(connector: FakeConnector) -> None:
    connector.min_stream_interval = 0.1
    chat = T.personal("x", service_url=connector.service_url)
    offered: list[str] = []

    def offer(file: FileOut) -> str | None:
        offered.append(file.filename)
        return None if file.filename == "huge.bin" else f"id-{len(offered)}"

    reply = reply_in(connector, chat, stream_interval=0.1, offer_file=offer)
    await reply.emit(Progress("Thinking…"))
    await reply.emit(FileOut(b"a,b\n", "data.csv", "text/csv"))
    await reply.emit(FileOut(b"x" * 10, "huge.bin"))
    await reply.emit(Done())
    answer, card = connector.visible(chat["conversation"]["id"])
    # no text: the stream's final message says a file follows, and names the one that cannot
    assert answer.text == "⚠️ I could not attach huge.bin here."
    assert card.attachments == [
        {
            "contentType": "application/vnd.microsoft.teams.card.file.consent",
            "name": "data.csv",
            "content": {
                "description": "data.csv",
                "sizeInBytes": 4,
                "acceptContext": {"upload": "id-1", "name": "data.csv"},
                "declineContext": {"upload": "id-1", "name": "data.csv"},
            },
        }
    ]


async def test_a_file_alone_closes_the_stream_with_a_pointer_to_it(connector: FakeConnector) -> None:
    connector.min_stream_interval = 0.1
    chat = T.personal("x", service_url=connector.service_url)
    reply = reply_in(connector, chat, stream_interval=0.1, offer_file=lambda file: "id")
    await reply.emit(Progress("Thinking…"))
    await reply.emit(FileOut(b"a,b\n", "data.csv"))
    await reply.emit(Done())
    answer, card = connector.visible(chat["conversation"]["id"])
    assert answer.streamed and answer.text == "(The assistant answered with the file below.)"
    assert card.attachments[0]["name"] == "data.csv"


async def test_outside_personal_chats_a_file_is_named(connector: FakeConnector) -> None:
    post = T.group_chat("x", service_url=connector.service_url)
    reply = reply_in(connector, post)
    await reply.emit(FileOut(b"a,b\n", "<at>data</at>.csv"))
    await reply.emit(Done())
    [answer] = connector.visible(post["conversation"]["id"])
    assert answer.text.startswith("⚠️ I made <\u200bat>data<\u200b/at>.csv, but I can only send files")


def png(width: int, height: int, noise: bool = False) -> bytes:
    image = (
        Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
        if noise
        else Image.new("RGBA", (width, height), (10, 120, 200, 128))
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_within_limits_are_sent_as_they_are() -> None:
    data = png(800, 600)
    assert fit_for_teams(data).data == data


def test_large_images_are_scaled_and_reencoded() -> None:
    flat = fit_for_teams(png(3000, 1000))
    assert flat.mime_type == "image/png" and Image.open(io.BytesIO(flat.data)).size == (1024, 341)
    noisy = fit_for_teams(png(1200, 1200, noise=True))
    assert noisy.mime_type == "image/jpeg" and len(noisy.data) <= MAX_BYTES
    assert Image.open(io.BytesIO(noisy.data)).size == (1024, 1024)
    with pytest.raises(UnusableImage):
        fit_for_teams(b"<html>")


def test_markdown_for_teams() -> None:
    text = "## Plan\n\n```\n# not a heading\n| a |\n|---|\n```\n\n| x | y |\n| --- | --- |\n| 1 | 2 |\nafter"
    assert to_teams_markdown(text) == (
        "**Plan**\n\n```\n# not a heading\n| a |\n|---|\n```\n\n```\n| x | y |\n| --- | --- |\n| 1 | 2 |\n```\nafter"
    )


def test_mention_tags_are_neutralised_across_deltas() -> None:
    streamed = "Hi <"
    cut = safe_prefix(streamed)
    assert streamed[:cut] == "Hi "
    assert "<at>" not in neutralise("<at>All</at> and <AT>x</AT>")
    assert neutralise("a < b and <b>bold</b>") == "a < b and <b>bold</b>"


def test_split_counts_what_teams_counts() -> None:
    ascii_text = "word " * 20_000
    assert all(size(part) <= 80_000 for part in split_message(ascii_text))
    wide = "日本語のテキスト。" * 10_000  # 3 bytes each in UTF-8
    parts = split_message(wide)
    assert all(size(part) <= 80_000 for part in parts) and "".join(parts) == wide
    assert split_message("short") == ["short"]


async def test_a_conversation_that_cannot_be_opened_is_logged_not_raised(
    connector: FakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    chat = T.personal("x", service_url=connector.service_url)
    chat["serviceUrl"] = "not a url"
    reply = reply_in(connector, chat, typing_interval=0.05)
    await reply.emit(Progress("Thinking…"))
    await reply.emit(TextDelta("hello"))
    await asyncio.sleep(0.2)
    await reply.emit(Done())
    assert connector.sent == []
    assert caplog.text.count("cannot open the conversation") == 1  # said once, not at every send


async def test_a_long_silent_turn_closes_its_stream_with_a_holding_line(connector: FakeConnector) -> None:
    connector.min_stream_interval = 0.1
    chat = T.personal("x", service_url=connector.service_url)
    reply = reply_in(connector, chat, stream_interval=0.1, stream_limit=0.5, typing_interval=0.05)
    await reply.emit(Progress("Running code…"))
    await asyncio.sleep(0.8)
    await reply.emit(TextDelta("Done: 42."))
    await reply.emit(Done())
    holding, answer = connector.visible(chat["conversation"]["id"])
    assert holding.streamed and holding.finished and holding.text == "Still working on it…"
    assert answer.text == "Done: 42."
    assert connector.typing_count(chat["conversation"]["id"]) >= 1  # typing once the stream closed


async def test_a_stream_past_the_update_limit_stays_cumulative_and_goes_on_in_the_final(
    connector: FakeConnector,
) -> None:
    connector.min_stream_interval = 0.1
    stops: list[bool] = []
    chat = T.personal("x", service_url=connector.service_url)
    reply = reply_in(connector, chat, stream_interval=0.1, on_user_stop=lambda: stops.append(True))
    await reply.emit(Progress("Thinking…"))
    first = "Intro.\n\n" + "word " * 5_990  # just under the streaming limit: streamed whole
    await reply.emit(TextDelta(first))
    await asyncio.sleep(0.15)
    await reply.emit(TextDelta("more " * 40))  # past the limit: the stream stops growing
    await asyncio.sleep(0.15)
    await reply.emit(Done())
    assert stops == []
    shown = "".join(v.text for v in connector.visible(chat["conversation"]["id"]))
    assert shown.rstrip().endswith(("more " * 40).strip())
    # (the fixture checks that every update repeated the text before it)


async def test_a_refusal_mid_stream_closes_the_stream_without_repeating_the_answer(
    connector: FakeConnector,
) -> None:
    connector.min_stream_interval = 0.1
    chat = T.personal("x", service_url=connector.service_url)
    reply = reply_in(connector, chat, stream_interval=0.1)
    await reply.emit(Progress("Thinking…"))
    await reply.emit(TextDelta("First half. "))
    await asyncio.sleep(0.15)
    connector.fail(500, "InternalServerError")
    await reply.emit(TextDelta("Second half."))
    await asyncio.sleep(0.15)
    await reply.emit(Done())
    visible = connector.visible(chat["conversation"]["id"])
    assert [(v.streamed, v.finished, v.text) for v in visible] == [(True, True, "First half. Second half.")]


async def test_names_and_sources_from_the_model_cannot_tag_anyone(connector: FakeConnector) -> None:
    chat = T.personal("x", service_url=connector.service_url)
    reply = reply_in(connector, chat, offer_file=lambda file: "upload-1")
    await reply.emit(Progress("Reading <at>Boss</at>.pdf…"))
    await reply.emit(TextDelta("Made it."))
    await reply.emit(Citation("Docs", url="https://example.com/a) <at>Everyone</at> (b"))
    await reply.emit(ImageOut(b"not an image", "<at>Boss</at>.png"))
    await reply.emit(FileOut(b"a,b\n", "<at>Boss</at>.csv"))
    await reply.emit(Done())
    sent = "\n".join(repr(s.activity) for s in connector.sent)
    assert "<at>" not in sent
    card = connector.sent[-1].activity["attachments"][0]
    assert card["name"] == "_at_Boss__at_.csv"
