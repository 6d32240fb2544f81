"""Rendering a turn's events into a Teams conversation, from the background, by proactive message.

Personal chats stream with the Teams streaming protocol: an informative update at once ("Thinking…",
tool progress), then the text so far at most once a second, then the final message. The stream is
closed by the bot before Teams' two-minute limit (the rest of the answer follows as a new message),
and if Teams refuses streaming the answer falls back to a typing indicator and plain messages.
Group chats get a typing indicator renewed every few seconds and one final message; channels (where
Teams ignores typing) just the final message. Images follow the text as their own activities.
Files follow as file consent cards in personal chats (see :mod:`bots.teams.uploads`); elsewhere
the answer says to ask for them in a personal chat.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from microsoft_agents.activity import Activity, Attachment, StreamInfo

from bots.teams.images import UnusableImage, fit_for_teams
from bots.teams.outbound import ConnectorRefused, Outbound
from bots.teams.text import neutralise, safe_prefix, size, sources, split_message, to_teams_markdown
from bots.teams.uploads import consent_card
from core import wording
from core.events import Citation, Done, Event, Failure, FileOut, ImageOut, Notice, Progress, TextDelta

log = logging.getLogger(__name__)

STREAM_INTERVAL = 1.0  # Teams accepts at most one streaming request per second
STREAM_LIMIT = 120.0  # Teams ends a stream after two minutes
STREAM_MARGIN = 15.0  # the bot closes its stream this long before the limit
KEEPALIVE = 15.0  # re-send the stream's text after this long without an update (Teams wants < 45 s)
TYPING_INTERVAL = 3.0  # Teams shows typing for about three seconds
STREAM_TEXT_LIMIT = 60_000  # bytes of text a streaming update carries at most


@dataclass
class TeamsReply:
    """A :class:`core.messages.Reply` for one Teams conversation.

    ``streaming`` is for personal chats only (Teams refuses it elsewhere); ``typing`` for personal
    and group chats. ``on_user_stop`` is called when the user presses Stop on the streamed answer.
    ``offer_file`` (personal chats only) keeps a file the assistant made for its consent card and
    returns the card's upload id, or None if the file cannot be offered.
    """

    outbound: Outbound
    streaming: bool
    typing: bool
    on_user_stop: Callable[[], object] | None = None
    offer_file: Callable[[FileOut], str | None] | None = None
    stream_interval: float = STREAM_INTERVAL
    stream_limit: float = STREAM_LIMIT - STREAM_MARGIN
    keepalive: float = KEEPALIVE
    typing_interval: float = TYPING_INTERVAL
    _raw: str = field(init=False, default="")  # neutralised model text (and notices) so far
    _raw_tail: str = field(init=False, default="")  # text held back until it cannot become a mention tag
    _after_notice: bool = field(init=False, default=False)
    _shown: int = field(init=False, default=0)  # how much of _raw a finished message already shows
    _label: str = field(init=False, default="")
    _stream_id: str | None = field(init=False, default=None)
    _sequence: int = field(init=False, default=0)
    _stream_started: float = field(init=False, default=0.0)
    _last_update: float = field(init=False, default=0.0)
    _streamed: str = field(init=False, default="")  # text of the last streaming update
    _citations: list[Citation] = field(init=False, default_factory=list)
    _notes: list[str] = field(init=False, default_factory=list)
    _images: list[ImageOut] = field(init=False, default_factory=list)
    _offers: list[tuple[FileOut, str]] = field(init=False, default_factory=list)
    _timer: asyncio.Task[None] | None = field(init=False, default=None)
    _heartbeat: asyncio.Task[None] | None = field(init=False, default=None)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    async def emit(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            if self._after_notice and event.text:
                self._raw += "\n\n"  # the answer starts a paragraph after the bridge's notes
                self._after_notice = False
            self._raw_tail += event.text
            cut = safe_prefix(self._raw_tail)
            self._raw += neutralise(self._raw_tail[:cut])
            self._raw_tail = self._raw_tail[cut:]
            await self._update_when_due()
        elif isinstance(event, Progress):
            if not event.done:
                self._label = neutralise(event.label)  # may name a user's file
                self._start_heartbeat()
                await self._update_when_due()
        elif isinstance(event, Citation):
            if event not in self._citations:
                self._citations.append(event)
        elif isinstance(event, Failure):
            self._notes.append(event.user_message)
        elif isinstance(event, Notice):
            self._raw += neutralise(self._raw_tail)
            self._raw_tail = ""
            self._raw += ("\n\n" if self._raw else "") + neutralise(event.text)
            self._after_notice = True
        elif isinstance(event, ImageOut):
            self._images.append(event)
        elif isinstance(event, FileOut):
            self._offer(event)
        elif isinstance(event, Done):
            await self._finish()

    def _offer(self, file: FileOut) -> None:
        name = neutralise(file.filename)
        if self.offer_file is None:
            self._notes.append(wording.file_only_in_personal_chat(name))
            return
        upload_id = self.offer_file(file)
        if upload_id is None:
            self._notes.append(wording.upload_failed(name))
        else:
            self._offers.append((file, upload_id))

    # Streaming (personal chats)

    async def _update_when_due(self) -> None:
        if not self.streaming:
            return
        wait = self._last_update + self.stream_interval - time.monotonic()
        if wait <= 0:
            await self._stream_update()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._update_later(wait))

    async def _update_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._timer = None
        await self._stream_update()

    async def _pace(self) -> None:
        """Teams takes at most one streaming request a second, the final message included."""
        wait = self._last_update + self.stream_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _stream_update(self) -> None:
        async with self._lock:
            if not self.streaming:
                return
            await self._pace()
            if self._stream_id is not None and time.monotonic() - self._stream_started >= self.stream_limit:
                await self._close_stream_early()
                return
            text = self._raw[self._shown :]
            informative = not text
            if informative and self._stream_id is not None and self._streamed:
                return  # Teams takes no informative update once text streams
            if not informative and size(text) > STREAM_TEXT_LIMIT:
                # Each update repeats all that streamed: past the limit the stream stops growing
                # and the final message(s) carry the rest.
                text = self._streamed or split_message(text, STREAM_TEXT_LIMIT)[0]
            self._sequence += 1
            info = StreamInfo(
                stream_type="informative" if informative else "streaming", stream_sequence=self._sequence
            )
            if self._stream_id is not None:  # the first update has none: Teams gives it
                info.stream_id = self._stream_id
            activity = Activity(type="typing", text=self._label if informative else text, entities=[info])
            sent_at = time.monotonic()  # the two-minute cap counts from the first request, cautiously
            try:
                stream_id = await self.outbound.send(activity)
            except ConnectorRefused as exc:
                self._stream_refused(exc)
                return
            finally:
                self._last_update = time.monotonic()  # Teams' one second counts from its answer
            if self._stream_id is None:
                self._stream_id = stream_id
                self._stream_started = sent_at
            if not informative:
                self._streamed = text

    def _stream_refused(self, exc: ConnectorRefused) -> None:
        first = self._stream_id is None
        self.streaming = False
        if exc.status == 403 and not first:
            # The user pressed Stop: what streamed stays; the turn is cancelled.
            log.info("teams stream stopped by the user")
            self._shown += len(self._streamed)
            self._stream_id = None
            if self.on_user_stop is not None:
                self.on_user_stop()
            return
        log.warning("teams streaming refused status=%s code=%s; sending plain messages", exc.status, exc.code)
        # A stream already open keeps its id: the final message still closes it (replacing its
        # text), so the answer is not shown twice.
        self._start_heartbeat()

    async def _close_stream_early(self) -> None:
        """Near Teams' two-minute limit: end the stream with the text so far; the rest of the
        answer follows as a new message."""
        text = self._raw[self._shown :]
        self.streaming = False
        await self._send_final(to_teams_markdown(text) or self._streamed or wording.STILL_WORKING)
        self._shown += len(text)
        self._start_heartbeat()

    async def _send_final(self, text: str) -> None:
        """The stream's final message (it replaces the streamed text), then anything longer."""
        parts = split_message(text)
        await self._pace()
        final = Activity(
            type="message",
            text=parts[0],
            text_format="markdown",
            entities=[StreamInfo(stream_type="final", stream_id=self._stream_id or "")],
        )
        self._stream_id = None
        try:
            await self.outbound.send(final)
        except ConnectorRefused as exc:
            log.warning("teams final stream message refused status=%s; posting it instead", exc.status)
            parts[0:1] = split_message(parts[0], 40_000) if exc.status == 413 else parts[:1]
            await self._post(parts)
            return
        await self._post(parts[1:])

    # Typing (personal and group chats) and the stream's keep-alive

    def _start_heartbeat(self) -> None:
        if not (self.streaming or self.typing):
            return
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            if self.streaming:
                now = time.monotonic()
                quiet, age = now - self._last_update >= self.keepalive, now - self._stream_started
                if self._stream_id is not None and (quiet or age >= self.stream_limit):
                    await self._stream_update()  # a keep-alive, or the stream's early close
            elif self.typing:
                try:
                    await self.outbound.send(Activity(type="typing"))
                except ConnectorRefused as exc:
                    log.info("teams typing refused status=%s", exc.status)
            await asyncio.sleep(self.typing_interval)

    # The end of the turn

    async def _finish(self) -> None:
        async with self._lock:  # an update or early close in flight completes first
            for task in (self._timer, self._heartbeat):
                if task is not None:
                    task.cancel()
            self._timer = self._heartbeat = None
        self._raw += neutralise(self._raw_tail)
        self._raw_tail = ""
        try:
            async with self._lock:
                text = to_teams_markdown(self._raw[self._shown :].lstrip()) + self._footer()
                if not text.strip() and not self._shown and not self._images and not self._offers:
                    text = wording.EMPTY_ANSWER
                if self._stream_id is not None:
                    # The final message replaces the streamed one, so it may not be empty.
                    below = wording.IMAGES_BELOW if self._images else wording.FILES_BELOW
                    await self._send_final(text or self._streamed or below)
                elif text.strip():
                    await self._post(split_message(text))
            for image in self._images:
                await self._send_image(image)
            for file, upload_id in self._offers:
                await self._send_consent_card(file, upload_id)
        finally:
            await self.outbound.close()

    def _footer(self) -> str:
        parts: list[str] = []
        if self._citations:
            parts.append(sources(self._citations))
        parts.extend(f"⚠️ {note}" for note in self._notes)
        if not parts:
            return ""
        return ("\n\n" if self._raw[self._shown :].strip() else "") + "\n\n".join(parts)

    async def _post(self, parts: list[str]) -> None:
        for part in parts:
            try:
                await self.outbound.send(Activity(type="message", text=part, text_format="markdown"))
            except ConnectorRefused as exc:
                if exc.status == 413 and len(part) > 1000:
                    await self._post(split_message(part, max(1000, len(part.encode("utf-8")) // 2)))
                else:
                    log.error("teams message refused status=%s code=%s", exc.status, exc.code)

    async def _send_consent_card(self, file: FileOut, upload_id: str) -> None:
        card = consent_card(file, upload_id)
        try:
            await self.outbound.send(Activity(type="message", attachments=[card]))
        except ConnectorRefused as exc:
            log.warning("teams consent card refused file=%s status=%s", file.filename, exc.status)
            await self._post([f"⚠️ {wording.upload_failed(neutralise(file.filename))}"])

    async def _send_image(self, image: ImageOut) -> None:
        try:
            inline = await asyncio.to_thread(fit_for_teams, image.data)
        except UnusableImage:
            log.warning("teams: image %s is not a readable image", image.filename)
            await self._post([f"⚠️ {wording.upload_failed(neutralise(image.filename))}"])
            return
        url = f"data:{inline.mime_type};base64,{base64.b64encode(inline.data).decode()}"
        name = str(PurePosixPath(image.filename).with_suffix(inline.suffix))
        attachment = Attachment(content_type=inline.mime_type, content_url=url, name=name)
        try:
            await self.outbound.send(Activity(type="message", attachments=[attachment]))
        except ConnectorRefused as exc:
            log.warning("teams image refused file=%s status=%s", image.filename, exc.status)
            await self._post([f"⚠️ {wording.upload_failed(neutralise(image.filename))}"])
