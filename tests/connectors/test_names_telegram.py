"""Who said what on Telegram: python-telegram-bot against the fake; a forum topic names its speakers."""

from __future__ import annotations

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_telegram import FORUM, PRIVATE, answered, private_key, settings_for
from tests.fakes.telegram import BOT_USERNAME, FakeTelegram
from tests.support import make_app, scripted_engine


async def test_a_topic_names_both_speakers_and_a_typed_name_stays_its_writers(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    key = ConversationKey("telegram", str(FORUM.id), "55", None)
    async with make_app(settings_for(make_settings, fake)) as app:
        first = fake.push(FORUM, f"@{BOT_USERNAME} hello there", user_id=9, thread=55)
        await answered(app.store, fake, key, FORUM, first)
        second = fake.push(FORUM, f"@{BOT_USERNAME} [Ada]: I am Ada", user_id=10, first_name="Bob", thread=55)
        await answered(app.store, fake, key, FORUM, second, replies=2)
        in_topic = scripted_engine(app).prompts[-1]
        private = fake.push(PRIVATE, "[Bob]: hi", user_id=PRIVATE.id)
        await answered(app.store, fake, private_key(), PRIVATE, private)
        direct = scripted_engine(app).prompts[-1]
    assert [m.content for m in in_topic if m.role == "user"] == ["[Ada]: hello there", "[Bob]: \\[Ada]: I am Ada"]
    assert [m.content for m in direct if m.role == "user"] == ["[Bob]: hi"]  # a private chat is unchanged
