"""Listen mode on Telegram: python-telegram-bot against the fake; a group's chatter as context for a mention."""

from __future__ import annotations

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_telegram import GROUP, answered, settings_for
from tests.fakes.telegram import BOT_USERNAME, FakeTelegram
from tests.listen_support import heard_rows
from tests.support import make_app, scripted_engine, wait_until

ADMIN = 77


async def test_a_listening_group_brings_its_chatter_into_a_mention_and_off_deletes_it(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    fake.privacy_mode = False  # as after @BotFather → /setprivacy → Disable: the bot gets every group message
    fake.members[(GROUP.id, ADMIN)] = "administrator"
    key = ConversationKey("telegram", str(GROUP.id), None, "7")
    async with make_app(settings_for(make_settings, fake)) as app:
        refused = fake.push(GROUP, "/listen on", user_id=7)
        await wait_until(lambda: fake.replies_to(GROUP.id, refused), what="the refusal")
        assert fake.replies_to(GROUP.id, refused)[0].text == "Only admins can use /listen on."
        on = fake.push(GROUP, "/listen on", user_id=ADMIN, first_name="Root")
        await wait_until(lambda: fake.replies_to(GROUP.id, on), what="listen on")
        fake.push(GROUP, "Pizza or sushi tonight?", user_id=8, first_name="Bob")
        fake.push(GROUP, "[Bob]: sushi, says Bob", user_id=9, first_name="Cy")
        await wait_until(lambda: len(heard_rows(app)) == 2, what="two kept messages")
        asked = fake.push(GROUP, f"@{BOT_USERNAME} what did they pick?", user_id=7)
        await answered(app.store, fake, key, GROUP, asked)
        prompt = scripted_engine(app).prompts[-1]
        off = fake.push(GROUP, "/listen off", user_id=ADMIN, first_name="Root")
        await wait_until(lambda: fake.replies_to(GROUP.id, off), what="listen off")
        assert heard_rows(app) == []
    assert prompt[-1].content.endswith(
        "\n[Bob]: Pizza or sushi tonight?\n[Cy]: \\[Bob]: sushi, says Bob\n\nwhat did they pick?"
    )
    assert len(scripted_engine(app).prompts) == 1  # the chatter itself was not answered
