"""Personas and memory on Telegram: bot commands through python-telegram-bot against the fake."""

from __future__ import annotations

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_telegram import PRIVATE, answered, telegram_settings
from tests.fakes.telegram import Chat, FakeTelegram
from tests.support import make_app, scripted_engine, wait_until

OTHER = Chat(id=43, type="private")


async def test_a_persona_and_a_note_apply_to_their_owners_chat_only(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    settings = make_settings(
        telegram=telegram_settings(fake),
        web={"enabled": False},
        personas={"pirate": "Talk like a pirate."},
        limits={"messages_per_minute": 0},
    )
    async with make_app(settings) as app:
        engine = scripted_engine(app)
        chose = fake.push(PRIVATE, "/persona pirate")
        await wait_until(lambda: bool(fake.replies_to(PRIVATE.id, chose)), what="the /persona answer")
        kept = fake.push(PRIVATE, "/remember My dog is called Rex.")
        await wait_until(lambda: bool(fake.replies_to(PRIVATE.id, kept)), what="the /remember answer")
        assert "Persona set to pirate" in fake.replies_to(PRIVATE.id, chose)[0].text

        asked = fake.push(PRIVATE, "What is my dog called?")
        await answered(app.store, fake, ConversationKey("telegram", "42", None, "42"), PRIVATE, asked)
        alice = engine.prompts[-1]
        other = fake.push(OTHER, "What is my dog called?", user_id=43, first_name="Bob")
        await answered(app.store, fake, ConversationKey("telegram", "43", None, "43"), OTHER, other)
        bob = engine.prompts[-1]

    assert alice[0].content == "Talk like a pirate."
    assert "My dog is called Rex." in alice[-1].content
    assert bob[0].content == settings.system_prompt
    assert all("Rex" not in m.content for m in bob)
