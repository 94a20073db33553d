"""The running bot: store, engine, chat service, web server and platform connectors, in one lifecycle.

:class:`Parley` is given its engine (and, through :meth:`Parley.attach`, its web server and
connectors) by the composition root, :mod:`bot.main`; it imports no implementation. It starts them
in order inside one ``AsyncExitStack``: if any fails, what already started is stopped. On stop it
first stops taking messages and lets running replies finish (up to ``PARLEY_SHUTDOWN_TIMEOUT``),
then stops connectors, the web server, the engine and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from types import TracebackType

from bot.chat import ChatService
from bot.connector import Connector, WebTransport
from bot.engine import Engine
from bot.errors import EngineError, ParleyError
from bot.loader import load_plugins
from bot.models import EngineFactory, Engines, model_specs
from bot.settings import EngineSettings, Settings
from bot.store import Store

log = logging.getLogger("parley")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Parley:
    """The running bot. Built by :func:`bot.main.build_app`; ``async with app:`` starts everything."""

    def __init__(
        self, settings: Settings, engine: Engine, *, store: Store | None = None, factory: EngineFactory | None = None
    ) -> None:
        self.settings = settings
        self.store = store or Store(settings.db_path)
        self.engine = engine
        """The default model's engine; ``engines`` holds every model's."""
        self.engines = Engines(
            model_specs(settings), factory or _no_factory, default=engine, idle_unload=settings.model_idle_unload
        )
        self.chat = ChatService(settings, self.store, self.engines)
        self.metrics = self.chat.metrics
        loaded = load_plugins(settings)
        self.plugins = loaded.plugins
        self.plugin_problems = loaded.problems
        self.chat.install(self.plugins)
        self.web: WebTransport | None = None
        self.connectors: list[Connector] = []
        self.ready = False
        self._stack = contextlib.AsyncExitStack()

    def attach(self, *, web: WebTransport | None = None, connectors: Sequence[Connector] = ()) -> None:
        """Give the app its web server and platform connectors (before ``start``)."""
        self.web = web
        self.connectors = list(connectors)

    async def start(self) -> None:
        stack = self._stack
        try:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            recovered = f", {self.store.recovered} interrupted replies marked" if self.store.recovered else ""
            log.info("store: %s%s", self.settings.db_path, recovered)

            await self.engines.start()
            stack.push_async_callback(self.engines.stop)
            log.info("engine: %s (%s)", self.engine.name, self._engine_detail())
            if self.settings.models:
                log.info("models: %s (each loads when first used)", ", ".join(self.settings.models))

            if self.web is not None:
                await self.web.start()
                stack.push_async_callback(self.web.stop)
                log.info("web: chat page and API on %s", self.web.url)

            names = ", ".join(f"{p.name} {p.version}" for p in self.plugins)
            skipped = f"; skipped: {len(self.plugin_problems)} (see errors above)" if self.plugin_problems else ""
            log.info("plugins: %s (%d commands)%s", names or "none", len(self.chat.command_list), skipped)

            await self._prepare_engine()  # /healthz answers "starting" meanwhile: a big model may take seconds
            await self.chat.inbox.prune()
            sweep = asyncio.create_task(self.chat.listener.run(), name="parley-listen-sweep")
            stack.push_async_callback(_cancel, sweep)
            await self.chat.resume(self.connectors)  # queued first, answered once connectors are up
            for connector in self.connectors:
                await connector.start(self.chat)
                stack.push_async_callback(connector.stop)
                log.info("%s: connected", connector.name)

            stack.push_async_callback(self.chat.drain, self.settings.shutdown_timeout)
            stack.push_async_callback(self._pause_intake)  # runs first on the way down
            self.chat.open()
        except BaseException:
            await self.chat.drain(0)  # queued answers stay in the inbox for the next start
            await stack.aclose()
            raise
        self.ready = True

    async def _prepare_engine(self) -> None:
        """The default engine reads the default system prompt ahead (:meth:`Engine.prepare`), before
        the inbox's replays and the connectors bring the first conversations. A failure only costs
        those their first read: it is logged, and the start goes on."""
        if not self.settings.system_prompt:
            return
        try:
            await self.engine.prepare(self.settings.system_prompt)
        except ParleyError as exc:
            log.warning("engine: the system prompt could not be read ahead: %s", exc)

    def _engine_detail(self) -> str:
        engine = self.settings.engine
        if engine.backend == "openai":
            return f"{engine.base_url}, model {engine.model}, {engine.concurrency} replies at once"
        return (
            f"{engine.model_path}, {engine.parallel} sequences of {engine.n_ctx} tokens in one context, "
            f"{engine.threads} threads"
        )

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
        components = {"store": "ready" if self.ready else "starting", "engine": self.engines.status()}
        for name in self.settings.models:
            components[f"model {name}"] = self.engines.status(name)
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


def _no_factory(settings: EngineSettings) -> Engine:
    raise EngineError("this Parley was built without an engine factory, so only the default model can answer")
