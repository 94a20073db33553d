"""The per-channel pacer."""

import asyncio
import itertools

import pytest

from bot.pacing import Pacer, Pacing


async def times(pacer: Pacer, channel: str, pacing: Pacing, n: int) -> list[float]:
    """When each call was let through, as the pacer counts it.

    Reading the clock after the call would add however long the OS kept the process
    off the CPU in between, which on a loaded machine is more than the tolerance below.
    """
    out = []
    for _ in range(n):
        async with pacer.paced(channel, pacing):
            pass
        out.append(pacer._clock(channel).last)
    return out


async def test_minimum_interval_per_channel_and_channels_independent() -> None:
    pacer = Pacer()
    pacing = Pacing(min_interval=0.05)
    a, b = await asyncio.gather(times(pacer, "a", pacing, 4), times(pacer, "b", pacing, 4))
    for series in (a, b):
        assert all(y - x >= 0.05 - 0.002 for x, y in itertools.pairwise(series))
    # The two channels ran side by side, not one after the other.
    assert abs(a[0] - b[0]) < 0.04


async def test_window_cap() -> None:
    pacer = Pacer()
    pacing = Pacing(min_interval=0.0, window_calls=3, window_seconds=0.2, margin=0)
    stamps = await times(pacer, "g", pacing, 7)
    for i in range(3, 7):
        assert stamps[i] - stamps[i - 3] >= 0.2 - 0.002


async def test_block_holds_the_channel() -> None:
    pacer = Pacer()
    pacing = Pacing(min_interval=0.0)
    loop = asyncio.get_running_loop()
    async with pacer.paced("c", pacing):
        pass
    pacer.block("c", 0.15)
    assert pacer.delay("c", pacing) > 0.1
    start = loop.time()
    async with pacer.paced("c", pacing):
        pass
    assert loop.time() - start >= 0.15 - 0.002
    assert pacer.delay("other", pacing) == 0


async def test_a_limit_is_never_met_exactly() -> None:
    """20 calls a minute (Telegram groups) allows 18; a 1 s interval becomes 1.1 s."""
    group = Pacing(min_interval=1.0, window_calls=20, window_seconds=60.0)
    assert group.cap == 18
    assert group.interval == pytest.approx(1.1)
    assert Pacing(window_calls=5, window_seconds=5.0).cap == 4  # Discord's 5 per 5 s
    assert Pacing(window_calls=1).cap == 1
    assert Pacing(window_calls=20, margin=0).cap == 20

    pacer = Pacer()
    fast = Pacing(min_interval=0.0, window_calls=5, window_seconds=0.3)
    stamps = await times(pacer, "g", fast, 9)
    # In any sliding 0.3 s window at most 4 calls (the cap less the margin), never 5.
    for i in range(4, 9):
        assert stamps[i] - stamps[i - 4] >= 0.3 - 0.002


async def test_a_total_cap_spans_all_channels() -> None:
    pacer = Pacer(total=Pacing(min_interval=0.0, window_calls=5, window_seconds=0.3))
    per_channel = Pacing(min_interval=0.0)
    series = await asyncio.gather(*(times(pacer, f"c{i}", per_channel, 3) for i in range(3)))
    stamps = sorted(t for s in series for t in s)
    for i in range(4, len(stamps)):
        assert stamps[i] - stamps[i - 4] >= 0.3 - 0.002


async def test_the_gap_counts_from_the_previous_calls_answer() -> None:
    """The platform counts a call when it arrives, up to when it is answered: a call that took
    long to get there must not let the next one arrive too soon after it."""
    pacer = Pacer()
    pacing = Pacing(min_interval=0.05, margin=0)
    loop = asyncio.get_running_loop()
    answered: list[float] = []
    started: list[float] = []

    async def call(seconds: float) -> None:
        async with pacer.paced("c", pacing):
            started.append(loop.time())
            await asyncio.sleep(seconds)
            answered.append(loop.time())

    await asyncio.gather(call(0.2), call(0.0), call(0.0))
    assert len(started) == 3
    for i in (1, 2):
        assert started[i] - answered[i - 1] >= 0.05 - 0.002  # not while the one before is out, nor right after


async def test_a_failed_call_still_counts_from_its_answer() -> None:
    pacer = Pacer()
    pacing = Pacing(min_interval=0.1, margin=0)

    async def refused() -> None:
        async with pacer.paced("c", pacing):
            await asyncio.sleep(0.2)  # longer than the interval: counted from the send, it would be over
            raise RuntimeError("the platform refused")

    with pytest.raises(RuntimeError):
        await refused()
    assert pacer.delay("c", pacing) > 0.05
