"""The command grammar and per-channel administration, backend-neutral (Responses fake)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from core import wording
from core.backends.responses import ResponsesBackend
from core.bridge import Bridge, Outcome
from core.channels import AuditEntry, ChannelSettings, SqliteChannelBook, Usage
from core.commands import Command, CommandRequest, parse_command
from core.conversation import ConversationKey
from core.deliveries import RecentDeliveries
from core.events import FailureKind, Notice
from core.messages import InboundMessage
from core.profiles import parse_profiles
from core.store import SqliteDictStore
from core.turns import TurnRunner
from tests.conftest import PROFILES
from tests.fakes.openai_server import FakeOpenAI
from tests.recording import RecordingReply

A = ConversationKey("slack", "T1", "CA", "1.0")
B = ConversationKey("slack", "T1", "CB", "2.0")


def test_grammar() -> None:
    assert parse_command("help") == CommandRequest(Command.HELP)
    assert parse_command(" Use  Analyst ") == CommandRequest(Command.USE, "analyst")
    assert parse_command("assistant limit 50,000") == CommandRequest(Command.LIMIT, "50000")
    assert parse_command("limit off") == CommandRequest(Command.LIMIT, "off")
    assert parse_command("use python to sort this list") is None  # a question, not a command
    assert parse_command("limit lots") == CommandRequest(Command.HELP, malformed=True)
    assert parse_command("limit " + "9" * 5000) == CommandRequest(Command.HELP, malformed=True)
    assert parse_command("what is the limit?") is None
    assert parse_command("frobnicate", explicit=True) == CommandRequest(Command.HELP, malformed=True)
    assert parse_command("", explicit=True) == CommandRequest(Command.HELP)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Bridge, FakeOpenAI]]:
    raw = {
        "default": "general",
        "assistants": {
            "general": {"model": "gpt-test", "description": "Everyday questions"},
            "analyst": {"model": "gpt-analyst", "instructions": "Analyse."},
        },
        "admins": {"slack": ["UADMIN"]},
        "limits": {"user_daily_tokens": 100},
    }
    async with FakeOpenAI() as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        bridge = Bridge(
            profiles=parse_profiles(raw),
            backends={"responses": ResponsesBackend(client)},
            store=SqliteDictStore(tmp_path / "store.sqlite"),
            deliveries=RecentDeliveries(),
            runner=TurnRunner(),
            book=SqliteChannelBook(tmp_path / "store.sqlite"),
        )
        yield bridge, fake
        await bridge.close()


_ids = iter(range(10**6))


async def say(bridge: Bridge, key: ConversationKey, text: str, user: str = "U1", **extra: object) -> str:
    reply = RecordingReply()
    message = InboundMessage(key, user, text, (f"m{next(_ids)}",), **extra)  # type: ignore[arg-type]
    outcome = await bridge.accept(message, reply)
    if outcome is Outcome.REFUSED and not reply.events:
        return ""
    await reply.finished()
    return "".join(e.text for e in reply.of_type(Notice)) + reply.text  # type: ignore[attr-defined]


async def test_use_switches_one_channel_and_is_audited(setup: tuple[Bridge, FakeOpenAI]) -> None:
    bridge, fake = setup
    assert (await say(bridge, A, "use analyst", user="U1")).startswith("Only the bot's admins")
    assert (await say(bridge, A, "use analyst", user="UADMIN")).startswith("Done: `analyst`")
    assert (await say(bridge, A, "use nobody", user="UADMIN")).startswith("There is no assistant called")
    await say(bridge, A, "hi")
    await say(bridge, B, "hi")
    assert [(r["model"], r.get("instructions")) for r in fake.requests] == [
        ("gpt-analyst", "Analyse."),
        ("gpt-test", None),
    ]
    assert "`analyst`" in await say(bridge, A, "show")
    assert "`analyst` (answers here)" in await say(bridge, A, "list")
    [entry] = await bridge.admin.book.audit_entries()
    assert (entry.who, entry.where, entry.what) == ("UADMIN", "slack:T1:CA", "use")
    assert entry.before.startswith("profile=default") and entry.after.startswith("profile=analyst")


async def test_budgets_stop_the_backend_after_the_crossing_turn(setup: tuple[Bridge, FakeOpenAI]) -> None:
    bridge, fake = setup
    assert (
        await say(bridge, A, "limit 20", user="UADMIN") == "Done: this channel may use 20 tokens a day (UTC)."
    )
    assert await say(bridge, A, "one") == "You said: one"  # 15 tokens
    assert await say(bridge, A, "two") == "You said: two"  # 30: crosses the limit, still answered
    assert await say(bridge, A, "three") == (
        "This channel has used its 20 tokens for today. I'll answer again after midnight UTC."
    )
    assert len(fake.requests) == 2
    assert "30 tokens in 2 answers today" in await say(bridge, A, "usage", user="UADMIN")
    await say(bridge, A, "limit off", user="UADMIN")
    assert await say(bridge, A, "four") == "You said: four"
    # the per-user limit from the file (100 tokens) follows the user into another channel
    for n in range(5):
        await say(bridge, B, f"b{n}")
    assert (await say(bridge, B, "again")).startswith("You have used your 100 tokens")


async def test_deny_gets_one_explanation_per_thread_and_allow_restores(
    setup: tuple[Bridge, FakeOpenAI],
) -> None:
    bridge, fake = setup
    await say(bridge, A, "deny", user="UADMIN")
    assert (await say(bridge, A, "hello")).startswith("I'm switched off in this channel")
    assert await say(bridge, A, "hello again") == ""  # no flood
    assert fake.requests == []
    await say(bridge, A, "allow", user="UADMIN")
    assert await say(bridge, A, "back?") == "You said: back?"


async def test_malformed_commands_get_help_and_change_nothing(setup: tuple[Bridge, FakeOpenAI]) -> None:
    bridge, _ = setup
    answer = await say(bridge, A, "limit lots", user="UADMIN")
    assert answer.startswith("I did not understand that command") and "`use <assistant>`" in answer
    assert await bridge.admin.book.audit_entries() == []


async def test_guests_and_direct_messages_follow_the_policy(tmp_path: Path) -> None:
    raw = {"default": "g", "assistants": {"g": {"model": "m"}}, "access": {"dms": False}}
    async with FakeOpenAI() as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        bridge = Bridge(
            profiles=parse_profiles(raw),
            backends={"responses": ResponsesBackend(client)},
            store=SqliteDictStore(tmp_path / "s.sqlite"),
            deliveries=RecentDeliveries(),
            runner=TurnRunner(),
        )
        try:
            assert (await say(bridge, A, "hi", user_roles=frozenset({"guest"}))).startswith(
                "I don't answer guest"
            )
            assert (await say(bridge, B, "hi", place="dm")).startswith("I don't answer direct messages")
            assert fake.requests == []
        finally:
            await bridge.close()


class SlowBook(SqliteChannelBook):
    """A busy disk: reading a channel's usage takes a while."""

    async def channel_usage(self, channel: str, period: str) -> Usage:
        await asyncio.sleep(0.3)
        return await super().channel_usage(channel, period)


class BrokenBook(SqliteChannelBook):
    async def add_usage(self, channel: str, user: str, tokens: int, now: float | None = None) -> None:
        raise RuntimeError("database is locked")


def bridge_with(fake: FakeOpenAI, book: SqliteChannelBook, **policy: object) -> Bridge:
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
    return Bridge(
        profiles=parse_profiles({**PROFILES, **policy}),
        backends={"responses": ResponsesBackend(client)},
        store=SqliteDictStore(":memory:"),
        deliveries=RecentDeliveries(),
        runner=TurnRunner(),
        book=book,
    )


async def test_stop_before_the_backend_is_called_ends_that_turn_only(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        bridge = bridge_with(fake, SlowBook(tmp_path / "b.sqlite"), limits={"channel_daily_tokens": 1000})
        try:
            first, queued = RecordingReply(), RecordingReply()
            await bridge.accept(InboundMessage(A, "U1", "one", ("s1",)), first)
            await bridge.accept(InboundMessage(A, "U1", "two", ("s2",)), queued)
            await asyncio.sleep(0.05)  # the first turn is checking the budget
            assert bridge.stop(A)
            await first.finished()
            assert [f.kind for f in first.failures] == [FailureKind.STOPPED]
            await queued.finished()
            assert queued.text == "You said: two"
            assert await say(bridge, A, "stop") == wording.NOTHING_TO_STOP
        finally:
            await bridge.close()


async def test_a_failed_usage_write_still_ends_the_answer(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        bridge = bridge_with(fake, BrokenBook(tmp_path / "b.sqlite"))
        try:
            reply = RecordingReply()
            await bridge.accept(InboundMessage(A, "U1", "hi", ("b1",)), reply)
            await reply.finished()
            assert reply.text == "You said: hi"
        finally:
            await bridge.close()


async def test_settings_an_admin_sets_win_over_a_read_in_flight(tmp_path: Path) -> None:
    book = SqliteChannelBook(tmp_path / "b.sqlite")
    await book.set_settings("slack:T1:CX", ChannelSettings(profile="analyst"))
    await book.close()
    book = SqliteChannelBook(tmp_path / "b.sqlite")  # a new process: nothing loaded yet
    try:
        reading = asyncio.create_task(book.settings("slack:T1:CA"))
        await book.set_settings("slack:T1:CA", ChannelSettings(answers=False))
        assert (await reading).answers in (None, False)
        assert (await book.settings("slack:T1:CA")).answers is False
        assert (await book.settings("slack:T1:CX")).profile == "analyst"
        assert (await book.settings("slack:T1:never-set")) == ChannelSettings()
    finally:
        await book.close()


async def test_changes_in_the_same_instant_are_all_audited(tmp_path: Path) -> None:
    book = SqliteChannelBook(tmp_path / "b.sqlite")
    try:
        await book.audit(AuditEntry(1.0, "U", "slack:T1:CA", "use", "a", "b"))
        await book.audit(AuditEntry(1.0, "U", "slack:T1:CA", "limit", "b", "c"))
        assert sorted(e.what for e in await book.audit_entries()) == ["limit", "use"]
    finally:
        await book.close()


async def test_allowlists_of_channels_and_users(tmp_path: Path) -> None:
    access = {"channels": ["CA"], "users": ["U1"]}
    async with FakeOpenAI() as fake:
        bridge = bridge_with(
            fake, SqliteChannelBook(tmp_path / "b.sqlite"), access=access, admins={"slack": ["UADMIN"]}
        )
        try:
            assert await say(bridge, A, "hi") == "You said: hi"
            assert await say(bridge, B, "hi") == wording.NOT_ALLOWED_HERE
            assert await say(bridge, A, "me too?", user="U2") == wording.NOT_FOR_YOU
            assert await say(bridge, A, "and me", user="UADMIN") == "You said: and me"  # admins always
            await say(bridge, B, "allow", user="UADMIN")  # an admin's allow opens a channel off the list
            assert await say(bridge, B, "now?") == "You said: now?"
            assert len(fake.requests) == 3
        finally:
            await bridge.close()
