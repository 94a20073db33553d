"""`parley run` as a process: start-up lines, a clean stop on SIGTERM, and a crash mid-reply."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp

from bot.store import Store, TurnStatus
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[1]


async def start(db: Path, *extra: str) -> tuple[asyncio.subprocess.Process, str, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env |= {"PARLEY_DB_PATH": str(db), "PARLEY_WEB__PORT": "0", "PARLEY_ENGINE__SEED": "42"}
    env |= dict(item.split("=", 1) for item in extra)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=db.parent, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    lines: list[str] = []
    url = ""
    while "Parley is up" not in (lines[-1] if lines else ""):
        line = (await asyncio.wait_for(process.stderr.readline(), 120)).decode()
        assert line, "parley run exited early:\n" + "".join(lines)
        lines.append(line)
        if found := re.search(r"web: chat page and API on (\S+)", line):
            url = found.group(1)
    return process, url, lines


async def test_starts_with_one_line_per_component_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    process, url, lines = await start(tmp_path / "p.db")
    text = "".join(lines)
    for component in ("store:", "engine: local", "web: chat page and API on http://127.0.0.1:", "plugins: core"):
        assert component in text
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as response:
        assert response.status == 200
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert process.stderr is not None
    assert b"stopped" in await process.stderr.read()


def saved_partial(db: Path) -> str:
    """The text saved so far of the reply being streamed (read-only, beside the running bot)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            row = connection.execute("SELECT text FROM turns WHERE status = 'streaming'").fetchone()
    except sqlite3.Error:  # busy for a moment: ask again
        return ""
    return str(row[0]) if row else ""


async def test_a_reply_cut_off_by_a_crash_is_kept_and_marked_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    process, url, _ = await start(db, "PARLEY_ENGINE__MAX_TOKENS=1000", "PARLEY_ENGINE__TEMPERATURE=0")
    try:
        async with aiohttp.ClientSession() as http:
            response = await http.post(url + "/api/chat", json={"message": "Write a very long story about the sea."})
            # Stream until the growing reply has been saved with some text (every 2 s), however fast
            # the machine is: read the database as the bot writes it.
            await wait_until(lambda: len(saved_partial(db)) > 20, timeout=120, what="a partial reply saved")
            process.kill()  # no clean-up of any kind
            await process.wait()
            response.close()
    finally:
        if process.returncode is None:
            process.kill()
    async with Store(db) as store:
        assert store.recovered == 1
        async with store.db.execute("SELECT id FROM conversations") as cursor:
            (conversation,) = await cursor.fetchone()  # type: ignore[misc]
        user, reply = await store.turns(conversation)
    assert user.text == "Write a very long story about the sea."
    assert reply.status is TurnStatus.INTERRUPTED
    assert len(reply.text) > 20, "the partial reply was kept"
