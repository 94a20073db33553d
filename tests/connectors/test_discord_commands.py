"""Slash commands on Discord: the app (scripted engine) and discord.py against the wire-level fake.

Each test checks what the fake ends up showing (the original response, followups, who can see
them) against what the core did (stored turns, channel settings), and that the deferral came
within Discord's 3 s.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from bot.conversation import ConversationKey
from bot.store import TurnStatus
from connectors.discord import DiscordConnector
from connectors.discord.interactions import InteractionHandle
from plugins.core import plugin as core_plugin
from tests.conftest import MakeSettings
from tests.connectors.conftest import Inbox, essay
from tests.connectors.test_discord import WINDOW, discord_settings
from tests.fakes.discord import EPHEMERAL, MANAGE_GUILD, FakeDiscord, FakeInteraction
from tests.support import ScriptedEngine, make_app, scripted_engine, wait_reply, wait_until


@pytest.fixture
def fake(fake_discord: FakeDiscord) -> FakeDiscord:
    return fake_discord


async def answer(interaction: FakeInteraction, count: int = 1) -> list[dict[str, Any]]:
    """The visible answers, once there are ``count`` of them."""
    await wait_until(lambda: len(interaction.visible()) >= count, what=f"{count} answers")
    return interaction.visible()


def deferred_in_time(interaction: FakeInteraction) -> bool:
    return interaction.acked_at is not None and interaction.acked_at - interaction.at < 3.0


def options(fake: FakeDiscord, name: str, scope: str = "global") -> list[dict[str, Any]]:
    return [
        {k: v for k, v in option.items() if k in ("type", "name", "required", "choices", "max_length")}
        for option in fake.registered_command(name, scope)["options"]
    ]


async def test_commands_are_registered_in_the_guilds_and_ping_answers(
    fake: FakeDiscord, make_settings: MakeSettings
) -> None:
    settings = make_settings(discord=discord_settings(fake, guild_ids=fake.guild_id), web={"enabled": False})
    async with make_app(settings) as app:
        assert app.status()["discord"] == "running"
        ping = await fake.use_command("ping")
        (shown,) = await answer(ping)

    assert set(fake.registered) == {fake.guild_id}, "guild sync instead of global"
    names = {command["name"] for command in fake.registered[fake.guild_id]}
    assert {"help", "ask", "reset", "stop", "system", "scope", "listen", "stats", "ping"} <= names
    choices = [{"name": "shared", "value": "shared"}, {"name": "per-user", "value": "per-user"}]
    assert options(fake, "scope", fake.guild_id) == [{"type": 3, "name": "mode", "required": True, "choices": choices}]
    assert options(fake, "ask", fake.guild_id) == [{"type": 3, "name": "prompt", "required": True, "max_length": 4000}]
    assert options(fake, "system", fake.guild_id) == [
        {"type": 3, "name": "text", "required": False, "max_length": 4000}
    ]
    assert options(fake, "ping", fake.guild_id) == []
    assert all("default_member_permissions" not in c for c in fake.registered[fake.guild_id])

    assert deferred_in_time(ping)
    assert not ping.ephemeral
    assert shown is ping.original
    assert shown["content"].startswith("pong (")
    assert shown["content"].endswith("you are discord:1001)")
    assert not shown["flags"] & EPHEMERAL
    assert len(ping.answers) == 1


async def test_ask_streams_into_the_original_response(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, engine={"max_tokens": 200})
    key = ConversationKey("discord", fake.channel_id, None, "1001")
    async with make_app(settings, ScriptedEngine(lambda _: essay(150), delay=0.03)) as app:
        ask = await fake.use_command("ask", {"prompt": "Write a detailed essay about the history of sailing ships."})
        turn = await wait_reply(app.store, key)
        engine = scripted_engine(app)

    assert "global" in fake.registered
    assert deferred_in_time(ask)
    original = ask.original
    assert original is not None
    assert turn.status is TurnStatus.COMPLETE
    assert turn.message_ids == (original["id"],)
    assert original["content"] == turn.text.rstrip() == essay(150)
    assert engine.prompts[-1][-1].content == "Write a detailed essay about the history of sailing ships."
    edits = [c for c in fake.edits(fake.channel_id) if c.interaction == ask.id]
    assert len(edits) >= 3, "placeholder, growing text, final text"
    assert fake.max_edits_in_window(fake.channel_id, WINDOW) <= 5
    assert fake.rejected == []


async def test_admin_commands_need_an_admin(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(
        discord=discord_settings(fake), web={"enabled": False}, admins=["discord:1003"], engine={"max_tokens": 8}
    )
    async with make_app(settings) as app:
        store = app.store
        refused = await fake.use_command("system", {"text": "Talk like a pirate."})
        (refusal,) = await answer(refused)
        assert store.channel_settings("discord", fake.channel_id).system_prompt is None

        manager = await fake.use_command("system", {"text": "Talk like a pirate."}, permissions=MANAGE_GUILD)
        (accepted,) = await answer(manager)
        assert store.channel_settings("discord", fake.channel_id).system_prompt == "Talk like a pirate."

        listed = await fake.use_command("system", {"text": "reset"}, user=("1003", "carol"))
        (reset,) = await answer(listed)
        assert store.channel_settings("discord", fake.channel_id).system_prompt is None

    # A refusal is seen by the caller only: the deferral itself was ephemeral.
    assert refused.ephemeral
    assert refusal is refused.original
    assert refusal["flags"] & EPHEMERAL
    assert refusal["content"] == "Only admins can use /system."
    # Manage Server: a public deferral and answer.
    assert not manager.ephemeral
    assert accepted is manager.original
    assert not accepted["flags"] & EPHEMERAL
    assert accepted["content"].startswith("System prompt set")
    # PARLEY_ADMINS without Manage Server: deferred ephemerally, so the public answer replaces it.
    original = listed.original
    assert listed.ephemeral
    assert original is not None
    assert original.get("deleted")
    assert reset is not original
    assert not reset["flags"] & EPHEMERAL
    assert reset["content"] == "System prompt reset to the default."
    assert all(deferred_in_time(i) for i in (refused, manager, listed))


async def test_bad_arguments_get_a_private_usage_message(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, engine={"max_tokens": 8})
    async with make_app(settings) as app:
        wrong = await fake.use_command("scope", {"mode": "everyone"}, permissions=MANAGE_GUILD)
        (usage,) = await answer(wrong)
        extra = await fake.use_command("ping", {"loud": True})
        (unknown,) = await answer(extra)
        scope = app.store.channel_settings("discord", fake.channel_id).scope

    # The deferral was public (an admin's command); the ephemeral answer replaced it.
    original = wrong.original
    assert not wrong.ephemeral
    assert original is not None
    assert original.get("deleted")
    assert usage["flags"] & EPHEMERAL
    assert usage["content"].startswith("mode must be one of shared, per-user, not 'everyone'")
    assert "Usage: /scope <shared|per-user>" in usage["content"]
    assert unknown["flags"] & EPHEMERAL
    assert "unknown option 'loud'" in unknown["content"]
    assert all("Traceback" not in m["content"] for m in (usage, unknown))
    assert scope.value == "per-user"


async def test_stop_ends_a_streaming_ask(fake: FakeDiscord, make_settings: MakeSettings) -> None:
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, engine={"max_tokens": 600})
    key = ConversationKey("discord", fake.channel_id, None, "1001")
    async with make_app(settings, ScriptedEngine(lambda _: essay(600), delay=0.05)) as app:
        ask = await fake.use_command("ask", {"prompt": "Write a long story about a dragon and a knight."})
        await wait_until(lambda: ask.original is not None and len(ask.original["content"]) > 20, what="streaming")
        stop = await fake.use_command("stop")
        exchange = app.chat.running[key]
        await wait_until(lambda: exchange.stopped, what="the stop")
        await asyncio.sleep(0.5)
        written = exchange.text
        turn = await wait_reply(app.store, key)
        (stopped,) = await answer(stop)
        assert scripted_engine(app).busy == 0  # the engine stopped generating

    # Checked by what was generated, not by wall-clock time (the CPU may be shared): generation
    # ended at the stop, far short of the reply's budget, and nothing came after it.
    assert turn.status is TurnStatus.STOPPED
    assert turn.text == written, "nothing was generated after the stop"
    assert turn.token_count is not None
    assert turn.token_count < 300
    assert essay(600).startswith(turn.text.rstrip())
    assert ask.original is not None
    assert ask.original["content"] == turn.text.rstrip()
    assert stopped["content"] == "Stopped."
    assert stopped["flags"] & EPHEMERAL
    assert deferred_in_time(stop)


async def test_interactions_become_command_requests(fake: FakeDiscord) -> None:
    inbox = Inbox(core_plugin.router.commands)
    connector = DiscordConnector(discord_settings(fake, connect_timeout=20))
    await connector.start(inbox)
    try:
        await fake.use_command("scope", {"mode": "shared"}, where="thread", permissions=MANAGE_GUILD)
        in_thread = await asyncio.wait_for(inbox.requests.get(), 10)
        await fake.use_command("ping", where="dm", user=("1002", "bob"))
        in_dm = await asyncio.wait_for(inbox.requests.get(), 10)
    finally:
        await connector.stop()

    assert (in_thread.platform, in_thread.name, in_thread.args) == ("discord", "scope", {"mode": "shared"})
    assert (in_thread.channel, in_thread.thread, in_thread.user) == (fake.channel_id, fake.thread_id, "1001")
    assert in_thread.is_admin
    assert not in_thread.is_direct
    assert in_thread.user_name == "alice"
    destination = in_thread.reply_destination()
    assert (destination.channel, destination.thread, destination.is_group) == (fake.channel_id, fake.thread_id, True)
    assert destination.handle is not None
    assert (in_dm.channel, in_dm.thread, in_dm.user, in_dm.args) == (str(9_001_002), None, "1002", {})
    assert in_dm.is_direct
    assert not in_dm.is_admin
    assert in_dm.reply_destination().is_group is False


async def test_answers_fill_the_original_then_follow_up(fake: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    # A guild the bot is not in: registration fails, is logged, and the bot still runs.
    connector = DiscordConnector(discord_settings(fake, guild_ids="12345", connect_timeout=20))
    inbox = Inbox(core_plugin.router.commands)
    await connector.start(inbox)
    try:
        ask = await fake.use_command("ask", {"prompt": "hi"})
        destination = (await asyncio.wait_for(inbox.requests.get(), 10)).reply_destination()
        first = await connector.send(destination, "one")
        second = await connector.send(destination, "two")
        await connector.edit(second, "two, edited")
        await connector.edit(first, "one, edited")
        private = await connector.send(dataclasses.replace(destination, ephemeral=True), "only you")
        await connector.edit(private, "only you, edited")
        handle = destination.handle
        assert isinstance(handle, InteractionHandle)
        handle.expires = 0.0  # past the token's 15 minutes: a long answer goes on in the channel
        late = await connector.send(destination, "three")
    finally:
        await connector.stop()

    assert "could not register the slash commands in guild 12345" in caplog.text
    original = ask.original
    assert original is not None
    assert (first.id, original["content"]) == (original["id"], "one, edited")
    shown = [(m["content"], bool(m["flags"] & EPHEMERAL)) for m in ask.visible()]
    assert shown == [("one, edited", False), ("two, edited", False), ("only you, edited", True)]
    assert second.id == ask.answers[1]["id"]
    assert all(
        c.body.get("allowed_mentions") == {"parse": []} for c in fake.calls if c.interaction and "content" in c.body
    )
    (post,) = [c for c in fake.posts(fake.channel_id) if not c.interaction]
    assert (post.message, post.body["content"]) == (late.id, "three")
