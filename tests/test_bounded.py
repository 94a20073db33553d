"""Bounded memories: they forget the least recently used entries, and expired ones."""

from __future__ import annotations

import pytest

from bot.bounded import BoundedDict, BoundedSet


def test_set_add_says_whether_the_item_is_new() -> None:
    seen: BoundedSet[str] = BoundedSet(3)
    assert seen.add("a")
    assert not seen.add("a")
    assert "a" in seen
    assert "b" not in seen
    assert len(seen) == 1


def test_set_forgets_the_least_recently_added_or_seen() -> None:
    seen: BoundedSet[int] = BoundedSet(3)
    for item in (1, 2, 3):
        seen.add(item)
    assert not seen.add(1)  # seen again: now the most recent
    assert seen.add(4)  # forgets 2, the oldest
    assert list(seen) == [3, 1, 4]
    assert 2 not in seen
    assert len(seen) == 3
    assert seen.add(2)  # forgotten, so new again


def test_set_discard() -> None:
    seen: BoundedSet[tuple[str, str]] = BoundedSet(2)
    seen.add(("C1", "1.0"))
    seen.discard(("C1", "1.0"))
    seen.discard(("C1", "never added"))
    assert ("C1", "1.0") not in seen
    assert len(seen) == 0


def test_sizes_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        BoundedSet(0)
    with pytest.raises(ValueError, match="maxsize"):
        BoundedDict(0)


def test_dict_forgets_the_least_recently_used() -> None:
    known: BoundedDict[str, int] = BoundedDict(2)
    known["a"] = 1
    known["b"] = 2
    assert known.get("a") == 1  # used: "b" is now the oldest
    known["c"] = 3
    assert known.get("b") is None
    assert "b" not in known
    assert (known.get("a"), known.get("c")) == (1, 3)
    assert len(known) == 2
    known.discard("a")
    assert "a" not in known
    known["c"] = 30
    assert known.get("c") == 30


def test_dict_entries_expire_after_the_ttl() -> None:
    now = [100.0]
    known: BoundedDict[tuple[int, int], bool] = BoundedDict(10, ttl=60.0, clock=lambda: now[0])
    known[(1, 2)] = True
    now[0] += 59.9
    assert known.get((1, 2)) is True
    assert (1, 2) in known
    now[0] += 0.1  # 60 s after it was set, reading it did not renew it
    assert (1, 2) not in known
    assert known.get((1, 2)) is None
    assert len(known) == 0  # dropped when read
    known[(1, 2)] = False  # set again: a new 60 s
    now[0] += 30
    assert known.get((1, 2)) is False
