"""Reply context on Telegram: python-telegram-bot against the fake; a reply brings the replied-to message along."""

from __future__ import annotations

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_telegram import FORUM, GROUP, answered, settings_for
from tests.fakes.telegram import BOT_USERNAME, FakeTelegram
from tests.support import make_app, scripted_engine


async def test_a_reply_to_another_users_message_brings_its_author_and_text(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    key = ConversationKey("telegram", str(GROUP.id), None, "7")
    async with make_app(settings_for(make_settings, fake)) as app:
        bobs = fake.push(GROUP, "The meeting moved to\nThursday at 10.", user_id=8, first_name="Bob")
        asked = fake.push(GROUP, f"@{BOT_USERNAME} is that before lunch?", user_id=7, reply_to=bobs)
        await answered(app.store, fake, key, GROUP, asked)
        prompt = scripted_engine(app).prompts[-1]
        stored = await app.store.turns(await app.store.conversation(key))
    assert prompt[-1].content == '[replying to Bob: "The meeting moved to Thursday at 10."]\nis that before lunch?'
    assert stored[0].text == "is that before lunch?"  # the quote is in that turn's prompt, not in the history


async def test_a_long_quote_is_trimmed_and_a_topic_root_is_no_quote(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    settings = settings_for(make_settings, fake).model_copy(update={"quote_chars": 50})
    key = ConversationKey("telegram", str(FORUM.id), "55", None)
    async with make_app(settings) as app:
        plain = fake.push(FORUM, f"@{BOT_USERNAME} hello", user_id=7, thread=55)
        await answered(app.store, fake, key, FORUM, plain)
        first = scripted_engine(app).prompts[-1]
        long = fake.push(FORUM, "word " * 200, user_id=8, first_name="Bob", thread=55)
        asked = fake.push(FORUM, f"@{BOT_USERNAME} summarise", user_id=7, thread=55, reply_to=long)
        await answered(app.store, fake, key, FORUM, asked, replies=2)
        second = scripted_engine(app).prompts[-1]
    assert first[-1].content == "[Ada]: hello"  # the topic's service message is not quoted
    quoted = "word " * 9 + "word…"
    assert second[-1].content == f'[Ada]: [replying to Bob: "{quoted}"]\nsummarise'
    assert len(quoted) == 50
