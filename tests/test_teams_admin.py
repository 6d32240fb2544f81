"""Per-channel administration in Teams, end to end: text commands after the @mention POSTed to the
real /api/messages, answers through the fake Bot Connector, turns on the fake OpenAI. Admins are
named by their Entra object id (``aadObjectId``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.profiles import ProfileSet, parse_profiles
from tests import teams_activities as T
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.teams_connector import FakeConnector
from tests.test_teams_answers import RunningTeams, running, teams_settings

ADMIN = "aad-admin"
CHANNEL_A = "19:channel-a@thread.tacv2"
CHANNEL_B = "19:channel-b@thread.tacv2"

ADMIN_PROFILES: dict[str, Any] = {
    "default": "general",
    "assistants": {
        "general": {"model": "gpt-test", "instructions": "Be brief.", "description": "Everyday questions"},
        "analyst": {"model": "gpt-analyst", "instructions": "Analyse.", "description": "Numbers and reports"},
    },
    "admins": {"teams": [ADMIN]},
}


@pytest.fixture
def admin_profiles() -> ProfileSet:
    return parse_profiles(ADMIN_PROFILES, source="test")


@pytest.fixture
async def connector() -> AsyncIterator[FakeConnector]:
    async with FakeConnector() as fake:
        yield fake


async def start(
    tmp_path: Path, profiles: ProfileSet, openai: FakeOpenAI, slack: FakeSlack, connector: FakeConnector
) -> AsyncIterator[RunningTeams]:
    bot, stop, task = await running(teams_settings(openai, slack, tmp_path), profiles, connector, openai)
    yield bot
    stop.set()
    await asyncio.wait_for(task, 10)
    assert connector.protocol_errors == []


@pytest.fixture
async def teams(
    tmp_path: Path,
    admin_profiles: ProfileSet,
    fake_openai: FakeOpenAI,
    fake_slack: FakeSlack,
    connector: FakeConnector,
) -> AsyncIterator[RunningTeams]:
    async for bot in start(tmp_path, admin_profiles, fake_openai, fake_slack, connector):
        yield bot


async def say(bot: RunningTeams, activity: dict[str, Any]) -> str:
    """Post ``activity`` and return the text of the one new answer in its conversation."""
    conversation = activity["conversation"]["id"]
    before = len(bot.answers(conversation))
    assert await bot.post(activity) == 202
    answers = await bot.wait_answers(conversation, count=before + 1)
    return answers[-1].text


def post(bot: RunningTeams, text: str, channel: str = CHANNEL_A, **kwargs: Any) -> dict[str, Any]:
    return T.channel(text, service_url=bot.connector.service_url, channel_id=channel, **kwargs)


async def silent(bot: RunningTeams, activity: dict[str, Any]) -> None:
    """Post ``activity`` and check that nothing at all is said in its conversation."""
    conversation = activity["conversation"]["id"]
    before = len(bot.connector.visible(conversation))
    assert await bot.post(activity) == 202
    await asyncio.sleep(0.5)
    assert len(bot.connector.visible(conversation)) == before


async def changes(bot: RunningTeams) -> list[tuple[str, str, str, str, str]]:
    entries = await bot.service.bridge.admin.book.audit_entries()
    return [(e.who, e.where, e.what, e.before, e.after) for e in entries]


async def test_admin_switches_one_channel_and_the_other_keeps_the_default(teams: RunningTeams) -> None:
    answer = await say(teams, post(teams, "use analyst", aad_object_id=ADMIN))
    assert answer == "Done: `analyst` answers in this channel from the next message on."

    assert await say(teams, post(teams, "how are sales?")) == "You said: how are sales?"
    assert await say(teams, post(teams, "and in B?", channel=CHANNEL_B)) == "You said: and in B?"
    in_a, in_b = teams.openai.requests
    assert (in_a["model"], in_a["instructions"]) == ("gpt-analyst", "Analyse.")
    assert (in_b["model"], in_b["instructions"]) == ("gpt-test", "Be brief.")

    assert "`analyst` (Numbers and reports)" in await say(teams, post(teams, "show"))
    assert "`general`" in await say(teams, post(teams, "show", channel=CHANNEL_B))
    listed = await say(teams, post(teams, "list"))
    assert "`analyst`: Numbers and reports (answers here)" in listed
    assert "`general`: Everyday questions" in listed
    assert await changes(teams) == [
        (
            ADMIN,
            f"teams:{T.TENANT}:{CHANNEL_A}",
            "use",
            "profile=default limit=default answers=default",
            "profile=analyst limit=default answers=default",
        )
    ]


async def test_a_non_admin_cannot_change_anything(teams: RunningTeams) -> None:
    for command in ("use analyst", "limit 10", "deny", "usage"):
        answer = await say(teams, post(teams, command))  # the default user is no admin
        assert answer == "Only the bot's admins can do that. Nothing was changed."
    assert await say(teams, post(teams, "hello")) == "You said: hello"
    assert teams.openai.requests[0]["model"] == "gpt-test"
    assert await changes(teams) == []


async def test_a_budget_stops_the_channel_after_the_turn_that_crosses_it(teams: RunningTeams) -> None:
    answer = await say(teams, post(teams, "limit 10", aad_object_id=ADMIN))
    assert answer == "Done: this channel may use 10 tokens a day (UTC)."
    assert await say(teams, post(teams, "one")) == "You said: one"  # 15 tokens: crosses, answered
    spent = await say(teams, post(teams, "two"))
    assert spent == "This channel has used its 10 tokens for today. I'll answer again after midnight UTC."
    assert len(teams.openai.requests) == 1  # no backend call once spent
    assert await say(teams, post(teams, "elsewhere", channel=CHANNEL_B)) == "You said: elsewhere"

    assert "15 tokens in 1 answers today" in await say(teams, post(teams, "usage", aad_object_id=ADMIN))
    assert "10 tokens a day, 15 used today" in await say(teams, post(teams, "show"))
    await say(teams, post(teams, "limit off", aad_object_id=ADMIN))
    assert await say(teams, post(teams, "three")) == "You said: three"
    assert [(what, after) for _, _, what, _, after in await changes(teams)] == [
        ("limit", "profile=default limit=10 answers=default"),
        ("limit", "profile=default limit=off answers=default"),
    ]


async def test_deny_gets_one_explanation_per_thread_and_allow_restores(teams: RunningTeams) -> None:
    answer = await say(teams, post(teams, "deny", aad_object_id=ADMIN))
    assert answer.startswith("Done: I no longer answer in this channel")

    root = post(teams, "anyone there?")
    explained = await say(teams, root)
    assert explained == "I'm switched off in this channel. An admin can switch me on here with `allow`."
    await silent(teams, post(teams, "hello?", root_id=root["id"]))  # same thread: no second one
    assert teams.openai.requests == []

    assert (
        await say(teams, post(teams, "allow", aad_object_id=ADMIN)) == "Done: I answer in this channel now."
    )
    assert await say(teams, post(teams, "back?")) == "You said: back?"
    assert [what for _, _, what, _, _ in await changes(teams)] == ["deny", "allow"]


async def test_malformed_commands_get_the_help_and_change_nothing(teams: RunningTeams) -> None:
    answer = await say(teams, post(teams, "limit lots", aad_object_id=ADMIN))
    assert answer.startswith("I did not understand that command. Nothing was changed.")
    assert "`help`" in answer
    answer = await say(teams, post(teams, "use no-such-assistant", aad_object_id=ADMIN))
    assert "There is no assistant called `no-such-assistant`" in answer
    assert await changes(teams) == []
    assert teams.openai.requests == []
    assert "Budget: no daily limit" in await say(teams, post(teams, "show"))


async def test_group_and_personal_chats_are_channels_of_their_own(teams: RunningTeams) -> None:
    url = teams.connector.service_url
    assert (await say(teams, T.group_chat("use analyst", service_url=url, aad_object_id=ADMIN))).startswith(
        "Done:"
    )
    await say(teams, T.group_chat("group question", service_url=url))
    await say(teams, T.personal("private question", service_url=url))
    in_group, in_personal = teams.openai.requests
    assert in_group["model"] == "gpt-analyst" and in_personal["model"] == "gpt-test"


async def test_personal_chats_can_be_switched_off_in_the_file(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack, connector: FakeConnector
) -> None:
    profiles = parse_profiles({**ADMIN_PROFILES, "access": {"dms": False}}, source="test")
    async for bot in start(tmp_path, profiles, fake_openai, fake_slack, connector):
        url = connector.service_url
        first = T.personal("hi", service_url=url)
        assert "I don't answer direct messages here" in await say(bot, first)
        await silent(bot, T.personal("hi again", service_url=url))  # one explanation per chat
        assert await say(bot, T.channel("in a channel", service_url=url)) == "You said: in a channel"
        assert len(fake_openai.requests) == 1


async def test_teams_guests_are_refused_once_per_thread(teams: RunningTeams) -> None:
    guest = "29:guest-1"
    teams.connector.set_member_role(guest, "guest")
    root = post(teams, "can I ask?", user_id=guest, aad_object_id="aad-guest-1")
    assert await say(teams, root) == "I don't answer guest accounts. Please ask an admin for access."
    await silent(
        teams, post(teams, "please?", user_id=guest, aad_object_id="aad-guest-1", root_id=root["id"])
    )
    assert teams.openai.requests == []
    assert await say(teams, post(teams, "a member's question")) == "You said: a member's question"

    # asked once per user, as a member of the channel's team, and remembered
    lookups = [(m.conversation_id, m.user_id) for m in teams.connector.member_lookups]
    assert lookups == [("19:team-1@thread.tacv2", guest), ("19:team-1@thread.tacv2", T.USER_ID)]


async def test_a_failed_member_lookup_answers_and_asks_again_later(teams: RunningTeams) -> None:
    teams.connector.fail_members(503)
    chat = T.personal("hello", service_url=teams.connector.service_url)
    assert await say(teams, chat) == "You said: hello"
    assert await say(teams, T.personal("again", service_url=teams.connector.service_url)) == "You said: again"
    assert [(m.conversation_id, m.status) for m in teams.connector.member_lookups] == [
        ("a:personal-1", 503),
        ("a:personal-1", 200),
    ]


async def test_guests_allowed_in_the_file_are_not_looked_up(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack, connector: FakeConnector
) -> None:
    profiles = parse_profiles({**ADMIN_PROFILES, "access": {"guests": True}}, source="test")
    connector.set_member_role("29:guest-1", "guest")
    async for bot in start(tmp_path, profiles, fake_openai, fake_slack, connector):
        activity = T.group_chat("hi", service_url=connector.service_url, user_id="29:guest-1")
        assert await say(bot, activity) == "You said: hi"
        assert connector.member_lookups == []


async def test_reset_starts_a_new_conversation_in_a_personal_chat(teams: RunningTeams) -> None:
    url = teams.connector.service_url
    await say(teams, T.personal("remember 7", service_url=url))
    await say(teams, T.personal("which number?", service_url=url))
    assert (await say(teams, T.personal("reset", service_url=url))).startswith("Done")
    await say(teams, T.personal("which number now?", service_url=url))
    first, second, third = (r["conversation"] for r in teams.openai.requests)
    assert first == second != third


async def test_quick_messages_share_one_member_lookup_and_keep_their_order(teams: RunningTeams) -> None:
    url = teams.connector.service_url
    teams.connector.delay = 0.2  # every connector request, the member lookup too, takes a while
    first, second = T.personal("first", service_url=url), T.personal("second", service_url=url)
    assert await teams.post(first) == 202
    assert await teams.post(second) == 202
    answers = await teams.wait_answers(first["conversation"]["id"], count=2)
    assert [a.text for a in answers] == ["You said: first", "You said: second"]
    assert len(teams.connector.member_lookups) == 1
