"""One reply in progress, between the engine and whoever delivers it (a platform, the web API)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bot.engine import Reply, Usage
from bot.store import Store

PROGRESS_EVERY = 2.0
"""Seconds between saves of a growing reply, so a crash loses at most this much of it."""


@dataclass(slots=True)
class Exchange:
    """Iterate it for text deltas; ``text`` and ``usage`` grow as it goes, and the text is saved."""

    conversation_id: str
    turn_id: int
    reply: Reply
    store: Store
    requester: str | None = None
    """The user who asked, so ``/stop`` can find their reply from another conversation key."""
    text: str = ""
    message_ids: tuple[str, ...] = ()
    started_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    _saved_at: float = field(default_factory=time.monotonic)

    @property
    def usage(self) -> Usage:
        return self.reply.usage

    @property
    def stopped(self) -> bool:
        return self.reply.cancelled

    def stop(self) -> None:
        """End the reply early; the text so far is kept and marked stopped."""
        self.reply.cancel()

    async def __aiter__(self) -> AsyncIterator[str]:
        async for delta in self.reply:
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            self.text += delta
            if time.monotonic() - self._saved_at >= PROGRESS_EVERY:
                await self.save_progress()
            yield delta

    async def save_progress(self, message_ids: tuple[str, ...] | None = None) -> None:
        """Store the text so far (and the ids of the messages that carry it, once known)."""
        if message_ids is not None:
            self.message_ids = message_ids
        self._saved_at = time.monotonic()
        await self.store.update_turn(self.turn_id, text=self.text, message_ids=message_ids)
