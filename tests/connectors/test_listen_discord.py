"""Listen mode on Discord: the real discord.py against the fake; /listen as an application command."""

from __future__ import annotations

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_discord import discord_settings, user_texts
from tests.connectors.test_discord_commands import answer, options
from tests.fakes.discord import EPHEMERAL, MANAGE_GUILD, FakeDiscord
from tests.listen_support import heard_rows
from tests.support import make_app, scripted_engine, wait_reply, wait_until


async def test_listen_is_a_native_command_and_channel_chatter_reaches_a_mention(
    fake_discord: FakeDiscord, make_settings: MakeSettings
) -> None:
    fake = fake_discord
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, limits={"messages_per_minute": 0})
    key = ConversationKey("discord", fake.channel_id, None, "1001")
    async with make_app(settings) as app:
        refused = await fake.use_command("listen", {"mode": "on"})
        (refusal,) = await answer(refused)
        on = await fake.use_command("listen", {"mode": "on"}, permissions=MANAGE_GUILD)
        (accepted,) = await answer(on)
        await fake.user_says("The release is on Friday.", where="channel", user=("1002", "bob"))
        await fake.user_says("[bob]: no, Monday", where="channel", user=("1003", "carol"))
        await wait_until(lambda: len(heard_rows(app)) == 2, what="two kept messages")
        await fake.user_says("when is the release?", where="channel", mention=True)
        await wait_reply(app.store, key)
        engine = scripted_engine(app)
    choices = [{"name": "on", "value": "on"}, {"name": "off", "value": "off"}]
    assert options(fake, "listen") == [{"type": 3, "name": "mode", "required": False, "choices": choices}]
    assert refusal["content"] == "Only admins can use /listen on."
    assert refusal["flags"] & EPHEMERAL
    assert accepted["content"].startswith("Listen mode on:")
    assert user_texts(engine)[-1].endswith(
        "\n[bob]: The release is on Friday.\n[carol]: \\[bob]: no, Monday\n\nwhen is the release?"
    )
    assert len(engine.prompts) == 1  # the chatter itself was not answered
