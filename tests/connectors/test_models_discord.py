"""Several models on Discord: /model as an application command through discord.py against the fake."""

from __future__ import annotations

from typing import Any

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_discord import discord_settings, shown
from tests.connectors.test_discord_commands import answer, options
from tests.fakes.discord import FakeDiscord
from tests.support import ScriptedModels, make_app, wait_reply

ALICE, BOB = ("1001", "alice"), ("1002", "bob")
MODELS: dict[str, Any] = {"fast": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "fast-1"}}


def dm_key(user: tuple[str, str]) -> ConversationKey:
    return ConversationKey("discord", str(9_000_000 + int(user[0])), None, user[0])


async def test_a_model_switch_stays_in_its_dm_and_survives_a_restart(
    fake_discord: FakeDiscord, make_settings: MakeSettings
) -> None:
    fake = fake_discord
    settings = make_settings(
        discord=discord_settings(fake), web={"enabled": False}, models=MODELS, limits={"messages_per_minute": 0}
    )
    async with make_app(settings, factory=ScriptedModels()) as app:
        assert [option["name"] for option in options(fake, "model")] == ["name", "value"]
        chosen = await fake.use_command("model", {"name": "fast"}, where="dm")
        (said,) = await answer(chosen)
        assert "Model set to fast" in said["content"]

        await fake.user_says("Which model?", where="dm")
        turn = await wait_reply(app.store, dm_key(ALICE))
        assert turn.text == shown(fake, turn) == "[fast-1] You said: Which model?"
        await fake.user_says("Which model?", where="dm", user=BOB)
        turn = await wait_reply(app.store, dm_key(BOB))
        assert turn.text == shown(fake, turn) == "You said: Which model?"

    async with make_app(settings, factory=ScriptedModels()) as app:
        await fake.user_says("And now?", where="dm")
        turn = await wait_reply(app.store, dm_key(ALICE), 2)
        assert turn.text == shown(fake, turn) == "[fast-1] You said: And now?"
        await fake.user_says("And now?", where="dm", user=BOB)
        turn = await wait_reply(app.store, dm_key(BOB), 2)
        assert turn.text == shown(fake, turn) == "You said: And now?"
