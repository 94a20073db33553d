"""Composition root: settings, store, engine, chat service, web server and platform connectors.

:class:`Parley` starts them in order inside one ``AsyncExitStack``: if any fails, what already
started is stopped. On stop it first stops taking messages and lets running replies finish (up to
``PARLEY_SHUTDOWN_TIMEOUT``), then stops connectors, the web server, the engine and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from types import TracebackType

from bot.chat import ChatService
from bot.connector import Connector
from bot.errors import ParleyError
from bot.loader import load_plugins
from bot.settings import Settings, load_settings
from bot.store import Store
from connectors import build_connectors
from connectors.web.server import WebServer
from engine.base import Engine
from engine.factory import create_engine

log = logging.getLogger("parley")


class Parley:
    """The running bot. ``async with Parley(settings) as app:`` starts everything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.db_path)
        self.engine: Engine = create_engine(settings.engine)
        self.chat = ChatService(settings, self.store, self.engine)
        loaded = load_plugins(settings)
        self.plugins = loaded.plugins
        self.plugin_problems = loaded.problems
        self.chat.install(self.plugins)
        self.web: WebServer | None = WebServer(settings.web, self) if settings.web.enabled else None
        self.connectors: list[Connector] = build_connectors(settings, self.web)
        self.ready = False
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        stack = self._stack
        try:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            recovered = f", {self.store.recovered} interrupted replies marked" if self.store.recovered else ""
            log.info("store: %s%s", self.settings.db_path, recovered)

            await self.engine.start()
            stack.push_async_callback(self.engine.stop)
            log.info("engine: %s (%s)", self.engine.name, self._engine_detail())

            if self.web is not None:
                await self.web.start()
                stack.push_async_callback(self.web.stop)
                log.info("web: chat page and API on %s", self.web.url)

            names = ", ".join(f"{p.name} {p.version}" for p in self.plugins)
            skipped = f"; skipped: {len(self.plugin_problems)} (see errors above)" if self.plugin_problems else ""
            log.info("plugins: %s (%d commands)%s", names or "none", len(self.chat.command_list), skipped)

            for connector in self.connectors:
                await connector.start(self.chat)
                stack.push_async_callback(connector.stop)
                log.info("%s: connected", connector.name)

            stack.push_async_callback(self.chat.drain, self.settings.shutdown_timeout)
            stack.push_async_callback(self._pause_intake)  # runs first on the way down
        except BaseException:
            await stack.aclose()
            raise
        self.ready = True

    def _engine_detail(self) -> str:
        engine = self.settings.engine
        if engine.backend == "openai":
            return f"{engine.base_url}, model {engine.model}"
        return f"{engine.model_path}, n_ctx {engine.n_ctx}, {engine.threads} threads, {engine.concurrency} slot(s)"

    async def _pause_intake(self) -> None:
        for connector in self.connectors:
            try:
                await connector.pause_intake()
            except ParleyError as exc:
                log.warning("%s: could not pause intake: %s", connector.name, exc)

    async def stop(self) -> None:
        self.ready = False
        await self._stack.aclose()
        log.info("stopped")

    def status(self) -> dict[str, str]:
        components = {"store": "ready" if self.ready else "starting", "engine": self.engine.status()}
        for connector in self.connectors:
            components[connector.name] = connector.status()
        return components

    async def __aenter__(self) -> Parley:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Parley(settings):
        log.info("Parley is up; press Ctrl+C to stop")
        await stop.wait()
        log.info("shutting down: no new messages; letting running replies finish")


def run() -> int:
    """Entry point of ``parley run``: exit code 0 on a clean stop, 2 on bad settings, 1 on failure."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        logging.getLogger().setLevel(settings.log_level)
        asyncio.run(serve(settings))
    except ParleyError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2 if exc.__class__.__name__ == "ConfigError" else 1
    except KeyboardInterrupt:
        return 0
    return 0
