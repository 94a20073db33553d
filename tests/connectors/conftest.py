"""Shared fixtures of the connector tests: the wire-level fakes, a sink without the core, scripted answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from bot.command import Command
from bot.connector import Connector
from bot.conversation import CommandRequest, ConversationKey, IncomingMessage
from connectors.discord import endpoints
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    previous = endpoints.current()  # discord.py's endpoints are process-global class attributes
    server = FakeDiscord()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        endpoints.restore(previous)


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


class Inbox:
    """A sink without the core: collects what a connector delivers."""

    def __init__(self, commands: Sequence[Command] = (), known: Sequence[ConversationKey] = ()) -> None:
        self.messages: asyncio.Queue[IncomingMessage] = asyncio.Queue()
        self.requests: asyncio.Queue[CommandRequest] = asyncio.Queue()
        self.commands = list(commands)
        self.known = set(known)

    async def receive(self, message: IncomingMessage, connector: Connector) -> bool:
        self.messages.put_nowait(message)
        return message.addressed

    def submit(self, message: IncomingMessage, connector: Connector) -> None:
        self.messages.put_nowait(message)

    def submit_command(self, request: CommandRequest, connector: Connector) -> None:
        self.requests.put_nowait(request)

    async def has_conversation(self, key: ConversationKey) -> bool:
        return key in self.known

    @property
    def command_list(self) -> Sequence[Command]:
        return self.commands


def essay(words: int, *, paragraph: int = 40) -> str:
    """A scripted answer of ``words`` numbered words in paragraphs: long enough to stream or roll over."""
    parts = []
    for start in range(0, words, paragraph):
        parts.append(" ".join(f"word{n}" for n in range(start, min(words, start + paragraph))))
    return "\n\n".join(parts)
