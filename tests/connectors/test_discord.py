"""The Discord connector: the real discord.py against a wire-level fake of Discord.

One test runs the whole app on the bundled model (greedy, seed 42); the others answer with the
scripted engine, which records the prompts it was given. Each test checks the text the fake ends
up showing against the assistant turn that was stored, and that the bot never pushed past
Discord's 5-edits-per-5-s bucket (the fake rejects and records any call that does).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.conversation import ConversationKey
from bot.errors import ConnectorError
from bot.settings import DiscordSettings
from bot.store import Turn, TurnStatus
from connectors.discord import DiscordConnector, endpoints
from tests.conftest import MakeSettings
from tests.connectors.conftest import Inbox, essay
from tests.fakes.discord import FakeDiscord
from tests.support import ScriptedEngine, echo, make_app, scripted_engine, stored_turns, wait_reply, wait_until

# Discord's bucket is 5 per 5 s; requests paced exactly 5 s apart may land a few ms closer.
WINDOW = 4.9
DM = str(9_001_001)
"""Alice's DM channel in the fake."""


@pytest.fixture
def fake(fake_discord: FakeDiscord) -> FakeDiscord:
    return fake_discord


def discord_settings(fake: FakeDiscord, **overrides: Any) -> DiscordSettings:
    values: dict[str, Any] = {
        "token": fake.token,
        "api_base": fake.api_base,
        "gateway_url": fake.gateway_url,
        "guild_ready_timeout": 0.2,
    }
    return DiscordSettings(**(values | overrides))


def shown(fake: FakeDiscord, turn: Turn) -> str:
    """The text the fake shows in the turn's last message."""
    return str(fake.messages[turn.message_ids[-1]]["content"])


def assert_within_bucket(fake: FakeDiscord, channel: str) -> None:
    assert fake.max_edits_in_window(channel, WINDOW) <= 5
    assert [c for c in fake.rejected if c.channel == channel and c.body.get("_injected") is None] == []


def user_texts(engine: ScriptedEngine, prompt: int = -1) -> list[str]:
    return [m.content for m in engine.prompts[prompt] if m.role == "user"]


async def test_dm_is_answered_on_the_real_model_with_edits(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    """End to end: the bundled model's words, streamed into one reply."""
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, engine={"max_tokens": 64})
    key = ConversationKey("discord", DM, None, "1001")
    async with make_app(settings, real_engine=True) as app:
        assert app.status()["discord"] == "running"
        asked = await fake.user_says("Tell me about the moon in three sentences.")
        turn = await wait_reply(app.store, key, timeout=240)
        user_turn = (await stored_turns(app.store, key))[0]

    assert turn.status is TurnStatus.COMPLETE
    assert turn.text.strip()
    assert shown(fake, turn) == turn.text.rstrip()
    (post,) = fake.posts(DM)
    assert str(post.body["message_reference"]["message_id"]) == asked
    assert post.body["allowed_mentions"] == {"parse": [], "replied_user": True}
    assert len(fake.edits(DM)) >= 1
    assert any(c.path.endswith("/typing") for c in fake.calls)
    assert fake.rejected == []
    assert user_turn.text == "Tell me about the moon in three sentences."


async def test_guild_channel_needs_a_mention_or_a_reply(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False})
    channel = fake.channel_id
    key = ConversationKey("discord", channel, None, "1001")
    async with make_app(settings) as app:
        await fake.user_says("nobody asked the bot", where="channel")
        asked = await fake.user_says("What is 2 + 2?", where="channel", mention=True)
        first = await wait_reply(app.store, key)
        # A reply to the bot's message needs no mention.
        followup = await fake.user_says("And 3 + 3?", where="channel", reply_to=first.message_ids[0])
        second = await wait_reply(app.store, key, replies=2)
        turns = await stored_turns(app.store, key)
        engine = scripted_engine(app)

    assert [t.text for t in turns if t.role == "user"] == ["What is 2 + 2?", "And 3 + 3?"]
    assert len(engine.prompts) == 2  # the unaddressed message was never answered
    # The mention is not for the model; the reply quotes the bot's message.
    assert user_texts(engine) == ["What is 2 + 2?", '[replying to parley: "You said: What is 2 + 2?"]\nAnd 3 + 3?']
    posts = fake.posts(channel)
    assert [str(p.body["message_reference"]["message_id"]) for p in posts] == [asked, followup]
    assert shown(fake, first) == first.text.rstrip() == "You said: What is 2 + 2?"
    assert shown(fake, second) == second.text.rstrip() == f"You said: {user_texts(engine)[-1]}"
    assert_within_bucket(fake, channel)


async def test_thread_is_one_conversation_for_its_members(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False})
    key = ConversationKey("discord", fake.channel_id, fake.thread_id, None)
    async with make_app(settings) as app:
        await fake.user_says("Hi, who are you?", where="thread", mention=True)
        first = await wait_reply(app.store, key)
        # The bot takes part in the thread now: bob is answered without a mention, in the same history.
        await fake.user_says("What did alice ask?", where="thread", user=("1002", "bob"))
        second = await wait_reply(app.store, key, replies=2)
        turns = await stored_turns(app.store, key)
        engine = scripted_engine(app)

    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert user_texts(engine) == ["[alice]: Hi, who are you?", "[bob]: What did alice ask?"]
    assert "You said: [alice]: Hi, who are you?" in [m.content for m in engine.prompts[-1] if m.role == "assistant"]
    assert len(fake.posts(fake.thread_id)) == 2
    assert fake.posts(fake.channel_id) == []
    assert shown(fake, first) == first.text.rstrip()
    assert shown(fake, second) == second.text.rstrip()
    assert_within_bucket(fake, fake.thread_id)


async def test_a_429_on_an_edit_is_waited_out(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    # Longer than PARLEY_DISCORD__RATE_LIMIT_WAIT (1 s here): discord.py raises, the core blocks the channel.
    fake.reject_next_edit(retry_after=1.5)
    settings = make_settings(discord=discord_settings(fake, rate_limit_wait=1.0), web={"enabled": False})
    async with make_app(settings) as app:
        await fake.user_says("Name three colours.")
        turn = await wait_reply(app.store, ConversationKey("discord", DM, None, "1001"))

    (rejected,) = fake.rejected
    assert rejected.method == "PATCH"
    later = [c for c in fake.edits(DM) if c.at > rejected.at]
    assert later, "the final text came after the 429"
    assert later[0].at - rejected.at >= 1.5 - 0.1  # the channel was held for retry_after
    assert turn.status is TurnStatus.COMPLETE
    assert shown(fake, turn) == turn.text.rstrip() == "You said: Name three colours."


async def test_op7_reconnect_mid_reply_loses_nothing(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, engine={"max_tokens": 200})
    alice = ConversationKey("discord", DM, None, "1001")
    bob = ConversationKey("discord", str(9_001_002), None, "1002")
    engine = ScriptedEngine(lambda m: essay(120) if "rain" in m[-1].content else echo(m), delay=0.03)
    async with make_app(settings, engine) as app:
        await fake.user_says("Explain how rain forms, step by step.")
        await wait_until(lambda: fake.edits(DM), what="the reply streaming")
        await fake.force_reconnect()
        # Sent while the bot is away: Discord replays it on RESUME.
        await fake.user_says("Hello!", user=("1002", "bob"))
        first = await wait_reply(app.store, alice)
        second = await wait_reply(app.store, bob)
        assert app.status()["discord"] == "running"

    assert fake.resumes == 1
    assert fake.identifies == 1
    assert first.status is second.status is TurnStatus.COMPLETE
    assert shown(fake, first) == first.text.rstrip() == essay(120)
    assert shown(fake, second) == second.text.rstrip() == "You said: Hello!"
    assert fake.rejected == []


async def test_long_answer_rolls_over_before_2000_chars(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, engine={"max_tokens": 1000})
    key = ConversationKey("discord", DM, None, "1001")
    async with make_app(settings, ScriptedEngine(lambda _: essay(600))) as app:
        await fake.user_says("Write a very long essay.")
        turn = await wait_reply(app.store, key)

    assert turn.status is TurnStatus.COMPLETE
    assert turn.text == essay(600)
    assert len(turn.text) > 4000
    parts = [str(fake.messages[i]["content"]) for i in turn.message_ids]
    assert len(parts) >= 3
    assert all(0 < len(p) <= 2000 for p in parts)

    def squeeze(text: str) -> str:  # cuts drop whitespace and may close/reopen code fences
        return re.sub(r"\s+|```\w*", "", text)

    assert squeeze("".join(parts)) == squeeze(turn.text)
    assert_within_bucket(fake, DM)


async def test_a_rejected_token_is_a_clear_error_and_undoes_the_start(fake: FakeDiscord) -> None:
    before = endpoints.current()
    connector = DiscordConnector(discord_settings(fake, token="wrong"))
    with pytest.raises(ConnectorError, match="discord: the token was rejected"):
        await connector.start(Inbox())
    assert endpoints.current() == before  # the failed start put discord.py's endpoints back
    assert connector.status() == "failed"
    await connector.stop()  # safe after a failed start
    assert connector.status() == "failed"  # until a start succeeds


async def test_a_gateway_that_dies_after_start_up_is_logged_and_reported(
    fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    connector = DiscordConnector(discord_settings(fake, connect_timeout=20))
    await connector.start(Inbox())
    try:
        assert connector.status() == "running"
        await fake.end_session(4004)  # discord.py does not reconnect after "authentication failed"
        await wait_until(lambda: connector.status() == "failed", 10, what="status failed")
        await wait_until(lambda: "gateway connection ended" in caplog.text, 10, what="the error logged")
    finally:
        await connector.stop()
    (record,) = [r for r in caplog.records if "gateway connection ended" in r.getMessage()]
    assert record.levelname == "ERROR"
    assert record.exc_info is not None
    assert "4004" in str(record.exc_info[1])
    assert connector.status() == "failed"


async def test_sharded_client_delivers_messages(fake: FakeDiscord) -> None:
    connector = DiscordConnector(discord_settings(fake, shards=1, connect_timeout=20))
    inbox = Inbox()
    await connector.start(inbox)
    try:
        assert connector.status() == "running"
        asked = await fake.user_says(" hi  there", where="channel", user=("1003", "carol"), mention=True)
        await fake.user_says("not for the bot", where="channel")
        message = await wait_for_message(inbox)
        unaddressed = await wait_for_message(inbox)
    finally:
        await connector.stop()
        await connector.stop()  # idempotent
    assert connector.status() == "stopped"
    assert fake.last_identify["shard"] == [0, 1]
    assert message.message_id == asked
    assert message.text == "hi there"
    assert (message.channel, message.user, message.user_name) == (fake.channel_id, "1003", "carol")
    assert message.addressed
    assert not message.is_direct
    assert message.thread is None
    assert not unaddressed.addressed


async def wait_for_message(inbox: Inbox) -> Any:
    import asyncio

    return await asyncio.wait_for(inbox.messages.get(), 10)
