"""An assistants-backend profile answers in Slack like a Responses one: streamed text, function
calls, images and files uploaded into the thread, no sandbox links."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from core.profiles import parse_profiles
from core.settings import Settings
from tests.conftest import PROFILES, RunningBridge, start_bridge
from tests.fakes import assistants_server as A
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.slack_events import mention

PNG = b"\x89PNG\r\n\x1a\n chart"


@pytest.fixture
async def assistants_fake() -> AsyncIterator[A.FakeAssistants]:
    async with A.FakeAssistants() as fake:
        yield fake


@pytest.fixture
async def assistants_bridge(
    settings: Settings, fake_slack: FakeSlack, fake_openai: FakeOpenAI, assistants_fake: A.FakeAssistants
) -> AsyncIterator[RunningBridge]:
    general = {
        "backend": "assistants",
        "assistant_id": "asst_test",
        "base_url": assistants_fake.base_url,
        "tools": PROFILES["assistants"]["general"]["tools"],
    }
    profiles = parse_profiles({"default": "general", "assistants": {"general": general}})
    service, stop, task = await start_bridge(settings, profiles)
    async with aiohttp.ClientSession() as http:
        yield RunningBridge(service, http, fake_slack, fake_openai)
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_assistants_profile_answers_in_slack(
    assistants_bridge: RunningBridge, assistants_fake: A.FakeAssistants, fake_slack: FakeSlack
) -> None:
    image = assistants_fake.add_file("chart.png", PNG)
    report = assistants_fake.add_file("report.csv", b"a,b\n1,2\n")
    link = "sandbox:/mnt/data/report.csv"
    text = f"It is 21 degrees. Chart below, data in [the report]({link})."
    assistants_fake.enqueue(
        A.CallFunctions([("get_weather", {"city": "Oslo"})]),
        A.Say(
            text,
            chunks=6,
            image_file_ids=[image],
            annotations=[A.annotation("file_path", text, link, report)],
        ),
    )
    event = mention("weather in Oslo, with a chart")
    await assistants_bridge.post_event(event)
    [answer] = await assistants_bridge.wait_answers("C1", event["ts"])
    assert answer == "It is 21 degrees. Chart below, data in the report (attached: report.csv)."
    assert fake_slack.messages("C1", event["ts"])[0].streamed
    await fake_slack.wait_for(lambda: len(fake_slack.uploads) == 2)
    assert sorted(fake_slack.uploads.values()) == sorted([PNG, b"a,b\n1,2\n"])
    completes = fake_slack.calls_to("files.completeUploadExternal")
    assert {c.args.get("thread_ts") for c in completes} == {event["ts"]}
    assert '"city": "Oslo"' in assistants_fake.tool_output_requests[0]["tool_outputs"][0]["output"]
