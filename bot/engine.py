"""The engine contract, implemented outside the core by ``engine.local`` and ``engine.openai``.

An engine turns a list of chat messages into a stream of text. ``generate`` returns a
:class:`Reply` at once; iterating it waits for a generation slot, then yields text deltas.
Closing the reply (leaving ``async with``, or cancelling the task that iterates it) stops
generation within a token or two and frees the slot. An engine trims the oldest history so that
the prompt fits its context window with room for ``max_tokens``, keeping the system prompt, and
raises :class:`~bot.errors.ContextOverflow` when even the newest message alone cannot fit:
:func:`trim_history` is that rule, given the engine's own token counts.

An engine that makes replies wait for a place tells each waiting reply where it stands with
:meth:`Reply.report_queue`: a :class:`QueueStatus` whenever its position changes, then ``None``
once it has its place. The core shows that to the user (:mod:`bot.waiting`); an engine that never
queues reports nothing.
"""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, Self, TypeVar

Role = Literal["system", "user", "assistant"]
P = TypeVar("P")

TRIM_STEP = 0.25
"""History is trimmed in steps of this share of the prompt's budget (see :func:`trim_history`)."""


@dataclass(frozen=True, slots=True)
class Image:
    """An image for a vision-capable engine: its bytes and MIME type (PNG, JPEG, GIF or WebP)."""

    mime: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str
    name: str | None = None
    """Who wrote a user message in a shared conversation, as OpenAI's ``name`` field takes it
    (``^[a-zA-Z0-9_-]{1,64}$``, unique in the prompt); the content still starts with their label,
    for engines and servers that ignore it."""
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


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Where a reply stands while it waits for the engine."""

    position: int
    """1 for the next reply to start, 2 for the one after it, and so on; it only goes down."""
    eta_seconds: float | None = None
    """Seconds until it is expected to start, from measured reply times; ``None`` while there is no data."""


@dataclass(slots=True)
class Reply:
    """One generation in progress: an async iterator of text deltas plus its usage.

    ``cancel()`` may be called from any task: the stream then ends early (no exception) with
    ``usage.finish_reason == "cancelled"``. Engines register what stops them in ``on_cancel``.
    ``queue`` is where it waits for a place (``None`` when not waiting); ``on_queue`` hooks hear of
    each change (on the event loop).
    """

    _body: Callable[[Reply], AsyncIterator[str]]
    usage: Usage = field(default_factory=Usage)
    cancelled: bool = False
    on_cancel: list[Callable[[], None]] = field(default_factory=list)
    queue: QueueStatus | None = None
    on_queue: list[Callable[[QueueStatus | None], None]] = field(default_factory=list)
    _iterator: AsyncIterator[str] | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        if self._iterator is None:
            self._iterator = self._body(self)
        return self._iterator

    def cancel(self) -> None:
        self.cancelled = True
        for hook in self.on_cancel:
            hook()

    def report_queue(self, status: QueueStatus | None) -> None:
        """For engines: the reply's new place in line, or ``None`` once it has a place."""
        self.queue = status
        for hook in list(self.on_queue):
            hook(status)

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

    async def prepare(self, system: str) -> None:  # noqa: B027 - optional: only engines with a cache override it
        """Read ahead the system prompt that new conversations begin with, so that they start from it
        rather than each reading it: the app calls this once, at start. Raises ``EngineError``."""

    @property
    def model_name(self) -> str:
        """The model's name, for health checks and logs."""
        return self.name

    @abc.abstractmethod
    def status(self) -> str:
        """A short status word for health checks: ``ready`` when it can answer, anything else when not."""


@dataclass(frozen=True, slots=True)
class Trimmed(Generic[P]):
    """What :func:`trim_history` kept."""

    messages: list[ChatMessage]
    dropped: int
    """History messages left out, oldest first."""
    prompt: P
    """What the engine's ``count`` gave for ``messages`` (its tokens, or just their number)."""
    tokens: int
    fits: bool
    """False when even the system prompt and the newest message alone exceed the budget: the
    engine raises :class:`~bot.errors.ContextOverflow` then, in its own words."""


async def trim_history(
    messages: Sequence[ChatMessage],
    budget: int,
    *,
    count: Callable[[list[ChatMessage]], Awaitable[P]],
    size: Callable[[P], int],
    text_tokens: Callable[[str], Awaitable[int]],
    per_message: float | Callable[[ChatMessage], float] | None = None,
    step: float = TRIM_STEP,
) -> Trimmed[P]:
    """The newest part of ``messages`` whose prompt takes at most ``budget`` tokens.

    The system prompt (a first ``system`` message) and the newest message are always kept; the
    oldest history goes first, and a kept history starts at a user message, never an assistant's.
    ``count`` is the engine's whole-prompt count (``size`` of its result is the tokens), the final
    word on what fits; ``text_tokens`` counts one message's text.

    What is dropped is the excess rounded up to a whole number of steps of ``step`` times the
    budget, counted from the oldest message (``0``: no more than must). So the cut stays on the same
    message for the next turns, until the history has grown by another step: the kept prompt keeps
    its prefix, and an engine that caches it reads only each turn's new tokens, where cutting no
    more than must would change the prefix, and re-read the whole history, every turn.

    The cut is picked in one pass, oldest first, from the texts plus ``per_message`` template tokens
    each (a function of the message: by role, where role names differ in tokens; ``None``: this
    prompt's own share, from its whole count, which needs every text counted);
    the kept prompt is then counted whole, and the rare miss drops one more message.
    """
    system = [m for m in messages[:1] if m.role == "system"]
    rest = list(messages[len(system) :])
    prompt = await count(system + rest)
    tokens = size(prompt)
    if tokens <= budget:
        return Trimmed(system + rest, 0, prompt, tokens, fits=True)
    texts: list[int] = []
    if per_message is None:
        used = size(await count(system)) if system else 0
        texts = [await text_tokens(m.content) for m in rest]
        per_message = max(0.0, (tokens - used - sum(texts)) / max(1, len(rest)))
    share = per_message

    def template(message: ChatMessage) -> float:
        return share(message) if callable(share) else share

    quantum = max(1, int(budget * step))
    target = quantum * math.ceil((tokens - budget) / quantum)
    start, dropped = 0, 0.0
    while start < len(rest) - 1 and dropped < target:
        dropped += (texts[start] if texts else await text_tokens(rest[start].content)) + template(rest[start])
        start += 1
    while True:
        while start < len(rest) - 1 and rest[start].role != "user":
            start += 1
        kept = system + rest[start:]
        prompt = await count(kept)
        tokens = size(prompt)
        if tokens <= budget or start >= len(rest) - 1:
            return Trimmed(kept, start, prompt, tokens, fits=tokens <= budget)
        start += 1
