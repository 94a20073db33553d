"""Several models on Telegram: /model as a bot command through python-telegram-bot against the fake."""

from __future__ import annotations

from typing import Any

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_telegram import PRIVATE, answered, telegram_settings
from tests.fakes.telegram import Chat, FakeTelegram
from tests.support import ScriptedModels, make_app, wait_until

OTHER = Chat(id=43, type="private")
ALICE = ConversationKey("telegram", "42", None, "42")
BOB = ConversationKey("telegram", "43", None, "43")
MODELS: dict[str, Any] = {"fast": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "fast-1"}}


async def test_a_model_switch_stays_in_its_chat_and_survives_a_restart(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    settings = make_settings(
        telegram=telegram_settings(fake),
        web={"enabled": False},
        models=MODELS,
        limits={"messages_per_minute": 0},
    )
    async with make_app(settings, factory=ScriptedModels()) as app:
        assert "model" in {command["command"] for command in fake.menus["default"]}, "in the command menu"
        chose = fake.push(PRIVATE, "/model fast")
        await wait_until(lambda: bool(fake.replies_to(PRIVATE.id, chose)), what="the /model answer")
        assert "Model set to fast" in fake.replies_to(PRIVATE.id, chose)[0].text

        asked = fake.push(PRIVATE, "Which model?")
        turn, _ = await answered(app.store, fake, ALICE, PRIVATE, asked)
        assert turn.text == "[fast-1] You said: Which model?"
        other = fake.push(OTHER, "Which model?", user_id=43, first_name="Bob")
        turn, _ = await answered(app.store, fake, BOB, OTHER, other)
        assert turn.text == "You said: Which model?"

    async with make_app(settings, factory=ScriptedModels()) as app:
        again = fake.push(PRIVATE, "And now?")
        turn, shown = await answered(app.store, fake, ALICE, PRIVATE, again, replies=2)
        assert turn.text == "[fast-1] You said: And now?"
        assert "[fast-1]" in shown[-1].text
        other = fake.push(OTHER, "And now?", user_id=43, first_name="Bob")
        turn, _ = await answered(app.store, fake, BOB, OTHER, other, replies=2)
        assert turn.text == "You said: And now?"
