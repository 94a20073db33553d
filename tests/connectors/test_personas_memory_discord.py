"""Personas and memory on Discord: native commands through discord.py against the fake."""

from __future__ import annotations

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_discord import discord_settings
from tests.connectors.test_discord_commands import answer
from tests.fakes.discord import FakeDiscord
from tests.support import make_app, scripted_engine, wait_reply

ALICE, BOB = ("1001", "alice"), ("1002", "bob")


def dm_key(user: tuple[str, str]) -> ConversationKey:
    return ConversationKey("discord", str(9_000_000 + int(user[0])), None, user[0])


async def test_a_persona_and_a_note_apply_to_their_owners_dm_only(
    fake_discord: FakeDiscord, make_settings: MakeSettings
) -> None:
    fake = fake_discord
    settings = make_settings(
        discord=discord_settings(fake),
        web={"enabled": False},
        personas={"pirate": "Talk like a pirate."},
        limits={"messages_per_minute": 0},
    )
    async with make_app(settings) as app:
        engine = scripted_engine(app)
        chosen = await fake.use_command("persona", {"name": "pirate"}, where="dm")
        (shown,) = await answer(chosen)
        assert "Persona set to pirate" in shown["content"]
        kept = await fake.use_command("remember", {"note": "My dog is called Rex."}, where="dm")
        await answer(kept)

        await fake.user_says("What is my dog called?", where="dm")
        await wait_reply(app.store, dm_key(ALICE))
        alice = engine.prompts[-1]
        await fake.user_says("What is my dog called?", where="dm", user=BOB)
        await wait_reply(app.store, dm_key(BOB))
        bob = engine.prompts[-1]

    assert alice[0].content == "Talk like a pirate."
    assert "My dog is called Rex." in alice[-1].content
    assert bob[0].content == settings.system_prompt
    assert all("Rex" not in m.content for m in bob)
