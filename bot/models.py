"""Several models: the named engines a conversation can choose with ``/model``, loaded when first used.

``default`` is the model ``PARLEY_ENGINE__*`` configures; ``PARLEY_MODELS__<NAME>__*`` adds more
(:class:`ModelSpec`). :class:`Engines` holds one engine per name. The default one is handed in
already built and starts with the app, as before; the others are built through a factory given by
the composition root (the core never imports ``engine.*``) only when a reply first needs them.

A reply holds its engine for as long as it streams (:meth:`Engines.use`), so an engine is never
stopped under a running reply. Local models share the machine's cores and memory, so at most one
is loaded at a time: a reply that needs another local model waits until the loaded one has no
running reply, then it is unloaded and the other loaded. Waiters take turns in arrival order, so
two conversations on two local models alternate rather than starve each other. A named local
model with no reply running for ``PARLEY_MODEL_IDLE_UNLOAD`` seconds is unloaded; the default one
stays loaded unless another local model needs its place. OpenAI-compatible models hold only an
HTTP session and are never unloaded before shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from bot.engine import Engine
from bot.errors import EngineError
from bot.settings import DEFAULT_MODEL, EngineSettings, Settings

log = logging.getLogger(__name__)

EngineFactory = Callable[[EngineSettings], Engine]
"""Builds a model's engine, not started (``bot.main.build_engine``)."""
NOT_LOADED = "not loaded"
"""The status of a model whose engine is not running: it loads when a reply needs it."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One configured model: its name and engine settings."""

    name: str
    settings: EngineSettings

    @property
    def local(self) -> bool:
        return self.settings.backend == "local"

    def describe(self) -> str:
        """One line for ``/model``: the backend and which model it is."""
        s = self.settings
        if s.backend == "openai":
            return f"{s.model} at {s.base_url}"
        return f"local, {s.model_path.name if s.model_path is not None else '?'}"


def model_specs(settings: Settings) -> dict[str, ModelSpec]:
    """``default`` first, then the configured models by name."""
    return {name: ModelSpec(name, settings.model_settings(name)) for name in settings.model_names}


@dataclass(eq=False)
class _Slot:
    spec: ModelSpec
    engine: Engine | None = None
    users: int = 0
    """Replies holding the engine (or waiting for it to load)."""
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while the engine loads or unloads."""


class Engines:
    """The engines of every configured model; ``start``/``stop`` with the app; see the module docstring."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        factory: EngineFactory,
        *,
        default: Engine,
        idle_unload: float = 600.0,
    ) -> None:
        if DEFAULT_MODEL not in specs:
            raise ValueError("the default model needs a spec")
        self.specs = dict(specs)
        self.factory = factory
        self.default = default
        self.idle_unload = idle_unload
        self._slots = {name: _Slot(spec) for name, spec in self.specs.items()}
        self._changed = asyncio.Condition()
        self._tickets = itertools.count()
        self._waiting: dict[int, str] = {}
        """Replies waiting for a local model, by arrival ticket: the model each needs."""
        self._reaper: asyncio.Task[None] | None = None
        self.loads: list[str] = []
        """The models loaded so far, in order (for logs and tests)."""

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def loaded(self, name: str) -> Engine | None:
        """The running engine of ``name``, if loaded."""
        return self._slots[name].engine

    async def start(self) -> None:
        """Start the default model (as a single-model Parley always did) and the idle watch."""
        slot = self._slots[DEFAULT_MODEL]
        await self.default.start()
        slot.engine = self.default
        self.loads.append(DEFAULT_MODEL)
        if self.idle_unload > 0 and any(spec.local for name, spec in self.specs.items() if name != DEFAULT_MODEL):
            self._reaper = asyncio.create_task(self._reap(), name="parley-model-idle-unload")

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for slot in self._slots.values():
            if slot.engine is not None:
                await self._unload(slot, "shutdown")

    @contextlib.asynccontextmanager
    async def use(self, name: str) -> AsyncIterator[Engine]:
        """The engine of model ``name``, loaded if need be, held (never unloaded) until the block ends."""
        slot = self._slots.get(name)
        if slot is None:
            raise EngineError(f"no model is named {name!r}")
        engine = await self._acquire(slot)
        try:
            yield engine
        finally:
            async with self._changed:
                slot.users -= 1
                slot.last_used = time.monotonic()
                self._changed.notify_all()

    async def _acquire(self, slot: _Slot) -> Engine:
        async with self._changed:
            if slot.spec.local:
                ticket = next(self._tickets)
                self._waiting[ticket] = slot.spec.name
                try:
                    while not await self._local_turn(slot, ticket):
                        await self._changed.wait()
                finally:
                    del self._waiting[ticket]
                    self._changed.notify_all()
            slot.users += 1
        try:
            async with slot.lock:
                if slot.engine is None:
                    engine = self.default if slot.spec.name == DEFAULT_MODEL else self.factory(slot.spec.settings)
                    started = time.monotonic()
                    log.info("model %s: loading (%s)", slot.spec.name, slot.spec.describe())
                    await engine.start()
                    slot.engine = engine
                    self.loads.append(slot.spec.name)
                    log.info("model %s: ready in %.1f s", slot.spec.name, time.monotonic() - started)
                return slot.engine
        except BaseException:
            async with self._changed:
                slot.users -= 1
                self._changed.notify_all()
            raise

    async def _local_turn(self, slot: _Slot, ticket: int) -> bool:
        """Whether the reply with ``ticket`` may use local ``slot`` now; unloads an idle other local model.

        Called holding the condition: an earlier waiter for another local model goes first, and the
        loaded local model gives way once its last reply ends.
        """
        if any(earlier < ticket and name != slot.spec.name for earlier, name in self._waiting.items()):
            return False
        for other in self._slots.values():
            if other is slot or not other.spec.local or (other.engine is None and not other.lock.locked()):
                continue
            if other.users > 0 or other.lock.locked():
                return False
            await self._unload(other, f"to make room for {slot.spec.name}")
        return True

    async def _unload(self, slot: _Slot, why: str) -> None:
        async with slot.lock:
            engine, slot.engine = slot.engine, None
            if engine is not None:
                log.info("model %s: unloading (%s)", slot.spec.name, why)
                await engine.stop()

    async def _reap(self) -> None:
        interval = max(0.05, min(30.0, self.idle_unload / 4))
        while True:
            await asyncio.sleep(interval)
            await self.unload_idle()

    async def unload_idle(self) -> list[str]:
        """Unload every named local model with no reply running for ``idle_unload`` seconds."""
        now = time.monotonic()
        done = []
        async with self._changed:
            for name, slot in self._slots.items():
                idle = now - slot.last_used
                if name == DEFAULT_MODEL or not slot.spec.local or slot.engine is None or slot.users:
                    continue
                if idle >= self.idle_unload:
                    await self._unload(slot, f"unused for {idle:.0f} s")
                    done.append(name)
            if done:
                self._changed.notify_all()
        return done

    # what the app reports

    def status(self, name: str = DEFAULT_MODEL) -> str:
        """``name``'s engine status, or ``not loaded``."""
        engine = self._slots[name].engine
        return NOT_LOADED if engine is None else engine.status()

    def statuses(self) -> dict[str, str]:
        return {name: self.status(name) for name in self.specs}

    def metrics(self) -> dict[str, float]:
        """The loaded engines' figures, added up."""
        total: dict[str, float] = {}
        for slot in self._slots.values():
            if slot.engine is not None:
                for key, value in slot.engine.metrics().items():
                    total[key] = total.get(key, 0.0) + value
        return total

    def forget(self, affinity: str) -> None:
        """``/reset``: every loaded engine drops what it keeps for the conversation."""
        for slot in self._slots.values():
            if slot.engine is not None:
                slot.engine.forget(affinity)
