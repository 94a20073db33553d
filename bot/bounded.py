"""Bounded memories: what a long-running bot remembers, without growing forever.

Both forget their least recently used entries once they hold ``maxsize`` of them. A connector uses
them for what it can afford to forget: event ids seen (dedupe of redeliveries), messages and
threads the bot took part in, who is an admin. Forgetting costs an extra lookup or a missed
dedupe, never a wrong answer about something the platform says explicitly. The local engine
remembers the token counts of message texts in one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedSet(Generic[T]):
    """A set of at most ``maxsize`` items; adding past that forgets the least recently added or seen."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: OrderedDict[T, None] = OrderedDict()

    def add(self, item: T) -> bool:
        """Remember ``item`` as the most recent; True if it was not remembered before."""
        if item in self._items:
            self._items.move_to_end(item)
            return False
        self._items[item] = None
        if len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return True

    def discard(self, item: T) -> None:
        self._items.pop(item, None)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        """Oldest first."""
        return iter(list(self._items))


class BoundedDict(Generic[K, V]):
    """A mapping of at most ``maxsize`` entries, each forgotten ``ttl`` seconds after it was set.

    ``ttl=None`` keeps entries until they are the least recently used of too many. ``clock`` is
    for tests (default :func:`time.monotonic`).
    """

    def __init__(self, maxsize: int, ttl: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or ``None`` if unknown or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._expired(entry[0]):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def __setitem__(self, key: K, value: V) -> None:
        self._entries[key] = (self._clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def __contains__(self, key: object) -> bool:
        if key not in self._entries:
            return False
        return not self._expired(self._entries[key][0])  # type: ignore[index]

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._entries)

    def _expired(self, stored_at: float) -> bool:
        return self.ttl is not None and self._clock() - stored_at >= self.ttl
