"""Benchmark the Teams path end to end on loopback: the real Service (aiohttp, Microsoft 365 Agents SDK,
openai) between the fake Bot Connector and the fake OpenAI Responses/Conversations servers.

    python -m bench.teams_bench [--first-token-delay 0.2] [--threads 100] [--turns 20] [--connector-delay 0.0]

Teams-shaped activities are POSTed over real HTTP to /api/messages (anonymous, as in the tests); the
answers come back through the fake Bot Connector. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.slack_bench import POLL, PROFILES, REPLY_CHUNKS, REPLY_TEXT, Backend, Row, dist, table
from bots.service import Service
from core.profiles import parse_profiles
from tests import slack_events
from tests import teams_activities as T
from tests.fakes import assistants_server
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.teams_connector import FakeConnector, Sent
from tests.fakes.wiring import settings_for_fakes

KINDS = ("channel", "group chat", "personal")
ANONYMOUS_NAG = "microsoft_agents.hosting.core.connector.client.user_token_client"


def stream_type(activity: dict[str, Any]) -> str | None:
    for entity in activity.get("entities") or []:
        if isinstance(entity, dict) and str(entity.get("type", "")).lower() == "streaminfo":
            return str(entity.get("streamType") or "streaming")
    return None


def shows_text(sent: Sent) -> bool:
    """A request that puts answer text in front of the user: a message with text, or a streaming
    update (not the informative "Thinking…" one)."""
    kind = sent.activity.get("type")
    if not sent.activity.get("text"):
        return False
    return kind == "message" or (kind == "typing" and stream_type(sent.activity) == "streaming")


def describe(sent: Sent) -> str:
    """A connector request by what it is: ``message``, ``typing``, ``typing streamType=informative``..."""
    kind = str(sent.activity.get("type"))
    streaming = stream_type(sent.activity)
    return kind if streaming is None else f"{kind} streamType={streaming}"


class Bench:
    def __init__(
        self, http: aiohttp.ClientSession, url: str, openai: Backend, connector: FakeConnector, timeout: float
    ) -> None:
        self.http, self.url, self.openai, self.connector, self.timeout = http, url, openai, connector, timeout
        self.kinds: dict[str, str] = {}  # conversation id -> kind, for counting connector calls
        self.counter = 0

    def activity(self, kind: str, text: str, place: str) -> dict[str, Any]:
        """A new conversation of ``kind``: a top-level channel post, or a fresh group or personal chat."""
        url = self.connector.service_url
        self.counter += 1
        if kind == "channel":
            activity = T.channel(text, service_url=url, channel_id=f"19:{place}@thread.tacv2")
        elif kind == "group chat":
            activity = T.group_chat(
                text, service_url=url, conversation_id=f"19:{place}-{self.counter}@thread.v2"
            )
        else:
            activity = T.personal(text, service_url=url, conversation_id=f"a:{place}-{self.counter}")
        self.kinds[activity["conversation"]["id"]] = kind
        return activity

    def answered(self, conversation_id: str) -> bool:
        """The conversation shows a finished answer (a final message, or a stream's final message)."""
        return any(v.finished for v in self.connector.visible(conversation_id))

    async def post(self, activity: dict[str, Any]) -> tuple[float, float]:
        """POST one activity; return (monotonic when sent, monotonic when acknowledged)."""
        sent = time.monotonic()
        async with self.http.post(f"{self.url}/api/messages", json=activity) as response:
            await response.read()
            acked = time.monotonic()
        if response.status != 202:
            raise RuntimeError(f"/api/messages answered HTTP {response.status}")
        return sent, acked

    async def arrival(self, conversation_id: str, index: int, wanted: Callable[[Sent], bool]) -> Sent:
        """The first request for the conversation that ``wanted`` accepts, from ``index`` on; its ``at`` is
        when the fake Bot Connector received it (polled every 1 ms to find it, timed exactly)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            sent = self.connector.sent
            for request in sent[index:]:
                if request.conversation_id == conversation_id and wanted(request):
                    return request
            index = len(sent)
            await asyncio.sleep(POLL)
        raise TimeoutError(f"no such request in {conversation_id} within {self.timeout}s")

    async def answered_at(self, conversation_id: str) -> float:
        """monotonic when the conversation's answer is seen finished (1 ms polls)."""
        deadline = time.monotonic() + self.timeout
        while not self.answered(conversation_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no finished answer in {conversation_id} within {self.timeout}s")
            await asyncio.sleep(POLL)
        return time.monotonic()

    async def sequential(self, kind: str, turns: int, place: str) -> dict[str, list[float]]:
        """(a) and (b): one activity at a time; each answer finishes before the next is sent."""
        figures: dict[str, list[float]] = {"ack": [], "informative": [], "first": [], "complete": []}
        for number in range(turns):
            self.openai.enqueue_replies(1)
            activity = self.activity(kind, f"question {number}", place)
            cid = activity["conversation"]["id"]
            index = len(self.connector.sent)
            posting = asyncio.create_task(self.post(activity))
            first = await self.arrival(cid, index, shows_text)
            sent, acked = await posting
            figures["ack"].append(acked - sent)
            figures["first"].append(first.at - sent)
            if kind == "personal":
                informative = await self.arrival(
                    cid, index, lambda s: stream_type(s.activity) == "informative"
                )
                figures["informative"].append(informative.at - sent)
            figures["complete"].append(await self.answered_at(cid) - sent)
        return figures

    async def concurrent(self, threads: int) -> tuple[float, list[float]]:
        """(c): `threads` new top-level posts in as many channels at once; (elapsed, per-post completion)."""
        self.openai.enqueue_replies(threads)
        activities = [self.activity("channel", f"burst {n}", f"burst-{n}") for n in range(threads)]
        pending = {a["conversation"]["id"] for a in activities}
        done: dict[str, float] = {}
        candidates: set[str] = set()
        index = len(self.connector.sent)
        start = time.monotonic()
        posting = asyncio.gather(*(self.post(a) for a in activities))
        while pending:
            sent = self.connector.sent
            candidates.update(s.conversation_id for s in sent[index:] if s.activity.get("type") == "message")
            index = len(sent)
            for cid in [c for c in candidates if c in pending]:
                if self.answered(cid):
                    done[cid] = time.monotonic() - start
                    pending.discard(cid)
            if time.monotonic() - start > self.timeout:
                posting.cancel()
                raise TimeoutError(f"{len(pending)} of {threads} answers unfinished after {self.timeout}s")
            await asyncio.sleep(POLL)
        await posting
        wrong = [
            cid
            for cid in done
            if [v.text for v in self.connector.visible(cid)] != [REPLY_TEXT]  # one message, all of it
        ]
        if wrong:
            raise RuntimeError(f"{len(wrong)} answers differ from the backend's text, e.g. in {wrong[0]}")
        return max(done.values()), list(done.values())

    async def settle(self) -> None:
        """Wait (at most 3 s) until the fake Bot Connector has had no new request for 100 ms."""
        for _ in range(30):
            count = len(self.connector.sent)
            await asyncio.sleep(0.1)
            if len(self.connector.sent) == count:
                return

    def connector_rows(self, requests: list[Sent], kind: str, turns: int, when: str) -> list[Row]:
        calls = Counter(describe(s) for s in requests if self.kinds.get(s.conversation_id) == kind)
        rows = [
            Row(f"(d) connector, {kind}: {name}", "calls/turn", count / turns)
            for name, count in sorted(calls.items())
        ]
        rows.append(Row(f"(d) connector calls, {kind} ({when})", "calls/turn", sum(calls.values()) / turns))
        return rows


async def run(args: argparse.Namespace) -> list[Row]:
    timeout = 30.0 + 4 * args.first_token_delay + 20 * args.connector_delay
    fake_slack = FakeSlack("xoxb-test", team_id=slack_events.TEAM, bot_user_id=slack_events.BOT_USER)
    assistants = assistants_server.FakeAssistants(first_token_delay=args.first_token_delay)
    async with (
        FakeOpenAI(first_token_delay=args.first_token_delay) as openai,
        fake_slack as slack,  # Slack stays configured, as in the tests; no Slack event is sent
        FakeConnector() as connector,
        assistants,
    ):
        connector.delay = args.connector_delay
        backend_fake = Backend(openai, assistants if args.backend == "assistants" else None)
        profiles = PROFILES
        if args.backend == "assistants":
            general = {"backend": "assistants", "assistant_id": "asst_test", "base_url": assistants.base_url}
            profiles = {"default": "general", "assistants": {"general": general}}
        with tempfile.TemporaryDirectory(prefix="teams-bench-") as tmp:
            settings = settings_for_fakes(
                openai,
                slack,
                Path(tmp) / "store.sqlite",
                teams_allow_anonymous=True,
                max_concurrent_turns=args.threads,  # so (c) measures the bridge, not its limit
                log_level="WARNING",
            )
            service = Service.create(settings, parse_profiles(profiles, source="bench"))
            stop, ready = asyncio.Event(), asyncio.Event()
            server = asyncio.create_task(service.run(stop, ready))
            try:
                await asyncio.wait_for(ready.wait(), 10)
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                    url = f"http://127.0.0.1:{service.bound_port}"
                    bench = Bench(http, url, backend_fake, connector, timeout)
                    for kind in KINDS:  # first connections and lazy setup: not counted
                        await bench.sequential(kind, 1, "warmup")
                    await bench.settle()
                    sequential_start = len(connector.sent)
                    figures = {kind: await bench.sequential(kind, args.turns, "seq") for kind in KINDS}
                    await bench.settle()
                    sequential_requests = connector.sent[sequential_start:]
                    backend_start, connector_start = len(backend_fake.calls), len(connector.sent)
                    elapsed, completions = await bench.concurrent(args.threads)
                    await bench.settle()
                    burst_requests = connector.sent[connector_start:]
            finally:
                stop.set()
                await asyncio.wait_for(server, 15)
        if connector.protocol_errors:
            raise RuntimeError(
                f"the bridge broke the Bot Connector protocol: {connector.protocol_errors[:3]}"
            )

    delay = args.first_token_delay
    channel, group, personal = (figures[kind] for kind in KINDS)
    rows = [
        dist(f"(a) activity -> HTTP 202 ack, {kind} (sequential)", figures[kind]["ack"]) for kind in KINDS
    ]
    rows += [
        dist(
            f"(b) channel post -> final message - {delay:g}s first-token delay",
            minus(channel["first"], delay),
        ),
        dist(f"(b) group chat -> final message - {delay:g}s", minus(group["first"], delay)),
        dist("(b) personal chat -> informative update (Thinking…)", personal["informative"]),
        dist(
            f"(b) personal chat -> first text (update or final) - {delay:g}s", minus(personal["first"], delay)
        ),
        dist(
            "(b) personal chat: informative update -> first text",
            [f - i for f, i in zip(personal["first"], personal["informative"], strict=True)],
        ),
        dist("(c) reference: channel post -> answer final, one alone", channel["complete"]),
        dist("(c) reference: personal chat -> answer final, one alone", personal["complete"]),
        Row(
            f"(c) answers per second, {args.threads} channel posts at once",
            "answers/s",
            args.threads / elapsed,
        ),
        dist("(c) per-post completion from burst start", completions),
        Row("(c) burst wall time", "ms", elapsed * 1000),
    ]
    turns = args.threads
    backend = Counter(
        f"{m} {re.sub(r'/(conv|resp|msg|thread|run)_[0-9a-f]+', '/{id}', p)}"
        for m, p in backend_fake.calls[backend_start:]
    )
    for name, count in sorted(backend.items()):
        rows.append(Row(f"(d) backend {name}", "calls/turn", count / turns))
    rows.append(Row("(d) backend calls, all", "calls/turn", sum(backend.values()) / turns))
    rows += bench.connector_rows(burst_requests, "channel", turns, "during (c)")
    for kind in KINDS[1:]:
        rows += bench.connector_rows(sequential_requests, kind, args.turns, "sequential")
    return rows


def minus(samples: list[float], delay: float) -> list[float]:
    return [sample - delay for sample in samples]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["responses", "assistants"], default="responses")
    parser.add_argument("--first-token-delay", type=float, default=0.2, help="fake backend delay, seconds")
    parser.add_argument("--threads", type=int, default=100, help="channel posts answered at once in (c)")
    parser.add_argument("--turns", type=int, default=20, help="sequential samples per chat kind for (a), (b)")
    parser.add_argument(
        "--connector-delay", type=float, default=0.0, help="fake Bot Connector delay per request, s"
    )
    args = parser.parse_args(argv)
    if args.threads < 1 or args.turns < 1:
        parser.error("--threads and --turns must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    # Anonymous mode only: the SDK warns "App ID is not provided" on every proactive turn.
    logging.getLogger(ANONYMOUS_NAG).setLevel(logging.ERROR)
    rows = asyncio.run(run(args))
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
    print(
        f"parameters: backend={args.backend} first_token_delay={args.first_token_delay:g}s "
        f"threads={args.threads} turns={args.turns} per kind connector_delay={args.connector_delay:g}s "
        f"reply={len(REPLY_TEXT)} chars in {REPLY_CHUNKS} chunks"
    )
    print(
        f"bridge: max_concurrent_turns={args.threads} (= threads, so (c) measures the bridge, not its "
        f"limit); anonymous /api/messages; 1 warm-up turn per kind not counted; text arrivals timed "
        f"when the fake Bot Connector receives them, found by polling every {POLL * 1000:g} ms"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
