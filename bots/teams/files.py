"""Files users send in Teams, as :class:`core.files.FileSource` objects.

What arrives (learn.microsoft.com/microsoftteams/platform/bots/how-to/bots-filesv4):

- personal chats: ``application/vnd.microsoft.teams.file.download.info``; its ``downloadUrl`` is a
  pre-authorised link and is fetched with no token at all;
- pasted images: ``image/*`` with a ``contentUrl`` on the Bot Connector's attachment service, which
  wants the bot's token. The token goes to ``*.botframework.com`` and ``*.trafficmanager.net`` only
  (with an app id: only those of them on the Agents SDK's Microsoft allow-list, since anyone can
  name an Azure Traffic Manager profile ``<x>.trafficmanager.net``); an image anywhere else is
  refused, not fetched;
- files in channels and group chats are SharePoint links that only Microsoft Graph can read: the
  user is told to send the file in a personal chat.

With an app id every download is https to Microsoft's own hosts (the SDK's outbound allow-list) and
the session refuses private addresses. Anonymous (local testing) relaxes the hosts for download
links as it does for ``serviceUrl``, but the token rule holds all the same (there is no token then).
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import aiohttp
from microsoft_agents.activity import Attachment
from microsoft_agents.hosting.core import OutboundHostValidator
from yarl import URL

from bots.downloads import download
from core import wording
from core.files import FileRefused, FileSource

log = logging.getLogger(__name__)

DOWNLOAD_INFO = "application/vnd.microsoft.teams.file.download.info"
# What Teams attaches that is not a file: the message as HTML (channels), cards.
_NOT_FILES = ("text/html", "application/vnd.microsoft.card.", "application/vnd.microsoft.teams.card.")
TOKEN_HOSTS = ("botframework.com", "trafficmanager.net")
_MICROSOFT = OutboundHostValidator(enabled=True)
_IMAGE_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)

TokenSource = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True)
class HostPolicy:
    """Where files may be fetched from (and uploaded to). ``strict`` when the bot has an app id."""

    strict: bool

    def may_fetch(self, url: URL) -> bool:
        if not url.host or url.user or url.password:
            return False
        if self.strict:
            return _MICROSOFT.is_allowed(url)
        return url.scheme in ("http", "https")

    def may_carry_token(self, url: URL) -> bool:
        host = (url.host or "").lower().rstrip(".")
        return self.may_fetch(url) and any(host == h or host.endswith("." + h) for h in TOKEN_HOSTS)


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    limit: int,
    allowed: Callable[[URL], bool],
    token: str | None,
    refuse_html: bool,
) -> bytes:
    try:
        return await download(
            session, url, limit=limit, allowed=allowed, token=token, refuse_html=refuse_html
        )
    except ValueError as exc:  # the SDK's session refused the address (e.g. a private one)
        log.warning("teams: download refused by the outbound host check: %s", type(exc).__name__)
        raise FileRefused(wording.FILE_HOST_NOT_ALLOWED) from exc


@dataclass
class SharedFile:
    """A file sent in a personal chat: a pre-authorised download link, fetched without a token."""

    name: str
    mime_type: str
    url: str
    session: aiohttp.ClientSession = field(repr=False)
    policy: HostPolicy
    size: int | None = None

    async def read(self, limit: int) -> bytes:
        allowed = self.policy.may_fetch
        html = self.mime_type.startswith("text/html")
        return await _fetch(self.session, self.url, limit, allowed, None, refuse_html=not html)


@dataclass
class PastedImage:
    """An image pasted into a message, kept by the Bot Connector: fetched with the bot's token,
    from the token hosts only. Its type is read from its bytes (Teams often says ``image/*``)."""

    name: str
    mime_type: str
    url: str
    session: aiohttp.ClientSession = field(repr=False)
    policy: HostPolicy
    token: TokenSource = field(repr=False)
    size: int | None = None

    async def read(self, limit: int) -> bytes:
        try:
            carries = self.policy.may_carry_token(URL(self.url))
        except ValueError as exc:  # not a URL at all
            raise FileRefused(wording.DOWNLOAD_FAILED) from exc
        if not carries:
            raise FileRefused(wording.FILE_HOST_NOT_ALLOWED)
        try:
            token = await self.token()
        except Exception as exc:  # no token could be had: the download would be refused anyway
            log.error("teams: no token to download an image: %s", type(exc).__name__)
            raise FileRefused(wording.DOWNLOAD_FAILED) from exc
        data = await _fetch(self.session, self.url, limit, self.policy.may_carry_token, token, True)
        sniffed = next((mime for magic, mime in _MAGIC if data.startswith(magic)), None)
        if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
            sniffed = "image/webp"
        if sniffed is not None:
            self.mime_type = sniffed
            self.name = str(PurePosixPath(self.name).with_suffix(_IMAGE_SUFFIXES[sniffed]))
        return data


@dataclass
class OutOfReach:
    """A file the bot cannot fetch; reading it says why."""

    name: str
    mime_type: str
    reason: str
    size: int | None = None

    async def read(self, limit: int) -> bytes:
        raise FileRefused(self.reason)


def files_of(
    attachments: list[Attachment],
    conversation_type: str,
    session: aiohttp.ClientSession,
    policy: HostPolicy,
    token: TokenSource,
) -> tuple[FileSource, ...]:
    """The files among a message's attachments (each one that is not usable is still listed, so
    that the user hears why)."""
    sources: list[FileSource] = []
    for attachment in attachments:
        content_type = (attachment.content_type or "").lower()
        content: dict[str, Any] = attachment.content if isinstance(attachment.content, dict) else {}
        if content_type.startswith(_NOT_FILES):
            continue
        if content_type == DOWNLOAD_INFO:
            name = attachment.name or "a file"
            mime = _mime(name, str(content.get("fileType") or ""))
            url = content.get("downloadUrl")
            if conversation_type != "personal" or not isinstance(url, str):
                sources.append(OutOfReach(name, mime, wording.FILE_IN_CHANNEL))
            else:
                sources.append(SharedFile(name, mime, url, session, policy))
        elif content_type.startswith("image/") and attachment.content_url:
            suffix = _IMAGE_SUFFIXES.get(content_type, ".png")
            name = attachment.name or f"image{suffix}"
            sources.append(PastedImage(name, content_type, attachment.content_url, session, policy, token))
        elif attachment.content_url:
            name = attachment.name or _name_in(attachment.content_url)
            reason = wording.FILE_IN_CHANNEL if conversation_type != "personal" else wording.FILE_UNSUPPORTED
            sources.append(OutOfReach(name, _mime(name, ""), reason))
    return tuple(sources)


def _mime(name: str, file_type: str) -> str:
    guessed = mimetypes.guess_type(name)[0] or (
        mimetypes.guess_type(f"file.{file_type}")[0] if file_type else None
    )
    return guessed or "application/octet-stream"


def _name_in(url: str) -> str:
    """The file name at the end of ``url``, or "a file" (also when it is not a URL at all)."""
    try:
        return PurePosixPath(URL(url).path).name or "a file"
    except ValueError:
        return "a file"
