"""Native commands on Telegram: the app (scripted engine) and python-telegram-bot against the wire-level fake.

Covers the command menu (setMyCommands per scope), ``/cmd`` and ``/cmd@bot`` messages run by the
core, permissions from getChatMember and ``PARLEY_ADMINS``, streamed ``/ask``, ``/stop``, usage
answers, commands for other bots, and the shutdown pause that leaves late updates with Telegram.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.chat import SHUTDOWN_NOTICE
from bot.command import Command
from bot.conversation import ConversationKey, Scope
from bot.settings import TelegramSettings
from bot.store import Store, TurnStatus
from connectors.telegram.connector import TelegramConnector
from connectors.telegram.render import to_html
from plugins.core import plugin as core_plugin
from tests.conftest import MakeSettings
from tests.connectors.conftest import Inbox, essay
from tests.fakes.telegram import BOT_USERNAME, TOKEN, Chat, FakeTelegram, parse_html
from tests.support import (
    ScriptedEngine,
    echo,
    make_app,
    scripted_engine,
    stored_turns,
    wait_last_reply,
    wait_turns,
    wait_until,
)

PRIVATE = Chat(id=42, type="private")
GROUP = Chat(id=-1001, type="supergroup", title="community")
OTHER_GROUP = Chat(id=-1003, type="supergroup", title="elsewhere")
MEMBER, CHAT_ADMIN, PARLEY_ADMIN = 7, 8, 99


@pytest.fixture
def fake(fake_telegram: FakeTelegram) -> FakeTelegram:
    return fake_telegram


def settings_for(make_settings: MakeSettings, fake: FakeTelegram, shutdown_timeout: float = 30, **engine: Any) -> Any:
    return make_settings(
        telegram=TelegramSettings(token=TOKEN, base_url=fake.url, poll_timeout=1, group_edit_interval=1.0),
        web={"enabled": False},
        admins=[f"telegram:{PARLEY_ADMIN}"],
        engine=engine,
        shutdown_timeout=shutdown_timeout,
    )


def long_for(topic: str, words: int = 600) -> ScriptedEngine:
    """A slow engine that writes ``words`` words about ``topic`` and echoes everything else."""
    return ScriptedEngine(lambda m: essay(words) if topic in m[-1].content else echo(m), delay=0.05)


async def answer(fake: FakeTelegram, chat: Chat, message_id: int, timeout: float = 30.0) -> str:
    """The text of the bot's first reply to ``message_id``."""
    await wait_until(lambda: fake.replies_to(chat.id, message_id), timeout, what=f"a reply to {message_id}")
    return fake.replies_to(chat.id, message_id)[0].text


def group_key(chat: Chat, user: int) -> ConversationKey:
    return ConversationKey("telegram", str(chat.id), None, str(user))


def no_tracebacks(fake: FakeTelegram) -> None:
    texts = [m.text for m in fake.messages.values()]
    assert not [t for t in texts if "Traceback" in t or "error was logged" in t], texts


async def test_menu_lists_commands_per_scope_and_commands_are_answered(
    make_settings: MakeSettings, fake: FakeTelegram
) -> None:
    async with make_app(settings_for(make_settings, fake)) as app:
        everyone = {c["command"]: c["description"] for c in fake.menus["default"]}
        admins = {c["command"] for c in fake.menus["all_chat_administrators"]}
        everyday = {"help", "ask", "reset", "stop", "persona", "model", "listen", "stats", "ping"}
        everyday |= {"remember", "memory", "forget"}
        assert set(everyone) == everyday
        assert admins == set(everyone) | {"system", "scope"}
        assert everyone["ping"] == "Check that the bot is alive"

        ping = fake.push(PRIVATE, "/ping")
        help_ = fake.push(GROUP, f"/help@{BOT_USERNAME}", user_id=MEMBER)
        start = fake.push(PRIVATE, "/start")
        unknown_here = fake.push(GROUP, f"/nope@{BOT_USERNAME}", user_id=MEMBER)
        other_bot = fake.push(GROUP, "/ping@some_other_bot", user_id=MEMBER)
        bare_unknown = fake.push(GROUP, "/weather Paris", user_id=MEMBER)
        no_prompt = fake.push(OTHER_GROUP, "/ask", user_id=MEMBER)

        assert (await answer(fake, PRIVATE, ping)).startswith("pong (")
        shown = await answer(fake, GROUP, help_)
        assert "/ask <prompt> — Ask the model something" in shown
        assert "/system" not in shown  # a member's help lists only what they may run
        assert (await answer(fake, PRIVATE, start)).startswith("Commands:")
        assert await answer(fake, GROUP, unknown_here) == "Unknown command /nope. Try /help."
        assert await answer(fake, OTHER_GROUP, no_prompt) == (
            "prompt is missing\nUsage: /ask <prompt> — Ask the model something in this conversation"
        )
        await asyncio.sleep(1.5)  # time for any wrong answer to show up
        assert fake.replies_to(GROUP.id, other_bot) == []
        assert fake.replies_to(GROUP.id, bare_unknown) == []
        assert app.store.channel_settings("telegram", str(GROUP.id)).scope is Scope.PER_USER
    assert [c for c in fake.calls if c.method == "getChatMember"]  # group commands asked who the caller is
    assert fake.refused() == []
    no_tracebacks(fake)


async def test_admin_commands_need_a_chat_admin_or_a_parley_admin(
    make_settings: MakeSettings, fake: FakeTelegram
) -> None:
    fake.members[(GROUP.id, CHAT_ADMIN)] = "administrator"
    async with make_app(settings_for(make_settings, fake)) as app:
        before = app.store.channel_settings("telegram", str(GROUP.id))
        refused = fake.push(GROUP, "/system You are a pirate.", user_id=MEMBER)
        assert await answer(fake, GROUP, refused) == "Only admins can use /system."
        assert app.store.channel_settings("telegram", str(GROUP.id)) == before

        by_chat_admin = fake.push(GROUP, "/system Answer like a pirate.", user_id=CHAT_ADMIN)
        assert (await answer(fake, GROUP, by_chat_admin)).startswith("System prompt set")
        assert app.store.channel_settings("telegram", str(GROUP.id)).system_prompt == "Answer like a pirate."

        bogus = fake.push(GROUP, "/scope bogus", user_id=PARLEY_ADMIN)
        assert (await answer(fake, GROUP, bogus)).startswith(
            "mode must be one of shared, per-user, not 'bogus'\nUsage: /scope <shared|per-user>"
        )
        shared = fake.push(GROUP, f"/scope@{BOT_USERNAME} shared", user_id=PARLEY_ADMIN)
        assert (await answer(fake, GROUP, shared)).startswith("This channel now shares one conversation")
        assert app.store.channel_settings("telegram", str(GROUP.id)).scope is Scope.SHARED
    assert fake.refused() == []
    no_tracebacks(fake)


async def test_ask_streams_an_answer_in_a_group(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    engine = ScriptedEngine(lambda _: "**Paris** is the capital of France.", delay=0.3)
    async with make_app(settings_for(make_settings, fake), engine) as app:
        short = fake.push(GROUP, "/ask What is the capital of France?", user_id=MEMBER)
        turn = await wait_last_reply(app.store, group_key(GROUP, MEMBER), TurnStatus.COMPLETE)
        rendered = parse_html(to_html(turn.text))
        await wait_until(lambda: "".join(m.text for m in fake.replies_to(GROUP.id, short)) == rendered, 10)
        turns = await stored_turns(app.store, group_key(GROUP, MEMBER))
    assert turns[0].text == "What is the capital of France?"
    assert engine.prompts[-1][-1].content == "What is the capital of France?"
    assert rendered == "Paris is the capital of France."
    (reply,) = fake.replies_to(GROUP.id, short)
    assert reply.edits >= 1  # streamed: a first part, then the rest
    assert fake.refused("pacing") == []


async def test_stop_ends_a_streaming_ask_and_frees_the_engine(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    key = group_key(GROUP, MEMBER)
    # shutdown_timeout 0: the last answer is cut off at the end; it only has to start.
    settings = settings_for(make_settings, fake, shutdown_timeout=0, max_tokens=600)
    async with make_app(settings, long_for("Roman")) as app:
        essay_asked = fake.push(GROUP, "/ask Write a long essay about the history of the Roman Empire.", user_id=MEMBER)
        await wait_until(lambda: fake.replies_to(GROUP.id, essay_asked) and app.chat.running, what="the reply")
        await wait_until(lambda: fake.replies_to(GROUP.id, essay_asked)[0].edits >= 1, what="streaming")
        running = app.chat.running[key]
        stop = fake.push(GROUP, "/stop", user_id=MEMBER)
        await wait_until(lambda: running.stopped, what="the stop")
        turn = await wait_last_reply(app.store, key, TurnStatus.STOPPED)
        assert await answer(fake, GROUP, stop) == "Stopped."
        assert not app.chat.running
        assert scripted_engine(app).busy == 0  # the engine is free
        edits = fake.replies_to(GROUP.id, essay_asked)[-1].edits
        assert turn.text
        # Judged by where generation ended, not by wall-clock time (the CPU may be shared).
        assert (turn.token_count or 0) < 300
        assert essay(600).startswith(turn.text.rstrip())

        # The next answer streams now, not after the rest of the essay.
        again = fake.push(PRIVATE, "/ask Tell me about the sea.")
        await wait_until(lambda: fake.replies_to(PRIVATE.id, again), what="the next answer")
        assert fake.replies_to(GROUP.id, essay_asked)[-1].edits == edits  # nothing followed the stop
    shown = "".join(m.text for m in fake.replies_to(GROUP.id, essay_asked))
    assert shown == parse_html(to_html(turn.text))
    assert fake.refused("pacing") == []


async def test_update_sent_during_shutdown_waits_for_the_next_run(
    make_settings: MakeSettings, fake: FakeTelegram
) -> None:
    # The first reply is still being written when intake pauses (60 words, 3 s) and finishes
    # within the shutdown timeout.
    settings = settings_for(make_settings, fake, shutdown_timeout=30, max_tokens=600)
    key = ConversationKey("telegram", str(PRIVATE.id), None, "42")
    app = make_app(settings, long_for("dragon", words=60))
    await app.start()
    connector = app.connectors[0]
    try:
        first = fake.push(PRIVATE, "Write a long story about a dragon and a knight.")
        # A private chat streams drafts: the reply's message comes with its final text.
        await wait_until(lambda: fake.drafts_to(PRIVATE.id) and app.chat.running, what="the first reply")
        stopping = asyncio.create_task(app.stop())
        await wait_until(lambda: connector.status() != "running", 10, what="intake paused")
        assert app.chat.running  # the reply is still being written while intake is paused
        late = fake.push(PRIVATE, "What did the knight do?")
        await stopping
    finally:
        await app.stop()
    async with Store(settings.db_path) as store:
        replies = [t for t in await stored_turns(store, key) if t.role == "assistant"]
    assert [(t.status, t.text) for t in replies] == [(TurnStatus.COMPLETE, essay(60))]
    assert fake.replies_to(PRIVATE.id, late) == []
    assert [u["message"]["message_id"] for u in fake.updates] == [late]  # not confirmed to Telegram
    assert SHUTDOWN_NOTICE not in [m.text for m in fake.messages.values()]

    async with make_app(settings) as again:
        await wait_until(lambda: fake.replies_to(PRIVATE.id, late), what="the late update answered")
        turns = await wait_turns(
            again.store, key, lambda turns: len([t for t in turns if t.role == "user"]) >= 2, what="two user turns"
        )
        engine = scripted_engine(again)
    assert [t.text for t in turns if t.role == "user"] == [
        "Write a long story about a dragon and a knight.",
        "What did the knight do?",
    ]
    assert engine.prompts[-1][-1].content == "What did the knight do?"
    assert len(fake.replies_to(PRIVATE.id, first)) == 1


async def test_menu_names_and_admin_private_chats(fake: FakeTelegram) -> None:
    core = core_plugin.router.commands
    dashed = Command("dice-roll", "Roll dice", (), core[0].handler)
    too_long = Command("x" * 33, "Too long for Telegram", (), core[0].handler)
    settings = TelegramSettings(token=TOKEN, base_url=fake.url, poll_timeout=1)
    connector = TelegramConnector(settings, admins=["telegram:5", "discord:5", "web:key"])
    inbox = Inbox([*core, dashed, too_long])
    await connector.start(inbox)
    try:
        assert "dice_roll" in {c["command"] for c in fake.menus["default"]}
        assert all(len(c["command"]) <= 32 for c in fake.menus["default"])
        assert {c["command"] for c in fake.menus["chat:5"]} >= {"system", "scope", "dice_roll"}
        assert set(fake.menus) == {"default", "all_chat_administrators", "chat:5"}
        typed = connector.commands.by_name["dice_roll"]
        assert typed.name == "dice-roll"
    finally:
        await connector.stop()
    assert inbox.messages.empty()
    assert inbox.requests.empty()
