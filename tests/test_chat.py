"""The chat service with a scripted engine and a real SQLite store, through a recording connector."""

from __future__ import annotations

import asyncio

import pytest

from bot.chat import SHUTDOWN_NOTICE
from bot.conversation import ConversationKey, IncomingMessage
from bot.errors import EngineError
from bot.store import TurnStatus
from tests.conftest import MakeSettings
from tests.support import ScriptedEngine, long_story, make_app, wait_idle
from tests.test_streamer import roomy


def dm(text: str, message_id: str, user: str = "u1") -> IncomingMessage:
    return IncomingMessage(
        platform="recording", channel=f"dm-{user}", user=user, message_id=message_id, text=text, is_direct=True
    )


async def test_a_second_message_waits_for_the_first_reply_and_sees_it(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"enabled": False}), memory_store=True) as app:
        connector = roomy()
        app.chat.submit(dm("My cat is called Tom.", "m1"), connector)
        app.chat.submit(dm("What is my cat called?", "m2"), connector)
        app.chat.submit(dm("Thanks.", "m3"), connector)
        await wait_idle(app)

        key = ConversationKey("recording", "dm-u1", None, "u1")
        turns = await app.store.turns(await app.store.conversation(key))
        assert [(t.role, t.text) for t in turns if t.role == "user"] == [
            ("user", "My cat is called Tom."),
            ("user", "What is my cat called?"),
            ("user", "Thanks."),
        ]
        assert [t.role for t in turns] == ["user", "assistant"] * 3
        assert all(t.status is TurnStatus.COMPLETE for t in turns)
        # Each reply went to its own message (three placeholders) and holds the stored text.
        assert connector.messages() == [t.text.strip() for t in turns if t.role == "assistant"]
        # The second prompt held the first exchange.
        assert turns[2].token_count > turns[0].token_count + turns[1].token_count


async def test_unaddressed_messages_are_not_answered(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"enabled": False}), memory_store=True) as app:
        connector = roomy()
        message = IncomingMessage("recording", "group", "u1", "m1", "chatter", addressed=False)
        app.chat.submit(message, connector)
        await wait_idle(app)
        assert connector.calls == []


async def test_messages_during_shutdown_get_a_notice(make_settings: MakeSettings) -> None:
    app = make_app(make_settings(web={"enabled": False}), ScriptedEngine(long_story, delay=0.01))
    await app.start()
    connector = roomy()
    app.chat.submit(dm("Tell me a story.", "m1"), connector)
    stopping = asyncio.create_task(app.stop())
    await asyncio.sleep(0)
    app.chat.submit(dm("Are you there?", "m2", user="u2"), connector)
    await stopping
    texts = connector.messages()
    assert SHUTDOWN_NOTICE in texts
    # The reply that was running when the stop began was finished, not cut.
    assert len(texts) == 2
    assert all(t != "…" for t in texts)


class PreparedEngine(ScriptedEngine):
    """Records what the app asks it to read ahead; ``fail`` makes that an engine error."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.prepared: list[str] = []
        self.fail_prepare = fail

    async def prepare(self, system: str) -> None:
        self.prepared.append(system)
        if self.fail_prepare:
            raise EngineError("no room")


async def test_the_app_has_the_engine_read_the_system_prompt_ahead_at_start(make_settings: MakeSettings) -> None:
    engine = PreparedEngine()
    async with make_app(make_settings(system_prompt="Be brief."), engine) as app:
        assert app.ready
    assert engine.prepared == ["Be brief."]


async def test_a_failed_read_ahead_does_not_stop_the_start(
    make_settings: MakeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    engine = PreparedEngine(fail=True)
    async with make_app(make_settings(), engine) as app:
        assert app.ready
    assert engine.prepared
    assert "could not be read ahead: no room" in caplog.text
