"""Wiring: settings and profiles in, one aiohttp server with every adapter out."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from bots.slack.adapter import EVENTS_PATH, SlackAdapter
from bots.teams.adapter import MESSAGES_PATH, TeamsAdapter
from core.backend import Backend
from core.backends.assistants import AssistantsBackend
from core.backends.clients import build_openai_client
from core.backends.responses import ResponsesBackend
from core.bridge import Bridge
from core.channels import SqliteChannelBook
from core.deliveries import RecentDeliveries
from core.profiles import ProfileSet
from core.settings import Settings
from core.store import SqliteDictStore
from core.turns import TurnRunner

log = logging.getLogger(__name__)


def build_backends(settings: Settings) -> dict[str, Backend]:
    """Both backends. Without OpenAI/Azure settings only assistants profiles with their own
    ``base_url`` can work (``serve`` refuses to start otherwise)."""
    has_openai = settings.openai_api_key is not None or settings.azure_openai_endpoint is not None
    backends: dict[str, Backend] = {
        "assistants": AssistantsBackend(
            build_openai_client(settings) if has_openai else None, max_tool_rounds=settings.max_tool_rounds
        )
    }
    if has_openai:
        backends["responses"] = ResponsesBackend(
            build_openai_client(settings), max_tool_rounds=settings.max_tool_rounds
        )
    return backends


def build_bridge(settings: Settings, profiles: ProfileSet, backends: Mapping[str, Backend]) -> Bridge:
    return Bridge(
        profiles=profiles,
        backends=backends,
        store=SqliteDictStore(settings.store_path),
        deliveries=RecentDeliveries(ttl=settings.dedupe_ttl),
        runner=TurnRunner(
            max_pending=settings.max_pending_per_thread, max_concurrent=settings.max_concurrent_turns
        ),
        turn_timeout=settings.turn_timeout,
        file_limits=settings.file_limits,
        book=SqliteChannelBook(settings.store_path),
    )


@dataclass
class Service:
    """The running bridge: the core, its adapters and the HTTP server in front of them."""

    settings: Settings
    bridge: Bridge
    slack: SlackAdapter | None
    teams: TeamsAdapter | None
    draining: bool = False
    bound_port: int | None = None

    @classmethod
    def create(
        cls, settings: Settings, profiles: ProfileSet, backends: Mapping[str, Backend] | None = None
    ) -> Service:
        bridge = build_bridge(settings, profiles, backends or build_backends(settings))
        return cls(
            settings=settings,
            bridge=bridge,
            slack=SlackAdapter(bridge, settings) if settings.slack_enabled else None,
            teams=TeamsAdapter(bridge, settings) if settings.teams_enabled else None,
        )

    def web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        if self.slack is not None and not self.settings.slack_socket_mode:
            app.router.add_post(EVENTS_PATH, self.slack.handle_http)
        if self.teams is not None:
            self.teams.install(app)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        status = "draining" if self.draining else "ok"
        return web.json_response({"status": status}, status=503 if self.draining else 200)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set, then shut down gracefully: stop taking events, let running
        turns finish within ``shutdown_grace`` seconds, close everything."""
        runner = web.AppRunner(self.web_app(), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        await site.start()
        self.bound_port = self.port(runner)
        if self.slack is not None:
            await self.slack.start()
        if self.teams is not None:
            self.teams.announce()
        log.info(
            "serving host=%s port=%s slack=%s teams=%s",
            self.settings.host,
            self.bound_port,
            "off"
            if self.slack is None
            else "socket_mode"
            if self.settings.slack_socket_mode
            else EVENTS_PATH,
            "off" if self.teams is None else MESSAGES_PATH,
        )
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down: no new events; grace=%ss", self.settings.shutdown_grace)
        self.draining = True
        if self.slack is not None:
            await self.slack.stop()
        await site.stop()
        cancelled = await self.bridge.drain(self.settings.shutdown_grace)
        if cancelled:
            log.warning("shutdown cancelled %d unfinished turns after the grace period", cancelled)
        await runner.cleanup()
        if self.teams is not None:
            await self.teams.close()
        if self.slack is not None:
            await self.slack.close()
        await self.bridge.close()
        log.info("stopped")

    @staticmethod
    def port(runner: web.AppRunner) -> int | None:
        for address in runner.addresses:
            return int(address[1])
        return None


async def serve_until_signalled(service: Service) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await service.run(stop)
