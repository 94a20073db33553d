"""An engine that streams from an OpenAI-compatible server (llama.cpp's server, vLLM, Ollama).

For deployments that outgrow one machine: the server does the batching (llama-server's
``--parallel`` slots, vLLM's continuous batching); Parley keeps at most
``PARLEY_ENGINE__CONCURRENCY`` requests in flight; the others wait in a
:class:`~bot.waiting.Line`, which tells each its place. Replies stream over SSE from
``POST {base_url}/chat/completions``; closing a reply closes the HTTP response, which these servers
take as a cancellation.

Prompt sizes, which decide how much old history is trimmed, come from the server's own tokenizer
where it has one. ``start()`` probes once, at the server's root (``base_url`` without ``/v1``):

- vLLM: ``POST /tokenize`` with ``{"model", "messages"}`` counts the prompt with the chat template.
- llama.cpp's server: ``POST /apply-template`` renders the prompt and ``POST /tokenize``
  ``{"content"}`` counts it.
- llama-cpp-python's server: ``POST /extras/tokenize/count`` counts each message's text; the
  template's tokens per message are then learned from the ``usage`` the server reports.

A server with none of these (Ollama, hosted APIs) gets an estimate: UTF-8 bytes over a
bytes-per-token ratio that starts conservative (3) and is learned from each reply's reported
``usage.prompt_tokens``.

Every request goes through :class:`Http`, which retries once, on a new connection, a request that
failed on a pooled connection the server had already closed (llama-server closes the connection
after each streamed reply, though it announced keep-alive).
"""

from __future__ import annotations

import abc
import asyncio
import base64
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.engine import ChatMessage, Engine, GenerationParams, Reply, trim_history
from bot.errors import ContextOverflow, EngineBusy, EngineError
from bot.settings import EngineSettings
from bot.waiting import Line

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
PROBE_TIMEOUT = 5.0
START_BYTES_PER_TOKEN = 3.0
"""An over-estimate of tokens for common tokenizers (English averages about 4 bytes a token)."""
TOKENS_PER_MESSAGE = 6
"""Template tokens around one message (role markers, separators) until the server's usage says."""
PROMPT_TOKENS = 2
"""Template tokens that open the assistant's reply."""
MARGIN = 0.9
"""A learned ratio is used with this margin, so that a text denser than the average still fits."""
CACHED_TEXTS = 4096


STALE_CONNECTION = (aiohttp.ClientOSError, aiohttp.ClientConnectionResetError, aiohttp.ServerDisconnectedError)
"""How aiohttp reports writing to, or reading the status from, a connection the server has closed."""


class Attempt:
    """One request's trace context: whether aiohttp gave it a pooled connection."""

    reused = False


async def _on_reuse(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: aiohttp.TraceConnectionReuseconnParams
) -> None:
    attempt = context.trace_request_ctx
    if isinstance(attempt, Attempt):
        attempt.reused = True


class Http:
    """The engine's HTTP client: pooled connections, and one retry when a pooled one was dead.

    A server may close a keep-alive connection while it sits in aiohttp's pool: llama-server sends
    ``Keep-Alive: timeout=5, max=100`` with a streamed reply and then closes the socket. aiohttp
    reuses the connection before it sees the close, and the next request fails at once ("Can not
    write request body", a reset, or ``ServerDisconnectedError``). aiohttp retries that itself only
    for idempotent methods, and every call here but ``/models`` is a POST.

    So a request is retried once, on a connection of its own (``force_close``: never pooled), when
    all of these hold: aiohttp took its connection from the pool (the ``on_connection_reuseconn``
    trace), it failed with one of :data:`STALE_CONNECTION`, and it failed before a response status
    arrived (inside ``request()``, which returns once the status and headers are read). A failure
    after that, a timeout, or a failure on a new connection is never retried: the server may have
    started generating. A POST sent on a dead connection the server had not read is what this
    retries; a server that crashed after reading it, before answering, is asked once more.
    """

    def __init__(self, headers: dict[str, str], timeout: aiohttp.ClientTimeout) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_connection_reuseconn.append(_on_reuse)
        self.pooled = aiohttp.ClientSession(headers=headers, timeout=timeout, trace_configs=[trace])
        self.fresh = aiohttp.ClientSession(
            headers=headers, timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
        )

    @asynccontextmanager
    async def request(self, method: str, url: str, *, json: Any = None) -> AsyncIterator[aiohttp.ClientResponse]:
        attempt = Attempt()
        try:
            response = await self.pooled.request(method, url, json=json, trace_request_ctx=attempt)
        except STALE_CONNECTION as exc:
            # No status came back, so the server answered nothing; on a pooled connection this is
            # the close it made after a stream, which it made without reading this request.
            if not attempt.reused or isinstance(exc, aiohttp.ClientConnectorError):
                raise
            path = urlsplit(url).path  # not the host: a base URL may carry credentials
            log.debug("%s %s met a pooled connection the server had closed (%s); retrying once", method, path, exc)
            response = await self.fresh.request(method, url, json=json)
        async with response:
            yield response

    def get(self, url: str) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self.request("GET", url)

    def post(self, url: str, *, json: Any) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self.request("POST", url, json=json)

    async def close(self) -> None:
        try:
            await self.pooled.close()
        finally:
            await self.fresh.close()


def server_root(base_url: str) -> str:
    """Where tokenizer endpoints live: the server's root, not its ``/v1`` API."""
    url = base_url.rstrip("/")
    return url.removesuffix("/v1")


def utf8_size(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.content.encode()) for m in messages)


def wire(message: ChatMessage, *, images: bool = False) -> dict[str, Any]:
    """``message`` as the chat completions API takes it: ``role``, ``content`` and, for a speaker in a
    shared conversation, ``name`` (the content keeps its ``[Name]:`` label for servers that ignore it).
    With ``images``, a message that carries images has a list of content parts: the text, then each
    image as a base64 ``data:`` URL in an ``image_url`` part."""
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        body["name"] = message.name
    if images and message.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
        for image in message.images:
            url = f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        body["content"] = parts
    return body


class Tokenizer(abc.ABC):
    """A server's tokenizer endpoints, in the shape its family offers."""

    name: str
    chat_template: bool
    """``count_chat`` counts the whole prompt as the server builds it, template included."""

    def __init__(self, http: Http, root: str, model: str) -> None:
        self.http = http
        self.root = root
        self.model = model

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(self.root + path, json=body) as response:
            if response.status >= 400:
                raise EngineError(f"{self.root}{path} answered HTTP {response.status}")
            answer = await response.json(content_type=None)
        if not isinstance(answer, dict):
            raise EngineError(f"{self.root}{path} answered {type(answer).__name__}, not an object")
        return answer

    @abc.abstractmethod
    async def count_text(self, text: str) -> int:
        """Tokens of ``text`` alone, without special tokens."""

    async def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        raise NotImplementedError

    async def probe(self) -> bool:
        """Whether the server answers this shape; checks ``chat_template`` support too."""
        return await self.count_text("Hello, world.") > 0


def _count(answer: dict[str, Any], field: str) -> int:
    value = answer.get(field)
    if isinstance(value, list):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise EngineError(f"the tokenizer's answer has no {field!r}: {str(answer)[:200]}")


class VllmTokenizer(Tokenizer):
    """vLLM: ``POST /tokenize`` with ``{"model", "prompt"}`` or ``{"model", "messages"}`` gives ``count``."""

    name = "vllm /tokenize"
    chat_template = True

    async def count_text(self, text: str) -> int:
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        return _count(await self._post("/tokenize", body), "count")

    async def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        body = {
            "model": self.model,
            "messages": [wire(m) for m in messages],
            "add_generation_prompt": True,
        }
        return _count(await self._post("/tokenize", body), "count")


class LlamaCppTokenizer(Tokenizer):
    """llama.cpp's server: ``POST /tokenize`` ``{"content"}`` gives ``tokens``; ``/apply-template`` renders."""

    name = "llama.cpp /tokenize"
    chat_template = False

    async def count_text(self, text: str) -> int:
        return _count(await self._post("/tokenize", {"content": text}), "tokens")

    async def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        body = {"messages": [wire(m) for m in messages]}
        prompt = (await self._post("/apply-template", body)).get("prompt")
        if not isinstance(prompt, str):
            raise EngineError("/apply-template answered no prompt")
        # As the server reads a chat prompt: its BOS added, special-token text parsed.
        answer = await self._post("/tokenize", {"content": prompt, "add_special": True, "parse_special": True})
        return _count(answer, "tokens")

    async def probe(self) -> bool:
        if not await super().probe():
            return False
        try:
            self.chat_template = await self.count_chat([ChatMessage("user", "Hello")]) > 0
        except (aiohttp.ClientError, TimeoutError, EngineError, ValueError):
            self.chat_template = False  # an older server: it tokenizes text, the template is learned
        if self.chat_template:
            self.name = "llama.cpp /apply-template + /tokenize"
        return True


class LlamaCppPythonTokenizer(Tokenizer):
    """llama-cpp-python's server: ``POST /extras/tokenize/count`` ``{"input"}`` gives ``count``."""

    name = "llama-cpp-python /extras/tokenize/count"
    chat_template = False

    async def count_text(self, text: str) -> int:
        return _count(await self._post("/extras/tokenize/count", {"input": text}), "count")


TOKENIZERS: tuple[type[Tokenizer], ...] = (VllmTokenizer, LlamaCppTokenizer, LlamaCppPythonTokenizer)
"""Probed in this order. vLLM's first: llama.cpp answers its body with an empty ``tokens`` list."""


class TokenCounter:
    """Counts prompts for one server: with its tokenizer where it has one, else by a learned ratio.

    ``learn`` takes the prompt tokens the server reported for a prompt it was sent; it refines the
    template tokens per message (text-only tokenizers) or the bytes-per-token ratio (none).
    """

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self.tokenizer = tokenizer
        self.bytes_per_token = START_BYTES_PER_TOKEN
        self.per_message = TOKENS_PER_MESSAGE
        self._seen_bytes = 0
        self._seen_tokens = 0
        self._learned_per_message = False
        self._texts: OrderedDict[str, int] = OrderedDict()

    @property
    def method(self) -> str:
        if self.tokenizer is None:
            return f"estimate ({self.bytes_per_token:.2f} bytes per token)"
        return self.tokenizer.name

    async def count(self, messages: Sequence[ChatMessage]) -> int:
        tokenizer = self.tokenizer
        if tokenizer is not None and tokenizer.chat_template:
            try:
                return await tokenizer.count_chat(messages)
            except (aiohttp.ClientError, TimeoutError, EngineError, ValueError) as exc:
                log.warning("counting with %s failed (%s); estimating instead", tokenizer.name, exc)
                return self.estimate(messages)
        return sum([await self.message(m) for m in messages]) + PROMPT_TOKENS

    async def message(self, message: ChatMessage) -> int:
        """One message's share of a prompt: its text plus its template tokens."""
        return await self.text(message.content) + self.per_message

    async def text(self, text: str) -> int:
        """Tokens of a message's text alone (remembered: a history is counted again every turn)."""
        if self.tokenizer is None:
            return math.ceil(len(text.encode()) / self.bytes_per_token)
        known = self._texts.get(text)
        if known is not None:
            self._texts.move_to_end(text)
            return known
        try:
            tokens = await self.tokenizer.count_text(text)
        except (aiohttp.ClientError, TimeoutError, EngineError, ValueError) as exc:
            log.warning("counting with %s failed (%s); estimating instead", self.tokenizer.name, exc)
            return math.ceil(len(text.encode()) / START_BYTES_PER_TOKEN)
        self._texts[text] = tokens
        if len(self._texts) > CACHED_TEXTS:
            self._texts.popitem(last=False)
        return tokens

    def estimate(self, messages: Sequence[ChatMessage]) -> int:
        """Without the server: bytes over the learned ratio, plus the template tokens."""
        text = sum(math.ceil(len(m.content.encode()) / self.bytes_per_token) for m in messages)
        return text + self.per_message * len(messages) + PROMPT_TOKENS

    async def learn(self, messages: Sequence[ChatMessage], prompt_tokens: int) -> None:
        tokenizer = self.tokenizer
        if tokenizer is not None and tokenizer.chat_template:
            return  # already exact
        if tokenizer is not None:
            text = sum([await self.text(m.content) for m in messages])
            per_message = max(1, math.ceil((prompt_tokens - PROMPT_TOKENS - text) / len(messages)))
            # The first report replaces the guess; later ones only raise it (a longer system
            # header, say), so that a count never falls below one the server has shown.
            known = self.per_message if self._learned_per_message else 0
            self.per_message = max(known, per_message)
            self._learned_per_message = True
            return
        content = prompt_tokens - PROMPT_TOKENS - TOKENS_PER_MESSAGE * len(messages)
        if content <= 0:
            return
        self._seen_bytes += utf8_size(messages)
        self._seen_tokens += content
        self.bytes_per_token = max(1.0, MARGIN * self._seen_bytes / self._seen_tokens)


class OpenAIEngine(Engine):
    """Streams chat completions from an OpenAI-compatible HTTP server."""

    name = "openai"

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._line = Line(settings.concurrency)
        """Requests in flight and those waiting their turn, which are told their place in line."""
        self._waits = (0, 0.0)
        """Requests that got a slot, and the seconds they waited for one in all."""
        self._http: Http | None = None
        self._state = "stopped"
        self.counter = TokenCounter()

    @property
    def context_size(self) -> int:
        return self.settings.n_ctx

    @property
    def model_name(self) -> str:
        return self.settings.model

    @property
    def accepts_images(self) -> bool:
        return self.settings.vision

    def metrics(self) -> dict[str, float]:
        count, seconds = self._waits
        return {
            "busy_sequences": self._line.running,
            "queue_length": self._line.waiting,
            "queue_wait_count": count,
            "queue_wait_seconds_sum": seconds,
        }

    def status(self) -> str:
        return self._state

    def _url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    async def start(self) -> None:
        key = self.settings.api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=300)
        self._http = Http(headers, timeout)
        try:
            async with self._http.get(self._url("/models")) as response:
                if response.status >= 400:
                    raise EngineError(f"{self._url('/models')} answered HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self.stop()
            raise EngineError(
                f"cannot reach the model server at {self.settings.base_url} (PARLEY_ENGINE__BASE_URL): {exc}"
            ) from exc
        except EngineError:
            await self.stop()
            raise
        self.counter = TokenCounter(await self._find_tokenizer(self._http))
        log.info("counting prompt tokens with %s", self.counter.method)
        self._state = "ready"

    async def _find_tokenizer(self, http: Http) -> Tokenizer | None:
        root = server_root(self.settings.base_url)
        for kind in TOKENIZERS:
            tokenizer = kind(http, root, self.settings.model)
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    found = await tokenizer.probe()
                if found:
                    return tokenizer
            except (aiohttp.ClientError, TimeoutError, EngineError, ValueError) as exc:
                log.debug("no %s at %s: %s", kind.name, root, exc)
        return None

    async def stop(self) -> None:
        self._state = "stopped"
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return await self.counter.count(messages)

    async def fit(self, messages: Sequence[ChatMessage], max_tokens: int) -> tuple[list[ChatMessage], int, int]:
        """The prompt that leaves room for ``max_tokens``: messages kept, messages dropped, its tokens.

        :func:`~bot.engine.trim_history` by this server's counts: the texts' counts are cached,
        and the template's share of each message is taken from this prompt's own count.
        """
        budget = self.settings.n_ctx - max_tokens
        trimmed = await trim_history(
            messages, budget, count=self.counter.count, size=lambda tokens: tokens, text_tokens=self.counter.text
        )
        if not trimmed.fits:
            raise ContextOverflow(
                f"prompt of {trimmed.tokens} tokens ({self.counter.method}) does not fit {budget} "
                f"(n_ctx {self.settings.n_ctx} - max_tokens {max_tokens})"
            )
        return trimmed.messages, trimmed.dropped, trimmed.tokens

    def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, affinity: str | None = None
    ) -> Reply:
        return Reply(lambda reply: self._stream(reply, list(messages), params))

    async def _stream(self, reply: Reply, messages: list[ChatMessage], params: GenerationParams) -> AsyncIterator[str]:
        if self._http is None:
            raise EngineError("the engine is not started")
        prompt, reply.usage.dropped_messages, reply.usage.prompt_tokens = await self.fit(messages, params.max_tokens)
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [wire(m, images=self.settings.vision) for m in prompt],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        waited = time.monotonic()
        async with self._line.place(reply, self.settings.queue_timeout, what="request slot"):
            count, seconds = self._waits
            self._waits = (count + 1, seconds + time.monotonic() - waited)
            if reply.cancelled:
                reply.usage.finish_reason = "cancelled"
                return
            try:
                started = time.perf_counter()
                async with self._http.post(self._url("/chat/completions"), json=body) as response:
                    await self._check(response)
                    reply.on_cancel.append(response.close)
                    chunks = 0
                    reported: dict[str, int] = {}
                    async for event in self._events(response):
                        if reply.cancelled:
                            break
                        reported = event.get("usage") or reported
                        for choice in event.get("choices") or []:
                            text = (choice.get("delta") or {}).get("content")
                            if text:
                                chunks += 1  # one token per chunk, for servers that report no usage
                                yield text
                            reply.usage.finish_reason = choice.get("finish_reason") or reply.usage.finish_reason
                    prompt_tokens = reported.get("prompt_tokens")
                    if isinstance(prompt_tokens, int) and prompt_tokens > 0:
                        reply.usage.prompt_tokens = prompt_tokens
                        await self.counter.learn(prompt, prompt_tokens)
                    reply.usage.completion_tokens = reported.get("completion_tokens", chunks)
                    reply.usage.seconds = time.perf_counter() - started
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not reply.cancelled:
                    raise EngineError(f"the model server failed mid-reply: {exc}") from exc
            finally:
                if reply.cancelled:
                    reply.usage.finish_reason = "cancelled"

    @staticmethod
    async def _check(response: aiohttp.ClientResponse) -> None:
        if response.status < 400:
            return
        detail = (await response.text())[:500]
        if response.status in {429, 503}:
            raise EngineBusy(f"the model server is busy (HTTP {response.status}): {detail}")
        if response.status == 400 and "context" in detail.lower():
            raise ContextOverflow(f"the model server refused the prompt as too long: {detail}")
        raise EngineError(f"the model server answered HTTP {response.status}: {detail}")

    @staticmethod
    async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        async for raw in response.content:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except json.JSONDecodeError:
                log.warning("skipping a malformed event from the model server: %.200s", data)
                continue
            if not isinstance(event, dict):
                continue
            if "error" in event:
                raise EngineError(f"the model server reported: {event['error']}")
            yield event
