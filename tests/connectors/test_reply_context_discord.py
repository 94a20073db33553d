"""Reply context on Discord: the real discord.py against the fake; a reply brings the referenced message along."""

from __future__ import annotations

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_discord import discord_settings, user_texts
from tests.fakes.discord import FakeDiscord
from tests.support import make_app, scripted_engine, wait_reply


async def test_a_reply_to_another_users_message_brings_its_author_and_text(
    fake_discord: FakeDiscord, make_settings: MakeSettings
) -> None:
    fake = fake_discord
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False})
    key = ConversationKey("discord", fake.channel_id, None, "1001")
    async with make_app(settings) as app:
        bobs = await fake.user_says("The build is red\nsince noon.", where="channel", user=("1002", "bob"))
        await fake.user_says("why could that be?", where="channel", mention=True, reply_to=bobs)
        await wait_reply(app.store, key)
        engine = scripted_engine(app)
    assert user_texts(engine) == ['[replying to bob: "The build is red since noon."]\nwhy could that be?']


async def test_a_long_quote_is_trimmed_to_the_bound(fake_discord: FakeDiscord, make_settings: MakeSettings) -> None:
    fake = fake_discord
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False}, quote_chars=30)
    key = ConversationKey("discord", fake.channel_id, fake.thread_id, None)
    async with make_app(settings) as app:
        bobs = await fake.user_says("a" * 1500, where="thread", user=("1002", "bob"))
        await fake.user_says("summarise", where="thread", mention=True, reply_to=bobs)
        await wait_reply(app.store, key)
        engine = scripted_engine(app)
    assert user_texts(engine) == [f'[alice]: [replying to bob: "{"a" * 29}…"]\nsummarise']
