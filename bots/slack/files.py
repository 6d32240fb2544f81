"""Files shared with a Slack message, as :class:`core.files.FileSource` objects.

Downloads use the bot token (``files:read``) and go only to Slack's own hosts: the Web API's host
and its subdomains (``files.slack.com`` for ``slack.com``). Slack answers a request it will not
serve with HTTP 200 and its HTML sign-in page, which is refused rather than read as the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from bots.downloads import download, same_site
from core import wording
from core.files import FileRefused


@dataclass
class SlackFile:
    name: str
    mime_type: str
    size: int | None
    url: str | None
    session: aiohttp.ClientSession = field(repr=False)
    token: str | None = field(repr=False)  # never in a log line or a traceback
    api_url: str = field(repr=False)

    async def read(self, limit: int) -> bytes:
        if not self.url:
            raise FileRefused(wording.FILE_FORBIDDEN)
        return await download(
            self.session,
            self.url,
            limit=limit,
            allowed=same_site(URL(self.api_url).with_path("/")),
            token=self.token,
            refuse_html=True,  # an HTML file counts only when it is the size Slack declared
            html_size=self.size if self.mime_type.startswith("text/html") else None,
        )


def files_of(
    event: dict[str, Any], session: aiohttp.ClientSession, token: str | None, api_url: str
) -> tuple[SlackFile, ...]:
    """The files on a message or app_mention event (tombstoned and external ones included, so
    that the user hears about them)."""
    return tuple(
        SlackFile(
            name=f.get("name") or f.get("title") or "a file",
            mime_type=f.get("mimetype") or "",
            size=f.get("size"),
            url=f.get("url_private_download") or f.get("url_private"),
            session=session,
            token=token,
            api_url=api_url,
        )
        for f in event.get("files") or []
    )
