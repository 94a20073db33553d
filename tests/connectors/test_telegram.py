"""The Telegram connector: real python-telegram-bot, real model, a wire-level Bot API fake on loopback.

Every test runs the real app (``Parley``) with the connector polling the fake. The fake refuses
calls that break Telegram's pacing (about 1/s per chat, 20/min per group, any wait it asked for),
so "no refused calls" means the bot stayed within the limits.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from bot.app import Parley
from bot.connector import InboundSink
from bot.conversation import ConversationKey
from bot.settings import TelegramSettings
from bot.store import Turn, TurnStatus
from connectors.telegram.connector import TelegramConnector, api_urls
from connectors.telegram.render import to_html, visible_text
from tests.conftest import MakeSettings
from tests.fakes.telegram import BOT_USERNAME, TOKEN, BotMessage, Chat, FakeTelegram

PRIVATE = Chat(id=42, type="private")
GROUP = Chat(id=-1001, type="supergroup", title="community")
FORUM = Chat(id=-1002, type="supergroup", title="forum", is_forum=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def settings_for(make_settings: MakeSettings, fake: FakeTelegram, **engine: Any) -> Any:
    return make_settings(
        telegram=TelegramSettings(token=TOKEN, base_url=fake.url, poll_timeout=1),
        web={"enabled": False},
        engine=engine,
    )


async def finished(app: Parley, key: ConversationKey, replies: int = 1) -> list[Turn]:
    """The conversation's turns once ``replies`` assistant turns are complete."""
    conversation_id = await app.store.conversation(key)
    turns = await app.store.turns(conversation_id)
    done = [t for t in turns if t.role == "assistant" and t.status is TurnStatus.COMPLETE]
    return turns if len(done) >= replies else []


async def wait_answered(
    app: Parley, fake: FakeTelegram, key: ConversationKey, chat: Chat, message_id: int, replies: int = 1
) -> tuple[Turn, list[BotMessage]]:
    """Wait until the reply to ``message_id`` is stored complete and shown in full on the fake."""
    state: dict[str, Any] = {}

    async def check() -> bool:
        turns = await finished(app, key, replies)
        if not turns:
            return False
        reply = [t for t in turns if t.role == "assistant"][replies - 1]
        shown = "".join(m.text for m in fake.replies_to(chat.id, message_id))
        state["turn"] = reply
        return shown.replace("\n", "") == visible_text(to_html(reply.text)).replace("\n", "") or (
            len(fake.replies_to(chat.id, message_id)) > 1 and len(shown) >= len(reply.text) * 0.9
        )

    for _ in range(1200):
        if await check():
            return state["turn"], fake.replies_to(chat.id, message_id)
        await _sleep(0.1)
    raise AssertionError(f"no complete reply to {message_id}; calls: {[c.method for c in fake.calls][-20:]}")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def assert_paced(fake: FakeTelegram, chat: Chat) -> None:
    calls = fake.paced_calls(chat.id)
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert all(gap >= fake.min_gap for gap in gaps), gaps
    assert fake.refused("pacing") == []
    assert fake.refused("not_modified") == []


def private_key(user: int = 42) -> ConversationKey:
    return ConversationKey("telegram", str(PRIVATE.id), None, str(user))


def test_api_urls_accept_root_or_bot_suffix() -> None:
    root = TelegramSettings(base_url="http://127.0.0.1:9/")
    assert api_urls(root) == ("http://127.0.0.1:9/bot", "http://127.0.0.1:9/file/bot")
    explicit = TelegramSettings(base_url="http://h/bot", base_file_url="http://h/file/bot")
    assert api_urls(explicit) == ("http://h/bot", "http://h/file/bot")
    assert api_urls(TelegramSettings())[0] == "https://api.telegram.org/bot"


def test_markdown_renders_to_telegram_html() -> None:
    html = to_html("# Hi\n\n**bold** and `x<y` & [link](https://example.org)\n\n- one\n- two\n\n```py\na<b\n```")
    assert "<b>Hi</b>" in html
    assert "<b>bold</b>" in html
    assert "<code>x&lt;y</code>" in html
    assert '<a href="https://example.org">link</a>' in html
    assert "• one\n• two" in html
    assert '<pre><code class="language-py">a&lt;b</code></pre>' in html
    assert to_html("**unclosed") == "**unclosed"


async def test_private_chat_streams_with_edits_and_delivers_final_text(
    make_settings: MakeSettings, fake: FakeTelegram
) -> None:
    async with Parley(settings_for(make_settings, fake, max_tokens=160)) as app:
        assert app.status()["telegram"] == "running"
        asked = fake.push(PRIVATE, "Tell me about the history of the bicycle.")
        turn, sent = await wait_answered(app, fake, private_key(), PRIVATE, asked)
    assert len(sent) == 1
    message = sent[0]
    assert message.edits >= 1
    assert message.text == visible_text(to_html(turn.text))
    assert words(message.text) == words(visible_text(to_html(turn.text)))
    assert turn.message_ids == (str(message.message_id),)
    assert any(c.method == "sendChatAction" for c in fake.calls)
    assert_paced(fake, PRIVATE)
    assert fake.refused() == []


async def test_group_needs_mention_reply_or_command(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    async with Parley(settings_for(make_settings, fake)) as app:
        ignored = fake.push(GROUP, "what is the capital of France?", user_id=7)
        other_bot = fake.push(GROUP, "/ask@some_other_bot hello", user_id=7)
        asked = fake.push(GROUP, f"@{BOT_USERNAME} what is the capital of France?", user_id=7)
        key = ConversationKey("telegram", str(GROUP.id), None, "7")
        _turn, sent = await wait_answered(app, fake, key, GROUP, asked)
        turns = await app.store.turns(await app.store.conversation(key))
        assert turns[0].text == "what is the capital of France?"  # the bot's handle is not for the model
        assert fake.replies_to(GROUP.id, ignored) == []
        assert fake.replies_to(GROUP.id, other_bot) == []

        followup = fake.push(GROUP, "and of Italy?", user_id=7, reply_to=sent[-1])
        await wait_answered(app, fake, key, GROUP, followup, replies=2)
    assert_paced(fake, GROUP)
    assert fake.refused() == []


async def test_forum_topic_reply_lands_in_topic(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    async with Parley(settings_for(make_settings, fake)) as app:
        asked = fake.push(FORUM, f"@{BOT_USERNAME} hello there", user_id=9, thread=55)
        key = ConversationKey("telegram", str(FORUM.id), "55", None)
        _, sent = await wait_answered(app, fake, key, FORUM, asked)
    assert [(m.thread, m.reply_to) for m in sent] == [(55, asked)]
    actions = [c for c in fake.calls if c.method == "sendChatAction"]
    assert actions
    assert actions[0].params.get("message_thread_id") == "55"


async def test_retry_after_on_edit_delays_but_keeps_final_text(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    fake.fail(
        "editMessageText", code=429, description="Too Many Requests: retry after 2", parameters={"retry_after": 2}
    )
    async with Parley(settings_for(make_settings, fake, max_tokens=96)) as app:
        asked = fake.push(PRIVATE, "Write a short poem about the sea.")
        turn, sent = await wait_answered(app, fake, private_key(), PRIVATE, asked)
    assert sent[-1].text == visible_text(to_html(turn.text))
    injected = fake.refused("injected")
    assert len(injected) == 1
    later = [c for c in fake.paced_calls(PRIVATE.id) if c.at > injected[0].at]
    assert later
    assert later[0].at - injected[0].at >= 2.0
    assert fake.refused("pacing") == []


async def test_refused_entities_fall_back_to_plain_text(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    def html(params: dict[str, Any]) -> bool:
        return params.get("parse_mode") == "HTML"

    fake.fail("sendMessage", description="Bad Request: can't parse entities: bad tag", when=html, times=100)
    fake.fail("editMessageText", description="Bad Request: can't parse entities: bad tag", when=html, times=100)
    async with Parley(settings_for(make_settings, fake)) as app:
        asked = fake.push(PRIVATE, "Give me three tips for learning to code.")
        conversation_id = await app.store.conversation(private_key())

        async def done() -> bool:
            turns = await app.store.turns(conversation_id)
            sent = fake.replies_to(PRIVATE.id, asked)
            return (
                bool(turns)
                and turns[-1].status is TurnStatus.COMPLETE
                and bool(sent)
                and sent[-1].text == turns[-1].text
            )

        for _ in range(600):
            if await done():
                break
            await _sleep(0.1)
        turns = await app.store.turns(conversation_id)
    message = fake.replies_to(PRIVATE.id, asked)[-1]
    assert message.parse_mode is None
    assert message.text == turns[-1].text
    assert fake.refused("pacing") == []


async def test_long_answer_continues_in_new_messages(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    async with Parley(settings_for(make_settings, fake, max_tokens=1300)) as app:
        essay = "Write a long, detailed essay about the history of the Roman Empire, with many sections."
        asked = fake.push(PRIVATE, essay)
        turn, sent = await wait_answered(app, fake, private_key(), PRIVATE, asked)
    assert len(turn.text) > app.connectors[0].limits.max_message_length
    assert len(sent) >= 2
    assert all(len(m.text) <= 4096 for m in sent)
    assert words("".join(m.text for m in sent)) == words(visible_text(to_html(turn.text)))
    assert_paced(fake, PRIVATE)
    assert fake.refused() == []


async def test_second_message_is_queued_behind_running_reply(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    async with Parley(settings_for(make_settings, fake, max_tokens=96)) as app:
        first = fake.push(PRIVATE, "What is a prime number?")
        await fake.wait_for(lambda: bool(fake.replies_to(PRIVATE.id, first)))
        second = fake.push(PRIVATE, "And what is a composite number?")
        await wait_answered(app, fake, private_key(), PRIVATE, second, replies=2)
        turns = await app.store.turns(await app.store.conversation(private_key()))
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[0].text == "What is a prime number?"
    assert turns[2].text == "And what is a composite number?"
    first_done = max(
        c.at for c in fake.paced_calls(PRIVATE.id) if c.params.get("message_id") == turns[1].message_ids[-1]
    )
    second_edits = [c for c in fake.paced_calls(PRIVATE.id) if c.params.get("message_id") == turns[3].message_ids[-1]]
    assert all(c.at > first_done for c in second_edits)  # not interleaved
    assert_paced(fake, PRIVATE)


async def test_restart_keeps_the_conversation(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    settings = settings_for(make_settings, fake)
    async with Parley(settings) as app:
        first = fake.push(PRIVATE, "My name is Ada.")
        await wait_answered(app, fake, private_key(), PRIVATE, first)
    async with Parley(settings) as app:
        second = fake.push(PRIVATE, "What is my name?")
        await wait_answered(app, fake, private_key(), PRIVATE, second, replies=2)
        turns = await app.store.turns(await app.store.conversation(private_key()))
    assert [t.text for t in turns[:1]] == ["My name is Ada."]
    assert turns[2].text == "What is my name?"
    assert len(fake.replies_to(PRIVATE.id, first)) == 1  # the confirmed update was not delivered again


async def test_stop_is_idempotent_and_safe_after_failed_start(fake: FakeTelegram) -> None:
    connector = TelegramConnector(TelegramSettings(token="1:wrong", base_url=fake.url))

    class Sink:
        def submit(self, message: Any, connector: Any) -> None:
            raise AssertionError("no message expected")

    with pytest.raises(Exception, match="refused"):
        await connector.start(cast("InboundSink", Sink()))
    await connector.stop()
    await connector.stop()
