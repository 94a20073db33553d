"""Prompt assembly: from a conversation's parts to the messages an engine is given.

:func:`build_prompt` is pure: the system prompt, the stored history, the new user turn and what
goes with that turn only (the quoted message's line, a listening channel's heard block, recalled
notes, images) become a ``list[ChatMessage]``. Whatever is put into the new turn's message for
this prompt alone is never stored, so the stored turn, and an engine's cached prefix of the
history, stay as they were. :func:`fit_files` cuts the texts of a message's files so that its turn
fits a context window, counted by the engine that will answer.

Trimming old history to the context window is the engine's part (:func:`bot.engine.trim_history`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot.attachments import Reading
from bot.conversation import Quote
from bot.engine import ChatMessage, Image
from bot.errors import ParleyError
from bot.listen import Heard, render
from bot.names import SHARED_NOTE, Speakers, escape, quoting
from bot.store import Turn, TurnStatus

log = logging.getLogger(__name__)

HISTORY_STATUSES = frozenset({TurnStatus.COMPLETE, TurnStatus.INTERRUPTED, TurnStatus.STOPPED})
"""Stored turns that the model sees again: a failed or superseded attempt is left out."""
FIT_ROUNDS = 5
"""Times :func:`fit_files` counts and shrinks at most before it hands over what it has."""


@dataclass(frozen=True, slots=True)
class PromptParts:
    """Everything one prompt is built from; only ``system`` is required."""

    system: str
    """The system prompt (persona, ``/system`` or the default); empty for none."""
    history: Sequence[Turn] = ()
    """The conversation's stored turns, oldest first; those not in :data:`HISTORY_STATUSES`, empty
    ones and system turns are left out."""
    new: Turn | None = None
    """The user turn being answered, always last; the fields below go with it alone."""
    shared: bool = False
    """Several people write here: user turns carry their speaker's label (:mod:`bot.names`) and
    name field, and the system prompt says so."""
    quote: str = ""
    """The line (:func:`quote_line`) of the message the ``new`` turn replies to, before its text."""
    heard: Sequence[Heard] = ()
    """What a listening channel kept (:mod:`bot.listen`), as a block of at most ``heard_chars``
    before the ``new`` turn's content, whose own text is then escaped so that it cannot pose as a
    line of the block."""
    heard_chars: int = 0
    recalled: str = ""
    """Memory notes recalled for the ``new`` turn (:meth:`bot.memory.Notes.recall`), put first."""
    images: tuple[Image, ...] = ()
    """Images sent with the ``new`` turn; earlier turns never carry any."""


def build_prompt(parts: PromptParts) -> list[ChatMessage]:
    """The model's messages for ``parts``: system prompt, history, then the new turn."""
    shared = parts.shared
    system = f"{parts.system}\n\n{SHARED_NOTE}" if shared and parts.system else parts.system
    messages = [ChatMessage("system", system)] if system else []
    speakers = Speakers()  # one per prompt: a speaker keeps one label throughout it

    def message(turn: Turn, quote: str = "", escaped: bool = False) -> ChatMessage:
        if shared and turn.role == "user":
            name = speakers.field(turn.author, turn.author_name) if turn.author else None
            return ChatMessage("user", speakers.say(turn.author, turn.author_name, turn.text, quote), name)
        text = escape(turn.text) if escaped else turn.text
        return ChatMessage(turn.role, f"{quote}\n{text}" if quote else text)

    for turn in parts.history:
        if turn.status in HISTORY_STATUSES and turn.text.strip() and turn.role != "system":
            messages.append(message(turn))
    new = parts.new
    if new is None:
        return messages
    if shared and new.author:  # labelled before the block, so each keeps one label from turn to turn
        speakers.label(new.author, new.author_name)
    block = render(parts.heard, speakers, parts.heard_chars) if parts.heard and parts.heard_chars > 0 else ""
    last = message(new, parts.quote, escaped=bool(block))
    content = last.content
    if block:
        content = f"{block}\n\n{content}"
    if parts.recalled:
        content = f"{parts.recalled}\n\n{content}"
    messages.append(dataclasses.replace(last, content=content, images=parts.images))
    return messages


def quote_line(quote: Quote | None, limit: int) -> str:
    """The line for a quoted message, at most ``limit`` characters of its text; empty for none."""
    if quote is None or not limit or not quote.text.strip():
        return ""
    return quoting(quote.author, quote.text, limit)


def last_answer(history: Sequence[Turn]) -> float:
    """When the newest reply in ``history`` was started (``0`` if there is none): kept messages
    from before it were in that reply's prompt already."""
    return max((turn.created_at for turn in history if turn.role == "assistant"), default=0.0)


def with_files(text: str, files: str) -> str:
    """A user turn as stored: the user's text, then the files read from their message."""
    return f"{text}\n\n{files}" if text and files else text or files


async def fit_files(
    reading: Reading,
    text: str,
    *,
    system: str,
    room: int,
    count: Callable[[Sequence[ChatMessage]], Awaitable[int]],
) -> Reading:
    """``reading`` with its texts cut so that the turn (``text`` and the files) takes at most ``room``
    tokens with the ``system`` prompt, as ``count`` (the answering engine's own) counts them.

    The texts shrink in proportion to the overshoot, with a margin, for at most
    :data:`FIT_ROUNDS` counts. If counting fails, what is left goes as it is: the engine's own
    trimming, or its clear error, decides then.
    """
    prompt_head = [ChatMessage("system", system)]
    for _ in range(FIT_ROUNDS):
        if not reading.chars:
            break
        content = with_files(text, reading.section())
        try:
            tokens = await count([*prompt_head, ChatMessage("user", content)])
        except ParleyError as exc:
            log.warning("could not count the tokens of a message's files: %s", exc)
            break
        if tokens <= room:
            break
        reading = reading.shrink(max(0, int(reading.chars * room / tokens * 0.9) - 200))
    return reading
