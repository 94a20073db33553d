"""`PARLEY_LOG_FORMAT=json parley run` with every connector running: JSON lines, no secret anywhere.

``parley run`` is a subprocess on the bundled model, logging at DEBUG (every library's lines);
Telegram, Discord and Slack are the wire-level fakes served by this test. One Telegram message and
one API chat are answered; then every line of the log must parse as JSON, the lines about the
replies must name them, and no token, signing secret or API key may appear in any line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.discord import endpoints
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import TOKEN, Chat, FakeTelegram
from tests.support import wait_until

API_KEY = "api-key-for-the-log-test"
SIGNING_SECRET = "signing-secret-for-the-log-test"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeDiscord, FakeSlack]]:
    previous = endpoints.current()
    discord = FakeDiscord()
    await discord.start()
    try:
        async with FakeTelegram() as telegram, FakeSlack() as slack:
            yield telegram, discord, slack
    finally:
        await discord.stop()
        endpoints.restore(previous)


async def read_until(stream: asyncio.StreamReader, lines: list[str], needle: str) -> dict[str, Any]:
    while True:
        raw = await asyncio.wait_for(stream.readline(), 120)
        assert raw, "parley run ended early:\n" + "".join(lines)
        line = raw.decode()
        lines.append(line)
        record = json.loads(line)
        if needle in record.get("message", ""):
            return dict(record)


async def test_json_logs_with_every_connector_running(
    tmp_path: Path, fakes: tuple[FakeTelegram, FakeDiscord, FakeSlack]
) -> None:
    telegram, discord, slack = fakes
    secrets = [TOKEN, discord.token, slack.bot_token, slack.app_token, SIGNING_SECRET, API_KEY]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env |= {
        "PARLEY_LOG_FORMAT": "json",
        "PARLEY_LOG_LEVEL": "DEBUG",
        "PARLEY_DB_PATH": str(tmp_path / "parley.db"),
        "PARLEY_WEB__PORT": "0",
        "PARLEY_WEB__API_KEYS": API_KEY,
        "PARLEY_ENGINE__MAX_TOKENS": "16",
        "PARLEY_ENGINE__TEMPERATURE": "0",
        "PARLEY_ENGINE__THREADS": "1",
        "PARLEY_TELEGRAM__TOKEN": TOKEN,
        "PARLEY_TELEGRAM__BASE_URL": telegram.url,
        "PARLEY_TELEGRAM__POLL_TIMEOUT": "1",
        "PARLEY_DISCORD__TOKEN": discord.token,
        "PARLEY_DISCORD__API_BASE": discord.api_base,
        "PARLEY_DISCORD__GATEWAY_URL": discord.gateway_url,
        "PARLEY_SLACK__BOT_TOKEN": slack.bot_token,
        "PARLEY_SLACK__APP_TOKEN": slack.app_token,
        "PARLEY_SLACK__SIGNING_SECRET": SIGNING_SECRET,
        "PARLEY_SLACK__API_URL": slack.url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        web = await read_until(process.stderr, lines, "web: chat page and API on ")
        url = web["message"].rsplit(" ", 1)[-1]
        await read_until(process.stderr, lines, "Parley is up")

        chat = Chat(id=42, type="private")
        asked = telegram.push(chat, "Say hello.")
        await wait_until(lambda: telegram.replies_to(chat.id, asked), timeout=120, what="a Telegram reply")
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with aiohttp.ClientSession() as http:
            body = {"message": "Hello over the API.", "stream": False}
            async with http.post(url + "/api/chat", json=body, headers=headers) as response:
                assert response.status == 200
                answer = await response.json()
        process.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines += rest.decode().splitlines(keepends=True)
    text = "".join(lines)

    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    assert any(record["logger"].startswith(("httpx", "telegram", "discord", "slack")) for record in records)
    for secret in secrets:
        assert secret not in text
    # Lines about the replies say which reply they concern.
    about_web = [r for r in records if r.get("conversation_id") == answer["conversation_id"]]
    assert about_web
    assert all(r["platform"] == "web" and r.get("message_id") for r in about_web)
    about_telegram = [r for r in records if r.get("platform") == "telegram"]
    assert about_telegram
    assert all(r.get("message_id") == str(asked) and r.get("conversation_id") for r in about_telegram)
