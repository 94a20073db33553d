"""The engine contract, implemented outside the core by ``engine.local`` and ``engine.openai``.

An engine turns a list of chat messages into a stream of text. ``generate`` returns a
:class:`Reply` at once; iterating it waits for a generation slot, then yields text deltas.
Closing the reply (leaving ``async with``, or cancelling the task that iterates it) stops
generation within a token or two and frees the slot. An engine trims the oldest history so that
the prompt fits its context window with room for ``max_tokens``, keeping the system prompt, and
raises :class:`~bot.errors.ContextOverflow` when even the newest message alone cannot fit.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Self

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Image:
    """An image for a vision-capable engine: its bytes and MIME type (PNG, JPEG, GIF or WebP)."""

    mime: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str
    images: tuple[Image, ...] = ()
    """Images shown with this message; only engines whose ``accepts_images`` is true get any."""


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dropped_messages: int = 0
    """History messages left out to fit the context window."""
    finish_reason: str | None = None
    """``stop``, ``length`` or ``cancelled`` once the reply has ended."""
    seconds: float = 0.0
    """Wall time from the first prompt token read to the last token generated."""


@dataclass(slots=True)
class Reply:
    """One generation in progress: an async iterator of text deltas plus its usage.

    ``cancel()`` may be called from any task: the stream then ends early (no exception) with
    ``usage.finish_reason == "cancelled"``. Engines register what stops them in ``on_cancel``.
    """

    _body: Callable[[Reply], AsyncIterator[str]]
    usage: Usage = field(default_factory=Usage)
    cancelled: bool = False
    on_cancel: list[Callable[[], None]] = field(default_factory=list)
    _iterator: AsyncIterator[str] | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        if self._iterator is None:
            self._iterator = self._body(self)
        return self._iterator

    def cancel(self) -> None:
        self.cancelled = True
        for hook in self.on_cancel:
            hook()

    async def text(self) -> str:
        """Consume the whole reply."""
        return "".join([delta async for delta in self])

    async def aclose(self) -> None:
        iterator = self._iterator
        if iterator is not None and hasattr(iterator, "aclose"):
            await iterator.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Engine(abc.ABC):
    """Base class of engines. Lifecycle: ``start()`` loads or connects; ``stop()`` releases."""

    name: str = "engine"

    @property
    def accepts_images(self) -> bool:
        """Whether the model sees images (``ChatMessage.images``); a text-only engine never gets any."""
        return False

    @property
    @abc.abstractmethod
    def context_size(self) -> int:
        """Tokens of context per sequence."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model or check the server; raise ``EngineError`` if it cannot serve."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release the model; idempotent."""

    @abc.abstractmethod
    def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, affinity: str | None = None
    ) -> Reply:
        """Stream a reply to ``messages``.

        ``affinity`` names the conversation, so an engine with several slots can send its next
        turn to the slot that still holds its prompt in cache.
        """

    @abc.abstractmethod
    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens the prompt for ``messages`` takes, chat template included."""

    def metrics(self) -> Mapping[str, float]:
        """Figures for monitoring, read at each scrape of ``/metrics``; any of: ``busy_sequences``,
        ``queue_length``, ``queue_wait_seconds_sum`` with ``queue_wait_count``, ``kv_cache_hits``,
        ``kv_cache_misses``, ``kv_cache_bytes``, ``kv_cache_entries``, ``prompt_tokens_decoded``."""
        return {}

    def forget(self, affinity: str) -> None:  # noqa: B027 - optional: only engines with a cache override it
        """Drop what the engine keeps for conversation ``affinity`` (its cached prompt state): ``/reset``."""

    @property
    def model_name(self) -> str:
        """The model's name, for health checks and logs."""
        return self.name

    @abc.abstractmethod
    def status(self) -> str:
        """A short status word for health checks: ``ready`` when it can answer, anything else when not."""
