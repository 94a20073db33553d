"""SIGKILL with work queued, then a restart: nothing is lost.

``parley run`` runs as a subprocess on the bundled model against the Telegram fake, served from
this test process, in its no-redelivery mode: an update is gone once fetched, as on a Bot API that
does not keep unconfirmed updates. Twelve private chats write at once; the process is killed while
the first replies stream. After the restart every one of the twelve has a complete answer, in the
message that was posted for it (no "…" left), the database passes ``PRAGMA integrity_check`` and
the conversation answered before the crash is intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from pathlib import Path

from bot.conversation import ConversationKey
from bot.store import Store, TurnStatus
from connectors.telegram.render import to_html
from tests.fakes.telegram import TOKEN, Chat, FakeTelegram, parse_html
from tests.support import stored_turns, wait_until

PLACEHOLDER = "…"
CHATS = [Chat(id=7100 + n, type="private") for n in range(12)]
EARLIER = Chat(id=7099, type="private")


def environment(db: Path, telegram: FakeTelegram) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return env | {
        "PARLEY_DB_PATH": str(db),
        "PARLEY_WEB__ENABLED": "false",
        "PARLEY_TELEGRAM__TOKEN": TOKEN,
        "PARLEY_TELEGRAM__BASE_URL": telegram.url,
        "PARLEY_TELEGRAM__BASE_FILE_URL": f"{telegram.url}/file/bot",
        "PARLEY_TELEGRAM__POLL_TIMEOUT": "1",
        "PARLEY_ENGINE__MAX_TOKENS": "24",
        "PARLEY_ENGINE__THREADS": "1",
        "PARLEY_ENGINE__TEMPERATURE": "0",
        "PARLEY_ENGINE__SEED": "42",
    }


async def launch(db: Path, telegram: FakeTelegram) -> asyncio.subprocess.Process:
    """``parley run``, once it says it is up; its log goes on being read (and dropped) meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=db.parent,
        env=environment(db, telegram),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    while not any("Parley is up" in line for line in lines[-1:]):
        line = (await asyncio.wait_for(process.stderr.readline(), 120)).decode()
        assert line, "parley run exited early:\n" + "".join(lines)
        lines.append(line)
    stderr = process.stderr

    async def drain() -> None:
        while await stderr.readline():
            pass

    process._drain = asyncio.ensure_future(drain())  # type: ignore[attr-defined]  # keep the pipe from filling
    return process


def open_entries(db: Path) -> int:
    """Inbox entries not answered yet (read while the bot runs: SQLite allows it)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM inbox WHERE state != 'done'").fetchone()
    return int(count)


def turn_rows(db: Path, chat: Chat) -> list[tuple[str, str, str]]:
    """A chat's stored turns, read without writing (the bot may be running)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as connection:
        rows = connection.execute(
            "SELECT t.role, t.text, t.status FROM turns t JOIN conversations c ON c.id = t.conversation_id"
            " WHERE c.platform = 'telegram' AND c.channel = ? ORDER BY t.id",
            (str(chat.id),),
        ).fetchall()
    return [(str(role), str(text), str(status)) for role, text, status in rows]


def shown(telegram: FakeTelegram, chat: Chat, message_id: int) -> list[str]:
    return [m.text for m in telegram.replies_to(chat.id, message_id)]


def key(chat: Chat) -> ConversationKey:
    return ConversationKey("telegram", str(chat.id), None, str(chat.id))


async def test_sigkill_with_twelve_messages_queued_then_restart_answers_all(tmp_path: Path) -> None:
    db = tmp_path / "parley.db"
    async with FakeTelegram(redeliver=False) as telegram:
        process = await launch(db, telegram)
        try:
            # A conversation answered before the crash: it must come through intact.
            earlier = telegram.push(EARLIER, "Say hello.", user_id=EARLIER.id)
            await wait_until(lambda: shown(telegram, EARLIER, earlier) not in ([], [PLACEHOLDER]), 60, what="hi")
            await wait_until(lambda: open_entries(db) == 0, 60, what="the first answer done")
            earlier_shown = shown(telegram, EARLIER, earlier)
            earlier_turns = turn_rows(db, EARLIER)
            asked = {
                chat.id: telegram.push(chat, f"Name a colour, number {n}.", user_id=chat.id)
                for n, chat in enumerate(CHATS)
            }
            edits = len(telegram.accepted_writes())

            def streaming() -> bool:
                # Private chats stream as drafts (no message until the final text); either counts.
                drafting = any(d.chat_id in asked and d.text for d in telegram.drafts)
                return drafting or any(
                    c.method == "editMessageText" and c.chat in asked for c in telegram.accepted_writes()[edits:]
                )

            await wait_until(streaming, 60, what="the first replies streaming")
            process.kill()  # no clean-up of any kind
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert all(u["update_id"] not in {x["update_id"] for x in telegram.updates} for u in telegram.fetched)
        unanswered = [c.id for c in CHATS if shown(telegram, c, asked[c.id]) in ([], [PLACEHOLDER])]
        assert unanswered, "the crash came before the replies were done"
        assert open_entries(db) >= len(unanswered), "what was not answered is in the inbox"
        with contextlib.closing(sqlite3.connect(db)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        process = await launch(db, telegram)
        try:
            await wait_until(lambda: open_entries(db) == 0, 120, what="every stored message answered")
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 60) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    with contextlib.closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert turn_rows(db, EARLIER) == earlier_turns, "the earlier turns are intact"
    assert [status for _, _, status in earlier_turns] == ["complete", "complete"]
    assert shown(telegram, EARLIER, earlier) == earlier_shown
    async with Store(db) as store:
        for chat in [EARLIER, *CHATS]:
            turns = [t for t in await stored_turns(store, key(chat)) if t.status is not TurnStatus.SUPERSEDED]
            assert [t.role for t in turns] == ["user", "assistant"], (chat.id, turns)
            reply = turns[1]
            assert reply.status is TurnStatus.COMPLETE, (chat.id, reply)
            assert reply.text.strip(), chat.id
            question = earlier if chat is EARLIER else asked[chat.id]
            messages = telegram.replies_to(chat.id, question)
            # One reply per question, complete, in the message posted for it (no "…" left behind).
            assert [m.message_id for m in messages] == [int(i) for i in reply.message_ids], chat.id
            assert "\n".join(m.text for m in messages).strip() == parse_html(to_html(reply.text)).strip(), chat.id
            assert PLACEHOLDER not in [m.text for m in messages]
