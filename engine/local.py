"""The in-process engine: llama.cpp on a local GGUF file, many replies batched in one context.

The model is loaded once and one context holds ``parallel`` sequences of ``n_ctx`` tokens each; a
:class:`~engine.scheduler.Scheduler` drives it from one worker thread (continuous batching, prompt
chunks, per-conversation KV kept and saved; see there). This module is the asyncio side: it fits
the history to the context, hands the request over, waits for a place (at most ``queue_timeout``)
and relays the text deltas that the worker posts through ``loop.call_soon_threadsafe``, and the
reply's place in the queue while it waits (``Reply.report_queue``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from bot.bounded import BoundedDict
from bot.engine import ChatMessage, Engine, GenerationParams, QueueStatus, Reply, trim_history
from bot.errors import ContextOverflow, EngineBusy, EngineError
from bot.settings import EngineSettings
from engine.kvcache import KVCache
from engine.llama import VERSION, Context, LlamaError, Model
from engine.scheduler import DONE, STARTED, EngineStats, Request, Scheduler

log = logging.getLogger(__name__)

TEMPLATE_TOKENS = 5
"""Tokens a chat template adds around a message of a role its probe did not measure (an estimate);
see :attr:`~engine.llama.Model.message_tokens`."""
MB = 1024 * 1024
CACHED_TEXTS = 4096
"""Message texts whose token counts are remembered, for trimming."""


class LocalEngine(Engine):
    """llama.cpp in this process; see the module docstring."""

    name = "local"

    def __init__(self, settings: EngineSettings) -> None:
        if settings.model_path is None:
            raise EngineError("the local engine needs PARLEY_ENGINE__MODEL_PATH")
        self.settings = settings
        self.model_path: Path = settings.model_path
        self._model: Model | None = None
        self._scheduler: Scheduler | None = None
        self._state = "stopped"
        self._texts: BoundedDict[str, int] = BoundedDict(CACHED_TEXTS)
        self._waits = (0, 0.0)
        """Requests that got a place, and the seconds they waited for it in all."""

    @property
    def context_size(self) -> int:
        return self.settings.n_ctx

    @property
    def model_name(self) -> str:
        return self.model_path.name

    def status(self) -> str:
        if self._state == "ready" and self._scheduler is not None and not self._scheduler.alive:
            return "failed"
        return self._state

    @property
    def stats(self) -> EngineStats:
        """Counters of the running engine (all zero when stopped)."""
        return self._scheduler.stats() if self._scheduler is not None else EngineStats()

    def metrics(self) -> dict[str, float]:
        stats = self.stats
        count, seconds = self._waits
        return {
            "busy_sequences": stats.active,
            "queue_length": stats.queued,
            "queue_wait_count": count,
            "queue_wait_seconds_sum": seconds,
            "kv_cache_hits": stats.kv_hits,
            "kv_cache_misses": stats.kv_misses,
            "kv_cache_bytes": stats.kv_ram_bytes + stats.kv_disk_bytes,
            "kv_cache_entries": stats.kv_ram_entries + stats.kv_disk_entries,
            "prompt_tokens_decoded": stats.prompt_tokens_decoded,
        }

    @property
    def model(self) -> Model | None:
        """The loaded model (for tests and diagnostics)."""
        return self._model

    @property
    def cache(self) -> KVCache | None:
        """The saved-state cache (for tests and diagnostics)."""
        return self._scheduler.cache if self._scheduler is not None else None

    async def start(self) -> None:
        if self._scheduler is not None:
            return
        self._state = "loading"
        try:
            self._scheduler = await asyncio.to_thread(self._load)
        except (LlamaError, OSError, ValueError) as exc:
            self._state = "failed"
            raise EngineError(f"cannot load model {str(self.model_path)!r}: {exc}") from exc
        self._scheduler.start()
        self._state = "ready"

    def _load(self) -> Scheduler:
        s = self.settings
        model = Model(self.model_path)
        try:
            context = Context(
                model,
                n_ctx_seq=s.n_ctx,
                n_seq=s.parallel,
                n_batch=s.prompt_chunk + s.parallel,
                threads=s.threads,
                flash_attn=s.flash_attn,
            )
        except LlamaError:
            model.close()
            raise
        disk = s.kv_cache_dir_mb * MB if s.kv_cache_dir is not None else 0
        cache = KVCache(self._namespace(context), s.kv_cache_mb * MB, s.kv_cache_dir, disk)
        model.message_tokens  # noqa: B018 - rendered once here, in this thread, not on the first turn
        self._model = model
        return Scheduler(
            model,
            context,
            cache,
            parallel=s.parallel,
            prompt_chunk=s.prompt_chunk,
            queue_size=s.queue_size,
            repeat_penalty=s.repeat_penalty,
            repeat_last_n=s.repeat_last_n,
        )

    def _namespace(self, context: Context) -> str:
        """Names the model file and the context shape, so a saved state only ever meets its own kind."""
        stat = self.model_path.stat()
        identity = {"model": self.model_path.name, "size": stat.st_size, "mtime": stat.st_mtime_ns}
        identity |= context.config | {"llama_cpp": VERSION}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    async def stop(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        self._state = "stopped"
        if scheduler is not None:
            await asyncio.to_thread(scheduler.stop)
        if self._model is not None:
            self._model.close()
            self._model = None
        self._texts = BoundedDict(CACHED_TEXTS)

    def forget(self, affinity: str) -> None:
        if self._scheduler is not None:
            self._scheduler.forget(affinity)

    async def prepare(self, system: str) -> None:
        """A one-token reply to ``system`` and an empty message, for no conversation: its sequence
        keeps the prompt, and new conversations copy the part they share with it (the system prompt
        and the user turn's opening) instead of reading it. Without it, the first conversations
        after a start (a burst of people, the inbox's replays) each read the whole prompt at once."""
        messages = [ChatMessage("system", system), ChatMessage("user", "")]
        params = GenerationParams(max_tokens=1, temperature=0.0)
        reply = Reply(lambda reply: self._stream(reply, messages, params, None, measured=False))
        try:
            async for _ in reply:
                pass
        finally:
            await reply.aclose()

    # prompts

    def _require_model(self) -> Model:
        if self._model is None or self._scheduler is None:
            raise EngineError("the engine is not started")
        return self._model

    async def _fit(self, model: Model, messages: Sequence[ChatMessage], max_tokens: int) -> tuple[list[int], int]:
        """The prompt's tokens once the oldest history is dropped to leave room for ``max_tokens``
        (:func:`~bot.engine.trim_history`), and how many messages were dropped.

        Tokenizing runs in a worker thread. The texts' counts are remembered (a history is counted
        again every turn it is trimmed), so a turn tokenizes only its new texts and the kept prompt.
        """

        async def text_tokens(text: str) -> int:
            known = self._texts.get(text)
            if known is None:
                known = len(await asyncio.to_thread(model.tokenize, text))
                self._texts[text] = known
            return known

        budget = self.settings.n_ctx - max_tokens
        trimmed = await trim_history(
            messages,
            budget,
            count=lambda prompt: asyncio.to_thread(model.prompt, prompt),
            size=len,
            text_tokens=text_tokens,
            per_message=lambda message: model.message_tokens.get(message.role, TEMPLATE_TOKENS),
        )
        if not trimmed.fits:
            raise ContextOverflow(
                f"prompt of {trimmed.tokens} tokens does not fit {budget} (n_ctx {self.settings.n_ctx} - "
                f"max_tokens {max_tokens})"
            )
        return trimmed.prompt, trimmed.dropped

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        model = self._require_model()
        return len(await asyncio.to_thread(model.prompt, messages))

    # generation

    def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, affinity: str | None = None
    ) -> Reply:
        return Reply(lambda reply: self._stream(reply, list(messages), params, affinity))

    async def _stream(
        self,
        reply: Reply,
        messages: list[ChatMessage],
        params: GenerationParams,
        affinity: str | None,
        *,
        measured: bool = True,
    ) -> AsyncIterator[str]:
        model = self._require_model()
        usage = reply.usage
        tokens, usage.dropped_messages = await self._fit(model, messages, params.max_tokens)
        usage.prompt_tokens = len(tokens)
        scheduler = self._scheduler
        if scheduler is None:
            raise EngineError("the engine is not started")
        if reply.cancelled:
            usage.finish_reason = "cancelled"
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

        request = Request(tokens, params, affinity, queue.put_nowait, loop.call_soon_threadsafe, usage, measured)
        reply.on_cancel.append(lambda: scheduler.cancel(request))
        scheduler.submit(request)
        submitted = time.monotonic()
        deadline = loop.time() + self.settings.queue_timeout
        waiting = True
        try:
            while True:
                if waiting:
                    try:
                        async with asyncio.timeout_at(deadline):
                            item = await queue.get()
                    except TimeoutError:
                        if scheduler.withdraw(request):
                            raise EngineBusy(f"no engine place free within {self.settings.queue_timeout:g}s") from None
                        item = await queue.get()
                else:
                    item = await queue.get()
                if item is DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, QueueStatus):
                    reply.report_queue(item)
                elif item is STARTED:
                    waiting = False
                    if measured:
                        count, seconds = self._waits
                        self._waits = (count + 1, seconds + time.monotonic() - submitted)
                    reply.report_queue(None)
                else:
                    yield item  # type: ignore[misc]
        finally:
            scheduler.cancel(request)  # a no-op once it is done
