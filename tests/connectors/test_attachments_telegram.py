"""Attachments on Telegram: python-telegram-bot against the fake, files fetched with getFile and the file URL."""

from __future__ import annotations

import pytest

from bot.attachments import NO_VISION
from bot.conversation import Attachment, ConversationKey, IncomingMessage
from bot.inbox import Inbox
from bot.store import Store
from connectors.telegram.render import to_html
from tests.conftest import MakeSettings
from tests.connectors.test_telegram import GROUP, PRIVATE, answered, settings_for, shown, words
from tests.fakes.telegram import BOT_USERNAME, TOKEN, Chat, FakeTelegram, parse_html
from tests.files import JPEG, tiny_pdf
from tests.support import make_app, scripted_engine, wait_idle, wait_reply, wait_until

KEY = ConversationKey("telegram", str(PRIVATE.id), None, "42")


async def noted_then_answered(
    store: Store, fake: FakeTelegram, key: ConversationKey, chat: Chat, message_id: int
) -> list[str]:
    """The bot's messages in reply to ``message_id`` once the reply is complete: the note, then the reply."""
    turn = await wait_reply(store, key)
    expected = words(parse_html(to_html(turn.text)))
    await wait_until(lambda: words(shown(fake, chat, message_id))[-len(expected) :] == expected, what="the reply")
    return [m.text for m in fake.replies_to(chat.id, message_id)]


async def test_a_text_file_and_a_pdf_are_read_into_the_turn(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    csv = b"name,score\nada,42\nbob,17\n"
    async with make_app(settings_for(make_settings, fake)) as app:
        first = fake.push(PRIVATE, "who scored more?", document=("scores.csv", "text/csv", csv))
        await answered(app.store, fake, KEY, PRIVATE, first)
        text_prompt = scripted_engine(app).prompts[-1][-1].content
        second = fake.push(PRIVATE, "", document=("minutes.pdf", "application/pdf", tiny_pdf("Budget approved: 300")))
        await answered(app.store, fake, KEY, PRIVATE, second, replies=2)
        pdf_prompt = scripted_engine(app).prompts[-1]
    assert text_prompt == (
        'who scored more?\n\nAttached file "scores.csv" (text/csv):\n```\nname,score\nada,42\nbob,17\n\n```'
    )
    assert pdf_prompt[-1].content == (
        'Attached file "minutes.pdf" (application/pdf, 1 page):\n```\nBudget approved: 300\n```'
    )
    assert "scores.csv" in pdf_prompt[-3].content  # the earlier file stays in the history
    assert len(fake.downloads) == 2
    assert not fake.refused()


async def test_a_photo_to_a_text_only_model_gets_one_line_and_the_caption_is_answered(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    group_key = ConversationKey("telegram", str(GROUP.id), None, "7")
    async with make_app(settings_for(make_settings, fake)) as app:
        alone = fake.push(PRIVATE, "", photo=JPEG)
        await wait_until(lambda: fake.replies_to(PRIVATE.id, alone), what="the note")
        await wait_idle(app)
        captioned = fake.push(GROUP, f"@{BOT_USERNAME} what colour is it?", user_id=7, photo=JPEG)
        shown_in_group = await noted_then_answered(app.store, fake, group_key, GROUP, captioned)
        prompts = scripted_engine(app).prompts
    note = f"{NO_VISION} (not seen: photo.jpg)."
    assert shown(fake, PRIVATE, alone) == note  # the whole answer: nothing else to read
    assert shown_in_group == [note, "You said: what colour is it?"]
    assert len(prompts) == 1
    assert prompts[0][-1].content == "what colour is it?"
    assert fake.downloads == []  # never downloaded for a model that cannot see it


async def test_a_file_over_the_limit_is_refused_without_downloading(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    settings = settings_for(make_settings, fake).model_copy(
        update={"attachments": make_settings().attachments.model_copy(update={"max_bytes": 1000})}
    )
    async with make_app(settings) as app:
        sent = fake.push(PRIVATE, "summarise", document=("big.txt", "text/plain", b"x" * 5000))
        replies = await noted_then_answered(app.store, fake, KEY, PRIVATE, sent)
        prompt = scripted_engine(app).prompts[-1][-1].content
    assert replies == ["📎 big.txt was not read: it is 5,000 bytes; the limit is 1,000 bytes.", "You said: summarise"]
    assert prompt == "summarise"
    assert fake.downloads == []


async def test_a_voice_note_is_named_as_not_read(make_settings: MakeSettings, fake_telegram: FakeTelegram) -> None:
    fake = fake_telegram
    async with make_app(settings_for(make_settings, fake)) as app:
        voice = {"file_id": "VOICE1", "file_unique_id": "v1", "duration": 2, "file_size": 900}
        sent = fake.push(PRIVATE, "", media={"voice": voice})
        await wait_until(lambda: fake.replies_to(PRIVATE.id, sent), what="the note")
        await wait_idle(app)
        prompts = scripted_engine(app).prompts
    assert shown(fake, PRIVATE, sent) == "📎 voice.ogg was not read: only text, PDF, image files are read."
    assert prompts == []


async def test_after_a_restart_the_user_is_asked_to_send_the_file_again(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    settings = settings_for(make_settings, fake)

    async def never(_limit: int) -> bytes:
        raise AssertionError("a download handle does not outlive the process")

    waiting = IncomingMessage(
        "telegram",
        str(PRIVATE.id),
        "42",
        "5",
        "what is in it?",
        is_direct=True,
        attachments=(Attachment("notes.txt", "text/plain", 10, never),),
    )
    async with Store(settings.db_path) as store:  # stored before a crash, never answered
        assert await Inbox(store).add(waiting) is not None
    async with make_app(settings) as app:
        replies = await noted_then_answered(app.store, fake, KEY, PRIVATE, 5)
        prompt = scripted_engine(app).prompts[-1][-1].content
    assert replies == [
        "📎 notes.txt was not read: the bot restarted before downloading it; please send it again.",
        "You said: what is in it?",
    ]
    assert prompt == "what is in it?"


async def test_a_file_telegram_will_not_serve_is_named_and_no_token_is_logged(
    make_settings: MakeSettings, fake_telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_telegram
    fake.fail("getFile", description="Bad Request: file is too big")
    async with make_app(settings_for(make_settings, fake)) as app:
        big = fake.push(PRIVATE, "", document=("huge.log", "text/plain", b"declared small"))
        await wait_until(lambda: fake.replies_to(PRIVATE.id, big), what="the note")
        await wait_idle(app)
        fake.fail("getFile", code=500, description="Internal Server Error")
        broken = fake.push(PRIVATE, "", document=("notes.txt", "text/plain", b"hello"))
        await wait_until(lambda: fake.replies_to(PRIVATE.id, broken), what="the second note")
        await wait_idle(app)
    assert shown(fake, PRIVATE, big) == "📎 huge.log was not read: it is larger than the limit of 10.0 MB."
    assert shown(fake, PRIVATE, broken) == "📎 notes.txt was not read: the download failed."
    assert "downloading a file failed (" in caplog.text  # logged, by its error's class only
    assert TOKEN not in caplog.text
    assert TOKEN.split(":")[1] not in caplog.text
