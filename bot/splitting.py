"""Where to cut a long Markdown reply so each platform message stays under its limit.

Cuts prefer a paragraph break, then a line break, then a space. A cut never leaves a code block
broken: the cut moves to just before the block when there is room, otherwise the block is closed at
the cut and reopened (with its language) at the top of the next message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$", re.MULTILINE)
CLOSE_FENCE = "\n```"


@dataclass(frozen=True, slots=True)
class OpenFence:
    """A code block still open at some point of the text."""

    start: int
    """Index in the scanned text where the fence line starts."""
    line: str
    """The opening fence line, e.g. ```` ```python ````."""


def open_fence(text: str) -> OpenFence | None:
    """The code block left open at the end of ``text``, if any."""
    current: tuple[int, str, str] | None = None  # start, marker, line
    for match in _FENCE.finditer(text):
        marker = match.group(1)
        if current is None:
            current = (match.start(), marker, match.group(0).strip())
        elif marker[0] == current[1][0] and len(marker) >= len(current[1]) and not match.group(2).strip():
            current = None
    if current is None:
        return None
    return OpenFence(current[0], current[2])


@dataclass(frozen=True, slots=True)
class Cut:
    """The result of cutting a message."""

    head: str
    """The finished message's full text."""
    consumed: int
    """How many characters of the segment the finished message covers (whitespace included)."""
    next_prefix: str
    """Text to put before the rest in the next message (a reopened fence), or ``""``."""


def _break_at(window: str, floor: int) -> int:
    for sep in ("\n\n", "\n", " "):
        index = window.rfind(sep)
        if index >= floor:
            return index + len(sep)
    return len(window)


def cut(prefix: str, segment: str, limit: int) -> Cut:
    """Cut ``prefix + segment`` (longer than ``limit``) into a message of at most ``limit`` chars."""
    budget = max(1, limit - len(prefix) - len(CLOSE_FENCE))
    window = segment[:budget]
    at = _break_at(window, budget // 3)
    fence = open_fence(prefix + segment[:at])
    if fence is not None:
        opened_in_segment = fence.start - len(prefix)
        if opened_in_segment > budget // 4:
            # Room before the block: end this message just before it.
            at = opened_in_segment
            fence = None
    if fence is None:
        head = (prefix + segment[:at]).rstrip()
        rest = segment[at:]
        skipped = len(rest) - len(rest.lstrip())
        return Cut(head=head, consumed=at + skipped, next_prefix="")
    body = (prefix + segment[:at]).rstrip("\n")
    return Cut(head=body + CLOSE_FENCE, consumed=at, next_prefix=fence.line + "\n")
