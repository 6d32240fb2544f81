"""What only the Assistants backend has: run statuses, run steps, context controls, its own
servers, and a run left active by an earlier process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from core.backend import TurnInput
from core.backends.assistants import AssistantsBackend
from core.errors import ConfigError
from core.events import Event, Failure, FailureKind, Progress, TextDelta
from core.profiles import AssistantProfile, parse_profiles
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
