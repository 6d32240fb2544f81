"""Files the assistant makes, sent in a personal chat with Teams' file consent card.

The bot posts a consent card; the file's bytes wait here until the user answers. Teams then
invokes the bot (``fileConsent/invoke``): on accept it hands over an upload URL in the user's
OneDrive, where the bytes are PUT (no token: the URL is pre-authorised), and the bot posts a file
info card linking to the file; on decline the bytes are dropped. Teams offers consent cards in
personal chats only (channels and group chats would need Microsoft Graph).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from microsoft_agents.activity import Attachment
from yarl import URL

from core.events import FileOut

CONSENT_CARD = "application/vnd.microsoft.teams.card.file.consent"
FILE_INFO_CARD = "application/vnd.microsoft.teams.card.file.info"
FILE_CONSENT_INVOKE = "fileConsent/invoke"
UPLOAD_TTL = 3600.0
MAX_PENDING_BYTES = 256 * 1024 * 1024
MAX_FILE_BYTES = 50 * 1024 * 1024  # one PUT to a OneDrive upload session takes at most 60 MiB


class UploadFailed(Exception):
    """The upload URL refused the file (or could not be reached)."""


@dataclass(frozen=True)
class _Pending:
    conversation_id: str
    file: FileOut
    expires: float


class PendingUploads:
    """Files offered with a consent card, until the user answers or ``ttl`` seconds pass. At most
    ``max_bytes`` are kept: the oldest offers are dropped to make room."""

    def __init__(
        self,
        ttl: float = UPLOAD_TTL,
        max_bytes: int = MAX_PENDING_BYTES,
        max_file_bytes: int = MAX_FILE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl, self._max_bytes, self._max_file_bytes, self._clock = ttl, max_bytes, max_file_bytes, clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._bytes = 0

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def add(self, conversation_id: str, file: FileOut) -> str | None:
        """An id for the consent card; None if the file cannot be offered (empty or too large)."""
        size = len(file.data)
        if not 0 < size <= min(self._max_file_bytes, self._max_bytes):
            return None
        self._expire()
        while self._bytes + size > self._max_bytes:
            self._drop(next(iter(self._pending)))
        upload_id = secrets.token_urlsafe(16)
        self._pending[upload_id] = _Pending(conversation_id, file, self._clock() + self._ttl)
        self._bytes += size
        return upload_id

    def take(self, upload_id: str, conversation_id: str) -> FileOut | None:
        """The file offered as ``upload_id`` in ``conversation_id``, now no longer pending."""
        self._expire()
        pending = self._pending.get(upload_id)
        if pending is None or pending.conversation_id != conversation_id:
            return None
        self._drop(upload_id)
        return pending.file

    def _expire(self) -> None:
        now = self._clock()
        for upload_id in [key for key, item in self._pending.items() if item.expires <= now]:
            self._drop(upload_id)

    def _drop(self, upload_id: str) -> None:
        self._bytes -= len(self._pending.pop(upload_id).file.data)


def consent_card(file: FileOut, upload_id: str) -> Attachment:
    """The card asking the user whether to save ``file`` in their OneDrive."""
    name = onedrive_name(file.filename)
    context = {"upload": upload_id, "name": name}
    return Attachment(
        content_type=CONSENT_CARD,
        name=name,
        content={
            "description": name,
            "sizeInBytes": len(file.data),
            "acceptContext": context,
            "declineContext": context,
        },
    )


def onedrive_name(filename: str) -> str:
    """A file name the model chose, as OneDrive takes it: none of ``<>:"/\\|?*`` or control
    characters (so no mention tag either), at most 200 characters."""
    cleaned = "".join("_" if ch in '<>:"/\\|?*' or ord(ch) < 32 else ch for ch in filename).strip(" .")
    if len(cleaned) > 200:
        stem, dot, suffix = cleaned.rpartition(".")
        cleaned = (stem[: 199 - len(suffix)] + dot + suffix) if dot and len(suffix) <= 10 else cleaned[:200]
    return cleaned or "file"


def file_info_card(upload_info: dict[str, Any], fallback_name: str) -> Attachment:
    """The card that shows an uploaded file in the chat (it opens the file in OneDrive)."""
    return Attachment(
        content_type=FILE_INFO_CARD,
        content_url=str(upload_info.get("contentUrl") or ""),
        name=str(upload_info.get("name") or fallback_name),
        content={"uniqueId": upload_info.get("uniqueId"), "fileType": upload_info.get("fileType")},
    )


async def put_file(
    session: aiohttp.ClientSession, url: str, data: bytes, allowed: Callable[[URL], bool]
) -> None:
    """The whole file in one PUT to a pre-authorised upload URL (no token goes with it)."""
    try:
        permitted = allowed(URL(url))
    except ValueError:
        permitted = False
    if not permitted:
        raise UploadFailed("upload URL not allowed")
    size = len(data)
    headers = {"Content-Length": str(size), "Content-Range": f"bytes 0-{size - 1}/{size}"}
    try:
        async with session.put(url, data=data, headers=headers, allow_redirects=False) as response:
            await response.read()
            if response.status not in (200, 201):
                raise UploadFailed(f"upload answered {response.status}")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise UploadFailed(type(exc).__name__) from exc
