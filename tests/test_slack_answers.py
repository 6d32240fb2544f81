"""End to end through the real aiohttp server, slack-bolt, slack_sdk and openai clients, against
the fake Slack Web API and fake OpenAI Responses/Conversations servers."""

from __future__ import annotations

import asyncio

from core import wording
from tests.conftest import RunningBridge
from tests.fakes.openai_server import Reply
from tests.slack_events import mention, message, next_ts


def user_texts(request: dict) -> list[str]:
    texts = []
    for item in request["input"]:
        for part in item.get("content") or []:
            if part.get("type") == "input_text":
                texts.append(part["text"])
    return texts


async def test_mention_gets_streamed_answer_in_its_thread(bridge: RunningBridge) -> None:
    bridge.openai.enqueue(Reply("Hello **there**, friend.", chunks=5))
    event = mention("hi there")
    response = await bridge.post_event(event)
    assert response.status == 200

    answers = await bridge.wait_answers("C1", event["ts"])
    assert answers == ["Hello **there**, friend."]
    [streamed] = bridge.slack.messages("C1", event["ts"])
    assert streamed.streamed and streamed.thread_ts == event["ts"]
    start = bridge.slack.calls_to("chat.startStream")[0].args
    assert start["recipient_team_id"] == "T1" and start["recipient_user_id"] == "U1"
    request = bridge.openai.requests[0]
    assert request["stream"] is True and request["truncation"] == "auto"
    assert request["model"] == "gpt-test" and request["instructions"] == "Be brief."
    assert request["max_output_tokens"] == 500
    assert user_texts(request) == ["hi there"]  # the bot's own mention is stripped
    assert request["conversation"].startswith("conv_")


async def test_followup_in_thread_reuses_conversation_without_mention(bridge: RunningBridge) -> None:
    first = mention("remember the number 7")
    await bridge.post_event(first)
    await bridge.wait_answers("C1", first["ts"])
    await bridge.post_event(message("what number?", thread_ts=first["ts"]))
    await bridge.wait_answers("C1", first["ts"], count=2)

    conversations = {r["conversation"] for r in bridge.openai.requests}
    assert len(conversations) == 1
    assert bridge.openai.count("POST", "/v1/conversations") == 1
    [conv] = conversations
    stored = [p.get("text") for item in bridge.openai.conversations[conv] for p in item.get("content") or []]
    assert "remember the number 7" in stored and "what number?" in stored


async def test_two_threads_get_two_conversations(bridge: RunningBridge) -> None:
    a, b = mention("one"), mention("two", channel="C2")
    await bridge.post_event(a)
    await bridge.post_event(b)
    await bridge.wait_answers("C1", a["ts"])
    await bridge.wait_answers("C2", b["ts"])
    assert len({r["conversation"] for r in bridge.openai.requests}) == 2


async def test_direct_message_is_answered_in_its_own_thread(bridge: RunningBridge) -> None:
    dm = message("hello in private", channel="D1", channel_type="im")
    await bridge.post_event(dm)
    answers = await bridge.wait_answers("D1", dm["ts"])
    assert answers == ["You said: hello in private"]
    other = message("a new top-level DM", channel="D1", channel_type="im")
    await bridge.post_event(other)
    await bridge.wait_answers("D1", other["ts"])
    assert len({r["conversation"] for r in bridge.openai.requests}) == 2


async def test_unmentioned_channel_messages_are_ignored(bridge: RunningBridge) -> None:
    top = message("just chatting")
    stranger_thread = message("reply in a thread the bot is not in", thread_ts=next_ts())
    await bridge.post_event(top)
    await bridge.post_event(stranger_thread)
    await asyncio.sleep(0.3)
    assert bridge.openai.requests == []
    assert bridge.slack.calls_to("chat.startStream") == []


async def test_bots_edits_and_deletions_are_ignored(bridge: RunningBridge) -> None:
    dm = dict(channel="D1", channel_type="im")
    await bridge.post_event(message("from a bot", bot_id="B2", subtype="bot_message", **dm))
    await bridge.post_event(message("edited", subtype="message_changed", **dm))
    await bridge.post_event(message("gone", subtype="message_deleted", **dm))
    await bridge.post_event(message("from me", user="UBOT", bot_id="BBOT", **dm))
    await asyncio.sleep(0.3)
    assert bridge.openai.requests == []


async def test_three_messages_at_once_are_answered_in_order(bridge: RunningBridge) -> None:
    bridge.openai.delta_delay = 0.02
    root = mention("first")
    await bridge.post_event(root)
    await asyncio.gather(
        bridge.post_event(message("second", thread_ts=root["ts"])),
        bridge.post_event(message("third", thread_ts=root["ts"])),
    )
    answers = await bridge.wait_answers("C1", root["ts"], count=3)
    assert answers == ["You said: first", "You said: second", "You said: third"]
    # The fake answers 400 conversation_locked to overlapping turns: none happened.
    assert all(r.get("conversation") for r in bridge.openai.requests)
    assert len(bridge.openai.requests) == 3


async def test_retried_event_is_answered_once(bridge: RunningBridge) -> None:
    event = mention("only once please")
    await bridge.post_event(event, event_id="EvSame")
    await bridge.post_event(
        event, event_id="EvSame", headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    await bridge.wait_answers("C1", event["ts"])
    await asyncio.sleep(0.3)
    assert len(bridge.answers("C1", event["ts"])) == 1
    assert len(bridge.openai.requests) == 1


async def test_mention_also_delivered_as_channel_message_is_answered_once(bridge: RunningBridge) -> None:
    event = mention("double delivery")
    same_as_message = message(event["text"], ts=event["ts"])
    await asyncio.gather(bridge.post_event(event), bridge.post_event(same_as_message))
    await bridge.wait_answers("C1", event["ts"])
    await asyncio.sleep(0.3)
    assert len(bridge.openai.requests) == 1


async def test_bad_signature_is_refused_and_nothing_runs(bridge: RunningBridge) -> None:
    event = mention("forged")
    response = await bridge.post_event(event, headers={"X-Slack-Signature": "v0=" + "0" * 64})
    assert response.status == 401
    stale = await bridge.post_event(mention("replayed"), headers={"X-Slack-Request-Timestamp": "1000000000"})
    assert stale.status == 401
    await asyncio.sleep(0.3)
    assert bridge.openai.requests == []
    assert [c.method for c in bridge.slack.calls if c.method != "auth.test"] == []


async def test_bare_mention_gets_a_greeting_without_a_backend_call(bridge: RunningBridge) -> None:
    event = mention("")
    await bridge.post_event(event)
    await bridge.slack.wait_for(lambda: bool(bridge.slack.messages("C1", event["ts"])))
    assert bridge.openai.requests == []


async def test_a_bare_mention_delivered_twice_is_greeted_once(bridge: RunningBridge) -> None:
    root = mention("hi")
    await bridge.post_event(root)
    await bridge.wait_answers("C1", root["ts"])
    bare = mention("", thread_ts=root["ts"])  # also comes as a message in a thread it follows
    await bridge.post_event(bare)
    await bridge.post_event(message(bare["text"], ts=bare["ts"], thread_ts=root["ts"]))
    await bridge.wait_answers("C1", root["ts"], count=2)
    await asyncio.sleep(0.2)
    assert bridge.answers("C1", root["ts"]) == ["You said: hi", wording.HELLO]


async def test_socket_mode_first_delivery_with_retry_num_zero_is_answered(bridge: RunningBridge) -> None:
    """Bolt sets X-Slack-Retry-Num: 0 on every Socket Mode delivery; it is not a retry."""
    from slack_bolt.request.async_request import AsyncBoltRequest

    from tests.slack_events import encode, event_callback

    event = mention("over the socket")
    request = AsyncBoltRequest(
        body=encode(event_callback(event)).decode(), mode="socket_mode", headers={"X-Slack-Retry-Num": "0"}
    )
    assert bridge.service.slack is not None
    response = await bridge.service.slack.app.async_dispatch(request)
    assert response.status == 200
    assert await bridge.wait_answers("C1", event["ts"]) == ["You said: over the socket"]


async def test_stop_button_and_stop_word_cancel_the_running_answer(bridge: RunningBridge) -> None:
    bridge.openai.first_token_delay = 5
    root = mention("take your time")
    await bridge.post_event(root)
    await bridge.slack.wait_for(lambda: len(bridge.openai.requests) == 1)
    stopped = {"type": "agent_session_stopped", "channel": "C1", "thread_ts": root["ts"], "user": "U1"}
    await bridge.post_event(stopped)
    assert await bridge.wait_answers("C1", root["ts"]) == ["⚠️ Stopped."]

    bridge.openai.first_token_delay = 5
    await bridge.post_event(message("another long one", thread_ts=root["ts"]))
    await bridge.slack.wait_for(lambda: len(bridge.openai.requests) == 2)
    await bridge.post_event(message("stop", thread_ts=root["ts"]))
    answers = await bridge.wait_answers("C1", root["ts"], count=2)
    assert answers[1] == "⚠️ Stopped."


async def test_help_and_reset_are_answered_by_the_bot_itself(bridge: RunningBridge) -> None:
    root = mention("remember the number 7")
    await bridge.post_event(root)
    await bridge.wait_answers("C1", root["ts"])
    await bridge.post_event(message("help", thread_ts=root["ts"]))
    answers = await bridge.wait_answers("C1", root["ts"], count=2)
    assert "`reset`" in answers[1] and "`stop`" in answers[1]

    await bridge.post_event(message("Reset", thread_ts=root["ts"]))
    answers = await bridge.wait_answers("C1", root["ts"], count=3)
    assert "new conversation" in answers[2]
    await bridge.post_event(message("what number?", thread_ts=root["ts"]))
    await bridge.wait_answers("C1", root["ts"], count=4)

    # help and reset never reach the backend; the message after reset opens a new conversation
    assert len(bridge.openai.requests) == 2
    assert bridge.openai.count("POST", "/v1/conversations") == 2
    first, second = (r["conversation"] for r in bridge.openai.requests)
    assert first != second
