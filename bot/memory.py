"""Memory that needs no cloud: notes users (and, for channels, admins) keep for the bot.

A note belongs to one owner (:class:`Owner`): a user on a platform, or a channel. Notes live in the
store's ``notes`` table with an FTS5 index (``porter`` stemming), so the notes relevant to a
message are found by full-text search, ranked with BM25, with no embeddings and no network.

:meth:`Notes.recall` picks the notes for one turn: the channel's notes, and the speaker's own
notes only in a conversation that is theirs alone (a direct message or their own conversation in
a channel). A user's notes never reach a shared conversation or another user's. The picked notes
fill at most a token budget (estimated at :data:`CHARS_PER_TOKEN` characters a token) and go in
front of that turn's message, for that prompt only (the stored history stays as written, and the
engine's cached prefix stays valid).

:class:`NoteBook` is one owner's notes, the surface plugins get (``inv.memory``).
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bot.conversation import ConversationKey
from bot.errors import CommandError
from bot.store import Store

CHARS_PER_TOKEN = 4
SEARCH_TERMS = 32
"""At most this many words of a message are searched for."""
RECALL_HEADER = "Notes you were asked to keep in mind (saved with /remember):"
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    {
        *("the", "and", "for", "are", "but", "not", "you", "your", "with", "this", "that", "have", "has"),
        *("was", "were", "what", "when", "where", "which", "who", "why", "how", "can", "could", "would"),
        *("should", "will", "about", "from", "into", "they", "them", "their", "there", "then", "than"),
        *("its", "our", "out", "all", "any", "some", "just", "like", "also", "been", "being", "does", "did"),
    }
)


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose notes: a user (``user`` set) or a channel (``channel`` set) on ``platform``."""

    platform: str
    user: str = ""
    channel: str = ""

    def __post_init__(self) -> None:
        if bool(self.user) == bool(self.channel):
            raise ValueError("a note belongs to a user or to a channel")


@dataclass(frozen=True, slots=True)
class Note:
    id: int
    """Unique in the database (not the number ``/memory`` shows)."""
    text: str
    created_at: float
    owner: Owner


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 2


def search_query(text: str) -> str:
    """An FTS5 query for ``text``: its words (3 letters or more, not stopwords), any of them."""
    words: list[str] = []
    for word in _WORD.findall(text.lower()):
        if len(word) >= 3 and word not in _STOPWORDS and word not in words:
            words.append(word)
    return " OR ".join(f'"{word}"' for word in words[:SEARCH_TERMS])


class Notes:
    """Every owner's notes, in the store's database."""

    def __init__(self, store: Store, limit: int = 50) -> None:
        self.store = store
        self.limit = limit
        """Notes one owner may keep (``PARLEY_MEMORY_NOTES``)."""

    def book(self, owner: Owner) -> NoteBook:
        return NoteBook(self, owner)

    async def add(self, owner: Owner, text: str) -> Note:
        """Keep a note; raise ``CommandError`` (a short answer) when ``owner`` has :attr:`limit` already."""
        async with self.store.db.execute(
            "SELECT COUNT(*) FROM notes WHERE platform = ? AND user = ? AND channel = ?",
            (owner.platform, owner.user, owner.channel),
        ) as counting:
            row = await counting.fetchone()
        if row is not None and row[0] >= self.limit:
            raise CommandError(f"{row[0]} notes are kept already, the most there may be; forget one first.")
        created = time.time()
        cursor = await self.store.db.execute(
            "INSERT INTO notes (platform, user, channel, text, created_at) VALUES (?, ?, ?, ?, ?)",
            (owner.platform, owner.user, owner.channel, text, created),
        )
        await self.store.db.commit()
        assert cursor.lastrowid is not None
        return Note(cursor.lastrowid, text, created, owner)

    async def list(self, owner: Owner) -> list[Note]:
        async with self.store.db.execute(
            "SELECT id, text, created_at FROM notes WHERE platform = ? AND user = ? AND channel = ? ORDER BY id",
            (owner.platform, owner.user, owner.channel),
        ) as cursor:
            return [Note(row[0], row[1], row[2], owner) async for row in cursor]

    async def delete(self, owner: Owner, note_id: int) -> bool:
        cursor = await self.store.db.execute(
            "DELETE FROM notes WHERE id = ? AND platform = ? AND user = ? AND channel = ?",
            (note_id, owner.platform, owner.user, owner.channel),
        )
        await self.store.db.commit()
        return cursor.rowcount > 0

    async def clear(self, owner: Owner) -> int:
        cursor = await self.store.db.execute(
            "DELETE FROM notes WHERE platform = ? AND user = ? AND channel = ?",
            (owner.platform, owner.user, owner.channel),
        )
        await self.store.db.commit()
        return cursor.rowcount

    async def search(self, owners: Sequence[Owner], text: str, limit: int = 5) -> builtins.list[Note]:
        """The notes of ``owners`` most relevant to ``text``, best first (BM25)."""
        query = search_query(text)
        if not query or not owners:
            return []
        by_key = {(o.platform, o.user, o.channel): o for o in owners}
        matches = " OR ".join("(n.platform = ? AND n.user = ? AND n.channel = ?)" for _ in by_key)
        sql = (
            "SELECT n.id, n.text, n.created_at, n.platform, n.user, n.channel"  # noqa: S608 - only placeholders
            " FROM notes_index JOIN notes n ON n.id = notes_index.rowid"
            f" WHERE notes_index MATCH ? AND ({matches})"
            " ORDER BY bm25(notes_index), n.id LIMIT ?"
        )
        params = [query, *(part for key in by_key for part in key), limit]
        async with self.store.db.execute(sql, params) as cursor:
            return [Note(row[0], row[1], row[2], by_key[(row[3], row[4], row[5])]) async for row in cursor]

    async def recall(self, key: ConversationKey, author: str, text: str, budget: int) -> str:
        """The notes block for a turn by ``author`` in ``key`` (``""`` when none fit ``budget`` tokens)."""
        if budget <= 0:
            return ""
        owners = [Owner(key.platform, channel=key.channel)]
        if author and key.user == author:  # only where the conversation is the author's alone
            owners.append(Owner(key.platform, user=author))
        lines: builtins.list[str] = []
        used = estimate_tokens(RECALL_HEADER)
        for note in await self.search(owners, text, limit=20):
            line = f"- {' '.join(note.text.split())}"
            cost = estimate_tokens(line)
            if used + cost > budget:
                continue
            lines.append(line)
            used += cost
        return "\n".join([RECALL_HEADER, *lines]) if lines else ""


@dataclass(frozen=True, slots=True)
class NoteBook:
    """One owner's notes, as plugins see them (``inv.memory``, ``inv.channel_memory``)."""

    notes: Notes
    owner: Owner

    async def add(self, text: str) -> Note:
        """Keep ``text`` as a note; it is found for related messages from now on. Raises
        ``CommandError`` when the owner has ``PARLEY_MEMORY_NOTES`` notes already."""
        return await self.notes.add(self.owner, text)

    async def list(self) -> builtins.list[Note]:
        """Every note, oldest first."""
        return await self.notes.list(self.owner)

    async def search(self, query: str, limit: int = 5) -> builtins.list[Note]:
        """The notes most relevant to ``query``, best first."""
        return await self.notes.search([self.owner], query, limit)

    async def delete(self, note_id: int) -> bool:
        """Delete a note by its ``Note.id``; ``False`` if it is not one of these notes."""
        return await self.notes.delete(self.owner, note_id)

    async def clear(self) -> int:
        """Delete every note; how many there were."""
        return await self.notes.clear(self.owner)
