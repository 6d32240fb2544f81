"""Teams end to end: Teams-shaped activities POSTed to the real /api/messages (Agents SDK), answered
in the background through the fake Bot Connector, with the real openai client and the fake OpenAI."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from bots.service import Service
from core.profiles import ProfileSet, parse_profiles
from core.settings import Settings
from tests import teams_activities as T
from tests.conftest import PROFILES, start_bridge
from tests.fakes import assistants_server as A
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack_server import FakeSlack
from tests.fakes.teams_connector import FakeConnector, Visible
from tests.fakes.wiring import settings_for_fakes


@dataclass
class RunningTeams:
    service: Service
    connector: FakeConnector
    openai: FakeOpenAI

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.bound_port}/api/messages"

    async def post(self, activity: dict, token: str | None = None) -> int:
        return await T.post(self.url, activity, token=token)

    def answers(self, conversation_id: str) -> list[Visible]:
        return [v for v in self.connector.visible(conversation_id) if v.finished]

    async def wait_answers(self, conversation_id: str, count: int = 1, timeout: float = 5.0) -> list[Visible]:
        await self.connector.wait_for(lambda: len(self.answers(conversation_id)) >= count, timeout)
        return self.answers(conversation_id)


@pytest.fixture
async def connector() -> AsyncIterator[FakeConnector]:
    async with FakeConnector() as fake:
        yield fake


def teams_settings(openai: FakeOpenAI, slack: FakeSlack, tmp_path: Path, **overrides: object) -> Settings:
    return settings_for_fakes(
        openai, slack, tmp_path / "store.sqlite", teams_allow_anonymous=True, **overrides
    )


async def running(settings: Settings, profiles: ProfileSet, connector: FakeConnector, openai: FakeOpenAI):
    service, stop, task = await start_bridge(settings, profiles)
    return RunningTeams(service, connector, openai), stop, task


@pytest.fixture
async def teams(
    tmp_path: Path,
    profiles: ProfileSet,
    fake_openai: FakeOpenAI,
    fake_slack: FakeSlack,
    connector: FakeConnector,
) -> AsyncIterator[RunningTeams]:
    bot, stop, task = await running(
        teams_settings(fake_openai, fake_slack, tmp_path), profiles, connector, fake_openai
    )
    yield bot
    stop.set()
    await asyncio.wait_for(task, 10)
    assert connector.protocol_errors == []


def user_texts(request: dict) -> list[str]:
    return [
        part["text"]
        for item in request["input"]
        for part in item.get("content") or []
        if part.get("type") == "input_text"
    ]


async def test_channel_mention_is_answered_in_its_reply_chain(teams: RunningTeams) -> None:
    teams.openai.enqueue(Reply("Hello from the **channel**."))
    post = T.channel("what is new?", service_url=teams.connector.service_url)
    assert await teams.post(post) == 202
    chain = post["conversation"]["id"]
    assert chain.endswith(f";messageid={post['id']}")

    [answer] = await teams.wait_answers(chain)
    assert answer.text == "Hello from the **channel**." and not answer.streamed
    assert answer.reply_to_id == post["id"]
    assert user_texts(teams.openai.requests[0]) == ["what is new?"]  # the mention is gone
    assert teams.connector.typing_count(chain) == 0  # Teams ignores typing in channels
    assert teams.connector.stream_updates(chain) == []
    assert all(sent.authorization is None for sent in teams.connector.sent)  # anonymous: no token


async def test_followup_in_a_reply_chain_reuses_the_conversation(teams: RunningTeams) -> None:
    url = teams.connector.service_url
    root = T.channel("remember 7", service_url=url)
    await teams.post(root)
    chain = root["conversation"]["id"]
    await teams.wait_answers(chain)
    await teams.post(T.channel("which number?", service_url=url, root_id=root["id"]))
    await teams.wait_answers(chain, count=2)
    other = T.channel("a new topic", service_url=url)
    await teams.post(other)
    await teams.wait_answers(other["conversation"]["id"])

    first, second, third = (r["conversation"] for r in teams.openai.requests)
    assert first == second != third
    assert teams.openai.count("POST", "/v1/conversations") == 2


async def test_personal_chat_answer_streams(teams: RunningTeams) -> None:
    teams.openai.delta_delay = 0.3
    text = "One. Two. Three. Four. Five. Six. Seven. Eight."
    teams.openai.enqueue(Reply(text, chunks=8))
    chat = T.personal("count to eight", service_url=teams.connector.service_url)
    assert await teams.post(chat) == 202
    conversation = chat["conversation"]["id"]

    [answer] = await teams.wait_answers(conversation, timeout=10)
    assert answer.streamed and answer.text == text
    updates = teams.connector.stream_updates(conversation)
    kinds = [u.activity["entities"][0]["streamType"] for u in updates]
    assert kinds[0] == "informative" and updates[0].activity["text"] == "Thinking…"
    assert "streaming" in kinds  # text came before the end, not only in the final message
    streamed = [u.activity["text"] for u in updates if u.activity["entities"][0]["streamType"] == "streaming"]
    assert all(text.startswith(part) for part in streamed)
    assert len(teams.connector.visible(conversation)) == 1


async def test_group_chat_gets_typing_then_one_message(teams: RunningTeams) -> None:
    teams.openai.first_token_delay = 3.5
    teams.openai.enqueue(Reply("All of you: hello."))
    chat = T.group_chat("say hello", service_url=teams.connector.service_url)
    await teams.post(chat)
    conversation = chat["conversation"]["id"]
    [answer] = await teams.wait_answers(conversation, timeout=10)
    assert answer.text == "All of you: hello." and not answer.streamed
    assert teams.connector.stream_updates(conversation) == []
    assert teams.connector.typing_count(conversation) >= 2  # renewed while the turn ran


async def test_personal_chat_falls_back_when_streaming_is_refused(teams: RunningTeams) -> None:
    teams.connector.fail(405, "BadArgument")
    teams.openai.enqueue(Reply("Plain answer."))
    chat = T.personal("hi", service_url=teams.connector.service_url)
    await teams.post(chat)
    [answer] = await teams.wait_answers(chat["conversation"]["id"])
    assert answer.text == "Plain answer." and not answer.streamed


async def test_a_duplicated_activity_gets_one_answer(teams: RunningTeams) -> None:
    chat = T.personal("only once please", service_url=teams.connector.service_url)
    assert await teams.post(chat) == 202
    assert await teams.post(chat) == 202  # Teams re-sends what it thinks went unanswered
    await teams.wait_answers(chat["conversation"]["id"])
    assert await teams.post(chat) == 202
    await asyncio.sleep(0.3)
    assert len(teams.answers(chat["conversation"]["id"])) == 1
    assert len(teams.openai.requests) == 1


async def test_rate_limited_sends_are_retried_after_retry_after(teams: RunningTeams) -> None:
    teams.connector.rate_limit(times=1, retry_after=1)
    post = T.channel("hello", service_url=teams.connector.service_url)
    await teams.post(post)
    [answer] = await teams.wait_answers(post["conversation"]["id"])
    assert answer.text == "You said: hello"  # the fake echoes
    statuses = [sent.status for sent in teams.connector.sent]
    assert statuses[0] == 429 and statuses[-1] == 200
    assert teams.connector.sent[-1].at - teams.connector.sent[0].at >= 0.9


async def test_long_answer_is_split_within_the_message_limit(teams: RunningTeams) -> None:
    paragraph = "word " * 199 + "end.\n\n"
    text = paragraph * 100  # ~100 KB
    teams.openai.enqueue(Reply(text, chunks=20))
    post = T.channel("write a lot", service_url=teams.connector.service_url)
    await teams.post(post)
    answers = await teams.wait_answers(post["conversation"]["id"], count=3)
    assert len(answers) == 3  # Teams counts message size in UTF-16: 80 KB is 40,000 characters
    assert all(len(a.text.encode("utf-16-le")) <= 80_000 for a in answers)
    assert "\n\n".join(a.text for a in answers).split() == text.split()


async def test_markdown_is_adapted_and_mention_tags_neutralised(teams: RunningTeams) -> None:
    teams.openai.enqueue(Reply("# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nHi <at>Everyone</at>"))
    post = T.channel("format", service_url=teams.connector.service_url)
    await teams.post(post)
    [answer] = await teams.wait_answers(post["conversation"]["id"])
    assert answer.text.startswith("**Title**\n\n```\n| a | b |")
    assert "<at>" not in answer.text


async def test_help_reset_and_stop_are_text_commands_after_the_mention(teams: RunningTeams) -> None:
    url = teams.connector.service_url
    root = T.channel("remember 7", service_url=url)
    chain = root["conversation"]["id"]
    await teams.post(root)
    await teams.wait_answers(chain)
    await teams.post(T.channel("help", service_url=url, root_id=root["id"]))
    answers = await teams.wait_answers(chain, count=2)
    assert "`reset`" in answers[1].text
    await teams.post(T.channel("reset", service_url=url, root_id=root["id"]))
    await teams.wait_answers(chain, count=3)
    await teams.post(T.channel("stop", service_url=url, root_id=root["id"]))
    answers = await teams.wait_answers(chain, count=4)
    assert answers[3].text == "Nothing is running in this thread."
    await teams.post(T.channel("which number?", service_url=url, root_id=root["id"]))
    await teams.wait_answers(chain, count=5)
    first, second = (r["conversation"] for r in teams.openai.requests)
    assert first != second  # reset started a new conversation


async def test_pressing_stop_on_a_stream_cancels_the_turn(teams: RunningTeams) -> None:
    teams.openai.delta_delay = 0.5
    teams.openai.enqueue(Reply("a b c d e f g h i j k l m n o p", chunks=16))
    chat = T.personal("go slowly", service_url=teams.connector.service_url)
    await teams.post(chat)
    conversation = chat["conversation"]["id"]
    await teams.connector.wait_for(
        lambda: any(
            u.activity["entities"][0]["streamType"] == "streaming"
            for u in teams.connector.stream_updates(conversation)
        ),
        timeout=10,
    )
    teams.connector.stop_streams()
    await teams.connector.wait_for(
        lambda: any(v.text.endswith("Stopped.") for v in teams.answers(conversation)), 10
    )
    [stream, stopped] = teams.connector.visible(conversation)
    assert stream.streamed and stopped.text.endswith("⚠️ Stopped.")
    # what had streamed stays; what had not is shown before the note; nothing is repeated
    shown = stream.text + stopped.text.removesuffix("⚠️ Stopped.").strip()
    assert "a b c d e f g h i j k l m n o p".startswith(shown.strip())
    await asyncio.sleep(1)
    assert "o p" not in "".join(v.text for v in teams.connector.visible(conversation))  # the turn ended
    stream_errors = [s for s in teams.connector.sent if s.status == 403]
    assert len(stream_errors) == 1  # nothing more was sent into the stopped stream


async def test_empty_mention_and_bot_added_get_a_greeting(teams: RunningTeams) -> None:
    url = teams.connector.service_url
    await teams.post(T.conversation_update_bot_added(service_url=url, conversation_id="a:new-chat"))
    [hello] = await teams.wait_answers("a:new-chat")
    assert hello.text.startswith("Hi!")
    post = T.channel("", service_url=url)
    await teams.post(post)
    [hello] = await teams.wait_answers(post["conversation"]["id"])
    assert hello.text.startswith("Hi!")
    assert teams.openai.requests == []


async def test_malformed_activities_are_refused_and_the_bot_keeps_serving(teams: RunningTeams) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(teams.url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
        async with http.post(teams.url, json={"type": "message", "text": "no conversation"}) as r:
            assert r.status == 400
        async with http.post(teams.url, json={"type": "message", "conversation": {"id": 5}, "id": []}) as r:
            assert r.status == 400
    post = T.channel("still there?", service_url=teams.connector.service_url)
    await teams.post(post)
    await teams.wait_answers(post["conversation"]["id"])


async def test_requests_without_a_valid_token_are_refused_when_credentials_are_set(
    tmp_path: Path,
    profiles: ProfileSet,
    fake_openai: FakeOpenAI,
    fake_slack: FakeSlack,
    connector: FakeConnector,
) -> None:
    settings = settings_for_fakes(
        fake_openai,
        fake_slack,
        tmp_path / "store.sqlite",
        teams_app_id="11111111-2222-3333-4444-555555555555",
        teams_app_password="secret",
        teams_tenant_id="66666666-7777-8888-9999-000000000000",
    )
    bot, stop, task = await running(settings, profiles, connector, fake_openai)
    try:
        post = T.channel("hello", service_url=connector.service_url)
        assert await bot.post(post) == 401
        assert await bot.post(post, token="not-a-jwt") == 401
        assert await bot.post(post, token="a.b.c") == 401
        await asyncio.sleep(0.2)
        assert fake_openai.requests == [] and connector.sent == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_tokens_must_come_from_bot_framework_or_the_bots_tenant() -> None:
    from bots.teams.adapter import auth_configuration
    from core.settings import Settings

    tenant = "66666666-7777-8888-9999-000000000000"
    settings = Settings(
        _env_file=None,
        teams_app_id="11111111-2222-3333-4444-555555555555",
        teams_app_password="secret",
        teams_tenant_id=tenant,
    )
    auth = auth_configuration(settings)
    assert auth.VALIDATE_ISSUER is True
    assert "https://api.botframework.com" in auth.ISSUERS
    assert all("botframework" in issuer or tenant in issuer for issuer in auth.ISSUERS)


def noisy_png(width: int, height: int) -> bytes:
    image = Image.frombytes("RGB", (width, height), __import__("os").urandom(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def test_an_image_is_sent_inline_within_teams_limits(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack, connector: FakeConnector
) -> None:
    big = noisy_png(2000, 1500)
    assert len(big) > 1_048_576
    async with A.FakeAssistants() as assistants:
        image = assistants.add_file("chart.png", big)
        assistants.enqueue(A.Say("Here is the chart.", image_file_ids=[image]))
        general = {"backend": "assistants", "assistant_id": "asst_test", "base_url": assistants.base_url}
        profiles = parse_profiles({"default": "general", "assistants": {"general": general}})
        bot, stop, task = await running(
            teams_settings(fake_openai, fake_slack, tmp_path), profiles, connector, fake_openai
        )
        try:
            post = T.channel("a chart please", service_url=connector.service_url)
            await bot.post(post)
            text, picture = await bot.wait_answers(post["conversation"]["id"], count=2, timeout=15)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert text.text == "Here is the chart." and not text.attachments
    [attachment] = picture.attachments
    # too big for Teams as a PNG even at 1024 px, so it went as a JPEG
    assert picture.text == "" and attachment["contentType"] == "image/jpeg"
    assert attachment["name"].endswith(".jpg")
    header, _, data = attachment["contentUrl"].partition(",")
    sent = Image.open(io.BytesIO(__import__("base64").b64decode(data)))
    assert max(sent.size) == 1024 and sent.size == (1024, 768)
    assert header == f"data:{attachment['contentType']};base64"
    assert connector.protocol_errors == []


_ = PROFILES  # the default profiles come from conftest's fixture


async def test_one_serve_answers_slack_and_teams(teams: RunningTeams, fake_slack: FakeSlack) -> None:
    from tests import slack_events

    assert teams.service.slack is not None and teams.service.teams is not None
    event = slack_events.mention("hello from Slack")
    body = slack_events.encode(slack_events.event_callback(event))
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{teams.service.bound_port}/slack/events"
        async with http.post(url, data=body, headers=slack_events.signed_headers(body)) as response:
            assert response.status == 200
    post = T.channel("hello from Teams", service_url=teams.connector.service_url)
    await teams.post(post)
    [answer] = await teams.wait_answers(post["conversation"]["id"])
    await fake_slack.wait_for(lambda: any(m.stopped for m in fake_slack.messages("C1", event["ts"])))
    assert answer.text == "You said: hello from Teams"
    assert [m.text for m in fake_slack.messages("C1", event["ts"])] == ["You said: hello from Slack"]
