"""The per-channel pacer."""

import asyncio
import itertools

from bot.pacing import Pacer, Pacing


async def times(pacer: Pacer, channel: str, pacing: Pacing, n: int) -> list[float]:
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        await pacer.acquire(channel, pacing)
        out.append(loop.time())
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
    pacing = Pacing(min_interval=0.0, window_calls=3, window_seconds=0.2)
    stamps = await times(pacer, "g", pacing, 7)
    for i in range(3, 7):
        assert stamps[i] - stamps[i - 3] >= 0.2 - 0.002


async def test_block_holds_the_channel() -> None:
    pacer = Pacer()
    pacing = Pacing(min_interval=0.0)
    loop = asyncio.get_running_loop()
    await pacer.acquire("c", pacing)
    pacer.block("c", 0.15)
    assert pacer.delay("c", pacing) > 0.1
    start = loop.time()
    await pacer.acquire("c", pacing)
    assert loop.time() - start >= 0.15 - 0.002
    assert pacer.delay("other", pacing) == 0
