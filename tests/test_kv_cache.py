"""The saved-state cache on its own: RAM LRU, the directory tier, bounds, corrupt files."""

from __future__ import annotations

import os
from pathlib import Path

from engine.kvcache import KVCache, SavedState


def state(n: int, fill: int = 1) -> SavedState:
    return SavedState(tuple(range(n)), bytes([fill]) * (n * 100))


def test_ram_is_an_lru_bounded_in_bytes() -> None:
    cache = KVCache("ns", ram_bytes=3 * state(10).size)
    for key in "abc":
        cache.put(key, state(10))
    assert cache.ram_entries == 3
    assert cache.take("a") is not None  # taken: it leaves the cache
    cache.put("a", state(10))  # newest again
    cache.put("d", state(10))  # evicts b, the least recently used
    assert cache.take("b") is None
    assert cache.ram_used == 3 * state(10).size
    assert {k for k in "acd" if cache.take(k) is not None} == {"a", "c", "d"}
    assert cache.ram_used == 0


def test_replacing_an_entry_counts_its_size_once() -> None:
    cache = KVCache("ns", ram_bytes=10_000)
    cache.put("a", state(10))
    cache.put("a", state(20))
    assert cache.ram_entries == 1
    assert cache.ram_used == state(20).size
    found = cache.take("a")
    assert found is not None
    assert found[0] == state(20)
    assert found[1] == "ram"


def test_evicted_entries_go_to_the_directory_and_survive_a_restart(tmp_path: Path) -> None:
    cache = KVCache("ns", ram_bytes=state(10).size, directory=tmp_path, disk_bytes=1_000_000)
    cache.put("a", state(10, fill=7))
    cache.put("b", state(10))  # a goes to disk
    assert cache.disk_entries == 1
    cache.flush()  # b too
    assert cache.ram_entries == 0
    assert cache.disk_entries == 2
    again = KVCache("ns", ram_bytes=0, directory=tmp_path, disk_bytes=1_000_000)
    assert again.disk_entries == 2
    found = again.take("a")
    assert found == (state(10, fill=7), "disk")
    # Another namespace (model or context shape) never sees them.
    other = KVCache("other", ram_bytes=0, directory=tmp_path, disk_bytes=1_000_000)
    assert other.take("a") is None


def test_the_directory_is_bounded_oldest_first(tmp_path: Path) -> None:
    one = state(10).size + 200  # with its header
    cache = KVCache("ns", ram_bytes=0, directory=tmp_path, disk_bytes=2 * one)
    for key in "abc":
        cache.put(key, state(10))  # larger than RAM: straight to disk
    assert cache.disk_entries == 2
    assert cache.disk_used <= 2 * one
    assert cache.take("a") is None
    assert cache.take("c") is not None
    # At start-up the index applies the bound too.
    smaller = KVCache("ns", ram_bytes=0, directory=tmp_path, disk_bytes=one)
    assert smaller.disk_entries == 1


def test_a_corrupt_or_truncated_file_is_a_miss_and_is_deleted(tmp_path: Path) -> None:
    cache = KVCache("ns", ram_bytes=0, directory=tmp_path, disk_bytes=1_000_000)
    cache.put("a", state(10))
    cache.put("b", state(10))
    path_a, path_b = cache.path_of("a"), cache.path_of("b")
    assert path_a is not None
    assert path_b is not None
    data = bytearray(path_a.read_bytes())
    data[-5] ^= 0xFF
    path_a.write_bytes(bytes(data))
    path_b.write_bytes(path_b.read_bytes()[:50])
    reopened = KVCache("ns", ram_bytes=0, directory=tmp_path, disk_bytes=1_000_000)
    assert reopened.take("a") is None
    assert reopened.take("b") is None
    assert not path_a.exists()
    assert not path_b.exists()
    assert reopened.disk_entries == 0


def test_discard_forgets_both_tiers_and_leftover_temporary_files_are_cleaned(tmp_path: Path) -> None:
    cache = KVCache("ns", ram_bytes=state(10).size, directory=tmp_path, disk_bytes=1_000_000)
    cache.put("a", state(10))
    cache.put("b", state(10))
    cache.discard("a")
    cache.discard("b")
    assert cache.take("a") is None
    assert cache.take("b") is None
    assert cache.disk_used == 0
    (tmp_path / "ns" / "half.tmp").write_bytes(b"cut short")
    KVCache("ns", ram_bytes=0, directory=tmp_path, disk_bytes=1_000_000)
    assert not (tmp_path / "ns" / "half.tmp").exists()


def test_without_a_directory_evicted_entries_are_dropped() -> None:
    cache = KVCache("ns", ram_bytes=state(10).size)
    cache.put("a", state(10))
    cache.put("b", state(10))
    assert not cache.persistent
    assert cache.take("a") is None
    cache.flush()
    assert cache.take("b") is not None


def test_the_longest_shared_prefix_is_found_in_ram_and_left_there() -> None:
    cache = KVCache("ns", ram_bytes=10_000)
    cache.put("short", SavedState((1, 2, 3), b"s"))
    cache.put("long", SavedState((1, 2, 3, 4, 5, 9), b"l"))
    cache.put("other", SavedState((7, 8), b"o"))
    assert cache.longest_prefix([1, 2, 3, 4, 5, 6]) == (SavedState((1, 2, 3, 4, 5, 9), b"l"), 5)
    assert cache.longest_prefix([6]) is None
    assert cache.ram_entries == 3
    assert "long" in cache
    assert "missing" not in cache


def test_two_models_sharing_the_directory_keep_each_others_states(tmp_path: Path) -> None:
    """Two local models (``MODELS``) take turns in one ``KV_CACHE_DIR``: loading one keeps the other's."""
    first, second = "0123456789abcdef", "fedcba9876543210"
    a = KVCache(first, ram_bytes=0, directory=tmp_path, disk_bytes=1_000_000)
    a.put("x", state(10))
    b = KVCache(second, ram_bytes=0, directory=tmp_path, disk_bytes=1_000_000)
    b.put("x", state(10, fill=2))
    again = KVCache(first, ram_bytes=0, directory=tmp_path, disk_bytes=1_000_000)
    taken = again.take("x")
    assert taken is not None
    assert taken[0] == state(10)


def test_the_bound_counts_every_namespace_and_the_others_go_first(tmp_path: Path) -> None:
    """Another model's or a stale setting's states count against the bound and are deleted first,
    oldest first; folders that are not namespaces are never touched."""
    old, new = "0123456789abcdef", "fedcba9876543210"
    before = KVCache(old, ram_bytes=0, directory=tmp_path, disk_bytes=1_000_000)
    before.put("a", state(10))
    before.put("b", state(10))
    newer, older = before.path_of("a"), before.path_of("b")
    assert newer is not None
    assert older is not None
    one = newer.stat().st_size
    newer.touch()
    os.utime(older, ns=(1, 1))
    theirs = tmp_path / "not-a-namespace"
    theirs.mkdir()
    (theirs / "x.kv").write_bytes(b"kept" * 10_000)
    mixed = tmp_path / "aaaaaaaaaaaaaaaa"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("kept")
    (mixed / "y.kv").write_bytes(b"kept" * 10_000)

    after = KVCache(new, ram_bytes=0, directory=tmp_path, disk_bytes=2 * one)
    assert after.disk_entries == 0, "within the bound, nothing goes"
    assert len(list((tmp_path / old).iterdir())) == 2
    after.put("a", state(10))
    assert list((tmp_path / old).iterdir()) == [newer], "the oldest went"
    after.put("b", state(10))
    assert not (tmp_path / old).exists(), "then the rest, and the emptied folder"
    after.put("c", state(10))
    assert after.disk_entries == 2, "then its own least recently used"
    assert after.take("a") is None
    assert (theirs / "x.kv").exists()
    assert (mixed / "notes.txt").exists()
    assert (mixed / "y.kv").exists()
    assert KVCache(new, ram_bytes=0, directory=tmp_path, disk_bytes=2 * one).disk_entries == 2
