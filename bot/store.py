"""Conversation storage in SQLite (aiosqlite, WAL).

Tables: ``conversations`` (one row per conversation key, with its persona and model), ``turns`` (each user
message, with its author, and bot reply, with its status and the platform message ids that carry
it), ``channel_settings``, ``notes`` (the memory; ``notes_index`` is its FTS5 index) and ``heard``
(what listening channels keep of the messages not addressed to the bot, ``bot/listen.py``).
The schema version lives in ``PRAGMA user_version``; :data:`MIGRATIONS` upgrades a database one
step at a time, so a database from any earlier release opens.

A reply is stored as ``streaming`` when it starts and updated as it grows; on open, any reply
still ``streaming`` was cut off by a crash and becomes ``interrupted``, keeping its partial text.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiosqlite

from bot.conversation import ConversationKey, Scope
from bot.engine import Role
from bot.errors import StoreError

HISTORY_TURNS = 500
"""Turns a prompt is built from at most (:meth:`Store.history`)."""

MIGRATIONS: tuple[str, ...] = (
    # 1: first release
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        thread TEXT NOT NULL DEFAULT '',
        user TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        reset_at REAL NOT NULL DEFAULT 0,
        UNIQUE (platform, channel, thread, user)
    );
    CREATE TABLE turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
        text TEXT NOT NULL,
        token_count INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'complete',
        message_ids TEXT NOT NULL DEFAULT '[]',
        seconds REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX turns_by_conversation ON turns (conversation_id, id);
    CREATE TABLE channel_settings (
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        system_prompt TEXT,
        scope TEXT NOT NULL DEFAULT 'per-user',
        PRIMARY KEY (platform, channel)
    );
    """,
    # 2: the durable inbox (bot/inbox.py): every message to answer, stored before anything else
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        message_id TEXT NOT NULL,
        message TEXT NOT NULL,
        received_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'answering', 'done')),
        reply_ids TEXT NOT NULL DEFAULT '[]',
        turn_ids TEXT NOT NULL DEFAULT '[]'
    );
    CREATE UNIQUE INDEX inbox_once ON inbox (platform, channel, message_id) WHERE message_id != '';
    CREATE INDEX inbox_open ON inbox (state, id) WHERE state != 'done';
    CREATE INDEX conversations_by_user ON conversations (platform, user);
    """,
    # 3: who said what (the author of user turns), personas per conversation and channel, and notes
    # (bot/memory.py): a user's own (channel '') or a channel's (user ''), searched through FTS5
    """
    ALTER TABLE turns ADD COLUMN author TEXT NOT NULL DEFAULT '';
    ALTER TABLE turns ADD COLUMN author_name TEXT NOT NULL DEFAULT '';
    ALTER TABLE conversations ADD COLUMN persona TEXT;
    ALTER TABLE channel_settings ADD COLUMN persona TEXT;
    ALTER TABLE channel_settings ADD COLUMN persona_locked INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE notes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        platform TEXT NOT NULL,
        channel TEXT NOT NULL DEFAULT '',
        user TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        created_at REAL NOT NULL,
        CHECK ((channel = '') != (user = ''))
    );
    CREATE INDEX notes_by_owner ON notes (platform, user, channel, id);
    CREATE VIRTUAL TABLE notes_index USING fts5(
        text, content = 'notes', content_rowid = 'id', tokenize = 'porter unicode61'
    );
    CREATE TRIGGER notes_indexed AFTER INSERT ON notes BEGIN
        INSERT INTO notes_index (rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER notes_unindexed AFTER DELETE ON notes BEGIN
        INSERT INTO notes_index (notes_index, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    """,
    # 4: several models (bot/models.py): the model a conversation chose, and a channel's default model and
    # the models its users may choose from (a JSON list; NULL: every configured model)
    """
    ALTER TABLE conversations ADD COLUMN model TEXT;
    ALTER TABLE channel_settings ADD COLUMN model TEXT;
    ALTER TABLE channel_settings ADD COLUMN models TEXT;
    """,
    # 5: listen mode (bot/listen.py): the channel's flag, and the messages it kept that were not for the bot
    """
    ALTER TABLE channel_settings ADD COLUMN listen INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE heard (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        thread TEXT NOT NULL DEFAULT '',
        user TEXT NOT NULL,
        user_name TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX heard_by_channel ON heard (platform, channel, id);
    CREATE INDEX heard_by_age ON heard (created_at);
    """,
    # 6: the inbox entry a turn answers, written with the turn itself: a crash between storing a user's turn
    # and noting it in the inbox left that turn in the history when the entry was answered again
    """
    ALTER TABLE turns ADD COLUMN inbox_entry INTEGER;
    CREATE INDEX turns_by_inbox_entry ON turns (inbox_entry) WHERE inbox_entry IS NOT NULL;
    """,
)


class TurnStatus(enum.StrEnum):
    COMPLETE = "complete"
    STREAMING = "streaming"
    INTERRUPTED = "interrupted"
    """Cut off by a crash or shutdown."""
    STOPPED = "stopped"
    """Cancelled by a user."""
    SUPERSEDED = "superseded"
    """An attempt cut off by a crash, answered again in full after the restart (kept, not in prompts)."""
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Turn:
    id: int
    role: Role
    text: str
    token_count: int
    created_at: float
    status: TurnStatus
    message_ids: tuple[str, ...]
    seconds: float = 0.0
    author: str = ""
    """The user id of whoever wrote a user turn (``""`` for replies, and turns stored before release 3)."""
    author_name: str = ""
    """Their display name when they wrote it."""


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    key: ConversationKey
    created_at: float


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One line of a conversation list: its first user message as title, last activity, turn count."""

    id: str
    title: str
    updated_at: float
    turn_count: int


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    system_prompt: str | None = None
    """Set with ``/system``: overrides every persona in the channel."""
    scope: Scope = Scope.PER_USER
    persona: str | None = None
    """The persona of the channel's conversations that chose none (``None``: the default prompt)."""
    persona_locked: bool = False
    """Users may not choose their own persona here."""
    model: str | None = None
    """The model of the channel's conversations that chose none (``None``: ``default``)."""
    models: tuple[str, ...] | None = None
    """The models users may choose here besides the channel's default (``None``: every configured one)."""
    listen: bool = False
    """Listen mode (``/listen``): messages here that are not for the bot are kept as context."""


@dataclass(frozen=True, slots=True)
class ChannelStats:
    turns: int
    replies: int
    completion_tokens: int
    seconds: float


def _key_row(key: ConversationKey) -> tuple[str, str, str, str]:
    return key.platform, key.channel, key.thread or "", key.user or ""


class Store:
    """The conversation store. ``open()`` before use, ``close()`` after; one connection, serialised."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._channels: dict[tuple[str, str], ChannelSettings] = {}
        self._personas: dict[tuple[str, str, str, str], str] = {}
        self._models: dict[tuple[str, str, str, str], str] = {}
        self.recovered = 0
        """How many replies were marked interrupted when the store opened."""

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    async def open(self) -> None:
        try:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA foreign_keys=ON")
            await self._migrate()
            cursor = await self._db.execute(
                "UPDATE turns SET status = ? WHERE status = ?", (TurnStatus.INTERRUPTED, TurnStatus.STREAMING)
            )
            self.recovered = cursor.rowcount
            await self._db.commit()
            async with self._db.execute(
                "SELECT platform, channel, system_prompt, scope, persona, persona_locked, model, models, listen"
                " FROM channel_settings"
            ) as rows:
                async for platform, channel, prompt, scope, persona, locked, model, models, listen in rows:
                    allowed = None if models is None else tuple(json.loads(models))
                    self._channels[(platform, channel)] = ChannelSettings(
                        prompt, Scope(scope), persona, bool(locked), model, allowed, bool(listen)
                    )
            async with self._db.execute(
                "SELECT platform, channel, thread, user, persona, model FROM conversations"
                " WHERE persona IS NOT NULL OR model IS NOT NULL"
            ) as rows:
                async for platform, channel, thread, user, persona, model in rows:
                    if persona is not None:
                        self._personas[(platform, channel, thread, user)] = persona
                    if model is not None:
                        self._models[(platform, channel, thread, user)] = model
        except (aiosqlite.Error, OSError) as exc:
            await self.close()
            raise StoreError(f"cannot open database {str(self.path)!r}: {exc}") from exc

    async def _migrate(self) -> None:
        db = self.db
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database {str(self.path)!r} has schema version {version}, newer than this Parley "
                f"({len(MIGRATIONS)}); upgrade Parley or use another PARLEY_DB_PATH"
            )
        for number in range(version, len(MIGRATIONS)):
            await db.executescript(f"BEGIN;\n{MIGRATIONS[number]}\nPRAGMA user_version = {number + 1};\nCOMMIT;")

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # conversations

    async def conversation(self, key: ConversationKey, *, create_id: str | None = None) -> str:
        """The id of ``key``'s conversation, created if new (with ``create_id`` if given).

        Safe to call concurrently for one key: an insert that loses the race yields to the winner.
        """
        found = await self.find_conversation(key)
        if found is not None:
            return found
        await self.db.execute(
            "INSERT INTO conversations (id, platform, channel, thread, user, created_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (platform, channel, thread, user) DO NOTHING",
            (create_id or uuid.uuid4().hex, *_key_row(key), time.time()),
        )
        await self.db.commit()
        found = await self.find_conversation(key)
        assert found is not None
        return found

    async def find_conversation(self, key: ConversationKey) -> str | None:
        """The id of ``key``'s conversation if it exists (never creates one)."""
        async with self.db.execute(
            "SELECT id FROM conversations WHERE platform=? AND channel=? AND thread=? AND user=?", _key_row(key)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        async with self.db.execute(
            "SELECT platform, channel, thread, user, created_at FROM conversations WHERE id = ?", (conversation_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        platform, channel, thread, user, created = row
        key = ConversationKey(platform, channel, thread or None, user or None)
        return Conversation(conversation_id, key, float(created))

    def conversation_persona(self, key: ConversationKey) -> str | None:
        """The persona ``key``'s conversation chose (``/persona``), from memory; kept across ``/reset``."""
        return self._personas.get(_key_row(key))

    async def set_conversation_persona(self, key: ConversationKey, persona: str | None) -> None:
        conversation_id = await self.conversation(key)
        await self.db.execute("UPDATE conversations SET persona = ? WHERE id = ?", (persona, conversation_id))
        await self.db.commit()
        if persona is None:
            self._personas.pop(_key_row(key), None)
        else:
            self._personas[_key_row(key)] = persona

    def conversation_model(self, key: ConversationKey) -> str | None:
        """The model ``key``'s conversation chose (``/model``), from memory; kept across ``/reset``."""
        return self._models.get(_key_row(key))

    async def set_conversation_model(self, key: ConversationKey, model: str | None) -> None:
        conversation_id = await self.conversation(key)
        await self.db.execute("UPDATE conversations SET model = ? WHERE id = ?", (model, conversation_id))
        await self.db.commit()
        if model is None:
            self._models.pop(_key_row(key), None)
        else:
            self._models[_key_row(key)] = model

    async def reset(self, conversation_id: str) -> None:
        """Forget the history so far: later replies do not see it (it stays in the database)."""
        await self.db.execute("UPDATE conversations SET reset_at = ? WHERE id = ?", (time.time(), conversation_id))
        await self.db.commit()

    async def reset_time(self, conversation_id: str) -> float:
        """When the conversation was last reset (``0`` if never)."""
        async with self.db.execute("SELECT reset_at FROM conversations WHERE id = ?", (conversation_id,)) as cursor:
            row = await cursor.fetchone()
        return 0.0 if row is None else float(row[0])

    async def conversations_of(self, platform: str, user: str, limit: int = 50) -> list[ConversationSummary]:
        """``user``'s conversations on ``platform`` that have turns, most recently active first.

        Resets are ignored: the list shows every turn, as a reopened conversation does. The title is
        the first user message on one line, cut at 80 characters.
        """
        query = (
            "SELECT c.id, MAX(t.created_at + t.seconds), COUNT(*),"
            " (SELECT substr(u.text, 1, 400) FROM turns u"
            "  WHERE u.conversation_id = c.id AND u.role = 'user' ORDER BY u.id LIMIT 1)"
            " FROM conversations c JOIN turns t ON t.conversation_id = c.id"
            " WHERE c.platform = ? AND c.user = ? AND (t.text != '' OR t.role = 'user') AND t.status != 'superseded'"
            " GROUP BY c.id ORDER BY MAX(t.id) DESC LIMIT ?"
        )
        async with self.db.execute(query, (platform, user, limit)) as cursor:
            rows = await cursor.fetchall()
        summaries = []
        for conversation_id, updated, count, first in rows:
            title = " ".join((first or "").split())
            if len(title) > 80:
                title = title[:79].rstrip() + "…"
            summaries.append(ConversationSummary(conversation_id, title, float(updated), int(count)))
        return summaries

    # turns

    async def add_turn(
        self,
        conversation_id: str,
        role: Role,
        text: str,
        *,
        token_count: int = 0,
        status: TurnStatus = TurnStatus.COMPLETE,
        message_ids: tuple[str, ...] = (),
        author: str = "",
        author_name: str = "",
        inbox_entry: int | None = None,
    ) -> int:
        """A new turn's id. ``inbox_entry``: the inbox entry it answers, stored in the same row, so that
        answering that entry again after a crash can take every turn it left out of the history."""
        cursor = await self.db.execute(
            "INSERT INTO turns (conversation_id, role, text, token_count, created_at, status, message_ids,"
            " author, author_name, inbox_entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                conversation_id,
                role,
                text,
                token_count,
                time.time(),
                status,
                json.dumps(list(message_ids)),
                author,
                author_name,
                inbox_entry,
            ),
        )
        await self.db.commit()
        return cast("int", cursor.lastrowid)

    async def update_turn(
        self,
        turn_id: int,
        *,
        text: str | None = None,
        token_count: int | None = None,
        status: TurnStatus | None = None,
        message_ids: tuple[str, ...] | None = None,
        seconds: float | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "text": text,
            "token_count": token_count,
            "status": status,
            "message_ids": None if message_ids is None else json.dumps(list(message_ids)),
            "seconds": seconds,
        }
        changes = {name: value for name, value in fields.items() if value is not None}
        if not changes:
            return
        assignments = ", ".join(f"{name} = ?" for name in changes)
        await self.db.execute(f"UPDATE turns SET {assignments} WHERE id = ?", (*changes.values(), turn_id))  # noqa: S608
        await self.db.commit()

    async def supersede(self, inbox_entry: int, turn_ids: tuple[int, ...] = ()) -> None:
        """Take the turns of an answer cut off by a crash out of the history (they are answered again):
        those stored for ``inbox_entry``, and ``turn_ids`` (noted in the inbox by earlier releases)."""
        marks = ", ".join("?" * len(turn_ids))
        await self.db.execute(
            f"UPDATE turns SET status = ? WHERE inbox_entry = ? OR id IN ({marks})",  # noqa: S608 - placeholders
            (TurnStatus.SUPERSEDED, inbox_entry, *turn_ids),
        )
        await self.db.commit()

    async def history(self, conversation_id: str, *, window: int = HISTORY_TURNS) -> list[Turn]:
        """The turns since the last reset that a prompt is built from, oldest first: all of them up to
        ``window``; past that, from a first turn that moves on ``window // 2`` turns at a time.

        Taking the newest ``window`` would move the first turn on every turn, and with it the start
        the engine trims the history from (:func:`bot.engine.trim_history` cuts in steps counted
        from the oldest message): the prompt's beginning, and so its cached KV, would change on
        every turn of a long-lived conversation, a busy channel's say.
        """
        query = (
            "SELECT COUNT(*) FROM turns t JOIN conversations c ON c.id = t.conversation_id"
            " WHERE t.conversation_id = ? AND t.created_at >= c.reset_at"
        )
        async with self.db.execute(query, (conversation_id,)) as cursor:
            row = await cursor.fetchone()
        count = int(row[0]) if row is not None else 0
        if count == 0:
            return []
        step = max(1, window // 2)
        skip = 0 if count <= window else (count - step) // step * step
        return await self.turns(conversation_id, limit=count - skip)

    async def turns(self, conversation_id: str, *, since_reset: bool = True, limit: int = HISTORY_TURNS) -> list[Turn]:
        """The conversation's turns, oldest first (the newest ``limit``)."""
        query = (
            "SELECT t.id, t.role, t.text, t.token_count, t.created_at, t.status, t.message_ids, t.seconds,"
            " t.author, t.author_name FROM turns t JOIN conversations c ON c.id = t.conversation_id"
            " WHERE t.conversation_id = ? AND (? = 0 OR t.created_at >= c.reset_at)"
            " ORDER BY t.id DESC LIMIT ?"
        )
        async with self.db.execute(query, (conversation_id, int(since_reset), limit)) as cursor:
            rows = await cursor.fetchall()
        return [
            Turn(
                id=row[0],
                role=row[1],
                text=row[2],
                token_count=row[3],
                created_at=row[4],
                status=TurnStatus(row[5]),
                message_ids=tuple(json.loads(row[6])),
                seconds=row[7],
                author=row[8],
                author_name=row[9],
            )
            for row in reversed(list(rows))
        ]

    # channels

    def channel_settings(self, platform: str, channel: str) -> ChannelSettings:
        """The channel's settings, from memory (kept in step with the table)."""
        return self._channels.get((platform, channel), ChannelSettings())

    async def set_channel_settings(self, platform: str, channel: str, settings: ChannelSettings) -> None:
        """Replace the channel's settings. Memory changes first, so a caller that reads the settings
        while this one is being written (``dataclasses.replace`` on the current ones) builds on it
        instead of undoing it; the rows are written in call order."""
        previous = self._channels.get((platform, channel))
        self._channels[(platform, channel)] = settings
        try:
            await self._write_channel_settings(platform, channel, settings)
        except BaseException:
            if self._channels.get((platform, channel)) is settings:  # nobody built on it meanwhile
                if previous is None:
                    self._channels.pop((platform, channel), None)
                else:
                    self._channels[(platform, channel)] = previous
            raise

    async def _write_channel_settings(self, platform: str, channel: str, settings: ChannelSettings) -> None:
        await self.db.execute(
            "INSERT INTO channel_settings"
            " (platform, channel, system_prompt, scope, persona, persona_locked, model, models, listen)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (platform, channel) DO UPDATE SET system_prompt = excluded.system_prompt,"
            " scope = excluded.scope, persona = excluded.persona, persona_locked = excluded.persona_locked,"
            " model = excluded.model, models = excluded.models, listen = excluded.listen",
            (
                platform,
                channel,
                settings.system_prompt,
                settings.scope,
                settings.persona,
                int(settings.persona_locked),
                settings.model,
                None if settings.models is None else json.dumps(list(settings.models)),
                int(settings.listen),
            ),
        )
        await self.db.commit()

    async def channel_stats(self, platform: str, channel: str) -> ChannelStats:
        async with self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(t.role = 'assistant'), 0),"
            " COALESCE(SUM(CASE WHEN t.role = 'assistant' THEN t.token_count END), 0),"
            " COALESCE(SUM(t.seconds), 0)"
            " FROM turns t JOIN conversations c ON c.id = t.conversation_id"
            " WHERE c.platform = ? AND c.channel = ?",
            (platform, channel),
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return ChannelStats(int(row[0]), int(row[1]), int(row[2]), float(row[3]))
