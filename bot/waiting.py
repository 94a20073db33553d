"""Waiting for the engine: a line with positions and honest estimates, and what users are shown.

Engines queue replies in their own way (the local scheduler in its worker thread, the OpenAI
backend and test engines in a :class:`Line`) and report each waiting reply's
:class:`~bot.engine.QueueStatus` on it. Estimates come from :class:`ReplyTimes`, the measured time
recent replies held their place; with too few measurements there is no estimate. :func:`watch`
turns the reports into notices: nothing while the wait is short, then the position and the
estimate (counted down, rounded) each time that would read differently, until the reply starts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bot.engine import QueueStatus, Reply
from bot.errors import EngineBusy

MIN_SAMPLES = 3
"""Replies that must have finished before an estimate is given: one alone says little."""
WINDOW = 20
"""How many recent reply times an estimate averages."""
TICK = 1.0
"""Seconds between checks of a counting-down estimate."""

Show = Callable[[QueueStatus], Awaitable[None]]


class ReplyTimes:
    """How long recent replies held their place (seconds), and when a waiting reply may start."""

    def __init__(self, window: int = WINDOW, min_samples: int = MIN_SAMPLES) -> None:
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self._min_samples = min_samples

    def record(self, seconds: float) -> None:
        """One reply finished after holding its place ``seconds`` (not counted: cancelled or failed ones)."""
        if math.isfinite(seconds) and seconds >= 0:
            self._recent.append(seconds)

    @property
    def count(self) -> int:
        """Replies measured in the window."""
        return len(self._recent)

    @property
    def typical(self) -> float | None:
        """The average of the recent times, once there are enough of them."""
        if len(self._recent) < self._min_samples:
            return None
        return sum(self._recent) / len(self._recent)

    def eta(self, position: int, running: Sequence[float], places: int) -> float | None:
        """Seconds until the reply at ``position`` starts, when ``running`` lists how long each reply
        that holds one of the ``places`` has run so far; each is expected to take the typical time.

        A reply that has run longer than that may end at any time: its place is left out, and with
        no place left to count on there is no estimate.
        """
        typical = self.typical
        if typical is None or position < 1 or places < 1:
            return None
        running = running[:places]
        free_at = [typical - elapsed for elapsed in running if elapsed < typical]
        free_at += [0.0] * (places - len(running))
        if not free_at:
            return None
        heapq.heapify(free_at)
        for _ in range(position - 1):  # each reply ahead takes the first place to free up
            heapq.heappush(free_at, heapq.heappop(free_at) + typical)
        return free_at[0]


@dataclass(eq=False, slots=True)
class _Waiter:
    reply: Reply
    granted: asyncio.Future[object]
    """Resolved with the token of the place it was given."""
    position: int = 0


@dataclass(eq=False, slots=True)
class Line:
    """A first-come, first-served line for ``places`` places, on the event loop.

    Each waiting reply is told its position whenever it changes (new arrivals join at the back, so
    it only goes down) with an estimate from ``times``, which learns from the replies that finish.
    """

    places: int
    times: ReplyTimes = field(default_factory=ReplyTimes)
    _waiting: collections.deque[_Waiter] = field(default_factory=collections.deque)
    _running: dict[object, float] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    @contextlib.asynccontextmanager
    async def place(self, reply: Reply, max_wait: float, *, what: str = "place") -> AsyncIterator[None]:
        """Hold a place while inside; first wait in line, at most ``max_wait`` s (then ``EngineBusy``).

        A reply cancelled while it waits leaves the line at once (those behind move up) and enters
        without a place: the block should see ``reply.cancelled`` and end. The time inside counts
        towards estimates when the block ends normally and ``reply`` was not cancelled.
        """
        loop = asyncio.get_running_loop()
        token = object()
        if not self._waiting and len(self._running) < self.places:
            self._running[token] = loop.time()
        elif not await self._wait(_Waiter(reply, loop.create_future()), token, max_wait, what):
            yield
            return
        started = self._running[token]
        try:
            yield
        except BaseException:
            self._leave(token)
            raise
        if not reply.cancelled:
            self.times.record(loop.time() - started)
        self._leave(token)

    async def _wait(self, waiter: _Waiter, token: object, max_wait: float, what: str) -> bool:
        """Wait in line; ``True`` once ``token`` holds a place, ``False`` if the reply was cancelled."""

        def cancelled() -> None:
            if waiter in self._waiting and not waiter.granted.done():
                self._waiting.remove(waiter)
                waiter.granted.set_result(None)
                waiter.reply.report_queue(None)
                self._report()

        self._waiting.append(waiter)
        waiter.reply.on_cancel.append(cancelled)
        self._report()
        try:
            async with asyncio.timeout(max_wait):
                granted = await waiter.granted
        except BaseException as exc:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
                self._report()
            elif waiter.granted.done() and not waiter.granted.cancelled() and waiter.granted.result() is not None:
                self._leave(waiter.granted.result())  # let in just as it gave up: pass the place on
            if isinstance(exc, TimeoutError):
                raise EngineBusy(f"no {what} free within {max_wait:g}s") from None
            raise
        finally:
            waiter.reply.on_cancel.remove(cancelled)
        if granted is None:
            return False
        self._running[token] = self._running.pop(granted)
        return True

    def _leave(self, token: object) -> None:
        del self._running[token]
        self._admit()

    def _admit(self) -> None:
        now = asyncio.get_running_loop().time()
        while self._waiting and len(self._running) < self.places:
            waiter = self._waiting.popleft()
            if waiter.granted.done():  # its task was cancelled and has not run yet
                continue
            granted = object()
            self._running[granted] = now
            waiter.granted.set_result(granted)
            waiter.reply.report_queue(None)
        self._report()

    def _report(self) -> None:
        now = asyncio.get_running_loop().time()
        running = [now - since for since in self._running.values()]
        for position, waiter in enumerate(self._waiting, 1):
            if waiter.position != position:
                waiter.position = position
                waiter.reply.report_queue(QueueStatus(position, self.times.eta(position, running, self.places)))


def rounded(seconds: float) -> int:
    """An estimate as it is shown: up to the next 10 s below a minute (10: "under 10 s"), whole minutes
    above."""
    if seconds < 60:
        return max(10, 10 * math.ceil(seconds / 10))
    return 60 * round(seconds / 60)


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def describe(status: QueueStatus) -> str:
    """The notice a chat user sees in their placeholder while they wait."""
    where = "you are next" if status.position <= 1 else f"you are {ordinal(status.position)} in line"
    eta = status.eta_seconds
    if eta is None:
        when = ""
    elif eta <= 10:
        when = ", in under 10 s"
    elif eta < 60:
        when = f", about {eta:.0f} s"
    else:
        when = f", about {eta / 60:.0f} min"
    return f"⏳ Waiting for the model: {where}{when}."


async def watch(reply: Reply, show: Show, *, after: float) -> None:
    """Until ``reply`` has its place: once it has waited ``after`` s, ``show`` where it stands, and
    again whenever that reads differently (the position, or the estimate counting down, rounded).

    ``show`` gets the latest status each time (changes during a slow ``show`` are coalesced). An
    estimate that has run out is dropped rather than shown wrong. Returns when the reply starts.
    """
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    latest: tuple[QueueStatus, float] | None = None
    since: float | None = None
    started = False

    def hear(status: QueueStatus | None) -> None:
        nonlocal latest, since, started
        if status is None:
            started = True
        else:
            latest = (status, loop.time())
            since = loop.time() if since is None else since
        changed.set()

    reply.on_queue.append(hear)
    if reply.queue is not None:
        hear(reply.queue)
    shown: QueueStatus | None = None
    try:
        while not started:
            changed.clear()
            wait: float | None = None
            if latest is not None and since is not None:
                wait = since + after - loop.time()
                if wait <= 0:
                    status, at = latest
                    current = _current(status, loop.time() - at)
                    if current != shown:
                        await show(current)
                        shown = current
                        continue
                    wait = TICK if current.eta_seconds is not None else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await changed.wait()
    finally:
        reply.on_queue.remove(hear)


def _current(status: QueueStatus, age: float) -> QueueStatus:
    """``status`` as it stands ``age`` seconds after it was reported, its estimate rounded."""
    if status.eta_seconds is None or status.eta_seconds - age < 0:
        return QueueStatus(status.position)
    return QueueStatus(status.position, float(rounded(status.eta_seconds - age)))


@contextlib.asynccontextmanager
async def notices(reply: Reply, show: Show, *, after: float) -> AsyncIterator[None]:
    """Run :func:`watch` while inside; an error of ``show`` comes out when the block ends."""
    task = asyncio.create_task(watch(reply, show, after=after))
    try:
        yield
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
