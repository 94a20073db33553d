"""Progressive delivery of a streamed reply: by editing the bot's message, or natively.

This is the only place that turns a token stream into platform calls. It posts a placeholder at
once, then edits with the latest text whenever the connector's pacing allows (text that arrives
while waiting is coalesced into the next edit), never sends an edit that changes nothing, rolls
over to a new message before the platform's length limit (see :mod:`bot.splitting`), waits out
``RateLimited`` for the whole channel, and always delivers the complete final text.

Where the connector offers a :class:`~bot.connector.NativeStream` for the destination, each
message of the reply is that stream instead (start, paced updates, finish) with the same
coalescing, rollover and final delivery. A stream the platform refuses (``NativeRefused``)
is ended and the message carried on by editing, from the text it showed; the rest of the
reply keeps to edits. Native updates are paced on their own lane of the channel
(:data:`NATIVE_LANE`), since the platforms limit them apart from messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from bot.connector import Connector, NativeStream, SentMessage
from bot.conversation import Destination
from bot.errors import ConnectorError, MessageTooLong, NativeRefused, ParleyError, RateLimited
from bot.pacing import Pacing
from bot.splitting import cut

log = logging.getLogger(__name__)

T = TypeVar("T")

PLACEHOLDER = "…"
EMPTY_REPLY = "(no reply)"
CONTINUED_ABOVE = "(this reply was finished in the message above)"
"""Replaces a message of a reply cut off by a crash that the finished reply no longer needs."""
NATIVE_LANE = "\x00native"
"""Appended to a channel's pacing key for native stream updates."""


@dataclass(slots=True)
class _Part:
    message: SentMessage | None
    """The platform message; ``None`` while a native stream has none yet (a Telegram draft)."""
    start: int
    prefix: str = ""
    shown: str = ""
    final: str | None = None
    stream: NativeStream | None = None
    """The native stream carrying this message, until it is finished or refused."""
    status: str = ""
    """A queue notice the native stream shows until the reply's first words (:meth:`ReplyStreamer.show_status`)."""


@dataclass(slots=True)
class _Progress:
    text: str = ""
    done: bool = False
    error: BaseException | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ReplyStreamer:
    """Streams one reply into one destination through one connector.

    ``final_timeout`` bounds how long the final delivery keeps waiting out rate limits; other
    connector errors on the final text are retried ``final_attempts`` times.
    """

    def __init__(
        self,
        connector: Connector,
        destination: Destination,
        *,
        placeholder: str = PLACEHOLDER,
        final_attempts: int = 4,
        final_timeout: float = 900.0,
        on_progress: Callable[[str, tuple[str, ...]], Awaitable[None]] | None = None,
        resume: tuple[str, ...] = (),
        on_call: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._connector = connector
        self._destination = destination
        self._pacing = connector.pacing(destination)
        self._limit = connector.limits.max_message_length
        self._placeholder = placeholder
        self._final_attempts = final_attempts
        self._final_timeout = final_timeout
        self.on_progress = on_progress
        """Called with the text and message ids whenever a message is finished or added."""
        self.finished = False
        self._parts: list[_Part] = []
        self._progress = _Progress()
        self._resume = resume
        """Ids of messages an earlier, cut-off attempt posted: the reply is written into them."""
        self._on_call = on_call
        """Told of each platform call: its method (send, edit) and whether it was rate-limited."""
        self.edits = 0
        """Edits that reached the platform."""
        self.stream_updates = 0
        """Native stream updates that reached the platform."""
        self._native = not resume
        """Whether to ask the connector for native streams: a resumed reply edits the messages it
        has, and after a refusal the rest of the reply edits."""

    @property
    def platform(self) -> str:
        return self._connector.name

    @property
    def message_ids(self) -> tuple[str, ...]:
        return tuple(part.message.id for part in self._parts if part.message is not None)

    @property
    def native(self) -> bool:
        """Whether the message being written is a native stream."""
        return bool(self._parts) and self._parts[-1].stream is not None

    async def start(self) -> None:
        """Show the typing indicator and post the placeholder, or start a native stream (done by
        :meth:`run` if not yet)."""
        if self._parts:
            return
        with contextlib.suppress(ParleyError):
            await self._connector.typing(self._destination)
        if self._resume:
            # The first message of the cut-off reply becomes this reply's; it shows unknown text.
            self._parts.append(_Part(message=SentMessage(self._resume[0], self._destination), start=0, shown=""))
            return
        part = _Part(message=None, start=0)
        if await self._open_native(part):
            self._parts.append(part)
            return
        await self._post_placeholder(part)
        self._parts.append(part)

    async def _post_placeholder(self, part: _Part) -> None:
        """Post the placeholder message that ``part`` is then written into by edits."""
        text = self._placeholder
        part.message = await self._call(
            lambda: self._connector.send(self._destination, text), final=True, method="send"
        )
        part.shown = text

    async def _open_native(self, part: _Part) -> bool:
        """Start a native stream for ``part`` if the connector offers one; ``False`` to edit instead."""
        stream = self._connector.native_stream(self._destination) if self._native else None
        if stream is None:
            return False
        try:
            try:
                await self._call(stream.start, final=False, method="stream")
            except RateLimited:
                # A placeholder message would have to wait as long: wait, and stream after all.
                await self._call(stream.start, final=True, method="stream")
        except ConnectorError as exc:
            # Refused or failing: this reply edits (the connector remembers refusals).
            self._native = False
            log.info("%s: native streaming to %s did not start, editing: %s", self.platform, self._channel, exc)
            return False
        self._note("stream", rate_limited=False)
        part.stream = stream
        part.message = stream.message
        return True

    @property
    def _channel(self) -> str:
        return self._destination.channel

    def _lane(self, part: _Part) -> tuple[str, Pacing]:
        """The pacing key and pacing of the next update of ``part``."""
        if part.stream is not None:
            return self._channel + NATIVE_LANE, part.stream.pacing
        return self._channel, self._pacing

    async def run(
        self, chunks: AsyncIterable[str], *, error_note: Callable[[BaseException], str] | None = None
    ) -> None:
        """Deliver ``chunks`` as they come; return once the final text is on the platform.

        If ``chunks`` raises, the text so far plus ``error_note(exc)`` is delivered, then the
        exception is re-raised.
        """
        await self.start()
        reader = asyncio.create_task(self._read(chunks))
        try:
            while not self._progress.done:
                if not await self._changed():
                    await self._keep_alive(self._parts[-1])
                    continue
                self._progress.changed.clear()
                if self._progress.done:
                    break
                await self._pace()
                await self._roll_over()
                await self._edit_current(final=False)
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        error = self._progress.error
        if error is not None and error_note is not None:
            note = error_note(error)
            self._progress.text = f"{self._progress.text.rstrip()}\n\n{note}".strip()
        await self._deliver_final()
        if error is not None:
            raise error

    async def abort(self, note: str) -> None:
        """Deliver ``note`` after whatever was shown, when the reply failed outside :meth:`run`."""
        if self.finished:
            return
        await self.start()
        self._progress.text = f"{self._progress.text.rstrip()}\n\n{note}".strip()
        await self._deliver_final()

    async def show_status(self, text: str) -> None:
        """Show ``text`` (a queue notice) in the placeholder until the reply's first words.

        Paced like every edit and only sent when it changes what is shown; once reply text exists,
        or after the final delivery, it does nothing. A failed edit is logged and left: the reply
        itself replaces the placeholder anyway. A native stream shows it if it can replace it with
        the reply's text afterwards (:attr:`~bot.connector.NativeStream.shows_status`: a Telegram
        draft can); one that only appends (Slack's) is ended, and the notice and then the reply
        are written by edits into its message.
        """
        text = text[: self._limit].rstrip()
        if len(self._parts) != 1 or not text or self._progress.text or self.finished:
            return
        part = self._parts[0]
        if part.stream is not None:
            if part.stream.shows_status:
                part.status = text
                await self._update(part)
                return
            # An append-only stream could not take the notice back: this reply, which waits in line
            # anyway, is written by edits instead, into the stream's message.
            log.info("%s: a reply waiting in line in %s edits instead of streaming", self.platform, self._channel)
            try:
                await self._leave_stream(part)
            except ConnectorError as exc:
                log.info("could not leave the native stream in %s for a queue notice: %s", self._channel, exc)
                return
        if text == part.shown or part.message is None:
            return
        message = part.message
        sent = False

        async def edit() -> None:
            nonlocal sent
            if self._progress.text or self.finished or text == part.shown:
                return  # the reply began while this waited for its turn
            await self._connector.edit(message, text)
            self._note("edit", rate_limited=False)
            sent = True

        try:
            await self._call(edit, final=False, method="edit")
        except ConnectorError as exc:
            log.info("could not show the queue status in %s: %s", message.id, exc)
            return
        if sent:
            part.shown = text

    async def _deliver_final(self) -> None:
        if not self._progress.text.strip():
            self._progress.text = EMPTY_REPLY
        self.finished = True
        await self._roll_over()
        await self._edit_current(final=True)
        await self._close_leftovers()

    async def _close_leftovers(self) -> None:
        """Point the cut-off attempt's extra messages (from a rollover) at the finished reply."""
        for message_id in self._resume[1:]:
            if message_id in self.message_ids:
                continue
            part = _Part(SentMessage(message_id, self._destination), start=0, final=CONTINUED_ABOVE)
            try:
                await self._edit(part, final=True)
            except ParleyError as exc:
                log.warning("could not update %s of a resumed reply: %s", message_id, exc)

    async def _read(self, chunks: AsyncIterable[str]) -> None:
        progress = self._progress
        try:
            async for chunk in chunks:
                if chunk:
                    progress.text += chunk
                    progress.changed.set()
        except Exception as exc:  # noqa: BLE001 - handed to run(), which re-raises it
            progress.error = exc
        finally:
            progress.done = True
            progress.changed.set()

    async def _changed(self) -> bool:
        """Wait for new text; ``False`` if a native stream must be refreshed first."""
        stream = self._parts[-1].stream
        if stream is None or stream.refresh is None:
            await self._progress.changed.wait()
            return True
        try:
            await asyncio.wait_for(self._progress.changed.wait(), stream.refresh)
        except TimeoutError:
            return False
        return True

    async def _keep_alive(self, part: _Part) -> None:
        """Send a native stream's text again, before the platform drops the stream for silence."""
        await self._update(part, force=True)

    async def _pace(self) -> None:
        key, pacing = self._lane(self._parts[-1])
        delay = self._connector.pacer.delay(key, pacing)
        if delay > 0:
            await asyncio.sleep(delay)

    def _render(self, part: _Part) -> str:
        if part.final is not None:
            return part.final
        return (part.prefix + self._progress.text[part.start :]).rstrip()

    async def _roll_over(self) -> None:
        """Finish the current message and start a new one while the text exceeds the limit."""
        while True:
            current = self._parts[-1]
            segment = self._progress.text[current.start :]
            if len(current.prefix) + len(segment.rstrip()) <= self._limit:
                return
            piece = cut(current.prefix, segment, self._limit)
            current.final = piece.head
            await self._edit(current, final=True)
            part = _Part(message=None, start=current.start + piece.consumed, prefix=piece.next_prefix)
            first = self._render(part)
            if not first or len(first) > self._limit:
                first = self._placeholder

            if len(self._parts) < len(self._resume):  # the cut-off attempt already has the next message
                part.message = SentMessage(self._resume[len(self._parts)], self._destination)
                self._parts.append(part)
                await self._edit(part, final=False)
            elif await self._open_native(part):
                self._parts.append(part)  # its text goes out with the next update (or the final one)
            else:

                async def send(text: str = first) -> SentMessage:
                    return await self._connector.send(self._destination, text)

                part.message = await self._call(send, final=True, method="send")
                part.shown = first
                self._parts.append(part)
            await self._report()

    async def _edit_current(self, *, final: bool) -> None:
        await self._edit(self._parts[-1], final=final)
        if final:
            await self._report()

    async def _edit(self, part: _Part, *, final: bool) -> None:
        if part.stream is not None:
            if final:
                await self._finish(part)
            else:
                await self._update(part)
            return
        if self._render(part) in ("", part.shown):
            return
        sent = ""
        message = part.message
        assert message is not None  # only a native stream goes without a message

        async def edit() -> None:
            nonlocal sent
            sent = self._render(part)  # the latest text, taken after the pacing wait
            if sent != part.shown:
                await self._connector.edit(message, sent)
                self._note("edit", rate_limited=False)

        try:
            await self._call(edit, final=final, method="edit")
        except ConnectorError as exc:
            if final:
                raise
            log.warning("edit of %s failed, will retry with later text: %s", message.id, exc)
            return
        part.shown = sent

    async def _update(self, part: _Part, *, force: bool = False) -> None:
        """Show the latest text in ``part``'s native stream (``force``: even if it is shown)."""
        stream = part.stream
        assert stream is not None
        if not force and (self._render(part) or part.status) in ("", part.shown):
            return
        sent = ""

        async def update() -> None:
            nonlocal sent
            sent = self._render(part) or part.status  # the notice, until the reply has words
            if sent != part.shown or force:
                await stream.update(sent)
                self.stream_updates += 1
                self._note("stream", rate_limited=False)

        key, pacing = self._lane(part)
        try:
            await self._call(update, final=False, method="stream", key=key, pacing=pacing)
        except NativeRefused as exc:
            await self._fall_back(part, exc)
            return
        except ConnectorError as exc:
            log.warning("native update in %s failed, will retry with later text: %s", self._channel, exc)
            return
        part.shown = sent

    async def _finish(self, part: _Part) -> None:
        """End ``part``'s native stream with its final text; a refusal finishes it by editing."""
        stream = part.stream
        assert stream is not None
        text = self._render(part)
        try:
            message = await self._call(lambda: stream.finish(text), final=True, method="stream")
        except NativeRefused as exc:
            await self._fall_back(part, exc)
            await self._edit(part, final=True)
            return
        self._note("stream", rate_limited=False)
        part.stream = None
        part.message = message
        if stream.settled:
            part.shown = text
            return
        part.shown = ""  # what the stream left is not the final text: edit it
        await self._edit(part, final=True)

    async def _fall_back(self, part: _Part, exc: NativeRefused) -> None:
        """Carry ``part`` on by editing after its stream was refused."""
        log.warning("%s refused native streaming in %s, editing instead: %s", self.platform, self._channel, exc)
        await self._leave_stream(part)

    async def _leave_stream(self, part: _Part) -> None:
        """End ``part``'s stream and carry the rest of the reply on by editing: in the stream's
        message if the platform has one, else in a new message showing the text so far."""
        stream = part.stream
        assert stream is not None
        self._native = False
        part.stream = None
        shown = part.shown
        message: SentMessage | None = None
        try:
            message = await self._call(lambda: stream.abandon(shown), final=False, method="stream")
            self._note("stream", rate_limited=False)
        except ConnectorError as again:
            log.warning("ending the refused stream in %s failed: %s", self._channel, again)
        if message is None:
            first = self._render(part)
            if not first or len(first) > self._limit:
                first = self._placeholder
            part.message = await self._call(
                lambda: self._connector.send(self._destination, first), final=True, method="send"
            )
            part.shown = first
        else:
            part.message = message
        await self._report()

    async def _report(self) -> None:
        if self.on_progress is not None:
            await self.on_progress(self._progress.text, self.message_ids)

    async def _call(
        self,
        make: Callable[[], Awaitable[T]],
        *,
        final: bool,
        method: str,
        key: str | None = None,
        pacing: Pacing | None = None,
    ) -> T:
        """One paced platform call; rate limits block the channel (or ``key``, a lane of it) and are
        retried.

        A non-final call gives up on its first rate limit (the next edit carries the latest text);
        a final one keeps waiting until ``final_timeout``. A refusal of a native method is never
        retried: the caller falls back to editing.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._final_timeout
        failures = 0
        channel = key or self._destination.channel
        while True:
            try:
                async with self._connector.pacer.paced(channel, pacing or self._pacing):
                    result = await make()
            except RateLimited as exc:
                self._note(method, rate_limited=True)
                self._connector.pacer.block(channel, exc.retry_after)
                log.info("%s rate-limited %s for %.2fs", self._connector.name, channel, exc.retry_after)
                if not final or loop.time() + exc.retry_after > deadline:
                    raise
            except (MessageTooLong, NativeRefused):
                raise  # the same call would be refused again: retrying only delays what comes next
            except ConnectorError:
                failures += 1
                if not final or failures >= self._final_attempts:
                    raise
                await asyncio.sleep(min(2.0**failures, 10.0))
            else:
                if method == "send":  # an edit counts itself: it may find nothing to change
                    self._note(method, rate_limited=False)
                return result

    def _note(self, method: str, *, rate_limited: bool) -> None:
        if method == "edit" and not rate_limited:
            self.edits += 1
        if self._on_call is not None:
            self._on_call(method, rate_limited)
