"""The SQLite store on a real file."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

from bot.conversation import ConversationKey, Scope
from bot.errors import StoreError
from bot.store import MIGRATIONS, ChannelSettings, Store, TurnStatus

KEY = ConversationKey("telegram", "42", None, "7")


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    async with Store(path) as store:
        conversation = await store.conversation(KEY)
        await store.add_turn(conversation, "user", "hello")
        await store.add_turn(conversation, "assistant", "hi there", token_count=3, message_ids=("m1", "m2"))
    async with Store(path) as store:
        assert await store.conversation(KEY) == conversation
        turns = await store.turns(conversation)
        assert [(t.role, t.text) for t in turns] == [("user", "hello"), ("assistant", "hi there")]
        assert turns[1].message_ids == ("m1", "m2")
        assert turns[1].token_count == 3
        found = await store.get_conversation(conversation)
        assert found is not None
        assert found.key == KEY


async def test_reply_cut_off_by_a_crash_is_marked_interrupted_with_its_text(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    store = Store(path)
    await store.open()
    conversation = await store.conversation(KEY)
    turn = await store.add_turn(conversation, "assistant", "", status=TurnStatus.STREAMING)
    await store.update_turn(turn, text="half a rep")
    # Simulate a crash: the connection is dropped without any clean-up of the turn.
    await store.close()
    async with Store(path) as reopened:
        assert reopened.recovered == 1
        (saved,) = await reopened.turns(conversation)
        assert saved.status is TurnStatus.INTERRUPTED
        assert saved.text == "half a rep"


async def test_keys_with_and_without_thread_or_user_are_distinct(tmp_path: Path) -> None:
    async with Store(tmp_path / "p.db") as store:
        ids = {
            await store.conversation(ConversationKey("slack", "C1")),
            await store.conversation(ConversationKey("slack", "C1", "t1")),
            await store.conversation(ConversationKey("slack", "C1", None, "U1")),
            await store.conversation(ConversationKey("slack", "C1", "t1", "U1")),
        }
        assert len(ids) == 4
        assert await store.conversation(ConversationKey("slack", "C1", "t1")) in ids


async def test_reset_hides_earlier_turns_from_history_only(tmp_path: Path) -> None:
    async with Store(tmp_path / "p.db") as store:
        conversation = await store.conversation(KEY)
        await store.add_turn(conversation, "user", "old")
        await store.reset(conversation)
        await store.add_turn(conversation, "user", "new")
        assert [t.text for t in await store.turns(conversation)] == ["new"]
        assert [t.text for t in await store.turns(conversation, since_reset=False)] == ["old", "new"]


async def test_a_long_history_starts_from_a_turn_that_moves_on_in_steps(tmp_path: Path) -> None:
    async with Store(tmp_path / "p.db") as store:
        conversation = await store.conversation(KEY)
        await store.add_turn(conversation, "user", "before the reset")
        await store.reset(conversation)
        firsts = []
        for i in range(1, 31):
            await store.add_turn(conversation, "user", f"turn {i}")
            history = await store.history(conversation, window=10)
            assert history[-1].text == f"turn {i}"
            assert len(history) == i if i <= 10 else 5 <= len(history) <= 10
            firsts.append(history[0].text)
        # All of the first 10; then, with 11 to 14 turns, from turn 6; with 15 to 19, from 11; ...
        assert firsts[:10] == ["turn 1"] * 10
        assert firsts[10:] == [f"turn {(i - 5) // 5 * 5 + 1}" for i in range(11, 31)]
        assert firsts[10:14] == ["turn 6"] * 4


async def test_channel_settings_persist(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    async with Store(path) as store:
        assert store.channel_settings("discord", "1") == ChannelSettings()
        await store.set_channel_settings("discord", "1", ChannelSettings("Be terse.", Scope.SHARED))
    async with Store(path) as store:
        assert store.channel_settings("discord", "1") == ChannelSettings("Be terse.", Scope.SHARED)


async def test_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    async with Store(path):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this Parley"):
        await Store(path).open()


async def test_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open database"):
        await Store(blocker / "sub" / "p.db").open()


async def test_concurrent_lookups_of_a_new_key_agree(tmp_path: Path) -> None:
    async with Store(tmp_path / "p.db") as store:
        ids = await asyncio.gather(*(store.conversation(KEY) for _ in range(10)))
        assert len(set(ids)) == 1


async def test_channel_settings_changed_at_once_keep_both_changes(tmp_path: Path) -> None:
    """Two commands (/system and /scope) that each replace a field of the current settings."""
    async with Store(tmp_path / "p.db") as store:

        async def change(**fields: object) -> None:
            current = store.channel_settings("p", "c")
            await store.set_channel_settings("p", "c", dataclasses.replace(current, **fields))  # type: ignore[arg-type]

        await asyncio.gather(change(system_prompt="be brief"), change(scope=Scope.SHARED))
        assert store.channel_settings("p", "c") == ChannelSettings(system_prompt="be brief", scope=Scope.SHARED)
    async with Store(tmp_path / "p.db") as store:
        assert store.channel_settings("p", "c") == ChannelSettings(system_prompt="be brief", scope=Scope.SHARED)
