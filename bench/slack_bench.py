"""Benchmark the Slack path end to end on loopback: the real Service (aiohttp, slack-bolt, slack_sdk,
openai) between the fake Slack Web API and the fake OpenAI Responses/Conversations servers.

    python -m bench.slack_bench [--first-token-delay 0.2] [--threads 100] [--turns 20] [--slack-delay 0.0]

Signed Slack events are POSTed over real HTTP; see bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bots.service import Service
from core.profiles import parse_profiles
from tests import slack_events
from tests.fakes import assistants_server
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack_server import Call, FakeSlack
from tests.fakes.wiring import settings_for_fakes

PROFILES: dict[str, Any] = {
    "default": "general",
    "assistants": {"general": {"model": "gpt-test", "instructions": "Be brief.", "max_output_tokens": 500}},
}
REPLY_TEXT = ("The bridge streams this answer into the Slack thread as the backend produces it. " * 5)[:400]
REPLY_CHUNKS = 8
POLL = 0.001  # seconds between looks at what the fake Slack received
TEXT_METHODS = {"chat.startStream", "chat.postMessage"}  # the first call that can show text
END_METHODS = {"chat.stopStream", "chat.postMessage", "chat.update"}  # an answer may be done after these


@dataclass
class Row:
    metric: str
    unit: str
    top: float  # max of a distribution, or the value of a single figure
    p50: float | None = None
    p95: float | None = None


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def dist(metric: str, seconds: list[float]) -> Row:
    ms = [s * 1000 for s in seconds]
    return Row(metric, "ms", max(ms), percentile(ms, 50), percentile(ms, 95))


def has_text(call: Call) -> bool:
    return any(call.args.get(name) for name in ("markdown_text", "text", "chunks"))


class Backend:
    """The fake backend under test: Responses (FakeOpenAI) or Assistants v2 (FakeAssistants)."""

    def __init__(self, responses: FakeOpenAI, assistants: assistants_server.FakeAssistants | None) -> None:
        self.responses, self.assistants = responses, assistants

    @property
    def calls(self) -> list[tuple[str, str]]:
        return self.assistants.calls if self.assistants else self.responses.calls

    def enqueue_replies(self, count: int) -> None:
        if self.assistants:
            self.assistants.enqueue(
                *[assistants_server.Say(REPLY_TEXT, chunks=REPLY_CHUNKS) for _ in range(count)]
            )
        else:
            self.responses.enqueue(*[Reply(REPLY_TEXT, chunks=REPLY_CHUNKS) for _ in range(count)])


class Bench:
    def __init__(
        self, http: aiohttp.ClientSession, url: str, openai: Backend, slack: FakeSlack, timeout: float
    ) -> None:
        self.http, self.url, self.openai, self.slack, self.timeout = http, url, openai, slack, timeout

    def answered(self, channel: str, thread_ts: str) -> bool:
        messages = self.slack.messages(channel, thread_ts)
        return bool(messages) and messages[-1].stopped

    async def post(self, event: dict[str, Any]) -> tuple[float, float]:
        """POST one signed event; return (perf_counter when sent, perf_counter when answered)."""
        body = slack_events.encode(slack_events.event_callback(event))
        headers = slack_events.signed_headers(body)
        sent = time.perf_counter()
        async with self.http.post(f"{self.url}/slack/events", data=body, headers=headers) as response:
            await response.read()
            acked = time.perf_counter()
        if response.status != 200:
            raise RuntimeError(f"/slack/events answered HTTP {response.status}")
        return sent, acked

    async def first_text_at(self, channel: str, thread_ts: str, index: int) -> float:
        """perf_counter when the first text-carrying call for the thread is seen (1 ms polls)."""
        deadline = time.perf_counter() + self.timeout
        while time.perf_counter() < deadline:
            calls = self.slack.calls
            for call in calls[index:]:
                if (
                    call.method in TEXT_METHODS
                    and call.args.get("channel") == channel
                    and call.args.get("thread_ts") == thread_ts
                    and has_text(call)
                ):
                    return time.perf_counter()
            index = len(calls)
            await asyncio.sleep(POLL)
        raise TimeoutError(f"no visible text in {channel}/{thread_ts} within {self.timeout}s")

    async def answered_at(self, channel: str, thread_ts: str) -> float:
        """perf_counter when the thread's last bot message is seen stopped (1 ms polls)."""
        deadline = time.perf_counter() + self.timeout
        while not self.answered(channel, thread_ts):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no finished answer in {channel}/{thread_ts} within {self.timeout}s")
            await asyncio.sleep(POLL)
        return time.perf_counter()

    async def sequential(self, turns: int, prefix: str) -> tuple[list[float], list[float], list[float]]:
        """(a) and (b): one mention at a time; each answer finishes before the next is sent."""
        acks, firsts, completes = [], [], []
        for number in range(turns):
            self.openai.enqueue_replies(1)
            event = slack_events.mention(f"question {number}", channel=f"C{prefix}")
            index = len(self.slack.calls)
            posting = asyncio.create_task(self.post(event))
            first = await self.first_text_at(event["channel"], event["ts"], index)
            sent, acked = await posting
            acks.append(acked - sent)
            firsts.append(first - sent)
            completes.append(await self.answered_at(event["channel"], event["ts"]) - sent)
        return acks, firsts, completes

    async def concurrent(self, threads: int) -> tuple[float, list[float]]:
        """(c): `threads` mentions in as many channels at once; (elapsed, per-thread completion)."""
        self.openai.enqueue_replies(threads)
        events = [slack_events.mention(f"burst {n}", channel=f"CBURST{n}") for n in range(threads)]
        pending = {e["channel"]: e["ts"] for e in events}
        done: dict[str, float] = {}
        candidates: set[str] = set()
        index = len(self.slack.calls)
        start = time.perf_counter()
        posting = asyncio.gather(*(self.post(e) for e in events))
        while pending:
            calls = self.slack.calls
            candidates.update(str(c.args.get("channel")) for c in calls[index:] if c.method in END_METHODS)
            index = len(calls)
            for channel in [c for c in candidates if c in pending]:
                if self.answered(channel, pending[channel]):
                    done[channel] = time.perf_counter() - start
                    del pending[channel]
            if time.perf_counter() - start > self.timeout:
                posting.cancel()
                raise TimeoutError(f"{len(pending)} of {threads} answers unfinished after {self.timeout}s")
            await asyncio.sleep(POLL)
        await posting
        wrong = [
            c
            for c, ts in ((e["channel"], e["ts"]) for e in events)
            if self.slack.messages(c, ts)[-1].text != REPLY_TEXT
        ]
        if wrong:
            raise RuntimeError(f"{len(wrong)} answers differ from the backend's text, e.g. in {wrong[0]}")
        return max(done.values()), list(done.values())

    async def settle(self) -> None:
        """Wait (at most 3 s) until the fake Slack has had no new call for 100 ms: trailing statuses."""
        for _ in range(30):
            count = len(self.slack.calls)
            await asyncio.sleep(0.1)
            if len(self.slack.calls) == count:
                return


async def run(args: argparse.Namespace) -> list[Row]:
    timeout = 30.0 + 4 * args.first_token_delay + 20 * args.slack_delay
    fake_slack = FakeSlack("xoxb-test", team_id=slack_events.TEAM, bot_user_id=slack_events.BOT_USER)
    assistants = assistants_server.FakeAssistants(first_token_delay=args.first_token_delay)
    async with (
        FakeOpenAI(first_token_delay=args.first_token_delay) as openai,
        fake_slack as slack,
        assistants,
    ):
        slack.delay = args.slack_delay
        backend_fake = Backend(openai, assistants if args.backend == "assistants" else None)
        profiles = PROFILES
        if args.backend == "assistants":
            general = {"backend": "assistants", "assistant_id": "asst_test", "base_url": assistants.base_url}
            profiles = {"default": "general", "assistants": {"general": general}}
        with tempfile.TemporaryDirectory(prefix="slack-bench-") as tmp:
            settings = settings_for_fakes(
                openai,
                slack,
                Path(tmp) / "store.sqlite",
                max_concurrent_turns=args.threads,  # so (c) measures the bridge, not its limit
                log_level="WARNING",
            )
            service = Service.create(settings, parse_profiles(profiles, source="bench"))
            stop, ready = asyncio.Event(), asyncio.Event()
            server = asyncio.create_task(service.run(stop, ready))
            try:
                await asyncio.wait_for(ready.wait(), 10)
                connector = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(connector=connector) as http:
                    bench = Bench(
                        http, f"http://127.0.0.1:{service.bound_port}", backend_fake, slack, timeout
                    )
                    await bench.sequential(1, "WARMUP")  # first connections and lazy setup: not counted
                    acks, firsts, alone = await bench.sequential(args.turns, "SEQ")
                    await bench.settle()
                    backend_start, slack_start = len(backend_fake.calls), len(slack.calls)
                    elapsed, completions = await bench.concurrent(args.threads)
                    await bench.settle()
            finally:
                stop.set()
                await asyncio.wait_for(server, 15)

    delay = args.first_token_delay
    rows = [
        dist("(a) event -> HTTP ack (sequential)", acks),
        dist(f"(b) event -> first visible text - {delay:g}s first-token delay", [f - delay for f in firsts]),
        dist("(c) reference: event -> answer stopped, one thread alone", alone),
        Row(f"(c) answers per second, {args.threads} threads at once", "answers/s", args.threads / elapsed),
        dist("(c) per-thread completion from burst start", completions),
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
    web_api = Counter(c.method for c in slack.calls[slack_start:] if c.method != "auth.test")
    for name, count in sorted(web_api.items()):
        rows.append(Row(f"(d) Slack {name}", "calls/turn", count / turns))
    rows.append(Row("(d) Slack Web API calls but auth.test", "calls/turn", sum(web_api.values()) / turns))
    return rows


def table(rows: list[Row]) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [("metric", "p50", "p95", "max/value", "unit")]
    lines += [(r.metric, cell(r.p50), cell(r.p95), cell(r.top), r.unit) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = []
    for number, line in enumerate(lines):
        numbers = [c.rjust(w) for c, w in zip(line[1:4], widths[1:4], strict=True)]
        out.append("  ".join([line[0].ljust(widths[0]), *numbers, line[4]]))
        if number == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["responses", "assistants"], default="responses")
    parser.add_argument("--first-token-delay", type=float, default=0.2, help="fake backend delay, seconds")
    parser.add_argument("--threads", type=int, default=100, help="threads answered at once in (c)")
    parser.add_argument("--turns", type=int, default=20, help="sequential samples for (a) and (b)")
    parser.add_argument("--slack-delay", type=float, default=0.0, help="fake Slack delay per Web API call, s")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.turns < 1:
        parser.error("--threads and --turns must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    rows = asyncio.run(run(args))
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
    print(
        f"parameters: backend={args.backend} first_token_delay={args.first_token_delay:g}s "
        f"threads={args.threads} turns={args.turns} slack_delay={args.slack_delay:g}s "
        f"reply={len(REPLY_TEXT)} chars in {REPLY_CHUNKS} chunks"
    )
    print(
        f"bridge: max_concurrent_turns={args.threads} (= threads, so (c) measures the bridge, not its "
        f"limit); 1 warm-up turn not counted; arrivals seen by polling every {POLL * 1000:g} ms"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
