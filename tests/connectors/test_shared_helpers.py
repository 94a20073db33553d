"""What the three connectors share: cleaning up a failed start, and their bounded memories."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.connector import stop_on_failure
from bot.errors import ConnectorError
from connectors.discord.inbound import Participation
from connectors.telegram.commands import ChatAdmins
from tests.support import RecordingConnector


class HalfStarted(RecordingConnector):
    """Starts a client, then fails (or hangs) before the start is complete."""

    def __init__(self, fail: BaseException | None = None, stop_fails: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.stop_fails = stop_fails
        self.client_open = False
        self.stops = 0

    async def start(self, sink: Any) -> None:
        async with stop_on_failure(self):
            self.client_open = True
            if self.fail is not None:
                raise self.fail
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        self.stops += 1
        self.client_open = False
        if self.stop_fails:
            raise ConnectorError("close failed too")


async def test_a_start_that_fails_half_way_stops_what_it_started() -> None:
    connector = HalfStarted(ConnectorError("auth failed"))
    with pytest.raises(ConnectorError, match="auth failed"):
        await connector.start(None)
    assert (connector.client_open, connector.stops) == (False, 1)


async def test_a_cancelled_start_stops_what_it_started() -> None:
    connector = HalfStarted()
    starting = asyncio.create_task(connector.start(None))
    await asyncio.sleep(0.01)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert (connector.client_open, connector.stops) == (False, 1)


async def test_a_failing_stop_is_logged_and_the_start_error_kept(caplog: pytest.LogCaptureFixture) -> None:
    connector = HalfStarted(ConnectorError("auth failed"), stop_fails=True)
    with pytest.raises(ConnectorError, match="auth failed"):
        await connector.start(None)
    assert connector.stops == 1
    assert "cleaning up after a failed start failed too" in caplog.text
    assert "close failed too" in caplog.text


def test_discord_participation_is_bounded() -> None:
    seen = Participation(max_messages=2, max_threads=2)
    for message in (1, 2, 3):
        seen.sent(message)
    for thread in (10, 20, 30):
        seen.joined(thread)
    assert not seen.is_own(1)
    assert seen.is_own(2)
    assert seen.is_own(3)
    assert not seen.is_own(None)
    assert not seen.in_thread(10)  # forgotten: the oldest of three
    assert seen.in_thread(20)
    assert seen.in_thread(30)


class MemberBot:
    """Answers getChatMember from a table; counts the calls."""

    def __init__(self, statuses: dict[int, str]) -> None:
        self.statuses = statuses
        self.calls = 0

    async def get_chat_member(self, chat_id: int, user_id: int) -> Any:
        from telegram.error import NetworkError

        self.calls += 1
        if user_id not in self.statuses:
            raise NetworkError("timed out")
        return type("Member", (), {"status": self.statuses[user_id]})()


async def test_telegram_chat_admins_are_remembered_but_failures_are_not() -> None:
    admins = ChatAdmins(ttl=60.0, maxsize=2)
    bot = MemberBot({1: "administrator", 2: "member"})
    assert await admins.is_admin(bot, -100, 1)  # type: ignore[arg-type]
    assert await admins.is_admin(bot, -100, 1)  # type: ignore[arg-type]
    assert not await admins.is_admin(bot, -100, 2)  # type: ignore[arg-type]
    assert bot.calls == 2  # the second question about user 1 was answered from memory
    assert not await admins.is_admin(bot, -100, 3)  # type: ignore[arg-type]
    assert not await admins.is_admin(bot, -100, 3)  # type: ignore[arg-type]
    assert bot.calls == 4  # a failed lookup is asked again
    bot.statuses[3] = "creator"
    assert await admins.is_admin(bot, -100, 3)  # type: ignore[arg-type]
    assert await admins.is_admin(bot, -100, 1)  # type: ignore[arg-type]
    assert bot.calls == 6  # at most two answers kept: user 1 had been forgotten
