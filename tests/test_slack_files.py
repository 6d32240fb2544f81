"""Files shared in Slack: downloaded with the bot token from Slack's own hosts only, checked against
the limits and the assistant's tools, and every file the bot cannot use named with the reason,
while the text is still answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from bots.downloads import same_site
from core.profiles import parse_profiles
from tests.conftest import PROFILES, RunningBridge, start_bridge
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.wiring import settings_for_fakes
from tests.slack_events import message

CSV = b"city,temp\nOslo,21\nRome,30\n"


@pytest.fixture
async def analyst(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack
) -> AsyncIterator[RunningBridge]:
    """A bridge whose assistant has the code interpreter, with a 1 MB cap per file."""
    general = {**PROFILES["assistants"]["general"], "tools": [{"type": "code_interpreter"}]}
    profiles = parse_profiles({"default": "general", "assistants": {"general": general}})
    settings = settings_for_fakes(fake_openai, fake_slack, tmp_path / "store.sqlite", max_file_mb=1)
    service, stop, task = await start_bridge(settings, profiles)
    async with aiohttp.ClientSession() as http:
        yield RunningBridge(service, http, fake_slack, fake_openai)
    stop.set()
    await asyncio.wait_for(task, 10)


def shared(fake: FakeSlack, file_id: str, name: str, data: bytes, mimetype: str, **options: bool) -> dict:
    url = fake.add_private_file(file_id, data, name, mimetype, **options)
    return {"id": file_id, "name": name, "mimetype": mimetype, "size": len(data), "url_private_download": url}


def dm(text: str, files: list[dict]) -> dict:
    return message(text, channel="D1", channel_type="im", subtype="file_share", files=files)


async def test_a_csv_is_downloaded_with_the_bot_token_and_read(analyst: RunningBridge) -> None:
    event = dm("chart this", [shared(analyst.slack, "F1", "temps.csv", CSV, "text/csv")])
    await analyst.post_event(event)
    [answer] = await analyst.wait_answers("D1", event["ts"])
    assert answer == "You said: chart this"
    assert analyst.slack.file_downloads == [("/files-pri/T1-F1/download/temps.csv", "xoxb-test")]
    statuses = [c.args.get("status") for c in analyst.slack.calls_to("assistant.threads.setStatus")]
    assert "Reading temps.csv…" in statuses


async def test_a_sign_in_page_instead_of_the_file_is_refused(analyst: RunningBridge) -> None:
    event = dm("what is in it?", [shared(analyst.slack, "F2", "secret.csv", CSV, "text/csv", readable=False)])
    await analyst.post_event(event)
    [answer] = await analyst.wait_answers("D1", event["ts"])
    assert answer == (
        "⚠️ I could not use secret.csv: a sign-in page came back instead of the file, so the bot may "
        "not have access to it.\n\nYou said: what is in it?"
    )


async def test_a_file_over_the_cap_is_refused_and_the_text_still_answered(analyst: RunningBridge) -> None:
    big = {"id": "F3", "name": "huge.csv", "mimetype": "text/csv", "size": 50 * 1024 * 1024,
           "url_private_download": f"{analyst.slack.root_url}/files-pri/T1-F3/download/huge.csv"}  # fmt: skip
    lying = shared(analyst.slack, "F4", "grows.csv", b"x" * (2 * 1024 * 1024), "text/csv")
    lying["size"] = 10  # Slack said 10 bytes; the download is cut off once it passes the cap
    event = dm("and these?", [big, lying])
    await analyst.post_event(event)
    [answer] = await analyst.wait_answers("D1", event["ts"])
    assert answer == (
        "⚠️ I could not use huge.csv: it is larger than the 1 MB limit for a file.\n\n"
        "⚠️ I could not use grows.csv: it is larger than the 1 MB limit for a file.\n\n"
        "You said: and these?"
    )
    assert [path for path, _ in analyst.slack.file_downloads] == ["/files-pri/T1-F4/download/grows.csv"]


async def test_unusable_files_are_named_and_nothing_is_sent_for_them(bridge: RunningBridge) -> None:
    # the default assistant has no code interpreter: a CSV cannot be read; a .exe never
    files = [
        {"id": "F5", "name": "<!channel>.csv", "mimetype": "text/csv"},
        {"id": "F6", "name": "setup.exe", "mimetype": "application/octet-stream"},
    ]
    event = dm("", files)
    await bridge.post_event(event)
    await bridge.slack.wait_for(lambda: bool(bridge.answers("D1", event["ts"])))
    [note] = bridge.answers("D1", event["ts"])
    assert note == (
        "⚠️ I could not use &lt;!channel&gt;.csv: this assistant has no code interpreter to open it.\n\n"
        "⚠️ I could not use setup.exe: I cannot read this type of file."
    )
    assert bridge.openai.requests == [] and bridge.slack.file_downloads == []


async def test_a_file_slack_does_not_let_the_bot_read_is_named(analyst: RunningBridge) -> None:
    event = dm(
        "summarise", [{"id": "F7", "name": "notes.txt", "mimetype": "text/plain", "mode": "tombstone"}]
    )
    await analyst.post_event(event)
    [answer] = await analyst.wait_answers("D1", event["ts"])
    assert answer.startswith("⚠️ I could not use notes.txt: the bot is not allowed to read it.")


async def test_the_token_goes_to_slack_hosts_only(analyst: RunningBridge) -> None:
    elsewhere = f"http://localhost:{URL(analyst.slack.root_url).port}/files-pri/T1-F8/download/x.csv"
    event = dm(
        "read it", [{"id": "F8", "name": "x.csv", "mimetype": "text/csv", "url_private_download": elsewhere}]
    )
    await analyst.post_event(event)
    [answer] = await analyst.wait_answers("D1", event["ts"])
    assert answer.startswith(
        "⚠️ I could not use x.csv: it is not stored where the bot may download files from."
    )
    assert analyst.slack.file_downloads == []


def test_same_site_allows_the_api_host_and_its_subdomains_over_its_scheme() -> None:
    allowed = same_site(URL("https://slack.com/"))
    assert allowed(URL("https://files.slack.com/files-pri/T1-F1/x.csv"))
    assert allowed(URL("https://slack.com/x"))
    assert not allowed(URL("http://files.slack.com/x"))
    assert not allowed(URL("https://files.slack.com.evil.example/x"))
    assert not allowed(URL("https://notslack.com/x"))


async def test_a_50_mb_file_meets_the_default_20_mb_cap(bridge: RunningBridge) -> None:
    url = f"{bridge.slack.root_url}/files-pri/T1-F9/download/scan.png"
    event = dm("what does it say?", [{"id": "F9", "name": "scan.png", "mimetype": "image/png",
                                      "size": 50 * 1024 * 1024, "url_private_download": url}])  # fmt: skip
    await bridge.post_event(event)
    [answer] = await bridge.wait_answers("D1", event["ts"])
    assert answer == (
        "⚠️ I could not use scan.png: it is larger than the 20 MB limit for a file.\n\nYou said: what does it say?"
    )
    assert bridge.slack.file_downloads == []


# Files both ways, end to end through Slack, on both backends.

PNG = b"\x89PNG\r\n\x1a\n a chart"
SUMMARY = b"city,mean\nOslo,21\n"


async def bridge_with(settings_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack, general: dict):
    profiles = parse_profiles({"default": "general", "assistants": {"general": general}})
    settings = settings_for_fakes(fake_openai, fake_slack, settings_path / "store.sqlite")
    return await start_bridge(settings, profiles)


async def test_csv_in_chart_and_csv_out_with_responses(analyst: RunningBridge) -> None:
    from tests.fakes.openai_server import Reply, container_citation

    link = "sandbox:/mnt/data/summary.csv"
    text = f"Chart attached; [the summary]({link}) too."
    analyst.openai.add_container_file("cntr_1", "cfile_1", "summary.csv", SUMMARY)
    analyst.openai.enqueue(
        Reply(
            text,
            images=[PNG],
            container_id="cntr_1",
            annotations=[container_citation(text, link, "cntr_1", "cfile_1")],
        )
    )
    event = dm("chart this", [shared(analyst.slack, "F10", "temps.csv", CSV, "text/csv")])
    await analyst.post_event(event)
    [answer] = await analyst.wait_answers("D1", event["ts"])
    assert answer == "Chart attached; the summary (attached: summary.csv) too."
    [upload] = analyst.openai.files.values()
    assert (upload.filename, upload.data) == ("temps.csv", CSV)
    [request] = analyst.openai.requests
    tool = next(t for t in request["tools"] if t["type"] == "code_interpreter")
    assert tool["container"]["file_ids"] == [upload.id]
    await analyst.slack.wait_for(lambda: len(analyst.slack.uploads) == 2)
    assert sorted(analyst.slack.uploads.values()) == sorted([PNG, SUMMARY])
    completes = analyst.slack.calls_to("files.completeUploadExternal")
    assert {c.args.get("thread_ts") for c in completes} == {event["ts"]}
    statuses = [c.args.get("status") for c in analyst.slack.calls_to("assistant.threads.setStatus")]
    assert "Uploading summary.csv…" in statuses


async def test_csv_in_chart_and_csv_out_with_assistants(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack
) -> None:
    from tests.fakes import assistants_server as A

    async with A.FakeAssistants() as assistants:
        chart = assistants.add_file("chart.png", PNG)
        summary = assistants.add_file("summary.csv", SUMMARY)
        link = "sandbox:/mnt/data/summary.csv"
        text = f"Chart attached; [the summary]({link}) too."
        assistants.enqueue(
            A.Say(text, image_file_ids=[chart], annotations=[A.annotation("file_path", text, link, summary)])
        )
        general = {"backend": "assistants", "assistant_id": "asst_test", "base_url": assistants.base_url}
        service, stop, task = await bridge_with(tmp_path, fake_openai, fake_slack, general)
        try:
            async with aiohttp.ClientSession() as http:
                bot = RunningBridge(service, http, fake_slack, fake_openai)
                event = dm("chart this", [shared(fake_slack, "F11", "temps.csv", CSV, "text/csv")])
                await bot.post_event(event)
                [answer] = await bot.wait_answers("D1", event["ts"])
                await fake_slack.wait_for(lambda: len(fake_slack.uploads) == 2)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        [upload] = assistants.uploads
        assert (upload["filename"], upload["purpose"], upload["data"]) == ("temps.csv", "assistants", CSV)
        [message] = [m for thread in assistants.threads.values() for m in thread if m["role"] == "user"]
        assert message["attachments"] == [{"file_id": upload["id"], "tools": [{"type": "code_interpreter"}]}]
    assert answer == "Chart attached; the summary (attached: summary.csv) too."
    assert sorted(fake_slack.uploads.values()) == sorted([PNG, SUMMARY])


@pytest.fixture
async def searcher(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack
) -> AsyncIterator[RunningBridge]:
    """A bridge whose assistant has file search (with a team library, vs_team)."""
    general = {
        **PROFILES["assistants"]["general"],
        "tools": [{"type": "file_search", "vector_store_ids": ["vs_team"]}],
    }
    service, stop, task = await bridge_with(tmp_path, fake_openai, fake_slack, general)
    async with aiohttp.ClientSession() as http:
        yield RunningBridge(service, http, fake_slack, fake_openai)
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_pdf_in_is_searched_and_the_answer_cites_it(searcher: RunningBridge) -> None:
    from tests.fakes.openai_server import Reply, file_citation

    fake_openai = searcher.openai
    pdf = shared(searcher.slack, "F12", "q3.pdf", b"%PDF-1.4 revenue", "application/pdf")
    text = "Revenue grew 12%."
    fake_openai.enqueue(Reply(text, annotations=[file_citation("file-x", "q3.pdf", len(text))]))
    event = dm("how did revenue do?", [pdf])
    await searcher.post_event(event)
    [answer] = await searcher.wait_answers("D1", event["ts"])
    assert answer.startswith("Revenue grew 12%.") and "q3.pdf" in answer.split("Sources", 1)[1]
    [store] = fake_openai.vector_stores
    [request] = fake_openai.requests
    search = next(t for t in request["tools"] if t["type"] == "file_search")
    assert search["vector_store_ids"] == ["vs_team", store]


async def test_an_image_in_is_vision_input(bridge: RunningBridge) -> None:
    event = dm("what is this?", [shared(bridge.slack, "F13", "cat.png", PNG, "image/png")])
    await bridge.post_event(event)
    await bridge.wait_answers("D1", event["ts"])
    [upload] = bridge.openai.files.values()
    [request] = bridge.openai.requests
    parts = [p for item in request["input"] for p in item.get("content") or []]
    assert {"type": "input_image", "file_id": upload.id, "detail": "auto"} in parts


async def test_an_html_file_is_read_but_a_sign_in_page_in_its_place_is_not(searcher: RunningBridge) -> None:
    page = b"<html>the real notes</html>"
    notes = shared(searcher.slack, "F14", "notes.html", page, "text/html")
    locked = shared(searcher.slack, "F15", "locked.html", page, "text/html", readable=False)
    event = dm("summarise", [notes, locked])
    await searcher.post_event(event)
    [answer] = await searcher.wait_answers("D1", event["ts"])
    assert answer.startswith("⚠️ I could not use locked.html: a sign-in page came back")
    assert [(f.filename, f.data) for f in searcher.openai.files.values()] == [("notes.html", page)]


async def test_a_failed_upload_is_named_in_the_answer(analyst: RunningBridge) -> None:
    from tests.fakes.openai_server import Reply

    analyst.slack.failing_uploads = 1
    analyst.openai.enqueue(Reply("Here is the chart.", images=[PNG], container_id="cntr_1"))
    event = dm("draw it", [])
    await analyst.post_event(event)
    [answer] = await analyst.wait_answers("D1", event["ts"])
    assert answer == "Here is the chart.\n\n⚠️ I could not attach image-1.png here."


def test_a_shared_file_never_shows_the_token() -> None:
    from bots.slack.files import files_of

    [file] = files_of(
        {"files": [{"name": "a.csv", "url_private_download": "https://files.slack.com/a"}]},
        None,  # type: ignore[arg-type]
        "xoxb-secret",
        "https://slack.com/api/",
    )
    assert "xoxb-secret" not in repr(file) and "a.csv" in repr(file)


async def test_a_link_that_is_no_url_refuses_the_file_not_the_turn(analyst: RunningBridge) -> None:
    bad = {"id": "F16", "name": "a.csv", "mimetype": "text/csv", "url_private_download": "https://[zz/a.csv"}
    event = dm("what is in it?", [bad])
    await analyst.post_event(event)
    [answer] = await analyst.wait_answers("D1", event["ts"])
    assert (
        answer
        == "⚠️ I could not use a.csv: the download failed; please try again.\n\nYou said: what is in it?"
    )


async def test_a_huge_file_name_is_shortened_not_flooded(bridge: RunningBridge) -> None:
    event = dm("hi", [{"id": "F17", "name": "x" * 200_000 + ".exe"}])
    await bridge.post_event(event)
    [answer] = await bridge.wait_answers("D1", event["ts"])
    assert len(answer) < 400 and "…" in answer and answer.endswith("You said: hi")


async def test_a_file_the_model_names_with_pings_is_no_ping_when_its_upload_fails(
    analyst: RunningBridge,
) -> None:
    from tests.fakes.openai_server import Reply, container_citation

    name, text = "<!channel> <@U999> report.csv", "See report.csv."
    analyst.openai.add_container_file("cntr_1", "cfile_1", name, b"a,b\n1,2\n")
    citation = container_citation(text, "report.csv", "cntr_1", "cfile_1", filename=name)
    analyst.openai.enqueue(Reply(text, container_id="cntr_1", annotations=[citation]))
    analyst.slack.failing_uploads = 1
    event = dm("make it", [])
    await analyst.post_event(event)
    [answer] = await analyst.wait_answers("D1", event["ts"])
    assert answer.endswith("⚠️ I could not attach &lt;!channel&gt; &lt;@U999&gt; report.csv here.")
