"""Saved KV states of conversations: a RAM LRU bounded in bytes, spilling to an optional directory.

An entry is one conversation's sequence state (``llama_state_seq_get_data``) plus the tokens it
holds, so the next turn can reuse the longest common prefix. Entries live under a *namespace*
that names the model file and the context configuration: a state saved by another model or
another context shape is never offered (llama.cpp checks tensor shapes, not model identity).

The directory tier takes entries evicted from RAM and everything in RAM at ``flush()`` (on
shutdown), so conversations resume quickly after a restart. Files are written atomically (a
temporary file, then ``os.replace``), carry a checksum, and are indexed at start-up; a file that
does not read back cleanly is deleted and reported as a miss. The bound covers the whole
directory: the states of other namespaces in it (another local model's, which loads when a
conversation picks it, or stale ones, saved before the model file or a context setting changed)
count too, and they are the first to go, oldest first, when it is exceeded. Folders that are not
namespaces are never touched. The caller owns thread safety: the engine's worker thread is the
only user.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"PKV1"
_NAMESPACE = re.compile(r"[0-9a-f]{16}")
_HEADER = struct.Struct("<4sI")


@dataclass(frozen=True, slots=True)
class SavedState:
    tokens: tuple[int, ...]
    """The tokens whose KV the state holds, position 0 first."""
    state: bytes

    @property
    def size(self) -> int:
        return len(self.state) + 4 * len(self.tokens)


class KVCache:
    """RAM first, then ``directory``; both bounded (bytes). See the module docstring."""

    def __init__(self, namespace: str, ram_bytes: int, directory: Path | None = None, disk_bytes: int = 0) -> None:
        self.namespace = namespace
        self.ram_bytes = ram_bytes
        self.disk_bytes = disk_bytes
        self._ram: OrderedDict[str, SavedState] = OrderedDict()
        self._ram_used = 0
        self._dir = directory / namespace if directory is not None and disk_bytes > 0 else None
        self._files: OrderedDict[str, int] = OrderedDict()  # file name -> size, oldest first
        self._disk_used = 0
        self._others_used = 0
        """Bytes of the other namespaces' states, as last scanned."""
        if self._dir is not None:
            self._index()

    # public surface

    def put(self, key: str, saved: SavedState) -> None:
        """Keep ``saved`` as ``key``'s newest state, evicting the least recently used to disk."""
        self._drop_ram(key)
        if saved.size > self.ram_bytes:
            self._write(key, saved)
            return
        self._ram[key] = saved
        self._ram_used += saved.size
        while self._ram_used > self.ram_bytes:
            old_key, old = self._ram.popitem(last=False)
            self._ram_used -= old.size
            self._write(old_key, old)

    def take(self, key: str) -> tuple[SavedState, str] | None:
        """``key``'s state and the tier it came from (``ram`` or ``disk``), or ``None``.

        A RAM entry is removed (the caller's sequence now holds it); a file stays until it is
        replaced or evicted, so a crash later still leaves a usable, older prefix.
        """
        saved = self._ram.pop(key, None)
        if saved is not None:
            self._ram_used -= saved.size
            return saved, "ram"
        saved = self._read(key)
        return (saved, "disk") if saved is not None else None

    def longest_prefix(self, tokens: Sequence[int]) -> tuple[SavedState, int] | None:
        """The RAM entry sharing the longest prefix with ``tokens``, and that length; the entry stays
        (a new conversation starts from a copy of a prefix another conversation saved)."""
        best: tuple[SavedState, int] | None = None
        for saved in self._ram.values():
            n = min(len(saved.tokens), len(tokens))
            i = 0
            while i < n and saved.tokens[i] == tokens[i]:
                i += 1
            if i > 0 and (best is None or i > best[1]):
                best = (saved, i)
        return best

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has a state in either tier (a file may still fail to load)."""
        return isinstance(key, str) and (key in self._ram or self._file_name(key) in self._files)

    def discard(self, key: str) -> None:
        """Forget ``key`` in both tiers (``/reset``, or a state that failed to load)."""
        self._drop_ram(key)
        self._remove_file(self._file_name(key))

    def flush(self) -> None:
        """Write every RAM entry to the directory (oldest first, so the newest survive its bound)."""
        if self._dir is None:
            return
        while self._ram:
            key, saved = self._ram.popitem(last=False)
            self._ram_used -= saved.size
            self._write(key, saved)

    @property
    def persistent(self) -> bool:
        """Whether entries outlive the process (a usable directory is set)."""
        return self._dir is not None

    @property
    def ram_used(self) -> int:
        return self._ram_used

    @property
    def ram_entries(self) -> int:
        return len(self._ram)

    @property
    def disk_used(self) -> int:
        return self._disk_used

    @property
    def disk_entries(self) -> int:
        return len(self._files)

    def path_of(self, key: str) -> Path | None:
        """Where ``key``'s file would be (tests corrupt it)."""
        return self._dir / self._file_name(key) if self._dir is not None else None

    # RAM

    def _drop_ram(self, key: str) -> None:
        old = self._ram.pop(key, None)
        if old is not None:
            self._ram_used -= old.size

    # disk

    @staticmethod
    def _file_name(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".kv"

    def _index(self) -> None:
        assert self._dir is not None
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._others_used = sum(size for _mtime, _path, size in self._other_states())
            found = []
            for path in self._dir.iterdir():
                if path.suffix == ".tmp":
                    path.unlink(missing_ok=True)  # a write cut short by a crash
                elif path.suffix == ".kv":
                    stat = path.stat()
                    found.append((stat.st_mtime_ns, path.name, stat.st_size))
        except OSError as exc:
            log.warning("KV cache directory %s unusable, disk tier off: %s", self._dir, exc)
            self._dir = None
            return
        for _mtime, name, size in sorted(found):
            self._files[name] = size
            self._disk_used += size
        self._shrink_disk()

    def _other_states(self) -> list[tuple[int, Path, int]]:
        """The other namespaces' state files, oldest first, as ``(mtime_ns, path, size)``: in folders
        named like a namespace (16 hex digits) that hold only state files."""
        assert self._dir is not None
        found = []
        for folder in self._dir.parent.iterdir():
            if folder == self._dir or not _NAMESPACE.fullmatch(folder.name) or not folder.is_dir():
                continue
            try:
                files = list(folder.iterdir())
                if any(path.suffix not in {".kv", ".tmp"} or not path.is_file() for path in files):
                    continue
                for path in files:
                    stat = path.stat()
                    found.append((stat.st_mtime_ns, path, stat.st_size))
            except OSError:
                continue
        return sorted(found)

    def _drop_others(self) -> None:
        """Delete the other namespaces' oldest states until the directory is within its bound."""
        others = self._other_states()
        self._others_used = sum(size for _mtime, _path, size in others)
        removed, freed = 0, 0
        for _mtime, path, size in others:
            if self._disk_used + self._others_used <= self.disk_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
                removed, freed = removed + 1, freed + size
            self._others_used -= size
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only once it is empty
        if removed:
            log.info("KV cache: deleted %d states (%.0f MB) of another model or context setting", removed, freed / 1e6)

    def _write(self, key: str, saved: SavedState) -> None:
        if self._dir is None:
            return
        name = self._file_name(key)
        self._remove_file(name)
        tokens = array.array("i", saved.tokens).tobytes()
        header = json.dumps(
            {"key": key, "tokens": len(saved.tokens), "state": len(saved.state), "crc": zlib.crc32(saved.state)}
        ).encode()
        size = _HEADER.size + len(header) + len(tokens) + len(saved.state)
        if size > self.disk_bytes:
            return
        path = self._dir / name
        tmp = path.with_suffix(".tmp")
        try:
            with tmp.open("wb") as file:
                file.write(_HEADER.pack(MAGIC, len(header)))
                file.write(header)
                file.write(tokens)
                file.write(saved.state)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write KV state %s: %s", path, exc)
            tmp.unlink(missing_ok=True)
            return
        self._files[name] = size
        self._disk_used += size
        self._shrink_disk()

    def _read(self, key: str) -> SavedState | None:
        if self._dir is None:
            return None
        name = self._file_name(key)
        if name not in self._files:
            return None
        try:
            data = (self._dir / name).read_bytes()
            magic, header_len = _HEADER.unpack_from(data)
            start = _HEADER.size + header_len
            header = json.loads(data[_HEADER.size : start])
            n_tokens, n_state = int(header["tokens"]), int(header["state"])
            if magic != MAGIC or header["key"] != key or len(data) != start + 4 * n_tokens + n_state:
                raise ValueError("bad header or length")
            tokens = array.array("i")
            tokens.frombytes(data[start : start + 4 * n_tokens])
            state = data[start + 4 * n_tokens :]
            if zlib.crc32(state) != header["crc"]:
                raise ValueError("checksum mismatch")
        except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
            log.warning("dropping unreadable KV state %s: %s", name, exc)
            self._remove_file(name)
            return None
        self._files.move_to_end(name)
        return SavedState(tuple(tokens), state)

    def _remove_file(self, name: str) -> None:
        size = self._files.pop(name, None)
        if size is None or self._dir is None:
            return
        self._disk_used -= size
        with contextlib.suppress(OSError):
            (self._dir / name).unlink(missing_ok=True)

    def _shrink_disk(self) -> None:
        if self._disk_used + self._others_used > self.disk_bytes:
            self._drop_others()
        while self._disk_used > self.disk_bytes and self._files:
            self._remove_file(next(iter(self._files)))
