"""The visible queue: the line, its estimates, the notices, and eight users waiting on one engine."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from bot.connector import ConnectorLimits
from bot.conversation import Destination, IncomingMessage
from bot.engine import QueueStatus, Reply
from bot.errors import EngineBusy
from bot.pacing import Pacing
from bot.streamer import ReplyStreamer
from bot.waiting import Line, ReplyTimes, describe, rounded, watch
from tests.conftest import MakeSettings
from tests.support import RecordingConnector, ScriptedEngine, make_app, queue_position, scripted, wait_idle, wait_until


def reply() -> Reply:
    async def body(_reply: Reply) -> AsyncIterator[str]:
        yield "text"

    return Reply(body)


# estimates


def test_no_estimate_before_enough_replies_have_finished() -> None:
    times = ReplyTimes(min_samples=3)
    times.record(4.0)
    times.record(6.0)
    assert times.eta(1, [1.0], places=1) is None
    times.record(5.0)
    assert times.typical == 5.0
    # One place, its reply 1 s in: the next starts in 4 s, the one after in 9 s.
    assert times.eta(1, [1.0], places=1) == pytest.approx(4.0)
    assert times.eta(2, [1.0], places=1) == pytest.approx(9.0)
    # Two places, one free: the next starts at once; the second waits for the running one.
    assert times.eta(1, [2.0], places=2) == 0.0
    assert times.eta(2, [2.0], places=2) == pytest.approx(3.0)
    # A reply running longer than usual may end at any time: its place is not counted on.
    assert times.eta(1, [30.0], places=1) is None
    assert times.eta(2, [30.0, 1.0], places=2) == pytest.approx(9.0)


def test_the_shown_estimate_is_rounded_up_and_says_about() -> None:
    assert [rounded(s) for s in (0, 3, 10.5, 44, 59.9, 61, 100, 150)] == [10, 10, 20, 50, 60, 60, 120, 120]
    assert describe(QueueStatus(1)) == "⏳ Waiting for the model: you are next."
    assert describe(QueueStatus(1, 10)) == "⏳ Waiting for the model: you are next, in under 10 s."
    assert describe(QueueStatus(3, 20)) == "⏳ Waiting for the model: you are 3rd in line, about 20 s."
    assert describe(QueueStatus(12, 120)) == "⏳ Waiting for the model: you are 12th in line, about 2 min."
    assert describe(QueueStatus(22)) == "⏳ Waiting for the model: you are 22nd in line."


# the line


async def test_the_line_is_first_come_first_served_and_positions_only_go_down() -> None:
    line = Line(places=1)
    replies = [reply() for _ in range(4)]
    seen: list[list[int | None]] = [[] for _ in replies]
    for heard, r in zip(seen, replies, strict=True):
        r.on_queue.append(lambda status, heard=heard: heard.append(None if status is None else status.position))
    order: list[int] = []
    gates = [asyncio.Event() for _ in replies]

    async def use(i: int) -> None:
        async with line.place(replies[i], 10):
            order.append(i)
            await gates[i].wait()

    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(use(i)))
        await asyncio.sleep(0)
    await wait_until(lambda: line.waiting == 3)
    for gate in gates:
        gate.set()
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert seen[0] == []  # a free place: it never waited
    assert seen[1] == [1, None]
    assert seen[3] == [3, 2, 1, None]


async def test_one_leaving_the_line_moves_those_behind_it_up_and_a_long_wait_is_busy() -> None:
    line = Line(places=1)
    first, second, third = reply(), reply(), reply()
    positions: list[int | None] = []
    third.on_queue.append(lambda status: positions.append(None if status is None else status.position))
    hold = asyncio.Event()

    async def run(r: Reply, wait: float) -> None:
        async with line.place(r, wait, what="slot"):
            await hold.wait()

    running = asyncio.create_task(run(first, 10))
    await wait_until(lambda: line.running == 1)
    impatient = asyncio.create_task(run(second, 0.2))
    await asyncio.sleep(0)
    patient = asyncio.create_task(run(third, 10))
    await wait_until(lambda: line.waiting == 2)
    with pytest.raises(EngineBusy, match=r"no slot free within 0\.2s"):
        await impatient
    assert positions == [2, 1]
    hold.set()
    await asyncio.gather(running, patient)
    assert positions == [2, 1, None]
    assert (line.running, line.waiting) == (0, 0)


async def test_a_cancelled_waiter_leaves_the_line_and_frees_nothing_it_did_not_hold() -> None:
    line = Line(places=1)
    hold = asyncio.Event()

    async def run(r: Reply) -> None:
        async with line.place(r, 10):
            await hold.wait()

    running = asyncio.create_task(run(reply()))
    await wait_until(lambda: line.running == 1)
    waiter = asyncio.create_task(run(reply()))
    await wait_until(lambda: line.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (line.running, line.waiting) == (1, 0)
    hold.set()
    await running
    assert line.running == 0


# notices


async def test_watch_shows_nothing_during_a_short_wait() -> None:
    r = reply()
    shown: list[QueueStatus] = []

    async def show(status: QueueStatus) -> None:
        shown.append(status)

    task = asyncio.create_task(watch(r, show, after=0.3))
    r.report_queue(QueueStatus(2))
    await asyncio.sleep(0.1)
    r.report_queue(QueueStatus(1))
    await asyncio.sleep(0.1)
    r.report_queue(None)
    await asyncio.wait_for(task, 1)
    assert shown == []


async def test_watch_shows_the_latest_status_after_the_threshold_and_counts_the_estimate_down() -> None:
    r = reply()
    shown: list[QueueStatus] = []

    async def slow_show(status: QueueStatus) -> None:
        shown.append(status)
        await asyncio.sleep(0.2)  # a paced edit: changes meanwhile are coalesced

    task = asyncio.create_task(watch(r, slow_show, after=0.1))
    r.report_queue(QueueStatus(5, 41.0))
    await wait_until(lambda: len(shown) == 1)
    assert shown == [QueueStatus(5, 50.0)]
    r.report_queue(QueueStatus(4, 40.0))
    r.report_queue(QueueStatus(3, 31.0))
    await wait_until(lambda: len(shown) == 2)
    assert shown[1] == QueueStatus(3, 40.0)  # 4 was never shown: 3 had come before the edit's turn
    r.report_queue(QueueStatus(3, 0.5))  # a place is about to free up
    await wait_until(lambda: len(shown) == 4, timeout=5)
    # The estimate ran out while it still waited: it is dropped rather than shown wrong.
    assert shown[2:] == [QueueStatus(3, 10.0), QueueStatus(3)]
    r.report_queue(None)
    await asyncio.wait_for(task, 1)
    assert not r.on_queue, "the watcher unhooked itself"


async def test_show_status_edits_the_placeholder_until_the_reply_begins() -> None:
    connector = RecordingConnector()
    streamer = ReplyStreamer(connector, Destination("c1"))
    await streamer.start()
    await streamer.show_status("⏳ third")
    await streamer.show_status("⏳ third")  # unchanged: no call
    await streamer.show_status("⏳ second " + "x" * 500)  # cut to the platform's limit
    gate = asyncio.Event()

    async def tokens() -> AsyncIterator[str]:
        await gate.wait()
        async for token in scripted(["Hello ", "there."]):
            yield token

    running = asyncio.create_task(streamer.run(tokens()))
    await asyncio.sleep(0.1)
    gate.set()
    await running
    await streamer.show_status("⏳ too late")
    texts = [call.text for call in connector.calls]
    assert texts[:2] == ["…", "⏳ third"]
    assert texts[2].startswith("⏳ second x")
    assert len(texts[2]) == connector.limits.max_message_length
    assert texts[3:] == ["Hello there."]
    assert not connector.rejected


# eight users on one engine


async def test_eight_users_waiting_see_their_place_only_go_down_within_the_platform_limits(
    make_settings: MakeSettings,
) -> None:
    pacing = Pacing(min_interval=0.05, window_calls=60, window_seconds=2.0)
    connector = RecordingConnector(limits=ConnectorLimits(max_message_length=200, pacing=pacing))
    engine = ScriptedEngine(lambda _m: " ".join(f"w{i}" for i in range(15)), delay=0.03, places=1)
    settings = make_settings(web={"enabled": False}, engine={"max_tokens": 48}, queue_notice_after=0.2)
    async with make_app(settings, engine, memory_store=True) as app:
        for user in range(8):  # eight people in one group channel: they share its pacing
            message = IncomingMessage("recording", "group", f"u{user}", f"m{user}", f"question {user}", addressed=True)
            app.chat.submit(message, connector)
        await wait_idle(app)

    by_message: dict[str, list[str]] = {}
    for call in connector.calls:
        by_message.setdefault(call.message_id, []).append(call.text)
    assert len(by_message) == 8
    waited = 0
    for texts in by_message.values():
        positions = [p for p in map(queue_position, texts) if p is not None]
        assert positions == sorted(positions, reverse=True), texts
        waited += bool(positions)
        assert texts[-1] == " ".join(f"w{i}" for i in range(15)), texts  # the answer replaced the notice
        assert all(a != b for a, b in itertools.pairwise(texts)), "no edit repeats the text shown"
    assert waited >= 6, by_message
    longest = max(by_message.values(), key=lambda texts: len({queue_position(t) for t in texts} - {None}))
    assert len({queue_position(t) for t in longest} - {None}) >= 3, longest  # the line moved and it was shown
    notices = [text for texts in by_message.values() for text in texts if queue_position(text) is not None]
    assert any("about" in text or "under" in text for text in notices), "estimates, once replies were measured"
    # No write broke the platform's limits: length, the gap between calls, the calls per window.
    assert not connector.rejected
    assert all(len(call.text) <= 200 for call in connector.calls)
    times = [call.at for call in connector.calls]
    assert min(b - a for a, b in itertools.pairwise(times)) >= pacing.min_interval - 0.005
    assert max(sum(1 for t in times if start <= t < start + 2.0) for start in times) <= 60


async def test_a_reply_cancelled_while_it_waits_leaves_the_line_at_once() -> None:
    line = Line(places=1)
    hold = asyncio.Event()
    first, stopped, behind = reply(), reply(), reply()
    heard: list[int | None] = []
    behind.on_queue.append(lambda status: heard.append(None if status is None else status.position))
    entered: list[bool] = []

    async def run(r: Reply) -> None:
        async with line.place(r, 10):
            entered.append(r.cancelled)
            if not r.cancelled:
                await hold.wait()

    tasks = [asyncio.create_task(run(first))]
    await wait_until(lambda: line.running == 1)
    for r in (stopped, behind):
        tasks.append(asyncio.create_task(run(r)))
        await asyncio.sleep(0)
    await wait_until(lambda: line.waiting == 2)
    stopped.cancel()  # /stop while it waits
    assert (line.waiting, heard) == (1, [2, 1])
    await tasks[1]
    assert entered == [False, True]
    hold.set()
    await asyncio.gather(*tasks)
    assert heard == [2, 1, None]
    assert (line.running, line.waiting) == (0, 0)
    assert line.times.typical is None  # neither the cancelled one nor so few count as measured
