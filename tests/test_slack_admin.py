"""Per-channel administration from Slack, end to end: admin commands after a mention and through
the signed ``/assistant`` slash command (answered ephemerally), budgets, deny/allow, guests,
workspace admins per users.info, the audit log and the App Home tab."""

from __future__ import annotations

import asyncio
import itertools
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.users import UserRoles
from core.channels import AuditEntry
from core.profiles import parse_profiles
from core.settings import Settings
from tests import slack_events
from tests.conftest import RunningBridge, start_bridge
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.slack_events import mention

ADMIN = "UADMIN"


def profiles_dict(**admins: Any) -> dict[str, Any]:
    return {
        "default": "general",
        "assistants": {
            "general": {"model": "gpt-test", "instructions": "Be brief.", "description": "Everyday help."},
            "analyst": {
                "model": "gpt-analyst",
                "instructions": "Analyse.",
                "description": "Looks at numbers.",
            },
        },
        "admins": {"slack": [ADMIN], **admins},
    }


StartBridge = Callable[[dict[str, Any]], Awaitable[RunningBridge]]


@pytest.fixture
async def start(
    settings: Settings, fake_slack: FakeSlack, fake_openai: FakeOpenAI
) -> AsyncIterator[StartBridge]:
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    async with aiohttp.ClientSession() as http:

        async def _start(raw: dict[str, Any]) -> RunningBridge:
            service, stop, task = await start_bridge(settings, parse_profiles(raw, source="test"))
            running.append((stop, task))
            return RunningBridge(service, http, fake_slack, fake_openai)

        yield _start
        for stop, task in running:
            stop.set()
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def bridge(start: StartBridge) -> RunningBridge:
    return await start(profiles_dict())


_triggers = itertools.count(1)


async def send_slash(
    bridge: RunningBridge,
    text: str,
    *,
    user: str = ADMIN,
    channel: str = "C1",
    channel_name: str = "general",
    response_url: str = "https://hooks.slack.invalid/commands/T1/1/abc",
) -> None:
    """Send ``/assistant <text>`` as Slack does: a signed form body to the events URL."""
    form = {
        "token": "verification-token",
        "team_id": slack_events.TEAM,
        "team_domain": "fake",
        "channel_id": channel,
        "channel_name": channel_name,
        "user_id": user,
        "user_name": user.lower(),
        "command": "/assistant",
        "text": text,
        "api_app_id": "A1",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"trigger-{next(_triggers)}",
    }
    body = urllib.parse.urlencode(form).encode()
    headers = slack_events.signed_headers(body)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    async with bridge.http.post(f"{bridge.url}/slack/events", data=body, headers=headers) as response:
        assert response.status == 200
        await response.read()


async def slash(
    bridge: RunningBridge, text: str, *, user: str = ADMIN, channel: str = "C1", channel_name: str = "general"
) -> str:
    """``/assistant <text>``; return the ephemeral answer."""
    before = len(bridge.slack.ephemerals_for(user))
    await send_slash(bridge, text, user=user, channel=channel, channel_name=channel_name)
    await bridge.slack.wait_for(lambda: len(bridge.slack.ephemerals_for(user)) > before)
    return bridge.slack.ephemerals_for(user)[-1]


async def ask(bridge: RunningBridge, text: str, **kwargs: Any) -> str:
    """Mention the bot; return the one answer in the new thread."""
    event = mention(text, **kwargs)
    await bridge.post_event(event)
    [answer] = await bridge.wait_answers(event["channel"], kwargs.get("thread_ts") or event["ts"])
    return answer


async def audit(bridge: RunningBridge) -> list[AuditEntry]:
    return await bridge.service.bridge.admin.book.audit_entries()


async def test_admin_switches_one_channel_with_a_mention(bridge: RunningBridge) -> None:
    answer = await ask(bridge, "use analyst", user=ADMIN)
    assert "`analyst` answers in this channel" in answer
    assert bridge.openai.requests == []  # a command never reaches the backend

    assert await ask(bridge, "numbers please") == "You said: numbers please"
    await ask(bridge, "and here?", channel="C2")
    in_c1, in_c2 = bridge.openai.requests
    assert (in_c1["model"], in_c1["instructions"]) == ("gpt-analyst", "Analyse.")
    assert (in_c2["model"], in_c2["instructions"]) == ("gpt-test", "Be brief.")


async def test_admin_switches_with_the_slash_command_answered_only_to_them(bridge: RunningBridge) -> None:
    answer = await slash(bridge, "use analyst")
    assert "`analyst` answers in this channel" in answer
    assert bridge.slack.messages("C1") == []  # ephemeral: nothing in the channel for everyone
    [call] = bridge.slack.calls_to("chat.postEphemeral")
    assert call.args["channel"] == "C1" and call.args["user"] == ADMIN

    await ask(bridge, "go")
    assert bridge.openai.requests[0]["model"] == "gpt-analyst"
    assert "analyst" in await slash(bridge, "show", user="U1")  # anyone may look


async def test_non_admin_cannot_switch(bridge: RunningBridge) -> None:
    assert "Only the bot's admins" in await slash(bridge, "use analyst", user="U1")
    assert "Only the bot's admins" in await ask(bridge, "use analyst", user="U1")
    await ask(bridge, "still general?")
    assert bridge.openai.requests[0]["model"] == "gpt-test"
    assert await audit(bridge) == []


async def test_budget_answers_the_crossing_turn_then_says_so_once(bridge: RunningBridge) -> None:
    assert "10" in await slash(bridge, "limit 10")
    # Each fake turn reports 10 + 5 tokens: the first crosses the limit and is answered.
    assert await ask(bridge, "first") == "You said: first"
    refused = await ask(bridge, "second")
    assert "has used its 10 tokens" in refused
    assert len(bridge.openai.requests) == 1
    await ask(bridge, "elsewhere", channel="C2")  # other channels are not limited
    assert len(bridge.openai.requests) == 2


async def test_deny_explains_once_per_thread_and_allow_restores(bridge: RunningBridge) -> None:
    assert "no longer answer" in await slash(bridge, "deny", channel="C3")
    root = mention("hello?", channel="C3")
    await bridge.post_event(root)
    [explanation] = await bridge.wait_answers("C3", root["ts"])
    assert "switched off in this channel" in explanation
    await bridge.post_event(mention("hello??", channel="C3", thread_ts=root["ts"]))
    await asyncio.sleep(0.3)
    assert len(bridge.slack.messages("C3", root["ts"])) == 1  # no second message
    assert bridge.openai.requests == []

    assert "answer in this channel now" in await slash(bridge, "allow", channel="C3")
    assert await ask(bridge, "back?", channel="C3") == "You said: back?"


async def test_malformed_slash_command_gets_help_and_changes_nothing(bridge: RunningBridge) -> None:
    answer = await slash(bridge, "limit lots")
    assert "did not understand" in answer and "`show`" in answer
    assert await audit(bridge) == []
    assert "`show`" in await slash(bridge, "")  # /assistant alone: the help text


async def test_ephemeral_refused_goes_to_the_response_url(bridge: RunningBridge) -> None:
    # e.g. a channel the bot is not a member of: Slack refuses chat.postEphemeral there
    bridge.slack.fail("chat.postEphemeral", "channel_not_found")
    await send_slash(bridge, "show", user="U1", channel="C9", response_url=bridge.slack.response_url())
    await bridge.slack.wait_for(lambda: bool(bridge.slack.command_responses))
    [response] = bridge.slack.command_responses
    assert response["response_type"] == "ephemeral" and "general" in response["text"]


async def test_thread_commands_through_the_slash_command_point_to_the_thread(bridge: RunningBridge) -> None:
    for word in ("reset", "stop"):
        answer = await slash(bridge, word, user="U1")
        assert f"Say `{word}` in the thread" in answer and "Nothing was changed" in answer


async def test_workspace_admins_count_only_when_the_file_says_so(start: StartBridge) -> None:
    bridge = await start(profiles_dict())
    bridge.slack.set_user("UOWNER", is_owner=True)
    assert "Only the bot's admins" in await slash(bridge, "use analyst", user="UOWNER")

    trusting = await start(profiles_dict(slack_workspace_admins=True))
    bridge.slack.set_user("UWSADMIN", is_admin=True)
    assert "`analyst` answers" in await slash(trusting, "use analyst", user="UWSADMIN")
    assert "Only the bot's admins" in await slash(trusting, "deny", user="U1")


async def test_guest_gets_one_explanation(bridge: RunningBridge) -> None:
    bridge.slack.set_user("UGUEST", is_restricted=True)
    root = mention("hi", user="UGUEST")
    await bridge.post_event(root)
    [explanation] = await bridge.wait_answers("C1", root["ts"])
    assert "guest accounts" in explanation
    await bridge.post_event(mention("hi again", user="UGUEST", thread_ts=root["ts"]))
    await asyncio.sleep(0.3)
    assert len(bridge.slack.messages("C1", root["ts"])) == 1
    assert bridge.openai.requests == []
    bridge.slack.set_user("UMCG", is_ultra_restricted=True)
    assert "guest accounts" in await ask(bridge, "me too", user="UMCG")


async def test_users_info_is_asked_once_and_a_failure_means_no_roles(bridge: RunningBridge) -> None:
    await ask(bridge, "one")
    await ask(bridge, "two")
    assert [c.args["user"] for c in bridge.slack.calls_to("users.info")] == ["U1"]
    bridge.slack.fail("users.info", "missing_scope")
    assert await ask(bridge, "still answered", user="U2") == "You said: still answered"
    assert await ask(bridge, "and again", user="U2") == "You said: and again"
    assert [c.args["user"] for c in bridge.slack.calls_to("users.info")] == ["U1", "U2"]  # failure kept


async def test_audit_log_records_who_where_before_after(bridge: RunningBridge) -> None:
    await slash(bridge, "use analyst")
    await slash(bridge, "limit 10")
    await slash(bridge, "deny", channel="C3")
    await slash(bridge, "use analyst", user="U1")  # refused: not audited
    entries = await audit(bridge)
    assert [(e.who, e.where, e.what) for e in entries] == [
        (ADMIN, "slack:T1:C1", "use"),
        (ADMIN, "slack:T1:C1", "limit"),
        (ADMIN, "slack:T1:C3", "deny"),
    ]
    use, limit, deny = entries
    assert "profile=default" in use.before and "profile=analyst" in use.after
    assert "limit=default" in limit.before and "limit=10" in limit.after
    assert "answers=default" in deny.before and "answers=denied" in deny.after


def home_text(view: dict[str, Any]) -> str:
    return "\n".join(block["text"]["text"] for block in view["blocks"])


async def open_home(bridge: RunningBridge, user: str, channel: str) -> str:
    event = {"type": "app_home_opened", "user": user, "channel": channel, "tab": "home", "event_ts": "1.1"}
    bridge.slack.home_views.pop(user, None)
    await bridge.post_event(event)
    await bridge.slack.wait_for(lambda: user in bridge.slack.home_views)
    return home_text(bridge.slack.home_views[user])


async def test_home_tab_shows_the_dm_assistant_and_admins_get_more(bridge: RunningBridge) -> None:
    text = await open_home(bridge, "U1", "D1")
    assert "*general* answers" in text and "For admins" not in text and "gpt-analyst" not in text

    await slash(bridge, "use analyst", channel="DADMIN", channel_name="directmessage")
    text = await open_home(bridge, ADMIN, "DADMIN")
    assert "*analyst* answers" in text
    assert "For admins" in text and "*analyst* (gpt-analyst)" in text and "*general* (gpt-test)" in text
    assert "Tokens per channel per day: no limit" in text
    assert "• <#DADMIN>: *analyst*, default limit, answers as the defaults say" in text  # the table
    # the messages tab (not home) publishes nothing
    await bridge.post_event({"type": "app_home_opened", "user": "U9", "channel": "D9", "tab": "messages"})
    await asyncio.sleep(0.2)
    assert "U9" not in bridge.slack.home_views
    # a guest is told what a message would tell them, not that an assistant answers
    bridge.slack.set_user("UGUEST", is_restricted=True)
    text = await open_home(bridge, "UGUEST", "DGUEST")
    assert "I don't answer guest accounts" in text and "answers" not in text.split("\n")[0]


async def test_user_roles_cache_expires_and_stays_bounded(fake_slack: FakeSlack) -> None:
    now = [0.0]
    client = AsyncWebClient(token="xoxb-test", base_url=fake_slack.base_url)
    roles = UserRoles(client, ttl=60, size=2, clock=lambda: now[0])
    fake_slack.set_user("UA", is_primary_owner=True, is_owner=True)
    assert await roles.roles("UA") == {"workspace_admin"}
    fake_slack.set_user("UA", is_owner=False, is_primary_owner=False, is_restricted=True)
    assert await roles.roles("UA") == {"workspace_admin"}  # cached
    now[0] = 61
    assert await roles.roles("UA") == {"guest"}  # expired: asked again
    await roles.roles("UB")
    await roles.roles("UC")  # UA is the oldest and goes
    calls = len(fake_slack.calls_to("users.info"))
    await roles.roles("UC")
    assert len(fake_slack.calls_to("users.info")) == calls
    await roles.roles("UA")
    assert len(fake_slack.calls_to("users.info")) == calls + 1
    assert await roles.roles("") == frozenset()
