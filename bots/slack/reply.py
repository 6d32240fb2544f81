"""Rendering a turn's events into a Slack thread: native streaming, with a posting fallback."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.text import MESSAGE_LIMIT, SOFT_MARGIN, neutralise, safe_prefix
from core import wording
from core.events import Citation, Done, Event, Failure, FileOut, ImageOut, Notice, Progress, TextDelta
from core.text import link_title, safe_url, split_point

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlackThread:
    """Where the answer goes, and who it is for (chat.startStream needs both in channels)."""

    channel: str
    thread_ts: str
    team_id: str | None
    user_id: str | None


@dataclass
class _Message:
    ts: str | None = None
    text: str = ""  # everything sent so far in this Slack message


@dataclass
class SlackReply:
    """A :class:`core.messages.Reply` for one Slack thread.

    Text is streamed with chat.startStream/appendStream/stopStream, flushed at most every
    ``stream_interval`` seconds (the first text at once). If Slack refuses streaming, the answer
    continues with chat.postMessage plus chat.update at most every ``update_interval`` seconds.
    A message is closed and a new one started before Slack's 12,000-character limit, at a
    paragraph or line break, so nothing is cut. Model text is neutralised (no pings) before it is
    sent; citations become numbered sources at the end; failures a short note.
    """

    client: AsyncWebClient
    thread: SlackThread
    streaming: bool = True
    stream_interval: float = 0.5
    update_interval: float = 3.0
    _raw_tail: str = ""
    _pending: str = ""
    _message: _Message = field(default_factory=_Message)
    _sent_any: bool = False
    _after_notice: bool = False
    _last_send: float = 0.0
    _citations: list[Citation] = field(default_factory=list)
    _notes: list[str] = field(default_factory=list)
    _status_works: bool = True
    _status_task: asyncio.Task[None] | None = None
    _timer: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def emit(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            if self._after_notice:  # a notice (e.g. about a file) is its own paragraph
                self._raw_tail += "\n\n"
                self._after_notice = False
            self._raw_tail += event.text
            cut = safe_prefix(self._raw_tail)
            self._pending += neutralise(self._raw_tail[:cut])
            self._raw_tail = self._raw_tail[cut:]
            await self._flush_when_due()
        elif isinstance(event, Progress):
            if not event.done:
                await self._set_status(event.label)
        elif isinstance(event, Citation):
            if event not in self._citations:
                self._citations.append(event)
        elif isinstance(event, Failure):
            self._notes.append(event.user_message)
        elif isinstance(event, Notice):
            separator = "\n\n" if self._pending or self._raw_tail or self._sent_any else ""
            self._pending += separator + neutralise(self._raw_tail + event.text)
            self._raw_tail = ""
            self._after_notice = True
        elif isinstance(event, ImageOut | FileOut):
            await self._upload(event)
        elif isinstance(event, Done):
            await self._finish()

    async def _flush_when_due(self) -> None:
        interval = self.stream_interval if self.streaming else self.update_interval
        wait = self._last_send + interval - time.monotonic()
        if self._message.ts is None or wait <= 0:
            await self._flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later(wait))

    async def _flush_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._timer = None
        await self._flush()

    async def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending += neutralise(self._raw_tail)
        self._raw_tail = ""
        self._pending += self._footer()
        if not self._sent_any and not self._pending.strip():
            self._pending = wording.EMPTY_ANSWER
        await self._flush(final=True)
        await self._set_status("")
        if self._status_task is not None:
            await self._status_task

    def _footer(self) -> str:
        parts: list[str] = []
        if self._citations:
            lines = [f"*{wording.SOURCES}*"]
            for number, citation in enumerate(self._citations, start=1):
                title, url = neutralise(link_title(citation.title)), safe_url(citation.url)
                lines.append(f"[{number}] [{title}]({url})" if url else f"[{number}] {title}")
            parts.append("\n".join(lines))
        parts.extend(f"⚠️ {neutralise(note)}" for note in self._notes)  # notes may name the model's files
        if not parts:
            return ""
        return ("\n\n" if self._sent_any or self._pending else "") + "\n\n".join(parts)

    async def _flush(self, final: bool = False) -> None:
        async with self._lock:
            while self._pending:
                room = MESSAGE_LIMIT - len(self._message.text)
                if len(self._pending) <= room - (0 if final else SOFT_MARGIN):
                    part, self._pending = self._pending, ""
                    await self._send(part)
                    break
                # Near the limit: end this message at a break and go on in a new one.
                cut = split_point(self._pending, min(room, len(self._pending)))
                if cut == 0:
                    if len(self._pending) < room and not final:
                        break  # wait for a break in the text still to come
                    cut = 0 if self._message.text else room
                if cut:
                    part, self._pending = self._pending[:cut], self._pending[cut:]
                    await self._send(part)
                await self._close_message()
            if final:
                await self._close_message()
            self._last_send = time.monotonic()

    async def _send(self, part: str) -> None:
        message = self._message
        if self.streaming:
            try:
                if message.ts is None:
                    response = await self.client.chat_startStream(
                        channel=self.thread.channel,
                        thread_ts=self.thread.thread_ts,
                        recipient_team_id=self.thread.team_id,
                        recipient_user_id=self.thread.user_id,
                        markdown_text=part,
                    )
                    message.ts = response["ts"]
                else:
                    await self.client.chat_appendStream(
                        channel=self.thread.channel, ts=message.ts, markdown_text=part
                    )
                message.text += part
                self._sent_any = True
                return
            except SlackApiError as exc:
                log.warning(
                    "slack streaming refused channel=%s error=%s; falling back to post and update",
                    self.thread.channel,
                    exc.response.get("error"),
                )
                self.streaming = False
        text = message.text + part
        if message.ts is None:
            response = await self.client.chat_postMessage(
                channel=self.thread.channel, thread_ts=self.thread.thread_ts, markdown_text=text
            )
            message.ts = response["ts"]
        else:
            await self.client.chat_update(channel=self.thread.channel, ts=message.ts, markdown_text=text)
        message.text = text
        self._sent_any = True

    async def _close_message(self) -> None:
        if self.streaming and self._message.ts is not None:
            try:
                await self.client.chat_stopStream(channel=self.thread.channel, ts=self._message.ts)
            except SlackApiError as exc:
                log.warning("slack stopStream failed error=%s", exc.response.get("error"))
        self._message = _Message()

    async def _set_status(self, status: str) -> None:
        """Status updates run beside the turn (a Slack round trip must not delay the answer),
        one after another so they land in order."""
        previous = self._status_task
        self._status_task = asyncio.create_task(self._send_status(status, previous))

    async def _send_status(self, status: str, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await previous
        if not self._status_works:
            return
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.thread.channel, thread_ts=self.thread.thread_ts, status=status
            )
        except SlackApiError as exc:
            self._status_works = False
            log.info("slack status unavailable here error=%s", exc.response.get("error"))
        except Exception:
            log.exception("slack status update failed")

    async def _upload(self, out: ImageOut | FileOut) -> None:
        await self._set_status(wording.uploading_file(out.filename))
        try:
            await self.client.files_upload_v2(
                channel=self.thread.channel,
                thread_ts=self.thread.thread_ts,
                content=out.data,
                filename=out.filename,
            )
        except (SlackApiError, SlackRequestError, aiohttp.ClientError, TimeoutError) as exc:
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning("slack upload failed file=%s error=%s", out.filename, error)
            self._notes.append(wording.upload_failed(out.filename))
