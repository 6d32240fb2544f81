"""The core service: from an inbound message to a rendered, streamed answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from enum import Enum

from core import wording
from core.admin import ChannelAdmin
from core.backend import Backend, TurnInput
from core.channels import ChannelBook, SqliteChannelBook
from core.commands import Command, CommandRequest, parse_command
from core.conversation import ConversationKey
from core.deliveries import DeliveryLog, RecentDeliveries
from core.errors import BackendFailed, ConversationGone
from core.events import Done, Event, Failure, FailureKind, Notice, Progress, TextDelta, Usage
from core.files import FileLimits, FilePart, FileRefused, FileSource, FileTooLarge, kind_of, route_for
from core.messages import InboundMessage, Reply
from core.profiles import AssistantProfile, ProfileSet
from core.store import ConversationStore, ThreadState
from core.turns import Admission, Job, TurnRunner

log = logging.getLogger(__name__)


class Outcome(Enum):
    """What :meth:`Bridge.accept` did with a message."""

    DUPLICATE = "duplicate"  # seen before: ignored, no answer
    ANSWERING = "answering"  # a turn runs or is queued for it
    REFUSED = "refused"  # not answered: the user was told why (once per thread where it repeats)
    COMMAND = "command"  # a command for the bot itself (help, reset, stop) was carried out


@dataclass
class _TurnStats:
    queued_at: float
    started_at: float = 0.0
    first_text_at: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    failure: Failure | None = None

    def record(self, event: Event) -> None:
        if isinstance(event, TextDelta) and not self.first_text_at:
            self.first_text_at = time.monotonic()
        elif isinstance(event, Usage):
            self.input_tokens += event.input_tokens
            self.output_tokens += event.output_tokens
        elif isinstance(event, Failure):
            self.failure = event


class Bridge:
    """Maps chat threads to backend conversations and runs their turns one at a time.

    ``accept`` returns at once: the turn runs in the background through the :class:`TurnRunner`,
    and its events go to the message's :class:`core.messages.Reply`, always ending with ``Done``.
    """

    def __init__(
        self,
        *,
        profiles: ProfileSet,
        backends: Mapping[str, Backend],
        store: ConversationStore,
        deliveries: DeliveryLog,
        runner: TurnRunner,
        turn_timeout: float = 600.0,
        file_limits: FileLimits | None = None,
        book: ChannelBook | None = None,
    ) -> None:
        self.profiles = profiles
        self.admin = ChannelAdmin(profiles, book or SqliteChannelBook(":memory:"))
        self._explained = RecentDeliveries(ttl=24 * 3600)
        self._backends = backends
        self._store = store
        self._deliveries = deliveries
        self._runner = runner
        self._turn_timeout = turn_timeout
        self._file_limits = file_limits or FileLimits()
        self._stop_requested: set[ConversationKey] = set()
        self._running: set[ConversationKey] = set()  # threads whose turn is running now

    async def accept(self, message: InboundMessage, reply: Reply) -> Outcome:
        if not await self._deliveries.first_sighting(message.delivery_ids):
            log.info("duplicate delivery key=%s ids=%s", message.key, ",".join(message.delivery_ids))
            return Outcome.DUPLICATE
        # Words sent with a file are a question about the file, never a command.
        request = (
            None
            if message.files and not message.explicit_command
            else parse_command(message.text, explicit=message.explicit_command)
        )
        if request is not None:
            return await self._command(message, request, reply)
        refusal = await self.admin.refusal(message)
        if refusal is not None:
            log.info("not answering key=%s", message.key)
            # One explanation per thread: never silence, never a flood.
            # (per reason: after an admin's allow and deny, the thread hears the new reason)
            if await self._explained.first_sighting((f"explained:{message.key}:{refusal}",)):
                await self._tell(reply, refusal)
            return Outcome.REFUSED
        if not message.text and not message.files:  # a bare mention: a greeting, no backend call
            await self._tell(reply, wording.HELLO)
            return Outcome.COMMAND
        queued_at = time.monotonic()
        return await self._submit(message.key, reply, lambda: self._turn(message, reply, queued_at))

    async def _command(self, message: InboundMessage, request: CommandRequest, reply: Reply) -> Outcome:
        if request.command is Command.STOP:
            if not self.stop(message.key):
                await self._tell(reply, wording.NOTHING_TO_STOP)
        elif request.command is Command.HELP:
            await self._tell(
                reply, (wording.MALFORMED_COMMAND + "\n\n" if request.malformed else "") + wording.HELP
            )
        elif request.command is Command.RESET:
            # In the thread's lane, so that messages sent before it are answered first.
            outcome = await self._submit(message.key, reply, lambda: self._reset(message.key, reply))
            return Outcome.COMMAND if outcome is Outcome.ANSWERING else outcome
        else:
            await self._tell(reply, await self.admin.answer(message, request))
        return Outcome.COMMAND

    async def _submit(self, key: ConversationKey, reply: Reply, job: Job) -> Outcome:
        admission = self._runner.submit(
            key, job, on_abandon=lambda: self._refuse(reply, FailureKind.SHUTTING_DOWN)
        )
        if admission in (Admission.STARTED, Admission.QUEUED):
            return Outcome.ANSWERING
        kind = FailureKind.QUEUE_FULL if admission is Admission.QUEUE_FULL else FailureKind.SHUTTING_DOWN
        log.warning("message refused key=%s reason=%s", key, kind.value)
        await self._refuse(reply, kind)
        return Outcome.REFUSED

    async def _reset(self, key: ConversationKey, reply: Reply) -> None:
        state = await self._store.get(key)
        if state is not None:
            await self._store.put(key, state.reset())
        log.info("conversation reset key=%s", key)
        await self._tell(reply, wording.RESET_DONE)

    async def _tell(self, reply: Reply, text: str) -> None:
        await _emit(reply, Notice(text))
        await _emit(reply, Done())

    async def _refuse(self, reply: Reply, kind: FailureKind) -> None:
        await _emit(reply, Failure(kind))
        await _emit(reply, Done())

    def stop(self, key: ConversationKey) -> bool:
        """Stop the turn running in this thread (the user said stop). The backend cancels its run,
        the user sees "Stopped.", and the thread takes new messages at once. False if idle."""
        if key not in self._running:  # idle, or between turns (a reset is not stopped)
            return False
        self._stop_requested.add(key)
        if not self._runner.cancel_running(key):
            self._stop_requested.discard(key)
            return False
        return True

    async def answers_thread(self, key: ConversationKey) -> bool:
        """True when the bot is already part of this thread (so follow-ups need no mention)."""
        return self._runner.is_busy(key) or await self._store.get(key) is not None

    async def _turn(self, message: InboundMessage, reply: Reply, queued_at: float) -> None:
        stats = _TurnStats(queued_at=queued_at, started_at=time.monotonic())
        profile = self.profiles.default
        self._running.add(message.key)  # from here on, "stop" ends this turn and nothing else
        try:
            profile = await self.admin.profile_for(message)
            spent = await self.admin.budget_refusal(message)
            if spent is not None:
                log.info("budget spent key=%s", message.key)
                await _emit(reply, Notice(spent))
                return
            await _emit(reply, Progress(wording.THINKING))
            async with asyncio.timeout(self._turn_timeout):
                async for event in self._events(message, profile):
                    stats.record(event)
                    await _emit(reply, event)
        except asyncio.CancelledError:
            stopped = message.key in self._stop_requested
            self._stop_requested.discard(message.key)
            stats.failure = Failure(
                FailureKind.STOPPED if stopped else FailureKind.SHUTTING_DOWN,
                "stopped by the user" if stopped else "cancelled at shutdown",
            )
            await _emit(reply, stats.failure)
            if not stopped:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the lane goes on with the next message
        except Exception as exc:
            stats.failure = _failure_for(exc, message.key, self._turn_timeout)
            await _emit(reply, stats.failure)
        finally:
            self._running.discard(message.key)
            tokens = stats.input_tokens + stats.output_tokens
            if tokens:  # counted before the answer is done
                try:
                    await self.admin.record(message, tokens)
                except Exception:
                    log.exception("usage not recorded key=%s tokens=%d", message.key, tokens)
            await _emit(reply, Done())
            _log_turn(message.key, profile, stats)

    async def _events(self, message: InboundMessage, profile: AssistantProfile) -> AsyncIterator[Event]:
        parts: list[FilePart] = []
        async for item in self._read_files(message.files, profile):
            if isinstance(item, FilePart):
                parts.append(item)
            else:
                yield item
        text = message.text or (wording.FILES_ONLY if parts else "")
        if not text:
            return  # only files, none of them usable: the user has been told why
        backend = self._backends[profile.backend]
        state = await self._store.get(message.key)
        if state is None or state.backend != backend.name or not state.conversation_id:
            state = await self._open(message.key, profile, backend)
        turn = TurnInput(
            text=text, user_id=message.user_id, files=tuple(parts), resources=dict(state.resources)
        )
        finished = False
        try:
            try:
                async for event in backend.run_turn(state.conversation_id, turn, profile):
                    yield event
            except ConversationGone:
                log.warning(
                    "conversation gone key=%s id=%s; starting a new one", message.key, state.conversation_id
                )
                state = await self._open(message.key, profile, backend)
                turn = replace(turn, resources={})  # the files it uploaded are kept (``uploaded``)
                async for event in backend.run_turn(state.conversation_id, turn, profile):
                    yield event
            finished = True
        finally:
            if finished:
                await self._store.put(message.key, state.after_turn(resources=turn.resources))
            elif turn.resources != state.resources:
                # Stopped, timed out or failed after the backend made something for the thread
                # (e.g. its vector store): keep it, or the next turn would not find the file.
                await self._store.put(message.key, replace(state, resources=dict(turn.resources)))

    async def _read_files(
        self, sources: tuple[FileSource, ...], profile: AssistantProfile
    ) -> AsyncIterator[Event | FilePart]:
        """Each usable file read and routed; a Notice naming each one that is not, and why."""
        limits, total = self._file_limits, 0
        for index, source in enumerate(sources):
            kind = kind_of(source.name, source.mime_type)
            route = route_for(kind, source.name, profile.file_tools) if kind else None
            room = min(limits.max_file_bytes, limits.max_message_bytes - total)
            reason = None
            if index >= limits.max_files:
                reason = wording.TOO_MANY_FILES.format(limit=limits.max_files)
            elif kind is None:
                reason = wording.FILE_UNSUPPORTED
            elif route is None:
                reason = wording.FILE_NO_TOOL[kind.value]
            elif source.size is not None and source.size > limits.max_file_bytes:
                reason = wording.file_too_large(limits.max_file_bytes)
            elif source.size is not None and source.size > room:
                reason = wording.message_too_large(limits.max_message_bytes)
            if reason is None and route is not None:
                yield Progress(wording.reading_file(source.name))
                try:
                    data = await source.read(room)
                except FileTooLarge:
                    too_big = room == limits.max_file_bytes
                    reason = (wording.file_too_large if too_big else wording.message_too_large)(
                        limits.max_file_bytes if too_big else limits.max_message_bytes
                    )
                except FileRefused as exc:
                    reason = exc.reason
                else:
                    total += len(data)
                    yield FilePart(source.name, source.mime_type, data, route)
                    continue
            log.info("file refused: %s", reason)
            yield Notice(wording.file_refused(source.name, reason or wording.FILE_UNSUPPORTED))

    async def _open(self, key: ConversationKey, profile: AssistantProfile, backend: Backend) -> ThreadState:
        conversation_id = await backend.open_conversation(profile)
        state = ThreadState(conversation_id, backend.name, profile.name, created_at=time.time())
        await self._store.put(key, state)
        log.info("conversation opened key=%s backend=%s id=%s", key, backend.name, conversation_id)
        return state

    async def drain(self, grace: float) -> int:
        """Stop taking messages; let turns finish within ``grace`` seconds."""
        return await self._runner.drain(grace)

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        await self._store.close()
        await self.admin.book.close()


async def _emit(reply: Reply, event: Event) -> None:
    try:
        await reply.emit(event)
    except Exception:
        log.exception("reply failed to render %s", type(event).__name__)


def _failure_for(exc: Exception, key: ConversationKey, turn_timeout: float) -> Failure:
    if isinstance(exc, BackendFailed):
        return exc.failure
    if isinstance(exc, TimeoutError):
        return Failure(FailureKind.TIMEOUT, f"turn exceeded {turn_timeout}s")
    log.exception("turn crashed key=%s", key)
    return Failure(FailureKind.FAILED, f"{type(exc).__name__}: {exc}")


def _log_turn(key: ConversationKey, profile: AssistantProfile, stats: _TurnStats) -> None:
    if stats.failure is not None:
        log.warning("turn failure key=%s kind=%s %s", key, stats.failure.kind.value, stats.failure.detail)
    now = time.monotonic()
    first_text = (stats.first_text_at - stats.started_at) * 1000 if stats.first_text_at else -1
    log.info(
        "turn key=%s profile=%s outcome=%s wait_ms=%.0f first_text_ms=%.0f total_ms=%.0f "
        "input_tokens=%d output_tokens=%d",
        key,
        profile.name,
        stats.failure.kind.value if stats.failure else "ok",
        (stats.started_at - stats.queued_at) * 1000,
        first_text,
        (now - stats.started_at) * 1000,
        stats.input_tokens,
        stats.output_tokens,
    )
