"""Per-destination pacing of platform calls.

Each connector owns one :class:`Pacer`; every send and edit the core makes through that connector
waits on it first, keyed by channel. It enforces a minimum gap between calls, an optional cap of
N calls per sliding window, and any wait the platform itself asked for (:meth:`Pacer.block`).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Pacing:
    """How often one channel may be written to."""

    min_interval: float = 1.0
    """Seconds between two calls to the same channel."""
    window_calls: int | None = None
    """At most this many calls to one channel within ``window_seconds`` (``None``: no cap)."""
    window_seconds: float = 60.0


@dataclass(slots=True)
class _ChannelClock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last: float | None = None
    blocked_until: float = 0.0
    recent: collections.deque[float] = field(default_factory=collections.deque)


class Pacer:
    """Spaces calls per channel; waiters for one channel go in arrival order."""

    def __init__(self) -> None:
        self._clocks: dict[str, _ChannelClock] = {}

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
            ready = max(ready, clock.last + pacing.min_interval)
        if pacing.window_calls is not None:
            while clock.recent and clock.recent[0] <= now - pacing.window_seconds:
                clock.recent.popleft()
            if len(clock.recent) >= pacing.window_calls:
                ready = max(ready, clock.recent[0] + pacing.window_seconds)
        return ready

    async def acquire(self, channel: str, pacing: Pacing) -> None:
        """Wait until a call to ``channel`` is allowed, then count one call."""
        clock = self._clock(channel)
        loop = asyncio.get_running_loop()
        async with clock.lock:
            while True:
                now = loop.time()
                ready = self._ready_at(clock, pacing, now)
                if ready <= now:
                    break
                await asyncio.sleep(ready - now)
            clock.last = now
            if pacing.window_calls is not None:
                clock.recent.append(now)

    def block(self, channel: str, seconds: float) -> None:
        """Hold every call to ``channel`` for ``seconds`` (the platform's ``retry_after``)."""
        clock = self._clock(channel)
        until = asyncio.get_running_loop().time() + seconds
        clock.blocked_until = max(clock.blocked_until, until)
