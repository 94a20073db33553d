"""The durable inbox: stored before anything else, answered once, finished after a crash."""

from __future__ import annotations

import asyncio

import aiosqlite
import pytest

from bot.connector import SentMessage
from bot.conversation import Destination, IncomingMessage
from bot.inbox import Inbox, InboxState
from bot.store import Store, TurnStatus
from bot.streamer import CONTINUED_ABOVE, PLACEHOLDER
from tests.conftest import MakeSettings
from tests.support import RecordingConnector, ScriptedEngine, long_story, make_app, wait_idle, wait_until
from tests.test_streamer import roomy


def dm(text: str, message_id: str, user: str = "u1") -> IncomingMessage:
    return IncomingMessage("recording", f"dm-{user}", user, message_id, text, is_direct=True)


class CheckingConnector(RecordingConnector):
    """Fails the test's expectation unless the message is in the inbox before its placeholder."""

    inbox: Inbox | None = None
    unstored: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.unstored = []

    async def send(self, destination: Destination, text: str) -> SentMessage:
        assert self.inbox is not None
        stored = [entry.message.message_id for entry in await self.inbox.open_entries()]
        if destination.reply_to not in stored:
            self.unstored.append(str(destination.reply_to))
        return await super().send(destination, text)


async def test_a_message_is_stored_before_its_placeholder_and_done_after(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"enabled": False})) as app:
        connector = CheckingConnector(limits=roomy().limits)
        connector.inbox = app.chat.inbox
        for i in range(3):
            app.chat.submit(dm(f"hello {i}", f"m{i}", user=f"u{i % 2}"), connector)
        await wait_idle(app)
        assert connector.unstored == []
        assert len(connector.messages()) == 3
        assert await app.chat.inbox.depth() == 0
        rows = await app.store.db.execute_fetchall("SELECT message_id, state FROM inbox ORDER BY id")
        assert list(rows) == [("m0", "done"), ("m1", "done"), ("m2", "done")]


async def test_a_redelivered_message_is_answered_once_across_restarts(make_settings: MakeSettings) -> None:
    settings = make_settings(web={"enabled": False})
    connector = roomy()
    async with make_app(settings) as app:
        assert await app.chat.receive(dm("hi", "m1"), connector)
        assert not await app.chat.receive(dm("hi", "m1"), connector)  # e.g. a Slack retry
        await wait_idle(app)
    async with make_app(settings) as app:
        assert not await app.chat.receive(dm("hi", "m1"), connector)  # e.g. a Telegram update fetched again
        assert await app.chat.receive(dm("hi", "m2"), connector)  # a new message is answered
        await wait_idle(app)
    assert connector.messages() == ["You said: hi", "You said: hi"]


async def test_unanswered_and_cut_off_messages_are_answered_after_a_restart(make_settings: MakeSettings) -> None:
    """A stop that cannot wait (shutdown_timeout 0) leaves the inbox as a crash would."""
    settings = make_settings(web={"enabled": False}, shutdown_timeout=0, engine={"max_tokens": 30})
    connector = roomy()
    app = make_app(settings, ScriptedEngine(long_story, delay=0.05))
    app.attach(connectors=[connector])
    await app.start()
    for i in range(3):  # one conversation: the first streams, two wait behind it
        await app.chat.receive(dm(f"question {i}", f"m{i}"), connector)
    await app.chat.receive(dm("other", "o1", user="u2"), connector)
    await wait_until(lambda: any(len(text) > 20 for text in connector.texts.values()), what="a reply streaming")
    await app.stop()
    cut_off = dict(connector.texts)
    assert PLACEHOLDER in cut_off.values() or any(not t.endswith("word29") for t in cut_off.values())

    async with Store(settings.db_path) as store:
        open_entries = await Inbox(store).open_entries()
    assert [e.message.message_id for e in open_entries] == ["m0", "m1", "m2", "o1"]
    assert {e.state for e in open_entries} <= {InboxState.PENDING, InboxState.ANSWERING}

    engine = ScriptedEngine(long_story)
    app = make_app(settings, engine)
    app.attach(connectors=[connector])  # the platform the messages came from is back
    async with app:
        await wait_idle(app)
        assert await app.chat.inbox.depth() == 0
        # Every message got a complete answer, and no message is left as a placeholder.
        assert all(text.endswith("word29") for text in connector.texts.values()), connector.texts
        assert PLACEHOLDER not in connector.texts.values()
        # The cut-off replies were finished in the messages they had posted: one message per question.
        assert len(connector.texts) == 4
        key = app.chat.key_for(dm("", ""))
        turns = await app.store.turns(await app.store.conversation(key))
        history = [(t.role, t.text) for t in turns if t.status is not TurnStatus.SUPERSEDED]
        assert [text for role, text in history if role == "user"] == ["question 0", "question 1", "question 2"]
        assert all(t.status is TurnStatus.COMPLETE for t in turns if t.status is not TurnStatus.SUPERSEDED)
        # The answers after the restart saw the history without the cut-off attempt.
        last = next(p for p in reversed(engine.prompts) if p[-1].content == "question 2")
        assert [m.role for m in last if m.role != "system"] == ["user", "assistant"] * 2 + ["user"]


async def test_a_crash_after_the_question_is_stored_does_not_store_it_twice(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped (as a kill would) after the user's turn is stored and before its reply's turn exists:
    answered again after the restart, the question is in the history once."""
    settings = make_settings(web={"enabled": False}, shutdown_timeout=0, engine={"max_tokens": 30})
    connector = roomy()
    app = make_app(settings, ScriptedEngine(long_story))
    app.attach(connectors=[connector])
    await app.start()
    reached, never = asyncio.Event(), asyncio.Event()

    async def recall(*_args: object) -> str:  # between the user's turn and the reply's
        reached.set()
        await never.wait()
        return ""

    monkeypatch.setattr(app.chat.notes, "recall", recall)
    await app.chat.receive(dm("question 0", "m0"), connector)
    await asyncio.wait_for(reached.wait(), 10)
    await app.stop()
    async with Store(settings.db_path) as store:
        rows = await store.db.execute_fetchall("SELECT role, text FROM turns ORDER BY id")
    assert list(rows) == [("user", "question 0")]

    app = make_app(settings, ScriptedEngine(long_story))
    app.attach(connectors=[connector])
    async with app:
        await wait_idle(app)
        assert await app.chat.inbox.depth() == 0
        key = app.chat.key_for(dm("", ""))
        turns = await app.store.turns(await app.store.conversation(key))
        kept = [(t.role, t.text) for t in turns if t.status is not TurnStatus.SUPERSEDED]
        assert [role for role, _ in kept] == ["user", "assistant"], turns
        assert kept[0][1] == "question 0"
        assert kept[1][1].strip().endswith("word29")


async def test_a_resumed_reply_reuses_the_cut_off_messages() -> None:
    from bot.streamer import ReplyStreamer
    from tests.support import scripted

    connector = RecordingConnector()  # 200 characters per message
    destination = Destination("c1")
    first = await connector.send(destination, "partial answer, cut off")
    second = await connector.send(destination, "more of it")
    streamer = ReplyStreamer(connector, destination, resume=(first.id, second.id))
    await streamer.run(scripted(["a short ", "complete answer"]))
    assert connector.messages() == ["a short complete answer", CONTINUED_ABOVE]
    assert [call.kind for call in connector.calls[2:]] == ["edit", "edit"]


async def test_migration_adds_the_inbox_to_a_first_release_database(tmp_path: object) -> None:
    from pathlib import Path

    from bot.store import MIGRATIONS

    path = Path(str(tmp_path)) / "old.db"
    async with aiosqlite.connect(path) as db:
        await db.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
        await db.execute("INSERT INTO conversations (id, platform, channel, created_at) VALUES ('c', 'p', 'ch', 0)")
        await db.execute("INSERT INTO turns (conversation_id, role, text, created_at) VALUES ('c', 'user', 'kept', 0)")
        await db.commit()
    async with Store(path) as store:
        assert [t.text for t in await store.turns("c")] == ["kept"]
        assert await Inbox(store).depth() == 0
        async with store.db.execute("PRAGMA user_version") as cursor:
            assert await cursor.fetchone() == (len(MIGRATIONS),)
