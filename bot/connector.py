"""The connector contract: what every chat platform adapter provides to the core.

A connector turns its platform's events into :class:`~bot.conversation.IncomingMessage` and hands
them to the :class:`InboundSink` it was started with: it awaits :meth:`InboundSink.receive`, which
returns once the message is stored (not answered), before it tells the platform the event was
handled (Telegram's next ``getUpdates`` offset, Slack's ack), so that a crash loses nothing. The core
answers through :meth:`Connector.send` and :meth:`Connector.edit`; it paces those calls itself with
the connector's :attr:`Connector.pacer` and :meth:`Connector.pacing`, so a connector never sleeps
to pace and never retries a rate-limited call: it raises :class:`~bot.errors.RateLimited` with the
platform's ``retry_after`` and the core waits.

Where a platform has a purpose-built streaming API (Telegram's drafts, Slack's chat streams), the
connector offers it per destination through :meth:`Connector.native_stream`; the core drives that
:class:`NativeStream` instead of edits and falls back to ``send``/``edit`` when it raises
:class:`~bot.errors.NativeRefused`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from bot.command import Command
from bot.conversation import CommandRequest, ConversationKey, Destination, IncomingMessage
from bot.pacing import Pacer, Pacing

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectorLimits:
    """What the platform allows; the reply streamer stays within it."""

    max_message_length: int
    """Characters of (Markdown) text per message; longer replies continue in a new message."""
    pacing: Pacing
    """Pacing of calls to one channel."""
    group_pacing: Pacing | None = None
    """Stricter pacing for group channels, where the platform has one."""
    total_pacing: Pacing | None = None
    """A cap on calls to all channels together, where the platform has one (Telegram: 30/s)."""


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message the bot posted, as the platform identifies it."""

    id: str
    destination: Destination


class NativeStream(abc.ABC):
    """One message streamed through the platform's own streaming API: start, update, finish.

    The core's reply streamer calls :meth:`start` once, :meth:`update` with the message's whole
    text so far (Markdown) whenever :attr:`pacing` allows, and :meth:`finish` with its final
    text, which must leave exactly that text on the platform, once. The stream turns the text
    into what the platform wants (the whole text, or what was added).

    Any method may raise :class:`~bot.errors.RateLimited` (the core waits, as for edits) or
    :class:`~bot.errors.ConnectorError`; :class:`~bot.errors.NativeRefused` means the platform
    does not take the method here, and the core calls :meth:`abandon` and carries the message on
    with ``send``/``edit``. A connector that sees a refusal remembers it (:class:`Refusals`) and
    offers no stream for a while.
    """

    pacing: Pacing
    """Pacing of :meth:`update` calls to one channel; :meth:`start` and :meth:`finish` are paced
    like sends."""
    refresh: float | None = None
    """Seconds after which the platform drops a stream that got no update (Telegram's drafts);
    the core sends the text again before then. ``None``: it stays."""
    message: SentMessage | None = None
    """The platform message carrying the stream, once it has one (a draft has none until
    :meth:`finish`)."""
    shows_status: bool = False
    """Whether :meth:`update` may show a line that is not the reply (a queue notice), which the
    reply's text then replaces: true for a stream that shows the whole text each time (Telegram's
    drafts), false for one that only appends (Slack's)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin the stream; the platform shows that a reply is coming."""

    @abc.abstractmethod
    async def update(self, text: str) -> None:
        """Show ``text``, the message's whole text so far (it may repeat the last one)."""

    settled: bool = True
    """After :meth:`finish`: whether the message shows its final text. A platform that cannot take
    back streamed text (Slack appends) ends the stream with this ``False`` when the final text
    is not what it showed plus more (a rollover cut it shorter); the core then edits it."""

    @abc.abstractmethod
    async def finish(self, text: str) -> SentMessage:
        """End the stream with ``text`` as the message's final text (see :attr:`settled`); returns
        the message."""

    async def abandon(self, shown: str) -> SentMessage | None:
        """End a refused stream that shows ``shown``: the message that edits may continue in, or
        ``None`` if there is none to edit (the core then posts one)."""
        return self.message


class Refusals:
    """Remembers for ``seconds`` that a platform refused its native streaming API (per key)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def note(self, key: str = "") -> None:
        self._until[key] = self._now() + self.seconds

    def active(self, key: str = "") -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if self._now() >= until:
            del self._until[key]
            return False
        return True


class InboundSink(Protocol):
    """Where a connector delivers incoming messages and commands (the core's chat service)."""

    async def receive(self, message: IncomingMessage, connector: Connector) -> bool:
        """Store ``message`` durably and queue it for an answer; returns once it is stored, not
        answered. ``False`` if it is not taken: not addressed, delivered before (a redelivery is
        answered once), or the bot is shutting down. Raises if it could not be stored, so that
        the platform may deliver it again."""

    def submit(self, message: IncomingMessage, connector: Connector) -> None:
        """Take ``message`` like :meth:`receive`, without waiting for it to be stored."""

    def submit_command(self, request: CommandRequest, connector: Connector) -> None:
        """Run a command; returns at once. Answers go to ``request.reply_destination()``."""

    def listening(self, platform: str, channel: str) -> bool:
        """Whether ``channel`` keeps the messages not addressed to the bot (listen mode): a connector
        that looks authors up only for addressed messages looks them up for these too."""

    async def has_conversation(self, key: ConversationKey) -> bool:
        """Whether ``key``'s conversation exists: e.g. a thread the bot answered in before a restart."""

    @property
    def command_list(self) -> Sequence[Command]:
        """Every command, for native registration (Telegram setMyCommands, Discord sync, …)."""


class Connector(abc.ABC):
    """Base class of platform connectors.

    Lifecycle: ``start(sink)`` connects and begins delivering messages; a start that fails stops
    what it started (wrap its body in :func:`stop_on_failure`). ``stop()`` disconnects and is safe
    to call after a failed or partial start. ``send``/``edit`` take Markdown text that fits
    :attr:`limits` and render it as the platform needs.
    """

    name: ClassVar[str]
    limits: ConnectorLimits

    def __init__(self) -> None:
        self._pacer: Pacer | None = None

    @property
    def pacer(self) -> Pacer:
        """Paces every call the core makes through this connector (made on first use, from ``limits``)."""
        if self._pacer is None:
            self._pacer = Pacer(total=self.limits.total_pacing)
        return self._pacer

    def pacing(self, destination: Destination) -> Pacing:
        """The pacing that applies to ``destination``."""
        if destination.is_group and self.limits.group_pacing is not None:
            return self.limits.group_pacing
        return self.limits.pacing

    def native_stream(self, destination: Destination) -> NativeStream | None:
        """A native stream for one message to ``destination``, or ``None`` to stream by editing
        (the default; also while a refusal is remembered, or when settings turn it off)."""
        return None

    @abc.abstractmethod
    async def start(self, sink: InboundSink) -> None:
        """Connect and start delivering messages to ``sink``."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect; idempotent."""

    @abc.abstractmethod
    async def send(self, destination: Destination, text: str) -> SentMessage:
        """Post a new message. Raises ``RateLimited`` or ``ConnectorError``."""

    @abc.abstractmethod
    async def edit(self, message: SentMessage, text: str) -> None:
        """Replace the text of a message the bot posted.

        An edit that changes nothing must not raise. Raises ``RateLimited`` or ``ConnectorError``.
        """

    async def pause_intake(self) -> None:  # noqa: B027 - optional hook
        """Stop receiving new messages before shutdown, leaving them with the platform if it can
        redeliver them (Telegram keeps unconfirmed updates). Replies in progress keep using
        ``send``/``edit`` until ``stop()``. Platforms that cannot hold messages keep delivering,
        and the core answers them with a short "restarting" notice."""

    async def typing(self, destination: Destination) -> None:  # noqa: B027 - optional hook
        """Show a typing indicator, where the platform has one. Errors are ignored by callers."""

    @abc.abstractmethod
    def status(self) -> str:
        """A short status word for health checks: ``running`` when healthy, anything else when not."""


@contextlib.asynccontextmanager
async def stop_on_failure(connector: Connector) -> AsyncIterator[None]:
    """Wrap the body of a connector's ``start``: if it fails or is cancelled half-way,
    ``connector.stop()`` undoes what it already started, and the error propagates.

    The core stops only connectors whose start returned, so a half-made client is the connector's
    to close. An error from ``stop`` itself is logged and does not hide the start's error.
    """
    try:
        yield
    except BaseException:
        try:
            await connector.stop()
        except Exception:
            log.warning("%s: cleaning up after a failed start failed too", connector.name, exc_info=True)
        raise


RouteHandler = Callable[[Any], Awaitable[Any]]
"""An HTTP handler of the web transport (an aiohttp handler: request in, response out)."""


class HttpRoutes(Protocol):
    """Where a connector that receives HTTP callbacks (Slack's Events API) adds its routes."""

    def add_route(self, method: str, path: str, handler: RouteHandler) -> None:
        """Serve ``method path`` with ``handler``; only before the transport starts."""


class WebTransport(HttpRoutes, Protocol):
    """Parley's own HTTP server (chat page, API, health), owned by the app."""

    name: str

    @property
    def url(self) -> str:
        """Where it listens, once started."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
