"""Personas: named system prompts from settings, chosen per conversation with /persona."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import Parley
from bot.conversation import CommandRequest, IncomingMessage
from bot.errors import ConfigError
from bot.settings import load_settings
from tests.conftest import MakeSettings
from tests.support import make_app, scripted_engine, wait_idle
from tests.test_plugins import Collecting
from tests.test_streamer import roomy

UNLIMITED = {"messages_per_minute": 0}
PERSONAS = {"pirate": "Talk like a pirate.", "poet": "Answer in verse."}


def dm(user: str, text: str = "Hello") -> IncomingMessage:
    return IncomingMessage("recording", f"D-{user}", user, "", text, is_direct=True, user_name=user)


def in_channel(user: str, text: str = "Hello") -> IncomingMessage:
    return IncomingMessage("recording", "C1", user, "", text, user_name=user)


async def run(app: Parley, message: IncomingMessage, command: str, args: str = "", *, admin: bool = False) -> str:
    replies = Collecting()
    request = CommandRequest(
        message.platform,
        message.channel,
        message.user,
        command,
        args,
        thread=message.thread,
        is_direct=message.is_direct,
        is_admin=admin,
    )
    await app.chat.commands.run(request, replies)
    return "\n".join(text for text, _ in replies.texts)


async def system_for(app: Parley, message: IncomingMessage) -> str:
    app.chat.submit(message, roomy())
    await wait_idle(app)
    return scripted_engine(app).prompts[-1][0].content


async def test_a_persona_applies_to_its_conversation_only_and_survives_a_restart(make_settings: MakeSettings) -> None:
    settings = make_settings(web={"enabled": False}, personas=PERSONAS, limits=UNLIMITED)
    async with make_app(settings) as app:
        listing = await run(app, dm("U1"), "persona")
        assert "Persona: none (the default system prompt)." in listing
        assert "- pirate: Talk like a pirate." in listing
        assert "- poet: Answer in verse." in listing
        answer = await run(app, dm("U1"), "persona", "Pirate")
        assert answer == "Persona set to pirate for this conversation; it applies from the next reply."
        assert await system_for(app, dm("U1")) == "Talk like a pirate."
        # Another conversation (the AstrBot trap): untouched.
        assert await system_for(app, dm("U2")) == settings.system_prompt
        assert await system_for(app, in_channel("U1")) == settings.system_prompt
    async with make_app(settings) as app:
        assert "Persona: pirate (chosen in this conversation)." in await run(app, dm("U1"), "persona")
        assert await system_for(app, dm("U1")) == "Talk like a pirate."
        assert await system_for(app, dm("U2")) == settings.system_prompt
        assert await run(app, dm("U1"), "persona", "off") == "This conversation uses the channel's persona again."
        assert await system_for(app, dm("U1")) == settings.system_prompt


async def test_system_overrides_the_persona(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"enabled": False}, personas=PERSONAS, limits=UNLIMITED)) as app:
        await run(app, in_channel("U1"), "persona", "poet")
        assert await system_for(app, in_channel("U1")) == "Answer in verse."
        await run(app, in_channel("A1"), "system", "Be terse.", admin=True)
        assert await system_for(app, in_channel("U1")) == "Be terse."
        assert "/system prompt overrides every persona" in await run(app, in_channel("U1"), "persona")
        await run(app, in_channel("A1"), "system", "reset", admin=True)
        assert await system_for(app, in_channel("U1")) == "Answer in verse."


async def test_admins_set_the_channel_default_and_lock_it(make_settings: MakeSettings) -> None:
    settings = make_settings(web={"enabled": False}, personas=PERSONAS, limits=UNLIMITED)
    async with make_app(settings) as app:
        refused = await run(app, in_channel("U1"), "persona", "default poet")
        assert refused == "Only admins can use /persona default."
        assert await run(app, in_channel("A1"), "persona", "default poet", admin=True) == (
            "This channel's default persona is now poet; it applies from the next reply."
        )
        assert await system_for(app, in_channel("U1")) == "Answer in verse."
        assert await system_for(app, in_channel("U2")) == "Answer in verse."
        assert await system_for(app, dm("U1")) == settings.system_prompt  # another channel
        await run(app, in_channel("U1"), "persona", "pirate")
        assert await system_for(app, in_channel("U1")) == "Talk like a pirate."
        assert await system_for(app, in_channel("U2")) == "Answer in verse."

        await run(app, in_channel("A1"), "persona", "lock on", admin=True)
        assert await system_for(app, in_channel("U1")) == "Answer in verse."  # the choice waits, unused
        locked = await run(app, in_channel("U2"), "persona", "pirate")
        assert locked == "This channel's persona is locked; an admin can change its default."
        assert "Persona: poet (this channel's default)." in await run(app, in_channel("U1"), "persona")
        await run(app, in_channel("A1"), "persona", "lock off", admin=True)
        assert await system_for(app, in_channel("U1")) == "Talk like a pirate."
        await run(app, in_channel("A1"), "persona", "default off", admin=True)
        assert await system_for(app, in_channel("U2")) == settings.system_prompt


async def test_wrong_names_are_refused_with_the_choices(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"enabled": False}, personas=PERSONAS, limits=UNLIMITED)) as app:
        assert await run(app, dm("U1"), "persona", "wizard") == (
            "There is no persona 'wizard' (available: pirate, poet)."
        )
        assert await run(app, dm("U1"), "persona", "lock on") == "Only admins can use /persona lock."
        assert "Usage: /persona lock on|off" in await run(app, dm("A1"), "persona", "lock maybe", admin=True)
        assert "/persona [name] [value] — Show or choose the persona" in await run(app, dm("U1"), "help")
    async with make_app(make_settings(web={"enabled": False})) as app:
        assert "No personas are configured" in await run(app, dm("U1"), "persona")


async def test_personas_come_from_the_environment_and_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "Pirate.md").write_text("Arr, from a file.\n", encoding="utf-8")
    (folder / "teacher.md").write_text("Explain step by step.\n", encoding="utf-8")
    (folder / "notes.txt").write_text("not a persona", encoding="utf-8")
    monkeypatch.setenv("PARLEY_PERSONA_DIR", str(folder))
    monkeypatch.setenv("PARLEY_PERSONAS__PIRATE", "Arr, from the environment.")
    monkeypatch.setenv("PARLEY_ENGINE__BACKEND", "openai")
    assert load_settings().personas == {"pirate": "Arr, from the environment.", "teacher": "Explain step by step."}

    monkeypatch.setenv("PARLEY_PERSONAS__LOCK", "x")
    with pytest.raises(ConfigError, match="'lock' cannot name a persona"):
        load_settings()
    monkeypatch.delenv("PARLEY_PERSONAS__LOCK")
    monkeypatch.setenv("PARLEY_PERSONA_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is not a directory"):
        load_settings()
