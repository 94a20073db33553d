"""A connector that records calls instead of talking to a platform, for core tests.

It is a stand-in for a chat platform (like the wire-level fakes), not for project code: it
implements the public ``Connector`` contract and can be told to fail or rate-limit calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from bot.connector import Connector, ConnectorLimits, InboundSink, SentMessage
from bot.conversation import Destination
from bot.errors import ConnectorError, RateLimited
from bot.pacing import Pacing


@dataclass(frozen=True, slots=True)
class Call:
    at: float
    kind: str  # "send" or "edit"
    message_id: str
    text: str


@dataclass
class RecordingConnector(Connector):
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

    def __post_init__(self) -> None:
        super().__init__()
        self._next_id = 0

    async def start(self, sink: InboundSink) -> None:
        self.sink = sink

    async def stop(self) -> None:
        pass

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


async def scripted(tokens: Iterable[str], delay: float = 0.0) -> asyncio.AsyncIterator[str]:  # type: ignore[name-defined]
    """A token stream: yields ``tokens`` with ``delay`` seconds between them."""
    for token in tokens:
        if delay:
            await asyncio.sleep(delay)
        yield token
