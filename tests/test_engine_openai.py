"""The OpenAI-compatible engine against a real server: llama-cpp-python's, on the bundled model."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from bot.app import Parley
from bot.errors import ContextOverflow, EngineError
from engine.base import ChatMessage, GenerationParams
from engine.bundled import bundled_model_path
from engine.openai import OpenAIEngine, OpenAIEngineConfig
from tests.conftest import MakeSettings

GREEDY = GenerationParams(max_tokens=24, temperature=0.0, seed=42)
HELLO = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello.")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path())]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--n_threads", "2", "--seed", "42"]
    # A file, not a pipe: the server logs the whole model load, more than a pipe buffer holds.
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    base = f"http://127.0.0.1:{port}/v1"

    async def ready() -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                if process.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
                try:
                    async with http.get(base + "/models") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("llama_cpp.server did not come up")

    try:
        asyncio.run(ready())
        yield base
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
async def engine(server: str) -> AsyncIterator[OpenAIEngine]:
    engine = OpenAIEngine(OpenAIEngineConfig(base_url=server, n_ctx=1024, concurrency=1))
    await engine.start()
    yield engine
    await engine.stop()


async def test_streams_a_reply(engine: OpenAIEngine) -> None:
    reply = engine.generate(HELLO, GREEDY)
    pieces = [piece async for piece in reply]
    assert len(pieces) > 3
    assert "".join(pieces).strip()
    assert 0 < reply.usage.completion_tokens <= GREEDY.max_tokens
    assert reply.usage.finish_reason in {"stop", "length"}


async def test_cancel_ends_the_stream_and_frees_the_slot(engine: OpenAIEngine) -> None:
    reply = engine.generate([ChatMessage("user", "Write a long story.")], GenerationParams(max_tokens=300))
    received = 0
    async for _ in reply:
        received += 1
        if received == 3:
            reply.cancel()
    assert received <= 4
    assert reply.usage.finish_reason == "cancelled"
    assert (await asyncio.wait_for(engine.generate(HELLO, GREEDY).text(), 60)).strip()


async def test_a_prompt_that_cannot_fit_is_a_clear_error(engine: OpenAIEngine) -> None:
    with pytest.raises(ContextOverflow):
        await engine.generate([ChatMessage("user", "word " * 3000)], GREEDY).text()


async def test_an_unreachable_server_names_the_setting() -> None:
    engine = OpenAIEngine(OpenAIEngineConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", connect_timeout=2))
    with pytest.raises(EngineError, match="PARLEY_ENGINE__BASE_URL"):
        await engine.start()


async def test_the_app_answers_through_the_server(server: str, make_settings: MakeSettings) -> None:
    settings = make_settings(engine={"backend": "openai", "base_url": server, "n_ctx": 1024})
    async with Parley(settings) as app, aiohttp.ClientSession() as http:
        assert app.web is not None
        body = {"message": "Say hi.", "stream": False}
        async with http.post(app.web.url + "/api/chat", json=body) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["text"].strip()
        assert answer["usage"]["completion_tokens"] > 0
