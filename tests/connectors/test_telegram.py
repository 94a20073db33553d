"""The Telegram connector: real python-telegram-bot against a wire-level Bot API fake on loopback.

One test runs the whole app on the bundled model; the others answer with the scripted engine,
which records the prompts it was given. The fake refuses calls that break Telegram's pacing
(about 1/s per chat, 20/min per group, any wait it asked for), so "no refused calls" means the bot
stayed within the limits; it shows what Telegram would show (``parse_html`` of the HTML sent).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from telegram.error import NetworkError
from telegram.ext import Application

from bot.conversation import ConversationKey
from bot.errors import ConfigError, ConnectorError
from bot.settings import Settings, TelegramSettings
from bot.store import Store, Turn, TurnStatus
from connectors.telegram.connector import TelegramConnector, api_urls
from connectors.telegram.render import to_html
from tests.conftest import MakeSettings
from tests.connectors.conftest import Inbox, essay
from tests.fakes.telegram import BOT_USERNAME, TOKEN, BotMessage, Chat, FakeTelegram, parse_html
from tests.support import (
    ScriptedEngine,
    echo,
    make_app,
    scripted_engine,
    stored_turns,
    wait_reply,
    wait_until,
)

PRIVATE = Chat(id=42, type="private")
GROUP = Chat(id=-1001, type="supergroup", title="community")
FORUM = Chat(id=-1002, type="supergroup", title="forum", is_forum=True)


@pytest.fixture
def fake(fake_telegram: FakeTelegram) -> FakeTelegram:
    return fake_telegram


def telegram_settings(fake: FakeTelegram, **overrides: Any) -> TelegramSettings:
    """The connector pointed at ``fake``, polling briefly."""
    return TelegramSettings(**({"token": TOKEN, "base_url": fake.url, "poll_timeout": 1} | overrides))


def settings_for(make_settings: MakeSettings, fake: FakeTelegram, *, native: bool = True, **engine: Any) -> Settings:
    """``native=False`` streams private chats by editing, as groups are (for tests of edits)."""
    return make_settings(
        telegram=telegram_settings(fake, group_edit_interval=1.0, native_streaming=native),
        web={"enabled": False},
        engine=engine,
    )


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def shown(fake: FakeTelegram, chat: Chat, message_id: int) -> str:
    """What the chat shows of the bot's replies to ``message_id``, one message a line."""
    return "\n".join(m.text for m in fake.replies_to(chat.id, message_id))


async def answered(
    store: Store, fake: FakeTelegram, key: ConversationKey, chat: Chat, message_id: int, replies: int = 1
) -> tuple[Turn, list[BotMessage]]:
    """The ``replies``-th reply, complete, once the chat shows all of it in reply to ``message_id``."""
    turn = await wait_reply(store, key, replies, timeout=240)
    assert turn.status is TurnStatus.COMPLETE, turn
    expected = words(parse_html(to_html(turn.text)))
    await wait_until(lambda: words(shown(fake, chat, message_id)) == expected, what="the whole reply shown")
    return turn, fake.replies_to(chat.id, message_id)


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
    assert parse_html(html) == "Hi\n\nbold and x<y & link\n\n• one\n• two\n\na<b"  # Telegram accepts it
    assert to_html("**unclosed") == "**unclosed"


async def test_private_chat_on_the_real_model_streams_as_drafts(
    make_settings: MakeSettings, fake: FakeTelegram
) -> None:
    """End to end: the bundled model's words, streamed as drafts into one reply sent once."""
    async with make_app(settings_for(make_settings, fake), real_engine=True) as app:
        assert app.status()["telegram"] == "running"
        asked = fake.push(PRIVATE, "Tell me about the history of the bicycle.")
        turn, sent = await answered(app.store, fake, private_key(), PRIVATE, asked)
    (message,) = sent
    assert message.edits == 0
    assert fake.drafts_to(PRIVATE.id)
    assert len([c for c in fake.calls if c.method == "sendMessage"]) == 1
    assert message.text == parse_html(to_html(turn.text))
    assert turn.message_ids == (str(message.message_id),)
    assert any(c.method == "sendChatAction" for c in fake.calls)
    assert_paced(fake, PRIVATE)
    assert fake.refused() == []


async def test_group_needs_mention_reply_or_command(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    async with make_app(settings_for(make_settings, fake)) as app:
        ignored = fake.push(GROUP, "what is the capital of France?", user_id=7)
        other_bot = fake.push(GROUP, "/ask@some_other_bot hello", user_id=7)
        asked = fake.push(GROUP, f"@{BOT_USERNAME} what is the capital of France?", user_id=7)
        key = ConversationKey("telegram", str(GROUP.id), None, "7")
        turn, sent = await answered(app.store, fake, key, GROUP, asked)
        assert turn.text == "You said: what is the capital of France?"  # the bot's handle is not for the model
        assert fake.replies_to(GROUP.id, ignored) == []
        assert fake.replies_to(GROUP.id, other_bot) == []

        followup = fake.push(GROUP, "and of Italy?", user_id=7, reply_to=sent[-1])
        await answered(app.store, fake, key, GROUP, followup, replies=2)
        engine = scripted_engine(app)
    assert len(engine.prompts) == 2  # nothing else reached the model
    users = [m.content for m in engine.prompts[-1] if m.role == "user"]
    quote = '[replying to Parley: "You said: what is the capital of France?"]'
    assert users == ["what is the capital of France?", f"{quote}\nand of Italy?"]  # the reply quotes the bot
    assert_paced(fake, GROUP)
    assert fake.refused() == []


async def test_forum_topic_reply_lands_in_topic(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    async with make_app(settings_for(make_settings, fake)) as app:
        asked = fake.push(FORUM, f"@{BOT_USERNAME} hello there", user_id=9, thread=55)
        key = ConversationKey("telegram", str(FORUM.id), "55", None)
        _, sent = await answered(app.store, fake, key, FORUM, asked)
    assert [(m.thread, m.reply_to, m.text) for m in sent] == [(55, asked, "You said: [Ada]: hello there")]
    actions = [c for c in fake.calls if c.method == "sendChatAction"]
    assert actions
    assert actions[0].params.get("message_thread_id") == "55"


async def test_retry_after_on_edit_delays_but_keeps_final_text(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    fake.fail(
        "editMessageText", code=429, description="Too Many Requests: retry after 2", parameters={"retry_after": 2}
    )
    async with make_app(settings_for(make_settings, fake, native=False)) as app:
        asked = fake.push(PRIVATE, "Write a short poem about the sea.")
        turn, sent = await answered(app.store, fake, private_key(), PRIVATE, asked)
    assert sent[-1].text == turn.text == "You said: Write a short poem about the sea."
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
    tips = "**Three tips:** read code, write code, and *ask* for reviews."
    async with make_app(settings_for(make_settings, fake), ScriptedEngine(lambda _: tips)) as app:
        asked = fake.push(PRIVATE, "Give me three tips for learning to code.")
        turn = await wait_reply(app.store, private_key())
        await wait_until(lambda: shown(fake, PRIVATE, asked) == tips, what="the plain Markdown shown")
    message = fake.replies_to(PRIVATE.id, asked)[-1]
    assert turn.text == tips
    assert message.parse_mode is None
    assert message.text == tips
    assert fake.refused("injected")  # HTML was tried first
    assert fake.refused("pacing") == []


async def test_long_answer_continues_in_new_messages(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    settings = settings_for(make_settings, fake, max_tokens=1000)
    async with make_app(settings, ScriptedEngine(lambda _: essay(800))) as app:
        asked = fake.push(PRIVATE, "Write a long, detailed essay.")
        turn, sent = await answered(app.store, fake, private_key(), PRIVATE, asked)
        limit = app.connectors[0].limits.max_message_length
    assert turn.text == essay(800)
    assert len(turn.text) > limit
    assert len(sent) >= 2
    assert all(len(m.text) <= limit for m in sent)
    assert words("\n".join(m.text for m in sent)) == words(turn.text)
    assert_paced(fake, PRIVATE)
    assert fake.refused() == []


async def test_second_message_is_queued_behind_running_reply(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    engine = ScriptedEngine(lambda m: essay(60) if "prime" in m[-1].content else echo(m), delay=0.03)
    async with make_app(settings_for(make_settings, fake, native=False, max_tokens=96), engine) as app:
        first = fake.push(PRIVATE, "What is a prime number?")
        await wait_until(lambda: fake.replies_to(PRIVATE.id, first), what="the first reply")
        second = fake.push(PRIVATE, "And what is a composite number?")
        await answered(app.store, fake, private_key(), PRIVATE, second, replies=2)
        turns = await stored_turns(app.store, private_key())
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert [t.text for t in turns] == [
        "What is a prime number?",
        essay(60),
        "And what is a composite number?",
        "You said: And what is a composite number?",
    ]
    first_done = max(
        c.at for c in fake.paced_calls(PRIVATE.id) if c.params.get("message_id") == turns[1].message_ids[-1]
    )
    second_edits = [c for c in fake.paced_calls(PRIVATE.id) if c.params.get("message_id") == turns[3].message_ids[-1]]
    assert all(c.at > first_done for c in second_edits)  # not interleaved
    assert_paced(fake, PRIVATE)


async def test_restart_keeps_the_conversation(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    settings = settings_for(make_settings, fake)
    async with make_app(settings) as app:
        first = fake.push(PRIVATE, "My name is Ada.")
        await answered(app.store, fake, private_key(), PRIVATE, first)
    async with make_app(settings) as app:
        second = fake.push(PRIVATE, "What is my name?")
        await answered(app.store, fake, private_key(), PRIVATE, second, replies=2)
        turns = await stored_turns(app.store, private_key())
        engine = scripted_engine(app)
    assert [t.text for t in turns[:1]] == ["My name is Ada."]
    assert turns[2].text == "What is my name?"
    (prompt,) = engine.prompts  # the new process answered once, with the old history
    assert [m.content for m in prompt if m.role != "system"] == [
        "My name is Ada.",
        "You said: My name is Ada.",
        "What is my name?",
    ]
    assert len(fake.replies_to(PRIVATE.id, first)) == 1  # the confirmed update was not delivered again


async def test_stop_is_idempotent_and_safe_after_failed_start(fake: FakeTelegram) -> None:
    connector = TelegramConnector(TelegramSettings(token="1:wrong", base_url=fake.url))
    with pytest.raises(ConfigError, match="refused"):
        await connector.start(Inbox())
    assert connector.status() == "failed"
    await connector.stop()
    await connector.stop()
    assert connector.status() == "failed"


async def test_a_start_that_fails_after_initialize_shuts_the_application_down(
    fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.fail("deleteWebhook", code=500, description="Internal Server Error")  # the first call of start_polling
    connector = TelegramConnector(TelegramSettings(token=TOKEN, base_url=fake.url, poll_timeout=1))
    built: list[Application[Any, Any, Any, Any, Any, Any]] = []
    build = connector._build

    def remember() -> Application[Any, Any, Any, Any, Any, Any]:
        built.append(build())
        return built[-1]

    monkeypatch.setattr(connector, "_build", remember)
    with pytest.raises(ConnectorError, match="polling did not start"):
        await connector.start(Inbox())
    (app,) = built
    assert [c.method for c in fake.calls][:1] == ["getMe"]  # initialize() had run
    assert connector.status() == "failed"
    assert not app.running
    assert app.updater is not None
    assert not app.updater.running
    with pytest.raises(NetworkError, match="not initialized"):
        await app.bot.get_me()  # its HTTP client was shut down with the application
    await connector.stop()  # nothing left to stop
