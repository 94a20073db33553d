"""The durable inbox: every message the bot will answer, in SQLite before anything else happens.

A message is written here before its placeholder is posted, before it is queued and before the
platform hears back, so a crash or a kill loses nothing: on the next start every entry that is
not ``done`` is answered again, in order, per conversation. The ids of the messages that carry
an entry's reply are kept as soon as they are posted, so a reply cut off by a crash is finished
in the same chat messages instead of leaving a "…" behind. The platform's message id makes an
entry unique, so a redelivered event (a Slack retry, a Telegram update fetched twice across a
restart, a Discord resume) is answered exactly once, across restarts too.

States: ``pending`` (stored, waiting) → ``answering`` (a reply is being generated) → ``done``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from dataclasses import dataclass
from typing import cast

import aiosqlite

from bot.conversation import Attachment, IncomingMessage, Quote
from bot.store import Store

KEEP_DONE = 7 * 24 * 3600.0
"""How long answered entries are kept to recognise redeliveries (seconds)."""


class InboxState(enum.StrEnum):
    PENDING = "pending"
    ANSWERING = "answering"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class InboxEntry:
    id: int
    message: IncomingMessage
    state: InboxState
    reply_ids: tuple[str, ...] = ()
    """Platform ids of the messages that carry the reply so far (placeholder first)."""
    turn_ids: tuple[int, ...] = ()
    """The turns of an answer started by an earlier release; the turns now carry their entry
    (:meth:`bot.store.Store.add_turn`), written in one row, with no crash window between the two."""


def _message_json(message: IncomingMessage) -> str:
    fields = {field.name: getattr(message, field.name) for field in dataclasses.fields(message)}
    fields["quote"] = None if message.quote is None else dataclasses.asdict(message.quote)
    # A file's name and declared size only: its bytes are never stored, and its download handle
    # does not outlive the process (after a restart the user is told to send it again).
    fields["attachments"] = [{"name": file.name, "mime": file.mime, "size": file.size} for file in message.attachments]
    return json.dumps(fields, ensure_ascii=False)


def _message_of(text: str) -> IncomingMessage:
    fields = json.loads(text)
    quote = fields.pop("quote", None)
    files = tuple(Attachment(**file) for file in fields.pop("attachments", ()))
    return IncomingMessage(**fields, quote=None if quote is None else Quote(**quote), attachments=files)


class Inbox:
    """The ``inbox`` table, on the store's connection."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def _db(self) -> aiosqlite.Connection:
        return self.store.db

    async def add(self, message: IncomingMessage) -> int | None:
        """Store ``message``; its entry id, or ``None`` if this platform message was stored before."""
        cursor = await self._db.execute(
            "INSERT INTO inbox (platform, channel, message_id, message, received_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (message.platform, message.channel, message.message_id, _message_json(message), time.time()),
        )
        await self._db.commit()
        return cast("int", cursor.lastrowid) if cursor.rowcount == 1 else None

    async def answering(self, entry_id: int) -> None:
        await self._set(entry_id, "state = ?", InboxState.ANSWERING)

    async def replied_in(self, entry_id: int, reply_ids: tuple[str, ...]) -> None:
        """Remember the messages that carry the reply (the placeholder as soon as it is posted)."""
        await self._set(entry_id, "reply_ids = ?", json.dumps(list(reply_ids)))

    async def done(self, entry_id: int) -> None:
        await self._set(entry_id, "state = ?", InboxState.DONE)

    async def _set(self, entry_id: int, assignment: str, value: object) -> None:
        await self._db.execute(f"UPDATE inbox SET {assignment} WHERE id = ?", (value, entry_id))  # noqa: S608
        await self._db.commit()

    async def open_entries(self) -> list[InboxEntry]:
        """Every entry not answered yet, oldest first."""
        async with self._db.execute(
            "SELECT id, message, state, reply_ids, turn_ids FROM inbox WHERE state != 'done' ORDER BY id"
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            InboxEntry(
                id=row[0],
                message=_message_of(row[1]),
                state=InboxState(row[2]),
                reply_ids=tuple(json.loads(row[3])),
                turn_ids=tuple(json.loads(row[4])),
            )
            for row in rows
        ]

    async def depth(self) -> int:
        """Messages stored and not answered yet."""
        async with self._db.execute("SELECT COUNT(*) FROM inbox WHERE state != 'done'") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def prune(self, older_than: float = KEEP_DONE) -> None:
        """Forget answered entries received more than ``older_than`` seconds ago."""
        await self._db.execute(
            "DELETE FROM inbox WHERE state = 'done' AND received_at < ?", (time.time() - older_than,)
        )
        await self._db.commit()
