"""Downloading a user's file from a platform's file host, within a size limit.

Shared by the adapters. A token is only ever sent to a host the caller allows; redirects are
followed only within allowed hosts; a download that grows past the limit is cut off at once.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from yarl import URL

from core import wording
from core.files import FileRefused, FileTooLarge

MAX_REDIRECTS = 3
# Per request, not the session's total: a 20 MB file on a slow link may take longer than an API call.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)


async def download(
    session: aiohttp.ClientSession,
    url: str,
    *,
    limit: int,
    allowed: Callable[[URL], bool],
    token: str | None = None,
    refuse_html: bool = False,
    html_size: int | None = None,
) -> bytes:
    """The file's bytes. ``allowed`` says which URLs may be fetched (and get the token);
    ``refuse_html`` treats an HTML page as a sign-in page served instead of the file, unless
    ``html_size`` (for an HTML file, the size the platform declared) matches it exactly."""
    try:
        target = URL(url)
    except ValueError as exc:  # a link the platform sent that is not a URL
        raise FileRefused(wording.DOWNLOAD_FAILED) from exc
    for _ in range(MAX_REDIRECTS + 1):
        if not allowed(target):
            raise FileRefused(wording.FILE_HOST_NOT_ALLOWED)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with session.get(
                target, headers=headers, allow_redirects=False, timeout=TIMEOUT
            ) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    target = target.join(URL(response.headers["Location"]))
                    continue
                if response.status in (401, 403):
                    raise FileRefused(wording.FILE_FORBIDDEN)
                if response.status != 200:
                    raise FileRefused(wording.DOWNLOAD_FAILED)
                sign_in = refuse_html and response.content_type == "text/html"
                if sign_in and html_size is None:
                    raise FileRefused(wording.FILE_LOGIN_PAGE)
                if response.content_length is not None and response.content_length > limit:
                    raise FileTooLarge()
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > limit:
                        raise FileTooLarge()
                if sign_in and len(data) != html_size:
                    raise FileRefused(wording.FILE_LOGIN_PAGE)
                return bytes(data)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: a bad Location
            raise FileRefused(wording.DOWNLOAD_FAILED) from exc
    raise FileRefused(wording.DOWNLOAD_FAILED)


def same_site(base: URL) -> Callable[[URL], bool]:
    """URLs on ``base``'s host or its subdomains, with ``base``'s scheme (https in production)."""
    host = (base.host or "").lower()

    def allowed(url: URL) -> bool:
        candidate = (url.host or "").lower()
        return url.scheme == base.scheme and (candidate == host or candidate.endswith("." + host))

    return allowed
