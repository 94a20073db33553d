"""Generated input against the HTTP API: no body, header or path may produce a 5xx.

The app (scripted engine, real SQLite file) runs on its own event loop in a thread, so that
Hypothesis can drive it from a plain test. ``PARLEY_FUZZ_EXAMPLES`` raises the number of
examples (the suite runs a bounded number; ``-m heavy`` cases run more).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.settings import EngineSettings, Settings, WebSettings
from tests.support import make_app

EXAMPLES = int(os.environ.get("PARLEY_FUZZ_EXAMPLES", "120"))
KEYS = ["message", "conversation_id", "max_tokens", "temperature", "stream", "extra", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
bodies = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
odd_text = st.text(st.characters(categories=["L", "N", "P", "S", "Z", "Cc", "Cs"]), min_size=0, max_size=200)


class Running:
    """The app on a loop of its own; ``call`` runs a coroutine there and waits."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app = make_app(settings)
        self.call(self.app.start())
        self.http: aiohttp.ClientSession = self.call(self._session())
        assert self.app.web is not None
        self.url = self.app.web.url

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.call(self.http.close())
        self.call(self.app.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        async def go() -> tuple[int, bytes]:
            async with self.http.request(method, self.url + path, **kwargs) as response:
                return response.status, await response.read()

        result: tuple[int, bytes] = self.call(go())
        return result


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    base: Path = tmp_path_factory.mktemp("fuzz")
    settings = Settings(
        engine=EngineSettings(max_tokens=16, n_ctx=2048),
        web=WebSettings(port=0, max_message_chars=2000),
        db_path=base / "fuzz.db",
        limits={"messages_per_minute": 0},
    )
    app = Running(settings)
    yield app
    app.close()


def check(status: int, body: bytes) -> None:
    assert status < 500, body[:300]
    if status >= 400:
        error = json.loads(body)["error"]
        assert error["type"]
        assert error["message"]


fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(body=bodies)
def test_generated_json_bodies(running: Running, body: dict[str, Any]) -> None:
    try:
        data = json.dumps(body, allow_nan=True).encode()
    except (TypeError, ValueError, RecursionError):
        return
    check(*running.request("POST", "/api/chat", data=data))


@fuzz
@given(text=odd_text, stream=st.booleans())
def test_generated_message_text(running: Running, text: str, stream: bool) -> None:
    data = json.dumps({"message": text, "stream": stream}).encode()
    status, body = running.request("POST", "/api/chat", data=data)
    check(status, body)
    if stream and status == 200:
        assert b'"done": true' in body


@fuzz
@given(raw=st.binary(max_size=300))
def test_generated_raw_bytes(running: Running, raw: bytes) -> None:
    check(*running.request("POST", "/api/chat", data=raw, headers={"Content-Type": "application/json"}))


@fuzz
@given(
    path=st.text(st.characters(codec="ascii", exclude_characters="#?"), max_size=30),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
)
def test_generated_paths(running: Running, path: str, method: str) -> None:
    status, body = running.request(method, "/api/conversations/" + path)
    assert status < 500, body[:300]


@pytest.mark.heavy
@settings(max_examples=EXAMPLES * 10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_many_generated_bodies(running: Running, body: dict[str, Any]) -> None:
    try:
        data = json.dumps(body, allow_nan=True).encode()
    except (TypeError, ValueError, RecursionError):
        return
    check(*running.request("POST", "/api/chat", data=data))
