"""How answers look in Slack: streaming, fallback, safety, splitting, failures, rate limits."""

from __future__ import annotations

import asyncio

import pytest
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.reply import SlackReply, SlackThread
from bots.slack.text import MESSAGE_LIMIT, neutralise
from core.events import Citation, Done, Failure, FailureKind, Progress, TextDelta
from tests.conftest import RunningBridge
from tests.fakes.openai_server import Failed, Reply
from tests.fakes.slack_server import FakeSlack
from tests.slack_events import mention

THREAD = SlackThread(channel="C1", thread_ts="100.1", team_id="T1", user_id="U1")


def client_for(fake: FakeSlack) -> AsyncWebClient:
    client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    return client


async def render(fake: FakeSlack, *events, **options) -> SlackReply:
    reply = SlackReply(client_for(fake), THREAD, **options)
    for event in events:
        await reply.emit(event)
    return reply


async def test_model_output_never_pings_anyone(bridge: RunningBridge) -> None:
    bridge.openai.enqueue(
        Reply("Hey <!channel> and <!here|here>, <!everyone>, <@U123> and <!subteam^S1>! @here @Channel a&b")
    )
    event = mention("ping everyone")
    await bridge.post_event(event)
    [answer] = await bridge.wait_answers("C1", event["ts"])
    for raw in ("<!channel>", "<!here", "<!everyone>", "<@U123>", "<!subteam^", "@here", "@Channel"):
        assert raw not in answer
    assert "&lt;!channel&gt;" in answer and "a&amp;b" in answer


def test_neutralise_handles_mentions_split_across_deltas() -> None:
    assert neutralise("<@U1>") == "&lt;@U1&gt;"
    assert "@here" not in neutralise("@here")


async def test_broadcast_word_split_across_deltas_is_neutralised(fake_slack: FakeSlack) -> None:
    await render(fake_slack, TextDelta("Attention @he"), TextDelta("re now"), Done())
    [message] = fake_slack.messages("C1", "100.1")
    assert "@here" not in message.text and "now" in message.text


async def test_streaming_refused_falls_back_to_post_and_update(bridge: RunningBridge) -> None:
    bridge.slack.fail("chat.startStream", "not_in_channel")
    bridge.openai.enqueue(Reply("Fallback answer arrives whole.", chunks=3))
    event = mention("hi")
    await bridge.post_event(event)
    await bridge.slack.wait_for(lambda: bool(bridge.slack.messages("C1", event["ts"])))
    await asyncio.sleep(0.2)
    [message] = bridge.slack.messages("C1", event["ts"])
    assert not message.streamed
    assert message.text == "Fallback answer arrives whole."


async def test_fallback_updates_at_most_every_three_seconds(fake_slack: FakeSlack) -> None:
    fake_slack.fail("chat.startStream", "ratelimited")
    reply = SlackReply(client_for(fake_slack), THREAD, update_interval=3.0)
    for word in ["one ", "two ", "three ", "four "]:
        await reply.emit(TextDelta(word))
        await asyncio.sleep(0.05)
    await reply.emit(Done())
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    assert len(fake_slack.calls_to("chat.update")) == 1  # the final one only: 0.2 s < 3 s
    assert fake_slack.messages("C1", "100.1")[0].text == "one two three four "


async def test_stream_that_stops_accepting_continues_with_update(fake_slack: FakeSlack) -> None:
    fake_slack.fail("chat.appendStream", "message_not_in_streaming_state")
    reply = SlackReply(client_for(fake_slack), THREAD, stream_interval=0)
    await reply.emit(TextDelta("Start, "))
    await reply.emit(TextDelta("middle, "))
    await reply.emit(TextDelta("end."))
    await reply.emit(Done())
    [message] = fake_slack.messages("C1", "100.1")
    assert message.text == "Start, middle, end."


async def test_long_answer_is_split_without_losing_text(fake_slack: FakeSlack) -> None:
    paragraph = "word " * 199 + "end.\n\n"
    text = paragraph * 30  # ~30,000 characters
    deltas = [TextDelta(text[i : i + 700]) for i in range(0, len(text), 700)]
    await render(fake_slack, *deltas, Done(), stream_interval=0)
    messages = fake_slack.messages("C1", "100.1")
    assert len(messages) >= 3
    assert all(m.stopped and len(m.text) <= MESSAGE_LIMIT for m in messages)
    assert "".join(m.text for m in messages) == text
    assert all(m.text.endswith("\n\n") for m in messages[:-1])  # cut at paragraph breaks
    for call in fake_slack.calls_to("chat.appendStream"):
        chunk_text = "".join(c["text"] for c in call.json_arg("chunks") or []) + (
            call.args.get("markdown_text") or ""
        )
        assert len(chunk_text) <= 12_000


async def test_failure_is_one_clear_message_in_the_thread(bridge: RunningBridge) -> None:
    bridge.openai.enqueue(Failed("server_error", "internal details nobody should see"))
    event = mention("hi")
    await bridge.post_event(event)
    [answer] = await bridge.wait_answers("C1", event["ts"])
    assert answer == "⚠️ Sorry, the assistant could not answer this time. Please try again."


async def test_partial_answer_keeps_text_and_adds_a_note(fake_slack: FakeSlack) -> None:
    await render(fake_slack, TextDelta("Half an"), Failure(FailureKind.INCOMPLETE_OUTPUT_LIMIT), Done())
    [message] = fake_slack.messages("C1", "100.1")
    assert message.text == "Half an\n\n⚠️ (The answer was cut short: it reached its length limit.)"


async def test_citations_become_numbered_sources(fake_slack: FakeSlack) -> None:
    await render(
        fake_slack,
        TextDelta("Answer."),
        Citation("Handbook", url="https://example.com/h"),
        Citation("Handbook", url="https://example.com/h"),
        Citation("policy.pdf", file_id="file_1"),
        Done(),
    )
    [message] = fake_slack.messages("C1", "100.1")
    assert message.text == "Answer.\n\n*Sources*\n[1] [Handbook](https://example.com/h)\n[2] policy.pdf"


async def test_sources_cannot_ping_or_smuggle_a_link(fake_slack: FakeSlack) -> None:
    await render(
        fake_slack,
        TextDelta("See."),
        Citation(
            "Handbook](https://phish.example) [", url="https://example.com/<!here>) <!channel> <@U9> (x"
        ),
        Citation("Local", url="javascript:alert(1)"),
        Done(),
    )
    [message] = fake_slack.messages("C1", "100.1")
    assert message.text == (
        "See.\n\n*Sources*\n"
        "[1] [Handbook)(https://phish.example) (](https://example.com/%3C!here%3E%29%20%3C!channel%3E"
        "%20%3C%40U9%3E%20%28x)\n[2] Local"
    )


async def test_progress_sets_the_thread_status_and_clears_it(fake_slack: FakeSlack) -> None:
    await render(
        fake_slack, Progress("Running code…"), TextDelta("ok"), Progress("Running code…", done=True), Done()
    )
    statuses = [c.args["status"] for c in fake_slack.calls_to("assistant.threads.setStatus")]
    assert statuses == ["Running code…", ""]
    assert fake_slack.calls_to("assistant.threads.setStatus")[-1].args["thread_ts"] == "100.1"


async def test_status_refused_once_is_not_retried_every_event(fake_slack: FakeSlack) -> None:
    fake_slack.fail("assistant.threads.setStatus", "not_allowed", times=10)
    await render(fake_slack, Progress("a"), Progress("b"), TextDelta("ok"), Done())
    assert len(fake_slack.calls_to("assistant.threads.setStatus")) == 1
    assert fake_slack.messages("C1", "100.1")[0].text == "ok"


async def test_empty_answer_is_said_not_silent(fake_slack: FakeSlack) -> None:
    await render(fake_slack, Done())
    assert fake_slack.messages("C1", "100.1")[0].text == "(The assistant returned an empty answer.)"


async def test_slack_rate_limit_is_retried_honouring_retry_after(fake_slack: FakeSlack) -> None:
    fake_slack.rate_limit("chat.startStream", times=1, retry_after=0)
    await render(fake_slack, TextDelta("after a pause"), Done())
    assert len(fake_slack.calls_to("chat.startStream")) == 2
    assert fake_slack.messages("C1", "100.1")[0].text == "after a pause"


@pytest.mark.parametrize("channel", ["C1", "D1"])
async def test_stream_carries_recipient_ids(fake_slack: FakeSlack, channel: str) -> None:
    thread = SlackThread(channel=channel, thread_ts="5.5", team_id="T1", user_id="U9")
    reply = SlackReply(client_for(fake_slack), thread)
    await reply.emit(TextDelta("x"))
    await reply.emit(Done())
    args = fake_slack.calls_to("chat.startStream")[0].args
    assert (args["recipient_team_id"], args["recipient_user_id"], args["thread_ts"]) == ("T1", "U9", "5.5")
