"""Turn runner, delivery memory and store: ordering, bounded memory, concurrency, shutdown."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from core.conversation import ConversationKey
from core.deliveries import RecentDeliveries
from core.store import SqliteDictStore, ThreadState
from core.turns import Admission, TurnRunner


def key(n: int) -> ConversationKey:
    return ConversationKey("slack", "T1", "C1", f"{n}.0")


async def test_turns_in_one_conversation_run_one_at_a_time_in_order() -> None:
    runner = TurnRunner()
    log: list[str] = []
    running = 0

    def job(name: str):
        async def run() -> None:
            nonlocal running
            running += 1
            assert running == 1, "two turns overlapped in one conversation"
            log.append(f"start {name}")
            await asyncio.sleep(0.01)
            log.append(f"end {name}")
            running -= 1

        return run

    admissions = [runner.submit(key(1), job(n)) for n in "abc"]
    assert admissions == [Admission.STARTED, Admission.QUEUED, Admission.QUEUED]
    await runner.drain(5)
    assert log == ["start a", "end a", "start b", "end b", "start c", "end c"]


async def test_conversations_run_in_parallel_and_lanes_are_released_when_idle() -> None:
    runner = TurnRunner(max_concurrent=1000)
    gate = asyncio.Event()
    started = 0

    async def job() -> None:
        nonlocal started
        started += 1
        await gate.wait()

    for n in range(500):
        runner.submit(key(n), job)
    await asyncio.sleep(0.05)
    assert started == 500 and runner.busy_conversations == 500
    gate.set()
    await asyncio.sleep(0.05)
    assert runner.busy_conversations == 0  # memory follows busy threads, not threads ever seen


async def test_a_failing_job_does_not_stop_the_lane() -> None:
    runner = TurnRunner()
    done: list[int] = []

    async def boom() -> None:
        raise RuntimeError("bug")

    async def ok() -> None:
        done.append(1)

    runner.submit(key(1), boom)
    runner.submit(key(1), ok)
    await runner.drain(5)
    assert done == [1]


async def test_queue_is_bounded_per_conversation() -> None:
    runner = TurnRunner(max_pending=2)
    gate = asyncio.Event()
    assert runner.submit(key(1), gate.wait) is Admission.STARTED
    assert runner.submit(key(1), gate.wait) is Admission.QUEUED
    assert runner.submit(key(1), gate.wait) is Admission.QUEUE_FULL
    assert runner.submit(key(2), gate.wait) is Admission.STARTED
    gate.set()
    await runner.drain(5)


async def test_drain_finishes_running_turns_then_refuses_new_ones() -> None:
    runner = TurnRunner()
    finished: list[str] = []

    async def short() -> None:
        await asyncio.sleep(0.05)
        finished.append("short")

    async def endless() -> None:
        await asyncio.sleep(60)

    runner.submit(key(1), short)
    runner.submit(key(2), endless)
    cancelled = await runner.drain(0.3)
    assert finished == ["short"] and cancelled == 1
    assert runner.submit(key(3), short) is Admission.CLOSED


async def test_global_concurrency_limit() -> None:
    runner = TurnRunner(max_concurrent=3)
    running = peak = 0

    async def job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    for n in range(20):
        runner.submit(key(n), job)
    await runner.drain(5)
    assert peak == 3


async def test_delivery_memory_dedupes_and_forgets_after_ttl() -> None:
    now = [0.0]
    seen = RecentDeliveries(ttl=10, clock=lambda: now[0])
    assert await seen.first_sighting(["event:1", "msg:C1:1"])
    assert not await seen.first_sighting(["event:2", "msg:C1:1"])  # same message, other event id
    assert not await seen.first_sighting(["event:1"])
    now[0] = 11
    assert await seen.first_sighting(["event:3"])
    assert len(seen) == 1  # the old ids were forgotten


async def test_delivery_memory_is_bounded_in_size() -> None:
    seen = RecentDeliveries(ttl=3600, max_entries=100)
    for n in range(1000):
        await seen.first_sighting([f"e{n}"])
    assert len(seen) == 100


async def test_store_survives_reopen_and_concurrent_writes(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state.sqlite"
    store = SqliteDictStore(path)
    states = {key(n): ThreadState(f"conv_{n}", "responses", "general", created_at=n) for n in range(200)}
    await asyncio.gather(*(store.put(k, s) for k, s in states.items()))
    await store.put(key(1), states[key(1)].after_turn(now=5.0))
    await store.close()
    gc.collect()

    reopened = SqliteDictStore(path)
    assert await reopened.get(key(7)) == states[key(7)]
    updated = await reopened.get(key(1))
    assert updated is not None and updated.turns == 1 and updated.last_turn_at == 5.0
    assert await reopened.get(key(999)) is None
    await reopened.delete(key(7))
    assert await reopened.get(key(7)) is None
    await reopened.close()


def test_conversation_key_round_trips() -> None:
    k = ConversationKey("slack", "T1", "C1", "1700000000.000100")
    assert str(k) == "slack:T1:C1:1700000000.000100"
    assert ConversationKey.parse(str(k)) == k
    teams = ConversationKey("teams", "tenant-1", "19:abc@thread.tacv2", "1700000000000")
    assert ConversationKey.parse(str(teams)) == teams
    chat = ConversationKey("teams", "tenant-1", "a:1xyz", "")
    assert ConversationKey.parse(str(chat)) == chat


async def test_hung_plain_tools_do_not_stall_the_stores() -> None:
    import threading

    from core.tools import FunctionTool

    release = threading.Event()
    hung = FunctionTool("hang", "", {"type": "object"}, lambda: release.wait(10), timeout=0.05)
    try:
        outputs = await asyncio.gather(*(hung.invoke("{}") for _ in range(8)))
        assert all("did not finish" in output for output in outputs)
        # the eight threads still hang; the default pool (sqlite stores) is free
        await asyncio.wait_for(asyncio.to_thread(lambda: None), 0.5)
    finally:
        release.set()
