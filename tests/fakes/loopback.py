"""The lifecycle every fake shares: an aiohttp app served on 127.0.0.1 at a free port."""

from __future__ import annotations

from typing import Any, Self

from aiohttp import web


class LoopbackServer:
    """Base of the fakes: ``start()`` builds the app and calls :meth:`_serve`; ``close()`` calls
    :meth:`_stop`; ``async with`` does both."""

    _runner: web.AppRunner | None = None
    _port: int = 0

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        await self._stop()

    async def _serve(self, app: web.Application, **runner_options: Any) -> None:
        self._runner = web.AppRunner(app, access_log=None, **runner_options)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
