"""The in-process engine: llama-cpp-python on a local GGUF file.

A ``Llama`` object runs one sequence at a time and is not thread-safe, so the engine keeps one per
concurrency slot (the weights are memory-mapped, so extra slots share them and cost only their
context). A reply waits on an ``asyncio.Semaphore`` for a slot, then runs the blocking generator in
a worker thread that hands each piece of text back through the event loop. The slot that last
served a conversation is preferred for its next turn: llama.cpp reuses the longest common prefix
with what it evaluated last, so that turn reads only the new tokens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from bot.errors import ContextOverflow, EngineBusy, EngineError
from engine.base import ChatMessage, Engine, GenerationParams, Reply

log = logging.getLogger(__name__)

_DONE = object()
TEMPLATE_TOKENS = 5
"""Tokens a chat template adds around one message (role markers, separators): an estimate."""


@dataclass(frozen=True, slots=True)
class LocalEngineConfig:
    model_path: Path
    n_ctx: int = 2048
    threads: int = 2
    concurrency: int = 1
    queue_timeout: float = 120.0
    seed: int | None = None


@dataclass(slots=True)
class _Slot:
    llm: llama_cpp.Llama
    affinity: str | None = None


class LocalEngine(Engine):
    """llama.cpp in this process; see the module docstring."""

    name = "local"

    def __init__(self, config: LocalEngineConfig) -> None:
        self.config = config
        self._slots: list[_Slot] = []
        self._free: list[_Slot] = []
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._state = "stopped"

    @property
    def context_size(self) -> int:
        return self.config.n_ctx

    @property
    def model_name(self) -> str:
        return self.config.model_path.name

    def status(self) -> str:
        return self._state

    async def start(self) -> None:
        self._state = "loading"
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.concurrency, thread_name_prefix="llama"
        )
        loop = asyncio.get_running_loop()
        try:
            for _ in range(self.config.concurrency):
                llm = await loop.run_in_executor(self._executor, self._load)
                self._slots.append(_Slot(llm))
        except (ValueError, OSError, RuntimeError) as exc:
            await self.stop()
            raise EngineError(f"cannot load model {str(self.config.model_path)!r}: {exc}") from exc
        self._free = list(self._slots)
        self._formatter = self._make_formatter(self._slots[0].llm)
        self._state = "ready"

    def _load(self) -> llama_cpp.Llama:
        kwargs: dict[str, Any] = {
            "model_path": str(self.config.model_path),
            "n_ctx": self.config.n_ctx,
            "n_threads": self.config.threads,
            "n_threads_batch": self.config.threads,
            "verbose": False,
        }
        if self.config.seed is not None:
            kwargs["seed"] = self.config.seed
        return llama_cpp.Llama(**kwargs)

    @staticmethod
    def _make_formatter(llm: llama_cpp.Llama) -> Jinja2ChatFormatter:
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise EngineError("the model has no chat template (tokenizer.chat_template) in its GGUF metadata")

        def token_text(token_id: int) -> str:
            return llm.detokenize([token_id], special=True).decode("utf-8", errors="ignore") if token_id >= 0 else ""

        return Jinja2ChatFormatter(
            template=template,
            eos_token=token_text(llm.token_eos()),
            bos_token=token_text(llm.token_bos()),
            stop_token_ids=[llm.token_eos()],
        )

    async def stop(self) -> None:
        self._state = "stopped"
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
        for slot in self._slots:
            slot.llm.close()
        self._slots.clear()
        self._free.clear()

    # prompts

    def _tokens(self, llm: llama_cpp.Llama, messages: Sequence[ChatMessage]) -> list[int]:
        if self._formatter is None:
            raise EngineError("the engine is not started")
        formatted = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])  # type: ignore[misc]
        return llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)

    def _fit(self, llm: llama_cpp.Llama, messages: Sequence[ChatMessage], max_tokens: int) -> tuple[list[int], int]:
        """Drop the oldest history until the prompt leaves room for ``max_tokens``.

        One pass over per-message token counts picks the cut (so a long history costs one
        tokenization per message, not one of the whole prompt per dropped message); the full
        prompt is then tokenized once, and the rare miss drops one more message.
        """
        budget = self.config.n_ctx - max_tokens
        system = [m for m in messages[:1] if m.role == "system"]
        rest = list(messages[len(system) :])
        tokens = self._tokens(llm, system + rest)
        if len(tokens) <= budget:
            return tokens, 0
        overhead = len(self._tokens(llm, system))
        keep = 0
        for message in reversed(rest):
            cost = len(llm.tokenize(message.content.encode("utf-8"), add_bos=False)) + TEMPLATE_TOKENS
            if overhead + cost > budget and keep > 0:
                break
            overhead += cost
            keep += 1
        start = len(rest) - keep
        while True:
            while start < len(rest) - 1 and rest[start].role != "user":
                start += 1
            tokens = self._tokens(llm, system + rest[start:])
            if len(tokens) <= budget:
                return tokens, start
            if start >= len(rest) - 1:
                raise ContextOverflow(
                    f"prompt of {len(tokens)} tokens does not fit {budget} (n_ctx {self.config.n_ctx} - "
                    f"max_tokens {max_tokens})"
                )
            start += 1

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        if not self._slots:
            raise EngineError("the engine is not started")
        return len(await asyncio.to_thread(self._tokens, self._slots[0].llm, messages))

    # generation

    def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, affinity: str | None = None
    ) -> Reply:
        return Reply(lambda reply: self._stream(reply, list(messages), params, affinity))

    @contextlib.asynccontextmanager
    async def _slot(self, affinity: str | None) -> AsyncIterator[_Slot]:
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self.config.queue_timeout)
        except TimeoutError:
            raise EngineBusy(f"no engine slot free within {self.config.queue_timeout:.0f}s") from None
        slot = next((s for s in self._free if affinity is not None and s.affinity == affinity), self._free[0])
        self._free.remove(slot)
        try:
            yield slot
        finally:
            slot.affinity = affinity
            self._free.append(slot)
            self._semaphore.release()

    async def _stream(
        self, reply: Reply, messages: list[ChatMessage], params: GenerationParams, affinity: str | None
    ) -> AsyncIterator[str]:
        if self._executor is None:
            raise EngineError("the engine is not started")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        reply.on_cancel.append(stop.set)

        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        async with self._slot(affinity) as slot:
            if reply.cancelled:
                reply.usage.finish_reason = "cancelled"
                return
            job = loop.run_in_executor(self._executor, self._produce, slot.llm, messages, params, reply, stop, put)
            try:
                while True:
                    item = await queue.get()
                    if item is _DONE:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    yield item  # type: ignore[misc]
            finally:
                stop.set()
                # The slot's Llama is busy until the thread returns; keep the slot until then.
                await asyncio.shield(job)

    def _produce(
        self,
        llm: llama_cpp.Llama,
        messages: list[ChatMessage],
        params: GenerationParams,
        reply: Reply,
        stop: threading.Event,
        put: Callable[[object], None],
    ) -> None:
        usage = reply.usage
        sampled = 0

        def count(_ids: object, _logits: object) -> bool:
            nonlocal sampled
            sampled += 1
            return stop.is_set()

        try:
            tokens, usage.dropped_messages = self._fit(llm, messages, params.max_tokens)
            usage.prompt_tokens = len(tokens)
            started = time.perf_counter()
            kwargs: dict[str, Any] = {
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "stream": True,
                "stop": self._formatter.eos_token if self._formatter else None,
                "stopping_criteria": llama_cpp.StoppingCriteriaList([count]),
            }
            if params.seed is not None:
                kwargs["seed"] = params.seed
            stream = llm.create_completion(tokens, **kwargs)
            finish: str | None = None
            try:
                for chunk in stream:
                    if stop.is_set():
                        finish = "cancelled"
                        break
                    choice: dict[str, Any] = chunk["choices"][0]  # type: ignore[index,assignment]
                    if choice["text"]:
                        put(choice["text"])
                    finish = choice["finish_reason"] or finish
            finally:
                stream.close()  # type: ignore[union-attr]
            if stop.is_set():
                finish = "cancelled"
            usage.finish_reason = finish or "stop"
            # The stopping check runs once per sampled token, the end-of-turn token included; that
            # one is not part of the reply.
            ended_by_model = usage.finish_reason != "length"
            usage.completion_tokens = max(0, min(sampled - ended_by_model, params.max_tokens))
            usage.seconds = time.perf_counter() - started
            put(_DONE)
        except EngineError as exc:
            put(exc)
        except Exception as exc:  # llama.cpp raises plain exceptions; report them typed
            log.exception("generation failed")
            put(EngineError(f"generation failed: {exc}"))
