"""An engine that streams from an OpenAI-compatible server (llama.cpp's server, vLLM, Ollama).

For deployments that outgrow one machine: the server does the batching (llama-server's
``--parallel`` slots, vLLM's continuous batching); Parley keeps at most
``PARLEY_ENGINE__CONCURRENCY`` requests in flight. Replies stream over SSE from
``POST {base_url}/chat/completions``; closing a reply closes the HTTP response, which these servers
take as a cancellation. Prompt sizes are estimated (UTF-8 bytes / 3, plus a few tokens per message:
an over-estimate for common tokenizers) to trim the oldest history; the server's own usage figures
replace the estimates when it reports them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.errors import ContextOverflow, EngineBusy, EngineError
from engine.base import ChatMessage, Engine, GenerationParams, Reply

log = logging.getLogger(__name__)

BYTES_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 6


@dataclass(frozen=True, slots=True)
class OpenAIEngineConfig:
    base_url: str
    model: str = "default"
    api_key: str | None = None
    n_ctx: int = 4096
    concurrency: int = 4
    queue_timeout: float = 120.0
    connect_timeout: float = 10.0


def estimate_tokens(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.content.encode()) // BYTES_PER_TOKEN + TOKENS_PER_MESSAGE for m in messages) + 2


def fit(messages: Sequence[ChatMessage], budget: int) -> tuple[list[ChatMessage], int]:
    """Drop the oldest non-system messages until the estimate fits ``budget``."""
    system = [m for m in messages[:1] if m.role == "system"]
    rest = list(messages[len(system) :])
    dropped = 0
    while estimate_tokens(system + rest) > budget:
        if len(rest) <= 1:
            raise ContextOverflow(f"prompt of about {estimate_tokens(system + rest)} tokens does not fit {budget}")
        rest.pop(0)
        dropped += 1
        while len(rest) > 1 and rest[0].role != "user":
            rest.pop(0)
            dropped += 1
    return system + rest, dropped


class OpenAIEngine(Engine):
    """Streams chat completions from an OpenAI-compatible HTTP server."""

    name = "openai"

    def __init__(self, config: OpenAIEngineConfig) -> None:
        self.config = config
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._state = "stopped"

    @property
    def context_size(self) -> int:
        return self.config.n_ctx

    @property
    def model_name(self) -> str:
        return self.config.model

    def status(self) -> str:
        return self._state

    def _url(self, path: str) -> str:
        return self.config.base_url.rstrip("/") + path

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config.connect_timeout, sock_read=300)
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout)
        try:
            async with self._session.get(self._url("/models")) as response:
                if response.status >= 400:
                    raise EngineError(f"{self._url('/models')} answered HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self.stop()
            raise EngineError(
                f"cannot reach the model server at {self.config.base_url} (PARLEY_ENGINE__BASE_URL): {exc}"
            ) from exc
        except EngineError:
            await self.stop()
            raise
        self._state = "ready"

    async def stop(self) -> None:
        self._state = "stopped"
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return estimate_tokens(messages)

    def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, affinity: str | None = None
    ) -> Reply:
        return Reply(lambda reply: self._stream(reply, list(messages), params))

    async def _stream(self, reply: Reply, messages: list[ChatMessage], params: GenerationParams) -> AsyncIterator[str]:
        if self._session is None:
            raise EngineError("the engine is not started")
        prompt, reply.usage.dropped_messages = fit(messages, self.config.n_ctx - params.max_tokens)
        reply.usage.prompt_tokens = estimate_tokens(prompt)
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [{"role": m.role, "content": m.content} for m in prompt],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self.config.queue_timeout)
        except TimeoutError:
            raise EngineBusy(f"no request slot free within {self.config.queue_timeout:.0f}s") from None
        try:
            if reply.cancelled:
                reply.usage.finish_reason = "cancelled"
                return
            started = time.perf_counter()
            async with self._session.post(self._url("/chat/completions"), json=body) as response:
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
                reply.usage.prompt_tokens = reported.get("prompt_tokens", reply.usage.prompt_tokens)
                reply.usage.completion_tokens = reported.get("completion_tokens", chunks)
                reply.usage.seconds = time.perf_counter() - started
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not reply.cancelled:
                raise EngineError(f"the model server failed mid-reply: {exc}") from exc
        finally:
            if reply.cancelled:
                reply.usage.finish_reason = "cancelled"
            self._semaphore.release()

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
