"""Socket Mode end to end: the real service, slack-bolt's AsyncSocketModeHandler and slack_sdk's
aiohttp Socket Mode client, over a real WebSocket to the fake Slack (see FACTS.md §5.6)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from pydantic import SecretStr
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.service import Service
from core.profiles import ProfileSet
from core.settings import Settings
from tests.conftest import start_bridge
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.slack_events import encode, event_callback, mention, signed_headers

APP_TOKEN = "xapp-test"
# How long to watch for an answer that must not come.
SETTLE = 0.5


@dataclass
class SocketBridge:
    """The real service in Socket Mode, connected to the fake Slack."""

    service: Service
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def shut_down(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
def socket_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"slack_app_token": SecretStr(APP_TOKEN), "slack_signing_secret": None})


@pytest.fixture
async def socket_bridge(
    socket_settings: Settings, profiles: ProfileSet, fake_slack: FakeSlack
) -> AsyncIterator[SocketBridge]:
    service, stop, task = await start_bridge(socket_settings, profiles)
    running = SocketBridge(service, stop, task)
    try:
        await fake_slack.wait_socket_connected()
        yield running
    finally:
        await running.shut_down()


def answers(fake_slack: FakeSlack, channel: str, thread_ts: str) -> list[str]:
    return [m.text for m in fake_slack.messages(channel, thread_ts) if m.stopped]


async def test_connects_with_the_app_token(socket_bridge: SocketBridge, fake_slack: FakeSlack) -> None:
    assert socket_bridge.service.settings.slack_socket_mode
    [open_call] = fake_slack.calls_to("apps.connections.open")
    assert open_call.token == APP_TOKEN
    assert fake_slack.socket_connected


async def test_mention_over_socket_is_acked_and_answered_in_its_thread(
    socket_bridge: SocketBridge, fake_slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    event = mention("hello over the socket")
    # A first delivery: Bolt turns retry_attempt 0 into `X-Slack-Retry-Num: 0`, which must not
    # count as a retry.
    envelope_id = await fake_slack.send_socket_event(event_callback(event))

    await fake_slack.wait_for(lambda: envelope_id in fake_slack.socket_acks)
    await fake_slack.wait_for(lambda: bool(answers(fake_slack, "C1", event["ts"])))
    [answer] = fake_slack.messages("C1", event["ts"])
    assert answer.stopped and answer.thread_ts == event["ts"]
    assert answer.text == "You said: hello over the socket"
    assert len(fake_openai.requests) == 1

    # Socket Mode serves no Events API HTTP route.
    body = encode(event_callback(mention("over http")))
    url = f"http://127.0.0.1:{socket_bridge.service.bound_port}/slack/events"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers=signed_headers(body)) as response,
    ):
        assert response.status in (404, 405)


async def test_redelivery_gets_no_second_answer(
    socket_bridge: SocketBridge, fake_slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    event = mention("only once please")
    payload = event_callback(event)
    first = await fake_slack.send_socket_event(payload)
    await fake_slack.wait_for(lambda: bool(answers(fake_slack, "C1", event["ts"])))

    retry = await fake_slack.send_socket_event(payload, retry_attempt=1, retry_reason="timeout")
    await fake_slack.wait_for(lambda: retry in fake_slack.socket_acks)
    await asyncio.sleep(SETTLE)

    assert fake_slack.socket_acks == [first, retry]
    assert len(fake_openai.requests) == 1
    assert answers(fake_slack, "C1", event["ts"]) == ["You said: only once please"]


async def test_retry_of_a_lost_first_delivery_is_answered(
    socket_bridge: SocketBridge, fake_slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    """A retry is not blindly dropped: the first delivery may never have reached the bot."""
    event = mention("second time lucky")
    await fake_slack.send_socket_event(event_callback(event), retry_attempt=1, retry_reason="timeout")
    await fake_slack.wait_for(lambda: bool(answers(fake_slack, "C1", event["ts"])))
    assert answers(fake_slack, "C1", event["ts"]) == ["You said: second time lucky"]
    assert len(fake_openai.requests) == 1


async def test_reconnects_when_slack_asks_to_disconnect(
    socket_bridge: SocketBridge, fake_slack: FakeSlack
) -> None:
    await fake_slack.send_socket_disconnect()
    await fake_slack.wait_for(lambda: len(fake_slack.calls_to("apps.connections.open")) == 2)
    await fake_slack.wait_for(lambda: fake_slack.socket_close_codes != [] and fake_slack.socket_connected)

    event = mention("still there?")
    envelope_id = await fake_slack.send_socket_event(event_callback(event))
    await fake_slack.wait_for(lambda: envelope_id in fake_slack.socket_acks)
    await fake_slack.wait_for(lambda: bool(answers(fake_slack, "C1", event["ts"])))
    assert answers(fake_slack, "C1", event["ts"]) == ["You said: still there?"]


async def test_stopping_the_service_closes_the_websocket(
    socket_bridge: SocketBridge, fake_slack: FakeSlack
) -> None:
    assert fake_slack.socket_connected
    await socket_bridge.shut_down()
    await fake_slack.wait_for(lambda: not fake_slack.socket_connected)
    assert fake_slack.socket_close_codes == [aiohttp.WSCloseCode.OK]
    assert socket_bridge.task.done() and socket_bridge.task.exception() is None


async def test_connections_open_accepts_only_the_app_token(fake_slack: FakeSlack) -> None:
    bot = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url)
    with pytest.raises(SlackApiError) as info:
        await bot.apps_connections_open(app_token=fake_slack.bot_token)
    assert info.value.response["error"] == "invalid_auth"
    response = await bot.apps_connections_open(app_token=APP_TOKEN)
    assert response["url"].startswith(fake_slack.root_url.replace("http://", "ws://") + "/link/?ticket=")
    # The bot token still works for everything else, and the app token for nothing else.
    app = AsyncWebClient(token=APP_TOKEN, base_url=fake_slack.base_url)
    with pytest.raises(SlackApiError) as info:
        await app.auth_test()
    assert info.value.response["error"] == "invalid_auth"
    assert (await bot.auth_test())["ok"]
