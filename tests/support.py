"""Shared test support: a scripted engine, an app builder, a recording connector and waits.

Use the real engine (``real_engine=True`` in :func:`make_app`, or the engine tests) where the
model's words matter; everywhere else the :class:`ScriptedEngine` answers at once and records
the prompts it was given, so tests can check what reached the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.app import Parley
from bot.connector import Connector, ConnectorLimits, InboundSink, SentMessage
from bot.conversation import ConversationKey, Destination
from bot.engine import ChatMessage, Engine, GenerationParams, Reply
from bot.errors import ConnectorError, ContextOverflow, EngineError, RateLimited
from bot.main import build_app
from bot.models import EngineFactory
from bot.pacing import Pacing
from bot.settings import EngineSettings, Settings
from bot.store import Store, Turn, TurnStatus
from bot.waiting import Line

WORD = re.compile(r"\S+\s*")


def echo(messages: Sequence[ChatMessage]) -> str:
    """The scripted engine's default answer: it repeats the last user message."""
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    return f"You said: {last}"


def long_story(_messages: Sequence[ChatMessage]) -> str:
    """An answer longer than any test's ``max_tokens``: for ``/stop``, hang-ups and shutdown."""
    return " ".join(f"word{i}" for i in range(2000))


class ScriptedEngine(Engine):
    """An engine whose words are scripted: ``answer(messages)`` streamed a word at a time.

    Tokens are counted as words plus four per message, so prompt sizes grow and shrink the way a
    real tokenizer's do. ``delay`` seconds pass between words (for ``/stop`` and shutdown tests);
    ``fail`` makes the next replies raise it (after ``fail_after`` words). ``prompts`` records
    every prompt it was given.
    With ``places``, at most that many replies generate at once and the others wait in a
    :class:`~bot.waiting.Line` (reporting their place in it), for up to ``queue_timeout`` s.
    """

    name = "scripted"

    def __init__(
        self,
        answer: Callable[[Sequence[ChatMessage]], str] = echo,
        *,
        delay: float = 0.0,
        n_ctx: int = 2048,
        places: int | None = None,
        queue_timeout: float = 120.0,
    ) -> None:
        self.answer = answer
        self.line = Line(places) if places is not None else None
        self.queue_timeout = queue_timeout
        self.delay = delay
        self.n_ctx = n_ctx
        self.prompts: list[list[ChatMessage]] = []
        self.busy = 0
        """Replies generating right now."""
        self.fail: EngineError | None = None
        self.fail_after = 0
        self.forgotten: list[str] = []
        self._state = "stopped"

    @property
    def context_size(self) -> int:
        return self.n_ctx

    def status(self) -> str:
        return self._state

    async def start(self) -> None:
        self._state = "ready"

    async def stop(self) -> None:
        self._state = "stopped"

    def forget(self, affinity: str) -> None:
        self.forgotten.append(affinity)

    def metrics(self) -> dict[str, float]:
        figures = {"busy_sequences": float(self.busy)}
        if self.line is not None:
            figures["queue_length"] = float(self.line.waiting)
        return figures

    @staticmethod
    def tokens(messages: Sequence[ChatMessage]) -> int:
        return sum(len(m.content.split()) + 4 for m in messages)

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.tokens(messages)

    def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, affinity: str | None = None
    ) -> Reply:
        return Reply(lambda reply: self._stream(reply, list(messages), params))

    async def _stream(self, reply: Reply, messages: list[ChatMessage], params: GenerationParams) -> AsyncIterator[str]:
        if self.fail is not None and not self.fail_after:
            raise self.fail
        if self.tokens(messages[-1:]) > self.n_ctx - params.max_tokens:
            raise ContextOverflow(f"prompt does not fit {self.n_ctx - params.max_tokens} tokens")
        self.prompts.append(messages)
        reply.usage.prompt_tokens = self.tokens(messages)
        words = WORD.findall(self.answer(messages))
        place = self.line.place(reply, self.queue_timeout) if self.line is not None else contextlib.nullcontext()
        async with place:
            self.busy += 1
            try:
                for count, word in enumerate(words[: params.max_tokens]):
                    if reply.cancelled:
                        break
                    if self.fail is not None and self.fail_after and count == self.fail_after:
                        raise self.fail
                    if self.delay:
                        await asyncio.sleep(self.delay)
                        if reply.cancelled:
                            break
                    reply.usage.completion_tokens += 1
                    yield word
            finally:
                self.busy -= 1
                if reply.cancelled:
                    reply.usage.finish_reason = "cancelled"
                else:
                    reply.usage.finish_reason = "length" if len(words) > params.max_tokens else "stop"

    def last_prompt_text(self) -> str:
        """Every message of the latest prompt, one per line (``role: content``)."""
        return "\n".join(f"{m.role}: {m.content}" for m in self.prompts[-1]) if self.prompts else ""


def make_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    real_engine: bool = False,
    memory_store: bool = False,
    factory: EngineFactory | None = None,
) -> Parley:
    """The whole app for ``settings`` with a :class:`ScriptedEngine` unless told otherwise.

    A scripted engine gets the settings' ``n_ctx`` unless given its own. The store is the
    settings' SQLite file (so restarts keep it), or an in-memory SQLite database with
    ``memory_store=True``. ``factory`` builds the engines of ``PARLEY_MODELS`` (the real ones
    unless given: see :class:`ScriptedModels`).
    """
    if engine is None and not real_engine:
        engine = ScriptedEngine(n_ctx=settings.engine.n_ctx)
    store = Store(":memory:") if memory_store else None
    if factory is None:
        return build_app(settings, engine=engine, store=store)
    return build_app(settings, engine=engine, store=store, factory=factory)


class ScriptedModels:
    """An engine factory for ``PARLEY_MODELS`` in tests: a :class:`ScriptedEngine` per model, answering
    ``[<model setting>] You said: …`` (the OpenAI ``MODEL`` field names it), or ``answer``'s words
    ``delay`` s apart; recorded in ``built``."""

    def __init__(self, answer: Callable[[Sequence[ChatMessage]], str] = echo, *, delay: float = 0.0) -> None:
        self.built: list[tuple[str, ScriptedEngine]] = []
        self.answer = answer
        self.delay = delay

    def __call__(self, settings: EngineSettings) -> Engine:
        label = settings.model

        def answer(messages: Sequence[ChatMessage]) -> str:
            return f"[{label}] {self.answer(messages)}"

        engine = ScriptedEngine(answer, n_ctx=settings.n_ctx, delay=self.delay)
        self.built.append((label, engine))
        return engine

    def engines(self, label: str) -> list[ScriptedEngine]:
        return [engine for name, engine in self.built if name == label]

    def prompts(self, label: str) -> list[list[ChatMessage]]:
        return [prompt for engine in self.engines(label) for prompt in engine.prompts]


def scripted_engine(app: Parley) -> ScriptedEngine:
    assert isinstance(app.engine, ScriptedEngine)
    return app.engine


async def wait_until(predicate: Callable[[], object], timeout: float = 30.0, *, what: str = "condition") -> None:
    """Poll ``predicate`` (every 10 ms) until it is truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_idle(app: Parley, timeout: float = 60.0) -> None:
    """Wait until every message submitted so far is answered."""
    await asyncio.wait_for(app.chat.join(), timeout)


# A connector that records calls instead of talking to a platform


@dataclass(frozen=True, slots=True)
class Call:
    at: float
    kind: str  # "send" or "edit"
    message_id: str
    text: str


@dataclass
class RecordingConnector(Connector):
    """A stand-in for a chat platform (like the wire-level fakes), not for project code.

    It implements the public ``Connector`` contract and can be told to fail or rate-limit calls.
    """

    name = "recording"  # type: ignore[misc]
    limits: ConnectorLimits = field(
        default_factory=lambda: ConnectorLimits(max_message_length=200, pacing=Pacing(min_interval=0.05))
    )
    calls: list[Call] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    rate_limits: list[float] = field(default_factory=list)
    """Each entry makes the next edit fail once with RateLimited(entry)."""
    failures: int = 0
    """How many next calls fail with a plain ConnectorError."""
    rejected: list[Call] = field(default_factory=list)
    sink: Any = None

    def __post_init__(self) -> None:
        super().__init__()
        self._next_id = 0

    async def start(self, sink: InboundSink) -> None:
        self.sink = sink

    async def stop(self) -> None:
        pass

    def status(self) -> str:
        return "running"

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _check(self, call: Call) -> None:
        if self.failures:
            self.failures -= 1
            self.rejected.append(call)
            raise ConnectorError("injected failure")
        if len(call.text) > self.limits.max_message_length:
            self.rejected.append(call)
            raise ConnectorError(f"message of {len(call.text)} chars is too long")

    async def send(self, destination: Destination, text: str) -> SentMessage:
        self._next_id += 1
        call = Call(self._now(), "send", str(self._next_id), text)
        self._check(call)
        self.calls.append(call)
        self.texts[call.message_id] = text
        return SentMessage(call.message_id, destination)

    async def edit(self, message: SentMessage, text: str) -> None:
        call = Call(self._now(), "edit", message.id, text)
        if self.rate_limits:
            self.rejected.append(call)
            raise RateLimited(self.rate_limits.pop(0))
        self._check(call)
        self.calls.append(call)
        self.texts[message.id] = text

    def messages(self) -> list[str]:
        """The final text of each message, in the order they were posted."""
        return [self.texts[key] for key in sorted(self.texts, key=int)]


async def scripted(tokens: Iterable[str], delay: float = 0.0) -> AsyncIterator[str]:
    """A token stream: yields ``tokens`` with ``delay`` seconds between them."""
    for token in tokens:
        if delay:
            await asyncio.sleep(delay)
        yield token


# waits used by connector tests


async def stored_turns(store: Store, key: ConversationKey) -> list[Turn]:
    """The turns of ``key``'s conversation so far, without creating it."""
    conversation_id = await store.find_conversation(key)
    return [] if conversation_id is None else await store.turns(conversation_id)


async def wait_turns(
    store: Store,
    key: ConversationKey,
    done: Callable[[list[Turn]], bool],
    timeout: float = 60.0,
    *,
    what: str = "the turns",
) -> list[Turn]:
    """Poll ``key``'s stored turns (every 50 ms) until ``done(turns)``; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        turns = await stored_turns(store, key)
        if done(turns):
            return turns
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} in {key}; stored: {turns}")
        await asyncio.sleep(0.05)


async def wait_reply(store: Store, key: ConversationKey, replies: int = 1, timeout: float = 60.0) -> Turn:
    """The ``replies``-th assistant turn of ``key``, once it is no longer streaming (any final status)."""

    def finished(turns: list[Turn]) -> bool:
        answers = [t for t in turns if t.role == "assistant"]
        return len(answers) >= replies and answers[replies - 1].status is not TurnStatus.STREAMING

    turns = await wait_turns(store, key, finished, timeout, what=f"finished reply {replies}")
    return [t for t in turns if t.role == "assistant"][replies - 1]


async def wait_last_reply(store: Store, key: ConversationKey, status: TurnStatus, timeout: float = 60.0) -> Turn:
    """The last assistant turn of ``key`` once it has ``status``."""

    def last_has_status(turns: list[Turn]) -> bool:
        replies = [t for t in turns if t.role == "assistant"]
        return bool(replies) and replies[-1].status is status

    turns = await wait_turns(store, key, last_has_status, timeout, what=f"a {status} reply")
    return [t for t in turns if t.role == "assistant"][-1]


QUEUE_NOTICE = re.compile(r"⏳ Waiting for the model: you are (?:(next)|(\d+)(?:st|nd|rd|th) in line)")


def queue_position(text: str) -> int | None:
    """The place in line a queue notice shows (1: next), ``None`` for any other text."""
    found = QUEUE_NOTICE.match(text)
    if found is None:
        return None
    return 1 if found.group(1) else int(found.group(2))
