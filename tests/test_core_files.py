"""The core's file policy, backend-neutral: kinds and routes, the limits per file, per message and
in number, and a note for every file that cannot be used, with the text still answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from core.backends.responses import ResponsesBackend
from core.bridge import Bridge
from core.conversation import ConversationKey
from core.deliveries import RecentDeliveries
from core.events import Notice, Progress
from core.files import FileKind, FileLimits, FileRoute, FileTooLarge, kind_of, route_for
from core.messages import InboundMessage
from core.profiles import parse_profiles
from core.store import SqliteDictStore
from core.turns import TurnRunner
from tests.conftest import PROFILES
from tests.fakes.openai_server import FakeOpenAI
from tests.recording import RecordingReply

KEY = ConversationKey("slack", "T1", "D1", "1.0")
MB = 1024 * 1024


@dataclass
class MemoryFile:
    """A FileSource whose bytes are already here (the platforms' downloads have their own tests)."""

    name: str
    data: bytes
    mime_type: str = ""
    declared: bool = True
    reads: int = 0

    @property
    def size(self) -> int | None:
        return len(self.data) if self.declared else None

    async def read(self, limit: int) -> bytes:
        self.reads += 1
        if len(self.data) > limit:
            raise FileTooLarge()
        return self.data


def bridge_for(fake: FakeOpenAI, tmp_path: Path, tool: dict[str, object]) -> Bridge:
    general = {**PROFILES["assistants"]["general"], "tools": [tool]}
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
    return Bridge(
        profiles=parse_profiles({"default": "general", "assistants": {"general": general}}),
        backends={"responses": ResponsesBackend(client)},
        store=SqliteDictStore(tmp_path / "store.sqlite"),
        deliveries=RecentDeliveries(),
        runner=TurnRunner(),
        file_limits=FileLimits(max_file_bytes=2 * MB, max_message_bytes=3 * MB, max_files=4),
    )


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Bridge, FakeOpenAI]]:
    async with FakeOpenAI() as fake:
        bridge = bridge_for(fake, tmp_path, {"type": "code_interpreter"})
        yield bridge, fake
        await bridge.close()


_ids = iter(range(10**6))


async def send(bridge: Bridge, text: str, *files: MemoryFile) -> RecordingReply:
    reply = RecordingReply()
    await bridge.accept(InboundMessage(KEY, "U1", text, (f"m{next(_ids)}",), files=files), reply)
    return await reply.finished()


def notes(reply: RecordingReply) -> list[str]:
    return [e.text for e in reply.of_type(Notice)]  # type: ignore[attr-defined]


def test_kinds_and_routes() -> None:
    assert kind_of("Chart.PNG") is FileKind.IMAGE and kind_of("data.xlsx") is FileKind.DATA
    assert kind_of("paper.pdf") is FileKind.DOCUMENT and kind_of("setup.exe") is None
    assert kind_of("pasted", "image/png") is FileKind.IMAGE and kind_of("blob", "application/x-foo") is None
    assert route_for(FileKind.DATA, "a.csv", {"code_interpreter"}) is FileRoute.CODE_INTERPRETER
    assert route_for(FileKind.DATA, "a.csv", set()) is None
    assert route_for(FileKind.DOCUMENT, "a.pdf", {"file_search"}) is FileRoute.FILE_SEARCH
    assert route_for(FileKind.DOCUMENT, "a.pdf", set()) is FileRoute.FILE_INPUT
    assert route_for(FileKind.DOCUMENT, "a.docx", set()) is None
    assert route_for(FileKind.IMAGE, "a.png", set()) is FileRoute.VISION


async def test_limits_per_file_per_message_and_in_number(setup: tuple[Bridge, FakeOpenAI]) -> None:
    bridge, fake = setup
    files = [
        MemoryFile("a.csv", b"x" * (1 * MB)),
        MemoryFile("big.csv", b"x" * (2 * MB + 1)),  # over the per-file cap: never read
        MemoryFile("b.csv", b"x" * (1 * MB + 512 * 1024)),
        MemoryFile("c.csv", b"x" * (1 * MB), declared=False),  # 2.5 MB read so far: over the message cap
        MemoryFile("d.csv", b"x"),  # the fifth file of a message: over the number cap
    ]
    reply = await send(bridge, "analyse", *files)
    assert notes(reply) == [
        "⚠️ I could not use big.csv: it is larger than the 2 MB limit for a file.",
        "⚠️ I could not use c.csv: the files of this message are larger than the 3 MB limit together.",
        "⚠️ I could not use d.csv: only the first 4 files of a message are read.",
    ]
    assert [f.reads for f in files] == [1, 0, 1, 1, 0]
    progress = [e.label for e in reply.of_type(Progress)]  # type: ignore[attr-defined]
    assert "Reading a.csv…" in progress and "Reading big.csv…" not in progress
    assert reply.text == "You said: analyse" and len(fake.requests) == 1


async def test_files_without_text_get_a_prompt_and_unusable_ones_no_backend_call(
    setup: tuple[Bridge, FakeOpenAI],
) -> None:
    bridge, fake = setup
    reply = await send(bridge, "", MemoryFile("setup.exe", b"MZ"))
    assert notes(reply) == ["⚠️ I could not use setup.exe: I cannot read this type of file."]
    assert fake.requests == []
    reply = await send(bridge, "", MemoryFile("data.csv", b"a,b\n"))
    assert reply.text == "You said: Please look at the attached file."


async def test_command_words_sent_with_a_file_are_a_question_about_it(
    setup: tuple[Bridge, FakeOpenAI],
) -> None:
    bridge, fake = setup
    reply = await send(bridge, "help", MemoryFile("data.csv", b"a,b\n"))
    assert reply.text == "You said: help"
    assert len(fake.files) == 1


async def test_a_stopped_turn_keeps_the_vector_store_it_made(tmp_path: Path) -> None:
    async with FakeOpenAI(first_token_delay=2.0) as fake:
        bridge = bridge_for(fake, tmp_path, {"type": "file_search", "vector_store_ids": ["vs_team"]})
        try:
            reading = RecordingReply()
            message = InboundMessage(KEY, "U1", "read", ("m-a",), files=(MemoryFile("a.pdf", b"%PDF-1.4"),))
            await bridge.accept(message, reading)
            async with asyncio.timeout(5):
                while not fake.requests:  # noqa: ASYNC110 (indexed; the answer is being written)
                    await asyncio.sleep(0.01)
            assert bridge.stop(KEY)
            await reading.finished()
            fake.first_token_delay = 0
            await send(bridge, "what does page 3 say?")
            [store_id] = fake.vector_stores
            [search] = [t for t in fake.requests[-1]["tools"] if t["type"] == "file_search"]
            assert search["vector_store_ids"] == ["vs_team", store_id]
        finally:
            await bridge.close()


async def test_a_lost_conversation_does_not_upload_the_files_twice(setup: tuple[Bridge, FakeOpenAI]) -> None:
    bridge, fake = setup
    await send(bridge, "first")
    fake.conversations.clear()  # the backend lost it
    reply = await send(bridge, "sum it", MemoryFile("data.csv", b"a,b\n"))
    assert reply.text == "You said: sum it"
    [upload] = fake.files.values()
    [tool] = [t for t in fake.requests[-1]["tools"] if t["type"] == "code_interpreter"]
    assert tool["container"]["file_ids"] == [upload.id]
    assert [p.label for p in reply.of_type(Progress) if not p.done].count("Uploading data.csv…") == 1  # type: ignore[attr-defined]
