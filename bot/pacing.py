"""Per-destination pacing of platform calls.

Each connector owns one :class:`Pacer`; every send and edit the core makes through that connector
waits on it first, keyed by channel. It enforces a minimum gap between calls, an optional cap of
N calls per sliding window, an optional cap on all channels together (Telegram's 30 messages a
second per bot), and any wait the platform itself asked for (:meth:`Pacer.block`).

A :class:`Pacing` states the platform's documented limit; the pacer keeps a margin below it
(:data:`MARGIN`), so that a limit is never met exactly. The platform counts a call when it
arrives, some time between when it was sent and when its answer came back, so a channel's gap is
counted from the previous call's answer (:meth:`Pacer.paced` holds the channel for the call):
however long one call takes to get there, the next cannot arrive too soon after it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

MARGIN = 0.1
"""How far below a platform's limit the pacer stays: intervals are this much longer, window caps
this much lower (at least one call less)."""
ALL_CHANNELS = "\x00all"


@dataclass(frozen=True, slots=True)
class Pacing:
    """How often one channel may be written to: the platform's documented limit."""

    min_interval: float = 1.0
    """Seconds between two calls to the same channel."""
    window_calls: int | None = None
    """At most this many calls to one channel within ``window_seconds`` (``None``: no cap)."""
    window_seconds: float = 60.0
    margin: float = MARGIN

    @property
    def interval(self) -> float:
        """The gap the pacer keeps between two calls."""
        return self.min_interval * (1 + self.margin)

    @property
    def cap(self) -> int | None:
        """The calls the pacer allows per window: below the platform's cap."""
        if self.window_calls is None:
            return None
        below = min(self.window_calls - 1, math.floor(self.window_calls * (1 - self.margin)))
        return max(1, below) if self.margin > 0 else self.window_calls


@dataclass(slots=True)
class _ChannelClock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last: float | None = None
    blocked_until: float = 0.0
    recent: collections.deque[float] = field(default_factory=collections.deque)


class Pacer:
    """Spaces calls per channel, and all channels together under ``total``; waiters for one channel
    go in arrival order."""

    def __init__(self, total: Pacing | None = None) -> None:
        self._clocks: dict[str, _ChannelClock] = {}
        self.total = total

    def _clock(self, channel: str) -> _ChannelClock:
        clock = self._clocks.get(channel)
        if clock is None:
            clock = self._clocks[channel] = _ChannelClock()
        return clock

    def delay(self, channel: str, pacing: Pacing) -> float:
        """Seconds until a call to ``channel`` would be allowed (0 if now)."""
        clock = self._clocks.get(channel)
        if clock is None:
            return 0.0
        now = asyncio.get_running_loop().time()
        return max(0.0, self._ready_at(clock, pacing, now) - now)

    @staticmethod
    def _ready_at(clock: _ChannelClock, pacing: Pacing, now: float) -> float:
        ready = clock.blocked_until
        if clock.last is not None:
            ready = max(ready, clock.last + pacing.interval)
        cap = pacing.cap
        if cap is not None:
            while clock.recent and clock.recent[0] <= now - pacing.window_seconds:
                clock.recent.popleft()
            if len(clock.recent) >= cap:
                ready = max(ready, clock.recent[-cap] + pacing.window_seconds)
        return ready

    @contextlib.asynccontextmanager
    async def paced(self, channel: str, pacing: Pacing) -> AsyncIterator[None]:
        """Wait until a call to ``channel`` (and, under ``total``, to any channel) is allowed, and
        hold the channel while the body makes it; the next call's gap counts from when the body
        ends, however it ends."""
        clock = self._clock(channel)
        async with clock.lock:
            await self._wait(clock, pacing)
            if self.total is not None:
                total = self._clock(ALL_CHANNELS)
                async with total.lock:
                    await self._wait(total, self.total)
            try:
                yield
            finally:
                # Counted from the answer, not from when the call went out (see the module docstring).
                now = asyncio.get_running_loop().time()
                clock.last = now
                if pacing.cap is not None and clock.recent:  # the newest is this call's
                    clock.recent[-1] = now

    @staticmethod
    async def _wait(clock: _ChannelClock, pacing: Pacing) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            ready = Pacer._ready_at(clock, pacing, now)
            if ready <= now:
                break
            await asyncio.sleep(ready - now)
        clock.last = now
        if pacing.cap is not None:
            clock.recent.append(now)

    def block(self, channel: str, seconds: float) -> None:
        """Hold every call to ``channel`` for ``seconds`` (the platform's ``retry_after``)."""
        clock = self._clock(channel)
        until = asyncio.get_running_loop().time() + seconds
        clock.blocked_until = max(clock.blocked_until, until)
