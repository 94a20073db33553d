"""The Discord connector: the real app and the real discord.py against a wire-level fake of Discord.

The bundled model answers (greedy, seed 42); each test checks the text the fake ends up showing
against the assistant turn the engine produced, and that the bot never pushed past Discord's
5-edits-per-5-s bucket (the fake rejects and records any call that does).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from bot.app import Parley
from bot.commands import CommandRequest
from bot.connector import Connector
from bot.conversation import ConversationKey, IncomingMessage
from bot.errors import ConnectorError
from bot.plugin import Command
from bot.settings import DiscordSettings
from bot.store import Store, Turn, TurnStatus
from connectors.discord import DiscordConnector, endpoints
from tests.conftest import MakeSettings
from tests.fakes.discord import FakeDiscord

# Discord's bucket is 5 per 5 s; requests paced exactly 5 s apart may land a few ms closer.
WINDOW = 4.9


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    previous = endpoints.current()  # discord.py's endpoints are process-global class attributes
    server = FakeDiscord()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        endpoints.restore(previous)


def discord_settings(fake: FakeDiscord, **overrides: Any) -> DiscordSettings:
    values: dict[str, Any] = {
        "token": fake.token,
        "api_base": fake.api_base,
        "gateway_url": fake.gateway_url,
        "guild_ready_timeout": 0.2,
    }
    return DiscordSettings(**(values | overrides))


async def finished_reply(store: Store, key: ConversationKey, replies: int = 1, timeout: float = 120.0) -> Turn:
    """The ``replies``-th assistant turn of ``key`` once it is no longer streaming."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    conversation = None
    while loop.time() < deadline:
        if conversation is None:
            conversation = await store.find_conversation(key)  # look without creating
            if conversation is None:
                await asyncio.sleep(0.1)
                continue
        answers = [t for t in await store.turns(conversation) if t.role == "assistant"]
        if len(answers) >= replies and answers[replies - 1].status is not TurnStatus.STREAMING:
            return answers[replies - 1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no finished reply {replies} in {key}")


def shown(fake: FakeDiscord, turn: Turn) -> str:
    """The text the fake shows in the turn's last message."""
    return str(fake.messages[turn.message_ids[-1]]["content"])


def assert_within_bucket(fake: FakeDiscord, channel: str) -> None:
    assert fake.max_edits_in_window(channel, WINDOW) <= 5
    assert [c for c in fake.rejected if c.channel == channel and c.body.get("_injected") is None] == []


async def test_dm_is_answered_with_edits_and_the_engine_text(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, engine={"max_tokens": 80})
    async with Parley(settings) as app:
        assert app.status()["discord"] == "ready"
        asked = await fake.user_says("Tell me about the moon in three sentences.")
        key = ConversationKey("discord", str(9_001_001), None, "1001")
        turn = await finished_reply(app.store, key)
        user_turn = (await app.store.turns(await app.store.conversation(key)))[0]

    channel = str(9_001_001)
    assert turn.status is TurnStatus.COMPLETE
    assert turn.text.strip()
    assert shown(fake, turn) == turn.text.rstrip()
    (post,) = fake.posts(channel)
    assert str(post.body["message_reference"]["message_id"]) == asked
    assert post.body["allowed_mentions"] == {"parse": [], "replied_user": True}
    assert len(fake.edits(channel)) >= 1
    assert any(c.path.endswith("/typing") for c in fake.calls)
    assert fake.rejected == []
    assert user_turn.text == "Tell me about the moon in three sentences."


async def test_guild_channel_needs_a_mention_or_a_reply(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False})
    channel = fake.channel_id
    key = ConversationKey("discord", channel, None, "1001")
    async with Parley(settings) as app:
        await fake.user_says("nobody asked the bot", where="channel")
        asked = await fake.user_says("What is 2 + 2?", where="channel", mention=True)
        first = await finished_reply(app.store, key)
        # A reply to the bot's message needs no mention.
        followup = await fake.user_says("And 3 + 3?", where="channel", reply_to=first.message_ids[0])
        second = await finished_reply(app.store, key, replies=2)
        turns = await app.store.turns(await app.store.conversation(key))

    assert [t.text for t in turns if t.role == "user"] == ["What is 2 + 2?", "And 3 + 3?"]
    posts = fake.posts(channel)
    assert [str(p.body["message_reference"]["message_id"]) for p in posts] == [asked, followup]
    assert shown(fake, first) == first.text.rstrip()
    assert shown(fake, second) == second.text.rstrip()
    assert_within_bucket(fake, channel)


async def test_thread_is_one_conversation_for_its_members(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False})
    key = ConversationKey("discord", fake.channel_id, fake.thread_id, None)
    async with Parley(settings) as app:
        await fake.user_says("Hi, who are you?", where="thread", mention=True)
        first = await finished_reply(app.store, key)
        # The bot takes part in the thread now: bob is answered without a mention, in the same history.
        await fake.user_says("What did alice ask?", where="thread", user=("1002", "bob"))
        second = await finished_reply(app.store, key, replies=2)
        turns = await app.store.turns(await app.store.conversation(key))

    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert len(fake.posts(fake.thread_id)) == 2
    assert fake.posts(fake.channel_id) == []
    assert shown(fake, first) == first.text.rstrip()
    assert shown(fake, second) == second.text.rstrip()
    assert_within_bucket(fake, fake.thread_id)


async def test_a_429_on_an_edit_is_waited_out(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    # Longer than PARLEY_DISCORD__RATE_LIMIT_WAIT (5 s): discord.py raises, the core blocks the channel.
    fake.reject_next_edit(retry_after=5.5)
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False})
    async with Parley(settings) as app:
        await fake.user_says("Name three colours.")
        turn = await finished_reply(app.store, ConversationKey("discord", str(9_001_001), None, "1001"))

    channel = str(9_001_001)
    (rejected,) = fake.rejected
    assert rejected.method == "PATCH"
    later = [c for c in fake.edits(channel) if c.at > rejected.at]
    assert later, "the final text came after the 429"
    assert later[0].at - rejected.at >= 5.5 - 0.1  # the channel was held for retry_after
    assert turn.status is TurnStatus.COMPLETE
    assert shown(fake, turn) == turn.text.rstrip()


async def test_op7_reconnect_mid_reply_loses_nothing(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, engine={"max_tokens": 100})
    alice = ConversationKey("discord", str(9_001_001), None, "1001")
    bob = ConversationKey("discord", str(9_001_002), None, "1002")
    async with Parley(settings) as app:
        await fake.user_says("Explain how rain forms, step by step.")
        while not fake.edits(str(9_001_001)):  # the reply is streaming
            await asyncio.sleep(0.05)
        await fake.force_reconnect()
        # Sent while the bot is away: Discord replays it on RESUME.
        await fake.user_says("Hello!", user=("1002", "bob"))
        first = await finished_reply(app.store, alice)
        second = await finished_reply(app.store, bob)
        assert app.status()["discord"] == "ready"

    assert fake.resumes == 1
    assert fake.identifies == 1
    assert shown(fake, first) == first.text.rstrip()
    assert shown(fake, second) == second.text.rstrip()
    assert fake.rejected == []


async def test_long_answer_rolls_over_before_2000_chars(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, engine={"max_tokens": 640})
    key = ConversationKey("discord", str(9_001_001), None, "1001")
    async with Parley(settings) as app:
        await fake.user_says("Write a very long, detailed essay about the history of the Roman Empire.")
        turn = await finished_reply(app.store, key, timeout=240)

    channel = str(9_001_001)
    assert len(turn.text) > 2000, "the model must write enough to roll over"
    parts = [str(fake.messages[i]["content"]) for i in turn.message_ids]
    assert len(parts) >= 2
    assert all(0 < len(p) <= 2000 for p in parts)

    def squeeze(text: str) -> str:  # cuts drop whitespace and may close/reopen code fences
        return re.sub(r"\s+|```\w*", "", text)

    assert squeeze("".join(parts)) == squeeze(turn.text)
    assert_within_bucket(fake, channel)


class _Inbox:
    """A sink without the core: collects what the connector delivers."""

    def __init__(self, commands: Sequence[Command] = ()) -> None:
        self.messages: asyncio.Queue[IncomingMessage] = asyncio.Queue()
        self.requests: asyncio.Queue[CommandRequest] = asyncio.Queue()
        self.commands = list(commands)

    def submit(self, message: IncomingMessage, connector: Connector) -> None:
        self.messages.put_nowait(message)

    def submit_command(self, request: CommandRequest, connector: Connector) -> None:
        self.requests.put_nowait(request)

    @property
    def command_list(self) -> Sequence[Command]:
        return self.commands


async def test_a_rejected_token_is_a_clear_error(fake: FakeDiscord) -> None:
    connector = DiscordConnector(discord_settings(fake, token="wrong"))
    with pytest.raises(ConnectorError, match="discord: the token was rejected"):
        await connector.start(_Inbox())
    await connector.stop()  # safe after a failed start
    assert connector.status() == "stopped"


async def test_sharded_client_delivers_messages(fake: FakeDiscord) -> None:
    connector = DiscordConnector(discord_settings(fake, shards=1, connect_timeout=20))
    inbox = _Inbox()
    await connector.start(inbox)
    try:
        assert connector.status() == "ready"
        asked = await fake.user_says(" hi there", where="channel", user=("1003", "carol"), mention=True)
        await fake.user_says("not for the bot", where="channel")
        message = await asyncio.wait_for(inbox.messages.get(), 10)
        unaddressed = await asyncio.wait_for(inbox.messages.get(), 10)
    finally:
        await connector.stop()
        await connector.stop()  # idempotent
    assert fake.last_identify["shard"] == [0, 1]
    assert message.message_id == asked
    assert message.text == "hi there"
    assert (message.channel, message.user, message.user_name) == (fake.channel_id, "1003", "carol")
    assert message.addressed
    assert not message.is_direct
    assert message.thread is None
    assert not unaddressed.addressed
