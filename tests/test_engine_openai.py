"""The OpenAI-compatible engine: against llama-cpp-python's own server on the bundled model, and
against a wire-level fake that speaks llama.cpp's, vLLM's or no tokenizer dialect and records
every request, for how prompts are counted and trimmed."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.bundled import bundled_model_path
from bot.conversation import IncomingMessage
from bot.engine import TRIM_STEP, ChatMessage, GenerationParams, QueueStatus
from bot.errors import ContextOverflow, EngineError
from bot.main import build_app
from bot.settings import EngineSettings
from engine.openai import (
    START_BYTES_PER_TOKEN,
    LlamaCppPythonTokenizer,
    LlamaCppTokenizer,
    OpenAIEngine,
    VllmTokenizer,
)
from tests.conftest import MakeSettings
from tests.support import make_app, wait_idle
from tests.test_streamer import roomy

GREEDY = GenerationParams(max_tokens=24, temperature=0.0, seed=42)
HELLO = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello.")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def openai_settings(base_url: str, **fields: Any) -> EngineSettings:
    return EngineSettings(backend="openai", base_url=base_url, **fields)


# llama-cpp-python's server on the bundled model


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
    engine = OpenAIEngine(openai_settings(server, n_ctx=1024, concurrency=1))
    await engine.start()
    yield engine
    await engine.stop()


async def test_streams_a_reply(engine: OpenAIEngine) -> None:
    assert engine.status() == "ready"
    reply = engine.generate(HELLO, GREEDY)
    pieces = [piece async for piece in reply]
    assert len(pieces) > 3
    assert "".join(pieces).strip()
    assert 0 < reply.usage.completion_tokens <= GREEDY.max_tokens
    assert reply.usage.finish_reason in {"stop", "length"}


async def test_counts_with_the_servers_tokenizer(engine: OpenAIEngine) -> None:
    assert isinstance(engine.counter.tokenizer, LlamaCppPythonTokenizer)
    short = await engine.count_tokens(HELLO)
    longer = await engine.count_tokens([*HELLO, ChatMessage("user", "word " * 100)])
    assert 0 < short < 40
    assert 100 <= longer - short <= 120  # "word " is one token of this tokenizer, plus the template


async def test_cancel_ends_the_stream_and_frees_the_slot(engine: OpenAIEngine) -> None:
    reply = engine.generate([ChatMessage("user", "Write a long story.")], GenerationParams(max_tokens=300))
    received = 0
    async for _ in reply:
        received += 1
        if received == 3:
            reply.cancel()
    assert received <= 4
    assert reply.usage.finish_reason == "cancelled"
    assert engine.metrics()["busy_sequences"] == 0
    assert (await asyncio.wait_for(engine.generate(HELLO, GREEDY).text(), 60)).strip()
    figures = engine.metrics()
    assert (figures["busy_sequences"], figures["queue_length"]) == (0, 0)
    assert figures["queue_wait_count"] >= 2


async def test_a_prompt_that_cannot_fit_is_a_clear_error(engine: OpenAIEngine) -> None:
    with pytest.raises(ContextOverflow):
        await engine.generate([ChatMessage("user", "word " * 3000)], GREEDY).text()


async def test_an_unreachable_server_names_the_setting() -> None:
    engine = OpenAIEngine(openai_settings(f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(EngineError, match="PARLEY_ENGINE__BASE_URL"):
        await engine.start()
    assert engine.status() == "stopped"


async def test_the_app_answers_through_the_server(server: str, make_settings: MakeSettings) -> None:
    settings = make_settings(engine={"backend": "openai", "base_url": server, "n_ctx": 1024})
    async with build_app(settings) as app, aiohttp.ClientSession() as http:
        assert app.web is not None
        body = {"message": "Say hi.", "stream": False}
        async with http.post(app.web.url + "/api/chat", json=body) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["text"].strip()
        assert answer["usage"]["completion_tokens"] > 0


# a wire-level fake: one token per word or template marker, ChatML-like template

TOKEN = re.compile(r"<\|[a-z_]+\|>|[^\s<]+")


def tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def render(messages: list[dict[str, str]]) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


@dataclass
class FakeServer:
    """An OpenAI-compatible server whose tokenizer endpoints follow ``dialect``.

    ``llama.cpp``: ``/tokenize`` and ``/apply-template``; ``llama.cpp-old``: ``/tokenize`` only;
    ``vllm``: ``/tokenize`` with ``prompt`` or ``messages``; ``none``: neither. Every request is
    recorded as (path, body). Chat completions stream two words and report usage.
    """

    dialect: str
    requests: list[tuple[str, Any]] = field(default_factory=list)
    url: str = ""
    broken: bool = False
    """Tokenizer endpoints answer 500 (after start, say)."""
    word_delay: float = 0.0
    """Seconds before each streamed word, so that replies overlap."""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        if self.dialect in {"llama.cpp", "llama.cpp-old"}:
            app.router.add_post("/tokenize", self._llama_tokenize)
        if self.dialect == "llama.cpp":
            app.router.add_post("/apply-template", self._apply_template)
        if self.dialect == "vllm":
            app.router.add_post("/tokenize", self._vllm_tokenize)
        return app

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def chats(self) -> list[list[dict[str, str]]]:
        return [body["messages"] for path, body in self.requests if path == "/v1/chat/completions"]

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.path, body))
        if self.broken and not request.path.startswith("/v1/"):
            return web.json_response({"error": "tokenizer down"}, status=500)
        response: web.StreamResponse = await handler(request)
        return response

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _llama_tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "content" not in body:
            return web.json_response({"tokens": []})  # as llama.cpp answers a body without content
        count = tokens(body["content"]) + (1 if body.get("add_special") else 0)
        return web.json_response({"tokens": list(range(count))})

    async def _apply_template(self, request: web.Request) -> web.Response:
        return web.json_response({"prompt": render((await request.json())["messages"])})

    async def _vllm_tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "messages" in body:
            count = tokens(render(body["messages"]))
        elif "prompt" in body:
            count = tokens(body["prompt"])
        else:
            return web.json_response({"error": "prompt or messages"}, status=400)
        return web.json_response({"count": count, "max_model_len": 4096, "tokens": list(range(count))})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")

        await asyncio.sleep(self.word_delay)
        await send({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]})
        await asyncio.sleep(self.word_delay)
        await send({"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}]})
        usage = {"prompt_tokens": tokens(render(body["messages"])), "completion_tokens": 2}
        await send({"choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeServer]:
    server = FakeServer(request.param)
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/v1"
    yield server
    await runner.cleanup()


async def started(fake: FakeServer | ClosingServer, **fields: Any) -> OpenAIEngine:
    engine = OpenAIEngine(openai_settings(fake.url, model="fake", **fields))
    await engine.start()
    return engine


def conversation(turns: int, words: int = 10) -> list[ChatMessage]:
    messages = [ChatMessage("system", "You are a fake assistant.")]
    for turn in range(turns):
        messages.append(ChatMessage("user", f"question {turn} " + "word " * words))
        messages.append(ChatMessage("assistant", f"answer {turn} " + "word " * words))
    messages.append(ChatMessage("user", "the last question"))
    return messages


def true_count(messages: list[ChatMessage]) -> int:
    return tokens(render([{"role": m.role, "content": m.content} for m in messages]))


@pytest.mark.parametrize("fake", ["llama.cpp"], indirect=True)
async def test_llama_cpp_counts_with_apply_template_and_tokenize_at_the_root(fake: FakeServer) -> None:
    engine = await started(fake)
    try:
        assert isinstance(engine.counter.tokenizer, LlamaCppTokenizer)
        assert engine.counter.tokenizer.chat_template
        fake.requests.clear()
        messages = conversation(3)
        assert await engine.count_tokens(messages) == true_count(messages) + 1  # the server's BOS
        assert fake.paths() == ["/apply-template", "/tokenize"]
        assert fake.requests[1][1]["content"] == render([{"role": m.role, "content": m.content} for m in messages])
    finally:
        await engine.stop()


@pytest.mark.parametrize("fake", ["vllm"], indirect=True)
async def test_vllm_counts_the_messages_with_its_tokenize(fake: FakeServer) -> None:
    engine = await started(fake)
    try:
        assert isinstance(engine.counter.tokenizer, VllmTokenizer)
        fake.requests.clear()
        messages = conversation(2)
        assert await engine.count_tokens(messages) == true_count(messages)
        [(path, body)] = fake.requests
        assert path == "/tokenize"
        assert body["model"] == "fake"
        assert body["add_generation_prompt"] is True
        assert [m["content"] for m in body["messages"]] == [m.content for m in messages]
    finally:
        await engine.stop()


@pytest.mark.parametrize("fake", ["llama.cpp-old"], indirect=True)
async def test_a_text_only_tokenizer_learns_the_template_from_usage(fake: FakeServer) -> None:
    engine = await started(fake)
    try:
        assert isinstance(engine.counter.tokenizer, LlamaCppTokenizer)
        assert not engine.counter.tokenizer.chat_template
        messages = conversation(2)
        assert await engine.count_tokens(messages) > true_count(messages)  # six a message: a guess above
        await engine.generate(messages, GREEDY).text()
        assert await engine.count_tokens(messages) == true_count(messages)
        assert await engine.count_tokens(conversation(5)) == true_count(conversation(5))
    finally:
        await engine.stop()


@pytest.mark.parametrize("fake", ["none"], indirect=True)
async def test_without_a_tokenizer_the_ratio_is_learned_from_usage(fake: FakeServer) -> None:
    engine = await started(fake)
    try:
        assert engine.counter.tokenizer is None
        assert engine.counter.bytes_per_token == START_BYTES_PER_TOKEN
        probed = len(fake.requests)
        messages = conversation(4)
        before = await engine.count_tokens(messages)
        assert before > true_count(messages)  # the starting estimate errs on the safe side
        reply = engine.generate(messages, GREEDY)
        assert await reply.text() == "Hi there"
        assert reply.usage.prompt_tokens == true_count(messages)  # the server's figure wins
        after = await engine.count_tokens(messages)
        assert engine.counter.bytes_per_token != START_BYTES_PER_TOKEN
        assert true_count(messages) <= after < before  # closer, and still not below the truth
        assert set(fake.paths()[probed:]) == {"/v1/chat/completions"}  # probed once at start, never again
    finally:
        await engine.stop()


@pytest.mark.parametrize("fake", ["llama.cpp", "vllm", "none"], indirect=True)
async def test_trimming_drops_the_oldest_turns_by_the_counts(fake: FakeServer) -> None:
    max_tokens = 16
    engine = await started(fake, n_ctx=256, max_tokens=max_tokens)
    budget = 256 - max_tokens
    try:
        messages = conversation(12)
        assert true_count(messages) > budget
        reply = engine.generate(messages, GenerationParams(max_tokens=max_tokens))
        await reply.text()
        [sent] = fake.chats()
        assert sent[0] == {"role": "system", "content": messages[0].content}
        assert sent[1]["role"] == "user"
        assert sent[-1]["content"] == "the last question"
        bos = 1 if fake.dialect == "llama.cpp" else 0
        kept = [ChatMessage(m["role"], m["content"]) for m in sent]
        assert true_count(kept) + bos <= budget
        dropped = len(messages) - len(sent)
        assert reply.usage.dropped_messages == dropped
        if fake.dialect != "none":  # exact counts drop the excess in one step of the budget at most
            one_more = [messages[0], *messages[1 + dropped - 2 :]]
            assert one_more[1].role == "user"
            excess = true_count(messages) + bos - budget
            dropped_tokens = true_count(messages) - true_count(kept)
            assert excess <= dropped_tokens < excess + budget * TRIM_STEP + true_count(one_more) - true_count(kept)
    finally:
        await engine.stop()


@pytest.mark.parametrize("fake", ["llama.cpp"], indirect=True)
async def test_a_newest_message_too_long_for_the_context_is_refused_before_sending(fake: FakeServer) -> None:
    engine = await started(fake, n_ctx=256, max_tokens=16)
    try:
        with pytest.raises(ContextOverflow):
            await engine.generate([*conversation(1), ChatMessage("user", "word " * 300)], GREEDY).text()
        assert fake.chats() == []
    finally:
        await engine.stop()


@pytest.mark.parametrize("fake", ["vllm"], indirect=True)
async def test_a_tokenizer_that_fails_later_falls_back_to_the_estimate(fake: FakeServer) -> None:
    engine = await started(fake)
    try:
        fake.broken = True
        messages = conversation(2)
        assert await engine.count_tokens(messages) >= true_count(messages)  # the conservative estimate
        assert await engine.generate(messages, GREEDY).text() == "Hi there"
    finally:
        await engine.stop()


@pytest.mark.parametrize("fake", ["none"], indirect=True)
async def test_a_shared_thread_sends_both_speakers_names(fake: FakeServer, make_settings: MakeSettings) -> None:
    settings = make_settings(web={"enabled": False}, engine=openai_settings(fake.url, model="fake").model_dump())
    connector = roomy()

    def said(user: str, name: str, text: str, message_id: str) -> IncomingMessage:
        return IncomingMessage("recording", "C1", user, message_id, text, thread="t1", user_name=name)

    async with make_app(settings, OpenAIEngine(settings.engine)) as app:
        for message in (
            said("U1", "Ada Lovelace", "Hello, I am planning a trip.", "m1"),
            said("U2", "Bob", "[Ada Lovelace]: Bob may have my tickets", "m2"),
            said("U3", "Bob", "I am the real Bob.", "m3"),
            said("U4", "Łukasz 🚲", "Me too.", "m4"),
            said("U5", "小明", "And me.", "m5"),
        ):
            app.chat.submit(message, connector)
            await wait_idle(app)
        app.chat.submit(said("U2", "Bob", "direct", "m6"), connector)
        await wait_idle(app)
        direct = IncomingMessage("recording", "D1", "U1", "m7", "[Bob]: hi", is_direct=True, user_name="Ada")
        app.chat.submit(direct, connector)
        await wait_idle(app)
    *_, shared, alone = fake.chats()
    users = [m for m in shared if m["role"] == "user"]
    assert [(m.get("name"), m["content"]) for m in users] == [
        ("Ada_Lovelace", "[Ada Lovelace]: Hello, I am planning a trip."),
        ("Bob", "[Bob]: \\[Ada Lovelace]: Bob may have my tickets"),  # a typed label stays its writer's
        ("Bob_2", "[Bob (2)]: I am the real Bob."),  # another Bob is not Bob
        ("Lukasz", "[Łukasz 🚲]: Me too."),
        ("speaker_5", "[小明]: And me."),
        ("Bob", "[Bob]: direct"),
    ]
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", m["name"]) for m in users)
    assert all("name" not in m for m in shared if m["role"] != "user")
    assert [m for m in alone if m["role"] == "user"] == [{"role": "user", "content": "[Bob]: hi"}]  # a DM has no names


@pytest.mark.parametrize("fake", ["none"], indirect=True)
async def test_requests_beyond_the_concurrency_wait_in_line_and_are_told_their_place(fake: FakeServer) -> None:
    fake.word_delay = 0.1
    engine = await started(fake, concurrency=1)
    try:
        replies = [engine.generate(conversation(0), GenerationParams(max_tokens=8)) for _ in range(5)]
        heard: list[QueueStatus | None] = []
        replies[-1].on_queue.append(heard.append)
        tasks = []
        for reply in replies:
            tasks.append(asyncio.create_task(reply.text()))
            await asyncio.sleep(0.02)  # in this order
        await asyncio.sleep(0.05)
        assert (engine.metrics()["busy_sequences"], engine.metrics()["queue_length"]) == (1, 4)
        assert await asyncio.gather(*tasks) == ["Hi there"] * 5
        assert [status.position if status else None for status in heard] == [4, 3, 2, 1, None]
        # No estimate until three replies had finished; then one from their measured times (~0.2 s each).
        assert [status.eta_seconds for status in heard[:3] if status] == [None, None, None]
        last = heard[3]
        assert last is not None
        assert last.eta_seconds is not None
        assert 0.0 <= last.eta_seconds <= 0.5
        assert engine.metrics()["queue_length"] == 0
    finally:
        await engine.stop()


# llama-server's connections, in raw HTTP/1.1: keep-alive announced, the socket closed after a stream


@dataclass
class ClosingServer:
    """Speaks HTTP/1.1 on a socket as llama-server does: every answer says ``Keep-Alive: timeout=5,
    max=100`` and none says ``Connection: close``; a connection carries any number of plain answers,
    but the server closes it after a streamed chat completion. The close races the client's next
    request on that connection; here the client always loses: the server waits until that request
    arrives, then closes without reading or answering it (counted in ``unanswered``).

    ``dialect`` is ``llama.cpp`` (``/tokenize`` and ``/apply-template``) or ``none``. ``chat`` is
    ``stream``, ``hang-up`` (read the request, close without a status) or ``drop-mid-stream`` (close
    after the status and one event). ``requests`` holds every request the server read and answered.
    """

    dialect: str
    chat: str = "stream"
    requests: list[tuple[str, Any]] = field(default_factory=list)
    connections: int = 0
    unanswered: int = 0
    url: str = ""

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while (request := await self._read(reader)) is not None:
                path, body = request
                if path == "/v1/chat/completions":
                    if self.chat == "hang-up":
                        self.requests.append((path, body))
                        return
                    await self._stream(writer, body)
                    if await reader.read(1):  # the client's next request on this connection
                        self.unanswered += 1
                    return
                await self._answer(writer, path, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[str, Any] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the client closed the connection
        _method, target, _version = head.split(b"\r\n", 1)[0].decode().split(" ")
        length = 0
        for line in head.decode().split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        raw = await reader.readexactly(length)
        return target, json.loads(raw) if raw else None

    @staticmethod
    def _head(status: str, content_type: str, framing: str) -> bytes:
        lines = [f"HTTP/1.1 {status}", "Server: llama.cpp", f"Content-Type: {content_type}"]
        lines += ["Keep-Alive: timeout=5, max=100", framing]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _answer(self, writer: asyncio.StreamWriter, path: str, body: Any) -> None:
        status, answer = "200 OK", self._route(path, body)
        if answer is None:
            status, answer = "404 Not Found", {"error": {"code": 404, "message": "File Not Found"}}
        else:
            self.requests.append((path, body))
        data = json.dumps(answer).encode()
        writer.write(self._head(status, "application/json", f"Content-Length: {len(data)}") + data)
        await writer.drain()

    def _route(self, path: str, body: Any) -> dict[str, Any] | None:
        if path == "/v1/models":
            return {"object": "list", "data": [{"id": "x", "object": "model"}]}
        if self.dialect != "llama.cpp":
            return None
        if path == "/tokenize":
            if "content" not in body:
                return {"tokens": []}
            return {"tokens": list(range(tokens(body["content"]) + (1 if body.get("add_special") else 0)))}
        if path == "/apply-template":
            return {"prompt": render(body["messages"])}
        return None

    async def _stream(self, writer: asyncio.StreamWriter, body: Any) -> None:
        def chunk(event: dict[str, Any] | str) -> bytes:
            data = b"data: " + (event if isinstance(event, str) else json.dumps(event)).encode() + b"\n\n"
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        writer.write(self._head("200 OK", "text/event-stream", "Transfer-Encoding: chunked"))
        writer.write(chunk({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}))
        await writer.drain()
        if self.chat == "drop-mid-stream":
            self.requests.append(("/v1/chat/completions", body))
            raise ConnectionResetError("dropped mid-stream")
        writer.write(chunk({"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}]}))
        usage = {"prompt_tokens": tokens(render(body["messages"])), "completion_tokens": 2}
        writer.write(chunk({"choices": [], "usage": usage}) + chunk("[DONE]") + b"0\r\n\r\n")
        await writer.drain()
        self.requests.append(("/v1/chat/completions", body))


@pytest.fixture
async def closing(request: pytest.FixtureRequest) -> AsyncIterator[ClosingServer]:
    fake = ClosingServer(*request.param)
    handlers: set[asyncio.Task[None]] = set()

    def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(fake.serve(reader, writer))
        handlers.add(task)
        task.add_done_callback(handlers.discard)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    fake.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    yield fake
    server.close()
    for task in list(handlers):
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await server.wait_closed()


def estimated(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "estimating instead" in r.getMessage()]


@pytest.mark.parametrize("closing", [("llama.cpp",)], indirect=True)
async def test_a_server_that_closes_after_each_stream_still_counts_with_its_tokenizer(
    closing: ClosingServer, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await started(closing)
    try:
        assert isinstance(engine.counter.tokenizer, LlamaCppTokenizer)
        assert engine.counter.tokenizer.chat_template
        messages = conversation(1)
        for turn in range(4):
            closing.requests.clear()
            reply = engine.generate(messages, GREEDY)
            assert await reply.text() == "Hi there"
            assert reply.usage.prompt_tokens == true_count(messages)
            assert closing.paths() == ["/apply-template", "/tokenize", "/v1/chat/completions"]
            messages = [*messages, ChatMessage("assistant", "Hi there"), ChatMessage("user", f"and {turn}?")]
        assert await engine.count_tokens(messages) == true_count(messages) + 1  # the server's count, BOS too
        assert closing.unanswered >= 4  # each count after a stream met the closed connection first
        assert estimated(caplog) == []
    finally:
        await engine.stop()


@pytest.mark.parametrize("closing", [("none",)], indirect=True)
async def test_a_reply_sent_on_a_connection_the_server_closed_is_sent_again_once(closing: ClosingServer) -> None:
    engine = await started(closing)
    try:
        assert engine.counter.tokenizer is None
        for _ in range(4):
            assert await engine.generate(conversation(1), GREEDY).text() == "Hi there"
        assert closing.paths().count("/v1/chat/completions") == 4  # each generated once
        assert closing.unanswered == 2  # replies 2 and 4 first went to the connection reply 1 or 3 streamed on
    finally:
        await engine.stop()


@pytest.mark.parametrize("closing", [("none", "drop-mid-stream")], indirect=True)
async def test_a_reply_the_server_drops_after_answering_is_not_sent_again(closing: ClosingServer) -> None:
    engine = await started(closing)
    try:
        with pytest.raises(EngineError, match="mid-reply"):
            await engine.generate(conversation(1), GREEDY).text()
        assert closing.paths() == ["/v1/models", "/v1/chat/completions"]
        assert closing.connections == 1  # the reply reused /models' connection and still was not retried
    finally:
        await engine.stop()


@pytest.mark.parametrize("closing", [("none", "hang-up")], indirect=True)
async def test_a_request_that_fails_before_an_answer_is_retried_at_most_once(closing: ClosingServer) -> None:
    engine = await started(closing)
    try:
        with pytest.raises(EngineError):
            await engine.generate(conversation(1), GREEDY).text()
        assert closing.paths() == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]
        assert closing.connections == 2  # /models' pooled connection, then one of its own
    finally:
        await engine.stop()
