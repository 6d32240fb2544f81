"""Teams files both ways, end to end through the real /api/messages with the fake Bot Connector
(which also plays the file hosts and OneDrive's upload URL) and the fake OpenAI / Assistants.

In: personal-chat files are fetched from their pre-authorised link without a token; pasted images
with the bot's token, sent only to the connector's own hosts; files in channels and group chats
are named as out of reach. Out: a file the assistant makes is offered with a consent card in a
personal chat, uploaded on accept and shown with a file info card; elsewhere the answer names it.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from yarl import URL

from bots.service import Service
from bots.teams.files import HostPolicy
from bots.teams.uploads import PendingUploads
from core.backend import Backend, TurnInput
from core.events import Event, FileOut
from core.files import FilePart, FileRoute
from core.profiles import AssistantProfile, ProfileSet, parse_profiles
from tests import teams_activities as T
from tests.conftest import PROFILES
from tests.fakes import assistants_server as A
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.teams_connector import FakeConnector, loopback_session
from tests.test_teams_answers import RunningTeams, teams_settings

CSV = b"city,temp\nOslo,21\nRome,30\n"
CONNECTOR_HOST = "smba.trafficmanager.net"  # resolved to the fake by loopback_session()
FOREIGN_HOST = "files.example.com"
PERSONAL = "a:personal-1"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "blue").save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Recording:
    """A backend that records each turn the core hands it, then lets the real one answer."""

    inner: Backend
    turns: list[TurnInput] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    async def open_conversation(self, profile: AssistantProfile) -> str:
        return await self.inner.open_conversation(profile)

    async def run_turn(
        self, conversation_id: str, turn: TurnInput, profile: AssistantProfile
    ) -> AsyncIterator[Event]:
        self.turns.append(turn)
        async for event in self.inner.run_turn(conversation_id, turn, profile):
            yield event

    async def check(self, profile: AssistantProfile) -> None:
        await self.inner.check(profile)

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class FilesBot(RunningTeams):
    recording: Recording

    @property
    def files(self) -> list[FilePart]:
        return [part for turn in self.recording.turns for part in turn.files]


async def start(settings: Any, profiles: ProfileSet, connector: FakeConnector, openai: FakeOpenAI):
    from bots.service import build_backends

    backends = build_backends(settings)
    recording = Recording(backends[profiles.default.backend])
    backends[recording.name] = recording  # type: ignore[assignment]
    service = Service.create(settings, profiles, backends)
    assert service.teams is not None
    service.teams.http = loopback_session()  # every host name reaches the fakes
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 5)
    return FilesBot(service, connector, openai, recording), stop, task


@pytest.fixture
async def connector() -> AsyncIterator[FakeConnector]:
    async with FakeConnector() as fake:
        yield fake


@pytest.fixture
async def analyst(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack, connector: FakeConnector
) -> AsyncIterator[FilesBot]:
    """A Teams bot whose assistant has the code interpreter, with a 1 MB cap per file."""
    general = {**PROFILES["assistants"]["general"], "tools": [{"type": "code_interpreter"}]}
    profiles = parse_profiles({"default": "general", "assistants": {"general": general}})
    settings = teams_settings(fake_openai, fake_slack, tmp_path, max_file_mb=1)
    bot, stop, task = await start(settings, profiles, connector, fake_openai)
    yield bot
    stop.set()
    await asyncio.wait_for(task, 10)
    assert connector.protocol_errors == []


def with_token(bot: FilesBot, token: str = "bot-token") -> list[str]:
    """Give the (anonymous) bot a Bot Framework token, as it has with an app id; returns the
    service URLs it was asked for."""
    asked: list[str] = []
    assert bot.service.teams is not None

    async def bot_token(service_url: str) -> str | None:
        asked.append(service_url)
        return token

    bot.service.teams.bot_token = bot_token
    return asked


# Files in


async def test_a_personal_chat_file_is_downloaded_without_a_token_and_reaches_the_assistant(
    analyst: FilesBot,
) -> None:
    url = analyst.connector.add_file("temps.csv", CSV, "text/csv")
    chat = T.personal("chart this", service_url=analyst.connector.service_url,
                      attachments=[T.download_info("temps.csv", url)])  # fmt: skip
    await analyst.post(chat)
    [answer] = await analyst.wait_answers(PERSONAL)
    assert answer.text == "You said: chart this"
    [download] = analyst.connector.downloads
    assert download.path == URL(url).path and download.authorization is None and download.status == 200
    assert analyst.files == [FilePart("temps.csv", "text/csv", CSV, FileRoute.CODE_INTERPRETER)]
    # The one assertion that depends on the Responses backend (files.create for turn.files, commit
    # ec20ec1) rather than on the Teams adapter and the core: the file reached the fake OpenAI.
    assert [f.data for f in analyst.openai.files.values()] == [CSV]


async def test_a_file_with_no_text_is_still_handed_to_the_assistant(analyst: FilesBot) -> None:
    url = analyst.connector.add_file("temps.csv", CSV, "text/csv")
    chat = T.personal("", service_url=analyst.connector.service_url,
                      attachments=[T.download_info("temps.csv", url)])  # fmt: skip
    await analyst.post(chat)
    [answer] = await analyst.wait_answers(PERSONAL)
    assert answer.text == "You said: Please look at the attached file."
    assert [part.name for part in analyst.files] == ["temps.csv"]


async def test_a_pasted_image_gets_the_token_on_the_connectors_host_only(analyst: FilesBot) -> None:
    asked = with_token(analyst)
    fake = analyst.connector
    pasted = fake.add_file("original", png(), "image/png", token="bot-token", host=CONNECTOR_HOST)
    elsewhere = fake.add_file("original", png(), "image/png", host=FOREIGN_HOST)
    bounced = fake.redirect_url(elsewhere, host=CONNECTOR_HOST)
    chat = T.personal("what is in these?", service_url=fake.service_url, attachments=[
        T.pasted_image(pasted),
        T.pasted_image(elsewhere, "image/png", name="foreign.png"),
        T.pasted_image(bounced, "image/png", name="bounced.png"),
    ])  # fmt: skip
    await analyst.post(chat)
    [answer] = await analyst.wait_answers(PERSONAL)
    assert answer.text == (
        "⚠️ I could not use foreign.png: it is not stored where the bot may download files from.\n\n"
        "⚠️ I could not use bounced.png: it is not stored where the bot may download files from.\n\n"
        "You said: what is in these?"
    )
    # "image/*" from Teams: the type (and the name's suffix) come from the bytes
    assert analyst.files == [FilePart("image.png", "image/png", png(), FileRoute.VISION)]
    assert asked == [fake.service_url] * 2  # fetched only for the downloads that may carry it
    assert [(d.host, d.authorization, d.status) for d in fake.downloads] == [
        (CONNECTOR_HOST, "Bearer bot-token", 200),
        (CONNECTOR_HOST, "Bearer bot-token", 302),  # the redirect to another host was not followed
    ]


async def test_without_an_app_id_no_token_is_sent(analyst: FilesBot) -> None:
    fake = analyst.connector
    open_image = fake.add_file("original", png(), "image/png", host=CONNECTOR_HOST)
    guarded = fake.add_file("original", png(), "image/png", token="bot-token", host=CONNECTOR_HOST)
    chat = T.personal("look", service_url=fake.service_url, attachments=[
        T.pasted_image(open_image, name="a.png"), T.pasted_image(guarded, name="b.png"),
    ])  # fmt: skip
    await analyst.post(chat)
    [answer] = await analyst.wait_answers(PERSONAL)
    assert answer.text.startswith("⚠️ I could not use b.png: the bot is not allowed to read it.")
    assert [part.name for part in analyst.files] == ["a.png"]
    assert [d.authorization for d in fake.downloads] == [None, None]


async def test_a_file_over_the_cap_is_refused_and_the_text_still_answered(analyst: FilesBot) -> None:
    url = analyst.connector.add_file("big.csv", b"x," * (1024 * 1024), "text/csv")
    chat = T.personal("and this?", service_url=analyst.connector.service_url,
                      attachments=[T.download_info("big.csv", url)])  # fmt: skip
    await analyst.post(chat)
    [answer] = await analyst.wait_answers(PERSONAL)
    assert answer.text == (
        "⚠️ I could not use big.csv: it is larger than the 1 MB limit for a file.\n\nYou said: and this?"
    )
    assert analyst.files == []


async def test_failed_downloads_are_named_with_the_reason(analyst: FilesBot) -> None:
    fake = analyst.connector
    attachments = [
        T.download_info("gone.csv", fake.add_file("gone.csv", CSV, status=500)),
        T.download_info("locked.csv", fake.add_file("locked.csv", CSV, status=403)),
        T.download_info("login.csv", fake.add_file("login.csv", b"<html>Sign in</html>", "text/html")),
    ]
    await analyst.post(T.personal("read them", service_url=fake.service_url, attachments=attachments))
    [answer] = await analyst.wait_answers(PERSONAL)
    assert answer.text == (
        "⚠️ I could not use gone.csv: the download failed; please try again.\n\n"
        "⚠️ I could not use locked.csv: the bot is not allowed to read it.\n\n"
        "⚠️ I could not use login.csv: a sign-in page came back instead of the file, so the bot may not "
        "have access to it.\n\n"
        "You said: read them"
    )


async def test_files_in_channels_and_group_chats_are_out_of_reach(analyst: FilesBot) -> None:
    fake = analyst.connector
    post = T.channel("summarise", service_url=fake.service_url, attachments=[T.channel_file("report.pdf")])
    await analyst.post(post)
    [answer] = await analyst.wait_answers(post["conversation"]["id"])
    assert answer.text == (
        "⚠️ I could not use report.pdf: files shared in channels and group chats are out of the bot's "
        "reach; send it in a personal chat.\n\nYou said: summarise"
    )  # the text/html copy of the post Teams attaches is not a file
    url = fake.add_file("temps.csv", CSV, "text/csv")
    chat = T.group_chat("", service_url=fake.service_url, attachments=[T.download_info("temps.csv", url)])
    await analyst.post(chat)
    [note] = await analyst.wait_answers(chat["conversation"]["id"])
    assert note.text.startswith("⚠️ I could not use temps.csv: files shared in channels")
    assert fake.downloads == [] and analyst.files == [] and len(analyst.openai.requests) == 1


# Files out


@pytest.fixture
async def maker(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack, connector: FakeConnector
) -> AsyncIterator[tuple[FilesBot, A.FakeAssistants]]:
    """A Teams bot on the Assistants fake, whose answers can carry files."""
    async with A.FakeAssistants() as assistants:
        general = {"backend": "assistants", "assistant_id": "asst_test", "base_url": assistants.base_url}
        profiles = parse_profiles({"default": "general", "assistants": {"general": general}})
        bot, stop, task = await start(
            teams_settings(fake_openai, fake_slack, tmp_path), profiles, connector, fake_openai
        )
        yield bot, assistants
        stop.set()
        await asyncio.wait_for(task, 10)
    assert connector.protocol_errors == []


def say_with_report(assistants: A.FakeAssistants, data: bytes = CSV) -> None:
    report = assistants.add_file("report.csv", data)
    link = "sandbox:/mnt/data/report.csv"
    text = f"Done: see [the report]({link})."
    assistants.enqueue(A.Say(text, annotations=[A.annotation("file_path", text, link, report)]))


async def ask_for_report(bot: FilesBot, assistants: A.FakeAssistants) -> dict[str, Any]:
    """Ask in the personal chat; return the consent card posted after the answer."""
    say_with_report(assistants)
    await bot.post(T.personal("make a report", service_url=bot.connector.service_url))
    answer, card_message = await bot.wait_answers(PERSONAL, count=2, timeout=10)
    assert answer.text == "Done: see the report (attached: report.csv)."
    [card] = card_message.attachments
    return card


async def test_a_file_is_offered_then_uploaded_when_the_user_accepts(
    maker: tuple[FilesBot, A.FakeAssistants],
) -> None:
    bot, assistants = maker
    card = await ask_for_report(bot, assistants)
    assert card["contentType"] == "application/vnd.microsoft.teams.card.file.consent"
    assert card["name"] == "report.csv" and card["content"]["sizeInBytes"] == len(CSV)
    assert card["content"]["acceptContext"] == card["content"]["declineContext"]

    info = bot.connector.upload_info("report.csv")
    invoke = T.file_consent(service_url=bot.connector.service_url, action="accept",
                            context=card["content"]["acceptContext"], upload_info=info)  # fmt: skip
    assert await bot.post(invoke) == 200  # answered in the request itself
    [shown] = (await bot.wait_answers(PERSONAL, count=3))[2:]
    [upload] = bot.connector.uploads.values()
    assert upload.data == CSV
    assert upload.headers["Content-Range"] == f"bytes 0-{len(CSV) - 1}/{len(CSV)}"
    assert "Authorization" not in upload.headers
    [file_card] = shown.attachments
    assert file_card == {
        "contentType": "application/vnd.microsoft.teams.card.file.info",
        "contentUrl": info["contentUrl"],
        "name": "report.csv",
        "content": {"uniqueId": info["uniqueId"], "fileType": "csv"},
    }
    assert bot.service.teams is not None and bot.service.teams.uploads.total_bytes == 0


async def test_an_upload_that_fails_is_told_and_the_card_can_not_be_reused(
    maker: tuple[FilesBot, A.FakeAssistants],
) -> None:
    bot, assistants = maker
    card = await ask_for_report(bot, assistants)
    info = {**bot.connector.upload_info("report.csv"), "uploadUrl": bot.connector.url("/upload/gone")}
    invoke = T.file_consent(service_url=bot.connector.service_url, action="accept",
                            context=card["content"]["acceptContext"], upload_info=info)  # fmt: skip
    assert await bot.post(invoke) == 200
    [told] = (await bot.wait_answers(PERSONAL, count=3))[2:]
    assert told.text == "⚠️ I could not attach report.csv here."
    assert bot.service.teams is not None and bot.service.teams.uploads.total_bytes == 0


async def test_a_declined_file_is_dropped_and_cannot_be_accepted_later(
    maker: tuple[FilesBot, A.FakeAssistants],
) -> None:
    bot, assistants = maker
    card = await ask_for_report(bot, assistants)
    context = card["content"]["declineContext"]
    url = bot.connector.service_url
    assert await bot.post(T.file_consent(service_url=url, action="decline", context=context)) == 200
    [declined] = (await bot.wait_answers(PERSONAL, count=3))[2:]
    assert declined.text == "OK, I did not upload report.csv."
    info = bot.connector.upload_info("report.csv")
    accept = T.file_consent(service_url=url, action="accept", context=context, upload_info=info)
    assert await bot.post(accept) == 200
    [gone] = (await bot.wait_answers(PERSONAL, count=4))[3:]
    assert gone.text == "report.csv is no longer available: ask me again to make it."
    assert [u.data for u in bot.connector.uploads.values()] == [None]


async def test_a_file_made_in_a_channel_is_named_not_posted(maker: tuple[FilesBot, A.FakeAssistants]) -> None:
    bot, assistants = maker
    say_with_report(assistants)
    post = T.channel("make a report", service_url=bot.connector.service_url)
    await bot.post(post)
    [answer] = await bot.wait_answers(post["conversation"]["id"], timeout=10)
    assert answer.text == (
        "Done: see the report (attached: report.csv).\n\n"
        "⚠️ I made report.csv, but I can only send files in a personal chat: ask me there to get it."
    )
    assert answer.attachments == []
    await asyncio.sleep(0.2)
    assert len(bot.connector.visible(post["conversation"]["id"])) == 1


# The rules, one by one


def test_host_policy_with_an_app_id() -> None:
    strict = HostPolicy(strict=True)
    assert strict.may_carry_token(URL("https://smba.trafficmanager.net/amer/v3/attachments/1/views/original"))
    assert strict.may_carry_token(URL("https://api.botframework.com/v3/attachments/1"))
    # anyone can name an Azure Traffic Manager profile: only the connector's own gets the token
    assert not strict.may_carry_token(URL("https://evil.trafficmanager.net/x"))
    assert not strict.may_carry_token(URL("http://smba.trafficmanager.net/x"))  # https only
    assert not strict.may_carry_token(URL("https://contoso.sharepoint.com/x"))
    assert not strict.may_carry_token(URL("https://user:pw@smba.trafficmanager.net/x"))
    assert strict.may_fetch(URL("https://contoso-my.sharepoint.com/personal/x/download.aspx"))
    assert not strict.may_fetch(URL("https://example.com/x.csv"))
    assert not strict.may_fetch(URL("https://127.0.0.1/x.csv"))
    relaxed = HostPolicy(strict=False)
    assert relaxed.may_fetch(URL("http://127.0.0.1:8080/x.csv"))
    assert not relaxed.may_fetch(URL("file:///etc/passwd"))
    assert relaxed.may_carry_token(URL("http://smba.trafficmanager.net:8080/x"))
    assert not relaxed.may_carry_token(URL("http://127.0.0.1:8080/x"))


def test_pending_uploads_expire_and_keep_within_their_byte_cap() -> None:
    now = [0.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    store = PendingUploads(ttl=60, max_bytes=10, max_file_bytes=8, clock=clock)
    first = store.add("a:1", FileOut(b"1234", "one.txt"))
    second = store.add("a:1", FileOut(b"5678", "two.txt"))
    assert first and second and store.total_bytes == 8
    third = store.add("a:1", FileOut(b"abcd", "three.txt"))  # the oldest makes room
    assert third and store.take(first, "a:1") is None and store.total_bytes == 8
    assert store.add("a:1", FileOut(b"x" * 9, "big.txt")) is None  # over the per-file cap
    assert store.add("a:1", FileOut(b"", "empty.txt")) is None
    assert store.take(second, "a:other") is None  # another conversation cannot claim it
    now[0] = 61
    assert store.take(second, "a:1") is None and store.total_bytes == 0  # expired
