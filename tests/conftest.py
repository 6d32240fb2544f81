"""Shared fixtures: the fake OpenAI and Slack servers, and the real bridge served on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bots.service import Service
from core.profiles import ProfileSet, parse_profiles
from core.settings import Settings
from tests import slack_events
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.wiring import settings_for_fakes

PROFILES: dict[str, Any] = {
    "default": "general",
    "assistants": {
        "general": {
            "model": "gpt-test",
            "instructions": "Be brief.",
            "max_output_tokens": 500,
            "tools": [
                {"type": "function", "function": "tests.tools:get_weather"},
                {"type": "function", "function": "tests.tools:slow_tool", "timeout": 0.2},
                {"type": "function", "function": "tests.tools:broken_tool"},
            ],
        }
    },
}


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(
        bot_token="xoxb-test", team_id=slack_events.TEAM, bot_user_id=slack_events.BOT_USER
    ) as fake:
        yield fake


@pytest.fixture
def profiles() -> ProfileSet:
    return parse_profiles(PROFILES, source="test")


@pytest.fixture
def settings(tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack) -> Settings:
    return settings_for_fakes(fake_openai, fake_slack, tmp_path / "store.sqlite")


@dataclass
class RunningBridge:
    """The real server on loopback, fed signed Slack events over HTTP."""

    service: Service
    http: aiohttp.ClientSession
    slack: FakeSlack
    openai: FakeOpenAI

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.bound_port}"

    async def post_event(
        self, event: dict[str, Any], *, event_id: str | None = None, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        body = slack_events.encode(slack_events.event_callback(event, event_id))
        all_headers = slack_events.signed_headers(body)
        all_headers.update(headers or {})
        async with self.http.post(f"{self.url}/slack/events", data=body, headers=all_headers) as response:
            await response.read()
            return response

    def answers(self, channel: str, thread_ts: str) -> list[str]:
        return [m.text for m in self.slack.messages(channel, thread_ts) if m.stopped]

    async def wait_answers(
        self, channel: str, thread_ts: str, count: int = 1, timeout: float = 5.0
    ) -> list[str]:
        await self.slack.wait_for(lambda: len(self.answers(channel, thread_ts)) >= count, timeout)
        return self.answers(channel, thread_ts)


async def start_bridge(
    settings: Settings, profiles: ProfileSet
) -> tuple[Service, asyncio.Event, asyncio.Task[None]]:
    service = Service.create(settings, profiles)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 5)
    return service, stop, task


@pytest.fixture
async def bridge(
    settings: Settings, profiles: ProfileSet, fake_slack: FakeSlack, fake_openai: FakeOpenAI
) -> AsyncIterator[RunningBridge]:
    service, stop, task = await start_bridge(settings, profiles)
    async with aiohttp.ClientSession() as http:
        yield RunningBridge(service, http, fake_slack, fake_openai)
    stop.set()
    await asyncio.wait_for(task, 10)
