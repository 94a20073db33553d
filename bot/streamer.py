"""Progressive delivery of a streamed reply by editing the bot's message.

This is the only place that turns a token stream into platform calls. It posts a placeholder at
once, then edits with the latest text whenever the connector's pacing allows (text that arrives
while waiting is coalesced into the next edit), never sends an edit that changes nothing, rolls
over to a new message before the platform's length limit (see :mod:`bot.splitting`), waits out
``RateLimited`` for the whole channel, and always delivers the complete final text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from bot.connector import Connector, SentMessage
from bot.conversation import Destination
from bot.errors import ConnectorError, MessageTooLong, ParleyError, RateLimited
from bot.splitting import cut

log = logging.getLogger(__name__)

T = TypeVar("T")

PLACEHOLDER = "…"
EMPTY_REPLY = "(no reply)"
CONTINUED_ABOVE = "(this reply was finished in the message above)"
"""Replaces a message of a reply cut off by a crash that the finished reply no longer needs."""


@dataclass(slots=True)
class _Part:
    message: SentMessage
    start: int
    prefix: str = ""
    shown: str = ""
    final: str | None = None


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

    @property
    def platform(self) -> str:
        return self._connector.name

    @property
    def message_ids(self) -> tuple[str, ...]:
        return tuple(part.message.id for part in self._parts)

    async def start(self) -> None:
        """Show the typing indicator and post the placeholder (done by :meth:`run` if not yet)."""
        if self._parts:
            return
        with contextlib.suppress(ParleyError):
            await self._connector.typing(self._destination)
        if self._resume:
            # The first message of the cut-off reply becomes this reply's; it shows unknown text.
            self._parts.append(_Part(message=SentMessage(self._resume[0], self._destination), start=0, shown=""))
            return
        message = await self._call(
            lambda: self._connector.send(self._destination, self._placeholder), final=True, method="send"
        )
        self._parts.append(_Part(message=message, start=0, shown=self._placeholder))

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
                await self._progress.changed.wait()
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
        itself replaces the placeholder anyway.
        """
        text = text[: self._limit].rstrip()
        if len(self._parts) != 1 or not text or self._progress.text or self.finished:
            return
        part = self._parts[0]
        if text == part.shown:
            return
        sent = False

        async def edit() -> None:
            nonlocal sent
            if self._progress.text or self.finished or text == part.shown:
                return  # the reply began while this waited for its turn
            await self._connector.edit(part.message, text)
            self._note("edit", rate_limited=False)
            sent = True

        try:
            await self._call(edit, final=False, method="edit")
        except ConnectorError as exc:
            log.info("could not show the queue status in %s: %s", part.message.id, exc)
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

    async def _pace(self) -> None:
        delay = self._connector.pacer.delay(self._destination.channel, self._pacing)
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
            part = _Part(message=current.message, start=current.start + piece.consumed, prefix=piece.next_prefix)
            first = self._render(part)
            if not first or len(first) > self._limit:
                first = self._placeholder

            if len(self._parts) < len(self._resume):  # the cut-off attempt already has the next message
                part.message = SentMessage(self._resume[len(self._parts)], self._destination)
                self._parts.append(part)
                await self._edit(part, final=False)
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
        if self._render(part) in ("", part.shown):
            return
        sent = ""

        async def edit() -> None:
            nonlocal sent
            sent = self._render(part)  # the latest text, taken after the pacing wait
            if sent != part.shown:
                await self._connector.edit(part.message, sent)
                self._note("edit", rate_limited=False)

        try:
            await self._call(edit, final=final, method="edit")
        except ConnectorError as exc:
            if final:
                raise
            log.warning("edit of %s failed, will retry with later text: %s", part.message.id, exc)
            return
        part.shown = sent

    async def _report(self) -> None:
        if self.on_progress is not None:
            await self.on_progress(self._progress.text, self.message_ids)

    async def _call(self, make: Callable[[], Awaitable[T]], *, final: bool, method: str) -> T:
        """One paced platform call; rate limits block the channel and are retried.

        A non-final call gives up on its first rate limit (the next edit carries the latest text);
        a final one keeps waiting until ``final_timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._final_timeout
        failures = 0
        channel = self._destination.channel
        while True:
            await self._connector.pacer.acquire(channel, self._pacing)
            try:
                result = await make()
            except RateLimited as exc:
                self._note(method, rate_limited=True)
                self._connector.pacer.block(channel, exc.retry_after)
                log.info("%s rate-limited %s for %.2fs", self._connector.name, channel, exc.retry_after)
                if not final or loop.time() + exc.retry_after > deadline:
                    raise
            except MessageTooLong:
                raise  # the same text would be refused again: retrying only delays the error note
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
