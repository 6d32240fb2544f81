"""What only the Assistants backend has: run statuses, run steps, context controls, its own
servers, and a run left active by an earlier process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from core.backend import TurnInput
from core.backends.assistants import AssistantsBackend
from core.errors import ConfigError, ConversationGone
from core.events import Event, Failure, FailureKind, Notice, Progress, TextDelta
from core.files import FilePart, FileRoute
from core.profiles import AssistantProfile, parse_profiles
from core.wording import SHARED_STORE, UPLOAD_FAILED, file_refused
from tests.fakes import assistants_server as A


@pytest.fixture
async def fake() -> AsyncIterator[A.FakeAssistants]:
    async with A.FakeAssistants() as server:
        yield server


def profile(fake: A.FakeAssistants, **extra: Any) -> AssistantProfile:
    spec = {"backend": "assistants", "assistant_id": "asst_test", "base_url": fake.base_url, **extra}
    return parse_profiles({"default": "a", "assistants": {"a": spec}}).default


async def turn(
    backend: AssistantsBackend, thread: str, prof: AssistantProfile, text: str = "hi"
) -> list[Event]:
    return [event async for event in backend.run_turn(thread, TurnInput(text, "U1"), prof)]


@pytest.fixture
async def backend() -> AsyncIterator[AssistantsBackend]:
    b = AssistantsBackend(
        None, rate_limit_retries=2, rate_limit_backoff=0.01, poll_start=0.01, max_tool_rounds=2
    )
    yield b
    await b.close()


def failures(events: list[Event]) -> list[FailureKind]:
    return [e.kind for e in events if isinstance(e, Failure)]


async def test_context_controls_go_on_every_run(fake: A.FakeAssistants, backend: AssistantsBackend) -> None:
    prof = profile(
        fake,
        model="gpt-x",
        instructions="Override.",
        temperature=0.2,
        max_prompt_tokens=4000,
        max_completion_tokens=500,
        truncation_strategy={"type": "last_messages", "last_messages": 6},
        additional_instructions="Be brief.",
        tool_choice="auto",
        parallel_tool_calls=False,
        tools=[{"type": "code_interpreter"}, {"type": "function", "function": "tests.tools:get_weather"}],
    )
    thread = await backend.open_conversation(prof)
    await turn(backend, thread, prof)
    await turn(backend, thread, prof)
    for request in fake.run_requests:
        assert request["assistant_id"] == "asst_test" and request["model"] == "gpt-x"
        assert request["instructions"] == "Override." and request["temperature"] == 0.2
        assert request["max_prompt_tokens"] == 4000 and request["max_completion_tokens"] == 500
        assert request["truncation_strategy"] == {"type": "last_messages", "last_messages": 6}
        assert request["additional_instructions"] == "Be brief." and request["tool_choice"] == "auto"
        assert request["parallel_tool_calls"] is False
        assert request["tools"][0] == {"type": "code_interpreter"}
        assert request["tools"][1]["function"]["name"] == "get_weather"


async def test_run_steps_become_progress(fake: A.FakeAssistants, backend: AssistantsBackend) -> None:
    prof = profile(fake)
    fake.enqueue(
        A.Say("Done.", steps=["code_interpreter", "file_search"]),
    )
    fake.enqueue(A.CallFunctions([("get_weather", {"city": "X"})]), A.Say("ok"))
    thread = await backend.open_conversation(prof)
    labels = [(e.label, e.done) for e in await turn(backend, thread, prof) if isinstance(e, Progress)]
    assert ("Running code…", False) in labels and ("Running code…", True) in labels
    assert ("Searching files…", False) in labels
    labels = [e.label for e in await turn(backend, thread, prof) if isinstance(e, Progress)]
    assert "Calling get_weather…" in labels


@pytest.mark.parametrize(
    ("plan", "kind"),
    [
        (A.Expire(), FailureKind.TIMEOUT),
        (A.StreamError("server_error", "boom"), FailureKind.FAILED),
        (A.Fail("invalid_prompt", "bad"), FailureKind.FAILED),
        (A.Incomplete("max_prompt_tokens", ""), FailureKind.CONTEXT_TOO_LONG),
    ],
)
async def test_run_endings(
    fake: A.FakeAssistants, backend: AssistantsBackend, plan: Any, kind: FailureKind
) -> None:
    prof = profile(fake)
    fake.enqueue(plan)
    thread = await backend.open_conversation(prof)
    assert failures(await turn(backend, thread, prof)) == [kind]
    assert "You said: next" in "".join(
        e.text for e in await turn(backend, thread, prof, "next") if isinstance(e, TextDelta)
    )


async def test_rate_limit_retries_are_bounded_then_the_user_is_told(
    fake: A.FakeAssistants, backend: AssistantsBackend
) -> None:
    prof = profile(fake)
    fake.enqueue(*[A.Fail("rate_limit_exceeded", "slow") for _ in range(3)])
    thread = await backend.open_conversation(prof)
    assert failures(await turn(backend, thread, prof)) == [FailureKind.RATE_LIMITED]
    assert len(fake.run_requests) == 3


async def test_a_rate_limit_after_text_is_not_retried_so_nothing_is_said_twice(
    fake: A.FakeAssistants, backend: AssistantsBackend
) -> None:
    prof = profile(fake)
    fake.enqueue(A.Fail("rate_limit_exceeded", "slow", text="The first half"))
    thread = await backend.open_conversation(prof)
    events = await turn(backend, thread, prof)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The first half"
    assert failures(events) == [FailureKind.RATE_LIMITED]
    assert len(fake.run_requests) == 1


async def test_endless_tool_calls_are_cut_off(fake: A.FakeAssistants, backend: AssistantsBackend) -> None:
    prof = profile(fake, tools=[{"type": "function", "function": "tests.tools:get_weather"}])
    fake.enqueue(*[A.CallFunctions([("get_weather", {"city": "X"})]) for _ in range(4)])
    thread = await backend.open_conversation(prof)
    assert failures(await turn(backend, thread, prof)) == [FailureKind.TOO_MANY_TOOL_ROUNDS]


async def test_run_left_active_by_an_earlier_process_is_cancelled_first(
    fake: A.FakeAssistants, backend: AssistantsBackend
) -> None:
    prof = profile(fake)
    thread = await backend.open_conversation(prof)
    leftover = openai.AsyncOpenAI(base_url=fake.base_url, api_key="t")
    fake.enqueue(A.Hang())
    await leftover.beta.threads.runs.create(thread, assistant_id="asst_test")
    events = await turn(backend, thread, prof, "still there?")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "You said: still there?"
    await leftover.close()


async def test_profile_key_comes_from_the_named_variable(
    fake: A.FakeAssistants, monkeypatch: pytest.MonkeyPatch, backend: AssistantsBackend
) -> None:
    prof = profile(fake, api_key_env="SELF_HOSTED_KEY")
    with pytest.raises(ConfigError, match="SELF_HOSTED_KEY"):
        await backend.open_conversation(prof)
    monkeypatch.setenv("SELF_HOSTED_KEY", "sk-self")
    assert (await backend.open_conversation(prof)).startswith("thread_")


async def test_check_finds_the_assistant(fake: A.FakeAssistants, backend: AssistantsBackend) -> None:
    await backend.check(profile(fake))
    from core.errors import BackendUnreachable

    with pytest.raises(BackendUnreachable, match="asst_nope"):
        await backend.check(profile(fake, assistant_id="asst_nope"))


# ---- files the user sends ------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n fake image"


def user_message(fake: A.FakeAssistants, thread: str) -> dict[str, Any]:
    return [m for m in fake.threads[thread] if m["role"] == "user"][-1]


def answer(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def file_turn(
    backend: AssistantsBackend, thread: str, prof: AssistantProfile, *files: FilePart, text: str = "look"
) -> list[Event]:
    return [e async for e in backend.run_turn(thread, TurnInput(text, "U1", files=files), prof)]


async def test_an_image_goes_up_for_vision_and_into_the_message(
    fake: A.FakeAssistants, backend: AssistantsBackend
) -> None:
    prof = profile(fake)
    thread = await backend.open_conversation(prof)
    events = await file_turn(backend, thread, prof, FilePart("cat.png", "image/png", PNG, FileRoute.VISION))
    [upload] = fake.uploads
    assert (upload["filename"], upload["purpose"], upload["data"]) == ("cat.png", "vision", PNG)
    assert upload["content_type"] == "image/png"
    message = user_message(fake, thread)
    assert message["content"] == [
        {"type": "text", "text": {"value": "look", "annotations": []}},
        {"type": "image_file", "image_file": {"file_id": upload["id"], "detail": "auto"}},
    ]
    assert message["attachments"] == [] and answer(events) == "You said: look"


async def test_a_csv_goes_to_the_code_interpreter(fake: A.FakeAssistants, backend: AssistantsBackend) -> None:
    prof = profile(fake, tools=[{"type": "code_interpreter"}])
    thread = await backend.open_conversation(prof)
    csv = FilePart("sales.csv", "text/csv", b"a,b\n1,2\n", FileRoute.CODE_INTERPRETER)
    events = await file_turn(backend, thread, prof, csv, text="sum b")
    [upload] = fake.uploads
    assert (upload["filename"], upload["purpose"], upload["data"]) == ("sales.csv", "assistants", csv.data)
    message = user_message(fake, thread)
    assert message["content"] == [{"type": "text", "text": {"value": "sum b", "annotations": []}}]
    assert message["attachments"] == [{"file_id": upload["id"], "tools": [{"type": "code_interpreter"}]}]
    assert fake.run_requests[-1]["tools"] == [{"type": "code_interpreter"}]
    assert answer(events) == "You said: sum b"


@pytest.mark.parametrize(
    ("tools", "route", "run_tools"),
    [
        ([], FileRoute.FILE_SEARCH, None),  # the assistant's own tools on its server
        (
            [{"type": "code_interpreter"}],
            FileRoute.FILE_INPUT,
            [{"type": "code_interpreter"}, {"type": "file_search"}],
        ),
    ],
)
async def test_a_pdf_goes_to_file_search_in_the_threads_own_store(
    fake: A.FakeAssistants,
    backend: AssistantsBackend,
    tools: list[dict[str, Any]],
    route: FileRoute,
    run_tools: list[dict[str, Any]] | None,
) -> None:
    prof = profile(fake, tools=tools) if tools else profile(fake)
    thread = await backend.open_conversation(prof)
    events = await file_turn(backend, thread, prof, FilePart("q3.pdf", "application/pdf", b"%PDF-1.4", route))
    [upload] = fake.uploads
    assert upload["purpose"] == "assistants"
    assert user_message(fake, thread)["attachments"] == [
        {"file_id": upload["id"], "tools": [{"type": "file_search"}]}
    ]
    assert list(fake.vector_stores.values()) == [[upload["id"]]]  # a store of the thread's own
    assert fake.run_requests[-1].get("tools") == run_tools  # file input needs file_search in the run
    assert answer(events) == "You said: look"


async def test_a_failed_upload_is_named_and_the_rest_still_answered(
    fake: A.FakeAssistants, backend: AssistantsBackend
) -> None:
    prof = profile(fake)
    thread = await backend.open_conversation(prof)
    fake.fail_uploads = 1
    bad = FilePart("broken.png", "image/png", PNG, FileRoute.VISION)
    good = FilePart("data.csv", "text/csv", b"x\n1\n", FileRoute.CODE_INTERPRETER)
    events = await file_turn(backend, thread, prof, bad, good, text="what is this?")
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert notices == [file_refused("broken.png", UPLOAD_FAILED)]
    [upload] = fake.uploads
    message = user_message(fake, thread)
    assert upload["filename"] == "data.csv" and message["attachments"][0]["file_id"] == upload["id"]
    assert message["content"] == [{"type": "text", "text": {"value": "what is this?", "annotations": []}}]
    assert answer(events) == "You said: what is this?"
    assert events.index(next(e for e in events if isinstance(e, Notice))) < events.index(
        next(e for e in events if isinstance(e, TextDelta))
    )


async def test_files_on_a_turn_that_calls_functions(
    fake: A.FakeAssistants, backend: AssistantsBackend
) -> None:
    prof = profile(fake, tools=[{"type": "function", "function": "tests.tools:get_weather"}])
    fake.enqueue(A.CallFunctions([("get_weather", {"city": "Oslo"})]), A.Say("Cold, and your chart is fine."))
    thread = await backend.open_conversation(prof)
    csv = FilePart("temps.csv", "text/csv", b"t\n-3\n", FileRoute.CODE_INTERPRETER)
    image = FilePart("chart.png", "image/png", PNG, FileRoute.VISION)
    events = await file_turn(backend, thread, prof, csv, image, text="weather?")
    assert sorted(u["purpose"] for u in fake.uploads) == ["assistants", "vision"]
    message = user_message(fake, thread)
    assert len(message["attachments"]) == 1 and message["content"][1]["type"] == "image_file"
    # the run's tools replace the assistant's: the code interpreter stays for the attachment
    [run] = fake.run_requests
    assert [t["type"] for t in run["tools"]] == ["function", "code_interpreter"]
    assert len(fake.tool_output_requests) == 1
    assert answer(events) == "Cold, and your chart is fine." and not failures(events)


async def test_documents_stay_out_of_a_shared_vector_store(
    fake: A.FakeAssistants, backend: AssistantsBackend
) -> None:
    prof = profile(fake, tools=[{"type": "file_search", "vector_store_ids": ["vs_shared"]}])
    thread = await backend.open_conversation(prof)
    pdf = FilePart("salaries.pdf", "application/pdf", b"%PDF-1.4", FileRoute.FILE_SEARCH)
    events = await file_turn(backend, thread, prof, pdf, text="summarise")
    assert [e.text for e in events if isinstance(e, Notice)] == [file_refused("salaries.pdf", SHARED_STORE)]
    assert fake.uploads == [] and fake.vector_stores == {}
    assert user_message(fake, thread)["attachments"] == [] and answer(events) == "You said: summarise"


async def test_a_lost_thread_is_said_after_the_uploads_which_a_retry_reuses(
    fake: A.FakeAssistants, backend: AssistantsBackend
) -> None:
    prof = profile(fake)
    data = FilePart("data.csv", "text/csv", b"x\n1\n", FileRoute.CODE_INTERPRETER)
    turn_input = TurnInput("sum it", "U1", files=(data,))
    with pytest.raises(ConversationGone):
        async for _ in backend.run_turn("thread_gone", turn_input, prof):
            pass
    thread = await backend.open_conversation(prof)
    events = [e async for e in backend.run_turn(thread, turn_input, prof)]
    [upload] = fake.uploads
    assert user_message(fake, thread)["attachments"][0]["file_id"] == upload["id"]
    assert answer(events) == "You said: sum it"
