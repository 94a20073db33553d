"""Listen mode: a channel's recent messages that were not for the bot, kept as context.

Off by default. When an admin turns it on (``/listen on``, stored in the channel's settings), each
message in that channel that is not addressed to the bot is kept in the store's ``heard`` table:
who wrote it, their display name, its text and when. It is never answered, and it never enters
the durable inbox. Bounds, from :class:`~bot.settings.ListenSettings`:

- at most ``window`` messages per channel (the newest; older ones are deleted as new ones come),
  each cut to ``chars`` (more could never reach a prompt; with ``chars`` 0 none are kept);
- none older than ``retention`` seconds: expired messages are skipped when read, deleted on each
  write, when the store opens and by a sweep every minute (:meth:`Listener.run`);
- turning listen mode off (``/listen off``) deletes everything the channel kept.

When the bot is addressed in the channel, :meth:`Listener.window` gives the kept messages of that
place (the conversation's thread, plus the channel's top level) written after the conversation's
last answer, and :func:`render` turns them into a block put before that turn's text, in that
prompt only: the stored history stays as written. Each line is ``[Name]: text``, labelled by
:class:`~bot.names.Speakers` (the same labels as the conversation's own turns) and escaped like a
user's text in a shared conversation, so a kept message cannot pose as another speaker, nor as the
user who addressed the bot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bot.conversation import ConversationKey, IncomingMessage
from bot.names import Speakers, escape
from bot.settings import ListenSettings
from bot.store import Store

log = logging.getLogger(__name__)

HEADER = "Recent messages in this chat that were not addressed to you (context only; do not answer them):"
SWEEP_SECONDS = 60.0
"""How often expired messages are deleted, at most (sooner when the retention is shorter)."""


@dataclass(frozen=True, slots=True)
class Heard:
    """A kept message: its author's id and display name, its text (as sent) and when it came."""

    user: str
    user_name: str
    text: str
    created_at: float


def render(heard: Sequence[Heard], speakers: Speakers, budget: int) -> str:
    """The context block for ``heard`` (oldest first): the newest messages that fit ``budget``
    characters, one line each; ``""`` if none fit. The newest alone is cut (with "…") to fit."""
    lines: list[str] = []
    used = len(HEADER)
    labels = [speakers.label(item.user, item.user_name) for item in heard]  # numbered in the order they spoke
    for item, name in zip(reversed(heard), reversed(labels), strict=True):
        text = " ".join(item.text.split())
        if not text:
            continue
        label = f"[{name}]: "
        room = budget - used - 1 - len(label)
        if len(text) > room:
            if lines or room < 2:
                break
            text = text[: room - 1].rstrip() + "…"
        line = label + escape(text)
        lines.append(line)
        used += len(line) + 1
    if not lines:
        return ""
    return "\n".join([HEADER, *reversed(lines)])


class Listener:
    """Keeps and hands out what listening channels heard (``store``'s ``heard`` table)."""

    def __init__(self, store: Store, settings: ListenSettings) -> None:
        self.store = store
        self.settings = settings

    def listening(self, platform: str, channel: str) -> bool:
        return self.store.channel_settings(platform, channel).listen

    async def hear(self, message: IncomingMessage) -> bool:
        """Keep ``message`` (not addressed to the bot) if its channel listens; whether it was kept."""
        if message.addressed or message.is_direct or not message.text.strip() or self.settings.chars <= 0:
            return False
        if not self.listening(message.platform, message.channel):
            return False
        # No await between the check above and this insert: a /listen off that comes meanwhile is
        # queued on the connection after it, and its delete takes this message too.
        db = self.store.db
        now = time.time()
        await db.execute(
            "INSERT INTO heard (platform, channel, thread, user, user_name, text, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                message.platform,
                message.channel,
                message.thread or "",
                message.user,
                message.user_name,
                message.text[: self.settings.chars],  # more could never reach a prompt
                now,
            ),
        )
        await db.execute(
            "DELETE FROM heard WHERE platform = ? AND channel = ? AND id NOT IN"
            " (SELECT id FROM heard WHERE platform = ? AND channel = ? ORDER BY id DESC LIMIT ?)",
            (message.platform, message.channel, message.platform, message.channel, self.settings.window),
        )
        await db.execute("DELETE FROM heard WHERE created_at < ?", (now - self.settings.retention,))
        await db.commit()
        return True

    async def window(self, key: ConversationKey, since: float = 0.0) -> list[Heard]:
        """What ``key``'s channel kept for it, oldest first: messages in its thread and at the
        channel's top level, written after ``since`` (its last answer) and within the retention."""
        if not self.listening(key.platform, key.channel):
            return []
        since = max(since, time.time() - self.settings.retention)
        threads = ("", key.thread or "")
        async with self.store.db.execute(
            "SELECT user, user_name, text, created_at FROM heard"
            " WHERE platform = ? AND channel = ? AND thread IN (?, ?) AND created_at > ? ORDER BY id",
            (key.platform, key.channel, *threads, since),
        ) as cursor:
            return [Heard(row[0], row[1], row[2], row[3]) async for row in cursor]

    async def forget(self, platform: str, channel: str) -> int:
        """Delete everything ``channel`` kept; how many messages there were."""
        cursor = await self.store.db.execute(
            "DELETE FROM heard WHERE platform = ? AND channel = ?", (platform, channel)
        )
        await self.store.db.commit()
        return cursor.rowcount

    async def prune(self) -> int:
        """Delete every kept message older than the retention; how many there were."""
        cutoff = time.time() - self.settings.retention
        cursor = await self.store.db.execute("DELETE FROM heard WHERE created_at < ?", (cutoff,))
        await self.store.db.commit()
        return cursor.rowcount

    async def run(self) -> None:
        """Prune now, then every :data:`SWEEP_SECONDS` (or the retention, if shorter) until cancelled."""
        interval = min(SWEEP_SECONDS, self.settings.retention)
        while True:
            try:
                pruned = await self.prune()
                if pruned:
                    log.debug("listen mode: deleted %d expired messages", pruned)
            except Exception:  # the store may be closing; the next sweep tries again
                log.warning("listen mode: pruning expired messages failed", exc_info=True)
            await asyncio.sleep(interval)
